"""Runs killed part-way, and two runs writing one folder at once (simulate, train, export).

A second writer is played by this test process holding the folder's lock (runtime/lock.py: an
``flock`` of another open file, refused even within one process), and a kill by the state it
leaves (files deleted, or an interrupt raised at the moment in question): deterministic, no timing.
Each was a corrupt dataset, two trainings overwriting each other, a run that could never be
resumed, or an export refused (or failed) for the wrong reason."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from hostile_inputs import VOXEL, Capsys, assert_error, run_cli, train_argv, volumes

from cryoshift.runtime.cli import main
from cryoshift.runtime.lock import EXPORT_LOCK, SIMULATE_LOCK, TRAIN_LOCK, FolderLock

TWO = "builtin:rubisco,builtin:p97"


def _held_by_us(line: str, what: str) -> None:
    """The refusal names the other writer and its pid (this process holds the lock)."""
    assert f"another {what} (pid {os.getpid()}) is writing to this folder" in line, line


# --------------------------------------------------------------------------- simulate (item 1)


def _simulate(out: Path, capsys: Capsys, *extra: object) -> tuple[int | str, str, str]:
    argv = ["simulate", out, "--n", 4, "--box", 16, "--no-progress", "--threads", 1, "--structures", TWO]
    return run_cli([*argv, *extra], capsys)


def test_simulate_into_a_folder_another_simulate_is_writing_is_refused(
    tmp_path: Path, capsys: Capsys
) -> None:
    """Two simulate runs started together into one OUT_DIR both passed the "free folder" check and
    wrote one dataset of two seeds' volumes under one seed's labels, both exit 0. The second is now
    refused in one line naming the first's pid, and writes nothing."""
    out = tmp_path / "sim"
    out.mkdir()
    with FolderLock(out, SIMULATE_LOCK, "simulate run"):
        line = assert_error(_simulate(out, capsys, "--seed", 5), out)
    _held_by_us(line, "simulate run")
    assert "choose another OUT_DIR" in line, line
    assert sorted(p.name for p in out.iterdir()) == [SIMULATE_LOCK]
    code, _, err = _simulate(out, capsys)  # the folder is free again
    assert code == 0, err
    assert (out / "dataset.json").is_file()


def test_simulate_lock_comes_before_the_free_folder_check(tmp_path: Path, capsys: Capsys) -> None:
    """The first run's partly written volumes.mrc must not be what the second is told about: the
    lock is checked first (the first run is alive, not "a simulate run that was stopped")."""
    out = tmp_path / "sim"
    out.mkdir()
    (out / "volumes.mrc").write_bytes(b"being written")
    with FolderLock(out, SIMULATE_LOCK, "simulate run"):
        line = assert_error(_simulate(out, capsys), out)
    _held_by_us(line, "simulate run")
    assert "unfinished dataset" not in line, line


def test_a_refused_simulate_leaves_no_folder_or_lock_behind(tmp_path: Path, capsys: Capsys) -> None:
    """The lock makes OUT_DIR before the checks: a run refused after it removes what it made."""
    new = tmp_path / "new" / "sim"
    assert_error(_simulate(new, capsys, "--n", 1), "--n 1")
    assert not new.exists()
    old = tmp_path / "old"
    old.mkdir()
    assert_error(_simulate(old, capsys, "--n", 1), "--n 1")
    assert list(old.iterdir()) == []


# --------------------------------------------------------------------------- train (items 5 and 2)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A labelled dataset of 12 volumes in classes a, b."""
    from cryoshift.runtime.dataset import write_dataset

    root = tmp_path_factory.mktemp("source")
    return write_dataset(
        root / "src", volumes(12, seed=1), [i % 2 for i in range(12)], ["a", "b"], voxel_size=VOXEL
    )


@pytest.fixture(scope="module")
def finished(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-epoch run (hostile_inputs.train_argv) that keeps its resume.pt."""
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main([str(a) for a in train_argv(source, out)]) == 0
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run", symlinks=True))


def _metric_epochs(run: Path) -> list[str]:
    return [line.split(",")[0] for line in (run / "metrics.csv").read_text().splitlines()[1:]]


def test_train_into_a_folder_another_train_is_writing_is_refused(
    source: Path, finished: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """Two trains on one --out (fresh, or --resume) both ran to the end, overwriting each other's
    checkpoints, metrics.csv and model.pt; the first reported the second's model. The second is
    now refused in one line naming the first's pid, before it writes anything."""
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    with FolderLock(fresh, TRAIN_LOCK, "train run"):
        line = assert_error(run_cli(train_argv(source, fresh), capsys), fresh)
    _held_by_us(line, "train run")
    assert sorted(p.name for p in fresh.iterdir()) == [TRAIN_LOCK]  # no config.json: nothing started
    run = _copy(finished, tmp_path)
    model = (run / "model.pt").read_bytes()
    with FolderLock(run, TRAIN_LOCK, "train run"):
        line = assert_error(run_cli(train_argv(source, run, "--epochs", 2, "--resume"), capsys), run)
    _held_by_us(line, "train run")
    assert (run / "model.pt").read_bytes() == model and _metric_epochs(run) == ["1"]
    code, _, err = run_cli(train_argv(source, run, "--epochs", 2, "--resume"), capsys)  # free again
    assert code == 0, err
    assert _metric_epochs(run) == ["1", "2"]


def test_two_process_train_into_a_folder_another_train_is_writing_is_refused(
    source: Path, tmp_path: Path
) -> None:
    """Under torchrun rank 0 is the one writer: it takes the lock, and its refusal ends the run (the
    other ranks are told rather than left waiting for it)."""
    from cryoshift.training.distributed import launch_local
    from cryoshift.training.trainer import TrainConfig

    out = tmp_path / "ddp"
    out.mkdir()
    config = TrainConfig(source=str(source), out=str(out), method="source-only", backbone="cryonet-small")
    config.epochs, config.batch_size, config.progress, config.threads, config.device = 1, 4, False, 1, "cpu"
    with (
        FolderLock(out, TRAIN_LOCK, "train run"),
        pytest.raises(Exception, match="is writing to this folder"),
    ):
        launch_local(config, 2)
    assert sorted(p.name for p in out.iterdir()) == [TRAIN_LOCK]


def test_a_refused_train_leaves_no_folder_behind(source: Path, tmp_path: Path, capsys: Capsys) -> None:
    """The lock makes --out before the run's checks: a refused --resume removes what it made."""
    out = tmp_path / "never"
    assert "nothing to resume" in assert_error(run_cli(train_argv(source, out, "--resume"), capsys), out)
    assert not out.exists()


def test_each_epoch_writes_its_checkpoint_then_resume_pt_then_its_metrics_row(
    source: Path, tmp_path: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """resume.pt was written after the epoch's metrics row: a kill between the two in epoch 1 left
    a run that every --resume refused ("resume.pt: missing, but the run has finished 1 epoch"). A
    metrics row now shows an epoch whose resume.pt is on disk."""
    from cryoshift.training import run as run_module
    from cryoshift.training import trainer

    written: list[str] = []
    save, write_metrics = trainer.save_checkpoint, run_module.write_metrics

    def saving(path: Path, *args: object, **kwargs: object) -> Path:
        written.append(Path(path).name)
        return save(path, *args, **kwargs)

    def writing(path: Path, rows: list) -> None:
        written.append(f"metrics.csv ({len(rows)} rows)")
        write_metrics(path, rows)

    monkeypatch.setattr(trainer, "save_checkpoint", saving)
    monkeypatch.setattr(run_module, "write_metrics", writing)
    code, _, err = run_cli(train_argv(source, tmp_path / "run", "--epochs", 2), capsys)
    assert code == 0, err
    assert written[:6] == [
        "epoch_0001.pt",
        "resume.pt",
        "metrics.csv (1 rows)",
        "epoch_0002.pt",
        "resume.pt",
        "metrics.csv (2 rows)",
    ], written


def test_train_killed_while_saving_its_first_epoch_resumes(
    source: Path, finished: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """Killed after epoch_0001.pt, before resume.pt (SIGTERM of a SLURM limit): each --resume was
    refused as a run that lost its resume state, with nothing to restore. Now it trains from epoch
    1 with a note, and removes the temporary files the killed run left (only those)."""
    run = _copy(finished, tmp_path)
    kept = {"config.json", "versions.json", "checkpoints", "checkpoints/epoch_0001.pt"}
    for path in sorted(run.rglob("*"), reverse=True):
        if str(path.relative_to(run)) not in kept:
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    stale = [run / ".cs-k1ll3d00.tmp", run / "checkpoints" / ".cs-0dd1ty00.tmp"]
    for path in stale:
        path.write_bytes(b"")
    others = [run / ".cs-notes.txt", run / "checkpoints" / "cs-k1ll3d00.tmp"]
    for path in others:
        path.write_bytes(b"mine")
    (run / ".cs-link0000.tmp").symlink_to(others[0])
    code, _, err = run_cli(train_argv(source, run, "--resume"), capsys)
    assert code == 0, err
    state = run / "checkpoints" / "resume.pt"
    assert f"cryoshift: note: {state} is missing and the run shows no finished epoch" in err, err
    assert "stopped while saving its first epoch" in err and "training from epoch 1" in err, err
    assert _metric_epochs(run) == ["1"] and (run / "model.pt").is_file() and state.is_file()
    assert not any(p.exists() for p in stale)
    assert all(p.read_bytes() == b"mine" for p in others) and (run / ".cs-link0000.tmp").is_symlink()


def test_train_killed_after_resume_pt_before_its_metrics_row_resumes_with_every_row(
    source: Path, finished: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """Killed after the last epoch's resume.pt, before its metrics row: the resume has no epoch left
    to train, and metrics.csv (the history the report and selection read) must still hold it."""
    run = _copy(finished, tmp_path)
    for name in ("metrics.csv", "model.pt", "selection.json"):
        (run / name).unlink()
    code, _, err = run_cli(train_argv(source, run, "--resume"), capsys)
    assert code == 0, err
    assert _metric_epochs(run) == ["1"] and (run / "model.pt").is_file()


def test_train_resume_without_resume_pt_after_a_finished_epoch_is_still_refused(
    source: Path, finished: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """The first-epoch allowance is only for a run whose only trace is epoch_0001.pt: with a metrics
    row or model.pt beside it, resume.pt was lost, not unwritten."""
    run = _copy(finished, tmp_path)
    (run / "checkpoints" / "resume.pt").unlink()
    state = run / "checkpoints" / "resume.pt"
    line = assert_error(run_cli(train_argv(source, run, "--resume"), capsys), state)
    assert "missing, but the run has finished 1 epoch (metrics.csv)" in line, line
    (run / "metrics.csv").unlink()
    line = assert_error(run_cli(train_argv(source, run, "--resume"), capsys), state)
    assert "missing, but the run has finished 1 epoch (checkpoints/epoch_*.pt)" in line, line


# --------------------------------------------------------------------------- export (items 4 and 6)


def _export(checkpoint: Path, out: Path, capsys: Capsys, *extra: object) -> tuple[int | str, str, str]:
    return run_cli(["export", checkpoint, "-o", out, "--no-progress", *extra], capsys)


def _other_checkpoint(finished: Path, tmp_path: Path) -> Path:
    """model.pt of the finished run with one byte more: the same network, another sha256."""
    other = Path(shutil.copy(finished / "model.pt", tmp_path / "other.pt"))
    with open(other, "ab") as fh:
        fh.write(b"\0")
    return other


def _kill_before_the_report(monkeypatch: pytest.MonkeyPatch) -> None:
    """Interrupt the export as it writes its finished export.json (a kill after every artefact)."""
    from cryoshift.export import api

    write_text = api.write_text

    def killed(path: Path, text: str) -> None:
        if path.name == api.REPORT and api.UNFINISHED not in json.loads(text):
            raise KeyboardInterrupt
        write_text(path, text)

    monkeypatch.setattr(api, "write_text", killed)


def test_export_killed_before_its_report_exports_again(
    finished: Path, tmp_path: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after model.onnx, before export.json: the rerun of the same checkpoint was refused as
    "already holds another checkpoint's export". The folder now says whose unfinished export it
    holds: the same checkpoint exports again (with a note), another is refused with the truth."""
    out = tmp_path / "deploy"
    with monkeypatch.context() as patch:
        _kill_before_the_report(patch)
        code, _, _ = _export(finished, out, capsys)
    assert code == 130 and (out / "model.onnx").is_file()
    line = assert_error(_export(_other_checkpoint(finished, tmp_path), out, capsys), out)
    assert "already holds an unfinished export of another checkpoint (export.json, model.onnx)" in line
    code, _, err = _export(finished, out, capsys)
    assert code == 0, err
    assert f"cryoshift: note: {out}: holds an unfinished export of this checkpoint" in err, err
    report = json.loads((out / "export.json").read_text())
    assert "unfinished" not in report and report["results"][0]["format"] == "onnx"


def test_export_folder_with_artefacts_but_no_report_is_refused_truthfully(
    finished: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """model.onnx with no export.json (a kill by an older cryoshift, or a file put there): whose it
    is cannot be told, and the refusal says so instead of "another checkpoint's export"."""
    out = tmp_path / "deploy"
    code, _, err = _export(finished, out, capsys)
    assert code == 0, err
    (out / "export.json").unlink()
    line = assert_error(_export(finished, out, capsys), out)
    assert "another checkpoint's export" not in line, line
    assert "no readable export.json (an export stopped before it finished?)" in line, line
    assert "delete them to export here" in line, line


def test_export_into_a_folder_another_export_is_writing_is_refused(
    finished: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """Two exports into one -o: one failed parity on the other's model.onnx, the other died in an
    onnxruntime traceback. The second is now refused in one line naming the first's pid."""
    out = tmp_path / "deploy"
    out.mkdir()
    with FolderLock(out, EXPORT_LOCK, "export"):
        line = assert_error(_export(finished, out, capsys), out)
    _held_by_us(line, "export")
    assert sorted(p.name for p in out.iterdir()) == [EXPORT_LOCK]
    code, _, err = _export(finished, out, capsys)
    assert code == 0, err


def test_export_or_evaluate_of_a_run_a_train_is_writing_is_refused(
    source: Path, finished: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """`export RUN` / `evaluate RUN` while `train --resume` trains RUN read a model.pt about to be
    replaced (or were told the run "stopped" before selecting one). The run folder is refused
    while its train lock is held, naming the pid; a checkpoint file given by its path is read."""
    from cryoshift.runtime.lock import holder

    run = _copy(finished, tmp_path)
    assert holder(run, TRAIN_LOCK) is None
    with FolderLock(run, TRAIN_LOCK, "train run"):
        assert holder(run, TRAIN_LOCK) == str(os.getpid())
        wanted = f"a train run (pid {os.getpid()}) is writing this folder"
        line = assert_error(_export(run, tmp_path / "deploy", capsys), run)
        assert wanted in line, line
        assert not (tmp_path / "deploy").exists()
        line = assert_error(run_cli(["evaluate", run, source, "--out", tmp_path / "ev"], capsys), run)
        assert wanted in line, line
        code, _, err = _export(run / "model.pt", tmp_path / "deploy", capsys)
        assert code == 0, err
    assert holder(run, TRAIN_LOCK) is None  # released: the folder reads again
    assert holder(tmp_path, TRAIN_LOCK) is None and not (tmp_path / TRAIN_LOCK).exists()  # none made
