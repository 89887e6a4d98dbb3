"""``describe``: one readable summary per kind of file, InputError for anything else."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import starfile

from cryoshift.runtime import InputError, ModelMetadata, describe, write_dataset, write_volume


def rows(desc: object) -> dict[str, str]:
    return dict(desc.rows)  # type: ignore[attr-defined]


def tiny_onnx(path: Path, meta: ModelMetadata) -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("subtomograms", TensorProto.FLOAT, ["batch", 1, 4, 4, 4])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 64])
    w = helper.make_tensor("w", TensorProto.FLOAT, [64, 2], np.zeros(128, np.float32).tolist())
    nodes = [
        helper.make_node("Reshape", ["subtomograms", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["logits"]),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "tiny", [x], [y], [shape, w]), opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 8
    helper.set_model_props(model, meta.to_properties())
    onnx.save(model, path)
    return path


def test_describe_mrc(tomo: tuple[Path, np.ndarray]) -> None:
    path, data = tomo
    d = describe(path)
    r = rows(d)
    assert d.kind == "mrc" and r["type"] == "volume"
    assert r["shape (Z, Y, X)"] == "20 x 24 x 28" and r["mode"] == "2 (float32)"
    assert r["voxel size (A)"] == "4.5"
    assert r["min / max"] == f"{data.min():.6g} / {data.max():.6g}"


def test_describe_picks_and_listing(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text("x,y,z,tomo\n1,2,3,a\n4,5,6,a\n7,8,9,b\n")
    r = rows(describe(tmp_path / "p.csv"))
    assert r["rows"] == "3" and r["tomograms"] == "2: a: 2, b: 1" and r["x range"] == "1 .. 7"
    centred = pd.DataFrame(
        {
            "rlnTomoName": ["a"],
            "rlnCenteredCoordinateXAngst": [1.0],
            "rlnCenteredCoordinateYAngst": [1.0],
            "rlnCenteredCoordinateZAngst": [1.0],
        }
    )
    starfile.write({"particles": centred}, tmp_path / "c.star")
    r = rows(describe(tmp_path / "c.star"))
    assert r["rows"] == "1" and r["coordinates"].startswith("rlnCenteredCoordinate")
    starfile.write(
        {"particles": pd.DataFrame({"rlnImageName": ["000001@s.mrcs", "000002@s.mrcs"]})}, tmp_path / "l.star"
    )
    d = describe(tmp_path / "l.star")
    assert d.kind == "listing" and rows(d)["rows"] == "2" and rows(d)["missing files"] == "1"


def test_describe_dataset(tmp_path: Path) -> None:
    vols = np.zeros((5, 4, 4, 4), np.float32)
    write_dataset(tmp_path / "ds", vols, [0, 1, 1, 0, 1], ["a", "b"], voxel_size=5.0, meta={"seed": 3})
    r = rows(describe(tmp_path / "ds"))
    assert r["type"] == "labelled dataset" and r["volumes"] == "5" and r["classes"] == "a, b"
    assert r["  a"] == "2" and r["  b"] == "3" and r["seed"] == "3"


def test_describe_onnx(tmp_path: Path) -> None:
    meta = ModelMetadata(class_names=["ribosome", "empty"], box_size=4, voxel_size=10.0, method="cryoshift")
    r = rows(describe(tiny_onnx(tmp_path / "m.onnx", meta)))
    assert r["classes"] == "2: ribosome, empty" and r["box size"] == "4" and r["method"] == "cryoshift"


def test_describe_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty directory"):
        describe(tmp_path / "empty")
    (tmp_path / "x.xyz").write_text("1")
    with pytest.raises(InputError, match=r"unknown file type '\.xyz'"):
        describe(tmp_path / "x.xyz")
    write_volume(tmp_path / "v.mrc", np.zeros((4, 4, 4), np.float32))
    with pytest.raises(InputError, match="not a cryoshift dataset"):
        describe(tmp_path)


def test_results_tables_are_described_as_results_not_picks(tmp_path: Path) -> None:
    from cryoshift.runtime import write_results

    table = pd.DataFrame(
        {
            "id": ["000001@a.mrcs", "000002@a.mrcs", "000003@a.mrcs"],
            "class_index": [0, 1, -1],
            "class_name": ["ribosome", "proteasome", "unknown"],
            "confidence": [0.9, 0.6, 0.2],
            "shift_score": [1.0, 1.5, 4.0],
        }
    )
    csv = write_results(table, tmp_path / "p.csv", tmp_path / "p.star")
    for path in (csv, tmp_path / "p.star"):
        got = rows(describe(path))
        assert got["type"] == "classification results"
        assert got["rows"] == "3"
        assert "unknown: 1" in got["classes"] and "ribosome: 1" in got["classes"]
        assert got["shift score"].startswith("median 1.5")


def test_validate_reads_a_datasets_volumes_as_train_and_evaluate_do(tmp_path: Path) -> None:
    """A dataset with one NaN volume is refused by train/evaluate, so validate must not call it ok;
    a bad label is reported as the plain value, not a numpy repr."""
    import mrcfile

    from cryoshift.runtime.dataset import read_dataset
    from cryoshift.runtime.info import validate

    rng = np.random.default_rng(0)
    ds = write_dataset(
        tmp_path / "ds", rng.normal(size=(4, 8, 8, 8)), labels=[0, 1, 0, 1], class_names=["a", "b"]
    )
    assert validate(ds) == []
    with mrcfile.open(ds / "volumes.mrc", "r+") as mrc:
        mrc.data[2] = np.nan
    problems = validate(ds)
    assert len(problems) == 1 and "1 volumes hold NaN/Inf" in problems[0] and "index 2" in problems[0]
    table = pd.read_csv(ds / "particles.csv")
    table.loc[1, "label"] = 42
    table.to_csv(ds / "particles.csv", index=False)
    with pytest.raises(InputError, match=r"label 42\)"):
        read_dataset(ds, with_labels=True)


def test_a_dataset_json_that_is_not_an_object_says_so(tmp_path: Path) -> None:
    from cryoshift.runtime.dataset import read_dataset

    ds = write_dataset(tmp_path / "ds", np.ones((2, 8, 8, 8)), voxel_size=10.0)
    (ds / "dataset.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="must hold a JSON object, found a list"):
        read_dataset(ds)


def test_an_mrc_under_a_name_that_does_not_say_is_described_by_content(tmp_path: Path) -> None:
    """classify reads .txt and suffixless files by content; info and validate agree with it."""
    from cryoshift.runtime.info import validate

    volume = write_volume(
        tmp_path / "v.mrc", np.random.default_rng(0).normal(size=(8, 8, 8)), voxel_size=10.0
    )
    for name in ("v.txt", "v"):
        renamed = tmp_path / name
        renamed.write_bytes(volume.read_bytes())
        assert describe(renamed).kind == "mrc"
        assert validate(renamed) == []
    (tmp_path / "picks.txt").write_text("tomo_name,x,y,z\nTS_01,1,2,3\n")
    assert describe(tmp_path / "picks.txt").kind == "picks"
