"""Runs in a hostile environment: a stdout pipe whose reader left (``| head``), a full disk.

A full disk is played by a file-size limit (``ulimit -f``: RLIMIT_FSIZE in the child, SIGXFSZ
ignored so a write fails with EFBIG as on a full disk), a left reader by a pipe whose read end is
closed: both in a real subprocess, as a user's shell runs the command.

Each was: a classify whose progress line on stdout hit the closed pipe, killed the writer thread
unseen and ended with a manifest claiming all rows while predictions.csv held a tenth of them; a
full disk said only ``cryoshift: error: File too large`` (classify, simulate: no file named, a
partial volumes.mrc the next simulate refused), or a 40-line torch traceback (train).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hostile_inputs import VOXEL, Capsys, run_cli, train_argv, volumes

from cryoshift.runtime.ledger import RESUME_HINT
from cryoshift.runtime.mrc import write_stack
from cryoshift.runtime.pipeline import Progress, RunStats, _OrderedWriter

N = 40  # volumes of the classified stack
BATCH = 4  # 10 batches: a plain progress line after each (every 10 %)


def _cli(*argv: object) -> list[str]:
    return [sys.executable, "-m", "cryoshift.runtime.cli", *(str(a) for a in argv)]


def _env() -> dict[str, str]:
    # no bytecode written under a file-size limit; one thread (the suite's machines are shared)
    return {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}


def _limited(max_bytes: int, *argv: object) -> subprocess.CompletedProcess[str]:
    """Run the CLI with no file larger than ``max_bytes`` (a full disk, as ``ulimit -f`` makes it)."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past it fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return subprocess.run(
        _cli(*argv), capture_output=True, text=True, timeout=240, env=_env(), preexec_fn=limit
    )


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("cryoshift: error:")]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture
def stack(tmp_path: Path) -> Path:
    return write_stack(tmp_path / "s.mrcs", volumes(N), voxel_size=VOXEL)


def _classify(model: Path, stack: Path, out: Path, *extra: object) -> list[object]:
    return ["classify", model, stack, "-o", out, "--threads", 1, "--batch-size", BATCH, *extra]


# --------------------------------------------------------------------------- a stdout reader that left


def test_a_closed_stdout_pipe_loses_no_row_and_progress_goes_to_stderr(
    model: Path, stack: Path, tmp_path: Path
) -> None:
    """``classify ... | head -1``: the progress lines go to stderr, so the run writes every row and
    a manifest that agrees with predictions.csv; only the summary meets the closed pipe, at the end,
    and that ends quietly (typer's EPIPE handling: exit 1, no traceback, no "Exception ignored")."""
    out = tmp_path / "r"
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line
    try:
        proc = subprocess.run(
            _cli(*_classify(model, stack, out)),
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=240,
            env=_env(),
        )
    finally:
        os.close(write)
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
    assert f"classifying {N}/{N} (100%)" in proc.stderr  # the progress, on stderr
    assert proc.returncode == 1, proc.stderr  # the summary was not delivered: not a clean 0
    rows = pd.read_csv(out / "predictions.csv")
    assert len(rows) == N and rows["id"].is_unique
    summary = json.loads((out / "manifest.json").read_text())["summary"]
    assert summary["total_rows"] == summary["classified"] == summary["planned"] == N


class _BrokenStream:
    """A stream whose reader left: every write fails as on a closed pipe."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    def isatty(self) -> bool:
        return False


def test_progress_that_cannot_be_written_stops_itself_never_the_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A progress line is written on the writer thread: a failed write must end the progress output,
    not raise there (it killed the thread, and every batch after it was never written)."""
    monkeypatch.setattr(sys, "stderr", _BrokenStream())
    monkeypatch.setattr(sys, "stdout", _BrokenStream())
    with Progress(100, "classifying", plain=True, every_s=0.0) as bar:
        for _ in range(5):
            bar.advance(10)  # raised BrokenPipeError at the first line
    assert not bar.enabled


class _FailingBar:
    def advance(self, n: int) -> None:
        raise RuntimeError("boom in the writer thread")


def test_a_writer_thread_that_dies_stops_the_run() -> None:
    """Whatever ends the writer thread is raised in the model thread (``check``), so the run stops
    before its manifest; the thread died unseen and the run went on as if every row was written."""
    written: list[int] = []
    bar: Any = _FailingBar()
    writer = _OrderedWriter(lambda rows, errors: written.append(len(rows)), False, bar, RunStats())
    writer.start()
    writer.put(0, [["a"]], [], None)
    writer.thread.join(timeout=10)
    with pytest.raises(RuntimeError, match="boom in the writer thread"):
        writer.check()
    writer.close()  # the run's way out: returns, the error stays to be raised
    with pytest.raises(RuntimeError):
        writer.check()
    assert written == [1]


# --------------------------------------------------------------------------- a full disk


def test_classify_on_a_full_disk_names_the_ledger_and_resume_finishes(
    model: Path, stack: Path, tmp_path: Path, capsys: Capsys
) -> None:
    out = tmp_path / "r"
    proc = _limited(4096, *_classify(model, stack, out, "--no-progress"))
    line = _one_error_line(proc)
    assert proc.returncode != 0
    assert f"{out / 'predictions.csv'}: cannot write: File too large; {RESUME_HINT}" in line, line
    assert not (out / "manifest.json").exists()  # nothing claims the run finished
    code, _, err = run_cli(_classify(model, stack, out, "--no-progress", "--resume"), capsys)
    assert code == 0, err
    rows = pd.read_csv(out / "predictions.csv")
    assert len(rows) == N and rows["id"].is_unique


def test_simulate_on_a_full_disk_names_the_stack_and_leaves_no_partial_dataset(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    argv = ["simulate", out, "--n", 4, "--box", 16, "--no-progress", "--threads", 1]
    argv += ["--structures", "builtin:rubisco,builtin:p97"]
    proc = _limited(30_000, *argv)  # 4 volumes of 16^3 float32: 64 KiB
    line = _one_error_line(proc)
    assert proc.returncode != 0
    assert f"{out / 'volumes.mrc'}: cannot write: File too large" in line, line
    assert "rerun the command to start again" in line, line
    # a partial stack made the next simulate refuse the folder ("already holds an unfinished dataset")
    assert not out.exists() or list(out.iterdir()) == []


def test_train_on_a_full_disk_names_the_checkpoint_in_one_line(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from cryoshift.runtime.dataset import write_dataset

    source = write_dataset(
        tmp_path / "src", volumes(12, seed=1), [i % 2 for i in range(12)], ["a", "b"], voxel_size=VOXEL
    )
    run = tmp_path / "run"
    proc = _limited(30_000, *train_argv(source, run))  # config.json fits, a checkpoint does not
    line = _one_error_line(proc)
    assert proc.returncode != 0
    assert f"{run / 'checkpoints'}" in line and ".pt: cannot write: File too large" in line, line
    assert line.endswith(RESUME_HINT), line
    assert len(proc.stderr.strip().splitlines()) < 8, proc.stderr  # no torch traceback
    assert not [p for p in (run / "checkpoints").iterdir() if "tmp" in p.name]


def test_a_run_whose_rows_went_missing_writes_no_manifest(model: Path, stack: Path, tmp_path: Path) -> None:
    """Whatever loses rows on the way (here an inference that skips the last items), the run must
    not end with a manifest and STAR claiming every item: one line naming predictions.csv, and
    ``--resume`` classifies what is missing."""
    from cryoshift.runtime.backends import load_model
    from cryoshift.runtime.errors import InputError
    from cryoshift.runtime.run import LocalInference, RunOptions, run

    class Lossy(LocalInference):
        def run(self, todo: Any, ledgers: Any, opts: RunOptions) -> RunStats:
            return super().run(list(todo)[:-BATCH], ledgers, opts)

    out = tmp_path / "r"
    lossy = Lossy(load_model(model, "cpu", batch_size=BATCH, threads=1), BATCH, 1)
    with pytest.raises(InputError, match=f"{BATCH} of the {N} items of this run got no row") as caught:
        run(lossy, RunOptions([str(stack)], out, progress=False))
    assert str(out / "predictions.csv") in str(caught.value) and RESUME_HINT in str(caught.value)
    assert not (out / "manifest.json").exists() and not (out / "predictions.star").exists()
    whole = LocalInference(load_model(model, "cpu", batch_size=BATCH, threads=1), BATCH, 1)
    summary = run(whole, RunOptions([str(stack)], out, resume=True, progress=False))
    assert summary.total_rows == N and summary.resumed == N - BATCH
