"""What evaluation.json, the run report and train's last lines record of how a model was made.

evaluation.json had the method alone (no hyper-parameters, seed, recipe or versions), so comparing
two evaluations meant opening each run; the run's HTML report showed no hyper-parameters; train's
last line printed the last epoch's source accuracy beside the selected epoch's calibration."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cryoshift.runtime.cli import main
from cryoshift.runtime.commands.train import selected_model_line
from cryoshift.runtime.report import build_report
from cryoshift.training.evaluate import evaluate
from cryoshift.training.trainer import TrainConfig, train


@pytest.fixture(scope="module")
def run_dir(domains: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("recordrun") / "run"
    train(
        TrainConfig(
            source=str(domains["source"]),
            target=str(domains["target_unlabelled"]),
            out=str(out),
            method="dann",
            backbone="cryonet-small",
            epochs=1,
            batch_size=8,
            seed=3,
            method_kwargs={"dann_weight": 0.5},
            progress=False,
        )
    )
    return out


def test_evaluation_json_records_how_the_run_trained(
    run_dir: Path, domains: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", str(run_dir), str(domains["target"]), "--out", str(tmp_path / "ev")]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps lines at the terminal's width
    record = json.loads((tmp_path / "ev" / "evaluation.json").read_text())["training"]
    selection = json.loads((run_dir / "selection.json").read_text())
    versions = json.loads((run_dir / "versions.json").read_text())
    assert record["method"] == "dann"
    assert record["method_hparams"] == selection["method_hparams"]
    assert record["method_hparams"]["dann_weight"] == 0.5 and "grl_max" in record["method_hparams"]
    assert record["seed"] == 3
    assert record["template_labels"] == 0 and record["spectrum_match"] is False
    assert record["uses_target_labels"] is False
    assert record["cryoshift_version"] == versions["cryoshift"]
    assert record["torch_version"] == versions["torch"]
    assert record["unknown"] == []
    assert "trained: method dann (" in out and "dann_weight=0.5" in out and "seed 3" in out


def test_a_model_outside_its_run_records_what_it_holds(
    run_dir: Path, domains: dict[str, Path], tmp_path: Path
) -> None:
    """A checkpoint copied out of its run holds the --hparam values given, not the defaults then in
    force: those are recorded as unknown, never filled in from today's defaults."""
    lone = tmp_path / "lone.pt"
    shutil.copy(run_dir / "model.pt", lone)
    record = evaluate(lone, domains["target"], tmp_path / "ev")["training"]
    assert record["run"] is None
    assert record["method_hparams"] is None
    assert record["method_hparams_given"] == {"dann_weight": 0.5}
    assert record["seed"] == 3
    assert record["torch_version"] is None
    assert {"method_hparams", "torch_version"} <= set(record["unknown"])
    assert record["cryoshift_version"]  # the checkpoint's metadata records it


def test_run_report_shows_the_hyper_parameters(run_dir: Path) -> None:
    page = build_report(run_dir)
    assert "hyper-parameters" in page
    assert "dann_weight=0.5" in page and "grl_max=" in page


def test_train_line_gives_the_selected_epochs_source_accuracy() -> None:
    history = [
        {"epoch": 1, "src_val_acc": 0.91},
        {"epoch": 2, "src_val_acc": 0.42},
    ]
    line = selected_model_line(1.5, 0.3, history, selected_epoch=1)
    assert "source val accuracy 0.910" in line and "0.420" not in line
    assert "selected epoch 1" in line
    no_val = selected_model_line(1.5, 0.3, [{"epoch": 1}], selected_epoch=1)
    assert "n/a (no source validation data)" in no_val
