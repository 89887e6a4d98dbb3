"""``cryoshift info`` of a RELION 5 ``tomograms.star`` whose rows the reader keeps for info only:
a row with an empty rlnTomoName, a row without a reconstruction, and a table with no rows.

The nameless row was a blank in the list of tomograms ("TS_01, , TS_03") and "tomogram ''" in
--validate; the row without a reconstruction was counted "missing", and --validate added
"reconstruction  not found (<the table's folder>)" to its own "has no rlnTomoReconstructedTomogram";
a table without rows was described as "0: " and validated "ok". Files are written as RELION 5
writes them (tests/support/relion5_project.py).
"""

from __future__ import annotations

from pathlib import Path

from hostile_inputs import Capsys, run_cli
from relion5_project import TOMOGRAM_LABELS, star_loop, write_project

from cryoshift.runtime.info import describe

SHAPE = (8, 12, 10)  # Z, Y, X voxels of each reconstruction
PICKS = {name: [(5.0, 6.0, 4.0)] for name in ("TS_01", "TS_02", "TS_03")}
LINE = {"TS_01": 14, "TS_02": 15, "TS_03": 16}  # each row's file line (relion5_project's layout)


def _table(root: Path, fields: dict[str, dict[str, str]], written: tuple[str, ...] | None = None) -> Path:
    tomograms, _ = write_project(root, PICKS, SHAPE, 10.0, fields=fields, written=written)
    return tomograms


def test_a_row_without_a_name_is_named_by_its_line(tmp_path: Path, capsys: Capsys) -> None:
    """TS_02's rlnTomoName is empty and its reconstruction is not there: the list showed a blank
    and --validate said "tomogram '': reconstruction ... not found"."""
    tomograms = _table(tmp_path / "relion", {"TS_02": {"rlnTomoName": '""'}}, written=("TS_01", "TS_03"))
    rows = dict(describe(tomograms).rows)
    nameless = f"(no name, line {LINE['TS_02']})"
    assert rows["tomograms"] == f"3: TS_01, {nameless}, TS_03", rows
    assert rows["reconstructions"].startswith(f"2 found, 1 missing (first: {nameless} "), rows

    code, out, err = run_cli(["info", tomograms], capsys)
    assert code == 0, err
    assert nameless in out and ", ," not in out, out
    code, out, _ = run_cli(["info", "--validate", tomograms], capsys)
    assert code == 1, out
    lines = out.splitlines()
    assert len(lines) == 2, lines
    assert f"line {LINE['TS_02']}: empty rlnTomoName" in lines[0], lines
    assert (
        f"tomogram {nameless}: reconstruction Tomograms/job006/tomograms/rec_TS_02.mrc not found" in lines[1]
    )
    assert "''" not in out, out


def test_a_row_without_a_reconstruction_is_not_counted_missing(tmp_path: Path, capsys: Capsys) -> None:
    """TS_03 gives no reconstruction: its stand-in path (the table's folder) was counted as a
    missing file, and --validate said "reconstruction  not found (<folder>)" after the row's own
    problem."""
    tomograms = _table(tmp_path / "relion", {"TS_03": {"rlnTomoReconstructedTomogram": '""'}})
    rows = dict(describe(tomograms).rows)
    assert rows["reconstructions"] == "2 found, 0 missing; 1 row gives none", rows
    assert "has no rlnTomoReconstructedTomogram" in rows["damaged rows"], rows

    code, out, _ = run_cli(["info", "--validate", tomograms], capsys)
    assert code == 1, out
    lines = out.splitlines()
    assert lines == [
        f"{tomograms}: line {LINE['TS_03']}: tomogram 'TS_03' has no rlnTomoReconstructedTomogram"
    ], lines


def test_a_table_without_rows_says_it_lists_no_tomograms(tmp_path: Path, capsys: Capsys) -> None:
    """A tomograms.star with its columns and no data rows was "tomograms 0: " and "0 found, 0
    missing", and --validate said "ok" (exit 0), though classify finds no tomogram in it."""
    tomograms = tmp_path / "tomograms.star"
    tomograms.write_text("\n# version 50001\n" + star_loop("global", TOMOGRAM_LABELS, []))
    desc = describe(tomograms)
    rows = dict(desc.rows)
    assert desc.kind == "tomograms", desc
    assert rows["tomograms"] == "none: the table lists no tomograms (no data rows)", rows
    assert "reconstructions" not in rows, rows

    code, out, err = run_cli(["info", tomograms], capsys)
    assert code == 0, err
    assert "none:" in out, out
    code, out, _ = run_cli(["info", "--validate", tomograms], capsys)
    assert code == 1, out
    assert out.splitlines() == [f"{tomograms}: the table lists no tomograms (no data rows)"], out


def test_info_shows_the_pixel_size_a_table_states(tmp_path: Path) -> None:
    """classify checks a table's stated pixel size against the tomogram (and --binning against
    both); info showed neither the picks' data_optics size nor a listing's rlnImagePixelSize."""
    optics = star_loop("optics", ("rlnOpticsGroup", "rlnTomoTiltSeriesPixelSize"), ["1 5.0", "2 abc"])
    picks = star_loop(
        "particles",
        ("rlnTomoName", "rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ", "rlnOpticsGroup"),
        ["TS_01 10 10 10 1", "TS_01 12 12 12 2"],
    )
    table = tmp_path / "picks.star"
    table.write_text(optics + picks)
    assert dict(describe(table).rows)["pixel size"] == (
        "group 1: 5 A, group 2: 'abc' (not a pixel size) (data_optics rlnTomoTiltSeriesPixelSize)"
    )
    listed = star_loop("optics", ("rlnOpticsGroup", "rlnImagePixelSize"), ["1 20.0"]) + star_loop(
        "particles", ("rlnImageName", "rlnOpticsGroup"), ["000001@stack.mrcs 1"]
    )
    listing = tmp_path / "list.star"
    listing.write_text(listed)
    assert dict(describe(listing).rows)["pixel size"] == "20 A (data_optics rlnImagePixelSize)"
