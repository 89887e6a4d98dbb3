"""MRC volumes, volume stacks and whole tomograms, read and written with ``mrcfile``.

Why a wrapper: mrcfile's own errors do not name the file and a truncated tomogram only
shows up as a warning (permissive mode) or a cryptic ValueError. Here the header is
checked against the file size first, so users get one line such as
``tomo.mrc: file is truncated: header says 64x64x64 float32 = 1048576 bytes of data,
file has 524288``. Big files are memory-mapped (read-only); gzip/bzip2 files are read
into memory because they cannot be mapped (refused in one line first when their header says more
data than there is memory for: :func:`refuse_decompressing_beyond_memory`).

Arrays are (Z, Y, X) for one volume and (N, Z, Y, X) for a stack, whatever the file's axis
order (``mapc/mapr/maps``): a file stored with columns along Y or Z is transposed (a view, no
copy) so every reader sees the same density. Voxel size is in Angstrom, per axis
``cella / (mx, my, mz)``; ``voxel_size`` is the X one and ``anisotropic`` says whether the three
differ by more than :data:`ANISOTROPY_TOLERANCE`. No X size (cell or mx unset) is "unknown"; an X
size with an undefined Y or Z one (my or mz <= 0, that cell 0 or NaN) is a corrupt header. Mode-0
bytes are signed, as MRC2014 says, except where IMOD's header flags say unsigned
(:func:`byte_dtype`; mrcfile ignores those flags).
"""

from __future__ import annotations

import contextlib
import os
import stat
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, NamedTuple

import mrcfile
import numpy as np

from cryoshift.runtime.contract import MRC_HEADER_BYTES, MRC_MODE_NAMES, MRC_MODES, MRC_SUFFIXES
from cryoshift.runtime.errors import InputError, missing_reason
from cryoshift.runtime.outfiles import replacing_path, special_kind

ANISOTROPY_TOLERANCE = 0.01  # relative spread of the X/Y/Z voxel sizes still called isotropic
_GZIP_MAGIC = b"\x1f\x8b"
_BZIP2_MAGIC = b"BZh"
# Compressions cryoshift does not unpack, by magic bytes and by the suffix after an MRC name
# (``good.mrc.xz``): named, they get "decompress it" instead of "not an MRC file ... corrupt".
UNREAD_COMPRESSIONS = (
    (b"\xfd7zXZ\x00", "xz", (".xz",)),
    (b"\x28\xb5\x2f\xfd", "zstd", (".zst", ".zstd")),
)
_NOT_MRC = "not an MRC file (no 'MAP ' identifier at byte 208 of the header) or the file is corrupt"
# IMOD's mark (bytes 152-155, "IMOD" in the file's byte order) that imodFlags (bytes 156-159) are set;
# two of the flags change what mode-0 bytes mean (https://bio3d.colorado.edu/imod/doc/mrc_format.txt).
IMOD_STAMP = 1146047817
IMOD_SIGNED_BYTES = 1  # mode 0 bytes are signed; clear (with the stamp): unsigned (IMOD < 4.2.23)
IMOD_4BIT_BYTES = 16  # mode 0 bytes each hold two 4-bit values
VOLUME_STACK_SPACE_GROUPS = range(401, 631)  # MRC2014: a stack of volumes, each mz sections deep
_MRCFILE_MODES = (0, 1, 2, 4, 6, 12)  # modes mrcfile has a dtype for: its byte-order fallback tests these
# Files users mistake for volumes, known by their first bytes (or suffix when too short to tell):
# named, they get "is a NumPy .npz archive" instead of "truncated MRC" or "corrupt header".
_FOREIGN_MAGIC = (
    (b"PK\x03\x04", "a zip archive (NumPy .npz or similar)"),
    (b"PK\x05\x06", "a zip archive (NumPy .npz or similar)"),  # an empty zip
    (b"\x93NUMPY", "a NumPy .npy array"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file"),
)
_FOREIGN_SUFFIXES = {
    ".npz": "a zip archive (NumPy .npz or similar)",
    ".zip": "a zip archive (NumPy .npz or similar)",
    ".npy": "a NumPy .npy array",
    ".h5": "an HDF5 file",
    ".hdf5": "an HDF5 file",
}


def mrc_suffix(path: str | Path) -> str:
    """The MRC suffix of a file name (``.mrc``, ``.map.bz2`` ...), or "" if it has none."""
    name = Path(path).name.lower()
    return max((s for s in MRC_SUFFIXES if name.endswith(s)), key=len, default="")


def is_mrc_path(path: str | Path) -> bool:
    """True if the file name looks like an MRC file (by suffix, compressed ones included)."""
    return bool(mrc_suffix(path))


def mrc_stem(path: str | Path) -> str:
    """File name without its MRC suffix: ``TS_01.mrc.gz`` -> ``TS_01`` (other names: ``Path.stem``)."""
    name = Path(path).name
    suffix = mrc_suffix(name)
    return name[: len(name) - len(suffix)] if suffix else Path(name).stem


def axis_permutation(order: tuple[int, int, int]) -> tuple[int, int, int]:
    """``transpose`` axes turning file order (sections, rows, columns) into (Z, Y, X).

    ``order`` is the header's (mapc, mapr, maps): the physical axis (1 = X, 2 = Y, 3 = Z) along
    the file's columns, rows and sections.
    """
    mapc, mapr, maps = order
    by_axis = {maps: 0, mapr: 1, mapc: 2}  # physical axis -> array axis in file order
    return by_axis[3], by_axis[2], by_axis[1]


def check_isotropic(header: dict[str, Any], path: str | Path | None = None) -> None:
    """Refuse a volume whose X, Y and Z voxel sizes differ (crops and models assume cubes).

    A stack of 2-D images (:func:`image_stack_size`) has a Z "voxel" of nz sections by its cell:
    it is refused for what it is, not as "anisotropic voxels: 10 x 10 x 320 A", which sent users
    to resample a file that holds no volume at all."""
    if header.get("anisotropic"):
        images = header.get("images", 0)
        if images:
            raise InputError(
                path if path is not None else header.get("path"),
                f"is a stack of {images} 2-D images (MRC space group 0, mz = 1), not a 3-D volume; "
                "cryoshift reads 3-D subtomograms and maps",
            )
        sx, sy, sz = header["voxel_sizes"]
        raise InputError(
            path if path is not None else header.get("path"),
            f"anisotropic voxels: {sx:.4g} x {sy:.4g} x {sz:.4g} A (X, Y, Z); resample "
            "the map to cubic voxels first",
        )


def _compression(head: bytes) -> str | None:
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    if head.startswith(_BZIP2_MAGIC):
        return "bzip2"
    return None


def foreign_format(path: str | Path, head: bytes) -> str | None:
    """What a file that is certainly not MRC is ("a NumPy .npy array" ...), from its first bytes
    ``head`` (up to the 1024 of a header) or, for a file too short to tell, its suffix; else None.

    Only magic bytes and names are looked at: nothing is unpickled or unpacked.
    """
    for magic, what in _FOREIGN_MAGIC:
        if head.startswith(magic):
            return what
    what = _FOREIGN_SUFFIXES.get(Path(path).suffix.lower())
    return what if what and head[208:211] != b"MAP" else None


def unread_compressed_name(path: str | Path) -> bool:
    """Whether a file name is an MRC name under a compression cryoshift does not read
    (``TS_01.mrc.xz``, ``x.map.zst``): a folder input lists it, so that it fails as an item
    saying "decompress it" instead of being passed over without a word."""
    name = Path(path).name.lower()
    for _, _, suffixes in UNREAD_COMPRESSIONS:
        for suffix in suffixes:
            if name.endswith(suffix) and is_mrc_path(name[: -len(suffix)]):
                return True
    return False


def refuse_foreign(path: str | Path, head: bytes) -> None:
    """Raise :class:`InputError` saying what ``path`` is when :func:`foreign_format` knows it, or
    which compression it is under when cryoshift does not read that one (xz, zstd)."""
    for magic, name, _ in UNREAD_COMPRESSIONS:
        if head.startswith(magic):
            raise InputError(
                path, f"is {name}-compressed; cryoshift reads gzip and bzip2: decompress it ({name} -d)"
            )
    what = foreign_format(path, head)
    if what:
        raise InputError(
            path,
            f"is {what}, not an MRC file; cryoshift reads MRC volumes and volume stacks "
            "(.mrc, .mrcs, .map, .rec) or dataset directories: write the arrays to MRC first",
        )


def content_kind(path: str | Path) -> str:
    """What a file holds by its first bytes, for names that do not say (``.txt``, no suffix):
    ``"mrc"`` (a valid header), ``"compressed"`` (gzip/bzip2: the MRC reader decides),
    ``"empty"``, ``"text"`` (no NUL byte: a STAR/CSV table) or ``"other"``."""
    with open(path, "rb") as fh:
        head = fh.read(MRC_HEADER_BYTES)
    if not head:
        return "empty"
    if raw_header(head) is not None:
        return "mrc"
    if _compression(head):
        return "compressed"
    return "text" if b"\0" not in head else "other"


def refuse_special(path: str | Path) -> None:
    """Refuse an existing path that is neither a regular file nor a directory (a named pipe ...).

    Why: ``stat`` says size 0 for a pipe ("file is empty" was the misleading answer) and opening
    one for reading blocks until something writes to it, so such paths are refused by kind, from
    ``stat`` alone, before anything opens them.
    """
    kind = special_kind(path, follow=True)  # missing or unreadable: None, the caller's open says so
    if kind is None:
        return
    raise InputError(path, f"is {kind}, not a regular file; cryoshift reads data from regular files only")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(path, missing_reason(path))
    if path.is_dir():
        raise InputError(path, "is a directory, expected an MRC file")
    refuse_special(path)
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty")


def _opener(compressed: str | None) -> Any:
    import bz2
    import gzip

    return {"gzip": gzip.open, "bzip2": bz2.open}.get(compressed or "", open)


class RawHeader(NamedTuple):
    """The header fields cryoshift needs, decoded from the raw 1024 bytes (no mrcfile)."""

    stamp: int  # first byte of the machine stamp: 0x44 little-endian, 0x11 big-endian
    size: tuple[int, int, int]  # nx, ny, nz (columns, rows, sections)
    mode: int
    sampling: tuple[int, int, int]  # mx, my, mz
    cell: tuple[float, float, float]  # cella x, y, z (A)
    axis_order: tuple[int, int, int]  # mapc, mapr, maps
    ispg: int
    nsymbt: int  # extended header bytes
    byte_order: str = "<"  # "<" or ">", decided as mrcfile decides it (see raw_header)
    imod_flags: int | None = None  # imodFlags where the IMOD stamp is present, else None


def raw_header(head: bytes) -> RawHeader | None:
    """Decode a header's raw bytes; None when they are not an MRC header (short, no ``MAP``
    identifier).

    Byte order as permissive mrcfile decides it, so these fields always agree with the ones
    :func:`read_header` gets from mrcfile: big-endian for the stamp 0x11 0x11, else little-endian,
    and the other order where only that one gives a mode mrcfile knows (files whose stamp lies).
    """
    if len(head) < MRC_HEADER_BYTES or head[208:211] != b"MAP":
        return None
    order = ">" if head[212] == 0x11 and head[213] == 0x11 else "<"
    other = "<" if order == ">" else ">"
    mode = int(np.frombuffer(head, f"{order}i4", 1, 12)[0])
    if mode not in _MRCFILE_MODES and int(np.frombuffer(head, f"{other}i4", 1, 12)[0]) in _MRCFILE_MODES:
        order = other
    ints = [int(v) for v in np.frombuffer(head, f"{order}i4", 40)]
    cell = [float(v) for v in np.frombuffer(head, f"{order}f4", 3, 40)]
    return RawHeader(
        head[212],
        (ints[0], ints[1], ints[2]),
        ints[3],
        (ints[7], ints[8], ints[9]),
        (cell[0], cell[1], cell[2]),
        (ints[16], ints[17], ints[18]),
        ints[22],
        ints[23],
        order,
        ints[39] if ints[38] == IMOD_STAMP else None,
    )


def byte_dtype(imod_flags: int | None) -> np.dtype:
    """The dtype of mode-0 data: int8 as MRC2014 (and mrcfile) say, but uint8 where IMOD's stamp is
    present without its signed-bytes flag.

    Why: IMOD wrote unsigned bytes until 4.2.23 and still marks them so; read as int8, every voxel
    above 127 wraps to a negative value, silently turning bright density dark. mrcfile ignores the
    flag, so the reader views its int8 data as uint8 (no copy).
    """
    if imod_flags is not None and not imod_flags & IMOD_SIGNED_BYTES:
        return np.dtype(np.uint8)
    return np.dtype(np.int8)


class RawFile(NamedTuple):
    """A regular file opened by :func:`open_raw_header`, positioned just after its 1 KiB header."""

    file: BinaryIO
    header: RawHeader | None  # None: not an MRC header (short, no ``MAP`` identifier)
    size: int  # bytes on disk (``fstat``)


@contextlib.contextmanager
def open_raw_header(path: str | Path) -> Iterator[RawFile | None]:
    """Open ``path`` and decode its raw header, or give None when it is not a regular file.

    The one cheap open of the fast reader and of planning folders of millions of files: opened
    non-blocking, so a named pipe under an MRC name never hangs (regular files ignore the flag),
    and checked with ``fstat`` before anything reads it. OSError from the open, ``fstat`` or the
    read is the caller's to word.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        info = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(info.st_mode):  # a folder or a pipe under an MRC name
        os.close(fd)
        yield None
        return
    with open(fd, "rb") as fh:
        yield RawFile(fh, raw_header(fh.read(MRC_HEADER_BYTES)), info.st_size)


def read_plain_volume(path: str | Path, out: np.ndarray) -> float | None:
    """Read a plain little-endian single-volume MRC of ``out``'s (D, D, D) shape into ``out``.

    About 20x faster than opening it through mrcfile, which matters for directories of
    millions of files. Returns the voxel size (0 if unset), or None for anything unusual
    (compressed, big-endian, stack, other shape or axis order, anisotropic, short file), which
    then takes :func:`open_volume` and its precise error messages.
    """
    box = out.shape[0]
    with open_raw_header(path) as raw:
        if raw is None:
            return None  # not a regular file: open_volume refuses it in words
        h = raw.header
        if h is None or h.stamp != 0x44 or h.byte_order != "<":
            return None
        dtype = MRC_MODES.get(h.mode)
        if dtype is None or h.size != (box, box, box) or h.ispg in VOLUME_STACK_SPACE_GROUPS or h.nsymbt < 0:
            return None
        if image_stack_size(h.ispg, h.sampling[2], h.size[2]):
            return None  # a stack of 2-D images of the box's size: the full reader refuses it
        if h.mode == 0:
            if h.imod_flags is not None and h.imod_flags & IMOD_4BIT_BYTES:
                return None  # 4-bit values: the full reader refuses them
            dtype = byte_dtype(h.imod_flags)
        if h.axis_order not in ((1, 2, 3), (0, 0, 0)):
            return None  # another axis order: the full reader transposes it
        voxel = raw_voxel_size(h)
        if voxel is None:
            return None  # anisotropic or odd sampling: the full reader decides
        if raw.size != MRC_HEADER_BYTES + h.nsymbt + box**3 * dtype.itemsize:
            return None  # shorter or longer than the header says: the full reader names the problem
        raw.file.seek(MRC_HEADER_BYTES + h.nsymbt)
        data = np.fromfile(raw.file, dtype=dtype, count=box**3)
        if data.size != box**3:
            return None
    out[...] = data.reshape(out.shape)
    return voxel


def raw_voxel_size(h: RawHeader) -> float | None:
    """The voxel size a raw header gives (cella / mx; 0.0 when unset: NaN, Inf, negative or no
    sampling), or None where only the full reader can say (anisotropic or odd sampling). The one
    rule for the fast reader and for planning folders of millions of files."""
    mx = h.sampling[0]
    if h.sampling != (mx, mx, mx) or not np.allclose(h.cell, h.cell[0], rtol=0.01):
        return None
    voxel = h.cell[0] / mx if mx > 0 else 0.0
    return float(voxel) if np.isfinite(voxel) and voxel > 0 else 0.0


def _not_mrc_reason(head: bytes, size: int | None) -> str:
    """Why a 1 KiB header without the ``MAP`` identifier is refused: a pre-MRC2014 (old CCP4/MRC)
    file is named as such when its dimensions and mode account for the file's size exactly.

    Why refuse, when permissive mrcfile reads such files: without the identifier nothing tells
    one from any binary file of the right length, and old files have no machine stamp either, so
    the byte order is a guess; a clear line beats a volume of silently wrong numbers.
    """
    if size is not None:
        for order in "<>":
            nx, ny, nz, mode = (int(v) for v in np.frombuffer(head, f"{order}i4", 4))
            ext = int(np.frombuffer(head, f"{order}i4", 1, 92)[0])
            dtype = MRC_MODES.get(mode)
            if dtype is None or min(nx, ny, nz) <= 0 or ext < 0:
                continue
            if MRC_HEADER_BYTES + ext + nx * ny * nz * dtype.itemsize == size:
                return (
                    "no 'MAP ' identifier at byte 208 of the header, as in old (pre-MRC2014) MRC/CCP4 "
                    f"files (its {nx}x{ny}x{nz} mode {mode} fits the file size); cryoshift reads "
                    "MRC2014 files only: save a copy with an MRC2014 writer (e.g. mrcfile, opened "
                    "with permissive=True)"
                )
    return _NOT_MRC


def _check_raw_header(path: Path, compressed: str | None) -> RawHeader:
    """Check the identifier and the extended-header size from the raw bytes, before mrcfile, and
    return the raw header (for what mrcfile does not decode: IMOD's flags).

    Why: mrcfile trusts ``nsymbt`` and tries to read that many bytes (up to 2 GiB) even for
    ``header_only``, so a lying header costs seconds and gigabytes before any check of ours.
    """
    try:
        with _opener(compressed)(path, "rb") as fh:
            head = fh.read(MRC_HEADER_BYTES)
            if len(head) < MRC_HEADER_BYTES and head.strip() and b"\0" not in head:
                raise InputError(path, f"is a text file ({len(head)} bytes), not an MRC file")
            if len(head) < MRC_HEADER_BYTES:
                raise InputError(
                    path,
                    f"file is truncated: {len(head)} bytes, shorter than the "
                    f"{MRC_HEADER_BYTES}-byte MRC header",
                )
            raw = raw_header(head)
            if raw is None:
                raise InputError(path, _not_mrc_reason(head, None if compressed else path.stat().st_size))
            ext = raw.nsymbt
            if ext < 0:
                raise InputError(path, f"corrupt header: negative extended header size {ext}")
            if compressed is None:
                have = path.stat().st_size - MRC_HEADER_BYTES
            else:  # count decompressed bytes only as far as the extended header reaches
                have, chunk = 0, b"x"
                while have < ext and chunk:
                    chunk = fh.read(min(1 << 20, ext - have))
                    have += len(chunk)
            if ext > have:
                raise InputError(
                    path,
                    f"file is truncated: extended header size {ext} bytes (nsymbt) "
                    f"points past the end of the file ({have} bytes after the header)",
                )
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(path, f"cannot read {compressed or 'MRC'} data: {exc}") from exc
    return raw


def _open_header(path: Path) -> Any:
    """mrcfile header (numpy record) in permissive mode; warnings are turned into our checks."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.open(path, header_only=True, permissive=True) as mrc:
                return mrc.header.copy()
    except (ValueError, OSError, EOFError, zlib.error) as exc:
        raise InputError(path, f"not a readable MRC file ({exc})") from exc


def image_stack_size(ispg: int, mz: int, nz: int) -> int:
    """The number of 2-D images in a file whose header says it is a stack of them (space group 0,
    one section per image: mz = 1, several sections), else 0.

    Why: such a file (a RELION particle stack, mrcfile's ``set_image_stack``) was read as one
    3-D map of nz sections, a cylinder-shaped "class". Only this unambiguous header is named: a
    3-D map from mrcfile has ispg 1 and mz = nz, other writers leave ispg 0 or mz 0 on volumes
    (those stay volumes), and a volume written with mz = 1 and a true Z cell has a Z voxel nz times
    too large, refused as anisotropic anyway. A single image (nz = 1) is a 2-D image already, and
    a ``.mrcs`` name adds nothing (its ispg 0, mz 1 files are these; its volume stacks ispg 401).
    """
    return nz if ispg == 0 and mz == 1 and nz > 1 else 0


def refuse_image_stack(path: str | Path, header: dict[str, Any]) -> None:
    """Refuse a stack of 2-D images (from :func:`read_header`) where a 3-D map must go."""
    images = header.get("images", 0)
    if images:
        raise InputError(
            path, f"is a stack of {images} 2-D images (MRC space group 0, mz = 1), not a 3-D map"
        )


def read_header(path: str | Path) -> dict[str, Any]:
    """Header facts without touching the data: cheap enough to call on every tomogram.

    Returns a dict with ``shape`` (Z,Y,X) or (N,Z,Y,X), ``mode``, ``dtype``, ``voxel_size``,
    ``voxel_size_known``, ``is_stack``, ``images`` (:func:`image_stack_size`), ``compressed``,
    ``data_bytes``, ``file_bytes``, header statistics ``dmin``/``dmax``/``dmean``,
    ``extended_header_bytes`` and ``imod_flags`` (IMOD's imodFlags where the file carries IMOD's
    stamp, else None: for a mode-0 map, None means nothing says whether its bytes are signed or
    unsigned, see :func:`byte_dtype`). Raises :class:`InputError` for a corrupt, unsupported or
    truncated file.
    """
    path = Path(path)
    _check_file(path)
    with open(path, "rb") as fh:
        head = fh.read(MRC_HEADER_BYTES)
    refuse_foreign(path, head)  # an .npz or .npy is named as such, not called a truncated MRC
    compressed = _compression(head)
    if compressed is None and len(head) < MRC_HEADER_BYTES and b"\0" not in head:
        raise InputError(path, f"is a text file ({len(head)} bytes), not an MRC file")
    if compressed is None and path.stat().st_size < MRC_HEADER_BYTES:
        raise InputError(
            path,
            f"file is truncated: {path.stat().st_size} bytes, shorter than the "
            f"{MRC_HEADER_BYTES}-byte MRC header",
        )
    raw = _check_raw_header(path, compressed)
    header = _open_header(path)
    if not bytes(header.map).startswith(b"MAP"):
        raise InputError(path, _NOT_MRC)
    mode = int(header.mode)
    if mode not in MRC_MODES:
        supported = ", ".join(f"{m} ({n})" for m, n in MRC_MODE_NAMES.items())
        raise InputError(path, f"unsupported MRC mode {mode}; cryoshift reads modes {supported}")
    nx, ny, nz = int(header.nx), int(header.ny), int(header.nz)
    if min(nx, ny, nz) <= 0:
        raise InputError(path, f"corrupt header: dimensions {nx}x{ny}x{nz}")
    order = (int(header.mapc), int(header.mapr), int(header.maps))
    # 0/0/0 is kept as the standard order on purpose: old writers leave the three fields unset
    # (zero), and the readers such files are made for read them so: IMOD's mrc_head_read accepts
    # map values 0..4 and sets any that are not a permutation to 1/2/3, and mrcfile reads the data
    # in file order whatever the fields say (only its validator flags them). Any other
    # non-permutation (1/1/1, 1/2/2) is refused below: it states an order, a broken one, and
    # which axis is which would be a guess.
    if order == (0, 0, 0):
        order = (1, 2, 3)
    if sorted(order) != [1, 2, 3]:
        shown = "/".join(str(o) for o in order)
        raise InputError(
            path, f"corrupt header: axis order mapc/mapr/maps = {shown} is not a permutation of 1, 2, 3"
        )
    mz, ispg = int(header.mz), int(header.ispg)
    if ispg in VOLUME_STACK_SPACE_GROUPS and (mz <= 0 or nz % mz != 0):
        # mrcfile reads every such header as a stack of nz // mz volumes: mz = 0 crashes it, and an
        # mz that does not divide nz silently drops the last sections. Neither is a guess to make.
        raise InputError(
            path,
            f"corrupt header: volume stack (space group {ispg}) with mz = {mz} sections per volume, "
            f"which does not divide nz = {nz}",
        )
    is_stack = ispg in VOLUME_STACK_SPACE_GROUPS
    images = image_stack_size(ispg, mz, nz)
    if is_stack and order != (1, 2, 3):
        raise InputError(
            path,
            f"volume stack with axis order {order[0]}-{order[1]}-{order[2]}: "
            "cryoshift reads stacks in the standard order 1-2-3 only",
        )
    perm = axis_permutation(order)
    shape: tuple[int, ...]
    if is_stack:
        shape = (nz // mz, mz, ny, nx)
    elif nz == 1 and order == (1, 2, 3):
        shape = (ny, nx)
    else:
        file_shape = (nz, ny, nx)
        shape = tuple(file_shape[i] for i in perm)
        if shape[0] == 1:  # one section along Z after reordering: a 2-D image
            shape = shape[1:]
    dtype = MRC_MODES[mode]
    unsigned_bytes = False
    if mode == 0 and raw.imod_flags is not None:
        if raw.imod_flags & IMOD_4BIT_BYTES:  # read as bytes, each would be two voxels in one number
            raise InputError(
                path,
                f"mode 0 with IMOD flag {IMOD_4BIT_BYTES} (imodFlags = {raw.imod_flags}): two 4-bit "
                "values packed in each byte, which cryoshift does not read; convert it to mode 0, 1 or 2 "
                "first (IMOD: newstack -mode 1)",
            )
        dtype = byte_dtype(raw.imod_flags)
        unsigned_bytes = dtype == np.uint8
    dtype_name = dtype.name
    ext = int(header.nsymbt)
    data_bytes = nx * ny * nz * dtype.itemsize
    file_bytes = path.stat().st_size
    if compressed is None:
        have = file_bytes - MRC_HEADER_BYTES - ext
        if have < data_bytes:
            raise InputError(
                path,
                f"file is truncated: header says {nx}x{ny}x{nz} {dtype_name} = "
                f"{data_bytes} bytes of data, file has {max(have, 0)}",
            )
        if have > data_bytes:
            raise _longer_than_header(path, f"{nx}x{ny}x{nz} {dtype_name}", data_bytes, f"file has {have}")
    sizes = []
    cella = (header.cella.x, header.cella.y, header.cella.z)
    for cell, count in zip(cella, (header.mx, header.my, header.mz), strict=True):
        size = float(cell) / float(count) if int(count) > 0 else 0.0
        sizes.append(size if np.isfinite(size) and size > 0 else 0.0)
    vs = sizes[0]
    known = vs > 0
    # Compare the axes the volume has (a 2-D image or a stack's section count says nothing about Z).
    axes = sizes[:2] if len(shape) == 2 else sizes
    if known:
        _refuse_undefined_axis(path, header, cella, len(axes))
    anisotropic = known and min(axes) > 0 and (max(axes) - min(axes)) / min(axes) > ANISOTROPY_TOLERANCE
    return {
        "path": str(path),
        "shape": shape,
        "mode": mode,
        "dtype": dtype_name,  # uint8 for IMOD's unsigned mode-0 bytes (see byte_dtype)
        "unsigned_bytes": unsigned_bytes,
        "imod_flags": raw.imod_flags,  # None: no IMOD stamp (mode 0: signed or unsigned unknown)
        "voxel_size": vs if known else 1.0,
        "voxel_size_known": known,
        "voxel_sizes": tuple(sizes),
        "cell": tuple(float(c) for c in cella),  # as written (cella, A): shown when it is unusable
        "anisotropic": bool(anisotropic),
        "axis_order": order,
        "is_stack": is_stack,
        "images": images,  # > 0: a stack of that many 2-D images (image_stack_size), not a volume
        "compressed": compressed,
        "data_bytes": data_bytes,
        "file_bytes": file_bytes,
        "extended_header_bytes": ext,
        "dmin": float(header.dmin),
        "dmax": float(header.dmax),
        "dmean": float(header.dmean),
    }


def _refuse_undefined_axis(path: Path, header: Any, cella: tuple[Any, ...], n_axes: int) -> None:
    """Refuse a header whose X voxel size is set but whose Y (or, for a volume, Z) one is not.

    Why: such an axis used to count as "no size", so the X size became the voxel size of every
    axis, unchecked; mrcfile itself says inf or a negative size there. A header with no X size
    stays "voxel size unknown" (classified with a note): that is an absent cell, not a contradiction.
    """
    for axis, sampling, cell in list(zip("YZ", ("my", "mz"), cella[1:], strict=True))[: n_axes - 1]:
        count, low = int(getattr(header, sampling)), axis.lower()
        if count <= 0:
            raise InputError(
                path,
                f"corrupt header: sampling {sampling}={count} while mx={int(header.mx)}: the {axis} voxel "
                f"size (cella.{low} / {sampling}) is undefined; set {sampling} (usually n{low})",
            )
        size = float(cell) / count
        if not (np.isfinite(size) and size > 0):
            raise InputError(
                path,
                f"corrupt header: cella.{low}={float(cell):g} while cella.x={float(cella[0]):g}: the {axis} "
                "voxel size is undefined; set the cell of every axis (or none)",
            )


class MrcVolume:
    """A read-only view of an MRC file: memory-mapped data plus the facts the pipeline needs.

    ``data`` keeps the file's dtype so a tomogram is never copied whole; crop from it and
    convert the crop. Use as a context manager or call :meth:`close`.
    """

    def __init__(self, path: Path, mrc: Any, header: dict[str, Any]):
        self.path = path
        self._mrc = mrc
        self.header = header
        self.voxel_size: float = header["voxel_size"]
        self.voxel_size_known: bool = header["voxel_size_known"]
        self.voxel_sizes: tuple[float, float, float] = header["voxel_sizes"]
        self.anisotropic: bool = header["anisotropic"]
        self.is_stack: bool = header["is_stack"]
        data = mrc.data
        if header.get("unsigned_bytes"):  # IMOD's unsigned mode 0: mrcfile says int8 (a view, no copy)
            data = data.view(np.uint8)
        if self.is_stack and data.ndim == 3:  # mrcfile gives 3-D for some one-volume stacks
            data = data.reshape(header["shape"])
        order = header.get("axis_order", (1, 2, 3))
        if order != (1, 2, 3) and not self.is_stack:
            nx, ny, nz = int(mrc.header.nx), int(mrc.header.ny), int(mrc.header.nz)
            # File order (sections, rows, columns) -> (Z, Y, X): a view of the memory map, no copy.
            data = data.reshape(nz, ny, nx).transpose(axis_permutation(order)).reshape(header["shape"])
        self.data: np.ndarray = data

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    def close(self) -> None:
        if self._mrc is not None:
            self._mrc.close()
            self._mrc = None

    def __enter__(self) -> MrcVolume:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"MrcVolume({str(self.path)!r}, shape={self.shape}, dtype={self.dtype}, "
            f"voxel_size={self.voxel_size:g})"
        )


def refuse_2d(path: str | Path, header: dict[str, Any]) -> None:
    """Refuse a 2-D image (from :func:`read_header`) where a 3-D volume must go: the one wording
    for opening a volume and for a tomogram known by its header alone."""
    if len(header["shape"]) == 2:
        ny, nx = header["shape"]
        raise InputError(path, f"is a 2-D image ({nx}x{ny}), expected a 3-D volume")


def open_volume(path: str | Path, allow_2d: bool = False) -> MrcVolume:
    """Open a volume, a volume stack or a tomogram without reading it (memory map, read-only).

    Compressed files (gzip, bzip2) cannot be mapped and are read into memory instead.
    A 2-D image is rejected unless ``allow_2d``.
    """
    path = Path(path)
    header = read_header(path)
    if not allow_2d:
        refuse_2d(path, header)
    if header["compressed"]:
        refuse_decompressing_beyond_memory(path, header)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if header["compressed"]:
                mrc = mrcfile.open(path, mode="r", permissive=True)
            else:
                mrc = mrcfile.mmap(path, mode="r", permissive=True)
    except (ValueError, OSError, EOFError, zlib.error) as exc:
        kind = header["compressed"] or "uncompressed"
        raise InputError(path, f"cannot read MRC data ({kind}, corrupt or truncated): {exc}") from exc
    if mrc.data is None:
        mrc.close()
        raise InputError(path, "cannot read MRC data: file is corrupt")
    if header["compressed"]:
        _refuse_trailing_data(path, header, mrc)
    return MrcVolume(path, mrc, header)


# Peak memory of mrcfile reading a compressed file, in multiples of its decompressed size after the
# 1 KiB header: for gzip it measures the size by reading the rest whole (joined into one bytes
# object: twice that size while joining) before it reads the data; bzip2 measures it by seeking.
_DECOMPRESS_PEAK = {"gzip": 2, "bzip2": 1}


def refuse_decompressing_beyond_memory(path: Path, header: dict[str, Any]) -> None:
    """Refuse a compressed file whose header describes more data than this process has memory for,
    in one line, before anything is decompressed.

    Why: a compressed file cannot be memory-mapped, so mrcfile decompresses it whole; a few MB of
    gzip whose header says 1024^3 float32 (a "gzip bomb", or just a tomogram too big for the node)
    grew to gigabytes before any check and the OOM killer ended the whole batch, not one error row.
    Only the header's sizes are trusted here (the data are not read): a file that holds less than
    it says is found truncated later, as before. Nothing is refused where available memory is
    unknown (:func:`~cryoshift.runtime.hostmem.available_memory`)."""
    from cryoshift.runtime.hostmem import available_memory, format_bytes

    kind = header["compressed"]
    size = int(header["extended_header_bytes"]) + int(header["data_bytes"])
    need = size * _DECOMPRESS_PEAK.get(kind, 2)
    room = available_memory()
    if room is None or need <= room:
        return
    shape = "x".join(str(n) for n in reversed(header["shape"][-3:]))
    raise InputError(
        path,
        f"{kind}-compressed: its header says {format_bytes(size)} of data ({shape} {header['dtype']}), "
        f"and reading it takes about {format_bytes(need)} of memory, more than the "
        f"{format_bytes(room)} available (compressed files are decompressed whole); if the header is "
        "right, decompress the file to a plain .mrc, which is read from disk as needed",
    )


def _longer_than_header(path: Path, what: str, data_bytes: int, found: str) -> InputError:
    """More data than the header describes: a wrong nx/ny/nz (the data would be read scrambled) or
    a stack whose header was never updated (volumes silently left out). One message for both the
    plain-file check (``read_header``) and the compressed one (``_refuse_trailing_data``)."""
    return InputError(
        path,
        f"file is longer than its header says: header says {what} = {data_bytes} bytes of data, "
        f"{found}; fix nx/ny/nz (and nsymbt) in the header",
    )


def _refuse_trailing_data(path: Path, header: dict[str, Any], mrc: Any) -> None:
    """A compressed file whose data run on past the header's size: the same wrong nx/ny/nz or
    stale stack header ``read_header`` refuses in an uncompressed file, found only once the data
    are decompressed (a second decompressing pass; compressed inputs are read whole anyway)."""
    end = MRC_HEADER_BYTES + header["extended_header_bytes"] + header["data_bytes"]
    try:
        with _opener(header["compressed"])(path, "rb") as stream:
            stream.seek(end)
            extra = len(stream.read(1 << 20))
    except (OSError, EOFError, zlib.error) as exc:
        mrc.close()
        raise InputError(path, f"cannot read MRC data ({header['compressed']}, corrupt): {exc}") from exc
    if extra:
        mrc.close()
        more = f"{'at least ' if extra == 1 << 20 else ''}{extra} bytes more"
        what = f"shape {tuple(header['shape'])} {header['dtype']}"
        raise _longer_than_header(path, what, header["data_bytes"], f"the decompressed file has {more}")


def check_finite(array: np.ndarray, path: str | Path | None = None) -> None:
    """Raise :class:`InputError` if ``array`` holds NaN or Inf (they poison normalisation)."""
    if array.dtype.kind != "f":
        return
    finite = np.isfinite(array)
    if not finite.all():
        n_nan = int(np.isnan(array).sum())
        n_inf = int(finite.size - finite.sum()) - n_nan
        raise InputError(path, f"{n_nan} NaN and {n_inf} Inf voxels; volumes must be finite")


def read_volume(path: str | Path) -> np.ndarray:
    """One volume as a float32 (D, H, W) array (a copy; the file is closed on return).

    Rejects 2-D images, stacks of 2-D images, stacks of several volumes, non-finite voxels and
    truncated or corrupt files, each with a one-line :class:`InputError`.
    """
    with open_volume(path) as vol:
        refuse_image_stack(path, vol.header)
        if vol.is_stack:
            if vol.shape[0] != 1:
                raise InputError(
                    path,
                    f"is a stack of {vol.shape[0]} volumes, expected one volume "
                    "(open it with open_volume or read it as a dataset)",
                )
            data = vol.data[0]
        else:
            data = vol.data
        try:
            out = np.array(data, dtype=np.float32, copy=True)
        except (ValueError, OSError) as exc:  # pragma: no cover - I/O failure while reading
            raise InputError(path, f"cannot read MRC data: {exc}") from exc
    check_finite(out, path)
    return out


def _as_writable(array: np.ndarray, path: Path) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype == np.float64:
        return array.astype(np.float32)
    if array.dtype not in MRC_MODES.values():
        allowed = ", ".join(MRC_MODE_NAMES.values())
        raise InputError(path, f"cannot write dtype {array.dtype} to MRC; use one of {allowed}")
    return array


def _write(path: str | Path, array: np.ndarray, voxel_size: float, stack: bool) -> Path:
    path = Path(path)
    array = _as_writable(array, path)
    want = 4 if stack else 3
    if array.ndim != want:
        what = "(N, Z, Y, X) stack" if stack else "(Z, Y, X) volume"
        raise InputError(path, f"expected a {what}, got an array of shape {array.shape}")
    if not voxel_size or voxel_size <= 0:
        raise InputError(path, f"voxel size must be positive, got {voxel_size}")
    # Written under a new random name beside the target and renamed (runtime/outfiles.py), so a
    # crash never leaves a half-written MRC behind and a link planted at the name (or at the fixed
    # .NAME.<pid>.tmp used before) is never written through.
    with replacing_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(np.ascontiguousarray(array))
            if stack:
                mrc.header.ispg = 401
                mrc.header.mz = array.shape[1]
            mrc.voxel_size = float(voxel_size)
    return path


def write_volume(path: str | Path, array: np.ndarray, voxel_size: float = 1.0) -> Path:
    """Write one (Z, Y, X) volume; float64 becomes float32, other dtypes must be an MRC mode."""
    return _write(path, array, voxel_size, stack=False)


def write_stack(path: str | Path, array4d: np.ndarray, voxel_size: float = 1.0) -> Path:
    """Write an (N, Z, Y, X) volume stack (MRC space group 401, one volume per Z block)."""
    return _write(path, array4d, voxel_size, stack=True)


@dataclass
class VolumeStats:
    """Min, max, mean and non-finite count of a volume, computed in slabs to bound memory."""

    min: float
    max: float
    mean: float
    std: float
    nonfinite: int


def volume_stats(data: np.ndarray, slab_voxels: int = 1 << 24) -> VolumeStats:
    """Statistics over a (possibly memory-mapped) array without loading it all at once."""
    flat = data.reshape(-1)
    lo, hi, total, total2, count, bad = np.inf, -np.inf, 0.0, 0.0, 0, 0
    for start in range(0, flat.size, slab_voxels):
        part = np.asarray(flat[start : start + slab_voxels], dtype=np.float64)
        good = np.isfinite(part)
        if not good.all():
            bad += int(good.size - good.sum())
            part = part[good]
        if part.size:
            lo, hi = min(lo, float(part.min())), max(hi, float(part.max()))
            total += float(part.sum())
            total2 += float(np.square(part).sum())
            count += part.size
    mean = total / count if count else float("nan")
    var = max(total2 / count - mean * mean, 0.0) if count else float("nan")
    return VolumeStats(
        lo if count else float("nan"), hi if count else float("nan"), mean, float(np.sqrt(var)), bad
    )
