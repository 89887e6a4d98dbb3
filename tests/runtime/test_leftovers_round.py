"""Small fixes of one round: one helper sorts a ledger's and a merged table's rows, evaluation.json
lists a run's sessions when a --resume ran under other versions, ``info`` shows a pick table's
notes, and a pick row one field short is an error row naming its line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cryoshift.runtime import classify
from cryoshift.runtime.ledger import Ledger, sort_file_rows
from cryoshift.runtime.mrc import write_volume


def _offsets(path: Path) -> np.ndarray:
    """Byte offsets where each data row of ``path`` starts, then its end (rows with no quoted
    line break: one line each)."""
    data = path.read_bytes()
    ends = [i + 1 for i, b in enumerate(data) if b == ord("\n")]
    return np.array(ends, dtype=np.int64)


def test_sort_file_rows_keeps_the_header_and_moves_whole_rows(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text('id,x\nc,3\na,"1,5"\nb,2\n', encoding="utf-8")
    perm = sort_file_rows(table, _offsets(table), np.array([2, 0, 1], dtype=np.int64))
    assert perm.tolist() == [1, 2, 0]
    assert table.read_text(encoding="utf-8") == 'id,x\na,"1,5"\nb,2\nc,3\n'
    before = table.read_bytes()
    assert sort_file_rows(table, _offsets(table), np.array([0, 1, 2], dtype=np.int64)) is None
    assert table.read_bytes() == before


def test_ledger_sort_rows_uses_the_shared_helper_and_keeps_appending(tmp_path):
    path = tmp_path / "errors.csv"
    with Ledger(path, ["id", "path", "reason"]) as ledger:
        ledger.append([["b", "b.mrc", "bad\nheader"], ["a", "a.mrc", "short"]])
        perm = ledger.sort_rows({"a": 0, "b": 1})
        assert perm.tolist() == [1, 0]
        ledger.append([["c", "c.mrc", "late"]])  # the handle is open again after the sort
    rows = list(csv.reader(path.open(encoding="utf-8", newline="")))
    assert [r[0] for r in rows] == ["id", "a", "b", "c"]
    assert rows[2][2] == "bad\nheader"


def test_resumed_run_puts_retried_rows_in_the_inputs_order(model_path, helpers, tmp_path, monkeypatch):
    """Only the corrupt files are rewritten (a good one touched would be 'changed since')."""
    monkeypatch.chdir(tmp_path)
    data = Path("data")
    data.mkdir()
    vols = helpers.make_volumes(6, helpers.BOX, 3)
    for i in range(6):
        p = data / f"v{i:02d}.mrc"
        if i in (1, 4):
            p.write_bytes(b"\x00" * 2000)
        else:
            write_volume(p, vols[i], voxel_size=helpers.VOXEL)
    kw = dict(backend="cpu", progress=False, batch_size=2)
    out = tmp_path / "out"
    assert classify(model_path, [str(data)], out, **kw).total_errors == 2
    for i in (1, 4):
        write_volume(data / f"v{i:02d}.mrc", vols[i], voxel_size=helpers.VOXEL)
    resumed = classify(model_path, [str(data)], out, resume=True, retry_errors=True, **kw)
    assert resumed.total_errors == 0
    ids = list(pd.read_csv(out / "predictions.csv")["id"])
    assert ids == sorted(ids) and len(ids) == 6


def test_training_record_lists_sessions_resumed_under_other_versions(model_path, tmp_path):
    """versions.json's top is the run's FIRST session; a --resume under another torch is listed."""
    pytest.importorskip("torch")
    from cryoshift.runtime.metadata import read_onnx_metadata
    from cryoshift.training import run
    from cryoshift.training.evaluate import training_record, training_summary

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"seed": 2, "method": "source-only"}))
    first = run.versions()
    run.write_json(folder / run.VERSIONS, run.session_versions(folder, first, 1, resumed=False))
    meta = read_onnx_metadata(model_path)
    same = training_record(model_path, meta, folder)
    assert "sessions" not in same and same["torch_version"] == first["torch"]

    run.write_json(folder / run.VERSIONS, run.session_versions(folder, first, 3, resumed=True))
    assert "sessions" not in training_record(model_path, meta, folder)  # resumed under the same versions

    later = {**first, "torch": "9.9.9", "cryoshift": "99.0"}
    run.write_json(folder / run.VERSIONS, run.session_versions(folder, later, 5, resumed=True))
    record = training_record(model_path, meta, folder)
    assert record["torch_version"] == first["torch"]  # the first session's, as before
    assert [s["first_epoch"] for s in record["sessions"]] == [1, 3, 5]
    assert [s["torch"] for s in record["sessions"]] == [first["torch"], first["torch"], "9.9.9"]
    assert record["sessions"][2]["cryoshift"] == "99.0" and record["sessions"][0]["started"]
    assert "resumed from epoch 5 under cryoshift 99.0, torch 9.9.9" in training_summary(record)


def test_info_shows_a_pick_tables_notes(tmp_path):
    """A ';' CSV with decimal commas and points: classify notes that both are read as decimal marks;
    ``info`` on the table said nothing of it."""
    from cryoshift.runtime.info import describe

    table = tmp_path / "picks.csv"
    table.write_text("x;y;z;tomo_name\n16,5;20;30;t1\n40.25;50;60;t1\n", encoding="utf-8")
    rows = dict(describe(table).rows)
    assert rows["rows"] == "2"
    assert "decimal commas ('16,5'" in rows["note"] and "both are read as decimal marks" in rows["note"]


def test_a_pick_row_one_field_short_is_an_error_row_naming_its_line(model_path, tmp_path, helpers):
    """A row missing its last value (an rlnOpticsGroup after the coordinates) was read with NaN
    there without a word; a row with one field too many was already an error row of its own."""
    from cryoshift.runtime.errors import InputError
    from cryoshift.runtime.tables import read_pick_table

    tomo = tmp_path / "TS_01.mrc"
    rng = np.random.default_rng(0)
    write_volume(tomo, rng.normal(0, 1, (40, 40, 40)).astype(np.float32), voxel_size=helpers.VOXEL)
    picks = tmp_path / "picks.csv"
    picks.write_text(
        "tomo_name,x,y,z,rlnOpticsGroup\nTS_01,20,20,20,1\nTS_01,18,20,20\nTS_01,22,20,20,1,7\nTS_01,20,22,20,1\n"
    )
    with pytest.raises(InputError) as refused:
        read_pick_table(picks)
    assert refused.value.reason == (
        "2 rows have 4 fields where the header names 5 (line 3); 6 fields where the header names 5 (line 4)"
    )
    table = read_pick_table(picks, skip_bad_rows=True)
    assert table.bad_rows.tolist() == [1, 2]
    out = tmp_path / "out"
    classify(model_path, [str(picks)], out, backend="cpu", progress=False, tomograms=[str(tomo)])
    errors = pd.read_csv(out / "errors.csv")
    assert errors["reason"].tolist() == [
        "line 3: 4 fields where the header names 5 (row skipped)",
        "line 4: 6 fields where the header names 5 (row skipped)",
    ]
    assert len(pd.read_csv(out / "predictions.csv")) == 2
