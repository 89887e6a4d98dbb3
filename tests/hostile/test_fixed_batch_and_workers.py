"""Models that load but cannot run classify's batches, and ``--workers`` beyond what the CPUs can use.

A graph whose input has a fixed batch size, or with a Reshape to a fixed batch, passed every
load-time check and then ended ``cryoshift classify`` in onnxruntime's traceback, after
onnxruntime had printed its own ``[E:onnxruntime:...]`` line on the terminal (captured here with
``capfd``: it writes to the file descriptor, not to Python's stderr). ``--workers 100000`` started
that many reader threads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hostile_inputs import BOX, VOXEL, Capsys, assert_error, predictions, run_cli, volumes
from tiny_onnx import linear_model

from cryoshift.runtime.mrc import write_stack

N = 5  # subtomograms in the stack: batches of 2 leave a last batch of 1


def _model(path: Path, batch: object = "batch", reshape_to: int | None = None) -> Path:
    """``batch`` is the input's batch dimension (an int: fixed); see tiny_onnx.linear_model."""
    return linear_model(path, [batch, 1, BOX, BOX, BOX], reshape_to)


@pytest.fixture()
def stack(tmp_path: Path) -> Path:
    vols = volumes(N) + np.linspace(-1, 1, N, dtype=np.float32)[:, None, None, None]  # both classes
    return write_stack(tmp_path / "s.mrcs", vols, voxel_size=VOXEL)


def _classify(model: Path, stack: Path, out: Path, *options: object) -> list[object]:
    return ["classify", model, stack, "-o", out, "-q", "-b", "cpu", *options]


# ---------------------------------------------------------------------------------------------
# a fixed batch in the input shape: refused at load, or fed at that size


def test_a_fixed_batch_input_is_refused_at_load(tmp_path: Path, stack: Path, capfd: Capsys) -> None:
    model = _model(tmp_path / "fixed1.onnx", batch=1)
    out = tmp_path / "out"
    line = assert_error(run_cli(_classify(model, stack, out), capfd), model)  # default --batch-size 64
    assert "input has a fixed batch size 1" in line, line
    assert "cryoshift needs a dynamic batch axis: re-export with `cryoshift export`" in line, line
    assert "--batch-size 1" in line, line  # the size it does take
    assert not out.exists()  # refused before the run started
    # at the batch size it was made for it classifies every subtomogram
    code, _, err = run_cli(_classify(model, stack, out, "--batch-size", 1), capfd)
    assert code == 0, err
    assert len(predictions(out)) == N


def test_a_fixed_batch_is_refused_before_the_backend_s_session_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refusal came after the backend's own session was made: for TensorRT that builds the
    engine first (minutes on a GPU node) only to refuse the model then. It reads the input shape
    from the file's first read; no backend session is made for a model that is refused."""
    from cryoshift.runtime import backends
    from cryoshift.runtime.errors import InputError

    def no_session(*args: object, **kwargs: object) -> None:
        raise AssertionError("the backend's session was built before the refusal")

    monkeypatch.setattr(backends, "_ort_session", no_session)
    model = _model(tmp_path / "fixed1.onnx", batch=1)
    with pytest.raises(InputError, match="input has a fixed batch size 1"):
        backends.load_model(model, "cpu", batch_size=64)


def test_a_fixed_batch_equal_to_batch_size_pads_the_last_batch(
    tmp_path: Path, stack: Path, capfd: Capsys
) -> None:
    """Input [2, 1, D, D, D] with --batch-size 2 and 5 subtomograms: the last batch of 1 is padded to
    2 on the CPU backend (it was fed as 1 row: onnxruntime's 'invalid dimensions' traceback), and
    every row is what the same graph with a dynamic batch gives."""
    fixed = _model(tmp_path / "fixed2.onnx", batch=2)
    dynamic = _model(tmp_path / "dynamic.onnx")
    rows = {}
    for model in (fixed, dynamic):
        out = tmp_path / model.stem
        code, _, err = run_cli(_classify(model, stack, out, "--batch-size", 2), capfd)
        assert code == 0, err
        rows[model.stem] = predictions(out).sort_values("id").reset_index(drop=True)
    assert len(rows["fixed2"]) == N
    assert set(rows["fixed2"]["class_name"]) == {"bright", "dark"}
    pd.testing.assert_frame_equal(rows["fixed2"], rows["dynamic"])


# ---------------------------------------------------------------------------------------------
# a Reshape to a fixed batch: one line naming the model when a batch shape first fails


def test_a_graph_that_cannot_run_the_batch_is_one_line(tmp_path: Path, stack: Path, capfd: Capsys) -> None:
    """Reshape to batch 1 fed a first batch of 5: one line naming the model and the batch shape, and
    no '[E:onnxruntime:...]' line of onnxruntime's own before it (session log level fatal)."""
    model = _model(tmp_path / "reshape1.onnx", reshape_to=1)
    code, out, err = run_cli(_classify(model, stack, tmp_path / "out"), capfd)
    assert "onnxruntime" not in err.split("cryoshift: error:")[0], err
    line = assert_error((code, out, err), model)
    assert f"cannot run on a batch of shape {N}x1x{BOX}x{BOX}x{BOX} (--batch-size 64)" in line, line
    assert "Reshape" in line, line  # onnxruntime's reason, without its [ONNXRuntimeError] prefix
    assert "[ONNXRuntimeError]" not in line


def test_bench_prints_no_onnxruntime_error_line(tmp_path: Path, capfd: Capsys) -> None:
    """bench refused this graph in one line already; onnxruntime's own error line came first."""
    model = _model(tmp_path / "reshape1.onnx", reshape_to=1)
    small = ["--n", 2, "--repeats", 1, "--batch-size", 2, "--workers", 1, "-b", "cpu"]
    line = assert_error(run_cli(["bench", model, *small], capfd), model)
    assert f"batch of shape 2x1x{BOX}x{BOX}x{BOX} (--batch-size 2)" in line, line


def test_a_smaller_last_batch_that_fails_keeps_the_rows_done(
    tmp_path: Path, stack: Path, capfd: Capsys
) -> None:
    """Reshape to batch 2 runs the full batches and fails on the last one (1 row): the run ends in
    one line naming the model and that shape, and the 4 rows classified before it are kept."""
    model = _model(tmp_path / "reshape2.onnx", reshape_to=2)
    out = tmp_path / "out"
    result = run_cli(_classify(model, stack, out, "--batch-size", 2, "--workers", 1), capfd)
    line = assert_error(result, model)
    assert f"cannot run on a batch of shape 1x1x{BOX}x{BOX}x{BOX} (--batch-size 2)" in line, line
    assert sorted(predictions(out)["id"]) == [f"{i:06d}@{stack}" for i in range(1, 5)]


def test_device_slots_refuse_a_batch_the_graph_cannot_run(tmp_path: Path) -> None:
    """The GPU backends' path (IO binding, upload then compute), exercised on the CPU EP."""
    from cryoshift.runtime.backends import load_model
    from cryoshift.runtime.errors import InputError

    path = _model(tmp_path / "reshape1.onnx", reshape_to=1)
    model = load_model(path, "cpu", batch_size=2, slots=2)
    model.upload(0, volumes(2)[:, None])
    with pytest.raises(InputError, match=r"batch of shape 2x1x16x16x16 \(--batch-size 2\)") as info:
        model.compute(0, 2)
    assert info.value.path == path or str(path) in str(info.value)


# ---------------------------------------------------------------------------------------------
# --workers: capped like --threads


def _cpus(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """This process may run on ``n`` CPUs (its affinity, and the count without one)."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(n)), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: n)


def test_capped_workers(monkeypatch: pytest.MonkeyPatch, capsys: Capsys) -> None:
    from cryoshift.runtime.hostmem import READER_THREADS_PER_CPU, capped_workers

    _cpus(monkeypatch, 2)
    cap = READER_THREADS_PER_CPU * 2
    for fine in (0, 1, 2, cap):
        assert capped_workers(fine) == fine
    assert capsys.readouterr().err == ""
    assert capped_workers(100000) == cap
    err = capsys.readouterr().err.strip()
    note = f"--workers 100000 is more readers than 2 CPUs can use; using {cap} reader threads (4 per CPU)"
    assert err == f"cryoshift: note: {note}", err
    # reader processes: one per CPU, never fewer than the default 2
    assert capped_workers(2, processes=True) == 2
    assert capped_workers(3, processes=True) == 2
    err = capsys.readouterr().err
    assert "--workers 3 is more readers than 2 CPUs can use; using 2 reader processes" in err, err
    _cpus(monkeypatch, 1)
    assert capped_workers(2, processes=True) == 2
    assert capsys.readouterr().err == ""
    # no affinity (macOS): the CPU count
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert capped_workers(100000) == READER_THREADS_PER_CPU * 3


def test_threads_are_capped_at_this_process_s_cpus_not_the_node_s(
    monkeypatch: pytest.MonkeyPatch, capsys: Capsys
) -> None:
    """A Slurm job given 2 of a node's 128 cores asked onnxruntime and torch for 128 threads when
    ``--threads`` was above it: the cap was os.cpu_count (the node), ``--workers``'s the affinity."""
    from cryoshift.runtime.hostmem import capped_threads

    _cpus(monkeypatch, 2)
    monkeypatch.setattr(os, "cpu_count", lambda: 128)
    assert capped_threads(2) == 2
    assert capped_threads(64) == 2
    assert "--threads 64 is above the CPU count (2); using 2 threads" in capsys.readouterr().err


def test_classify_caps_workers(
    tmp_path: Path, stack: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capsys
) -> None:
    _cpus(monkeypatch, 1)  # at most 4 reader threads
    model = _model(tmp_path / "model.onnx")
    out = tmp_path / "out"
    asked = 6
    code, _, err = run_cli(_classify(model, stack, out, "--workers", asked, "--batch-size", 1), capsys)
    assert code == 0, err
    note = f"cryoshift: note: --workers {asked} is more readers than 1 CPU can use; using 4 reader threads"
    assert err.count(note) == 1, err  # once: the pipeline does not say it again
    assert len(predictions(out)) == N
    assert json.loads((out / "manifest.json").read_text())["settings"]["workers"] == 4


def test_library_classify_records_the_capped_workers(
    tmp_path: Path, stack: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capsys
) -> None:
    """run.classify (the Python API) ran 4 reader threads for ``workers=6`` on one CPU (the
    pipeline caps) but its manifest said 6: only the command line capped before recording."""
    from cryoshift.runtime.run import classify

    _cpus(monkeypatch, 1)
    out = tmp_path / "out"
    classify(
        _model(tmp_path / "model.onnx"),
        [str(stack)],
        out,
        backend="cpu",
        batch_size=1,
        workers=6,
        progress=False,
    )
    assert capsys.readouterr().err.count("--workers 6 is more readers than 1 CPU can use") == 1
    assert len(predictions(out)) == N
    assert json.loads((out / "manifest.json").read_text())["settings"]["workers"] == 4


def test_bench_caps_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capsys) -> None:
    _cpus(monkeypatch, 1)  # at most 4 reader threads
    model = _model(tmp_path / "model.onnx")
    result = tmp_path / "bench.json"
    asked = 6
    argv = ["bench", model, "--n", 2, "--repeats", 1, "--batch-size", 2, "-b", "cpu", "--workers", asked]
    code, out, err = run_cli([*argv, "--json", result], capsys)
    assert code == 0, err
    assert err.count(f"--workers {asked} is more readers than 1 CPU can use") == 1, err
    assert "4 reader threads" in out
    assert json.loads(result.read_text())["workers"] == 4


def test_a_long_onnxruntime_message_keeps_its_end() -> None:
    """ORT names what failed at the end of a long message (a Reshape's shapes); cutting it at 300
    characters dropped exactly that part."""
    from cryoshift.runtime.metadata import ort_failure

    head = "[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running Reshape node. "
    tail = " The input tensor cannot be reshaped. Input shape:{3,8}, requested shape:{1,24}"
    text = head + "x" * 600 + tail
    line = ort_failure(RuntimeError(text))
    assert line.startswith("Non-zero status code") and line.endswith("requested shape:{1,24}")
    assert len(line) < 420 and "\n" not in line
