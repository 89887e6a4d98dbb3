"""Structural variability: no particle in a cell is exactly its deposited map.

Conformational flexibility, sub-stoichiometric subunits and bound partners make every copy of a
complex a little different, and a tomogram's voxel size is rarely exactly its header's, so a
particle spans a few percent more or fewer voxels than its map. A classifier trained on rigid
copies of the map learns the map's exact details, which experimental particles do not share;
randomising them (smooth random deformations, a magnification, a missing lobe, an extra bound
blob) teaches it the shape that survives. This is the simulator's side of the random deformations
Cryo-Shift's warp module applies to volumes, done once on the clean density, where it is cheap.

The simulator applies it to a small bank of variants of each map per draw (each then seen under
many rotations), so the cost stays a few percent of simulation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

COARSE = 5  # control points per axis of the random displacement field


def random_numbers(seeds: list[int]) -> dict[str, torch.Tensor]:
    """Per particle: coarse displacement noise, lobe/blob directions and sizes, from its own seed."""
    coarse, direction, size = [], [], []
    for seed in seeds:
        g = torch.Generator().manual_seed(int(seed))
        coarse.append(torch.randn(3, COARSE, COARSE, COARSE, generator=g))
        direction.append(torch.randn(2, 3, generator=g))
        size.append(torch.rand(2, generator=g))
    return {"coarse": torch.stack(coarse), "direction": torch.stack(direction), "size": torch.stack(size)}


def flex_fields(
    coarse: torch.Tensor, box: int, rms_voxels: torch.Tensor, device: torch.device
) -> torch.Tensor:
    """Smooth random displacements (n, D, D, D, 3) in voxels with the given per-volume RMS."""
    coarse = coarse.to(device)
    field = F.interpolate(coarse, size=(box, box, box), mode="trilinear", align_corners=True)
    rms = field.square().mean(dim=(1, 2, 3, 4), keepdim=True).sqrt().clamp_min(1e-6)
    return (field / rms * rms_voxels.to(device, torch.float32).view(-1, 1, 1, 1, 1)).permute(0, 2, 3, 4, 1)


def magnification_field(scale: torch.Tensor, box: int, device: torch.device) -> torch.Tensor:
    """Displacements (n, D, D, D, 3) in voxels that magnify each volume by ``scale`` about the box
    centre (for :func:`deform`, alone or added to a flex field): out(x) = in(c + (x - c) / scale)."""
    axis = torch.arange(box, device=device, dtype=torch.float32) - (box - 1) / 2
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    pos = torch.stack([x, y, z], -1).unsqueeze(0)
    return pos * (1.0 / scale.to(device, torch.float32).view(-1, 1, 1, 1, 1) - 1.0)


def deform(density: torch.Tensor, displacement: torch.Tensor) -> torch.Tensor:
    """Resample (n, D, D, D) densities at x + displacement (voxels, last axis x, y, z)."""
    box = density.shape[-1]
    axis = torch.linspace(-1.0, 1.0, box, device=density.device)
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    grid = torch.stack([x, y, z], -1).unsqueeze(0) + displacement * (2.0 / (box - 1))
    return F.grid_sample(
        density.unsqueeze(1), grid, mode="bilinear", padding_mode="zeros", align_corners=True
    )[:, 0]


def vary_composition(
    density: torch.Tensor,
    radius: torch.Tensor,
    missing: torch.Tensor,
    extra: torch.Tensor,
    numbers: dict[str, torch.Tensor],
) -> torch.Tensor:
    """Remove a lobe (``missing``) and/or add a bound blob (``extra``) per volume, as boolean masks.

    The lobe is a soft sphere of 0.3-0.45 particle radii centred 0.6 radii from the centre; the
    blob a Gaussian of the same size on the surface, half as dense as the particle's peak.
    """
    box, device = density.shape[-1], density.device
    direction = numbers["direction"] / numbers["direction"].norm(dim=-1, keepdim=True).clamp_min(1e-6)
    size = ((0.3 + 0.15 * numbers["size"]) * radius.view(-1, 1).float()).clamp_min(1.5)
    centre = direction * (radius.view(-1, 1, 1).float() * torch.tensor([0.6, 1.0]).view(1, 2, 1))
    a = torch.arange(box, device=device, dtype=torch.float32) - box // 2
    z, y, x = torch.meshgrid(a, a, a, indexing="ij")
    pos = torch.stack([x, y, z], -1)  # (D, D, D, 3)
    out = density.clone()
    for slot, chosen in enumerate((missing, extra)):
        idx = chosen.nonzero().flatten()
        if len(idx) == 0:
            continue
        c = centre[idx, slot].to(device).view(-1, 1, 1, 1, 3)
        r = size[idx, slot].to(device).view(-1, 1, 1, 1)
        d2 = (pos.unsqueeze(0) - c).square().sum(-1)
        part = out[idx.to(device)]
        if slot == 0:
            part = part * torch.sigmoid((d2.sqrt() - r) / 0.7)
        else:
            level = 0.5 * density[idx.to(device)].flatten(1).amax(1).view(-1, 1, 1, 1)
            part = part + level * torch.exp(-0.5 * d2 / (0.6 * r) ** 2)
        out[idx.to(device)] = part
    return out
