"""Text read from files, made safe to print on a terminal: control characters shown, rich markup inert.

Why: names in a picks table or a model (a tomogram ``TS\\x1b]0;PWNED\\x1b\\\\``, a class
``[link=https://evil.example]ribosome[/link]``) reached the terminal raw: an escape sequence
retitled the window or rewrote what was shown, and rich read brackets as markup (a link, blinking
text, or ``[/]``, a markup error instead of the table). :func:`visible` writes every character
that does not show as itself as its escape; :func:`markup_safe` also escapes rich markup, for text
inside a ``console.print`` string, and :func:`plain` makes a rich ``Text`` (no markup, no emoji
codes) for a table cell or title.

:func:`say` is the one guarded writer of cryoshift's own lines on stderr (notes, warnings, the
error count, the summary's warnings under ``-q``): a line that cannot be printed is dropped, never
raised, so a reader gone from the pipe (``cryoshift classify ... 2>&1 | head -1``) does not stop a
run before its results and manifest are written. The summary on stdout is a result and is not
guarded (undelivered, the run exits 1).
"""

from __future__ import annotations

import os
import sys
import unicodedata
from typing import TYPE_CHECKING, TextIO

from cryoshift.runtime.contract import CONTROL_CATEGORIES

if TYPE_CHECKING:
    from rich.text import Text

# Characters that do not show as themselves: controls and line separators (contract.py; escape,
# bell, C1 such as \x9b, which some terminals take for an escape sequence) and format characters
# (bidi overrides, zero-width joiners).
_HIDDEN = (*CONTROL_CATEGORIES, "Cf")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(ch: str) -> str:
    code = ord(ch)
    if ch in _NAMED:
        return _NAMED[ch]
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def visible(text: object) -> str:
    """``text`` with every control, format and line-separator character written as its escape
    (``\\x1b``, ``\\t``, ``\\u202e``); other text as it is."""
    text = str(text)
    if text.isprintable():  # the usual case: nothing to do
        return text
    return "".join(_escape(ch) if unicodedata.category(ch) in _HIDDEN else ch for ch in text)


def markup_safe(text: object) -> str:
    """:func:`visible`, with rich markup escaped (``[blink]`` prints as ``[blink]``), for text from a
    file that goes into ``console.print`` or a rich table cell."""
    from rich.markup import escape

    return escape(visible(text))


def plain(text: object) -> Text:
    """:func:`visible` as a rich ``Text``: printed as it is, never read as markup or emoji codes
    (``:smile:``), for a rich table cell or title."""
    from rich.text import Text

    return Text(visible(text))


def code_points(text: object) -> str:
    """``text`` with every non-ASCII character written as its escape (``e\\u0301``, ``\\xe9``):
    for two names that look the same on screen, whose difference is in the code points."""
    return "".join(ch if ch.isascii() and ch.isprintable() else _escape(ch) for ch in str(text))


def normalisation_difference(a: str, b: str) -> str | None:
    """How ``a`` and ``b`` differ (text to follow "differs only in") when only Unicode normalisation
    tells them apart (a composed ``é``
    against ``e`` plus a combining accent, as macOS spells file names), with their code points
    shown; None when they are equal or differ otherwise. Why: both look the same on screen, so a
    message that shows only the names gave no clue (or, "differs only in case", the wrong one)."""
    if a == b:
        return None
    for form in ("NFC", "NFKC"):
        if unicodedata.normalize(form, a) == unicodedata.normalize(form, b):
            kind = "NFC/NFD" if form == "NFC" else "NFKC compatibility forms"
            return f"Unicode normalisation ({kind}: '{code_points(a)}' against '{code_points(b)}')"
    return None


def say(line: object, err: bool = True) -> bool:
    """Print ``line`` (:func:`visible`: one line, controls shown) on stderr (``err``) or stdout;
    False when it could not be (the stream then goes to the null device, so later lines "print").

    Why: the lines cryoshift prints about a run (notes, the error count, the summary) come before
    or after rows it must write, and one that cannot be printed (stderr a pipe whose reader is
    gone, ``cryoshift classify ... 2>&1 | head -1``; a hung-up terminal; a stream closed) raised
    BrokenPipeError and stopped the run before its manifest (or its first row) was written. Results
    and manifest matter more than a line: it is dropped, every note is kept in the manifest, and
    the stream's descriptor then goes to the null device (:func:`_to_devnull`), so later lines and
    Python's flush at exit fail no more. A character the stream cannot encode (a name on a
    Latin-1 terminal) is written as its escape, not taken for a gone reader."""
    stream = sys.stderr if err else sys.stdout
    if stream is None:  # no stream at all (started with ``2>&-`` under some launchers)
        return False
    text = visible(line)
    try:
        try:
            print(text, file=stream, flush=True)
        except UnicodeEncodeError:  # a ValueError, but the stream is fine: escape what it cannot encode
            encoding = getattr(stream, "encoding", None) or "ascii"
            print(text.encode(encoding, "backslashreplace").decode(encoding), file=stream, flush=True)
    except (OSError, ValueError):  # BrokenPipeError, EIO; ValueError: the stream is closed
        _to_devnull(stream)
        return False
    return True


def _to_devnull(stream: TextIO) -> None:
    """Point the file descriptor under ``stream`` at the null device (Python's advice for a broken
    pipe, https://docs.python.org/3/library/signal.html#note-on-sigpipe), so what its buffer still
    holds and whatever is written later go nowhere instead of raising; a stream with no descriptor
    (replaced by a test harness) is left alone."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)
