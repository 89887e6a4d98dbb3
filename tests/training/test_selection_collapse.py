"""Label-free selection never picks an epoch whose target predictions are one class while another
epoch is not collapsed, whatever the source predictions do; and evaluate says when the model it
scores is an uncalibrated checkpoint (as export does).

Why: a collapse was flagged only while the source stayed spread, so a 2-epoch toy whose first
epoch answered one class for both domains (chance on the source, 100 % of the target in one
class) was selected over a better epoch, with ``warnings: []``; and evaluate of an epoch
checkpoint reported temperature-1 NLL/ECE and "unknown 0.0 %" with no note.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from tiny_training import TINY_DATASET_RUN

from cryoshift.training.select import ONE_CLASS_SHARE, select_epoch, target_scores, training_warnings

K = 3
LABELS = np.arange(60) % K  # balanced source validation labels


def _one_class(n: int, k: int = 0) -> np.ndarray:
    """Logits of a model that answers class ``k`` for every volume, confidently."""
    logits = np.zeros((n, K))
    logits[:, k] = 4.0
    return logits


def _answers(predicted: np.ndarray, seed: int = 0) -> np.ndarray:
    """Logits whose arg-max is ``predicted``, with varied confidence."""
    rng = np.random.default_rng(seed)
    return np.eye(K)[predicted] * rng.uniform(1.0, 4.0, (len(predicted), 1))


def _row(epoch: int, source_logits: np.ndarray, target_logits: np.ndarray) -> dict[str, float]:
    """One epoch's record as the trainer makes it: source accuracy and the label-free scores."""
    acc = float((source_logits.argmax(1) == LABELS).mean())
    return {"epoch": epoch, "src_val_acc": acc, **target_scores(target_logits, source_logits)}


def _half_right() -> np.ndarray:
    """Source logits right on every second volume (accuracy 0.5, predictions spread)."""
    predicted = LABELS.copy()
    predicted[1::2] = (LABELS[1::2] + 1) % K
    return _answers(predicted)


def test_an_epoch_one_class_on_both_domains_counts_as_collapsed() -> None:
    both = _row(1, _one_class(60), _one_class(30))
    assert both["src_val_acc"] == pytest.approx(1 / 3) and both["tgt_top_share"] == 1.0
    assert both["src_top_share"] == 1.0 and both["collapsed"] == 1.0
    # a target merely dominated by one class, with the source also dominated, is not one class
    dominated = np.r_[np.zeros(26, int), np.arange(4) % K]  # 26 + 2 of 30 in class 0: 0.93
    scores = target_scores(_answers(dominated), _one_class(60))
    assert scores["tgt_top_share"] == pytest.approx(28 / 30) and scores["collapsed"] == 0.0


def test_the_toy_run_of_the_report_chooses_the_better_epoch_and_warns() -> None:
    """The metrics tester's 2-epoch toy: epoch 1 one class everywhere (chance on the source),
    epoch 2 half right on the source but 100 % of the target in one class. Every epoch collapsed,
    so the choice is made as before among them all (the better source accuracy wins) and warned."""
    rows = [_row(1, _one_class(60), _one_class(30)), _row(2, _half_right(), _one_class(30))]
    sel = select_epoch(rows)
    assert [e["collapsed"] for e in sel["epochs"]] == [True, True]
    assert sel["selected_epoch"] == 2  # the old rule chose epoch 1, at chance
    (warning,) = training_warnings(rows, sel["selected_epoch"], num_classes=K)
    assert warning.startswith("target predictions collapsed: epoch 2 puts 100 % of the target in one class")
    assert "(as every epoch does)" in warning and "while the source classes stay apart" in warning
    # the epoch that is one class on the source too is said to be so, not "apart"
    (only_first,) = training_warnings(rows[:1], 1, num_classes=K)
    assert "and 100 % of the source validation data too" in only_first
    assert "stay apart" not in only_first


@pytest.mark.parametrize("criterion", ["im", "snd", "entropy"])
def test_a_one_class_epoch_is_never_chosen_while_another_is_not_collapsed(criterion: str) -> None:
    """Epoch 1 is one class on both domains; epoch 2 keeps the source near chance but spreads the
    target. ``entropy`` rewards the confident one-class epoch, and the source accuracies are
    within the tolerance, so the old rule chose epoch 1 under it."""
    rng = np.random.default_rng(1)
    near_chance = _answers(rng.integers(0, K, 60), seed=2)
    spread_target = rng.normal(0, 0.3, (30, K)) + np.eye(K)[np.arange(30) % K] * 0.5
    rows = [_row(1, _one_class(60), _one_class(30)), _row(2, near_chance, spread_target)]
    assert abs(rows[0]["src_val_acc"] - rows[1]["src_val_acc"]) <= 0.05
    sel = select_epoch(rows, criterion=criterion)
    assert sel["selected_epoch"] == 2
    assert not sel["epochs"][0]["eligible"] and sel["epochs"][0]["score"] == -1.0
    assert training_warnings(rows, 2, num_classes=K) == []


def test_a_row_recorded_before_the_rule_is_judged_by_its_target_share() -> None:
    """metrics.csv rows read back on resume carry the old flag: a one-class target is still out."""
    old = {"epoch": 1, "src_val_acc": 0.9, "tgt_im": 0.9, "tgt_top_share": 1.0, "collapsed": 0.0}
    fine = {"epoch": 2, "src_val_acc": 0.88, "tgt_im": 0.5, "tgt_top_share": 0.4, "collapsed": 0.0}
    assert select_epoch([old, fine])["selected_epoch"] == 2


# ----------------------------------------------------------------------------- tiny real runs


@pytest.fixture(scope="module")
def run_dir(domains: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("collapse") / "run"
    _train_tiny(domains["source"], domains["target_unlabelled"], out)
    return out


def _train_tiny(source: Path, target: Path, out: Path) -> None:
    """Two source-only epochs of cryonet-small: the runs whose selection these tests read."""
    from cryoshift.training.trainer import TrainConfig, train

    train(
        TrainConfig(
            source=str(source), target=str(target), out=str(out), method="source-only", **TINY_DATASET_RUN
        )
    )


def test_a_healthy_real_run_flags_nothing(run_dir: Path) -> None:
    """The rule only takes out epochs with a one-class target: this run's target is spread."""
    selection = json.loads((run_dir / "selection.json").read_text())
    assert not any(e["collapsed"] for e in selection["epochs"])
    assert max(e["tgt_top_share"] for e in selection["epochs"]) < ONE_CLASS_SHARE
    assert not [w for w in selection["warnings"] if "collapsed" in w]


def test_a_real_run_that_learned_nothing_is_warned_as_collapsed(tmp_path: Path) -> None:
    """A source whose volumes are one volume with labels that cannot be told apart: every epoch
    answers one class on the source validation data and on the target. The old rule flagged
    nothing (the source was "collapsed" too) and wrote ``warnings: []``."""
    from cryoshift.runtime.dataset import write_dataset

    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[:16, :16, :16] - 7.5
    base = -(x**2 + y**2 + z**2 < 16).astype(np.float32) + rng.normal(0, 0.3, (16, 16, 16)).astype(np.float32)
    noise = rng.normal(0, 1e-3, (78, 16, 16, 16)).astype(np.float32)
    source = write_dataset(
        tmp_path / "src",
        base + noise[:48],
        np.arange(48) % K,
        ["sphere", "rod", "dumbbell"],
        voxel_size=10.0,
        contrast="dark",
    )
    target = write_dataset(
        tmp_path / "tgt", base * 3 + 5 + noise[48:], None, None, voxel_size=10.0, contrast="dark"
    )
    run = tmp_path / "run"
    _train_tiny(source, target, run)
    selection = json.loads((run / "selection.json").read_text())
    assert [e["tgt_top_share"] for e in selection["epochs"]] == [1.0, 1.0]
    assert all(e["collapsed"] for e in selection["epochs"])
    (warning,) = [w for w in selection["warnings"] if w.startswith("target predictions collapsed")]
    assert "puts 100 % of the target in one class (as every epoch does)" in warning
    assert "of the source validation data too" in warning
    with open(run / "target_classes.csv", newline="") as fh:
        assert max(float(r["share"]) for r in csv.DictReader(fh)) == 1.0


def test_evaluate_of_an_epoch_checkpoint_says_it_is_not_calibrated(
    run_dir: Path, domains: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cryoshift.training.evaluate import evaluate

    epoch = run_dir / "checkpoints" / "epoch_0001.pt"
    report = evaluate(epoch, domains["target"], tmp_path / "epoch")
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if "is not calibrated" in x]
    assert line.startswith(
        f"cryoshift: note: {epoch} is not calibrated: it has no calibration (temperature 1"
    )
    assert "model.pt is the calibrated model" in line
    saved = json.loads((tmp_path / "epoch" / "evaluation.json").read_text())
    assert saved["notes"] == report["notes"] == [line.removeprefix("cryoshift: note: ")]
    # the run's calibrated model.pt (and the run folder, which means it) gets no such note
    for model in (run_dir / "model.pt", run_dir):
        report = evaluate(model, domains["target"], tmp_path / model.name)
        assert not [n for n in report["notes"] if "not calibrated" in n]
        assert "not calibrated" not in capsys.readouterr().err
