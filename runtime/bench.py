"""How fast this machine classifies, and how fast the pipeline alone can feed a model.

Two numbers decide deployment: the engine's inference-only throughput (a batch already in
memory, :func:`inference_rate`) and the pipeline's feed rate with a null model (read, crop,
batch, write rows; no inference, :func:`pipeline_rate`) for a stack, for single files and for a
tomogram with picks (:func:`make_bench_data`). End to end can never beat the smaller of the two.
``cryoshift bench`` (runtime/commands/bench.py) prints :func:`run_bench`; ``benchmarks/``
scripts use the same functions.
"""

from __future__ import annotations

import errno
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryoshift.runtime.contract import MAX_BOX
from cryoshift.runtime.errors import InputError
from cryoshift.runtime.hostmem import available_memory, format_bytes

KINDS = ("stack", "files", "tomogram")

# Upper bounds of bench's options (``cryoshift bench --help`` shows them). Without them --repeats
# 10^23 timed forever and --box 10^108 was an OverflowError traceback in the memory check. A median
# of 100 repeats is as steady as it gets; 100,000 subtomograms per kind is minutes of reading;
# 8192 is four times the largest GPU batch classify suggests; MAX_BOX is training's largest box.
MAX_REPEATS = 100
MAX_N = 100_000
MAX_BATCH_SIZE = 8192
MIN_FEED_BOX = 4  # the feed-rate data's smallest --box (a crop needs a few voxels)


def check_bench_options(batch_size: int, box: int | None, n: int, repeats: int) -> None:
    """Refuse, in one line naming the option and its range, an option bench cannot honour.

    The command's own ranges say the same; this is for :func:`run_bench`'s other callers
    (``benchmarks/`` scripts), so that no caller reaches float maths on an unbounded int."""
    limits = (
        ("--batch-size", batch_size, 1, MAX_BATCH_SIZE),
        ("--box", box, MIN_FEED_BOX, MAX_BOX),
        ("--n", n, 1, MAX_N),
        ("--repeats", repeats, 1, MAX_REPEATS),
    )
    for option, value, low, high in limits:
        if value is None and option == "--box":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            shown = repr(value) if len(repr(value)) <= 20 else f"a number of {len(repr(value))} digits"
            raise InputError(None, f"{option} must be a whole number from {low} to {high:,}, not {shown}")


def _tomogram_shape(n: int, box: int) -> tuple[int, int, int]:
    """(Z, Y, X) of the bench tomogram that holds ``n`` picks of ``box``: picks overlap, as in real data."""
    side = max(4 * box, round((n * box**3 / 2) ** (1 / 3)) + box)
    return max(2 * box, side // 2), side, side


def make_bench_data(root: Path, n: int, box: int, voxel_size: float, seed: int = 0) -> dict[str, Any]:
    """Synthetic inputs of every kind with ``n`` subtomograms each (noise; speed does not care)."""
    import numpy as np
    import pandas as pd

    from cryoshift.runtime.mrc import write_stack, write_volume
    from cryoshift.runtime.results import write_results

    rng = np.random.default_rng(seed)
    vols = rng.normal(0, 1, (n, box, box, box)).astype(np.float32)
    root.mkdir(parents=True, exist_ok=True)
    write_stack(root / "stack.mrcs", vols, voxel_size=voxel_size)
    files = root / "files"
    files.mkdir(exist_ok=True)
    for i in range(n):
        write_volume(files / f"sub_{i:06d}.mrc", vols[i], voxel_size=voxel_size)
    tomo = rng.normal(0, 1, _tomogram_shape(n, box)).astype(np.float32)
    write_volume(root / "bench_tomo.mrc", tomo, voxel_size=voxel_size)
    nz, ny, nx = tomo.shape
    picks = pd.DataFrame(
        {
            "tomo_name": "bench_tomo",
            "x": rng.uniform(0, nx - 1, n).round(1),
            "y": rng.uniform(0, ny - 1, n).round(1),
            "z": rng.uniform(0, nz - 1, n).round(1),
        }
    )
    write_results(picks, root / "picks.csv")  # the CSV rule of every table cryoshift writes
    return {
        "stack": {"inputs": [str(root / "stack.mrcs")], "tomograms": []},
        "files": {"inputs": [str(files)], "tomograms": []},
        "tomogram": {"inputs": [str(root / "picks.csv")], "tomograms": [str(root / "bench_tomo.mrc")]},
        "n": n,
        "box": box,
    }


def inference_rate(model: Any, batch_size: int, repeats: int = 3, batches: int = 4, seed: int = 0) -> dict:
    """Median subtomograms/s of ``model.predict`` on an in-memory batch (after two warm-up calls)."""
    import numpy as np

    box = model.metadata.box_size
    batch = np.random.default_rng(seed).normal(0, 1, (batch_size, 1, box, box, box)).astype(np.float32)
    # Warm-up. A graph that loads but cannot run this batch (a Reshape to a fixed batch), or whose
    # outputs break the contract (a row count, class count or dtype classify would refuse), is
    # refused here in one line naming the model, before any rate: Model.predict checks every run.
    model.predict(batch)
    model.predict(batch)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(batches):
            model.predict(batch, values_checked=True)  # drawn finite here; classify checks on reading
        rates.append(batches * batch_size / (time.perf_counter() - t0))
    return {"rate": statistics.median(rates), "repeats": rates}


def pipeline_rate(
    model: Any,
    data: dict[str, Any],
    kind: str,
    batch_size: int,
    workers: int,
    repeats: int = 3,
    processes: bool = False,
) -> dict:
    """Median subtomograms/s of a local run's plan, read, infer and write steps (runtime/run.py;
    fsync'ed ledgers, no predictions.star or manifest), from planning to the last row."""
    import dataclasses

    from cryoshift.runtime.ledger import RunLedgers
    from cryoshift.runtime.pipeline import result_columns
    from cryoshift.runtime.run import LocalInference, RunOptions, plan_run
    from cryoshift.runtime.sources import VolumeCache
    from cryoshift.runtime.summary import output_names

    rates, stats = [], None
    for _ in range(repeats):
        with scratch_dir(SCRATCH_PREFIX) as tmp:
            t0 = time.perf_counter()
            opts = RunOptions(
                data[kind]["inputs"], Path(tmp), tomograms=data[kind]["tomograms"], progress=False
            )
            inference = LocalInference(model, batch_size, workers, reader_processes=processes)
            cache = VolumeCache()
            _, items, _ = plan_run(model.metadata, opts, cache)
            inference.prepare(items, cache, opts)
            columns = result_columns(model.metadata.class_names)
            with RunLedgers(output_names(opts.out_dir, None), columns) as ledgers:
                stats = inference.run(items, ledgers, opts)
            rates.append(dataclasses.replace(stats, wall_s=time.perf_counter() - t0).rate)
    assert stats is not None
    return {
        "rate": statistics.median(rates),
        "repeats": rates,
        "errors": stats.errors,
        "read_s": stats.read_s,
        "compute_s": stats.compute_s,
        "wait_s": stats.wait_s,
    }


def bench_memory(batch_size: int, model_box: int, feed_box: int, n: int, workers: int) -> dict[str, int]:
    """Host bytes each step of :func:`run_bench` allocates at once (the steps run one after another).

    ``inference``: the in-memory batch, drawn as float64 then kept as float32 (12 bytes a voxel);
    ``data``: the feed-rate inputs, the ``n`` volumes then the tomogram, each drawn the same way;
    ``buffers``: the pipeline's pool of batch buffers (float32). The model's own working memory
    is not counted (it depends on the network): the check catches what cannot fit at all.
    """
    feed = feed_box**3
    z, y, x = _tomogram_shape(n, feed_box)
    chunks = -(-n // batch_size)
    return {
        "inference": batch_size * model_box**3 * 12,
        "data": max(n * feed * 12, n * feed * 4 + z * y * x * 12),
        "buffers": min(chunks, workers + 2) * batch_size * feed * 4,
    }


def check_bench_memory(
    batch_size: int,
    model_box: int,
    box: int | None,
    n: int,
    workers: int,
    available: int | None = None,
) -> None:
    """Refuse, in one line naming the options, a bench whose batches or data cannot fit in memory.

    Why: ``--batch-size`` or ``--box`` a few times too large asked for more than the machine has;
    what the kernel lets allocate then dies in the OOM killer ("Killed", no reason), and may take
    other jobs of the node with it. ``available`` defaults to :func:`available_memory`.
    """
    available = available_memory() if available is None else available
    if available is None:
        return
    feed_box = box or model_box
    need = bench_memory(batch_size, model_box, feed_box, n, workers)
    step = max(need, key=lambda k: need[k])
    if need[step] <= available:
        return
    at = f"--box {box}" if box else f"the model's box {model_box}"
    if step == "inference":
        what = f"--batch-size {batch_size} at the model's box {model_box}"
        detail = f"the inference batch ({batch_size} x {model_box}^3 voxels, drawn as float64)"
        remedy = "lower --batch-size"
    elif step == "data":
        z, y, x = _tomogram_shape(n, feed_box)
        what = f"--n {n} at {at}"
        detail = f"the feed-rate data ({n} x {feed_box}^3 voxels, then a {x} x {y} x {z} tomogram)"
        remedy = "lower --n or --box"
    else:
        buffers = min(-(-n // batch_size), workers + 2)
        what = f"--batch-size {batch_size} at {at}"
        detail = f"the pipeline's batch buffers ({buffers} x {batch_size} x {feed_box}^3 float32)"
        remedy = "lower --batch-size or --box"
    raise InputError(
        None,
        f"{what} needs {format_bytes(need[step])} of host memory for {detail}, but {format_bytes(available)} "
        f"is available; {remedy}",
    )


def _model_box(path: Path) -> int | None:
    """The model's box size, read from its metadata (an ONNX model's properties, an engine's
    sidecar) before any session is made; None when unreadable (load_model then says why)."""
    from cryoshift.runtime.backends import ENGINE_SUFFIXES
    from cryoshift.runtime.errors import MissingExtraError

    try:
        if path.suffix.lower() in ENGINE_SUFFIXES:
            from cryoshift.runtime.engine_sidecar import read_engine_sidecar

            return read_engine_sidecar(path).metadata.box_size
        from cryoshift.runtime.metadata import read_onnx_metadata

        return read_onnx_metadata(path).box_size
    except (InputError, MissingExtraError, OSError):
        return None


# why a probe file could not be written, for the errnos that are about space, not the folder
_SPACE_CAUSES = {
    errno.EFBIG: "File too large (a file-size limit: ulimit -f)",
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
}


# Every scratch folder bench makes is named SCRATCH_PREFIX...; OWNER_FILE inside it is locked
# (flock) by the run that made it for as long as the folder is in use.
SCRATCH_PREFIX = "cryoshift-bench-"
OWNER_FILE = ".owner"


@contextmanager
def scratch_dir(prefix: str, where: Path | None = None) -> Iterator[str]:
    """``tempfile.TemporaryDirectory(prefix=prefix, dir=where)`` whose failure says the real cause,
    and which a later run removes if this one is killed.

    Why: Python finds its temporary folder by writing a probe file in each candidate; under a
    file-size limit of 0 (``ulimit -f 0``) or on a full disk every probe fails, and the error was
    only "No usable temporary directory found in ['/tmp', ...]", which blames the folders. The
    probe is repeated here to name the folder and why a file cannot be written there.

    A run ended by SIGKILL (the OOM killer, ``scancel`` after its grace time) cleans nothing up:
    each left its data folder (``n`` volumes, twice, and a tomogram) in the temporary folder, one
    more per killed run. So the folder holds a lock while in use (:func:`_hold_owner_lock`), and
    each new one first removes the bench folders beside it whose lock nobody holds
    (:func:`_sweep_stale`)."""
    if not prefix.startswith(SCRATCH_PREFIX):
        raise ValueError(f"a bench scratch folder's prefix starts with {SCRATCH_PREFIX!r}, not {prefix!r}")
    try:
        made = tempfile.TemporaryDirectory(prefix=prefix, dir=where)
    except FileNotFoundError as exc:
        cause = _unwritable_temporary_folder([where] if where else None)
        if cause is None:
            raise
        raise cause from exc
    with made as tmp:
        _sweep_stale(Path(tmp).parent, keep=Path(tmp).name)
        with _hold_owner_lock(Path(tmp)):
            yield tmp


@contextmanager
def _hold_owner_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder/OWNER_FILE`` while the block runs (released by the kernel
    when the process dies, however it dies). The file is locked under another name and renamed
    to OWNER_FILE, so a sweeper never finds it unlocked while its run lives. Without ``fcntl``
    (Windows) or file locks (some network file systems) nothing is held, and nothing is swept."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    pending = folder / f"{OWNER_FILE}.new"
    fd = os.open(pending, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.replace(pending, folder / OWNER_FILE)
        except OSError:
            pass  # no locks here: the folder is removed at the end as before, never swept
        yield
    finally:
        os.close(fd)


def _sweep_stale(parent: Path, keep: str) -> None:
    """Remove the bench scratch folders in ``parent`` (other than ``keep``) that this user owns and
    whose OWNER_FILE nobody holds locked: their run was killed. A folder without that file (being
    made, or from an older cryoshift) and one that cannot be opened or locked are left alone."""
    import shutil

    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return
    try:
        entries = [e for e in os.scandir(parent) if e.name.startswith(SCRATCH_PREFIX) and e.name != keep]
    except OSError:
        return
    for entry in entries:
        try:
            info = entry.stat(follow_symlinks=False)
            if not entry.is_dir(follow_symlinks=False) or info.st_uid != os.getuid():
                continue
            fd = os.open(
                os.path.join(entry.path, OWNER_FILE),
                os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0),
            )
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)  # held: its run is alive
            continue
        try:
            shutil.rmtree(entry.path, ignore_errors=True)
        finally:
            os.close(fd)


def _unwritable_temporary_folder(folders: list[Path] | None) -> InputError | None:
    """The error for the first of ``folders`` (default: the folders Python tries) where a small file
    cannot be written for lack of space or a file-size limit; None when none fails that way."""
    candidates = folders or getattr(tempfile, "_candidate_tempdir_list", lambda: [])()
    for folder in candidates:
        try:
            fd, name = tempfile.mkstemp(prefix=".cryoshift-probe-", dir=folder)
        except OSError:
            continue  # missing or not writable: not the folder the user expects to be used
        try:
            os.write(fd, b"probe")
        except OSError as exc:
            if exc.errno in _SPACE_CAUSES:
                return InputError(
                    folder,
                    f"cannot write bench's temporary data here: {_SPACE_CAUSES[exc.errno]}; "
                    "free space, raise the limit, or set TMPDIR to another folder",
                )
        finally:
            os.close(fd)
            os.unlink(name)
    return None


def run_bench(
    model_path: Path,
    backend: str = "auto",
    batch_size: int = 64,
    box: int | None = None,
    n: int = 256,
    workers: int = 2,
    repeats: int = 3,
    threads: int | None = None,
    work_dir: Path | None = None,
    processes: bool = False,
) -> dict[str, Any]:
    """Inference-only rate of the model and the null-model feed rate per input kind.

    The batch is capped at ``n``: the feed-rate runs never fill a larger one, and --n 4
    --batch-size 100000 drew and timed a 100,000-box in-memory batch for over a minute."""
    import dataclasses

    from cryoshift.runtime.backends import load_model, null_model
    from cryoshift.runtime.hostmem import capped_workers

    check_bench_options(batch_size, box, n, repeats)
    batch_size = min(batch_size, n)
    workers = capped_workers(workers, processes)  # the figures name the readers that really ran
    model_box = _model_box(Path(model_path))
    if model_box is not None:  # before the model's device buffers, the batch and the data
        check_bench_memory(batch_size, model_box, box, n, workers)
    model = load_model(model_path, backend, batch_size=batch_size, threads=threads)
    result: dict[str, Any] = {
        "model": str(model_path),
        "backend": model.description,
        "batch_size": batch_size,
        "n": n,
        "workers": workers,
        "repeats": repeats,
    }
    result["inference"] = inference_rate(model, batch_size, repeats)
    feed_meta = dataclasses.replace(model.metadata, box_size=box or model.metadata.box_size)
    result["feed_box"] = feed_meta.box_size
    result["model_box"] = model.metadata.box_size
    null = null_model(feed_meta, batch_size=batch_size)
    with scratch_dir(f"{SCRATCH_PREFIX}data-", work_dir) as tmp:
        data = make_bench_data(Path(tmp), n, feed_meta.box_size, feed_meta.voxel_size)
        result["feed"] = {
            kind: pipeline_rate(null, data, kind, batch_size, workers, repeats, processes) for kind in KINDS
        }
    return result
