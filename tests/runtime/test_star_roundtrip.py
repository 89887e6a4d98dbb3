"""RELION round trips and the refusals of files that are not pick tables (interop findings 3-4).

- cryoshift's own predictions.star of a ``--binning`` run (RELION 4 unbinned pixels beside the
  centred Angstrom columns it adds) was refused when read again ("disagree"), by classify and by
  evaluate/train, which have no --binning to give; so was a hand-made RELION table holding both
  kinds that agree under its data_optics pixel size.
- An optimisation set, an M species file, a RELION 5 2-D stack extraction, a decimal-comma CSV and
  an IMOD point file were refused without saying what they are or what to give instead.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from crop_probe import SHAPE, build_crop_probe, coded_tomogram, crop_centres
from hostile_inputs import Capsys, assert_error, put, run_cli
from relion5_project import TOMOGRAM_LABELS, star_loop
from tiny_onnx import BOX, VOXEL

from cryoshift.runtime.errors import InputError

PICKS = [(20, 24, 12), (12, 30, 10), (27, 20, 13)]  # (x, y, z) voxels, each a full box inside SHAPE
BIN = 4  # tilt series 2.5 A, tomogram 10 A
PIXEL = VOXEL / BIN
SIZE = (SHAPE[2] * BIN, SHAPE[1] * BIN, SHAPE[0] * BIN)  # rlnTomoSizeX/Y/Z, unbinned pixels
OPTICS = star_loop(
    "optics",
    ("rlnOpticsGroup", "rlnOpticsGroupName", "rlnTomoTiltSeriesPixelSize"),
    [f"1 optics1 {PIXEL:.6f}"],
)
CENTRED = tuple(f"rlnCenteredCoordinate{a}Angst" for a in "XYZ")
PIXELS = ("rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ")


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_crop_probe(tmp_path_factory.mktemp("probe") / "probe.onnx")


def project(root: Path) -> Path:
    """A coded TS_01 reconstruction (10 A) and its tomograms.star (2.5 A x bin 4)."""
    coded_tomogram(root / "rec_TS_01.mrc")
    row = f"TS_01 {PIXEL:.6f} {BIN} {SIZE[0]} {SIZE[1]} {SIZE[2]} rec_TS_01.mrc"
    return put(root / "tomograms.star", star_loop("global", TOMOGRAM_LABELS, [row]))


def centred(x: float, y: float, z: float) -> list[float]:
    """RELION 5's centred Angstrom of binned voxel (x, y, z)."""
    return [(v * BIN - s / 2.0) * PIXEL for v, s in zip((x, y, z), SIZE, strict=True)]


def classify(model: Path, picks: Path, tomograms: Path, out: Path, *options: object) -> list[object]:
    return ["classify", model, picks, "-t", tomograms, "-o", out, "-b", "cpu", "--features", *options]


def test_binning_run_output_reads_back_in_classify_and_evaluate(
    probe: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """RELION 4 unbinned pixel picks classified with --binning 4: the predictions.star they give
    (pixels as written beside centred Angstrom) is read again with no option, cropped where the
    first run cropped, by classify and by evaluate's reader."""
    from cryoshift.runtime.labelled_picks import read_labelled_picks

    tomograms = project(tmp_path)
    rows = [f"TS_01 {x * BIN} {y * BIN} {z * BIN} 1" for x, y, z in PICKS]
    star = put(
        tmp_path / "particles.star",
        OPTICS + star_loop("particles", ("rlnTomoName", *PIXELS, "rlnOpticsGroup"), rows),
    )
    first = tmp_path / "b4"
    code, _, err = run_cli(classify(probe, star, tomograms, first, "--binning", BIN), capsys)
    assert code == 0, err
    assert crop_centres(first) == [(0, *p) for p in PICKS]

    again = first / "predictions.star"
    code, _, err = run_cli(classify(probe, again, tomograms, tmp_path / "rt"), capsys)
    assert code == 0, err
    assert crop_centres(tmp_path / "rt") == [(0, *p) for p in PICKS]

    volumes, _labels, skipped, _ = read_labelled_picks(
        again, [str(tomograms)], BOX, label_column="csClassName", model_voxel_size=VOXEL
    )
    assert len(volumes) == len(PICKS) and not skipped
    assert [round(float(v[BOX // 2, BOX // 2, BOX // 2])) - 1 for v in volumes] == [
        x + 100 * y + 10000 * z for x, y, z in PICKS
    ]


def both_kinds(path: Path, shift: float = 0.0) -> Path:
    """RELION 4 unbinned pixels (``shift`` unbinned pixels off in x) beside the centred Angstrom."""
    labels = ("rlnTomoName", *CENTRED, "rlnOpticsGroup", *PIXELS)
    rows = [
        "TS_01 "
        + " ".join(f"{c:.6f}" for c in centred(x, y, z))
        + f" 1 {x * BIN + shift:g} {y * BIN} {z * BIN}"
        for x, y, z in PICKS
    ]
    return put(path, OPTICS + star_loop("particles", labels, rows))


@pytest.mark.parametrize("tomograms_star", [True, False])
def test_agreeing_pixel_and_centred_columns_are_accepted(
    probe: Path, tmp_path: Path, capsys: Capsys, tomograms_star: bool
) -> None:
    """A hand-made table of both kinds that agree under data_optics' 2.5 A is cropped where they
    say, with tomograms.star or the reconstruction alone; columns that truly disagree (pixels 12
    unbinned pixels, 3 voxels, off in x) are still refused."""
    tomograms = project(tmp_path)
    given = tomograms if tomograms_star else tmp_path / "rec_TS_01.mrc"
    star = both_kinds(tmp_path / "both.star")
    code, _, err = run_cli(classify(probe, star, given, tmp_path / "o"), capsys)
    assert code == 0, err
    assert crop_centres(tmp_path / "o") == [(0, *p) for p in PICKS]

    wrong = both_kinds(tmp_path / "wrong.star", shift=12)
    line = assert_error(run_cli(classify(probe, wrong, given, tmp_path / "w"), capsys), wrong)
    assert "disagree, nor read as pixels of the stated 2.5 A" in line, line


def test_evaluate_refusal_offers_no_missing_option(tmp_path: Path) -> None:
    """evaluate has no --binning: its refusal of disagreeing columns must not offer one."""
    from cryoshift.runtime.labelled_picks import read_labelled_picks

    tomograms = project(tmp_path)
    labels = ("rlnTomoName", *CENTRED, "rlnOpticsGroup", *PIXELS, "class")
    rows = ["TS_01 " + " ".join(f"{c:.6f}" for c in centred(*p)) + " 1 1 1 1 a" for p in PICKS]
    star = put(tmp_path / "l.star", OPTICS + star_loop("particles", labels, rows))
    with pytest.raises(InputError) as caught:
        read_labelled_picks(star, [str(tomograms)], BOX, model_voxel_size=VOXEL)
    assert "disagree" in caught.value.reason and "--binning" not in caught.value.reason


def test_optimisation_set_names_its_files(model_path: Path, tmp_path: Path, capsys: Capsys) -> None:
    opt = put(
        tmp_path / "optimisation_set.star",
        "\ndata_optimisation_set\n\n_rlnTomoParticlesFile Picks/job007/particles.star\n"
        "_rlnTomoTomogramsFile Tomograms/job006/tomograms.star\n",
    )
    tomo = coded_tomogram(tmp_path / "TS_01.mrc")
    line = assert_error(run_cli(classify(model_path, opt, tomo, tmp_path / "o"), capsys), opt)
    assert "RELION 5 optimisation set" in line, line
    assert "Picks/job007/particles.star as the input, -t Tomograms/job006/tomograms.star" in line, line
    # given as the tomogram table (-t) instead, it is named the same way
    picks = put(tmp_path / "p.csv", "x,y,z,tomo\n10,10,10,TS_01\n")
    line = assert_error(run_cli(classify(model_path, picks, opt, tmp_path / "o2"), capsys), opt)
    assert "RELION 5 optimisation set" in line, line


def test_m_species_file_is_named(model_path: Path, tmp_path: Path, capsys: Capsys) -> None:
    labels = ("wrpCoordinateX1", "wrpCoordinateY1", "wrpCoordinateZ1", "wrpAnglePsi1", "wrpSourceName")
    species = put(tmp_path / "species.star", star_loop("", labels, ["300 400 200 0 TS_01.tomostar"]))
    tomo = coded_tomogram(tmp_path / "TS_01.mrc")
    line = assert_error(run_cli(classify(model_path, species, tomo, tmp_path / "o"), capsys), species)
    assert "Warp/M species particle file" in line and "does not read" in line, line


def test_relion5_2d_stack_extraction_is_named(model_path: Path, tmp_path: Path, capsys: Capsys) -> None:
    """A RELION 5 Extract particles.star of 2-D stacks is named as such; its picks' file (which
    RELION 5 also flags rlnTomoSubTomosAre2DStacks 1) and a 3-D listing pass."""
    from cryoshift.runtime.sources.picktables import refuse_2d_extraction

    general = "\ndata_general\n\n_rlnTomoSubTomosAre2DStacks 1\n"
    labels = ("rlnTomoName", *CENTRED, "rlnImageName")
    extracted = put(
        tmp_path / "x.star", general + star_loop("particles", labels, ["TS_01 0 0 0 Extract/1_stack2d.mrcs"])
    )
    with pytest.raises(InputError) as caught:
        refuse_2d_extraction(extracted)
    assert "Extract output of 2-D tilt-series stacks" in caught.value.reason
    assert "particles.star from the picking or refinement job" in caught.value.reason
    picks = put(tmp_path / "p.star", general + star_loop("particles", labels[:-1], ["TS_01 0 0 0"]))
    refuse_2d_extraction(picks)
    listing = put(tmp_path / "l.star", star_loop("particles", labels, ["TS_01 0 0 0 Extract/1_subtomo.mrc"]))
    refuse_2d_extraction(listing)
    # classify names it, with -t and without (it was "delete rlnImageName" or error rows)
    tomo = coded_tomogram(tmp_path / "TS_01.mrc")
    for given in ((tomo,), ()):
        argv = ["classify", str(model_path), str(extracted), "-o", str(tmp_path / "o")]
        argv += [a for t in given for a in ("-t", str(t))]
        line = assert_error(run_cli(argv, capsys), extracted)
        assert "Extract output of 2-D tilt-series stacks" in line, line


def test_decimal_commas_are_hinted(model_path: Path, tmp_path: Path, capsys: Capsys) -> None:
    table = put(tmp_path / "p.csv", "x,y,z,tomo\n12,5,3,5,4,5,TS_01\n13,5,3,5,4,5,TS_01\n")
    tomo = coded_tomogram(tmp_path / "TS_01.mrc")
    line = assert_error(run_cli(classify(model_path, table, tomo, tmp_path / "o"), capsys), table)
    assert (
        "every row has 7 fields where the header names 4 (lines 2, 3); "
        "decimal commas? write the table with ';' as separator" in line
    ), line


def test_imod_point_file_refusal_names_the_half_voxel(
    model_path: Path, tmp_path: Path, capsys: Capsys
) -> None:
    points = put(tmp_path / "TS_01.txt", "       30.50       40.50       20.00\n")
    tomo = coded_tomogram(tmp_path / "TS_01.mrc")
    line = assert_error(run_cli(classify(model_path, points, tomo, tmp_path / "o"), capsys), points)
    assert "IMOD point file (model2point" in line and "subtract 0.5 from x and y" in line, line
    # a comma table of numbers is no IMOD point file: no such hint
    other = put(tmp_path / "n.csv", "1,2,3\n4,5,6\n")
    line = assert_error(run_cli(classify(model_path, other, tomo, tmp_path / "o2"), capsys), other)
    assert "IMOD" not in line, line
