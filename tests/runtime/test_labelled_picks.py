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


def test_two_label_columns_need_label_column(model_path, inputs, tmp_path, capsys):
    """class and label both present (and disagreeing): the first was taken without a word;
    --label-column picks one."""
    rows = {"tomo": ["TS_01", "TS_02"], "x": [20.0, 20.0], "y": [24.0, 10.0], "z": [12.0, 12.0]}
    rows |= {"class": ["ribosome", "proteasome"], "label": ["junk", "junk"]}
    pd.DataFrame(rows).to_csv(tmp_path / "two.csv", index=False)
    args = ["evaluate", str(model_path), str(tmp_path / "two.csv"), "-t", str(inputs["tomos"])]
    assert main([*args, "--out", str(tmp_path / "a")]) == 2
    assert "several label columns (class, label)" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "b"), "--label-column", "label"]) == 0
    assert json.loads((tmp_path / "b" / "evaluation.json").read_text())["n"] == 2


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


# --- the data must fit the model: voxel size and contrast, as classify checks them ---------------


def _tomos_at(tmp_path, inputs, voxels: dict[str, float]):
    """Copies of the test tomograms with the given voxel sizes in their headers."""
    import mrcfile
    import numpy as np

    tomos = tmp_path / "tomos"
    tomos.mkdir()
    for name, voxel in voxels.items():
        with mrcfile.open(inputs["tomos"] / f"{name}.mrc", permissive=True) as src:
            write_volume(tomos / f"{name}.mrc", np.array(src.data), voxel_size=voxel)
    return tomos


def _labelled(tmp_path):
    picks = pd.DataFrame(
        {
            "tomo": ["TS_01", "TS_01", "TS_02"],
            "x": [20.0, 8.0, 20.0],
            "y": [24.0, 8.0, 10.0],
            "z": [12.0, 8.0, 12.0],
            "class": ["ribosome", "junk", "proteasome"],
        }
    )
    picks.to_csv(tmp_path / "labelled.csv", index=False)
    return tmp_path / "labelled.csv"


def test_labelled_picks_on_another_voxel_size_are_refused(model_path, inputs, tmp_path, capsys):
    """Every tomogram at 5 A for a 10 A model: classify's refusal, not a silent score."""
    tomos = _tomos_at(tmp_path, inputs, {"TS_01": 5.0, "TS_02": 5.0})
    args = ["evaluate", str(model_path), str(_labelled(tmp_path)), "-t", str(tomos)]
    assert main([*args, "--out", str(tmp_path / "eval")]) == 2
    err = capsys.readouterr().err
    assert "voxel size 5 A differs from the model's 10 A by 50%" in err and "--ignore-voxel-size" in err
    assert not (tmp_path / "eval" / "evaluation.json").exists()
    assert main([*args, "--out", str(tmp_path / "eval"), "--ignore-voxel-size"]) == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "eval" / "evaluation.json").read_text())["n"] == 3


def _evaluate(model_path, tmp_path, tomos, out, capsys) -> dict:
    """``cryoshift evaluate`` of the labelled picks against the tomograms in ``tomos``; its report."""
    args = ["evaluate", str(model_path), str(_labelled(tmp_path)), "-t", str(tomos), "--out", str(out)]
    assert main(args) == 0, capsys.readouterr().err
    return json.loads((out / "evaluation.json").read_text())


def test_labelled_picks_of_one_wrong_tomogram_are_skipped(model_path, inputs, tmp_path, capsys):
    """Batch rule: the picks of the 5 A tomogram are skipped with the reason, the others scored."""
    tomos = _tomos_at(tmp_path, inputs, {"TS_01": 10.0, "TS_02": 5.0})
    _evaluate(model_path, tmp_path, tomos, tmp_path / "e", capsys)
    report = json.loads((tmp_path / "e" / "evaluation.json").read_text())
    assert report["n"] == 2
    assert [n for why, n in report["skipped_picks"].items() if "voxel size 5 A" in why] == [1]


def _dataset(tmp_path, voxel: float, contrast: str = "dark"):
    import numpy as np

    from cryoshift.runtime.dataset import write_dataset

    rng = np.random.default_rng(0)
    return write_dataset(
        tmp_path / f"ds_{voxel:g}_{contrast}",
        rng.normal(size=(6, 16, 16, 16)).astype(np.float32),
        labels=[0, 1, 2, 0, 1, 2],
        class_names=["ribosome", "proteasome", "junk"],
        voxel_size=voxel,
        contrast=contrast,
    )


def test_dataset_of_another_voxel_size_is_refused(model_path, tmp_path, capsys):
    ds = _dataset(tmp_path, 5.0)
    args = ["evaluate", str(model_path), str(ds), "--out", str(tmp_path / "eval")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        f"cryoshift: error: {ds / 'dataset.json'}: voxel size 5 A differs from the model's 10 A"
    )
    assert len(err.splitlines()) == 1 and not (tmp_path / "eval").exists()
    assert main([*args, "--ignore-voxel-size"]) == 0, capsys.readouterr().err
    # within the tolerance (4%): scored without a word
    assert (
        main(["evaluate", str(model_path), str(_dataset(tmp_path, 10.4)), "--out", str(tmp_path / "e2")]) == 0
    )


def test_dataset_of_another_contrast_is_refused(model_path, light_model_path, tmp_path, capsys):
    light = _dataset(tmp_path, 10.0, "light")
    assert main(["evaluate", str(model_path), str(light), "--out", str(tmp_path / "eval")]) == 2
    err = capsys.readouterr().err
    assert "data contrast is 'light' but the model expects 'dark'" in err and str(light) in err
    assert main(["evaluate", str(light_model_path), str(light), "--out", str(tmp_path / "ok")]) == 0


def test_planner_notes_are_carried_into_evaluation_json(model_path, inputs, tmp_path, capsys):
    """A tomogram without a voxel size is scored unchecked: evaluation.json says so (the planner's
    note was dropped, so the report looked like a fully checked evaluation)."""
    import struct

    tomos = _tomos_at(tmp_path, inputs, {"TS_01": 10.0, "TS_02": 10.0})
    raw = bytearray((tomos / "TS_01.mrc").read_bytes())
    struct.pack_into("<3f", raw, 40, 0.0, 0.0, 0.0)
    (tomos / "TS_01.mrc").write_bytes(bytes(raw))
    _evaluate(model_path, tmp_path, tomos, tmp_path / "e", capsys)
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "e" / "evaluation.json").read_text())
    assert report["n"] == 3
    (note,) = report["notes"]
    assert note.startswith(f"{tomos / 'TS_01.mrc'}: no usable voxel size in the header")
    assert "note:" in out and "no usable voxel size" in out
    # checked data: an empty list, so a reader of the report can tell "none" from "not recorded"
    (tmp_path / "fine").mkdir()
    fine = _tomos_at(tmp_path / "fine", inputs, {"TS_01": 10.0, "TS_02": 10.0})
    _evaluate(model_path, tmp_path, fine, tmp_path / "f", capsys)
    assert json.loads((tmp_path / "f" / "evaluation.json").read_text())["notes"] == []
