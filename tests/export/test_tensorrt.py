"""TensorRT engines: built and checked where a GPU and TensorRT exist, a clear skip everywhere else."""

from __future__ import annotations

from pathlib import Path

import pytest

from cryoshift.export.formats import FORMATS, artefact_name, get_format, select_formats
from cryoshift.export.tensorrt import batch_profile, tensorrt_unavailable
from cryoshift.runtime.errors import InputError

REASON = tensorrt_unavailable()


def test_unavailable_reason_is_one_clear_line() -> None:
    if REASON is None:
        pytest.skip("TensorRT and a GPU are present")
    assert "\n" not in REASON and ("TensorRT" in REASON or "GPU" in REASON)


def test_formats_table_drives_names_and_validation() -> None:
    assert FORMATS["tensorrt"].needs_gpu and not FORMATS["fp16"].needs_gpu
    assert artefact_name("onnx") == "model.onnx"
    assert artefact_name("tensorrt", "fp16") == "model.fp16.engine"
    assert artefact_name("tensorrt", "fp32") == "model.engine"
    assert select_formats(fp16=True, tensorrt=True) == ["onnx", "fp16", "tensorrt"]
    with pytest.raises(ValueError, match="Did you mean 'tensorrt'"):
        get_format("tensorrtt")
    with pytest.raises(InputError, match="only applies to --int8"):
        select_formats(calibration="data/exp")
    assert batch_profile(64) == (1, 64, 64)
    with pytest.raises(ValueError):
        batch_profile(0)


@pytest.mark.gpu
@pytest.mark.skipif(REASON is not None, reason=f"TensorRT engine build needs a GPU: {REASON}")
def test_build_fp32_and_fp16_engines(exported, tiny_model, parity_volumes, tmp_path: Path) -> None:
    import tensorrt as trt

    from cryoshift.export.fp16 import export_fp16
    from cryoshift.export.onnx import ExportWrapper, torch_reference
    from cryoshift.export.tensorrt import TIMING_CACHE, export_tensorrt
    from cryoshift.runtime.engine_sidecar import check_engine_compatible, query_gpu_name, read_engine_sidecar
    from cryoshift.runtime.metadata import read_onnx_metadata

    _, _, path = exported
    meta = read_onnx_metadata(path)
    reference = torch_reference(ExportWrapper(tiny_model, meta.normalisation), parity_volumes)[0]
    half = export_fp16(path, tmp_path / "model.fp16.onnx", meta, parity_volumes, reference)
    for onnx_path, precision in ((path, "fp32"), (half.path, "fp16")):
        engine = tmp_path / artefact_name("tensorrt", precision)
        meta.precision = precision
        result = export_tensorrt(onnx_path, engine, meta, 32, parity_volumes, reference, "blobs")
        assert engine.is_file() and result.size_bytes > 0
        if result.parity is not None:
            assert result.parity.passed, result.parity.summary()
        side = read_engine_sidecar(engine)
        assert side.precision == precision and side.batch_max == 32
        check_engine_compatible(side, query_gpu_name() or "", trt.__version__)
        with pytest.raises(InputError):
            check_engine_compatible(side, "Some Other GPU", trt.__version__)
    assert (tmp_path / TIMING_CACHE).is_file()
