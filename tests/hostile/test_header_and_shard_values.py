"""Values that used to pass unchecked: an MRC header whose X voxel size is set but whose Y or Z one
is undefined, shard predictions whose values classify never writes (and shard files that are a
folder or a link loop, once called "missing"), a dataset declaring an absurd voxel size, and STAR
keywords (save frames, ``stop_``, ``global_``) that became one errors row per line. Every file is
built in ``tmp_path`` by the test itself, and each goes through the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import struct
import warnings
from pathlib import Path

import mrcfile
import numpy as np
import pytest
from hostile_inputs import (
    BOX,
    VOXEL,
    Capsys,
    assert_error,
    classify_in_two_shards,
    errors_table,
    predictions,
    put,
    raw_mrc,
    run_cli,
    volumes,
)

from cryoshift.runtime.mrc import write_volume

# ---------------------------------------------------------------------------------------------
# MRC headers: sampling and cell per axis


def _header(path: Path, sampling: tuple[int, int, int], cell: tuple[float, float, float]) -> Path:
    """A 16^3 float32 volume whose header says ``sampling`` (mx, my, mz) and ``cell`` (cella, A)."""
    raw_mrc(path, data=volumes(1)[0].tobytes())
    head = bytearray(path.read_bytes())
    head[28:40] = struct.pack("<3i", *sampling)
    head[40:52] = struct.pack("<3f", *cell)
    path.write_bytes(bytes(head))
    return path


CELL = VOXEL * BOX


@pytest.mark.parametrize(
    "sampling,cell,words",
    [
        ((BOX, 0, BOX), (CELL, CELL, CELL), "sampling my=0 while mx=16: the Y voxel size"),
        ((BOX, BOX, -1), (CELL, CELL, CELL), "sampling mz=-1 while mx=16: the Z voxel size"),
        ((BOX, BOX, BOX), (CELL, 0.0, CELL), "cella.y=0 while cella.x=160: the Y voxel size"),
        ((BOX, BOX, BOX), (CELL, CELL, float("nan")), "cella.z=nan while cella.x=160: the Z voxel size"),
    ],
)
def test_an_undefined_y_or_z_voxel_size_is_refused_naming_the_field(
    sampling: tuple[int, int, int],
    cell: tuple[float, float, float],
    words: str,
    model: Path,
    tmp_path: Path,
    capsys: Capsys,
) -> None:
    """mx > 0 with my or mz <= 0 (or a Y/Z cell of 0 or NaN) counted as "no size" for that axis, so
    X's 10 A became the voxel size of every axis and the volume was classified as isotropic."""
    bad = _header(tmp_path / "bad.mrc", sampling, cell)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mrcfile.open(bad, header_only=True, permissive=True) as mrc:
            sizes = [float(mrc.voxel_size.x), float(mrc.voxel_size.y), float(mrc.voxel_size.z)]
    assert not all(np.isfinite(s) and s > 0 for s in sizes), sizes  # mrcfile: inf, negative, 0 or NaN
    line = assert_error(run_cli(["info", bad], capsys), bad)
    assert words in line and "is undefined" in line, line
    # in a folder with a good file: an errors row naming the field; the good file is classified
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(bad, folder / "a_bad.mrc")
    write_volume(folder / "b_good.mrc", volumes(2)[1], voxel_size=VOXEL)
    out = tmp_path / "out"
    code, _, err = run_cli(["classify", model, folder, "-o", out, "-q", "-b", "cpu"], capsys)
    assert code == 0, err
    reasons = errors_table(out)["reason"].tolist()
    assert len(reasons) == 1 and words in reasons[0], reasons
    assert predictions(out)["id"].str.endswith("b_good.mrc").tolist() == [True]


def test_a_header_without_an_x_voxel_size_stays_unknown(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    """No cell at all (or none for X) is an absent voxel size, not a contradiction: classified with
    a note, as before. A 2-D image's Z sampling says nothing about its pixels."""
    from cryoshift.runtime.mrc import read_header

    for name, sampling, cell in (
        ("none.mrc", (0, 0, 0), (0.0, 0.0, 0.0)),
        ("no_x.mrc", (0, BOX, BOX), (0.0, CELL, CELL)),
    ):
        path = _header(tmp_path / name, sampling, cell)
        assert read_header(path)["voxel_size_known"] is False
        out = tmp_path / f"o_{name}"
        code, _, err = run_cli(["classify", model, path, "-o", out, "-q", "-b", "cpu"], capsys)
        assert code == 0, err
        assert len(predictions(out)) == 1
    image = raw_mrc(tmp_path / "image.mrc", nz=1, mz=0, data=bytes(BOX * BOX * 4))
    header = read_header(image)
    assert header["shape"] == (BOX, BOX) and header["voxel_size"] == VOXEL


# ---------------------------------------------------------------------------------------------
# merge: the values of shard predictions


@pytest.fixture(scope="module")
def shards(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two genuine shards (2 of 4 volumes each) of one classify run."""

    root = tmp_path_factory.mktemp("shards")
    folder = root / "in"
    folder.mkdir()
    for i, v in enumerate(volumes(4, seed=3)):
        write_volume(folder / f"v{i}.mrc", v, voxel_size=VOXEL)
    classify_in_two_shards(model, folder, root / "shards")
    return root / "shards"


def _copy(shards: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "shards"
    shutil.copytree(shards, folder)
    return folder


def _set(table: Path, row: int, column: str, value: str) -> None:
    """Put ``value`` in data row ``row`` (1-based) of a shard table, as a hand edit would."""
    lines = table.read_text().splitlines()
    header = lines[0].split(",")
    fields = lines[row].split(",")
    fields[header.index(column)] = value
    lines[row] = ",".join(fields)
    table.write_text("\n".join(lines) + "\n")


def test_untouched_shards_still_merge(shards: Path, tmp_path: Path, capsys: Capsys) -> None:
    folder = _copy(shards, tmp_path)
    code, _, err = run_cli(["merge", folder, "-o", tmp_path / "merged"], capsys)
    assert code == 0, err
    assert len(predictions(tmp_path / "merged")) == 4


@pytest.mark.parametrize(
    "column,value,words",
    [
        ("confidence", "7.5", "'7.5' is not a probability"),
        ("confidence", "-0.2", "'-0.2' is not a probability"),
        ("confidence", "nan", "'nan' is not a probability"),
        ("confidence", "0.0001", "is not prob_"),
        ("class_index", "9", "'9' is not a class of the model (-1 or 0..2)"),
        ("class_index", "-3", "'-3' is not a class of the model"),
        ("class_index", "two", "'two' is not a class of the model"),
        ("class_name", "zebra", "'zebra' is not class"),
        ("best_class", "zebra", "'zebra' is not one of the model's classes"),
        ("unknown", "yes", "'yes' is not 0 or 1"),
        ("prob_junk", "1.5", "'1.5' is not a probability"),
        ("prob_ribosome", "0.9", "the probabilities sum to"),
        ("shift_score", "-1", "'-1' is not a shift score"),
        ("x", "inf", "'inf' is not a coordinate"),
        ("index", "-7", "'-7' is not an index"),
        ("id", "", "empty"),
    ],
)
def test_merge_refuses_a_shard_value_classify_never_writes(
    column: str, value: str, words: str, shards: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """Merge copied shard values unchecked: a hand-edited or foreign predictions table (confidence
    7.5, a class the model does not have ...) reached the merged results and exit 0."""
    folder = _copy(shards, tmp_path)
    table = folder / "predictions.shard-1-of-2.csv"
    _set(table, 2, column, value)
    out = tmp_path / "merged"
    line = assert_error(run_cli(["merge", folder, "-o", out], capsys), table)
    assert f"row 2 (line 3), column {column}: " in line and words in line, line
    assert "rerun shard 1/2" in line, line
    assert not (out / "predictions.csv").exists()  # nothing half-merged


def test_merge_refuses_rows_whose_values_contradict_each_other(
    shards: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """Each value in range, but not a row classify writes: unknown without class_index -1."""
    folder = _copy(shards, tmp_path)
    table = folder / "predictions.shard-0-of-2.csv"
    flag = "0" if "unknown" in table.read_text().splitlines()[1] else "1"
    _set(table, 1, "unknown", flag)
    line = assert_error(run_cli(["merge", folder, "-o", tmp_path / "m"], capsys), table)
    assert "row 1 (line 2), column unknown: " in line and "-1 exactly when unknown" in line, line


def test_merge_refuses_an_unknown_flag_the_threshold_contradicts(
    shards: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """Shards whose manifests say a threshold of 0.999 (every confidence under it: all unknown)
    but whose rows say known: the rows were not scored with that threshold (an edited manifest or
    table), and merge copied them."""
    import json

    folder = _copy(shards, tmp_path)
    for manifest in folder.glob("manifest.shard-*.json"):
        data = json.loads(manifest.read_text())
        data["settings"]["unknown_threshold"] = 0.999
        manifest.write_text(json.dumps(data))
    table = folder / "predictions.shard-0-of-2.csv"
    line = assert_error(run_cli(["merge", folder, "-o", tmp_path / "m"], capsys), table)
    assert "column unknown: 0 where the confidence" in line and "under the threshold 0.999" in line, line


def test_merge_refuses_probability_columns_of_other_classes(
    shards: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """Every shard renamed alike (so the headers agree) still is not the model's class list."""
    folder = _copy(shards, tmp_path)
    for i in range(2):
        table = folder / f"predictions.shard-{i}-of-2.csv"
        table.write_text(table.read_text().replace("prob_junk", "prob_trash", 1))
    line = assert_error(
        run_cli(["merge", folder, "-o", tmp_path / "m"], capsys), "predictions.shard-0-of-2.csv"
    )
    assert "prob_trash" in line and "model's classes" in line and "junk" in line, line


@pytest.mark.parametrize("name", ["predictions", "errors", "manifest"])
@pytest.mark.parametrize("kind", ["folder", "link loop"])
def test_a_shard_file_that_is_a_folder_or_a_link_loop_is_named_so(
    name: str, kind: str, shards: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """Both were reported as "missing" (a folder under the errors table's name, when the shard had
    no errors, was skipped without a word)."""
    folder = _copy(shards, tmp_path)
    path = folder / f"{name}.shard-0-of-2.{'json' if name == 'manifest' else 'csv'}"
    path.unlink()
    if kind == "folder":
        path.mkdir()
    else:
        os.symlink(path.name, path)
    line = assert_error(run_cli(["merge", folder, "-o", tmp_path / "m"], capsys), path)
    assert ("is a folder" if kind == "folder" else "symbolic link loop") in line, line
    assert "missing" not in line, line


# ---------------------------------------------------------------------------------------------
# datasets: the voxel size dataset.json declares


def _without_header_voxel(dataset: Path) -> None:
    """Unset the stack header's cell, so only dataset.json says the voxel size (nothing contradicts it)."""
    with mrcfile.open(dataset / "volumes.mrc", "r+", permissive=True) as mrc:
        mrc.header.cella = (0.0, 0.0, 0.0)


@pytest.mark.parametrize("voxel", [1e-9, 1e9, 0, -3.0, float("nan")])
def test_a_dataset_with_an_absurd_voxel_size_is_refused(
    voxel: float, dataset: Path, model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """1e-9 (metres) and 1e9 were accepted: the voxel size of every model trained on the data."""
    _without_header_voxel(dataset)
    meta = dataset / "dataset.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "voxel_size": voxel}))
    for argv in (
        ["info", dataset],
        ["evaluate", model, dataset, "--out", tmp_path / "ev"],
        ["classify", model, dataset, "-o", tmp_path / "cl", "-q", "-b", "cpu"],
    ):
        line = assert_error(run_cli(argv, capsys), meta)
        assert "'voxel_size'" in line, (argv[0], line)
        if voxel > 0:
            assert "outside the plausible 0.01..10000 A" in line, (argv[0], line)


def test_an_absurd_voxel_size_is_neither_written_nor_taken_from_the_header(
    dataset: Path, tmp_path: Path, capsys: Capsys
) -> None:
    from cryoshift.runtime.dataset import write_dataset
    from cryoshift.runtime.errors import InputError

    with pytest.raises(InputError, match="outside the plausible"):
        write_dataset(tmp_path / "w", volumes(2), voxel_size=1e-9)
    assert not (tmp_path / "w" / "dataset.json").exists()
    meta = dataset / "dataset.json"
    info = json.loads(meta.read_text())
    del info["voxel_size"]
    meta.write_text(json.dumps(info))
    with mrcfile.open(dataset / "volumes.mrc", "r+", permissive=True) as mrc:
        mrc.voxel_size = 1e5
    line = assert_error(run_cli(["info", dataset], capsys), dataset / "volumes.mrc")
    assert "header voxel size 100000 A is outside the plausible" in line, line
    # a plausible one that only dataset.json gives is read as before
    _without_header_voxel(dataset)
    meta.write_text(json.dumps({**info, "voxel_size": 0.5}))
    code, _out, err = run_cli(["info", dataset], capsys)
    assert code == 0, err


# ---------------------------------------------------------------------------------------------
# STAR keywords cryoshift does not read

_LOOP = "loop_\n_rlnTomoName #1\n_rlnCoordinateX #2\n_rlnCoordinateY #3\n_rlnCoordinateZ #4\n"
_ROWS = "TS_01 10 10 10\nTS_01 12 12 12\n"


@pytest.fixture()
def tomo(tmp_path: Path) -> Path:
    t = np.random.default_rng(5).normal(0, 1, (24, 40, 32)).astype(np.float32)  # Z, Y, X
    return write_volume(tmp_path / "TS_01.mrc", t, voxel_size=VOXEL)


@pytest.mark.parametrize(
    "text,line,words",
    [
        (
            "data_particles\n\n" + _LOOP + _ROWS + "stop_\n",
            10,
            "'stop_' (the STAR keyword that ends a nested loop)",
        ),
        ("data_particles\n\n" + _LOOP + "TS_01 10 10 10\n  STOP_  # end\n" + _ROWS, 9, "'STOP_'"),
        (
            "data_particles\n\nsave_picks\n" + _LOOP + _ROWS + "save_\n",
            3,
            "'save_picks' (opens a STAR save frame)",
        ),
        ("global_\n_rlnVersion 5\ndata_particles\n\n" + _LOOP + _ROWS, 1, "'global_' (a STAR global block)"),
    ],
)
def test_star_keywords_refuse_the_file_once(
    text: str, line: int, words: str, model: Path, tomo: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """Each ``stop_``/``save_`` line was read as a row of picks (starfile reads it so too: a row
    of NaN), so the run went on with one errors row per keyword line and the frame's rows counted
    as the block's. Now the file is refused once, naming it, the line and the keyword."""
    picks = put(tmp_path / "picks.star", text)
    out = tmp_path / "out"
    for argv in (["classify", model, picks, "-t", tomo, "-o", out, "-q", "-b", "cpu"], ["info", picks]):
        refusal = assert_error(run_cli(argv, capsys), picks)
        assert f"line {line}: {words}" in refusal and "does not read" in refusal, refusal
    assert not (out / "errors.csv").exists()


def test_a_row_whose_name_starts_like_a_keyword_is_data(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    """Only a line that is the keyword alone is refused: a tomogram named save_01 is a name."""
    t = np.random.default_rng(5).normal(0, 1, (24, 40, 32)).astype(np.float32)
    tomo = write_volume(tmp_path / "save_01.mrc", t, voxel_size=VOXEL)
    picks = put(tmp_path / "picks.star", "data_particles\n\n" + _LOOP + _ROWS.replace("TS_01", "save_01"))
    out = tmp_path / "out"
    code, _, err = run_cli(["classify", model, picks, "-t", tomo, "-o", out, "-q", "-b", "cpu"], capsys)
    assert code == 0, err
    assert len(predictions(out)) == 2 and not len(errors_table(out))
