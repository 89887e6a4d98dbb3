"""``features.npy``: the model's ``features`` output, one float32 row per prediction row.

Written by ``classify --features`` next to ``predictions.csv`` (``features.shard-i-of-n.npy``
next to a shard's CSV), in the order of the CSV's rows: row ``i`` of the array belongs to data
row ``i`` of the CSV, so the ``id`` column keys both. Error rows have no features, as they
have no prediction row.

The file is appended batch by batch alongside the results ledger, and survives ``kill -9`` the
same way: each batch's features are appended and fsync'ed *before* its rows go into the CSV, and
the .npy header (fixed at :data:`HEADER` bytes) is rewritten with the new row count after the data
are on disk, so the header never claims rows that are not there. On ``--resume`` the file is cut
back to exactly the rows the CSV holds (a batch killed between the two appends is dropped from
both). Rows without features (a run resumed with ``--features`` that started without it) are
NaN, and said so. A plain ``numpy.load(path)`` reads it; no pickle.
"""

from __future__ import annotations

import ast
import os
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cryoshift.runtime.errors import InputError
from cryoshift.runtime.outfiles import open_in_place, replacing_path
from cryoshift.runtime.summary import PREDICTIONS

HEADER = 128  # bytes: magic, version, length, the header dict padded with spaces, "\n"
_MAGIC = b"\x93NUMPY\x01\x00"
_DTYPE = np.dtype("<f4")
FEATURES_STEM = "features"  # features[.shard-i-of-n].npy beside predictions[.shard-i-of-n].csv


def features_path(csv_path: str | Path) -> Path:
    """``features[.shard-i-of-n].npy`` for ``predictions[.shard-i-of-n].csv``."""
    csv_path = Path(csv_path)
    stem = csv_path.stem
    if stem.startswith(PREDICTIONS):
        stem = FEATURES_STEM + stem[len(PREDICTIONS) :]
    else:
        stem = f"{stem}.{FEATURES_STEM}"
    return csv_path.with_name(stem + ".npy")


def _header(rows: int, dim: int) -> bytes:
    text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}".encode()
    body = HEADER - len(_MAGIC) - 2
    return _MAGIC + struct.pack("<H", body) + text.ljust(body - 1) + b"\n"


def _read_header(path: Path) -> tuple[int, int, int]:
    """(rows, dim, data offset) of a features file; InputError if it is not one classify wrote."""
    with open(path, "rb") as fh:
        head = fh.read(HEADER)
    try:
        if head[:8] != _MAGIC:
            raise ValueError("not an .npy version 1.0 file")
        size = struct.unpack("<H", head[8:10])[0]
        info = ast.literal_eval(head[10 : 10 + size].decode("latin1"))
        rows, dim = info["shape"]
        if 10 + size != HEADER or np.dtype(info["descr"]) != _DTYPE or info["fortran_order"]:
            raise ValueError("another layout")
    except (ValueError, KeyError, TypeError, SyntaxError, struct.error) as exc:
        raise InputError(
            path, f"is not a features file written by classify --features ({exc}); move it away to resume"
        ) from None
    return int(rows), int(dim), HEADER


class FeatureLedger:
    """The append-only ``features.npy`` of one results ledger (see the module docstring).

    ``rows_done`` is the number of data rows the results CSV holds when the run starts (after
    its partial last line was cut); ``dim`` the feature width if known (0: from the first batch).
    """

    def __init__(self, path: str | Path, rows_done: int = 0, resume: bool = False, dim: int = 0):
        self.path = Path(path)
        self.dim = int(dim)
        self.rows = 0  # rows in the file
        self.notes: list[str] = []
        self._missing = 0  # rows of the CSV with no features yet: written as NaN once dim is known
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume and self.path.is_file() and self.path.stat().st_size >= HEADER:  # else: killed at birth
            _, dim_in_file, offset = _read_header(self.path)
            self.dim = dim_in_file or self.dim
            have = (self.path.stat().st_size - offset) // (4 * self.dim) if self.dim else 0
            keep = min(have, rows_done)
            # held open for the whole run; a link planted at the name is refused, never cut back
            self._fh = open_in_place(self.path, "r+b")
            self._fh.truncate(offset + keep * 4 * self.dim)
            self.rows = keep
            self._missing = rows_done - keep
        else:
            self._fh = open_in_place(self.path, "w+b")  # a link at the name is refused, not truncated
            self._fh.write(_header(0, self.dim))
            self._missing = rows_done
        if self._missing:
            self.notes.append(
                f"{self._missing} rows classified earlier without --features have NaN "
                f"features in {self.path.name}"
            )
        self._fill_missing()
        self._sync()

    def _fill_missing(self) -> None:
        if self._missing and self.dim:
            self._fh.seek(0, os.SEEK_END)
            nan = np.full((min(self._missing, 65536), self.dim), np.nan, _DTYPE).tobytes()
            left = self._missing
            while left:
                k = min(left, len(nan) // (4 * self.dim))
                self._fh.write(nan[: k * 4 * self.dim])
                left -= k
            self.rows += self._missing
            self._missing = 0

    def _sync(self) -> None:
        """Data durable first, then the header that counts it."""
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.seek(0)
        self._fh.write(_header(self.rows, self.dim))
        self._fh.flush()

    def append(self, features: np.ndarray) -> None:
        """Append one batch's rows (n, F) durably; call before the batch's rows go into the CSV."""
        feats = np.ascontiguousarray(features, dtype=_DTYPE)
        if feats.ndim != 2:
            raise ValueError(f"features must be (n, F), got shape {feats.shape}")
        if not len(feats):
            return
        if not feats.shape[1]:
            raise InputError(self.path, "the model gave no features (it has no 'features' output)")
        if not self.dim:
            self.dim = feats.shape[1]
            self._fill_missing()
        if feats.shape[1] != self.dim:
            raise InputError(
                self.path, f"holds {self.dim} features per row; the model gives {feats.shape[1]}"
            )
        try:
            self._fh.seek(0, os.SEEK_END)
            self._fh.write(feats.tobytes())
            self.rows += len(feats)
            self._sync()
        except OSError as exc:
            if exc.filename is None:
                raise OSError(exc.errno, f"cannot write: {exc.strerror or exc}", str(self.path)) from exc
            raise

    def close(self) -> None:
        if self._fh.closed:
            return
        self._fill_missing()
        self._sync()
        os.fsync(self._fh.fileno())
        self._fh.close()

    def __enter__(self) -> FeatureLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_features(path: str | Path) -> np.ndarray:
    """A features file as a read-only memory map (n, F) float32.

    An array of text (or another non-number dtype) is refused here: ``np.isfinite`` on it was a
    TypeError traceback in ``report`` and merging copied it as features."""
    features = np.load(Path(path), mmap_mode="r", allow_pickle=False)
    if features.dtype.kind not in "fiu":
        raise InputError(path, f"features must be numbers, found an array of {features.dtype}")
    return features


def join_features(
    parts: Sequence[tuple[Path, Sequence[int] | None]],
    out: Path,
    chunk: int = 65536,
    order: np.ndarray | None = None,
) -> int:
    """Write the rows ``keep`` (None: all) of each features file, in order, to ``out`` atomically.

    Used where result ledgers are joined (several devices, ``merge`` of shards) with the same
    row selection as their CSV rows. ``order`` (indices into the selected rows, the parts one after
    another): write them in that order instead, the permutation merge gave the joined CSV rows
    (the inputs' order, not the shards'), so row i still belongs to CSV row i. Memory: the
    selections and ``chunk`` rows at a time; the files are read as memory maps. Returns the rows
    written.
    """
    # a new random temporary name (never a fixed one a link could be planted at), renamed onto out
    with replacing_path(out) as tmp, FeatureLedger(tmp) as dst:
        sources, selections = [], []
        dim = 0
        for path, keep in parts:
            src = read_features(path)
            if src.ndim != 2:
                raise InputError(path, f"features must be a 2-D array, found shape {src.shape}")
            if dim and src.shape[1] != dim:
                raise InputError(path, f"{src.shape[1]} features per row, the other parts {dim}")
            dim = src.shape[1]
            sources.append(src)
            selections.append(np.arange(len(src)) if keep is None else np.asarray(keep, dtype=np.int64))
        if order is None:
            for src, rows in zip(sources, selections, strict=True):
                for s in range(0, len(rows), chunk):
                    dst.append(np.asarray(src[rows[s : s + chunk]]))
        else:
            _append_in_order(dst, sources, selections, np.asarray(order, dtype=np.int64), dim, chunk)
        if not dst.dim:
            dst.dim = dim
        n = dst.rows
    return n


def _append_in_order(
    dst: FeatureLedger,
    sources: list[np.ndarray],
    selections: list[np.ndarray],
    order: np.ndarray,
    dim: int,
    chunk: int,
) -> None:
    """Append to ``dst`` the selected rows of ``sources`` (all parts' selections one after another)
    at the indices ``order``, ``chunk`` rows at a time."""
    total = sum(len(rows) for rows in selections)
    if len(order) != total or (total and (order.min() < 0 or order.max() >= total)):
        raise ValueError(f"order of {len(order)} rows is not a permutation of the {total} selected")
    starts = np.cumsum([0] + [len(rows) for rows in selections])
    for s in range(0, len(order), chunk):
        wanted = order[s : s + chunk]
        part = np.searchsorted(starts, wanted, side="right") - 1
        block = np.empty((len(wanted), dim), _DTYPE)
        for k in np.unique(part).tolist():
            here = part == k
            block[here] = sources[k][selections[k][wanted[here] - starts[k]]]
        dst.append(block)
