"""Re-render confusion-matrix PNGs from a stored results JSON, without re-training.

Reads ``results/domain_shift_<profile>.json`` (``domain_shift.py``: "class_names" and "runs"
with target, method, seed, accuracy, confusion) or ``results/accuracy_<profile>.json``
(``accuracy.py``: "classes" {name: map code}, the trainer's class names being the codes, in
that order, as ``accuracy.class_names()`` says; and "rows" with target, method,
draw, accuracy, confusion) and writes ``results/<json stem>/confusion_<target>_<method>.png``
for the first seed / draw, in the house style (150 dpi, >= 9 pt text). Embeddings need the
trained models and are not re-rendered here.

    .venv/bin/python benchmarks/render_figures.py benchmarks/results/domain_shift_cpu.json
    .venv/bin/python benchmarks/render_figures.py benchmarks/results/accuracy_*.json --methods all
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import domain_plots
import numpy as np

# the methods domain_shift.py's make_figures draws; accuracy.py has no figures of its own, so all
DOMAIN_SHIFT_METHODS = ("source-only", "cryoshift", "oracle")


def confusion_runs(result: dict[str, Any]) -> tuple[list[str], str, list[dict[str, Any]]]:
    """(class names, name of the replicate key, runs) of either benchmark's JSON."""
    if "rows" in result:  # accuracy.py
        classes = result["classes"]
        names = list(classes.values()) if isinstance(classes, dict) else list(classes)
        return names, "draw", list(result["rows"])
    if "runs" in result:  # domain_shift.py
        return list(result["class_names"]), "seed", list(result["runs"])
    raise ValueError("not a results JSON of domain_shift.py or accuracy.py (no 'runs' or 'rows')")


def render(json_path: Path, methods: Sequence[str] | None = None, out_root: Path | None = None) -> list[Path]:
    """Write one confusion PNG per (target, method) of the first seed/draw; returns the paths.

    ``methods``: None for the benchmark's default selection, ``["all"]`` for every method in
    the file, otherwise the names to draw (those absent from the file are skipped).
    """
    result = json.loads(Path(json_path).read_text())
    names, rep, runs = confusion_runs(result)
    runs = [r for r in runs if r.get("confusion") is not None]
    if not runs:
        return []
    present = list(dict.fromkeys(r["method"] for r in runs))
    if methods is None:
        methods = DOMAIN_SHIFT_METHODS if rep == "seed" else present
    elif list(methods) == ["all"]:
        methods = present
    first = min(r[rep] for r in runs)
    out = (out_root or Path(json_path).parent) / Path(json_path).stem
    paths = []
    for target in dict.fromkeys(r["target"] for r in runs):
        for method in methods:
            key = (target, method, first)
            run = next((r for r in runs if (r["target"], r["method"], r[rep]) == key), None)
            if run is None:
                continue
            title = f"{method} on {target} ({rep} {first}): acc {run['accuracy']:.2f}"
            paths.append(
                domain_plots.plot_confusion(
                    np.asarray(run["confusion"]), names, title, out / f"confusion_{target}_{method}.png"
                )
            )
    return paths


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("json", nargs="+", type=Path, help="results JSON of domain_shift.py or accuracy.py")
    ap.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help="methods to draw ('all' for every one; default: source-only, cryoshift, oracle "
        "for domain_shift, all for accuracy)",
    )
    ap.add_argument(
        "--out", type=Path, default=None, help="root for <json stem>/ (default: next to the JSON)"
    )
    args = ap.parse_args(argv)
    for path in args.json:
        for png in render(path, args.methods, args.out):
            print(png)


if __name__ == "__main__":
    main()
