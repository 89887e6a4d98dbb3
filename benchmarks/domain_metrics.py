"""Scores and summaries for the domain-shift benchmark (numpy; macro-F1 is cryoshift evaluate's).

Kept apart from the harness so the arithmetic (macro-F1, gap closed, spread over seeds)
can be read and checked on its own; target labels enter the benchmark only here.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

# A gap closed is only meaningful when the oracle is clearly above source-only.
MIN_GAP = 0.02


def confusion(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """Rows = true class, columns = predicted class (counts)."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float((y_true == y_pred).mean()) if len(y_true) else float("nan")


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> float:
    """Macro-F1 as ``cryoshift evaluate`` reports it (training/evaluate.py classification_metrics,
    the one definition: scikit-learn's, over the classes in the labels or the predictions); NaN
    with no samples.

    Macro-F1 rather than accuracy alone, because a collapsed model that predicts one big
    class everywhere can still score a respectable accuracy on an unbalanced target.
    """
    from cryoshift.training.evaluate import classification_metrics

    if len(y_true) == 0:
        return float("nan")
    names = [str(k) for k in range(num_classes)]
    return float(classification_metrics(np.asarray(y_true), np.asarray(y_pred), names)["macro_f1"])


def gap_closed(method: float, source_only: float, oracle: float) -> float | None:
    """(method - source-only) / (oracle - source-only); None when the oracle gap is too small."""
    gap = oracle - source_only
    if not (math.isfinite(gap) and gap >= MIN_GAP):
        return None
    return (method - source_only) / gap


def _mean_sd(values: Iterable[float | None]) -> dict[str, Any]:
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return {"mean": None, "sd": None, "n": 0, "values": []}
    arr = np.asarray(vals)
    sd = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return {"mean": float(arr.mean()), "sd": sd, "n": len(vals), "values": [round(v, 4) for v in vals]}


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per target and method: mean and sample s.d. over seeds of every score.

    Gap closed is computed per seed (the method against source-only and oracle of the
    same seed and target), then averaged, so seed-to-seed luck cancels where it can.
    """
    by_key: dict[tuple[str, str, int], dict[str, Any]] = {}
    for run in runs:
        by_key[(run["target"], run["method"], run["seed"])] = run
    out: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    targets = sorted({r["target"] for r in runs})
    methods = list(dict.fromkeys(r["method"] for r in runs))
    for target in targets:
        for method in methods:
            rows = [r for (t, m, _), r in sorted(by_key.items()) if t == target and m == method]
            if not rows:
                continue
            gaps = []
            for r in rows:
                so = by_key.get((target, "source-only", r["seed"]))
                orc = by_key.get((target, "oracle", r["seed"]))
                if so is not None and orc is not None:
                    gaps.append(gap_closed(r["accuracy"], so["accuracy"], orc["accuracy"]))
            out[target][method] = {
                "accuracy": _mean_sd(r["accuracy"] for r in rows),
                "macro_f1": _mean_sd(r["macro_f1"] for r in rows),
                "gap_closed": _mean_sd(gaps),
                "accuracy_label_chosen": _mean_sd(r.get("accuracy_label_chosen") for r in rows),
                "source_val_accuracy": _mean_sd(r.get("source_val_accuracy") for r in rows),
                "selected_epochs": [r.get("selected_epoch") for r in rows],
                "label_chosen_epochs": [_epoch(r.get("label_chosen_checkpoint")) for r in rows],
                "seeds": [r["seed"] for r in rows],
            }
    return dict(out)


def _epoch(checkpoint: str | None) -> int | None:
    """``epoch_0004.pt`` -> 4."""
    try:
        return int(str(checkpoint).split("_")[1].split(".")[0])
    except (IndexError, ValueError):
        return None


def _fmt(stat: dict[str, Any], pct: bool = True, of: int | None = None) -> str:
    """mean ± s.d.; ``of`` = expected count, so a score defined for fewer seeds says so."""
    if stat["mean"] is None:
        return "n/a"
    scale = 100.0 if pct else 1.0
    text = f"{stat['mean'] * scale:.1f} ± {stat['sd'] * scale:.1f}"
    if of is not None and stat["n"] < of:
        text += f" (n={stat['n']})"
    return text


def _epochs(s: dict[str, Any]) -> str:
    pairs = zip(s.get("selected_epochs", []), s.get("label_chosen_epochs", []), strict=False)
    return ", ".join(f"{a}/{b}" for a, b in pairs)


def markdown_table(summary: dict[str, dict[str, dict[str, Any]]], target_notes: dict[str, str]) -> str:
    """One table per target domain; every number is mean ± s.d. over seeds (percent).

    Gap closed is left out (n/a) for a seed whose oracle is less than MIN_GAP above source-only:
    the ratio would be noise over noise; "(n=k)" says how many seeds it covers.
    """
    lines: list[str] = []
    for target, methods in summary.items():
        lines.append(f"### Target `{target}`")
        if target in target_notes:
            lines.append("")
            lines.append(target_notes[target])
        lines.append("")
        lines.append(
            "| method | target acc (%) | macro-F1 (%) | gap closed (%) "
            "| acc, label-chosen ckpt (%) | epoch: label-free / label-chosen "
            "| source val acc (%) | seeds |"
        )
        lines.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for method, s in methods.items():
            lines.append(
                f"| {method} | {_fmt(s['accuracy'])} | {_fmt(s['macro_f1'])} "
                f"| {_fmt(s['gap_closed'], of=len(s['seeds']))} "
                f"| {_fmt(s['accuracy_label_chosen'])} | {_epochs(s)} | {_fmt(s['source_val_accuracy'])} "
                f"| {len(s['seeds'])} |"
            )
        lines.append("")
    return "\n".join(lines)
