"""Result tables: the CSV and the STAR file hold identical rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import starfile
from hypothesis import given, settings
from hypothesis import strategies as st

from cryoshift.runtime import read_results, write_results
from cryoshift.runtime.results import csv_name, star_name


def rows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": ["000001@a.mrcs", "000002@a.mrcs", "TS 01/p3.mrc"],
            "tomo_name": ["TS_01", "", "TS_02"],
            "x": [10.0, 20.25, np.nan],
            "y": [1.0, 2.0, 3.0],
            "z": [4.0, 5.0, 6.0],
            "class_index": [0, -1, 2],
            "class_name": ["ribosome", "unknown", "empty"],
            "confidence": [0.912345678912, 0.3, 0.77],
            "shift_score": [1.02, 3.5, 0.98],
            "prob_ribosome": [0.9, 0.2, 0.1],
            "prob_26S-proteasome": [0.05, 0.3, 0.13],
            "padded": [False, True, False],
            "rlnAngleRot": [10.0, 20.0, 30.0],
            "rlnCoordinateX": [99.0, 99.0, 99.0],  # clashes with x: x wins in both files
            "Weird Name?": [1, 2, 3],
        }
    )


def test_csv_and_star_rows_are_identical(tmp_path: Path) -> None:
    df = rows().drop(columns=["Weird Name?"])
    write_results(df, tmp_path / "r.csv", tmp_path / "r.star")
    a, b = read_results(tmp_path / "r.csv"), read_results(tmp_path / "r.star")
    pd.testing.assert_frame_equal(a, b)
    assert "rlnCoordinateX" not in a.columns and a["x"].tolist()[:2] == [10.0, 20.25]
    assert a["padded"].tolist() == [0, 1, 0] and a["tomo_name"].tolist() == ["TS_01", "", "TS_02"]
    assert a["confidence"][0] == pytest.approx(0.912345679, abs=1e-12)
    star = starfile.read(tmp_path / "r.star", always_dict=True)["particles"]
    assert star["rlnClassNumber"].tolist() == [1, 0, 3]
    for label in (
        "rlnImageName",
        "rlnTomoName",
        "rlnCoordinateX",
        "csClassName",
        "csConfidence",
        "csShiftScore",
        "csProb_ribosome",
        "csProb_26S-proteasome",
        "rlnAngleRot",
    ):
        assert label in star.columns


def test_names_with_spaces_cannot_be_star_labels(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot be a STAR label"):
        write_results(rows(), tmp_path / "r.csv", tmp_path / "r.star")


@settings(database=None, max_examples=60, deadline=None)
@given(st.from_regex(r"[A-Za-z_][A-Za-z0-9_.+\-]{0,12}", fullmatch=True))
def test_star_names_are_reversible(name: str) -> None:
    assert csv_name(star_name(name)) == name


def test_star_writer_writes_the_text_starfile_writes(tmp_path: Path) -> None:
    """One writer for every STAR file: apart from the comment line, starfile's own bytes."""
    from cryoshift.runtime.results import write_star

    particles = (
        rows()
        .drop(columns=["Weird Name?"])
        .assign(note=["a b", "", "c"], maybe=pd.array([1, None, 3], dtype="Int64"), mixed=[1, "x", 2.5])
    )
    blocks = {
        "general": {"rlnTomoSizeX": 100, "rlnTomoName": "TS 01"},
        "optics": pd.DataFrame({"rlnOpticsGroup": [1], "rlnVoltage": [300.0]}),
        "particles": particles,
    }
    starfile.write(blocks, tmp_path / "a.star", float_format="%.9g", overwrite=True)
    write_star(blocks, tmp_path / "b.star")
    a = (tmp_path / "a.star").read_text().splitlines()
    b = (tmp_path / "b.star").read_text().splitlines()
    assert b[0].startswith("# Created by cryoshift") and a[1:] == b[1:]
    assert not list(tmp_path.glob(".*tmp*"))


def _predictions(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    pick = np.arange(n) % 3 == 0
    k = rng.integers(-1, 2, n)
    names = np.array(["ribosome", "empty"])
    return pd.DataFrame(
        {
            "id": [f"TS_01:{i}.0,1.0,2.0" if p else f"{i + 1:06d}@s.mrcs" for i, p in enumerate(pick)],
            "path": np.where(pick, "TS_01.mrc", "s.mrcs"),
            "index": np.where(pick, -1, np.arange(n)),
            "tomo_name": np.where(pick, "TS_01", ""),
            "x": np.where(pick, np.arange(n) * 1.0, np.nan),
            "y": np.where(pick, 1.0, np.nan),
            "z": np.where(pick, 2.0, np.nan),
            "class_index": k,
            "class_name": np.where(k < 0, "unknown", names[np.maximum(k, 0)]),
            "best_class": names[np.maximum(k, 0)],
            "unknown": (k < 0).astype(int),
            "confidence": rng.uniform(0, 1, n),
            "shift_score": rng.uniform(0, 3, n),
            "prob_ribosome": rng.uniform(0, 1, n),
            "prob_empty": rng.uniform(0, 1, n),
        }
    )


def test_predictions_star_streamed_in_chunks_holds_the_rows_of_the_whole_one(
    tmp_path: Path, monkeypatch
) -> None:
    from cryoshift.runtime import star_out

    csv_path = tmp_path / "predictions.csv"
    _predictions(40).to_csv(csv_path, index=False)
    whole = star_out.write_predictions_star(csv_path, tmp_path / "whole" / "p.star", split_by_class=True)
    monkeypatch.setattr(star_out, "STREAM_ROWS", 5)
    (tmp_path / "streamed").mkdir()
    streamed = star_out.write_predictions_star(
        csv_path, tmp_path / "streamed" / "p.star", split_by_class=True
    )
    assert (
        [p.name for p in streamed]
        == [p.name for p in whole]
        == ["p_empty.star", "p_ribosome.star", "p_unknown.star"]
    )
    for a, b in zip(
        [tmp_path / "whole" / "p.star", *whole], [tmp_path / "streamed" / "p.star", *streamed], strict=True
    ):
        pd.testing.assert_frame_equal(read_results(a), read_results(b))
    assert len(read_results(tmp_path / "streamed" / "p.star")) == 40
    assert not list(tmp_path.rglob(".*tmp*"))


def test_name_columns_read_back_as_written(tmp_path: Path) -> None:
    """Names that look like numbers (tomograms ``001``, classes ``01``/``1e3``, a path ``7``) or
    like a missing value (``nan``) come back as written from the CSV and the STAR file: the CSV
    gave tomo_name 1 and class_name 1.0, the STAR file class_name 1.0 and best_class 1000.0."""
    from cryoshift.runtime.results import read_predictions

    table = pd.DataFrame(
        {
            "id": ["001", "002", "003"],
            "path": ["7", "7", "nan"],
            "tomo_name": ["001", "001", "nan"],
            "x": [1.0, 2.0, np.nan],
            "y": [1.0, 2.0, 3.0],
            "z": [1.0, 2.0, 3.0],
            "class_index": [0, 1, 0],
            "class_name": ["01", "1e3", "01"],
            "best_class": ["01", "1e3", "01"],
            "confidence": [0.9, 0.8, np.nan],
        }
    )
    write_results(table, tmp_path / "r.csv", tmp_path / "r.star")
    for path in (tmp_path / "r.csv", tmp_path / "r.star"):
        back = read_results(path)
        for column in ("id", "path", "tomo_name", "class_name", "best_class"):
            assert back[column].tolist() == table[column].tolist(), (path.name, column)
        assert back["x"].isna().tolist() == [False, False, True]
        assert back["confidence"].isna().tolist() == [False, False, True]
        assert read_predictions(path)["tomo_name"].tolist() == ["001", "001", "nan"]
