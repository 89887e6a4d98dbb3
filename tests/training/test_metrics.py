"""Metrics, calibration and selection on hand-made numbers (no training)."""

from __future__ import annotations

import numpy as np
import pytest

from cryoshift.training import calibrate
from cryoshift.training.evaluate import classification_metrics, confusion_matrix
from cryoshift.training.select import (
    information_maximisation,
    mean_entropy,
    select_epoch,
    soft_neighbourhood_density,
)


def test_metrics_match_a_hand_computed_case() -> None:
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2])
    m = classification_metrics(y_true, y_pred, ["a", "b", "c"])
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    # a: P 2/2, R 2/3 -> F1 0.8; b: P 1/2, R 1/2 -> 0.5; c: P 1/2, R 1 -> 2/3
    assert m["per_class"]["a"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert m["per_class"]["b"]["f1"] == pytest.approx(0.5)
    assert m["per_class"]["c"]["precision"] == pytest.approx(0.5)
    assert m["per_class"]["c"]["recall"] == pytest.approx(1.0)
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_macro_f1_counts_a_class_only_predicted_and_leaves_out_one_absent_from_both() -> None:
    """scikit-learn's convention: classes in the labels or the predictions. Averaging over the true
    classes alone ignored the false positives into a class the labels lack; a class absent from
    both has no precision/recall/F1 (None, not 0.0) and is not averaged."""
    m = classification_metrics(np.array([0, 0, 1]), np.array([0, 2, 1]), ["a", "b", "c", "d"])
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["per_class"]["b"]["f1"] == pytest.approx(1.0)
    assert m["per_class"]["d"] == {"precision": None, "recall": None, "f1": None, "support": 0}
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)  # a, b and c; not d
    # a class in the labels the model never predicts: precision 0 (zero_division=0), counted
    m = classification_metrics(np.array([0, 1]), np.array([0, 0]), ["a", "b"])
    assert m["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.0) / 2)
    assert confusion_matrix(np.array([1]), np.array([0]), 2).tolist() == [[0, 0], [1, 0]]


def test_macro_f1_is_not_above_accuracy_when_most_predictions_go_to_an_absent_class() -> None:
    """The tester's labelled picks without ribosomes: 35 of 62 predictions went to ribosome, and
    macro-F1 (0.418, over proteasome and chaperonin) stood above accuracy (0.355)."""
    cm = np.array([[0, 0, 0], [11, 20, 0], [24, 5, 2]])  # rows true, columns predicted
    y_true = np.repeat(np.arange(3), cm.sum(axis=1))
    y_pred = np.concatenate([np.repeat(np.arange(3), row) for row in cm])
    m = classification_metrics(y_true, y_pred, ["ribosome", "proteasome", "chaperonin"])
    assert m["confusion_matrix"] == cm.tolist() and m["accuracy"] == pytest.approx(22 / 62)
    f1 = {"ribosome": 0.0, "proteasome": 2 * 20 / (25 + 31), "chaperonin": 2 * 2 / (2 + 31)}
    assert {k: v["f1"] for k, v in m["per_class"].items()} == pytest.approx(f1)
    assert m["macro_f1"] == pytest.approx(sum(f1.values()) / 3)
    assert m["macro_f1"] < m["accuracy"]


def test_temperature_scaling_reduces_nll_of_an_overconfident_model() -> None:
    rng = np.random.default_rng(0)
    n, k = 400, 4
    labels = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), labels] += 1.5  # informative but noisy
    overconfident = logits * 6.0  # miscalibrated: far too sharp
    t = calibrate.fit_temperature(overconfident, labels)
    assert t > 2.0
    assert calibrate.nll(overconfident, labels, t) < 0.8 * calibrate.nll(overconfident, labels)
    assert calibrate.fit_temperature(np.zeros((0, k)), np.zeros(0)) == 1.0


def test_unknown_threshold_is_a_low_quantile_of_confidence() -> None:
    logits = np.log(np.array([[0.9, 0.1], [0.6, 0.4], [0.99, 0.01]] * 10))
    thr = calibrate.unknown_threshold(logits, 1.0, quantile=0.05)
    assert 0.59 < thr < 0.61


def test_feature_reference_scores_one_in_domain_and_more_away() -> None:
    rng = np.random.default_rng(1)
    feats = rng.normal(2.0, 0.5, (500, 16))
    ref = calibrate.feature_reference(feats)
    assert np.median(ref.shift_score(feats)) == pytest.approx(1.0)
    assert np.median(ref.shift_score(feats + 3.0)) > 3.0


def test_label_free_scores_behave() -> None:
    k = 3
    confident = np.repeat(np.eye(k) * 0.97 + 0.01, 10, axis=0)
    uniform = np.full((30, k), 1 / k)
    collapsed = np.tile([0.98, 0.01, 0.01], (30, 1))
    assert mean_entropy(uniform) == pytest.approx(1.0)
    assert information_maximisation(confident) > 0.8
    assert information_maximisation(uniform) == pytest.approx(0.0, abs=1e-9)
    assert information_maximisation(collapsed) < 0.05
    # SND is highest for uniform outputs: why it is not the default criterion
    assert soft_neighbourhood_density(uniform) > soft_neighbourhood_density(confident)


def test_selection_respects_the_source_accuracy_guard() -> None:
    rows = [
        {"epoch": 1, "src_val_acc": 0.50, "tgt_im": 0.9, "snd": 0.9},  # good target score, poor source
        {"epoch": 2, "src_val_acc": 0.90, "tgt_im": 0.4, "snd": 0.5},
        {"epoch": 3, "src_val_acc": 0.88, "tgt_im": 0.6, "snd": 0.4},
        {"epoch": 4, "src_val_acc": 0.70, "tgt_im": 0.7, "snd": 0.7},
    ]
    sel = select_epoch(rows, tolerance=0.05)
    assert sel["selected_epoch"] == 3
    assert sel["uses_target_labels"] is False
    assert [e["eligible"] for e in sel["epochs"]] == [False, True, True, False]
    assert select_epoch(rows, tolerance=0.05, criterion="snd")["selected_epoch"] == 2
    assert select_epoch(rows, tolerance=1.0)["selected_epoch"] == 1
    # no target scores at all: best source accuracy
    no_target = [{"epoch": 1, "src_val_acc": 0.2}, {"epoch": 2, "src_val_acc": 0.3}]
    assert select_epoch(no_target)["selected_epoch"] == 2
    with pytest.raises(ValueError):
        select_epoch(rows, criterion="nonsense")


def test_collapse_is_flagged_never_selected_and_warned() -> None:
    from cryoshift.training.select import collapse_share, target_scores, training_warnings

    rng = np.random.default_rng(0)
    balanced_source = np.eye(6)[np.arange(120) % 6] * 5 + rng.normal(size=(120, 6))
    collapsed = np.zeros((120, 6))
    collapsed[:, 2] = 4.0  # every target sample in class 2, confidently
    spread = np.eye(6)[rng.integers(0, 6, 120)] * 3
    assert target_scores(collapsed, balanced_source)["collapsed"] == 1.0
    assert target_scores(spread, balanced_source)["collapsed"] == 0.0
    # one class on the source too is a collapse as well (the model learned nothing)
    assert target_scores(collapsed, collapsed)["collapsed"] == 1.0
    assert collapse_share(6) == 0.5 and collapse_share(2) == 0.9
    assert collapse_share(3) == pytest.approx(2.5 / 3)

    rows = [
        {"epoch": 1, "src_val_acc": 0.80, **target_scores(spread, balanced_source)},
        {"epoch": 2, "src_val_acc": 0.90, **target_scores(collapsed, balanced_source)},
    ]
    rows[1]["tgt_im"] = 0.99  # the collapsed epoch has the best source accuracy and a high target score
    sel = select_epoch(rows, tolerance=0.05)
    assert sel["selected_epoch"] == 1  # best source accuracy among non-collapsed epochs sets the guard
    assert sel["epochs"][1]["collapsed"] and not sel["epochs"][1]["eligible"]
    assert training_warnings(rows, sel["selected_epoch"]) == []
    only_collapsed = [rows[1]]
    assert select_epoch(only_collapsed)["selected_epoch"] == 2
    (warning,) = training_warnings(only_collapsed, 2)
    assert "collapsed" in warning and "100 %" in warning


def test_saturated_discriminator_is_warned() -> None:
    from cryoshift.training.select import training_warnings

    rows = [{"epoch": 1, "src_val_acc": 0.5, "loss_mada": 0.4, "loss_img_disc": 2e-5}]
    (warning,) = training_warnings(rows, 1)
    assert "img_disc discriminator saturated" in warning


def test_a_source_loss_above_guessing_is_warned_about() -> None:
    """``--lr 1e6`` trained to a source cross-entropy of 2.9e12 and said nothing."""
    from cryoshift.training.select import training_warnings

    learned = {"epoch": 3, "src_val_acc": 0.9, "loss_ce": 0.4}
    assert training_warnings([learned], 3, num_classes=6) == []
    assert training_warnings([{**learned, "loss_ce": 1.9}], 3, num_classes=6) == []  # ln 6 = 1.79
    for bad in (float("nan"), float("inf")):
        (line,) = training_warnings([{**learned, "loss_ce": bad}], 3, num_classes=6)
        assert line.startswith("training did not learn the source: epoch 3") and "--lr" in line
    # a huge mean loss with a good validation accuracy learned the source; one class for all did not
    assert training_warnings([{**learned, "loss_ce": 2.9e12}], 3, num_classes=6) == []
    diverged = {**learned, "loss_ce": 2.9e12, "src_top_share": 1.0}
    (line,) = training_warnings([diverged], 3, num_classes=6)
    assert line.startswith("training did not learn the source: epoch 3") and "--lr" in line
    assert training_warnings([{**learned, "loss_ce": 2.9e12}], 3) == []  # the class count unknown


def test_a_target_too_small_to_adapt_to_is_warned_about() -> None:
    """A picks table whose rows mostly failed left one target subtomogram, and an adapting run
    trained on it without a word."""
    from cryoshift.training.select import SMALL_TARGET, small_target_warning, training_warnings

    assert small_target_warning(SMALL_TARGET) is None
    line = small_target_warning(1)
    assert line is not None and "only 1 subtomogram:" in line and "source-only" in line
    assert training_warnings([], None, n_target=1) == [line]
    assert training_warnings([], None, n_target=None) == []  # a method that does not adapt
