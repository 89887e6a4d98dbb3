"""The export wing's two entry points.

``export_model``: an in-memory backbone -> one verified ONNX file (tests and the runtime use it to
make models). ``export_checkpoint``: a training run or checkpoint -> ONNX plus the requested
derived formats, each verified after writing, and ``export.json`` recording what was written,
from what, with which library versions.
"""

from __future__ import annotations

import json
import platform
import warnings
from collections.abc import Callable
from dataclasses import replace
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from cryoshift.export.data import find_volumes, random_volumes, read_volumes
from cryoshift.export.formats import FORMATS, artefact_name, select_formats
from cryoshift.export.onnx import ExportWrapper, complete_metadata, export_onnx, torch_reference
from cryoshift.export.result import ExportResult, ExportWarning
from cryoshift.runtime.engine_sidecar import file_sha256
from cryoshift.runtime.errors import InputError
from cryoshift.runtime.metadata import ModelMetadata

DEFAULT_BATCH_MAX = 256
PARITY_VOLUMES = 64
CALIBRATION_VOLUMES = 128
REPORT = "export.json"
Progress = Callable[[str], None]


def export_model(model: nn.Module, metadata: ModelMetadata, out_path: str | Path,
                 parity_volumes: np.ndarray | None = None, opset: int | None = None) -> ExportResult:
    """Export an in-memory backbone (timm-style contract) to a verified fp32 ONNX file.

    Without ``parity_volumes`` the parity check runs on random volumes and says so in a warning.
    """
    source = "given volumes"
    if parity_volumes is None:
        warnings.warn("no parity volumes given; checking ONNX against PyTorch on random volumes",
                      ExportWarning, stacklevel=2)
        parity_volumes, source = random_volumes(16, metadata.box_size), "random volumes"
    return export_onnx(model, metadata, out_path, parity_volumes, opset=opset, parity_source=source)


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("cryoshift", "torch", "onnx", "onnxruntime", "onnxslim", "onnxconverter-common",
                 "onnxscript", "numpy", "tensorrt", "polygraphy"):
        try:
            found[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return found


def _calibration(given: str | Path | None, config: dict[str, Any], box_size: int,
                 checkpoint: Path) -> tuple[np.ndarray, str]:
    """int8 calibration volumes: ``given``, else the first dataset the run's config names (target first)."""
    from cryoshift.export.data import config_data_paths

    if given is None:
        paths = config_data_paths(config)
        if not paths:
            raise InputError(checkpoint, "--int8 needs --calibration DATA (target subtomograms); "
                                         "the run's config names no dataset")
        given = paths[0]
    # A picks target (STAR/CSV) is cropped from the run's --tomograms.
    tomograms = list(config.get("tomograms") or [])
    return read_volumes(given, box_size, CALIBRATION_VOLUMES, tomograms=tomograms), str(given)


def export_checkpoint(
    checkpoint_or_run: str | Path,
    out_dir: str | Path,
    fp16: bool = False,
    tensorrt: bool = False,
    int8: bool = False,
    calibration: str | Path | None = None,
    parity_data: str | Path | None = None,
    opset: int | None = None,
    batch_max: int = DEFAULT_BATCH_MAX,
    progress: Progress | None = None,
) -> list[ExportResult]:
    """Export a checkpoint (or a run directory's selected ``model.pt``) to ``out_dir``.

    Writes ``model.onnx`` always, then ``model.fp16.onnx`` / ``model.int8.onnx`` / engines as asked;
    every artefact passes its parity check or the export raises
    :class:`cryoshift.export.parity.ParityError`. TensorRT without a GPU is skipped with a warning.
    """
    from cryoshift.export.tensorrt import tensorrt_unavailable
    from cryoshift.training.checkpoint import load_checkpoint, resolve_checkpoint

    say = progress or (lambda _msg: None)
    formats = select_formats(fp16=fp16, tensorrt=tensorrt, int8=int8, calibration=calibration)
    checkpoint = resolve_checkpoint(checkpoint_or_run)
    say(f"loading {checkpoint}")
    model, metadata, payload = load_checkpoint(checkpoint)
    if not metadata.backbone:
        metadata = replace(metadata, backbone=str(payload.get("backbone", "")))
    metadata = complete_metadata(metadata, "fp32")
    config: dict[str, Any] = payload.get("config") or {}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    say("reading parity volumes")
    volumes, source = find_volumes(metadata.box_size, parity_data, config, limit=PARITY_VOLUMES)
    if "int8" in formats:  # resolved before any work: a missing calibration set fails fast
        calib, calib_source = _calibration(calibration, config, metadata.box_size, checkpoint)
    wrapper = ExportWrapper(model, metadata.normalisation).eval()

    results: list[ExportResult] = []
    skipped: list[str] = []
    say("exporting ONNX (fp32)")
    onnx_result = export_onnx(wrapper, metadata, out_dir / artefact_name("onnx"), volumes, opset=opset,
                              parity_source=source)
    reference, _ = torch_reference(wrapper, volumes)  # every derived format is held to PyTorch too
    results.append(onnx_result)
    onnx_variants = [(onnx_result.path, "fp32")]

    if "fp16" in formats:
        from cryoshift.export.fp16 import export_fp16

        say("converting to fp16 ONNX")
        res = export_fp16(onnx_result.path, out_dir / artefact_name("fp16"), metadata, volumes, reference,
                          source)
        results.append(res)
        onnx_variants.append((res.path, "fp16"))

    if "int8" in formats:
        from cryoshift.export.int8 import export_int8_onnx

        say("calibrating int8 Q/DQ ONNX")
        res = export_int8_onnx(onnx_result.path, out_dir / artefact_name("int8"), metadata, calib, volumes,
                               reference, source, calib_source)
        results.append(res)
        onnx_variants.append((res.path, "int8"))

    if "tensorrt" in formats:
        reason = tensorrt_unavailable()
        if reason:
            msg = f"TensorRT engines skipped: {reason}"
            warnings.warn(msg, ExportWarning, stacklevel=2)
            skipped.append(msg)
        else:
            from cryoshift.export.tensorrt import export_tensorrt

            for path, precision in onnx_variants:
                say(f"building TensorRT {precision} engine (takes minutes the first time)")
                engine = out_dir / artefact_name("tensorrt", precision)
                results.append(export_tensorrt(path, engine, replace(metadata, precision=precision),
                                               batch_max, volumes, reference, source))

    report = {
        "format": "cryoshift.export/1",
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": file_sha256(checkpoint),
        "epoch": payload.get("epoch"),
        "backbone": payload.get("backbone"),
        "parity_data": source,
        "requested": formats,
        "formats": {name: FORMATS[name].description for name in formats},
        "results": [r.to_dict() for r in results],
        "skipped": skipped,
        "metadata": metadata.to_dict(),
        "training_config": config,
        "versions": _versions(),
    }
    (out_dir / REPORT).write_text(json.dumps(report, indent=2, default=str) + "\n")
    return results
