"""Hostile models through the real CLI: garbage or off-contract ONNX files, missing or lying
metadata, a model that returns NaN, malicious pickles (refused and never run) and checkpoints with
the right format tag but broken contents."""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest
from hostile_inputs import BOX, VOXEL, Capsys, assert_error, errors_table, predictions, put, run_cli, volumes

from cryoshift.runtime.mrc import write_stack, write_volume

# ---------------------------------------------------------------------------------------------
# ONNX models: garbage, no metadata, lying metadata, off-contract graphs, NaN outputs


def test_garbage_onnx(tmp_path: Path, capsys: Capsys) -> None:
    vol = write_volume(tmp_path / "v.mrc", volumes(1)[0], voxel_size=VOXEL)
    for name, payload in (
        ("garbage.onnx", np.random.default_rng(6).bytes(4000)),
        ("empty.onnx", b""),
        ("text.onnx", b"hello world\n"),
    ):
        bad = tmp_path / name
        bad.write_bytes(payload)
        assert_error(run_cli(["classify", bad, vol, "-o", tmp_path / "o", "-q", "-b", "cpu"], capsys), bad)
        assert_error(run_cli(["info", bad], capsys), bad)


def test_onnx_without_metadata(tmp_path: Path, capsys: Capsys, model: Path) -> None:
    import onnx

    m = onnx.load(str(model))
    del m.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(m, str(bare))
    vol = write_volume(tmp_path / "v.mrc", volumes(1)[0], voxel_size=VOXEL)
    assert_error(run_cli(["classify", bare, vol, "-o", tmp_path / "o", "-q", "-b", "cpu"], capsys), bare)
    # metadata present but lying (a string where a number is expected, bad JSON)
    m = onnx.load(str(model))
    for entry in m.metadata_props:
        if entry.key == "cryoshift.box_size":
            entry.value = '"sixteen"'
        if entry.key == "cryoshift.class_names":
            entry.value = "[not json"
    liar = tmp_path / "liar.onnx"
    onnx.save(m, str(liar))
    assert_error(run_cli(["classify", liar, vol, "-o", tmp_path / "o2", "-q", "-b", "cpu"], capsys), liar)
    code, _, err = run_cli(["info", liar], capsys)
    assert "Traceback" not in err
    if code != 0:
        assert_error((code, "", err), liar)


def test_bad_model_paths(tmp_path: Path, capsys: Capsys) -> None:
    vol = write_volume(tmp_path / "v.mrc", volumes(1)[0], voxel_size=VOXEL)
    d = tmp_path / "modeldir"
    d.mkdir()
    for bad in (d, tmp_path / "missing.onnx", vol):
        assert_error(run_cli(["classify", bad, vol, "-o", tmp_path / "o", "-q", "-b", "cpu"], capsys), bad)


@pytest.mark.parametrize(
    "field,value",
    [
        ("class_names", "5"),
        ("class_names", "[]"),
        ("temperature", "0"),
        ("temperature", "-1"),
        ("feature_var", "[0, 0]"),
        ("feature_mean", "[1.0]"),
        ("box_size", "-16"),
        ("voxel_size", "NaN"),
        ("unknown_threshold", '"high"'),
        ("shift_reference", "0"),
        ("class_names", '["a", "b"]'),
        ("class_names", '["a", "b", "c", "d"]'),
        ("contrast", '"grey"'),
    ],
)
def test_onnx_with_lying_metadata(
    field: str, value: str, model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """Metadata the runtime trusts must be sane: refused in one line, or probabilities stay finite
    (the shift score is NaN by design when the feature statistics do not fit the features)."""
    import onnx

    m = onnx.load(str(model))
    for entry in m.metadata_props:
        if entry.key == f"cryoshift.{field}":
            entry.value = value
    liar = tmp_path / f"liar_{field}.onnx"
    onnx.save(m, str(liar))
    vol = write_volume(tmp_path / "v.mrc", volumes(1)[0], voxel_size=VOXEL)
    out = tmp_path / "o"
    result = run_cli(["classify", liar, vol, "-o", out, "-q", "-b", "cpu"], capsys)
    if result[0] == 0:
        pred = predictions(out)
        scores = pred[["confidence"] + [c for c in pred.columns if c.startswith("prob_")]]
        assert len(pred) == 1 and np.isfinite(scores.to_numpy(dtype=np.float64)).all(), pred
    else:
        assert_error(result, liar)


@pytest.mark.parametrize("kind", ["rank4", "float16", "no_logits"])
def test_onnx_off_contract_graph(kind: str, tmp_path: Path, capsys: Capsys) -> None:
    """A graph whose input is not float32 (batch, 1, D, H, W), or without 'logits', is refused up front."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from cryoshift.runtime.metadata import ModelMetadata

    dtype = TensorProto.FLOAT16 if kind == "float16" else TensorProto.FLOAT
    shape = ["batch", BOX, BOX, BOX] if kind == "rank4" else ["batch", 1, BOX, BOX, BOX]
    out_name = "scores" if kind == "no_logits" else "logits"
    w = np.full((2, BOX**3), 1.0 / BOX**3, np.float16 if kind == "float16" else np.float32)
    nodes = [
        helper.make_node("Flatten", ["subtomograms"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "w"], [out_name], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "off",
        [helper.make_tensor_value_info("subtomograms", dtype, shape)],
        [helper.make_tensor_value_info(out_name, dtype, ["batch", 2])],
        [numpy_helper.from_array(w, "w")],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    meta = ModelMetadata(class_names=["a", "b"], box_size=BOX, voxel_size=VOXEL)
    for key, value in meta.to_properties().items():
        entry = m.metadata_props.add()
        entry.key, entry.value = key, value
    path = tmp_path / f"{kind}.onnx"
    onnx.save(m, str(path))
    vol = write_volume(tmp_path / "v.mrc", volumes(1)[0], voxel_size=VOXEL)
    assert_error(run_cli(["classify", path, vol, "-o", tmp_path / "o", "-q", "-b", "cpu"], capsys), path)


def _nan_model(path: Path) -> Path:
    """logits = log(mean voxel) per class: NaN for volumes with a negative mean."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from cryoshift.runtime.metadata import ModelMetadata

    w = np.full((2, BOX**3), 1.0 / BOX**3, np.float32)
    nodes = [
        helper.make_node("Flatten", ["subtomograms"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "w"], ["mean"], transB=1),
        helper.make_node("Log", ["mean"], ["logits"]),
    ]
    x = helper.make_tensor_value_info("subtomograms", TensorProto.FLOAT, ["batch", 1, BOX, BOX, BOX])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])
    graph = helper.make_graph(nodes, "nan", [x], [y], [numpy_helper.from_array(w, "w")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    meta = ModelMetadata(class_names=["a", "b"], box_size=BOX, voxel_size=VOXEL)
    for key, value in meta.to_properties().items():
        entry = m.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(m, str(path))
    return path


def test_non_finite_model_output_is_an_error_row(tmp_path: Path, capsys: Capsys) -> None:
    nan_model = _nan_model(tmp_path / "nan.onnx")
    checker = 0.1 * ((np.indices((BOX,) * 3).sum(0) % 2) * 2 - 1)  # mean 0: not a blank box
    vols = np.stack([(v + checker).astype(np.float32) for v in (1, -1, 2, -3)])
    stack = write_stack(tmp_path / "s.mrcs", vols, voxel_size=VOXEL)
    out = tmp_path / "out"
    code, _, err = run_cli(
        ["classify", nan_model, stack, "-o", out, "-q", "-b", "cpu", "--batch-size", 3], capsys
    )
    assert code == 0, err
    assert sorted(errors_table(out)["id"]) == [f"000002@{stack}", f"000004@{stack}"]
    assert sorted(predictions(out)["id"]) == [f"000001@{stack}", f"000003@{stack}"]


# ---------------------------------------------------------------------------------------------
# checkpoints: malicious pickles and broken contents


class _Payload:
    """Pickled, this object calls ``open(marker, 'w')`` on load: proof that unpickling ran code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_checkpoint_is_refused_and_does_not_run(tmp_path: Path, capsys: Capsys) -> None:
    torch = pytest.importorskip("torch")
    marker = tmp_path / "PWNED"
    zipped = tmp_path / "evil.pt"
    torch.save({"format": "cryoshift.checkpoint/1", "x": _Payload(marker)}, zipped)
    legacy = tmp_path / "legacy.pt"
    with open(legacy, "wb") as fh:
        pickle.dump({"x": _Payload(marker)}, fh)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(np.random.default_rng(7).bytes(3000))
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    not_ours = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(3)}, not_ours)
    for bad in (zipped, legacy, garbage, empty, not_ours):
        assert_error(run_cli(["export", bad, "-o", tmp_path / "exp", "--no-progress"], capsys), bad)
        assert not marker.exists(), f"{bad.name}: the pickle payload ran"
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.pt").write_bytes(zipped.read_bytes())
    assert_error(run_cli(["export", run, "-o", tmp_path / "exp", "--no-progress"], capsys), run)
    assert not marker.exists()


def test_export_of_an_onnx_model_says_it_is_already_exported(
    model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """An ONNX model where a checkpoint is expected: named as such (it was "holds Python objects
    other than tensors"), by suffix and, inside a run directory, by content."""
    pytest.importorskip("torch")
    line = assert_error(run_cli(["export", model, "-o", tmp_path / "exp", "--no-progress"], capsys), model)
    assert "ONNX model" in line and "already exported" in line and "training run directory" in line, line
    assert "Python objects" not in line
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.pt").write_bytes(model.read_bytes())
    line = assert_error(run_cli(["export", run, "-o", tmp_path / "exp", "--no-progress"], capsys), run)
    assert "ONNX model" in line and "Python objects" not in line, line


def test_evaluate_refuses_bad_models(model: Path, dataset: Path, tmp_path: Path, capsys: Capsys) -> None:
    torch = pytest.importorskip("torch")
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pt"
    torch.save({"x": _Payload(marker)}, evil)
    legacy = tmp_path / "legacy.pt"
    with open(legacy, "wb") as fh:
        pickle.dump({"x": _Payload(marker)}, fh)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(np.random.default_rng(9).bytes(999))
    for bad in (evil, legacy, garbage, tmp_path / "missing.onnx"):
        assert_error(run_cli(["evaluate", bad, dataset, "--out", tmp_path / "ev"], capsys), bad)
    assert not marker.exists()


def test_export_refuses_checkpoints_with_broken_contents(tmp_path: Path, capsys: Capsys) -> None:
    """Right format tag, wrong insides: missing keys, unknown backbone, odd kwargs, foreign weights."""
    torch = pytest.importorskip("torch")
    meta = {"class_names": ["a", "b"], "box_size": BOX, "voxel_size": VOXEL}
    good = {
        "format": "cryoshift.checkpoint/1",
        "backbone": "cryonet-small",
        "backbone_kwargs": {"num_classes": 2, "box_size": BOX},
        "state_dict": {"w": torch.zeros(2)},
        "metadata": meta,
        "epoch": 0,
        "config": {},
        "extra": {},
    }
    cases = {
        "only_format.pt": {"format": "cryoshift.checkpoint/1"},
        "no_metadata.pt": {k: v for k, v in good.items() if k != "metadata"},
        "bad_metadata.pt": {**good, "metadata": {"class_names": 3, "box_size": "x", "voxel_size": 1}},
        "metadata_list.pt": {**good, "metadata": [1, 2]},
        "unknown_backbone.pt": {**good, "backbone": "no-such-net"},
        "bad_kwargs.pt": {**good, "backbone_kwargs": {"num_classes": 2, "box_size": BOX, "bogus": 1}},
        "kwargs_list.pt": {**good, "backbone_kwargs": [1, 2]},
        "foreign_weights.pt": good,
        "state_not_dict.pt": {**good, "state_dict": [1, 2, 3]},
        "list_payload.pt": [1, 2, 3],
    }
    for name, payload in cases.items():
        path = tmp_path / name
        torch.save(payload, path)
        assert_error(run_cli(["export", path, "-o", tmp_path / "exp", "--no-progress"], capsys), path)


def test_onnx_under_another_suffix_is_read_as_onnx(
    model: Path, dataset: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """An ONNX model saved as ``model.pt`` (a run directory's name for it) is recognised by content in
    every verb that takes a model: evaluate scores it with onnxruntime, info describes it, and both
    agree with the same model under its own suffix."""
    from cryoshift.runtime.info import describe
    from cryoshift.training.evaluate import evaluate

    disguised = tmp_path / "model.pt"
    disguised.write_bytes(model.read_bytes())
    assert describe(disguised).kind == describe(model).kind == "onnx"
    pytest.importorskip("matplotlib")
    plain = evaluate(model, dataset, tmp_path / "plain")
    other = evaluate(disguised, dataset, tmp_path / "other")
    assert other["n"] == plain["n"] == 6
    assert other["accuracy"] == plain["accuracy"]
    assert other["confusion_matrix"] == plain["confusion_matrix"]


def test_features_of_a_featureless_model_refused_up_front(tmp_path: Path, capsys: Capsys) -> None:
    """An export without the optional 'features' output classifies, but --features is refused in one
    line naming the model before anything runs: locally, on device workers and on Ray actors alike."""
    from tiny_onnx import build_model

    bare = build_model(tmp_path / "nofeat.onnx", box=BOX, voxel=VOXEL, features=False)
    stack = write_stack(tmp_path / "s.mrcs", volumes(6), voxel_size=VOXEL)
    assert run_cli(["classify", bare, stack, "-o", tmp_path / "plain", "-q", "-b", "cpu"], capsys)[0] == 0
    assert len(predictions(tmp_path / "plain")) == 6
    drivers = [[], ["--devices", "0,1"]]
    if importlib.util.find_spec("ray") is not None:
        drivers.append(["--ray", "--ray-workers", "1"])
    for extra in drivers:
        out = tmp_path / f"feat{len(extra)}"
        args = ["classify", bare, stack, "-o", out, "-q", "-b", "cpu", "--features", *extra]
        assert "features" in assert_error(run_cli(args, capsys), bare)
        assert not (out / "features.npy").exists()


def _checkpoint(path: Path) -> Path:
    """A genuine (untrained) cryonet-small checkpoint of 16^3 boxes."""
    from cryoshift.runtime.metadata import ModelMetadata
    from cryoshift.training.backbones import create_backbone
    from cryoshift.training.checkpoint import save_checkpoint

    net = create_backbone("cryonet-small", num_classes=2, box_size=BOX)
    meta = ModelMetadata(class_names=["a", "b"], box_size=BOX, voxel_size=VOXEL)
    return save_checkpoint(path, net, "cryonet-small", {"num_classes": 2, "box_size": BOX}, meta)


def test_export_refuses_bad_parity_and_calibration_data(tmp_path: Path, capsys: Capsys) -> None:
    """--parity-data/--calibration went through mrcfile directly: a truncated stack said "MRC file has
    no data", a NaN volume showed up as a failed parity check of the model, too few calibration
    volumes ended in a ValueError traceback, and a refused export left an empty --out folder."""
    import gzip

    from cryoshift.export.data import read_volumes

    pytest.importorskip("torch")
    ckpt = _checkpoint(tmp_path / "ckpt.pt")
    v = volumes(4)
    good = write_stack(tmp_path / "good.mrcs", v, voxel_size=VOXEL)
    v[1, 3, 3, 3] = np.nan
    nan = write_stack(tmp_path / "nan.mrcs", v, voxel_size=VOXEL)
    trunc = tmp_path / "trunc.mrcs"
    trunc.write_bytes(good.read_bytes()[:5000])
    out = tmp_path / "exp"
    for extra, bad, words in (
        (["--parity-data", nan], nan, "NaN"),
        (["--parity-data", trunc], trunc, "truncated"),
        (["--int8", "--calibration", good, "--parity-data", good], good, "at least 8"),
    ):
        line = assert_error(run_cli(["export", ckpt, "-o", out, "--no-progress", *extra], capsys), bad)
        assert words in line, line
        assert not out.exists()
    afile = put(tmp_path / "afile", "x")
    line = assert_error(run_cli(["export", ckpt, "-o", afile, "--no-progress"], capsys), afile)
    assert "not a folder" in line, line
    # a gzipped stack is read as classify reads it (it was "MRC file has no data")
    gz = put(tmp_path / "good.mrcs.gz", gzip.compress(good.read_bytes()))
    np.testing.assert_array_equal(read_volumes(gz, BOX), volumes(4))


@pytest.mark.parametrize("value", ["99", "0", '"1"'])
def test_onnx_from_an_unknown_metadata_schema_is_refused(
    value: str, model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """A model stamped with a schema this cryoshift does not know may mean other things by the same
    fields: refused in one line, before any volume is read."""
    import onnx

    m = onnx.load(str(model))
    for entry in m.metadata_props:
        if entry.key == "cryoshift.schema_version":
            entry.value = value
    odd = tmp_path / "odd_schema.onnx"
    onnx.save(m, str(odd))
    vol = write_volume(tmp_path / "v.mrc", volumes(1)[0], voxel_size=VOXEL)
    result = run_cli(["classify", odd, vol, "-o", tmp_path / "o", "-q", "-b", "cpu"], capsys)
    assert "schema" in assert_error(result, odd)
