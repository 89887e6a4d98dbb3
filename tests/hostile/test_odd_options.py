"""Odd option values and combinations of ``cryoshift simulate`` and ``cryoshift train`` through the real
CLI: each is refused in one line before any expensive work, where it used to end in a traceback
(torch's or numpy's), be ignored without a word, or train a useless model.

Hostile file contents (MRC, PDB, STAR, datasets) are in the other tests of this folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hostile_inputs import BOX, VOXEL, Capsys, assert_error, run_cli, train_argv, volumes

# ---------------------------------------------------------------------------------------------
# simulate


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        (["--threads", "-2"], "--threads must be at least 1, not -2"),  # torch traceback
        (["--threads", "0"], "--threads must be at least 1, not 0"),  # ignored
        (["--seed", str(10**20)], "--seed must be a whole number from 0"),  # torch overflow traceback
        (["--structure-seed", "-1"], "--structure-seed must be a whole number from 0"),  # numpy traceback
        (["--device", "CPU"], "--device must be cpu, cuda or cuda:N, not 'CPU'"),  # torch traceback
        (["--resolution", "0"], "--resolution must be a positive number"),  # taken for the default
        (["--resolution", "nan"], "--resolution must be a positive number"),
        (["--shift", "8"], f"can move particles out of the {BOX}-voxel box"),  # noise labelled as classes
        (["--box", "513"], "box size 513 is too large (at most 512 voxels"),  # terabytes, or the OOM killer
        # "voxel size must be a positive number, got 0.0" named neither the option nor the range
        (["--voxel-size", "0"], "--voxel-size 0 is outside the accepted range 0.5 to 50 A"),
        (["--voxel-size", "nan"], "--voxel-size nan is outside the accepted range"),
        (["--n", "0"], "--n 0 is outside the accepted range 1 to"),
    ],
)
def test_simulate_refuses_odd_options(
    options: list[str], reason: str, tmp_path: Path, capsys: Capsys
) -> None:
    pytest.importorskip("torch")
    argv = ["simulate", tmp_path / "sim", "--n", 4, "--box", BOX, "--no-progress", "--threads", 1, *options]
    assert reason in assert_error(run_cli(argv, capsys), reason)
    assert not (tmp_path / "sim" / "dataset.json").exists()


def test_simulate_refuses_a_config_shift_larger_than_half_the_box(tmp_path: Path, capsys: Capsys) -> None:
    """--config's shift_voxels passes SimulationConfig.validate (which does not know the box)."""
    pytest.importorskip("torch")
    cfg = tmp_path / "shift.json"
    cfg.write_text(json.dumps({"shift_voxels": 50}))
    argv = ["simulate", tmp_path / "sim", "--n", 2, "--box", BOX, "--config", cfg, "--no-progress"]
    assert_error(run_cli(argv, capsys), "a shift of 50 voxels can move particles out")


def test_simulate_keeps_ordinary_odd_boxes(tmp_path: Path, capsys: Capsys) -> None:
    """An odd box and the largest shift under half of it are fine (the checks above are not too eager)."""
    pytest.importorskip("torch")
    argv = [
        "simulate",
        tmp_path / "sim",
        "--n",
        2,
        "--box",
        9,
        "--shift",
        4,
        "--structures",
        "builtin:rubisco,builtin:p97",  # two classes: one is refused
    ]
    code, _, err = run_cli([*argv, "--no-progress", "--threads", 1, "--seed", 2**40], capsys)
    assert code == 0, err


def test_simulate_lowers_threads_above_the_cpu_count(
    tmp_path: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--threads 100000` went to torch.set_num_threads unchanged (as it did to onnxruntime, where it
    segfaulted under a memory ulimit). It is lowered to the CPU count, with one note; the CPU count
    is made 1 here, so the old code left torch at 3 threads (a failed assertion, not a crash)."""
    torch = pytest.importorskip("torch")
    import os

    before = torch.get_num_threads()
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    argv = ["simulate", tmp_path / "sim", "--n", 2, "--box", BOX, "--threads", 3, "--no-progress"]
    argv += ["--structures", "builtin:rubisco,builtin:p97"]  # --n 2 of the nine built-ins is refused
    try:
        code, _, err = run_cli(argv, capsys)
        used = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    assert code == 0, err
    note = "cryoshift: note: --threads 3 is above the CPU count (1); using 1 threads"
    assert err.splitlines().count(note) == 1, err
    assert used == 1


# ---------------------------------------------------------------------------------------------
# train


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        (["--lr", "nan"], "--lr must be a finite number above 0, not nan"),  # Adam's traceback
        (["--lr", "inf"], "--lr must be a finite number above 0, not inf"),  # a NaN model, exit 0
        (["--weight-decay", "-1"], "--weight-decay must be a finite number >= 0"),  # Adam's traceback
        (["--weight-decay", "nan"], "--weight-decay must be a finite number >= 0"),
        (["--threads", "0"], "--threads must be at least 1, not 0"),  # ignored
        (["--threads", "-1"], "--threads must be at least 1, not -1"),  # torch traceback
        (["--seed", "-1"], "--seed must be a whole number from 0"),  # numpy traceback
        (["--seed", str(10**20)], "--seed must be a whole number from 0"),  # torch overflow traceback
        (["--sim-preset", "nosuch"], "unknown --sim-preset 'nosuch'"),  # ignored with a dataset source
        (["--sim-per-epoch", "0"], "--sim-per-epoch must be at least 1, not 0"),
        (["--template-labels", "-3"], "--template-labels must be 0 (off) or a positive count"),  # = off
        (["--hparam", "target_every=abc"], "--hparam target_every must be a whole number >= 1"),
        (["--hparam", "target_every=-1"], "--hparam target_every must be a whole number >= 1"),  # clamped
        (["--hparam", "dann_weight=nan"], "--hparam dann_weight must be a finite number >= 0"),
        (["--hparam", "im_weight=1", "--hparam", "im_weight=2"], "--hparam im_weight is given twice"),
        (["--backbone-opt", "num_classes=7"], "--backbone-opt num_classes cannot be set"),  # overridden
        (["--backbone-opt", "box_size=32"], "--backbone-opt box_size cannot be set"),
        (["--backbone-opt", "test_views=2"], "--backbone-opt test_views cannot be set: use --test-views"),
        (["--backbone-opt", "drop_rate=abc"], "--backbone-opt drop_rate=abc: cryonet-small expects a float"),
        (["--template-rule", "vote"], "--template-rule must be one of margin, agree, agree-only, not 'vote'"),
        (
            ["--template-rule", "agree", "--template-labels", "0"],
            "--template-rule agree chooses among template",
        ),
        (["--tomograms", "t.mrc"], "--tomograms describes the --target, but no --target is given"),
        (["--copick-run", "r1"], "--copick-run describes the --target, but no --target is given"),
    ],
)
def test_train_refuses_odd_options(
    options: list[str], reason: str, tmp_path: Path, capsys: Capsys, dataset: Path
) -> None:
    pytest.importorskip("torch")
    result = run_cli(train_argv(dataset, tmp_path / "run", *options), capsys)
    assert reason in assert_error(result, reason)
    assert not (tmp_path / "run").exists()


def test_train_refuses_a_max_target_of_zero(tmp_path: Path, capsys: Capsys, dataset: Path) -> None:
    """--max-target 0 read no target and ended in an IndexError traceback in the first step."""
    pytest.importorskip("torch")
    from cryoshift.runtime.dataset import write_dataset

    target = write_dataset(tmp_path / "target", volumes(3, seed=4), voxel_size=VOXEL)
    argv = train_argv(dataset, tmp_path / "run", "--target", target, "--max-target", 0)
    argv[argv.index("source-only")] = "selftrain"
    assert_error(run_cli(argv, capsys), "--max-target must be at least 1, not 0")


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        # every class held out: an IndexError traceback in the first step
        (["--val-fraction", "0.99"], "--val-fraction 0.99 holds out every volume of class"),
        # the dataset's 10 A won without a word
        (["--voxel-size", "5"], "source voxel size is 10 A but --voxel-size is 5"),
    ],
)
def test_train_refuses_options_that_contradict_the_source_dataset(
    options: list[str], reason: str, tmp_path: Path, capsys: Capsys, dataset: Path
) -> None:
    pytest.importorskip("torch")
    line = assert_error(run_cli(train_argv(dataset, tmp_path / "run", *options), capsys), dataset)
    assert reason in line
    assert not (tmp_path / "run" / "model.pt").exists()


def test_train_notes_a_source_too_small_to_hold_out_validation(tmp_path: Path, capsys: Capsys) -> None:
    """One volume per class: nothing is held out, so the model is not calibrated; that was silent."""
    pytest.importorskip("torch")
    from cryoshift.runtime.dataset import write_dataset

    src = write_dataset(tmp_path / "src", volumes(2), labels=[0, 1], class_names=["a", "b"], voxel_size=VOXEL)
    code, _, err = run_cli(train_argv(src, tmp_path / "run", "--batch-size", 2), capsys)
    assert code == 0, err
    assert "--val-fraction 0.1 of 2 source volumes holds none out" in err
    assert (tmp_path / "run" / "model.pt").is_file()
