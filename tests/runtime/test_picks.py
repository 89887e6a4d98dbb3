"""Picks from RELION 5 STAR files and CSV/TSV tables, and RELION per-particle listings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import starfile

from cryoshift.runtime import InputError, read_particle_listing, read_picks
from cryoshift.runtime.picks import centered_to_pixels, outside


def relion5_star(path: Path, particles: pd.DataFrame) -> Path:
    optics = pd.DataFrame(
        {
            "rlnOpticsGroup": [1],
            "rlnOpticsGroupName": ["opticsGroup1"],
            "rlnTomoTiltSeriesPixelSize": [1.35],
            "rlnVoltage": [300.0],
        }
    )
    starfile.write(
        {"general": {"rlnTomoSubTomosAre2DStacks": 1}, "optics": optics, "particles": particles},
        path,
        overwrite=True,
    )
    return path


def test_relion5_pixel_coordinates_keep_other_columns(tmp_path: Path) -> None:
    parts = pd.DataFrame(
        {
            "rlnTomoName": ["TS_01", "TS_01", "TS_02"],
            "rlnCoordinateX": [10.0, 20.5, 30.0],
            "rlnCoordinateY": [1.0, 2.0, 3.0],
            "rlnCoordinateZ": [4.0, 5.0, 6.0],
            "rlnAngleRot": [0.0, 90.0, 180.0],
            "rlnOpticsGroup": [1, 1, 1],
        }
    )
    picks = read_picks(relion5_star(tmp_path / "particles.star", parts))
    assert list(picks.columns[:4]) == ["tomo_name", "x", "y", "z"]
    assert picks["tomo_name"].tolist() == ["TS_01", "TS_01", "TS_02"]
    assert picks["x"].tolist() == [10.0, 20.5, 30.0] and picks["z"].dtype == np.float64
    assert picks["rlnAngleRot"].tolist() == [0.0, 90.0, 180.0]
    assert "rlnCoordinateX" in picks.columns  # originals preserved


def test_relion5_centred_angstrom_coordinates(tmp_path: Path) -> None:
    parts = pd.DataFrame(
        {
            "rlnTomoName": ["a", "b"],
            "rlnCenteredCoordinateXAngst": [0.0, -100.0],
            "rlnCenteredCoordinateYAngst": [50.0, 0.0],
            "rlnCenteredCoordinateZAngst": [-20.0, 10.0],
        }
    )
    path = relion5_star(tmp_path / "c.star", parts)
    with pytest.raises(InputError, match="relative to the tomogram centre: give the pixel size"):
        read_picks(path)
    # tomogram a: 10 A pixels, 40 (Z) x 60 (Y) x 80 (X); b: 5 A pixels, 20 x 30 x 50
    picks = read_picks(
        path,
        pixel_size={"a": 10.0, "b": 5.0},
        tomo_shape=lambda name: {"a": (40, 60, 80), "b": (20, 30, 50)}[name],
    )
    np.testing.assert_allclose(picks[["x", "y", "z"]].to_numpy(), [[40.0, 35.0, 18.0], [5.0, 15.0, 12.0]])
    one = centered_to_pixels(picks.assign(**{c: parts[c] for c in parts.columns[1:]}), 10.0, (40, 60, 80))
    assert one["x"].tolist() == [40.0, 30.0]
    with pytest.raises(InputError, match="outside the tomogram"):
        read_picks(path, pixel_size=10.0, tomo_shape=(40, 60, 10))


def test_star_without_coordinates_names_the_columns(tmp_path: Path) -> None:
    parts = pd.DataFrame({"rlnTomoName": ["a"], "rlnAngleRot": [1.0]})
    path = relion5_star(tmp_path / "nocoord.star", parts)
    with pytest.raises(InputError) as err:
        read_picks(path)
    assert "no coordinate columns: need rlnCoordinateX/Y/Z" in str(err.value)
    assert "found rlnAngleRot, rlnOpticsGroup" in str(err.value)


def test_csv_and_tsv_any_case_with_tomo_column(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text("X,Y,Z,Tomo,score\n1,2,3,t1,0.5\n4.5,5,6,t2,0.9\n")
    picks = read_picks(tmp_path / "p.csv")
    assert picks[["x", "y", "z"]].to_numpy().tolist() == [[1, 2, 3], [4.5, 5, 6]]
    assert picks["tomo_name"].tolist() == ["t1", "t2"] and picks["score"].tolist() == [0.5, 0.9]
    (tmp_path / "p.tsv").write_text("x\ty\tz\n1\t2\t3\n")
    picks = read_picks(tmp_path / "p.tsv")
    assert picks["tomo_name"].tolist() == [""] and picks["x"].tolist() == [1.0]
    (tmp_path / "p.txt").write_text("x y z\n7 8 9\n")
    assert read_picks(tmp_path / "p.txt")["z"].tolist() == [9.0]


def test_trailing_fields_on_every_row_do_not_shift_the_columns(tmp_path: Path) -> None:
    # pandas would take the first column as the index when each row has one field too many,
    # reading x as nothing, y as x and the extra field as z: a silently wrong pick. Which field is
    # extra cannot be known ("12,5,3,5,4,5" under x,y,z is three decimal commas): refused, as classify does
    (tmp_path / "p.csv").write_text("x,y,z\n10,20,30,7\n11,21,31,8\n")
    with pytest.raises(InputError, match=r"every row has 4 fields where the header names 3 \(lines 2, 3\)"):
        read_picks(tmp_path / "p.csv")
    # a listing row with a field too many is an error row (which field is extra is not guessed: an
    # unquoted comma in a path looks the same); every row so: the listing is refused, naming one
    (tmp_path / "l.csv").write_text("path,score\na.mrc,0.5,extra\nb.mrc,0.7,extra\n")
    with pytest.raises(InputError, match=r"line 2: 3 fields where the header names 2 \(and 1 more rows\)"):
        read_particle_listing(tmp_path / "l.csv")


def test_table_errors_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("a,b,c\n1,2,3\n")
    with pytest.raises(InputError, match="no coordinate columns: need x, y, z; found a, b, c"):
        read_picks(tmp_path / "bad.csv")
    (tmp_path / "nan.csv").write_text("x,y,z\n1,2,3\n1,,3\nfoo,2,3\n")
    with pytest.raises(InputError, match=r"2 rows have missing or non-numeric coordinates \(lines 3, 4\)"):
        read_picks(tmp_path / "nan.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(InputError, match="file is empty"):
        read_picks(tmp_path / "empty.csv")
    (tmp_path / "garbage.star").write_bytes(b"\x00\x01\x02 not a star file")
    with pytest.raises(InputError, match=r"garbage\.star"):
        read_picks(tmp_path / "garbage.star")
    (tmp_path / "dir").mkdir()
    with pytest.raises(InputError, match="empty directory"):
        read_picks(tmp_path / "dir")


def test_coordinates_outside_the_tomogram(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text("x,y,z\n1,2,3\n27.4,2,3\n27.5,2,3\n-0.6,0,0\n")
    mask = outside(read_picks(tmp_path / "p.csv"), (20, 24, 28))
    assert mask.tolist() == [False, False, True, True]
    msg = r"2 picks lie outside the tomogram, first row 2: \(x, y, z\) = \(27\.5, 2, 3\)"
    with pytest.raises(InputError, match=msg):
        read_picks(tmp_path / "p.csv", tomo_shape=(20, 24, 28))


def test_particle_listing_resolves_paths_and_slices(tmp_path: Path) -> None:
    sub = tmp_path / "Extract"
    sub.mkdir()
    df = pd.DataFrame(
        {
            "rlnImageName": ["000003@Extract/stack.mrcs", "Extract/p1.mrc", "/abs/p2.mrc"],
            "rlnTomoName": ["a", "a", "b"],
        }
    )
    starfile.write({"particles": df}, tmp_path / "listing.star")
    listing = read_particle_listing(tmp_path / "listing.star")
    assert list(listing.columns[:2]) == ["path", "index"]
    assert listing["index"].tolist() == [2, -1, -1]
    assert listing["path"].tolist() == [str(sub / "stack.mrcs"), str(sub / "p1.mrc"), "/abs/p2.mrc"]
    assert listing["rlnTomoName"].tolist() == ["a", "a", "b"]
    starfile.write({"particles": pd.DataFrame({"rlnCoordinateX": [1.0]})}, tmp_path / "nolist.star")
    with pytest.raises(InputError, match="no rlnImageName column"):
        read_particle_listing(tmp_path / "nolist.star")


def test_pick_table_keeps_bad_rows_with_their_lines_in_batch_work(tmp_path: Path) -> None:
    from cryoshift.runtime.tables import read_pick_table

    path = tmp_path / "p.csv"
    path.write_text("tomo,x,y,z\nTS_01,1,2,3\n\nTS_01,abc,2,3\nTS_01,4,5\nTS_01,7,8,9\n")
    with pytest.raises(InputError, match=r"2 rows have missing or non-numeric coordinates \(lines 4, 5\)"):
        read_pick_table(path)
    table = read_pick_table(path, skip_bad_rows=True)
    assert len(table) == 4 and table.bad_rows.tolist() == [1, 2] and table.bad_lines.tolist() == [4, 5]
    assert table.xyz[3].tolist() == [7.0, 8.0, 9.0]
    path.write_text("tomo,x,y,z\nTS_01,,2,3\n")
    with pytest.raises(InputError, match=r"every row has missing or non-numeric coordinates \(line 2\)"):
        read_pick_table(path, skip_bad_rows=True)


def test_listing_rows_report_slice_zero_and_empty_names(tmp_path: Path) -> None:
    from cryoshift.runtime.picks import listing_rows

    star = tmp_path / "l.star"
    star.write_text('data_\n\nloop_\n_rlnImageName\n# note\n1@s.mrcs\n0@s.mrcs\n""\n2@s.mrcs\n')
    listing, bad = listing_rows(star)
    assert len(listing) == 4 and listing["index"].tolist()[::3] == [0, 1]
    assert bad == {
        1: "line 7: '0@s.mrcs' has slice number 0; RELION numbers slices from 1",
        2: "line 8: empty image name",
    }
    with pytest.raises(InputError, match=r"line 7: '0@s\.mrcs' has slice number 0"):
        read_particle_listing(star)


def test_bad_rows_of_every_kind_are_refused_in_one_wording(tmp_path: Path) -> None:
    """Rows with too many fields were refused in another wording than rows without numbers
    ("3 bad rows; line 5: ..."), naming only the first; now one line names every kind with its lines."""
    from cryoshift.runtime.tables import read_pick_table

    path = tmp_path / "p.csv"
    path.write_text("tomo,x,y,z\nTS_01,1,2,3\nTS_01,abc,2,3\nTS_01,,2,3\nTS_01,4,5,6,7,8\nTS_01,7,8,9\n")
    with pytest.raises(InputError) as err:
        read_pick_table(path)
    assert err.value.reason == (
        "3 rows have missing or non-numeric coordinates (lines 3, 4); "
        "6 fields where the header names 4 (line 5)"
    )
    table = read_pick_table(path, skip_bad_rows=True)
    assert table.bad_rows.tolist() == [1, 2, 3] and table.bad_reasons == [
        "",
        "",
        "6 fields where the header names 4",
    ]


def test_a_csv_pick_table_is_scanned_for_long_lines_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The separator sniffed from a CSV travels with its layout: the whole-file scan for over-long
    lines (check_line_lengths, run by csv_options) ran three times per table (header, rows and the
    field count each sniffed the separator again). Counted by wrapping the real function."""
    import cryoshift.runtime.picks as picks
    from cryoshift.runtime.tables import read_pick_table

    calls: list[Path] = []
    real = picks.check_line_lengths

    def counted(path: Path, *args: object) -> None:
        calls.append(Path(path))
        real(path, *args)

    monkeypatch.setattr(picks, "check_line_lengths", counted)
    path = tmp_path / "p.csv"
    path.write_text("tomo;x;y;z\nTS_01;1,5;2;3\nTS_01;4;5;6;7\n")  # ';': decimal commas
    table = read_pick_table(path, skip_bad_rows=True)
    assert table.xyz[0].tolist() == [1.5, 2.0, 3.0] and table.bad_rows.tolist() == [1]  # too many fields
    assert calls == [path]


def test_star_rows_with_too_many_fields_are_refused_naming_their_line(tmp_path: Path) -> None:
    """read_star_blocks (tomograms.star, listings, results) refused such a table with starfile's
    pandas message ("Expected 4 fields in line 2, saw 5", lines counted from the loop), or, when
    every row had one field too many, with a column-count mismatch; now both name the file's line.
    The repeated-block check comes with the reader's own pass over the file (scan_star)."""
    from cryoshift.runtime.picks import read_star_blocks

    labels = ("rlnTomoName", "rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ")
    head = "data_particles\n\nloop_\n" + "".join(f"_{label} #{i}\n" for i, label in enumerate(labels, 1))
    one = tmp_path / "one.star"
    one.write_text(head + "TS_01 1 2 3\n# note\nTS_01 4 5 6 7\n")
    with pytest.raises(InputError) as err:
        read_star_blocks(one)
    assert err.value.reason == "1 row has 5 fields where the header names 4 (line 10)"
    every = tmp_path / "every.star"
    every.write_text(head + "TS_01 1 2 3 9\nTS_01 4 5 6 9\n")
    with pytest.raises(InputError) as err:
        read_star_blocks(every)
    assert err.value.reason == "2 rows have 5 fields where the header names 4 (lines 8, 9)"
    twice = tmp_path / "twice.star"
    twice.write_text(head + "TS_01 1 2 3\n" + head + "TS_01 4 5 6\n")
    with pytest.raises(InputError, match="two data blocks are named 'particles'"):
        read_star_blocks(twice)


def test_csv_tomogram_names_na_and_nan_are_names(tmp_path: Path) -> None:
    """pandas reads NA, nan, NULL... as missing: tomograms so named lost their picks ("not named").
    Only an empty field is missing; a coordinate written NA is still a bad row."""
    from cryoshift.runtime.tables import read_pick_table

    path = tmp_path / "p.csv"
    path.write_text("tomo,x,y,z\nNA,1,2,3\nnan,4,5,6\nNULL,7,8,9\n,1,1,1\nTS_01,NA,2,3\n")
    table = read_pick_table(path, skip_bad_rows=True)
    assert [table.names[k] for k in table.tomo] == ["NA", "nan", "NULL", "", "TS_01"]
    # the empty name of a table that names its tomograms is that row's error (not a guess)
    assert table.bad_rows.tolist() == [3, 4]


def test_refinement_shifts_are_noted_and_not_applied(tmp_path: Path) -> None:
    """Picks from a refinement carry rlnOriginX/Y/ZAngst; they were ignored without a word, so
    subtomograms were cropped off the refined centre silently. Now planning says so (they are
    still not applied: the coordinates are what the table gives)."""
    from cryoshift.runtime.mrc import write_volume
    from cryoshift.runtime.sources import plan_inputs

    tomo = write_volume(tmp_path / "TS_01.mrc", np.zeros((20, 24, 28), np.float32), voxel_size=10.0)
    star = tmp_path / "refined.star"
    head = "data_particles\n\nloop_\n" + "".join(
        f"_{c} #{i}\n"
        for i, c in enumerate(
            [
                "rlnTomoName",
                "rlnCoordinateX",
                "rlnCoordinateY",
                "rlnCoordinateZ",
                "rlnOriginXAngst",
                "rlnOriginYAngst",
                "rlnOriginZAngst",
            ],
            1,
        )
    )
    for shift, expected in (("-12.5", 1), ("0.0", 0)):
        star.write_text(head + f"TS_01 10 12 9 {shift} 0 0\nTS_01 14 12 9 0 0 0\n")
        plan = plan_inputs([str(star)], 8, 10.0, tomograms=[str(tomo)])
        notes = [n for n in plan.notes if "refinement shifts" in n]
        assert len(notes) == expected, plan.notes
        assert [(it.x, it.y, it.z) for it in plan.items] == [(10, 12, 9), (14, 12, 9)]
    star.write_text(head + "TS_01 10 12 9 -12.5 0 0\nTS_01 14 12 9 0 0 0\n")
    note = next(n for n in plan_inputs([str(star)], 8, 10.0, tomograms=[str(tomo)]).notes if "shifts" in n)
    assert "1 of 2 picks" in note and "12.5 A" in note and "not applied" in note and str(star) in note
