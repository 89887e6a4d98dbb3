"""The domain-shift benchmark's arithmetic: macro-F1, gap closed, spread over seeds, the table."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import domain_metrics as dm


def test_accuracy_and_macro_f1_on_a_hand_counted_case() -> None:
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 1, 1]
    assert dm.accuracy(y_true, y_pred) == pytest.approx(4 / 6)
    # class 0: P 1, R 2/3 -> F1 0.8; class 1: P 2/4, R 1 -> 2/3; class 2: 0
    assert dm.macro_f1(y_true, y_pred, 3) == pytest.approx((0.8 + 2 / 3 + 0) / 3)
    cm = dm.confusion(y_true, y_pred, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 2, 0], [0, 1, 0]]
    # a class only predicted counts (F1 0), one neither labelled nor predicted does not: as evaluate
    assert dm.macro_f1([0, 0, 1], [0, 2, 1], 4) == pytest.approx((2 / 3 + 1 + 0) / 3)


def test_collapsed_model_scores_low_macro_f1() -> None:
    y_true = np.array([0] * 80 + [1] * 10 + [2] * 10)
    y_pred = np.zeros(100, dtype=int)
    assert dm.accuracy(y_true, y_pred) == 0.8
    assert dm.macro_f1(y_true, y_pred, 3) < 0.31


def test_gap_closed() -> None:
    assert dm.gap_closed(0.6, 0.4, 0.8) == pytest.approx(0.5)
    assert dm.gap_closed(0.3, 0.4, 0.8) == pytest.approx(-0.25)
    assert dm.gap_closed(0.5, 0.40, 0.41) is None  # oracle barely above source-only: undefined


def test_summarise_pairs_seeds_and_writes_a_table() -> None:
    runs = []
    for seed, (so, cs, orc) in enumerate([(0.4, 0.6, 0.8), (0.5, 0.6, 0.9)]):
        for method, acc in (("source-only", so), ("cryoshift", cs), ("oracle", orc)):
            runs.append(
                {
                    "target": "a",
                    "method": method,
                    "seed": seed,
                    "accuracy": acc,
                    "macro_f1": acc,
                    "accuracy_label_chosen": acc + 0.01,
                }
            )
    summary = dm.summarise(runs)
    gap = summary["a"]["cryoshift"]["gap_closed"]
    assert gap["values"] == [0.5, 0.25] and gap["mean"] == pytest.approx(0.375)
    assert summary["a"]["cryoshift"]["accuracy"]["sd"] == pytest.approx(0.0)
    assert summary["a"]["source-only"]["accuracy"]["sd"] == pytest.approx(np.std([0.4, 0.5], ddof=1))
    table = dm.markdown_table(summary, {"a": "note"})
    assert "| cryoshift | 60.0 ± 0.0 |" in table and "37.5 ± 17.7" in table and "note" in table
