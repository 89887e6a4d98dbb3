"""Label-preserving views of real target subtomograms for training.

Why: the target subtomograms that carry a label (template-matching pseudo-labels, or the oracle's
labels) are few, a few hundred, and a network sees each of them once per epoch; it memorises their
noise. Simulated volumes get a new orientation every draw, target volumes cannot be re-simulated,
but they can be shown in other poses that keep what makes them real: their missing wedge. The
wedge of a tilt series (tilt axis along y or x) is symmetric under a sign flip of any Fourier axis,
so the three proper 180-degree rotations about the volume axes (flipping two axes at once; a single
flip would mirror the particle's hand) map it onto itself, and so does a shift of a voxel (picks
are never exactly centred). Each view is a different noise realisation of the same particle class.
"""

from __future__ import annotations

import numpy as np

# the identity and the 180-degree rotations about x, y and z of a (z, y, x) volume
ROTATIONS = ((), (0, 1), (0, 2), (1, 2))
MAX_SHIFT = 1  # voxels, per axis
_SHIFTS = 2 * MAX_SHIFT + 1
VIEWS = len(ROTATIONS) * _SHIFTS**3


def draw_views(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n,) view codes in [0, VIEWS): drawn where the run's other randomness is drawn (resumable)."""
    return rng.integers(0, VIEWS, size=n)


def apply_views(volumes: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Each volume (N, D, D, D) rotated by 180 degrees about an axis (or not) and shifted by up to
    ``MAX_SHIFT`` voxels per axis (circularly), as its code says. Code 0 is the volume itself."""
    volumes = np.asarray(volumes, dtype=np.float32)
    if len(codes) != len(volumes):
        raise ValueError(f"{len(codes)} view codes for {len(volumes)} volumes")
    out = np.empty_like(volumes)
    for i, code in enumerate(np.asarray(codes, dtype=np.int64)):
        rotation, shift = divmod(int(code), _SHIFTS**3)
        view = volumes[i]
        if ROTATIONS[rotation]:
            view = np.flip(view, axis=ROTATIONS[rotation])
        offsets = np.unravel_index(shift, (_SHIFTS,) * 3)
        offsets = tuple((int(o) + MAX_SHIFT) % _SHIFTS - MAX_SHIFT for o in offsets)  # 0 -> no shift
        if any(offsets):
            view = np.roll(view, offsets, axis=(0, 1, 2))
        out[i] = view
    return out
