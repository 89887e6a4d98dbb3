"""fp16 and int8 Q/DQ ONNX, derived from the fp32 export and checked on ONNX Runtime CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from cryoshift.export.fp16 import export_fp16, preprocessing_nodes
from cryoshift.export.int8 import export_int8_onnx
from cryoshift.export.onnx import ExportWrapper, torch_reference
from cryoshift.runtime.metadata import read_onnx_metadata


@pytest.fixture(scope="module")
def reference(exported, tiny_model, parity_volumes) -> np.ndarray:
    _, meta, _ = exported
    return torch_reference(ExportWrapper(tiny_model, meta.normalisation), parity_volumes)[0]


def _float_types(model: onnx.ModelProto) -> set[int]:
    return {i.data_type for i in model.graph.initializer}


def test_fp16_loads_and_agrees_on_cpu(exported, parity_volumes, reference, tmp_path: Path) -> None:
    _, _, path = exported
    meta = read_onnx_metadata(path)
    result = export_fp16(path, tmp_path / "model.fp16.onnx", meta, parity_volumes, reference, "blobs")
    assert result.format == "fp16" and result.size_bytes < path.stat().st_size
    assert result.parity is not None and result.parity.passed and result.parity.argmax_agreement >= 0.98
    half = onnx.load(str(result.path))
    assert onnx.TensorProto.FLOAT16 in _float_types(half)
    # fp32 at the interface: the runtime feeds raw float32 voxels and reads float32 outputs.
    assert half.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in half.graph.output)
    assert read_onnx_metadata(result.path).precision == "fp16"
    # Normalisation stays fp32: raw intensities whose squares overflow fp16 (65504) still classify.
    sess16 = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    sess32 = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    big = parity_volumes[:8, None] * 20.0 + 20000.0
    lo16 = sess16.run(["logits"], {"subtomograms": big})[0]
    lo32 = sess32.run(["logits"], {"subtomograms": big})[0]
    assert np.isfinite(lo16).all()
    assert (lo16.argmax(1) == lo32.argmax(1)).all()
    for batch in (1, 7):
        assert sess16.run(["logits"], {"subtomograms": parity_volumes[:batch, None]})[0].shape == (batch, 2)


def test_preprocessing_prefix_found(exported) -> None:
    _, _, path = exported
    model = onnx.load(str(path))
    names = set(preprocessing_nodes(model))
    ops = [n.op_type for n in model.graph.node if n.name in names]
    assert "ReduceMean" in ops and "Conv" not in ops and "Gemm" not in ops


def test_int8_qdq_runs_on_cpu(exported, parity_volumes, reference, make_blobs, tmp_path: Path) -> None:
    _, _, path = exported
    meta = read_onnx_metadata(path)
    calibration = make_blobs(32, seed=11, offset=300.0, scale=40.0)[0]
    result = export_int8_onnx(
        path,
        tmp_path / "model.int8.onnx",
        meta,
        calibration,
        parity_volumes,
        reference,
        "blobs",
        "calibration blobs",
    )
    assert result.parity is not None and result.parity.passed
    assert result.parity.argmax_agreement >= 0.9
    q = onnx.load(str(result.path))
    ops = [n.op_type for n in q.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    assert onnx.TensorProto.INT8 in _float_types(q)  # weights stored as int8
    back = read_onnx_metadata(result.path)
    assert back.precision == "int8" and back.extra["int8_calibration_n"] == 32
    sess = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    for batch in (1, 7):
        assert sess.run(["logits"], {"subtomograms": parity_volumes[:batch, None]})[0].shape == (batch, 2)


def test_int8_needs_enough_calibration(exported, parity_volumes, reference, tmp_path: Path) -> None:
    _, _, path = exported
    with pytest.raises(ValueError, match="at least 8"):
        export_int8_onnx(
            path, tmp_path / "x.onnx", read_onnx_metadata(path), parity_volumes[:3], parity_volumes, reference
        )


def test_pose_normalised_model_exports_with_parity_in_fp32_fp16_and_int8(
    canonical_model, parity_volumes, make_blobs, metadata, tmp_path: Path
) -> None:
    """The pose normalisation (blur, moments, Jacobi, gathers) runs inside the graph as in PyTorch,
    and the derived formats keep it fp32 and unquantised: a frame read from fp16 or int8 moments
    would rotate the particle elsewhere."""
    from cryoshift.export import export_model

    meta = metadata
    path = tmp_path / "model.onnx"
    result = export_model(canonical_model, meta, path, parity_volumes=parity_volumes)
    assert result.parity is not None and result.parity.passed and result.parity.argmax_agreement == 1.0
    model = onnx.load(str(path))
    prefix = [n.op_type for n in model.graph.node if n.name in set(preprocessing_nodes(model))]
    assert "MatMul" in prefix and "GatherElements" in prefix and "Conv" not in prefix
    reference = torch_reference(ExportWrapper(canonical_model, meta.normalisation), parity_volumes)[0]
    half = export_fp16(path, tmp_path / "model.fp16.onnx", meta, parity_volumes, reference, "blobs")
    assert half.parity is not None and half.parity.passed and half.parity.argmax_agreement >= 0.95
    calibration = make_blobs(32, seed=11, offset=300.0, scale=40.0)[0]
    int8 = export_int8_onnx(
        path, tmp_path / "model.int8.onnx", meta, calibration, parity_volumes, reference, "blobs", "blobs"
    )
    assert int8.parity is not None and int8.parity.passed and int8.parity.argmax_agreement >= 0.9


def test_antialiased_model_exports_with_its_filter_in_fp32(
    antialias_model, parity_volumes, metadata, tmp_path: Path
) -> None:
    """The fixed low-pass of antialias=true runs inside the graph (MatMul nodes before the first
    convolution) with fp32 parity, and the fp16 export keeps it in fp32."""
    from cryoshift.export import export_model

    model = antialias_model
    path = tmp_path / "model.onnx"
    result = export_model(model, metadata, path, parity_volumes=parity_volumes)
    assert result.parity is not None and result.parity.passed and result.parity.argmax_agreement == 1.0
    graph = onnx.load(str(path))
    prefix = [n.op_type for n in graph.graph.node if n.name in set(preprocessing_nodes(graph))]
    assert prefix.count("MatMul") == 3 and "Conv" not in prefix
    reference = torch_reference(ExportWrapper(model, metadata.normalisation), parity_volumes)[0]
    half = export_fp16(path, tmp_path / "model.fp16.onnx", metadata, parity_volumes, reference, "blobs")
    assert half.parity is not None and half.parity.passed and half.parity.argmax_agreement >= 0.95
