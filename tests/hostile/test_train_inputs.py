"""Unusual inputs of ``cryoshift train`` through the real CLI: run folders that hold a folder where
the run writes a file (or the reverse), an --out that cannot be a folder, a resumed config without
an epoch count, the source dataset given as its own target, --hparam keys of another method, a
target of one repeated volume, and a run folder whose name needs quoting in a shell.

Each used to end in a traceback, an unclear message after the training was done, or a run that
did something else than asked without a word. Tiny settings: 16^3 volumes, cryonet-small, 1 epoch.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from hostile_inputs import VOXEL, Capsys, assert_error, run_cli, train_argv, volumes


@pytest.mark.parametrize(
    ("name", "kind", "words"),
    [
        # "plots: File exists" after every epoch had trained (and model.pt was written)
        ("plots", "file", "is not a folder, and the run keeps its plots there"),
        # "checkpoints: File exists" after the first epoch trained
        ("checkpoints", "file", "is not a folder, and the run keeps its checkpoints there"),
        # "model.pt.tmp: Is a directory" after every epoch had trained
        ("model.pt", "folder", "is not a file but a folder, where the run writes its selected model"),
        ("metrics.csv", "folder", "is not a file but a folder, where the run writes its metrics"),
    ],
)
def test_train_refuses_a_run_folder_holding_the_wrong_kind_of_entry(
    name: str, kind: str, words: str, tmp_path: Path, capsys: Capsys, dataset: Path
) -> None:
    pytest.importorskip("torch")
    out = tmp_path / "run"
    entry = out / name
    entry.parent.mkdir(parents=True)
    if kind == "file":
        entry.write_text("stray")
    else:
        entry.mkdir()
    line = assert_error(run_cli(train_argv(dataset, out), capsys), entry)
    assert words in line and "choose another --out" in line, line
    assert not (out / "metrics.csv").is_file() and not (out / "model.pt").is_file()  # refused before training


def test_train_refuses_an_out_that_cannot_be_a_folder(tmp_path: Path, capsys: Capsys, dataset: Path) -> None:
    """A file, a path under a file, a dangling link: "File exists" / "Not a directory" after the
    data was read (and, with a simulated source, template-matched)."""
    pytest.importorskip("torch")
    afile = tmp_path / "afile"
    afile.write_text("x")
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    cases = [
        (afile, afile, "exists and is not a folder; --out names the folder the run is written to"),
        (afile / "sub", afile, f"is not a folder, so --out {afile / 'sub'} cannot be made in it"),
        (dangling, dangling, "dangling symbolic link"),
    ]
    for out, named, words in cases:
        assert words in assert_error(run_cli(train_argv(dataset, out), capsys), named)
    assert not (tmp_path / "nowhere").exists()


def test_train_resume_of_a_config_without_an_epoch_count_is_one_line(
    tmp_path: Path, capsys: Capsys, dataset: Path
) -> None:
    """config.json edited to "epochs": null, resumed without --epochs: a TypeError traceback after
    the data and the network were built."""
    pytest.importorskip("torch")
    out = tmp_path / "run"
    code, _, err = run_cli(train_argv(dataset, out), capsys)
    assert code == 0, err
    config = out / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "epochs": None}))
    argv = ["train", "--source", dataset, "--out", out, "--resume", "--device", "cpu", "--threads", 1]
    line = assert_error(run_cli([*argv, "--no-progress"], capsys), config)
    assert 'holds no epoch count ("epochs": null); pass --epochs with --resume' in line


@pytest.mark.parametrize("spelling", ["folder", "volumes.mrc"])
def test_train_refuses_the_source_dataset_as_its_own_target(
    spelling: str, tmp_path: Path, capsys: Capsys, dataset: Path
) -> None:
    """--target the --source dataset (or its volumes.mrc): a run that "adapted" to its own labelled
    data, selected and calibrated on it, and ended like any other, exit 0."""
    pytest.importorskip("torch")
    target = dataset if spelling == "folder" else dataset / "volumes.mrc"
    argv = train_argv(dataset, tmp_path / "run", "--target", target, "--method", "dann")
    line = assert_error(run_cli(argv, capsys), target)
    assert f"is the --source dataset {dataset} itself" in line, line
    assert not (tmp_path / "run" / "model.pt").exists()


@pytest.mark.parametrize(
    ("hparam", "words"),
    [
        # trained without it, exit 0: the registry takes any method's key and ignores it
        ("dann_weight=0.5", "--hparam dann_weight is a hyper-parameter of dann, not of method 'selftrain'"),
        # refused only after the target was read, listing every method's keys
        (
            "target_evry=2",
            "--hparam target_evry is not a hyper-parameter of method 'selftrain' (did you mean",
        ),
    ],
)
def test_train_refuses_an_hparam_the_method_does_not_take(
    hparam: str, words: str, tmp_path: Path, capsys: Capsys, dataset: Path
) -> None:
    pytest.importorskip("torch")
    from cryoshift.runtime.dataset import write_dataset

    target = write_dataset(tmp_path / "target", volumes(4, seed=3), voxel_size=VOXEL)
    argv = train_argv(
        dataset, tmp_path / "run", "--target", target, "--method", "selftrain", "--hparam", hparam
    )
    line = assert_error(run_cli(argv, capsys), words)
    assert "it takes adapt_ramp, adapt_start" in line and "warp_sigma" not in line, line
    assert not (tmp_path / "run").exists()


def test_train_notes_a_target_of_one_repeated_volume(tmp_path: Path) -> None:
    """A stack that repeats one volume was adapted to as if it were many, without a word."""
    import numpy as np

    from cryoshift.runtime.mrc import write_stack
    from cryoshift.training.data import load_target

    one = volumes(1)[0]
    stack = write_stack(tmp_path / "repeated.mrcs", np.stack([one] * 5), voxel_size=VOXEL)
    dom = load_target(str(stack), one.shape[0], VOXEL, "dark", ["a", "b"])
    assert len(dom) == 5
    assert dom.notes == [
        f"{stack}: all 5 target volumes are one and the same volume: the model adapts to that one "
        "subtomogram (a stack or picks table that repeats one entry?)"
    ]
    varied = write_stack(tmp_path / "varied.mrcs", volumes(5), voxel_size=VOXEL)
    assert load_target(str(varied), one.shape[0], VOXEL, "dark", ["a", "b"]).notes == []


def test_train_next_step_is_quoted_for_a_shell(tmp_path: Path, capsys: Capsys, dataset: Path) -> None:
    """The "next: cryoshift export RUN" line of a run folder with a space broke when pasted."""
    pytest.importorskip("torch")
    out = tmp_path / "my run ü"
    code, stdout, err = run_cli(train_argv(dataset, out), capsys)
    assert code == 0, err
    assert f"next: cryoshift export {shlex.quote(str(out))}" in stdout.splitlines(), stdout
