"""runtime/jsonfile.py: one reader for the small JSON object files, one parse per file."""

from __future__ import annotations

from pathlib import Path

import pytest

from cryoshift.runtime.errors import InputError
from cryoshift.runtime.jsonfile import read_json_object

TWICE = '{"a": 1, "block": {"key": 1, "key": 2}}'


def _said_twice(key: str) -> str:
    return f"names {key!r} twice"


def test_a_key_given_twice_is_read_as_json_reads_it_unless_the_caller_refuses_it(tmp_path: Path) -> None:
    """A reader with its own words for a key given twice (an engine sidecar) gets them from the one
    parse, at any depth; other readers keep json's last value, as before."""
    path = tmp_path / "x.json"
    path.write_text(TWICE)
    assert read_json_object(path)["block"] == {"key": 2}
    with pytest.raises(InputError) as caught:
        read_json_object(path, "x file", duplicate=_said_twice)
    assert caught.value.path == str(path) and caught.value.reason == "names 'key' twice"


def test_other_failures_keep_the_readers_words_when_duplicates_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('{"seed": ' + "9" * 2000 + "}")
    with pytest.raises(InputError, match=r"not a readable x file \(holds a number too long"):
        read_json_object(path, "x file", duplicate=_said_twice)
    path.write_text("[1, 1]")
    with pytest.raises(InputError, match=r"not a readable x file \(a JSON list, not an object\)"):
        read_json_object(path, "x file", duplicate=_said_twice)
