"""The demo pipeline end to end, at a tiny size: simulate -> train -> export -> classify -> score."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

TINY = {
    "n_target": 48,
    "epochs": 1,
    "sim_per_epoch": 64,
    "template_labels": 12,
    "tm_count": 12,
    "threads": 2,
    "progress": False,
    "structures": ["ribosome", "proteasome", "membrane"],
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    from cryoshift.runtime.commands.demo import run_demo

    out = tmp_path_factory.mktemp("demo") / "demo_out"
    lines: list[str] = []
    result = run_demo(out, quick=True, seed=3, say=lines.append, **TINY)
    return out, result, lines


def test_demo_leaves_every_stage_on_disk(demo) -> None:
    out, result, lines = demo
    assert [line.split()[0] for line in lines] == ["1/6", "2/6", "3/6", "4/6", "5/6", "6/6"]
    for stage in (
        "data/target/dataset.json",
        "runs/source-only/model.pt",
        "runs/default/model.pt",
        "export/model.onnx",
        "classify/predictions.csv",
        "classify/predictions.star",
        "demo.json",
    ):
        assert (out / stage).is_file(), stage
    summary = json.loads((out / "demo.json").read_text())
    assert summary["config"]["n_target"] == 48 and summary["class_names"] == TINY["structures"]
    assert [r["method"] for r in result.rows] == ["source-only", "template-matching", "default"]
    assert [r["n"] for r in result.rows] == [48, 12, 48]
    assert result.runtime["n"] == 48 and result.runtime["rate"] > result.runtime["template_matching_rate"] > 0
    assert "subtomograms/s" in result.table()


def test_demo_never_trains_on_target_labels(demo) -> None:
    out, _, _ = demo
    from cryoshift.training.trainer import TrainConfig

    default = TrainConfig(source="s", out="o")
    for run, method in (("source-only", "source-only"), ("default", default.method)):
        config = json.loads((out / "runs" / run / "config.json").read_text())
        assert config["method"] == method and config["oracle_target_labels"] is False
        assert config["target"] == str(out / "data" / "target")
    config = json.loads((out / "runs" / "default" / "config.json").read_text())
    for key in ("sim_preset", "spectrum_match", "backbone", "lr", "batch_size"):  # the user's defaults
        assert config[key] == getattr(default, key), key


def test_demo_scores_match_an_independent_recount(demo) -> None:
    """The runtime's ONNX predictions agree with the PyTorch checkpoint and the reported accuracy."""
    from cryoshift.runtime.dataset import read_dataset
    from cryoshift.training.evaluate import predict_checkpoint

    out, result, _ = demo
    with read_dataset(out / "data" / "target", with_labels=True) as ds:
        labels = np.asarray(ds.labels)
        volumes = np.array(ds.volumes, dtype=np.float32)
        names = list(ds.class_names)
    table = pd.read_csv(out / "classify" / "predictions.csv").sort_values("index")
    onnx_pred = np.array([names.index(c) for c in table["best_class"]])
    torch_pred = predict_checkpoint(out / "runs" / "default", volumes).logits.argmax(1)
    assert (onnx_pred == torch_pred).mean() >= 0.95
    cryoshift = next(r for r in result.rows if r["method"] == "default")
    assert cryoshift["accuracy"] == pytest.approx((onnx_pred == labels).mean())
    source_only = next(r for r in result.rows if r["method"] == "source-only")
    so_pred = predict_checkpoint(out / "runs" / "source-only", volumes).logits.argmax(1)
    assert source_only["accuracy"] == pytest.approx((so_pred == labels).mean())


def test_target_is_shifted_from_source() -> None:
    """The demo's target is made another way than the default training simulation."""
    from cryoshift.training.demo import target_config
    from cryoshift.training.simulate.config import PRESETS
    from cryoshift.training.trainer import TrainConfig

    src, tgt = PRESETS[TrainConfig(source="s", out="o").sim_preset], target_config()
    assert (src.fidelity, tgt.fidelity) == ("fast", "tilt")
    assert tgt.snr[1] < src.snr[1] and tgt.noise_alpha[0] > 0 and max(tgt.flex_voxels) > 0


def test_cli_help_and_bad_out(tmp_path: Path) -> None:
    from cryoshift.runtime.cli import app, main

    res = CliRunner().invoke(app, ["demo", "--help"])
    assert res.exit_code == 0
    for option in ("--out", "--quick", "--seed", "Example: cryoshift demo"):
        assert option in res.output
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    assert main(["demo", "--out", str(not_a_dir), "--quick", "--no-progress"]) == 2
