"""The one class-name rule (runtime/contract.py) at every place class names come in, and the facts
a dataset.json must state: a missing contrast was read as "dark" without a word (light data
evaluated by a dark model, rc 0); a class named ``unknown`` merged with classify's rejections; a
class named ``b copy`` passed simulate, train and export and then killed classify at its end with
a traceback (no STAR label can hold a space). Every file is made here by the test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hostile_inputs import BOX, VOXEL, Capsys, assert_error, density_map, run_cli, volumes

from cryoshift.runtime.contract import REJECT_LABEL, class_name_problem, class_names_problem
from cryoshift.runtime.dataset import read_dataset, write_dataset
from cryoshift.runtime.errors import InputError

BAD_NAMES = ["", " ", "b copy", "a\tb", "a\nb", "x\u00a0y", "unknown", "Unknown", "UNKNOWN"]


def _labelled(path: Path, names: list[str], contrast: str = "dark") -> Path:
    """A small labelled dataset (one volume per class, twice) written by the real writer."""
    k = len(names)
    return write_dataset(
        path,
        volumes(2 * k),
        labels=list(range(k)) * 2,
        class_names=names,
        voxel_size=VOXEL,
        contrast=contrast,
    )


def _edit_meta(dataset: Path, **changes: object) -> Path:
    """Rewrite dataset.json with ``changes`` (a value None removes the key); returns its path."""
    meta = dataset / "dataset.json"
    info = json.loads(meta.read_text())
    for key, value in changes.items():
        if value is None:
            info.pop(key, None)
        else:
            info[key] = value
    meta.write_text(json.dumps(info))
    return meta


# ---------------------------------------------------------------------------------------------
# the rule itself


@pytest.mark.parametrize("name", BAD_NAMES)
def test_the_rule_refuses_empty_whitespace_control_and_reject_label_names(name: str) -> None:
    assert class_name_problem(name) is not None
    assert class_names_problem(["ribosome", name]) is not None


@pytest.mark.parametrize("name", ["ribosome", "80S-ribosome", "state_2", "x#1", "é", "unknown2", "0"])
def test_the_rule_keeps_ordinary_names(name: str) -> None:
    assert class_name_problem(name) is None and class_names_problem(["other", name]) is None


def test_names_differing_only_in_case_are_one_name() -> None:
    """Refused (see contract.class_name_key): one file on a case-insensitive file system."""
    problem = class_names_problem(["A", "b", "a"])
    assert problem is not None and "differ only in case: 'A' and 'a'" in problem
    assert class_names_problem(["a", "a"]) == "duplicates: a"


def test_the_reject_label_is_the_runtimes() -> None:
    """The rule refuses the very label classify writes for a rejection."""
    from cryoshift.runtime.pipeline import UNKNOWN

    assert UNKNOWN == REJECT_LABEL


# ---------------------------------------------------------------------------------------------
# datasets: writer and reader


@pytest.mark.parametrize("names", [["unknown", "a"], ["b copy", "a"], ["A", "a"]])
def test_the_dataset_writer_refuses_names_the_rule_refuses(names: list[str], tmp_path: Path) -> None:
    with pytest.raises(InputError, match="class_names has"):
        _labelled(tmp_path / "ds", names)
    assert not (tmp_path / "ds" / "dataset.json").exists()


@pytest.mark.parametrize("bad", ["unknown", "b copy", "Ribosome"])
def test_a_dataset_json_with_such_a_name_is_refused_in_one_line(
    bad: str, tmp_path: Path, capsys: Capsys
) -> None:
    """A class renamed by hand in dataset.json and particles.csv alike (or a dataset written by
    another tool) passed every reader."""
    import pandas as pd

    ds = _labelled(tmp_path / "ds", ["ribosome", "proteasome"])
    names = ["Ribosome", "ribosome"] if bad == "Ribosome" else ["ribosome", bad]
    meta = _edit_meta(ds, class_names=names)
    table = pd.read_csv(ds / "particles.csv")
    table["class_name"] = [names[k] for k in table["label"]]
    table.to_csv(ds / "particles.csv", index=False)
    line = assert_error(run_cli(["info", ds], capsys), meta)
    assert "class_names has" in line and repr(bad) in line, line


def test_a_dataset_json_without_contrast_is_refused(tmp_path: Path, capsys: Capsys) -> None:
    """A light dataset with the key removed was evaluated by a dark model (rc 0) and 'info
    --validate' said ok; the writer always records it, so its absence is refused."""
    pytest.importorskip("onnx")
    from tiny_onnx import build_model

    ds = _labelled(tmp_path / "light", ["ribosome", "proteasome"], contrast="light")
    assert json.loads((ds / "dataset.json").read_text())["contrast"] == "light"
    meta = _edit_meta(ds, contrast=None)
    with pytest.raises(InputError, match="has no 'contrast'"):
        read_dataset(ds)
    model = build_model(tmp_path / "dark.onnx", box=BOX, voxel=VOXEL, classes=["ribosome", "proteasome"])
    line = assert_error(run_cli(["evaluate", model, ds, "--out", tmp_path / "ev"], capsys), meta)
    assert "has no 'contrast'" in line, line
    code, out, _ = run_cli(["info", "--validate", ds], capsys)
    assert code != 0 and "has no 'contrast'" in out, out


def test_the_header_voxel_size_stands_in_for_a_missing_one_with_a_note(tmp_path: Path) -> None:
    ds = _labelled(tmp_path / "ds", ["ribosome", "proteasome"])
    _edit_meta(ds, voxel_size=None)
    with read_dataset(ds) as opened:
        assert opened.voxel_size == pytest.approx(VOXEL)
        assert len(opened.notes) == 1 and "header" in opened.notes[0] and "10 A" in opened.notes[0]
    _edit_meta(ds, voxel_size=2 * VOXEL)  # both present and disagreeing: refused
    with pytest.raises(InputError, match=r"differs from dataset\.json's"):
        read_dataset(ds)


# ---------------------------------------------------------------------------------------------
# models made before the rule


@pytest.mark.parametrize("bad", ["b copy", "unknown"])
def test_classify_refuses_a_model_with_such_a_name_before_any_work(
    bad: str, tmp_path: Path, capsys: Capsys
) -> None:
    """'b copy' ran to the end and died writing predictions.star (67-line traceback); 'unknown'
    merged the class's predictions with the rejections."""
    pytest.importorskip("onnx")
    from tiny_onnx import build_model

    from cryoshift.runtime.mrc import write_volume

    model = build_model(tmp_path / "model.onnx", box=BOX, voxel=VOXEL, classes=["a", bad, "c"])
    volume = write_volume(tmp_path / "v.mrc", volumes(1)[0], voxel_size=VOXEL)
    out = tmp_path / "out"
    line = assert_error(run_cli(["classify", model, volume, "-o", out, "-q", "-b", "cpu"], capsys), model)
    assert "invalid model metadata: class_names has" in line and repr(bad) in line, line
    assert not (out / "predictions.csv").exists()


# ---------------------------------------------------------------------------------------------
# simulate: class names from file names


@pytest.mark.parametrize("stem", ["unknown", "b copy"])
def test_simulate_refuses_a_map_whose_file_name_breaks_the_rule(
    stem: str, tmp_path: Path, capsys: Capsys
) -> None:
    pytest.importorskip("torch")
    source = density_map(tmp_path / f"{stem}.mrc")
    argv = ["simulate", tmp_path / "sim", "--n", 4, "--box", BOX, "--no-progress", "--structures", source]
    argv += ["--structures", "builtin:filament"]  # two classes, as simulate needs
    line = assert_error(run_cli(argv, capsys), source)
    assert "rename the file" in line and repr(stem) in line, line
    assert not (tmp_path / "sim" / "dataset.json").exists()


def test_simulate_refuses_file_names_differing_only_in_case(tmp_path: Path) -> None:
    from cryoshift.training.simulate import load_structures

    (tmp_path / "x").mkdir()
    first = density_map(tmp_path / "Ribo.mrc")
    second = density_map(tmp_path / "x" / "ribo.mrc")
    with pytest.raises(InputError, match="class name 'ribo' differs only in case from 'Ribo'") as refused:
        load_structures([str(first), str(second)], BOX, VOXEL)
    assert refused.value.path == str(second) and "rename one of the files" in refused.value.reason
