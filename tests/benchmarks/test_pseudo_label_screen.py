"""The pseudo-label screen keeps what training keeps: per predicted class, the largest margins."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from pseudo_label_screen import kept_accuracy


def test_kept_accuracy_takes_each_class_by_margin() -> None:
    pred = np.array([0, 0, 0, 0, 1, 1])
    truth = np.array([0, 0, 1, 1, 1, 0])
    margin = np.array([0.9, 0.8, 0.1, 0.2, 0.5, 0.4])
    # half of each class: the two best of class 0 (both right) and the best of class 1 (right)
    assert kept_accuracy(pred, margin, truth, 0.5) == (3, 1.0)
    # everything: 3 of 6 right
    assert kept_accuracy(pred, margin, truth, 1.0) == (6, 0.5)
    # a tiny share still keeps one per class
    n, _ = kept_accuracy(pred, margin, truth, 0.01)
    assert n == 2
