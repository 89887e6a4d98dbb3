"""--resume never trains over a finished run, nor from damaged state: resume.pt missing from a run
with finished epochs, resume.pt holding NaN/Inf, a divergence, a checkpoints folder or config.json
that is a link loop or not a file: one line through the CLI, exit 2, nothing overwritten
(a one-epoch source-only run on the 16^3 blobs of conftest.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from hostile_inputs import Capsys, assert_error, run_cli

from cryoshift.training.trainer import TrainConfig, train


@pytest.fixture(scope="module")
def finished(domains: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-epoch run (cryonet-small, fp32, one thread) that keeps its resume.pt."""
    out = tmp_path_factory.mktemp("finished") / "run"
    config = TrainConfig(
        source=str(domains["source"]),
        out=str(out),
        method="source-only",
        backbone="cryonet-small",
        test_views=1,
        epochs=1,
        batch_size=8,
        template_labels=0,
        amp=False,
        device="cpu",
        threads=1,
        progress=False,
    )
    return train(config).run_dir


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run", symlinks=True))


def _resume(run: Path, source: Path, capsys: Capsys) -> tuple[int | str, str, str]:
    """``train --resume`` of ``run`` to two epochs through the CLI."""
    argv = ["train", "--source", source, "--out", run, "--epochs", 2, "--resume", "--device", "cpu"]
    return run_cli([*argv, "--no-progress", "--threads", 1], capsys)


def _snapshot(run: Path) -> dict[str, bytes]:
    """The bytes of every file a retraining would overwrite."""
    names = ["model.pt", "metrics.csv", "checkpoints/epoch_0001.pt"]
    return {n: (run / n).read_bytes() for n in names if (run / n).is_file()}


# --------------------------------------------------------------------------- resume.pt missing


@pytest.mark.parametrize(
    ("removed", "evidence"),
    [
        (["checkpoints/resume.pt"], "1 epoch (metrics.csv)"),
        (["checkpoints"], "1 epoch (metrics.csv)"),
        (["checkpoints/resume.pt", "metrics.csv"], "1 epoch (checkpoints/epoch_*.pt)"),
        (["checkpoints", "metrics.csv"], "epochs (model.pt)"),
    ],
)
def test_resume_without_resume_state_refuses_a_run_with_finished_epochs(
    removed: list[str],
    evidence: str,
    finished: Path,
    domains: dict[str, Path],
    tmp_path: Path,
    capsys: Capsys,
) -> None:
    """resume.pt (or the whole checkpoints folder) deleted: --resume trained from epoch 1 again
    over the finished run, overwriting its epoch checkpoints and model.pt, exit 0. Now refused."""
    run = _copy(finished, tmp_path)
    for name in removed:
        path = run / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    before = _snapshot(run)
    state = run / "checkpoints" / "resume.pt"
    line = assert_error(_resume(run, domains["source"], capsys), state)
    assert line == (
        f"cryoshift: error: {state}: missing, but the run has finished {evidence}; restore it, or "
        "start a new run in another --out"
    )
    assert _snapshot(run) == before


# --------------------------------------------------------------------------- damaged resume state


@pytest.mark.parametrize("part", ["method_state", "optimizer_state"])
def test_resume_state_with_nan_is_refused_as_damaged(
    part: str, finished: Path, domains: dict[str, Path], tmp_path: Path, capsys: Capsys
) -> None:
    """NaN weights (or optimiser moments) in resume.pt: the first step raised "training diverged
    ...; lower --lr" as a traceback, blaming the learning rate for a damaged file."""
    run = _copy(finished, tmp_path)
    state = run / "checkpoints" / "resume.pt"
    payload = torch.load(state, weights_only=True)
    tensors = payload["extra"][part]
    if part == "optimizer_state":
        tensors = {k: v for moments in tensors["state"].values() for k, v in moments.items()}
    for tensor in tensors.values():
        if tensor.is_floating_point() and tensor.numel() > 1:
            tensor.fill_(float("nan"))
    torch.save(payload, state)
    line = assert_error(_resume(run, domains["source"], capsys), state)
    if part == "optimizer_state":
        assert "damaged resume state (NaN/Inf in extra.optimizer_state.state." in line, line
        assert line.endswith("); restore it or start a new run"), line
    else:  # read_checkpoint (training/checkpoint.py) refuses NaN in its state_dict first
        assert "NaN/Inf weights" in line and line.endswith("restore it or start a new run"), line
    assert len((run / "metrics.csv").read_text().splitlines()) == 2  # the header and epoch 1


def test_divergence_is_one_line_not_a_traceback(
    finished: Path, domains: dict[str, Path], tmp_path: Path, capsys: Capsys
) -> None:
    """Finite weights so large (1e38) that the loss overflows: a real divergence at the first step
    of epoch 2 was a RuntimeError traceback; now one line with the advice, exit 2."""
    run = _copy(finished, tmp_path)
    state = run / "checkpoints" / "resume.pt"
    payload = torch.load(state, weights_only=True)
    for tensor in payload["extra"]["method_state"].values():
        if tensor.is_floating_point():
            tensor.fill_(1e38)
    torch.save(payload, state)
    line = assert_error(_resume(run, domains["source"], capsys), "training diverged at epoch 2 step 0 (")
    assert line.endswith("); lower --lr"), line  # one line: no warning about the loss tensor first


# --------------------------------------------------------------------------- what is in the way


def test_checkpoints_folder_that_is_a_link_loop_is_named(
    finished: Path, domains: dict[str, Path], tmp_path: Path, capsys: Capsys
) -> None:
    """checkpoints replaced by a link loop: the note "resume.pt is missing ... training from epoch
    1", then "error: RUN/checkpoints: File exists". Now one line saying what the name is."""
    run = _copy(finished, tmp_path)
    folder = run / "checkpoints"
    shutil.rmtree(folder)
    os.symlink(folder, folder)
    line = assert_error(_resume(run, domains["source"], capsys), folder)
    assert f"{folder}: is a symbolic link loop" in line and "not a folder" in line, line


@pytest.mark.parametrize("kind", ["folder", "loop", "special"])
def test_config_json_that_is_not_a_file_is_named(
    kind: str, finished: Path, domains: dict[str, Path], tmp_path: Path, capsys: Capsys
) -> None:
    """config.json a folder, a link loop or a FIFO: "nothing to resume: no config.json in this run
    directory", as if there were nothing there. Now what it is, as report says it."""
    run = _copy(finished, tmp_path)
    stored = run / "config.json"
    stored.unlink()
    if kind == "folder":
        stored.mkdir()
    elif kind == "loop":
        os.symlink(stored, stored)
    else:
        os.mkfifo(stored)
    words = {"folder": "is a folder", "loop": "symbolic link loop", "special": "is a special file"}[kind]
    line = assert_error(_resume(run, domains["source"], capsys), stored)
    assert words in line and "no config.json" not in line, line
