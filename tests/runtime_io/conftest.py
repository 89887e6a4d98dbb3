"""Small real files for the runtime I/O tests: a 16^3-ish tomogram and a few volumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cryoshift.runtime.mrc import write_volume


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def tomo(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, np.ndarray]:
    """A 20 (Z) x 24 (Y) x 28 (X) float32 tomogram with 4.5 A voxels, written as MRC."""
    data = rng.normal(size=(20, 24, 28)).astype(np.float32)
    path = write_volume(tmp_path / "tomo.mrc", data, voxel_size=4.5)
    return path, data
