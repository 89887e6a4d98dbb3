"""What the demo simulates: its "experimental" target and a simulate-to-dataset helper.

``target_config`` is the demo's target physics (tilt-series reconstruction, crowding,
off-centre picks, low SNR, coloured noise, flexible and partly occupied particles);
``simulate_to_dataset`` writes labelled simulated volumes into a dataset directory (the demo's
target, the benchmarks' splits). The demo itself crosses every wing, so it lives with its
command: ``cryoshift.runtime.commands.demo`` (run_demo).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def target_config() -> Any:
    """The "experimental" target: what simple simulation leaves out, made with the tilt-series model."""
    from cryoshift.training.simulate.config import SimulationConfig

    return SimulationConfig(
        fidelity="tilt",
        snr=(0.05, 0.3),
        tilt_max=(45.0, 50.0),
        dose_weighting=True,
        defocus_um=(-5.0, -3.0),
        shift_voxels=1.5,
        crowding=0.5,
        neighbours=(1, 2),
        noise_alpha=(0.5, 1.0),
        gradient=(0.0, 0.3),
        flex_voxels=(0.3, 0.8),
        p_partial=0.3,
        p_extra=0.3,
    )


def simulate_to_dataset(structures: Any, config: Any, n: int, out: Path, seed: int, chunk: int = 64) -> Path:
    """Simulate ``n`` labelled volumes of ``structures`` into a dataset directory, ``chunk`` at a time.

    Labels go into the table as usual; training reads a target's labels only for the oracle,
    and the demo reads them only to score. Same seed, same device -> same data; a GPU
    (benchmark gpu profile) simulates much faster.
    """
    import torch

    from cryoshift.training.simulate.dataset import simulate_dataset

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return simulate_dataset(
        out,
        structures,
        config,
        n,
        seed=seed,
        batch_size=chunk,
        device=device,
        progress=False,
        generator="cryoshift.training.demo",
    )
