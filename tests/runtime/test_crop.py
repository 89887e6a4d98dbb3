"""Cropping boxes from a tomogram: exact slices inside, mean padding at edges, errors outside."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cryoshift.runtime import InputError, crop_box, open_volume
from cryoshift.runtime.crop import crop_boxes, nearest_voxel


def test_interior_crop_is_the_slice(tomo: tuple[Path, np.ndarray]) -> None:
    _, data = tomo
    box, padded = crop_box(data, (14, 12, 10), 8)  # x, y, z
    assert not padded and box.dtype == np.float32 and box.shape == (8, 8, 8)
    np.testing.assert_array_equal(box, data[6:14, 8:16, 10:18])
    odd, _ = crop_box(data, (14, 12, 10), 5)
    np.testing.assert_array_equal(odd, data[8:13, 10:15, 12:17])
    assert odd[2, 2, 2] == data[10, 12, 14]  # the picked voxel is the centre


def test_rounding_rule_nearest_voxel_halves_up(tomo: tuple[Path, np.ndarray]) -> None:
    _, data = tomo
    assert [nearest_voxel(c) for c in (10.5, 10.49, -0.5, 2.5)] == [11, 10, 0, 3]
    a, _ = crop_box(data, (14.5, 12.2, 9.6), 6)
    b, _ = crop_box(data, (15, 12, 10), 6)
    np.testing.assert_array_equal(a, b)


def test_edge_padding_uses_the_mean_of_the_inside(tomo: tuple[Path, np.ndarray]) -> None:
    _, data = tomo
    box, padded = crop_box(data, (0, 0, 0), 6)
    assert padded
    inside = data[0:3, 0:3, 0:3]
    np.testing.assert_array_equal(box[3:, 3:, 3:], inside)
    np.testing.assert_allclose(box[:3], inside.mean(dtype=np.float64), rtol=1e-6)
    far, padded = crop_box(data, (27, 23, 19), 8)  # last voxel on every axis
    assert padded and np.array_equal(far[:5, :5, :5], data[15:20, 19:24, 23:28])


def test_centre_outside_the_tomogram_is_an_input_error(tomo: tuple[Path, np.ndarray]) -> None:
    path, data = tomo
    with pytest.raises(InputError) as err:
        crop_box(data, (28, 5, 5), 8, path=str(path))
    assert str(err.value).startswith(
        f"{path}: coordinate (x, y, z) = (28, 5, 5) is outside the tomogram of 28x24x20 voxels"
    )
    with pytest.raises(InputError, match="not finite"):
        crop_box(data, (np.nan, 5, 5), 8)
    crop_box(data, (27.49, -0.5, 5), 8)  # still rounds inside


def test_crop_boxes_counts_padding_and_names_bad_rows(tomo: tuple[Path, np.ndarray]) -> None:
    path, data = tomo
    with open_volume(path) as vol:  # crops straight from the memory map
        out, n_padded = crop_boxes(vol, [[14, 12, 10], [1, 1, 1], [26, 22, 18]], 8)
        assert out.shape == (3, 8, 8, 8) and n_padded == 2
        np.testing.assert_array_equal(out[0], data[6:14, 8:16, 10:18])
        with pytest.raises(InputError, match=r"tomo.mrc: row 1: coordinate .* is outside"):
            crop_boxes(vol, [[1, 1, 1], [100, 1, 1]], 8)


def test_out_buffer_is_filled_in_place(tomo: tuple[Path, np.ndarray]) -> None:
    _, data = tomo
    batch = np.zeros((2, 4, 4, 4), np.float32)
    crop_box(data, (5, 5, 5), 4, out=batch[1])
    np.testing.assert_array_equal(batch[1], data[3:7, 3:7, 3:7])
    assert not batch[0].any()
