"""Hostile pick tables through the real CLI: unreadable STAR/CSV tables refused in one line, bad rows
(outside the tomogram, a tomogram not given, NaN) turned into errors rows, per-particle listings
with bad references, and bad tomograms behind good picks."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hostile_inputs import (
    VOXEL,
    Capsys,
    assert_error,
    errors_table,
    predictions,
    put,
    raw_mrc,
    run_cli,
    volumes,
)

from cryoshift.runtime.mrc import write_stack, write_volume

# ---------------------------------------------------------------------------------------------
# picks tables


@pytest.fixture()
def tomo(tmp_path: Path) -> Path:
    t = np.random.default_rng(5).normal(0, 1, (24, 40, 32)).astype(np.float32)  # Z, Y, X
    return write_volume(tmp_path / "TS_01.mrc", t, voxel_size=VOXEL)


def _star(path: Path, df: pd.DataFrame) -> Path:
    import starfile

    starfile.write({"particles": df}, path)
    return path


STAR_BAD = {
    "empty.star": lambda p: put(p, ""),
    "whitespace.star": lambda p: put(p, "\n\n   \n"),
    "no_block.star": lambda p: put(p, "# just a comment\nhello world\n"),
    "binary.star": lambda p: put(p, np.random.default_rng(4).bytes(2000)),
    "no_coords.star": lambda p: _star(p, pd.DataFrame({"rlnTomoName": ["TS_01"], "rlnAngleRot": [1.0]})),
    "text_coords.star": lambda p: put(
        p,
        "data_particles\n\nloop_\n_rlnTomoName #1\n_rlnCoordinateX #2\n_rlnCoordinateY #3\n"
        "_rlnCoordinateZ #4\nTS_01 abc def ghi\nTS_01 1 2 3\n",
    ),
    "nan_coords.star": lambda p: put(
        p,
        "data_particles\n\nloop_\n_rlnTomoName #1\n_rlnCoordinateX #2\n_rlnCoordinateY #3\n"
        "_rlnCoordinateZ #4\nTS_01 nan 5 5\nTS_01 8 8 8\n",
    ),
    "dup_columns.star": lambda p: put(
        p,
        "data_particles\n\nloop_\n_rlnTomoName #1\n_rlnCoordinateX #2\n_rlnCoordinateX #3\n"
        "_rlnCoordinateY #4\n_rlnCoordinateZ #5\nTS_01 8 9 8 8\n",
    ),
    "loop_no_rows.star": lambda p: put(
        p,
        "data_particles\n\nloop_\n_rlnTomoName #1\n_rlnCoordinateX #2\n_rlnCoordinateY #3\n"
        "_rlnCoordinateZ #4\n",
    ),
    "ragged.star": lambda p: put(
        p,
        "data_particles\n\nloop_\n_rlnTomoName #1\n_rlnCoordinateX #2\n_rlnCoordinateY #3\n"
        "_rlnCoordinateZ #4\nTS_01 8 8\nTS_01 8 8 8 9 9\n",
    ),
    "missing_x.csv": lambda p: put(p, "tomo,y,z\nTS_01,5,5\n"),
    "header_only.csv": lambda p: put(p, "tomo,x,y,z\n"),
    "empty.csv": lambda p: put(p, ""),
    "binary.csv": lambda p: put(p, b"\xff\xfe\x00\x01" * 300),
    "quote.csv": lambda p: put(p, 'tomo,x,y,z\n"TS_01,5,5,5\n'),
}


@pytest.mark.parametrize("name", sorted(STAR_BAD))
def test_bad_picks_tables_are_refused(
    name: str, model: Path, tomo: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """A table that cannot be read at all refuses the run (or, if readable, bad rows become errors)."""
    path = STAR_BAD[name](tmp_path / name)
    out = tmp_path / "out"
    code, _, err = run_cli(["classify", model, path, "-t", tomo, "-o", out, "-q", "-b", "cpu"], capsys)
    assert "Traceback" not in err, err
    if code == 0:  # readable table: every bad row must be an errors row, nothing silently lost
        n_rows = len(predictions(out)) + len(errors_table(out))
        assert n_rows >= 1 and len(errors_table(out)) >= 1, (name, err)
    else:
        assert_error((code, "", err), path)
    code, _, err = run_cli(["info", path], capsys)
    assert "Traceback" not in err, err
    if code != 0:
        assert_error((code, "", err), path)


def test_picks_outside_the_tomogram_become_error_rows(
    model: Path, tomo: Path, tmp_path: Path, capsys: Capsys
) -> None:
    picks = _star(
        tmp_path / "picks.star",
        pd.DataFrame(
            {
                "rlnTomoName": ["TS_01"] * 4,
                "rlnCoordinateX": [16.0, 500.0, -40.0, 10.0],
                "rlnCoordinateY": [20.0, 10.0, 10.0, 10.0],
                "rlnCoordinateZ": [12.0, 10.0, -1e300, 1e300],
            }
        ),
    )
    out = tmp_path / "out"
    code, _, err = run_cli(["classify", model, picks, "-t", tomo, "-o", out, "-q", "-b", "cpu"], capsys)
    assert code == 0, err
    assert len(predictions(out)) == 1 and len(errors_table(out)) == 3


def test_relion5_centered_picks_outside_become_error_rows(
    model: Path, tomo: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """Centred Angstrom picks outside the tomogram must not refuse the whole table."""
    picks = _star(
        tmp_path / "centered.star",
        pd.DataFrame(
            {
                "rlnTomoName": ["TS_01"] * 3,
                "rlnCenteredCoordinateXAngst": [0.0, 10_000.0, -5.0],
                "rlnCenteredCoordinateYAngst": [0.0, 0.0, 5.0],
                "rlnCenteredCoordinateZAngst": [0.0, 0.0, -10_000.0],
            }
        ),
    )
    out = tmp_path / "out"
    code, _, err = run_cli(["classify", model, picks, "-t", tomo, "-o", out, "-q", "-b", "cpu"], capsys)
    assert code == 0, err
    assert len(predictions(out)) == 1 and len(errors_table(out)) == 2


def test_relion5_centred_picks_of_a_2d_image_or_a_stack_fail_only_their_picks(
    model: Path, tomo: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """Centring needs each tomogram's (Z, Y, X): a 2-D image's header (Y, X) refused the whole
    table ("tomogram size ... must be (Z, Y, X)", naming the picks), good tomogram's picks included.
    Now those picks are error rows naming the tomogram, as for pixel picks."""
    image = raw_mrc(tmp_path / "flat.mrc", nx=32, ny=40, nz=1, ispg=1, data=bytes(32 * 40 * 4))
    stack = write_stack(tmp_path / "stack.mrcs", volumes(2), voxel_size=VOXEL)
    picks = _star(
        tmp_path / "centred.star",
        pd.DataFrame(
            {
                "rlnTomoName": ["TS_01", "flat", "stack"],
                "rlnCenteredCoordinateXAngst": [0.0, 0.0, 0.0],
                "rlnCenteredCoordinateYAngst": [0.0, 0.0, 0.0],
                "rlnCenteredCoordinateZAngst": [0.0, 0.0, 0.0],
            }
        ),
    )
    out = tmp_path / "out"
    argv = ["classify", model, picks, "-t", tomo, "-t", image, "-t", stack, "-o", out, "-q", "-b", "cpu"]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    assert predictions(out)["tomo_name"].tolist() == ["TS_01"]
    assert sorted(errors_table(out)["reason"]) == [
        f"tomogram {image}: is a 2-D image (32x40), expected a 3-D volume",
        f"tomogram {stack}: is a volume stack, not a tomogram",
    ]


def classified(model: Path, picks: Path, tomo: Path, out: Path, capsys: Capsys) -> int:
    """Rows predicted by a classify run of ``picks`` that must succeed."""
    code, _, err = run_cli(["classify", model, picks, "-t", tomo, "-o", out, "-q", "-b", "cpu"], capsys)
    assert code == 0, err
    return len(predictions(out))


def test_semicolon_csv_and_nan_row(model: Path, tomo: Path, tmp_path: Path, capsys: Capsys) -> None:
    semi = tmp_path / "semi.csv"
    semi.write_text("tomo;x;y;z\nTS_01;16;20;12\nTS_01;10,5;10.5;10\n")  # decimal comma (and point)
    assert classified(model, semi, tomo, tmp_path / "out", capsys) == 2


def test_picks_of_a_tomogram_not_given_are_error_rows(
    model: Path, tomo: Path, tmp_path: Path, capsys: Capsys
) -> None:
    picks = _star(
        tmp_path / "mixed.star",
        pd.DataFrame(
            {
                "rlnTomoName": ["TS_01", "TS_99", "TS_01", "TS_99"],
                "rlnCoordinateX": [16.0, 5.0, 10.0, 5.0],
                "rlnCoordinateY": [20.0, 5.0, 10.0, 5.0],
                "rlnCoordinateZ": [12.0, 5.0, 10.0, 5.0],
            }
        ),
    )
    out = tmp_path / "out"
    code, _, err = run_cli(["classify", model, picks, "-t", tomo, "-o", out, "-q", "-b", "cpu"], capsys)
    assert code == 0, err
    errs = errors_table(out)
    assert len(predictions(out)) == 2 and len(errs) == 2 and errs["id"].nunique() == 2, errs
    assert all("TS_99" in r for r in errs["reason"])
    only_missing = _star(
        tmp_path / "missing.star",
        pd.DataFrame(
            {
                "rlnTomoName": ["TS_99"],
                "rlnCoordinateX": [5.0],
                "rlnCoordinateY": [5.0],
                "rlnCoordinateZ": [5.0],
            }
        ),
    )
    result = run_cli(
        ["classify", model, only_missing, "-t", tomo, "-o", tmp_path / "o2", "-q", "-b", "cpu"], capsys
    )
    assert "TS_99" in assert_error(result, only_missing)


_LOOP = "loop_\n_rlnTomoName #1\n_rlnCoordinateX #2\n_rlnCoordinateY #3\n_rlnCoordinateZ #4\n"


def test_star_picks_with_a_byte_order_mark_are_read(
    model: Path, tomo: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """A UTF-8 BOM before data_ used to give 'no data blocks found; not a STAR file'."""
    picks = put(
        tmp_path / "bom.star", "\ufeffdata_particles\n\n" + _LOOP + "TS_01 10 10 10\nTS_01 12 12 12\n"
    )
    assert classified(model, picks, tomo, tmp_path / "out", capsys) == 2


def test_ambiguous_or_unusable_star_blocks_are_refused(
    model: Path, tomo: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """Two coordinate blocks and no data_particles: which picks are meant? It used to take the first
    silently. Coordinates as key-value pairs: the message used to list the very columns it 'needed'."""
    two = put(
        tmp_path / "two.star",
        "data_a\n\n" + _LOOP + "TS_01 10 10 10\n\ndata_b\n\n" + _LOOP + "TS_01 12 12 12\n",
    )
    kv = put(
        tmp_path / "kv.star",
        "data_particles\n\n_rlnTomoName TS_01\n_rlnCoordinateX 10\n_rlnCoordinateY 10\n_rlnCoordinateZ 10\n",
    )
    listing = put(
        tmp_path / "listing.star",
        f"data_a\n\nloop_\n_rlnImageName #1\n{tomo}\n\ndata_b\n\nloop_\n_rlnImageName #1\n{tomo}\n",
    )
    for path, words in ((two, "data_a, data_b"), (kv, "key-value"), (listing, "data_a, data_b")):
        for argv in (
            ["info", path],
            ["classify", model, path, "-t", tomo, "-o", tmp_path / "o", "-q", "-b", "cpu"],
        ):
            assert words in assert_error(run_cli(argv, capsys), path)


def test_true_false_coordinates_are_not_numbers(
    model: Path, tomo: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """A coordinate column of True/False used to become 1.0/0.0 and be classified."""
    picks = put(tmp_path / "bool.csv", "tomo,x,y,z\nTS_01,True,10,10\nTS_01,False,12,12\n")
    line = assert_error(
        run_cli(["classify", model, picks, "-t", tomo, "-o", tmp_path / "o", "-q", "-b", "cpu"], capsys),
        picks,
    )
    assert "non-numeric" in line


# ---------------------------------------------------------------------------------------------
# per-particle listings (rlnImageName)


def test_listing_with_bad_references(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    write_stack(tmp_path / "stack.mrcs", volumes(3), voxel_size=VOXEL)
    listing = _star(
        tmp_path / "listing.star",
        pd.DataFrame(
            {
                "rlnImageName": [
                    "000001@stack.mrcs",
                    "000009@stack.mrcs",
                    "abc@stack.mrcs",
                    "missing.mrc",
                    "000002@nope.mrcs",
                    "000003@stack.mrcs",
                ]
            }
        ),
    )
    out = tmp_path / "out"
    code, _, err = run_cli(["classify", model, listing, "-o", out, "-q", "-b", "cpu"], capsys)
    assert code == 0, err
    assert len(predictions(out)) == 2 and len(errors_table(out)) == 4


def test_listing_slice_zero_is_refused(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    write_stack(tmp_path / "stack.mrcs", volumes(2), voxel_size=VOXEL)
    listing = _star(tmp_path / "l0.star", pd.DataFrame({"rlnImageName": ["000000@stack.mrcs"]}))
    code, _, err = run_cli(["classify", model, listing, "-o", tmp_path / "o", "-q", "-b", "cpu"], capsys)
    assert "Traceback" not in err
    if code != 0:
        assert_error((code, "", err), listing)


def test_tomograms_without_a_picks_table_are_refused(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    """`-t TOMO` beside a listing of subtomograms or a stack was dropped without a word (only picks
    are cropped from tomograms): refused in one line. Beside a picks table it is used as before."""
    stack = write_stack(tmp_path / "stack.mrcs", volumes(2), voxel_size=VOXEL)
    listing = _star(tmp_path / "listing.star", pd.DataFrame({"rlnImageName": ["000001@stack.mrcs"]}))
    tomo = tmp_path / "TS_01.mrc"
    write_volume(tomo, np.random.default_rng(1).normal(size=(32, 32, 32)).astype(np.float32), VOXEL)
    for given in (listing, stack):
        argv = ["classify", model, given, "-o", tmp_path / "o", "-q", "-b", "cpu", "-t", tomo]
        line = assert_error(run_cli(argv, capsys), given)
        assert "--tomograms only applies to a table of picks" in line
        assert not (tmp_path / "o" / "predictions.csv").exists()
    picks = tmp_path / "TS_01.csv"
    picks.write_text("x,y,z\n16,16,16\n")
    argv = ["classify", model, stack, picks, "-o", tmp_path / "ok", "-q", "-b", "cpu", "-t", tomo]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    assert len(predictions(tmp_path / "ok")) == 3


# ---------------------------------------------------------------------------------------------
# hostile tomograms behind picks


@pytest.mark.parametrize("kind", ["truncated", "image2d", "stack", "garbage", "nan_patch", "loop"])
def test_hostile_tomogram_behind_picks(kind: str, model: Path, tmp_path: Path, capsys: Capsys) -> None:
    """A bad tomogram refuses the run naming it, or (NaN patch) only its affected picks fail."""
    tomo = tmp_path / "TS_01.mrc"
    t = np.random.default_rng(5).normal(0, 1, (24, 40, 32)).astype(np.float32)
    if kind == "truncated":
        raw_mrc(tomo, nx=32, ny=40, nz=24, data=t.tobytes()[:20000])
    elif kind == "image2d":
        write_volume(tomo, t[:1], voxel_size=VOXEL)
        raw_mrc(tomo, nx=32, ny=40, nz=1, data=t[0].tobytes())
    elif kind == "stack":
        write_stack(tomo, volumes(2), voxel_size=VOXEL)
    elif kind == "garbage":
        tomo.write_bytes(np.random.default_rng(3).bytes(5000))
    elif kind == "nan_patch":
        t[:8, :8, :8] = np.nan
        write_volume(tomo, t, voxel_size=VOXEL)
    else:
        os.symlink(tomo, tomo)
    picks = _star(
        tmp_path / "picks.star",
        pd.DataFrame(
            {
                "rlnTomoName": ["TS_01", "TS_01"],
                "rlnCoordinateX": [4.0, 20.0],
                "rlnCoordinateY": [4.0, 24.0],
                "rlnCoordinateZ": [4.0, 14.0],
            }
        ),
    )
    out = tmp_path / "out"
    result = run_cli(["classify", model, picks, "-t", tomo, "-o", out, "-q", "-b", "cpu"], capsys)
    if kind == "nan_patch":
        assert result[0] == 0, result[2]
        assert len(predictions(out)) == 1 and len(errors_table(out)) == 1
    else:
        assert_error(result, tomo)


# ---------------------------------------------------------------------------------------------
# `report` of results and runs that are not what it expects


def test_report_of_foreign_or_broken_results_is_refused(tmp_path: Path, capsys: Capsys) -> None:
    """A CSV of other columns, a corrupt manifest.json or run files: KeyError/JSONDecodeError
    tracebacks before."""
    pytest.importorskip("matplotlib")
    cases: dict[str, tuple[dict[str, str], str]] = {
        "foreign": ({"predictions.csv": "foo,bar\n1,2\n"}, "predictions.csv"),
        "no_shift": ({"predictions.csv": "id,class_name,confidence\na,x,0.5\n"}, "predictions.csv"),
        "bad_manifest": (
            {
                "predictions.csv": "id,class_name,confidence,shift_score\na,x,0.5,1.0\n",
                "manifest.json": "garbage{",
            },
            "manifest.json",
        ),
        "list_manifest": (
            {
                "predictions.csv": "id,class_name,confidence,shift_score\na,x,0.5,1.0\n",
                "manifest.json": "[1]",
            },
            "manifest.json",
        ),
        "run_bad_selection": (
            {"metrics.csv": "epoch,loss\n0,1.0\n", "selection.json": "{bad"},
            "selection.json",
        ),
        "run_no_epoch": ({"metrics.csv": "foo,loss\nx,1.0\n"}, "metrics.csv"),
        "run_empty_metrics": ({"metrics.csv": ""}, "metrics.csv"),
    }
    for name, (files, culprit) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        for fname, text in files.items():
            put(folder / fname, text)
        assert_error(run_cli(["report", folder], capsys), folder / culprit)


def test_report_refuses_a_manifest_of_wrong_types(tmp_path: Path, capsys: Capsys) -> None:
    """An edited or foreign manifest.json beside good predictions: a list as ``summary``, text as
    a count or a number as ``class_names`` were AttributeError/ValueError/TypeError tracebacks; a
    features.npy of text was one too (np.isfinite)."""
    pytest.importorskip("matplotlib")
    import json

    preds = "id,class_name,confidence,shift_score\na,x,0.5,1.0\nb,x,0.7,1.0\nc,y,0.9,2.0\n"
    for i, manifest in enumerate(
        (
            {"summary": [1]},
            {"model": "m.onnx"},
            {"summary": {"total_errors": "none"}},
            {"model": {"class_names": 3}},
            {"tomograms": {"TS_01": [1, 2]}},
        )
    ):
        folder = tmp_path / f"r{i}"
        folder.mkdir()
        put(folder / "predictions.csv", preds)
        put(folder / "manifest.json", json.dumps(manifest))
        line = assert_error(run_cli(["report", folder], capsys), folder / "manifest.json")
        assert "not a cryoshift classify manifest" in line, line
    folder = tmp_path / "features"
    folder.mkdir()
    put(folder / "predictions.csv", preds)
    np.save(folder / "features.npy", np.array([["a", "b"]] * 3))
    code, _, err = run_cli(["report", folder], capsys)
    assert code == 0, err
    assert "features must be numbers" in (folder / "report.html").read_text()


# ---------------------------------------------------------------------------------------------
# tables that used to be read silently wrong


def test_repeated_star_block_is_refused_everywhere(
    model: Path, tomo: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """``cat a.star b.star``: two data_particles blocks; the second (3 of 5 picks) vanished silently
    from classify and info, and starfile (training, evaluate) kept only the last one."""
    block = "data_particles\n\n" + _LOOP
    joined = put(tmp_path / "cat.star", block + "TS_01 10 10 10\nTS_01 12 12 12\n" + block + "TS_01 8 8 8\n")
    for argv in (
        ["info", joined],
        ["classify", model, joined, "-t", tomo, "-o", tmp_path / "o", "-q", "-b", "cpu"],
    ):
        line = assert_error(run_cli(argv, capsys), joined)
        assert "two data blocks are named 'particles'" in line and "lines 1 and 10" in line, line
    from cryoshift.runtime.errors import InputError
    from cryoshift.runtime.picks import read_picks, read_star_blocks

    for read in (read_star_blocks, read_picks):
        with pytest.raises(InputError, match="two data blocks"):
            read(joined)


def test_duplicate_csv_column_is_refused(model: Path, tomo: Path, tmp_path: Path, capsys: Capsys) -> None:
    """A second ``x`` became ``x.1`` and the first was used; the same table as STAR was refused."""
    for name, text in (
        ("dup.csv", "tomo,x,y,z,x\nTS_01,10,10,10,5\n"),
        ("case.csv", "tomo,x,y,z,X\nTS_01,10,10,10,5\n"),
    ):
        path = put(tmp_path / name, text)
        for argv in (
            ["info", path],
            ["classify", model, path, "-t", tomo, "-o", tmp_path / "o", "-q", "-b", "cpu"],
        ):
            assert "duplicate column names" in assert_error(run_cli(argv, capsys), path)


def test_two_names_for_one_csv_column_are_refused(
    model: Path, tomo: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """``x`` beside another ``rlnCoordinateX`` (or ``tomo`` beside ``tomo_name``): the first alias
    found was read without a word, cropping elsewhere or from another tomogram."""
    for name, text, both in (
        (
            "xx.csv",
            "tomo,x,y,z,rlnCoordinateX,rlnCoordinateY,rlnCoordinateZ\nTS_01,10,10,10,5,6,7\n",
            "x and rlnCoordinateX",
        ),
        ("tt.csv", "tomo,tomo_name,x,y,z\nTS_01,TS_02,10,10,10\n", "tomo_name and tomo"),
    ):
        path = put(tmp_path / name, text)
        for argv in (
            ["info", path],
            ["classify", model, path, "-t", tomo, "-o", tmp_path / "o", "-q", "-b", "cpu"],
        ):
            line = assert_error(run_cli(argv, capsys), path)
            assert f"columns {both} are two names for one column" in line, line
    # RELION's own pair is not a guess: rlnTomoName wins, as in a STAR file
    relion = put(
        tmp_path / "relion.csv", f"rlnTomoName,rlnMicrographName,x,y,z\n{tomo.stem},other,16,16,16\n"
    )
    argv = ["classify", model, relion, "-t", tomo, "-o", tmp_path / "r", "-q", "-b", "cpu"]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    assert len(predictions(tmp_path / "r")) == 1


def test_info_describes_a_csv_listing_of_paths_as_classify_reads_it(tmp_path: Path, capsys: Capsys) -> None:
    """classify reads a CSV with a ``path`` column as a listing; info said "no coordinate columns"."""
    write_volume(tmp_path / "a.mrc", volumes(1)[0], voxel_size=VOXEL)
    listing = put(tmp_path / "files.csv", "path\na.mrc\n")
    code, out, err = run_cli(["info", listing], capsys)
    assert code == 0, err
    assert "subtomogram listing" in out


def test_csv_with_blank_lines_before_its_header_is_read(
    model: Path, tomo: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """The separator was sniffed from the first line even when blank: "no coordinate columns"."""
    path = put(tmp_path / "blank.csv", "\n\ntomo,x,y,z\nTS_01,10,10,10\nTS_01,12,12,12\n")
    assert classified(model, path, tomo, tmp_path / "o", capsys) == 2
    assert len(errors_table(tmp_path / "o")) == 0


def test_rows_with_too_many_fields_are_error_rows(
    model: Path, tomo: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """Fields past the header's last column were dropped and the row classified: now an error row
    naming its line and both counts; the good rows are still classified."""
    star = put(
        tmp_path / "long.star",
        "data_particles\n\n" + _LOOP + "TS_01 10 10 10\nTS_01 12 12 12 7\n# note\nTS_01 14 14 14 # ok\n",
    )
    csv = put(tmp_path / "long.csv", 'tomo,x,y,z\nTS_01,10,10,10\nTS_01,12,12,12,1,2\nTS_01,"14",14,14\n')
    for path, line, fields in ((star, 9, 5), (csv, 3, 6)):
        out = tmp_path / f"o_{path.suffix[1:]}"
        assert classified(model, path, tomo, out, capsys) == 2
        reasons = errors_table(out)["reason"].tolist()
        assert reasons == [f"line {line}: {fields} fields where the header names 4 (row skipped)"], reasons
        refusal = assert_error(run_cli(["info", path], capsys), path)  # info refuses, naming it
        assert f"1 row has {fields} fields where the header names 4 (line {line})" in refusal


def test_pixel_and_centred_coordinates_must_agree(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    """Both coordinate kinds present: the pixels were used, the Angstrom ignored. Rows where they
    disagree by more than a voxel fail; a table where every row disagrees is refused."""
    t = np.random.default_rng(6).normal(0, 1, (40, 60, 60)).astype(np.float32)
    tomo = write_volume(tmp_path / "TS_01.mrc", t, voxel_size=VOXEL)  # centre (30, 30, 20) voxels
    header = _LOOP + "".join(
        f"_rlnCentered{a} #{i}\n"
        for i, a in enumerate(("CoordinateXAngst", "CoordinateYAngst", "CoordinateZAngst"), start=5)
    )
    mixed = put(
        tmp_path / "mixed.star",
        "data_particles\n\n"
        + header
        + "TS_01 30 30 20 0 0 0\nTS_01 30 30 20 100 100 100\nTS_01 25 25 25 -50 -50 50.4\n",
    )
    out = tmp_path / "o"
    assert classified(model, mixed, tomo, out, capsys) == 2
    (reason,) = errors_table(out)["reason"].tolist()
    assert (
        reason.startswith("line 12: pixel coordinates (30.0, 30.0, 20.0)") and "(40.0, 40.0, 30.0" in reason
    )
    wrong = put(tmp_path / "wrong.star", "data_particles\n\n" + header + "TS_01 30 30 20 100 100 100\n")
    argv = ["classify", model, wrong, "-t", tomo, "-o", tmp_path / "o2", "-q", "-b", "cpu"]
    assert "disagree" in assert_error(run_cli(argv, capsys), wrong)


def test_two_tomograms_of_one_name_fail_only_their_picks(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    """Two --tomograms files named 'dup' refused the whole run although no pick used that name;
    now only the picks of 'dup' fail, naming both files (as the README says)."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    t = np.random.default_rng(7).normal(0, 1, (24, 40, 32)).astype(np.float32)
    for p in ("a/good.mrc", "a/dup.mrc", "b/dup.mrc"):
        write_volume(tmp_path / p, t, voxel_size=VOXEL)
    picks = put(tmp_path / "p.csv", "tomo,x,y,z\ngood,16,20,12\ndup,16,20,12\n")
    out = tmp_path / "o"
    argv = [
        "classify",
        model,
        picks,
        "-t",
        tmp_path / "a",
        "-t",
        tmp_path / "b",
        "-o",
        out,
        "-q",
        "-b",
        "cpu",
    ]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    assert predictions(out)["tomo_name"].tolist() == ["good"]
    (reason,) = errors_table(out)["reason"].tolist()
    assert (
        "'dup' is ambiguous" in reason
        and str(tmp_path / "a/dup.mrc") in reason
        and str(tmp_path / "b/dup.mrc") in reason
    )
    only_dup = put(tmp_path / "d.csv", "tomo,x,y,z\ndup,16,20,12\n")
    argv[2] = only_dup
    assert "ambiguous" in assert_error(run_cli(argv, capsys), only_dup)


@pytest.mark.parametrize("encoding", ["utf-16", "cr_only"])
def test_star_of_utf16_or_cr_only_lines_names_the_encoding(
    encoding: str, model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """A STAR saved as UTF-16 or with classic-Mac CR line endings was "no data blocks found; not a
    STAR file": the blocks are there, the bytes around them are what to fix."""
    text = "data_particles\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n_rlnCoordinateZ #3\n16 16 16\n"
    path = tmp_path / "picks.star"
    if encoding == "utf-16":
        path.write_bytes(text.encode("utf-16"))
        words = "the file is UTF-16 text; save it as UTF-8"
    else:
        path.write_bytes(text.replace("\n", "\r").encode())
        words = "lines end in CR only (classic Mac)"
    for argv in (["info", path], ["classify", model, path, "-o", tmp_path / "o", "-q", "-b", "cpu"]):
        line = assert_error(run_cli(argv, capsys), path)
        assert words in line, line
