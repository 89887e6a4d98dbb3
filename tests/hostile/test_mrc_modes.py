"""Legal but unusual MRC/CCP4 files read right, or refused in one line naming the file: never a
silently wrong volume. Each case compares cryoshift's three readers (the fast plain-file reader, the
full reader and the folder planner's header peek) with mrcfile or with the MRC2014 / IMOD format
descriptions. Every file is a few KiB, written by the test itself."""

from __future__ import annotations

import gzip
import struct
import warnings
from pathlib import Path

import mrcfile
import numpy as np
import pytest
from hostile_inputs import BOX, VOXEL, Capsys, errors_table, predictions, raw_mrc, run_cli, volumes

from cryoshift.runtime.errors import InputError
from cryoshift.runtime.mrc import (
    IMOD_STAMP,
    open_raw_header,
    open_volume,
    raw_header,
    read_header,
    read_plain_volume,
    read_volume,
    write_stack,
    write_volume,
)
from cryoshift.runtime.sources.planner import peek_voxel, plan_inputs

N = 8  # edge of the small cubes (the CLI tests use the model's BOX)
DTYPES = {0: "<i1", 1: "<i2", 2: "<f4", 6: "<u2", 12: "<f2"}


def _patch(path: Path, offset: int, fmt: str, *values: object) -> Path:
    """Overwrite header bytes at ``offset`` with ``struct.pack(fmt, *values)``."""
    blob = bytearray(path.read_bytes())
    blob[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, *values)
    path.write_bytes(bytes(blob))
    return path


def _imod(path: Path, flags: int, order: str = "<") -> Path:
    """Mark ``path`` as written by IMOD (stamp at byte 152) with ``imodFlags`` (byte 156)."""
    return _patch(path, 152, f"{order}ii", IMOD_STAMP, flags)


def _big_endian(path: Path, dtype: str, stamp: bytes = b"\x11\x11\x00\x00") -> Path:
    """Rewrite a little-endian ``raw_mrc`` file big-endian (header words, IMOD fields, cell, data)
    with machine stamp ``stamp``."""
    blob = path.read_bytes()
    head = bytearray(np.frombuffer(blob[:1024], "<i4").astype(">i4").tobytes())
    head[40:64] = struct.pack(">6f", *struct.unpack("<6f", blob[40:64]))
    head[208:212] = b"MAP "
    head[212:216] = stamp
    data = np.frombuffer(blob[1024:], dtype).astype(np.dtype(dtype).newbyteorder(">"))
    path.write_bytes(bytes(head) + data.tobytes())
    return path


def _mrcfile_data(path: Path) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mrcfile.open(path, permissive=True) as mrc:
            return np.array(mrc.data)


def _fast(path: Path, n: int = N) -> tuple[float | None, np.ndarray]:
    out = np.full((n, n, n), np.nan, np.float32)
    return read_plain_volume(path, out), out


def _random(shape: tuple[int, ...], mode: int, seed: int) -> np.ndarray:
    """Random voxels spanning the range of ``mode``'s dtype (float16: +-1000)."""
    rng, dtype = np.random.default_rng(seed), np.dtype(DTYPES[mode])
    if dtype.kind == "f":
        return (rng.normal(size=shape) * 1000).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)


def _bytes_volume() -> np.ndarray:
    return (np.arange(N**3) * 7 % 256).astype(np.uint8).reshape(N, N, N)  # every byte value 0..255


# ---------------------------------------------------------------------------------------------
# 1. mode 0: signed bytes (MRC2014), unsigned where IMOD's stamp is set without its signed flag


@pytest.mark.parametrize(
    ("flags", "signed"),
    [(None, True), (0, False), (1, True), (8, False), (1 | 8, True)],
    ids=["no-imod-stamp", "imod-unsigned", "imod-signed", "imod-other-flag", "imod-signed-other-flag"],
)
@pytest.mark.parametrize("order", ["<", ">"])
def test_mode0_bytes_follow_the_imod_signed_flag(
    flags: int | None, signed: bool, order: str, tmp_path: Path
) -> None:
    """IMOD's unsigned bytes were read as int8: every voxel above 127 wrapped to a negative value
    (bright density turned dark) by the fast reader, the full reader and info alike."""
    raw = _bytes_volume()
    path = raw_mrc(tmp_path / "bytes.mrc", nx=N, ny=N, nz=N, mode=0, data=raw.tobytes())
    if flags is not None:
        _imod(path, flags)
    if order == ">":
        _big_endian(path, "<i1")
    want = (raw.view(np.int8) if signed else raw).astype(np.float32)
    np.testing.assert_array_equal(read_volume(path), want)
    assert read_header(path)["dtype"] == ("int8" if signed else "uint8")
    with open_volume(path) as vol:
        assert vol.dtype == (np.int8 if signed else np.uint8)
        np.testing.assert_array_equal(vol.data, want)
    voxel, out = _fast(path)
    if order == "<":  # the fast reader takes plain little-endian files only
        assert voxel == pytest.approx(VOXEL)
        np.testing.assert_array_equal(out, want)
    if signed:  # where the bytes are signed, mrcfile (which ignores IMOD's flag) agrees
        np.testing.assert_array_equal(_mrcfile_data(path).astype(np.float32), want)


def test_imod_unsigned_bytes_compressed_and_in_a_stack(tmp_path: Path) -> None:
    raw = np.concatenate([_bytes_volume(), _bytes_volume()[::-1]])
    plain = _imod(raw_mrc(tmp_path / "s.mrcs", nx=N, ny=N, nz=2 * N, mode=0, ispg=401, mz=N), 0)
    plain.write_bytes(plain.read_bytes()[:1024] + raw.tobytes())
    packed = tmp_path / "s.mrcs.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    for path in (plain, packed):
        with open_volume(path) as vol:
            assert vol.is_stack and vol.shape == (2, N, N, N) and vol.dtype == np.uint8
            np.testing.assert_array_equal(vol.data, raw.reshape(2, N, N, N))


def test_imod_4bit_bytes_are_refused(tmp_path: Path) -> None:
    """imodFlags 16: two 4-bit values in each byte; read as bytes, each voxel would be two."""
    path = _imod(raw_mrc(tmp_path / "nibbles.mrc", nx=N, ny=N, nz=N, mode=0), 16 | 1)
    with pytest.raises(InputError, match="4-bit") as err:
        read_volume(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert _fast(path)[0] is None  # the fast reader leaves it to the full one


def test_imod_unsigned_bytes_classify_like_the_same_data_as_float(
    model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """End to end: an IMOD byte volume and its float32 copy get the same scores."""
    d = tmp_path / "in"
    d.mkdir()
    raw = (np.random.default_rng(4).normal(128, 40, (BOX,) * 3).clip(0, 255)).astype(np.uint8)
    write_volume(d / "a_float.mrc", raw.astype(np.float32), voxel_size=VOXEL)
    _imod(raw_mrc(d / "b_imod_bytes.mrc", mode=0, data=raw.tobytes()), 0)
    out = tmp_path / "out"
    code, _, err = run_cli(["classify", model, d, "-o", out, "-q", "-b", "cpu"], capsys)
    assert code == 0, err
    pred = predictions(out)
    probs = pred[[c for c in pred.columns if c.startswith("prob_")]].to_numpy(dtype=np.float64)
    assert len(pred) == 2
    np.testing.assert_allclose(probs[0], probs[1], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# 2. extended headers: the data start at 1024 + nsymbt, whatever the extended header says


@pytest.mark.parametrize("exttyp", [b"FEI1", b"CCP4", b"MRCO", b"SERI", b"\0\0\0\0"])
@pytest.mark.parametrize("nsymbt", [4, 1024, 3 * 1024 + 12])
def test_extended_header_is_skipped(exttyp: bytes, nsymbt: int, tmp_path: Path) -> None:
    vol = np.random.default_rng(nsymbt).normal(size=(N, N, N)).astype(np.float32)
    path = raw_mrc(tmp_path / "ext.mrc", nx=N, ny=N, nz=N, data=vol.tobytes(), nsymbt=nsymbt)
    blob = bytearray(path.read_bytes())
    blob[104:108] = exttyp
    blob[1024 : 1024 + nsymbt] = np.random.default_rng(9).bytes(nsymbt)  # junk where data is not
    path.write_bytes(bytes(blob))
    np.testing.assert_array_equal(read_volume(path), vol)
    np.testing.assert_array_equal(_mrcfile_data(path), vol)
    voxel, out = _fast(path)
    assert voxel == pytest.approx(VOXEL)
    np.testing.assert_array_equal(out, vol)
    assert read_header(path)["extended_header_bytes"] == nsymbt
    packed = tmp_path / "ext.mrc.gz"
    packed.write_bytes(gzip.compress(bytes(blob)))
    np.testing.assert_array_equal(read_volume(packed), vol)


# ---------------------------------------------------------------------------------------------
# 3. volume stacks (space group 401) are split into volumes of mz sections, never one tall volume


def test_volume_stack_is_split_into_volumes_of_mz_sections(tmp_path: Path) -> None:
    stack = volumes(3)
    path = raw_mrc(tmp_path / "stack.mrc", nz=3 * BOX, ispg=401, mz=BOX, data=stack.tobytes())
    header = read_header(path)
    assert header["is_stack"] and header["shape"] == (3, BOX, BOX, BOX)
    assert header["voxel_sizes"] == pytest.approx((VOXEL,) * 3)  # cella.z / mz, not / nz
    assert peek_voxel(path).voxel_size == pytest.approx(VOXEL)
    with open_volume(path) as vol:
        np.testing.assert_array_equal(vol.data, stack)
    assert _fast(path, BOX)[0] is None  # a stack never takes the single-volume fast path
    from cryoshift.runtime.sources.cache import VolumeCache
    from cryoshift.runtime.sources.load import load_item

    plan = plan_inputs([str(path)], BOX, VOXEL)
    assert [(it.kind, it.index) for it in plan.items] == [("stack", 0), ("stack", 1), ("stack", 2)]
    cache, out = VolumeCache(), np.empty((BOX,) * 3, np.float32)
    for it in plan.items:
        load_item(it, out, cache, VOXEL)
        np.testing.assert_array_equal(out, stack[it.index])


def test_stacks_in_a_folder_are_split_wherever_they_stand(
    model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """A volume stack under a .mrc name is split into its volumes whether it is named first or met
    later in a folder (it was an error row "expected a single volume" there, while the first was
    split); a file of nz images (space group 0) is refused as a non-cubic box."""
    d = tmp_path / "in"
    d.mkdir()
    v = volumes(5)
    write_stack(d / "a_stack.mrc", v[:2], voxel_size=VOXEL)
    write_volume(d / "b_single.mrc", v[2], voxel_size=VOXEL)
    write_stack(d / "c_stack.mrc", v[3:], voxel_size=VOXEL)
    write_stack(d / "e_one.mrc", v[:1], voxel_size=VOXEL)  # a stack of one volume
    raw_mrc(d / "d_images.mrcs", nz=3 * BOX, mz=1, data=volumes(3).tobytes())
    out = tmp_path / "out"
    code, _, err = run_cli(["classify", model, d, "-o", out, "-q", "-b", "cpu"], capsys)
    assert code == 0, err
    assert len(predictions(out)) == 6  # two, one, two and one volumes
    errs = errors_table(out).astype(str)
    rows = [" ".join(r) for r in errs.to_numpy()]
    assert len(rows) == 1 and "d_images.mrcs" in rows[0] and "48x16x16" in rows[0], rows


# ---------------------------------------------------------------------------------------------
# 4. modes: every supported one read exactly (odd shapes, fast and full reader); others refused


@pytest.mark.parametrize("mode", sorted(DTYPES))
def test_every_mode_reads_what_mrcfile_reads(mode: int, tmp_path: Path) -> None:
    odd = _random((5, 6, 7), mode, seed=mode)
    path = raw_mrc(tmp_path / "odd.mrc", nx=7, ny=6, nz=5, mode=mode, data=odd.tobytes())
    np.testing.assert_array_equal(read_volume(path), odd.astype(np.float32))
    np.testing.assert_array_equal(read_volume(path), _mrcfile_data(path).astype(np.float32))
    cube = _random((N, N, N), mode, seed=mode + 1)
    path = raw_mrc(tmp_path / "cube.mrc", nx=N, ny=N, nz=N, mode=mode, data=cube.tobytes())
    voxel, out = _fast(path)
    assert voxel == pytest.approx(VOXEL)
    np.testing.assert_array_equal(out, cube.astype(np.float32))


@pytest.mark.parametrize(("mode", "itemsize"), [(3, 4), (4, 8), (16, 3), (101, 0.5)])
def test_unsupported_modes_are_refused_by_number(mode: int, itemsize: float, tmp_path: Path) -> None:
    path = raw_mrc(tmp_path / f"m{mode}.mrc", nx=N, ny=N, nz=N, mode=mode, data=bytes(int(N**3 * itemsize)))
    with pytest.raises(InputError, match=f"unsupported MRC mode {mode};") as err:
        read_volume(path)
    assert str(path) in str(err.value)
    assert _fast(path)[0] is None


# ---------------------------------------------------------------------------------------------
# 5. voxel size is cella / mx (the sampling), not cella / nx


def test_voxel_size_uses_the_sampling_not_the_size(tmp_path: Path) -> None:
    vol = volumes(1)[0]
    # a 16^3 box cut from a map sampled on a 64-interval grid: cella spans the 64 intervals
    path = raw_mrc(tmp_path / "cut.mrc", mx=64, cella=64 * VOXEL, data=vol.tobytes())
    _patch(path, 32, "<ii", 64, 64)  # my, mz
    _patch(path, 44, "<ff", 64 * VOXEL, 64 * VOXEL)
    with mrcfile.open(path, permissive=True) as mrc:
        assert float(mrc.voxel_size.x) == pytest.approx(VOXEL)
    assert read_header(path)["voxel_sizes"] == pytest.approx((VOXEL,) * 3)
    assert peek_voxel(path).voxel_size == pytest.approx(VOXEL)
    assert _fast(path, BOX)[0] == pytest.approx(VOXEL)
    # sampling differing per axis but the same spacing: isotropic, found by the full reader
    path = raw_mrc(tmp_path / "mixed.mrc", mx=32, cella=32 * VOXEL, data=vol.tobytes())
    assert read_header(path)["voxel_sizes"] == pytest.approx((VOXEL,) * 3)
    assert peek_voxel(path).voxel_size == pytest.approx(VOXEL)
    # cella 0: unknown, never the 1.0 stand-in reported as if measured
    path = raw_mrc(tmp_path / "zero.mrc", cella=0.0, data=vol.tobytes())
    _patch(path, 44, "<ff", 0.0, 0.0)
    assert not read_header(path)["voxel_size_known"] and not peek_voxel(path).voxel_size_known
    assert _fast(path, BOX)[0] == 0.0


# ---------------------------------------------------------------------------------------------
# 6. big-endian files, and files whose machine stamp does not say their byte order


@pytest.mark.parametrize("mode", [0, 1, 6, 12])
@pytest.mark.parametrize(
    "stamp", [b"\x11\x11\x00\x00", b"\x00\x00\x00\x00", b"\x44\x44\x00\x00"], ids=["be", "unset", "lying"]
)
def test_big_endian_modes_read_as_mrcfile_reads_them(mode: int, stamp: bytes, tmp_path: Path) -> None:
    """A big-endian file whose stamp is unset or says little-endian: mrcfile takes the byte order
    that gives a valid mode; the raw header (planning's voxel-size peek) took little-endian and
    got a voxel size of ~1e-49 A, failing every such file of a folder but the first."""
    vol = _random((N, N, N), mode, seed=3)
    path = _big_endian(
        raw_mrc(tmp_path / "be.mrc", nx=N, ny=N, nz=N, mode=mode, data=vol.tobytes()), DTYPES[mode], stamp
    )
    assert _fast(path)[0] is None  # the fast reader takes little-endian files only
    if mode == 0 and stamp[0] != 0x11:
        # Mode 0 reads the same in both byte orders, so nothing says the file is big-endian: read
        # little-endian (as mrcfile does), its header is nonsense and it is refused, not misread.
        with pytest.raises(InputError, match="corrupt header") as err:
            read_volume(path)
        assert str(path) in str(err.value)
        return
    want = vol.astype(np.float32)
    np.testing.assert_array_equal(read_volume(path), want)
    np.testing.assert_array_equal(_mrcfile_data(path).astype(np.float32), want)
    assert peek_voxel(path).voxel_size == pytest.approx(VOXEL)
    assert raw_header(path.read_bytes()[:1024]).byte_order == ">"


# ---------------------------------------------------------------------------------------------
# 7. no "MAP " identifier (old CCP4/MRC files) and no nversion


def test_old_style_file_without_map_identifier_is_refused_clearly(tmp_path: Path) -> None:
    vol = volumes(1)[0]
    path = _patch(raw_mrc(tmp_path / "old.map", data=vol.tobytes()), 208, "4s", b"\0\0\0\0")
    with pytest.raises(InputError, match=r"old \(pre-MRC2014\) MRC/CCP4 files \(its 16x16x16 mode 2") as err:
        read_volume(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)
    assert peek_voxel(path) is None and _fast(path, BOX)[0] is None
    junk = tmp_path / "junk.mrc"
    junk.write_bytes(np.random.default_rng(5).bytes(3000))
    with pytest.raises(InputError, match="not an MRC file"):
        read_volume(junk)


def test_missing_nversion_and_exttyp_read_as_usual(tmp_path: Path) -> None:
    vol = volumes(1)[0]
    path = raw_mrc(tmp_path / "v.mrc", data=vol.tobytes())  # nversion 0, exttyp blank
    assert path.read_bytes()[104:112] == bytes(8)
    np.testing.assert_array_equal(read_volume(path), vol)
    _patch(path, 208, "4s", b"MAP\0")  # the 3-byte identifier MRC2014 requires
    np.testing.assert_array_equal(read_volume(path), _mrcfile_data(path))


# ---------------------------------------------------------------------------------------------
# the shared raw-header open of the fast reader and the planner


def test_open_raw_header_gives_none_for_what_is_not_a_regular_file(tmp_path: Path) -> None:
    folder = tmp_path / "folder.mrc"
    folder.mkdir()
    with open_raw_header(folder) as raw:
        assert raw is None
    path = raw_mrc(tmp_path / "v.mrc", nx=N, ny=N, nz=N)
    with open_raw_header(path) as raw:
        assert raw is not None and raw.header is not None
        assert raw.header.size == (N, N, N) and raw.size == 1024 + 4 * N**3
        assert raw.file.tell() == 1024
    assert raw.file.closed
    with pytest.raises(FileNotFoundError), open_raw_header(tmp_path / "missing.mrc"):
        pass
    assert peek_voxel(folder) is None and peek_voxel(tmp_path / "missing.mrc") is None
