"""A fixed low-pass in front of a network whose first convolution is strided (``antialias=true``).

Why: the cryonet family's first convolution keeps every second voxel, so whatever the volume holds
above the new grid's Nyquist frequency (a quarter of a cycle per voxel, 40 A at 10 A voxels)
folds back onto the band that carries a small complex's shape. At the benchmark targets' SNR
(0.005-0.02 by template matching's measure) that part of the volume is almost all noise, and a
learnt 3x3x3 kernel trades the low-pass it would need against the features it learns. Template
matching low-passes to exactly that frequency before it correlates (training/template_matching.py)
and wins at low SNR; a network with a light full-resolution convolution before the strided ones
(``stem=8``) gained most at the lowest SNR (results/accuracy_levers.md, ninth round). This puts
the filter in as a prior instead of something to learn (the blur-before-subsampling of Zhang
2019, "Making convolutional networks shift-invariant again").

The filter: the 5-tap binomial [1, 4, 6, 4, 1] / 16 along each axis, its rows renormalised at the
box edge. Its amplitude is cos^4(pi f): 73 % at half the new Nyquist, 25 % at it, 2 % at 1.5x it,
0 at the input's Nyquist. It runs as three small matrix products (far faster on a CPU than a
1-channel 3-D convolution, and exported as MatMul nodes the fp16/int8 exports keep in fp32 like
everything before the first convolution).
"""

from __future__ import annotations

import torch
from torch import nn

BINOMIAL_TAPS = (1.0, 4.0, 6.0, 4.0, 1.0)


def axis_filter(n: int, taps: torch.Tensor) -> torch.Tensor:
    """(n, n) matrix M with ``x @ M`` the filter ``taps`` (odd length, centred) along the last axis,
    each output renormalised by the taps that fall inside the box (a flat volume stays flat)."""
    half = len(taps) // 2
    i = torch.arange(n)
    offset = i[None, :] - i[:, None]  # [output, input]
    inside = offset.abs() <= half
    weight = torch.where(inside, taps[(offset + half).clamp(0, len(taps) - 1)], torch.zeros(()))
    return (weight / weight.sum(1, keepdim=True)).T.contiguous()


def separable(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """(N, C, D, D, D) filtered along X, then Y, then Z by the same (D, D) axis matrix ``m``."""
    x = x @ m
    x = (x.transpose(-1, -2) @ m).transpose(-1, -2)
    return (x.transpose(-1, -3) @ m).transpose(-1, -3)


class AntiAlias(nn.Module):
    """The binomial low-pass of a (N, 1, D, D, D) volume; no parameters, no gradient to its input."""

    def __init__(self, box_size: int):
        super().__init__()
        taps = torch.tensor(BINOMIAL_TAPS)
        self.register_buffer("matrix", axis_filter(int(box_size), taps), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # full precision, as the exported graph runs it (under a bf16 autocast the first
        # convolution casts the filtered volume itself)
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            return separable(x.float(), self.matrix)
