"""Edges of pick tables, tomogram tables and result files that gave a silently wrong answer or a
message that named the wrong thing (a tester's findings).

- A table naming its tomograms with one row's name left empty: that row was cropped from the only
  ``--tomograms`` file (a guess, exit 0); now it is an error row naming its line.
- A tomograms.star with rlnTomoSizeY/Z but no rlnTomoSizeX: the size check was skipped, so an
  axis-swapped (XZY) reconstruction placed centred-Angstrom picks elsewhere; now refused naming the
  missing column.
- A Dynamo ``.tbl`` (or any table whose first line is numbers) was "duplicate column names: 1, 0".
- A full disk or a folder in the way of predictions.star named the temporary file, or nothing.

Crops are checked with a probe model whose features are its input box: each tomogram's voxels hold
their own (x, y, z) and the tomogram's number, so the centre of a box says where it was cut.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from crop_probe import SHAPE, build_crop_probe, coded_tomogram, crop_centres
from hostile_inputs import Capsys, assert_error, errors_table, predictions, put, run_cli
from relion5_project import TOMOGRAM_LABELS, write_project
from tiny_onnx import VOXEL

from cryoshift.runtime.mrc import write_volume


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_crop_probe(tmp_path_factory.mktemp("probe") / "probe.onnx")


def _tomograms(folder: Path, names: tuple[str, ...]) -> dict[str, Path]:
    """Coded tomograms (crop_probe.py), numbered in the order of ``names``."""
    return {name: coded_tomogram(folder / f"{name}.mrc", k) for k, name in enumerate(names)}


def _classify(model: Path, picks: Path, tomograms: Path, out: Path) -> list[object]:
    return ["classify", model, picks, "-t", tomograms, "-o", out, "-q", "-b", "cpu", "--features"]


# -- 1. an empty tomogram name in a table that names its tomograms ---------------------------------


def test_blank_name_row_is_an_error_row_not_the_only_tomogram(
    probe: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """With one ``-t`` file, the unnamed row was cropped from it (exit 0, 2 predictions): a guess.
    Now it fails alone, naming its line; TS_01's pick is cut from TS_01; TS_02's is not given."""
    tomos = _tomograms(tmp_path / "tomos", ("TS_01",))
    picks = put(tmp_path / "f.csv", "tomo,x,y,z\nTS_01,10,11,12\nTS_02,20,20,12\n,30,30,12\n")
    out = tmp_path / "o"
    code, _, err = run_cli(_classify(probe, picks, tomos["TS_01"], out), capsys)
    assert code == 0, err
    assert predictions(out)["tomo_name"].tolist() == ["TS_01"]
    assert crop_centres(out) == [(0, 10, 11, 12)]
    reasons = errors_table(out)["reason"].tolist()
    assert "line 4: empty tomogram name (tomo) (row skipped)" in reasons, reasons
    assert sum("TS_02" in r for r in reasons) == 1, reasons


def test_blank_name_row_with_several_tomograms_fails_alone(
    probe: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """With a folder of tomograms the whole table was refused, falsely, as having no tomo column."""
    tomos = _tomograms(tmp_path / "tomos", ("TS_01", "TS_02"))
    rows = [f"TS_0{1 + i % 2} {10 + i} {12 + i % 20} 12" for i in range(30)] + ['"" 30 30 12']
    head = "data_particles\n\nloop_\n_rlnTomoName\n_rlnCoordinateX\n_rlnCoordinateY\n_rlnCoordinateZ\n"
    picks = put(tmp_path / "p.star", head + "\n".join(rows) + "\n")
    out = tmp_path / "o"
    code, _, err = run_cli(_classify(probe, picks, tomos["TS_01"].parent, out), capsys)
    assert code == 0, err
    assert len(predictions(out)) == 30
    assert errors_table(out)["reason"].tolist() == [
        "line 38: empty tomogram name (rlnTomoName) (row skipped)"
    ]


def test_blank_name_in_star_is_a_bad_row_of_the_reader(tmp_path: Path) -> None:
    """In batch work the streaming reader keeps the ``""`` row at the end of a STAR table as a bad
    row naming its line; read to be described (``info``), its name is "" as written."""
    from cryoshift.runtime.tables import read_pick_table

    rows = [f"TS_0{1 + i % 2} {10 + i} 12 12" for i in range(30)] + ['"" 30 30 12']
    head = "data_particles\n\nloop_\n_rlnTomoName\n_rlnCoordinateX\n_rlnCoordinateY\n_rlnCoordinateZ\n"
    picks = put(tmp_path / "p.star", head + "\n".join(rows) + "\n")
    table = read_pick_table(picks, skip_bad_rows=True)
    assert table.named
    assert table.bad_rows.tolist() == [30] and table.bad_lines.tolist() == [38]
    assert table.bad_reasons == ["empty tomogram name (rlnTomoName)"]
    described = read_pick_table(picks)
    assert described.counts() == {"TS_01": 15, "TS_02": 15, "": 1} and not len(described.bad_rows)


def test_table_whose_every_name_is_empty_names_no_tomogram(tmp_path: Path) -> None:
    """A tomo column left empty throughout names no tomogram: the one-tomogram rule applies as to a
    table without the column (README), not a refusal of every row."""
    from cryoshift.runtime.tables import read_pick_table

    table = read_pick_table(put(tmp_path / "f.csv", "tomo,x,y,z\n,1,2,3\n,4,5,6\n"), skip_bad_rows=True)
    assert table.names == [""] and not table.named and not len(table.bad_rows)


# -- 2. a partial set of rlnTomoSizeX/Y/Z ----------------------------------------------------------


def test_partial_size_columns_refuse_an_axis_swapped_reconstruction(
    probe: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """rlnTomoSizeY/Z without rlnTomoSizeX: the size check was skipped and the XZY reconstruction
    (Y and Z swapped) was cropped (exit 0). With all three it is refused; with two, too now,
    naming the missing column."""
    labels = tuple(c for c in TOMOGRAM_LABELS if c != "rlnTomoSizeX")
    tomograms, particles = write_project(
        tmp_path / "p",
        {"TS_01": [(20.0, 24.0, 12.0)], "TS_02": [(18.0, 20.0, 12.0)]},
        SHAPE,
        VOXEL,
        labels=labels,
    )
    for name in ("TS_01", "TS_02"):  # as an XZY reconstruction: Y and Z swapped
        rec = tomograms.parent / "tomograms" / f"rec_{name}.mrc"
        data = np.random.default_rng(0).normal(0, 1, (SHAPE[1], SHAPE[0], SHAPE[2])).astype(np.float32)
        write_volume(rec, data, voxel_size=VOXEL)
    line = assert_error(run_cli(_classify(probe, particles, tomograms, tmp_path / "o"), capsys), tomograms)
    assert "has rlnTomoSizeY and rlnTomoSizeZ but no rlnTomoSizeX" in line, line
    assert not (tmp_path / "o" / "predictions.csv").exists()


def test_partial_size_columns_are_each_rows_problem_for_info(tmp_path: Path) -> None:
    from cryoshift.runtime.tomograms import read_tomogram_table

    labels = tuple(c for c in TOMOGRAM_LABELS if c != "rlnTomoSizeZ")
    tomograms, _ = write_project(tmp_path / "p", {"TS_01": [(20.0, 24.0, 12.0)]}, SHAPE, VOXEL, labels=labels)
    (entry,) = read_tomogram_table(tomograms, keep_damaged=True)
    assert "line 13: tomogram 'TS_01': the table has rlnTomoSizeX and rlnTomoSizeY but no rlnTomoSizeZ" in (
        entry.problem
    )


# -- 4. tables without a header of names -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "said"),
    [
        ("dynamo.tbl", "1 1 1 0 0 0 " + "0 " * 16 + "36 28 20 0 0 0\n", "a Dynamo table (.tbl"),
        ("nohead.csv", "10,20,30\n1,2,3\n", "holds numbers, not column names: found 10, 20, 30 (line 1)"),
    ],
)
def test_table_without_column_names_says_so(
    probe: Path, tmp_path: Path, capsys: Capsys, name: str, text: str, said: str
) -> None:
    """Was "duplicate column names: 1, 0" (Dynamo) or "no coordinate columns ... found 10, 20, 30"."""
    tomos = _tomograms(tmp_path / "tomos", ("TS_01",))
    table = put(tmp_path / name, text)
    line = assert_error(run_cli(_classify(probe, table, tomos["TS_01"], tmp_path / "o"), capsys), table)
    assert said in line and "CSV/TSV with a header line naming x, y, z" in line, line


# -- 5. writing result tables ----------------------------------------------------------------------


def test_folder_in_the_way_of_predictions_star_is_named(probe: Path, tmp_path: Path, capsys: Capsys) -> None:
    """Said "o/.predictions.NNN.tmp.star: Is a directory", a file the user never made."""
    tomos = _tomograms(tmp_path / "tomos", ("TS_01",))
    picks = put(tmp_path / "f.csv", "tomo,x,y,z\nTS_01,10,11,12\n")
    out = tmp_path / "o"
    (out / "predictions.star").mkdir(parents=True)
    line = assert_error(
        run_cli(_classify(probe, picks, tomos["TS_01"], out), capsys), out / "predictions.star"
    )
    assert ".tmp" not in line and "a folder of this name is in the way" in line, line


@pytest.mark.parametrize("final", ["predictions.star", "predictions.csv"])
def test_full_disk_names_the_result_file(tmp_path: Path, final: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk ("No space left on device") named no file, or the temporary one. The temporary
    file has a new random name now (runtime/outfiles.py), so the disk fills where a network file
    system or a quota says so: when the written data are synced."""
    import errno

    from cryoshift.runtime.results import write_results, write_star

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    target = tmp_path / final
    rows = pd.DataFrame({"id": ["a"], "x": [1.0]})
    with pytest.raises(OSError) as caught:
        if target.suffix == ".star":
            write_star({"particles": rows}, target)
        else:
            write_results(rows, target)
    assert caught.value.filename == str(target)
    assert "no space left on device" in str(caught.value.strerror), caught.value
    assert not list(tmp_path.iterdir())  # neither the table nor its temporary file
