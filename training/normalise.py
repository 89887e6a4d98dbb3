"""Per-subtomogram normalisation, shared by training and the exported graph.

The exporter wraps the backbone with :class:`Normalise`, so the runtime feeds raw voxel
values and can never disagree with training about scaling.
"""

from __future__ import annotations

import torch
from torch import nn

EPS = 1e-6


def normalise(x: torch.Tensor, mode: str = "zscore") -> torch.Tensor:
    """Normalise each sample of ``x`` (B, 1, D, H, W) independently.

    ``zscore``: zero mean, unit standard deviation (robust to the intensity scale of
    each tomogram); ``minmax``: scaled to [0, 1] as in the Cryo-Shift release.
    """
    flat = x.reshape(x.shape[0], -1)
    if mode == "zscore":
        mean = flat.mean(dim=1)
        std = flat.std(dim=1, unbiased=False)
        shape = (-1,) + (1,) * (x.dim() - 1)
        return (x - mean.reshape(shape)) / (std.reshape(shape) + EPS)
    if mode == "minmax":
        lo = flat.amin(dim=1)
        hi = flat.amax(dim=1)
        shape = (-1,) + (1,) * (x.dim() - 1)
        return (x - lo.reshape(shape)) / (hi - lo + EPS).reshape(shape)
    raise ValueError(f"unknown normalisation {mode!r}; choose 'zscore' or 'minmax'")


class Normalise(nn.Module):
    def __init__(self, mode: str = "zscore"):
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return normalise(x, self.mode)
