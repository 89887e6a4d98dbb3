"""``merge_shards``: join the outputs of ``classify --shard i/n`` runs into one result set.

SLURM array tasks write ``predictions.shard-i-of-n.csv`` (and ``errors``, ``manifest``) into
one folder, or into several. Merging keeps every id exactly once, refuses shards of different
models, class lists or settings (:data:`ANSWER_SETTINGS`, shared with ``classify --resume``),
shards planned from other inputs (a picks table re-sorted between the tasks: their fingerprints
differ) and results in the output folder that did not come from these shards (an unsharded run,
another model's merge), says which of the n shards are missing, refuses a damaged shard table (not
text, a cut-off row, other rows than its manifest counts, a value classify never writes, an
errors row without its id, file or reason, a folder or link loop under its name) naming it, and
writes the usual ``predictions.csv``/``.star``, ``errors.csv`` and ``manifest.json`` (with
per-tomogram class counts); predictions.star keeps the input STAR tables' blocks and columns as
classify does. The merged rows are in the order an unsharded run writes them (:func:`_input_order`),
so row i of predictions.csv is row i of predictions.star. Where the inputs planned again here give
the plan the shards split (its fingerprint theirs), every row is held to it (:class:`_PlanIds`): an
id it does not plan, one in a shard that does not hold it, or one planned once found twice is
refused naming the shard table, and a planned id in no shard's table is refused (a note with
``--allow-missing``). A shard file named ``shard-i-of-n`` with i >= n, and a manifest whose format,
recorded shard or planning facts are not a classify shard's, are refused naming the file.
When every shard has ``features.shard-i-of-n.npy`` (``classify --features``), their rows for the
kept predictions become ``features.npy``, in the order of ``predictions.csv``. A marker written
before the tables and removed after the manifest (:data:`PENDING_MERGE`) lets a rerun of a merge
killed in between finish it; ``--allow-missing`` leaves out shards that did not finish.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import re
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from cryoshift.runtime.copick_io import is_copick
from cryoshift.runtime.errors import (
    CWD_GONE,
    InputError,
    check_out_folder,
    missing_reason,
    not_a_file,
    require_extra,
)
from cryoshift.runtime.jsonfile import is_nonnegative_number, read_json_object
from cryoshift.runtime.ledger import ERROR_COLUMNS, checked_rows, csv_line, sort_file_rows
from cryoshift.runtime.outfiles import open_in_place, replacing_path, write_text

_SHARD = re.compile(r"^predictions\.shard-(\d+)-of-(\d+)\.csv$")


def find_shards(folders: list[Path]) -> dict[tuple[int, int], Path]:
    """(i, n) -> predictions CSV of each shard found in ``folders``."""
    found: dict[tuple[int, int], Path] = {}
    for folder in folders:
        if not folder.is_dir():
            reason = missing_reason(folder, "no such folder") if not folder.exists() else "not a folder"
            raise InputError(folder, reason)
        for path in sorted(folder.iterdir()):
            m = _SHARD.match(path.name)
            if m:
                key = (int(m.group(1)), int(m.group(2)))
                if key[0] >= key[1]:  # classify --shard never writes one: a renamed or foreign file
                    raise InputError(
                        path, f"not a shard's table: shard {key[0]} of {key[1]} (a shard i/n has i < n)"
                    )
                if key in found:
                    raise InputError(path, f"shard {key[0]}/{key[1]} also in {found[key].parent}")
                found[key] = path
    if not found:
        raise InputError(folders[0], "no predictions.shard-i-of-n.csv files (classify --shard writes them)")
    return found


class _Table(NamedTuple):
    """One shard's predictions or errors table, and what its manifest says the shard wrote there."""

    path: Path
    key: tuple[int, int]  # (i, n) of the shard
    manifest: Path
    rows: int | None  # data rows by the manifest (None: an older manifest that does not say)

    def rerun(self) -> str:
        return f"rerun shard {self.key[0]}/{self.key[1]} (remove its files first)"


def _tables(
    shards: dict[tuple[int, int], Path], keys: list[tuple[int, int]], manifests: list[dict], kind: str
) -> list[_Table]:
    """The shards' ``kind`` tables ("predictions" or "errors"), with the row counts their manifests
    give (``total_rows`` / ``total_errors``: the data rows of the file when the shard finished)."""
    count = "total_rows" if kind == "predictions" else "total_errors"
    out = []
    for key, manifest in zip(keys, manifests, strict=True):
        rows = manifest["summary"].get(count)
        out.append(
            _Table(
                shards[key].with_name(f"{kind}.shard-{key[0]}-of-{key[1]}.csv"),
                key,
                _manifest_path(shards[key], key),
                rows if isinstance(rows, int) and not isinstance(rows, bool) else None,
            )
        )
    return out


def _header(table: _Table) -> list[str]:
    """The first row of a shard table; one line naming the file when it is empty or not text."""
    first = next(checked_rows(table.path, advice=table.rerun()), None)
    if first is None or not first[1]:
        raise InputError(table.path, f"empty file (no header); {table.rerun()}")
    return first[1]


def _agreed_header(tables: list[_Table], expected: list[str]) -> list[str]:
    """The columns every shard table has; refuses the table that differs, not whichever came
    second: the reference is the format's own header when a shard has it, else the majority."""
    headers = [(t, tuple(_header(t))) for t in tables if t.path.is_file()]
    found = Counter(h for _, h in headers)
    if len(found) <= 1:
        return list(next(iter(found), expected))
    reference = tuple(expected) if tuple(expected) in found else found.most_common(1)[0][0]
    table, header = next((t, h) for t, h in headers if h != reference)
    raise InputError(
        table.path,
        f"columns differ from the other shards' ({_difference(header, reference)}): another model "
        f"or class list, or a damaged file; {table.rerun()}",
    )


def _difference(header: tuple[str, ...], reference: tuple[str, ...]) -> str:
    """How ``header`` differs from ``reference``, in a few words."""
    from cryoshift.runtime.picks import _list

    missing = [c for c in reference if c not in header]
    extra = [c for c in header if c not in reference]
    # a column named twice is neither missing nor extra: without this it read "another order"
    repeated = [c for c, k in Counter(header).items() if k > Counter(reference)[c]]
    words = []
    if repeated:
        words.append(f"repeats {_list(repeated, limit=3)}")
    if missing:
        words.append(f"lacks {_list(missing, limit=3)}")
    if extra:
        words.append(f"has extra {_list(extra, limit=3)}")
    return ", ".join(words) or "the same columns in another order"


PROBABILITY_SLACK = 1e-6  # probabilities are written to 9 significant digits: sums and maxima agree to this


def _prediction_checker(
    header: list[str], class_names: list[str], first: _Table, threshold: float | None = None
) -> Callable[[list[str]], tuple[str, str] | None]:
    """A check of one predictions row against what classify writes (pipeline.score_rows through
    ledger.format_value): (column, problem) for the first value it cannot have written, else None.

    Why: merge copied the shards' values as they were, so an edited or foreign shard (confidence
    7.5, a class index the model does not have, a class name that is not its index's) reached the
    merged results without a word. ``class_names`` are the manifest's (the model's); the header's
    probability columns must be theirs, in order. ``threshold`` is the confidence under which the
    shards said ``unknown`` (the manifests' --unknown-threshold, else the model's).
    """
    from cryoshift.runtime.picks import _list
    from cryoshift.runtime.pipeline import UNKNOWN

    probs = [c for c in header if c.startswith("prob_")]
    if class_names and probs != [f"prob_{name}" for name in class_names]:
        raise InputError(
            first.path,
            f"probability columns ({_list(probs, limit=4)}) are not those of the model's classes "
            f"in {first.manifest.name} ({_list(class_names, limit=4)}); {first.rerun()}",
        )
    names = list(class_names) or [c[5:] for c in probs]
    rank = {name: k for k, name in enumerate(names)}
    col = {c: i for i, c in enumerate(header)}
    prob_at = [col[c] for c in probs]

    def number(text: str) -> float | None:
        try:
            return float(text)
        except ValueError:
            return None

    def integer(text: str) -> int | None:
        try:
            return int(text)
        except ValueError:
            return None

    def check(row: list[str]) -> tuple[str, str] | None:
        if "id" in col and not row[col["id"]]:
            return "id", "empty"
        index = integer(row[col["index"]]) if "index" in col else -1
        if index is None or index < -1:
            return "index", f"{row[col['index']]!r} is not an index (an integer >= -1)"
        for c in ("x", "y", "z"):
            value = number(row[col[c]]) if c in col else 0.0
            if value is None or math.isinf(value):
                return c, f"{row[col[c]]!r} is not a coordinate (a number, or nan)"
        k = None
        if "class_index" in col:
            k = integer(row[col["class_index"]])
            if k is None or not -1 <= k < len(names):
                shown = row[col["class_index"]]
                return "class_index", f"{shown!r} is not a class of the model (-1 or 0..{len(names) - 1})"
        if "unknown" in col:
            flag = row[col["unknown"]]
            if flag not in ("0", "1"):
                return "unknown", f"{flag!r} is not 0 or 1"
            if k is not None and (flag == "1") != (k == -1):
                return "unknown", f"{flag} where class_index is {k} (-1 exactly when unknown)"
        if "class_name" in col and k is not None:
            want = UNKNOWN if k == -1 else names[k]
            if row[col["class_name"]] != want:
                return "class_name", f"{row[col['class_name']]!r} is not class {k}'s name {want!r}"
        best = None
        if "best_class" in col:
            best = rank.get(row[col["best_class"]])
            if best is None:
                return "best_class", f"{row[col['best_class']]!r} is not one of the model's classes"
            if k is not None and k not in (-1, best):
                return "best_class", f"{names[best]!r} where class_index is {k} ({names[k]!r})"
        values = []
        for c, i in zip(probs, prob_at, strict=True):
            value = number(row[i])
            if value is None or not 0.0 <= value <= 1.0:
                return c, f"{row[i]!r} is not a probability (0 to 1)"
            values.append(value)
        if values and abs(sum(values) - 1.0) > PROBABILITY_SLACK * len(values):
            return probs[0], f"the probabilities sum to {sum(values):.9g}, not 1"
        if "confidence" in col:
            text = row[col["confidence"]]
            confidence = number(text)
            if confidence is None or not 0.0 <= confidence <= 1.0:
                return "confidence", f"{text!r} is not a probability (0 to 1)"
            if values and best is not None and abs(confidence - values[best]) > PROBABILITY_SLACK:
                return "confidence", f"{text} is not prob_{names[best]} ({row[prob_at[best]]})"
            if values and max(values) > confidence + PROBABILITY_SLACK:
                return "confidence", f"{text} is not the highest probability ({max(values):.9g})"
            flag = row[col["unknown"]] if "unknown" in col else None
            clear = threshold is not None and abs(confidence - threshold) > PROBABILITY_SLACK
            if clear and flag is not None and (flag == "1") != (confidence < threshold):
                side = "under" if confidence < threshold else "over"
                return "unknown", f"{flag} where the confidence {text} is {side} the threshold {threshold:g}"
        if "shift_score" in col:
            shift = number(row[col["shift_score"]])
            if shift is None or shift < 0:  # nan: a model without feature statistics
                return "shift_score", f"{row[col['shift_score']]!r} is not a shift score (>= 0, or nan)"
        return None

    return check


def _error_checker(header: list[str], tables: list[_Table]) -> Callable[[list[str]], tuple[str, str] | None]:
    """A check of one errors row against what classify writes: the item's id, its file and why it
    failed (readers.fill, pipeline.finite_outputs; ledger.ERROR_COLUMNS), each text, none empty.
    (column, problem) for the first value it cannot have written, else None.

    Why: merge checked the predictions' values only, so an errors row without its id (which the
    merged errors.csv keys on), its file or its reason reached the merged results without a word.
    A header other than ``id,path,reason`` in every shard (which the shards then agree on) is
    refused naming the first errors table."""
    from cryoshift.runtime.picks import _list

    if header != list(ERROR_COLUMNS):
        first = next(t for t in tables if t.path.is_file())  # a shard's header, not the default one
        raise InputError(
            first.path,
            f"columns ({_list(header, limit=4)}) are not those of an errors table "
            f"({', '.join(ERROR_COLUMNS)}); {first.rerun()}",
        )

    def check(row: list[str]) -> tuple[str, str] | None:
        for column, value in zip(ERROR_COLUMNS, row, strict=True):
            text = value.strip() if column == "reason" else value  # an id or a file may be named " "
            if not text:
                return column, "empty"
        return None

    return check


def _rows(table: _Table, width: int) -> Iterator[tuple[int, list[str]]]:
    """(line, fields) of the data rows of a shard table, checked as they are read, so a damaged
    shard is refused instead of reaching the merged files: a row cut off mid-way, or a table with
    fewer or more rows than its manifest says the shard wrote (cut short, or changed since)."""
    with open(table.path, "rb") as fh:  # classify ends every row with a newline
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) != b"\n":
            raise InputError(table.path, f"its last row is cut off (no newline at the end); {table.rerun()}")
    n = 0
    rows = checked_rows(table.path, width, advice=table.rerun())
    next(rows, None)  # the header (checked by _agreed_header)
    for line, row in rows:
        n += 1
        yield line, row
    if table.rows is not None and n != table.rows:
        raise InputError(
            table.path,
            f"{n} rows, but {table.manifest.name} says the shard wrote {table.rows} (cut short or "
            f"changed since); {table.rerun()}",
        )


class Repeats(NamedTuple):
    """Ids found again in a later row (of the same shard or another) while joining shard tables."""

    count: int  # rows dropped
    examples: list[tuple[str, tuple[int, int], tuple[int, int]]]  # (id, first shard, repeating shard)


class _Written(NamedTuple):
    """Where a joined table's data rows lie, and where each belongs, for :func:`_reorder`."""

    offsets: array  # byte offset of every data row in the joined file, then the file's size
    planned: array  # each row's position in the re-planned inputs (-1: not planned there)
    interleaved: array  # row r of shard i's table: r * n + i (its place if the split was exact)


def _join(
    tables: list[_Table],
    header: list[str],
    out: Path,
    skip: dict[str, tuple[int, int]],
    kept: list[tuple[list[int], int]] | None = None,
    check: Callable[[list[str]], tuple[str, str] | None] | None = None,
    place: Callable[[str], int] | None = None,
    claim: Callable[[str, int, str | None], str | None] | None = None,
) -> tuple[dict[str, tuple[int, int]], Repeats, _Written]:
    """Copy rows of ``tables`` into ``out``, each id once and none in ``skip``; returns the ids
    copied (with the shard each came from), the repeats dropped (the caller judges them) and where
    each copied row lies and belongs (:class:`_Written`: the tables are copied one after another,
    in shard order; :func:`_reorder` puts them in the inputs' order afterwards, from disk, so
    millions of rows never sit in memory).

    A missing table is refused when its manifest says it had rows (errors tables: a missing one
    would drop those errors without a word). ``kept`` (a list) receives, per table, the positions
    of the data rows that were copied and the number of data rows the table has. ``check`` gives
    (column, problem) for a row whose values classify cannot have written: the shard is refused.
    ``place`` gives an id's position in the re-planned inputs (-1: not there). ``claim`` (the ids
    of the plan the shards split, :class:`_PlanIds`) gives why a row's id cannot be in this shard's
    table (shard index, and the table holding an earlier row of it), else None: refused."""
    seen: dict[str, tuple[int, int]] = {}
    dupes = 0
    examples: list[tuple[str, tuple[int, int], tuple[int, int]]] = []
    written = _Written(array("q"), array("q"), array("q"))
    with open_in_place(out, "wb") as fh:  # out: a new temporary file (replacing_path), no link followed
        dst = _CountingFile(fh)
        dst.write(csv_line(header))  # the ledgers' row format: a name holding \r stays one cell
        for table in tables:
            rows: list[int] = []
            position = -1
            if not table.path.is_file():
                if table.rows:
                    raise InputError(
                        table.path,
                        f"missing, but {table.manifest.name} says the shard wrote {table.rows} rows there; "
                        f"copy it back next to the manifest, or {table.rerun()}",
                    )
            else:
                for line, row in _rows(table, len(header)):
                    position += 1
                    wrong = check(row) if check else None
                    if wrong:
                        raise InputError(
                            table.path,
                            f"row {position + 1} (line {line}), column {wrong[0]}: {wrong[1]}, which "
                            f"classify never writes (an edited or foreign table); {table.rerun()}",
                        )
                    first = seen.get(row[0]) or skip.get(row[0])
                    if claim is not None:
                        earlier = None
                        if first is not None:  # skip holds the predictions' ids (errors are joined second)
                            kind = table.path.name.split(".", 1)[0] if row[0] in seen else "predictions"
                            earlier = f"{kind}.shard-{first[0]}-of-{first[1]}.csv"
                        wrong = claim(row[0], table.key[0], earlier)
                        if wrong:
                            raise InputError(
                                table.path,
                                f"row {position + 1} (line {line}): id {row[0]!r} {wrong} (an edited "
                                f"table, or one mixed with another shard's: not what classify wrote); "
                                f"{table.rerun()}",
                            )
                    if first is not None:
                        dupes += 1
                        if len(examples) < 3:
                            examples.append((row[0], first, table.key))
                        continue
                    seen[row[0]] = table.key
                    rows.append(position)
                    written.offsets.append(dst.size)
                    written.planned.append(place(row[0]) if place else -1)
                    written.interleaved.append(position * table.key[1] + table.key[0])
                    dst.write(csv_line(row))
            if kept is not None:
                kept.append((rows, position + 1))
        written.offsets.append(dst.size)
        fh.flush()
        os.fsync(fh.fileno())
    return seen, Repeats(dupes, examples), written


class _CountingFile:
    """A binary file that rows are written to as text, counting the bytes: the offset of each
    row, for :func:`_reorder`. UTF-8, as the ledgers' rows are read (ledger.checked_rows)."""

    def __init__(self, fh: Any):
        self.fh = fh
        self.size = 0

    def write(self, text: str) -> int:
        data = text.encode("utf-8")
        self.fh.write(data)
        self.size += len(data)
        return len(text)


def _reorder(path: Path, written: _Written, keys: array) -> np.ndarray | None:
    """Rewrite the joined table ``path`` with its data rows sorted by ``keys`` (stable), as a
    resumed run's ledgers are (ledger.sort_file_rows); returns the permutation (new row j is old
    row ``perm[j]``), or None when the rows already are in order."""
    return sort_file_rows(path, _keys(written.offsets), _keys(keys))


def _keys(values: array) -> np.ndarray:
    """An ``array('q')`` as an int64 array, without a copy."""
    return np.frombuffer(values, dtype=np.int64) if len(values) else np.zeros(0, np.int64)


class _PlanIds:
    """The ids of the plan the shards split (the inputs planned again, each volume once: what
    :func:`~cryoshift.runtime.run.distinct` gives), each with its first position, and where each
    belongs: a shard is every n-th item of it (runtime/run.py ``split``), so item ``p`` is shard
    ``p % n``'s.

    Why: merge kept the first row of every id and dropped the rest with a note that the id was
    "planned more than once", without looking: a shard table with another shard's row in place of
    one of its own merged with exit 0, one planned pick lost. With the plan, every row is checked
    (:meth:`claim`) and every planned id looked for (:meth:`lost`). Memory: one dict entry per id
    (the positions that sort the merged rows anyway); ids planned more than once (the same pick in
    two tables), rare, keep the shard of each time."""

    def __init__(self, items: Any, n: int):
        from cryoshift.runtime.ledger import escape_text

        self.n = n
        self.first: dict[str, int] = {}
        self.repeated: dict[str, list[int]] = {}  # id planned more than once -> the shard of each time
        self.used: Counter[tuple[str, int]] = Counter()  # (repeated id, shard) -> rows found
        position = 0
        for segment in getattr(items, "segments", [items]):
            ids = segment.ids() if hasattr(segment, "ids") else (it.id for it in segment)
            for ident in ids:
                text = escape_text(ident)  # as the ledgers write it
                first = self.first.setdefault(text, position)
                if first != position:
                    self.repeated.setdefault(text, [first % n]).append(position % n)
                position += 1

    def place(self, ident: str) -> int:
        """The id's first position in the plan (the order an unsharded run writes); -1: not planned."""
        return self.first.get(ident, -1)

    def claim(self, ident: str, shard: int, earlier: str | None) -> str | None:
        """Why a row of shard ``shard`` cannot have this id (None: it can). ``earlier``: the table
        holding an earlier row of the id, if one does."""
        first = self.first.get(ident)
        if first is None:
            return "is not one the shards' inputs plan (they were planned again here)"
        times = self.repeated.get(ident)
        if times is None:
            owner = first % self.n
            if owner != shard:
                also = f", and {earlier} holds it too" if earlier else ""
                return f"belongs to shard {owner}/{self.n} (planned once{also}), not to this one"
            if earlier:
                return f"is planned once, but {earlier} has a row of it too"
            return None
        planned = times.count(shard)
        if not planned:
            shards = ", ".join(map(str, sorted(set(times))))
            return f"belongs to shards {shards} of {self.n} (planned there), not to this one"
        self.used[(ident, shard)] += 1
        if self.used[(ident, shard)] > planned:
            return f"is planned {planned} times for this shard, but has more rows than that"
        return None

    def lost(self, found: Callable[[str], bool], present: set[int]) -> tuple[int, list[str]]:
        """How many planned ids of the ``present`` shards no table holds (``found`` says whether one
        does), and up to three of them, each with the shards that should hold it."""
        count, examples = 0, []
        for ident, first in self.first.items():
            shards = self.repeated.get(ident) or [first % self.n]
            if not found(ident) and any(s in present for s in shards):
                count += 1
                if len(examples) < 3:
                    owners = sorted({s for s in shards if s in present})
                    examples.append(f"{ident!r} of shard {'/'.join(map(str, owners))}")
        return count, examples


def _interleave_problem(manifests: list[dict], keys: list[tuple[int, int]]) -> str | None:
    """Why row ``r`` of shard ``i`` cannot be taken to be item ``r * n + i`` of the inputs' order
    (None: it can). A shard is every n-th item of the planned order (runtime/run.py ``split``), and
    a shard writes its items in that order, but the places of its error rows among its
    predictions are not recorded, a resumed shard may have written batches out of order, device
    workers' rows are joined device by device, and a split of older shards of a plan with repeats
    (dropped within each shard) is not every n-th item."""
    for key, manifest in zip(keys, manifests, strict=True):
        summary, settings = manifest["summary"], manifest.get("settings", {})
        fingerprint = planned(manifest)
        shard = f"shard {key[0]}"
        if fingerprint is None or not isinstance(fingerprint.get("items"), int):
            return f"{shard} has no plan fingerprint (an older cryoshift)"
        if summary.get("total_errors") or summary.get("errors"):
            return f"{shard} has error rows, whose places among its predictions are not recorded"
        if summary.get("resumed"):
            return f"{shard} was resumed, and may have written its rows out of order"
        devices = settings.get("devices")
        if isinstance(devices, list) and len(devices) > 1:
            return f"{shard} ran on several devices, whose rows it joined device by device"
        share = len(range(key[0], fingerprint["items"], key[1]))
        if summary.get("planned") != share or summary.get("total_rows", summary.get("classified")) != share:
            return f"{shard} holds other than every {key[1]}-th planned item (repeated inputs dropped?)"
    return None


def _judge_repeats(repeats: Repeats, planned_alike: bool, checked: bool, where: Path) -> str | None:
    """A note on ids found more than once, or a refusal. ``checked``: every row was held to the
    plan the shards split (:class:`_PlanIds`), so a repeat left is of an id planned more than once
    (an input given twice, the same pick in two tables: classify writes it twice too), kept once.
    Shards whose fingerprints agree split one plan, but where the inputs cannot be read here a
    repeat may be that, or a shard's row put in place of one of another shard (a planned row then
    lost): kept once, with a note that says so rather than guessing. Without fingerprints (shards
    of an older version) nothing says the split was one: a repeat is the sign of a table
    rewritten between the tasks, whose other rows were lost, so it is refused naming the ids."""
    if not repeats.count:
        return None
    shown = "; ".join(
        f"{ident} (shard {a[0]}/{a[1]} and shard {b[0]}/{b[1]})" for ident, a, b in repeats.examples
    )
    if checked:
        return f"{repeats.count} rows of ids planned more than once (an input given twice?) were kept once"
    if planned_alike:
        return (
            f"{repeats.count} rows repeat the id of an earlier row and were dropped, e.g. {shown}: "
            "ids planned more than once (the same pick in two tables), or a shard table edited "
            "with another shard's rows (its own then lost); the inputs are not readable here to "
            "tell which"
        )
    raise InputError(
        where,
        f"{repeats.count} rows have an id found in more than one shard row, e.g. {shown}: the shards "
        "were not split from the same inputs (a picks table rewritten or re-sorted between the shard "
        "tasks?), so other items are missing; rerun every shard",
    )


def _judge_lost(
    ids: _PlanIds,
    done: dict[str, tuple[int, int]],
    failed: dict[str, tuple[int, int]],
    keys: list[tuple[int, int]],
    allow_missing: bool,
    where: Path,
) -> str | None:
    """Refuse (or with ``allow_missing`` say in a note) planned ids of the shards found that are in
    none of their predictions or errors: every finished shard writes one row per item of its share,
    so such an id was lost (a row edited away, replaced by another). Ids of missing shards are
    those shards' (already said)."""
    count, examples = ids.lost(lambda ident: ident in done or ident in failed, {k[0] for k in keys})
    if not count:
        return None
    shown = ", ".join(examples) + (", ..." if count > len(examples) else "")
    ids_are = "planned id is" if count == 1 else "planned ids are"
    if allow_missing:
        return f"{count} {ids_are} in no shard's predictions or errors ({shown}): not merged"
    raise InputError(
        where,
        f"{count} {ids_are} in no shard's predictions or errors ({shown}), though every "
        "shard finished: rows lost from the shard tables; rerun the shards that plan them (remove "
        "their files first), or pass --allow-missing to merge without them",
    )


def _merge_features(
    preds: list[Path], kept: list[tuple[list[int], int]], csv_out: Path, order: np.ndarray | None = None
) -> str | None:
    """features.npy of the merged rows when every shard has its features; else a note (or None).
    ``order``: the permutation :func:`_reorder` gave the rows (None: kept in shard order)."""
    from cryoshift.runtime.features import features_path, join_features, read_features

    files = [features_path(p) for p in preds]
    have = [f for f in files if f.is_file()]
    out = features_path(csv_out)
    if not have:
        return None
    problem = None
    if len(have) < len(files):
        problem = "shards " + ", ".join(f.name for f in files if not f.is_file()) + " have no features"
    else:
        for f, (_, rows) in zip(files, kept, strict=True):
            try:
                n = len(read_features(f))
            except (ValueError, OSError) as exc:
                problem = f"{f.name} is not readable ({exc})"
                break
            if n != rows:
                problem = f"{f.name} has {n} rows for {rows} predictions"
                break
    if problem:
        out.unlink(missing_ok=True)  # an older merge's features would no longer match the rows
        return f"no {out.name}: {problem} (rerun those shards with --features --resume)"
    join_features([(f, k[0]) for f, k in zip(files, kept, strict=True)], out, order=order)
    return None


def _input_order(
    preds: _Written, errs: _Written, replanned: bool, manifests: list[dict], keys: list[tuple[int, int]]
) -> tuple[Callable[[_Written], array] | None, str | None]:
    """How to put the joined rows in the order an unsharded run writes them (the inputs' order):
    which sort key of :class:`_Written` (None: keep the shards' order), and a note when it cannot.

    Why: the shard tables were appended one after another, so the merged predictions.csv (and
    features.npy) listed shard 0's rows, then shard 1's, while predictions.star, rebuilt from the
    input STAR tables, followed the inputs: row i of the CSV was not row i of the STAR. The
    re-planned inputs give each id's place; where they cannot be read here (moved) or no longer
    plan every id, row r of shard i is item r * n + i when the split can be shown to be exact
    (:func:`_interleave_problem`); else the shards' order stays, and the note says so."""
    unplanned = sum(int(np.count_nonzero(_keys(w.planned) < 0)) for w in (preds, errs))
    if replanned and not unplanned:
        return (lambda w: w.planned), None
    problem = _interleave_problem(manifests, keys)
    if problem is None:
        return (lambda w: w.interleaved), None
    why = (
        f"{unplanned} rows have ids the inputs no longer plan (changed since the shards ran?)"
        if replanned
        else "the inputs are not readable here"
    )
    return None, (
        f"predictions.csv lists shard 0's rows, then shard 1's ..., not the inputs' order: {why}, "
        f"and {problem}"
    )


def merge_shards(
    folders: list[str | Path], out_dir: str | Path | None = None, allow_missing: bool = False
) -> Any:
    """Merge shard outputs found in ``folders`` into ``out_dir`` (default: the first folder).

    Returns a :class:`~cryoshift.runtime.summary.ClassifySummary` of the merged set. Runs from a
    deleted current directory when every path is absolute; a relative one there is refused.
    """
    from cryoshift.runtime.pipeline import RunStats, result_columns
    from cryoshift.runtime.summary import ClassifySummary, finish_run, output_names

    t0 = time.perf_counter()
    dirs = [Path(f) for f in folders]
    _refuse_relative_without_cwd([*dirs, *([Path(out_dir)] if out_dir else [])])
    shards = find_shards(dirs)
    counts = {n for _, n in shards}
    if len(counts) != 1:
        splits = ", ".join(f"of {n}" for n in sorted(counts))
        raise InputError(dirs[0], f"shards of different splits ({splits})")
    n = counts.pop()
    unfinished = _leave_out_unfinished(shards) if allow_missing else []
    missing = [i for i in range(n) if (i, n) not in shards]
    if missing and not allow_missing:
        raise InputError(
            dirs[0],
            f"shards {', '.join(map(str, missing))} of {n} are missing (still running "
            "or failed?); rerun them, or pass --allow-missing",
        )
    keys = sorted(shards)
    manifests, model_note = _manifests(shards, keys, dirs[0])
    if any(is_copick(str(text)) for text in manifests[0].get("inputs") or []):
        # merge writes the merged predictions into the copick project, as an unsharded run does:
        # one line naming the extra now, not a traceback once the merged tables are written
        require_extra("copick", "merging shards of copick inputs", "copick")
    planned_alike = _check_planned(manifests, keys, dirs[0])
    out = Path(out_dir) if out_dir else dirs[0]
    if out_dir:  # a folder of the user's: refused in words (a name too long, a file there), ~ said
        check_out_folder(out, "--out", "to write the merged results into")
    out.mkdir(parents=True, exist_ok=True)
    names = output_names(out, None)
    first = manifests[0]
    _refuse_foreign_results(names, first, n)
    preds = _tables(shards, keys, manifests, "predictions")
    errs = _tables(shards, keys, manifests, "errors")
    for table in preds + errs:  # a folder or a link loop under a shard table's name is not "missing"
        problem = not_a_file(table.path)
        if problem:
            raise InputError(table.path, f"{problem}, not a shard table; {table.rerun()}")
    class_names = first["model"].get("class_names") or []
    pred_header = _agreed_header(preds, result_columns(class_names))
    err_header = _agreed_header(errs, list(ERROR_COLUMNS))
    check = _prediction_checker(pred_header, class_names, preds[0], _threshold(first))
    check_error = _error_checker(err_header, errs)
    settings = dict(first.get("settings", {}))
    plan_notes: list[str] = []
    plan, ids, theirs = _shards_plan(first, settings, plan_notes, n, Path(dirs[0]).resolve())
    replanned = ids is not None
    checked = theirs and planned_alike  # every row is held to the plan the shards split
    claim = ids.claim if ids is not None and checked else None
    kept: list[tuple[list[int], int]] = []
    settings.update(shard=None, merged_shards=[list(k) for k in keys])
    marker, earlier_marker = _mark_pending(names["manifest"], first, settings)
    try:
        # both tables whole or neither: a damaged shard leaves an older merge as it was. Each goes to a
        # new random temporary name (never the fixed .NAME.<pid>.tmp a link could be planted at) and is
        # renamed onto its name when the block ends without an error (errors.csv first, then the CSV)
        with contextlib.ExitStack() as stack:
            tmps = [stack.enter_context(replacing_path(names[k])) for k in ("csv", "errors")]
            place = ids.place if ids is not None else None
            done, dup_pred, pred_rows = _join(preds, pred_header, tmps[0], {}, kept, check, place, claim)
            failed, dup_err, err_rows = _join(
                errs, err_header, tmps[1], done, check=check_error, place=place, claim=claim
            )
            lost_note = None
            if ids is not None and checked:
                lost_note = _judge_lost(ids, done, failed, keys, allow_missing, dirs[0])
            ids = None  # every row placed and checked: the plan's ids are no longer needed
            done.clear()
            failed.clear()
            repeats = Repeats(dup_pred.count + dup_err.count, (dup_pred.examples + dup_err.examples)[:3])
            repeat_note = _judge_repeats(repeats, planned_alike, checked, dirs[0])
            sort, order_note = _input_order(pred_rows, err_rows, replanned, manifests, keys)
            order = _reorder(tmps[0], pred_rows, sort(pred_rows)) if sort else None
            if sort:
                _reorder(tmps[1], err_rows, sort(err_rows))
    except BaseException:
        if not earlier_marker:  # no table replaced: the folder's results are as they were
            marker.unlink(missing_ok=True)
        raise
    feature_note = _merge_features([t.path for t in preds], kept, names["csv"], order)
    summary = ClassifySummary.for_files(
        names, f"merged {len(keys)} of {n} shards: " + first["model"]["description"]
    )
    for m in manifests:
        for key in (*_SUMMED_COUNTS, *_SUMMED_TIMES):
            setattr(summary, key, getattr(summary, key) + m["summary"].get(key, 0))
    # The rate over the shards' pipeline time summed (their busy time).
    summary.rate = RunStats(summary.classified, summary.errors, wall_s=summary.pipeline_s).rate
    if missing:
        summary.notes.append(_missing_note(summary, first, missing, n))
    if unfinished:
        summary.notes.append(_unfinished_note(unfinished))
    for note in (repeat_note, lost_note, model_note, feature_note, order_note, *plan_notes):
        if note:
            summary.notes.append(note)
    leftovers = _shard_class_stars(shards, keys, manifests) if settings.get("split_by_class") else []
    if leftovers:
        summary.notes.append(
            f"removed the shards' {len(leftovers)} per-class STARs "
            f"(predictions.shard-i-of-{n}_<class>.star): the merged per-class STARs replace them"
        )
    summary.wall_s = time.perf_counter() - t0
    finish_run(names, first["model"], plan, summary, settings)
    marker.unlink(missing_ok=True)  # the manifest is written: the merge is whole
    kept = _remove_files(leftovers)
    if kept:
        summary.notes.append(f"could not remove {len(kept)} per-shard per-class STARs: {'; '.join(kept[:3])}")
    return summary


def _missing_note(summary: Any, first: dict[str, Any], missing: list[int], n: int) -> str:
    """The note on shards an ``--allow-missing`` merge went without; sets ``summary.planned`` to the
    whole plan where the shards' manifests record it (``planned_inputs.items``: the plan the shards
    split), so that planned minus rows is what the merge lacks.

    Why: planned was the merged shards' sum (13,333 of a 20,000-volume plan with one of 3 shards
    missing), so the manifest showed nothing missing; the shortfall was only in this note."""
    shards = f"shards {', '.join(map(str, missing))} of {n} were missing"
    fingerprint = planned(first)
    whole = fingerprint.get("items") if fingerprint else None
    merged = summary.planned
    if type(whole) is not int or whole < merged:
        return f"{shards}; summary.planned counts only the {merged} items of the merged shards"
    summary.planned = whole
    return f"{shards}: {whole - merged} of the {whole} planned items are in them and not in this merge"


def _shard_class_stars(
    shards: dict[tuple[int, int], Path], keys: list[tuple[int, int]], manifests: list[dict]
) -> list[Path]:
    """The per-class STARs the merged shards wrote (``predictions.shard-i-of-n_<class>.star``, as each
    shard's manifest records them under ``class_stars``) that are there now: the merged per-class
    STARs replace them. Only a plain file name of that shard's form, recorded by its own manifest,
    is taken (a manifest is data); a folder or a file the shard did not record is left alone.

    Why: they stayed beside the merged ``predictions_<class>.star``, two sets of the same picks."""
    from cryoshift.runtime.summary import output_names

    found = []
    for key, manifest in zip(keys, manifests, strict=True):
        star = output_names(shards[key].parent, key)["star"]
        recorded = manifest.get("class_stars")
        for name in recorded if isinstance(recorded, dict) else {}:
            if not isinstance(name, str) or Path(name).name != name:
                continue
            if not (name.startswith(f"{star.stem}_") and name.endswith(".star")):
                continue
            path = star.with_name(name)
            if path.is_file() and not path.is_symlink():
                found.append(path)
    return found


def _remove_files(paths: list[Path]) -> list[str]:
    """Remove ``paths``; returns 'path: reason' for each that could not be (a read-only folder)."""
    kept = []
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            kept.append(f"{path}: {exc.strerror or exc}")
    return kept


def _leave_out_unfinished(shards: dict[tuple[int, int], Path]) -> list[Path]:
    """Take the shards with a table but no manifest (killed, or still running) out of ``shards``, as
    ``--allow-missing`` takes them: missing. Returns their tables. Left in when no shard finished,
    so that the refusal names the first one.

    Why: ``--allow-missing`` merged past shards that never started but stopped at one killed
    mid-way, though both are shards that did not finish. Its rows so far are not taken: a shard
    is merged whole or not at all (its manifest is what says it is whole)."""
    gone = [key for key, table in shards.items() if not os.path.lexists(_manifest_path(table, key))]
    if len(gone) == len(shards):
        return []
    return [shards.pop(key) for key in sorted(gone)]


def _unfinished_note(tables: list[Path]) -> str:
    """The merged manifest's note on shards left out as unfinished (:func:`_leave_out_unfinished`)."""
    from cryoshift.runtime.picks import _list

    return (
        f"left out as missing, unfinished (a table but no manifest: killed, or still running): "
        f"{_list([str(t) for t in tables], limit=4)}; rerun them with --resume, then merge again"
    )


def _refuse_foreign_results(names: dict[str, Path], shards: dict[str, Any], n: int) -> None:
    """Refuse to replace results in the output folder that did not come from shards like these:
    merging wrote the shards' rows over a whole run of another model (or an unfinished one, whose
    ``--resume`` then found every row "done"). Accepted: no results yet, or an earlier merge of
    ``n`` shards of the same model and settings (merging again after more shards finished)."""
    from cryoshift.runtime.jsonfile import read_json_object
    from cryoshift.runtime.summary import same_network

    away = "merge into another folder with -o, or move this folder's results away first"
    run = names["run"]
    if run.is_file():  # an unsharded classify run writes (or wrote) this folder's predictions.csv
        record = read_json_object(run, "run record")
        model = record.get("model") if isinstance(record.get("model"), dict) else {}
        if same_network(model, shards["model"]) is None:
            raise InputError(
                run,
                f"this folder holds a classify run of model {model.get('path', '?')} (sha256 "
                f"{str(model.get('sha256', '?'))[:16]}), not {shards['model'].get('path', '?')} "
                f"(sha256 {str(shards['model']['sha256'])[:16]}) the shards were classified with; {away}",
            )
        differs = answer_mismatch(record, shards)
        if differs:
            raise InputError(
                run,
                f"this folder holds a classify run of {differs[0]} {differs[1]}, the shards were "
                f"classified with {differs[2]}; {away}",
            )
    tables = [p for p in (names["csv"], names["errors"]) if os.path.lexists(p)]
    if not tables:
        return
    why = None
    pending = pending_merge(names["manifest"])
    if run.is_file():
        why = f"{run.name} says an unsharded classify run writes it"
    elif names["manifest"].is_file():
        why = _other_merge(names["manifest"], "", shards, n)
    elif pending.is_file():  # a merge killed before its manifest: these shards' own may finish it
        why = _other_merge(pending, " (a merge that did not finish)", shards, n)
    else:
        why = f"no {names['manifest'].name} says where its rows came from (a classify run killed here?)"
    if why:
        raise InputError(
            tables[0],
            f"holds results that did not come from these shards ({why}); merging would replace them; {away}",
        )


def _other_merge(record_path: Path, said: str, shards: dict[str, Any], n: int) -> str | None:
    """Why the merge record ``record_path`` (a merged manifest, or the marker of a merge that did
    not finish: :func:`pending_merge`) is not of a merge of ``n`` shards like ``shards`` (None: it
    is, so merging these again may replace its results). ``said`` follows the file's name."""
    from cryoshift.runtime.summary import same_network

    name = f"{record_path.name}{said}"
    merged = read_json_object(record_path, "manifest")
    settings = merged.get("settings") if isinstance(merged.get("settings"), dict) else {}
    split = settings.get("merged_shards")
    if not isinstance(split, list) or not split:
        return f"{name} is of a classify run, not of a merge"
    if any(not isinstance(k, list) or len(k) != 2 or k[1] != n for k in split):
        return f"{name} is of a merge of another split (not of {n} shards)"
    if same_network(merged.get("model"), shards["model"]) is None:
        return f"{name} is of a merge of shards of another model"
    if differs := answer_mismatch(merged, shards):
        what, old, new = differs
        return f"{name} is of a merge of shards of {what} {old}, these have {new}"
    return None


# Written before a merge puts its tables in place and removed once its manifest is written: a merge
# killed in between leaves tables without a manifest, which this marker says are a merge's own.
PENDING_MERGE = ".cryoshift-merge-pending.json"


def pending_merge(manifest: Path) -> Path:
    """The marker of a merge into the folder of ``manifest`` that has not finished (if it exists)."""
    return manifest.with_name(PENDING_MERGE)


def _mark_pending(manifest: Path, first: dict[str, Any], settings: dict[str, Any]) -> tuple[Path, bool]:
    """Write the marker of a merge starting to replace the results beside ``manifest``: what the
    merged manifest will say of the shards (model, inputs, settings with ``merged_shards``).

    Why: merge renames its tables into place before finish_run writes the manifest; killed in
    between (SLURM, kill -9), the tables had no manifest, so every later merge refused them as a
    classify run's, and the dependent merge job could only be fixed by hand. With the marker a
    rerun of the same merge recognises them as its own (:func:`_refuse_foreign_results`), and
    ``report`` says the merge did not finish. Returns the marker and whether one was there
    already (a merge killed here earlier, whose tables may be in place: it stays if this one fails)."""
    record = {
        "format": "cryoshift.merge-pending/1",
        "pid": os.getpid(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": first["model"],
        "inputs": first.get("inputs"),
        "settings": settings,
    }
    path = pending_merge(manifest)
    earlier = path.is_file()
    write_text(path, json.dumps(record, indent=2, default=str) + "\n")
    return path, earlier


def _manifests(
    shards: dict[tuple[int, int], Path], keys: list[tuple[int, int]], where: Path
) -> tuple[list[dict], str | None]:
    """The shards' manifests, all of one network, and a note when it came in more than one form."""
    from cryoshift.runtime.summary import recorded_onnx_lineage

    manifests = []
    for key in keys:
        m = _manifest_path(shards[key], key)
        problem = not_a_file(m)
        if problem:
            raise InputError(m, f"{problem}, not a shard manifest (rerun the shard with --resume)")
        if not m.is_file():
            raise InputError(
                m,
                "missing: the shard did not finish (rerun it with --resume, "
                "or leave it out with --allow-missing)",
            )
        manifest = read_json_object(m, "shard manifest")
        if not isinstance(manifest.get("model"), dict) or "sha256" not in manifest["model"]:
            raise InputError(m, "not a readable shard manifest (no model.sha256: a foreign file)")
        names = manifest["model"].get("class_names")
        if names is not None and (not isinstance(names, list) or not all(isinstance(c, str) for c in names)):
            raise InputError(m, "not a readable shard manifest (model.class_names is not a list of names)")
        if not isinstance(manifest.get("summary"), dict):
            raise InputError(m, "not a readable shard manifest (no summary: a foreign file)")
        if not isinstance(manifest.get("settings", {}), dict):  # ANSWER_SETTINGS reads it
            raise InputError(m, "not a readable shard manifest (settings is not an object: a foreign file)")
        _check_scale_settings(manifest.get("settings", {}), m)
        odd = _summed_problem(manifest["summary"])
        if odd:
            raise InputError(m, f"not a readable shard manifest ({odd}: a foreign or edited file)")
        odd = _recorded_problem(manifest, key)
        if odd:
            raise InputError(m, f"not a readable shard manifest ({odd})")
        manifests.append(manifest)
    note = None
    if len({m["model"]["sha256"] for m in manifests}) != 1:
        # An ONNX model on some shards and the TensorRT engine built from it on others (CPU and
        # GPU nodes of one facility) is one network: accepted, as --resume accepts it, with a note.
        lineages = {recorded_onnx_lineage(m["model"]) for m in manifests}
        if len(lineages) != 1 or None in lineages:
            raise InputError(where, "shards were classified with different models")
        forms = sorted(
            {f"{m['model'].get('path', '?')} ({m['model'].get('backend', '?')})" for m in manifests}
        )
        note = (
            f"shards were classified with one network in different forms ({', '.join(forms)}: one "
            "was built from the other's ONNX); their rows agree within export parity, not bit for bit"
        )
    # A shard is every n-th item of the planned inputs: shards of other inputs would lose or repeat
    # items, and other settings would give rows of one merged table different meanings.
    for key, m in zip(keys[1:], manifests[1:], strict=True):
        differs = answer_mismatch(manifests[0], m, same_plan(planned(manifests[0]), planned(m)))
        if differs:
            what, first, other = differs
            raise InputError(
                where,
                f"shards were classified with different {what} (shard {keys[0][0]}: {first}; shard "
                f"{key[0]}: {other}); rerun the odd shards with the same command line",
            )
    return manifests, note


def _check_scale_settings(settings: dict[str, Any], path: Path) -> None:
    """Refuse a shard manifest whose ``binning`` / ``coordinate_pixel_size`` no run accepts.

    Why: merge plans the shards' inputs again with these settings, and a manifest is data (copied
    from a cluster, received, edited): a binning of inf put every re-planned pick at (0, 0, 0), and
    one of 0 planned them unscaled, without a word. The check is classify's own
    (runtime/run.py scale_problem), with the manifest named."""
    from cryoshift.runtime.run import scale_problem

    problem = scale_problem(settings.get("binning"), settings.get("coordinate_pixel_size"))
    if problem:
        raise InputError(path, f"not a readable shard manifest (its settings: {problem})")


_FORMAT = re.compile(r"^cryoshift\.classify/\d+$")


def _recorded_problem(manifest: dict[str, Any], key: tuple[int, int]) -> str | None:
    """What is wrong with a shard manifest's format, shard, inputs and data facts (None: nothing).

    Why: merge read ``data`` and the model's box, voxel size and contrast to plan the inputs again
    with a KeyError or TypeError traceback where they were missing or of another type, and took
    a manifest of another format or of another shard (``settings.shard`` [5, 3], null: a file
    renamed or copied over another shard's) as the shard its file name says."""
    fmt = manifest.get("format")
    if not isinstance(fmt, str) or not _FORMAT.match(fmt):
        return f"format {_short(fmt, 40)} is not cryoshift.classify/N: a foreign file"
    shard = manifest.get("settings", {}).get("shard")
    if not (isinstance(shard, list) and all(type(v) is int for v in shard) and shard == list(key)):
        return (
            f"settings.shard is {_short(shard, 40)}, but the file name says shard [{key[0]}, {key[1]}]: "
            "renamed, copied over another shard's, or edited"
        )
    inputs = manifest.get("inputs")
    if not isinstance(inputs, list) or not all(isinstance(t, str) for t in inputs):
        return "inputs is not a list of paths: a foreign or edited file"
    data, model = manifest.get("data"), manifest["model"]
    if not isinstance(data, dict):
        return "no data object (box_size, contrast, voxel_sizes): a foreign or edited file"
    for where, facts in (("data", data), ("model", model)):
        size = facts.get("box_size")
        if type(size) is not int or size < 1:
            return f"{where}.box_size is not a box size (a whole number >= 1): a foreign or edited file"
        if not isinstance(facts.get("contrast"), str):
            return f"{where}.contrast is not a contrast name: a foreign or edited file"
    if not isinstance(data.get("voxel_sizes"), dict):
        return "data.voxel_sizes is not an object (file -> voxel size): a foreign or edited file"
    size = model.get("voxel_size")
    if not is_nonnegative_number(size) or not size:
        return "model.voxel_size is not a voxel size (a number > 0): a foreign or edited file"
    return None


# The shard manifests' summary fields merge adds up into the merged manifest.
# (``unknown`` is then set to the merged file's count by finish_run, as class_counts are)
_SUMMED_COUNTS = ("planned", "classified", "errors", "resumed", "unknown", "unknown_this_session")
_SUMMED_TIMES = ("read_s", "compute_s", "write_s", "wait_s", "pipeline_s")


def _summed_problem(summary: dict[str, Any]) -> str | None:
    """What is wrong with a shard manifest's counts and times (None: nothing): text there was a
    TypeError traceback of the sum, and a NaN or negative one reached the merged manifest."""
    for key in _SUMMED_COUNTS:
        value = summary.get(key, 0)
        if type(value) is not int or value < 0:
            return f"summary.{key} is not a count (a whole number >= 0)"
    for key in _SUMMED_TIMES:
        if not is_nonnegative_number(summary.get(key, 0)):  # an integer too large for a float too
            return f"summary.{key} is not a time in seconds (a finite number >= 0)"
    return None


def _threshold(manifest: dict[str, Any]) -> float | None:
    """The confidence under which classify said ``unknown`` in these shards (their settings agree:
    ANSWER_SETTINGS), or None where the manifest does not say."""
    given = manifest.get("settings", {}).get("unknown_threshold")
    value = given if given is not None else manifest.get("model", {}).get("unknown_threshold")
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _manifest_path(predictions: Path, key: tuple[int, int]) -> Path:
    return predictions.with_name(f"manifest.shard-{key[0]}-of-{key[1]}.json")


def _resolved(paths: Any, where: Any) -> list[str]:
    """``paths`` as given, the relative ones joined to the folder the run was started in: the same
    relative name means other files from another folder (``copick:`` inputs are left as written).
    Written as pathlib writes them (``./``, ``//`` and a trailing ``/`` dropped, as the planner's
    ids drop them; ``..`` kept, as a link on the way may lead elsewhere), so ``./stack.mrcs`` and
    ``g/`` name the files ``stack.mrcs`` and ``g`` do."""
    out = []
    for text in paths or []:
        text = str(text)
        plain = isinstance(where, str) and where and not text.startswith("copick:")
        if plain:
            text = str(Path(os.path.join(where, text) if not os.path.isabs(text) else text))
        out.append(text)
    return out


def spelled_apart(recorded: dict[str, Any], now: dict[str, Any]) -> list[tuple[str, str]]:
    """The inputs of two records (run.json, manifests: their ``inputs``) that are written otherwise,
    position by position, as (recorded, now); empty when they are written alike or are not two
    lists of one length (other inputs: :data:`ANSWER_SETTINGS` says so).

    Why: ids are built from the inputs as written (``000001@stack.mrcs``, ``g/a.mrc``), so the same
    files named another way (``$PWD/stack.mrcs``) plan other ids: a resume classified every item
    again under them, and shards of both spellings could not be merged (said to be a picks table
    re-sorted). Where the plan is the same (a picks table's ids do not name it), nothing differs."""
    old, new = recorded.get("inputs"), now.get("inputs")
    if not isinstance(old, list) or not isinstance(new, list) or len(old) != len(new):
        return []
    return [(str(a), str(b)) for a, b in zip(old, new, strict=True) if str(a) != str(b)]


def spelling_text(pairs: list[tuple[str, str]], now: str) -> str:
    """``a (<now>: b); c (<now>: d)``: each input as recorded, and as written in the other record."""
    return "; ".join(f"{a} ({now}: {b})" for a, b in pairs)


def _setting(name: str) -> Callable[[dict[str, Any]], Any]:
    return lambda record: record.get("settings", {}).get(name)


_where = _setting("working_directory")  # the folder a run's relative inputs are read from


# Everything a row's answer depends on besides the model, read from a run record (run.json) or a
# manifest (both hold ``inputs``, ``settings`` and ``model``). One definition for every place that
# joins rows made at different times: the shards merge joins, and a run --resume goes on with.
# Other inputs would lose or repeat items; other settings would give rows of one table different
# meanings (judged at another threshold, cropped at other positions).
ANSWER_SETTINGS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "inputs": lambda record: _resolved(record.get("inputs"), _where(record)),
    "--tomograms": lambda record: _resolved(record.get("settings", {}).get("tomograms"), _where(record)),
    "--unknown-threshold": lambda record: _threshold(record),
    **{
        f"--{name.replace('_', '-')}": _setting(name)
        for name in ("contrast", "ignore_voxel_size", "coordinate_pixel_size", "binning")
    },
}


# Those of ANSWER_SETTINGS whose whole effect is the planned pick coordinates (scaled to the
# tomograms' voxels): runs that planned the same items at the same coordinates mean the same,
# however the scale was written (--binning 2, or a --coordinate-pixel-size of half the voxel size).
PLAN_ONLY = ("--binning", "--coordinate-pixel-size")


def answer_mismatch(
    recorded: dict[str, Any], now: dict[str, Any], same_plan: bool = False
) -> tuple[str, str, str] | None:
    """The first of :data:`ANSWER_SETTINGS` that differs between two records: (what, recorded value,
    new value) as short JSON text; None when the rows of both would mean the same. ``same_plan``:
    the two planned the same items (:func:`same_plan`), so :data:`PLAN_ONLY` settings agree."""
    for what, value in ANSWER_SETTINGS.items():
        if same_plan and what in PLAN_ONLY:
            continue
        old, new = value(recorded), value(now)
        if old != new:
            return what, _short(old), _short(new)
    return None


# The key of the settings (of a manifest and of run.json) that holds what the run planned from its
# inputs (runtime/run.py plan_fingerprint): how many items, in which order, from which tomograms.
PLANNED = "planned_inputs"


def planned(record: dict[str, Any]) -> dict[str, Any] | None:
    """The planned-inputs fingerprint of a record, or None (a run from before fingerprints)."""
    found = record.get("settings", {}).get(PLANNED)
    if not isinstance(found, dict) or not isinstance(found.get("files"), dict):
        return None
    return found if isinstance(found.get("sha256"), str) else None


def same_plan(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Whether two planned-inputs fingerprints are of the same items, in the same order, at the same
    coordinates (both known)."""
    if a is None or b is None:
        return False
    return (a.get("items"), a["sha256"]) == (b.get("items"), b["sha256"])


def changed_files(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The data files (tomograms, stacks) both fingerprints name with another size or modification
    time: rows made from them before and after read other data under one name."""
    a, b = old.get("files", {}), new.get("files", {})
    return sorted(path for path in a.keys() & b.keys() if a[path] != b[path])


def _check_planned(manifests: list[dict], keys: list[tuple[int, int]], where: Path) -> bool:
    """Refuse shards planned from different inputs: a shard is every n-th item of the plan, so a
    table rewritten (re-sorted, picks added) between the shard tasks splits it differently and
    loses or repeats items; a tomogram replaced between them gives rows of other data. Returns
    whether every shard had a fingerprint (shards of older versions have none)."""
    found = [planned(m) for m in manifests]
    have = [(k, f) for k, f in zip(keys, found, strict=True) if f is not None]
    groups: dict[tuple[Any, Any], list[int]] = {}
    for key, fp in have:
        groups.setdefault((fp.get("items"), fp["sha256"]), []).append(key[0])
    if len(groups) > 1:
        ranked = sorted(groups.items(), key=lambda kv: (-len(kv[1]), min(kv[1])))
        most = ranked[0][1]
        odd = sorted(i for _, shards in ranked[1:] for i in shards)
        counts = [str(items) for (items, _), _ in ranked]
        detail = (
            f"the same {counts[0]} items in another order"
            if len(set(counts)) == 1
            else f"{' vs '.join(counts)} items"
        )
        _refuse_spelled_apart(manifests, keys, most, odd, where)
        raise InputError(
            where,
            f"{_shards(odd)} planned other items than {_shards(most)} ({detail}: a picks table "
            "rewritten or re-sorted between the shard tasks?), so the split would lose or repeat "
            f"items; rerun {_shards(odd)} with the inputs the others read (remove its files "
            "first), or rerun every shard",
        )
    for (key_a, a), (key_b, b) in itertools.pairwise(have):
        changed = changed_files(a, b)
        if changed:
            raise InputError(
                changed[0],
                f"changed between shard {key_a[0]} and shard {key_b[0]} (size or modification time), "
                "so the shards classified different data under one name; rerun the shards that "
                "read the old file (remove their files first)",
            )
    return len(have) == len(manifests)


def _refuse_spelled_apart(
    manifests: list[dict], keys: list[tuple[int, int]], most: list[int], odd: list[int], where: Path
) -> None:
    """Shards that planned other items because their inputs were written otherwise (``stack.mrcs``
    and ``$PWD/stack.mrcs``: other ids), refused for that cause, not as a table re-sorted."""
    by_shard = {key[0]: m for key, m in zip(keys, manifests, strict=True)}
    pairs = spelled_apart(by_shard[most[0]], by_shard[odd[0]])
    if not pairs:
        return
    raise InputError(
        where,
        f"{_shards(odd)} {'was' if len(odd) == 1 else 'were'} given the inputs written otherwise than "
        f"{_shards(most)}: {spelling_text(pairs, f'shard {odd[0]}')}; ids are built from the inputs as "
        f"written, so the shards planned other items; rerun {_shards(odd)} with the inputs written as "
        "the others' (remove its files first), or rerun every shard",
    )


def _shards(numbers: list[int]) -> str:
    """``shard 1`` or ``shards 1, 3``."""
    return ("shard " if len(numbers) == 1 else "shards ") + ", ".join(map(str, numbers))


def _short(value: Any, limit: int = 120) -> str:
    if value is None:
        return "(not given)"
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _replan_note(inputs: list[Any], tomograms: Any, where: str | None, recorded: bool) -> str:
    """What merge read besides the shard files, in one note: the inputs (and tomograms) the shard
    manifests name, from which folder.

    Why: the manifests are data (shards are often copied from a cluster, or received), and merge
    reads the files they name, relative ones from the folder they say the shards ran in; the blocks
    of those STAR files go into the merged predictions.star. Reading them gives the merged rows the
    inputs' order and keeps the input tables' blocks, so it stays, but said: a manifest naming files
    the user did not classify shows here instead of passing unseen."""
    from cryoshift.runtime.picks import _list

    if where is None:  # merge's folder was deleted under it, and the shards' is not here
        relative = (
            "relative names from no folder (merge's own was deleted and the one the shard manifests "
            "name is not there)"
        )
    elif recorded:
        relative = f"relative names from {where} (the folder the shard manifests say the shards ran in)"
    else:
        relative = (
            f"relative names from {where} (merge's own folder: the one the shard manifests name is not there)"
        )
    tomos = [str(t) for t in tomograms] if isinstance(tomograms, list) else []
    read = f"inputs {_list([str(t) for t in inputs], limit=5)}" + (
        f" and tomograms {_list(tomos, limit=5)}" if tomos else ""
    )
    return (
        f"merge re-read the {read} named in the shard manifests, {relative}, "
        "so the merged rows follow the inputs and predictions.star keeps their STAR tables' other blocks"
    )


def _shards_plan(
    first: dict[str, Any], settings: dict[str, Any], notes: list[str], n: int, shards_dir: Path
) -> tuple[Any, _PlanIds | None, bool]:
    """The shards' inputs planned again (headers only), so predictions.star keeps the input tables'
    blocks and columns and the merged rows follow the inputs' order; the ids of that plan as the
    shards split it (:class:`_PlanIds`); and whether its fingerprint is the one the shards
    recorded (their plan, so every row can be held to it). Just the facts of the manifest, None
    and False when the inputs cannot be read here. Planned with the shards' own settings
    (``--ignore-voxel-size`` too: an input refused for its voxel size was one error row there,
    under its own name), so the ids are the ones the shards wrote; and with the shards' output
    folder ``shards_dir`` (resolved before the chdir) as theirs, which a glob input leaves out as
    each shard left its own out (sources.paths.expand_input)."""
    from cryoshift.runtime.run import distinct, plan_fingerprint
    from cryoshift.runtime.sources import Plan, plan_inputs

    data, model = first["data"], first["model"]
    plan = Plan([], list(first["inputs"]), data["box_size"], data["contrast"], data["voxel_sizes"])
    # the shards' relative paths are relative to where they ran, not to where merge runs
    recorded = settings.get("working_directory")
    where = recorded if isinstance(recorded, str) and recorded and Path(recorded).is_dir() else _cwd()
    notes.append(_replan_note(plan.inputs, settings.get("tomograms"), where, where == recorded))
    try:
        with _working_in(where):
            replanned = plan_inputs(
                plan.inputs,
                model["box_size"],
                model["voxel_size"],
                model["contrast"],
                settings.get("contrast"),
                settings.get("tomograms"),
                bool(settings.get("ignore_voxel_size")),
                coordinate_pixel_size=settings.get("coordinate_pixel_size"),
                binning=settings.get("binning"),
                own_output=shards_dir,
            )
            split = distinct(replanned)[0].items  # what the shards split (files compared from here)
            fingerprint = plan_fingerprint(split)
    except (InputError, OSError):
        notes.append("input tables not readable here: predictions.star has the plain columns")
        return plan, None, False
    plan_ids = _PlanIds(split, n)
    theirs = same_plan(planned(first), fingerprint)
    if not theirs and planned(first) is not None:
        notes.append(
            "the inputs read here plan other items than the shards did (changed since they ran?): "
            "their rows were not checked against the plan"
        )
    # the STAR writer reads the input tables again, from merge's own directory
    replanned.origins = [(os.path.join(where or "", path), ids) for path, ids in replanned.origins]
    return replanned, plan_ids, theirs


def _refuse_relative_without_cwd(paths: list[Path]) -> None:
    """A relative path given while the current directory was deleted names nothing: refused in the
    CLI's words (errors.CWD_GONE), not as "no such folder" for a folder that may well exist."""
    relative = next((p for p in paths if not p.is_absolute()), None)
    if relative is not None and _cwd() is None:
        raise InputError(relative, CWD_GONE)


def _cwd() -> str | None:
    """The current directory, None when it was deleted under this process (merge run there with
    absolute paths: the shards' absolute inputs are still read, relative ones are not)."""
    try:
        return os.getcwd()
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def _working_in(where: str | None) -> Iterator[None]:
    """Run the block in the folder ``where`` (None: where it is), then come back.

    Why not ``contextlib.chdir``: it saves the current directory by name (``os.getcwd()``), which
    fails when that folder was deleted under the shell, so merge run there with absolute paths
    lost the input tables' blocks in predictions.star. A handle on the current directory
    (``os.fchdir``) comes back to it, deleted or not."""
    if where is None:
        yield
        return
    if not hasattr(os, "fchdir"):  # no handle on a folder (Windows, where a cwd cannot be deleted)
        with contextlib.chdir(where):
            yield
        return
    here = os.open(".", os.O_RDONLY)
    try:
        os.chdir(where)
        yield
    finally:
        os.fchdir(here)
        os.close(here)
