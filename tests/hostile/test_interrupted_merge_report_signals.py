"""Runs cut short: a merge killed before its manifest, ``report`` on a run that did not finish,
SIGTERM (a SLURM time limit) and Ctrl-C on verbs with and without ``--resume``, and a shard
killed before ``merge --allow-missing``."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hostile_inputs import VOXEL, Capsys, assert_error, classify_in_two_shards, run_cli, volumes

from cryoshift.runtime.cli import main
from cryoshift.runtime.mrc import write_volume


class _Killed(BaseException):
    """Stands for a kill: nothing after the point it is raised at runs, as after SIGKILL."""


@pytest.fixture(scope="module")
def shard_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of 4 small volumes."""
    folder = tmp_path_factory.mktemp("inputs") / "in"
    folder.mkdir()
    for i, v in enumerate(volumes(4, seed=5)):
        write_volume(folder / f"v{i}.mrc", v, voxel_size=VOXEL)
    return folder


@pytest.fixture(scope="module")
def shards(model: Path, shard_inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two finished shards of one classify run."""
    return classify_in_two_shards(model, shard_inputs, tmp_path_factory.mktemp("shards") / "shards")


def _killed_merge(folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capsys) -> None:
    """Leave ``folder`` as a merge killed after its tables, before its manifest leaves it."""
    import cryoshift.runtime.summary as summary

    def killed(*args: object, **kwargs: object) -> None:
        raise _Killed

    with monkeypatch.context() as patch:
        patch.setattr(summary, "finish_run", killed)
        with pytest.raises(_Killed):
            main(["merge", str(folder)])
    assert (folder / "predictions.csv").is_file() and not (folder / "manifest.json").exists()


def test_merge_killed_before_its_manifest_is_finished_by_a_rerun(
    shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capsys
) -> None:
    """Before: the tables without a manifest were refused as a killed classify run's, every time."""
    clean = shutil.copytree(shards, tmp_path / "clean")
    assert run_cli(["merge", clean], capsys)[0] == 0
    folder = shutil.copytree(shards, tmp_path / "killed")
    _killed_merge(folder, monkeypatch, capsys)
    code, _, err = run_cli(["merge", folder], capsys)
    assert code == 0, err
    assert (folder / "manifest.json").is_file()
    assert (folder / "predictions.csv").read_text() == (clean / "predictions.csv").read_text()
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in clean.iterdir())


def test_results_of_a_killed_merge_still_refuse_other_shards(
    model: Path,
    shards: Path,
    shard_inputs: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Capsys,
) -> None:
    """The marker makes a killed merge's tables its own shards', not anyone's."""
    folder = shutil.copytree(shards, tmp_path / "killed")
    _killed_merge(folder, monkeypatch, capsys)
    strict = tmp_path / "strict"
    for i in range(2):
        argv = ["classify", model, shard_inputs, "-o", strict, "-q", "-b", "cpu", "--shard", f"{i}/2"]
        assert run_cli([*argv, "--unknown-threshold", "0.9"], capsys)[0] == 0
    line = assert_error(run_cli(["merge", strict, "-o", folder], capsys), folder / "predictions.csv")
    assert "did not finish" in line and "--unknown-threshold" in line
    # and tables with neither a manifest nor the marker (a classify run killed there) stay refused
    (folder / ".cryoshift-merge-pending.json").unlink()
    line = assert_error(run_cli(["merge", folder], capsys), folder / "predictions.csv")
    assert "no manifest.json" in line


def test_sigterm_cleans_up_and_says_so_in_one_line(model: Path, tmp_path: Path) -> None:
    """Before: exit 143 with nothing said, and bench's data folder (hundreds of MB) left in /tmp."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    cmd = [sys.executable, "-m", "cryoshift.runtime.cli", "bench", str(model), "-b", "cpu", "--n", "2000"]
    env = dict(os.environ, TMPDIR=str(temp), OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while (
        not list(temp.glob("cryoshift-bench-data-*/*"))
        and time.monotonic() < deadline
        and proc.poll() is None
    ):
        time.sleep(0.05)
    if proc.poll() is not None:
        pytest.skip("bench finished before it could be terminated")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().splitlines() == ["cryoshift: terminated (SIGTERM); rerun the command to start again"]
    assert list(temp.glob("cryoshift-bench-data-*")) == []  # the TemporaryDirectory was removed


def _interrupt(*args: object, **kwargs: object) -> None:
    raise KeyboardInterrupt


def test_ctrl_c_says_resume_only_where_the_verb_has_it(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capsys
) -> None:
    """Before: every verb said "rerun with --resume", and simulate or bench then had no such option."""
    import cryoshift.runtime.bench as bench
    import cryoshift.runtime.run as run

    monkeypatch.setattr(bench, "run_bench", _interrupt)
    monkeypatch.setattr(run, "classify", _interrupt)
    code, _, err = run_cli(["bench", model, "-b", "cpu"], capsys)
    assert (code, err.strip()) == (130, "cryoshift: interrupted; rerun the command to start again")
    volume = write_volume(tmp_path / "v.mrc", volumes(1)[0], voxel_size=VOXEL)
    code, _, err = run_cli(["classify", model, volume, "-o", tmp_path / "out", "-b", "cpu"], capsys)
    assert (code, err.strip()) == (130, "cryoshift: interrupted; rerun with --resume to continue")


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("cryoshift: warning:")]


def test_report_says_a_killed_classify_run_did_not_finish(
    model: Path, shards: Path, shard_inputs: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """Before: a killed run's rows were reported as the whole run, without a word."""
    out = tmp_path / "out"
    assert run_cli(["classify", model, shard_inputs, "-o", out, "-q", "-b", "cpu"], capsys)[0] == 0
    (out / "manifest.json").unlink()  # what a kill before the manifest leaves: run.json and the rows
    code, _, err = run_cli(["report", out], capsys)
    assert code == 0, err
    [line] = _warnings(err)
    assert "did not finish (no manifest.json; rows so far 4)" in line and "--resume" in line
    assert "did not finish" in (out / "report.html").read_text()
    # a shard's table is judged by its own manifest; a finished shard's says nothing of the kind
    finished = shutil.copytree(shards, tmp_path / "shards")
    (finished / "manifest.shard-1-of-2.json").unlink()
    table = finished / "predictions.shard-1-of-2.csv"
    [line] = _warnings(run_cli(["report", table, "-o", tmp_path / "s1.html"], capsys)[2])
    assert "no manifest.shard-1-of-2.json" in line and "--resume --shard 1/2" in line
    code, _, err = run_cli(
        ["report", finished / "predictions.shard-0-of-2.csv", "-o", tmp_path / "s0.html"], capsys
    )
    assert code == 0 and not _warnings(err), err
    assert_error(run_cli(["report", finished], capsys), "cryoshift merge")


def test_report_says_a_killed_merge_did_not_finish(
    shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capsys
) -> None:
    folder = shutil.copytree(shards, tmp_path / "killed")
    _killed_merge(folder, monkeypatch, capsys)
    code, _, err = run_cli(["report", folder], capsys)
    assert code == 0, err
    [line] = _warnings(err)
    assert "the merge writing these results did not finish" in line and "rerun cryoshift merge" in line
    assert run_cli(["merge", folder], capsys)[0] == 0
    code, _, err = run_cli(["report", folder], capsys)
    assert code == 0 and not _warnings(err), err


def test_allow_missing_leaves_out_a_shard_that_did_not_finish(
    shards: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """Before: --allow-missing stopped at a killed shard ("did not finish"); README said it merges."""
    folder = shutil.copytree(shards, tmp_path / "shards")
    (folder / "manifest.shard-1-of-2.json").unlink()  # shard 1 killed: its rows so far, no manifest
    line = assert_error(run_cli(["merge", folder], capsys), folder / "manifest.shard-1-of-2.json")
    assert "did not finish" in line and "--allow-missing" in line
    code, _, err = run_cli(["merge", folder, "--allow-missing"], capsys)
    assert code == 0, err
    merged = (folder / "predictions.csv").read_text().splitlines()[1:]
    assert sorted(merged) == sorted((folder / "predictions.shard-0-of-2.csv").read_text().splitlines()[1:])
    import json

    notes = json.loads((folder / "manifest.json").read_text())["summary"]["notes"]
    assert any("predictions.shard-1-of-2.csv" in note and "unfinished" in note for note in notes), notes


def _running(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, ended but not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_reader_processes_end_with_a_killed_parent(tmp_path: Path) -> None:
    """Before: kill -9 of classify --reader-processes left its readers and the fork server for good."""
    script = (
        "import queue, sys\n"
        "from multiprocessing import forkserver\n"
        "from cryoshift.runtime.readers import ProcessReaders\n"
        "readers = ProcessReaders([], 1, 4, 2, queue.Queue(), None)\n"
        "readers.start()\n"
        "pids = [p.pid for p in readers.procs] + [forkserver._forkserver._forkserver_pid]\n"
        "print(*pids, flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 3 and all(_running(p) for p in pids)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while any(_running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [p for p in pids if _running(p)]
    for pid in left:  # the test's own orphans, by pid
        os.kill(pid, signal.SIGKILL)
    assert not left, f"still running after their parent was killed: {left}"


def test_device_workers_end_when_their_parent_is_interrupted(
    model: Path, shard_inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capsys
) -> None:
    """Ctrl-C or SIGTERM in a ``--devices`` parent: its workers ran on, holding the devices."""
    import cryoshift.runtime.devices as devices

    spawned: list[subprocess.Popen] = []
    spawn = devices.DeviceInference._spawn

    def recorded(self: object, *args: object) -> subprocess.Popen:
        spawned.append(spawn(self, *args))  # type: ignore[arg-type]
        return spawned[-1]

    monkeypatch.setattr(devices.DeviceInference, "_spawn", recorded)
    monkeypatch.setattr(devices, "_watch", _interrupt)  # the parent is stopped while they run
    argv = ["classify", model, shard_inputs, "-o", tmp_path / "o", "--devices", "0,1", "-b", "cpu"]
    code, _, err = run_cli(argv, capsys)
    assert code == 130 and "rerun with --resume" in err, err
    assert len(spawned) == 2 and all(proc.poll() is not None for proc in spawned)
