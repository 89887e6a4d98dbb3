"""Round trips with RELION 5 files, written here the way RELION 5 writes them.

The headers follow RELION 5's own output: ``tomograms.star`` (data_global, one row per
tomogram: rlnTomoTiltSeriesPixelSize, rlnTomoTomogramBinning, rlnTomoSizeX/Y/Z,
rlnTomoReconstructedTomogram relative to the project directory) and a particles.star with
data_general (rlnTomoSubTomosAre2DStacks), data_optics and data_particles (rlnTomoName,
rlnCenteredCoordinateX/Y/ZAngst, angles, optics group, rlnTomoParticleName).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cryoshift.runtime.cli import main
from cryoshift.runtime.mrc import write_volume

SHAPE = (24, 48, 40)  # Z, Y, X voxels of each reconstruction
VOXEL = 10.0  # 2.5 A tilt series, binned 4x
PIXEL_PICKS = {  # pixel (x, y, z) in the reconstruction
    "TS_01": [(20.0, 24.0, 12.0), (12.0, 30.0, 10.0), (30.0, 16.0, 14.0), (25.0, 35.0, 9.0)],
    "TS_02": [(18.0, 20.0, 12.0), (28.0, 40.0, 11.0), (10.0, 10.0, 13.0)],
}


def _project(root: Path) -> dict[str, Path]:
    """A RELION 5 project: Tomograms/job006/{tomograms.star, tomograms/rec_TS_0N.mrc}, picks."""
    job = root / "Tomograms" / "job006"
    (job / "tomograms").mkdir(parents=True)
    rng = np.random.default_rng(3)
    rows = []
    for name in PIXEL_PICKS:
        write_volume(
            job / "tomograms" / f"rec_{name}.mrc",
            rng.normal(0, 1, SHAPE).astype(np.float32),
            voxel_size=VOXEL,
        )
        rows.append(
            f"{name} Tomograms/job006/tilt_series/{name}.star 300.000000 2.700000 0.100000 "
            f"2.500000 -1.000000 optics1 2.500000 4.000000 160 192 96 "
            f"Tomograms/job006/tomograms/rec_{name}.mrc"
        )
    labels = [
        "rlnTomoName",
        "rlnTomoTiltSeriesStarFile",
        "rlnVoltage",
        "rlnSphericalAberration",
        "rlnAmplitudeContrast",
        "rlnMicrographOriginalPixelSize",
        "rlnTomoHand",
        "rlnOpticsGroupName",
        "rlnTomoTiltSeriesPixelSize",
        "rlnTomoTomogramBinning",
        "rlnTomoSizeX",
        "rlnTomoSizeY",
        "rlnTomoSizeZ",
        "rlnTomoReconstructedTomogram",
    ]
    tomograms = job / "tomograms.star"
    tomograms.write_text(
        "\n# version 50001\n\ndata_global\n\nloop_ \n"
        + "".join(f"_{label} #{i} \n" for i, label in enumerate(labels, 1))
        + "\n".join(rows)
        + "\n\n"
    )
    size = np.array(SHAPE[::-1], dtype=float)
    particles, unbinned = [], []
    n = 0
    for name, picks in PIXEL_PICKS.items():
        for x, y, z in picks:
            n += 1
            centred = (np.array([x, y, z]) - size / 2) * VOXEL
            particles.append(
                f"{name} {centred[0]:.6f} {centred[1]:.6f} {centred[2]:.6f} {10.0 * n:.6f} "
                f"{90.0:.6f} {-30.0 + n:.6f} 1 {name}/{n} {0.5 + n / 100:.6f}"
            )
            unbinned.append(f"{name} {4 * x:.6f} {4 * y:.6f} {4 * z:.6f} {10.0 * n:.6f}")
    picks = root / "Picks" / "job007" / "particles.star"
    picks.parent.mkdir(parents=True)
    plabels = [
        "rlnTomoName",
        "rlnCenteredCoordinateXAngst",
        "rlnCenteredCoordinateYAngst",
        "rlnCenteredCoordinateZAngst",
        "rlnAngleRot",
        "rlnAngleTilt",
        "rlnAnglePsi",
        "rlnOpticsGroup",
        "rlnTomoParticleName",
        "rlnAutopickFigureOfMerit",
    ]
    picks.write_text(
        "\n# version 50001\n\ndata_general\n\n_rlnTomoSubTomosAre2DStacks                       1\n\n"
        "\n# version 50001\n\ndata_optics\n\nloop_ \n_rlnOpticsGroup #1 \n_rlnOpticsGroupName #2 \n"
        "_rlnSphericalAberration #3 \n_rlnVoltage #4 \n_rlnTomoTiltSeriesPixelSize #5 \n"
        "_rlnAmplitudeContrast #6 \n"
        "           1    optics1     2.700000   300.000000     2.500000     0.100000 \n"
        "\n\n# version 50001\n\ndata_particles\n\nloop_ \n"
        + "".join(f"_{label} #{i} \n" for i, label in enumerate(plabels, 1))
        + "\n".join(particles)
        + "\n\n"
    )
    relion4 = root / "relion4_picks.star"
    relion4.write_text(
        "\ndata_particles\n\nloop_\n_rlnTomoName #1\n_rlnCoordinateX #2\n_rlnCoordinateY #3\n"
        "_rlnCoordinateZ #4\n_rlnAngleRot #5\n" + "\n".join(unbinned) + "\n\n"
    )
    return {"tomograms": tomograms, "picks": picks, "relion4": relion4}


@pytest.fixture()
def project(tmp_path: Path) -> dict[str, Path]:
    return _project(tmp_path / "relion")


def _run(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_tomograms_star_and_centred_picks_round_trip(model_path, project, tmp_path, capsys, monkeypatch):
    import starfile

    from cryoshift.runtime.results import read_results

    monkeypatch.chdir(tmp_path)  # paths in tomograms.star are found from the STAR, not the cwd
    out = tmp_path / "out"
    _run(
        [
            "classify",
            str(model_path),
            str(project["picks"]),
            "-t",
            str(project["tomograms"]),
            "-o",
            str(out),
            "-b",
            "cpu",
            "--split-by-class",
            "-q",
        ],
        capsys,
    )
    csv = read_results(out / "predictions.csv")
    assert len(csv) == 7
    # Centred Angstrom -> reconstruction voxels with the tomograms.star pixel size (2.5 A x bin 4).
    got = {(r.tomo_name, r.x, r.y, r.z) for r in csv.itertuples()}
    assert got == {(n, *p) for n, picks in PIXEL_PICKS.items() for p in picks}

    src = starfile.read(project["picks"], always_dict=True)
    res = starfile.read(out / "predictions.star", always_dict=True)
    assert list(res) == ["general", "optics", "particles"]  # RELION 5's blocks, in its order
    assert res["general"] == src["general"]
    pd.testing.assert_frame_equal(res["optics"], src["optics"], check_dtype=False)
    particles, original = res["particles"], src["particles"]
    assert list(particles.columns[: len(original.columns)]) == list(original.columns)  # every input column
    pd.testing.assert_frame_equal(particles[original.columns], original, check_dtype=False)
    assert "rlnImageName" not in particles and "rlnCoordinateX" not in particles  # centred in, centred out
    assert {"rlnClassNumber", "csClassName", "csConfidence", "csShiftScore", "csId"} <= set(particles.columns)
    by_id = csv.set_index("id")
    for row in particles.itertuples():
        expected = by_id.loc[row.csId]
        assert row.csClassName == expected["class_name"]
        assert row.rlnClassNumber == (expected["class_index"] + 1 if expected["class_index"] >= 0 else 0)
    # The STAR reads back as the same results (ids, classes, confidences).
    back = read_results(out / "predictions.star").set_index("id").loc[csv["id"]]
    np.testing.assert_allclose(back["confidence"], csv["confidence"].to_numpy(), rtol=1e-7)
    # One STAR per class, each with the optics block, together exactly the rows.
    split = sorted(out.glob("predictions_*.star"))
    assert split and sum(len(starfile.read(p, always_dict=True)["particles"]) for p in split) == 7
    for p in split:
        blocks = starfile.read(p, always_dict=True)
        assert "optics" in blocks and blocks["particles"]["csClassName"].nunique() == 1
    # Per-tomogram class counts in the manifest.
    import json

    manifest = json.loads((out / "manifest.json").read_text())
    assert {k: sum(v.values()) for k, v in manifest["tomograms"].items()} == {"TS_01": 4, "TS_02": 3}
    # predictions.star is itself a RELION 5 picks file: classify it again, same answers.
    again = tmp_path / "again"
    _run(
        [
            "classify",
            str(model_path),
            str(out / "predictions.star"),
            "-t",
            str(project["tomograms"]),
            "-o",
            str(again),
            "-b",
            "cpu",
            "-q",
        ],
        capsys,
    )
    second = read_results(again / "predictions.csv").set_index("id").loc[csv["id"]]
    assert list(second["class_name"]) == list(csv["class_name"])


def test_unbinned_pixel_picks_are_refused_and_binning_fixes_them(model_path, project, tmp_path, capsys):
    from cryoshift.runtime.results import read_results

    raw = ["classify", str(model_path), str(project["relion4"]), "-t", str(project["tomograms"])]
    code = main([*raw, "-o", str(tmp_path / "raw"), "-b", "cpu"])
    out, err = capsys.readouterr()
    # tomograms.star says the tilt series has 2.5 A pixels binned 4x: pixel picks are refused up
    # front, offering both readings (they were cropped as voxels, every pick outside, and hinted)
    assert code == 2 and "tomograms.star gives rlnTomoTiltSeriesPixelSize 2.5 A (binning 4)" in err
    assert "--coordinate-pixel-size 2.5 if they are tilt-series pixels" in err, out
    for flag in (["--binning", "4"], ["--coordinate-pixel-size", "2.5"]):
        _run(
            [
                "classify",
                str(model_path),
                str(project["relion4"]),
                "-t",
                str(project["tomograms"]),
                "-o",
                str(tmp_path / flag[0][2:]),
                "-b",
                "cpu",
                "-q",
                *flag,
            ],
            capsys,
        )
        csv = read_results(tmp_path / flag[0][2:] / "predictions.csv")
        assert {(r.tomo_name, r.x, r.y, r.z) for r in csv.itertuples()} == {
            (n, *p) for n, picks in PIXEL_PICKS.items() for p in picks
        }
        import starfile

        star = starfile.read(tmp_path / flag[0][2:] / "predictions.star")
        assert star["rlnCoordinateX"].max() > SHAPE[2]  # the input's own (unbinned) coordinates stay


def test_listing_keeps_image_name_and_mrc_rows_name_their_file(model_path, inputs, tmp_path):
    import starfile

    from cryoshift.runtime import classify

    classify(
        model_path,
        [str(inputs["listing"]), str(inputs["files"] / "sub_03.mrc")],
        tmp_path / "o",
        backend="cpu",
        progress=False,
    )
    star = starfile.read(tmp_path / "o" / "predictions.star")
    listed = starfile.read(inputs["listing"])
    assert list(star["rlnImageName"][: len(listed)]) == list(listed["rlnImageName"])  # the input's own text
    assert star["rlnImageName"].iloc[-1].endswith("sub_03.mrc")


def test_tomogram_table_with_several_unnamed_blocks_is_refused(tmp_path):
    """Without data_global, two blocks that both list tomograms leave the choice to a guess."""
    from cryoshift.runtime.errors import InputError
    from cryoshift.runtime.tomograms import read_tomogram_table

    block = "loop_\n_rlnTomoName\n_rlnTomoReconstructedTomogram\n{0} {0}.mrc\n"
    one = tmp_path / "one.star"
    one.write_text("data_tomos\n\n" + block.format("TS_01"))
    assert [e.name for e in read_tomogram_table(one)] == ["TS_01"]
    two = tmp_path / "two.star"
    two.write_text("data_a\n\n" + block.format("TS_01") + "\ndata_b\n\n" + block.format("TS_02"))
    with pytest.raises(InputError, match="several blocks list tomograms"):
        read_tomogram_table(two)
    named = tmp_path / "named.star"
    named.write_text("data_global\n\n" + block.format("TS_02") + "\ndata_b\n\n" + block.format("TS_01"))
    assert [e.name for e in read_tomogram_table(named)] == ["TS_02"]


def _set_binning(tomograms: Path, name: str, binning: str) -> None:
    lines = tomograms.read_text().splitlines()
    lines = [
        ln.replace(" 2.500000 4.000000 ", f" 2.500000 {binning} ") if ln.startswith(name) else ln
        for ln in lines
    ]
    tomograms.write_text("\n".join(lines) + "\n")


def test_tomograms_star_voxel_size_must_agree_with_the_header(model_path, project, tmp_path, capsys):
    """tomograms.star saying 2.5 A x 2 = 5 A for a reconstruction whose header says 10 A: the
    centred-Angstrom picks were converted with 5 A and cropped elsewhere, without a word."""
    from cryoshift.runtime.results import read_results

    _set_binning(project["tomograms"], "TS_02", "2.000000")
    out = tmp_path / "out"
    argv = ["classify", str(model_path), str(project["picks"]), "-t", str(project["tomograms"])]
    _run([*argv, "-o", str(out), "-b", "cpu", "-q"], capsys)
    assert len(read_results(out / "predictions.csv")) == len(PIXEL_PICKS["TS_01"])
    errors = read_results(out / "errors.csv")
    assert len(errors) == len(PIXEL_PICKS["TS_02"])
    assert all("header says 10 A per voxel but tomograms.star gives 5 A" in r for r in errors["reason"])


@pytest.mark.parametrize("binning", ["0.000000", "-4.000000"])
def test_tomograms_star_binning_must_be_positive(model_path, project, tmp_path, capsys, binning):
    """A binning of 0 was read as 1 (picks placed 4x off and reported only as outside). Then the
    whole run was refused for one damaged row; now only that tomogram's picks fail, each naming
    the table, the row and the value, and the other tomogram's picks are classified."""
    from cryoshift.runtime.results import read_results

    _set_binning(project["tomograms"], "TS_02", binning)
    out = tmp_path / "out"
    argv = ["classify", str(model_path), str(project["picks"]), "-t", str(project["tomograms"])]
    _run([*argv, "-o", str(out), "-b", "cpu", "-q"], capsys)
    assert set(read_results(out / "predictions.csv")["tomo_name"]) == {"TS_01"}
    reasons = read_results(out / "errors.csv")["reason"].tolist()
    assert len(reasons) == len(PIXEL_PICKS["TS_02"])
    for reason in reasons:
        # line 22: the file's line of TS_02's row (14 labels from line 7)
        assert f"{project['tomograms']}: line 22: tomogram 'TS_02' has rlnTomoTomogramBinning" in reason, (
            reason
        )
        assert "positive" in reason, reason


@pytest.mark.parametrize("star_first", [True, False])
def test_tomograms_star_and_mrc_of_one_name_fail_only_their_picks(
    model_path, project, tmp_path, capsys, star_first
):
    """A tomograms.star row and an MRC file both named TS_01: the STAR row replaced the MRC without
    a word (given after it). Now, as for two MRC files of one name, the picks of TS_01 fail naming
    both sources, and the picks of TS_02 are classified."""
    from cryoshift.runtime.results import read_results

    other = tmp_path / "other" / "TS_01.mrc"
    other.parent.mkdir()
    write_volume(other, np.random.default_rng(9).normal(0, 1, SHAPE).astype(np.float32), voxel_size=VOXEL)
    sources = [str(project["tomograms"]), str(other)]
    tomograms = [a for s in (sources if star_first else sources[::-1]) for a in ("-t", s)]
    out = tmp_path / "out"
    _run(
        ["classify", str(model_path), str(project["picks"]), *tomograms, "-o", str(out), "-b", "cpu", "-q"],
        capsys,
    )
    assert set(read_results(out / "predictions.csv")["tomo_name"]) == {"TS_02"}
    reasons = read_results(out / "errors.csv")["reason"].tolist()
    rec = project["tomograms"].parent / "tomograms" / "rec_TS_01.mrc"
    assert len(reasons) == len(PIXEL_PICKS["TS_01"])
    for reason in reasons:
        assert "'TS_01' is ambiguous" in reason and str(other) in reason, reason
        assert f"{rec} (rlnTomoName in {project['tomograms']})" in reason, reason


def test_an_absurd_pick_does_not_make_the_binning_hint_absurd() -> None:
    """The hint's factor was the largest coordinate over the tomogram's size: one pick at 1e308
    among picks binned by 4 made it "look 156250...x too large" (a 300-digit number)."""
    from cryoshift.runtime.tomograms import outside_hint_arrays

    rng = np.random.default_rng(0)
    shape = (50, 100, 100)  # Z, Y, X voxels
    xyz = rng.uniform(0, 1, (40, 3)) * np.array([400.0, 400.0, 200.0])  # picks of a 4x unbinned frame
    xyz[0] = (1e308, 5.0, 5.0)
    hint = outside_hint_arrays("p.star", xyz, np.zeros(40, np.int32), {0: shape})
    assert hint is not None and "look 4x too large" in hint and "--binning 4" in hint, hint
    far = np.full((5, 3), 1e9)  # no binning explains these
    hint = outside_hint_arrays("p.star", far, np.zeros(5, np.int32), {0: shape})
    assert hint is not None and "which no binning explains" in hint and "e+" not in hint, hint


def test_binning_given_for_centred_angstrom_picks_is_said_unused(model_path, project, tmp_path, capsys):
    """Centred-Angstrom picks are placed with each tomogram's voxel size, so --binning does not
    apply: it was ignored without a word, and a user who gave it may think their picks scaled."""
    from cryoshift.runtime.results import read_results

    argv = ["classify", str(model_path), str(project["picks"]), "-t", str(project["tomograms"]), "-b", "cpu"]
    code = main([*argv, "-o", str(tmp_path / "binned"), "--binning", "4"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "--binning applies to pixel coordinates only and is not used" in out + err
    assert len(read_results(tmp_path / "binned" / "predictions.csv")) == 7
