"""Hostile and careless input to ``cryoshift bench`` and ``cryoshift demo``.

bench: models that are not ONNX or that load but cannot run the benchmark's batch, and odd
``--json`` targets. demo: bad options refused before any stage runs, and an ``--out`` folder left
by an earlier demo whose stage outputs were damaged or made with other settings (the demo re-uses
finished stages: a damaged one is made again, never scored or failed on minutes later).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest
from hostile_inputs import BOX, Capsys, assert_error, run_cli
from tiny_onnx import linear_model
from tiny_training import TINY_DEMO

# the smallest bench that still runs every step
SMALL = ["--n", 2, "--repeats", 1, "--batch-size", 2, "--workers", 1, "-b", "cpu"]


# ---------------------------------------------------------------------------------------------
# bench: models


def test_bench_refuses_what_is_not_a_model(tmp_path: Path, capsys: Capsys, model: Path) -> None:
    folder = tmp_path / "folder.onnx"
    folder.mkdir()
    data = model.read_bytes()
    loop = tmp_path / "loop.onnx"
    os.symlink(tmp_path / "loop2.onnx", loop)
    os.symlink(loop, tmp_path / "loop2.onnx")
    bad = [
        (tmp_path / "text.onnx", b"hello world\n"),
        (tmp_path / "empty.onnx", b""),
        (tmp_path / "truncated.onnx", data[: len(data) // 2]),
        (tmp_path / "model.engine", b"not an engine"),  # no TensorRT, no sidecar
    ]
    for path, payload in bad:
        path.write_bytes(payload)
    rank4 = linear_model(tmp_path / "rank4.onnx", ["batch", BOX, BOX, BOX])
    for path in [*(p for p, _ in bad), folder, loop, rank4, tmp_path / "missing.onnx"]:
        assert_error(run_cli(["bench", path, *SMALL], capsys), path)
    line = assert_error(run_cli(["bench", loop, *SMALL], capsys), loop)
    assert "symbolic link loop" in line


@pytest.mark.parametrize(
    "kind,shape,reshape",
    [("fixed_batch", [1, 1, BOX, BOX, BOX], False), ("fixed_reshape", ["batch", 1, BOX, BOX, BOX], True)],
)
def test_bench_model_that_cannot_run_the_batch(
    kind: str, shape: list[object], reshape: bool, tmp_path: Path, capsys: Capsys
) -> None:
    """A graph that passes every load-time check but fails on the benchmark's batch (a fixed batch
    of 1, a Reshape to batch 1) was onnxruntime's own exception as a traceback."""
    path = linear_model(tmp_path / f"{kind}.onnx", shape, 1 if reshape else None)
    line = assert_error(run_cli(["bench", path, *SMALL], capsys), path)
    assert f"batch of shape 2x1x{BOX}x{BOX}x{BOX} (--batch-size 2)" in line, line
    # the same graph at a batch it takes is benchmarked
    code, out, err = run_cli(["bench", path, *SMALL[:4], "--batch-size", 1, *SMALL[6:]], capsys)
    assert code == 0, err
    assert "inference only" in out


# ---------------------------------------------------------------------------------------------
# bench: --json


def test_bench_json_through_a_dangling_link(tmp_path: Path, capsys: Capsys, model: Path) -> None:
    """--json naming a link to a file not made yet: like every whole-file output, the link is
    replaced by the figures' file and never written through, and no empty target is left behind
    (the check that --json is writable once made the target, then the result landed beside it)."""
    target = tmp_path / "results" / "bench.json"
    target.parent.mkdir()
    link = tmp_path / "bench.json"
    os.symlink(target, link)
    code, _, err = run_cli(["bench", model, *SMALL, "--json", link], capsys)
    assert code == 0, err
    assert not link.is_symlink() and not target.exists()
    result = json.loads(link.read_text())
    assert {"inference", "feed"} <= result.keys() and result["model_box"] == BOX


def test_bench_json_refusals(tmp_path: Path, capsys: Capsys, model: Path) -> None:
    """Refused before the timing: a folder, a missing parent folder, a file that is no bench result."""
    for path in (tmp_path, tmp_path / "no" / "such" / "x.json", model):
        assert_error(run_cli(["bench", model, *SMALL, "--json", path], capsys), path)
    assert model.stat().st_size > 0 and model.read_bytes()[:1] != b"{"  # not written over


# ---------------------------------------------------------------------------------------------
# demo: options and --out refused before any stage runs

needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="demo needs torch")


@pytest.mark.parametrize(
    "option,value,words",
    [
        ("--seed", -1, "--seed must be a whole number from 0"),  # numpy's traceback
        ("--threads", -1, "--threads must be at least 1, not -1"),  # torch's traceback
        ("--threads", 0, "--threads must be at least 1, not 0"),  # refused after the simulation
    ],
)
@needs_torch
def test_demo_refuses_bad_options_first(
    option: str, value: int, words: str, tmp_path: Path, capsys: Capsys
) -> None:
    out = tmp_path / "demo"
    result = run_cli(["demo", "--out", out, "--quick", "--no-progress", option, value], capsys)
    line = assert_error(result, option)
    assert words in line, line
    assert not (out / "data").exists()  # nothing simulated


@needs_torch
def test_demo_refuses_a_bad_out(tmp_path: Path, capsys: Capsys) -> None:
    args = ["--quick", "--no-progress"]
    dangling = tmp_path / "dangling"
    os.symlink(tmp_path / "nowhere", dangling)
    loop = tmp_path / "loop"
    os.symlink(tmp_path / "loop2", loop)
    os.symlink(loop, tmp_path / "loop2")
    for out, words in ((dangling, "dangling symbolic link"), (loop, "symbolic link loop")):  # "File exists"
        line = assert_error(run_cli(["demo", "--out", out, *args], capsys), out)
        assert words in line, line
    # demo.json (written last) a folder: refused before the stages, not after all of them
    out = tmp_path / "demo"
    (out / "demo.json").mkdir(parents=True)
    assert_error(run_cli(["demo", "--out", out, *args], capsys), out / "demo.json")
    assert not (out / "data").exists()


# ---------------------------------------------------------------------------------------------
# demo: re-used stages that are damaged or were made with other settings

SEED = 3


def _demo(out: Path, seed: int = SEED) -> tuple[object, list[str]]:
    from cryoshift.runtime.commands.demo import run_demo

    lines: list[str] = []
    result = run_demo(out, quick=True, seed=seed, say=lines.append, **TINY_DEMO)
    return result, lines


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An --out folder of a finished tiny demo (copied by each test before it is tampered with)."""
    out = tmp_path_factory.mktemp("finished") / "demo"
    _demo(out)
    return out


def _copy(finished: Path, tmp_path: Path) -> Path:
    out = tmp_path / "demo"
    shutil.copytree(finished, out, symlinks=True)
    return out


def _mtime(path: Path) -> int:
    return path.stat().st_mtime_ns


def _checkpoint_seed(run: Path) -> int:
    from cryoshift.training.checkpoint import read_checkpoint

    return read_checkpoint(run / "model.pt")["config"]["seed"]


@needs_torch
def test_demo_reuses_intact_stages(finished: Path, tmp_path: Path) -> None:
    out = _copy(finished, tmp_path)
    before = {p: _mtime(out / p) for p in ("data/target/volumes.mrc", "runs/default/model.pt")}
    _, lines = _demo(out)
    assert not [line for line in lines if "not re-used" in line], lines
    assert {p: _mtime(out / p) for p in before} == before


@needs_torch
def test_demo_remakes_damaged_stage_outputs(finished: Path, tmp_path: Path) -> None:
    """A truncated model.pt was re-used as finished and failed the last stage after minutes (the
    source-only model) or the export; a run whose config.json contradicts its model.pt (export
    refuses such a model) is trained again; demo.json, which nothing reads, changes nothing."""
    out = _copy(finished, tmp_path)
    model = out / "runs" / "source-only" / "model.pt"
    model.write_bytes(model.read_bytes()[:1000])
    (out / "demo.json").write_text("{not json")
    (out / "runs" / "default" / "config.json").write_text('{"seed": 99}')
    default_model = _mtime(out / "runs" / "default" / "model.pt")
    result, lines = _demo(out)
    notes = [line for line in lines if "not re-used" in line]
    assert len(notes) == 2 and str(model) in notes[0] and "truncated or damaged" in notes[0], lines
    assert "was not made by this run (seed differs from config.json)" in notes[1], lines
    assert _checkpoint_seed(out / "runs" / "source-only") == SEED  # trained again, loads
    assert _mtime(out / "runs" / "default" / "model.pt") != default_model  # trained again
    assert json.loads((out / "demo.json").read_text())["config"]["seed"] == SEED
    assert [r["method"] for r in result.rows] == ["source-only", "template-matching", "default"]


@needs_torch
def test_demo_remakes_a_dataset_with_files_removed(finished: Path, tmp_path: Path) -> None:
    """volumes.mrc gone but dataset.json there: the target counted as finished and the demo failed
    at scoring; now it is simulated again, and the runs trained on the old target go with it."""
    out = _copy(finished, tmp_path)
    (out / "data" / "target" / "volumes.mrc").unlink()
    default_model = _mtime(out / "runs" / "default" / "model.pt")
    result, lines = _demo(out)
    notes = [line for line in lines if "not re-used" in line]
    assert len(notes) == 1 and "volumes.mrc is missing" in notes[0], lines
    assert (out / "data" / "target" / "volumes.mrc").is_file()
    assert _mtime(out / "runs" / "default" / "model.pt") != default_model
    assert result.rows[0]["n"] == TINY_DEMO["n_target"]


@needs_torch
def test_demo_with_another_seed_is_not_the_old_one(finished: Path, tmp_path: Path) -> None:
    """A re-run with another --seed re-used the old target and models, while demo.json said the
    new seed: numbers of one run reported as another's."""
    out = _copy(finished, tmp_path)
    _, lines = _demo(out, seed=SEED + 1)
    assert any("made with other settings" in line and "seed" in line for line in lines), lines
    info = json.loads((out / "data" / "target" / "dataset.json").read_text())
    assert info["seed"] == SEED + 1 + 1000
    for run in ("source-only", "default"):
        assert _checkpoint_seed(out / "runs" / run) == SEED + 1
    assert json.loads((out / "demo.json").read_text())["config"]["seed"] == SEED + 1


def test_bench_says_when_the_batch_is_capped_at_n(tmp_path: Path, capsys: Capsys, model: Path) -> None:
    """--batch-size above --n ran in batches of --n, shown only in the table's title."""
    argv = ["bench", model, "--backend", "cpu", "--n", "4", "--batch-size", "8", "--repeats", "1"]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    assert "note: --batch-size 8 is more than --n 4: timed in batches of 4" in err, err
