"""PyTorch backbone -> fp32 ONNX that the runtime can trust.

The graph takes raw voxel values ``subtomograms`` (batch, 1, D, H, W) with a dynamic batch axis,
normalises each subtomogram itself (training's :class:`Normalise`, so runtime and training cannot
disagree) and returns ``logits`` and ``features``. It is exported with PyTorch's own exporter,
optimised by onnxslim (constant folding, BN folding, dead-node removal), stamped with the model
metadata, checked by ``onnx.checker`` and proven against PyTorch before it is kept.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from cryoshift.export.formats import artefact_name
from cryoshift.export.job import ExportJob
from cryoshift.export.parity import ParityError, check_onnx_parity, run_batched
from cryoshift.export.result import ExportResult
from cryoshift.runtime.contract import INPUT_NAME, OUTPUT_NAMES
from cryoshift.runtime.errors import InputError
from cryoshift.runtime.metadata import ModelMetadata, checked
from cryoshift.runtime.outfiles import write_bytes
from cryoshift.training.normalise import Normalise

DEFAULT_OPSET = 20  # torch's exporter default; ORT >= 1.17 and TensorRT 10+/11 run it
MIN_OPSET = 17  # LayerNormalization and friends need 17


class ExportWrapper(nn.Module):
    """Normalise -> backbone features -> head: the exact computation the runtime gets."""

    def __init__(self, backbone: nn.Module, normalisation: str = "zscore"):
        super().__init__()
        needed = ("forward_features", "forward_head")
        missing = [m for m in needed if not callable(getattr(backbone, m, None))]
        if missing:
            raise TypeError(
                f"{type(backbone).__name__} lacks {', '.join(missing)}: an exported backbone "
                "must follow the timm-style contract (features and head separate) of "
                "docs/design.md"
            )
        self.normalise = Normalise(normalisation)
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone.forward_features(self.normalise(x))
        return self.backbone.forward_head(features), features


def complete_metadata(metadata: ModelMetadata, precision: str = "fp32") -> ModelMetadata:
    """Fill version, creation time and precision so every artefact says what it is."""
    from cryoshift.runtime import __version__

    return replace(
        metadata,
        precision=precision,
        cryoshift_version=metadata.cryoshift_version or __version__,
        created=metadata.created or datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def check_opset(opset: int | None) -> int:
    """The ONNX opset to export with (None: the default); one out of range is refused in one line."""
    opset = DEFAULT_OPSET if opset is None else int(opset)
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise InputError(None, f"--opset {opset} is outside {MIN_OPSET}..{newest} (default {DEFAULT_OPSET})")
    return opset


def check_export_inputs(
    wrapper: nn.Module, metadata: ModelMetadata, source: str | Path | None
) -> ModelMetadata:
    """Refuse, before anything is written, what the runtime would refuse when it reads the model:
    metadata its readers refuse (:func:`cryoshift.runtime.metadata.checked`: the same checks), and
    a network whose outputs the metadata does not describe (logits of another number of classes,
    features of another width than ``feature_mean``), found by one forward pass on a box of the
    metadata's size. Returns the metadata as the runtime will read it; refusals name ``source``."""
    from cryoshift.export.data import random_volumes
    from cryoshift.export.parity import as_model_input
    from cryoshift.training.evaluate import check_logit_count  # evaluate refuses in the same words

    metadata = checked(metadata, source)
    box = metadata.box_size
    wrapper.eval()
    try:
        with torch.no_grad():
            logits, features = wrapper(torch.from_numpy(as_model_input(random_volumes(1, box))))
    except RuntimeError as exc:  # torch's shape errors: the network is built for another box
        raise InputError(
            source, f"the network cannot take boxes of {box}^3 voxels, the metadata's box_size: {exc}"
        ) from exc
    check_logit_count(logits.numpy(), metadata, source)
    width = int(features.shape[-1]) if features.ndim == 2 else None
    if metadata.feature_mean and width != len(metadata.feature_mean):
        raise InputError(
            source,
            f"the network's features have shape {tuple(features.shape)} but the metadata's feature_mean "
            f"has {len(metadata.feature_mean)} values (every shift score would be NaN); the runtime "
            "would refuse the model",
        )
    return metadata


def set_metadata(model: onnx.ModelProto, metadata: ModelMetadata) -> None:
    """Replace the ``cryoshift.*`` metadata_props with ``metadata``."""
    keep = [(p.key, p.value) for p in model.metadata_props if not p.key.startswith("cryoshift.")]
    del model.metadata_props[:]
    for key, value in [*keep, *metadata.to_properties().items()]:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "cryoshift"
    model.producer_version = metadata.cryoshift_version
    model.doc_string = (
        f"cryoshift {metadata.backbone or 'model'}: {metadata.num_classes} classes "
        f"({', '.join(metadata.class_names)}), box {metadata.box_size}, "
        f"{metadata.voxel_size} A/voxel, {metadata.precision}{method_in_words(metadata)}"
    )


def method_in_words(metadata: ModelMetadata) -> str:
    """``"; method M"`` plus what the method trained with besides its own losses, by the metadata's
    ``extra.recipe`` (``""`` without a method). ``method`` is by design the adaptation method's
    registry name, the same word config.json, evaluation.json and the checkpoint record; the
    default recipe adds template-matched target subtomograms and spectrum matching to any method
    (``--method source-only`` included). Why: the model's description said the method alone, and a
    ``source-only`` model read as one that never saw the target. A model without the record (made
    before cryoshift wrote it) is described by its method alone, claiming nothing."""
    from cryoshift.training.trainer import RECIPE, RECIPE_WORDS

    if not metadata.method:
        return ""
    recipe = metadata.extra.get(RECIPE)
    parts = []
    if isinstance(recipe, dict):
        count = recipe.get("template_labels")
        if isinstance(count, int) and not isinstance(count, bool) and count > 0:
            parts.append(f"pseudo-labels from template matching on {count} target subtomograms")
        parts += [words for key, words in RECIPE_WORDS.items() if recipe.get(key) is True]
    with_parts = f", trained with {', '.join(parts)}" if parts else ""
    return f"; method {metadata.method}{with_parts}"


# The loggers whose chatter an export keeps off the console: torch.onnx's "torchvision is not
# installed" warnings, and onnxscript's and onnx_ir's pass-by-pass lines when logging is set up.
QUIET_LOGGERS = ("torch.onnx", "torch.export", "torch._export", "onnxscript", "onnx_ir")

# One graph export (torch.onnx.export, then onnxslim) at a time in this process. Why: torch.onnx's
# exporter keeps process-wide state (its tracing mode stacks, the warnings filters the export
# sets): two threads exporting at once broke each other's torch.export step ("Trying to pop empty
# mode stack"), fell back to TorchScript or failed. Re-entrant, so a caller may hold it too.
GRAPH_LOCK = threading.RLock()


class _ExportChatter(logging.Filter):
    """Drops the records below ERROR that :data:`QUIET_LOGGERS` (or their children) log from one
    thread, the exporting one; every other record passes, the other threads' included."""

    def __init__(self, thread: int) -> None:
        super().__init__()
        self.thread = thread

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread != self.thread or record.levelno >= logging.ERROR:
            return True
        return not any(record.name == n or record.name.startswith(n + ".") for n in QUIET_LOGGERS)


def _handlers_reached() -> list[logging.Handler]:
    """The handlers that records of :data:`QUIET_LOGGERS` and their children reach (propagation
    followed up to the root; Python's last-resort handler when there is none)."""
    found: list[logging.Handler] = []
    for name in QUIET_LOGGERS:
        logger: logging.Logger | None = logging.getLogger(name)
        while logger is not None:
            found += [h for h in logger.handlers if h not in found]
            logger = logger.parent if logger.propagate else None
    last = logging.lastResort
    if last is not None and last not in found:
        found.append(last)
    return found


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hold :data:`GRAPH_LOCK` and keep torch.onnx's, onnxscript's and onnx_ir's chatter (below
    ERROR, logged by this thread) and Python warnings off the console while the graph is made.
    Its progress lines are printed only when asked (``verbose``, which trace_to_onnx sets False).

    Why a filter on the handlers, removed after, and not logger levels: setting the levels
    changed loggers other code owns, for every thread, and two exports at once restored each
    other's ERROR level as the one found (torch.onnx logged nothing afterwards, for good). No
    logger's level or filters change; other threads' records pass. Why not ``redirect_stdout``:
    it swaps ``sys.stdout`` for every thread, so a library caller's other threads lost what they
    printed during an export."""
    chatter = _ExportChatter(threading.get_ident())
    with GRAPH_LOCK:
        handlers = _handlers_reached()
        for handler in handlers:
            handler.addFilter(chatter)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield
        finally:
            for handler in handlers:
                handler.removeFilter(chatter)


def trace_to_onnx(wrapper: nn.Module, box_size: int, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """Export ``wrapper`` with a dynamic batch axis; torch.export first, TorchScript as fallback."""
    example = torch.zeros(2, 1, box_size, box_size, box_size)
    example[1].normal_(generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), _quiet():
        try:
            program = torch.onnx.export(
                wrapper,
                (example,),
                None,
                dynamo=True,
                opset_version=opset,
                verbose=False,
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                optimize=True,
            )
            return program.model_proto
        except Exception as exc:  # the new exporter rejects some Python control flow
            first_error = exc
        buffer = io.BytesIO()
        try:
            torch.onnx.export(
                wrapper,
                (example,),
                buffer,
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                dynamic_axes={
                    INPUT_NAME: {0: "batch"},
                    OUTPUT_NAMES[0]: {0: "batch"},
                    OUTPUT_NAMES[1]: {0: "batch"},
                },
            )
        except Exception as exc:
            raise RuntimeError(f"ONNX export failed: {first_error}; TorchScript fallback: {exc}") from exc
    warnings.warn(
        f"torch.export-based ONNX export failed ({first_error}); used the TorchScript exporter", stacklevel=2
    )
    return onnx.load_from_string(buffer.getvalue())


def optimise(model: onnx.ModelProto) -> onnx.ModelProto:
    """Constant folding, BN folding and cleanup by onnxslim (a maintained optimiser, not by hand)."""
    import onnxslim

    with _quiet():
        slimmed = onnxslim.slim(model)
    return slimmed if slimmed is not None else model


def _batch_is_dynamic(model: onnx.ModelProto) -> bool:
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    return not dim.HasField("dim_value")


def torch_reference(wrapper: nn.Module, volumes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch logits and features for ``volumes``: the reference every artefact is held to."""
    wrapper.eval()

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            logits, feats = wrapper(torch.from_numpy(batch))
        return logits.numpy(), feats.numpy()

    logits, feats = run_batched(run, volumes)
    if not np.isfinite(logits).all():
        # finite weights that overflow (1e38) answered NaN: parity then "FAILED" at max |dlogit|
        # nan with 100 % agreement, which read as an exporter bug, not a damaged checkpoint
        raise InputError(
            None,
            "the PyTorch model's logits are not finite on the parity volumes (its weights overflow: "
            "a diverged or damaged checkpoint); nothing was exported",
        )
    return logits, feats


def export_onnx(
    model: nn.Module,
    metadata: ModelMetadata,
    out_path: str | Path,
    parity_volumes: np.ndarray,
    opset: int | None = None,
    parity_source: str = "",
    source: str | Path | None = None,
) -> ExportResult:
    """Write the fp32 ONNX model and prove it against PyTorch; raises :class:`ParityError` (and removes
    the file) when ONNX Runtime disagrees beyond the fp32 tolerance.

    Metadata the runtime would refuse on reading the model, or that does not describe the network's
    outputs, is refused first (:func:`check_export_inputs`), naming ``source`` (what the model and
    metadata came from; default ``out_path``), and nothing is written.

    The PyTorch reference is computed after the graph is captured, from the module as it is then:
    a graph that went stale (weights changed after tracing, a hook that ran only once) is caught.
    """
    start = time.perf_counter()
    opset = check_opset(opset)
    out_path = Path(out_path)
    source = out_path if source is None else source
    metadata = checked(metadata, source)  # a ModelMetadata, as the runtime will read it back
    metadata = complete_metadata(metadata, "fp32")
    wrapper = model if isinstance(model, ExportWrapper) else ExportWrapper(model, metadata.normalisation)
    if not metadata.backbone:
        metadata = replace(metadata, backbone=str(getattr(wrapper.backbone, "backbone_name", "")))
    metadata = check_export_inputs(wrapper, metadata, source)
    out_path.parent.mkdir(parents=True, exist_ok=True)  # only now: a refusal leaves nothing behind
    wrapper.eval()
    proto = optimise(trace_to_onnx(wrapper, metadata.box_size, opset))
    if not _batch_is_dynamic(proto):
        raise RuntimeError("exported graph has a fixed batch size; the backbone must not depend on it")
    set_metadata(proto, metadata)
    onnx.checker.check_model(proto, full_check=True)
    write_bytes(out_path, proto.SerializeToString())  # a link at the name is replaced, not followed
    try:
        reference_logits, _ = torch_reference(wrapper, parity_volumes)
    except InputError:  # no reference to hold the file to: it is not left behind as if proven
        out_path.unlink(missing_ok=True)
        raise
    report = check_onnx_parity(out_path, parity_volumes, reference_logits, "fp32", parity_source)
    if not report.passed:
        out_path.unlink(missing_ok=True)
        raise ParityError(out_path, report)
    return ExportResult(
        "onnx", out_path, out_path.stat().st_size, report, time.perf_counter() - start, [f"opset {opset}"]
    )


def build_onnx(job: ExportJob) -> list[ExportResult]:
    """The formats table's ``onnx`` builder: the fp32 graph every other format is derived from."""
    job.say("exporting ONNX (fp32)")
    result = export_onnx(
        job.wrapper,
        job.metadata,
        job.out_dir / artefact_name("onnx"),
        job.volumes,
        opset=job.opset,
        parity_source=job.source,
        source=job.checkpoint,
    )
    job.reference, _ = torch_reference(job.wrapper, job.volumes)  # derived formats are held to PyTorch too
    job.onnx_path = result.path
    job.onnx_variants.append((result.path, "fp32"))
    return [result]
