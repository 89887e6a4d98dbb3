"""Host side of the GPU fast path: pinned batch buffers and the fp16 transfer.

Pinned (page-locked) host memory is what lets a host->device copy run at PCIe speed and
asynchronously. :class:`HostAllocator` hands the readers their batch buffers: pinned through
CuPy (``cupyx.empty_pinned``) when CuPy is installed, else through onnxruntime's
host-accessible memory of the CUDA execution provider (ORT >= 1.23 ``get_ep_devices``), else
plain numpy (pageable; the copy still works, only slower). Which one was used is reported.

``--transfer fp16`` halves the bytes on the bus (32^3: 131 kB -> 66 kB per subtomogram): the
readers cast each subtomogram to float16 on the host (in parallel, one box at a time) and the
model gets a float16 input followed by a Cast to float32, so normalisation and everything after
it stay exactly the graph that was exported. :func:`fp16_input_model` makes that graph from the
exported one without the ``onnx`` package (the runtime does not depend on it) by editing the
protobuf wire format: the input ``subtomograms`` becomes float16, a ``Cast`` node is put first
and every node that read ``subtomograms`` reads its float32 output instead.
:func:`transfer_parity` compares the fp16-transfer model with the fp32 model on the run's first
items before the run starts (argmax agreement and max |dlogit|, written to the manifest).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from cryoshift.runtime.contract import FP16_AGREEMENT, INPUT_NAME

TRANSFERS = ("fp32", "fp16")
FP16_MAX = 65504.0  # largest finite float16: voxel values beyond it cannot be sent as fp16
CAST_OUTPUT = f"{INPUT_NAME}__fp32"


def transfer_dtype(transfer: str) -> np.dtype:
    if transfer not in TRANSFERS:
        from cryoshift.runtime.errors import InputError

        raise InputError(None, f"--transfer must be one of {', '.join(TRANSFERS)}, not {transfer!r}")
    return np.dtype(np.float16 if transfer == "fp16" else np.float32)


# ---------------------------------------------------------------------------------------------
# Pinned host memory


class HostAllocator:
    """Allocates batch buffers: pinned on GPU backends where a way to pin exists, else numpy.

    ``kind`` says what it gives: ``"cupy-pinned"``, ``"ort-pinned"`` or ``"pageable"``. The
    allocator keeps every buffer's owner alive as long as itself (ORT values back the arrays).
    """

    def __init__(self, pinned: bool = False, device_id: int = 0):
        self.kind = "pageable"
        self.why = "CPU backend" if not pinned else ""
        self._owners: list[Any] = []
        self._make: Callable[[tuple[int, ...], np.dtype], np.ndarray] | None = None
        if not pinned:
            return
        try:
            import cupyx

            self._make = lambda shape, dtype: cupyx.empty_pinned(shape, dtype=dtype)
            self.kind = "cupy-pinned"
            return
        except ImportError:
            pass
        except Exception as exc:  # CuPy present but no usable CUDA driver
            self.why = f"cupy: {type(exc).__name__}"
        memory_info = _ort_pinned_memory_info(device_id)
        if memory_info is not None:
            self._make = lambda shape, dtype: self._ort_pinned(shape, dtype, memory_info)
            self.kind = "ort-pinned"
            return
        self.why = self.why or "neither CuPy nor an ORT CUDA EP device with host-accessible memory"

    def _ort_pinned(self, shape: tuple[int, ...], dtype: np.dtype, memory_info: Any) -> np.ndarray:
        import onnxruntime as ort

        value = ort.OrtValue.ortvalue_from_shape_and_type(
            list(shape), np.dtype(dtype).type, memory_info=memory_info
        )
        self._owners.append(value)
        return view_of_pointer(value.data_ptr(), shape, dtype)

    def empty(self, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
        dtype = np.dtype(dtype)
        if self._make is not None:
            try:
                out = self._make(tuple(shape), dtype)
                out[...] = 0
                return out
            except Exception as exc:  # pinning can fail (limits, no driver): fall back, say so
                self.kind, self.why, self._make = "pageable", f"pinning failed ({type(exc).__name__})", None
        return np.zeros(shape, dtype)

    def describe(self) -> str:
        return self.kind + (f" ({self.why})" if self.kind == "pageable" and self.why else "")


def view_of_pointer(ptr: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """A numpy array over host memory at ``ptr`` (the caller keeps the memory alive)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = (ctypes.c_byte * nbytes).from_address(ptr)
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _ort_pinned_memory_info(device_id: int) -> Any:
    """Host-accessible (pinned) memory info of ORT's CUDA EP device ``device_id``, or None."""
    try:
        import onnxruntime as ort

        devices = ort.get_ep_devices()
        kind = ort.OrtDeviceMemoryType.HOST_ACCESSIBLE
    except (ImportError, AttributeError):
        return None
    for dev in devices:
        if dev.ep_name != "CUDAExecutionProvider":
            continue
        if int(getattr(dev.device, "device_id", 0)) not in (device_id, 0):
            continue
        try:
            return dev.memory_info(kind)
        except Exception:
            return None
    return None


def register_pinned(array: np.ndarray) -> bool:
    """Page-lock existing host memory (e.g. the reader processes' shared block) through CuPy."""
    try:
        import cupy
    except ImportError:
        return False
    try:
        cupy.cuda.runtime.hostRegister(array.ctypes.data, array.nbytes, 0)
    except Exception:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# float16 input graph: a protobuf wire-format edit (the runtime does not depend on onnx)


def _varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _enc_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _fields(data: bytes | memoryview) -> Iterator[tuple[int, int, bytes | int, bytes]]:
    """(field number, wire type, value, the field's raw bytes) of a serialised message."""
    pos, n = 0, len(data)
    while pos < n:
        start = pos
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        value: bytes | int
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = bytes(data[pos : pos + 8]), pos + 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = bytes(data[pos : pos + length]), pos + length
        elif wire == 5:
            value, pos = bytes(data[pos : pos + 4]), pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value, bytes(data[start:pos])


def _len_field(number: int, payload: bytes) -> bytes:
    return _enc_varint(number << 3 | 2) + _enc_varint(len(payload)) + payload


def _int_field(number: int, value: int) -> bytes:
    return _enc_varint(number << 3) + _enc_varint(value)


def _string(value: bytes | int) -> str:
    assert isinstance(value, bytes)
    return value.decode()


# ONNX field numbers (onnx.proto3): ModelProto.graph 7; GraphProto.node 1, input 11;
# NodeProto.input 1, output 2, name 3, op_type 4, attribute 5; AttributeProto name 1, i 3, type 20;
# ValueInfoProto.name 1, type 2; TypeProto.tensor_type 1; TypeProto.Tensor.elem_type 1.
_FLOAT, _FLOAT16, _ATTR_INT = 1, 10, 2


def _retype_value_info(raw: bytes, elem_type: int) -> bytes:
    out = b""
    for number, _wire, value, field in _fields(raw):
        if number == 2:  # TypeProto
            tproto = b""
            for tn, _tw, tv, tf in _fields(value):  # type: ignore[arg-type]
                if tn == 1:  # Tensor
                    tensor = b"".join(
                        _int_field(1, elem_type) if n == 1 else f for n, _w, _v, f in _fields(tv)
                    )  # type: ignore[arg-type]
                    tproto += _len_field(1, tensor)
                else:
                    tproto += tf
            out += _len_field(2, tproto)
        else:
            out += field
    return out


def _input_elem_type(raw: bytes) -> int | None:
    for number, _w, value, _f in _fields(raw):
        if number == 2:
            for tn, _tw, tv, _tf in _fields(value):  # type: ignore[arg-type]
                if tn == 1:
                    for n, _w2, v, _f2 in _fields(tv):  # type: ignore[arg-type]
                        if n == 1:
                            return int(v)  # type: ignore[arg-type]
    return None


def _rename_node_inputs(raw: bytes, old: str, new: str) -> bytes:
    out = b""
    for number, _wire, value, field in _fields(raw):
        if number == 1 and _string(value) == old:
            out += _len_field(1, new.encode())
        else:
            out += field
    return out


def fp16_input_model(model: bytes) -> bytes:
    """The same ONNX model with a float16 ``subtomograms`` input cast to float32 first.

    A model whose input is already float16 comes back unchanged. Raises ValueError for a graph
    without a float32 ``subtomograms`` input.
    """
    graph_raw: bytes | None = None
    head, tail = b"", b""
    for number, _wire, value, field in _fields(model):
        if number == 7 and graph_raw is None:
            graph_raw = value  # type: ignore[assignment]
        elif graph_raw is None:
            head += field
        else:
            tail += field
    if graph_raw is None:
        raise ValueError("not an ONNX model (no graph)")
    nodes: list[bytes] = []
    rest: list[bytes] = []
    found = False
    for number, _wire, value, field in _fields(graph_raw):
        if number == 1:
            nodes.append(_rename_node_inputs(value, INPUT_NAME, CAST_OUTPUT))  # type: ignore[arg-type]
        elif number == 11 and any(n == 1 and _string(v) == INPUT_NAME for n, _w, v, _f in _fields(value)):  # type: ignore[arg-type]
            elem = _input_elem_type(value)  # type: ignore[arg-type]
            if elem == _FLOAT16:
                return model
            if elem != _FLOAT:
                raise ValueError(f"input {INPUT_NAME!r} has ONNX element type {elem}, not float32")
            rest.append(_len_field(11, _retype_value_info(value, _FLOAT16)))  # type: ignore[arg-type]
            found = True
        else:
            rest.append(field)
    if not found:
        raise ValueError(f"the graph has no input {INPUT_NAME!r}")
    attr = _len_field(1, b"to") + _int_field(3, _FLOAT) + _int_field(20, _ATTR_INT)
    cast = (
        _len_field(1, INPUT_NAME.encode())
        + _len_field(2, CAST_OUTPUT.encode())
        + _len_field(3, b"cryoshift_fp16_transfer_cast")
        + _len_field(4, b"Cast")
        + _len_field(5, attr)
    )
    graph = _len_field(1, cast) + b"".join(_len_field(1, n) for n in nodes) + b"".join(rest)
    return head + _len_field(7, graph) + tail


# ---------------------------------------------------------------------------------------------
# Parity of the fp16 transfer against fp32, on the run's first items


@dataclass
class TransferParity:
    items: int
    argmax_agreement: float
    max_abs_dlogit: float
    reference: str
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "argmax_agreement": round(self.argmax_agreement, 6),
            "max_abs_dlogit": float(self.max_abs_dlogit),
            "reference": self.reference,
            "threshold": FP16_AGREEMENT,
            "passed": self.passed,
        }


def compare(reference: np.ndarray, candidate: np.ndarray, name: str) -> TransferParity:
    n = len(reference)
    if n == 0:
        return TransferParity(0, 1.0, 0.0, name, True)
    agree = float(np.mean(reference.argmax(1) == candidate.argmax(1)))
    diff = float(np.max(np.abs(reference.astype(np.float64) - candidate.astype(np.float64))))
    return TransferParity(n, agree, diff, name, agree >= FP16_AGREEMENT and np.isfinite(diff))


def transfer_parity(model: Any, reference: Any, volumes: np.ndarray) -> TransferParity:
    """fp16-transfer ``model`` vs the fp32 ``reference`` model on ``volumes`` (N, 1, D, D, D) fp32."""
    ref_logits, _ = reference.predict(np.ascontiguousarray(volumes, np.float32))
    # The same host cast the readers do (values beyond +-65504 never reach here: they are error rows).
    cand_logits, _ = model.predict(volumes.astype(np.float16))
    return compare(ref_logits, cand_logits, reference.description)


def _reference_model(model: Any) -> Any:
    """The fp32 model to check an fp16 transfer against: the ONNX on the CPU EP. For an engine, the
    ONNX it was built from, found as :func:`~cryoshift.runtime.engine_sidecar.reference_onnx` finds
    it (next to the engine, with the sidecar's sha256); None when there is none."""
    from pathlib import Path

    from cryoshift.runtime.backends import load_model

    path: Path | None = Path(model.path)
    if model.backend == "engine":
        from cryoshift.runtime.engine_sidecar import read_engine_sidecar, reference_onnx

        path = reference_onnx(read_engine_sidecar(model.path))
        if path is None:
            return None
    return load_model(path, "cpu", batch_size=model.batch_size)


def startup_parity(
    model: Any, items: list[Any], cache: Any, voxel_size: float | None, limit: int = 64
) -> dict[str, Any] | None:
    """Check an fp16-transfer ``model`` against fp32 on the run's first good items (None for fp32).

    Raises InputError when argmax agreement falls under the fp16 bar; the figures go into the
    manifest either way.
    """
    if np.dtype(model.input_dtype) != np.float16:
        return None
    from cryoshift.runtime.errors import InputError
    from cryoshift.runtime.readers import fill

    reference = _reference_model(model)
    if reference is None:
        return {"checked": False, "reason": "no fp32 ONNX next to the engine to compare with"}
    box = model.metadata.box_size
    chunk = items[: limit * 2]
    volumes = np.zeros((len(chunk), 1, box, box, box), np.float32)
    good, _ = fill(chunk, volumes, cache, voxel_size)
    volumes = volumes[: min(len(good), limit)]
    volumes = volumes[np.abs(volumes).reshape(len(volumes), -1).max(axis=1) <= FP16_MAX]
    if not len(volumes):
        return {"checked": False, "reason": "no readable item among the first ones"}
    report = transfer_parity(model, reference, volumes).to_dict()
    report["checked"] = True
    if not report["passed"]:
        agreement = report["argmax_agreement"]
        raise InputError(
            model.path,
            f"--transfer fp16 changes predictions: argmax agreement {agreement:.1%}"
            f" < {FP16_AGREEMENT:.0%} with fp32 on the first {report['items']} "
            "subtomograms; use --transfer fp32",
        )
    return report
