"""An un-rotated IMOD reconstruction (stored XZY: the MRC's Y axis is the specimen's thickness, as
IMOD's ``tilt`` writes it before ``trimvol -rx``) given with ``-t FOLDER`` was cropped with Y and Z
swapped, exit 0 and no word: every pick still fell inside, so the "outside their tomograms" hint
never spoke. Now such a tomogram's picks fail naming the file, its size and the remedy, the other
tomograms' picks are classified, and a tomograms.star stating that size lets it through.

Checked with the crop probe: each tomogram's voxel (x, y, z) holds its own coordinates, so the
centre voxel of each box says where it was cut.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from crop_probe import SHAPE, build_crop_probe, coded_tomogram, crop_centres
from hostile_inputs import Capsys, assert_error, errors_table, predictions, put, run_cli
from relion5_project import TOMOGRAM_LABELS, star_loop
from tiny_onnx import VOXEL

from cryoshift.runtime.errors import InputError
from cryoshift.runtime.mrc import write_volume
from cryoshift.runtime.tomograms import TomogramEntry, refuse_unrotated, unrotated_reason

PICKS = [(20, 24, 12), (12, 30, 10)]  # (x, y, z) voxels of a SHAPE (Z 24, Y 48, X 40) tomogram
BINNING = 4


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_crop_probe(tmp_path_factory.mktemp("probe") / "probe.onnx")


def xzy_tomogram(path: Path, k: int = 0) -> Path:
    """Coded tomogram number ``k`` of SHAPE stored XZY, as IMOD's tilt writes it: 40x24x48 voxels
    (X, Y, Z), its thickness on the MRC's Y axis; voxel (x, y, z) of the file holds its own
    coordinates, as every coded tomogram's does."""
    nz, ny, nx = SHAPE
    return coded_tomogram(path, k, shape=(ny, nz, nx))  # (Z, Y, X) = (48, 24, 40)


def classify(model: Path, picks: Path, tomograms: Path, out: Path) -> list[object]:
    return ["classify", model, picks, "-t", tomograms, "-o", out, "-b", "cpu", "--features"]


def pick_csv(path: Path, names: list[str], picks: list[tuple[int, int, int]] = PICKS) -> Path:
    rows = [f"{name},{x},{y},{z}" for name in names for x, y, z in picks]
    return put(path, "tomo,x,y,z\n" + "\n".join(rows) + "\n")


def test_unrotated_tomogram_fails_its_picks_and_the_others_are_classified(
    probe: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """TS_01_rec.mrc is XZY, TS_02.mrc is rotated: TS_01's picks were cut at (x, z, y) without a
    word. Now they are error rows naming the file, its size, why and the remedy; TS_02's are
    cropped where asked, and the run goes on (exit 0)."""
    rec = xzy_tomogram(tmp_path / "tomos" / "TS_01_rec.mrc")
    coded_tomogram(tmp_path / "tomos" / "TS_02.mrc", k=1)
    picks = pick_csv(tmp_path / "p.csv", ["TS_01", "TS_02"])
    out = tmp_path / "o"
    code, _, err = run_cli(classify(probe, picks, tmp_path / "tomos", out), capsys)
    assert code == 0, err
    assert set(predictions(out)["tomo_name"]) == {"TS_02"}
    assert sorted(crop_centres(out)) == sorted((1, *p) for p in PICKS)
    reasons = list(errors_table(out)["reason"])
    assert len(reasons) == 2, reasons
    for reason in reasons:
        assert str(rec) in reason, reason
        assert "it is 40x24x48 voxels (X, Y, Z)" in reason, reason
        assert "looks un-rotated (stored XZY" in reason and "trimvol -rx in.mrc out.mrc" in reason, reason
        assert "tomograms.star" in reason, reason


def test_unrotated_tomogram_alone_is_one_line(probe: Path, tmp_path: Path, capsys: Capsys) -> None:
    """RELION 5 centred-Angstrom picks against the XZY file alone (no tomograms.star): placed from
    the swapped shape's centre before; now the run stops in one line naming the file."""
    rec = xzy_tomogram(tmp_path / "tomos" / "TS_01_rec.mrc")
    labels = ("rlnTomoName", *(f"rlnCenteredCoordinate{a}Angst" for a in "XYZ"))
    nz, ny, nx = SHAPE
    centred = [((x - nx / 2) * VOXEL, (y - ny / 2) * VOXEL, (z - nz / 2) * VOXEL) for x, y, z in PICKS]
    rows = ["TS_01 " + " ".join(f"{a:g}" for a in xyz) for xyz in centred]
    picks = put(tmp_path / "particles.star", star_loop("particles", labels, rows))
    line = assert_error(run_cli(classify(probe, picks, tmp_path / "tomos", tmp_path / "o"), capsys), rec)
    assert "40x24x48 voxels (X, Y, Z)" in line and "looks un-rotated" in line, line
    assert not (tmp_path / "o" / "predictions.csv").exists()


def tomograms_star(root: Path, rec: Path, size_xyz: tuple[int, int, int]) -> Path:
    """A tomograms.star listing ``rec`` as TS_01 with rlnTomoSizeX/Y/Z ``size_xyz`` voxels x BINNING."""
    sizes = " ".join(str(n * BINNING) for n in size_xyz)
    row = f"TS_01 {VOXEL / BINNING:.6f} {BINNING:.6f} {sizes} {rec}"
    return put(root / "tomograms.star", star_loop("global", TOMOGRAM_LABELS, [row]))


def test_tomograms_star_stating_the_size_confirms_it(probe: Path, tmp_path: Path, capsys: Capsys) -> None:
    """A tomogram thin in Y on purpose: a tomograms.star whose sizes state 40x24x48 lets its picks
    through, each cut at the (x, y, z) of the file as given."""
    rec = xzy_tomogram(tmp_path / "tomos" / "TS_01_rec.mrc")
    table = tomograms_star(tmp_path, rec, (40, 24, 48))
    in_file = [(x, z, y) for x, y, z in PICKS]  # inside 40x24x48
    picks = pick_csv(tmp_path / "p.csv", ["TS_01"], in_file)
    out = tmp_path / "o"
    code, _, err = run_cli(classify(probe, picks, table, out), capsys)
    assert code == 0, err
    assert sorted(crop_centres(out)) == sorted((0, *p) for p in in_file)
    assert not (out / "errors.csv").exists() or errors_table(out).empty


def test_tomograms_star_of_another_size_does_not_confirm(probe: Path, tmp_path: Path, capsys: Capsys) -> None:
    """A table stating the rotated size (40x48x24) is no confirmation of the XZY file: refused,
    saying what the table gives."""
    rec = xzy_tomogram(tmp_path / "tomos" / "TS_01_rec.mrc")
    table = tomograms_star(tmp_path, rec, (40, 48, 24))
    picks = pick_csv(tmp_path / "p.csv", ["TS_01"])
    line = assert_error(run_cli(classify(probe, picks, table, tmp_path / "o"), capsys), rec)
    assert "looks un-rotated" in line and "tomograms.star gives 40x48x24" in line, line


@pytest.mark.parametrize(
    ("xyz", "flagged"),
    [
        ((88, 48, 72), True),  # the tester's XZY file: Y exactly 2/3 of Z
        ((928, 300, 928), True),  # a typical un-rotated bin-4 reconstruction
        ((928, 928, 300), False),  # the same rotated: Z thinnest
        ((100, 30, 90), True),
        ((100, 49, 72), False),  # Y more than 2/3 of Z: not clearly the thinnest
        ((64, 64, 64), False),
        ((400, 100, 120), False),  # Y thinnest but not well below Z
    ],
)
def test_threshold(xyz: tuple[int, int, int], flagged: bool) -> None:
    x, y, z = xyz
    assert bool(unrotated_reason((z, y, x))) is flagged


def test_refusal_names_the_file_and_a_matching_entry_confirms(tmp_path: Path) -> None:
    path = write_volume(tmp_path / "t.mrc", np.zeros((48, 24, 40), np.float32), voxel_size=VOXEL)
    with pytest.raises(InputError) as info:
        refuse_unrotated(path, (48, 24, 40))
    assert info.value.path == str(path)
    entry = TomogramEntry("t", path, VOXEL, VOXEL / 4, 4.0, (160.0, 96.0, 192.0))
    refuse_unrotated(path, (48, 24, 40), entry)  # the table states this size: no refusal
