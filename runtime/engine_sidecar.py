"""The JSON sidecar of a TensorRT engine, and the check that an engine fits this machine.

A serialised TensorRT engine only runs on the GPU model and TensorRT version that built it;
loading it elsewhere fails deep inside TensorRT or, worse, runs with wrong tactics. The export
wing writes ``model.engine.json`` next to ``model.engine``: the model metadata (the same fields as
the ONNX ``metadata_props``, so :meth:`ModelMetadata.read_json` reads it too) plus an ``engine``
block naming the GPU, the TensorRT version, the batch profile and the SHA-256 of the ONNX it was
built from. The runtime reads it with :func:`read_engine_sidecar` and refuses a mismatch with
:func:`check_engine_compatible` before TensorRT ever sees the file. numpy-free even: stdlib only.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryoshift.runtime.errors import InputError
from cryoshift.runtime.jsonfile import read_json_object
from cryoshift.runtime.metadata import ModelMetadata

SIDECAR_FORMAT = "cryoshift.engine/1"
SIDECAR_SUFFIX = ".json"  # model.engine -> model.engine.json


@dataclass
class EngineSidecar:
    """What an engine was built from and for."""

    path: Path  # the engine file
    metadata: ModelMetadata
    gpu_name: str
    tensorrt_version: str
    onnx_sha256: str
    engine_sha256: str
    precision: str
    batch_min: int
    batch_opt: int
    batch_max: int
    onnx_file: str = ""
    compute_capability: str = ""


def sidecar_path(engine_path: str | Path) -> Path:
    """``model.engine`` -> ``model.engine.json`` (a sidecar path is returned unchanged)."""
    engine_path = Path(engine_path)
    if engine_path.name.endswith(".engine" + SIDECAR_SUFFIX):
        return engine_path
    return engine_path.with_name(engine_path.name + SIDECAR_SUFFIX)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, read in chunks (engines can be hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_engine_sidecar(
    engine_path: str | Path,
    metadata: ModelMetadata,
    gpu_name: str,
    tensorrt_version: str,
    onnx_path: str | Path,
    batch: tuple[int, int, int],
    compute_capability: str = "",
) -> Path:
    """Write ``<engine>.json``: metadata fields at the top level plus the ``engine`` identity block."""
    engine_path = Path(engine_path)
    data: dict[str, Any] = metadata.to_dict()
    data["engine"] = {
        "format": SIDECAR_FORMAT,
        "gpu_name": gpu_name,
        "compute_capability": compute_capability,
        "tensorrt_version": tensorrt_version,
        "onnx_file": Path(onnx_path).name,
        "onnx_sha256": file_sha256(onnx_path),
        "engine_sha256": file_sha256(engine_path),
        "precision": metadata.precision,
        "batch_min": int(batch[0]),
        "batch_opt": int(batch[1]),
        "batch_max": int(batch[2]),
    }
    out = sidecar_path(engine_path)
    out.write_text(json.dumps(data, indent=2) + "\n")
    return out


def read_engine_sidecar(path: str | Path) -> EngineSidecar:
    """Read the sidecar of an engine (give the engine or the ``.engine.json`` file)."""
    path = Path(path)
    side = sidecar_path(path)
    engine = side.with_name(side.name[: -len(SIDECAR_SUFFIX)])
    if not side.is_file():
        raise InputError(engine, f"no sidecar {side.name} next to the engine; re-export it")
    data = read_json_object(side, "engine sidecar")
    block = data.get("engine")
    if not isinstance(block, dict) or block.get("format") != SIDECAR_FORMAT:
        raise InputError(side, f"not a cryoshift engine sidecar (expected engine.format {SIDECAR_FORMAT})")
    missing = [k for k in ("gpu_name", "tensorrt_version", "onnx_sha256", "batch_max") if k not in block]
    if missing:
        raise InputError(side, f"engine sidecar lacks {', '.join(missing)}")
    metadata = ModelMetadata.from_dict({k: v for k, v in data.items() if k != "engine"}, side)
    try:
        return EngineSidecar(
            path=engine,
            metadata=metadata,
            gpu_name=str(block["gpu_name"]),
            tensorrt_version=str(block["tensorrt_version"]),
            onnx_sha256=str(block["onnx_sha256"]),
            engine_sha256=str(block.get("engine_sha256", "")),
            precision=str(block.get("precision", metadata.precision)),
            batch_min=int(block.get("batch_min", 1)),
            batch_opt=int(block.get("batch_opt", block["batch_max"])),
            batch_max=int(block["batch_max"]),
            onnx_file=str(block.get("onnx_file", "")),
            compute_capability=str(block.get("compute_capability", "")),
        )
    except (TypeError, ValueError) as exc:
        raise InputError(side, f"invalid engine sidecar: {exc}") from exc


def _version_key(version: str) -> tuple[str, ...]:
    # An engine is tied to major.minor.patch; a build number suffix (11.0.0.12) does not matter.
    return tuple(version.strip().split(".")[:3])


def check_engine_compatible(sidecar: EngineSidecar, gpu_name: str, trt_version: str) -> None:
    """Raise :class:`InputError` unless the engine was built for this GPU model and TensorRT version."""
    problems = []
    if sidecar.gpu_name.strip().lower() != gpu_name.strip().lower():
        problems.append(f"GPU {sidecar.gpu_name!r} (this machine: {gpu_name!r})")
    if _version_key(sidecar.tensorrt_version) != _version_key(trt_version):
        problems.append(f"TensorRT {sidecar.tensorrt_version} (this machine: {trt_version})")
    if problems:
        onnx = sidecar.onnx_file or "the ONNX model"
        raise InputError(
            sidecar.path,
            f"engine was built for {' and '.join(problems)}; rebuild it here with "
            f"`cryoshift export ... --tensorrt` or classify with {onnx}",
        )


def verify_engine_file(sidecar: EngineSidecar) -> None:
    """Raise :class:`InputError` if the engine file is missing or is not the one the sidecar describes."""
    if not sidecar.path.is_file():
        raise InputError(sidecar.path, "engine file missing next to its sidecar")
    if sidecar.engine_sha256 and file_sha256(sidecar.path) != sidecar.engine_sha256:
        raise InputError(sidecar.path, "engine file does not match its sidecar (sha256 differs); re-export")


def query_gpu_name(index: int = 0) -> str | None:
    """Name of GPU ``index`` as nvidia-smi reports it (the name engines are keyed by), or None."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, f"--id={index}", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0].strip() if out else None
