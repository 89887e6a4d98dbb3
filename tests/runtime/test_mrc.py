"""MRC reading and writing: modes, stacks, memory maps, and one-line errors for bad files."""

from __future__ import annotations

import bz2
import gzip
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from cryoshift.runtime import InputError, open_volume, read_volume, write_volume
from cryoshift.runtime.mrc import check_finite, read_header, volume_stats, write_stack

DTYPES = [np.float32, np.float16, np.int8, np.int16, np.uint16]


@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_every_mode(tmp_path: Path, dtype: type) -> None:
    rng = np.random.default_rng(1)
    data = (rng.normal(size=(6, 7, 8)) * 20 + (60 if dtype == np.uint16 else 0)).astype(dtype)
    path = write_volume(tmp_path / "v.mrc", data, voxel_size=3.25)
    out = read_volume(path)
    assert out.dtype == np.float32 and out.shape == (6, 7, 8)
    np.testing.assert_array_equal(out, data.astype(np.float32))
    with open_volume(path) as vol:
        assert vol.data.dtype == np.dtype(dtype)
        assert vol.voxel_size == pytest.approx(3.25) and vol.voxel_size_known
        assert not vol.is_stack and vol.shape == (6, 7, 8)
    assert read_header(path)["dtype"] == np.dtype(dtype).name


def test_float64_is_written_as_float32_and_bad_dtype_refused(tmp_path: Path) -> None:
    write_volume(tmp_path / "a.mrc", np.ones((4, 4, 4)), 1.0)
    assert read_header(tmp_path / "a.mrc")["dtype"] == "float32"
    with pytest.raises(InputError, match="cannot write dtype int64"):
        write_volume(tmp_path / "b.mrc", np.ones((4, 4, 4), dtype=np.int64), 1.0)


def test_open_volume_is_a_read_only_memory_map(tomo: tuple[Path, np.ndarray]) -> None:
    path, data = tomo
    with open_volume(path) as vol:
        assert isinstance(vol.data, np.memmap)
        assert vol.path == path and vol.shape == (20, 24, 28)
        np.testing.assert_array_equal(vol.data[3:5, 2:4, 1:3], data[3:5, 2:4, 1:3])
        with pytest.raises(ValueError):
            vol.data[0, 0, 0] = 1.0


def test_stack_round_trip(tmp_path: Path) -> None:
    stack = np.arange(3 * 4 * 5 * 6, dtype=np.float32).reshape(3, 4, 5, 6)
    path = write_stack(tmp_path / "s.mrcs", stack, voxel_size=2.0)
    with open_volume(path) as vol:
        assert vol.is_stack and vol.shape == (3, 4, 5, 6)
        np.testing.assert_array_equal(vol.data, stack)
    assert read_header(path)["shape"] == (3, 4, 5, 6)
    with pytest.raises(InputError, match="stack of 3 volumes"):
        read_volume(path)
    one = write_stack(tmp_path / "one.mrcs", stack[:1], voxel_size=2.0)
    np.testing.assert_array_equal(read_volume(one), stack[0])


def test_missing_voxel_size_defaults_to_one_with_a_flag(tmp_path: Path) -> None:
    path = tmp_path / "nov.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.zeros((4, 4, 4), np.float32))
        mrc.voxel_size = 0.0
    with open_volume(path) as vol:
        assert vol.voxel_size == 1.0 and not vol.voxel_size_known


def test_truncated_file_names_the_sizes(tmp_path: Path) -> None:
    path = write_volume(tmp_path / "t.mrc", np.zeros((64, 64, 64), np.float32), 1.0)
    raw = path.read_bytes()
    path.write_bytes(raw[: 1024 + 524288])
    with pytest.raises(InputError) as err:
        read_volume(path)
    assert str(err.value) == (
        f"{path}: file is truncated: header says 64x64x64 float32 = 1048576 bytes of data, file has 524288"
    )
    path.write_bytes(raw[:500])
    with pytest.raises(InputError, match="shorter than the 1024-byte MRC header"):
        open_volume(path)


def test_corrupt_empty_missing_and_unsupported_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mrc"
    junk.write_bytes(np.random.default_rng(0).integers(0, 255, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(InputError, match="not an MRC file"):
        read_volume(junk)
    empty = tmp_path / "empty.mrc"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="file is empty"):
        read_volume(empty)
    with pytest.raises(InputError, match="no such file"):
        read_volume(tmp_path / "nope.mrc")
    cplx = tmp_path / "complex.mrc"
    with mrcfile.new(cplx) as mrc:
        mrc.set_data(np.zeros((4, 4, 4), np.complex64))
    with pytest.raises(InputError, match="unsupported MRC mode 4"):
        read_volume(cplx)


def test_2d_image_is_not_a_volume(tmp_path: Path) -> None:
    path = tmp_path / "img.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.zeros((10, 12), np.float32))
    with pytest.raises(InputError, match=r"is a 2-D image \(12x10\), expected a 3-D volume"):
        read_volume(path)
    with open_volume(path, allow_2d=True) as vol:
        assert vol.shape == (10, 12)


def test_nan_and_inf_are_refused(tmp_path: Path) -> None:
    data = np.zeros((4, 4, 4), np.float32)
    data[0, 0, 0], data[1, 1, 1], data[2, 2, 2] = np.nan, np.nan, np.inf
    path = write_volume(tmp_path / "nan.mrc", data, 1.0)
    with pytest.raises(InputError, match="2 NaN and 1 Inf voxels"):
        read_volume(path)
    check_finite(np.zeros(3, np.int16), path)  # integers are always finite
    stats = volume_stats(data, slab_voxels=7)
    assert stats.nonfinite == 3 and stats.min == 0 and stats.max == 0


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress])
def test_compressed_files_are_read_into_memory(
    tmp_path: Path, compress: object, tomo: tuple[Path, np.ndarray]
) -> None:
    path, data = tomo
    packed = tmp_path / "tomo.mrc.gz"
    packed.write_bytes(compress(path.read_bytes()))  # type: ignore[operator]
    np.testing.assert_array_equal(read_volume(packed), data)
    assert read_header(packed)["compressed"] in ("gzip", "bzip2")
    packed.write_bytes(compress(path.read_bytes())[:300])  # type: ignore[operator]
    with pytest.raises(InputError, match=str(packed.name)):
        read_volume(packed)


def test_volume_stats_match_numpy(tomo: tuple[Path, np.ndarray]) -> None:
    _, data = tomo
    s = volume_stats(data, slab_voxels=1000)
    assert s.min == pytest.approx(data.min()) and s.max == pytest.approx(data.max())
    assert s.mean == pytest.approx(data.mean(dtype=np.float64), abs=1e-9)
    assert s.std == pytest.approx(data.std(dtype=np.float64), rel=1e-6)


def test_short_text_and_dangling_links_are_named(tmp_path: Path) -> None:
    """A short text file is not a "truncated MRC"; a dangling link is not "no such file"."""
    text = tmp_path / "notes.mrc"
    text.write_text("tomo,x,y,z\nTS_01,1,2,3\n")
    with pytest.raises(InputError, match=r"is a text file \(23 bytes\), not an MRC file"):
        read_header(text)
    link = tmp_path / "link.mrc"
    link.symlink_to(tmp_path / "gone.mrc")
    with pytest.raises(
        InputError, match=r"dangling symbolic link \(points to .*gone\.mrc, which does not exist\)"
    ):
        read_header(link)


def test_content_kind_tells_mrc_from_text(tmp_path: Path) -> None:
    from cryoshift.runtime.mrc import content_kind

    vol = write_volume(tmp_path / "v.mrc", np.ones((4, 4, 4), np.float32), voxel_size=1.0)
    (tmp_path / "t").write_text("x,y,z\n1,2,3\n")
    (tmp_path / "b").write_bytes(b"\x00\x01" * 700)
    (tmp_path / "e").write_bytes(b"")
    kinds = [content_kind(p) for p in (vol, tmp_path / "t", tmp_path / "b", tmp_path / "e")]
    assert kinds == ["mrc", "text", "other", "empty"]
