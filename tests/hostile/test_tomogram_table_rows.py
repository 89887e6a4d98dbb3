"""Damaged rows of a RELION 5 ``tomograms.star`` given to classify with ``--tomograms``, and the
table described by ``cryoshift info``.

One row whose pixel size or binning was 0, negative or text refused the whole run, the good
tomograms' picks included; a NaN there was read as "not given" and the header's voxel size used
without a word. Now such a row fails only its own tomogram's picks, each an error row naming the
table, the row and the value; a table with no usable row, or a column given twice, is refused in
one line. Files are written as RELION 5 writes them (see tests/runtime/test_relion5.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from hostile_inputs import Capsys, assert_error, errors_table, predictions, run_cli
from relion5_project import TOMOGRAM_LABELS, write_project
from tiny_onnx import linear_model

SHAPE = (24, 48, 40)  # Z, Y, X voxels of each reconstruction
VOXEL = 10.0  # 2.5 A tilt series binned 4x
PICKS = {  # voxels (x, y, z) of the 10 A reconstructions
    "TS_01": [(20.0, 24.0, 12.0), (12.0, 30.0, 10.0)],
    "TS_02": [(18.0, 20.0, 12.0), (28.0, 40.0, 11.0), (10.0, 10.0, 13.0)],
}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return linear_model(tmp_path_factory.mktemp("model") / "linear.onnx")


def _project(
    root: Path,
    values: dict[str, dict[str, str]] | None = None,
    labels: Sequence[str] = TOMOGRAM_LABELS,
    written: tuple[str, ...] = tuple(PICKS),
) -> tuple[Path, Path]:
    """The project of :func:`relion5_project.write_project`; ``values`` replaces a tomogram's
    pixel size or binning text, ``written`` are the reconstructions written."""
    return write_project(root, PICKS, SHAPE, VOXEL, fields=values, labels=labels, written=written)


def _classify(model: Path, picks: Path, tomograms: Path, out: Path) -> list[object]:
    return ["classify", model, picks, "-t", tomograms, "-o", out, "-q", "-b", "cpu"]


def _only_ts01_classified(out: Path, tomograms: Path, column: str, shown: str) -> None:
    assert set(predictions(out)["tomo_name"]) == {"TS_01"}
    reasons = errors_table(out)["reason"].tolist()
    assert len(reasons) == len(PICKS["TS_02"]), reasons
    for reason in reasons:
        assert reason.startswith(f"{tomograms}: row 1: tomogram 'TS_02' has {column} {shown}"), reason
        assert "it must be a positive number" in reason, reason


@pytest.mark.parametrize(
    ("column", "value", "shown"),
    [
        ("rlnTomoTiltSeriesPixelSize", "-2.500000", "-2.5"),
        ("rlnTomoTomogramBinning", "four", "'four'"),
    ],
)
def test_one_damaged_row_fails_only_its_tomograms_picks(
    model: Path, tmp_path: Path, capsys: Capsys, column: str, value: str, shown: str
) -> None:
    """TS_02's row has a negative pixel size or a binning in words: the whole run was refused
    (exit 2), TS_01's good picks with it. Now TS_02's picks are error rows naming the table, the
    row and the value, and TS_01's are classified."""
    tomograms, particles = _project(tmp_path / "relion", {"TS_02": {column: value}})
    out = tmp_path / "out"
    code, _, err = run_cli(_classify(model, particles, tomograms, out), capsys)
    assert code == 0, err
    _only_ts01_classified(out, tomograms, column, shown)


@pytest.mark.parametrize("column", ["rlnTomoTiltSeriesPixelSize", "rlnTomoTomogramBinning"])
def test_nan_pixel_size_or_binning_is_damaged_not_missing(
    model: Path, tmp_path: Path, capsys: Capsys, column: str
) -> None:
    """NaN in TS_02's pixel size or binning was read as "not given": the header's voxel size was
    used without a word, though the row says nothing usable. Now it is a damaged value of that
    row, as 0 is; an absent column still means "not given" (tested in
    test_warp_relion5_inputs.py::test_tomograms_star_without_binning_takes_the_header)."""
    tomograms, particles = _project(tmp_path / "relion", {"TS_02": {column: "nan"}})
    out = tmp_path / "out"
    code, _, err = run_cli(_classify(model, particles, tomograms, out), capsys)
    assert code == 0, err
    _only_ts01_classified(out, tomograms, column, "nan")


def test_a_table_whose_every_row_is_damaged_is_refused_in_one_line(
    model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """No row usable: nothing can be classified, so the table is refused in one line saying so
    (it named only the first row, as if the others were fine)."""
    bad = {"rlnTomoTomogramBinning": "0.000000"}
    tomograms, particles = _project(tmp_path / "relion", {"TS_01": bad, "TS_02": bad})
    line = assert_error(run_cli(_classify(model, particles, tomograms, tmp_path / "out"), capsys), tomograms)
    assert "no usable tomogram: every row is damaged (2 in all), first row 0: tomogram 'TS_01'" in line, line
    assert "rlnTomoTomogramBinning 0.0; it must be a positive number" in line, line


def test_a_column_given_twice_is_refused_in_one_line(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    """rlnTomoTomogramBinning listed twice: the refusal printed a pandas Series ("Name: 0, dtype:
    object") as the value; which of the two columns is meant is a guess, so say that."""
    labels = [*TOMOGRAM_LABELS[:3], "rlnTomoTomogramBinning", *TOMOGRAM_LABELS[3:]]
    tomograms, particles = _project(tmp_path / "relion", labels=labels)
    line = assert_error(run_cli(_classify(model, particles, tomograms, tmp_path / "out"), capsys), tomograms)
    assert "column rlnTomoTomogramBinning is given twice; keep one" in line, line
    assert "dtype" not in line, line


def test_info_describes_a_tomograms_star(tmp_path: Path, capsys: Capsys) -> None:
    """``cryoshift info tomograms.star`` printed classify's advice ("give it with --tomograms")
    and exit 2: it now says what the table holds, and --validate lists the unusable tomograms."""
    from cryoshift.runtime.info import describe

    tomograms, _ = _project(
        tmp_path / "relion",
        {"TS_02": {"rlnTomoTomogramBinning": "nan"}},
        written=("TS_01",),
    )
    desc = describe(tomograms)
    rows = dict(desc.rows)
    assert desc.kind == "tomograms", desc
    assert rows["tomograms"] == "2: TS_01, TS_02", rows
    assert rows["voxel size"] == "2.5 A x binning 4 = 10 A: 1", rows
    assert rows["reconstructions"].startswith("1 found, 1 missing (first: TS_02 "), rows
    assert rows["damaged rows"].startswith(
        "1 (their picks fail in classify; first: row 1: tomogram 'TS_02'"
    ), rows
    assert "rlnTomoTomogramBinning nan" in rows["damaged rows"], rows

    code, out, err = run_cli(["info", tomograms], capsys)
    assert code == 0, err
    assert "tomogram table" in out and "--tomograms" in out
    code, out, _ = run_cli(["info", "--validate", tomograms], capsys)
    assert code == 1, out
    lines = out.splitlines()
    assert len(lines) == 2, lines
    assert "row 1: tomogram 'TS_02' has rlnTomoTomogramBinning nan" in lines[0], lines
    assert "rec_TS_02.mrc not found" in lines[1], lines
