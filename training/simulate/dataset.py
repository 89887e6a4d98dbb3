"""Write a simulated, labelled dataset directory (the format of cryoshift.runtime.dataset)."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from cryoshift.training.simulate.config import SimulationConfig
from cryoshift.training.simulate.simulator import Simulator
from cryoshift.training.simulate.structures import Structures


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
) -> Path:
    """Simulate ``n`` labelled subtomograms into ``out_dir`` (volumes.mrc, particles.csv, dataset.json).

    particles.csv holds every parameter drawn per subtomogram; dataset.json records the full
    config, the seed, the structure sources, library versions and ``generator`` (who asked).
    Writing is chunked (``batch_size`` volumes at a time), so memory stays flat for any ``n``;
    the same seed and chunking give identical volumes on the same device.
    """
    from cryoshift.runtime.dataset import DatasetWriter

    sim = Simulator(structures, config, device=device, seed=seed)
    meta: dict[str, Any] = {
        "generator": generator,
        "seed": int(seed),
        "device": str(device),
        "simulation": config.to_dict(),
        "structures": list(structures.sources),
        "structures_skipped": list(structures.skipped),
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
    chunks = [min(batch_size, n - start) for start in range(0, n, batch_size)]
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
                for k in chunks:
                    vol, labels, rows = sim.sample(k)
                    writer.write(vol.cpu().numpy(), labels.cpu().numpy(), rows)
                    bar.advance(task, k)
        else:
            for k in chunks:
                vol, labels, rows = sim.sample(k)
                writer.write(vol.cpu().numpy(), labels.cpu().numpy(), rows)
    except BaseException:
        writer.abort()
        raise
    return writer.close()
