"""Tiny synthetic domains for the training tests: 16^3 blobs, a few dozen volumes.

Three classes (sphere, rod, dumbbell) drawn dark on a noisy background; the "target" domain
differs the way experimental data does (other noise level, blur, intensity offset and scale),
so adaptation has a shift to work on. Written through the runtime's ``write_dataset``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from cryoshift.runtime.dataset import write_dataset

BOX = 16
CLASSES = ["sphere", "rod", "dumbbell"]


def _shape(kind: int, rng: np.random.Generator) -> np.ndarray:
    z, y, x = np.mgrid[:BOX, :BOX, :BOX] - (BOX - 1) / 2 + rng.normal(0, 0.7, size=3)[:, None, None, None]
    if kind == 0:
        return (x**2 + y**2 + z**2 < 4.0**2).astype(np.float32)
    if kind == 1:
        return ((y**2 + z**2 < 1.8**2) & (np.abs(x) < 6)).astype(np.float32)
    a = (x - 3.5) ** 2 + y**2 + z**2 < 2.6**2
    b = (x + 3.5) ** 2 + y**2 + z**2 < 2.6**2
    return (a | b).astype(np.float32)


def make_volumes(n: int, seed: int, shifted: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(CLASSES)
    rng.shuffle(labels)
    vols = np.empty((n, BOX, BOX, BOX), dtype=np.float32)
    for i, k in enumerate(labels):
        v = -_shape(int(k), rng)  # dark particle
        if shifted:
            v = gaussian_filter(v, 1.0) * 3.0 + 5.0 + rng.normal(0, 0.6, v.shape)
        else:
            v = v + rng.normal(0, 0.3, v.shape)
        vols[i] = v
    return vols, labels.astype(np.int64)


def write_domain(path: Path, n: int, seed: int, shifted: bool, labelled: bool = True) -> Path:
    vols, labels = make_volumes(n, seed, shifted)
    return write_dataset(
        path,
        vols,
        labels if labelled else None,
        CLASSES if labelled else None,
        voxel_size=10.0,
        contrast="dark",
    )


@pytest.fixture(scope="session")
def domains(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("domains")
    return {
        "source": write_domain(root / "source", 48, seed=1, shifted=False),
        "target": write_domain(root / "target", 30, seed=2, shifted=True),  # labelled: evaluate only
        "target_unlabelled": write_domain(root / "target_u", 30, seed=2, shifted=True, labelled=False),
    }


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    torch.set_num_threads(1)
