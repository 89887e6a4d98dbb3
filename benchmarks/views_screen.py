"""Test-time views of trained runs: test accuracy with 1 pose and with the 4 wedge-preserving poses.

Scores the selected model of each run directory given (an accuracy.py or accuracy_screen.py run:
its config names the adaptation split ``.../adapt``, whose sibling ``test.npz`` is the held-out
labelled split) with ``test_views`` 1 and 4, whatever the run was trained with. No training: this
is how the gain of ``--test-views 4`` was measured on checkpoints that already existed
(benchmarks/results/accuracy_levers.md, fourth round). One JSON line per run to ``--log``.

    python benchmarks/views_screen.py W/runs/lamella-60__default__d0 W/runs/lamella-60__oracle__d0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import accuracy as A


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="training run directories")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--log", type=Path, default=None)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    for run in args.runs:
        test = A.run_test_split(run)
        volumes, labels = A.load_test(test)
        record = {"run": run.name, "test": str(test)}
        for views in (1, 4):
            record[f"acc_{views}_views"] = round(
                float((A.predict(run, volumes, test_views=views) == labels).mean()), 4
            )
        A.log_record(record, args.log)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
