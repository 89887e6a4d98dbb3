"""Model metadata values that export wrote and the runtime refused or showed wrongly, and odd
checkpoints and options of ``cryoshift export``. A line break in a text ``cryoshift info`` prints
(method, extra.backbone_options ...) split its output; ``export_model`` wrote whatever metadata it
was handed, so the model was refused only when the runtime read it (or, for a network whose logits
or features its metadata does not describe, exported and then refused by every reader)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hostile_inputs import BOX, VOXEL, Capsys, assert_error, run_cli, volumes
from tiny_onnx import with_metadata

from cryoshift.runtime.errors import InputError
from cryoshift.runtime.mrc import write_stack


def _edited_model(model: Path, tmp_path: Path, field: str, value: Any) -> Path:
    """A copy of the tiny ONNX ``model`` with metadata ``field`` set to ``value`` (as JSON)."""
    return with_metadata(model, tmp_path / f"{field}.onnx", field, json.dumps(value))


@pytest.mark.parametrize(
    "field,value,named",
    [
        ("method", "dann\nfake row", "method"),
        ("backbone", "cryonet\r", "backbone"),
        ("precision", "fp32\x1b[31m", "precision"),
        ("cryoshift_version", "0.1\u2028", "cryoshift_version"),
        ("created", "2024\t01", "created"),
        ("extra", {"backbone_options": {"canonical\nx": True}}, "extra.backbone_options"),
        ("extra", {"backbone_options": {"mode": "a\nb"}}, "extra.backbone_options.mode"),
        ("extra", {"test_views": "4\nclasses | 9"}, "extra.test_views"),
        ("data_fingerprints", {"source": "abc\ndef"}, "data_fingerprints.source"),
    ],
)
def test_info_refuses_control_characters_in_the_texts_it_shows(
    field: str, value: Any, named: str, model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """Only class names were checked: a line break in any other text info prints split its table.
    The same text with a letter in place of the control character is shown: the check is about
    the lines of the output, not about non-ASCII text."""
    pytest.importorskip("onnx")
    liar = _edited_model(model, tmp_path, field, value)
    line = assert_error(run_cli(["info", liar], capsys), liar)
    assert f"invalid model metadata: {named} holds a control character" in line, line
    text = json.dumps(value)
    for escaped in ("\\n", "\\r", "\\t", "\\u001b", "\\u2028"):
        text = text.replace(escaped, "\\u00e9")
    (tmp_path / "ok").mkdir()
    ok = _edited_model(model, tmp_path / "ok", field, json.loads(text))
    code, out, err = run_cli(["info", ok], capsys)
    assert code == 0 and "é" in out.replace("\\u00e9", "é"), err


def _net(classes: int = 2, box: int = BOX) -> Any:
    from cryoshift.training.backbones import create_backbone

    return create_backbone("cryonet-small", num_classes=classes, box_size=box)


def _metadata(**fields: Any) -> Any:
    from cryoshift.runtime.metadata import ModelMetadata

    return ModelMetadata(class_names=["a", "b"], box_size=BOX, voxel_size=VOXEL, **fields)


def _set(meta: Any, **fields: Any) -> Any:
    """``meta`` with ``fields`` assigned after construction (no constructor check ran on them)."""
    for key, value in fields.items():
        setattr(meta, key, value)
    return meta


@pytest.mark.parametrize(
    "make,words",
    [
        (lambda: _metadata(method="dann\nx"), "method holds a control character"),
        (lambda: _metadata(extra={"backbone_options": {"k\n": 1}}), "extra.backbone_options holds"),
        (lambda: _set(_metadata(), class_names=["a", "a"]), "class_names has duplicates"),
        (lambda: _set(_metadata(), class_names=["a", "b\nc"]), "class_names has a name with a control"),
        (lambda: _set(_metadata(), extra=[1, 2]), "extra must be a JSON object"),
        (lambda: _set(_metadata(), box_size=0), "box_size must be positive"),
        (lambda: _set(_metadata(), temperature=float("nan")), "temperature must be a positive number"),
        (lambda: _set(_metadata(), feature_mean=np.zeros(2), feature_var=[1.0, 1.0]), "not JSON"),
        (lambda: {"class_names": ["a", "b"], "box_size": BOX}, "must be a ModelMetadata, not dict"),
    ],
)
def test_export_model_refuses_metadata_the_runtime_would_refuse(
    make: Any, words: str, tmp_path: Path
) -> None:
    """It wrote the model (or failed in json.dumps, or inside torch): the runtime then refused it, or
    info printed it broken. Refused now with the readers' own checks, naming the argument, before
    any file or folder is made."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from cryoshift.export import export_model

    out = tmp_path / "deploy" / "model.onnx"
    with pytest.raises(InputError) as info:
        export_model(_net(), make(), out, parity_volumes=volumes(2))
    assert info.value.path == "export_model(metadata=...)"
    assert words in info.value.reason, info.value.reason
    assert not out.parent.exists()


@pytest.mark.parametrize(
    "net,meta,words",
    [
        (lambda: _net(classes=3), lambda: _metadata(), "logits have shape (1, 3) but the metadata names 2"),
        (
            lambda: _net(),
            lambda: _metadata(feature_mean=[0.0] * 3, feature_var=[1.0] * 3),
            "features have shape (1, 32) but the metadata's feature_mean has 3 values",
        ),
    ],
)
def test_export_model_refuses_a_network_its_metadata_does_not_describe(
    net: Any, meta: Any, words: str, tmp_path: Path
) -> None:
    """Exported, parity-checked and then refused by every reader ("graph gives 3 logits but the
    metadata names 2 classes"): refused at export, before writing."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from cryoshift.export import export_model

    out = tmp_path / "deploy" / "model.onnx"
    with pytest.raises(InputError, match=r"the network's") as info:
        export_model(net(), meta(), out, parity_volumes=volumes(2))
    assert words in info.value.reason, info.value.reason
    assert not out.parent.exists()


def _checkpoint(path: Path, classes: int = 2, box: int = BOX, **change: Any) -> Path:
    """A genuine untrained cryonet-small checkpoint (16^3, classes a and b) with payload entries
    ``change``d (``metadata`` entries are merged into the stored metadata)."""
    import torch

    from cryoshift.training.checkpoint import save_checkpoint

    save_checkpoint(
        path, _net(classes, box), "cryonet-small", {"num_classes": classes, "box_size": box}, _metadata()
    )
    payload = torch.load(path, map_location="cpu", weights_only=True)
    payload["metadata"].update(change.pop("metadata", {}))
    payload.update(change)
    torch.save(payload, path)
    return path


@pytest.mark.parametrize(
    "case,words",
    [
        ("method", "invalid model metadata: method holds a control character"),
        ("classes", "logits have shape (1, 3) but the metadata names 2 classes"),
        ("features", "features have shape (1, 32) but the metadata's feature_mean has 3 values"),
        ("box", "its network was built for 24^3 boxes but its metadata says 16^3"),
        ("config", "'config' should be a dict, found list"),
        ("tomograms", "config 'tomograms' should be a list of paths, found 'TS_01.mrc'"),
    ],
)
def test_export_refuses_checkpoints_whose_parts_disagree(
    case: str, words: str, tmp_path: Path, capsys: Capsys
) -> None:
    """Each was exported without a word (a model the runtime refuses, or one labelled with a box its
    network was not built for), or a traceback (a config that is a list); a tomograms string was
    read character by character. One line naming the checkpoint, and no --out folder."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    change: dict[str, Any] = {
        "method": {"metadata": {"method": "dann\nfake"}},
        "classes": {"classes": 3},
        "features": {"metadata": {"feature_mean": [0.0] * 3, "feature_var": [1.0] * 3}},
        "box": {"box": 24},
        "config": {"config": ["target", "data"]},
        "tomograms": {"config": {"tomograms": "TS_01.mrc"}},
    }[case]
    ckpt = _checkpoint(tmp_path / "ckpt.pt", **change)
    parity = write_stack(tmp_path / "parity.mrcs", volumes(4), voxel_size=VOXEL)
    out = tmp_path / "deploy"
    argv = ["export", ckpt, "-o", out, "--no-progress", "--parity-data", parity]
    line = assert_error(run_cli(argv, capsys), ckpt)
    assert words in line, line
    assert not out.exists()


def test_an_opset_out_of_range_leaves_no_out_folder(tmp_path: Path, capsys: Capsys) -> None:
    """--opset 5 was refused only when the ONNX step began, after --out had been made: an empty
    folder was left behind (a refused export makes none)."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    ckpt = _checkpoint(tmp_path / "ckpt.pt")
    out = tmp_path / "deploy"
    for opset in (5, 99):
        argv = ["export", ckpt, "-o", out, "--no-progress", "--opset", opset]
        line = assert_error(run_cli(argv, capsys), f"--opset {opset}")
        assert "is outside 17.." in line
        assert not out.exists()


def test_batch_max_without_tensorrt_is_refused(tmp_path: Path, capsys: Capsys) -> None:
    """--batch-max sizes the TensorRT profile only: without --tensorrt it was accepted and ignored
    (the formats table listed it as an ONNX option), as if the ONNX model were tuned for it."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    ckpt = _checkpoint(tmp_path / "ckpt.pt")
    out = tmp_path / "deploy"
    argv = ["export", ckpt, "-o", out, "--no-progress", "--fp16", "--batch-max", 512]
    line = assert_error(run_cli(argv, capsys), "--batch-max 512")
    assert line == "cryoshift: error: --batch-max 512 only applies to --tensorrt", line
    assert not out.exists()


@pytest.mark.parametrize("kind", ["folder", "dangling"])
def test_a_run_model_pt_that_is_no_file_says_what_it_is(kind: str, tmp_path: Path, capsys: Capsys) -> None:
    """RUN/model.pt a folder was "no such checkpoint"; a dangling link was "a folder without model.pt"."""
    pytest.importorskip("torch")
    run = tmp_path / "run"
    run.mkdir()
    if kind == "folder":
        (run / "model.pt").mkdir()
        words = "is a folder, not a checkpoint file"
    else:
        (run / "model.pt").symlink_to(tmp_path / "gone.pt")
        words = f"dangling symbolic link (points to {tmp_path / 'gone.pt'}"
    line = assert_error(
        run_cli(["export", run, "-o", tmp_path / "o", "--no-progress"], capsys), run / "model.pt"
    )
    assert words in line, line
    # the Python API says the same (the command's own check had been the only one)
    from cryoshift.export import export_checkpoint
    from cryoshift.runtime.errors import InputError

    with pytest.raises(InputError) as info:
        export_checkpoint(run, tmp_path / "o2")
    assert str(info.value.path) == str(run / "model.pt") and words in info.value.reason, info.value
    assert not (tmp_path / "o2").exists()


def test_a_folder_holding_stacks_gives_their_volumes(tmp_path: Path) -> None:
    """A --calibration/--parity-data folder holding a 12-volume stack gave one volume: int8 export said
    "1 subtomograms; int8 calibration needs at least 8" of a folder of 12, and parity ran on one."""
    from cryoshift.export.data import read_volumes

    folder = tmp_path / "cal"
    folder.mkdir()
    first, second = volumes(12, seed=1), volumes(12, seed=2)
    write_stack(folder / "a.mrcs", first, voxel_size=VOXEL)
    write_stack(folder / "b.mrcs", second, voxel_size=VOXEL)
    got = read_volumes(folder, BOX, limit=16)
    assert got.shape == (16, BOX, BOX, BOX)
    np.testing.assert_array_equal(got[:12], first)  # all of the first stack, then what is still wanted
    assert all(any(np.array_equal(v, s) for s in second) for v in got[12:])
    np.testing.assert_array_equal(read_volumes(folder, BOX, limit=64), np.concatenate([first, second]))
