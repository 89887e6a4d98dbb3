"""``cryoshift train``'s streams and records: its progress (the rich bar on a terminal, the plain
epoch lines in a log) goes to stderr, stdout holds only the results; config.json of a run without
a --target records the target-aware settings off, as they ran. Tiny real runs (16^3, one epoch)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cryoshift.runtime.cli import main

# What train prints on stdout: its results, nothing else (runtime/commands/train.py)
RESULT_PREFIXES = ("model: ", "temperature ", "source: ", "next: ")
BAR = "━"  # rich's bar
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _tiny(out: Path, *options: object) -> list[str]:
    """A one-epoch, one-thread, fp32 source-only run on 16^3 volumes."""
    argv: list[object] = [
        "train",
        "--out",
        out,
        "--method",
        "source-only",
        "--backbone",
        "cryonet-small",
        "--epochs",
        1,
        "--batch-size",
        8,
        "--test-views",
        1,
        "--device",
        "cpu",
        "--threads",
        1,
        "--no-amp",
        *options,
    ]
    return [str(a) for a in argv]


def _simulated(out: Path, *options: object) -> list[str]:
    return _tiny(out, "--source", "builtin", "--box", 16, "--sim-per-epoch", 16, *options)


def _drain(fd: int, into: list[bytes]) -> None:
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:  # EIO: the child closed its end
            return
        if not data:
            return
        into.append(data)


def _lines(chunks: list[bytes]) -> list[str]:
    text = ANSI.sub("", b"".join(chunks).decode("utf-8", "replace"))
    return [line.strip() for line in re.split(r"[\r\n]+", text) if line.strip()]


def test_train_draws_its_progress_bar_on_stderr_on_a_terminal(tmp_path: Path) -> None:
    """stdout and stderr are terminals (two pseudo-terminals, told apart): the bar is drawn on
    stderr, stdout holds only the results. It was drawn on stdout, among the results."""
    pty = pytest.importorskip("pty")  # POSIX only
    masters, slaves = zip(*(pty.openpty() for _ in range(2)), strict=True)
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_TERMINAL", "TTY_COMPATIBLE")}
    env.update(TERM="xterm", COLUMNS="120", LINES="40", OMP_NUM_THREADS="1")
    argv = [sys.executable, "-m", "cryoshift.runtime.cli", *_simulated(tmp_path / "run")]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slaves[0], stderr=slaves[1], env=env)
    for fd in slaves:
        os.close(fd)
    got: tuple[list[bytes], list[bytes]] = ([], [])
    pairs = zip(masters, got, strict=True)
    readers = [threading.Thread(target=_drain, args=pair) for pair in pairs]
    for reader in readers:
        reader.start()
    try:
        code = proc.wait(timeout=300)
    finally:
        proc.kill()
        for reader in readers:
            reader.join(timeout=10)
        for fd in masters:
            os.close(fd)
    out, err = (_lines(chunks) for chunks in got)
    assert code == 0, err
    assert out and all(line.startswith(RESULT_PREFIXES) for line in out), out
    assert any(BAR in line and "16/16" in line for line in err), err  # the bar, drawn on stderr


def test_train_epoch_lines_and_target_count_go_to_stderr_in_a_log(
    domains: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Neither stream a terminal (a SLURM log, ``> result.txt 2> log``): the plain epoch line and
    the target count are progress, on stderr; stdout holds only the results. Both were on stdout."""
    source, target = domains["source"], domains["target_unlabelled"]
    argv = _tiny(tmp_path / "run", "--source", source, "--target", target, "--no-progress")
    capsys.readouterr()
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() and all(line.startswith(RESULT_PREFIXES) for line in out.splitlines()), out
    assert "cryoshift: target: 30 items read" in err.splitlines()
    assert [line.split()[1] for line in err.splitlines() if line.startswith("epoch ")] == ["1/1"]


def test_config_records_target_aware_settings_off_without_a_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A simulated source without --target: template labels, spectrum and tilt matching need the
    target, so none ran; config.json recorded ``template_labels: 600, spectrum_match: true`` (and an
    asked-for ``tilt_match: true``) as if they had. It records them off, as the run trained."""
    from cryoshift.training.data import SIMULATED_SOURCE_ONLY

    run = tmp_path / "run"
    assert main(_simulated(run, "--tilt-match", "--template-rule", "agree", "--no-progress")) == 0
    capsys.readouterr()
    config = json.loads((run / "config.json").read_text())
    assert config["target"] is None
    assert {name: config[name] for name, _, _ in SIMULATED_SOURCE_ONLY} == {
        "spectrum_match": False,
        "tilt_match": False,
        "snr_match": False,
        "template_labels": 0,
        "template_rule": "margin",
    }


def test_no_target_settings_leave_a_run_with_a_target_alone() -> None:
    """With a --target the settings run (a simulated source) and are recorded as given."""
    from cryoshift.training.data import no_target_settings
    from cryoshift.training.trainer import TrainConfig

    assert no_target_settings(TrainConfig(source="builtin", out="r", target="t", tilt_match=True)) == {}
    assert no_target_settings(TrainConfig(source="builtin", out="r")) == {
        "spectrum_match": False,
        "template_labels": 0,
    }
