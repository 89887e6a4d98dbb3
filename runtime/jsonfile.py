"""Reading the small JSON object files a run leaves behind (manifests, selection, config, sidecars).

One reader so every such file fails the same way: a half-written, foreign or non-object file is
one :class:`InputError` line naming it, never a traceback or a ``KeyError`` later on.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from cryoshift.runtime.errors import InputError

# What json.loads raises for a file that is not JSON: JSONDecodeError and UnicodeDecodeError are
# ValueErrors; RecursionError comes from arrays or objects nested thousands deep ("[[[[...").
JSON_ERRORS = (ValueError, RecursionError)


def read_json_object(path: str | Path, what: str = "JSON object file") -> dict[str, Any]:
    """The JSON object in ``path``; ``what`` names the file's role in the error line."""
    try:
        data = json.loads(Path(path).read_text())
    except (*JSON_ERRORS, OSError) as exc:
        raise InputError(path, f"not a readable {what} ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, dict):
        raise InputError(path, f"not a readable {what} (a JSON {type(data).__name__}, not an object)")
    return data


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
