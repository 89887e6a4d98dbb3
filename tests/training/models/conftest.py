"""A tiny two-domain toy problem at 16^3: three classes = a Gaussian blob at three x positions.

The target domain has a different contrast, offset and noise level, like simulation vs experiment.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from cryoshift.training.normalise import normalise

BOX = 16
K = 3


def make_domain(n: int, seed: int, contrast: float, offset: float, noise: float) -> tuple:
    g = torch.Generator().manual_seed(seed)
    z, y, x = torch.meshgrid(*(torch.arange(BOX, dtype=torch.float32),) * 3, indexing="ij")
    labels = torch.arange(n) % K
    centres = torch.tensor([3.5, 7.5, 11.5])[labels]
    r2 = (x - centres.reshape(-1, 1, 1, 1)) ** 2 + (y - 7.5) ** 2 + (z - 7.5) ** 2
    vol = contrast * torch.exp(-r2 / 8.0) + offset + noise * torch.randn(n, BOX, BOX, BOX, generator=g)
    return normalise(vol.unsqueeze(1)), labels


@pytest.fixture(scope="session")
def toy() -> dict[str, torch.Tensor]:
    sx, sy = make_domain(24, seed=1, contrast=1.0, offset=0.0, noise=0.3)
    tx, ty = make_domain(24, seed=2, contrast=-0.7, offset=2.0, noise=0.5)
    return {"sx": sx, "sy": sy, "tx": tx, "ty": ty}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads, and on a shared 2-core CI box they lose a lot."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
