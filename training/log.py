"""Plain progress lines for logs: when stdout is not a terminal (SLURM, nohup, ``| tee``) the
rich progress bar writes nothing useful, so ``train`` prints one line per epoch instead, plus
how many target items it read."""

from __future__ import annotations

from typing import Any


def plain() -> bool:
    """True when stdout, where train's epoch lines go, is a file or a pipe (runtime/pipeline.py
    ``plain_output``, the one rule; classify's progress applies it to stderr, where it writes)."""
    from cryoshift.runtime.pipeline import plain_output

    return plain_output()


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
