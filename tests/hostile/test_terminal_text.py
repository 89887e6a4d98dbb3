"""Names from files reach the terminal as text: escape sequences shown, rich markup not read.

A picks table naming a tomogram ``TS\\x1b]0;PWNED\\x1b\\\\`` retitled the terminal window when
``cryoshift info`` listed it, and a model whose classes were ``[link=https://evil.example]ribosome
[/link]``, ``[blink]junk`` and ``[/]`` showed a link, blinking text, or crashed on a markup error.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hostile_inputs import Capsys, run_cli
from tiny_onnx import build_model

from cryoshift.runtime.terminal import markup_safe, visible

CLASSES = ["[link=https://evil.example]ribosome[/link]", "[blink]junk", "[/]"]
TOMOGRAMS = ["TS\x1b]0;PWNED\x1b\\", "TS\x9b31m", "TS\u202eevil", "TS\x07bell"]
HIDDEN = ("\x1b", "\x9b", "\u202e", "\x07")


def test_info_shows_names_from_files_as_text(
    tmp_path: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # one table row per line, so the names are not folded
    model = build_model(tmp_path / "model.onnx", classes=CLASSES)
    picks = tmp_path / "picks.csv"
    picks.write_text("tomo,x,y,z\n" + "".join(f"{t},{k},{k},{k}\n" for k, t in enumerate(TOMOGRAMS, 1)))
    code, out, err = run_cli(["info", model, picks], capsys)
    assert code == 0, err
    assert not any(ch in out for ch in HIDDEN), repr(out)
    for shown in ("TS\\x1b]0;PWNED\\x1b\\", "TS\\x9b31m", "TS\\u202eevil", "TS\\x07bell", *CLASSES):
        assert shown in out, (shown, out)


def test_an_error_line_shows_escape_sequences_as_text(tmp_path: Path, capsys: Capsys) -> None:
    missing = tmp_path / "no\x1b]0;PWNED\x07such.mrc"
    code, _, err = run_cli(["info", missing], capsys)
    assert code == 2
    assert not any(ch in err for ch in HIDDEN), repr(err)
    assert "no\\x1b]0;PWNED\\x07such.mrc" in err


def test_visible_and_markup_safe() -> None:
    assert visible("plain name, ü and 日本") == "plain name, ü and 日本"
    assert (
        visible("a\tb\nc\x00\x7f\x85\u2028\u200b\U000e0001")
        == "a\\tb\\nc\\x00\\x7f\\x85\\u2028\\u200b\\U000e0001"
    )
    from rich.markup import render

    for name in CLASSES:
        assert render(markup_safe(name)).plain == name
