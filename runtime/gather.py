"""Crops gathered on the GPU: each tomogram is uploaded once, boxes are cut out on the device.

Cutting boxes on the host sends every voxel of every box over PCIe, overlapping boxes many
times over; uploading the tomogram once and gathering on the device sends each voxel once
(docs/gpu.md). :func:`gather_crops` is one array-module-generic function: with ``xp=numpy``
it is the CPU reference (tested to give crops identical to :func:`cryoshift.runtime.crop.crop_box`,
bit for bit), with ``xp=cupy`` the same indexing runs on the device. The rules are crop.py's:
nearest voxel with halves up, box spanning ``[c - box//2, c - box//2 + box)``, padding with the
mean of the in-bounds part (on the device the float64 mean may differ from numpy's in the last
float32 bit: summation order), a centre outside the tomogram is an error for that pick.

:class:`DeviceCropper` keeps uploaded tomograms in GPU memory (LRU under a byte budget) and
fills rows of a device batch. It is available when CuPy imports and sees a GPU
(:func:`device_crop_unavailable` says why not otherwise). The classify pipeline still crops on
the host; ``benchmarks/gpu_check.py`` measures this path's rate against host cropping, which is
what decides whether to route tomogram items through it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np


def device_crop_unavailable() -> str | None:
    """Why crops cannot be gathered on a GPU here, or None when they can."""
    try:
        import cupy
    except ImportError:
        return "CuPy is not installed (pip install cupy-cuda12x)"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "CuPy sees no GPU"
    except Exception as exc:
        return f"CuPy cannot reach a GPU ({type(exc).__name__})"
    return None


def nearest_voxels(centers_xyz: np.ndarray) -> np.ndarray:
    """(N, 3) x, y, z -> (N, 3) integer z, y, x centres by crop.py's rule (floor(c + 0.5))."""
    centers = np.asarray(centers_xyz, dtype=np.float64).reshape(-1, 3)
    return np.floor(centers[:, ::-1] + 0.5).astype(np.int64)


def valid_centres(centres_zyx: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Which integer centres lie inside a tomogram of ``shape`` (the others are error rows)."""
    c = np.asarray(centres_zyx)
    return np.all((c >= 0) & (c < np.asarray(shape)), axis=1)


def gather_crops(volume: Any, centres_zyx: Any, box: int, xp: Any = np, out: Any = None) -> tuple[Any, Any]:
    """(N, box, box, box) float32 crops of ``volume`` around integer ``centres_zyx`` and a padded mask.

    ``volume`` and ``centres_zyx`` live in ``xp``'s memory (numpy, or cupy on the device);
    centres must be valid (:func:`valid_centres`). ``out`` (N, box, box, box) receives the crops
    when given (a device batch's rows). Padded crops are filled with the mean of their in-bounds
    part, as crop.py does.
    """
    shape = volume.shape
    centres = xp.asarray(centres_zyx, dtype=xp.int64).reshape(-1, 3)
    n = int(centres.shape[0])
    ar = xp.arange(box, dtype=xp.int64)
    idx, inside = [], []
    for axis in range(3):
        coord = centres[:, axis, None] - box // 2 + ar[None, :]  # (N, box)
        inside.append((coord >= 0) & (coord < shape[axis]))
        idx.append(xp.clip(coord, 0, shape[axis] - 1))
    z, y, x = idx
    crops = volume[z[:, :, None, None], y[:, None, :, None], x[:, None, None, :]]
    crops = crops.astype(xp.float32, copy=False)
    iz, iy, ix = inside
    full = iz.all(axis=1) & iy.all(axis=1) & ix.all(axis=1)
    padded = ~full
    if n and bool(padded.any()):
        mask = iz[:, :, None, None] & iy[:, None, :, None] & ix[:, None, None, :]
        rows = xp.nonzero(padded)[0]
        if xp is np:
            # The reference: exactly crop.py's expression on the same in-bounds view.
            fills = np.empty(len(rows), np.float64)
            for j, r in enumerate(rows.tolist()):
                sl = tuple(
                    slice(int(a[r][m].min()), int(a[r][m].max()) + 1)
                    for a, m in zip(idx, (iz[r], iy[r], ix[r]), strict=True)
                )
                fills[j] = float(np.mean(volume[sl], dtype=np.float64))
        else:
            sub, m = crops[rows], mask[rows]
            fills = xp.where(m, sub, 0).astype(xp.float64).sum(axis=(1, 2, 3)) / m.sum(axis=(1, 2, 3))
        fill = fills.astype(xp.float32)[:, None, None, None]
        crops[rows] = xp.where(mask[rows], crops[rows], fill)
    if out is not None:
        out[...] = crops
        return out, padded
    return crops, padded


class DeviceCropper:
    """Tomograms resident in GPU memory (uploaded once, LRU under ``budget_bytes``), crops on the GPU."""

    def __init__(self, device_id: int = 0, budget_bytes: int = 16 << 30, dtype: Any = np.float32):
        reason = device_crop_unavailable()
        if reason:
            raise RuntimeError(reason)
        import cupy

        self.cp = cupy
        self.device_id = device_id
        self.budget = budget_bytes
        self.dtype = np.dtype(dtype)
        self._resident: OrderedDict[str, Any] = OrderedDict()
        self.uploaded_bytes = 0

    def tomogram(self, key: str, volume: np.ndarray) -> Any:
        """The device copy of ``volume`` (uploaded on first use)."""
        cp = self.cp
        dev = self._resident.get(key)
        if dev is not None:
            self._resident.move_to_end(key)
            return dev
        with cp.cuda.Device(self.device_id):
            dev = cp.asarray(np.ascontiguousarray(volume, dtype=np.float32))
        self.uploaded_bytes += dev.nbytes
        self._resident[key] = dev
        while sum(v.nbytes for v in self._resident.values()) > self.budget and len(self._resident) > 1:
            self._resident.popitem(last=False)
        return dev

    def crop(self, key: str, volume: np.ndarray, centers_xyz: np.ndarray, box: int, out: Any = None) -> Any:
        """Device crops (N, box, box, box) for x, y, z ``centers_xyz`` inside ``volume``."""
        cp = self.cp
        centres = nearest_voxels(centers_xyz)
        if not valid_centres(centres, volume.shape).all():
            raise ValueError("a centre lies outside the tomogram: check with valid_centres first")
        dev = self.tomogram(key, volume)
        with cp.cuda.Device(self.device_id):
            crops, _ = gather_crops(dev, cp.asarray(centres), box, xp=cp)
            crops = crops.astype(self.dtype, copy=False)
            if out is not None:
                out[...] = crops[:, None] if out.ndim == 5 else crops
                return out
            return crops


def crop_reference(volume: np.ndarray, centers_xyz: np.ndarray, box: int) -> np.ndarray:
    """CPU crops through the gather (for tests and the GPU check's parity rows)."""
    centres = nearest_voxels(centers_xyz)
    crops, _ = gather_crops(np.asarray(volume), centres, box)
    return crops


__all__ = [
    "DeviceCropper",
    "crop_reference",
    "device_crop_unavailable",
    "gather_crops",
    "nearest_voxels",
    "valid_centres",
]
