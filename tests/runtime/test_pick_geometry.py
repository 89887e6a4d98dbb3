"""Where picks are cropped: a tester's geometry findings, each a silently wrong crop (or a message
that was not true), checked with a probe model whose features are its input box.

Each tomogram's voxel (x, y, z) holds x + 100 y + 10000 z + 1 (+ k * TOMOGRAM_STEP for the k-th
tomogram), so the centre voxel of a box says where it was cut.

- RELION 4 pixel picks whose data_optics states a tilt-series pixel size other than the tomogram's
  voxel size were cropped as voxels (2x too far out at bin 2): now refused, offering both readings.
- RELION 5 centred picks were placed from the reconstruction's middle, not from tomograms.star's
  rlnTomoSizeX/Y/Z / 2 / binning as RELION places them (one voxel off where the two differ).
- An MRC whose header marks a stack of 2-D images (a tilt series) was cropped as a tomogram, and
  an exact name (TS_01.mrc) won over the reconstruction (TS_01_rec.mrc); a stack of 2-D images was
  classified as one volume.
- Picks near the edge were padded without a word: now counted (summary, manifest) and said.
- A CSV of rlnCenteredCoordinate*Angst was refused with "pass the tomogram MRC with --tomograms"
  although -t was given; a CSV carrying rlnOrigin*Angst shifts got no "not applied" note.
"""

from __future__ import annotations

import json
from pathlib import Path

import mrcfile
import numpy as np
import pytest
from crop_probe import SHAPE, build_crop_probe, coded_tomogram, crop_centres
from hostile_inputs import Capsys, assert_error, errors_table, predictions, put, run_cli
from relion5_project import TOMOGRAM_LABELS, star_loop
from tiny_onnx import BOX, VOXEL

from cryoshift.runtime.errors import InputError
from cryoshift.runtime.mrc import write_volume

PICKS = [(20, 24, 12), (12, 30, 10), (27, 20, 13)]  # (x, y, z) voxels, each a full box inside SHAPE


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_crop_probe(tmp_path_factory.mktemp("probe") / "probe.onnx")


def image_stack(path: Path, n: int, ny: int, nx: int) -> Path:
    """An MRC whose header marks a stack of ``n`` 2-D images (space group 0, mz = 1), as
    mrcfile's set_image_stack (and RELION, IMOD's tilt series in some writers) leave it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with mrcfile.new(str(path), overwrite=True) as m:
        m.set_data(np.random.default_rng(0).normal(size=(n, ny, nx)).astype(np.float32))
        m.set_image_stack()
        m.voxel_size = VOXEL
    return path


def classify(model: Path, picks: Path, tomograms: Path, out: Path, *options: object) -> list[object]:
    return ["classify", model, picks, "-t", tomograms, "-o", out, "-b", "cpu", "--features", *options]


def notes(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("note: ")]


# -- RELION 4 pixel picks with a stated tilt-series pixel size ------------------------------------


def relion4(path: Path, pixel: float, factor: float, groups: bool = True) -> Path:
    """RELION 4 picks of PICKS on TS_01, written ``factor`` times the voxels, data_optics stating
    ``pixel`` A (tilt series)."""
    optics = star_loop(
        "optics",
        ("rlnOpticsGroup", "rlnOpticsGroupName", "rlnTomoTiltSeriesPixelSize"),
        [f"1 optics1 {pixel:.6f}"],
    )
    labels = ("rlnTomoName", "rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ") + (
        ("rlnOpticsGroup",) if groups else ()
    )
    rows = [
        f"TS_01 {x * factor:g} {y * factor:g} {z * factor:g}" + (" 1" if groups else "") for x, y, z in PICKS
    ]
    return put(path, optics + star_loop("particles", labels, rows))


@pytest.mark.parametrize("groups", [True, False])
def test_relion4_pixels_of_another_size_are_refused_offering_both_readings(
    probe: Path, tmp_path: Path, capsys: Capsys, groups: bool
) -> None:
    """Tilt series 5 A, tomogram 10 A (bin 2), coordinates in tilt-series pixels as RELION 4 writes
    them: cropped as voxels, every pick landed 2x too far out (exit 0, no word). Now one line offers
    both readings; each option then crops where it says."""
    tomo = coded_tomogram(tmp_path / "TS_01.mrc")
    star = relion4(tmp_path / "particles.star", 5.0, 2.0, groups)
    line = assert_error(run_cli(classify(probe, star, tomo, tmp_path / "o"), capsys), star)
    assert "rlnTomoTiltSeriesPixelSize 5 A" in line and "voxels are 10 A" in line, line
    assert "--coordinate-pixel-size 5 if they are tilt-series pixels" in line, line
    assert "--coordinate-pixel-size 10 (or --binning 1) if they are the tomogram's voxels" in line, line

    code, _, err = run_cli(classify(probe, star, tomo, tmp_path / "px", "--coordinate-pixel-size", 5), capsys)
    assert code == 0, err
    assert crop_centres(tmp_path / "px") == [(0, *p) for p in PICKS]
    as_voxels = relion4(tmp_path / "voxels.star", 5.0, 1.0, groups)  # picked on the binned tomogram
    code, _, err = run_cli(classify(probe, as_voxels, tomo, tmp_path / "b1", "--binning", 1), capsys)
    assert code == 0, err
    assert crop_centres(tmp_path / "b1") == [(0, *p) for p in PICKS]


def test_relion4_pixels_of_the_tomograms_size_are_read_as_voxels(
    probe: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """data_optics stating the tomogram's own voxel size (bin 1) leaves no doubt: classified."""
    tomo = coded_tomogram(tmp_path / "TS_01.mrc")
    star = relion4(tmp_path / "particles.star", VOXEL, 1.0)
    code, _, err = run_cli(classify(probe, star, tomo, tmp_path / "o"), capsys)
    assert code == 0, err
    assert crop_centres(tmp_path / "o") == [(0, *p) for p in PICKS]


def test_relion4_pixels_of_another_size_are_refused_where_evaluate_reads_them(tmp_path: Path) -> None:
    """evaluate (train, export) read picks with no --binning/--coordinate-pixel-size: the same
    refusal, saying the table must be rescaled."""
    from cryoshift.runtime.labelled_picks import read_labelled_picks

    tomo = coded_tomogram(tmp_path / "TS_01.mrc")
    optics = star_loop("optics", ("rlnOpticsGroup", "rlnTomoTiltSeriesPixelSize"), ["1 5.0"])
    labels = ("rlnTomoName", "rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ", "rlnOpticsGroup", "class")
    rows = [f"TS_01 {2 * x} {2 * y} {2 * z} 1 ribosome" for x, y, z in PICKS]
    star = put(tmp_path / "labelled.star", optics + star_loop("particles", labels, rows))
    with pytest.raises(InputError) as caught:
        read_labelled_picks(star, [str(tomo)], BOX, model_voxel_size=VOXEL)
    reason = caught.value.reason
    assert caught.value.path == str(star)
    assert (
        "rlnTomoTiltSeriesPixelSize 5 A" in reason and "has no --binning or --coordinate-pixel-size" in reason
    )
    assert "x 0.5 if they are tilt-series pixels" in reason, reason


# -- RELION 5 centred picks: RELION's centre ------------------------------------------------------


def relion5(root: Path, size_x: int, binning: int = 4) -> Path:
    """tomograms.star of TS_01 (2.5 A x bin 4, rlnTomoSizeX ``size_x``; Y and Z as the volume's)
    with a coded reconstruction of SHAPE."""
    coded_tomogram(root / "rec_TS_01.mrc")
    size = (size_x, SHAPE[1] * binning, SHAPE[0] * binning)
    row = f"TS_01 {VOXEL / binning:.6f} {binning} {size[0]} {size[1]} {size[2]} rec_TS_01.mrc"
    return put(root / "tomograms.star", star_loop("global", TOMOGRAM_LABELS, [row]))


def relion_centred(x: float, y: float, z: float, size: tuple[int, int, int], binning: int = 4) -> list[float]:
    """RELION 5's centred Angstrom of binned voxel (x, y, z): unbinned pixel = angst / ts_pixel +
    rlnTomoSize / 2 (ParticleSet::getParticleCoordDecenteredPixel), binned = unbinned / binning."""
    ts = VOXEL / binning
    return [(v * binning - s / 2.0) * ts for v, s in zip((x, y, z), size, strict=True)]


def test_centred_picks_are_placed_from_tomograms_star_size(
    probe: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """rlnTomoSizeX 168 at bin 4 is 42 voxels; the reconstruction has 40 (within the size
    tolerance). The picks were placed from the reconstruction's middle, every one a voxel off in
    x; RELION places them from 168 / 2 / 4 = 21."""
    tomograms = relion5(tmp_path, 42 * 4)
    size = (42 * 4, SHAPE[1] * 4, SHAPE[0] * 4)
    rows = ["TS_01 " + " ".join(f"{c:.6f}" for c in relion_centred(*p, size)) for p in PICKS]
    labels = ("rlnTomoName", *(f"rlnCenteredCoordinate{a}Angst" for a in "XYZ"))
    star = put(tmp_path / "particles.star", star_loop("particles", labels, rows))
    out = tmp_path / "o"
    code, _, err = run_cli(classify(probe, star, tomograms, out), capsys)
    assert code == 0, err
    assert crop_centres(out) == [(0, *p) for p in PICKS]
    assert predictions(out)[["x", "y", "z"]].values.tolist() == [list(map(float, p)) for p in PICKS]
    # predictions.star writes the input's centred values back as they were (an exact round trip)
    import starfile

    written = starfile.read(out / "predictions.star")
    angst = written[[f"rlnCenteredCoordinate{a}Angst" for a in "XYZ"]].to_numpy(dtype=float)
    assert np.array_equal(angst, np.array([relion_centred(*p, size) for p in PICKS]))

    # pixel columns beside the centred ones are checked against RELION's centre, not the middle
    both = [
        f"TS_01 {p[0]} {p[1]} {p[2]} " + " ".join(f"{c:.6f}" for c in relion_centred(*p, size)) for p in PICKS
    ]
    labels = ("rlnTomoName", "rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ", *labels[1:])
    star = put(tmp_path / "both.star", star_loop("particles", labels, both))
    code, _, err = run_cli(classify(probe, star, tomograms, tmp_path / "b"), capsys)
    assert code == 0, err
    assert crop_centres(tmp_path / "b") == [(0, *p) for p in PICKS]


def test_centred_csv_is_read_as_star(probe: Path, tmp_path: Path, capsys: Capsys) -> None:
    """A CSV of rlnCenteredCoordinate*Angst with -t TS_01.mrc was refused with "pass the tomogram
    MRC with --tomograms": it is converted with the header's voxel size and size, as a STAR is."""
    tomo = coded_tomogram(tmp_path / "TS_01.mrc")
    middle = np.array(SHAPE[::-1]) / 2.0
    rows = [",".join(["TS_01", *(f"{c:g}" for c in (np.array(p) - middle) * VOXEL)]) for p in PICKS]
    head = "tomo,rlnCenteredCoordinateXAngst,rlnCenteredCoordinateYAngst,rlnCenteredCoordinateZAngst\n"
    picks = put(tmp_path / "c.csv", head + "\n".join(rows) + "\n")
    code, _, err = run_cli(classify(probe, picks, tomo, tmp_path / "o"), capsys)
    assert code == 0, err
    assert crop_centres(tmp_path / "o") == [(0, *p) for p in PICKS]


def test_csv_refinement_shifts_are_noted_as_in_star(probe: Path, tmp_path: Path, capsys: Capsys) -> None:
    """rlnOriginX/Y/ZAngst in a CSV were dropped without the note a STAR gets."""
    tomo = coded_tomogram(tmp_path / "TS_01.mrc")
    rows = [f"TS_01,{x},{y},{z},{4.0 * i},0,-1.5" for i, (x, y, z) in enumerate(PICKS)]
    picks = put(
        tmp_path / "s.csv", "tomo,x,y,z,rlnOriginXAngst,rlnOriginYAngst,rlnOriginZAngst\n" + "\n".join(rows)
    )
    code, out, err = run_cli(classify(probe, picks, tomo, tmp_path / "o"), capsys)
    assert code == 0, err
    said = [n for n in notes(out) if "refinement shifts" in n]
    assert len(said) == 1 and "3 of 3 picks carry refinement shifts" in said[0] and "up to 8 A" in said[0], (
        out
    )


# -- stacks of 2-D images -------------------------------------------------------------------------


def test_image_stack_is_no_tomogram_and_never_beats_the_reconstruction(
    probe: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """IMOD's raw tilt series TS_01.mrc (header: 41 2-D images) beside TS_01_rec.mrc: the exact
    name won and the images were cropped as Z sections (exit 0). Now TS_01's picks fail naming
    the stack and the reconstruction; TS_02's picks are classified."""
    folder = tmp_path / "imod"
    coded_tomogram(folder / "TS_01_rec.mrc")
    stack = image_stack(folder / "TS_01.mrc", 41, SHAPE[1], SHAPE[2])
    coded_tomogram(folder / "TS_02.mrc", k=1)
    picks = put(tmp_path / "p.csv", "tomo,x,y,z\nTS_01,20,24,12\nTS_02,12,30,10\n")
    out = tmp_path / "o"
    code, _, err = run_cli(classify(probe, picks, folder, out), capsys)
    assert code == 0, err
    assert crop_centres(out) == [(1, 12, 30, 10)]
    (reason,) = errors_table(out)["reason"].tolist()
    assert f"tomogram {stack}: is a stack of 41 2-D images" in reason and "not a tomogram" in reason, reason
    assert f"{folder / 'TS_01_rec.mrc'} also matches 'TS_01'" in reason, reason

    # centred picks read the tomogram by its header: the same refusal, for the only tomogram
    labels = ("rlnTomoName", *(f"rlnCenteredCoordinate{a}Angst" for a in "XYZ"))
    star = put(tmp_path / "c.star", star_loop("particles", labels, ["TS_01 10 20 30"]))
    line = assert_error(run_cli(classify(probe, star, stack, tmp_path / "c"), capsys), star)
    assert "is a stack of 41 2-D images" in line, line


def test_image_stack_is_not_one_subtomogram(probe: Path, tmp_path: Path, capsys: Capsys) -> None:
    """A stack of 16 images of 16x16 was classified as one 16^3 volume, alone or in a folder."""
    stack = image_stack(tmp_path / "particles.mrcs", BOX, BOX, BOX)
    code, _, err = run_cli(["classify", probe, stack, "-o", tmp_path / "o", "-b", "cpu"], capsys)
    assert code == 2 and "nothing was classified" in err, err
    (reason,) = errors_table(tmp_path / "o")["reason"].tolist()
    assert f"is a stack of {BOX} 2-D images" in reason, reason
    folder = tmp_path / "folder"
    z, y, x = np.indices((BOX,) * 3)
    write_volume(folder / "a.mrc", (x + y + z).astype(np.float32), voxel_size=VOXEL)
    image_stack(folder / "b.mrc", BOX, BOX, BOX)  # read by the fast reader, after planning
    out = tmp_path / "f"
    code, _, err = run_cli(["classify", probe, folder, "-o", out, "-b", "cpu"], capsys)
    assert code == 0, err
    assert predictions(out)["id"].tolist() == [str(folder / "a.mrc")]
    (reason,) = errors_table(out)["reason"].tolist()
    assert f"is a stack of {BOX} 2-D images" in reason, reason


# -- edge padding ---------------------------------------------------------------------------------


def test_padded_crops_are_counted_and_said(probe: Path, tmp_path: Path, capsys: Capsys) -> None:
    """Picks within half a box of the edge were padded without a word (crop_box's flag dropped)."""
    tomo = coded_tomogram(tmp_path / "TS_01.mrc")
    rows = ["TS_01,0,0,0", "TS_01,20,24,12", "TS_01,39,47,23", "TS_01,27,7,13", "TS_01,99,99,99"]
    picks = put(tmp_path / "e.csv", "tomo,x,y,z\n" + "\n".join(rows) + "\n")
    out = tmp_path / "o"
    code, stdout, err = run_cli(classify(probe, picks, tomo, out), capsys)
    assert code == 0, err
    assert len(predictions(out)) == 4 and len(errors_table(out)) == 1  # the last one is outside
    said = [n for n in notes(stdout) if "edge" in n]
    assert said == [
        "note: 3 picks lie within 8 voxels (half the 16^3 box) of their tomogram's edge: the part of "
        "their crop outside the tomogram is filled with the mean of the part inside (manifest: "
        "summary.padded)"
    ], stdout
    assert json.loads((out / "manifest.json").read_text())["summary"]["padded"] == 3
    assert "padded" not in predictions(out).columns


def test_padded_count_follows_the_shard(tmp_path: Path) -> None:
    """A shard counts its own rows (ranges with a step), each table row once when given twice."""
    from cryoshift.runtime.sources import plan_inputs

    tomo = coded_tomogram(tmp_path / "TS_01.mrc")
    rows = ["TS_01,0,0,0", "TS_01,20,24,12", "TS_01,39,47,23", "TS_01,27,7,13", "TS_01,2,24,12"]
    picks = put(tmp_path / "e.csv", "tomo,x,y,z\n" + "\n".join(rows) + "\n")
    plan = plan_inputs([str(picks)], BOX, VOXEL, tomograms=[str(tomo)])
    assert plan.items.padded() == 4
    assert plan.shard(0, 2).items.padded() == 3  # rows 0, 2, 4
    assert plan.shard(1, 2).items.padded() == 1  # rows 1, 3
    twice = plan_inputs([str(picks), str(picks)], BOX, VOXEL, tomograms=[str(tomo)])
    assert twice.items.padded() == 4
