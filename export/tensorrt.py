"""ONNX -> native TensorRT engine, with a sidecar JSON the runtime checks before loading.

TensorRT 11 networks are always strongly typed: there is no FP16/INT8 builder flag, precision
comes from the ONNX graph. So the fp16 engine is built from the fp16 ONNX and the int8 engine
from the Q/DQ ONNX; the builder only gets an optimisation profile for the batch range, a
workspace limit and a timing cache (rebuilds of similar models reuse the tactic timings). On
TensorRT 10 the STRONGLY_TYPED network flag gives the same behaviour. An engine only runs on the
GPU model and TensorRT version that built it; both go into ``<engine>.json``
(:mod:`cryoshift.runtime.engine_sidecar`) with the SHA-256 of the source ONNX.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from cryoshift.export.formats import artefact_name
from cryoshift.export.job import ExportJob
from cryoshift.export.parity import ParityError, compare_logits, run_batched
from cryoshift.export.result import ExportResult
from cryoshift.runtime.contract import INPUT_NAME, OUTPUT_NAMES
from cryoshift.runtime.engine_sidecar import query_gpu_name, write_engine_sidecar
from cryoshift.runtime.metadata import ModelMetadata
from cryoshift.runtime.outfiles import write_bytes

TIMING_CACHE = "tensorrt.timing.cache"
WORKSPACE_BYTES = 4 << 30


def tensorrt_unavailable() -> str | None:
    """Why a TensorRT engine cannot be built here, or None when it can."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT is not installed (pip install 'cryoshift[tensorrt]' on a GPU machine)"
    if query_gpu_name() is None:
        return "no NVIDIA GPU visible (nvidia-smi found none); engines are built on the GPU that runs them"
    return None


def batch_profile(batch_max: int) -> tuple[int, int, int]:
    """(min, opt, max) batch sizes: the runtime pads to full batches, so optimise for the largest."""
    if batch_max < 1:
        raise ValueError(f"batch_max must be >= 1, got {batch_max}")
    return 1, batch_max, batch_max


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    box_size: int,
    batch: tuple[int, int, int],
    timing_cache: str | Path | None = None,
    workspace_bytes: int = WORKSPACE_BYTES,
) -> Path:
    """Parse ``onnx_path`` and serialise an engine for batch sizes ``batch`` = (min, opt, max)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if int(trt.__version__.split(".")[0]) < 11:  # strongly typed is the only mode from TensorRT 11
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{onnx_path}: TensorRT cannot parse the ONNX graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    profile = builder.create_optimization_profile()
    shapes = [(b, 1, box_size, box_size, box_size) for b in batch]
    profile.set_shape(INPUT_NAME, *shapes)
    config.add_optimization_profile(profile)
    cache_path = Path(timing_cache) if timing_cache else None
    blob = cache_path.read_bytes() if cache_path is not None and cache_path.is_file() else b""
    cache = config.create_timing_cache(blob)
    if not config.set_timing_cache(cache, ignore_mismatch=False):  # a cache from another GPU/version
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"{onnx_path}: TensorRT engine build failed (see the TensorRT log above)")
    engine_path = Path(engine_path)
    # whole files renamed into place: a link planted at either name is replaced, never written
    # through (runtime/outfiles.py); a reader never sees half an engine
    write_bytes(engine_path, memoryview(serialized))
    if cache_path is not None:
        write_bytes(cache_path, memoryview(config.get_timing_cache().serialize()))
    return engine_path


def engine_runner(engine_path: str | Path):
    """``fn(batch) -> (logits, features)`` running the engine through Polygraphy, or None without it."""
    try:
        from polygraphy.backend.common import BytesFromPath
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner
    except ImportError:
        return None
    runner = TrtRunner(EngineFromBytes(BytesFromPath(str(engine_path))))
    runner.activate()

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = runner.infer({INPUT_NAME: batch}, copy_outputs_to_host=True)
        return np.asarray(out[OUTPUT_NAMES[0]]), np.asarray(out[OUTPUT_NAMES[1]])

    run.runner = runner  # type: ignore[attr-defined]
    return run


def export_tensorrt(
    onnx_path: str | Path,
    engine_path: str | Path,
    metadata: ModelMetadata,
    batch_max: int,
    parity_volumes: np.ndarray,
    reference_logits: np.ndarray,
    parity_source: str = "",
) -> ExportResult:
    """Build an engine from ``onnx_path`` (its precision is the ONNX graph's), write its sidecar and
    check it against PyTorch on the GPU."""
    import tensorrt as trt

    start = time.perf_counter()
    reason = tensorrt_unavailable()
    if reason:
        raise RuntimeError(reason)
    engine_path = Path(engine_path)
    batch = batch_profile(batch_max)
    build_engine(onnx_path, engine_path, metadata.box_size, batch, engine_path.parent / TIMING_CACHE)
    gpu = query_gpu_name() or "unknown"
    write_engine_sidecar(engine_path, metadata, gpu, trt.__version__, onnx_path, batch)
    notes = [f"GPU {gpu}, TensorRT {trt.__version__}, batch {batch[0]}..{batch[2]}"]
    report = None
    run = engine_runner(engine_path)
    if run is None:
        notes.append("parity not checked: polygraphy is not installed")
    else:
        try:
            logits, _ = run_batched(run, parity_volumes, batch=min(16, batch[2]))
        finally:
            run.runner.deactivate()  # type: ignore[attr-defined]
        report = compare_logits(reference_logits, logits, metadata.precision, parity_source)
        if not report.passed:
            engine_path.unlink(missing_ok=True)
            raise ParityError(engine_path, report)
    return ExportResult(
        "tensorrt", engine_path, engine_path.stat().st_size, report, time.perf_counter() - start, notes
    )


def build_tensorrt(job: ExportJob) -> list[ExportResult]:
    """The formats table's ``tensorrt`` builder: one engine per ONNX variant written before it."""
    _, reference = job.fp32()
    results = []
    for path, precision in job.onnx_variants:
        job.say(f"building TensorRT {precision} engine (takes minutes the first time)")
        engine = job.out_dir / artefact_name("tensorrt", precision)
        results.append(
            export_tensorrt(
                path,
                engine,
                replace(job.metadata, precision=precision),
                job.batch_max,
                job.volumes,
                reference,
                job.source,
            )
        )
    return results
