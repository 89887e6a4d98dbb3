"""Odd options and option combinations of export, evaluate, bench and info, and the inference
options classify shares with bench (the files themselves are good: hostile file contents are the
other test_bad_*.py files' subject). Each was either a traceback (or a crash), an option silently
ignored, or an output written over without a word."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from hostile_inputs import BOX, VOXEL, Capsys, assert_error, put, run_cli, volumes

from cryoshift.runtime.mrc import write_stack


def _checkpoint(path: Path) -> Path:
    """A genuine (untrained) cryonet-small checkpoint of 16^3 boxes, classes a and b."""
    from cryoshift.runtime.metadata import ModelMetadata
    from cryoshift.training.backbones import create_backbone
    from cryoshift.training.checkpoint import save_checkpoint

    net = create_backbone("cryonet-small", num_classes=2, box_size=BOX)
    meta = ModelMetadata(class_names=["a", "b"], box_size=BOX, voxel_size=VOXEL)
    return save_checkpoint(path, net, "cryonet-small", {"num_classes": 2, "box_size": BOX}, meta)


@pytest.fixture()
def ckpt(tmp_path: Path) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    return _checkpoint(tmp_path / "ckpt.pt")


def test_export_refuses_an_out_folder_holding_another_networks_export(
    ckpt: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """An export of another checkpoint (or other test views) into the same folder wrote model.onnx
    over the first and left the first one's model.int8.onnx beside it, unlisted in the new
    export.json: a stale model deployed as new. The same checkpoint again (an engine built later
    into the folder the ONNX went to) is the same network and goes on."""
    parity = write_stack(tmp_path / "parity.mrcs", volumes(4), voxel_size=VOXEL)
    out = tmp_path / "deploy"
    args = ["-o", out, "--no-progress", "--parity-data", parity]
    code, _, err = run_cli(["export", ckpt, *args], capsys)
    assert code == 0, err
    stale = put(out / "model.int8.onnx", b"from an older export")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    other = Path(shutil.copy(ckpt, tmp_path / "other.pt"))
    with open(other, "ab") as fh:  # another file: another sha256
        fh.write(b"\0")
    line = assert_error(run_cli(["export", other, *args], capsys), out)
    assert "already holds another checkpoint's export (export.json, model.int8.onnx, model.onnx)" in line
    line = assert_error(run_cli(["export", ckpt, *args, "--test-views", 2], capsys), out)
    assert "an export with" in line and "test views" in line
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before and stale.is_file()
    code, _, err = run_cli(["export", ckpt, *args], capsys)
    assert code == 0, err


def test_a_run_folder_without_model_pt_names_its_epoch_checkpoints(
    ckpt: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """It said "RUN/model.pt: no such checkpoint (give ... a training run directory)", to a user who
    had given a training run directory."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    epoch = Path(shutil.copy(ckpt, run / "checkpoints" / "epoch_0002.pt"))
    data = tmp_path / "data"
    from cryoshift.runtime.dataset import write_dataset

    write_dataset(data, volumes(4), labels=[0, 1, 0, 1], class_names=["a", "b"], voxel_size=VOXEL)
    for argv in (["export", run, "-o", tmp_path / "o", "--no-progress"], ["evaluate", run, data]):
        line = assert_error(run_cli(argv, capsys), run)
        assert "holds no model.pt" in line and str(epoch) in line, line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("odd", ["voxel", "contrast"])
def test_int8_calibration_data_the_model_would_not_classify_is_refused(
    odd: str, ckpt: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """Calibration data of another voxel size or contrast was used as it was: the int8 model's
    activation ranges fitted data it will never see, and nothing said so."""
    from cryoshift.runtime.dataset import write_dataset

    if odd == "voxel":
        bad = named = write_stack(tmp_path / "cal.mrcs", volumes(12), voxel_size=2 * VOXEL)
        words = "voxel size 20 A differs from the model's 10 A"
    else:
        bad = write_dataset(tmp_path / "cal", volumes(12), voxel_size=VOXEL, contrast="light")
        named, words = bad / "dataset.json", "contrast is 'light' but the model expects 'dark'"
    out = tmp_path / "deploy"
    argv = ["export", ckpt, "-o", out, "--no-progress", "--int8", "--calibration", bad]
    assert words in assert_error(run_cli(argv, capsys), named)
    assert not out.exists()


@pytest.mark.parametrize("given", [False, True])
def test_int8_calibration_picks_in_tomograms_of_another_voxel_size_are_refused(
    given: bool, tmp_path: Path, capsys: Capsys
) -> None:
    """Picks (the run's picks target, or --calibration picks.csv) were cropped from their tomograms
    without a voxel-size check (crop_picks plans with ignore_voxel_size): 20 A tomograms calibrated
    a 10 A model. Refused in one line naming the tomogram, as MRC calibration data is."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from cryoshift.export.int8 import check_calibration_fits
    from cryoshift.runtime.metadata import ModelMetadata
    from cryoshift.runtime.mrc import write_volume
    from cryoshift.training.backbones import create_backbone
    from cryoshift.training.checkpoint import save_checkpoint

    rng = np.random.default_rng(0)
    data = rng.normal(size=(32, 48, 48)).astype(np.float32)
    coarse = write_volume(tmp_path / "TS_01.mrc", data, voxel_size=2 * VOXEL)
    picks = put(
        tmp_path / "picks.csv",
        "x,y,z\n" + "".join(f"{x},{y},16\n" for x in (12, 24, 36) for y in (12, 24, 36)),
    )
    meta = ModelMetadata(class_names=["a", "b"], box_size=BOX, voxel_size=VOXEL)
    net = create_backbone("cryonet-small", num_classes=2, box_size=BOX)
    config = {"target": str(picks), "tomograms": [str(coarse)]}
    ckpt = save_checkpoint(
        tmp_path / "ckpt.pt", net, "cryonet-small", {"num_classes": 2, "box_size": BOX}, meta, config=config
    )
    parity = write_stack(tmp_path / "parity.mrcs", volumes(4), voxel_size=VOXEL)
    out = tmp_path / "deploy"
    argv = ["export", ckpt, "-o", out, "--no-progress", "--int8", "--parity-data", parity]
    line = assert_error(run_cli([*argv, *(["--calibration", picks] if given else [])], capsys), coarse)
    assert "calibration data voxel size 20 A differs from the model's 10 A" in line
    assert not out.exists()
    (tmp_path / "fine").mkdir()
    fine = write_volume(tmp_path / "fine" / "TS_01.mrc", data, voxel_size=VOXEL)
    check_calibration_fits(picks, meta, [str(fine)])  # tomograms of the model's voxel size pass


def test_evaluate_refuses_odd_options_before_any_work(
    model: Path, dataset: Path, ckpt: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """Before: --device banana / cuda (no GPU) were torch tracebacks, --device cuda of an ONNX model
    was ignored, --out FILE said "File exists"
    after scoring, --batch-size 0 of a checkpoint was a range() traceback, and --run FILE or a
    folder with no epoch checkpoints, --label-column and --tomograms with a dataset directory were
    accepted and ignored."""
    pytest.importorskip("matplotlib")
    torch = pytest.importorskip("torch")
    from cryoshift.runtime.dataset import write_dataset

    data_ab = write_dataset(
        tmp_path / "ab", volumes(4), labels=[0, 1, 0, 1], class_names=["a", "b"], voxel_size=VOXEL
    )
    afile = put(tmp_path / "afile", "x")
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "ev"
    cases: list[tuple[list[object], object, str]] = [
        ([ckpt, data_ab, "--device", "banana"], "--device", "not 'banana'"),
        ([model, dataset, "--device", "banana"], "--device", "not 'banana'"),
        ([ckpt, data_ab, "--batch-size", "0"], "--batch-size", "at least 1"),
        ([model, dataset, "--batch-size", "-1"], "--batch-size", "at least 1"),
        ([model, dataset, "--out", afile], afile, "not a folder"),
        ([model, dataset, "--run", afile], afile, "not a folder"),
        ([model, dataset, "--run", empty], empty, "no epoch checkpoints"),
        (
            [model, dataset, "--label-column", "kind"],
            dataset,
            "--label-column only applies to labelled picks",
        ),
        ([model, dataset, "-t", afile], dataset, "--tomograms only applies to labelled picks"),
    ]
    if not torch.cuda.is_available():
        cases.append(([ckpt, data_ab, "--device", "cuda"], "--device cuda", "no CUDA GPU"))
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        # was accepted and the ONNX model scored on the CPU without a word
        cases.append(([model, dataset, "--device", "cuda:0"], model, "CUDA"))
    for extra, name, words in cases:
        argv = ["evaluate", *extra] if "--out" in extra else ["evaluate", *extra, "--out", out]
        line = assert_error(run_cli(argv, capsys), name)
        assert words in line, line
        assert not out.exists()


def test_bench_json_never_overwrites_the_model(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    """`bench model.onnx --json model.onnx` timed for minutes, then wrote the figures over the model."""
    mine = Path(shutil.copy(model, tmp_path / "model.onnx"))
    original = mine.read_bytes()
    other = put(tmp_path / "notes.json", '{"mine": 1}')
    args = ["bench", mine, "--backend", "cpu", "--n", "2", "--repeats", "1", "--threads", "1", "--json"]
    for target in (mine, other):
        assert "not an earlier bench result" in assert_error(run_cli([*args, target], capsys), target)
    assert mine.read_bytes() == original and other.read_text() == '{"mine": 1}'


@pytest.mark.parametrize(
    ("options", "words"),
    [
        # within the options' ranges (test_bench_and_sidecar_bounds.py), beyond the memory
        (["--box", 512], "--n 256 at --box 512 needs"),
        (["--n", 100_000, "--box", 256], "--n 100000 at --box 256 needs"),
    ],
)
def test_bench_refuses_batches_and_data_larger_than_memory_before_allocating(
    options: list[object],
    words: str,
    model: Path,
    capsys: Capsys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`bench --batch-size 1000000000` (or a --box of 4000; both now out of their ranges) asked
    numpy for terabytes; sizes a few
    times the RAM passed the kernel's overcommit and died in the OOM killer ("Killed", no reason,
    perhaps with other jobs of the node). Refused in one line, before the model is even loaded."""
    from cryoshift.runtime import backends
    from cryoshift.runtime.hostmem import available_memory

    if available_memory() is None:
        pytest.skip("no way to read the available memory here")

    def no_loading(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the memory check")

    monkeypatch.setattr(backends, "load_model", no_loading)
    argv = ["bench", model, "--backend", "cpu", "--n", 256, "--repeats", 1, "--threads", 1, *options]
    line = assert_error(run_cli(argv, capsys), str(options[0]))
    assert words in line and "of host memory" in line and "is available; lower " in line, line


def test_bench_memory_check_names_the_step_that_does_not_fit() -> None:
    """The pipeline's batch buffers (a --box larger than the model's) and a bench that fits."""
    from cryoshift.runtime.bench import bench_memory, check_bench_memory
    from cryoshift.runtime.errors import InputError

    need = bench_memory(10_000, 16, 64, 256, 2)
    assert need["buffers"] == 10_000 * 64**3 * 4 > max(need["inference"], need["data"])
    with pytest.raises(InputError, match=r"^--batch-size 10000 at --box 64 needs 9\.8 GiB .* batch buffers"):
        check_bench_memory(10_000, 16, 64, 256, 2, available=2**30)
    check_bench_memory(10_000, 16, 64, 256, 2, available=need["buffers"])  # fits exactly: no refusal


@pytest.mark.parametrize("verb", ["classify", "bench"])
def test_threads_above_the_cpu_count_are_lowered_to_it(
    verb: str, model: Path, tmp_path: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--threads 100000` asked onnxruntime for 100000 intra-op threads: a segfault under a memory
    ulimit. More threads than CPUs are lowered to the CPU count, with a note. The CPU count is made
    1 here, so that the old code started 3 threads (a failed assertion, not a crashed test run)."""
    import os

    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    if verb == "classify":
        stack = write_stack(tmp_path / "s.mrcs", volumes(2), voxel_size=VOXEL)
        argv = ["classify", model, stack, "-o", tmp_path / "out", "-b", "cpu", "--threads", 3]
    else:
        argv = ["bench", model, "--backend", "cpu", "--n", 2, "--repeats", 1, "--threads", 3]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    note = "cryoshift: note: --threads 3 is above the CPU count (1); using 1 threads"
    assert err.splitlines().count(note) == 1, err
    assert "1 threads)" in out + err and "3 threads" not in out + err  # the backend line says so too


def test_session_options_never_ask_for_more_threads_than_cpus() -> None:
    """The onnxruntime session options themselves (every CPU session is made from them)."""

    from cryoshift.runtime.backends import _ort, _session_options
    from cryoshift.runtime.hostmem import usable_cpus

    ort = _ort()
    assert _session_options(ort, 100_000).intra_op_num_threads == usable_cpus()
    assert _session_options(ort, 1).intra_op_num_threads == 1
    assert _session_options(ort, None).intra_op_num_threads == 0  # onnxruntime's own: all cores


def test_info_says_what_a_cryoshift_folder_or_checkpoint_is(tmp_path: Path, capsys: Capsys) -> None:
    """A run, export or results folder was "not a cryoshift dataset ... give a file instead" and a
    checkpoint "a zip archive (NumPy .npz or similar)": info now names them and the file to give."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    put(run / "config.json", "{}")
    export = tmp_path / "deploy"
    export.mkdir()
    put(export / "model.onnx", b"x")
    results = tmp_path / "results"
    results.mkdir()
    put(results / "predictions.csv", "id\n")
    ckpt = put(tmp_path / "model.pt", b"PK\x03\x04" + bytes(100))
    for path, words in (
        (run, "is a training run directory"),
        (export, f"is an export folder; give its model: {export / 'model.onnx'}"),
        (results, f"is a classify results folder; give its table ({results / 'predictions.csv'})"),
        (ckpt, "is a PyTorch checkpoint"),
    ):
        assert words in assert_error(run_cli(["info", path], capsys), path)
        code, out, _ = run_cli(["info", "--validate", path], capsys)
        assert code == 1 and words in out
