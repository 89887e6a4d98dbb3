"""Cut cubic boxes out of a tomogram at picked coordinates.

The tomogram is indexed (Z, Y, X) and usually memory-mapped, so a crop reads only the
slices it needs. Coordinates are x, y, z in pixels with voxel i centred on i.

Rounding rule: a fractional coordinate goes to the nearest voxel, halves rounding up
(``floor(c + 0.5)``), so 10.5 -> 11 and -0.5 -> 0. The box spans
``[c - box // 2, c - box // 2 + box)`` on each axis: for an even box the picked voxel
sits at index ``box // 2``. A box that reaches past the tomogram edge is padded with the
mean of its in-bounds part (a neutral value for per-box normalisation); a centre that
rounds to a voxel outside the tomogram is an input error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from cryoshift.runtime.errors import InputError


def nearest_voxel(c: float) -> int:
    """The documented rounding rule: nearest voxel, halves up."""
    return math.floor(float(c) + 0.5)


def _fmt(center_xyz: Sequence[float]) -> str:
    return "(" + ", ".join(f"{float(c):g}" for c in center_xyz) + ")"


def crop_box(
    volume_zyx: np.ndarray,
    center_xyz: Sequence[float],
    box: int,
    out: np.ndarray | None = None,
    path: str | None = None,
) -> tuple[np.ndarray, bool]:
    """A float32 (box, box, box) crop centred on ``center_xyz`` and whether it needed padding.

    ``volume_zyx`` is an array (often a memory map) or an :class:`~cryoshift.runtime.mrc.MrcVolume`.
    ``out`` (float32, (box, box, box)) is filled in place when given, so a batch can be
    assembled without extra copies. ``path`` names the tomogram in error messages.
    """
    if not isinstance(volume_zyx, np.ndarray) and hasattr(volume_zyx, "data"):
        path = path if path is not None else str(volume_zyx.path)
        volume_zyx = volume_zyx.data
    if volume_zyx.ndim != 3:
        raise InputError(path, f"expected a 3-D tomogram to crop from, got shape {volume_zyx.shape}")
    box = int(box)
    if box <= 0:
        raise InputError(path, f"box size must be positive, got {box}")
    if len(center_xyz) != 3:
        raise InputError(path, f"expected x, y, z coordinates, got {len(center_xyz)} values")
    if not all(math.isfinite(float(c)) for c in center_xyz):
        raise InputError(path, f"coordinate {_fmt(center_xyz)} is not finite")
    centre_zyx = [nearest_voxel(c) for c in reversed(center_xyz)]
    shape = volume_zyx.shape
    if any(c < 0 or c >= n for c, n in zip(centre_zyx, shape, strict=True)):
        nz, ny, nx = shape
        raise InputError(
            path,
            f"coordinate (x, y, z) = {_fmt(center_xyz)} is outside the tomogram "
            f"of {nx}x{ny}x{nz} voxels (x 0..{nx - 1}, y 0..{ny - 1}, z 0..{nz - 1})",
        )
    if out is None:
        out = np.empty((box, box, box), dtype=np.float32)
    elif out.shape != (box, box, box) or out.dtype != np.float32:
        raise ValueError(f"out must be float32 of shape {(box, box, box)}, got {out.dtype} {out.shape}")
    src, dst = [], []
    for c, n in zip(centre_zyx, shape, strict=True):
        lo = c - box // 2
        hi = lo + box
        slo, shi = max(lo, 0), min(hi, n)
        src.append(slice(slo, shi))
        dst.append(slice(slo - lo, shi - lo))
    inside = volume_zyx[tuple(src)]
    padded = inside.shape != (box, box, box)
    if padded:
        fill = float(np.mean(inside, dtype=np.float64))
        out.fill(fill)
    out[tuple(dst)] = inside
    return out, padded


def crop_boxes(
    volume: np.ndarray,
    centers: np.ndarray | Sequence[Sequence[float]],
    box: int,
    path: str | None = None,
) -> tuple[np.ndarray, int]:
    """Crops for an (N, 3) array of x, y, z centres: an (N, box, box, box) float32 array and the
    number of crops that needed padding. A bad centre raises :class:`InputError` naming its row;
    callers that must skip bad items call :func:`crop_box` per item instead.
    """
    if not isinstance(volume, np.ndarray) and hasattr(volume, "data"):
        path = path if path is not None else str(volume.path)
        volume = volume.data
    centers = np.asarray(centers, dtype=np.float64)
    if centers.ndim != 2 or centers.shape[1] != 3:
        raise InputError(path, f"expected an (N, 3) array of x, y, z centres, got shape {centers.shape}")
    out = np.empty((len(centers), box, box, box), dtype=np.float32)
    n_padded = 0
    for i, c in enumerate(centers):
        try:
            _, padded = crop_box(volume, c, box, out=out[i], path=path)
        except InputError as exc:
            raise InputError(path, f"row {i}: {exc.reason}") from exc
        n_padded += int(padded)
    return out, n_padded
