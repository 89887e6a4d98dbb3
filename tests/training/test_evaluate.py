"""evaluate on a checkpoint and on its ONNX export: same predictions, same report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tiny_training import TINY_DATASET_RUN

from cryoshift.runtime.errors import InputError
from cryoshift.training.evaluate import evaluate
from cryoshift.training.trainer import TrainConfig, train


@pytest.fixture(scope="module")
def run_dir(domains: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("evalrun") / "run"
    train(
        TrainConfig(
            source=str(domains["source"]),
            target=str(domains["target_unlabelled"]),
            out=str(out),
            method="adabn",
            **TINY_DATASET_RUN,
        )
    )
    return out


def test_checkpoint_and_onnx_evaluate_alike(run_dir: Path, domains: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from cryoshift.export.api import export_checkpoint

    export_checkpoint(run_dir, tmp_path / "export", parity_data=str(domains["source"]))
    onnx_path = tmp_path / "export" / "model.onnx"
    a = evaluate(run_dir / "model.pt", domains["target"], tmp_path / "a")
    b = evaluate(onnx_path, domains["target"], tmp_path / "b", run_dir=run_dir)
    assert a["confusion_matrix"] == b["confusion_matrix"]
    assert a["accuracy"] == pytest.approx(b["accuracy"])
    assert a["nll"] == pytest.approx(b["nll"], abs=1e-3)  # temperature travels in the ONNX metadata
    assert [e["epoch"] for e in b["checkpoints"]["epochs"]] == [1, 2]
    saved = json.loads((tmp_path / "b" / "evaluation.json").read_text())
    assert saved["macro_f1"] == pytest.approx(b["macro_f1"])


def test_evaluate_refuses_mismatched_data(run_dir: Path, tmp_path: Path) -> None:
    from cryoshift.runtime.dataset import write_dataset

    other = write_dataset(
        tmp_path / "other",
        np.random.default_rng(0).normal(size=(3, 16, 16, 16)).astype(np.float32),
        [0, 1, 0],
        ["x", "y"],
        voxel_size=10.0,
    )
    with pytest.raises(InputError, match="not classes of the model"):
        evaluate(run_dir, other, tmp_path / "o")
    unlabelled = write_dataset(
        tmp_path / "u",
        np.random.default_rng(0).normal(size=(3, 16, 16, 16)).astype(np.float32),
        voxel_size=10.0,
    )
    with pytest.raises(InputError, match="unlabelled"):
        evaluate(run_dir, unlabelled, tmp_path / "u_out")
    small = write_dataset(
        tmp_path / "s",
        np.random.default_rng(0).normal(size=(3, 8, 8, 8)).astype(np.float32),
        [0, 1, 2],
        ["sphere", "rod", "dumbbell"],
        voxel_size=10.0,
    )
    with pytest.raises(InputError, match="boxes"):
        evaluate(run_dir, small, tmp_path / "s_out")


def test_a_dataset_without_a_voxel_size_is_checked_by_its_header(
    run_dir: Path, domains: dict[str, Path], tmp_path: Path
) -> None:
    """dataset.json without ``voxel_size``: its stack header's stands in (with the reader's note);
    evaluate read dataset.json only, said "evaluated without checking it" and scored 12 A data with
    a 10 A model."""
    from hostile_inputs import set_header_voxel, without_dataset_voxel_size

    data = without_dataset_voxel_size(domains["target"], tmp_path / "t12", 12.0)
    with pytest.raises(InputError, match="voxel size 12 A differs from the model's 10 A"):
        evaluate(run_dir, data, tmp_path / "o12")
    set_header_voxel(data, 10.0)
    report = evaluate(run_dir, data, tmp_path / "o10")
    assert any("header" in note for note in report["notes"]), report["notes"]


def test_evaluation_json_says_what_it_scores_and_has_no_f1_for_a_class_absent_from_both(
    tmp_path: Path,
) -> None:
    """One labelled volume of three classes: a class neither in the labels nor predicted has no
    precision, recall or F1 (JSON null, not 0.0) and stays out of macro-F1, which averages the
    classes in the labels or the predictions; the report says its accuracy is the best class's."""
    from tiny_onnx import BOX, CLASSES, VOXEL, build_model, make_volumes

    from cryoshift.runtime.dataset import write_dataset

    model = build_model(tmp_path / "m.onnx")
    data = write_dataset(
        tmp_path / "one", make_volumes(1, BOX, 3), [0], CLASSES, voxel_size=VOXEL, contrast="dark"
    )
    report = evaluate(model, data, tmp_path / "ev")
    saved = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    predicted = int(np.argmax(report["confusion_matrix"][0]))
    absent = [name for i, name in enumerate(CLASSES) if i not in (0, predicted)]
    assert absent  # one label, one prediction, three classes
    for name in absent:
        assert saved["per_class"][name] == {"precision": None, "recall": None, "f1": None, "support": 0}
    counted = [row["f1"] for row in saved["per_class"].values() if row["f1"] is not None]
    assert len(counted) == 3 - len(absent) and saved["macro_f1"] == pytest.approx(np.mean(counted))
    assert "best class (argmax)" in saved["scored"] and "unknown rejection not applied" in saved["scored"]
