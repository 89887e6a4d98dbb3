"""Engine sidecars: written with the model metadata and engine identity, mismatches refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cryoshift.runtime.engine_sidecar import (
    check_engine_compatible,
    read_engine_sidecar,
    sidecar_path,
    verify_engine_file,
    write_engine_sidecar,
)
from cryoshift.runtime.errors import InputError
from cryoshift.runtime.metadata import ModelMetadata


@pytest.fixture
def engine(tmp_path: Path, metadata: ModelMetadata) -> Path:
    onnx_file = tmp_path / "model.fp16.onnx"
    onnx_file.write_bytes(b"not really onnx, but hashed all the same")
    engine = tmp_path / "model.fp16.engine"
    engine.write_bytes(b"\x00serialised engine bytes")
    meta = ModelMetadata(**{**metadata.to_dict(), "precision": "fp16"})
    write_engine_sidecar(engine, meta, "NVIDIA H100 80GB HBM3", "11.0.0.12", onnx_file, (1, 256, 256))
    return engine


def test_round_trip(engine: Path, metadata: ModelMetadata) -> None:
    assert sidecar_path(engine).name == "model.fp16.engine.json"
    side = read_engine_sidecar(engine)
    assert side == read_engine_sidecar(sidecar_path(engine))
    assert side.path == engine
    assert side.metadata.class_names == metadata.class_names and side.metadata.precision == "fp16"
    assert side.gpu_name == "NVIDIA H100 80GB HBM3" and side.tensorrt_version == "11.0.0.12"
    assert (side.batch_min, side.batch_opt, side.batch_max) == (1, 256, 256)
    assert len(side.onnx_sha256) == 64 and side.onnx_file == "model.fp16.onnx"
    # Same schema as the ONNX metadata: the generic metadata reader accepts the sidecar.
    assert ModelMetadata.read_json(sidecar_path(engine)).feature_mean == metadata.feature_mean
    check_engine_compatible(side, "nvidia h100 80gb hbm3", "11.0.0")  # build number may differ
    verify_engine_file(side)


@pytest.mark.parametrize(
    ("gpu", "trt", "words"),
    [
        ("NVIDIA A100-SXM4-40GB", "11.0.0.12", ["GPU 'NVIDIA H100 80GB HBM3'", "A100"]),
        ("NVIDIA H100 80GB HBM3", "10.13.0.35", ["TensorRT 11.0.0.12", "10.13.0.35"]),
        ("Tesla T4", "10.8.0", ["GPU", "TensorRT"]),
    ],
)
def test_mismatch_refused(engine: Path, gpu: str, trt: str, words: list[str]) -> None:
    side = read_engine_sidecar(engine)
    with pytest.raises(InputError) as info:
        check_engine_compatible(side, gpu, trt)
    message = str(info.value)
    assert message.startswith(str(engine)) and "\n" not in message
    assert "rebuild" in message and "model.fp16.onnx" in message
    for word in words:
        assert word in message


def test_tampered_engine_and_bad_sidecars(engine: Path, tmp_path: Path) -> None:
    side = read_engine_sidecar(engine)
    engine.write_bytes(b"something else")
    with pytest.raises(InputError, match="sha256"):
        verify_engine_file(side)
    with pytest.raises(InputError, match="no sidecar"):
        read_engine_sidecar(tmp_path / "other.engine")
    bad = tmp_path / "bad.engine.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not a readable engine sidecar"):
        read_engine_sidecar(bad)
    data = json.loads(sidecar_path(engine).read_text())
    del data["engine"]["tensorrt_version"]
    sidecar_path(engine).write_text(json.dumps(data))
    with pytest.raises(InputError, match="lacks tensorrt_version"):
        read_engine_sidecar(engine)
    data["engine"]["format"] = "something/2"
    sidecar_path(engine).write_text(json.dumps(data))
    with pytest.raises(InputError, match="not a cryoshift engine sidecar"):
        read_engine_sidecar(engine)
