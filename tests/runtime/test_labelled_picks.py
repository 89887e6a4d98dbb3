"""``evaluate`` on labelled picks: a class column in a pick table, cropped from the tomograms."""

from __future__ import annotations

import json

import pandas as pd

from cryoshift.runtime.cli import main


def test_evaluate_scores_labelled_picks(model_path, inputs, tmp_path, capsys):
    picks = pd.DataFrame(
        {
            "tomo": ["TS_01", "TS_01", "TS_02", "TS_02", "TS_02"],
            "x": [20.0, 8.0, 20.0, 30.0, 55.0],
            "y": [24.0, 8.0, 10.0, 30.0, 5.0],
            "z": [12.0, 8.0, 12.0, 12.0, 5.0],
            "class": ["ribosome", "junk", "proteasome", "", "junk"],
        }
    )
    picks.to_csv(tmp_path / "labelled.csv", index=False)
    code = main(
        [
            "evaluate",
            str(model_path),
            str(tmp_path / "labelled.csv"),
            "-t",
            str(inputs["tomos"]),
            "--out",
            str(tmp_path / "eval"),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert report["n"] == 3  # one pick without a label, one outside its tomogram
    assert sum(report["skipped_picks"].values()) == 2 and "skipped picks" in out


def test_predictions_are_not_labels(model_path, inputs, tmp_path, capsys):
    pd.DataFrame({"tomo": ["TS_01"], "x": [20.0], "y": [24.0], "z": [12.0], "csClassName": ["junk"]}).to_csv(
        tmp_path / "pred.csv", index=False
    )
    assert main(["evaluate", str(model_path), str(tmp_path / "pred.csv"), "-t", str(inputs["tomos"])]) == 2
    assert "csClassName holds cryoshift's predictions" in capsys.readouterr().err


def test_int8_calibration_crops_picks_from_the_run_tomograms(inputs):
    import numpy as np

    from cryoshift.export.data import find_volumes

    config = {"target": str(inputs["picks"]), "tomograms": [str(inputs["tomos"])]}
    volumes, source = find_volumes(16, None, config, limit=4, purpose="calibration")
    assert source == str(inputs["picks"]) and volumes.shape == (4, 16, 16, 16)
    assert np.isfinite(volumes).all() and volumes.std() > 0  # real crops, not the random fallback
