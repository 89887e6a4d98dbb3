"""The Cryo-Shift simulator: labelled subtomograms from density maps, atomic models or built-ins.

Quick use::

    from cryoshift.training.simulate import load_structures, Simulator, PRESETS
    structures = load_structures(["builtin"], box_size=32, voxel_size=10.0)
    sim = Simulator(structures, PRESETS["paper"], device="cpu", seed=0)
    volumes, labels, params = sim.sample(256)

Two fidelity levels (``SimulationConfig.fidelity``): "fast" (one Fourier filter per volume,
see ``fast.py``) and "tilt" (per-tilt projection, CTF and noise, weighted back-projection, see
``tilt.py``); each module's docstring lists what it leaves out.
"""

from cryoshift.training.simulate.builtin import BUILTIN_NAMES
from cryoshift.training.simulate.config import PRESETS, SimulationConfig
from cryoshift.training.simulate.dataset import simulate_dataset
from cryoshift.training.simulate.simulator import PARAM_COLUMNS, Simulator
from cryoshift.training.simulate.structures import Structures, builtin_structures, load_structures

__all__ = [
    "BUILTIN_NAMES",
    "PARAM_COLUMNS",
    "PRESETS",
    "SimulationConfig",
    "Simulator",
    "Structures",
    "builtin_structures",
    "load_structures",
    "simulate_dataset",
]
