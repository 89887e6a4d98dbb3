"""Inputs that look like globs, and globs over earlier results (tester's report, paths.md 3 and 6).

- A file named ``[ab].mrc`` was always a pattern: it classified ``a.mrc`` instead (a silent wrong
  answer), or "matched no files" when it was the only file; likewise for ``-t`` tomograms and
  ``train --target``. Text that names an existing path is now that path; only text that names
  nothing is a pattern.
- ``D/**`` over a tree holding an earlier run's results folder read its manifest.json, run.json,
  predictions and errors as pick tables and listings (error rows, added to the run's own
  errors.csv by ``-o D/res --resume``). A glob now leaves out cryoshift results folders below
  where it starts, and this run's own output.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from cryoshift.runtime import classify
from cryoshift.runtime.errors import InputError
from cryoshift.runtime.mrc import write_volume
from cryoshift.runtime.sources import plan_inputs
from cryoshift.runtime.sources.paths import (
    expand,
    expand_input,
    is_glob,
    is_results_dir,
    no_match_reason,
    results_note,
    tomogram_index,
)


def _volumes(helpers, n: int = 3) -> np.ndarray:
    return helpers.make_volumes(n, seed=7)


def _write(path: Path, volume: np.ndarray, helpers) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_volume(path, volume, voxel_size=helpers.VOXEL)
    return path


def _ids(inputs: list[str], helpers) -> list[str]:
    return [it.id for it in plan_inputs(inputs, helpers.BOX, helpers.VOXEL).items]


def _error_items(inputs: list[str], helpers) -> list[str]:
    items = plan_inputs(inputs, helpers.BOX, helpers.VOXEL).items
    return [f"{it.id}: {it.error}" for it in items if it.kind == "error"]


# ---------------------------------------------------------------------------------------------
# 3. a name with glob characters that names a file is that file


@pytest.fixture
def bracket_folder(tmp_path: Path, helpers) -> Path:
    """``g/[ab].mrc`` and a different volume ``g/a.mrc``, which ``[ab].mrc`` matches as a glob."""
    vols = _volumes(helpers)
    _write(tmp_path / "g" / "[ab].mrc", vols[0], helpers)
    _write(tmp_path / "g" / "a.mrc", vols[1], helpers)
    return tmp_path / "g"


def test_a_file_named_like_a_glob_is_classified_not_the_file_the_glob_matches(
    bracket_folder: Path, helpers
) -> None:
    """Was: the id was ``g/a.mrc`` (another volume), rc 0, no note."""
    named = str(bracket_folder / "[ab].mrc")
    assert not is_glob(named)
    assert _ids([named], helpers) == [named]


def test_the_only_file_named_like_a_glob_is_found(bracket_folder: Path, helpers) -> None:
    """Was: "[ab].mrc: matches no files" although the file is there."""
    (bracket_folder / "a.mrc").unlink()
    named = str(bracket_folder / "[ab].mrc")
    assert _ids([named], helpers) == [named]


def test_a_literal_name_wins_over_the_other_files_its_pattern_matches(tmp_path: Path, helpers) -> None:
    """``star*.mrc`` is that one file when it exists (documented in is_glob); ``sta[r]*.mrc``,
    which names no file, is the pattern and matches both."""
    vols = _volumes(helpers)
    star = _write(tmp_path / "star*.mrc", vols[0], helpers)
    other = _write(tmp_path / "starX.mrc", vols[1], helpers)
    assert expand(str(star)) == [star]
    assert expand(str(tmp_path / "sta[r]*.mrc")) == [star, other]


def test_a_name_that_names_nothing_is_still_a_glob(bracket_folder: Path) -> None:
    assert is_glob(str(bracket_folder / "[a].mrc"))
    assert expand(str(bracket_folder / "[a].mrc")) == [bracket_folder / "a.mrc"]


def test_a_tomogram_named_like_a_glob_is_that_tomogram(tmp_path: Path, helpers) -> None:
    """Was: ``-t 'T/TS[9].mrc'`` indexed ``T/TS9.mrc``, and picks of TS9 were cropped from it."""
    vols = _volumes(helpers)
    bracketed = _write(tmp_path / "T" / "TS[9].mrc", vols[0], helpers)
    _write(tmp_path / "T" / "TS9.mrc", vols[1], helpers)
    index = tomogram_index([str(bracketed)])
    assert dict(index) == {"TS[9]": bracketed}


def test_a_train_target_named_like_a_glob_is_that_file(bracket_folder: Path, helpers) -> None:
    """Was: ``train --target 'g/[ab].mrc'`` adapted to ``g/a.mrc`` (or "matches no files")."""
    pytest.importorskip("torch")
    from cryoshift.training.data import load_target

    domain = load_target(str(bracket_folder / "[ab].mrc"), helpers.BOX, helpers.VOXEL, "dark", ["a", "b"])
    assert len(domain) == 1
    np.testing.assert_allclose(np.asarray(domain.volumes[0]), _volumes(helpers)[0], rtol=1e-6)


def test_a_pattern_in_a_folder_with_glob_characters_suggests_escaping_it(tmp_path: Path, helpers) -> None:
    """``T[1]/*.mrc`` reads the folder as the pattern ``T1``: it matches nothing, and the reason
    now names the escaped pattern that reads the folder ``T[1]``."""
    _write(tmp_path / "T[1]" / "x.mrc", _volumes(helpers)[0], helpers)
    pattern = str(tmp_path / "T[1]" / "*.mrc")
    assert expand(pattern) == []
    escaped = str(tmp_path / "T[[]1]" / "*.mrc")
    assert no_match_reason(pattern) == (
        f"matches no files; its folder holds glob characters itself: escape them to name it ({escaped})"
    )
    assert expand(escaped) == [tmp_path / "T[1]" / "x.mrc"]
    assert no_match_reason(str(tmp_path / "none" / "*.mrc")) == "matches no files"


def test_a_tomograms_pattern_that_matches_nothing_says_how_to_escape(tmp_path: Path, helpers) -> None:
    _write(tmp_path / "T[1]" / "TS1.mrc", _volumes(helpers)[0], helpers)
    index = tomogram_index([str(tmp_path / "T[1]" / "*.mrc")])
    assert len(index.empty) == 1 and "T[[]1]" in index.empty[0][1]


# ---------------------------------------------------------------------------------------------
# 6. a glob over an earlier run's results folder


@pytest.fixture
def tree_with_results(tmp_path: Path, model_path: Path, helpers) -> Path:
    """``D/a.mrc``, ``D/b.mrc`` and ``D/res``: the output of a real classify run of ``D/**``."""
    vols = _volumes(helpers)
    tree = tmp_path / "D"
    _write(tree / "a.mrc", vols[0], helpers)
    _write(tree / "b.mrc", vols[1], helpers)
    classify(model_path, [str(tree / "**")], tree / "res", backend="cpu", progress=False)
    return tree


def test_a_recursive_glob_leaves_an_earlier_results_folder_out(tree_with_results: Path, helpers) -> None:
    """Was: 3 error rows (manifest.json, run.json, predictions.csv as pick tables) and
    predictions.star read as a listing."""
    tree = tree_with_results
    assert is_results_dir(tree / "res")
    found = expand_input(str(tree / "**"))
    assert found.paths == [tree / "a.mrc", tree / "b.mrc"]
    assert found.results == [tree / "res"]
    assert _error_items([str(tree / "**")], helpers) == []
    assert _ids([str(tree / "**")], helpers) == [str(tree / "a.mrc"), str(tree / "b.mrc")]


def test_resume_into_a_folder_inside_the_glob_adds_no_error_rows(
    tree_with_results: Path, model_path: Path
) -> None:
    """Was: ``-o D/res --resume`` accepted the plan with the run's own files in it and added
    their 3 error rows to its own errors.csv."""
    tree = tree_with_results
    summary = classify(
        model_path, [str(tree / "**")], tree / "res", backend="cpu", progress=False, resume=True
    )
    assert summary.total_errors == 0
    assert (tree / "res" / "errors.csv").read_text().splitlines() == ["id,path,reason"]
    assert len((tree / "res" / "predictions.csv").read_text().splitlines()) == 3


def test_a_shallow_glob_leaves_a_results_folders_files_out(tree_with_results: Path) -> None:
    """``D/*/*`` reaches the results folder's files as ``D/**`` does."""
    found = expand_input(str(tree_with_results / "*" / "*"))
    assert found.paths == [] and found.results == [tree_with_results / "res"]


def test_a_glob_from_the_working_folder_leaves_a_results_folder_out(
    tree_with_results: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``**`` (no folder of its own: it starts in ``.``) names its matches relative to it."""
    monkeypatch.chdir(tree_with_results)
    assert expand_input("**") == ([Path("a.mrc"), Path("b.mrc")], [Path("res")])
    assert expand_input("*/*") == ([], [Path("res")])


def test_a_results_folder_the_glob_starts_in_is_read_as_named(tree_with_results: Path, helpers) -> None:
    """The user named the folder: ``D/res/*.mrc`` reads what it matches there."""
    inside = _write(tree_with_results / "res" / "c.mrc", _volumes(helpers)[2], helpers)
    assert expand_input(str(tree_with_results / "res" / "*.mrc")) == ([inside], [])


def test_a_glob_over_data_an_earlier_run_wrote_beside_leaves_only_its_files_out(
    tmp_path: Path, model_path: Path, helpers
) -> None:
    """``classify m 'D/*' -o D`` run before: ``D/*`` again read D's manifest.json, run.json and
    predictions.csv as pick tables (3 error rows); the volume beside them is still read."""
    data = _write(tmp_path / "D" / "a.mrc", _volumes(helpers)[0], helpers)
    classify(model_path, [str(data.parent / "*")], data.parent, backend="cpu", progress=False)
    assert expand_input(str(data.parent / "*")) == ([data], [data.parent])
    assert _error_items([str(data.parent / "*")], helpers) == []


def test_a_file_of_a_results_folder_named_on_its_own_is_that_file(tree_with_results: Path) -> None:
    record = tree_with_results / "res" / "run.json"
    assert expand(str(record)) == [record]


def test_another_tools_manifest_does_not_hide_a_data_folder(tmp_path: Path, helpers) -> None:
    """Only a cryoshift record marks a results folder: data beside a foreign manifest.json is read."""
    data = _write(tmp_path / "D" / "sub" / "a.mrc", _volumes(helpers)[0], helpers)
    (data.parent / "manifest.json").write_text(json.dumps({"format": "other/1"}))
    assert not is_results_dir(data.parent)
    assert data in expand(str(tmp_path / "D" / "**"))


def test_the_runs_own_output_is_left_out_without_a_note(tmp_path: Path, helpers) -> None:
    """The files this run writes, by name, wherever its folder is (before it holds a record, and
    as the glob's own folder too); never the data beside them, so a resumed run plans alike."""
    vols = _volumes(helpers)
    data = _write(tmp_path / "D" / "a.mrc", vols[0], helpers)
    own = tmp_path / "D" / "out"
    beside = _write(own / "c.mrc", vols[1], helpers)
    (own / "predictions.csv").write_text("id,path\n")
    (own / "predictions_ribosome.star").write_text("data_\n")
    assert expand_input(str(tmp_path / "D" / "**"), own_output=own) == ([data, beside], [])
    (data.parent / "predictions.csv").write_text("id,path\n")
    (data.parent / "run.shard-0-of-2.json").write_text("{}")
    assert expand_input(str(tmp_path / "D" / "*"), own_output=data.parent) == ([data, beside], [])


def test_a_named_pipe_called_run_json_does_not_block_the_glob(tmp_path: Path, helpers) -> None:
    """A results folder is known by reading its record's first bytes: never from a pipe."""
    data = _write(tmp_path / "D" / "sub" / "a.mrc", _volumes(helpers)[0], helpers)
    os.mkfifo(data.parent / "run.json")
    assert not is_results_dir(data.parent)
    assert data in expand(str(tmp_path / "D" / "**" / "*.mrc"))


def test_the_note_names_the_folders_left_out() -> None:
    assert results_note([Path("D/res")]) == (
        "left out what earlier cryoshift runs wrote in D/res (results, not input data); "
        "name a file there to read it"
    )
    many = results_note([Path(f"r{i}") for i in range(5)])
    assert many.startswith("left out what earlier cryoshift runs wrote in 5 folders: r0, r1, r2 and 2 more")


def test_the_planner_says_what_a_glob_left_out_and_leaves_its_own_output_out_unsaid(
    tree_with_results: Path, helpers
) -> None:
    """Needs the planner/run patch (own_output): one note for an earlier run's folder; a run
    into the folder says nothing of its own output."""
    tree = tree_with_results
    plan = plan_inputs([str(tree / "**")], helpers.BOX, helpers.VOXEL)
    assert f"{tree / '**'}: {results_note([tree / 'res'])}" in plan.notes
    own = plan_inputs([str(tree / "**")], helpers.BOX, helpers.VOXEL, own_output=tree / "res")
    assert not any("left out" in n for n in own.notes)
    with pytest.raises(InputError, match="matches no input files; left out what earlier cryoshift runs"):
        plan_inputs([str(tree / "*" / "*")], helpers.BOX, helpers.VOXEL)


def test_shards_written_into_the_globbed_folder_merge(
    tmp_path: Path, model_path: Path, helpers, monkeypatch
) -> None:
    """``classify 'D/*' -o D --shard i/2``: each shard leaves its own output files out of the glob
    without a word, and merge plans the inputs again the same way (it said it had left out "what
    earlier cryoshift runs wrote in D", the shards' own files)."""
    from cryoshift.runtime.merge import merge_shards
    from cryoshift.runtime.results import read_results

    monkeypatch.chdir(tmp_path)
    for k, volume in enumerate(_volumes(helpers)):
        _write(tmp_path / "D" / f"{'abc'[k]}.mrc", volume, helpers)
    for i in range(2):
        classify(model_path, ["D/*"], "D", backend="cpu", progress=False, shard=f"{i}/2")
    summary = merge_shards(["D"])
    rows = read_results(tmp_path / "D" / "predictions.csv")
    assert list(rows["id"]) == ["D/a.mrc", "D/b.mrc", "D/c.mrc"], summary.notes
    assert not [n for n in summary.notes if "left out" in n], summary.notes  # its own output, unsaid
