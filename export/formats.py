"""The formats table: one row per artefact the exporter can write, and what builds it.

The table, not scattered if-statements, decides file names, build order, which formats need a
GPU, which options a format accepts and what the tolerance of its parity check is. Each row names
its builder, ``module:function`` taking an :class:`cryoshift.export.job.ExportJob`, which
:func:`cryoshift.export.api.export_checkpoint` looks up and calls; a row may also name a
``prepare`` step (run for every requested format before anything is built, so bad input fails
fast) and, when it needs a GPU, the check that says why it cannot be built here. Derived formats
name the format they are built from (everything starts from the fp32 ONNX graph). The table is
imported without torch or onnx: builders are resolved only when called.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from cryoshift.runtime.contract import FP16_AGREEMENT
from cryoshift.runtime.errors import InputError


def _resolve(target: str) -> Callable[..., Any]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str  # appended to the model stem: model.onnx, model.fp16.onnx, ...
    needs_gpu: bool
    options: tuple[str, ...]  # export_checkpoint keywords that only make sense with this format
    built_from: str | None  # the format this one is derived from (None: always written)
    precision: str
    description: str
    builder: str  # "module:function(job) -> list[ExportResult]"
    prepare: str | None = None  # "module:function(job)", run before any format is built
    unavailable: str | None = None  # GPU formats: "module:function() -> reason it cannot be built, or None"
    skipped: str = ""  # how a skip is announced: "<skipped> skipped: <reason>"

    def build(self, job: Any) -> list[Any]:
        return _resolve(self.builder)(job)

    def prepare_job(self, job: Any) -> None:
        if self.prepare:
            _resolve(self.prepare)(job)

    def why_not_here(self) -> str | None:
        """Why this format cannot be built on this machine (only GPU formats can be refused)."""
        if not self.needs_gpu or not self.unavailable:
            return None
        return _resolve(self.unavailable)()


FORMATS: dict[str, Format] = {  # in build order: every format comes after the one it is built from
    f.name: f
    for f in (
        Format(
            "onnx",
            ".onnx",
            False,
            ("opset", "parity_data"),
            None,
            "fp32",
            "fp32 ONNX, dynamic batch, normalisation in the graph (always written)",
            "cryoshift.export.onnx:build_onnx",
        ),
        Format(
            "fp16",
            ".fp16.onnx",
            False,
            (),
            "onnx",
            "fp16",
            "fp16 weights/activations, fp32 input/outputs and normalisation (for GPUs)",
            "cryoshift.export.fp16:build_fp16",
        ),
        Format(
            "int8",
            ".int8.onnx",
            False,
            ("calibration",),
            "onnx",
            "int8",
            "explicit Q/DQ int8 ONNX calibrated on target subtomograms",
            "cryoshift.export.int8:build_int8",
            prepare="cryoshift.export.int8:prepare_int8",
        ),
        Format(
            "tensorrt",
            ".engine",
            True,
            ("batch_max",),
            "onnx",
            "fp32",
            "TensorRT engine per ONNX variant (+ .engine.json sidecar); tied to GPU and TensorRT",
            "cryoshift.export.tensorrt:build_tensorrt",
            unavailable="cryoshift.export.tensorrt:tensorrt_unavailable",
            skipped="TensorRT engines",
        ),
    )
}

# Parity bars. ``rel_logit``: max |logit diff| allowed, scaled by max(1, max |reference logit|);
# ``agreement``: minimum fraction of identical argmax. Lower precisions: agreement is the bar.
# one entry for each of runtime/contract.py PRECISIONS
TOLERANCES: dict[str, tuple[float, float]] = {
    "fp32": (1e-3, 1.0),
    "fp16": (5e-2, FP16_AGREEMENT),
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


def select_formats(
    fp16: bool = False, tensorrt: bool = False, int8: bool = False, **options: object
) -> list[str]:
    """Validate a request and return the formats to write, in build order (ONNX first).

    ``options`` are export_checkpoint keywords; one that is given (not None) but belongs to no
    requested format is refused in one line (``--calibration only applies to --int8``).
    """
    requested = {"fp16": fp16, "tensorrt": tensorrt, "int8": int8}
    chosen = [f.name for f in FORMATS.values() if f.built_from is None or requested.get(f.name)]
    for option, value in options.items():
        owners = [f.name for f in FORMATS.values() if option in f.options]
        if not owners:
            raise ValueError(f"unknown export option {option!r}")
        if value is not None and not set(owners) & set(chosen):
            flag = "--" + option.replace("_", "-")
            path = isinstance(value, (str, PurePath))  # a path is named first; a number after the flag
            given = flag if path else f"{flag} {value}"
            owned = " or ".join(f"--{o}" for o in owners)
            raise InputError(str(value) if path else None, f"{given} only applies to {owned}")
    return chosen


def formats_help() -> str:
    """One line per format, for help texts and docs."""
    rows = []
    for f in FORMATS.values():
        gpu = "GPU" if f.needs_gpu else "CPU"
        rows.append(f"{f.name:<9} {MODEL_STEM + f.suffix:<17} {gpu}  {f.description}")
    return "\n".join(rows)
