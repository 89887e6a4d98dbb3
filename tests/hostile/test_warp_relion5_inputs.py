"""Damaged and unusual Warp 2 / M projects and RELION 5 tomogram tables given to classify.

Each case used to give a silently wrong answer (picks cropped at unscaled coordinates, from a
volume the table does not describe, or from another tomogram's file) or a line that sent the
user the wrong way. Files are written here as WarpTools and RELION 5 lay them out (see
tests/runtime/test_warp_layout.py and tests/runtime/test_relion5.py), then damaged.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hostile_inputs import Capsys, assert_error, errors_table, predictions, run_cli
from relion5_project import TOMOGRAM_LABELS, reconstruction, star_loop, write_project
from tiny_onnx import linear_model

SHAPE = (24, 48, 40)  # Z, Y, X voxels of each reconstruction
VOXEL = 10.0  # reconstruction voxel: 2.5 A tilt series binned 4x
PICKS = {  # pixels (x, y, z) of the 10 A reconstruction
    "TS_01": [(20.0, 24.0, 12.0), (12.0, 30.0, 10.0)],
    "TS_02": [(18.0, 20.0, 12.0), (28.0, 40.0, 11.0)],
}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return linear_model(tmp_path_factory.mktemp("model") / "linear.onnx")


def put(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _classify(model: Path, picks: Path, tomograms: Path, out: Path, *options: object) -> list[object]:
    return ["classify", model, picks, "-t", tomograms, "-o", out, "-q", "-b", "cpu", *options]


def _picked(out: Path) -> set[tuple[str, float, float, float]]:
    return {(r.tomo_name, r.x, r.y, r.z) for r in predictions(out).itertuples()}


def _only_one_tomogram_classified(
    argv: list[object], out: Path, capsys: Capsys, kept: str, words: str
) -> None:
    """The run goes on (exit 0): ``kept``'s picks are classified, the other tomogram's two picks
    are error rows whose reasons all hold ``words``."""
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    assert {r[0] for r in _picked(out)} == {kept}
    reasons = errors_table(out)["reason"]
    assert len(reasons) == 2 and all(words in r for r in reasons), reasons


# ---------------------------------------------------------------------------------------------
# Warp 2 / M


def _warp(root: Path, detector: dict[int, str] | None = None, columns: tuple[str, ...] = ()) -> Path:
    """reconstruction/TS_0N_10.00Apx.mrc and a particle STAR naming them by .tomostar; with
    ``columns`` (rlnDetectorPixelSize, rlnMagnification) the coordinates are unbinned 2.5 A
    pixels, and ``detector`` replaces row k's rlnDetectorPixelSize."""
    for seed, name in enumerate(PICKS):
        reconstruction(root / "reconstruction" / f"{name}_10.00Apx.mrc", SHAPE, VOXEL, seed)
    f = VOXEL / 2.5 if columns else 1.0
    values = {"rlnDetectorPixelSize": "2.500000", "rlnMagnification": "10000.000000"}
    rows = []
    for name, picks in PICKS.items():
        for x, y, z in picks:
            extra = [
                (detector or {}).get(len(rows), values[c]) if c == columns[0] else values[c] for c in columns
            ]
            rows.append(
                " ".join([f"{x * f:.6f}", f"{y * f:.6f}", f"{z * f:.6f}", f"{name}.tomostar", *extra])
            )
    labels = ("rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ", "rlnMicrographName", *columns)
    return put(root / "matching" / "particles.star", star_loop("", labels, rows))


@pytest.mark.parametrize("value", ["nan", "0.000000", "-2.500000"])
def test_warp_row_without_a_pixel_size_is_an_error_row(
    model: Path, tmp_path: Path, capsys: Capsys, value: str
) -> None:
    """One M row whose rlnDetectorPixelSize is NaN, 0 or negative made the whole table read as
    reconstruction pixels (every pick 4x off: "nothing was classified"). Now that row is an
    error row naming its line, and the others are scaled by their own pixel size."""
    star = _warp(tmp_path / "warp", {3: value}, ("rlnDetectorPixelSize", "rlnMagnification"))
    out = tmp_path / "out"
    code, _, err = run_cli(_classify(model, star, tmp_path / "warp" / "reconstruction", out), capsys)
    assert code == 0, err
    expected = {(f"{n}.tomostar", *p) for n, picks in PICKS.items() for p in picks}
    assert _picked(out) == expected - {("TS_02.tomostar", *PICKS["TS_02"][1])}
    (reason,) = errors_table(out)["reason"]
    assert (
        reason.startswith(f"line 14: rlnDetectorPixelSize {value} and rlnMagnification 10000.000000 ")
        and "give no pixel size" in reason
    ), reason


def test_warp_detector_pixel_size_without_magnification_is_refused(
    model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """rlnDetectorPixelSize (2.5 A pixels) without rlnMagnification: the coordinates were read as
    reconstruction voxels (4x off here), the stated pixel size dropped without a word."""
    star = _warp(tmp_path / "warp", columns=("rlnDetectorPixelSize",))
    result = run_cli(_classify(model, star, tmp_path / "warp" / "reconstruction", tmp_path / "out"), capsys)
    line = assert_error(result, star)
    assert "has rlnDetectorPixelSize but no rlnMagnification" in line and "--coordinate-pixel-size" in line


def test_warp_reconstruction_whose_name_and_header_disagree(
    model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """TS_01_20.00Apx.mrc whose header says 10 A: classified at 10 A without a word, though one of
    the two is wrong. Now its picks fail naming both; TS_02's are classified."""
    star = _warp(tmp_path / "warp")
    rec = tmp_path / "warp" / "reconstruction"
    (rec / "TS_01_10.00Apx.mrc").rename(rec / "TS_01_20.00Apx.mrc")
    words = "its name says 20 A per voxel (20.00Apx) but its header says 10 A"
    _only_one_tomogram_classified(
        _classify(model, star, rec, tmp_path / "out"), tmp_path / "out", capsys, "TS_02.tomostar", words
    )


def _normalised(root: Path, label: str = "") -> Path:
    """A WarpTools template-matching STAR written with ``--normalized_coords``: PICKS as fractions
    of the volume (x / 40, y / 48, z / 24), the reconstructions as Warp names them; ``label``
    adds a class column (labelled picks, for evaluate)."""
    for seed, name in enumerate(PICKS):
        reconstruction(root / "reconstruction" / f"{name}_10.00Apx.mrc", SHAPE, VOXEL, seed)
    nz, ny, nx = SHAPE
    rows = [
        f"{name}.tomostar {x / nx:.6f} {y / ny:.6f} {z / nz:.6f} 0.4" + (f" {label}" if label else "")
        for name, picks in PICKS.items()
        for x, y, z in picks
    ]
    labels = ("rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ")
    labels += ("rlnAutopickFigureOfMerit",) + (("class",) if label else ())
    return put(root / "matching" / "TS_10.00Apx_ribo_clean.star", star_loop("", labels, rows))


def test_warp_normalised_coordinates_are_refused(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    """``--normalized_coords`` writes 0-1 fractions of the volume: read as pixels, every pick was
    cropped at the tomogram's corner (exit 0, no word). Refused in one line, the scale not guessed;
    evaluate (and train, export: the same reader) refuses it too."""
    star = _normalised(tmp_path / "warp")
    rec = tmp_path / "warp" / "reconstruction"
    line = assert_error(run_cli(_classify(model, star, rec, tmp_path / "out"), capsys), star)
    assert "every pick's coordinates lie between 0 and 1" in line and "40x48x24 voxels" in line, line
    assert "look normalised" in line and "--normalized_coords" in line and "pixel coordinates" in line, line

    from cryoshift.runtime.errors import InputError
    from cryoshift.runtime.labelled_picks import read_labelled_picks

    labelled = _normalised(tmp_path / "labelled", label="ribosome")
    with pytest.raises(InputError) as caught:
        read_labelled_picks(
            labelled, [str(tmp_path / "labelled" / "reconstruction")], 16, model_voxel_size=VOXEL
        )
    assert caught.value.path == str(labelled) and "look normalised" in caught.value.reason


def test_picks_at_the_first_voxels_are_not_taken_for_normalised(
    model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """Whole-voxel picks at 0 and 1 are picks at a corner (padded), not fractions: classified."""
    rec = reconstruction(tmp_path / "TS_01.mrc", SHAPE, VOXEL)
    picks = put(tmp_path / "corner.csv", "tomo,x,y,z\nTS_01,0,0,0\nTS_01,1,1,0\n")
    out = tmp_path / "out"
    code, _, err = run_cli(_classify(model, picks, rec, out), capsys)
    assert code == 0, err
    assert len(predictions(out)) == 2


# ---------------------------------------------------------------------------------------------
# RELION 5


def _relion(
    root: Path,
    fields: dict[str, dict[str, str]] | None = None,
    labels: tuple[str, ...] = TOMOGRAM_LABELS,
    names: dict[str, str] | None = None,
) -> tuple[Path, Path]:
    """relion5_project.write_project's project of PICKS: ``fields`` replaces a tomogram's row
    values by column, ``names`` the name the picks give it."""
    return write_project(root, PICKS, SHAPE, VOXEL, fields=fields, labels=labels, names=names)


def test_tomograms_star_without_binning_takes_the_header(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    """No rlnTomoTomogramBinning column: binning 1 was assumed, and every 10 A reconstruction was
    refused as "tomograms.star gives 2.5 A (2.5 A x binning 1)", a binning the table never gave.
    The row does not say the reconstruction's voxel size then; its header does."""
    labels = tuple(c for c in TOMOGRAM_LABELS if c != "rlnTomoTomogramBinning")
    tomograms, particles = _relion(tmp_path / "relion", labels=labels)
    out = tmp_path / "out"
    code, _, err = run_cli(_classify(model, particles, tomograms, out), capsys)
    assert code == 0, err
    assert _picked(out) == {(n, *p) for n, picks in PICKS.items() for p in picks}


def test_tomograms_star_giving_two_tomograms_one_file_is_refused(
    model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """TS_02's row names TS_01's reconstruction (a copy-paste slip): TS_02's picks were cropped
    from TS_01's volume without a word. Which tomogram the file holds is a guess, so both fail;
    with no other tomogram left, the table is refused in one line (with a third tomogram, only
    these two fail: test_tomogram_table_rows.py)."""
    rec = "Tomograms/job006/tomograms/rec_TS_01.mrc"
    tomograms, particles = _relion(tmp_path / "relion", {"TS_02": {"rlnTomoReconstructedTomogram": rec}})
    line = assert_error(run_cli(_classify(model, particles, tomograms, tmp_path / "out"), capsys), tomograms)
    assert "no usable tomogram: every row is damaged (2 in all), first line 14: " in line, line
    assert f"tomogram 'TS_01' shares its reconstruction {rec} with tomogram 'TS_02'" in line, line


def test_reconstruction_of_another_size_than_tomograms_star_says(
    model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """TS_02's reconstruction is 40x24x48 (X, Y, Z; not rotated, as IMOD leaves it) where the table
    gives 160x192x96 / 4 = 40x48x24: its centred-Angstrom picks were placed from the wrong centre
    and cropped without a word. Now they fail naming both sizes; TS_01's are classified."""
    tomograms, particles = _relion(tmp_path / "relion")
    rec = tomograms.parent / "tomograms" / "rec_TS_02.mrc"
    reconstruction(rec, (48, 24, 40), VOXEL, seed=1)
    words = f"{rec}: it is 40x24x48 voxels (X, Y, Z) but tomograms.star gives 40x48x24"
    _only_one_tomogram_classified(
        _classify(model, particles, tomograms, tmp_path / "out"), tmp_path / "out", capsys, "TS_01", words
    )


def test_picks_naming_the_reconstruction_file_get_the_table_checks(
    model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """Picks naming TS_02 by its file (rec_TS_02.mrc) rather than its rlnTomoName got no
    tomograms.star row: its 5 A (2.5 A x binning 2), contradicting the 10 A header, was never
    checked, and the picks were cropped. Now they fail as picks naming TS_02 do."""
    binned_2 = {"rlnTomoTomogramBinning": "2.000000", "rlnTomoSizeX": "320", "rlnTomoSizeY": "384"}
    rows = {"TS_02": {**binned_2, "rlnTomoSizeZ": "192"}}
    tomograms, particles = _relion(tmp_path / "relion", rows, names={"TS_02": "rec_TS_02.mrc"})
    words = "header says 10 A per voxel but tomograms.star gives 5 A"
    _only_one_tomogram_classified(
        _classify(model, particles, tomograms, tmp_path / "out"), tmp_path / "out", capsys, "TS_01", words
    )


def test_missing_reconstruction_says_where_it_was_looked_for(
    model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """A reconstruction moved away: its centred picks (no coordinates without it) were noted as
    "1 picks repeat an earlier pick", and the error named a path next to tomograms.star that read
    like a path joined wrongly. Now no such note, and the reason says what the table gives."""
    tomograms, particles = _relion(tmp_path / "relion")
    (tomograms.parent / "tomograms" / "rec_TS_02.mrc").unlink()
    out = tmp_path / "out"
    code, stdout, err = run_cli(
        ["classify", model, particles, "-t", tomograms, "-o", out, "-b", "cpu"], capsys
    )
    assert code == 0, err
    assert "repeat" not in stdout, stdout
    reasons = errors_table(out)["reason"]
    assert len(reasons) == 2
    given = "tomograms.star gives Tomograms/job006/tomograms/rec_TS_02.mrc, found neither next to it"
    assert all(given in r for r in reasons), reasons


def test_tomograms_star_and_particles_star_swapped(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    """The two files swapped: "no coordinate columns" for tomograms.star and "no reconstruction
    column ... run RELION's Reconstruct tomograms job" for particles.star sent users the wrong way."""
    tomograms, particles = _relion(tmp_path / "relion")
    line = assert_error(run_cli(_classify(model, tomograms, particles, tmp_path / "o1"), capsys), tomograms)
    assert "is a table of tomograms (rlnTomoName, rlnTomoReconstructedTomogram" in line, line
    code, out, err = run_cli(["info", tomograms], capsys)  # info describes it as what it is
    assert code == 0 and "tomogram table" in out, out + err
    line = assert_error(run_cli(_classify(model, particles, particles, tmp_path / "o2"), capsys), particles)
    assert "is a table of picks (rlnCenteredCoordinateX/Y/ZAngst), not of tomograms" in line, line


def test_coordinate_pixel_size_for_optics_groups_of_two_pixel_sizes_is_refused(
    model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """RELION 4 pixel picks of two optics groups (2.5 and 1.25 A tilt series): one
    --coordinate-pixel-size scaled both, so one group's picks were cropped in the wrong places."""
    tomograms, _ = _relion(tmp_path / "relion")
    optics = star_loop(
        "optics",
        ("rlnOpticsGroup", "rlnOpticsGroupName", "rlnTomoTiltSeriesPixelSize"),
        ["1 optics1 2.500000", "2 optics2 1.250000"],
    )
    rows = []
    for group, (name, picks) in enumerate(PICKS.items(), 1):
        f = VOXEL / (2.5 if group == 1 else 1.25)
        rows += [f"{name} {x * f:.6f} {y * f:.6f} {z * f:.6f} {group}" for x, y, z in picks]
    labels = ("rlnTomoName", "rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ", "rlnOpticsGroup")
    star = put(tmp_path / "relion4.star", optics + star_loop("particles", labels, rows))
    argv = _classify(model, star, tomograms, tmp_path / "out", "--coordinate-pixel-size", 2.5)
    line = assert_error(run_cli(argv, capsys), star)
    assert "optics groups have different ones" in line and "group 1 2.5 A, group 2 1.25 A" in line, line
