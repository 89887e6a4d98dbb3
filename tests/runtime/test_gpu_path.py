"""The GPU fast path's pieces, exercised on the CPU: device slots through IO binding, the fp16
transfer graph, host buffers, crops by gather, reader sizing. (A GPU run is benchmarks/gpu_check.py.)"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cryoshift.runtime import classify
from cryoshift.runtime.backends import load_model
from cryoshift.runtime.crop import crop_box
from cryoshift.runtime.gather import crop_reference, device_crop_unavailable, nearest_voxels, valid_centres
from cryoshift.runtime.mrc import write_stack
from cryoshift.runtime.readers import reader_workers
from cryoshift.runtime.transfer import HostAllocator, fp16_input_model, transfer_parity

from .conftest import make_volumes


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("gpu_path") / "stack.mrcs"
    vols = make_volumes(40)
    vols[7] *= 1e5  # beyond float16: an error row with --transfer fp16 only
    write_stack(path, vols, voxel_size=10.0)
    return str(path)


def _rows(out) -> pd.DataFrame:
    return pd.read_csv(out / "predictions.csv").sort_values("id").reset_index(drop=True)


def test_two_slots_match_plain_cpu(model_path, stack, tmp_path) -> None:
    plain = classify(
        load_model(model_path, "cpu", batch_size=8), [stack], tmp_path / "a", batch_size=8, progress=False
    )
    staged_model = load_model(model_path, "cpu", batch_size=8, slots=2)
    assert staged_model.slots == 2 and staged_model.fixed_batch
    staged = classify(staged_model, [stack], tmp_path / "b", batch_size=8, progress=False, workers=2)
    assert plain.classified == staged.classified == 40
    a, b = _rows(tmp_path / "a"), _rows(tmp_path / "b")
    assert (a.best_class == b.best_class).all()
    np.testing.assert_array_equal(a.confidence.to_numpy(), b.confidence.to_numpy())


def test_fp16_transfer_agrees_and_refuses_out_of_range(model_path, stack, tmp_path) -> None:
    model = load_model(model_path, "cpu", batch_size=8, slots=2, transfer="fp16")
    assert model.input_dtype == np.float16
    summary = classify(model, [stack], tmp_path / "h", batch_size=8, progress=False)
    assert summary.classified == 39 and summary.errors == 1
    errors = pd.read_csv(tmp_path / "h" / "errors.csv")
    assert "float16" in errors.reason.iloc[0] and errors.id.iloc[0].startswith("000008@")
    reference = load_model(model_path, "cpu", batch_size=8)
    parity = transfer_parity(model, reference, make_volumes(16)[:, None])
    assert parity.passed and parity.argmax_agreement == 1.0 and parity.max_abs_dlogit < 1e-2


def test_fp16_graph_edit_is_idempotent(model_path) -> None:
    import onnxruntime as ort

    edited = fp16_input_model(model_path.read_bytes())
    assert fp16_input_model(edited) == edited
    sess = ort.InferenceSession(edited, providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].type == "tensor(float16)"
    assert "cryoshift.class_names" in sess.get_modelmeta().custom_metadata_map


def test_host_allocator_falls_back_to_numpy() -> None:
    alloc = HostAllocator(pinned=False)
    buf = alloc.empty((2, 1, 4, 4, 4), np.float16)
    assert buf.dtype == np.float16 and not buf.any() and alloc.kind == "pageable"


def test_gather_matches_crop_box_bit_for_bit() -> None:
    rng = np.random.default_rng(3)
    tomo = rng.normal(5, 2, (23, 31, 37)).astype(np.float32)
    box = 8
    # Interior, edges, corners, halves (rounding), one outside.
    centers = np.concatenate(
        [
            rng.uniform(-0.4, [36.4, 30.4, 22.4], (60, 3)),
            [[0, 0, 0], [36, 30, 22], [10.5, -0.5, 22.49], [3.5, 4.5, 5.5], [40, 1, 1]],
        ]
    )
    centres = nearest_voxels(centers)
    ok = valid_centres(centres, tomo.shape)
    assert not ok[-1] and ok[:-1].all()
    crops = crop_reference(tomo, centers[ok], box)
    for got, c in zip(crops, centers[ok], strict=True):
        want, _ = crop_box(tomo, c, box)
        np.testing.assert_array_equal(got, want)


def test_gather_int16_tomogram() -> None:
    tomo = np.arange(12 * 12 * 12, dtype=np.int16).reshape(12, 12, 12)
    centers = np.array([[1.0, 2.0, 3.0], [6.0, 6.0, 6.0], [11.0, 11.0, 0.0]])
    for got, c in zip(crop_reference(tomo, centers, 6), centers, strict=True):
        np.testing.assert_array_equal(got, crop_box(tomo, c, 6)[0])


def test_device_crop_says_why_not() -> None:
    reason = device_crop_unavailable()
    assert reason is None or isinstance(reason, str)


def test_reader_sizing() -> None:
    # CPU inference at a few hundred per second: one reader.
    assert reader_workers(300, "stack", cores=16) == 1
    # TensorRT fp16 at 1M/s from a stack: the bus binds (~380k/s fp32), capped by the cores.
    assert reader_workers(1e6, "stack", cores=16) == 15
    assert reader_workers(1e6, "stack", cores=64) == 20  # ceil(1.25 * 381_470 / 25_000)
    assert reader_workers(1e6, "stack", itemsize=2, cores=64) == 39  # fp16 halves the bytes
    assert reader_workers(50_000, "tomogram", cores=64) == 6  # ceil(1.25 * 50_000 / 12_000)
    assert reader_workers(50_000, "tomogram", box=64, cores=64) == 40  # bus ~47.7k/s, 1.5k/s per reader


def test_classify_fp16_transfer_records_parity(model_path, stack, tmp_path) -> None:
    import json

    summary = classify(
        str(model_path),
        [stack],
        tmp_path / "m",
        backend="cpu",
        batch_size=8,
        workers=0,
        transfer="fp16",
        progress=False,
    )
    assert summary.classified == 39
    settings = json.loads((tmp_path / "m" / "manifest.json").read_text())["settings"]
    assert settings["transfer"] == "fp16" and settings["workers"] == 1
    parity = settings["transfer_parity"]
    assert parity["checked"] and parity["passed"] and parity["items"] == 39
    assert parity["argmax_agreement"] == 1.0 and 0 <= parity["max_abs_dlogit"] < 1e-2
