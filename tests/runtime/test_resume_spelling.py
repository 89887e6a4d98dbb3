"""``--resume`` and ``merge`` with the inputs written another way than the run started with.

Ids are built from the inputs as written (``000001@stack.mrcs``, ``g/a.mrc``). The resume check
compared the inputs made absolute, so ``$PWD/stack.mrcs`` after ``stack.mrcs`` was accepted, none
of its new ids was in the ledger, and every item was classified again and appended (16 rows for
8, exit 0), while ``./stack.mrcs`` and ``g/`` (the same ids) were refused. Now a spelling that plans
other ids is refused naming both, one that plans the same ids is accepted, and shards of two
spellings are refused for that cause (not as "a picks table rewritten or re-sorted").
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cryoshift.runtime import classify
from cryoshift.runtime.errors import InputError
from cryoshift.runtime.merge import merge_shards
from cryoshift.runtime.mrc import write_stack, write_volume
from cryoshift.runtime.results import read_results


@pytest.fixture
def here(helpers, tmp_path, monkeypatch) -> Path:
    """stack.mrcs (8 volumes) and g/ (3 files) in the working folder."""
    vols = helpers.make_volumes(11)
    write_stack(tmp_path / "stack.mrcs", vols[:8], voxel_size=helpers.VOXEL)
    (tmp_path / "g").mkdir()
    for i in range(3):
        write_volume(tmp_path / "g" / f"v{i}.mrc", vols[8 + i], voxel_size=helpers.VOXEL)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run(model_path, inputs: list[str], **kw):
    return classify(model_path, inputs, "out", backend="cpu", progress=False, **kw)


@pytest.mark.parametrize(("first", "then"), [("stack.mrcs", "{here}/stack.mrcs"), ("g", "{here}/g")])
def test_resume_refuses_a_spelling_that_plans_other_ids(model_path, here, first, then):
    _run(model_path, [first])
    rows = (here / "out" / "predictions.csv").read_bytes()
    now = then.format(here=here)
    with pytest.raises(InputError) as caught:
        _run(model_path, [now], resume=True)
    said = str(caught.value)
    assert f"--resume needs the inputs as the run was started with: {first} (given now: {now})" in said
    assert said.startswith("out/run.json: ") and "\n" not in said
    assert (here / "out" / "predictions.csv").read_bytes() == rows  # nothing classified twice


@pytest.mark.parametrize(("first", "then"), [("stack.mrcs", "./stack.mrcs"), ("g", "g/"), ("g/", "./g")])
def test_resume_accepts_a_spelling_that_plans_the_same_ids(model_path, here, first, then):
    done = _run(model_path, [first]).total_rows
    again = _run(model_path, [then], resume=True)
    assert (again.classified, again.resumed) == (0, done)
    assert len(read_results(here / "out" / "predictions.csv")) == done


def test_resume_from_another_folder_by_way_of_dotdot_is_refused(model_path, here, monkeypatch):
    """``../g`` from a sub-folder names the same files, with other ids (``../g/v0.mrc``)."""
    _run(model_path, ["g"])
    (here / "sub").mkdir()
    monkeypatch.chdir(here / "sub")
    with pytest.raises(InputError, match="this run was started with inputs"):
        classify(model_path, ["../g"], here / "out", backend="cpu", progress=False, resume=True)
    assert len(read_results(here / "out" / "predictions.csv")) == 3


def test_a_shard_resumed_with_another_spelling_is_refused_for_that_cause(model_path, here):
    _run(model_path, ["stack.mrcs"], shard="1/2")
    with pytest.raises(InputError, match="--resume needs the inputs as the run was started with") as caught:
        _run(model_path, [f"{here}/stack.mrcs"], shard="1/2", resume=True)
    assert "re-sorted" not in str(caught.value)


def test_merge_names_shards_given_the_inputs_written_otherwise(model_path, here):
    _run(model_path, ["stack.mrcs"], shard="0/2")
    _run(model_path, [f"{here}/stack.mrcs"], shard="1/2")
    with pytest.raises(InputError) as caught:
        merge_shards(["out"])
    said = str(caught.value)
    assert "shard 1 was given the inputs written otherwise than shard 0" in said
    assert f"stack.mrcs (shard 1: {here}/stack.mrcs)" in said and "re-sorted" not in said
    assert not (here / "out" / "predictions.csv").exists()
