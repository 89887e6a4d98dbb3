"""The formats table: one row per artefact the exporter can write.

The table, not scattered if-statements, decides file names, which formats need a GPU, which
options a format accepts and what the tolerance of its parity check is. Derived formats name
the format they are built from (everything starts from the fp32 ONNX graph).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from cryoshift.runtime.errors import InputError


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str  # appended to the model stem: model.onnx, model.fp16.onnx, ...
    needs_gpu: bool
    options: tuple[str, ...]  # export_checkpoint keywords that only make sense with this format
    built_from: str | None  # the format this one is derived from
    precision: str
    description: str


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("onnx", ".onnx", False, ("opset", "parity_data", "batch_max"), None, "fp32",
               "fp32 ONNX, dynamic batch, normalisation in the graph (always written)"),
        Format("fp16", ".fp16.onnx", False, (), "onnx", "fp16",
               "fp16 weights/activations, fp32 input/outputs and normalisation (for GPUs)"),
        Format("int8", ".int8.onnx", False, ("calibration",), "onnx", "int8",
               "explicit Q/DQ int8 ONNX calibrated on target subtomograms"),
        Format("tensorrt", ".engine", True, ("batch_max",), "onnx", "fp32",
               "TensorRT engine per ONNX variant (+ .engine.json sidecar); tied to GPU and TensorRT"),
    )
}

# Parity bars. ``rel_logit``: max |logit diff| allowed, scaled by max(1, max |reference logit|);
# ``agreement``: minimum fraction of identical argmax. Lower precisions: agreement is the bar.
TOLERANCES: dict[str, tuple[float, float]] = {
    "fp32": (1e-3, 1.0),
    "fp16": (5e-2, 0.98),
    "int8": (0.5, 0.90),
}

MODEL_STEM = "model"


def get_format(name: str) -> Format:
    """Look a format up; an unknown name lists the valid ones and suggests the closest."""
    try:
        return FORMATS[name]
    except KeyError:
        close = difflib.get_close_matches(name, FORMATS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        valid = ", ".join(FORMATS)
        raise ValueError(f"unknown export format {name!r}; choose one of: {valid}.{hint}") from None


def artefact_name(fmt: str, precision: str | None = None) -> str:
    """File name of an artefact: ``model.onnx``, ``model.fp16.onnx``, ``model.fp16.engine``."""
    f = get_format(fmt)
    if f.name == "tensorrt" and precision and precision != "fp32":
        return f"{MODEL_STEM}.{precision}{f.suffix}"
    return MODEL_STEM + f.suffix


def select_formats(fp16: bool = False, tensorrt: bool = False, int8: bool = False,
                   calibration: object | None = None) -> list[str]:
    """Validate a request and return the formats to write, in build order (ONNX first)."""
    if calibration is not None and not int8:
        raise InputError(str(calibration), "--calibration only applies to --int8")
    chosen = ["onnx"]
    if fp16:
        chosen.append("fp16")
    if int8:
        chosen.append("int8")
    if tensorrt:
        chosen.append("tensorrt")
    return chosen


def formats_help() -> str:
    """One line per format, for help texts and docs."""
    rows = []
    for f in FORMATS.values():
        gpu = "GPU" if f.needs_gpu else "CPU"
        rows.append(f"{f.name:<9} {MODEL_STEM + f.suffix:<17} {gpu}  {f.description}")
    return "\n".join(rows)
