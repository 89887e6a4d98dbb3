"""Warp 2 / M projects, written here the way WarpTools lays them out.

Followed: the WarpTools "Tomogram Particle File Reference" (warpem.github.io/warp, page
reference/warptools/tomogram_particle_files): a RELION 3.0-style particle STAR whose
``rlnMicrographName`` names the tilt series' ``.tomostar`` file and whose
``rlnCoordinateX/Y/Z`` are pixels of a tomogram, zero at the centre of the first voxel; the
pixel size of those coordinates is not in that file (``ts_export_particles --coords_angpix``).
``ts_reconstruct --angpix 10`` writes ``reconstruction/TS_01_10.00Apx.mrc``. STAR files made for
M and Warp 1 carry the coordinates' pixel size the RELION 3.0 way, as ``rlnDetectorPixelSize``
(micrometres) / ``rlnMagnification``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cryoshift.runtime.cli import main
from cryoshift.runtime.mrc import write_volume

SHAPE = (24, 48, 40)  # Z, Y, X voxels of each reconstruction
VOXEL = 10.0  # ts_reconstruct --angpix 10
TS_PIXEL = 2.5  # unbinned tilt series
PICKS = {  # pixels of the 10 A reconstruction
    "TS_01": [(20.0, 24.0, 12.0), (12.0, 30.0, 10.0), (30.0, 16.0, 14.0)],
    "TS_02": [(18.0, 20.0, 12.0), (28.0, 40.0, 11.0)],
}
TOMOSTAR = """
data_

loop_
_wrpMovieName #1
_wrpAngleTilt #2
_wrpAxisAngle #3
_wrpDose #4
_wrpAverageIntensity #5
_wrpMaskedFraction #6
../frames/{name}_001_0.00.tif    0.000   -85.400   0.000   1.000   0.000
../frames/{name}_002_3.00.tif    3.000   -85.400   3.000   1.000   0.000
../frames/{name}_003_-3.00.tif  -3.000   -85.400   6.000   1.000   0.000
"""


def _warp_project(root: Path) -> dict[str, Path]:
    """tomostar/TS_0N.tomostar, reconstruction/TS_0N_10.00Apx.mrc (+ deconv/ and odd/ subfolders,
    which -t reconstruction/ must not pick up), matching/ particle STARs."""
    rng = np.random.default_rng(5)
    (root / "tomostar").mkdir(parents=True)
    for sub in ("reconstruction/deconv", "reconstruction/odd", "matching"):
        (root / sub).mkdir(parents=True)
    for name in PICKS:
        (root / "tomostar" / f"{name}.tomostar").write_text(TOMOSTAR.format(name=name))
        tomo = rng.normal(0, 1, SHAPE).astype(np.float32)
        write_volume(root / "reconstruction" / f"{name}_10.00Apx.mrc", tomo, voxel_size=VOXEL)
        for sub in ("deconv", "odd"):
            write_volume(root / "reconstruction" / sub / f"{name}_10.00Apx.mrc", tomo, voxel_size=VOXEL)
    header = (
        "\ndata_\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n_rlnCoordinateZ #3\n"
        "_rlnAngleRot #4\n_rlnAngleTilt #5\n_rlnAnglePsi #6\n_rlnMicrographName #7\n"
    )
    rows, unbinned = [], []
    for name, picks in PICKS.items():
        for i, (x, y, z) in enumerate(picks):
            angles = f"{10.0 * i:.6f}\t{45.0:.6f}\t{-20.0 * i:.6f}"
            rows.append(f"{x:.6f}\t{y:.6f}\t{z:.6f}\t{angles}\t{name}.tomostar")
            f = VOXEL / TS_PIXEL
            unbinned.append(
                f"{x * f:.6f}\t{y * f:.6f}\t{z * f:.6f}\t{angles}\t{name}.tomostar\t"
                f"{TS_PIXEL:.6f}\t10000.000000"
            )
    warp = root / "matching" / "particles_warp.star"
    warp.write_text(header + "\n".join(rows) + "\n\n")
    m_star = root / "matching" / "particles_m.star"
    m_star.write_text(
        header + "_rlnDetectorPixelSize #8\n_rlnMagnification #9\n" + "\n".join(unbinned) + "\n\n"
    )
    return {"root": root, "reconstruction": root / "reconstruction", "warp": warp, "m": m_star}


@pytest.fixture()
def warp(tmp_path: Path) -> dict[str, Path]:
    return _warp_project(tmp_path / "warp")


def _classify(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    code = main(["classify", *argv, "-b", "cpu"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def _expected() -> set[tuple[str, float, float, float]]:
    return {(f"{n}.tomostar", *p) for n, picks in PICKS.items() for p in picks}


def test_warp_particles_on_reconstruction_folder(model_path, warp, tmp_path, capsys):
    import starfile

    from cryoshift.runtime.results import read_results

    out = tmp_path / "out"
    _classify([str(model_path), str(warp["warp"]), "-t", str(warp["reconstruction"]), "-o", str(out)], capsys)
    csv = read_results(out / "predictions.csv")
    assert not (out / "errors.csv").exists() or len(read_results(out / "errors.csv")) == 0
    assert {(r.tomo_name, r.x, r.y, r.z) for r in csv.itertuples()} == _expected()
    assert set(csv["path"]) == {str(warp["reconstruction"] / f"{n}_10.00Apx.mrc") for n in PICKS}
    # Warp's own columns come back unchanged (pixels, .tomostar names, angles), classes added.
    src = starfile.read(warp["warp"])
    res = starfile.read(out / "predictions.star", always_dict=True)
    particles = next(iter(res.values()))
    assert list(particles.columns[: len(src.columns)]) == list(src.columns)
    np.testing.assert_allclose(
        particles[["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"]].to_numpy(),
        src[["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"]].to_numpy(),
    )
    assert list(particles["rlnMicrographName"]) == list(src["rlnMicrographName"])
    assert {"rlnClassNumber", "csClassName", "csConfidence"} <= set(particles.columns)


def test_m_star_with_detector_pixel_size_is_scaled(model_path, warp, tmp_path, capsys):
    """Unbinned tilt-series pixels (2.5 A, rlnDetectorPixelSize/rlnMagnification) on a 10 A
    reconstruction: scaled by the table's own pixel size, and the same subtomograms as the
    reconstruction-pixel file."""
    from cryoshift.runtime.results import read_results

    a, b = tmp_path / "a", tmp_path / "b"
    _classify(
        [str(model_path), str(warp["warp"]), "-t", str(warp["reconstruction"]), "-o", str(a), "-q"], capsys
    )
    _classify([str(model_path), str(warp["m"]), "-t", str(warp["reconstruction"]), "-o", str(b)], capsys)
    first, second = read_results(a / "predictions.csv"), read_results(b / "predictions.csv")
    assert {(r.tomo_name, r.x, r.y, r.z) for r in second.itertuples()} == _expected()
    np.testing.assert_allclose(np.sort(second["confidence"]), np.sort(first["confidence"]), rtol=1e-6)
    # An explicit option still wins over the table's pixel size (and says nothing is outside).
    c = tmp_path / "c"
    _classify(
        [
            str(model_path),
            str(warp["m"]),
            "-t",
            str(warp["reconstruction"]),
            "-o",
            str(c),
            "-q",
            "--coordinate-pixel-size",
            "2.5",
        ],
        capsys,
    )
    assert len(read_results(c / "predictions.csv")) == len(second)


def test_warp_names_need_the_right_reconstruction(model_path, warp, tmp_path, capsys):
    """Two pixel sizes of one tilt series in -t: refused by name, never a guess."""
    write_volume(
        warp["reconstruction"] / "TS_01_20.00Apx.mrc", np.zeros((12, 24, 20), np.float32), voxel_size=20.0
    )
    out = tmp_path / "out"
    code = main(
        [
            "classify",
            str(model_path),
            str(warp["warp"]),
            "-t",
            str(warp["reconstruction"]),
            "-o",
            str(out),
            "-b",
            "cpu",
            "-q",
        ]
    )
    capsys.readouterr()
    from cryoshift.runtime.results import read_results

    assert code == 0  # TS_02 is classified; TS_01's picks are error rows naming both files
    assert len(read_results(out / "predictions.csv")) == len(PICKS["TS_02"])
    reasons = read_results(out / "errors.csv")["reason"]
    assert len(reasons) == len(PICKS["TS_01"])
    assert reasons.str.contains("ambiguous").all() and reasons.str.contains("TS_01_20.00Apx").all()


def _m_star_with(path: Path, long_row: int | None, wrong_row: int | None) -> Path:
    """The M particle STAR (unbinned pixels, rlnDetectorPixelSize) with the same picks' centred
    Angstrom coordinates beside them and a label column; row ``long_row`` has one field too many,
    row ``wrong_row`` centred coordinates 10 voxels off its pixel ones."""
    labels = [
        "rlnCoordinateX",
        "rlnCoordinateY",
        "rlnCoordinateZ",
        "rlnMicrographName",
        "rlnDetectorPixelSize",
        "rlnMagnification",
        "rlnCenteredCoordinateXAngst",
        "rlnCenteredCoordinateYAngst",
        "rlnCenteredCoordinateZAngst",
        "class",
    ]
    size = np.array(SHAPE[::-1], dtype=float)
    rows = []
    for name, picks in PICKS.items():
        for x, y, z in picks:
            centred = (np.array([x, y, z]) - size / 2) * VOXEL
            if len(rows) == wrong_row:
                centred[0] += 10 * VOXEL
            f = VOXEL / TS_PIXEL
            row = f"{x * f:.6f}\t{y * f:.6f}\t{z * f:.6f}\t{name}.tomostar\t{TS_PIXEL:.6f}\t10000.000000"
            row += "".join(f"\t{c:.6f}" for c in centred) + f"\tclass{len(rows)}"
            rows.append(row + ("\t7" if len(rows) == long_row else ""))
    header = "".join(f"_{label} #{i}\n" for i, label in enumerate(labels, 1))
    path.write_text("\ndata_\n\nloop_\n" + header + "\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("hostile", ["long", "wrong"])
def test_m_star_rows_get_the_checks_of_relion_tables(model_path, warp, tmp_path, capsys, hostile):
    """Warp/M tables were read through starfile without the checks other pick tables get: a row
    with one field too many refused the whole table, and pixel coordinates disagreeing with the
    centred Angstrom ones beside them were cropped without a word. Now each is one error row."""
    from cryoshift.runtime.results import read_results

    star = _m_star_with(
        tmp_path / "m.star", 1 if hostile == "long" else None, 3 if hostile == "wrong" else None
    )
    out = tmp_path / "out"
    note = _classify([str(model_path), str(star), "-t", str(warp["reconstruction"]), "-o", str(out)], capsys)
    assert "rlnDetectorPixelSize" in note  # still scaled by the table's own pixel size
    assert len(read_results(out / "predictions.csv")) == 4
    (reason,) = read_results(out / "errors.csv")["reason"]
    if hostile == "long":
        assert reason == "line 16: 11 fields where the header names 10 (row skipped)"
    else:
        assert reason.startswith("line 18: pixel coordinates (18.0, 20.0, 12.0)") and "disagree" in reason


def test_labelled_m_star_skips_its_bad_rows(warp, tmp_path):
    """Labelled picks (cryoshift evaluate) from a Warp/M table: the row with one field too many
    refused the whole table, and the disagreeing row was scored; now both are skipped picks and
    every other row keeps its own label."""
    from cryoshift.runtime.labelled_picks import read_labelled_picks

    star = _m_star_with(tmp_path / "m.star", 1, 3)
    volumes, names, skipped = read_labelled_picks(star, [str(warp["reconstruction"])], 16)[:3]
    assert names == ["class0", "class2", "class4"] and len(volumes) == 3
    assert sum(skipped.values()) == 2
    assert any("11 fields where the header names 10" in k for k in skipped), skipped
    assert any("disagree" in k for k in skipped), skipped
