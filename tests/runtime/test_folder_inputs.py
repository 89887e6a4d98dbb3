"""Folder-shaped inputs of classify (and train's and evaluate's planner): a dataset's own files
named on their own, folders a glob matches, and sub-folders named like volumes.

- ``DIR/volumes.mrc`` was read as a bare stack, the contrast DIR/dataset.json records unchecked:
  a light dataset was classified as dark without a word. It is now read as the dataset DIR.
- ``T/**`` matched ``T/`` itself and every sub-folder: each was an error item ("is a directory").
  A folder a glob matches is now read as a folder input is (as the shell's expansion would be).
- A folder ``x.mrc/`` inside a folder input was passed over without a word: now an error row.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cryoshift.runtime import classify
from cryoshift.runtime.errors import InputError
from cryoshift.runtime.mrc import write_volume
from cryoshift.runtime.sources import plan_inputs
from cryoshift.runtime.sources.items import PlanRefusal


@pytest.fixture
def light_dataset(tmp_path: Path, helpers) -> Path:
    """A tiny light-contrast dataset, as ``cryoshift simulate --contrast light`` writes one."""
    from cryoshift.runtime.dataset import write_dataset

    return write_dataset(
        tmp_path / "light", helpers.make_volumes(3, seed=4), voxel_size=helpers.VOXEL, contrast="light"
    )


def _plan(inputs: list[str], helpers, **kw):
    return plan_inputs(inputs, helpers.BOX, helpers.VOXEL, **kw)


@pytest.mark.parametrize("own_file", ["volumes.mrc", "particles.csv", "dataset.json"])
def test_a_datasets_own_file_is_refused_for_a_model_of_the_other_contrast(
    own_file: str, light_dataset: Path, helpers
) -> None:
    """Was: volumes.mrc planned as 3 dark stack slices (a silent wrong answer); the others failed
    as pick tables ("no coordinate columns")."""
    with pytest.raises(PlanRefusal) as caught:
        _plan([str(light_dataset / own_file)], helpers)
    assert str(caught.value) == (
        f"{light_dataset}: data contrast is 'light' but the model expects 'dark'; use a model "
        "exported for 'light' data or pass the right --contrast"
    )


def test_train_is_refused_in_its_own_words(light_dataset: Path, helpers) -> None:
    """A train target (checked against the training run) has no model and no --contrast."""
    with pytest.raises(PlanRefusal, match="target contrast is 'light' but the source's is 'dark'") as caught:
        _plan([str(light_dataset / "volumes.mrc")], helpers, against="training run")
    assert str(caught.value) == (
        f"{light_dataset}: target contrast is 'light' but the source's is 'dark'; give data of one "
        "convention (a simulated source: cryoshift simulate --contrast light)"
    )


def test_a_datasets_volumes_mrc_is_classified_as_the_dataset_with_a_note(
    light_model_path: Path, light_dataset: Path, tmp_path: Path
) -> None:
    """Was refused ("--contrast: data contrast is 'dark'"): the light dataset read as dark data.
    The items are the dataset's slices, under the same ids as the folder gives them."""
    named = light_dataset / "volumes.mrc"
    summary = classify(light_model_path, [str(named)], tmp_path / "out", backend="cpu", progress=False)
    assert summary.total_rows == 3 and summary.classified == 3
    assert any(f"{named}: read as the dataset {light_dataset} it belongs to" in n for n in summary.notes)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["data"]["contrast"] == "light"
    ids = [it.id for it in plan_inputs([str(light_dataset)], 16, 10.0, model_contrast="light").items]
    assert ids == [f"{i:06d}@{named}" for i in (1, 2, 3)]


def test_the_manifest_records_a_light_datasets_contrast(
    light_model_path: Path, light_dataset: Path, tmp_path: Path
) -> None:
    """Was "dark" (the default of --contrast) for a light dataset classified by a light model."""
    classify(light_model_path, [str(light_dataset)], tmp_path / "out", backend="cpu", progress=False)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["data"]["contrast"] == "light"


def test_a_link_to_a_datasets_volumes_mrc_is_read_as_the_dataset(
    light_dataset: Path, tmp_path: Path, helpers
) -> None:
    link = tmp_path / "stack.mrc"
    os.symlink(light_dataset / "volumes.mrc", link)
    with pytest.raises(PlanRefusal, match=f"^{light_dataset}: data contrast is 'light'"):
        _plan([str(link)], helpers)


def _tree(root: Path, helpers) -> Path:
    """T/a.mrc, T/sub/b.mrc, T/x.mrc/c.mrc (a folder named like a volume)."""
    vols = helpers.make_volumes(3, seed=9)
    tree = root / "T"
    for i, rel in enumerate(("a.mrc", "sub/b.mrc", "x.mrc/c.mrc")):
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        write_volume(tree / rel, vols[i], voxel_size=helpers.VOXEL)
    return tree


@pytest.mark.parametrize("pattern", ["**", "*", "**/", "*/"])
def test_folders_a_glob_matches_are_read_as_folder_inputs(pattern: str, tmp_path: Path, helpers) -> None:
    """Was: an error item for ``T/`` (``**``) and for each sub-folder ("is a directory"), and
    ``x.mrc/`` a "file" item that failed when read. ``*/`` matches the sub-folders only."""
    tree = _tree(tmp_path, helpers)
    plan = _plan([f"{tree}/{pattern}"], helpers)
    files = ("sub/b.mrc", "x.mrc/c.mrc") if pattern == "*/" else ("a.mrc", "sub/b.mrc", "x.mrc/c.mrc")
    assert [(it.id, it.kind) for it in plan.items] == [(str(tree / rel), "file") for rel in files]
    assert plan.notes == []


def test_a_glob_does_not_enter_a_linked_folder_it_matches(tmp_path: Path, helpers) -> None:
    """A link to a folder is not entered (``**`` enters none: it may point up the tree): an error
    row saying so, as before ("is a directory"), now in words. A glob below a link is read."""
    tree = _tree(tmp_path, helpers)
    os.symlink(tree / "sub", tree / "lnk")
    items = _plan([f"{tree}/*"], helpers).items
    assert [(it.id, it.kind) for it in items] == [
        (str(tree / "a.mrc"), "file"),
        (str(tree / "lnk"), "error"),
        (str(tree / "sub/b.mrc"), "file"),
        (str(tree / "x.mrc/c.mrc"), "file"),
    ]
    assert items[1].error.startswith("is a link to a folder, not an MRC file; linked folders are not entered")
    os.symlink(tree, tmp_path / "via")
    via = tmp_path / "via"
    items = _plan([f"{via}/**"], helpers).items
    assert [it.id for it in items if it.kind == "file"] == [
        str(via / r) for r in ("a.mrc", "sub/b.mrc", "x.mrc/c.mrc")
    ]
    assert [it.id for it in items if it.kind == "error"] == [str(via / "lnk")]


def test_a_folder_named_like_a_volume_in_a_folder_input_is_an_error_row(tmp_path: Path, helpers) -> None:
    """Was passed over without a word: the user may expect x.mrc classified."""
    tree = _tree(tmp_path, helpers)
    plan = _plan([str(tree)], helpers)
    assert [(it.id, it.kind) for it in plan.items] == [
        (str(tree / "a.mrc"), "file"),
        (str(tree / "x.mrc"), "error"),
    ]
    assert plan.items[1].error == (
        "is a folder, not an MRC file; the sub-folders of a folder input are not read (give it as an "
        "input of its own, or a glob with **, to read the MRC files in it)"
    )


def test_a_folder_named_like_a_volume_first_in_a_folder_is_an_error_row_too(tmp_path: Path, helpers) -> None:
    """The first entry is read in full (its header): the same words, not the reader's."""
    tree = _tree(tmp_path, helpers)
    os.rename(tree / "a.mrc", tree / "z.mrc")
    items = _plan([str(tree)], helpers).items
    assert [it.kind for it in items] == ["error", "file"]
    assert items[0].id == str(tree / "x.mrc") and items[0].error.startswith("is a folder, not an MRC file")


def test_a_folder_input_holding_only_such_a_folder_fails_in_one_line(tmp_path: Path, helpers) -> None:
    tree = _tree(tmp_path, helpers)
    (tree / "a.mrc").unlink()
    with pytest.raises(InputError) as caught:
        _plan([str(tree)], helpers)
    assert str(caught.value).startswith(f"{tree / 'x.mrc'}: is a folder, not an MRC file")
