"""Readers that fill preallocated batch buffers for the pipeline: threads or processes.

Threads share one process and its memory maps; they are enough on CPU, where inference costs
far more than reading. A GPU can consume subtomograms faster than one Python process reads
them (the GIL binds), so reader *processes* fill slots of one shared-memory block instead; the
model process reads the finished slot in place, with no copy and no pickling of voxels.
Both hand the pipeline the same :class:`Batch` objects on its ``ready`` queue and get each
buffer back through :meth:`release`, so at most ``slots`` batches exist at any time.

Batch buffers come from a :class:`~cryoshift.runtime.transfer.HostAllocator` (pinned host
memory on GPU backends) and have the model's input dtype: with ``--transfer fp16`` each
subtomogram is read as float32 into a one-box scratch, checked, and cast into its float16 row,
so the cast runs in the readers, in parallel, never in the model thread.

How many readers (:func:`reader_workers`): enough that their summed feed rate covers what the
backend can consume, and no more than the cores left after the model and writer threads::

    workers = clamp(ceil(headroom * min(engine_rate, bus_rate) / feed_rate_per_reader),
                    1, usable_cores - 1)

``feed_rate_per_reader`` is the null-model rate of one reader on one core (measured with
``cryoshift bench``: stack ~25,000/s, tomogram + picks ~12,000/s, single files ~3,000/s at 32^3 on
the development machine; scaled by (32/box)^3 for other boxes), ``engine_rate`` the backend's
expected inference rate, ``bus_rate`` the host->device bound (PCIe Gen5 ~50 GB/s over the bytes of
one subtomogram in the transfer dtype) and ``headroom`` 1.25 so a slow file does not starve it.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from cryoshift.runtime.errors import InputError
from cryoshift.runtime.hostmem import usable_cpus
from cryoshift.runtime.sources import Item, VolumeCache, load_item
from cryoshift.runtime.transfer import FP16_MAX, register_pinned

ErrorRow = tuple[str, str, str]
_ITEM_ERRORS = (InputError, OSError, ValueError, IndexError, EOFError)


@dataclass
class Batch:
    number: int  # chunk number: the writer restores input order with it
    buffer: np.ndarray  # (B, 1, D, D, D); rows 0..len(items)-1 hold the good items
    items: list[Item]
    errors: list[ErrorRow]
    read_s: float
    slot: int = -1  # shared-memory slot (process readers)


def error_reason(exc: BaseException) -> str:
    return exc.reason if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"


def fill(
    chunk: list[Item],
    buffer: np.ndarray,
    cache: VolumeCache,
    voxel_size: float | None,
    scratch: np.ndarray | None = None,
) -> tuple[list[int], list[ErrorRow]]:
    """Load ``chunk`` into ``buffer`` rows; returns positions (in ``chunk``) of the good items.

    A float16 ``buffer`` (``--transfer fp16``) is filled through a float32 ``scratch`` box; an
    item whose values do not fit float16 becomes an error row instead of infinities.
    """
    good: list[int] = []
    errors: list[ErrorRow] = []
    half = buffer.dtype != np.float32
    if half and scratch is None:
        scratch = np.empty(buffer.shape[2:], np.float32)
    for pos, item in enumerate(chunk):
        try:
            if half:
                assert scratch is not None
                load_item(item, scratch, cache, voxel_size)
                if max(-float(scratch.min()), float(scratch.max())) > FP16_MAX:
                    raise InputError(
                        item.path,
                        f"values exceed the float16 range (+-{FP16_MAX:.0f}) "
                        "of --transfer fp16; classify it with --transfer fp32",
                    )
                buffer[len(good), 0] = scratch
            else:
                load_item(item, buffer[len(good), 0], cache, voxel_size)
        except _ITEM_ERRORS as exc:
            errors.append((item.id, item.path, error_reason(exc)))
            continue
        except MemoryError:
            raise  # the machine's problem, not the item's: the run stops (resumable)
        except Exception as exc:  # a reader library failing on a file we did not foresee
            # Batch rule: the item is reported and skipped, the others go on. Raised, it ended the
            # reader thread and lost its whole chunk, good files included.
            errors.append((item.id, item.path, f"unexpected error reading it: {error_reason(exc)}"))
            continue
        good.append(pos)
    return good, errors


# Null-model feed rate of one reader on one core at 32^3 (cryoshift bench, development machine).
FEED_RATE_32 = {"stack": 25_000.0, "tomogram": 12_000.0, "file": 3_000.0}
PCIE_BYTES_PER_S = 50e9  # PCIe Gen5 x16 with pinned memory (docs/gpu.md); topology can cut it 3-4x


def reader_workers(
    engine_rate: float,
    kind: str = "stack",
    box: int = 32,
    itemsize: int = 4,
    feed_rate: float | None = None,
    cores: int | None = None,
    headroom: float = 1.25,
) -> int:
    """Readers needed so the feed covers ``engine_rate`` (see the module docstring's formula)."""
    per_reader = feed_rate or FEED_RATE_32.get(kind, FEED_RATE_32["file"]) * (32 / box) ** 3
    bus_rate = PCIE_BYTES_PER_S / (box**3 * itemsize)
    need = math.ceil(headroom * min(engine_rate, bus_rate) / max(per_reader, 1e-9))
    if cores is None:
        cores = usable_cpus()
    return max(1, min(need, cores - 1))


class ThreadReaders:
    """``workers`` threads taking chunks in order and filling buffers from a bounded pool."""

    def __init__(
        self,
        chunks: list[list[Item]],
        batch_size: int,
        box: int,
        workers: int,
        ready: queue.Queue,
        cache: VolumeCache,
        voxel_size: float | None,
        alloc: Any = None,
        dtype: Any = np.float32,
    ):
        self.chunks, self.ready, self.cache, self.voxel_size = chunks, ready, cache, voxel_size
        self.box = box
        self.ends = workers
        self.next = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.pool: queue.Queue = queue.Queue()
        shape = (batch_size, 1, box, box, box)
        for _ in range(min(len(chunks), workers + 2)):
            self.pool.put(alloc.empty(shape, dtype) if alloc is not None else np.zeros(shape, dtype))
        self.threads = [
            threading.Thread(target=self._run, name=f"cryoshift-reader-{i}", daemon=True)
            for i in range(workers)
        ]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def release(self, batch: Batch) -> None:
        self.pool.put(batch.buffer)

    def stop(self) -> None:
        self.stopping.set()
        for t in self.threads:
            if t.ident is not None:  # started (an interrupt can land while start() is under way)
                t.join(timeout=5)

    def _buffer(self) -> np.ndarray | None:
        """A free buffer, or None once the run is stopping (so a failed run never hangs)."""
        while not self.stopping.is_set():
            try:
                return self.pool.get(timeout=0.1)
            except queue.Empty:
                continue
        return None

    def _run(self) -> None:
        scratch = np.empty((self.box,) * 3, np.float32)  # float16 batches are filled through it
        try:
            while not self.stopping.is_set():
                with self.lock:
                    if self.next >= len(self.chunks):
                        return
                    number = self.next
                    self.next += 1
                buffer = self._buffer()
                if buffer is None:
                    return
                t0 = time.perf_counter()
                chunk = self.chunks[number]
                good, errors = fill(chunk, buffer, self.cache, self.voxel_size, scratch)
                read_s = time.perf_counter() - t0
                self.ready.put(Batch(number, buffer, [chunk[i] for i in good], errors, read_s))
        except BaseException as exc:
            # Not an item error (those are rows): hand it to the model thread, which raises it.
            # Left to kill the thread, its chunk was lost and the run still ended with exit 0.
            self.ready.put(exc)
        finally:
            self.ready.put(None)  # one end marker per thread


def _end_with_parent() -> None:
    """End this reader process as soon as the process that started it ends, however it ended.

    Why: after ``kill -9`` of a ``classify --reader-processes`` run its readers waited on their task
    queue forever (they hold its write end themselves, so it never reports end-of-file), and with
    them the fork server (each holds its "alive" pipe): ~200 MB of orphans for good. The parent
    holds the write end of this process's parent sentinel (multiprocessing's own pipe), which
    becomes readable when the parent is gone; a daemon thread waits on it. A parent that stops its
    readers (:meth:`ProcessReaders.stop`) outlives them, so the thread never fires then."""
    import multiprocessing

    parent = multiprocessing.parent_process()
    if parent is None:  # not started by multiprocessing (a test calling it directly)
        return

    def watch() -> None:
        parent.join()  # waits on the sentinel: returns once the parent has ended
        os._exit(1)

    threading.Thread(target=watch, name="cryoshift-parent-watch", daemon=True).start()


def _process_main(
    shm_name: str,
    shape: tuple[int, ...],
    tasks: Any,
    results: Any,
    voxel_size: float | None,
    dtype: str = "float32",
) -> None:
    """Reader process: fill shared-memory slots for the chunks it is sent until told to stop."""
    from multiprocessing import shared_memory

    _end_with_parent()
    # Attaching registers the name with the resource tracker this process shares with its parent
    # (a set: no double entry); the parent's unlink() unregisters it once, at the end.
    shm = shared_memory.SharedMemory(name=shm_name)
    slots = np.ndarray(shape, dtype=np.dtype(dtype), buffer=shm.buf)
    cache = VolumeCache()
    try:
        while (task := tasks.get()) is not None:
            number, slot, chunk = task
            t0 = time.perf_counter()
            try:
                good, errors = fill(chunk, slots[slot], cache, voxel_size)
            except Exception as exc:  # not an item error: tell the collector (the others may live on)
                results.put((number, slot, None, f"{type(exc).__name__}: {exc}", 0.0))
                raise
            results.put((number, slot, good, errors, time.perf_counter() - t0))
    finally:
        del slots
        shm.close()


class ProcessReaders:
    """``workers`` spawned processes filling slots of one shared-memory block."""

    def __init__(
        self,
        chunks: list[list[Item]],
        batch_size: int,
        box: int,
        workers: int,
        ready: queue.Queue,
        voxel_size: float | None,
        dtype: Any = np.float32,
        pinned: bool = False,
    ):
        import multiprocessing as mp
        from multiprocessing import shared_memory

        self.chunks, self.ready = chunks, ready
        self.ends = 1
        n_slots = max(1, min(len(chunks), workers + 2))
        shape = (n_slots, batch_size, 1, box, box, box)
        dtype = np.dtype(dtype)
        self.shm = shared_memory.SharedMemory(create=True, size=max(1, int(np.prod(shape)) * dtype.itemsize))
        self.slots = np.ndarray(shape, dtype=dtype, buffer=self.shm.buf)
        self.slots[...] = 0
        # GPU backends: page-lock the shared block (through CuPy, when installed) for fast copies.
        self.pinned = pinned and register_pinned(self.slots)
        # Never fork this process (its inference threads may hold locks): children come from a
        # single-threaded fork server that has the reader code imported once, so later runs in
        # the same process start their readers in milliseconds.
        method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        ctx = mp.get_context(method)
        if method == "forkserver":
            ctx.set_forkserver_preload(["cryoshift.runtime.readers"])
        self.tasks = ctx.Queue()
        self.results = ctx.Queue()
        args = (self.shm.name, shape, self.tasks, self.results, voxel_size, dtype.name)
        self.procs = [
            ctx.Process(target=_process_main, args=args, daemon=True, name=f"cryoshift-reader-{i}")
            for i in range(workers)
        ]
        self.next = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.n_slots = n_slots
        self.collector = threading.Thread(target=self._collect, name="cryoshift-collector", daemon=True)

    def _dispatch(self, slot: int) -> None:
        with self.lock:
            if self.next < len(self.chunks):
                self.tasks.put((self.next, slot, self.chunks[self.next]))
                self.next += 1

    def start(self) -> None:
        for p in self.procs:
            p.start()
        for slot in range(self.n_slots):
            self._dispatch(slot)
        self.collector.start()

    def release(self, batch: Batch) -> None:
        self._dispatch(batch.slot)  # the model is done with this slot: refill it

    def _collect(self) -> None:
        try:
            received = 0
            while received < len(self.chunks) and not self.stopping.is_set():
                try:
                    number, slot, good, errors, read_s = self.results.get(timeout=0.5)
                except queue.Empty:
                    if not any(p.is_alive() for p in self.procs):
                        raise RuntimeError("all reader processes died") from None
                    continue
                if good is None:  # the reader process failed on this chunk and has ended
                    raise RuntimeError(f"a reader process failed: {errors}")
                chunk = self.chunks[number]
                items = [chunk[i] for i in good]
                self.ready.put(Batch(number, self.slots[slot], items, errors, read_s, slot))
                received += 1
        except RuntimeError as exc:
            self.ready.put(exc)
        finally:
            self.ready.put(None)

    def stop(self) -> None:
        self.stopping.set()
        for _ in self.procs:
            self.tasks.put(None)
        for p in self.procs:
            if p.pid is None:  # never started (interrupted in start())
                continue
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
        if self.collector.ident is not None:
            self.collector.join(timeout=5)
        if self.pinned:
            with contextlib.suppress(Exception):
                import cupy

                cupy.cuda.runtime.hostUnregister(self.slots.ctypes.data)
        del self.slots
        with contextlib.suppress(BufferError):  # a view still referenced: the mapping goes with it
            self.shm.close()
        self.shm.unlink()


# Expected inference rate per backend for the default model at 32^3 (subtomograms/s): the CPU figure
# is measured (2 cores); the GPU ones come from docs/gpu.md's arithmetic and await a device run.
EXPECTED_RATE_32 = {"cpu": 500.0, "cuda": 150_000.0, "tensorrt": 400_000.0, "engine": 400_000.0}


def auto_workers(model: Any, items: list[Item]) -> int:
    """``--workers 0``: readers sized by :func:`reader_workers` for this model and input kind."""
    box = model.metadata.box_size
    rate = EXPECTED_RATE_32.get(model.backend, 1e9) * (32 / box) ** 3
    kinds = [it.kind for it in items[:1000]]
    kind = max(("stack", "tomogram", "file"), key=kinds.count) if kinds else "stack"
    return reader_workers(rate, kind, box, np.dtype(model.input_dtype).itemsize)
