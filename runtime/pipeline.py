"""The classification pipeline: readers -> bounded queue of preallocated batches -> one model
-> writer.

Reader threads (or processes, see ``readers.py``) fill batch buffers drawn from a fixed
pool (so memory is bounded and nothing is allocated per batch), the calling thread runs the
model on each full buffer and scores it, and a writer thread appends finished rows and
errors to the ledgers (fsync per batch). The pool holds ``workers + 2`` buffers: while the
model computes one batch, the readers are already filling the next ones, so the accelerator
never waits on the disk while work is queued. A bad item becomes an error row and the run
goes on.

On a GPU backend with device slots (``Model.slots >= 2``) an upload thread sits between the
readers and the model: it copies each filled (pinned) host batch into a free device slot and
hands the host buffer straight back to the readers, while the model thread computes the
previous slot. So batch n+1 crosses the bus while batch n computes: two batches in flight.
"""

from __future__ import annotations

import contextlib
import math
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from cryoshift.runtime.backends import Model
from cryoshift.runtime.contract import REJECT_LABEL
from cryoshift.runtime.errors import InputError
from cryoshift.runtime.hostmem import available_memory, capped_workers, format_bytes
from cryoshift.runtime.metadata import ModelMetadata
from cryoshift.runtime.polarity import PolarityTally, say
from cryoshift.runtime.readers import ProcessReaders, ThreadReaders
from cryoshift.runtime.scoring import score
from cryoshift.runtime.sources import Item, VolumeCache
from cryoshift.runtime.transfer import HostAllocator

ID_COLUMNS = ("id", "path", "index", "tomo_name", "x", "y", "z")
UNKNOWN = REJECT_LABEL  # the label of a rejected prediction (no class may be so named)


def result_columns(class_names: Sequence[str]) -> list[str]:
    """Columns of the results table (and ledger); one probability column per class."""
    return [
        *ID_COLUMNS,
        "class_index",
        "class_name",
        "best_class",
        "unknown",
        "confidence",
        "shift_score",
        *(f"prob_{name}" for name in class_names),
    ]


@dataclass
class RunStats:
    """What happened in one pipeline run (times in seconds, summed over reader threads)."""

    done: int = 0
    errors: int = 0
    unknown: int = 0
    read_s: float = 0.0
    compute_s: float = 0.0
    write_s: float = 0.0
    wait_s: float = 0.0  # model thread waiting for a batch: the readers were the bottleneck
    wall_s: float = 0.0
    upload_s: float = 0.0  # host->device copies on the upload thread (GPU slots), overlapping compute
    host_memory: str = ""  # what the batch buffers are: pinned (how) or pageable
    shift_missing: int = 0  # rows without a finite shift score though the model has features (see notes)
    polarity: PolarityTally = field(default_factory=PolarityTally)  # of the crops classified
    contrast: str = ""  # the model's, which ``polarity`` is judged against ("": not judged)
    worker_warnings: list[str] = field(default_factory=list)  # said by --devices worker processes

    @property
    def rate(self) -> float:
        """Subtomograms (good and bad) per second of wall time."""
        total = self.done + self.errors
        return total / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def warnings(self) -> list[str]:
        """Notes that are also said on stderr when the run ends: the data's polarity contradicts
        the model's contrast (runtime/polarity.py)."""
        said = self.polarity.warning(self.contrast) if self.contrast else None
        return ([said] if said else []) + self.worker_warnings

    @property
    def notes(self) -> list[str]:
        """What the run's summary should say about its rows beyond the counts."""
        out = list(self.warnings)
        if self.shift_missing:
            out.append(
                f"{self.shift_missing} of {self.done} rows have no shift score (shift_score nan): the "
                "model's features were not finite for them"
            )
        return out


def _id_fields(item: Item) -> list[Any]:
    if item.kind == "tomogram":
        return [item.id, item.path, -1, item.tomo, item.x, item.y, item.z]
    return [item.id, item.path, item.index, "", math.nan, math.nan, math.nan]


LABEL = len(ID_COLUMNS) + 1  # position of class_name in a row
SHIFT = len(ID_COLUMNS) + 5  # position of shift_score in a row


def score_rows(
    items: Sequence[Item],
    logits: np.ndarray,
    features: np.ndarray,
    metadata: ModelMetadata,
    unknown_threshold: float | None = None,
) -> list[list[Any]]:
    """Result rows (see :func:`result_columns`) for ``items`` from the model's raw outputs."""
    s = score(logits, features, metadata, unknown_threshold)
    names = metadata.class_names
    rows = []
    for j, item in enumerate(items):
        k = int(s.predicted[j])
        unknown = bool(s.unknown[j])
        rows.append(
            [
                *_id_fields(item),
                -1 if unknown else k,
                UNKNOWN if unknown else names[k],
                names[k],
                unknown,
                float(s.confidence[j]),
                float(s.shift[j]),
                *(float(p) for p in s.probabilities[j]),
            ]
        )
    return rows


def finite_outputs(
    items: Sequence[Item], logits: np.ndarray, features: np.ndarray
) -> tuple[list[Item], np.ndarray, np.ndarray, list[tuple[str, str, str]]]:
    """Split off items whose logits are not finite: never a NaN "prediction", an error row instead.

    ``logits`` and ``features`` hold exactly one row per item (``Model.predict`` checks the graph's
    outputs and drops only its own padding): any other count is refused, never sliced to fit, as
    an extra row once shifted every answer onto the next subtomogram."""
    items = list(items)
    if logits.ndim != 2 or len(logits) != len(items) or len(features) != len(items):
        raise ValueError(
            f"{len(items)} items but logits of shape {logits.shape} and features of shape "
            f"{features.shape}: one row per item is needed (outputs of Model.predict)"
        )
    bad = ~np.isfinite(logits).all(axis=1)
    if not bad.any():
        return items, logits, features, []
    failed = [
        (it.id, it.path, "model output is not finite for this subtomogram")
        for it, b in zip(items, bad, strict=True)
        if b
    ]
    keep = np.flatnonzero(~bad)
    return [items[i] for i in keep], logits[keep], features[keep], failed


def score_batch(
    items: Sequence[Item],
    logits: np.ndarray,
    features: np.ndarray,
    metadata: ModelMetadata,
    unknown_threshold: float | None = None,
) -> tuple[list[list[Any]], list[tuple[str, str, str]], np.ndarray]:
    """(rows, error rows, features of the rows) of one batch from the model's raw outputs: items
    whose logits are not finite become error rows (:func:`finite_outputs`), the others rows
    (:func:`score_rows`). The one scoring step of every launch mode."""
    scored, logits, features, failed = finite_outputs(items, logits, features)
    return score_rows(scored, logits, features, metadata, unknown_threshold), failed, features


def missing_shift_scores(rows: Sequence[Sequence[Any]], features: np.ndarray, metadata: ModelMetadata) -> int:
    """How many of ``rows`` have no finite shift score although the model gives features and its
    metadata has their statistics: features that are NaN or infinite (a model without them, or
    without statistics, has no shift score by contract and is not counted).

    Why: such rows said ``shift_score nan`` with no word anywhere (see :attr:`RunStats.notes`)."""
    if features.ndim != 2 or not features.shape[1]:
        return 0
    return rows_without_shift(rows, metadata)


def rows_without_shift(rows: Sequence[Sequence[Any]], metadata: ModelMetadata) -> int:
    """:func:`missing_shift_scores` where the features are not at hand: rows read back from a
    worker's table or a Ray actor (values as written, text or numbers)."""
    if not rows or not metadata.feature_mean:
        return 0
    count = 0
    for row in rows:
        try:
            count += not math.isfinite(float(row[SHIFT]))
        except (TypeError, ValueError):
            count += 1
    return count


def batch_rows(model: Model, batch_size: int, n: int) -> int:
    """Rows of each read buffer: ``batch_size``, but never more than the ``n`` items to classify
    (a fixed-batch runner excepted: it is fed whole batches of the size it was built for).

    Why: buffers are allocated whole, so ``--batch-size 100000000`` on 2 picks asked for 1.49 TiB
    and failed after the output folder was made, though one batch of 2 does the same work."""
    if model.fixed_batch:
        return batch_size
    return max(1, min(int(batch_size), int(n)))


def check_buffer_memory(model: Model, batch_size: int, n: int, workers: int) -> None:
    """Refuse, in one line naming --batch-size, read buffers that cannot fit in host memory, before
    the output folder holds anything (the pool of :func:`run_pipeline`: up to ``workers + 2``
    batches of :func:`batch_rows` rows). Where the free memory is unknown nothing is refused.

    Why: the allocation failed at the first batch, after run.json was written, as an exit-1 error
    that left a folder a plain rerun was then refused for ("already exists; pass --resume")."""
    rows = batch_rows(model, batch_size, n)
    buffers = max(1, min(-(-max(n, 1) // rows), max(1, workers) + 2))
    need = buffers * rows * model.metadata.box_size**3 * np.dtype(model.input_dtype).itemsize
    free = available_memory()
    if free is not None and need > free:
        raise InputError(
            None,
            f"--batch-size {batch_size}: the read buffers ({buffers} batches of {rows} x "
            f"{model.metadata.box_size}^3 voxels) need {format_bytes(need)}, more than the "
            f"{format_bytes(free)} of memory free; lower --batch-size (or --workers)",
        )


def run_pipeline(
    model: Model,
    items: Sequence[Item],
    write_rows: Callable[..., None],
    batch_size: int = 64,
    workers: int = 2,
    unknown_threshold: float | None = None,
    cache: VolumeCache | None = None,
    progress: bool = True,
    description: str = "classifying",
    check_voxel_size: bool = True,
    reader_processes: bool = False,
    with_features: bool = False,
) -> RunStats:
    """Classify ``items`` with ``model``; ``write_rows(rows, errors)`` is called once per batch.

    ``write_rows`` runs on a writer thread, in batch order as they finish; rows follow
    :func:`result_columns`. ``check_voxel_size`` refuses single files whose voxel size is more
    than 5% off the model's (as error rows). ``reader_processes`` reads in ``workers``
    processes into shared memory instead of threads (for GPUs faster than one process reads).
    ``with_features``: ``write_rows(rows, errors, features)`` instead, with the model's features
    of the rows (float32 (len(rows), F), same order; None for a batch without rows).
    """
    stats = RunStats(contrast=model.metadata.contrast)
    batch_size = batch_rows(model, batch_size, len(items))
    chunks = _Chunks(items, batch_size)  # made when read: a pick table's items are never all in memory
    ready: queue.Queue = queue.Queue()
    voxel = model.metadata.voxel_size if check_voxel_size else None
    readers = _readers(
        model,
        chunks,
        batch_size,
        capped_workers(max(1, int(workers)), reader_processes),  # a no-op after the CLI capped it
        ready,
        cache or VolumeCache(),
        voxel,
        reader_processes,
        stats,
    )
    uploader = _Uploader(model, readers, ready, stats) if model.slots >= 2 and chunks else None
    bar = Progress(len(items), description, enabled=progress)
    writer = _OrderedWriter(write_rows, with_features, bar, stats)
    t_start = time.perf_counter()
    writer.start()
    bar.__enter__()
    try:
        readers.start()
        if uploader is not None:
            uploader.start()
        _infer_batches(
            model,
            readers,
            uploader.out if uploader else ready,
            uploader,
            writer,
            stats,
            unknown_threshold,
            with_features,
        )
    finally:
        if uploader is not None:
            uploader.stopping.set()
        readers.stop()
        if uploader is not None:
            uploader.join()
        writer.close()
        stats.wall_s = time.perf_counter() - t_start
        bar.__exit__(None, None, None)
    writer.check()
    for line in stats.warnings:
        say(line)
    return stats


def _readers(
    model: Model,
    chunks: Sequence[list[Item]],
    batch_size: int,
    workers: int,
    ready: queue.Queue,
    cache: VolumeCache,
    voxel: float | None,
    processes: bool,
    stats: RunStats,
) -> ThreadReaders | ProcessReaders:
    """Reader threads (or processes) filling batches of the model's input dtype from a fixed pool.

    Rows past the last good item of a batch are padding for fixed-shape backends.
    """
    box = model.metadata.box_size
    dtype = np.dtype(model.input_dtype)
    if processes and chunks:
        readers = ProcessReaders(chunks, batch_size, box, workers, ready, voxel, dtype, model.pinned)
        stats.host_memory = "shared memory, " + ("pinned" if readers.pinned else "pageable")
        return readers
    alloc = HostAllocator(model.pinned, model.device_id)
    stats.host_memory = alloc.describe()
    return ThreadReaders(chunks, batch_size, box, workers, ready, cache, voxel, alloc, dtype)


def _infer_batches(
    model: Model,
    readers: ThreadReaders | ProcessReaders,
    source: queue.Queue,
    uploader: _Uploader | None,
    writer: _OrderedWriter,
    stats: RunStats,
    unknown_threshold: float | None,
    with_features: bool,
) -> None:
    """The model thread: take each filled batch (on the device already when ``uploader``), run the
    model, score, hand the buffer back and the rows to the writer, until every reader has ended."""
    finished = 0
    while finished < readers.ends:
        t0 = time.perf_counter()
        got = source.get()
        stats.wait_s += time.perf_counter() - t0
        if got is None:
            finished += 1
            continue
        if isinstance(got, BaseException):  # a reader process died, or an upload failed
            raise got
        batch, slot = got if uploader is not None else (got, None)
        writer.check()
        stats.read_s += batch.read_s
        number, errors = batch.number, batch.errors
        rows: list[list[Any]] = []
        feats = None
        if batch.items:
            n = len(batch.items)
            t0 = time.perf_counter()
            if slot is not None:
                logits, features = model.compute(slot, n)
                uploader.free.put(slot)  # type: ignore[union-attr]
            else:
                stats.polarity.add(batch.buffer[:n])  # the crops as the model gets them, read once
                logits, features = model.predict(batch.buffer, n, values_checked=True)
            stats.compute_s += time.perf_counter() - t0
            rows, failed, features = score_batch(
                batch.items, logits, features, model.metadata, unknown_threshold
            )
            errors = [*errors, *failed] if failed else errors
            stats.shift_missing += missing_shift_scores(rows, features, model.metadata)
            if with_features:  # a copy: a backend may reuse its output buffer for the next batch
                feats = np.array(features[: len(rows)], dtype=np.float32)
            stats.unknown += sum(row[LABEL] == UNKNOWN for row in rows)
        if uploader is None:
            readers.release(batch)
        del batch  # the buffer may be shared memory: hold no view past release
        stats.done += len(rows)
        stats.errors += len(errors)
        writer.put(number, rows, errors, feats)


class _Uploader:
    """GPU device slots (``Model.slots >= 2``): a thread copies each filled (pinned) host batch
    into a free device slot and hands the host buffer straight back to the readers, so batch n+1
    crosses the bus while the model thread computes batch n. Its ``out`` queue feeds the model."""

    def __init__(
        self, model: Model, readers: ThreadReaders | ProcessReaders, ready: queue.Queue, stats: RunStats
    ):
        self.model, self.readers, self.ready, self.stats = model, readers, ready, stats
        self.out: queue.Queue = queue.Queue()
        self.free: queue.Queue = queue.Queue()
        for slot in range(model.slots):
            self.free.put(slot)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="cryoshift-upload", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def join(self) -> None:
        if self.thread.is_alive():
            self.thread.join(timeout=5)

    def _slot(self) -> int | None:
        while not self.stopping.is_set():
            with contextlib.suppress(queue.Empty):
                return self.free.get(timeout=0.1)
        return None

    def _run(self) -> None:
        ends = 0
        try:
            while ends < self.readers.ends and not self.stopping.is_set():
                try:
                    batch = self.ready.get(timeout=0.1)
                except queue.Empty:
                    continue
                if batch is None or isinstance(batch, BaseException):
                    ends += batch is None
                    self.out.put(batch)
                    if isinstance(batch, BaseException):
                        return
                    continue
                slot = None
                if batch.items:
                    slot = self._slot()
                    if slot is None:
                        return
                    self.stats.polarity.add(batch.buffer[: len(batch.items)])  # before the buffer goes back
                    t0 = time.perf_counter()
                    self.model.upload(slot, batch.buffer)
                    self.stats.upload_s += time.perf_counter() - t0
                self.readers.release(batch)  # the host buffer is free again as soon as it is on the device
                batch.buffer = None  # type: ignore[assignment]
                self.out.put((batch, slot))
        except BaseException as exc:  # a failed upload ends the run with its error
            self.out.put(exc)


class _OrderedWriter:
    """The writer thread: batches finish out of order (several readers); rows are written in
    input order. On the way out (a failed run), batches still waiting for an earlier one are
    written anyway: they are finished work, and the resume ledger does not need input order. An
    error of ``write_rows`` stops the writing and is raised in the model thread (:meth:`check`).

    Whatever ends the thread is such an error, and so is a thread that ended without being closed:
    a progress line that failed (stdout a closed pipe) once killed it unseen, and the run went on to
    write a manifest claiming every row while predictions.csv held a fifth of them."""

    def __init__(self, write_rows: Callable[..., None], with_features: bool, bar: Progress, stats: RunStats):
        self.write_rows, self.with_features, self.bar, self.stats = write_rows, with_features, bar, stats
        self.jobs: queue.Queue = queue.Queue()
        self.errors: list[BaseException] = []
        self.closed = False
        self.thread = threading.Thread(target=self._run, name="cryoshift-writer", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def put(self, number: int, rows: list[list[Any]], errors: list[tuple[str, str, str]], feats: Any) -> None:
        self.jobs.put((number, rows, errors, feats))

    def close(self) -> None:
        """Write what is pending and end the thread."""
        self.closed = True
        self.jobs.put(None)
        self.thread.join()

    def check(self) -> None:
        """Raise the error that stopped the writing, if any: the run must not go on (or end as if
        complete) with batches that were never written."""
        if self.errors:
            raise self.errors[0]
        if not self.closed and self.thread.ident is not None and not self.thread.is_alive():
            raise RuntimeError(
                "the results writer thread ended before the run did; rows after it were not written"
            )

    def _run(self) -> None:
        try:
            self._write_in_order()
        except BaseException as exc:  # surfaced in the model thread (check), never lost with the thread
            self.errors.append(exc)

    def _write_in_order(self) -> None:
        pending: dict[int, tuple[list[list[Any]], list[tuple[str, str, str]], Any]] = {}
        expected = 0
        closing = False
        while True:
            job = self.jobs.get()
            if job is None:
                closing = True
            else:
                number, rows, errors, feats = job
                pending[number] = (rows, errors, feats)
            while pending and (expected in pending or closing):
                key = expected if expected in pending else min(pending)
                rows, errors, feats = pending.pop(key)
                expected = key + 1
                self._write(rows, errors, feats)
            if closing:
                return

    def _write(self, rows: list[list[Any]], errors: list[tuple[str, str, str]], feats: Any) -> None:
        t0 = time.perf_counter()
        try:
            if not self.errors:
                if self.with_features:
                    self.write_rows(rows, errors, feats)
                else:
                    self.write_rows(rows, errors)
        except BaseException as exc:  # surfaced in the model thread after the run
            self.errors.append(exc)
        self.stats.write_s += time.perf_counter() - t0
        self.bar.advance(len(rows) + len(errors))  # never raises (Progress.advance)


class _Chunks(Sequence):
    """``items`` in batches of ``size``, each made into a list only when a reader takes it."""

    def __init__(self, items: Sequence[Item], size: int):
        self.items, self.size = items, max(1, int(size))
        self.n = -(-len(items) // self.size)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, k: Any) -> Any:
        if isinstance(k, slice):
            return [self[j] for j in range(*k.indices(self.n))]
        if k < 0:
            k += self.n
        if not 0 <= k < self.n:
            raise IndexError(k)
        return list(self.items[k * self.size : (k + 1) * self.size])


# In a log (stderr not a terminal), a plain progress line every this many seconds or this
# fraction of the work, whichever comes first, plus one at the end.
PLAIN_PROGRESS_SECONDS = 30.0
PLAIN_PROGRESS_FRACTION = 0.1


def plain_output(stream: TextIO | None = None) -> bool:
    """True when ``stream`` (default stdout) goes to a file or a pipe (SLURM, ``> log``, ``| tee``):
    ``train``'s per-epoch lines follow it on stdout (training/log.py ``plain``), classify's progress
    on stderr, where it is written. Why: rich draws only its last frame when not on a terminal, so
    a long run said nothing about progress until it ended."""
    try:
        return not (sys.stdout if stream is None else stream).isatty()
    except (AttributeError, ValueError):
        return True


def _clock(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


class Progress:
    """A rich progress bar with subtomograms/second and ETA on a terminal; in a log, a plain line
    (``classifying 230/2300 (10%) 671 subtomograms/s ETA 0:00:03``) every ``every_s`` seconds or
    ``every_fraction`` of the total, and at the end. A no-op when disabled.

    Both go to stderr, never stdout: stdout carries the summary, and is the stream a pipe reader
    (``| head``) closes. A write that fails (a closed pipe, a full log disk) ends the progress
    output, never the run: :meth:`advance` runs on the writer thread, and a progress line that
    raised there once killed it, so the rows after it were never written."""

    def __init__(
        self,
        total: int,
        description: str,
        enabled: bool = True,
        plain: bool | None = None,
        every_s: float = PLAIN_PROGRESS_SECONDS,
        every_fraction: float = PLAIN_PROGRESS_FRACTION,
    ):
        self.stream: TextIO | None = sys.stderr  # None when stderr is closed (``2>&-``): nothing to say
        self.enabled = enabled and total > 0 and self.stream is not None
        self.total = total
        self.description = description
        self.plain = plain_output(self.stream) if plain is None else plain
        self.every_s, self.every_fraction = every_s, every_fraction
        self._progress: Any = None
        self._task: Any = None
        self._done = 0
        self._t0 = self._last_t = 0.0
        self._last_done = 0

    def __enter__(self) -> Progress:
        if self.enabled and self.plain:
            self._t0 = self._last_t = time.perf_counter()
        elif self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
                transient=False,
            )
            self._quietly(self._progress.__enter__)
            if self._progress is not None:
                self._task = self._progress.add_task(self.description, total=self.total, rate="")
        return self

    def advance(self, n: int) -> None:
        """Count ``n`` more done; never raises (see the class docstring)."""
        if self._progress is not None:
            self._quietly(self._advance_bar, n)
        elif self.enabled and self.plain:
            self._done += n
            now = time.perf_counter()
            step = max(1, math.ceil(self.total * self.every_fraction))
            if now - self._last_t >= self.every_s or self._done - self._last_done >= step:
                self._quietly(self._line, now)

    def _advance_bar(self, n: int) -> None:
        self._progress.advance(self._task, n)
        speed = self._progress.tasks[0].speed
        if speed:
            self._progress.update(self._task, rate=f"{speed:,.0f} subtomograms/s")

    def _quietly(self, write: Callable[..., Any], *args: Any) -> None:
        """Call ``write``; if the stream refuses (OSError; ValueError: closed), stop all progress output."""
        try:
            write(*args)
        except (OSError, ValueError):
            self.enabled = False
            self._progress = None

    def _line(self, now: float) -> None:
        """One plain line: done/total, percent, rate since the start and the time left at it."""
        self._last_t, self._last_done = now, self._done
        elapsed = now - self._t0
        rate = self._done / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.description} {self._done}/{self.total} ({100 * self._done / self.total:.0f}%)"]
        if rate > 0:
            parts.append(f"{rate:,.0f} subtomograms/s")
            if self._done < self.total:
                parts.append(f"ETA {_clock((self.total - self._done) / rate)}")
        parts.append(f"elapsed {_clock(elapsed)}")
        print(" ".join(parts), file=self.stream, flush=True)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            bar = self._progress
            self._quietly(lambda: bar.__exit__(None, None, None))
        elif self.enabled and self.plain and self._done != self._last_done:
            self._quietly(self._line, time.perf_counter())
