"""``cryoshift merge``: what a merge leaves behind and what its manifest counts.

The shards' per-class STARs stayed beside the merged ones (two sets of the same picks), and an
``--allow-missing`` merge recorded the merged shards' items as the plan, so nothing in the
manifest said how many were missing."""

from __future__ import annotations

import json

from cryoshift.runtime import classify
from cryoshift.runtime.cli import main
from cryoshift.runtime.results import read_results


def _shards(model_path, inputs, folder, indices, n):
    for i in indices:
        classify(
            model_path,
            [str(inputs["picks"])],
            folder,
            tomograms=[str(inputs["tomos"])],
            backend="cpu",
            progress=False,
            shard=f"{i}/{n}",
            split_by_class=True,
        )


def test_merge_removes_the_shards_per_class_stars(model_path, inputs, tmp_path, capsys):
    folder = tmp_path / "res"
    _shards(model_path, inputs, folder, range(2), 2)
    shard_stars = sorted(folder.glob("predictions.shard-*_*.star"))
    assert shard_stars  # the shards wrote per-class STARs
    mine = folder / "predictions.shard-0-of-2_curated_by_hand.star"  # not recorded by a shard: kept
    mine.write_text("data_\n")
    assert main(["merge", str(folder)]) == 0
    out = capsys.readouterr().out
    assert not any(p.exists() for p in shard_stars)
    assert mine.exists()
    assert f"removed the shards' {len(shard_stars)} per-class STARs" in out
    merged = sorted(folder.glob("predictions_*.star"))
    assert merged and (folder / "predictions.shard-0-of-2.csv").is_file()  # shard tables stay
    manifest = json.loads((folder / "manifest.json").read_text())
    assert any("per-class STARs" in note for note in manifest["summary"]["notes"])


def test_allow_missing_records_the_whole_plan(model_path, inputs, tmp_path, capsys):
    whole = classify(
        model_path,
        [str(inputs["picks"])],
        tmp_path / "whole",
        tomograms=[str(inputs["tomos"])],
        backend="cpu",
        progress=False,
    )
    folder = tmp_path / "res"
    _shards(model_path, inputs, folder, [0, 1], 3)  # shard 2 of 3 never ran
    assert main(["merge", str(folder), "--allow-missing"]) == 0
    out = capsys.readouterr().out
    summary = json.loads((folder / "manifest.json").read_text())["summary"]
    merged_rows = len(read_results(folder / "predictions.csv")) + len(read_results(folder / "errors.csv"))
    assert summary["planned"] == whole.planned
    assert merged_rows < whole.planned
    lacking = whole.planned - merged_rows
    assert f"{lacking} of the {whole.planned} planned items are in them" in out
