"""Damaged rows of a RELION 5 ``tomograms.star`` given to classify with ``--tomograms``, and the
table described by ``cryoshift info``.

One row whose pixel size or binning was 0, negative or text refused the whole run, the good
tomograms' picks included; a NaN there was read as "not given" and the header's voxel size used
without a word; a damaged rlnTomoSizeX/Y/Z was dropped without a word (and with it the size
check). A name listed twice, a row without a reconstruction and two rows giving one file refused
the whole table. Now each fails only its own tomogram's picks, each an error row naming the table,
the row (by the file's line, as an editor counts it) and the value; a row without a name has no
picks and is said in a note. A table with no usable row, or a column given twice, is refused in
one line. Files are written as RELION 5 writes them (see tests/runtime/test_relion5.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from hostile_inputs import Capsys, assert_error, errors_table, predictions, run_cli
from relion5_project import TOMOGRAM_LABELS, write_project
from tiny_onnx import linear_model

SHAPE = (24, 48, 40)  # Z, Y, X voxels of each reconstruction
VOXEL = 10.0  # 2.5 A tilt series binned 4x
PICKS = {  # voxels (x, y, z) of the 10 A reconstructions
    "TS_01": [(20.0, 24.0, 12.0), (12.0, 30.0, 10.0)],
    "TS_02": [(18.0, 20.0, 12.0), (28.0, 40.0, 11.0), (10.0, 10.0, 13.0)],
}
THREE = {**PICKS, "TS_03": [(22.0, 26.0, 12.0)]}
# The file line of each tomogram's row in relion5_project's tomograms.star: a comment, data_global,
# loop_ and seven labels come first.
LINE = {"TS_01": 14, "TS_02": 15, "TS_03": 16}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return linear_model(tmp_path_factory.mktemp("model") / "linear.onnx")


def _project(
    root: Path,
    values: dict[str, dict[str, str]] | None = None,
    labels: Sequence[str] = TOMOGRAM_LABELS,
    written: tuple[str, ...] | None = None,
    picks: dict[str, list[tuple[float, float, float]]] = PICKS,
    names: dict[str, str] | None = None,
) -> tuple[Path, Path]:
    """The project of :func:`relion5_project.write_project`; ``values`` replaces a tomogram's
    row values by column, ``written`` are the reconstructions written (all by default),
    ``names`` the name the picks give a tomogram."""
    return write_project(
        root, picks, SHAPE, VOXEL, fields=values, labels=labels, written=written, names=names
    )


def _classify(model: Path, picks: Path, tomograms: Path, out: Path) -> list[object]:
    return ["classify", model, picks, "-t", tomograms, "-o", out, "-q", "-b", "cpu"]


def _only_ts01_classified(out: Path, tomograms: Path, column: str, shown: str) -> None:
    assert set(predictions(out)["tomo_name"]) == {"TS_01"}
    reasons = errors_table(out)["reason"].tolist()
    assert len(reasons) == len(PICKS["TS_02"]), reasons
    for reason in reasons:
        assert reason.startswith(f"{tomograms}: line 15: tomogram 'TS_02' has {column} {shown}"), reason
        assert "it must be a positive number" in reason, reason


@pytest.mark.parametrize(
    ("column", "value", "shown"),
    [
        ("rlnTomoTiltSeriesPixelSize", "-2.500000", "-2.5"),
        ("rlnTomoTomogramBinning", "four", "'four'"),
    ],
)
def test_one_damaged_row_fails_only_its_tomograms_picks(
    model: Path, tmp_path: Path, capsys: Capsys, column: str, value: str, shown: str
) -> None:
    """TS_02's row has a negative pixel size or a binning in words: the whole run was refused
    (exit 2), TS_01's good picks with it. Now TS_02's picks are error rows naming the table, the
    row and the value, and TS_01's are classified."""
    tomograms, particles = _project(tmp_path / "relion", {"TS_02": {column: value}})
    out = tmp_path / "out"
    code, _, err = run_cli(_classify(model, particles, tomograms, out), capsys)
    assert code == 0, err
    _only_ts01_classified(out, tomograms, column, shown)


@pytest.mark.parametrize("column", ["rlnTomoTiltSeriesPixelSize", "rlnTomoTomogramBinning"])
def test_nan_pixel_size_or_binning_is_damaged_not_missing(
    model: Path, tmp_path: Path, capsys: Capsys, column: str
) -> None:
    """NaN in TS_02's pixel size or binning was read as "not given": the header's voxel size was
    used without a word, though the row says nothing usable. Now it is a damaged value of that
    row, as 0 is; an absent column still means "not given" (tested in
    test_warp_relion5_inputs.py::test_tomograms_star_without_binning_takes_the_header)."""
    tomograms, particles = _project(tmp_path / "relion", {"TS_02": {column: "nan"}})
    out = tmp_path / "out"
    code, _, err = run_cli(_classify(model, particles, tomograms, out), capsys)
    assert code == 0, err
    _only_ts01_classified(out, tomograms, column, "nan")


@pytest.mark.parametrize(
    ("column", "value", "shown"),
    [
        ("rlnTomoSizeX", "0", "0"),
        ("rlnTomoSizeY", "-192", "-192"),
        ("rlnTomoSizeZ", "thick", "'thick'"),
        ("rlnTomoSizeZ", "nan", "nan"),
    ],
)
def test_a_damaged_tomogram_size_fails_only_its_tomograms_picks(
    model: Path, tmp_path: Path, capsys: Capsys, column: str, value: str, shown: str
) -> None:
    """TS_02's rlnTomoSizeX/Y/Z is 0, negative, text or NaN: the value was dropped without a word
    and the check of the reconstruction's size against the table (which places centred-Angstrom
    picks) skipped, TS_02's picks classified as if the row were sound. Now, as for a damaged pixel
    size, they are error rows naming the table, the line and the value."""
    tomograms, particles = _project(tmp_path / "relion", {"TS_02": {column: value}})
    out = tmp_path / "out"
    code, _, err = run_cli(_classify(model, particles, tomograms, out), capsys)
    assert code == 0, err
    _only_ts01_classified(out, tomograms, column, shown)


def _failed(out: Path, names: dict[str, int]) -> list[str]:
    """The reasons of errors.csv, checking there are ``names[name]`` error rows per tomogram (the
    name that starts each row's id)."""
    errors = errors_table(out)
    assert errors["id"].str.split(":").str[0].value_counts().to_dict() == names, errors
    return errors["reason"].tolist()


def test_a_name_listed_twice_fails_both_rows_picks(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    """TS_03's row also says TS_02 (a copy-paste slip): the whole table was refused, TS_01's good
    picks with it. Which of the two rows describes TS_02 is a guess, so TS_02's picks fail, naming
    both lines; TS_01's are classified."""
    tomograms, particles = _project(
        tmp_path / "relion", {"TS_03": {"rlnTomoName": "TS_02"}}, picks=THREE, names={"TS_03": "TS_02"}
    )
    out = tmp_path / "out"
    code, _, err = run_cli(_classify(model, particles, tomograms, out), capsys)
    assert code == 0, err
    assert set(predictions(out)["tomo_name"]) == {"TS_01"}
    for reason in _failed(out, {"TS_02": len(THREE["TS_02"]) + len(THREE["TS_03"])}):
        assert reason.startswith(f"{tomograms}: lines 15, 16: tomogram 'TS_02' is listed twice"), reason


def test_a_row_without_a_reconstruction_fails_only_its_picks(
    model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """TS_02's rlnTomoReconstructedTomogram is empty: the whole table was refused. Now TS_02's
    picks fail naming the line, and TS_01's are classified."""
    tomograms, particles = _project(tmp_path / "relion", {"TS_02": {"rlnTomoReconstructedTomogram": '""'}})
    out = tmp_path / "out"
    code, _, err = run_cli(_classify(model, particles, tomograms, out), capsys)
    assert code == 0, err
    assert set(predictions(out)["tomo_name"]) == {"TS_01"}
    for reason in _failed(out, {"TS_02": len(PICKS["TS_02"])}):
        assert reason == f"{tomograms}: line 15: tomogram 'TS_02' has no rlnTomoReconstructedTomogram", reason


def test_two_tomograms_giving_one_reconstruction_fail_both(
    model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """TS_03's row names TS_02's reconstruction: the whole table was refused. The file holds one
    of them at most, and which is a guess, so the picks of both fail, each naming the other; TS_01's
    are classified."""
    rec = "Tomograms/job006/tomograms/rec_TS_02.mrc"
    tomograms, particles = _project(
        tmp_path / "relion", {"TS_03": {"rlnTomoReconstructedTomogram": rec}}, picks=THREE
    )
    out = tmp_path / "out"
    code, _, err = run_cli(_classify(model, particles, tomograms, out), capsys)
    assert code == 0, err
    assert set(predictions(out)["tomo_name"]) == {"TS_01"}
    reasons = _failed(out, {"TS_02": len(THREE["TS_02"]), "TS_03": len(THREE["TS_03"])})
    for name, other in (("TS_02", "TS_03"), ("TS_03", "TS_02")):
        said = f"{tomograms}: line {LINE[name]}: tomogram {name!r} shares its reconstruction {rec}"
        said += f" with tomogram {other!r}"
        assert sum(r.startswith(said) for r in reasons) == len(THREE[name]), reasons


def test_a_row_without_a_name_is_a_note(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    """TS_03's rlnTomoName is empty: the whole table was refused. No pick can name that row, so
    nothing fails: every pick is classified and the row is said in a note (printed even with -q),
    and ``cryoshift info --validate`` lists it."""
    picks = {**PICKS, "TS_03": []}
    tomograms, particles = _project(tmp_path / "relion", {"TS_03": {"rlnTomoName": '""'}}, picks=picks)
    out = tmp_path / "out"
    code, stdout, err = run_cli(_classify(model, particles, tomograms, out), capsys)
    assert code == 0, err
    assert len(predictions(out)) == len(PICKS["TS_01"]) + len(PICKS["TS_02"])
    assert errors_table(out).empty
    said = (
        f"{tomograms}: line 16: empty rlnTomoName (reconstruction Tomograms/job006/tomograms/rec_TS_03.mrc)"
    )
    notes = [ln for ln in (stdout + err).splitlines() if said in ln]
    assert len(notes) == 1 and notes[0].startswith("cryoshift: note: "), stdout + err

    code, shown, _ = run_cli(["info", "--validate", tomograms], capsys)
    assert code == 1, shown
    found = [ln for ln in shown.splitlines() if "empty rlnTomoName" in ln]
    assert len(found) == 1 and found[0].startswith(f"{tomograms}: line 16: "), shown


def test_a_table_whose_every_row_has_no_name_is_refused(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    """Rows left out for their empty names leave no tomogram: refused in one line, as a table
    whose every row is damaged."""
    nameless = {"rlnTomoName": '""'}
    tomograms, particles = _project(tmp_path / "relion", {"TS_01": nameless, "TS_02": nameless})
    line = assert_error(run_cli(_classify(model, particles, tomograms, tmp_path / "out"), capsys), tomograms)
    assert "no usable tomogram: every row is damaged (2 in all), first line 14: empty rlnTomoName" in line, (
        line
    )


def test_rows_are_named_by_the_files_line(tmp_path: Path) -> None:
    """A comment and a blank line among the rows: a row is named by the line an editor shows,
    not by its place among the rows (which was 0-based besides)."""
    from cryoshift.runtime.tomograms import read_tomogram_table

    tomograms, _ = _project(tmp_path / "relion", {"TS_02": {"rlnTomoSizeX": "0"}})
    lines = tomograms.read_text().splitlines()
    at = LINE["TS_02"] - 1
    tomograms.write_text("\n".join([*lines[:at], "# TS_02 redone", "", *lines[at:]]) + "\n")
    (good, bad) = read_tomogram_table(tomograms)
    assert not good.problem
    assert bad.problem == (
        f"{tomograms}: line 17: tomogram 'TS_02' has rlnTomoSizeX 0; it must be a positive number"
    ), bad.problem


def test_a_table_whose_every_row_is_damaged_is_refused_in_one_line(
    model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """No row usable: nothing can be classified, so the table is refused in one line saying so
    (it named only the first row, as if the others were fine)."""
    bad = {"rlnTomoTomogramBinning": "0.000000"}
    tomograms, particles = _project(tmp_path / "relion", {"TS_01": bad, "TS_02": bad})
    line = assert_error(run_cli(_classify(model, particles, tomograms, tmp_path / "out"), capsys), tomograms)
    assert "no usable tomogram: every row is damaged (2 in all), first line 14: tomogram 'TS_01'" in line, (
        line
    )
    assert "rlnTomoTomogramBinning 0.0; it must be a positive number" in line, line


def test_a_column_given_twice_is_refused_in_one_line(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    """rlnTomoTomogramBinning listed twice: the refusal printed a pandas Series ("Name: 0, dtype:
    object") as the value; which of the two columns is meant is a guess, so say that."""
    labels = [*TOMOGRAM_LABELS[:3], "rlnTomoTomogramBinning", *TOMOGRAM_LABELS[3:]]
    tomograms, particles = _project(tmp_path / "relion", labels=labels)
    line = assert_error(run_cli(_classify(model, particles, tomograms, tmp_path / "out"), capsys), tomograms)
    assert "column rlnTomoTomogramBinning is given twice; keep one" in line, line
    assert "dtype" not in line, line


def test_info_describes_a_tomograms_star(tmp_path: Path, capsys: Capsys) -> None:
    """``cryoshift info tomograms.star`` printed classify's advice ("give it with --tomograms")
    and exit 2: it now says what the table holds, and --validate lists the unusable tomograms."""
    from cryoshift.runtime.info import describe

    tomograms, _ = _project(
        tmp_path / "relion",
        {"TS_02": {"rlnTomoTomogramBinning": "nan"}},
        written=("TS_01",),
    )
    desc = describe(tomograms)
    rows = dict(desc.rows)
    assert desc.kind == "tomograms", desc
    assert rows["tomograms"] == "2: TS_01, TS_02", rows
    assert rows["voxel size"] == "2.5 A x binning 4 = 10 A: 1", rows
    assert rows["reconstructions"].startswith("1 found, 1 missing (first: TS_02 "), rows
    assert rows["damaged rows"].startswith(
        "1 (their picks fail in classify; first: line 15: tomogram 'TS_02'"
    ), rows
    assert "rlnTomoTomogramBinning nan" in rows["damaged rows"], rows

    code, out, err = run_cli(["info", tomograms], capsys)
    assert code == 0, err
    assert "tomogram table" in out and "--tomograms" in out
    code, out, _ = run_cli(["info", "--validate", tomograms], capsys)
    assert code == 1, out
    lines = out.splitlines()
    assert len(lines) == 2, lines
    assert "line 15: tomogram 'TS_02' has rlnTomoTomogramBinning nan" in lines[0], lines
    assert "rec_TS_02.mrc not found" in lines[1], lines
