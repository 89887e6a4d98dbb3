"""What the files say about pixel picks' scale, checked against the options and the tomograms
(the scientific-convention probe's findings 1, 5, 6, 7 and 8).

Each case gave exit 0 and crops at the wrong place: ``--binning`` / ``--coordinate-pixel-size``
contradicting data_optics or tomograms.star, picks of an optics group data_optics does not list,
a stated pixel size beside a header without one, pixel picks against a binned tomograms.star
entry, an axis swap diagnosed as a binning, and a relative path found as two different files.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from hostile_inputs import VOXEL, Capsys, assert_error, errors_table, predictions, put, run_cli
from relion5_project import reconstruction, star_loop, write_project

from cryoshift.runtime.mrc import write_stack

SHAPE = (24, 48, 40)  # Z, Y, X voxels of each tomogram
PICKS = [(20.0, 24.0, 12.0), (12.0, 30.0, 10.0)]  # (x, y, z) voxels, inside every tomogram
PIXEL_LABELS = ("rlnTomoName", "rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ")


def _classify(model: Path, picks: Path, tomograms: Path, out: Path, *options: object) -> list[object]:
    return ["classify", model, picks, "-t", tomograms, "-o", out, "-q", "-b", "cpu", *options]


def _pixel_picks(path: Path, factor: float, optics: str = "", groups: list[str] | None = None) -> Path:
    """PICKS of TS_01 as rlnCoordinateX/Y/Z written ``factor`` times the voxels, after ``optics``
    (a data_optics block), each in the optics group ``groups`` gives it (no column without)."""
    labels = PIXEL_LABELS + (("rlnOpticsGroup",) if groups else ())
    rows = [
        f"TS_01 {x * factor:g} {y * factor:g} {z * factor:g}" + (f" {groups[i]}" if groups else "")
        for i, (x, y, z) in enumerate(PICKS)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    return put(path, optics + star_loop("particles", labels, rows))


def _optics(*sizes: str) -> str:
    """A data_optics block stating ``sizes`` (A, as written) for groups 1, 2, ..."""
    rows = [f"{i} {s}" for i, s in enumerate(sizes, 1)]
    return star_loop("optics", ("rlnOpticsGroup", "rlnTomoTiltSeriesPixelSize"), rows)


def _tomogram(folder: Path, voxel: float = VOXEL) -> Path:
    """A folder holding TS_01.mrc, SHAPE voxels of ``voxel`` A (0: a header without a voxel size)."""
    path = reconstruction(folder / "TS_01.mrc", SHAPE, voxel or VOXEL)
    if not voxel:
        raw = bytearray(path.read_bytes())
        struct.pack_into("<3f", raw, 40, 0.0, 0.0, 0.0)  # cella: no voxel size
        path.write_bytes(bytes(raw))
    return folder


def _placed(out: Path) -> list[tuple[float, float, float]]:
    """The (x, y, z) voxels each classified pick was cropped at."""
    return [tuple(p) for p in predictions(out)[["x", "y", "z"]].to_numpy(dtype=float).tolist()]


def _assert_all_placed(
    model: Path, picks: Path, tomograms: Path, out: Path, capsys: Capsys, *options: object
) -> None:
    """classify exits 0 and crops every pick where it is (the reading the files and options give)."""
    code, _, err = run_cli(_classify(model, picks, tomograms, out, *options), capsys)
    assert code == 0, err
    assert _placed(out) == PICKS


# -- 1: the options against what the files state ---------------------------------------------------


@pytest.mark.parametrize("option", [("--binning", 4), ("--coordinate-pixel-size", 2.5)])
def test_option_contradicting_data_optics_is_refused(
    model: Path, tmp_path: Path, capsys: Capsys, option: tuple[str, float]
) -> None:
    """data_optics says the picks are 5 A pixels of a 10 A tomogram (bin 2): --binning 4 (or
    --coordinate-pixel-size 2.5) cropped every pick at half its place, exit 0."""
    tomos = _tomogram(tmp_path / "tomos")
    star = _pixel_picks(tmp_path / "p.star", 2.0, _optics("5.0"))
    line = assert_error(run_cli(_classify(model, star, tomos, tmp_path / "o", *option), capsys), star)
    flag, value = option
    assert f"{flag} {value:g} reads the picks of tomogram 'TS_01' as 2.5 A pixels" in line, line
    assert "data_optics gives rlnTomoTiltSeriesPixelSize 5 A" in line, line
    assert "the tomogram's voxels are 10 A" in line, line


@pytest.mark.parametrize("option", [("--binning", 2), ("--coordinate-pixel-size", 5)])
def test_option_agreeing_with_data_optics_is_used(
    model: Path, tmp_path: Path, capsys: Capsys, option: tuple[str, float]
) -> None:
    """The reading data_optics states (5 A pixels of 10 A voxels) crops where the picks are."""
    tomos = _tomogram(tmp_path / "tomos")
    star = _pixel_picks(tmp_path / "p.star", 2.0, _optics("5.0"))
    _assert_all_placed(model, star, tomos, tmp_path / "o", capsys, *option)


def test_binning_one_reads_stated_pixels_as_voxels(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    """--binning 1 (the tomogram's voxels: the other reading the refusal offers) is no contradiction."""
    tomos = _tomogram(tmp_path / "tomos")
    star = _pixel_picks(tmp_path / "p.star", 1.0, _optics("5.0"))
    _assert_all_placed(model, star, tomos, tmp_path / "o", capsys, "--binning", 1)


def _binned_project(root: Path, binning: int) -> tuple[Path, Path]:
    """(tomograms.star of TS_01 at 10 A from a 10/``binning`` A tilt series, its folder)."""
    tomograms, _ = write_project(root, {"TS_01": PICKS}, SHAPE, VOXEL, binning=binning)
    return tomograms, root


def test_option_contradicting_tomograms_star_is_refused(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    """tomograms.star: 5 A tilt series x binning 2 = the 10 A reconstruction; --binning 4 on its
    unbinned pixel picks was applied without a look at the table, every pick at half its place."""
    tomograms, root = _binned_project(tmp_path / "relion", 2)
    star = _pixel_picks(root / "picks.star", 2.0)
    line = assert_error(
        run_cli(_classify(model, star, tomograms, tmp_path / "o", "--binning", 4), capsys), star
    )
    assert "--binning 4 reads the picks of tomogram 'TS_01' as 2.5 A pixels" in line, line
    assert "tomograms.star gives rlnTomoTiltSeriesPixelSize 5 A (binning 2)" in line, line
    _assert_all_placed(model, star, tomograms, tmp_path / "b2", capsys, "--binning", 2)


def test_options_stay_as_given_where_the_files_state_nothing(
    model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """No data_optics, no tomograms.star: --binning 3 is the only word on the scale, and is used."""
    tomos = _tomogram(tmp_path / "tomos")
    star = _pixel_picks(tmp_path / "p.star", 3.0)
    _assert_all_placed(model, star, tomos, tmp_path / "o", capsys, "--binning", 3)


# -- 6: pixel picks against a binned tomograms.star entry ------------------------------------------


def test_pixel_picks_of_a_binned_tomograms_star_entry_offer_both_readings(
    model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """tomograms.star says the 10 A reconstruction is a 5 A tilt series binned 2: its pixel picks
    were read as reconstruction voxels without a word (RELION 4's unbinned ones then 2x off), while
    data_optics saying the same was refused. Now refused alike, offering both readings."""
    tomograms, root = _binned_project(tmp_path / "relion", 2)
    star = _pixel_picks(root / "picks.star", 1.0)
    line = assert_error(run_cli(_classify(model, star, tomograms, tmp_path / "o"), capsys), star)
    assert "tomograms.star gives rlnTomoTiltSeriesPixelSize 5 A (binning 2)" in line, line
    assert "--coordinate-pixel-size 5 if they are tilt-series pixels" in line, line
    assert "--coordinate-pixel-size 10 (or --binning 1) if they are the tomogram's voxels" in line, line


def test_pixel_picks_of_an_unbinned_tomograms_star_entry_are_voxels(
    model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """Binning 1: the tilt-series pixel is the voxel, nothing to guess."""
    tomograms, root = _binned_project(tmp_path / "relion", 1)
    star = _pixel_picks(root / "picks.star", 1.0)
    _assert_all_placed(model, star, tomograms, tmp_path / "o", capsys)


# -- 5: optics groups data_optics does not list; a header without a voxel size ---------------------


def test_picks_of_an_optics_group_missing_from_data_optics_are_error_rows(
    model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """data_optics lists groups 1 (10 A, the voxels) and 2; the second pick says group 3: it was
    cropped as voxels without a check. Now an error row naming the group; group 1 is classified."""
    tomos = _tomogram(tmp_path / "tomos")
    star = _pixel_picks(tmp_path / "p.star", 1.0, _optics("10.0", "5.0"), groups=["1", "3"])
    out = tmp_path / "o"
    code, _, err = run_cli(_classify(model, star, tomos, out), capsys)
    assert code == 0, err
    assert _placed(out) == PICKS[:1]
    (reason,) = errors_table(out)["reason"]
    assert "optics group 3, which data_optics does not list (it lists group 1, 2)" in reason, reason


def test_every_pick_of_a_missing_optics_group_refuses_the_table(
    model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    tomos = _tomogram(tmp_path / "tomos")
    star = _pixel_picks(tmp_path / "p.star", 1.0, _optics("10.0"), groups=["3", "3"])
    line = assert_error(run_cli(_classify(model, star, tomos, tmp_path / "o"), capsys), star)
    assert "every row has optics group 3, which data_optics does not list" in line, line


def test_stated_pixel_size_beside_a_header_without_one_is_said(
    model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """The header has no voxel size (the tomogram is read in the model's 10 A voxels) and
    data_optics says 5 A pixels: the picks were cropped as voxels, exit 0, with only a "no usable
    voxel size" note. Now refused offering both readings; --binning 1 says they are voxels."""
    tomos = _tomogram(tmp_path / "tomos", voxel=0.0)
    star = _pixel_picks(tmp_path / "p.star", 1.0, _optics("5.0"))
    line = assert_error(run_cli(_classify(model, star, tomos, tmp_path / "o"), capsys), star)
    assert "data_optics gives rlnTomoTiltSeriesPixelSize 5 A" in line, line
    assert "header has no usable voxel size (it is read in the model's 10 A voxels)" in line, line
    assert "--binning 2 if they are tilt-series pixels" in line, line
    _assert_all_placed(model, star, tomos, tmp_path / "b1", capsys, "--binning", 1)


def test_stated_pixel_size_of_the_models_voxels_needs_no_header(
    model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    tomos = _tomogram(tmp_path / "tomos", voxel=0.0)
    star = _pixel_picks(tmp_path / "p.star", 1.0, _optics("10.0"))
    _assert_all_placed(model, star, tomos, tmp_path / "o", capsys)


# -- 7: the outside hint offers a binning only for a scale alike on every axis ---------------------


def test_axis_swap_is_not_offered_as_a_binning() -> None:
    """A reconstruction with Y and Z swapped (X 100, Y 30, Z 90 voxels for picks of an X 100,
    Y 90, Z 30 frame): the largest ratio (3 on Y) was offered as "--binning 3", which cropped
    every pick elsewhere. Now each axis's reach is shown and no binning offered."""
    from cryoshift.runtime.tomograms import outside_hint_arrays

    rng = np.random.default_rng(0)
    xyz = rng.uniform(0, 1, (40, 3)) * np.array([100.0, 90.0, 30.0])
    hint = outside_hint_arrays("p.star", xyz, np.zeros(40, np.int32), {0: (90, 30, 100)})
    assert hint is not None and "which no one binning explains" in hint, hint
    assert "axis order" in hint and "--binning" not in hint, hint
    assert "X 0.98x, Y 2.9x, Z 0.33x" in hint, hint  # about 1, 3 and 1/3: not one scale


# -- 8: a relative path found as two different files -----------------------------------------------


def _two_copies(root: Path, rec: str) -> None:
    """``rec`` next to ``root``'s tomograms.star and, another file, in the working folder."""
    reconstruction(root / "cwd" / rec, SHAPE, VOXEL, seed=7)


def test_reconstruction_found_next_to_the_table_and_in_the_working_folder(
    model: Path, tmp_path: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tomograms.star's Tomograms/job006/tomograms/rec_TS_01.mrc existed in the project and in the
    working folder (another file): the first found was cropped from without a word."""
    tomograms, particles = write_project(tmp_path / "relion", {"TS_01": PICKS}, SHAPE, VOXEL)
    rec = "Tomograms/job006/tomograms/rec_TS_01.mrc"
    _two_copies(tmp_path, rec)
    monkeypatch.chdir(tmp_path / "cwd")
    line = assert_error(run_cli(_classify(model, particles, tomograms, tmp_path / "o"), capsys), tomograms)
    assert f"{tmp_path / 'relion' / rec} and {tmp_path / 'cwd' / rec}, two different files" in line, line
    monkeypatch.chdir(tmp_path / "relion")  # RELION's way: run from the project, one file
    code, _, err = run_cli(_classify(model, particles, tomograms, tmp_path / "ok"), capsys)
    assert code == 0, err


def test_listed_stack_found_next_to_the_listing_and_in_the_working_folder(
    model: Path, tmp_path: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sub/list.star names 000001@stk.mrcs; sub/stk.mrcs and ./stk.mrcs are different stacks."""
    rng = np.random.default_rng(0)
    for folder in (tmp_path / "sub", tmp_path):
        folder.mkdir(exist_ok=True)
        write_stack(folder / "stk.mrcs", rng.normal(size=(2, 16, 16, 16)).astype(np.float32), VOXEL)
    listing = put(
        tmp_path / "sub" / "list.star", star_loop("particles", ("rlnImageName",), ["000001@stk.mrcs"])
    )
    monkeypatch.chdir(tmp_path)
    argv = ["classify", model, listing, "-o", tmp_path / "o", "-q", "-b", "cpu"]
    line = assert_error(run_cli(argv, capsys), listing)
    assert f"{tmp_path / 'sub' / 'stk.mrcs'} and {tmp_path / 'stk.mrcs'}, two different files" in line, line


def test_only_the_rows_of_an_ambiguous_listed_name_fail(
    model: Path, tmp_path: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listing's other rows are classified; the rows of the name found twice are error rows."""
    rng = np.random.default_rng(0)
    for folder in (tmp_path / "sub", tmp_path):
        folder.mkdir(exist_ok=True)
        write_stack(folder / "stk.mrcs", rng.normal(size=(2, 16, 16, 16)).astype(np.float32), VOXEL)
    write_stack(tmp_path / "sub" / "own.mrcs", rng.normal(size=(2, 16, 16, 16)).astype(np.float32), VOXEL)
    rows = ["000001@stk.mrcs", "000001@own.mrcs", "000002@own.mrcs"]
    listing = put(tmp_path / "sub" / "list.star", star_loop("particles", ("rlnImageName",), rows))
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["classify", model, listing, "-o", tmp_path / "o", "-q", "-b", "cpu"], capsys)
    assert code == 0, err
    assert len(predictions(tmp_path / "o")) == 2
    errors = errors_table(tmp_path / "o")
    assert len(errors) == 1 and "two different files" in errors["reason"].iloc[0]
