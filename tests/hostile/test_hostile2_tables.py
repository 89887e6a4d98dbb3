"""Pick tables, listings and tomograms.star rows from the hostile2 report (findings 2, 5, 8, 10,
14, 15, 20): a second ``loop_`` in one STAR block, listing rows with too many or too few fields,
bad slice numbers, picks without an optics group beside two groups, a tomograms.star size one
voxel off or not whole, a blank line after ``loop_``, and ';' tables mixing decimal marks.

Each writes small real files and runs the CLI in-process (a tiny ONNX model, 16^3 boxes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hostile_inputs import VOXEL, Capsys, assert_error, errors_table, predictions, put, run_cli
from relion5_project import write_project

from cryoshift.runtime.mrc import write_stack, write_volume

HEAD = "_rlnTomoName\n_rlnCoordinateX\n_rlnCoordinateY\n_rlnCoordinateZ\n"


@pytest.fixture()
def tomo(tmp_path: Path) -> Path:
    """A 32^3 noise tomogram of 10 A voxels named TS_01."""
    data = np.random.default_rng(5).normal(0, 1, (32, 32, 32)).astype(np.float32)
    return write_volume(tmp_path / "TS_01.mrc", data, voxel_size=VOXEL)


def _classify(model: Path, table: Path, out: Path, *more: object) -> list[object]:
    return ["classify", model, table, "-o", out, "-q", "-b", "cpu", *more]


def _ids(out: Path) -> list[str]:
    return sorted(predictions(out)["id"].astype(str))


# --- finding 2: a second loop_ in one data block ------------------------------------------------


def test_a_block_with_two_loops_is_refused_naming_the_block(
    model: Path, tomo: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """The second loop's rows were read with the first loop's columns: here its coordinates are
    in another order (Z, Y, X), so the pick was read at swapped axes without a word, and the
    second loop's header lines became error rows."""
    star = put(
        tmp_path / "two.star",
        "data_particles\nloop_\n"
        + HEAD
        + "TS_01 8 16 24\nloop_\n_rlnTomoName\n_rlnCoordinateZ\n_rlnCoordinateY\n_rlnCoordinateX\n"
        + "TS_01 24 16 8\n",
    )
    line = assert_error(run_cli(_classify(model, star, tmp_path / "o", "-t", tomo), capsys), star)
    assert "data_particles holds two loop_ tables (lines 2 and 8)" in line, line
    line = assert_error(run_cli(["info", star], capsys), star)
    assert "two loop_ tables" in line, line


def test_loops_in_separate_blocks_are_still_read(
    model: Path, tomo: Path, tmp_path: Path, capsys: Capsys
) -> None:
    star = put(
        tmp_path / "ok.star",
        "data_optics\nloop_\n_rlnOpticsGroup\n1\n\ndata_particles\nloop_\n" + HEAD + "TS_01 8 16 24\n",
    )
    code, _, err = run_cli(_classify(model, star, tmp_path / "o", "-t", tomo), capsys)
    assert code == 0, err
    assert _ids(tmp_path / "o") == ["TS_01:8.0,16.0,24.0"]


# --- finding 15: blank (and comment) lines inside a loop header ----------------------------------


def test_blank_line_after_loop_is_read_as_relion_reads_it(
    model: Path, tomo: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """It said "no coordinate columns ... found no columns"."""
    star = put(
        tmp_path / "blank.star",
        "data_particles\nloop_\n\n_rlnTomoName\n# a comment\n_rlnCoordinateX\n\n_rlnCoordinateY\n"
        "_rlnCoordinateZ\n\nTS_01 8 16 24\nTS_01 ten 16 24\n",
    )
    code, _, err = run_cli(_classify(model, star, tmp_path / "o", "-t", tomo), capsys)
    assert code == 0, err
    assert _ids(tmp_path / "o") == ["TS_01:8.0,16.0,24.0"]
    reasons = errors_table(tmp_path / "o")["reason"].tolist()
    assert reasons == ["line 12: missing or non-numeric coordinates (row skipped)"], reasons


# --- findings 5 and 14: listings ------------------------------------------------------------------


@pytest.fixture()
def stack(tmp_path: Path) -> Path:
    data = np.random.default_rng(1).normal(0, 1, (3, 16, 16, 16)).astype(np.float32)
    return write_stack(tmp_path / "st.mrcs", data, voxel_size=VOXEL)


def test_listing_rows_with_too_many_or_too_few_fields_are_error_rows(
    model: Path, stack: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """One row with an extra field refused the whole listing; a row one field short was taken."""
    extra = put(
        tmp_path / "extra.star", "data_particles\nloop_\n_rlnImageName\n1@st.mrcs\n2@st.mrcs x\n3@st.mrcs\n"
    )
    code, _, err = run_cli(_classify(model, extra, tmp_path / "o1"), capsys)
    assert code == 0, err
    assert len(predictions(tmp_path / "o1")) == 2
    assert errors_table(tmp_path / "o1")["reason"].tolist() == ["line 5: 2 fields where the header names 1"]
    short = put(
        tmp_path / "short.star",
        "data_particles\nloop_\n_rlnImageName\n_rlnClassNumber\n1@st.mrcs 1\n2@st.mrcs\n3@st.mrcs 1\n",
    )
    code, _, err = run_cli(_classify(model, short, tmp_path / "o2"), capsys)
    assert code == 0, err
    assert len(predictions(tmp_path / "o2")) == 2
    assert errors_table(tmp_path / "o2")["reason"].tolist() == ["line 6: 1 field where the header names 2"]


def test_csv_listing_rows_of_the_wrong_width_are_error_rows(
    model: Path, stack: Path, tmp_path: Path, capsys: Capsys
) -> None:
    listing = put(tmp_path / "list.csv", "path,label\n1@st.mrcs,a\n2@st.mrcs,a,b\n3@st.mrcs\n")
    code, _, err = run_cli(_classify(model, listing, tmp_path / "o"), capsys)
    assert code == 0, err
    assert len(predictions(tmp_path / "o")) == 1
    reasons = errors_table(tmp_path / "o")["reason"].tolist()
    assert reasons == [
        "line 3: 3 fields where the header names 2",
        "line 4: 1 field where the header names 2",
    ], reasons


def test_bad_slice_numbers_are_named_as_such(
    model: Path, stack: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """-1@, 1.5@ and @ were "no such file or directory"; 4@ of 3 slices was "index 3 outside";
    the stack named without N@ was "expected a single volume, found shape (3, 16, 16, 16)"."""
    rows = ["1@st.mrcs", "-1@st.mrcs", "1.5@st.mrcs", "@st.mrcs", "4@st.mrcs", "st.mrcs"]
    listing = put(tmp_path / "l.star", "data_particles\nloop_\n_rlnImageName\n" + "\n".join(rows) + "\n")
    code, _, err = run_cli(_classify(model, listing, tmp_path / "o"), capsys)
    assert code == 0, err
    assert len(predictions(tmp_path / "o")) == 1
    reasons = errors_table(tmp_path / "o")["reason"].tolist()
    text = " | ".join(reasons)
    assert "no such file" not in text, text
    assert "line 5: '-1@st.mrcs': slice number '-1' is not a whole number >= 1" in text, text
    assert "line 6: '1.5@st.mrcs': slice number '1.5' is not a whole number >= 1" in text, text
    assert "line 7: '@st.mrcs': no slice number before '@'" in text, text
    assert "slice 4 is out of range 1..3 (the stack holds 3 volumes)" in text, text
    assert "is a stack of 3 volumes, not one volume: name one slice of it (N@st.mrcs, N from 1 to 3)" in text


# --- finding 8: picks without rlnOpticsGroup beside two optics groups ----------------------------


@pytest.mark.parametrize("options", [(), ("--binning", "4"), ("--coordinate-pixel-size", "5")])
def test_picks_without_a_group_beside_two_optics_groups_get_one_refusal(
    model: Path, tomo: Path, tmp_path: Path, capsys: Capsys, options: tuple[str, ...]
) -> None:
    """Three messages, each guessing another group, depending on the options."""
    star = put(
        tmp_path / "optics.star",
        "data_optics\nloop_\n_rlnOpticsGroup\n_rlnTomoTiltSeriesPixelSize\n1 2.5\n2 5.0\n\n"
        "data_particles\nloop_\n" + HEAD + "TS_01 64 64 64\n",
    )
    line = assert_error(run_cli(_classify(model, star, tmp_path / "o", "-t", tomo, *options), capsys), star)
    assert (
        "data_particles has no rlnOpticsGroup column, but data_optics lists 2 optics groups of different "
        "rlnTomoTiltSeriesPixelSize (group 1 2.5 A, group 2 5 A): which applies to each pick is unknown"
    ) in line, line


def test_picks_without_a_group_beside_groups_of_one_size_are_read(
    model: Path, tomo: Path, tmp_path: Path, capsys: Capsys
) -> None:
    star = put(
        tmp_path / "optics.star",
        "data_optics\nloop_\n_rlnOpticsGroup\n_rlnTomoTiltSeriesPixelSize\n1 2.5\n2 2.5\n\n"
        "data_particles\nloop_\n" + HEAD + "TS_01 64 64 64\n",
    )
    code, _, err = run_cli(_classify(model, star, tmp_path / "o", "-t", tomo, "--binning", "4"), capsys)
    assert code == 0, err
    assert _ids(tmp_path / "o") == ["TS_01:16.0,16.0,16.0"]


# --- finding 10: tomograms.star sizes --------------------------------------------------------------

SHAPE = (16, 24, 20)  # Z, Y, X voxels of the reconstruction


def test_size_one_voxel_off_is_noted_with_the_centre_used(
    model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """A table size of 17 binned voxels for a 16-voxel reconstruction moved every centred pick by
    half a voxel without a word."""
    tomograms, particles = write_project(
        tmp_path / "p", {"TS_01": [(10.0, 12.0, 8.0)]}, SHAPE, VOXEL, fields={"TS_01": {"rlnTomoSizeZ": "68"}}
    )
    code, _, err = run_cli(_classify(model, particles, tmp_path / "o", "-t", tomograms), capsys)
    assert code == 0, err
    notes = [ln for ln in err.splitlines() if "tomograms.star gives" in ln]
    assert len(notes) == 1, err
    assert "tomogram 'TS_01' is 20x24x16 voxels (X, Y, Z) but tomograms.star gives 20x24x17" in notes[0]
    assert "placed from the table's centre (10, 12, 8.5)" in notes[0]
    assert "not the reconstruction's middle (10, 12, 8)" in notes[0], notes[0]
    # as RELION places it: from the table's centre (8.5), so 8 + 0.5
    assert _ids(tmp_path / "o") == ["TS_01:10.0,12.0,8.5"]


def test_size_of_the_reconstruction_gives_no_note(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    tomograms, particles = write_project(tmp_path / "p", {"TS_01": [(10.0, 12.0, 8.0)]}, SHAPE, VOXEL)
    code, _, err = run_cli(_classify(model, particles, tmp_path / "o", "-t", tomograms), capsys)
    assert code == 0 and "tomograms.star gives" not in err, err
    assert _ids(tmp_path / "o") == ["TS_01:10.0,12.0,8.0"]


def test_size_that_is_not_whole_is_a_damaged_row(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    """256.5 was accepted and its half-pixel centre moved the picks (x = 16.0625)."""
    picks = {"TS_01": [(10.0, 12.0, 8.0)], "TS_02": [(10.0, 12.0, 8.0)]}
    tomograms, particles = write_project(
        tmp_path / "p", picks, SHAPE, VOXEL, fields={"TS_01": {"rlnTomoSizeX": "80.5"}}
    )
    code, _, err = run_cli(_classify(model, particles, tmp_path / "o", "-t", tomograms), capsys)
    assert code == 0, err
    assert _ids(tmp_path / "o") == ["TS_02:10.0,12.0,8.0"]
    (reason,) = errors_table(tmp_path / "o")["reason"].tolist()
    assert "tomogram 'TS_01' has rlnTomoSizeX 80.5 (not a whole number of pixels)" in reason, reason


# --- finding 20: ';' tables mixing decimal commas and points ---------------------------------------


def test_mixed_decimal_marks_are_noted(model: Path, tomo: Path, tmp_path: Path, capsys: Capsys) -> None:
    table = put(tmp_path / "semi.csv", "tomo;x;y;z\nTS_01;16,5;16.5;16\nTS_01;8;8;8\n")
    code, _, err = run_cli(_classify(model, table, tmp_path / "o", "-t", tomo), capsys)
    assert code == 0, err
    assert _ids(tmp_path / "o") == ["TS_01:16.5,16.5,16.0", "TS_01:8.0,8.0,8.0"]
    assert (
        "numbers are written with decimal commas ('16,5' on line 2) and decimal points ('16.5' on line 2)"
    ) in err, err


def test_one_decimal_mark_gives_no_note(model: Path, tomo: Path, tmp_path: Path, capsys: Capsys) -> None:
    table = put(tmp_path / "semi.csv", "tomo;x;y;z\nTS_01;16,5;16;16\nTS_01;8;8,5;8\n")
    code, _, err = run_cli(_classify(model, table, tmp_path / "o", "-t", tomo), capsys)
    assert code == 0 and "decimal" not in err, err
    assert _ids(tmp_path / "o") == ["TS_01:16.5,16.0,16.0", "TS_01:8.0,8.5,8.0"]


def test_decimal_commas_beside_a_possible_thousands_point_are_refused(
    model: Path, tomo: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """``1.016`` beside ``16,5`` may be 1016 (a comma locale's grouping) or 1.016."""
    table = put(tmp_path / "semi.csv", "tomo;x;y;z\nTS_01;16,5;16;16\nTS_01;1.016;8;8\n")
    line = assert_error(run_cli(_classify(model, table, tmp_path / "o", "-t", tomo), capsys), table)
    assert "decimal commas ('16,5' on line 2) and points ('1.016' on line 3)" in line, line
    assert "write every number with one decimal mark" in line, line


def test_a_column_mixing_marks_is_read_not_failed(
    model: Path, tomo: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """A column holding 16,5 and 8.5 made the row of the comma value non-numeric (both rows of a
    column that mixed them); each is now read, with the note."""
    table = put(tmp_path / "semi.csv", "tomo;x;y;z\nTS_01;16,5;16;16\nTS_01;8.5;8;8\n")
    code, _, err = run_cli(_classify(model, table, tmp_path / "o", "-t", tomo), capsys)
    assert code == 0, err
    assert _ids(tmp_path / "o") == ["TS_01:16.5,16.0,16.0", "TS_01:8.5,8.0,8.0"]
    assert "decimal points ('8.5' on line 3)" in err, err
