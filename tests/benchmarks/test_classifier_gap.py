"""The classifier-gap screen's summary of which class pairs a network mixes up."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from classifier_gap import confused_pairs


def test_confused_pairs_counts_both_directions_and_ranks_them() -> None:
    names = ["a", "b", "c", "d"]
    truth = np.array([0, 0, 1, 1, 1, 2, 2, 3, 3, 3])
    pred = np.array([1, 0, 0, 0, 1, 3, 2, 2, 3, 3])
    pairs = confused_pairs(truth, pred, names, top=3)
    # a->b once and b->a twice: 3 errors; c<->d one each way: 2; nothing else is confused
    assert pairs == [{"pair": "a/b", "errors": 3}, {"pair": "c/d", "errors": 2}]
    assert confused_pairs(truth, truth, names) == []
