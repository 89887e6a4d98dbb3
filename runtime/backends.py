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

Two batches in flight: the GPU runners hold ``slots`` (2) device input buffers. The pipeline
uploads batch n+1 into one slot (``Model.upload``, on its own thread) while batch n computes in
the other (``Model.compute``). ORT: one IO binding per slot, ``run_with_iobinding``; native
engine: one CUDA stream per slot (CuPy), else a single slot on the default stream.
``transfer="fp16"``: the model gets a float16 input cast to float32 first in the graph
(:func:`cryoshift.runtime.transfer.fp16_input_model`), so half the bytes cross the bus.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cryoshift.runtime.contract import FEATURES, INPUT_NAME, LOGITS, OUTPUT_NAMES
from cryoshift.runtime.engine_sidecar import file_sha256
from cryoshift.runtime.errors import InputError, MissingExtraError, missing_reason
from cryoshift.runtime.hostmem import capped_threads
from cryoshift.runtime.metadata import ModelMetadata
from cryoshift.runtime.transfer import fp16_input_model, transfer_dtype

BACKENDS = ("auto", "cpu", "cuda", "tensorrt", "engine")
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def _ort() -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise MissingExtraError("cpu", "running an ONNX model", exc) from exc
    ort.set_default_logger_severity(3)
    return ort


def check_outputs(
    out: tuple[Any, Any], rows: int, meta: ModelMetadata, path: str | Path
) -> tuple[np.ndarray, np.ndarray]:
    """(logits, features) of one run of the graph on ``rows`` rows, as float32, once they are
    what the model contract says: floating point, 2-D, exactly ``rows`` rows (one per subtomogram,
    padding included), one logit per class of the metadata, and the features width the metadata's
    statistics have (an empty features array is a model without them: no shift score, by contract).

    Why on every run (a few comparisons): a graph whose output shape is decided by the data passes
    every load-time check. A fixed row concatenated on top shifted every answer onto the next
    subtomogram, an extra column wrote CSV rows wider than the header, a mean over the batch or a
    rank-3 output crashed as a traceback, integer or bool logits were scored as floats. All are the
    model's fault and would hit every batch: the run stops with one line, not an error row.
    """
    logits = _contract_output(out[0], LOGITS, rows, f"{rows}x{meta.num_classes}", path)
    features = _contract_output(out[1], FEATURES, rows, f"{rows}xF", path)
    if logits.shape[1] != meta.num_classes:
        raise InputError(
            path,
            f"its {LOGITS!r} output has shape {_shape(logits)} for a batch of {rows} subtomograms, but "
            f"the metadata names {meta.num_classes} classes ({rows}x{meta.num_classes} wanted); "
            "export the model again",
        )
    if features.shape[1]:
        from cryoshift.runtime.metadata import check_feature_width

        check_feature_width(features.shape[1], meta, path)
    return logits, features


def _shape(array: np.ndarray) -> str:
    return "x".join(str(d) for d in array.shape) if array.ndim else "() (a scalar)"


# numpy dtype kinds a batch may have: float, signed and unsigned integer (cast to the input type)
_REAL_KINDS = "fiu"


def _rows(mask: np.ndarray, shown: int = 8) -> str:
    """``rows 1, 3`` (``row 1``) of a boolean mask, the first ``shown`` and how many more."""
    rows = np.flatnonzero(mask)
    named = ", ".join(str(int(r)) for r in rows[:shown])
    more = f" and {len(rows) - shown} more" if len(rows) > shown else ""
    return f"{'row' if len(rows) == 1 else 'rows'} {named}{more}"


def _contract_output(value: Any, name: str, rows: int, wanted: str, path: str | Path) -> np.ndarray:
    """One output as a float32 (rows, width) array, or one line naming it, its shape and the wanted one.

    float16 and float64 are cast (the scores are computed in float64 anyway); anything else
    (integers, bool, strings) is not a score the contract allows."""
    array = np.asarray(value)
    if array.dtype.kind != "f":
        kind = "text" if array.dtype.kind in "OSU" else str(array.dtype)
        raise InputError(
            path,
            f"its {name!r} output is of type {kind}, not floating point (the model contract "
            "wants float32); export the model again",
        )
    if array.ndim != 2 or array.shape[0] != rows:
        raise InputError(
            path,
            f"its {name!r} output has shape {_shape(array)} for a batch of {rows} subtomograms; the "
            f"model contract wants {wanted} (one row per subtomogram); export the model again",
        )
    return array if array.dtype == np.float32 else array.astype(np.float32)


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
    input_dtype: Any = np.float32  # float16 with --transfer fp16
    slots: int = 0  # device input buffers for upload/compute overlap (0: predict only)
    pinned: bool = False  # batch buffers should be pinned host memory (GPU backends)
    device_id: int = 0
    has_features: bool | None = None  # a 'features' output; None: not known without running it
    _ran: set[int] = field(default_factory=set)  # batch rows the graph has run once (see _first_run)

    def _outputs(self, out: tuple[Any, Any], rows: int) -> tuple[np.ndarray, np.ndarray]:
        """One run's raw outputs on ``rows`` rows, checked and as float32 (:func:`check_outputs`)."""
        return check_outputs(out, rows, self.metadata, self.path)

    def _first_run(self, rows: int, call: Any) -> tuple[np.ndarray, np.ndarray]:
        """``call()``, which runs the graph on ``rows`` rows of the model's input shape
        (:meth:`check_batch` checked the rest); the first time at that many rows, a failure is the
        model's: one line naming it and the shape of the batch run.

        Why: a graph with a Reshape to a fixed batch passes every load-time check, then failed on
        its first batch (or only on a run's smaller last batch) as onnxruntime's own exception, a
        traceback. A failure at a row count that already ran is not the model's shape: raised as is.
        """
        if rows in self._ran:
            return call()
        from cryoshift.runtime.metadata import ort_failure

        try:
            out = call()
        except (InputError, MemoryError):
            raise
        except Exception as exc:  # onnxruntime's own types (onnxruntime_pybind11_state.Fail, ...)
            raise InputError(
                self.path,
                f"the model cannot run on a batch of shape {self.batch_shape(rows)} "
                f"(--batch-size {self.batch_size}): {ort_failure(exc)}",
            ) from exc
        self._ran.add(rows)
        return out

    def batch_shape(self, rows: int | str = "N") -> str:
        """The input shape the model runs on, ``rows``x1xDxDxD (D: the model's box size)."""
        box = self.metadata.box_size
        return f"{rows}x1x{box}x{box}x{box}"

    def check_batch(self, batch: np.ndarray) -> None:
        """Refuse a ``batch`` that is not (N, 1, D, D, D) of the model's box size D, in one line
        naming the shape passed and the shape expected. Why: onnxruntime's own error on a wrong
        box or a missing channel axis was reported under the model's shape (the one expected), so
        a caller of :meth:`predict` read their array's shape as the right one.

        Its type must be a real number (float or integer: cast to the model's input type). Why:
        a bool batch was cast to 0/1 volumes and a complex one lost its imaginary part (a numpy
        ComplexWarning at most), each classified without a word."""
        shape = getattr(batch, "shape", None)
        box = self.metadata.box_size
        if shape is None or tuple(shape[1:]) != (1, box, box, box):
            passed = _shape(batch) if shape is not None else f"a {type(batch).__name__}, not an array"
            raise InputError(
                self.path,
                f"predict() was passed a batch of shape {passed}; the model takes "
                f"{self.batch_shape()} (N volumes, 1 channel, box {box})",
            )
        dtype = getattr(batch, "dtype", None)
        if dtype is not None and np.dtype(dtype).kind not in _REAL_KINDS:
            raise InputError(
                self.path,
                f"predict() was passed a batch of type {dtype}; the model takes real numbers "
                f"({np.dtype(self.input_dtype)}; other float and integer types are cast)",
            )

    def check_values(self, batch: np.ndarray, n: int) -> None:
        """Refuse a batch whose first ``n`` volumes hold NaN/Inf, or values beyond +-VALUE_LIMIT
        (or beyond the model's float16 input range with ``transfer="fp16"``), in one line naming
        those volumes by their row.

        Why: the graph returned NaN logits for them (an all-NaN batch came back all NaN, a partly
        NaN one NaN rows among good ones), which a caller's ``argmax`` reads as class 0. classify
        refuses such a volume when it is read ("contains NaN or infinite values",
        runtime/sources/load.py) and makes it an error row; an array has no file to name, so its
        rows are named. Per-volume min and max: NaN fails both comparisons, so one test covers
        NaN, Inf and absurd magnitudes (and a float64 value that float32 cannot hold)."""
        if n <= 0:
            return
        from cryoshift.runtime.sources import VALUE_LIMIT

        held = float(np.finfo(np.dtype(self.input_dtype)).max)  # float16: 65504, itself allowed
        flat = np.asarray(batch[:n]).reshape(n, -1)
        lo, hi = flat.min(axis=1).astype(np.float64), flat.max(axis=1).astype(np.float64)
        ok = (lo > -VALUE_LIMIT) & (hi < VALUE_LIMIT) & (lo >= -held) & (hi <= held)
        if ok.all():
            return
        nonfinite = ~(np.isfinite(lo) & np.isfinite(hi))
        parts = []
        if nonfinite.any():
            parts.append(f"NaN or infinite values in {_rows(nonfinite)}")
        if (~ok & ~nonfinite).any():
            limit = f"+-{VALUE_LIMIT:.0e}" if held > VALUE_LIMIT else f"+-{held:g} (float16 input)"
            parts.append(f"values beyond {limit} in {_rows(~ok & ~nonfinite)}")
        raise InputError(
            self.path,
            f"predict() was passed a batch of {n} volumes with {'; '.join(parts)}: the model would "
            "return NaN or meaningless logits for them; drop or fix those volumes",
        )

    def predict(
        self, batch: np.ndarray, n: int | None = None, *, values_checked: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Logits (n, K) and features (n, F), float32, for the first ``n`` rows of ``batch`` (B, 1, D, D, D).

        Fixed-shape backends compute the whole (padded) batch and return the first ``n`` rows,
        so GPU kernels are tuned once; the CPU backend computes only the rows it needs. Every run
        of the graph is checked against the contract (:func:`check_outputs`) before any row is
        sliced off: padding is the only thing dropped here. A batch of another shape or of a type
        that is not a real number is refused, naming it (:meth:`check_batch`), and so are volumes
        holding NaN/Inf or absurd values, naming their rows (:meth:`check_values`).

        A float64 or integer batch is cast to the model's input type (float32, or float16 with
        ``transfer="fp16"``): subtomogram intensities lose nothing a float32 graph would use, and
        values float32 cannot hold are refused before the cast. An empty batch (0 volumes) gives
        empty arrays, (0, K) and (0, F), as numpy reductions over nothing do.

        ``values_checked=True``: the caller checked every volume's values when it read them (the
        classify pipeline refuses a non-finite volume as an error row), so the per-volume pass of
        :meth:`check_values` over the batch is not repeated on the hot path.
        """
        self.check_batch(batch)
        if not values_checked:
            self.check_values(batch, batch.shape[0] if n is None else n)
        rows = self.batch_size if self.fixed_batch else (batch.shape[0] if n is None else n)
        return self._first_run(rows, lambda: self._predict(batch, n))

    def _predict(self, batch: np.ndarray, n: int | None) -> tuple[np.ndarray, np.ndarray]:
        n = batch.shape[0] if n is None else n
        if not self.fixed_batch:
            return self._outputs(self._runner(np.ascontiguousarray(batch[:n], dtype=self.input_dtype)), n)
        if batch.shape[0] == self.batch_size:
            full = np.ascontiguousarray(batch, dtype=self.input_dtype)
            logits, features = self._outputs(self._runner(full), self.batch_size)
            return logits[:n], features[:n]
        # Any other size (API users): run fixed-size pieces, padding the last one.
        pad = np.zeros((self.batch_size, *batch.shape[1:]), self.input_dtype)
        parts = []
        for start in range(0, n, self.batch_size):
            piece = batch[start : min(start + self.batch_size, n)]
            pad[: len(piece)] = piece
            logits, features = self._outputs(self._runner(pad), self.batch_size)
            parts.append((logits[: len(piece)].copy(), features[: len(piece)].copy()))
        if not parts:  # n == 0: empty outputs of the right width
            logits, features = self._outputs(self._runner(pad), self.batch_size)
            return logits[:0], features[:0]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def upload(self, slot: int, batch: np.ndarray) -> None:
        """Copy a full batch (``batch_size`` rows) into device slot ``slot`` (thread-safe per slot)."""
        self._runner.upload(slot, np.ascontiguousarray(batch, dtype=self.input_dtype))

    def compute(self, slot: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Run the batch held in ``slot``; logits and features of its first ``n`` rows, on the host."""
        rows = self.batch_size
        logits, features = self._first_run(rows, lambda: self._outputs(self._runner.run(slot), rows))
        return logits[:n], features[:n]

    @property
    def num_features(self) -> int:
        return len(self.metadata.feature_mean)


# ---------------------------------------------------------------------------------------------
# ONNX Runtime


class _OrtCpu:
    def __init__(self, sess: Any):
        self.sess = sess
        names = [o.name for o in sess.get_outputs()]
        self.has_features = FEATURES in names
        self.outputs = list(OUTPUT_NAMES) if self.has_features else [LOGITS]

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self.sess.run(self.outputs, {INPUT_NAME: batch})
        feats = out[1] if self.has_features else np.zeros((batch.shape[0], 0), np.float32)
        return out[0], feats


class _OrtIoBinding:
    """CUDA / TensorRT EP runner: ``slots`` fixed-shape device inputs, each with its own IO binding.

    ``upload(slot, batch)`` copies a host batch into the slot's bound device buffer (a
    synchronous copy, from pinned memory when the readers use it); ``run(slot)`` runs the
    session on it and copies the small outputs back. While the pipeline's model thread runs
    one slot, its upload thread fills the other: ORT computes on its own (non-blocking) stream,
    so the copy of batch n+1 overlaps the compute of batch n. Works on the CPU EP too
    (``device="cpu"``), which is how the tests exercise it.
    """

    def __init__(
        self,
        ort: Any,
        sess: Any,
        batch_size: int,
        box: int,
        device_id: int,
        device: str = "cuda",
        slots: int = 2,
        dtype: Any = np.float32,
    ):
        self.sess = sess
        names = [o.name for o in sess.get_outputs()]
        self.has_features = FEATURES in names
        self.batch_size = batch_size
        shape = [batch_size, 1, box, box, box]
        self.inputs = []
        self.bindings = []
        for _ in range(max(1, slots)):
            value = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.dtype(dtype).type, device, device_id)
            binding = sess.io_binding()
            binding.bind_ortvalue_input(INPUT_NAME, value)
            binding.bind_output(LOGITS, device, device_id)
            if self.has_features:
                binding.bind_output(FEATURES, device, device_id)
            self.inputs.append(value)
            self.bindings.append(binding)

    def upload(self, slot: int, batch: np.ndarray) -> None:
        self.inputs[slot].update_inplace(batch)  # one host->device copy into the bound buffer

    def run(self, slot: int) -> tuple[np.ndarray, np.ndarray]:
        binding = self.bindings[slot]
        self.sess.run_with_iobinding(binding)
        outs = binding.copy_outputs_to_cpu()  # small: (B, K) and (B, F)
        feats = outs[1] if self.has_features else np.zeros((self.batch_size, 0), np.float32)
        return outs[0], feats

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.upload(0, batch)
        return self.run(0)


def _session_options(ort: Any, threads: int | None) -> Any:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Fatal only: a graph that fails on a batch was also printed by onnxruntime as its own
    # "[E:onnxruntime:...]" line before our one-line error, which says the same (Model._first_run;
    # session errors all come back as exceptions). Warnings were already off (3). The default
    # logger (_ort) stays at errors: a GPU provider library that fails to load says why only there.
    opts.log_severity_level = 4
    threads = capped_threads(threads)
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    # Idle inference threads sleep instead of spinning: the reader threads share these cores
    # (measured on 2 shared cores: end to end 165 -> 206 subtomograms/s, inference-only not slower).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def _log(message: str) -> None:
    """Progress notes for slow one-off steps, on stderr (stdout stays for results)."""
    from cryoshift.runtime.terminal import say

    say(f"cryoshift: {message}")


def gpu_name(device_id: int = 0) -> str | None:
    """Name of GPU ``device_id``, or None when there is no GPU: the one lookup that engine sidecars
    are written with (export) and checked against (here), so the two can never disagree."""
    from cryoshift.runtime.engine_sidecar import query_gpu_name

    return query_gpu_name(device_id)


def _tensorrt_version() -> str:
    try:
        import tensorrt

        return str(tensorrt.__version__)
    except ImportError:
        return "unknown"


def trt_cache_dir(
    model_sha: str, device_id: int = 0, root: str | Path | None = None, variant: str = ""
) -> Path:
    """Engine-cache folder keyed by GPU model, TensorRT, ORT and ONNX hash (a stale cache never loads).

    ``variant`` ("fp16-input" for ``--transfer fp16``) keeps engines of the edited graph apart.
    """
    ort = _ort()
    key = "|".join(
        [
            gpu_name(device_id) or "gpu",
            _tensorrt_version(),
            ort.__version__,
            model_sha,
            *([variant] if variant else []),
        ]
    )
    base = Path(root or os.environ.get("CRYOSHIFT_TRT_CACHE", Path.home() / ".cache" / "cryoshift" / "trt"))
    return base / hashlib.sha256(key.encode()).hexdigest()[:16]


def _ort_session(
    path: Path,
    backend: str,
    meta: ModelMetadata,
    sha: str,
    batch_size: int,
    threads: int | None,
    device_id: int,
    cache_root: str | Path | None,
    model_bytes: bytes | None = None,
) -> tuple[Any, str]:
    ort = _ort()
    source: str | bytes = model_bytes if model_bytes is not None else str(path)
    opts = _session_options(ort, threads if backend == "cpu" else None)
    box = meta.box_size
    if backend == "cpu":
        providers: list[Any] = ["CPUExecutionProvider"]
    elif backend == "cuda":
        cuda = {
            "device_id": device_id,
            "cudnn_conv_algo_search": "EXHAUSTIVE",
            "do_copy_in_default_stream": True,
        }
        providers = [("CUDAExecutionProvider", cuda), "CPUExecutionProvider"]
    else:  # tensorrt
        cache = trt_cache_dir(sha, device_id, cache_root, "fp16-input" if model_bytes is not None else "")
        cache.mkdir(parents=True, exist_ok=True)
        if model_bytes is not None:  # the TensorRT EP keys its engine files by model path: give it one
            edited = cache / "model.fp16-input.onnx"
            if not edited.is_file() or edited.read_bytes() != model_bytes:
                edited.write_bytes(model_bytes)
            source = str(edited)
        if not any(cache.glob("*.engine")):
            _log(
                f"building a TensorRT engine for this model and GPU (first run: can take minutes; "
                f"cached in {cache})"
            )
        dims = f"1x{box}x{box}x{box}"
        trt = {
            "device_id": device_id,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache),
            "trt_profile_min_shapes": f"{INPUT_NAME}:1x{dims}",
            "trt_profile_opt_shapes": f"{INPUT_NAME}:{batch_size}x{dims}",
            "trt_profile_max_shapes": f"{INPUT_NAME}:{batch_size}x{dims}",
        }
        providers = [
            ("TensorrtExecutionProvider", trt),
            ("CUDAExecutionProvider", {"device_id": device_id, "cudnn_conv_algo_search": "EXHAUSTIVE"}),
            "CPUExecutionProvider",
        ]
    try:
        sess = ort.InferenceSession(source, opts, providers=providers)
    except Exception as exc:  # ORT raises its own types for bad files and missing libraries
        from cryoshift.runtime.metadata import ort_failure

        reason = ort_failure(exc)
        raise InputError(path, f"cannot open the model with the {backend} backend: {reason}") from exc
    return sess, sess.get_providers()[0]


def _fixed_batch(shape: list[Any], batch_size: int, path: Path, box: int) -> int | None:
    """The input's fixed batch size (None when dynamic, as the contract wants), refused in one line
    unless it is ``batch_size`` (then every batch is fed at that size, the last one padded).

    Why: such a graph passes every other load-time check, then failed on the first batch of
    another size as onnxruntime's own exception, a traceback.
    """
    rows = shape[0] if shape else None
    if not isinstance(rows, int) or rows == batch_size:
        return rows if isinstance(rows, int) else None
    raise InputError(
        path,
        f"input has a fixed batch size {rows}, so it cannot run a batch of shape "
        f"{batch_size}x1x{box}x{box}x{box} (--batch-size {batch_size}); cryoshift needs a dynamic "
        f"batch axis: re-export with `cryoshift export` (or pass --batch-size {rows})",
    )


_WANTED_PROVIDER = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def _load_onnx(
    path: Path,
    backend: str,
    batch_size: int,
    threads: int | None,
    device_id: int,
    cache_root: str | Path | None,
    transfer: str = "fp32",
    slots: int | None = None,
) -> Model:
    from cryoshift.runtime.metadata import read_onnx_model

    meta, _, input_shape = read_onnx_model(path)
    # before the backend's session: a TensorRT one builds its engine first (minutes)
    fixed_rows = _fixed_batch(input_shape, batch_size, path, meta.box_size)
    if backend == "cpu":  # lowered once here, so the description says what the session got
        threads = capped_threads(threads)
    wanted = _WANTED_PROVIDER[backend]
    if wanted not in _ort().get_available_providers():
        extra = "gpu" if backend != "cpu" else "cpu"
        raise InputError(
            path,
            f"backend {backend} needs onnxruntime with {wanted}, which this install "
            f"lacks: pip install 'cryoshift[{extra}]' (or use --backend auto)",
        )
    sha = file_sha256(path)
    dtype = transfer_dtype(transfer)
    model_bytes = None
    if dtype == np.float16:
        try:
            model_bytes = fp16_input_model(path.read_bytes())
        except (ValueError, IndexError) as exc:
            raise InputError(path, f"cannot make a float16-input graph for --transfer fp16 ({exc})") from exc
    sess, provider = _ort_session(
        path, backend, meta, sha, batch_size, threads, device_id, cache_root, model_bytes
    )
    if provider != _WANTED_PROVIDER[backend]:
        raise InputError(path, f"backend {backend} is not usable here (onnxruntime fell back to {provider})")
    inputs = sess.get_inputs()
    if not inputs or inputs[0].name != INPUT_NAME:
        raise InputError(path, f"model input must be named {INPUT_NAME!r} (see the model contract)")
    slots = (0 if backend == "cpu" else 2) if slots is None else slots
    if backend == "cpu" and not slots:
        runner: Any = _OrtCpu(sess)
        fixed = fixed_rows is not None  # full (padded) batches of that size, a smaller last one too
    else:  # IO binding: GPU backends, or the CPU EP when asked for slots (tests of the GPU path)
        runner = _OrtIoBinding(
            _ort(),
            sess,
            batch_size,
            meta.box_size,
            device_id,
            "cpu" if backend == "cpu" else "cuda",
            max(1, slots),
            dtype,
        )
        fixed = True
    ort = _ort()
    desc = (
        f"{backend} (onnxruntime {ort.__version__}, {provider}"
        + (f", device {device_id}" if backend != "cpu" else f", {threads or 'all'} threads")
        + (f", {slots} batches in flight" if slots > 1 else "")
        + (", fp16 transfer)" if model_bytes is not None else ")")
    )
    return Model(
        path,
        meta,
        backend,
        sha,
        batch_size,
        fixed,
        desc,
        _runner=runner,
        input_dtype=dtype,
        slots=slots if slots > 1 else 0,
        pinned=backend != "cpu",
        device_id=device_id,
    )


# ---------------------------------------------------------------------------------------------
# Native TensorRT engine


class _TrtEngine:
    """Runs a deserialised engine.

    With CuPy: ``slots`` device buffer sets, each with its own non-blocking CUDA stream, so the
    upload of one slot (on the upload thread) overlaps ``execute_async_v3`` of the other.
    Without CuPy: one slot of ORT CUDA OrtValues on the default stream (copies and compute in
    order, no overlap).
    """

    def __init__(self, path: Path, batch_size: int, box: int, device_id: int, slots: int = 2):
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise MissingExtraError("tensorrt", "running a TensorRT engine", exc) from exc
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise InputError(
                path,
                "TensorRT could not deserialise this engine (built for another GPU or TensorRT version?)",
            )
        self.context = self.engine.create_execution_context()
        self.context.set_input_shape(INPUT_NAME, (batch_size, 1, box, box, box))
        self.batch_size = batch_size
        self.device_id = device_id
        self.specs: dict[str, tuple[tuple[int, ...], Any]] = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            self.specs[name] = (
                tuple(self.context.get_tensor_shape(name)),
                np.dtype(trt.nptype(self.engine.get_tensor_dtype(name))),
            )
        self.input_dtype = self.specs[INPUT_NAME][1]
        self.has_features = FEATURES in self.specs
        try:
            import cupy
        except ImportError:
            cupy = None
        self.cupy = cupy
        self.buffers: list[dict[str, Any]] = []
        self.streams: list[Any] = []
        if cupy is not None:
            with cupy.cuda.Device(device_id):
                for _ in range(max(1, slots)):
                    self.streams.append(cupy.cuda.Stream(non_blocking=True))
                    self.buffers.append(
                        {n: cupy.empty(shape, dtype) for n, (shape, dtype) in self.specs.items()}
                    )
        else:
            ort = _ort()
            self.buffers.append(
                {
                    n: ort.OrtValue.ortvalue_from_shape_and_type(list(shape), dtype.type, "cuda", device_id)
                    for n, (shape, dtype) in self.specs.items()
                }
            )
        self.slots = len(self.buffers)

    @staticmethod
    def _ptr(buf: Any) -> int:
        return int(buf.data.ptr) if hasattr(buf, "data") and hasattr(buf.data, "ptr") else int(buf.data_ptr())

    def upload(self, slot: int, batch: np.ndarray) -> None:
        buf = self.buffers[slot][INPUT_NAME]
        if self.cupy is None:
            buf.update_inplace(batch)
            return
        with self.cupy.cuda.Device(self.device_id):
            stream = self.streams[slot]
            buf.set(batch, stream=stream)  # async from pinned memory
            stream.synchronize()  # the host buffer goes back to the readers after this

    def run(self, slot: int) -> tuple[np.ndarray, np.ndarray]:
        bufs = self.buffers[slot]
        for name, buf in bufs.items():
            self.context.set_tensor_address(name, self._ptr(buf))
        if self.cupy is None:
            # Default (legacy) stream: the OrtValue copies before and after are ordered with it.
            if not self.context.execute_async_v3(0):
                raise RuntimeError("TensorRT execution failed")
            logits = bufs[LOGITS].numpy()
            feats = bufs[FEATURES].numpy() if self.has_features else None
        else:
            with self.cupy.cuda.Device(self.device_id):
                stream = self.streams[slot]
                if not self.context.execute_async_v3(stream.ptr):
                    raise RuntimeError("TensorRT execution failed")
                logits = bufs[LOGITS].get(stream=stream)
                feats = bufs[FEATURES].get(stream=stream) if self.has_features else None
                stream.synchronize()
        # no cast here: Model.compute checks the dtype (an integer output is refused, not cast)
        return logits, feats if feats is not None else np.zeros((self.batch_size, 0), np.float32)

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.upload(0, batch)
        return self.run(0)


def _load_engine(
    path: Path, batch_size: int, device_id: int, transfer: str = "fp32", slots: int | None = None
) -> Model:
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
        raise InputError(
            path, "a TensorRT engine needs a GPU and none is visible; classify with the ONNX model"
        )
    check_engine_compatible(sidecar, name, _tensorrt_version())
    if batch_size > sidecar.batch_max:
        raise InputError(
            path,
            f"engine was built for batches up to {sidecar.batch_max}, not {batch_size}; "
            f"pass --batch-size {sidecar.batch_max}",
        )
    meta = sidecar.metadata
    runner = _TrtEngine(sidecar.path, batch_size, meta.box_size, device_id, 2 if slots is None else slots)
    if runner.input_dtype != transfer_dtype(transfer):
        raise InputError(
            path,
            f"this engine takes {runner.input_dtype} input, not --transfer {transfer}: "
            "build the engine from an ONNX with the matching input type",
        )
    streams = f", {runner.slots} CUDA streams" if runner.slots > 1 else ", default stream"
    desc = f"engine (native TensorRT {_tensorrt_version()}, {sidecar.precision}, {name}{streams})"
    return Model(
        sidecar.path,
        meta,
        "engine",
        sidecar.engine_sha256 or file_sha256(sidecar.path),
        batch_size,
        True,
        desc,
        _runner=runner,
        input_dtype=runner.input_dtype,
        slots=runner.slots if runner.slots > 1 else 0,
        pinned=True,
        device_id=device_id,
    )


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


def load_model(
    path: str | Path,
    backend: str = "auto",
    batch_size: int = 64,
    threads: int | None = None,
    device_id: int = 0,
    cache_dir: str | Path | None = None,
    transfer: str = "fp32",
    slots: int | None = None,
) -> Model:
    """Load an exported model for inference.

    ``auto`` tries TensorRT EP, then CUDA EP, then CPU (a native engine file always uses
    ``engine``) and, on a machine with a GPU, records in ``Model.notes`` why a faster backend was
    passed over.
    ``transfer="fp16"`` feeds the graph float16 (cast to float32 inside it). ``slots``: device
    input buffers for overlapping upload and compute (default 2 on GPU backends, 0 on CPU; a
    CPU model with slots runs through IO binding, which is how the tests exercise that path).
    """
    transfer_dtype(transfer)  # refuses an unknown transfer in one line
    path = Path(path)
    if backend not in BACKENDS:
        import difflib

        close = difflib.get_close_matches(backend, BACKENDS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise InputError(None, f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)}){hint}")
    if not path.is_file():
        missing = missing_reason(path, "no such model file")
        raise InputError(path, "is a folder, not a model file" if path.is_dir() else missing)
    if batch_size < 1:
        raise InputError(None, f"batch size must be positive, not {batch_size}")
    is_engine = path.suffix.lower() in ENGINE_SUFFIXES
    if backend == "engine" or (backend == "auto" and is_engine):
        return _load_engine(path, batch_size, device_id, transfer, slots)
    if is_engine:
        raise InputError(path, f"a TensorRT engine runs only with --backend engine (not {backend})")
    if backend != "auto":
        return _load_onnx(path, backend, batch_size, threads, device_id, cache_dir, transfer, slots)
    notes: list[str] = []
    # Without a GPU the CPU is what auto is expected to choose: nothing was passed over, so
    # nothing is noted (every CPU run, -q too, said "onnxruntime has no CUDAExecutionProvider
    # (install cryoshift[gpu])" as if something were broken). With a GPU, a GPU backend that
    # cannot run is worth a note: the user has the hardware and is not using it.
    candidates = ("tensorrt", "cuda") if gpu_name(device_id) is not None else ()
    have = available_backends() if candidates else []
    for candidate in candidates:
        if candidate not in have:
            provider = _WANTED_PROVIDER[candidate]
            notes.append(f"{candidate}: onnxruntime has no {provider} (install cryoshift[gpu])")
            continue
        try:
            model = _load_onnx(path, candidate, batch_size, threads, device_id, cache_dir, transfer, slots)
        except InputError as exc:
            notes.append(f"{candidate}: {exc.reason}")
            continue
        model.notes = notes
        return model
    model = _load_onnx(path, "cpu", batch_size, threads, device_id, cache_dir, transfer, slots)
    model.notes = notes
    return model


def null_model(metadata: ModelMetadata, num_features: int = 0, batch_size: int = 64) -> Model:
    """A model that computes nothing: the pipeline's own feed rate (read, crop, batch, write)."""
    k = metadata.num_classes

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = batch.shape[0]
        return np.zeros((n, k), np.float32), np.zeros((n, num_features), np.float32)

    return Model(
        Path("null"), metadata, "null", "0" * 64, batch_size, False, "null (no inference)", _runner=run
    )
