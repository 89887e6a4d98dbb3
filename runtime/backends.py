"""Inference backends behind one small interface: ``Model.predict(batch) -> (logits, features)``.

* ``cpu``       ONNX Runtime CPU execution provider.
* ``cuda``      ONNX Runtime CUDA EP with IO binding: one preallocated device input of a fixed
                batch shape (cuDNN's EXHAUSTIVE search runs once), outputs copied once per batch.
* ``tensorrt``  ONNX Runtime TensorRT EP with explicit profile shapes and an engine + timing
                cache keyed by GPU model, TensorRT, ORT and the ONNX file's hash.
* ``engine``    a native TensorRT engine (``.engine``/``.plan``) with its JSON sidecar; refused
                when built for another GPU or TensorRT version.
* ``null``      no inference at all: measures how fast the pipeline alone can feed a device.

``auto`` picks the fastest that really works here and says which (and why not the others).
GPU paths import their libraries lazily and are only exercised where a GPU exists.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cryoshift.runtime.engine_sidecar import file_sha256
from cryoshift.runtime.errors import InputError, MissingExtraError
from cryoshift.runtime.metadata import ModelMetadata

BACKENDS = ("auto", "cpu", "cuda", "tensorrt", "engine")
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
INPUT = "subtomograms"
OUTPUTS = ("logits", "features")


def _ort() -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise MissingExtraError("cpu", "running an ONNX model", exc) from exc
    ort.set_default_logger_severity(3)
    return ort


@dataclass
class Model:
    """A loaded model: metadata plus ``predict``; ``fixed_batch`` backends want full batches."""

    path: Path
    metadata: ModelMetadata
    backend: str
    sha256: str
    batch_size: int = 64
    fixed_batch: bool = False
    description: str = ""
    notes: list[str] = field(default_factory=list)
    _runner: Any = None

    def predict(self, batch: np.ndarray, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Logits (n, K) and features (n, F) for the first ``n`` rows of ``batch`` (B, 1, D, D, D).

        Fixed-shape backends compute the whole (padded) batch and return the first ``n`` rows,
        so GPU kernels are tuned once; the CPU backend computes only the rows it needs.
        """
        n = batch.shape[0] if n is None else n
        if not self.fixed_batch:
            return self._runner(np.ascontiguousarray(batch[:n], dtype=np.float32))
        if batch.shape[0] == self.batch_size:
            logits, features = self._runner(np.ascontiguousarray(batch, dtype=np.float32))
            return logits[:n], features[:n]
        # Any other size (API users): run fixed-size pieces, padding the last one.
        pad = np.zeros((self.batch_size, *batch.shape[1:]), np.float32)
        parts = []
        for start in range(0, n, self.batch_size):
            piece = batch[start:min(start + self.batch_size, n)]
            pad[:len(piece)] = piece
            logits, features = self._runner(pad)
            parts.append((logits[:len(piece)].copy(), features[:len(piece)].copy()))
        if not parts:  # n == 0: empty outputs of the right width
            logits, features = self._runner(pad)
            return logits[:0], features[:0]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    @property
    def num_features(self) -> int:
        return len(self.metadata.feature_mean)


# ---------------------------------------------------------------------------------------------
# ONNX Runtime


class _OrtCpu:
    def __init__(self, sess: Any):
        self.sess = sess
        names = [o.name for o in sess.get_outputs()]
        self.has_features = "features" in names
        self.outputs = ["logits", "features"] if self.has_features else ["logits"]

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self.sess.run(self.outputs, {INPUT: batch})
        feats = out[1] if self.has_features else np.zeros((batch.shape[0], 0), np.float32)
        return out[0], feats


class _OrtIoBinding:
    """CUDA / TensorRT EP runner: fixed-shape device input and outputs bound once."""

    def __init__(self, ort: Any, sess: Any, batch_size: int, box: int, device_id: int, device: str = "cuda"):
        self.sess = sess
        names = [o.name for o in sess.get_outputs()]
        self.has_features = "features" in names
        shape = (batch_size, 1, box, box, box)
        self.input = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, device, device_id)
        self.binding = sess.io_binding()
        self.binding.bind_ortvalue_input(INPUT, self.input)
        self.binding.bind_output("logits", device, device_id)
        if self.has_features:
            self.binding.bind_output("features", device, device_id)

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.input.update_inplace(batch)  # one host->device copy into the bound buffer
        self.sess.run_with_iobinding(self.binding)
        outs = self.binding.copy_outputs_to_cpu()  # small: (B, K) and (B, F)
        feats = outs[1] if self.has_features else np.zeros((batch.shape[0], 0), np.float32)
        return outs[0], feats


def _session_options(ort: Any, threads: int | None) -> Any:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    # Idle inference threads sleep instead of spinning: the reader threads share these cores
    # (measured on 2 shared cores: end to end 165 -> 206 subtomograms/s, inference-only not slower).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def _log(message: str) -> None:
    """Progress notes for slow one-off steps, on stderr (stdout stays for results)."""
    print(f"cryoshift: {message}", file=sys.stderr, flush=True)


def gpu_name(device_id: int = 0) -> str | None:
    """Name of GPU ``device_id`` from nvidia-smi, or None when there is no GPU."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", f"-i={device_id}"],
                             capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    name = out.stdout.strip().splitlines()
    return name[0].strip() if name else None


def _tensorrt_version() -> str:
    try:
        import tensorrt

        return str(tensorrt.__version__)
    except ImportError:
        return "unknown"


def trt_cache_dir(model_sha: str, device_id: int = 0, root: str | Path | None = None) -> Path:
    """Engine-cache folder keyed by GPU model, TensorRT, ORT and ONNX hash (a stale cache never loads)."""
    ort = _ort()
    key = "|".join([gpu_name(device_id) or "gpu", _tensorrt_version(), ort.__version__, model_sha])
    base = Path(root or os.environ.get("CRYOSHIFT_TRT_CACHE", Path.home() / ".cache" / "cryoshift" / "trt"))
    return base / hashlib.sha256(key.encode()).hexdigest()[:16]


def _ort_session(path: Path, backend: str, meta: ModelMetadata, sha: str, batch_size: int,
                 threads: int | None, device_id: int, cache_root: str | Path | None) -> tuple[Any, str]:
    ort = _ort()
    opts = _session_options(ort, threads if backend == "cpu" else None)
    box = meta.box_size
    if backend == "cpu":
        providers: list[Any] = ["CPUExecutionProvider"]
    elif backend == "cuda":
        cuda = {"device_id": device_id, "cudnn_conv_algo_search": "EXHAUSTIVE",
                "do_copy_in_default_stream": True}
        providers = [("CUDAExecutionProvider", cuda), "CPUExecutionProvider"]
    else:  # tensorrt
        cache = trt_cache_dir(sha, device_id, cache_root)
        cache.mkdir(parents=True, exist_ok=True)
        if not any(cache.glob("*.engine")):
            _log(f"building a TensorRT engine for this model and GPU (first run: can take minutes; "
                 f"cached in {cache})")
        dims = f"1x{box}x{box}x{box}"
        trt = {
            "device_id": device_id,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache),
            "trt_profile_min_shapes": f"{INPUT}:1x{dims}",
            "trt_profile_opt_shapes": f"{INPUT}:{batch_size}x{dims}",
            "trt_profile_max_shapes": f"{INPUT}:{batch_size}x{dims}",
        }
        providers = [("TensorrtExecutionProvider", trt),
                     ("CUDAExecutionProvider", {"device_id": device_id,
                                                "cudnn_conv_algo_search": "EXHAUSTIVE"}),
                     "CPUExecutionProvider"]
    try:
        sess = ort.InferenceSession(str(path), opts, providers=providers)
    except Exception as exc:  # ORT raises its own types for bad files and missing libraries
        raise InputError(path, f"cannot open the model with the {backend} backend ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    return sess, sess.get_providers()[0]


_WANTED_PROVIDER = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                    "tensorrt": "TensorrtExecutionProvider"}


def _load_onnx(path: Path, backend: str, batch_size: int, threads: int | None, device_id: int,
               cache_root: str | Path | None) -> Model:
    from cryoshift.runtime.metadata import read_onnx_metadata

    meta = read_onnx_metadata(path)
    wanted = _WANTED_PROVIDER[backend]
    if wanted not in _ort().get_available_providers():
        extra = "gpu" if backend != "cpu" else "cpu"
        raise InputError(path, f"backend {backend} needs onnxruntime with {wanted}, which this install "
                               f"lacks: pip install 'cryoshift[{extra}]' (or use --backend auto)")
    sha = file_sha256(path)
    sess, provider = _ort_session(path, backend, meta, sha, batch_size, threads, device_id, cache_root)
    if provider != _WANTED_PROVIDER[backend]:
        raise InputError(path, f"backend {backend} is not usable here (onnxruntime fell back to {provider})")
    inputs = sess.get_inputs()
    if not inputs or inputs[0].name != INPUT:
        raise InputError(path, f"model input must be named {INPUT!r} (see the model contract)")
    if backend == "cpu":
        runner: Any = _OrtCpu(sess)
        fixed = False
    else:
        runner = _OrtIoBinding(_ort(), sess, batch_size, meta.box_size, device_id)
        fixed = True
    ort = _ort()
    desc = f"{backend} (onnxruntime {ort.__version__}, {provider}" + (
        f", device {device_id})" if backend != "cpu" else f", {threads or 'all'} threads)")
    return Model(path, meta, backend, sha, batch_size, fixed, desc, _runner=runner)


# ---------------------------------------------------------------------------------------------
# Native TensorRT engine


class _TrtEngine:
    """Runs a deserialised engine; device buffers are ORT CUDA OrtValues (no extra CUDA package)."""

    def __init__(self, path: Path, batch_size: int, box: int, device_id: int):
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise MissingExtraError("tensorrt", "running a TensorRT engine", exc) from exc
        ort = _ort()
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise InputError(path, "TensorRT could not deserialise this engine "
                                   "(built for another GPU or TensorRT version?)")
        self.context = self.engine.create_execution_context()
        self.context.set_input_shape(INPUT, (batch_size, 1, box, box, box))
        self.buffers: dict[str, Any] = {}
        self.host: dict[str, np.ndarray] = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = trt.nptype(self.engine.get_tensor_dtype(name))
            buf = ort.OrtValue.ortvalue_from_shape_and_type(shape, dtype, "cuda", device_id)
            self.buffers[name] = buf
            self.context.set_tensor_address(name, buf.data_ptr())
        self.has_features = "features" in self.buffers

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.buffers[INPUT].update_inplace(batch)
        # Default (legacy) stream: the OrtValue copies before and after are ordered with it.
        if not self.context.execute_async_v3(0):
            raise RuntimeError("TensorRT execution failed")
        logits = self.buffers["logits"].numpy().astype(np.float32, copy=False)
        feats = (self.buffers["features"].numpy().astype(np.float32, copy=False) if self.has_features
                 else np.zeros((batch.shape[0], 0), np.float32))
        return logits, feats


def _load_engine(path: Path, batch_size: int, device_id: int) -> Model:
    """A native engine, refused unless its sidecar says it was built for this GPU and TensorRT."""
    from cryoshift.runtime.engine_sidecar import (
        check_engine_compatible,
        read_engine_sidecar,
        verify_engine_file,
    )

    sidecar = read_engine_sidecar(path)
    verify_engine_file(sidecar)
    name = gpu_name(device_id)
    if name is None:
        raise InputError(path, "a TensorRT engine needs a GPU and none is visible; "
                               "classify with the ONNX model")
    check_engine_compatible(sidecar, name, _tensorrt_version())
    if batch_size > sidecar.batch_max:
        raise InputError(path, f"engine was built for batches up to {sidecar.batch_max}, not {batch_size}; "
                               f"pass --batch-size {sidecar.batch_max}")
    meta = sidecar.metadata
    runner = _TrtEngine(sidecar.path, batch_size, meta.box_size, device_id)
    return Model(sidecar.path, meta, "engine", sidecar.engine_sha256 or file_sha256(sidecar.path), batch_size,
                 True, f"engine (native TensorRT {_tensorrt_version()}, {sidecar.precision}, {name})",
                 _runner=runner)


# ---------------------------------------------------------------------------------------------
# Selection


def available_backends() -> list[str]:
    """Backends whose libraries are installed (a GPU is still needed to use the GPU ones)."""
    ort = _ort()
    providers = ort.get_available_providers()
    names = ["cpu"]
    if "CUDAExecutionProvider" in providers:
        names.append("cuda")
    if "TensorrtExecutionProvider" in providers:
        names.append("tensorrt")
    return names


def load_model(path: str | Path, backend: str = "auto", batch_size: int = 64, threads: int | None = None,
               device_id: int = 0, cache_dir: str | Path | None = None) -> Model:
    """Load an exported model for inference.

    ``auto`` tries TensorRT EP, then CUDA EP, then CPU (a native engine file always uses
    ``engine``) and records in ``Model.notes`` why a faster backend was passed over.
    """
    path = Path(path)
    if backend not in BACKENDS:
        import difflib

        close = difflib.get_close_matches(backend, BACKENDS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise InputError(None, f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)}){hint}")
    if not path.is_file():
        raise InputError(path, "no such model file")
    if batch_size < 1:
        raise InputError(None, f"batch size must be positive, not {batch_size}")
    is_engine = path.suffix.lower() in ENGINE_SUFFIXES
    if backend == "engine" or (backend == "auto" and is_engine):
        return _load_engine(path, batch_size, device_id)
    if is_engine:
        raise InputError(path, f"a TensorRT engine runs only with --backend engine (not {backend})")
    if backend != "auto":
        return _load_onnx(path, backend, batch_size, threads, device_id, cache_dir)
    notes: list[str] = []
    have = available_backends()
    gpu = gpu_name(device_id) is not None
    for candidate in ("tensorrt", "cuda"):
        if candidate not in have:
            provider = _WANTED_PROVIDER[candidate]
            notes.append(f"{candidate}: onnxruntime has no {provider} (install cryoshift[gpu])")
            continue
        if not gpu:
            notes.append(f"{candidate}: no GPU visible")
            continue
        try:
            model = _load_onnx(path, candidate, batch_size, threads, device_id, cache_dir)
        except InputError as exc:
            notes.append(f"{candidate}: {exc.reason}")
            continue
        model.notes = notes
        return model
    model = _load_onnx(path, "cpu", batch_size, threads, device_id, cache_dir)
    model.notes = notes
    return model


def null_model(metadata: ModelMetadata, num_features: int = 0, batch_size: int = 64) -> Model:
    """A model that computes nothing: the pipeline's own feed rate (read, crop, batch, write)."""
    k = metadata.num_classes

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = batch.shape[0]
        return np.zeros((n, k), np.float32), np.zeros((n, num_features), np.float32)

    return Model(Path("null"), metadata, "null", "0" * 64, batch_size, False, "null (no inference)",
                 _runner=run)
