"""Small shared fixtures for the simulator tests: 16^3 boxes at 20 A, built once per session."""

from __future__ import annotations

import pytest
import torch

from cryoshift.training.simulate import Structures, builtin_structures

BOX = 16
VOXEL = 20.0


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def builtins16() -> Structures:
    return builtin_structures(BOX, VOXEL, seed=0)


def centroid(vol, box: int):
    """Centre of mass (z, y, x) of the positive part of a volume."""
    import numpy as np

    w = np.clip(np.asarray(vol, dtype=np.float64), 0, None)
    idx = np.indices((box, box, box))
    return np.array([(i * w).sum() / w.sum() for i in idx])
