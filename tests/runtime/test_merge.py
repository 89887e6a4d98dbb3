"""``cryoshift merge``: shard outputs joined exactly once per id."""

from __future__ import annotations

import shutil

import pytest

from cryoshift.runtime import classify
from cryoshift.runtime.cli import main
from cryoshift.runtime.results import read_results


def test_merge_joins_shards_once_and_keeps_star_columns(model_path, inputs, tmp_path, capsys):
    args = [str(inputs["picks"]), str(inputs["stack"]), str(inputs["listing"])]
    whole = classify(
        model_path, args, tmp_path / "whole", tomograms=[str(inputs["tomos"])], backend="cpu", progress=False
    )
    for i in range(3):
        classify(
            model_path,
            args,
            tmp_path / "shards",
            tomograms=[str(inputs["tomos"])],
            backend="cpu",
            progress=False,
            shard=f"{i}/3",
        )
    # A retried array task left a copy of shard 1 in a second folder: refused, not doubled.
    (tmp_path / "retry").mkdir()
    for name in ("predictions", "errors"):
        shutil.copy(tmp_path / "shards" / f"{name}.shard-1-of-3.csv", tmp_path / "retry")
    assert main(["merge", str(tmp_path / "shards"), str(tmp_path / "retry")]) == 2
    assert "also in" in capsys.readouterr().err
    assert main(["merge", str(tmp_path / "shards"), "-o", str(tmp_path / "merged")]) == 0
    merged = read_results(tmp_path / "merged" / "predictions.csv")
    ref = read_results(whole.predictions_csv)
    assert merged["id"].is_unique and set(merged["id"]) == set(ref["id"])
    assert dict(zip(merged["id"], merged["class_name"], strict=True)) == dict(
        zip(ref["id"], ref["class_name"], strict=True)
    )
    errors = read_results(tmp_path / "merged" / "errors.csv")
    assert set(errors["id"]) == set(read_results(whole.errors_csv)["id"])
    import starfile

    star = starfile.read(tmp_path / "merged" / "predictions.star")
    assert len(star) == len(ref) and "rlnImageName" in star and "csId" in star


def test_merge_says_which_shards_are_missing(model_path, inputs, tmp_path, capsys):
    classify(model_path, [str(inputs["stack"])], tmp_path / "s", backend="cpu", progress=False, shard="0/2")
    assert main(["merge", str(tmp_path / "s")]) == 2
    assert "shards 1 of 2 are missing" in capsys.readouterr().err
    assert main(["merge", str(tmp_path / "s"), "--allow-missing"]) == 0
    assert len(read_results(tmp_path / "s" / "predictions.csv")) == 6


@pytest.mark.parametrize("name", ["nothing"])
def test_merge_of_a_folder_without_shards_is_refused(tmp_path, capsys, name):
    assert main(["merge", str(tmp_path)]) == 2
    assert "no predictions.shard-i-of-n.csv" in capsys.readouterr().err
