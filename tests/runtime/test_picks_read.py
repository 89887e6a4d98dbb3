"""read_picks (the DataFrame API) reads a CSV's coordinates as classify does, and the unit of a
CSV's coordinates beside a binned tomograms.star.

read_picks read a CSV with pandas alone: a ``;`` table mixing decimal commas and points refused a
good row as "non-numeric", ``12,5,3,5,4,5`` under ``x,y,z`` (decimal commas in a comma table) was
read as (12, 5, 3) without a word, and a row with one field too many showed pandas' tokenizer
message. It now takes the coordinates from tables.read_pick_table, the reader classify uses: the
same refusals, naming the file and the line.
"""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile

from cryoshift.runtime.errors import InputError
from cryoshift.runtime.picks import read_picks
from cryoshift.runtime.sources import plan_inputs
from cryoshift.runtime.tables import read_pick_table


def _reason(path: Path, **kw: object) -> str:
    with pytest.raises(InputError) as err:
        read_picks(path, **kw)
    assert err.value.path == str(path)
    return err.value.reason


def test_a_semicolon_table_mixing_decimal_marks_is_read_as_classify_reads_it(tmp_path: Path) -> None:
    """``;`` tables are read with decimal commas; ``16.5`` beside ``12,5`` was made NaN by pandas
    and its good row 2 refused as non-numeric. Both are decimal marks (with a warning saying so);
    a point that may group thousands (``1.016``) is refused naming both lines, as classify does."""
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("tomo;x;y;z\nTS_01;12,5;3,5;4\nTS_01;16.5;3;4\n")
    with pytest.warns(UserWarning, match=r"decimal commas \('12,5' on line 2\) and decimal points"):
        picks = read_picks(mixed)
    assert picks[["x", "y", "z"]].to_numpy().tolist() == [[12.5, 3.5, 4.0], [16.5, 3.0, 4.0]]
    assert len(picks.attrs["notes"]) == 1 and str(mixed) in picks.attrs["notes"][0]
    grouped = tmp_path / "grouped.csv"
    grouped.write_text("x;y;z\n12,5;3;4\n1.016;3;4\n")
    reason = _reason(grouped)
    assert reason.startswith("numbers are written with decimal commas ('12,5' on line 2) and points")
    assert "('1.016' on line 3)" in reason
    with pytest.raises(InputError) as cli:
        read_pick_table(grouped)
    assert cli.value.reason == reason  # one rule, one message


def test_decimal_commas_in_a_comma_table_are_refused_naming_the_rows(tmp_path: Path) -> None:
    """``12,5,3,5,4,5`` under ``x,y,z`` was read as (12, 5, 3): a silently wrong pick."""
    path = tmp_path / "comma.csv"
    path.write_text("x,y,z\n12,5,3,5,4,5\n1,5,2,5,3,5\n")
    want = (
        "every row has 6 fields where the header names 3 (lines 2, 3); "
        "decimal commas? write the table with ';' as separator"
    )
    assert _reason(path) == want
    assert _reason(path, check_values=False) == want


def test_a_row_with_more_fields_than_the_header_is_one_cryoshift_line(tmp_path: Path) -> None:
    """Was "not a readable table (ParserError: Error tokenizing data. C error: Expected 4 fields
    in line 7, saw 5)"; now classify's line. Batch work (check_values=False) keeps the other rows
    and the long one has no coordinates (an error row), never those of its first fields."""
    path = tmp_path / "long.csv"
    good = "".join(f"TS_01,{i},2,3\n" for i in range(1, 6))
    path.write_text("tomo,x,y,z\n" + good + "TS_01,9,8,7,6\n")
    reason = _reason(path)
    assert reason == "1 row has 5 fields where the header names 4 (line 7)"
    assert "tokeniz" not in reason
    picks = read_picks(path, check_values=False)
    assert picks["x"].tolist()[:5] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert np.isnan(picks[["x", "y", "z"]].to_numpy()[5]).all()
    first = tmp_path / "first.csv"  # the long row first: pandas read it as 12, 5, 3 silently
    first.write_text("tomo,x,y,z\nTS_01,12,5,3,5\nTS_01,1,2,3\n")
    assert _reason(first) == "1 row has 5 fields where the header names 4 (line 2)"


def test_well_formed_tables_read_as_before(tmp_path: Path) -> None:
    """Names as written, comments skipped, every original column kept; a ';' table of decimal
    commas alone reads without a note."""
    path = tmp_path / "p.csv"
    path.write_text("# picked by hand\n\nTomo,X,Y,Z,score\n01,1,2,3,0.5\nNA,4.5,5,6,0.9\n")
    picks = read_picks(path)
    assert picks["tomo_name"].tolist() == ["01", "NA"]
    assert picks[["x", "y", "z"]].to_numpy().tolist() == [[1, 2, 3], [4.5, 5, 6]]
    assert picks["score"].tolist() == [0.5, 0.9] and picks.attrs["notes"] == []
    semi = tmp_path / "semi.csv"
    semi.write_text("x;y;z\n12,5;3,5;4,25\n")
    assert read_picks(semi)[["x", "y", "z"]].to_numpy().tolist() == [[12.5, 3.5, 4.25]]


# -- the unit of a CSV's coordinates beside a binned tomograms.star ------------------------------

TS_PIXEL, BINNING, VOXEL = 2.5, 4.0, 10.0  # the reconstruction: 10 A voxels of a 2.5 A tilt series
SHAPE = (32, 48, 64)  # (Z, Y, X) voxels of the reconstruction


def _project(root: Path, size_x: int = 256) -> Path:
    """A 64 x 48 x 32 reconstruction (10 A voxels) and its RELION 5 tomograms.star (tilt-series
    pixel 2.5 A, binning 4; ``size_x`` unbinned pixels along X)."""
    with mrcfile.new(root / "rec_TS_01.mrc") as mrc:
        mrc.set_data(np.random.default_rng(0).normal(size=SHAPE).astype(np.float32))
        mrc.voxel_size = VOXEL
    table = pd.DataFrame(
        {
            "rlnTomoName": ["TS_01"],
            "rlnTomoTiltSeriesPixelSize": [TS_PIXEL],
            "rlnTomoTomogramBinning": [BINNING],
            "rlnTomoSizeX": [size_x],
            "rlnTomoSizeY": [192],
            "rlnTomoSizeZ": [128],
            "rlnTomoReconstructedTomogram": ["rec_TS_01.mrc"],
        }
    )
    starfile.write({"global": table}, root / "tomograms.star")
    return root / "tomograms.star"


def _placed(picks: Path, tomograms: Path, **kw: object) -> tuple[str, list[float], list[str]]:
    plan = plan_inputs([str(picks)], 16, VOXEL, tomograms=[str(tomograms)], **kw)
    item = plan.items[0]
    return item.kind, [item.x, item.y, item.z], list(plan.notes)


def test_csv_xyz_are_the_reconstructions_voxels_whatever_the_tomograms_star_binning(tmp_path: Path) -> None:
    """README (Picks): "a CSV's x,y,z are the reconstruction's voxels": a binned tomograms.star
    does not rescale them (its tilt-series pixel states the unit of a STAR's rlnCoordinateX/Y/Z,
    which RELION writes in tilt-series pixels: those are refused as ambiguous without an option).
    --binning and --coordinate-pixel-size rescale both alike, from the table's voxel size."""
    tomograms = _project(tmp_path)
    csv = tmp_path / "picks.csv"
    csv.write_text("tomo,x,y,z\nTS_01,10,20,30\n")
    assert read_picks(csv)[["x", "y", "z"]].to_numpy().tolist() == [[10.0, 20.0, 30.0]]
    assert _placed(csv, tomograms)[:2] == ("tomogram", [10.0, 20.0, 30.0])
    star = tmp_path / "picks.star"
    xyz = {f"rlnCoordinate{a}": [v] for a, v in zip("XYZ", (10.0, 20.0, 30.0), strict=True)}
    starfile.write({"particles": pd.DataFrame({"rlnTomoName": ["TS_01"], **xyz})}, star)
    stated = r"tomograms.star gives rlnTomoTiltSeriesPixelSize 2.5 A \(binning 4\)"
    with pytest.raises(InputError, match=stated):
        _placed(star, tomograms)
    for option in ({"binning": BINNING}, {"coordinate_pixel_size": TS_PIXEL}):
        assert _placed(csv, tomograms, **option)[:2] == ("tomogram", [2.5, 5.0, 7.5])
        assert _placed(star, tomograms, **option)[:2] == ("tomogram", [2.5, 5.0, 7.5])


def test_centred_angstrom_csv_is_placed_as_the_same_star_from_the_tables_centre(tmp_path: Path) -> None:
    """Centred Angstrom picks in a CSV are placed as in a STAR: voxel = table pixel x binning,
    centre = rlnTomoSizeX/Y/Z / binning / 2 (here X 260 / 4 / 2 = 32.5, not the 64-voxel
    reconstruction's 32: RELION's place, README "Picks")."""
    tomograms = _project(tmp_path, size_x=260)
    angst = (100.0, -50.0, 20.0)
    columns = {f"rlnCenteredCoordinate{a}Angst": [v] for a, v in zip("XYZ", angst, strict=True)}
    csv = tmp_path / "centred.csv"
    pd.DataFrame({"rlnTomoName": ["TS_01"], **columns}).to_csv(csv, index=False)
    star = tmp_path / "centred.star"
    starfile.write({"particles": pd.DataFrame({"rlnTomoName": ["TS_01"], **columns})}, star)
    want = [100 / VOXEL + 32.5, -50 / VOXEL + 24.0, 20 / VOXEL + 16.0]
    assert _placed(csv, tomograms)[:2] == ("tomogram", want)
    assert _placed(star, tomograms)[:2] == ("tomogram", want)


def test_relion_pixel_columns_in_a_csv_are_read_as_the_same_star(tmp_path: Path) -> None:
    """A RELION particles.star saved as CSV keeps rlnCoordinateX/Y/Z, which RELION writes in
    tilt-series pixels: with a binned tomograms.star it is refused as ambiguous like the STAR (it was
    cropped as voxels of the reconstruction, 4x too far out here, without a word)."""
    tomograms = _project(tmp_path)
    csv = tmp_path / "particles.csv"
    pd.DataFrame(
        {
            "rlnTomoName": ["TS_01"],
            "rlnCoordinateX": [10.0],
            "rlnCoordinateY": [20.0],
            "rlnCoordinateZ": [30.0],
        }
    ).to_csv(csv, index=False)
    with pytest.raises(
        InputError, match=r"tomograms.star gives rlnTomoTiltSeriesPixelSize 2.5 A \(binning 4\)"
    ):
        _placed(csv, tomograms)
    assert _placed(csv, tomograms, binning=BINNING)[:2] == ("tomogram", [2.5, 5.0, 7.5])
