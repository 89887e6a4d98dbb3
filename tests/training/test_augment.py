"""Wedge-preserving views of target volumes (training/augment.py)."""

from __future__ import annotations

import numpy as np
import pytest

from cryoshift.training import augment


def _wedge_mask(d: int, tilt_max: float) -> np.ndarray:
    """True where a +-tilt_max tilt series (tilt axis y) measured nothing: |kz| > tan(tilt) |kx|."""
    k = np.fft.fftfreq(d)
    kz, _, kx = np.meshgrid(k, k, k, indexing="ij")
    return np.abs(kz) > np.tan(np.radians(tilt_max)) * np.abs(kx) + 1e-9


def test_code_zero_is_the_volume_and_every_view_keeps_the_wedge_empty():
    rng = np.random.default_rng(0)
    d = 16
    missing = _wedge_mask(d, 50)
    spectrum = np.fft.fftn(rng.normal(size=(3, d, d, d)), axes=(1, 2, 3))
    spectrum[:, missing] = 0
    volumes = np.fft.ifftn(spectrum, axes=(1, 2, 3)).real.astype(np.float32)
    assert np.array_equal(augment.apply_views(volumes, np.zeros(3, int)), volumes)
    codes = np.arange(augment.VIEWS)
    views = augment.apply_views(np.repeat(volumes[:1], len(codes), 0), codes)
    power = np.abs(np.fft.fftn(views, axes=(1, 2, 3))) ** 2
    assert power[:, missing].max() < 1e-6 * power.max()  # the wedge stays empty in every view
    # and the views differ from the volume (all but code 0)
    assert all(not np.allclose(v, volumes[0]) for v in views[1:])


def test_rotations_are_proper_so_the_hand_is_kept():
    """An L-shaped chiral marker: every view is a rotation of it, never its mirror image."""
    vol = np.zeros((8, 8, 8), np.float32)
    vol[4, 4, 4] = 1  # origin
    vol[4, 4, 5] = 2  # +x arm
    vol[4, 5, 4] = 3  # +y arm
    vol[5, 4, 4] = 4  # +z arm
    for code in range(0, augment.VIEWS, augment.VIEWS // len(augment.ROTATIONS)):
        view = augment.apply_views(vol[None], np.array([code]))[0]
        at = {int(view[tuple(p)]): np.array(p) for p in np.argwhere(view > 0)}
        arms = [at[v] - at[1] for v in (4, 3, 2)]  # z, y, x arm vectors in (z, y, x) order
        assert np.linalg.det(np.array(arms, float)) == pytest.approx(1.0)


def test_codes_must_match_volumes():
    with pytest.raises(ValueError, match="2 view codes for 3 volumes"):
        augment.apply_views(np.zeros((3, 4, 4, 4)), np.zeros(2, int))
