"""The warp module: network-driven domain randomization of simulated subtomograms (Cryo-Shift).

An encoder feeds two branches:

* intensity (learned): a small U-Net-like decoder whose tanh output is added to the volume. The
  release adds +-0.1 to volumes min-max scaled to [0, 1], i.e. 10 % of each volume's value range.
  Volumes here are usually z-scored (unit std, range ~6-10), so the perturbation is scaled by each
  sample's own value range: ``intensity * (max - min)``. That is exactly the release's +-0.1 in
  ``minmax`` mode and the same relative change in ``zscore`` mode. The sum is clamped to the
  sample's original [min, max], so the warp never creates values outside the input range.
* deformation (random): a decoder whose weights are drawn afresh at EVERY call (never learned)
  maps the encoder features to a 3-channel displacement field, which is upsampled, Gaussian
  smoothed, normalised to a largest shift of ``max_shift`` voxels and scaled per sample by a
  learned strength in (0, 1), then applied with trilinear ``grid_sample`` (border padding).

The warp is trained only through the image-level discriminator's reversed gradient (see
``cryoshift.py``); it is not part of the exported model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(c_in, c_out, 3, stride=stride, padding=1), nn.ReLU(inplace=True))


def gaussian_smooth(field: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a (B, C, D, H, W) field, replicate padding, per channel."""
    if sigma <= 0:
        return field
    radius = max(1, math.ceil(2 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=field.dtype, device=field.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = field.shape[1]
    for axis in range(3):
        shape = [1, 1, 1]
        shape[axis] = k.numel()
        weight = k.reshape(1, 1, *shape).repeat(c, 1, 1, 1, 1)
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius  # F.pad lists the last axis first
        field = F.conv3d(F.pad(field, pad, mode="replicate"), weight, groups=c)
    return field


class Warp(nn.Module):
    def __init__(self, channels: int = 8, max_shift: float = 2.0, sigma: float = 2.0, intensity: float = 0.1):
        super().__init__()
        c = channels
        self.max_shift, self.sigma, self.intensity = float(max_shift), float(sigma), float(intensity)
        # Every learned layer works at half resolution or coarser: 3-D convolution backward passes at
        # full size are an order of magnitude slower on CPU, and the intensity change is upsampled.
        self.enc1, self.enc2, self.enc3 = _conv(1, c, 2), _conv(c, 2 * c, 2), _conv(2 * c, 2 * c, 2)
        self.dec2, self.dec1 = _conv(4 * c, c), _conv(2 * c, c)
        self.to_intensity = nn.Conv3d(c, 1, 1)
        nn.init.zeros_(self.to_intensity.weight)  # start as "deformation only"; intensity is learned
        nn.init.zeros_(self.to_intensity.bias)
        self.strength = nn.Linear(2 * c, 1)  # sigmoid -> per-sample deformation strength in (0, 1)
        nn.init.zeros_(self.strength.bias)

    @torch.no_grad()
    def random_field(self, feats: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
        """Displacement field (B, 3, D, H, W) in voxels, max |shift| = 1, from a fresh random decoder.

        The field is random by design, so no gradient flows through it (only the learned per-sample
        strength is trained). It is smoothed on the coarse feature grid (``sigma`` converted to that
        grid) and then upsampled trilinearly: the result is as smooth as smoothing at full size, at a
        fraction of the cost, which is what keeps the warp affordable on CPU.
        """
        feats = feats.detach()
        c_in, hidden = feats.shape[1], max(4, feats.shape[1] // 2)
        w1 = torch.randn(hidden, c_in, 3, 3, 3, device=feats.device, dtype=feats.dtype)
        w2 = torch.randn(3, hidden, 3, 3, 3, device=feats.device, dtype=feats.dtype)
        w1 *= math.sqrt(2.0 / (c_in * 27))
        w2 *= math.sqrt(1.0 / (hidden * 27))
        field = F.conv3d(F.relu(F.conv3d(feats, w1, padding=1)), w2, padding=1)
        coarse_sigma = self.sigma * feats.shape[-1] / max(size[-1], 1)
        field = gaussian_smooth(field, coarse_sigma)
        field = F.interpolate(field, size=size, mode="trilinear", align_corners=True)
        peak = field.abs().amax(dim=(1, 2, 3, 4), keepdim=True)
        return field / (peak + 1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = tuple(x.shape[2:])
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        # intensity branch (learned, U-Net-like)
        d2 = self.dec2(torch.cat([F.interpolate(e3, size=e2.shape[2:], mode="trilinear"), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, size=e1.shape[2:], mode="trilinear"), e1], 1))
        flat = x.detach().flatten(1)
        lo = flat.amin(1).reshape(-1, 1, 1, 1, 1)
        hi = flat.amax(1).reshape(-1, 1, 1, 1, 1)
        change = F.interpolate(self.to_intensity(d1), size=size, mode="trilinear", align_corners=False)
        delta = torch.tanh(change) * self.intensity * (hi - lo)
        # deformation branch (random decoder, learned strength)
        strength = torch.sigmoid(self.strength(e3.mean(dim=(2, 3, 4)))).reshape(-1, 1, 1, 1, 1)
        shift = self.random_field(e3, size) * self.max_shift * strength  # voxels, (B, 3, D, H, W)
        voxel = torch.tensor([2.0 / max(s - 1, 1) for s in reversed(size)], device=x.device)  # x, y, z
        identity = torch.eye(3, 4, device=x.device).unsqueeze(0).expand(x.shape[0], 3, 4)
        grid = F.affine_grid(identity, list(x.shape), align_corners=True)
        grid = grid + shift.permute(0, 2, 3, 4, 1) * voxel
        moved = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
        return torch.clamp(moved + delta, lo, hi)
