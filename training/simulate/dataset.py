"""Write a simulated, labelled dataset directory (the format of cryoshift.runtime.dataset)."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cryoshift.runtime.errors import InputError, check_out_folder
from cryoshift.training.simulate.config import Origin, SimulationConfig
from cryoshift.training.simulate.simulator import Simulator
from cryoshift.training.simulate.structures import Structures

if TYPE_CHECKING:
    from cryoshift.runtime.dataset import DatasetWriter


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
    """
    from cryoshift.runtime.dataset import VOLUMES, DatasetWriter

    check_out_folder(out_dir, "OUT_DIR", "the dataset is written to")
    # a stack this call makes is removed if it fails: left behind, it made the folder look like
    # an unfinished dataset that ``cryoshift simulate`` refuses to write over
    stack = Path(out_dir) / VOLUMES
    stack_is_new = not stack.exists() and not stack.is_symlink()
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
    writer = DatasetWriter(
        out_dir,
        n,
        structures.box_size,
        structures.voxel_size,
        sim.class_names,
        contrast=config.contrast,
        meta=meta,
    )
    chunks = batch_cells(sim.dataset_cells(n), batch_size)
    counts = np.zeros(len(structures), np.int64)  # volumes per class
    try:
        if progress:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            columns = (
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
            )
            with Progress(*columns, transient=False) as bar:
                task = bar.add_task("simulating", total=n)
                for cells in chunks:
                    counts += _write_chunk(sim, writer, cells, origin)
                    bar.advance(task, cells[-1][1] - cells[0][0])
        else:
            for cells in chunks:
                counts += _write_chunk(sim, writer, cells, origin)
    except BaseException:
        writer.abort()
        if stack_is_new:
            stack.unlink(missing_ok=True)
        raise
    path = writer.close()
    warn_empty_classes(path, sim.class_names, counts)
    return path


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
