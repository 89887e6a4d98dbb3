"""Atomic models (PDB / mmCIF) -> electron-scattering density with gemmi.

gemmi sums the electron scattering factors of every atom on a grid; a Gaussian blur of
B = 8 pi^2 sigma^2 with sigma = 0.225 * resolution (the molmap convention) limits the map to
the chosen resolution. Hydrogens and waters are removed: at 1 nm voxels they only add a
uniform haze.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from cryoshift.runtime.errors import InputError

# Largest density grid computed (float32, ~4 GiB, and gemmi needs about as much again): a
# 2000 A molecule at 2 A spacing. Coordinates spanning more are a broken file, not one particle.
MAX_GRID_VOXELS = 2**30


def _read_model(path: Path):
    import gemmi

    try:
        st = gemmi.read_structure(str(path))
    except (RuntimeError, ValueError, OSError) as exc:
        raise InputError(path, f"cannot read atomic model ({exc})") from exc
    if len(st) == 0:
        raise InputError(path, "atomic model has no models/atoms")
    st.remove_hydrogens()
    st.remove_waters()
    st.remove_empty_chains()
    return st


def atom_positions(path: str | Path) -> np.ndarray:
    """(N, 3) x, y, z in Angstrom of the heavy atoms of the first model (after the same cleanup)."""
    st = _read_model(Path(path))
    return np.array([a.pos.tolist() for ch in st[0] for r in ch for a in r], dtype=np.float64).reshape(-1, 3)


def atomic_density(
    path: str | Path, resolution: float, spacing: float = 2.0, margin: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Density of the first model of ``path`` on a grid of about ``spacing`` Angstrom.

    Returns ``(density (Z, Y, X) float32, origin_xyz, spacing_xyz)``: voxel (i, j, k) of the map
    sits at x, y, z = origin + (k, j, i) * spacing in the model's Angstrom coordinates (gemmi
    rounds the grid to FFT-friendly sizes, so the spacing differs slightly per axis).
    """
    import gemmi

    path = Path(path)
    if resolution <= 0 or spacing <= 0:
        raise InputError(path, "resolution and spacing must be positive")
    st = _read_model(path)
    model = st[0]
    xyz = np.array([a.pos.tolist() for ch in model for r in ch for a in r], dtype=np.float64).reshape(-1, 3)
    if len(xyz) == 0:
        raise InputError(path, "atomic model has no heavy atoms")
    bad = int((~np.isfinite(xyz)).any(axis=1).sum())
    if bad:
        raise InputError(path, f"{bad} atoms have NaN or infinite coordinates")
    sigma = 0.225 * resolution
    margin = max(3.0 * sigma + 5.0, 2 * spacing) if margin is None else margin
    span = xyz.max(0) - xyz.min(0)
    size = np.ceil((span + 2 * margin) / spacing).astype(int)
    if float(np.prod(size.astype(np.float64))) > MAX_GRID_VOXELS:
        extent = " x ".join(f"{v:.0f}" for v in span)
        grid = "x".join(str(v) for v in size)
        raise InputError(
            path,
            f"atoms span {extent} A: its density grid at {spacing:g} A spacing would be {grid} "
            f"voxels, over the limit of {MAX_GRID_VOXELS} (is this one particle? check the "
            "coordinates, or give a density map instead)",
        )
    size += size % 2  # even sizes suit FFT-based tools
    origin = xyz.min(0) - margin
    shift = gemmi.Position(*(-origin))
    for ch in model:
        for r in ch:
            for a in r:
                a.pos = a.pos + shift
    lengths = size * spacing
    st.cell = gemmi.UnitCell(float(lengths[0]), float(lengths[1]), float(lengths[2]), 90.0, 90.0, 90.0)
    st.spacegroup_hm = "P 1"
    calc = gemmi.DensityCalculatorE()
    calc.d_min = 2.0 * spacing
    calc.blur = 8.0 * math.pi**2 * sigma**2
    calc.rate = 1.0
    calc.set_grid_cell_and_spacegroup(st)
    try:
        calc.put_model_density_on_grid(model)
    except (RuntimeError, ValueError) as exc:
        raise InputError(path, f"gemmi could not compute density ({exc})") from exc
    grid = calc.grid
    density = np.array(grid, copy=True).transpose(2, 1, 0)  # gemmi (x, y, z) -> (Z, Y, X)
    actual = lengths / np.array([grid.nu, grid.nv, grid.nw], dtype=np.float64)
    return density.astype(np.float32), origin, actual
