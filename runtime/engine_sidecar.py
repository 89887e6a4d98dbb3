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
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryoshift.runtime.contract import PRECISIONS, has_control_character
from cryoshift.runtime.errors import InputError, missing_reason
from cryoshift.runtime.jsonfile import read_json_object, shown
from cryoshift.runtime.metadata import ModelMetadata, refuse_special
from cryoshift.runtime.outfiles import write_text

SIDECAR_FORMAT = "cryoshift.engine/1"
SIDECAR_SUFFIX = ".json"  # model.engine -> model.engine.json
# What the engine block's text fields may hold. They were taken with str(): an onnx_sha256 of null
# became the lineage "None", a gpu_name of 2 MB made a 2-million-character error line, a null one
# "built for GPU 'None'", and an engine_sha256 of 5 said the engine did not match its sidecar.
MAX_SIDECAR_TEXT = 255  # a GPU name, a TensorRT version, a file name (255 bytes on most file systems)
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


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


def is_sidecar_name(path: str | Path) -> bool:
    """Whether ``path`` is named as an engine's sidecar (``model.engine.json``)."""
    return Path(path).name.lower().endswith(".engine" + SIDECAR_SUFFIX)


def check_engine_model_path(path: str | Path) -> None:
    """Refuse, in one line and before anything opens it, a model path that classify and bench
    cannot use: an engine's sidecar given for the engine (onnxruntime said "Protobuf parsing
    failed"), nothing there, a folder, a named pipe or a device (:func:`check_model_path`)."""
    from cryoshift.runtime.metadata import check_model_path

    path = Path(path)
    if is_sidecar_name(path):
        engine = path.with_name(path.name[: -len(SIDECAR_SUFFIX)])
        raise InputError(path, f"is the JSON sidecar of a TensorRT engine; give the engine itself: {engine}")
    check_model_path(path)


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
    write_text(out, json.dumps(data, indent=2) + "\n")  # a link at the name is replaced, not followed
    return out


def read_engine_sidecar(path: str | Path) -> EngineSidecar:
    """Read the sidecar of an engine (give the engine or the ``.engine.json`` file)."""
    path = Path(path)
    side = sidecar_path(path)
    engine = side.with_name(side.name[: -len(SIDECAR_SUFFIX)])
    if not side.is_file():
        raise InputError(engine, f"no sidecar {side.name} next to the engine; re-export it")
    data = read_json_object(side, "engine sidecar", duplicate=_named_twice)
    block = data.get("engine")
    if not isinstance(block, dict) or block.get("format") != SIDECAR_FORMAT:
        raise InputError(side, f"not a cryoshift engine sidecar (expected engine.format {SIDECAR_FORMAT})")
    missing = [k for k in ("gpu_name", "tensorrt_version", "onnx_sha256", "batch_max") if k not in block]
    if missing:
        raise InputError(side, f"engine sidecar lacks {', '.join(missing)}")
    metadata = ModelMetadata.from_dict({k: v for k, v in data.items() if k != "engine"}, side)
    batch_min, batch_opt, batch_max = _batch_profile(block, side)
    return EngineSidecar(
        path=engine,
        metadata=metadata,
        gpu_name=_text(block, "gpu_name", side),
        tensorrt_version=_text(block, "tensorrt_version", side),
        onnx_sha256=_sha256(block, "onnx_sha256", side),
        engine_sha256=_sha256(block, "engine_sha256", side) if "engine_sha256" in block else "",
        precision=_precision(block, metadata.precision, side),
        batch_min=batch_min,
        batch_opt=batch_opt,
        batch_max=batch_max,
        onnx_file=_text(block, "onnx_file", side, empty=True) if "onnx_file" in block else "",
        compute_capability=(
            _text(block, "compute_capability", side, empty=True) if "compute_capability" in block else ""
        ),
    )


def _text(block: dict[str, Any], key: str, side: Path, empty: bool = False) -> str:
    """``engine.<key>``: one line of text of at most :data:`MAX_SIDECAR_TEXT` characters (non-empty
    unless ``empty``), else refused in one line naming the sidecar and the field."""
    value = block[key]
    if (
        not isinstance(value, str)
        or len(value) > MAX_SIDECAR_TEXT
        or (not empty and not value.strip())
        or has_control_character(value)
    ):
        need = "one line of text" if empty else "a non-empty line of text"
        raise InputError(
            side,
            f"invalid engine sidecar: engine.{key} must be {need} of at most {MAX_SIDECAR_TEXT} "
            f"characters, not {shown(value, 40)}",
        )
    return value


def _sha256(block: dict[str, Any], key: str, side: Path) -> str:
    """``engine.<key>``: a SHA-256 as 64 lower-case hex digits (as :func:`file_sha256` writes it)."""
    value = block[key]
    if not isinstance(value, str) or not SHA256_HEX.fullmatch(value):
        raise InputError(
            side,
            f"invalid engine sidecar: engine.{key} must be a SHA-256 of 64 hex digits, "
            f"not {shown(value, 40)}",
        )
    return value


def _precision(block: dict[str, Any], default: str, side: Path) -> str:
    """``engine.precision`` (the model metadata's when absent): one of :data:`PRECISIONS`."""
    value = block.get("precision", default)
    if not isinstance(value, str) or value not in PRECISIONS:
        raise InputError(
            side,
            f"invalid engine sidecar: engine.precision must be one of {', '.join(PRECISIONS)}, "
            f"not {shown(value, 40)}",
        )
    return value


def _batch_profile(block: dict[str, Any], side: Path) -> tuple[int, int, int]:
    """(batch_min, batch_opt, batch_max) of the sidecar's engine block: whole numbers >= 1 in that
    order. A batch_max of -5 was taken as it was: every --batch-size was "above" it, and the advice
    was to pass --batch-size -5."""
    values = []
    for key, default in (("batch_min", 1), ("batch_opt", block["batch_max"]), ("batch_max", None)):
        value = block.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(
                side, f"invalid engine sidecar: engine.{key} must be a whole number >= 1, not {value!r}"
            )
        values.append(value)
    low, opt, high = values
    if not low <= opt <= high:
        raise InputError(
            side,
            f"invalid engine sidecar: its batch sizes must satisfy batch_min <= batch_opt <= batch_max, "
            f"not {low}, {opt}, {high}",
        )
    return low, opt, high


def _named_twice(key: str) -> str:
    """Why a sidecar naming ``key`` twice (at any depth) is refused: json keeps the last one, so a
    second ``class_names`` (or ``onnx_sha256``) would be used without a word, as an ONNX model's
    second metadata key was."""
    return f"invalid engine sidecar: it names {key!r} more than once"


def reference_onnx(sidecar: EngineSidecar) -> Path | None:
    """The ONNX model the engine was built from (the fp32 reference of ``--transfer fp16``'s check),
    or None when the sidecar names none or no file of that name is next to the engine.

    A sidecar is data, so the name in it may not lead the runtime to read other files: it must be
    a bare file name, it is looked up in the engine's own folder (it was opened relative to the
    working directory, and ``/etc/passwd`` was opened), a link there must not lead out of that
    folder, and the file must have the sidecar's ``onnx_sha256`` (an unrelated model in the
    working directory was loaded as the reference). Anything else is refused in one line."""
    name = sidecar.onnx_file
    if not name:
        return None
    side = sidecar_path(sidecar.path)
    if name in (".", "..") or "/" in name or os.sep in name or "\0" in name:
        raise InputError(
            side, f"engine.onnx_file must be the name of a file next to the engine, not a path: {name!r}"
        )
    folder = sidecar.path.parent
    candidate = folder / name
    if not os.path.lexists(candidate):
        return None
    target = Path(os.path.realpath(candidate))  # realpath: a loop of links raises nothing here
    if target.parent != Path(os.path.realpath(folder)):
        raise InputError(
            candidate,
            f"is a link leading out of the engine's folder (to {target}); the ONNX model the engine "
            "was built from must lie next to it",
        )
    refuse_special(candidate)  # a named pipe would block the hash below
    if not candidate.is_file():
        reason = "is a folder" if candidate.is_dir() else missing_reason(candidate)
        raise InputError(candidate, f"{reason}; the sidecar names it as the ONNX model of the engine")
    if file_sha256(candidate) != sidecar.onnx_sha256:
        raise InputError(
            candidate,
            "is not the ONNX model the engine was built from (its sha256 differs from the sidecar's "
            "onnx_sha256); put that model next to the engine, or use --transfer fp32",
        )
    return candidate


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
