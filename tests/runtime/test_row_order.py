"""Row order and repeats: a merge of shards writes the rows an unsharded run writes, in its order,
and a volume given twice under two spellings of its path is classified once.

``merge`` appended the shard tables one after another (rows 0, 3, 6, ... then 1, 4, 7, ...), so
the merged predictions.csv was not in the inputs' order while predictions.star, rebuilt from an
input STAR, was: row i of one was not row i of the other. Repeats were found by comparing ids,
which are paths as written: a listing's (made absolute) and the stack itself, or a folder and one
of its files named with ``$PWD/``, were classified twice with no note.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import starfile

from cryoshift.runtime import classify
from cryoshift.runtime.cli import main
from cryoshift.runtime.features import features_path, read_features
from cryoshift.runtime.merge import merge_shards
from cryoshift.runtime.mrc import write_stack, write_volume
from cryoshift.runtime.results import read_results

INPUTS = {
    "picks STAR": ["picks.star"],
    "stack": ["stack.mrcs"],
    "stack, files, picks and a listing": ["stack.mrcs", "files", "picks.star", "listing.star"],
}


@pytest.fixture
def work(inputs, tmp_path, monkeypatch) -> Path:
    """A copy of the inputs (files with errors among them, two tomograms), run from its folder."""
    root = tmp_path / "in"
    shutil.copytree(inputs["root"], root)
    monkeypatch.chdir(root)
    return root


def _classify(model_path, args, out, **kw):
    tomos = ["tomos"] if "picks.star" in args else None
    return classify(
        model_path, args, out, tomograms=tomos, backend="cpu", progress=False, features=True, **kw
    )


def _shards(model_path, args, out, n=3):
    for i in range(n):
        _classify(model_path, args, out, shard=f"{i}/{n}")


def _same_rows(merged: Path, whole: Path) -> None:
    """The merged folder's tables equal the unsharded run's byte for byte, the STAR's rows are the
    CSV's in order, and every features row is the one of its id."""
    for name in ("predictions.csv", "errors.csv"):
        assert (merged / name).read_bytes() == (whole / name).read_bytes(), name
    ids = list(read_results(merged / "predictions.csv")["id"])
    star = starfile.read(merged / "predictions.star", always_dict=True)["particles"]
    assert list(star["csId"].astype(str)) == ids
    got = np.asarray(read_features(features_path(merged / "predictions.csv")))
    want = np.asarray(read_features(features_path(whole / "predictions.csv")))
    assert got.shape == want.shape == (len(ids), want.shape[1])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", list(INPUTS))
def test_merged_shards_are_the_unsharded_run_row_for_row(model_path, work, kind):
    args = INPUTS[kind]
    _classify(model_path, args, "whole")
    _shards(model_path, args, "shards")
    summary = merge_shards(["shards"])
    assert not [n for n in summary.notes if "order" in n]
    _same_rows(work / "shards", work / "whole")


def test_an_unsharded_run_writes_its_star_rows_in_the_csv_order(model_path, work):
    """A stack given before a picks STAR: the STAR had the picks' rows first, the CSV the stack's."""
    _classify(model_path, ["stack.mrcs", "picks.star"], "whole")
    ids = list(read_results(work / "whole" / "predictions.csv")["id"])
    star = starfile.read(work / "whole" / "predictions.star", always_dict=True)["particles"]
    assert ids[0].startswith("000001@") and list(star["csId"].astype(str)) == ids
    assert "rlnTomoName" in star and "rlnImageName" in star


def test_shards_of_moved_inputs_are_interleaved_when_the_split_is_exact(model_path, work, tmp_path):
    """Inputs not readable where merge runs: shard i's row r is item r * n + i when no shard has
    error rows, none was resumed and nothing repeated (checked from the manifests)."""
    _classify(model_path, ["stack.mrcs"], "whole")
    _shards(model_path, ["stack.mrcs"], "shards")
    os.rename(work / "stack.mrcs", tmp_path / "moved.mrcs")
    summary = merge_shards(["shards"])
    assert any("not readable here" in n for n in summary.notes)
    assert not [n for n in summary.notes if "order" in n]
    assert len(read_results(work / "shards" / "predictions.csv")) == 12
    for name in ("predictions.csv", "errors.csv"):
        assert (work / "shards" / name).read_bytes() == (work / "whole" / name).read_bytes()
    got = np.asarray(read_features(features_path(work / "shards" / "predictions.csv")))
    want = np.asarray(read_features(features_path(work / "whole" / "predictions.csv")))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_shards_of_moved_inputs_with_error_rows_keep_shard_order_and_say_so(
    model_path, work, tmp_path, capsys
):
    """Error rows' places among a shard's predictions are not recorded: no guess, a note."""
    _classify(model_path, ["files"], "whole")
    _shards(model_path, ["files"], "shards")
    os.rename(work / "files", tmp_path / "moved")
    assert main(["merge", "shards"]) == 0
    out = capsys.readouterr().out
    assert "not the inputs' order" in out and "error rows" in out
    merged = read_results(work / "shards" / "predictions.csv")
    whole = read_results(work / "whole" / "predictions.csv")
    assert sorted(merged["id"]) == sorted(whole["id"]) and merged["id"].is_unique
    feats = np.asarray(read_features(features_path(work / "shards" / "predictions.csv")))
    want = np.asarray(read_features(features_path(work / "whole" / "predictions.csv")))
    position = {ident: i for i, ident in enumerate(whole["id"])}
    np.testing.assert_allclose(feats, want[[position[i] for i in merged["id"]]], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ one volume, two spellings


@pytest.fixture
def odd(helpers, tmp_path, monkeypatch) -> Path:
    """stack.mrcs (6 slices), listing.star naming 4 of them relative to itself, and a folder of 5
    files with a link to one of them next to it; run from the folder that holds them."""
    vols = helpers.make_volumes(11)
    write_stack(tmp_path / "stack.mrcs", vols[:6], voxel_size=helpers.VOXEL)
    names = ["000004@stack.mrcs", "000001@stack.mrcs", "000006@stack.mrcs", "000002@stack.mrcs"]
    starfile.write({"particles": pd.DataFrame({"rlnImageName": names})}, tmp_path / "listing.star")
    (tmp_path / "subs").mkdir()
    for i in range(5):
        write_volume(tmp_path / "subs" / f"v{i:03d}.mrc", vols[6 + i], voxel_size=helpers.VOXEL)
    (tmp_path / "link.mrc").symlink_to(tmp_path / "subs" / "v002.mrc")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_listing_of_a_stack_and_the_stack_itself_are_classified_once(model_path, odd):
    summary = classify(model_path, ["listing.star", "stack.mrcs"], "out", backend="cpu", progress=False)
    rows = read_results(odd / "out" / "predictions.csv")
    assert len(rows) == 6 and rows["id"].is_unique
    # the listing's rows keep their ids (absolute, as planned); the two slices it left out follow
    assert list(rows["id"][:4]) == [
        f"{n[:7]}{odd / 'stack.mrcs'}" for n in ["000004@", "000001@", "000006@", "000002@"]
    ]
    assert list(rows["id"][4:]) == ["000003@stack.mrcs", "000005@stack.mrcs"]
    assert sum(summary.class_counts.values()) == 6
    assert any("4 picks or volumes were given more than once" in n for n in summary.notes)


@pytest.mark.parametrize("shards", [1, 2, 3])
def test_a_folder_and_its_file_under_other_spellings_are_classified_once(model_path, odd, shards):
    """``./``, ``$PWD/`` and a link name v002.mrc, already in the folder: in one run and in
    shards (a repeat could fall into another shard than its first, each keeping its spelling)."""
    args = ["subs", f"{odd}/subs/v002.mrc", "./subs/v001.mrc", "link.mrc", "subs/../subs/v004.mrc"]
    classify(model_path, args, "whole", backend="cpu", progress=False)
    whole = read_results(odd / "whole" / "predictions.csv")
    assert list(whole["id"]) == [f"subs/v{i:03d}.mrc" for i in range(5)]
    if shards > 1:
        for i in range(shards):
            classify(model_path, args, "shards", backend="cpu", progress=False, shard=f"{i}/{shards}")
        summary = merge_shards(["shards"])
        assert not [n for n in summary.notes if "more than once" in n]
        assert (odd / "shards" / "predictions.csv").read_bytes() == (
            odd / "whole" / "predictions.csv"
        ).read_bytes()


def test_a_shard_with_repeated_inputs_resumes_its_own_share(model_path, odd):
    """The split is of the plan without repeats, and so is the fingerprint --resume checks: a
    resumed shard finds its rows done and classifies nothing again."""
    args = ["subs", f"{odd}/subs/v002.mrc", "stack.mrcs", "listing.star"]
    first = classify(model_path, args, "s", backend="cpu", progress=False, shard="0/2")
    again = classify(model_path, args, "s", backend="cpu", progress=False, shard="0/2", resume=True)
    assert first.classified == 6 and again.classified == 0 and again.resumed == 6
    classify(model_path, args, "s", backend="cpu", progress=False, shard="1/2")
    merge_shards(["s"])
    assert len(read_results(odd / "s" / "predictions.csv")) == 11
