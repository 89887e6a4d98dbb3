"""What ``cryoshift bench`` leaves on disk: its --json file and nothing else.

* ``--json`` is written as every whole file cryoshift writes (runtime/outfiles.py): a device, a
  named pipe or a link to one is refused in one line before the timing (``--json /dev/full`` was
  written into, a pipe blocked forever), and a link at the name is replaced, its target left
  alone (it was written through).
* The temporary folder is left as it was found: importing onnxruntime wrote ``$TMPDIR/.ses`` (its
  usage telemetry), and a run killed with SIGKILL left its data folder there, one more per kill;
  the next run now removes it.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hostile_inputs import Capsys, assert_error, run_cli

from cryoshift.runtime.bench import OWNER_FILE, scratch_dir

SMALL = ["--n", 4, "--repeats", 1, "--batch-size", 4, "--workers", 1, "-b", "cpu"]


def _bench(model: Path, *extra: object) -> list[object]:
    return ["bench", model, *SMALL, *extra]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_json_refuses_a_device_before_timing(model_path: Path, capsys: Capsys) -> None:
    """``--json /dev/full`` timed the whole bench, then wrote the figures into the device."""
    code, out, err = run_cli(_bench(model_path, "--json", "/dev/full"), capsys)
    line = assert_error((code, out, err), "/dev/full")
    assert "is a device, not a regular file" in line and "--json" in line, line
    assert "medians" not in out  # refused before anything was timed
    assert Path("/dev/full").is_char_device()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_json_refuses_a_named_pipe_or_a_link_to_one(model_path: Path, tmp_path: Path, capsys: Capsys) -> None:
    """Opening a pipe with no reader to check it was writable blocked the bench forever."""
    pipe = tmp_path / "bench.json"
    os.mkfifo(pipe)
    line = assert_error(run_cli(_bench(model_path, "--json", pipe), capsys), pipe)
    assert "is a named pipe (FIFO), not a regular file" in line, line
    link = tmp_path / "link.json"
    link.symlink_to(os.devnull)
    line = assert_error(run_cli(_bench(model_path, "--json", link), capsys), link)
    assert "is a symbolic link to a device, not a regular file" in line, line
    assert stat.S_ISFIFO(os.lstat(pipe).st_mode) and Path(os.readlink(link)) == Path(os.devnull)


def test_json_replaces_a_link_and_leaves_its_target(model_path: Path, tmp_path: Path, capsys: Capsys) -> None:
    """A link at the --json name was written through: an earlier result elsewhere was overwritten."""
    earlier = tmp_path / "elsewhere" / "kept.json"
    earlier.parent.mkdir()
    earlier.write_text(json.dumps({"inference": {"rate": 1.0}, "feed": {}, "mark": "earlier"}))
    before = earlier.read_bytes()
    link = tmp_path / "bench.json"
    link.symlink_to(earlier)
    code, _out, err = run_cli(_bench(model_path, "--json", link), capsys)
    assert code == 0, err
    assert not link.is_symlink() and link.is_file()
    assert json.loads(link.read_text())["inference"]["rate"] > 0
    assert earlier.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json", "elsewhere"]  # no temporary left


def _env(temp: Path, home: Path) -> dict[str, str]:
    env = dict(os.environ, TMPDIR=str(temp), HOME=str(home), OMP_NUM_THREADS="1")
    env.pop("ORT_DISABLE_TELEMETRY", None)  # as a user's shell has it
    return env


def _cli(model: Path, n: int) -> list[str]:
    return [sys.executable, "-m", "cryoshift.runtime.cli", "bench", str(model), "-b", "cpu", "--n", str(n)]


def test_a_killed_run_leaves_nothing_after_the_next(model_path: Path, tmp_path: Path) -> None:
    """SIGKILL (the OOM killer) left the data folder in $TMPDIR, one more per killed run, and every
    run left onnxruntime's telemetry file ``.ses`` there; the next run removes the first and no run
    makes the second."""
    temp, home = tmp_path / "tmp", tmp_path / "home"
    temp.mkdir()
    home.mkdir()
    env = _env(temp, home)
    proc = subprocess.Popen(
        _cli(model_path, 2000), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    try:
        deadline = time.monotonic() + 120
        while not list(temp.glob("cryoshift-bench-data-*/files")) and time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.skip("bench finished before it could be killed")
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert list(temp.glob("cryoshift-bench-data-*")), "the killed run left no folder to clean"
    done = subprocess.run(
        [*_cli(model_path, 4), "--repeats", "1", "--batch-size", "4", "--workers", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(temp)) == []
    assert not (home / ".cache" / "Microsoft").exists()


def test_a_live_or_older_folder_is_not_swept(tmp_path: Path) -> None:
    """Only a folder whose owner lock nobody holds is removed: a run in progress (here, this
    process's lock) and a folder from an older cryoshift (no lock file) are left alone."""
    live, older, dead = (tmp_path / f"cryoshift-bench-data-{k}" for k in ("live", "older", "dead"))
    for folder in (live, older, dead):
        folder.mkdir()
        (folder / "stack.mrcs").write_bytes(b"data")
    (dead / OWNER_FILE).write_bytes(b"")
    held = os.open(live / OWNER_FILE, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with scratch_dir("cryoshift-bench-", tmp_path) as mine:
            assert (Path(mine) / OWNER_FILE).exists()
            assert live.exists() and older.exists() and not dead.exists()
        assert not Path(mine).exists()
    finally:
        os.close(held)
