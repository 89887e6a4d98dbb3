"""File names that are not UTF-8, and ``--resume`` with another model than the run started with.

A non-UTF-8 name reaches Python as lone surrogates (``os.fsdecode``); the ledgers write it with
the bytes as backslash escapes, so the item is classified and resumed like any other, and the run
never loses the rows of its batch. A run records its model (``run.json``) before its first row, so
a resume with another model is refused even after a ``kill -9`` that left no manifest.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cryoshift.runtime import classify
from cryoshift.runtime.cli import main
from cryoshift.runtime.errors import InputError
from cryoshift.runtime.ledger import Ledger, RunLedgers, escape_text
from cryoshift.runtime.merge import merge_shards
from cryoshift.runtime.mrc import write_stack, write_volume
from cryoshift.runtime.results import read_results
from cryoshift.runtime.sources import Item
from cryoshift.runtime.summary import output_names

RAW_NAME = os.fsdecode(b"b\xff.mrc")  # what os.listdir gives for the bytes b"b\xff.mrc"
BAD_RAW_NAME = os.fsdecode(b"corrupt\xfe.mrc")


def _folder_with_odd_names(root: Path, helpers) -> tuple[Path, dict[str, np.ndarray]]:
    """a.mrc, é.mrc (UTF-8), b<0xff>.mrc (not UTF-8) and a corrupt corrupt<0xfe>.mrc; returns the
    folder and the volume behind each id as the results table writes it."""
    folder = root / "subs"
    folder.mkdir()
    vols = helpers.make_volumes(3)
    try:
        write_volume(folder / RAW_NAME, vols[2], voxel_size=helpers.VOXEL)
    except (OSError, UnicodeEncodeError):  # pragma: no cover - a file system that wants UTF-8 names
        pytest.skip("this file system refuses file names that are not UTF-8")
    write_volume(folder / "a.mrc", vols[0], voxel_size=helpers.VOXEL)
    write_volume(folder / "é.mrc", vols[1], voxel_size=helpers.VOXEL)
    (folder / BAD_RAW_NAME).write_bytes(b"\x00" * 2000)
    expected = {
        f"{folder}/a.mrc": vols[0],
        f"{folder}/é.mrc": vols[1],
        f"{folder}/b\\xff.mrc": vols[2],
    }
    return folder, expected


def test_escape_text_keeps_text_and_escapes_only_what_utf8_cannot_hold():
    assert escape_text("plain/a.mrc") == "plain/a.mrc"
    assert escape_text("dir/é.mrc") == "dir/é.mrc"
    assert escape_text(RAW_NAME) == "b\\xff.mrc"
    assert escape_text("x\ud800y") == "x\\ud800y"  # a surrogate that stands for no byte
    assert escape_text(escape_text(RAW_NAME)) == escape_text(RAW_NAME)  # read-back ids stay as they are


def test_a_batch_with_a_non_utf8_id_is_written_whole_and_resumed(tmp_path):
    """The batch that holds the odd id keeps all its rows, and a resume skips every one of them."""
    names = output_names(tmp_path, None)
    columns = ["id", "v"]
    ids = ["a", f"dir/{RAW_NAME}", "c"]
    with RunLedgers(names, columns) as ledgers:
        ledgers.append([[i, n] for n, i in enumerate(ids)], [[f"e/{BAD_RAW_NAME}", "e", "unreadable"]])
    text = names["csv"].read_bytes().decode("utf-8")  # strict: the file is UTF-8 text
    assert text.splitlines() == ["id,v", "a,0", "dir/b\\xff.mrc,1", "c,2"]
    assert names["errors"].read_text().splitlines()[1] == "e/corrupt\\xfe.mrc,e,unreadable"
    items = [Item(i, "file", i) for i in [*ids, f"e/{BAD_RAW_NAME}", "new"]]
    with RunLedgers(names, columns, resume=True) as ledgers:
        assert [it.id for it in ledgers.todo(items)] == ["new"]
        assert ledgers.has(f"dir/{RAW_NAME}") and ledgers.has("dir/b\\xff.mrc")
    with Ledger(names["csv"], columns, resume=True) as led:
        assert led.done == {"a", "dir/b\\xff.mrc", "c"} and led.rows == 3


def test_a_non_utf8_file_name_is_classified_and_resumed(model_path, helpers, tmp_path):
    folder, expected = _folder_with_odd_names(tmp_path, helpers)
    out = tmp_path / "out"
    s = classify(model_path, [str(folder)], out, backend="cpu", progress=False)
    assert (s.total_rows, s.total_errors) == (3, 1)
    df = read_results(out / "predictions.csv")
    assert sorted(df["id"]) == sorted(expected)
    probs, shift = helpers.expected_scores(model_path, np.stack(list(expected.values())))
    cols = [f"prob_{c}" for c in helpers.CLASSES]
    by_id = df.set_index("id")
    for k, ident in enumerate(expected):
        np.testing.assert_allclose(by_id.loc[ident, cols].to_numpy(float), probs[k], rtol=1e-5, atol=1e-6)
        assert by_id.loc[ident, "shift_score"] == pytest.approx(shift[k], rel=1e-4)
    errors = read_results(out / "errors.csv")
    assert list(errors["id"]) == [f"{folder}/corrupt\\xfe.mrc"]
    star = read_results(out / "predictions.star")
    assert sorted(star["id"]) == sorted(expected)
    json.loads((out / "manifest.json").read_text())  # written, and JSON
    # Resume: every item is recognised as done, none is classified or written twice.
    s = classify(model_path, [str(folder)], out, backend="cpu", resume=True, progress=False)
    assert (s.classified, s.errors, s.resumed, s.total_rows, s.total_errors) == (0, 0, 4, 3, 1)
    assert len(read_results(out / "predictions.csv")) == 3


def test_a_listing_in_a_non_utf8_folder_keeps_its_columns(model_path, helpers, tmp_path):
    """A STAR listing there crashed planning (pandas' Arrow strings refuse surrogates), and its
    rows' input columns were then lost in predictions.star (ids matched raw against escaped)."""
    import starfile

    folder = tmp_path / os.fsdecode(b"d\xfd")
    try:
        folder.mkdir()
    except (OSError, UnicodeEncodeError):  # pragma: no cover - a file system that wants UTF-8 names
        pytest.skip("this file system refuses file names that are not UTF-8")
    for name, vol in zip(("a.mrc", "é.mrc"), helpers.make_volumes(2), strict=True):
        write_volume(folder / name, vol, voxel_size=helpers.VOXEL)
    listing = folder / "subs.star"
    listing.write_text("data_\n\nloop_\n_rlnImageName\n_rlnAngleRot\na.mrc 10\né.mrc 20\n")
    out = tmp_path / "out"
    s = classify(model_path, [str(listing)], out, backend="cpu", progress=False)
    assert (s.total_rows, s.total_errors) == (2, 0)
    star = starfile.read(out / "predictions.star")
    assert sorted(star["rlnAngleRot"].tolist()) == [10, 20] and len(star) == 2


def test_cli_prints_the_summary_of_a_non_utf8_output_folder(model_path, helpers, tmp_path, capsys):
    folder, _ = _folder_with_odd_names(tmp_path, helpers)
    out = tmp_path / os.fsdecode(b"out\xfe")
    assert main(["classify", str(model_path), str(folder), "-o", str(out), "-b", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "out\\xfe/predictions.csv (3 rows)" in printed and "(1 rows)" in printed
    assert len(read_results(out / "predictions.csv")) == 3


def test_shards_with_non_utf8_names_merge_once(model_path, helpers, tmp_path):
    folder, expected = _folder_with_odd_names(tmp_path, helpers)
    shards = tmp_path / "shards"
    for i in range(2):
        classify(model_path, [str(folder)], shards, backend="cpu", progress=False, shard=f"{i}/2")
        assert (shards / f"run.shard-{i}-of-2.json").is_file()
    s = merge_shards([shards])
    assert (s.total_rows, s.total_errors) == (3, 1)
    merged = read_results(shards / "predictions.csv")
    assert sorted(merged["id"]) == sorted(expected)
    assert sorted(read_results(shards / "predictions.star")["id"]) == sorted(expected)


_CHILD = """
import sys
from cryoshift.runtime import classify
classify(sys.argv[1], [sys.argv[2]], sys.argv[3], backend="cpu", batch_size=1, workers=1,
         progress=False, threads=1)
"""


def _killed_run(model: Path, stack: Path, out: Path, rows: int) -> None:
    """Run classify in a child process and ``kill -9`` it once ``rows`` rows are in its ledger."""
    csv = out / "predictions.csv"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(model), str(stack), str(out)], env=env)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if csv.is_file() and csv.read_bytes().count(b"\n") > rows:
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _contents(out: Path) -> dict[str, bytes]:
    """The run's files by name (not the lock, which holds the pid of its last holder)."""
    return {p.name: p.read_bytes() for p in out.iterdir() if not p.name.endswith(".lock")}


def test_resume_of_a_killed_run_with_another_model_is_refused(model_path, helpers, tmp_path, capsys):
    """The run is killed before any manifest is written; its run.json still names model A, so a
    resume with model B is one line naming both and changes nothing; model A finishes it."""
    other = helpers.build_model(tmp_path / "other.onnx", seed=1)
    n = 1500
    stack = tmp_path / "many.mrcs"
    write_stack(stack, np.repeat(helpers.make_volumes(30), n // 30, axis=0), voxel_size=helpers.VOXEL)
    out = tmp_path / "out"
    _killed_run(model_path, stack, out, rows=5)
    assert not (out / "manifest.json").exists(), "the run finished before it was killed"
    record = json.loads((out / "run.json").read_text())["model"]
    before = _contents(out)
    args = ["classify", str(other), str(stack), "-o", str(out), "-b", "cpu", "-q", "--resume"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"cryoshift: error: {out / 'run.json'}: ")
    assert f"model {model_path} (sha256 {record['sha256'][:16]})" in err[0]
    assert str(other) in err[0] and "new output directory" in err[0]
    assert _contents(out) == before  # not even the partial last line is cut
    s = classify(model_path, [str(stack)], out, backend="cpu", resume=True, progress=False)
    assert s.resumed > 0 and s.total_rows == n
    ids = read_results(out / "predictions.csv")["id"]
    assert ids.is_unique and len(ids) == n
    assert json.loads((out / "manifest.json").read_text())["model"]["sha256"] == record["sha256"]


def _finished_run(model_path: Path, helpers, tmp_path: Path, n: int) -> tuple[Path, Path, Path]:
    """(another model, a stack of ``n``, the output folder of a finished run of ``model_path`` on it)."""
    other = helpers.build_model(tmp_path / "other.onnx", seed=1)
    stack = tmp_path / "s.mrcs"
    write_stack(stack, helpers.make_volumes(n), voxel_size=helpers.VOXEL)
    out = tmp_path / "out"
    classify(model_path, [str(stack)], out, backend="cpu", progress=False)
    return other, stack, out


def test_resume_is_checked_against_an_older_runs_manifest(model_path, helpers, tmp_path):
    """A folder of a run from before run.json: its complete manifest names the model."""
    other, stack, out = _finished_run(model_path, helpers, tmp_path, 6)
    (out / "run.json").unlink()
    with pytest.raises(InputError, match=r"manifest\.json: this run was started with model") as caught:
        classify(other, [str(stack)], out, backend="cpu", resume=True, progress=False)
    assert str(other) in str(caught.value)
    s = classify(model_path, [str(stack)], out, backend="cpu", resume=True, progress=False)
    assert (s.resumed, s.total_rows) == (6, 6)
    assert (out / "run.json").is_file()  # recorded by the resumed run


def test_a_run_without_resume_cannot_replace_the_recorded_model(model_path, helpers, tmp_path):
    other, stack, out = _finished_run(model_path, helpers, tmp_path, 4)
    record = (out / "run.json").read_bytes()
    with pytest.raises(InputError, match="--resume"):
        classify(other, [str(stack)], out, backend="cpu", progress=False)
    assert (out / "run.json").read_bytes() == record
    with pytest.raises(InputError, match="this run was started with model"):
        classify(other, [str(stack)], out, backend="cpu", resume=True, progress=False)


def test_each_shard_records_its_model_and_is_checked_alone(model_path, helpers, tmp_path):
    other = helpers.build_model(tmp_path / "other.onnx", seed=1)
    stack = tmp_path / "s.mrcs"
    write_stack(stack, helpers.make_volumes(8), voxel_size=helpers.VOXEL)
    out = tmp_path / "shards"
    for i in range(2):
        classify(model_path, [str(stack)], out, backend="cpu", progress=False, shard=f"{i}/2")
    with pytest.raises(InputError, match=r"run\.shard-1-of-2\.json: this run was started with model"):
        classify(other, [str(stack)], out, backend="cpu", resume=True, progress=False, shard="1/2")
    s = classify(model_path, [str(stack)], out, backend="cpu", resume=True, progress=False, shard="1/2")
    assert (s.classified, s.resumed) == (0, 4)
    assert merge_shards([out]).total_rows == 8


def test_an_unreadable_run_record_is_refused_in_one_line(model_path, helpers, tmp_path):
    stack = tmp_path / "s.mrcs"
    write_stack(stack, helpers.make_volumes(4), voxel_size=helpers.VOXEL)
    out = tmp_path / "out"
    classify(model_path, [str(stack)], out, backend="cpu", progress=False)
    rows = (out / "predictions.csv").read_bytes()
    (out / "run.json").write_text('{"model": {"path": "x"}}\n')
    with pytest.raises(InputError, match=r"run\.json: not a readable run record \(no model\.sha256\)"):
        classify(model_path, [str(stack)], out, backend="cpu", resume=True, progress=False)
    (out / "run.json").write_text('{"model": ')  # cut off
    with pytest.raises(InputError, match=r"run\.json: not a readable run record"):
        classify(model_path, [str(stack)], out, backend="cpu", resume=True, progress=False)
    assert (out / "predictions.csv").read_bytes() == rows


def test_resume_on_the_tensorrt_engine_of_the_runs_onnx_is_allowed_with_a_note(model_path, helpers, tmp_path):
    """A run started with an ONNX model may go on with an engine built from it (the sidecar names
    the ONNX's sha256), as when CPU nodes hand over to GPU nodes; an engine of another ONNX may not.
    Checked at the record level (running an engine needs TensorRT and a GPU)."""
    from cryoshift.runtime.engine_sidecar import write_engine_sidecar
    from cryoshift.runtime.metadata import read_onnx_metadata
    from cryoshift.runtime.run import check_same_model, driver_model
    from cryoshift.runtime.summary import model_info

    other, _, out = _finished_run(model_path, helpers, tmp_path, 4)
    names = output_names(out, None)
    meta = read_onnx_metadata(model_path)
    engines = {}
    for name, onnx in (("own", model_path), ("other", other)):
        engine = tmp_path / f"{name}.engine"
        engine.write_bytes(name.encode() * 64)  # the bytes are not run here, only hashed
        write_engine_sidecar(engine, meta, "NVIDIA H200", "10.0", onnx, (1, 8, 8))
        engines[name] = model_info(driver_model(engine, "engine"))
    note = check_same_model(names, engines["own"])
    assert note and "own.engine (engine)" in note and str(model_path) in note and "export parity" in note
    with pytest.raises(InputError, match="this run was started with model"):
        check_same_model(names, engines["other"])
    # the other way round: a run recorded on the engine, resumed with its ONNX
    (out / "run.json").write_text(json.dumps({"model": engines["own"]}))
    assert check_same_model(names, model_info(driver_model(model_path, "cpu")))
    # a run record from before onnx_sha256 names no engine lineage: refused as before
    record = {k: v for k, v in engines["own"].items() if k != "onnx_sha256"}
    (out / "run.json").write_text(json.dumps({"model": record}))
    with pytest.raises(InputError, match="this run was started with model"):
        check_same_model(names, model_info(driver_model(model_path, "cpu")))


def test_merge_accepts_shards_of_one_onnx_and_its_engine_with_a_note(model_path, helpers, tmp_path):
    """Shards run on CPU nodes with the ONNX and on GPU nodes with the engine built from it are
    one network (as for --resume); shards of an engine of another ONNX are still refused.
    Checked at the record level (running an engine needs TensorRT and a GPU)."""
    from cryoshift.runtime.engine_sidecar import write_engine_sidecar
    from cryoshift.runtime.metadata import read_onnx_metadata
    from cryoshift.runtime.run import driver_model
    from cryoshift.runtime.summary import model_info

    stack = tmp_path / "s.mrcs"
    write_stack(stack, helpers.make_volumes(6), voxel_size=helpers.VOXEL)
    out = tmp_path / "out"
    for i in range(2):
        classify(model_path, [str(stack)], out, backend="cpu", progress=False, shard=f"{i}/2")
    other, _, _ = _finished_run(model_path, helpers, tmp_path / "o", 4)
    meta = read_onnx_metadata(model_path)
    manifest = out / "manifest.shard-1-of-2.json"
    original = json.loads(manifest.read_text())
    for name, onnx in (("own", model_path), ("other", other)):
        engine = tmp_path / f"{name}.engine"
        engine.write_bytes(name.encode() * 64)
        write_engine_sidecar(engine, meta, "NVIDIA H200", "10.0", onnx, (1, 8, 8))
        manifest.write_text(json.dumps({**original, "model": model_info(driver_model(engine, "engine"))}))
        if name == "own":
            s = merge_shards([out])
            assert s.total_rows == 6
            assert any("own.engine (engine)" in n and "export parity" in n for n in s.notes)
        else:
            with pytest.raises(InputError, match="shards were classified with different models"):
                merge_shards([out])
