"""Pose normalisation: each subtomogram rotated into the frame of its own principal axes.

Why: the network is short of template matching even on clean simulated volumes, and its errors
are small complexes in arbitrary orientations (results/accuracy_levers.md, ninth round), which
template matching gets from an explicit search over rotations. Reading the particle's principal
axes from its low-passed density and rotating the box so that they line up with the grid leaves
the network a far smaller invariance to learn. ``benchmarks/canonical_pose_screen.py`` measured
how well the frame can be read at the targets' SNR before this was tried.

The frame: second moments of the positive part of the low-passed, dark-protein density inside a
sphere, about its weighted centre (moved at most ``max_shift`` voxels); axes in ascending order of
spread, each signed so that the density's third moment along it is positive, the least certain
sign flipped where that makes a reflection. Computed without gradients: it only moves the data.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .lowpass import separable

# Sizes as fractions of the box, which the user sizes to the particle (at 32^3: a 1.3-voxel
# Gaussian low-pass, a 10-voxel sphere that holds the particle and little of its neighbours, and
# a centre moved at most 3 voxels, the reach of template matching's shift search)
BLUR_SIGMA = 1.3 / 32
MASK_RADIUS = 10 / 32
MAX_SHIFT = 3 / 32


class CanonicalPose(nn.Module):
    def __init__(self, box_size: int):
        super().__init__()
        self.box_size, self.max_shift = int(box_size), MAX_SHIFT * box_size
        sigma = BLUR_SIGMA * box_size
        # The moments are read at half resolution (2x2x2 means; every even box): the low-pass keeps
        # nothing finer anyway, and 8x fewer voxels make the frame cheap next to the network.
        self.bin = 2 if box_size % 2 == 0 else 1
        n = box_size // self.bin
        # the Gaussian low-pass as one (n, n) matrix per axis, rows renormalised at the box edge:
        # three small matrix products, far faster on a CPU than 1-channel 3-D convolutions
        i = torch.arange(n, dtype=torch.float32)
        blur = torch.exp(-((i[:, None] - i[None]) ** 2) / (2 * (sigma / self.bin) ** 2))
        self.register_buffer("blur", (blur / blur.sum(1, keepdim=True)).T.contiguous(), persistent=False)
        # voxel centres of the moment grid and of the box, as zyx offsets (full voxels) from the centre
        self.register_buffer("coords", _offsets(n, self.bin, box_size), persistent=False)
        self.register_buffer("box_coords", _offsets(box_size, 1, box_size), persistent=False)
        r = MASK_RADIUS * box_size
        self.register_buffer("mask", (self.coords.square().sum(1) <= r * r).float(), persistent=False)

    def frames(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, 3) rotations (columns: the particle's axes, zyx) and (N, 3) centres (voxels from
        the box centre) of volumes ``x`` (N, 1, D, D, D), dark protein."""
        x = x.float()
        if self.bin > 1:
            x = F.avg_pool3d(x, self.bin)
        d = -separable(x, self.blur).flatten(1)  # (N, V), protein positive
        m = self.mask
        level = (d * m).sum(1, keepdim=True) / m.sum()
        w = torch.relu(d - level) * m
        total = w.sum(1, keepdim=True).clamp_min(1e-12)
        centre = (w @ self.coords) / total  # (N, 3)
        centre = centre.clamp(-self.max_shift, self.max_shift)
        rel = self.coords[None] - centre[:, None]  # (N, V, 3)
        cov = ((w[:, :, None] * rel).transpose(1, 2) @ rel) / total[:, :, None]
        axes = symmetric_eigenvectors(cov)
        proj = rel @ axes  # (N, V, 3) coordinates along the axes
        third = (w[:, :, None] * proj**3).sum(1)  # (N, 3)
        sign = torch.where(third < 0, -1.0, 1.0)
        axes = axes * sign[:, None, :]
        # a proper rotation: flip the axis whose sign the third moment settles least
        det = (torch.linalg.cross(axes[:, :, 0], axes[:, :, 1], dim=1) * axes[:, :, 2]).sum(1)
        weakest = (third.abs() / (w[:, :, None] * proj.abs() ** 3).sum(1).clamp_min(1e-12)).argmin(1)
        chosen = (torch.arange(3, device=x.device)[None] == weakest[:, None]).float()  # (N, 3) one-hot
        flip = 1.0 - 2.0 * chosen * (det < 0).float()[:, None]
        return axes * flip[:, None, :], centre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # no gradients (it only moves the data) and full precision (moments under bf16 autocast lose
        # the small differences between axes of a near-symmetric particle)
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            rot, centre = self.frames(x)
            b = self.box_size
            # sample x at centre + R u for every output voxel offset u (zyx)
            pos = centre[:, None] + self.box_coords[None] @ rot.transpose(1, 2) + b // 2  # (N, V, 3) zyx
            return trilinear(x.float(), pos).to(x.dtype)


def trilinear(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """``x`` (N, 1, D, D, D) sampled at ``pos`` (N, D^3, 3: z, y, x voxel indices), zero outside.

    What ``F.grid_sample(align_corners=True)`` computes, written as eight gathers: a 3-D GridSample
    needs ONNX opset 20 and TensorRT does not run it, gathers run everywhere.
    """
    n, b = x.shape[0], x.shape[-1]
    flat = x.reshape(n, -1)
    low = torch.floor(pos)
    frac = pos - low
    low = low.long()
    base = (low[..., 0] * b + low[..., 1]) * b + low[..., 2]  # (N, V) linear index of the low corner
    # per axis: weight and in-box mask of the low (0) and high (1) neighbour
    weights, inside = [], []
    for axis in range(3):
        i, f = low[..., axis], frac[..., axis]
        weights.append((1 - f, f))
        inside.append((((i >= 0) & (i < b)).float(), ((i >= -1) & (i < b - 1)).float()))
    out = torch.zeros_like(flat)
    for dz in (0, 1):
        for dy in (0, 1):
            wzy = weights[0][dz] * inside[0][dz] * weights[1][dy] * inside[1][dy]
            for dx in (0, 1):
                idx = (base + (dz * b * b + dy * b + dx)).clamp(0, b**3 - 1)  # outside: weight 0
                out = out + flat.gather(1, idx) * (wzy * weights[2][dx] * inside[2][dx])
    return out.reshape(x.shape)


JACOBI_SWEEPS = 6  # a 3x3 symmetric matrix converges to float precision in 4-5 cyclic sweeps


def symmetric_eigenvectors(a: torch.Tensor) -> torch.Tensor:
    """Unit eigenvectors (columns, ascending eigenvalues) of symmetric (N, 3, 3) matrices.

    Cyclic Jacobi rotations with a fixed number of sweeps instead of ``torch.linalg.eigh``: only
    elementwise operations and 3x3 products, so the same arithmetic runs in PyTorch and in the
    exported ONNX graph (ONNX has no eigen-solver), and the frame the network was trained on is
    the frame the runtime computes.
    """
    a = a.float()
    n = a.shape[0]
    eye = torch.eye(3, dtype=a.dtype, device=a.device)
    v = eye.expand(n, 3, 3)
    for _ in range(JACOBI_SWEEPS):
        for p, q in ((0, 1), (0, 2), (1, 2)):
            app, aqq, apq = a[:, p, p], a[:, q, q], a[:, p, q]
            off = apq.abs() > 1e-30
            safe = torch.where(off, apq, torch.ones_like(apq))
            theta = (aqq - app) / (2 * safe)
            sign = torch.where(theta < 0, -1.0, 1.0)
            t = torch.where(
                off, sign / (theta.abs() + torch.sqrt(theta * theta + 1)), torch.zeros_like(theta)
            )
            c = 1 / torch.sqrt(t * t + 1)
            s = t * c
            # J: identity with c at (p, p) and (q, q), s at (p, q), -s at (q, p)
            pick = torch.zeros(4, 3, 3, dtype=a.dtype, device=a.device)
            pick[0, p, p] = pick[0, q, q] = 1.0
            pick[1, p, q] = 1.0
            pick[2, q, p] = 1.0
            pick[3] = eye - pick[0]
            j = c[:, None, None] * pick[0] + s[:, None, None] * pick[1] - s[:, None, None] * pick[2] + pick[3]
            a = j.transpose(1, 2) @ a @ j
            v = v @ j
    values = torch.diagonal(a, dim1=1, dim2=2)
    order = torch.argsort(values, dim=1)
    return torch.gather(v, 2, order[:, None, :].expand(-1, 3, -1))


def _offsets(n: int, step: int, box_size: int) -> torch.Tensor:
    """(n^3, 3) zyx centres of the voxels of an n^3 grid of ``step``-voxel bins over the box, as
    offsets in box voxels from voxel box_size // 2."""
    g = torch.arange(n, dtype=torch.float32) * step + (step - 1) / 2 - box_size // 2
    z, y, x = torch.meshgrid(g, g, g, indexing="ij")
    return torch.stack([z, y, x], -1).reshape(-1, 3)
