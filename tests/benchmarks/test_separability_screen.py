"""The separability screen's summary of one set of template-matched volumes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from separability_screen import describe


def test_describe_scores_accuracy_and_margin_quantiles() -> None:
    pred = np.array([0, 1, 1, 2, 2])
    truth = np.array([0, 1, 2, 2, 0])
    margins = np.linspace(0.0, 0.4, 5)
    summary = describe(pred, truth, margins)
    assert summary["n"] == 5 and summary["accuracy"] == 0.6
    assert summary["margin_q10"] < summary["margin_q50"] == 0.2 < summary["margin_q90"]
