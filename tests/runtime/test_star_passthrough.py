"""predictions.star carries its input as written and reads back as RELION 5 picks.

Bugs covered: classifying cryoshift's own predictions.star again wrote ``csInputClassNumber``
twice (a STAR cryoshift then refused); input columns were re-printed with 9 digits in tables
under 100,000 rows (``0007`` -> ``7``, long numbers collapsed); the STAR of CSV picks held only
binned voxel coordinates, which cryoshift itself refused with the same ``-t tomograms.star``;
mixed inputs wrote ``<NA>`` cells without a word; a name holding ``"`` was written in CSV's
quoting (``"TS""02"``), not STAR's.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import starfile
from relion5_project import TOMOGRAM_LABELS, star_loop

from cryoshift.runtime.cli import main
from cryoshift.runtime.mrc import write_volume
from cryoshift.runtime.results import read_predictions, read_results
from cryoshift.runtime.star_out import write_predictions_star

SHAPE = (24, 48, 40)  # Z, Y, X voxels of each reconstruction
VOXEL = 10.0  # 2.5 A tilt series, binned 4x
PICKS = {"TS_01": [(20.0, 24.0, 12.0), (12.0, 30.0, 10.0), (30.0, 16.0, 14.0)], "TS_02": [(18.0, 20.0, 12.0)]}
# Input text that a re-print as numbers changes: leading zeros, a long float, float digits.
KEPT = {
    "myBarcode": "0007",
    "myFloatId": "1234567890123.5",
    "rlnAngleRot": "32.458010866358",
    "rlnLogLikeliContribution": "1.23456789012345e+05",
}


def _tomograms(root: Path) -> Path:
    """A RELION 5 tomograms.star (2.5 A x binning 4, sizes matching the MRCs) and its MRCs."""
    rng = np.random.default_rng(5)
    rows = []
    for name in PICKS:
        mrc = root / f"rec_{name}.mrc"
        write_volume(mrc, rng.normal(0, 1, SHAPE).astype(np.float32), voxel_size=VOXEL)
        rows.append(f"{name} 2.500000 4.000000 160 192 96 rec_{name}.mrc")
    star = root / "tomograms.star"
    star.write_text(star_loop("global", TOMOGRAM_LABELS, rows))
    return star


def _centred(x: float, y: float, z: float) -> list[float]:
    size = np.array(SHAPE[::-1], dtype=float)
    return list((np.array([x, y, z]) - size / 2) * VOXEL)


def _picks_star(path: Path) -> Path:
    """RELION 5 picks with data_optics, rlnClassNumber and the text of :data:`KEPT`."""
    labels = [
        "rlnTomoName",
        "rlnCenteredCoordinateXAngst",
        "rlnCenteredCoordinateYAngst",
        "rlnCenteredCoordinateZAngst",
        "rlnOpticsGroup",
        "rlnClassNumber",
        *KEPT,
    ]
    rows = []
    for k, (name, x, y, z) in enumerate((n, *p) for n, ps in PICKS.items() for p in ps):
        cx, cy, cz = _centred(x, y, z)
        rows.append(f"{name}\t{cx:.6f}\t{cy:.6f}\t{cz:.6f}\t1\t{k % 3 + 1}\t" + "\t".join(KEPT.values()))
    path.write_text(
        "data_optics\n\nloop_\n_rlnOpticsGroup #1\n_rlnTomoTiltSeriesPixelSize #2\n1\t2.500000\n\n"
        "data_particles\n\nloop_\n"
        + "".join(f"_{label} #{i}\n" for i, label in enumerate(labels, 1))
        + "\n".join(rows)
        + "\n\n"
    )
    return path


def _classify(model: Path, inputs: list[Path], tomograms: Path, out: Path, capsys) -> str:
    code = main(
        ["classify", str(model), *map(str, inputs), "-t", str(tomograms), "-o", str(out), "-b", "cpu"]
    )
    stdout, err = capsys.readouterr()
    assert code == 0, err
    return stdout


def _labels(star: Path) -> list[str]:
    """The labels of the particles block, as written (starfile would hide a repeated one)."""
    lines = star.read_text().split("data_particles", 1)[1].splitlines()
    return [line.split()[0][1:] for line in lines if line.startswith("_")]


def test_reclassified_output_keeps_unique_labels(model_path: Path, tmp_path: Path, capsys) -> None:
    """Classifying predictions.star again, twice: every label once; the user's class stays in
    csInputClassNumber and each previous run's class under the next free number."""
    tomograms = _tomograms(tmp_path)
    picks = _picks_star(tmp_path / "particles.star")
    _classify(model_path, [picks], tomograms, tmp_path / "r1", capsys)
    _classify(model_path, [tmp_path / "r1" / "predictions.star"], tomograms, tmp_path / "r2", capsys)
    _classify(model_path, [tmp_path / "r2" / "predictions.star"], tomograms, tmp_path / "r3", capsys)
    original = starfile.read(picks, always_dict=True)["particles"]
    first = starfile.read(tmp_path / "r1" / "predictions.star", always_dict=True)["particles"]
    second = starfile.read(tmp_path / "r2" / "predictions.star", always_dict=True)["particles"]
    third_star = tmp_path / "r3" / "predictions.star"
    third = starfile.read(third_star, always_dict=True)["particles"]
    for star in ("r2", "r3"):
        labels = _labels(tmp_path / star / "predictions.star")
        assert not [c for c, n in Counter(labels).items() if n > 1], labels
    assert third.columns.is_unique
    assert list(third["csInputClassNumber"]) == list(original["rlnClassNumber"])
    assert list(third["csInputClassNumber2"]) == list(first["rlnClassNumber"])
    assert list(third["csInputClassNumber3"]) == list(second["rlnClassNumber"])
    assert "csInputClassNumber4" not in third


def test_input_text_is_kept_exactly(model_path: Path, tmp_path: Path, capsys) -> None:
    """Leading zeros, long numbers and every float digit come out as written, and so do the
    optics block's values (bug: re-printed with 9 significant digits)."""
    tomograms = _tomograms(tmp_path)
    picks = _picks_star(tmp_path / "particles.star")
    _classify(model_path, [picks], tomograms, tmp_path / "out", capsys)
    star = tmp_path / "out" / "predictions.star"
    labels = _labels(star)
    rows = [line.split("\t") for line in star.read_text().splitlines() if line.startswith("TS_")]
    assert len(rows) == 4
    for label, text in KEPT.items():
        assert {row[labels.index(label)] for row in rows} == {text}
    assert "2.500000" in star.read_text()  # data_optics text too
    source = [line.split("\t") for line in picks.read_text().splitlines() if line.startswith("TS_")]
    for k in range(1, 4):  # the centred coordinates' text, -1000.000000 not -1000
        assert [r[labels.index(f"rlnCenteredCoordinate{'XYZ'[k - 1]}Angst")] for r in rows] == [
            s[k] for s in source
        ]


def _csv_picks(path: Path) -> Path:
    lines = [
        "rlnTomoName,rlnCenteredCoordinateXAngst,rlnCenteredCoordinateYAngst,rlnCenteredCoordinateZAngst"
    ]
    for name, picks in PICKS.items():
        for p in picks:
            lines.append(",".join([name, *(f"{v:g}" for v in _centred(*p))]))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_picks_star_reads_back_with_the_same_tomograms(model_path: Path, tmp_path: Path, capsys) -> None:
    """The STAR of CSV picks carries rlnCenteredCoordinate*Angst, so classifying it again with
    the same -t tomograms.star crops the same voxels and gives the same classes (bug: refused,
    its binned voxel coordinates taken for tilt-series pixels)."""
    tomograms = _tomograms(tmp_path)
    _classify(model_path, [_csv_picks(tmp_path / "picks.csv")], tomograms, tmp_path / "a", capsys)
    star = tmp_path / "a" / "predictions.star"
    blocks = starfile.read(star, always_dict=True)
    assert list(blocks) == ["particles"]  # no data_optics made up
    particles = blocks["particles"]
    expected = [_centred(*p) for ps in PICKS.values() for p in ps]
    got = particles[
        ["rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst", "rlnCenteredCoordinateZAngst"]
    ]
    np.testing.assert_allclose(got.to_numpy(), expected, atol=1e-6)
    _classify(model_path, [star], tomograms, tmp_path / "b", capsys)
    first = read_results(tmp_path / "a" / "predictions.csv")
    second = read_results(tmp_path / "b" / "predictions.csv")
    key = ["tomo_name", "x", "y", "z"]
    pd.testing.assert_frame_equal(
        first[[*key, "class_name", "confidence"]],
        second[[*key, "class_name", "confidence"]],
        check_dtype=False,
    )
    assert list(first[key].itertuples(index=False, name=None)) == [
        (n, *p) for n, ps in PICKS.items() for p in ps
    ]


def test_mixed_inputs_are_noted(model_path: Path, tmp_path: Path, capsys) -> None:
    """A pick STAR with an MRC file: the MRC's row has <NA> in the RELION number columns, and
    write_predictions_star says so in a note (classify prints the run's notes)."""
    tomograms = _tomograms(tmp_path)
    picks = _picks_star(tmp_path / "particles.star")
    sub = tmp_path / "sub.mrc"
    write_volume(
        sub, np.random.default_rng(1).normal(0, 1, (16, 16, 16)).astype(np.float32), voxel_size=VOXEL
    )
    out = tmp_path / "out"
    _classify(model_path, [picks, sub], tomograms, out, capsys)
    star = out / "predictions.star"
    mrc_row = [line for line in star.read_text().splitlines() if "sub.mrc" in line]
    assert mrc_row and "<NA>" in mrc_row[0]
    table = pd.read_csv(out / "predictions.csv", dtype=str, keep_default_na=False)
    origins = [(str(picks), list(table["id"][table["tomo_name"] != ""]))]  # as classify plans them
    notes: list[str] = []
    write_predictions_star(out / "predictions.csv", tmp_path / "again.star", origins, notes=notes)
    assert len(notes) == 1 and "1 of 5 rows" in notes[0] and "RELION" in notes[0], notes
    table[table["tomo_name"] != ""].to_csv(tmp_path / "picks_only.csv", index=False)
    none: list[str] = []
    write_predictions_star(tmp_path / "picks_only.csv", tmp_path / "p.star", origins, notes=none)
    assert none == []


@pytest.mark.parametrize("name", ['TS"02', 'a "b" c'])
def test_a_name_with_a_double_quote(tmp_path: Path, name: str) -> None:
    """``TS"02`` is written bare (STAR: a quote inside a bare value is text), not CSV's
    ``"TS""02"``, and reads back through starfile and cryoshift's readers. ``a "b" c`` must be
    quoted, and no quoting of it reads back as written in both RELION and starfile: its row is
    left out, named in a note (predictions.csv keeps it)."""
    results = tmp_path / "predictions.csv"
    pd.DataFrame(
        {
            "id": [f"{name}:1.0,2.0,3.0"],
            "tomo_name": [name],
            "x": [1.0],
            "y": [2.0],
            "z": [3.0],
            "class_index": [0],
            "class_name": ["a"],
            "best_class": ["a"],
            "unknown": [0],
            "confidence": [0.75],
            "shift_score": [1.0],
            "prob_a": [0.75],
            "prob_b": [0.25],
        }
    ).to_csv(results, index=False)
    star = tmp_path / "predictions.star"
    notes: list[str] = []
    write_predictions_star(results, star, notes=notes)
    if " " in name:
        assert len(notes) == 1 and f"left out {name + ':1.0,2.0,3.0'!r}" in notes[0], notes
        assert name not in star.read_text() and '"a' not in star.read_text()
        assert len(starfile.read(star, always_dict=True)["particles"]) == 0
        return
    assert notes == []
    row = next(line for line in star.read_text().splitlines() if line.startswith("TS"))
    assert row.split("\t")[0] == name
    table = starfile.read(star, always_dict=True, parse_as_string=["rlnTomoName", "csId"])["particles"]
    assert list(table["rlnTomoName"]) == [name]
    assert list(read_predictions(star)["rlnTomoName"]) == [name]  # its row checks pass too


def test_relion4_pixel_picks_gain_centred_coordinates(model_path: Path, tmp_path: Path, capsys) -> None:
    """RELION 4 picks (unbinned tilt-series pixels, --binning 4) keep their pixel columns as
    written and gain rlnCenteredCoordinate*Angst that agree with them: classified again with the
    same options, the same voxels are cropped."""
    tomograms = _tomograms(tmp_path)
    rows = [f"{n}\t{4 * x:.6f}\t{4 * y:.6f}\t{4 * z:.6f}" for n, ps in PICKS.items() for x, y, z in ps]
    picks = tmp_path / "relion4.star"
    picks.write_text(
        "data_particles\n\nloop_\n_rlnTomoName #1\n_rlnCoordinateX #2\n_rlnCoordinateY #3\n"
        "_rlnCoordinateZ #4\n" + "\n".join(rows) + "\n\n"
    )
    options = ["-t", str(tomograms), "-b", "cpu", "--binning", "4", "-q"]
    assert main(["classify", str(model_path), str(picks), "-o", str(tmp_path / "a"), *options]) == 0
    star = tmp_path / "a" / "predictions.star"
    particles = starfile.read(star, always_dict=True)["particles"]
    expected = [_centred(*p) for ps in PICKS.values() for p in ps]
    centred = [f"rlnCenteredCoordinate{a}Angst" for a in "XYZ"]
    np.testing.assert_allclose(particles[centred].to_numpy(), expected, atol=1e-6)
    assert main(["classify", str(model_path), str(star), "-o", str(tmp_path / "b"), *options]) == 0
    capsys.readouterr()
    first = read_results(tmp_path / "a" / "predictions.csv")
    second = read_results(tmp_path / "b" / "predictions.csv")
    key = ["tomo_name", "x", "y", "z", "class_name"]
    pd.testing.assert_frame_equal(first[key], second[key], check_dtype=False)
