"""Paths as written: cryoshift never expands ``~`` itself; the shell does, or nobody does.

Why: bash leaves ``~`` alone after ``--out=`` and inside quotes, so cryoshift received ``~/res``
and wrote the folder ``./~/res``. pandas, though, expands a leading ``~`` of every path it is
given (a ``str`` or a ``Path``), so the results, pick tables, listings and particles.csv were read
back from ``$HOME/res``: another run's rows, with exit status 0. Two rules keep one answer:

* every path handed to a pandas reader goes through :func:`for_pandas`, which pandas reads as
  the same literal file;
* an output path that starts with ``~`` is said once (:func:`note_unexpanded_tilde`), so the
  user learns where the files went instead of looking for them in their home folder.
"""

from __future__ import annotations

import os
from pathlib import Path

# the literal ``~...`` folders said already in this process: simulate checks its folder twice, and
# the demo checks the folder of each stage inside its own
_noted: set[str] = set()


def for_pandas(path: str | os.PathLike[str]) -> str:
    """``path`` in a form pandas does not expand: a leading ``~`` gets ``./`` in front (the same
    file, relative to the working folder as before); any other path is returned as it is, so
    messages that name it do not change."""
    text = os.fspath(path)
    return os.path.join(os.curdir, text) if text.startswith("~") else text


def unexpanded_tilde_note(out: str | Path) -> str | None:
    """The note for an output path whose first part starts with a literal ``~``; None otherwise."""
    text = os.fspath(out)
    if not text.startswith("~"):
        return None
    return f"{text}: the shell did not expand ~; writing to {for_pandas(text)}"


def note_unexpanded_tilde(out: str | Path) -> None:
    """Say :func:`unexpanded_tilde_note` on stderr, once per process for each literal ``~...``
    folder (the first part of ``out``)."""
    note = unexpanded_tilde_note(out)
    key = os.path.abspath(Path(out).parts[0])
    if note is None or key in _noted:
        return
    _noted.add(key)
    from cryoshift.runtime.terminal import say

    say(f"cryoshift: note: {note}")
