"""Hostile models through the real CLI: garbage or off-contract ONNX files, missing or lying
metadata, a model that returns NaN, malicious pickles (refused and never run) and checkpoints with
the right format tag but broken contents."""

from __future__ import annotations

import importlib.util
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from hostile_inputs import BOX, VOXEL, Capsys, assert_error, errors_table, predictions, put, run_cli, volumes
from tiny_onnx import save_graph, with_metadata

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
    # a folder was "no such model file"
    line = assert_error(run_cli(["classify", d, vol, "-o", tmp_path / "o", "-q", "-b", "cpu"], capsys), d)
    assert "is a folder, not a model file" in line, line


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
    liar = with_metadata(model, tmp_path / f"liar_{field}.onnx", field, value)
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
    from onnx import TensorProto, helper, numpy_helper

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
    path = save_graph(graph, tmp_path / f"{kind}.onnx")
    vol = write_volume(tmp_path / "v.mrc", volumes(1)[0], voxel_size=VOXEL)
    assert_error(run_cli(["classify", path, vol, "-o", tmp_path / "o", "-q", "-b", "cpu"], capsys), path)


def _nan_model(path: Path) -> Path:
    """logits = log(mean voxel) per class: NaN for volumes with a negative mean."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.full((2, BOX**3), 1.0 / BOX**3, np.float32)
    nodes = [
        helper.make_node("Flatten", ["subtomograms"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "w"], ["mean"], transB=1),
        helper.make_node("Log", ["mean"], ["logits"]),
    ]
    x = helper.make_tensor_value_info("subtomograms", TensorProto.FLOAT, ["batch", 1, BOX, BOX, BOX])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])
    graph = helper.make_graph(nodes, "nan", [x], [y], [numpy_helper.from_array(w, "w")])
    return save_graph(graph, path)


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


def _features_liar(model: Path, path: Path, width: int, symbolic: bool = False) -> Path:
    """``model`` with a feature reference of ``width`` values (mean and variance agree with each
    other, not with the graph's features); ``symbolic``: the graph no longer states its width."""
    import json

    import onnx

    m = onnx.load(str(model))
    for entry in m.metadata_props:
        if entry.key == "cryoshift.feature_mean":
            entry.value = json.dumps([0.0] * width)
        elif entry.key == "cryoshift.feature_var":
            entry.value = json.dumps([1.0] * width)
    if symbolic:
        out = next(o for o in m.graph.output if o.name == "features")
        out.type.tensor_type.shape.dim[1].dim_param = "width"
    onnx.save(m, str(path))
    return path


@pytest.mark.parametrize("symbolic", [False, True])
def test_features_wider_than_their_reference_are_refused(
    symbolic: bool, model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """A features output of another width than feature_mean: every shift score would be NaN.
    Refused in one line by classify and by info --validate, never scored."""
    import onnxruntime as ort

    width = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).get_outputs()[1].shape[1]
    liar = _features_liar(model, tmp_path / "liar.onnx", width + 3, symbolic)
    vol = write_volume(tmp_path / "v.mrc", volumes(1)[0], voxel_size=VOXEL)
    out = tmp_path / "o"
    line = assert_error(run_cli(["classify", liar, vol, "-o", out, "-q", "-b", "cpu"], capsys), liar)
    assert f"graph gives {width} features but the metadata's feature_mean has {width + 3} values" in line
    assert not (out / "predictions.csv").exists() or predictions(out).empty
    if not symbolic:  # a stated width is checked without running the model
        assert run_cli(["info", "--validate", liar], capsys)[0] != 0


def test_feature_reference_of_two_lengths_is_refused(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    import onnx

    m = onnx.load(str(model))
    for entry in m.metadata_props:
        if entry.key == "cryoshift.feature_var":
            entry.value = "[1.0, 1.0]"
    liar = tmp_path / "two.onnx"
    onnx.save(m, str(liar))
    vol = write_volume(tmp_path / "v.mrc", volumes(1)[0], voxel_size=VOXEL)
    line = assert_error(
        run_cli(["classify", liar, vol, "-o", tmp_path / "o", "-q", "-b", "cpu"], capsys), liar
    )
    assert "feature_var has 2" in line


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A genuine training run (2 epochs, cryonet-small, 16^3): model.pt, two epoch checkpoints."""
    pytest.importorskip("torch")
    from cryoshift.runtime.dataset import write_dataset
    from cryoshift.training.trainer import TrainConfig, train

    root = tmp_path_factory.mktemp("tiny_run")
    source = write_dataset(
        root / "source",
        volumes(12, seed=3),
        labels=[0, 1] * 6,
        class_names=["a", "b"],
        voxel_size=VOXEL,
    )
    config = TrainConfig(
        source=str(source),
        out=str(root / "run"),
        method="source-only",
        backbone="cryonet-small",
        test_views=1,
        epochs=2,
        batch_size=8,
        device="cpu",
        threads=1,
        progress=False,
        val_fraction=0.25,
        amp=False,
    )
    train(config)
    return root / "run"


def _copy_run(run: Path, where: Path) -> Path:
    import shutil

    return Path(shutil.copytree(run, where))


def test_evaluate_run_skips_a_corrupt_epoch_checkpoint(
    tiny_run: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """Batch rule: a damaged epoch checkpoint is one line and one entry in evaluation.json; the
    selected model and the other epochs are still scored (it was rc=2 for the whole evaluation)."""
    from cryoshift.runtime.dataset import write_dataset

    run = _copy_run(tiny_run, tmp_path / "run")
    bad = run / "checkpoints" / "epoch_0001.pt"
    bad.write_bytes(np.random.default_rng(5).bytes(5000))
    data = write_dataset(tmp_path / "ds", volumes(4, seed=4), [0, 1, 0, 1], ["a", "b"], voxel_size=VOXEL)
    code, _out, err = run_cli(["evaluate", run, data, "--out", tmp_path / "ev"], capsys)
    assert code == 0, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if str(bad) in ln]
    assert len(lines) == 1 and "skipped epoch 1" in lines[0], err
    report = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert report["n"] == 4
    ck = report["checkpoints"]
    assert [e["epoch"] for e in ck["epochs"]] == [2]
    assert [(s["epoch"], s["path"]) for s in ck["skipped_epochs"]] == [(1, str(bad))]


def test_export_parity_folder_skips_a_corrupt_file(tmp_path: Path, capsys: Capsys) -> None:
    """--parity-data FOLDER with one corrupt .mrc among good ones: that file is skipped with a
    warning naming it and the parity check runs on the rest (it was rc=2 for the whole export);
    a folder with no usable file is still refused."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from cryoshift.export.data import read_volumes

    ckpt = _checkpoint(tmp_path / "ckpt.pt")
    folder = tmp_path / "parity"
    folder.mkdir()
    good = volumes(3, seed=7)
    for i, v in enumerate(good):
        write_volume(folder / f"g{i}.mrc", v, voxel_size=VOXEL)
    bad = put(folder / "b_corrupt.mrc", np.random.default_rng(1).bytes(3000))
    with pytest.warns(UserWarning, match=f"skipped {bad}"):
        got = read_volumes(folder, BOX)
    np.testing.assert_array_equal(got, good)
    code, _out, err = run_cli(
        ["export", ckpt, "-o", tmp_path / "exp", "--no-progress", "--parity-data", folder], capsys
    )
    assert code == 0, err
    flat = err.replace("\n", "")  # rich wraps the warning at the terminal width
    assert f"skipped {bad}: not an MRC file" in flat and "Traceback" not in err
    assert (tmp_path / "exp" / "model.onnx").is_file()
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    put(only_bad / "x.mrc", np.random.default_rng(2).bytes(3000))
    args = ["export", ckpt, "-o", tmp_path / "exp2", "--no-progress", "--parity-data", only_bad]
    assert "no usable MRC file" in assert_error(run_cli(args, capsys), only_bad)


def test_truncated_checkpoint_is_called_truncated(tiny_run: Path, tmp_path: Path, capsys: Capsys) -> None:
    """A torch.save archive cut short starts with the zip magic like a good one: "truncated or
    damaged", not "it starts with b'PK\\x03\\x04', not a torch.save archive"."""
    cut = put(tmp_path / "model.pt", (tiny_run / "model.pt").read_bytes()[:5000])
    line = assert_error(run_cli(["export", cut, "-o", tmp_path / "exp", "--no-progress"], capsys), cut)
    assert "truncated or damaged" in line and "not a torch.save archive" not in line


def test_export_refuses_nan_weights(tiny_run: Path, tmp_path: Path, capsys: Capsys) -> None:
    """NaN weights: one line naming them, not a parity report of 'max |dlogit| nan, agreement 100%'."""
    torch = pytest.importorskip("torch")
    payload = torch.load(tiny_run / "model.pt", map_location="cpu", weights_only=True)
    name = next(k for k, v in payload["state_dict"].items() if v.is_floating_point() and v.numel() > 1)
    payload["state_dict"][name] = payload["state_dict"][name].clone()
    payload["state_dict"][name].view(-1)[0] = float("nan")
    bad = tmp_path / "nan.pt"
    torch.save(payload, bad)
    out = tmp_path / "exp"
    line = assert_error(run_cli(["export", bad, "-o", out, "--no-progress"], capsys), bad)
    assert "checkpoint holds NaN/Inf weights" in line and name in line
    assert not (out / "model.onnx").exists()


def test_evaluate_on_a_fifo_says_what_it_is(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    import os

    fifo = tmp_path / "picks.csv"
    os.mkfifo(fifo)
    line = assert_error(
        run_cli(["evaluate", model, fifo, "-t", tmp_path, "--out", tmp_path / "ev"], capsys), fifo
    )
    assert "not a regular file" in line and "is a file" not in line


@pytest.mark.parametrize("name", ["model.pt", "model.bin"])
def test_classify_of_a_checkpoint_says_to_export_it(
    name: str, tiny_run: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """A facility engineer's `classify run/model.pt` said "not a readable ONNX model: Protobuf
    parsing failed"; info already said what the file is. Found by its suffix or its archive."""
    import shutil

    model = tmp_path / name
    shutil.copy(tiny_run / "model.pt", model)
    stack = put(tmp_path / "s.mrcs", b"")  # never read: the model is refused first
    line = assert_error(run_cli(["classify", model, stack, "-o", tmp_path / "o", "-q"], capsys), model)
    assert "is a PyTorch checkpoint, not an exported model" in line and "cryoshift export" in line
