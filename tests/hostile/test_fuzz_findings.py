"""Findings of a fuzz tester, each through the real CLI on small files made here: model metadata
that passed validation but overflowed in scoring, --binning / --coordinate-pixel-size that no data
has, a slice number past int64, data_optics pixel sizes that were dropped, and messages that
printed 30-digit percentages, ``np.int64(0)``, UTF-16 as ``t\\x00o\\x00`` or Python's advice."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hostile_inputs import VOXEL, Capsys, assert_error, errors_table, predictions, run_cli, volumes
from tiny_onnx import with_metadata

from cryoshift.runtime.metadata import ModelMetadata
from cryoshift.runtime.mrc import write_stack, write_volume
from cryoshift.runtime.scoring import score, softmax


def _classify(model: Path, *args: object) -> list[object]:
    return ["classify", model, *args, "-q", "-b", "cpu"]


# ---------------------------------------------------------------------------------------------
# 1. Metadata numbers that overflow the scoring arithmetic


def _with_property(model: Path, tmp_path: Path, field: str, value: str) -> Path:
    return with_metadata(model, tmp_path / f"liar_{field}.onnx", field, value)


@pytest.mark.parametrize(
    "field,value,words",
    [
        ("temperature", "5e-324", "temperature must lie in [0.001, 1000]"),
        ("temperature", "1e300", "temperature must lie in"),
        ("feature_mean", json.dumps([1e308] * 8), "feature_mean holds 1e+308"),
        ("feature_var", json.dumps([1e300] * 8), "feature_var holds 1e+300"),
        ("shift_reference", "1e-320", "shift_reference must lie in"),
        ("voxel_size", "1e-300", "voxel_size must lie in [0.01, 10000] A"),
    ],
)
def test_metadata_that_overflows_in_scoring_is_refused(
    field: str, value: str, words: str, model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """Such models were run: every probability NaN and every row class 0 (temperature 5e-324),
    shift scores inf with a note blaming the features (feature_mean 1e308, shift_reference 1e-320),
    an 80-digit percentage (voxel_size 1e-300)."""
    liar = _with_property(model, tmp_path, field, value)
    vol = write_volume(tmp_path / "v.mrc", volumes(1)[0], voxel_size=VOXEL)
    line = assert_error(run_cli(_classify(liar, vol, "-o", tmp_path / "o"), capsys), liar)
    assert words in line, line
    assert len(line) < 400, line


def test_softmax_of_finite_logits_over_a_tiny_temperature_is_finite() -> None:
    """Dividing before subtracting the row maximum made inf - inf = NaN, read by argmax as class 0."""
    logits = np.array([[1.0, 3.0, 2.0], [-5.0, -4.0, -6.0]], np.float32)
    probs = softmax(logits, 5e-324)
    assert np.isfinite(probs).all()
    assert probs.argmax(axis=1).tolist() == [1, 1]
    exact = logits.astype(np.float64)
    np.testing.assert_allclose(softmax(exact, 1.5), softmax(exact / 1.5), rtol=1e-12)


def test_score_refuses_rows_of_nan_probabilities() -> None:
    """A row of NaN logits reaching score() must never come back as class 0."""
    meta = ModelMetadata(class_names=["a", "b"], box_size=16, voxel_size=VOXEL)
    logits = np.array([[1.0, 2.0], [np.nan, np.nan]])
    with pytest.raises(ValueError, match="not finite"):
        score(logits, np.zeros((2, 0)), meta)


# ---------------------------------------------------------------------------------------------
# 2. --binning and --coordinate-pixel-size


@pytest.mark.parametrize(
    "option,value",
    [
        ("--binning", "inf"),
        ("--binning", "1e308"),
        ("--binning", "nan"),
        ("--binning", "0.5"),
        ("--binning", "65"),
        ("--coordinate-pixel-size", "0"),
        ("--coordinate-pixel-size", "-2"),
        ("--coordinate-pixel-size", "inf"),
        ("--coordinate-pixel-size", "nan"),
    ],
)
def test_scale_options_out_of_range_are_refused(
    option: str, value: str, model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """--binning inf put every pick at (0, 0, 0) with exit 0; --coordinate-pixel-size 0 was read
    as "not given" and the picks cropped unscaled."""
    tomo = write_volume(tmp_path / "TS_01.mrc", volumes(1)[0], voxel_size=VOXEL)
    picks = tmp_path / "picks.csv"
    picks.write_text("tomo_name,x,y,z\nTS_01,8,8,8\n")
    argv = _classify(model, picks, "-t", tomo, "-o", tmp_path / "o", f"{option}={value}")
    line = assert_error(run_cli(argv, capsys), option)
    assert "must be" in line, line


# ---------------------------------------------------------------------------------------------
# 3. A slice number past int64


def test_slice_number_out_of_range(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    """99999999999999999999999@stack.mrcs was an OverflowError traceback in info and "unexpected
    error reading it: OverflowError" in classify; a 5000-digit one Python's int() refused."""
    write_stack(tmp_path / "stack.mrcs", volumes(2), voxel_size=VOXEL)
    bad = tmp_path / "h.star"
    bad.write_text("data_\nloop_\n_rlnImageName\n99999999999999999999999@stack.mrcs\n")
    line = assert_error(run_cli(["info", bad], capsys), bad)
    assert "line 4: slice number 99999999999999999999999 is out of range" in line, line
    # in batch work the row fails alone
    mixed = tmp_path / "mixed.star"
    mixed.write_text(f"data_\nloop_\n_rlnImageName\n1@stack.mrcs\n{'9' * 5000}@stack.mrcs\n2@stack.mrcs\n")
    out = tmp_path / "o"
    code, _, err = run_cli(_classify(model, mixed, "-o", out), capsys)
    assert code == 0 and "Traceback" not in err, err
    assert len(predictions(out)) == 2
    reasons = errors_table(out)["reason"].tolist()
    assert len(reasons) == 1 and "slice number" in reasons[0] and "(5000 digits)" in reasons[0], reasons


# ---------------------------------------------------------------------------------------------
# 4. data_optics pixel sizes that are no pixel size


@pytest.mark.parametrize("value", ["nan", "0", "-10", "abc", "inf"])
def test_damaged_optics_pixel_size_fails_its_group(
    value: str, model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """Optics groups stating such a rlnTomoTiltSeriesPixelSize were dropped without a word, and
    their pixel picks cropped as if in the tomogram's voxels."""
    rng = np.random.default_rng(3)
    tomo = write_volume(tmp_path / "TS_01.mrc", rng.normal(0, 1, (64, 64, 64)).astype(np.float32), VOXEL)
    star = tmp_path / "picks.star"
    star.write_text(
        "data_optics\nloop_\n_rlnOpticsGroup\n_rlnTomoTiltSeriesPixelSize\n"
        f"1 {value}\n2 {VOXEL}\n\n"
        "data_particles\nloop_\n_rlnTomoName\n_rlnCoordinateX\n_rlnCoordinateY\n_rlnCoordinateZ\n"
        "_rlnOpticsGroup\nTS_01 20 20 20 1\nTS_01 40 30 24 2\n"
    )
    out = tmp_path / "o"
    code, _, err = run_cli(_classify(model, star, "-t", tomo, "-o", out), capsys)
    assert code == 0 and "Traceback" not in err, err
    assert len(predictions(out)) == 1
    reasons = errors_table(out)["reason"].tolist()
    assert len(reasons) == 1, reasons
    assert f"optics group 1 has rlnTomoTiltSeriesPixelSize {value!r}" in reasons[0], reasons
    # every pick in such a group: the table is refused in one line
    star.write_text(star.read_text().replace("TS_01 40 30 24 2", "TS_01 40 30 24 1"))
    line = assert_error(run_cli(_classify(model, star, "-t", tomo, "-o", tmp_path / "o2"), capsys), star)
    assert repr(value) in line, line


# ---------------------------------------------------------------------------------------------
# 5. Messages


def test_voxel_mismatch_percentage_is_short(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    """A header voxel size of 6e28 A was "differs ... by 624999999999999978036297777152%"."""
    vol = write_volume(tmp_path / "v.mrc", volumes(1)[0], voxel_size=6.25e28)
    out = tmp_path / "o"
    _code, _, err = run_cli(_classify(model, vol, "-o", out), capsys)
    assert "Traceback" not in err, err
    text = err + " ".join(errors_table(out)["reason"]) if (out / "errors.csv").exists() else err
    assert "6.25e+29%" in text, text


def test_dataset_order_error_shows_plain_ints(dataset: Path, tmp_path: Path, capsys: Capsys) -> None:
    table = pd.read_csv(dataset / "particles.csv")
    table["index"] = [1, 0, 2, 3, 4, 5]
    table.to_csv(dataset / "particles.csv", index=False)
    line = assert_error(run_cli(["info", dataset], capsys), dataset)
    assert "row 0 has index 1" in line and "np.int64" not in line, line


def test_utf16_csv_without_bom(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    picks = tmp_path / "picks.csv"
    picks.write_bytes("tomo_name,x,y,z\nTS_01,8,8,8\n".encode("utf-16-le"))
    line = assert_error(run_cli(["info", picks], capsys), picks)
    assert "looks like UTF-16" in line and "\\x00" not in line, line


def test_dataset_volumes_that_is_a_directory(dataset: Path, capsys: Capsys) -> None:
    (dataset / "volumes.mrc").unlink()
    (dataset / "volumes.mrc").mkdir()
    line = assert_error(run_cli(["info", dataset], capsys), dataset / "volumes.mrc")
    assert "is a directory" in line and "missing" not in line, line


@pytest.mark.parametrize(
    "text,words",
    [
        ('"seed": ' + "7" * 5000, "number too long (5,000 digits)"),
        ('"contrast": "light", "contrast": "dark"', "'contrast' is given twice"),
    ],
)
def test_dataset_json_long_number_and_duplicate_key(
    text: str, words: str, dataset: Path, capsys: Capsys
) -> None:
    """A 5000-digit number leaked "use sys.set_int_max_str_digits()"; a key given twice was read
    as its last value without a word."""
    meta = dataset / "dataset.json"
    body = meta.read_text().rstrip().rstrip("}").rstrip()
    meta.write_text(f"{body}, {text}}}\n")
    line = assert_error(run_cli(["info", dataset], capsys), meta)
    assert words in line and "set_int_max_str_digits" not in line, line
