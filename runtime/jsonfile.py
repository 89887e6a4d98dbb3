"""Reading the small JSON object files a run leaves behind (manifests, selection, config, sidecars).

One reader so every such file fails the same way: a half-written, foreign or non-object file is
one :class:`InputError` line naming it, never a traceback or a ``KeyError`` later on.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryoshift.runtime.errors import InputError

# What json.loads raises for a file that is not JSON: JSONDecodeError and UnicodeDecodeError are
# ValueErrors; RecursionError comes from arrays or objects nested thousands deep ("[[[[...").
JSON_ERRORS = (ValueError, RecursionError)


# The longest integer a cryoshift JSON file holds is a seed (20 digits); Python refuses to read one
# of over 4300 digits with a ValueError telling the user to call sys.set_int_max_str_digits().
MAX_INT_DIGITS = 1000


class JsonContentError(ValueError):
    """A JSON text that parses but that cryoshift refuses (a key given twice, a number too long);
    its message is the whole reason, in words (no exception name before it)."""


class DuplicateKeyError(JsonContentError):
    """A JSON object naming a key twice; :attr:`key` is that name, so a reader with its own words
    for it (an engine sidecar's) need not parse the text a second time to find it."""

    def __init__(self, key: str) -> None:
        super().__init__(f"{key!r} is given twice in the JSON; keep one (JSON readers keep the last)")
        self.key = key


def _parse_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise JsonContentError(f"holds a number too long ({digits:,} digits)")
    return int(text)


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise DuplicateKeyError(key)
        data[key] = value
    return data


def parse_json(text: str, unique_keys: bool = True) -> Any:
    """``json.loads(text)``, refusing (:class:`JsonContentError`) an integer of more than
    :data:`MAX_INT_DIGITS` digits and, with ``unique_keys``, an object naming a key twice
    (:class:`DuplicateKeyError`; json keeps the last value without a word: a dataset.json giving
    ``class_names`` twice was read with the second list). Other failures raise as json.loads does
    (:data:`JSON_ERRORS`)."""
    return json.loads(text, parse_int=_parse_int, object_pairs_hook=_unique_pairs if unique_keys else None)


def json_failure(exc: BaseException) -> str:
    """A JSON reading failure in words: a :class:`JsonContentError` as it says, others with their
    exception name (``JSONDecodeError: Expecting value: line 1 column 1``)."""
    return str(exc) if isinstance(exc, JsonContentError) else f"{type(exc).__name__}: {exc}"


def read_json_object(
    path: str | Path, what: str = "JSON object file", duplicate: Callable[[str], str] | None = None
) -> dict[str, Any]:
    """The JSON object in ``path``; ``what`` names the file's role in the error line. A number too
    long for Python is refused in one line (:func:`parse_json`). A key given twice is read as json
    reads it (the last value kept) unless ``duplicate`` is given: then it is refused in one line
    whose reason is ``duplicate(key)``, the caller's own words (an engine sidecar's), found in the
    same single parse."""
    try:
        data = parse_json(Path(path).read_text(), unique_keys=duplicate is not None)
    except DuplicateKeyError as exc:
        assert duplicate is not None  # parse_json checks keys only when it is given
        raise InputError(path, duplicate(exc.key)) from exc
    except (*JSON_ERRORS, OSError) as exc:
        raise InputError(path, f"not a readable {what} ({json_failure(exc)})") from exc
    if not isinstance(data, dict):
        raise InputError(path, f"not a readable {what} (a JSON {type(data).__name__}, not an object)")
    return data


def real_number(value: Any) -> float | None:
    """``value`` as a float when it is a real number (numpy's too, from a checkpoint), else None: not
    a bool, which Python counts as one, and not text (a settings file's ``true`` or ``"2"`` is no
    number). An integer too large for a float is infinite here, so range checks refuse it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        return float(value)
    except OverflowError:
        return math.inf


def is_number_within(value: Any, low: float, high: float) -> bool:
    """Whether ``value`` is a finite real number from ``low`` to ``high`` (NaN and inf are not)."""
    number = real_number(value)
    return number is not None and math.isfinite(number) and low <= number <= high


def shown(value: Any, limit: int = 60) -> str:
    """``repr(value)`` for a one-line message, cut to ``limit`` characters: a field may hold a long
    list, and a 2 MB engine name was once printed whole."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_nonnegative_number(value: Any) -> bool:
    """Whether a JSON value is a finite number >= 0 (not a bool, not text, not NaN or infinite, not
    an integer too large for a float): the counts, times and rates of a classify manifest, which
    report prints and merge adds up."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value)) and value >= 0
    except OverflowError:
        return False
