"""train's progress: the rich bar on a terminal, plain lines in a log, and the stream they share.

When that stream is not a terminal (SLURM, nohup, ``2> log``) the rich progress bar writes nothing
useful, so ``train`` prints one line per epoch instead, plus how many target items it read.
``cryoshift train`` sends all of it to stderr (:func:`progress_on_stderr`), as every other verb
does with its progress: stdout holds only the run's results (the model line, ``next: ...``)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any


def plain() -> bool:
    """True when the stream train's epoch lines are printed to (``sys.stdout`` as train sees it:
    stderr under :func:`progress_on_stderr`) is a file or a pipe (runtime/pipeline.py
    ``plain_output``, the one rule)."""
    from cryoshift.runtime.pipeline import plain_output

    return plain_output()


@contextlib.contextmanager
def progress_on_stderr() -> Iterator[None]:
    """Within it, what training writes to stdout goes to stderr: its rich bar (rich's console
    writes to whatever ``sys.stdout`` is when it draws), the plain epoch lines and the target count.

    Why: ``cryoshift train`` drew its bar (or, in a log, its epoch lines) on stdout, mixed into the
    results a user pipes or keeps (``cryoshift train ... > result.txt``) while every other verb's
    progress went to stderr. The bar and :func:`plain` then both follow stderr, so a terminal on
    stderr gets the bar and a log there gets the lines. The Python API's ``train()`` is unchanged
    (its caller owns stdout)."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def target_line(target: Any) -> str:
    skipped = len(getattr(target, "skipped", ()) or ())
    return f"cryoshift: target: {len(target)} items read" + (f", {skipped} skipped" if skipped else "")


def epoch_line(row: dict[str, Any], epochs: int) -> str:
    """``epoch 3/20 loss 0.912 cls 0.701 val_acc 0.843 im 0.512 12.3 s 410 vol/s``: every
    number of the metrics row that is a loss or a score, in a stable order."""
    parts = [f"epoch {int(row['epoch'])}/{epochs}"]
    for key, value in row.items():
        if key in ("epoch", "seconds", "train_vol_per_s") or not isinstance(value, (int, float)):
            continue
        parts.append(f"{key} {value:.4g}")
    parts.append(f"{row.get('seconds', 0.0):.1f} s")
    if row.get("train_vol_per_s"):
        parts.append(f"{row['train_vol_per_s']:,.0f} vol/s")
    return " ".join(parts)
