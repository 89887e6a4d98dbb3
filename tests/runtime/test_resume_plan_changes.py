"""Resuming after the inputs changed, the same picks in two tables, and what the notes and the
manifest say of them (facility report, findings 3, 4, 7, 10 and 11).

- a pick table with picks appended resumes (the new picks classified); one with a coordinate
  corrected is refused before any work, the output folder left as it was, where the old pick's
  row was kept as a phantom particle (a row of ``<NA>`` in predictions.star);
- the same picks in two STAR files are classified once in an unsharded run, as shards + merge do;
- after a resume, ``manifest.json`` ``summary.unknown`` counts the whole table;
- picks that only round to one id are not called repeats of the same coordinates;
- a folder whose MRC files are in sub-folders is refused with the recursive glob to give.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cryoshift.runtime import classify
from cryoshift.runtime.errors import InputError
from cryoshift.runtime.lock import lock_name
from cryoshift.runtime.merge import merge_shards
from cryoshift.runtime.mrc import write_volume
from cryoshift.runtime.results import read_results

PICKS = ["TS_01 12 12 12", "TS_01 20 20 20", "TS_01 28 28 28", "TS_01 12 28 20", "TS_01 28 12 20"]


def _tomogram(path: Path, seed: int = 0) -> Path:
    data = np.random.default_rng(seed).normal(size=(40, 40, 40)).astype(np.float32)
    return write_volume(path, data, voxel_size=10.0)


def _picks_star(path: Path, rows: list[str]) -> Path:
    head = "data_particles\n\nloop_\n_rlnTomoName #1\n" + "".join(
        f"_rlnCoordinate{axis} #{i}\n" for i, axis in enumerate("XYZ", 2)
    )
    path.write_text(head + "\n".join(rows) + "\n")
    return path


def _run(model_path: Path, inputs: list[Path], out: Path, tomos: Path, **kw: object):
    return classify(
        model_path,
        [str(p) for p in inputs],
        out,
        tomograms=[str(tomos)],
        backend="cpu",
        progress=False,
        **kw,
    )


def _folder_state(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and mtime, but the run lock's (each run takes it, writing its pid)."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != lock_name()
    }


def test_appended_picks_resume_and_count_unknown_over_the_whole_table(model_path, tmp_path):
    """Picks appended to the table are the resume's work; summary.unknown is the whole file's."""
    _tomogram(tmp_path / "TS_01.mrc")
    star = _picks_star(tmp_path / "picks.star", PICKS[:3])
    out = tmp_path / "out"
    first = _run(model_path, [star], out, tmp_path, unknown_threshold=1.0)  # every row unknown
    assert first.total_rows == 3 and first.unknown == 3
    _picks_star(star, PICKS)  # two picks appended
    again = _run(model_path, [star], out, tmp_path, unknown_threshold=1.0, resume=True)
    assert (again.classified, again.resumed, again.total_rows) == (2, 3, 5)
    summary = json.loads((out / "manifest.json").read_text())["summary"]
    assert summary["class_counts"] == {"unknown": 5}
    assert summary["unknown"] == 5  # was 2: this session's rows only
    assert summary["unknown_this_session"] == 2


def test_an_edited_pick_is_refused_on_resume_and_nothing_changes(model_path, tmp_path):
    """A corrected coordinate: the old pick's row would stay as a phantom particle."""
    _tomogram(tmp_path / "TS_01.mrc")
    star = _picks_star(tmp_path / "picks.star", PICKS)
    out = tmp_path / "out"
    _run(model_path, [star], out, tmp_path)
    before = _folder_state(out)
    _picks_star(star, ["TS_01 14 12 12", *PICKS[1:]])
    with pytest.raises(InputError) as caught:
        _run(model_path, [star], out, tmp_path, resume=True)
    message = str(caught.value)
    assert "1 rows already done" in message, message
    assert "'TS_01:12.0,12.0,12.0'" in message, message
    assert "new output directory (-o)" in message, message
    assert "\n" not in message
    assert _folder_state(out) == before


def test_the_same_picks_in_two_tables_are_classified_once_as_shards_and_merge_do(model_path, tmp_path):
    """Unsharded, each id once (it was twice: doubled class counts) and the same rows as merge."""
    _tomogram(tmp_path / "TS_01.mrc")
    star = _picks_star(tmp_path / "particles.star", PICKS)
    copy = _picks_star(tmp_path / "copy.star", PICKS)
    whole = _run(model_path, [star, star, copy], tmp_path / "whole", tmp_path)
    rows = read_results(whole.predictions_csv)
    assert rows["id"].is_unique and len(rows) == len(PICKS)
    assert sum(whole.class_counts.values()) == len(PICKS)
    twice = f"{2 * len(PICKS)} picks or volumes were given more than once"
    assert any(twice in n for n in whole.notes), whole.notes
    assert "<NA>" not in Path(whole.predictions_star).read_text()
    for i in range(2):
        _run(model_path, [star, copy], tmp_path / "sharded", tmp_path, shard=f"{i}/2")
    merged = merge_shards([tmp_path / "sharded"])
    merged_rows = read_results(merged.predictions_csv)
    assert merged_rows["id"].tolist() == rows["id"].tolist()
    assert merged_rows.equals(rows)


def test_picks_that_only_round_alike_are_not_called_repeats(model_path, tmp_path):
    """Ids give coordinates to 0.1 voxel: 12.12 and 12.14 share one but are not the same pick."""
    _tomogram(tmp_path / "TS_01.mrc")
    table = tmp_path / "close.csv"
    table.write_text("tomo,x,y,z\nTS_01,12.12,20,16\nTS_01,12.14,20,16\nTS_01,12.12,20,16\n")
    s = _run(model_path, [table], tmp_path / "out", tmp_path)
    notes = [n for n in s.notes if "close.csv" in n and "~2" in n]
    assert len(notes) == 1, s.notes
    assert "repeat an earlier pick of the same tomogram and coordinates" not in notes[0], notes
    assert "2 picks share an id with an earlier pick" in notes[0], notes
    assert "exact repeats: 1, distinct picks that only round alike: 1" in notes[0], notes
    exact = tmp_path / "exact.csv"
    exact.write_text("tomo,x,y,z\nTS_01,12.12,20,16\nTS_01,12.12,20,16\n")
    s = _run(model_path, [exact], tmp_path / "out_exact", tmp_path)
    assert any("1 picks repeat an earlier pick of the same tomogram and coordinates" in n for n in s.notes)


def test_a_folder_of_sub_folders_suggests_the_recursive_glob(model_path, tmp_path):
    """files/user01/session1/*.mrc given as files: say where the MRC files are, and the glob."""
    nested = tmp_path / "files" / "user01" / "session1"
    nested.mkdir(parents=True)
    write_volume(nested / "sub_0.mrc", np.zeros((16, 16, 16), np.float32), voxel_size=10.0)
    folder = tmp_path / "files"
    with pytest.raises(InputError) as caught:
        classify(model_path, [str(folder)], tmp_path / "out", backend="cpu", progress=False)
    message = str(caught.value)
    assert "folder holds no MRC files, but its sub-folders do" in message, message
    assert f"'{folder}/**/*.mrc'" in message, message
    assert str(nested / "sub_0.mrc") in message, message
