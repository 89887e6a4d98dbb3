"""Paths as the user wrote them (findings 2, 5 and 8 of the unusual-paths report).

* A literal ``~`` (bash leaves it alone after ``--out=`` and in quotes) is a folder called ``~``
  for writing and for reading: pandas used to expand it, so results, pick tables and
  particles.csv were read from ``$HOME``.
* An empty path (an unset shell variable) is refused in one line, never taken as ``.``.
* Any legal file name can be written: the temporary file beside it no longer holds its name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hostile_inputs import assert_error, run_cli
from tiny_onnx import BOX, CLASSES, VOXEL, make_volumes

from cryoshift.runtime.dataset import read_dataset, write_dataset
from cryoshift.runtime.literal_paths import for_pandas
from cryoshift.runtime.mrc import write_volume
from cryoshift.runtime.outfiles import replacing_path, write_text
from cryoshift.runtime.results import read_results

Capsys = pytest.CaptureFixture[str]
EMPTY = "empty path (an unset shell variable?)"


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working folder; ``$HOME`` is another folder, where decoys of ``~/...`` may go."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    return work


def _home() -> Path:
    return Path(os.environ["HOME"])


def _picks(path: Path, n: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"tomo_name": "tomo", "x": [16.0 + i for i in range(n)], "y": 20.0, "z": 20.0}).to_csv(
        path, index=False
    )
    return path


def test_for_pandas_keeps_a_leading_tilde_literal() -> None:
    assert for_pandas("~/res/p.csv") == os.path.join(".", "~/res/p.csv")
    assert for_pandas(Path("~")) == os.path.join(".", "~")
    assert for_pandas("a/~b.csv") == "a/~b.csv" and for_pandas("/x/~") == "/x/~"


def test_an_out_folder_named_tilde_is_read_back_from_itself(
    work: Path, model_path: Path, capsys: Capsys
) -> None:
    """Wrote ./~/res, then read $HOME/res/predictions.csv to make the STAR file: "No such file"."""
    write_volume(work / "sub.mrc", make_volumes(1)[0], voxel_size=VOXEL)
    code, _out, err = run_cli(
        ["classify", model_path, "sub.mrc", "--out=~/res", "--no-progress", "-q"], capsys
    )
    assert code == 0, err
    res = work / "~" / "res"
    assert len(pd.read_csv(res / "predictions.csv")) == 1
    assert len(read_results(Path("~/res/predictions.star"))) == 1
    assert f"cryoshift: note: ~/res: the shell did not expand ~; writing to {for_pandas('~/res')}" in err
    assert not (_home() / "res").exists()


def test_a_pick_table_under_tilde_is_the_one_named(work: Path, model_path: Path, capsys: Capsys) -> None:
    """Classified the 1 pick of $HOME/picks.csv instead of the 3 of ./~/picks.csv."""
    write_volume(work / "tomo.mrc", make_volumes(1, 40)[0], voxel_size=VOXEL)
    _picks(work / "~" / "picks.csv", 3)
    _picks(_home() / "picks.csv", 1)
    argv = ["classify", model_path, "~/picks.csv", "-t", "tomo.mrc", "-o", "o", "--no-progress", "-q"]
    code, _out, err = run_cli(argv, capsys)
    assert code == 0, err
    assert len(pd.read_csv(work / "o" / "predictions.csv")) == 3


def test_a_dataset_under_tilde_is_read_from_itself(work: Path) -> None:
    """dataset.json came from ./~/ds, particles.csv from $HOME/ds: "has 2 rows, dataset.json says 5"."""
    labels = np.arange(5) % len(CLASSES)
    write_dataset(work / "~" / "ds", make_volumes(5), labels, list(CLASSES), voxel_size=VOXEL)
    write_dataset(_home() / "ds", make_volumes(2), labels[:2], list(CLASSES), voxel_size=VOXEL)
    with read_dataset(Path("~/ds"), with_labels=True) as ds:
        assert len(ds) == 5 and len(ds.table) == 5 and ds.box_size == BOX


def test_a_results_table_under_tilde_is_read_from_itself(work: Path) -> None:
    (work / "~").mkdir()
    pd.DataFrame({"id": ["a", "b"], "best_class": "junk"}).to_csv(work / "~" / "r.csv", index=False)
    pd.DataFrame({"id": ["c"], "best_class": "junk"}).to_csv(_home() / "r.csv", index=False)
    assert read_results(Path("~/r.csv"))["id"].tolist() == ["a", "b"]


@pytest.mark.parametrize(
    ("argv", "name"),
    [
        (["classify", "m.onnx", "v.mrc", "-o", ""], "--out"),
        (["classify", "m.onnx", "v.mrc", "--out="], "--out"),
        (["classify", "m.onnx", ""], "INPUTS"),
        (["classify", "m.onnx", "p.csv", "-t", "", "-o", "o"], "--tomograms"),
        (["simulate", "", "--n", "9"], "OUT_DIR"),
        (["simulate", "d", "--structures", ""], "--structures"),
        (["evaluate", "run0", "sim16", "--out", ""], "--out"),
        (["evaluate", "", "sim16"], "MODEL"),
        (["train", "--source", "", "--out", "r"], "--source"),
        (["train", "--source", "s", "--out", "r", "--target", ""], "--target"),
        (["export", "run0", "-o", ""], "--out"),
        (["info", "a.mrc", ""], "PATHS"),
        (["merge", "", "-o", "m"], "FOLDERS"),
        (["report", "run0", "-o", ""], "--out"),
        (["bench", "m.onnx", "--json", ""], "--json"),
        (["demo", "--out", ""], "--out"),
    ],
)
def test_an_empty_path_is_refused_by_every_verb(
    work: Path, argv: list[str], name: str, capsys: Capsys
) -> None:
    """``-o "$OUT"`` with OUT unset wrote into the working folder; an empty input scanned it."""
    line = assert_error(run_cli(argv, capsys), name)
    assert line == f"cryoshift: error: {name}: {EMPTY}"
    assert not list(work.iterdir())  # nothing written where the user stood


def test_an_empty_free_text_option_is_not_a_path(work: Path, model_path: Path, capsys: Capsys) -> None:
    """``--devices ''`` means no GPU list, as before: only path options refuse an empty value."""
    write_volume(work / "sub.mrc", make_volumes(1)[0], voxel_size=VOXEL)
    argv = ["classify", model_path, "sub.mrc", "--devices", "", "-o", "o", "--no-progress", "-q"]
    code, _out, err = run_cli(argv, capsys)
    assert code == 0, err


def _long_name(size: int, suffix: str = ".json") -> str:
    return "r" * (size - len(suffix)) + suffix


def test_a_legal_long_name_is_written(tmp_path: Path) -> None:
    """A 250-byte name failed: its temporary file ``.NAME.<8 random>.tmp`` was 264 bytes."""
    target = tmp_path / _long_name(250, ".txt")
    write_text(target, "x\n")
    assert target.read_text() == "x\n"
    with replacing_path(tmp_path / _long_name(255, ".mrc")) as tmp:
        assert len(tmp.name) <= 16 and tmp.name.startswith(".") and tmp.name.endswith(".tmp")
        assert tmp.parent == tmp_path  # beside the target: the rename stays atomic


def test_bench_writes_a_legal_long_json_name(work: Path, model_path: Path, capsys: Capsys) -> None:
    """The whole benchmark ran, then "cannot write: File name too long"."""
    name = _long_name(250)
    argv = ["bench", model_path, "--n", "8", "--repeats", "1", "--batch-size", "8", "--json", name]
    code, _out, err = run_cli(argv, capsys)
    assert code == 0, err
    assert {"inference", "feed"} <= json.loads((work / name).read_text()).keys()


def test_too_long_names_are_refused_before_the_work(work: Path, model_path: Path, capsys: Capsys) -> None:
    """Said after the work ("cannot write: File name too long"), or as a bare OSError on the way."""
    name = _long_name(300)
    code, out, err = run_cli(["bench", model_path, "--n", "8", "--repeats", "1", "--json", name], capsys)
    line = assert_error((code, out, err), "name is 300 bytes; this file system allows at most")
    assert line.endswith("choose a shorter --json") and "medians" not in out  # nothing was timed
    line = assert_error(
        run_cli(["simulate", "o" * 300, "--n", "9", "--box", "16"], capsys), "name is 300 bytes"
    )
    assert line.endswith("choose a shorter OUT_DIR") and not list(work.iterdir())


def test_classify_refuses_a_too_long_out_folder_in_words(
    work: Path, model_path: Path, capsys: Capsys
) -> None:
    """classify asked the folder whether it existed before checking it: a bare "File name too long"."""
    write_volume(work / "sub.mrc", make_volumes(1)[0], voxel_size=VOXEL)
    line = assert_error(
        run_cli(["classify", model_path, "sub.mrc", "-o", "o" * 300, "--no-progress"], capsys),
        "name is 300 bytes",
    )
    assert line.endswith("choose a shorter --out") and sorted(p.name for p in work.iterdir()) == ["sub.mrc"]
