"""Findings of the hostile2 report about classify runs: a volume replaced under its name between a
run and its --resume, a --batch-size far above the item count, --devices on a CPU-only machine, an
ONNX graph with an extra input or a newer opset, and evaluate's advice for a missing CUDA provider."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hostile_inputs import VOXEL, Capsys, assert_error, predictions, run_cli, volumes

from cryoshift.runtime.mrc import write_volume


def _folder(tmp_path: Path, n: int = 2) -> Path:
    folder = tmp_path / "vols"
    folder.mkdir()
    for i, vol in enumerate(volumes(n, seed=4)):
        write_volume(folder / f"v{i}.mrc", vol, voxel_size=VOXEL)
    return folder


def _has_cuda() -> bool:
    from cryoshift.runtime.backends import available_backends

    return "cuda" in available_backends()


# ---------------------------------------------------------------------------------------------
# #1: --resume after a single volume's content changed kept its old row (exit 0, no note)


def test_resume_refuses_a_volume_replaced_under_its_name(tmp_path: Path, capsys: Capsys, model: Path) -> None:
    folder = _folder(tmp_path)
    out = tmp_path / "out"
    assert run_cli(["classify", model, folder, "-o", out, "-q", "-b", "cpu"], capsys)[0] == 0
    before = predictions(out)
    changed = folder / "v0.mrc"
    stamp = changed.stat().st_mtime_ns
    write_volume(changed, volumes(1, seed=99)[0] * 3.0, voxel_size=VOXEL)  # other data, same size
    os.utime(changed, ns=(stamp + 5_000_000_000, stamp + 5_000_000_000))  # a later copy
    line = assert_error(
        run_cli(["classify", model, folder, "-o", out, "-q", "-b", "cpu", "--resume"], capsys), changed
    )
    assert "changed since this run started" in line and "-o" in line
    assert predictions(out).equals(before)  # nothing appended or rewritten


def test_resume_of_unchanged_volumes_still_works(tmp_path: Path, capsys: Capsys, model: Path) -> None:
    folder = _folder(tmp_path)
    out = tmp_path / "out"
    assert run_cli(["classify", model, folder, "-o", out, "-q", "-b", "cpu"], capsys)[0] == 0
    code, _, err = run_cli(["classify", model, folder, "-o", out, "-q", "-b", "cpu", "--resume"], capsys)
    assert code == 0, err


def test_resume_of_a_run_recorded_without_volume_stamps(tmp_path: Path, capsys: Capsys, model: Path) -> None:
    """A run.json of an older cryoshift stamped only tomograms and stacks: it still resumes."""
    folder = _folder(tmp_path)
    out = tmp_path / "out"
    assert run_cli(["classify", model, folder, "-o", out, "-q", "-b", "cpu"], capsys)[0] == 0
    record = json.loads((out / "run.json").read_text())
    planned = record["settings"]["planned_inputs"]
    assert any(p.endswith("v0.mrc") for p in planned["volumes"])  # the new stamp is recorded
    del planned["volumes"]
    (out / "run.json").write_text(json.dumps(record))
    code, _, err = run_cli(["classify", model, folder, "-o", out, "-q", "-b", "cpu", "--resume"], capsys)
    assert code == 0, err


def test_a_failed_volume_fixed_since_is_retried_not_refused(
    tmp_path: Path, capsys: Capsys, model: Path
) -> None:
    """Only a volume with a result row counts as stale: one that failed (an error row) and was
    fixed since is what --resume --retry-errors is for."""
    folder = _folder(tmp_path)
    broken = folder / "v2.mrc"
    broken.write_bytes(b"not an MRC file at all")
    out = tmp_path / "out"
    assert run_cli(["classify", model, folder, "-o", out, "-q", "-b", "cpu"], capsys)[0] == 0
    assert len(predictions(out)) == 2
    write_volume(broken, volumes(1, seed=7)[0], voxel_size=VOXEL)
    argv = ["classify", model, folder, "-o", out, "-q", "-b", "cpu", "--resume", "--retry-errors"]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    assert len(predictions(out)) == 3
    code, _, err = run_cli(argv, capsys)  # its stamp is now the fixed file's
    assert code == 0, err


# ---------------------------------------------------------------------------------------------
# #6: --batch-size far above the item count asked for TiBs of buffers, exit 1, a folder left


def test_batch_size_far_above_the_items_is_capped(tmp_path: Path, capsys: Capsys, model: Path) -> None:
    folder = _folder(tmp_path)
    out = tmp_path / "out"
    code, _, err = run_cli(
        ["classify", model, folder, "-o", out, "-q", "-b", "cpu", "--batch-size", 100_000_000], capsys
    )
    assert code == 0, err
    assert len(predictions(out)) == 2


def test_buffers_beyond_memory_are_refused_naming_batch_size(model: Path) -> None:
    from cryoshift.runtime.backends import load_model
    from cryoshift.runtime.errors import InputError
    from cryoshift.runtime.hostmem import available_memory
    from cryoshift.runtime.pipeline import check_buffer_memory

    if available_memory() is None:
        pytest.skip("free memory unknown here: nothing is refused")
    loaded = load_model(model, "cpu", batch_size=100_000_000)
    with pytest.raises(InputError, match="--batch-size 100000000"):
        check_buffer_memory(loaded, 100_000_000, 10**12, 2)
    check_buffer_memory(loaded, 100_000_000, 2, 2)  # two items: one small batch


# ---------------------------------------------------------------------------------------------
# #7: --devices -1 or a GPU id on a CPU-only machine ran on the CPU without a word


def test_negative_device_is_refused(tmp_path: Path, capsys: Capsys, model: Path) -> None:
    folder = _folder(tmp_path)
    out = tmp_path / "out"
    argv = ["classify", model, folder, "-o", out, "--devices", "-1"]
    line = assert_error(run_cli(argv, capsys), "--devices")
    assert "-1" in line
    assert not out.exists()


@pytest.mark.skipif(_has_cuda(), reason="a CUDA-capable onnxruntime may run GPU 7")
def test_gpu_device_on_a_cpu_only_install_is_noted(tmp_path: Path, capsys: Capsys, model: Path) -> None:
    folder = _folder(tmp_path)
    out = tmp_path / "out"
    code, said, err = run_cli(["classify", model, folder, "-o", out, "--devices", "7"], capsys)
    assert code == 0, err
    notes = (said + err).splitlines()  # the summary's notes
    assert any("--devices 7" in ln and "ran on the CPU" in ln for ln in notes), said + err


# ---------------------------------------------------------------------------------------------
# #9: a graph with an extra input failed at the first batch, leaving an output folder


def test_graph_with_an_extra_input_is_refused_at_load(tmp_path: Path, capsys: Capsys, model: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    m = onnx.load(str(model))
    m.graph.input.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, [1]))
    two = tmp_path / "two_inputs.onnx"
    onnx.save(m, str(two))
    vol = write_volume(tmp_path / "v.mrc", volumes(1)[0], voxel_size=VOXEL)
    out = tmp_path / "out"
    line = assert_error(run_cli(["classify", two, vol, "-o", out, "-q", "-b", "cpu"], capsys), two)
    assert "2 inputs" in line and "'extra'" in line
    assert not out.exists()


@pytest.mark.parametrize("field", ["opset", "ir"])
def test_a_model_newer_than_onnxruntime_is_named_so(
    tmp_path: Path, capsys: Capsys, model: Path, field: str
) -> None:
    """#16: an opset or IR version this onnxruntime cannot read gave its C++ text (a header file's
    path and template arguments); one line now says which version the model needs and the remedy."""
    import onnx

    m = onnx.load(str(model))
    if field == "opset":
        m.opset_import[0].version = 99
    else:
        m.ir_version = 99
    newer = tmp_path / f"{field}99.onnx"
    onnx.save(m, str(newer))
    vol = write_volume(tmp_path / "v.mrc", volumes(1)[0], voxel_size=VOXEL)
    line = assert_error(
        run_cli(["classify", newer, vol, "-o", tmp_path / "out", "-q", "-b", "cpu"], capsys), newer
    )
    assert "newer than this onnxruntime" in line and "99" in line and ".h:" not in line


# ---------------------------------------------------------------------------------------------
# #17: evaluate --device cuda:N without onnxruntime's CUDA provider advised classify's --backend


@pytest.mark.skipif(_has_cuda(), reason="a CUDA-capable onnxruntime is installed")
def test_evaluate_cuda_without_provider_advises_device_cpu(
    tmp_path: Path, capsys: Capsys, model: Path, dataset: Path
) -> None:
    out = tmp_path / "ev"
    line = assert_error(
        run_cli(["evaluate", model, dataset, "--device", "cuda:7", "--out", out], capsys), model
    )
    assert "--device cpu" in line and "--backend" not in line


def test_subnormal_volume_is_an_error_row(tmp_path: Path, capsys: Capsys, model: Path) -> None:
    """#13: a volume scaled into float32 subnormals (1e-40) was classified with no word; it is an
    error row now, and the good volume beside it is classified."""
    import numpy as np

    folder = tmp_path / "vols"
    folder.mkdir()
    good, tiny = volumes(2, seed=5)
    write_volume(folder / "good.mrc", good, voxel_size=VOXEL)
    write_volume(folder / "tiny.mrc", (tiny * np.float32(1e-40)).astype(np.float32), voxel_size=VOXEL)
    out = tmp_path / "out"
    run_cli(["classify", model, folder, "-o", out, "-q", "-b", "cpu"], capsys)
    assert len(predictions(out)) == 1
    errors = (out / "errors.csv").read_text()
    assert "tiny.mrc" in errors and "subnormals" in errors
