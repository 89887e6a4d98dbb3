"""Ensembles of trained runs: test accuracy of each run and of the mean of their class probabilities.

Every run given must have been trained for the same target split (an accuracy.py or
accuracy_screen.py run: its config names the adaptation split ``.../adapt``, whose sibling
``test.npz`` is the held-out labelled split). Each run is scored alone and, for every group of
``--size`` runs (all of them by default), the ensemble that averages the members' softmax
probabilities. No training: this measures what an ensemble of independently trained models would
buy before any code trains one (benchmarks/results/accuracy_levers.md, fifteenth round). Checkpoint
files of one run (``RUN/checkpoints/epoch_0050.pt``) make a snapshot ensemble. One JSON line per
ensemble to ``--log``.

    python benchmarks/ensemble_screen.py W/runs/default__lamella-60__d9 W/runs/seed1__lamella-60__d9
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import accuracy as A


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "runs", nargs="+", type=Path, help="training run directories (model.pt inside) or checkpoint files"
    )
    ap.add_argument("--size", type=int, default=None, help="members per ensemble (default: all runs)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--log", type=Path, default=None)
    args = ap.parse_args(argv)
    tests = {A.run_test_split(run) for run in args.runs}
    if len(tests) != 1:
        ap.error(f"the runs were trained for different test splits: {sorted(map(str, tests))}")
    size = args.size or len(args.runs)
    if not 2 <= size <= len(args.runs):
        ap.error(f"--size must be 2..{len(args.runs)} for {len(args.runs)} runs, got {size}")
    import torch

    torch.set_num_threads(args.threads)
    volumes, labels = A.load_test(tests.pop())
    probs = {run: softmax(A.predict_logits(run, volumes)) for run in args.runs}
    alone = {run: float((p.argmax(1) == labels).mean()) for run, p in probs.items()}
    for group in itertools.combinations(args.runs, size):
        mean = np.mean([probs[run] for run in group], axis=0)
        members = [round(alone[run], 4) for run in group]
        record = {
            "runs": [str(run.relative_to(run.parents[2])) if run.is_file() else run.name for run in group],
            "members": members,
            "members_mean": round(float(np.mean(members)), 4),
            "ensemble": round(float((mean.argmax(1) == labels).mean()), 4),
        }
        A.log_record(record, args.log)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
