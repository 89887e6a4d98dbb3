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
    return pd.DataFrame({
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
    })


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
    for label in ("rlnImageName", "rlnTomoName", "rlnCoordinateX", "csClassName", "csConfidence",
                  "csShiftScore", "csProb_ribosome", "csProb_26S-proteasome", "rlnAngleRot"):
        assert label in star.columns


def test_names_with_spaces_cannot_be_star_labels(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot be a STAR label"):
        write_results(rows(), tmp_path / "r.csv", tmp_path / "r.star")


@settings(database=None, max_examples=60, deadline=None)
@given(st.from_regex(r"[A-Za-z_][A-Za-z0-9_.+\-]{0,12}", fullmatch=True))
def test_star_names_are_reversible(name: str) -> None:
    assert csv_name(star_name(name)) == name
