"""``evaluate`` on labelled picks: a class column in a pick table, cropped from the tomograms."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cryoshift.runtime.cli import main
from cryoshift.runtime.mrc import write_volume


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


@pytest.mark.filterwarnings("ignore:Data array contains NaN values")
def test_bad_rows_and_nan_crops_are_skipped_not_fatal(model_path, inputs, tmp_path, capsys):
    """One row with a non-numeric coordinate or a crop in a NaN region is one skipped pick."""
    import mrcfile
    import numpy as np

    tomos = tmp_path / "tomos"
    tomos.mkdir()
    for name in ("TS_01", "TS_02"):
        with mrcfile.open(inputs["tomos"] / f"{name}.mrc", permissive=True) as src:
            data, voxel = np.array(src.data), float(src.voxel_size.x)
        if name == "TS_02":
            data[:, :20, :] = np.nan  # a blanked-out corner of a reconstruction
        write_volume(tomos / f"{name}.mrc", data, voxel_size=voxel)
    picks = pd.DataFrame(
        {
            "tomo": ["TS_01", "TS_01", "TS_02", "TS_02"],
            "x": ["20.0", "abc", "20.0", "20.0"],
            "y": [24.0, 8.0, 8.0, 36.0],
            "z": [12.0, 8.0, 12.0, 12.0],
            "class": ["ribosome", "junk", "proteasome", "junk"],
        }
    )
    picks.to_csv(tmp_path / "labelled.csv", index=False)
    args = ["evaluate", str(model_path), str(tmp_path / "labelled.csv"), "-t", str(tomos)]
    code = main([*args, "--out", str(tmp_path / "eval")])
    err = capsys.readouterr().err
    assert code == 0, err
    report = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert report["n"] == 2
    skipped = report["skipped_picks"]
    assert sum(skipped.values()) == 2 and any("NaN" in why for why in skipped), skipped
    assert any("coordinate" in why for why in skipped), skipped
