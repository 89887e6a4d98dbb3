"""Two different volumes whose ids would read alike are both classified, under two ids.

A file named ``000003@v.mrc`` beside the 8-volume stack ``v.mrc`` had the id of the stack's third
slice, and a file whose name is not UTF-8 (``c<byte ff>.mrc``) the written id of a file named
``c\\xff.mrc``. Repeats were dropped by id, so one real volume was lost under a note that an input
was given twice (merge kept one row of the two). The item planned later now gets a ``~2`` suffix,
as a repeated pick does, with a note naming both; a true repeat (one file, two spellings) is still
classified once.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from cryoshift.runtime import classify
from cryoshift.runtime.merge import merge_shards
from cryoshift.runtime.mrc import write_stack, write_volume
from cryoshift.runtime.results import read_results
from cryoshift.runtime.sources import Item, plan_inputs
from cryoshift.runtime.sources.items import UniqueIds

RAW_NAME = os.fsdecode(b"c\xff.mrc")  # what os.listdir gives for the bytes b"c\xff.mrc"
LITERAL_NAME = "c\\xff.mrc"  # a name holding a backslash: its text is RAW_NAME's escaped text


@pytest.fixture
def stack_and_lookalike(helpers, tmp_path, monkeypatch) -> tuple[Path, dict[str, np.ndarray]]:
    """v.mrc (8-volume stack) and 000003@v.mrc (another single volume) in the working folder;
    the volume behind each id the results should hold."""
    vols = helpers.make_volumes(9)
    write_stack(tmp_path / "v.mrc", vols[:8], voxel_size=helpers.VOXEL)
    write_volume(tmp_path / "000003@v.mrc", vols[8], voxel_size=helpers.VOXEL)
    monkeypatch.chdir(tmp_path)
    expected = {"000003@v.mrc": vols[8]}  # the file sorts first and keeps its id
    for i in range(8):
        expected[f"{i + 1:06d}@v.mrc" + ("~2" if i == 2 else "")] = vols[i]
    return tmp_path, expected


def _check_scores(model_path, helpers, rows, expected: dict[str, np.ndarray]) -> None:
    """Each row holds the scores of the volume its id names (no row of one volume under another's id)."""
    probs, _ = helpers.expected_scores(model_path, np.stack(list(expected.values())))
    by_id = rows.set_index("id")
    cols = [f"prob_{c}" for c in helpers.CLASSES]
    for k, ident in enumerate(expected):
        np.testing.assert_allclose(by_id.loc[ident, cols].to_numpy(float), probs[k], rtol=1e-5, atol=1e-6)


def test_a_file_named_like_a_stack_slice_does_not_replace_the_slice(model_path, helpers, stack_and_lookalike):
    folder, expected = stack_and_lookalike
    summary = classify(model_path, ["."], "out", backend="cpu", progress=False)
    rows = read_results(folder / "out" / "predictions.csv")
    assert list(rows["id"]) == list(expected) and rows["id"].is_unique
    assert (rows["path"][3], rows["index"][3]) == ("v.mrc", 2)
    _check_scores(model_path, helpers, rows, expected)
    assert not [n for n in summary.notes if "more than once" in n]
    assert any("slice 3 of v.mrc has the id of the file 000003@v.mrc" in n for n in summary.notes)
    # resumed: the suffix is handed out again, so every item is already done
    again = classify(model_path, ["."], "out", backend="cpu", progress=False, resume=True)
    assert (again.classified, again.resumed) == (0, 9)


def test_a_missing_input_named_like_a_slice_fails_without_taking_the_slice(model_path, stack_and_lookalike):
    """``v.mrc 000001@v.mrc`` (no such file): slice 1 is classified, the missing file is an error row."""
    folder, _ = stack_and_lookalike
    summary = classify(model_path, ["v.mrc", "000001@v.mrc"], "out", backend="cpu", progress=False)
    rows = read_results(folder / "out" / "predictions.csv")
    errors = read_results(folder / "out" / "errors.csv")
    assert len(rows) == 8 and "000001@v.mrc" in set(rows["id"])
    assert list(errors["id"]) == ["000001@v.mrc~2"] and summary.total_errors == 1


@pytest.mark.parametrize("shards", [2, 3])
def test_shards_of_lookalike_ids_merge_into_the_unsharded_rows(model_path, stack_and_lookalike, shards):
    folder, _ = stack_and_lookalike
    classify(model_path, ["."], "whole", backend="cpu", progress=False)
    for i in range(shards):
        classify(model_path, ["."], "split", backend="cpu", progress=False, shard=f"{i}/{shards}")
    summary = merge_shards(["split"])
    assert not [n for n in summary.notes if "more than once" in n]
    assert len(read_results(folder / "split" / "predictions.csv")) == 9
    assert (folder / "split" / "predictions.csv").read_bytes() == (
        folder / "whole" / "predictions.csv"
    ).read_bytes()


@pytest.fixture
def escaped_alike(helpers, tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    """A folder holding c<byte ff>.mrc and c\\xff.mrc (two volumes); the volume behind each id."""
    folder = tmp_path / "esc"
    folder.mkdir()
    vols = helpers.make_volumes(2, seed=3)
    try:
        write_volume(folder / RAW_NAME, vols[1], voxel_size=helpers.VOXEL)
    except (OSError, UnicodeEncodeError):  # pragma: no cover - a file system that wants UTF-8 names
        pytest.skip("this file system refuses file names that are not UTF-8")
    write_volume(folder / LITERAL_NAME, vols[0], voxel_size=helpers.VOXEL)
    # the backslash (0x5c) sorts before the escaped byte, so the literal name keeps the plain id
    return folder, {f"{folder}/{LITERAL_NAME}": vols[0], f"{folder}/{LITERAL_NAME}~2": vols[1]}


def test_a_non_utf8_name_and_its_escaped_text_get_two_ids(model_path, helpers, escaped_alike, tmp_path):
    folder, expected = escaped_alike
    summary = classify(model_path, [str(folder)], tmp_path / "out", backend="cpu", progress=False)
    rows = read_results(tmp_path / "out" / "predictions.csv")
    assert list(rows["id"]) == list(expected)
    _check_scores(model_path, helpers, rows, expected)
    assert any("a name that is not UTF-8" in n and "~2" in n for n in summary.notes)


def test_shards_of_escaped_alike_names_keep_both_rows(model_path, escaped_alike, tmp_path):
    folder, expected = escaped_alike
    for i in range(2):
        classify(model_path, [str(folder)], tmp_path / "s", backend="cpu", progress=False, shard=f"{i}/2")
    summary = merge_shards([tmp_path / "s"])
    assert sorted(read_results(tmp_path / "s" / "predictions.csv")["id"]) == sorted(expected)
    assert not [n for n in summary.notes if "more than once" in n]


def test_one_file_under_two_spellings_is_still_one_item(helpers, stack_and_lookalike):
    """The suffix is for other volumes only: ``v.mrc`` and ``./v.mrc`` plan one id per slice, which
    the run classifies once."""
    plan = plan_inputs(["v.mrc", "./v.mrc"], helpers.BOX, helpers.VOXEL)
    assert [it.id for it in plan.items] == [f"{i:06d}@v.mrc" for i in range(1, 9)] * 2
    assert not plan.notes


def test_unique_ids_frees_the_ids_of_an_undone_input(tmp_path):
    """An input that failed as a whole is taken back (ItemList.truncate): its ids are free again."""
    ids = UniqueIds()
    first = ids.admit(Item("a.mrc", "file", str(tmp_path / "one.mrc")))
    ids.forget(first)
    assert ids.admit(Item("a.mrc", "file", str(tmp_path / "two.mrc"))).id == "a.mrc"
    assert ids.admit(Item("a.mrc", "file", str(tmp_path / "three.mrc"))).id == "a.mrc~2"
    assert ids.notes() and "a.mrc~2" in ids.notes()[0]


def test_the_star_names_the_slice_not_its_suffixed_id(model_path, stack_and_lookalike):
    """predictions.star's rlnImageName was the id, so the slice was written ``000003@v.mrc~2``, a
    name RELION cannot read: it is the slice's own name, the ``~2`` stays in the CSV's id."""
    from cryoshift.runtime.picks import read_star

    folder, _ = stack_and_lookalike
    classify(model_path, ["."], "out", backend="cpu", progress=False)
    rows = read_results(folder / "out" / "predictions.csv")
    names = list(read_star(folder / "out" / "predictions.star")["particles"]["rlnImageName"])
    assert names[list(rows["id"]).index("000003@v.mrc~2")] == "000003@v.mrc"
    assert not [n for n in names if "~" in n]
