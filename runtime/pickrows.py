"""Planned items of a pick table, made from arrays when asked for, never stored one per row.

A :class:`PickSource` holds a table's coordinates (float64, already scaled to reconstruction
voxels), an int32 tomogram index per row, and per tomogram its file or the reason it has none.
:class:`PickRows` is a selection of its rows (a ``range`` or an index array) that behaves as a
read-only sequence of :class:`~cryoshift.runtime.sources.Item`: ``len``, iteration (in batches,
vectorised), ``rows[i]`` and ``rows[a:b:c]`` (another selection, no copy of the table).
:class:`ItemList` chains such selections and ordinary item lists into the planned order.

Item ids are exactly those of the row-by-row planner (the results CSV is the resume ledger):
``tomogram:x,y,z`` with one decimal, and ``~n`` on the n-th row with the same text; a row without
coordinates (they are not numbers, or could not be converted) is ``tomogram:line N`` instead. Repeats are
found without formatting every id: each coordinate's one-decimal text is an integer (tenths)
plus the sign of ``-0.0``, taken from ``rint(10 v)`` except near a rounding tie, where Python's
own formatting decides; rows sharing a 64-bit hash of those keys are then compared exactly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from cryoshift.runtime.sources.items import Item, UniqueIds

BATCH = 65536


def _tenths(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int64 tenths, negative-zero flag) such that equal pairs <=> equal ``f"{v:.1f}"`` text."""
    t = v * 10.0
    safe = np.abs(v) < 1e9
    k = np.where(safe, np.rint(np.where(safe, t, 0.0)), 0.0).astype(np.int64)
    with np.errstate(invalid="ignore"):
        frac = np.abs(t - np.floor(t) - 0.5)
    odd = np.flatnonzero((frac < 1e-3) | ~safe)
    for i in odd.tolist():  # ties: the formatter rounds the exact binary value
        text = f"{float(v[i]):.1f}"
        if safe[i]:
            k[i] = int(text.replace(".", ""))
        else:  # absurd magnitudes and nan/inf (such picks fail): the text's hash stands in, so
            k[i] = hash(text)  # a row of "nan" is never taken for a repeat of one at 0.0
    negzero = (k == 0) & np.signbit(v)
    return k, negzero


_MIX = np.array(
    [0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5, 0xFF51AFD7ED558CCD],
    dtype=np.uint64,
)


def repeats(tomo: np.ndarray, xyz: np.ndarray, chunk: int = 1 << 20) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose id text repeats an earlier row's, and their occurrence number (2, 3, ...)."""
    n = len(tomo)
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    h = np.empty(n, np.uint64)
    with np.errstate(over="ignore"):
        for s in range(0, n, chunk):
            part = slice(s, min(n, s + chunk))
            acc = tomo[part].astype(np.uint64) * _MIX[0]
            flags = np.zeros(part.stop - part.start, np.uint64)
            for axis in range(3):
                k, nz = _tenths(xyz[part, axis])
                acc = (acc ^ (acc >> np.uint64(29))) * _MIX[axis + 1] + k.view(np.uint64)
                flags |= nz.astype(np.uint64) << np.uint64(axis)
            h[part] = (acc ^ (acc >> np.uint64(31))) * _MIX[4] + flags
    order = np.argsort(h, kind="stable")
    hs = h[order]
    del h
    same = hs[1:] == hs[:-1]
    del hs
    cand_mask = np.zeros(n, bool)
    cand_mask[1:] |= same
    cand_mask[:-1] |= same
    del same
    cand = np.sort(order[cand_mask])
    del order, cand_mask
    if not len(cand):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    keys = [tomo[cand].astype(np.int64)]
    for axis in range(3):
        k, nz = _tenths(xyz[cand, axis])
        keys += [k, nz.astype(np.int64)]
    by_key = np.lexsort([cand, *keys[::-1]])  # rows of one id together, in row order
    sk = np.stack([k[by_key] for k in keys], axis=1)
    new = np.ones(len(cand), bool)
    new[1:] = (sk[1:] != sk[:-1]).any(axis=1)
    group_start = np.maximum.accumulate(np.where(new, np.arange(len(cand)), 0))
    rank = np.arange(len(cand)) - group_start + 1
    rows = cand[by_key]
    keep = rank >= 2
    at = np.argsort(rows[keep])
    return rows[keep][at].astype(np.int64), rank[keep][at].astype(np.int64)


class PickSource:
    """One planned pick table: arrays plus per-tomogram facts; see the module docstring."""

    def __init__(
        self,
        path: str,
        key: Any,
        names: list[str],
        tomo: np.ndarray,
        xyz: np.ndarray,
        tomo_paths: list[str | None],
        reasons: list[str],
        bad_rows: np.ndarray | None = None,
        bad_lines: np.ndarray | None = None,
        bad_reasons: list[str] | None = None,
        unplaced: tuple[np.ndarray, np.ndarray] | None = None,
        padded_rows: np.ndarray | None = None,
    ):
        self.path, self.key, self.names = path, key, names
        self.tomo, self.xyz = tomo, xyz
        self.tomo_paths, self.reasons = tomo_paths, reasons
        # Rows whose coordinates are not numbers (sorted) and their file lines: error rows.
        self.bad_rows = np.zeros(0, np.int64) if bad_rows is None else np.asarray(bad_rows, np.int64)
        self.bad_lines = np.full(len(self.bad_rows), -1, np.int64) if bad_lines is None else bad_lines
        # Why each bad row fails ("" = its coordinates are not numbers), aligned with bad_rows.
        self.bad_reasons = list(bad_reasons) if bad_reasons else [""] * len(self.bad_rows)
        self.dup_rows, self.dup_rank = repeats(tomo, xyz)
        # Rows without coordinates (not numbers, or centred ones that could not be converted) and
        # their file lines (sorted by row, -1 where unknown): named by line (see ``ids``).
        empty = np.zeros(0, np.int64)
        self.unplaced_rows, self.unplaced_lines = unplaced if unplaced is not None else (empty, empty)
        # Rows (sorted) whose crop reaches past the tomogram's edge and is padded (picktables.padded_rows)
        self.padded_rows = empty if padded_rows is None else np.asarray(padded_rows, np.int64)

    def __len__(self) -> int:
        return len(self.tomo)

    def ids(self, rows: np.ndarray) -> list[str]:
        names = self.names
        t = self.tomo[rows].tolist()
        xyz = self.xyz[rows]
        out = [
            f"{names[k]}:{x:.1f},{y:.1f},{z:.1f}"
            for k, x, y, z in zip(t, *(xyz[:, a].tolist() for a in range(3)), strict=True)
        ]
        if len(self.dup_rows):
            pos = np.searchsorted(self.dup_rows, rows)
            pos = np.minimum(pos, len(self.dup_rows) - 1)
            hit = np.flatnonzero(self.dup_rows[pos] == rows)
            for j in hit.tolist():
                out[j] = f"{out[j]}~{int(self.dup_rank[pos[j]])}"
        if len(self.unplaced_rows):
            self._name_unplaced(rows, t, out)
        return out

    def _name_unplaced(self, rows: np.ndarray, tomo: list[int], out: list[str]) -> None:
        """In place: the ids of rows without coordinates name the pick's line in the table
        (``TS_02:line 11``; ``row 3``, counted from 1, where the line is unknown).

        Why: they were ``TS_02:nan,nan,nan`` (then ``~2``, ``~3`` ...), which says nothing of the
        pick; such rows always fail, and good picks keep their coordinate ids (resume and merge
        match on them)."""
        found = self.unplaced_rows
        pos = np.minimum(np.searchsorted(found, rows), len(found) - 1)
        for j in np.flatnonzero(found[pos] == rows).tolist():
            line = int(self.unplaced_lines[pos[j]])
            where = f"line {line}" if line > 0 else f"row {int(rows[j]) + 1}"
            out[j] = f"{self.names[tomo[j]]}:{where}"

    def items(self, rows: np.ndarray) -> list[Item]:
        ids = self.ids(rows)
        t = self.tomo[rows].tolist()
        xyz = self.xyz[rows]
        names, paths, reasons, path = self.names, self.tomo_paths, self.reasons, self.path
        out = []
        for ident, k, x, y, z in zip(
            ids, t, xyz[:, 0].tolist(), xyz[:, 1].tolist(), xyz[:, 2].tolist(), strict=True
        ):
            tp = paths[k]
            if tp is None:
                out.append(Item(ident, "error", path, -1, x, y, z, names[k], reasons[k]))
            else:
                out.append(Item(ident, "tomogram", tp, -1, x, y, z, names[k]))
        if len(self.bad_rows):
            self._fail_bad_rows(rows, out)
        return out

    def _fail_bad_rows(self, rows: np.ndarray, out: list[Item]) -> None:
        """In place: the items of bad rows (coordinates not numbers, too many fields) become error
        rows that name their line (a bad row fails alone; the rest of the table is classified)."""
        from cryoshift.runtime.tables import bad_row_reason

        pos = np.minimum(np.searchsorted(self.bad_rows, rows), len(self.bad_rows) - 1)
        for j in np.flatnonzero(self.bad_rows[pos] == rows).tolist():
            row, line, why = int(rows[j]), int(self.bad_lines[pos[j]]), self.bad_reasons[pos[j]]
            out[j] = out[j]._replace(kind="error", path=self.path, error=bad_row_reason(row, line, why))


class PickRows(Sequence):
    """A selection of a :class:`PickSource`'s rows as a sequence of items."""

    def __init__(self, source: PickSource, rows: range | np.ndarray | None = None):
        self.source = source
        self.rows = range(len(source)) if rows is None else rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return PickRows(self.source, self.rows[i])
        return self.source.items(np.asarray([self.rows[i]], dtype=np.int64))[0]

    def _batches(self) -> Iterator[np.ndarray]:
        for s in range(0, len(self.rows), BATCH):
            yield np.asarray(self.rows[s : s + BATCH], dtype=np.int64)

    def __iter__(self) -> Iterator[Item]:
        for rows in self._batches():
            yield from self.source.items(rows)

    def ids(self) -> Iterator[str]:
        for rows in self._batches():
            yield from self.source.ids(rows)

    def padded(self) -> np.ndarray:
        """The rows of this selection whose crops are padded (their source's ``padded_rows``)."""
        found = self.source.padded_rows
        rows = self.rows
        if not len(found) or not len(rows):
            return found[:0]
        if isinstance(rows, range):  # shards are ranges with a step: no array of every row
            lo, hi = (rows.start, rows[-1] + 1) if rows.step > 0 else (rows[-1], rows.start + 1)
            found = found[(found >= lo) & (found < hi)]
            return found[(found - rows.start) % rows.step == 0]
        return found[np.isin(found, np.asarray(rows, dtype=np.int64))]

    def where(self, keep: np.ndarray) -> PickRows:
        """The rows of this selection where ``keep`` (one bool per position) is true."""
        return PickRows(
            self.source,
            np.asarray(self.rows, dtype=np.int64)[keep] if len(self.rows) else np.zeros(0, np.int64),
        )


class RowIds(Sequence):
    """The ids of a whole pick table by row (``Plan.origins``): lazy, like the items."""

    def __init__(self, rows: PickRows):
        self._rows = rows

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return list(RowIds(self._rows[i]))
        return self._rows[i].id

    def __iter__(self) -> Iterator[str]:
        return self._rows.ids()


class ItemList(Sequence):
    """Planned items in order: plain lists and :class:`PickRows` selections, chained."""

    def __init__(self, segments: list[Any] | None = None):
        self.segments: list[Any] = [s for s in (segments or []) if len(s)]
        # The ids handed out by append: never one item's id on another (see UniqueIds).
        self.ids = UniqueIds()

    # -- building (the planner) --------------------------------------------------------------
    def append(self, item: Item) -> None:
        """Add ``item``, under a suffixed id where another item holds its id (UniqueIds)."""
        if not self.segments or not isinstance(self.segments[-1], list):
            self.segments.append([])
        self.segments[-1].append(self.ids.admit(item))

    def extend(self, items: Any) -> None:
        for it in items:
            self.append(it)

    def add_rows(self, rows: PickRows) -> None:
        if len(rows):
            self.segments.append(rows)

    def truncate(self, n: int) -> None:
        """Keep the first ``n`` items (undo what one failed input added), their ids freed."""
        kept, total = [], 0
        for seg in self.segments:
            take = min(len(seg), max(n - total, 0))
            if take < len(seg) and isinstance(seg, list):
                for item in seg[take:]:
                    self.ids.forget(item)
            if take:
                kept.append(seg if take == len(seg) else seg[:take])
            total += len(seg)
        self.segments = kept

    # -- reading -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return sum(len(s) for s in self.segments)

    def __iter__(self) -> Iterator[Item]:
        for seg in self.segments:
            yield from seg

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self))
            if step < 1:
                return list(self)[i]
            out, offset = [], 0
            for seg in self.segments:
                n = len(seg)
                lo = max(start, offset)
                if step > 1 and lo > start:
                    lo = start + -(-(lo - start) // step) * step  # first index of the slice in this segment
                hi = min(stop, offset + n)
                if lo < hi:
                    out.append(seg[lo - offset : hi - offset : step])
                offset += n
            return ItemList(out)
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(i)
        for seg in self.segments:
            if i < len(seg):
                return seg[i]
            i -= len(seg)
        raise IndexError(i)  # pragma: no cover

    def padded(self) -> int:
        """How many planned crops reach past their tomogram's edge and are padded (each table row
        once, however often its table was given); see picktables.padded_rows."""
        found: dict[Any, list[np.ndarray]] = {}
        for seg in self.segments:
            if isinstance(seg, PickRows):
                found.setdefault(seg.source.key, []).append(seg.padded())
        return sum(len(np.unique(np.concatenate(parts))) for parts in found.values())

    def without(self, done: set[str] | frozenset[str]) -> ItemList:
        """Items whose id is not in ``done`` (a resumed run skips what the ledgers hold)."""
        if not done:
            return self
        out: list[Any] = []
        for seg in self.segments:
            if isinstance(seg, PickRows):
                keep = np.fromiter((ident not in done for ident in seg.ids()), bool, len(seg))
                out.append(seg if keep.all() else seg.where(keep))
            else:
                out.append([it for it in seg if it.id not in done])
        return ItemList(out)

    def dedupe(self) -> tuple[ItemList, int]:
        """First occurrence of every id; returns the items and how many were dropped.

        Ids repeat only when an item is planned twice: rows of one table are made distinct, and
        append gives a plain item whose id another item holds a suffix (UniqueIds), so a plain id
        seen again is the same item again. Plain items by a set of ids, table rows by table (the
        same file read the same way)."""
        seen: set[str] = set()
        taken: dict[Any, np.ndarray] = {}
        out: list[Any] = []
        for seg in self.segments:
            if isinstance(seg, PickRows):
                mask = taken.setdefault(seg.source.key, np.zeros(len(seg.source), bool))
                rows = np.asarray(seg.rows, dtype=np.int64)
                fresh = ~mask[rows]
                mask[rows] = True
                out.append(seg if fresh.all() else seg.where(fresh))
            else:
                kept = []
                for it in seg:
                    if it.id not in seen:
                        seen.add(it.id)
                        kept.append(it)
                out.append(kept)
        result = ItemList(out)
        return result, len(self) - len(result)
