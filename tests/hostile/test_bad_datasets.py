"""Hostile dataset directories through the real CLI (info, evaluate, classify): broken dataset.json,
tables and stacks, unlabelled data or data that does not fit the model given to evaluate, NaN
volumes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hostile_inputs import VOXEL, Capsys, assert_error, errors_table, predictions, run_cli, volumes

from cryoshift.runtime.mrc import write_stack

# ---------------------------------------------------------------------------------------------
# dataset directories


@pytest.mark.parametrize(
    "breakage",
    [
        "invalid_json",
        "n_disagrees",
        "box_disagrees",
        "json_list",
        "no_volumes",
        "csv_garbage",
        "volumes_garbage",
        "n_string",
        "labels_out_of_range",
        "labels_text",
        "class_names_string",
        "contrast_grey",
        "voxel_text",
        "voxel_nan",
        "json_binary",  # UnicodeDecodeError escaped: a traceback from info and evaluate
        "json_nested_deep",  # RecursionError escaped the same way
    ],
)
def test_broken_dataset(breakage: str, dataset: Path, model: Path, tmp_path: Path, capsys: Capsys) -> None:
    meta = dataset / "dataset.json"
    info = json.loads(meta.read_text())
    if breakage == "invalid_json":
        meta.write_text("{not json")
    elif breakage == "n_disagrees":
        meta.write_text(json.dumps({**info, "n": 9}))
    elif breakage == "box_disagrees":
        meta.write_text(json.dumps({**info, "box_size": 32}))
    elif breakage == "json_list":
        meta.write_text("[1, 2, 3]")
    elif breakage == "json_binary":
        meta.write_bytes(b"\xff\xfe{}")
    elif breakage == "json_nested_deep":
        meta.write_text("[" * 100_000 + "]" * 100_000)
    elif breakage == "n_string":
        meta.write_text(json.dumps({**info, "n": "many"}))
    elif breakage == "no_volumes":
        (dataset / "volumes.mrc").unlink()
    elif breakage == "csv_garbage":
        (dataset / "particles.csv").write_bytes(b"\x00\xff" * 100)
    elif breakage == "volumes_garbage":
        (dataset / "volumes.mrc").write_bytes(b"x" * 5000)
    elif breakage == "class_names_string":
        meta.write_text(json.dumps({**info, "class_names": "abc"}))
    elif breakage == "contrast_grey":
        meta.write_text(json.dumps({**info, "contrast": "grey"}))
    elif breakage == "voxel_text":
        meta.write_text(json.dumps({**info, "voxel_size": "ten"}))
    elif breakage == "voxel_nan":
        meta.write_text(json.dumps({**info, "voxel_size": float("nan")}))
    elif breakage == "labels_out_of_range":
        t = pd.read_csv(dataset / "particles.csv")
        t["label"] = [0, 1, 7, 0, 1, -2]
        t.to_csv(dataset / "particles.csv", index=False)
    elif breakage == "labels_text":
        t = pd.read_csv(dataset / "particles.csv")
        t["label"] = ["a", "b", "c", "a", "b", "c"]
        t.to_csv(dataset / "particles.csv", index=False)
    labels_only = breakage.startswith("labels")
    for argv in (
        ["info", dataset],
        ["evaluate", model, dataset, "--out", tmp_path / "ev"],
        ["classify", model, dataset, "-o", tmp_path / "cl", "-q", "-b", "cpu"],
    ):
        code, out, err = run_cli(argv, capsys)
        assert "Traceback" not in err, (argv[0], err)
        if labels_only and argv[0] != "evaluate":
            continue  # labels are not read by info/classify
        if argv[0] == "classify" and breakage in ("csv_garbage",):
            continue  # classify reads only the stack
        assert_error((code, out, err), dataset)


@pytest.mark.parametrize(
    "names,reason",
    [
        ([], "class_names is empty"),
        (["ribosome", "junk", "ribosome"], "class_names has duplicates: ribosome"),
        # a line break split every listing; train ran all its epochs before the exported metadata
        # refused the name
        (["ribosome", "junk\nmore", "proteasome"], "class_names has a name with a control character"),
    ],
)
def test_labelled_dataset_with_empty_or_duplicate_class_names(
    names: list[str], reason: str, dataset: Path, model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """Labels index class_names: an empty or duplicated list is refused where dataset.json is
    read, naming it (info and classify accepted it; evaluate said "labels ... 0..-1")."""
    meta = dataset / "dataset.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "class_names": names}))
    for argv in (
        ["info", dataset],
        ["evaluate", model, dataset, "--out", tmp_path / "ev"],
        ["classify", model, dataset, "-o", tmp_path / "cl", "-q", "-b", "cpu"],
    ):
        line = assert_error(run_cli(argv, capsys), meta)
        assert reason in line, (argv[0], line)


def test_unlabelled_dataset_needs_no_class_names(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    """Unlabelled target data legitimately has no class names ([] as written, or null)."""
    from cryoshift.runtime.dataset import write_dataset
    from cryoshift.runtime.errors import InputError

    unl = write_dataset(tmp_path / "unl", volumes(3), voxel_size=VOXEL)
    meta = unl / "dataset.json"
    info = json.loads(meta.read_text())
    assert info["class_names"] == [] and not info["labelled"]
    for names in ([], None):
        meta.write_text(json.dumps({**info, "class_names": names}))
        code, _, err = run_cli(["info", unl], capsys)
        assert code == 0, err
        out = tmp_path / f"cl_{names}"
        code, _, err = run_cli(["classify", model, unl, "-o", out, "-q", "-b", "cpu"], capsys)
        assert code == 0, err
        assert len(predictions(out)) == 3
    # the writer applies the same rule: labels need names, and unique ones
    with pytest.raises(InputError, match="class_names is empty"):
        write_dataset(tmp_path / "w1", volumes(2), labels=[0, 0], class_names=[], voxel_size=VOXEL)
    with pytest.raises(InputError, match="class_names has duplicates: a"):
        write_dataset(tmp_path / "w2", volumes(2), labels=[0, 1], class_names=["a", "a"], voxel_size=VOXEL)
    with pytest.raises(InputError, match="class_names has a name with a control character"):
        write_dataset(tmp_path / "w3", volumes(2), labels=[0, 1], class_names=["a", "b\tc"], voxel_size=VOXEL)


def test_evaluate_refuses_unlabelled_data(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    from cryoshift.runtime.dataset import write_dataset

    unl = write_dataset(tmp_path / "unl", volumes(4), voxel_size=VOXEL)
    assert_error(run_cli(["evaluate", model, unl, "--out", tmp_path / "ev"], capsys), unl)
    stack = write_stack(tmp_path / "s.mrcs", volumes(2), voxel_size=VOXEL)
    assert_error(run_cli(["evaluate", model, stack, "--out", tmp_path / "ev2"], capsys), stack)


def test_evaluate_with_data_that_does_not_fit_the_model(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    from cryoshift.runtime.dataset import write_dataset

    small = write_dataset(
        tmp_path / "small",
        np.zeros((3, 12, 12, 12), np.float32),
        labels=[0, 1, 2],
        class_names=["ribosome", "proteasome", "junk"],
        voxel_size=VOXEL,
    )
    other = write_dataset(
        tmp_path / "other", volumes(3), labels=[0, 1, 0], class_names=["cat", "dog"], voxel_size=VOXEL
    )
    for data in (small, other):
        result = run_cli(["evaluate", model, data, "--out", tmp_path / f"ev_{data.name}"], capsys)
        line = assert_error(result, "")  # a mismatch of two files: naming either is fair
        assert str(data) in line or str(model) in line, line


@pytest.mark.parametrize("spoil", ["nan", "blank"])
def test_evaluate_refuses_nan_volumes(
    spoil: str, model: Path, dataset: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """A NaN volume (NaN scores) or a blank one (a confident class for nothing) is refused by
    evaluate, naming what it found, and is an error row in classify."""
    import mrcfile

    with mrcfile.mmap(dataset / "volumes.mrc", "r+") as m:
        if spoil == "nan":
            m.data[1, 0, 0, 0] = np.nan
        else:
            m.data[1] = 0.0
    line = assert_error(run_cli(["evaluate", model, dataset, "--out", tmp_path / "ev"], capsys), dataset)
    assert "1 volumes hold" in line and "(first: index 1)" in line, line
    code, _, err = run_cli(["classify", model, dataset, "-o", tmp_path / "cl", "-q", "-b", "cpu"], capsys)
    assert code == 0, err
    assert len(errors_table(tmp_path / "cl")) == 1 and len(predictions(tmp_path / "cl")) == 5
