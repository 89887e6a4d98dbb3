"""Write a simulated, labelled dataset directory (the format of cryoshift.runtime.dataset)."""

from __future__ import annotations

import os
import platform
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cryoshift.runtime.errors import InputError, check_out_folder, writing_error
from cryoshift.training.simulate.config import Origin, SimulationConfig
from cryoshift.training.simulate.simulator import Simulator
from cryoshift.training.simulate.structures import Structures

if TYPE_CHECKING:
    from cryoshift.runtime.dataset import DatasetWriter
    from cryoshift.runtime.lock import Held


def versions() -> dict[str, str]:
    """Versions of what shaped the data (recorded next to it so a run can be reproduced)."""
    import numpy
    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__}
    try:
        from importlib.metadata import version

        out["cryoshift"] = version("cryoshift")
    except Exception:  # not installed as a distribution (source checkout)
        out["cryoshift"] = "unknown"
    return out


# Drawn parameters that can leave a volume without signal (an envelope or dose filter that wipes out
# every frequency) or beyond float32 (a noise colour or ramp that overflows): named when that happens.
SIGNAL_PARAMETERS = (
    ("bfactor", "--bfactor"),
    ("dose", "--dose"),
    ("noise_alpha", "--noise-alpha"),
    ("gradient", "--gradient"),
    ("snr", "--snr"),
)


def check_volumes(
    volumes: np.ndarray, rows: list[dict[str, Any]], start: int, origin: Origin | None = None
) -> None:
    """Refuse simulated volumes that are blank or hold NaN/Inf or absurd values, naming the
    parameters drawn for the first: ``--bfactor 1e9`` (or a dose of 1e9 with dose weighting) wrote
    a labelled dataset of all-zero volumes with exit 0, and ``--noise-alpha 100`` failed as
    "OUT: volumes 0..2 contain NaN/Inf", blaming the output folder. The error names where the
    ranges came from (``origin``): the --config file, or no file when options set them all."""
    from cryoshift.runtime.dataset import unusable_volumes
    from cryoshift.runtime.sources import VALUE_LIMIT

    bad = unusable_volumes(volumes)
    if not len(bad):
        return
    i = int(bad[0])
    row, v = rows[i], volumes[i]
    if not np.isfinite(v).all():
        what = "holds NaN/Inf"
    elif v.min() == v.max():
        what = "is blank (one value throughout: no signal is left)"
    else:
        what = f"holds values beyond +-{VALUE_LIMIT:g}"
    drawn = ", ".join(f"{name} {row[name]:.3g}" for name, _ in SIGNAL_PARAMETERS if name in row)
    options = ", ".join(option for _, option in SIGNAL_PARAMETERS)
    more = f", like {len(bad) - 1} more of the {len(volumes)} in its batch" if len(bad) > 1 else ""
    raise InputError(
        (origin or Origin()).path(*(name for name, _ in SIGNAL_PARAMETERS)),
        f"simulated volume {start + i} (class {row.get('class_name', '?')}) {what}{more}; drawn for "
        f"it: {drawn}: bring {options} back to ordinary ranges",
    )


# The OUT_DIRs whose simulate lock this thread holds (real path -> the lock), so that
# simulate_dataset inside ``cryoshift simulate`` (which takes the lock before its checks) goes on
# under the command's lock. Per thread: another thread's call into the folder is refused.
_HELD_HERE = threading.local()


@contextmanager
def simulate_lock(out_dir: str | Path) -> Iterator[Held]:
    """Make ``out_dir`` and hold its simulate lock (runtime/lock.SIMULATE_LOCK) for the ``with``
    block; a second simulate into the folder, from another process or thread, raises
    :class:`InputError` naming the first's pid ("choose another OUT_DIR").

    Why here and not only in the CLI: two ``simulate_dataset`` calls into one folder both
    returned and left a dataset of one seed's labels over both seeds' volumes. Reentrant in one
    thread: ``cryoshift simulate`` holds it over its checks and this module's writing."""
    from cryoshift.runtime.lock import SIMULATE_LOCK, holding

    held: dict[str, Held] = _HELD_HERE.__dict__.setdefault("folders", {})
    key = os.path.realpath(out_dir)
    if key in held:  # this thread holds it already (the CLI's checks, then the writing)
        yield held[key]
        return
    with holding(out_dir, SIMULATE_LOCK, "simulate run", "OUT_DIR") as lock:
        key = os.path.realpath(out_dir)  # the folder exists now: its real path is settled
        held[key] = lock
        try:
            yield lock
        finally:
            del held[key]


def simulate_dataset(
    out_dir: str | Path,
    structures: Structures,
    config: SimulationConfig,
    n: int,
    seed: int = 0,
    batch_size: int = 256,
    device: str = "cpu",
    progress: bool = True,
    generator: str = "cryoshift simulate",
    origin: Origin | None = None,
) -> Path:
    """Simulate ``n`` labelled subtomograms into ``out_dir`` (volumes.mrc, particles.csv, dataset.json).

    particles.csv holds every parameter drawn per subtomogram; dataset.json records the full
    config, the seed, the structure sources, library versions and ``generator`` (who asked).
    Writing is chunked (about ``batch_size`` volumes at a time), so memory stays flat for any
    ``n``. The dataset is a function of (structures, config, seed, n): it is drawn in fixed blocks
    of 256 volumes and rendered in fixed groups (``Simulator.dataset_cells``, ``sample_cells``),
    so the batch size (which ``cryoshift simulate`` lowers to fit the memory free) and the
    thread count change nothing, byte for byte on the CPU (a GPU: to its rounding). A batch
    is a run of whole groups: one group (at most 32 volumes of up to 32^3, or as many voxels)
    when ``batch_size`` is smaller. ``origin`` says where the config's values came from, for the
    errors to name (config.Origin).

    The call holds ``out_dir``'s simulate lock (:func:`simulate_lock`), as ``cryoshift simulate``
    does: a second call into the same folder while this one runs raises :class:`InputError`.
    """
    check_out_folder(out_dir, "OUT_DIR", "the dataset is written to")
    with simulate_lock(out_dir):
        return _simulate_into(
            out_dir, structures, config, n, seed, batch_size, device, progress, generator, origin
        )


def _simulate_into(
    out_dir: str | Path,
    structures: Structures,
    config: SimulationConfig,
    n: int,
    seed: int,
    batch_size: int,
    device: str,
    progress: bool,
    generator: str,
    origin: Origin | None,
) -> Path:
    """:func:`simulate_dataset`'s work, under the folder's lock."""
    from cryoshift.runtime.dataset import META, TABLE, VOLUMES

    # the files this call makes are removed if it fails: left behind, a stack made the folder look
    # like an unfinished dataset that ``cryoshift simulate`` refuses to write over
    made = [
        Path(out_dir) / name
        for name in (VOLUMES, TABLE, META)
        if not (Path(out_dir) / name).exists() and not (Path(out_dir) / name).is_symlink()
    ]
    sim = Simulator(structures, config, device=device, seed=seed)
    meta: dict[str, Any] = {
        "generator": generator,
        "seed": int(seed),
        "device": str(device),
        "simulation": config.to_dict(),
        "structures": list(structures.sources),
        "structures_skipped": [skip.record() for skip in structures.skipped],  # {"file", "reason"}
        "versions": versions(),
    }
    chunks = batch_cells(sim.dataset_cells(n), batch_size)
    counts = np.zeros(len(structures), np.int64)  # volumes per class
    writer: DatasetWriter | None = None
    try:
        writer = _open_writer(out_dir, n, structures, sim.class_names, config.contrast, meta)
        if progress:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            columns = (
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
            )
            # on stderr, as classify's: stdout holds the one result line (a pipe reader may leave)
            with Progress(*columns, transient=False, console=Console(stderr=True)) as bar:
                task = bar.add_task("simulating", total=n)
                for cells in chunks:
                    counts += _write_chunk(sim, writer, cells, origin)
                    bar.advance(task, cells[-1][1] - cells[0][0])
        else:
            for cells in chunks:
                counts += _write_chunk(sim, writer, cells, origin)
        path = writer.close()
    except OSError as exc:  # a full disk, a file-size limit: say which file, and that nothing is left
        _remove_unfinished(writer, made)
        shown = exc if exc.filename is not None else writing_error(Path(out_dir) / VOLUMES, exc)
        raise OSError(shown.errno, f"{shown.strerror}; {REMOVED_UNFINISHED}", shown.filename) from exc
    except BaseException:
        _remove_unfinished(writer, made)
        raise
    warn_empty_classes(path, sim.class_names, counts)
    return path


# What a failed simulate says of its folder (_remove_unfinished took out what it had written).
REMOVED_UNFINISHED = "the unfinished dataset was removed; rerun the command to start again"


def _open_writer(
    out_dir: str | Path,
    n: int,
    structures: Structures,
    class_names: list[str],
    contrast: str,
    meta: dict[str, Any],
) -> DatasetWriter:
    """The dataset writer, whose stack is made (full size) at once: the first write a full disk fails."""
    from cryoshift.runtime.dataset import DatasetWriter

    return DatasetWriter(
        out_dir,
        n,
        structures.box_size,
        structures.voxel_size,
        class_names,
        contrast=contrast,
        meta=meta,
    )


def _remove_unfinished(writer: DatasetWriter | None, made: list[Path]) -> None:
    """Close the stack of a failed simulate and remove the files it made. Closing may fail again (a
    full disk: the rest of a buffer): the first failure is the one said, and the files still go.
    Why: the stack was removed only after a clean close, so a full disk left a partial volumes.mrc
    that the next ``simulate`` refused ("already holds an unfinished dataset")."""
    try:
        if writer is not None:
            writer.abort()
    except OSError:
        pass
    finally:
        for path in made:
            path.unlink(missing_ok=True)


def warn_empty_classes(path: Path, names: list[str], counts: np.ndarray) -> None:
    """One warning when the random draw of classes left some class without a volume: train refuses
    such a dataset ("class X has no volumes"), so the run is better repeated now. (``cryoshift
    simulate`` refuses an --n below the number of classes, where some class surely gets none.)"""
    import sys

    empty = [name for name, count in zip(names, counts.tolist(), strict=True) if count == 0]
    if not empty:
        return
    shown = ", ".join(empty[:4]) + (f" and {len(empty) - 4} more" if len(empty) > 4 else "")
    print(
        f"cryoshift: warning: {path}: class {shown} got none of the {int(counts.sum())} volumes (each "
        "volume's class is drawn at random); train refuses a dataset with an empty class: simulate "
        "more volumes (--n) or draw again (--seed)",
        file=sys.stderr,
        flush=True,
    )


def batch_cells(cells: list[tuple[int, int]], batch_size: int) -> list[list[tuple[int, int]]]:
    """Consecutive render groups (``Simulator.dataset_cells``) gathered into batches of at most
    ``batch_size`` volumes, or one group where a group alone is larger: groups are never split,
    so the batch size decides only how much is held at once, not what is drawn or how it rounds."""
    batches: list[list[tuple[int, int]]] = []
    for cell in cells:
        if batches and cell[1] - batches[-1][0][0] <= batch_size:
            batches[-1].append(cell)
        else:
            batches.append([cell])
    return batches


def _write_chunk(
    sim: Simulator, writer: DatasetWriter, cells: list[tuple[int, int]], origin: Origin | None = None
) -> np.ndarray:
    """Simulate the volumes of a run of render groups and append them, once they are known to
    hold a usable signal; returns the number of volumes of each class."""
    vol, labels, rows = sim.sample_cells(cells)
    volumes = vol.cpu().numpy()
    check_volumes(volumes, rows, cells[0][0], origin)
    labels = labels.cpu().numpy()
    writer.write(volumes, labels, rows)
    return np.bincount(labels, minlength=len(sim.class_names))
