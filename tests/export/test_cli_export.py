"""``cryoshift export`` end to end on a real checkpoint of a run directory, and its error paths."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cryoshift.runtime.cli import main


@pytest.fixture(scope="module")
def run_dir(tiny_model, make_blobs, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A training run directory: model.pt whose config names a real target dataset."""
    from cryoshift.runtime.dataset import write_dataset
    from cryoshift.training.checkpoint import save_checkpoint

    root = Path(tmp_path_factory.mktemp("run"))
    vols, _ = make_blobs(40, seed=21, offset=500.0, scale=30.0)
    target = write_dataset(root / "target", vols, voxel_size=13.68)
    meta = tiny_model_metadata()
    save_checkpoint(
        root / "run" / "model.pt",
        tiny_model,
        "cryonet-small",
        dict(tiny_model.config),
        meta,
        epoch=3,
        config={"source": str(root / "missing-source"), "target": str(target)},
    )
    return root


def tiny_model_metadata():
    from cryoshift.runtime.metadata import ModelMetadata

    return ModelMetadata(
        class_names=["sphere", "rod"],
        box_size=16,
        voxel_size=13.68,
        temperature=1.3,
        method="cryoshift",
        feature_mean=[0.0] * 32,
        feature_var=[1.0] * 32,
    )


def test_export_run_directory(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = run_dir / "deploy"
    code = main(
        ["export", str(run_dir / "run"), "-o", str(out), "--fp16", "--int8", "--tensorrt", "--no-progress"]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    for name in ("model.onnx", "model.fp16.onnx", "model.int8.onnx", "export.json"):
        assert (out / name).is_file(), name
    assert not list(out.glob("*.engine"))  # no GPU here: skipped, said so, not failed
    assert "TensorRT engines skipped" in captured.err
    for word in ("model.fp16.onnx", "model.int8.onnx", "ok", "agreement", "100% of 40"):
        assert word in captured.out
    report = json.loads((out / "export.json").read_text())
    assert report["parity_data"].endswith("target")  # real data from the run's config, target first
    assert report["epoch"] == 3 and report["backbone"] == "cryonet-small"
    assert [r["format"] for r in report["results"]] == ["onnx", "fp16", "int8"]
    assert all(r["parity"]["passed"] for r in report["results"])
    assert report["results"][0]["parity"]["n"] == 40
    assert "torch" in report["versions"] and "onnxruntime" in report["versions"]
    assert report["skipped"] and "TensorRT" in report["skipped"][0]

    # The runtime's own reader and `cryoshift info` understand the result.
    from cryoshift.runtime.metadata import read_onnx_metadata

    meta = read_onnx_metadata(out / "model.onnx")
    assert meta.class_names == ["sphere", "rod"] and meta.temperature == 1.3
    assert meta.backbone == "cryonet-small" and meta.extra["test_views"] == 1  # as trained
    assert "backbone_options" not in meta.extra  # built with the backbone's defaults
    assert main(["info", str(out / "model.onnx")]) == 0
    shown = capsys.readouterr().out
    assert "sphere" in shown and "rod" in shown and "13.68" in shown


def test_bad_inputs_exit_2(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cryoshift.runtime.mrc import write_volume

    assert main(["export", str(tmp_path / "nope"), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cryoshift: error: ") and "no such checkpoint" in err

    assert (
        main(
            [
                "export",
                str(run_dir / "run"),
                "-o",
                str(tmp_path / "o"),
                "--calibration",
                str(run_dir / "target"),
            ]
        )
        == 2
    )
    assert "--calibration only applies to --int8" in capsys.readouterr().err

    import numpy as np

    wrong_box = write_volume(tmp_path / "big.mrc", np.zeros((24, 24, 24), np.float32), voxel_size=13.68)
    args = ["export", str(run_dir / "run"), "-o", str(tmp_path / "o"), "--parity-data", str(wrong_box)]
    assert main(args) == 2
    assert "does not match the model's 16" in capsys.readouterr().err

    args = ["export", str(run_dir / "run"), "-o", str(tmp_path / "o"), "--test-views", "9"]
    assert main(args) == 2
    assert "--test-views must be from 1 to 4, not 9" in capsys.readouterr().err

    not_ckpt = tmp_path / "weights.pt"
    not_ckpt.write_bytes(b"garbage")
    assert main(["export", str(not_ckpt), "-o", str(tmp_path / "o")]) == 2
    assert "not a readable weights-only checkpoint" in capsys.readouterr().err


def test_help_is_the_manual(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        from cryoshift.runtime.cli import app

        app(args=["export", "--help"], prog_name="cryoshift")
    text = capsys.readouterr().out
    for word in (
        "--fp16",
        "--tensorrt",
        "--int8",
        "--calibration",
        "--parity-data",
        "--opset",
        "--batch-max",
        "Example",
    ):
        assert word in text


def test_int8_without_calibration_fails_before_exporting(
    tiny_model, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cryoshift.training.checkpoint import save_checkpoint

    ckpt = save_checkpoint(
        tmp_path / "model.pt",
        tiny_model,
        "cryonet-small",
        dict(tiny_model.config),
        tiny_model_metadata(),
        config={},
    )
    assert main(["export", str(ckpt), "-o", str(tmp_path / "o"), "--int8", "--no-progress"]) == 2
    assert "--int8 needs --calibration" in capsys.readouterr().err
    assert not (tmp_path / "o" / "model.onnx").exists()


def test_export_can_change_the_test_views(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cryoshift.runtime.metadata import read_onnx_metadata

    assert (
        main(["export", str(run_dir / "run"), "-o", str(tmp_path), "--test-views", "4", "--no-progress"]) == 0
    )
    assert read_onnx_metadata(tmp_path / "model.onnx").extra["test_views"] == 4
    assert main(["info", str(tmp_path / "model.onnx")]) == 0
    assert re.search(r"test views\W+4\b", capsys.readouterr().out)


def test_backbone_options_travel_into_the_model_and_info(
    antialias_model, run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A network built with --backbone-opt computes something the backbone's name does not say
    (here a low-pass in front): the options are in the model's metadata and `info` shows them."""
    from cryoshift.runtime.metadata import read_onnx_metadata
    from cryoshift.training.checkpoint import save_checkpoint

    ckpt = save_checkpoint(
        tmp_path / "model.pt",
        antialias_model,
        "cryonet-small",
        dict(antialias_model.config),
        tiny_model_metadata(),
        config={"target": str(run_dir / "target")},
    )
    assert main(["export", str(ckpt), "-o", str(tmp_path / "o"), "--no-progress"]) == 0
    assert read_onnx_metadata(tmp_path / "o" / "model.onnx").extra["backbone_options"] == {"antialias": True}
    capsys.readouterr()
    assert main(["info", str(tmp_path / "o" / "model.onnx")]) == 0
    assert re.search(r"backbone options\W+antialias=true", capsys.readouterr().out)
