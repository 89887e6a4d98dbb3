"""Append-only CSV ledgers that survive ``kill -9``.

The results CSV *is* the resume ledger: every finished batch is appended, flushed and
fsync'ed before the next one is written, so after a crash the file holds whole batches plus
at most one partial last line. On resume the partial line is cut off, the ids already present
are read back (:func:`written_ids`, once: resume's checks read them before the files are opened
and hand them on), and the run skips exactly those, so every input appears once, none lost and
none duplicated. A resumed run ends by sorting the rows into the plan's order
(:meth:`RunLedgers.put_in_order`): what it appended (items tried again, or left by the killed run)
takes the place an uninterrupted run gives it. Bad items go to a second ledger (the errors
table) with the same rules.

Every line is UTF-8 text. A file name that is not (Python hands its bytes over as lone
surrogates) is written with those bytes as backslash escapes (:func:`escape_text`: ``b\\xff.mrc``),
and ids are compared in that written form, so such an item is classified, resumed and merged as
any other. A name holding a line break (``\\r`` or ``\\n``, which Linux allows) is quoted
(:func:`csv_line`), and a row is whole only where its quotes are closed: a kill inside such a name
leaves a partial row that resume cuts, as a partial line.

A ledger is written in place, so it is opened without following a link (runtime/outfiles.py): a
link at its name in the output folder (``errors.csv -> ~/.ssh/authorized_keys``) is refused, in a
new run as on ``--resume``, and its target never written. A rewrite (:meth:`Ledger.drop`) goes
through a new temporary file put in its place.
"""

from __future__ import annotations

import csv
import hashlib
import io
import mmap
import os
from array import array
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from cryoshift.runtime.errors import InputError, writing_error
from cryoshift.runtime.outfiles import open_in_place, refuse_link, replacing

ID_COLUMN = "id"  # every ledger's first column
ERROR_COLUMNS = (ID_COLUMN, "path", "reason")


# What a verb that stopped part way (a full disk) says: its finished work is on disk (classify's
# fsync'd ledgers, train's checkpoints) and ``--resume`` goes on from it.
RESUME_HINT = "rerun with --resume to continue"


def format_value(value: object) -> str:
    """CSV cell text in the results-table conventions (floats to 9 significant digits, NaN as
    ``nan``, booleans as 0/1), so the final rewrite by ``write_results`` changes nothing."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.9g}"
    return str(value)


def escape_text(text: str) -> str:
    """``text`` as a ledger writes it: unchanged when it is UTF-8 encodable, else every byte that a
    non-UTF-8 file name smuggled in (surrogateescape, as ``os.listdir`` decodes it) as ``\\xNN``
    and any other lone surrogate as ``\\udNNN``: the line stays text that pandas, the STAR writer
    and ``merge`` read, where the raw surrogate could not be written at all."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # surrogates that stand for no byte (U+D800..U+DC7F)
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


class WrittenIds(set[str]):
    """Ids as a ledger wrote them, asked with the ids of items: an item's id is looked up by its
    written text (:func:`escape_text`), so an item with a non-UTF-8 name counts as done on resume."""

    def __contains__(self, ident: object) -> bool:
        return set.__contains__(self, escape_text(ident) if isinstance(ident, str) else ident)


def csv_line(cells: Iterable[str]) -> str:
    """One CSV row as the ledgers write it: ended by ``\\n``, a cell quoted when it holds a comma, a
    quote, ``\\n`` or ``\\r``.

    Why not ``csv.writer(lineterminator="\\n")``: before Python 3.12 that writer quotes only the
    characters of its line terminator, so a file name holding a bare ``\\r`` was written unquoted,
    and every reader (the csv module's, pandas') ended the row there: ``classify`` failed after its
    last batch with a traceback, and ``--resume`` read a row that is no item's. Written with the
    terminator ``\\r\\n`` both characters are quoted, then ``\\n`` alone ends the line."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerow(cells)
    return buf.getvalue()[:-2] + "\n"


def frame_csv_text(frame: Any, **to_csv_options: Any) -> str:
    """A pandas DataFrame as CSV text by :func:`csv_line`'s rule (``\\n`` ends a row; a cell holding a
    comma, a quote, ``\\n`` or ``\\r`` is quoted), every value as ``DataFrame.to_csv`` formats it
    with ``to_csv_options``.

    Why: pandas writes through Python's csv writer, with the same flaw as ``csv.writer`` (see
    :func:`csv_line`): a bare ``\\r`` in a file name was written unquoted and split its row for
    every reader. Only a frame holding a ``\\r`` takes the slower way (written with ``\\r\\n``,
    read back by the csv module, each row through :func:`csv_line`)."""
    text = frame.to_csv(lineterminator="\n", **to_csv_options)
    if "\r" not in text:
        return text
    whole = frame.to_csv(lineterminator="\r\n", **to_csv_options)
    return "".join(csv_line(row) for row in csv.reader(io.StringIO(whole, newline="")))


def _repair_tail(path: Path) -> int:
    """Truncate a partial last row (a write killed mid-row); returns bytes removed."""
    size = path.stat().st_size
    if size == 0:
        return 0
    with open_in_place(path, "r+b") as fh:
        keep = _end_of_whole_rows(fh, size)
        if keep == size:
            return 0
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
    return size - keep


def _after_last_newline(fh: IO[bytes], pos: int) -> int:
    """The offset after the last b"\\n" in the first ``pos`` bytes of ``fh`` (0: none), found
    walking back in blocks."""
    block = 65536
    while pos > 0:
        start = max(0, pos - block)
        fh.seek(start)
        nl = fh.read(pos - start).rfind(b"\n")
        if nl >= 0:
            return start + nl + 1
        pos = start
    return 0


def _quotes(fh: IO[bytes], start: int, end: int) -> int:
    """How many b'"' bytes ``fh`` holds in [start, end)."""
    fh.seek(start)
    count, left = 0, end - start
    while left > 0:
        chunk = fh.read(min(left, 1 << 20))
        if not chunk:
            break
        count += chunk.count(b'"')
        left -= len(chunk)
    return count


def _end_of_whole_rows(fh: IO[bytes], size: int) -> int:
    """The offset after the last whole row of a ledger of ``size`` bytes: after its last line break
    that lies outside quotes (an even number of quotes before it, as :func:`csv_line` writes).

    Why not simply the last line break: a name holding one is quoted over two lines, and a kill
    mid-row could leave the file ending just after the break inside the quotes; that line was taken
    for a whole row, ``--resume`` read its cut name as an id the inputs do not plan and refused to
    go on (and a row appended after it would have continued the open quote)."""
    end = _after_last_newline(fh, size)
    if _quotes(fh, 0, end) % 2 == 0:  # the usual case: one pass counting quotes, in C
        return end
    while end > 0:  # inside a quoted name: back line by line until the quotes before are even
        before = _after_last_newline(fh, end - 1)
        odd = _quotes(fh, before, end) % 2
        end = before
        if odd:
            return end
    return end


_START_OVER = (
    "cannot resume from it: move it (and the run's other files) away, or classify without --resume "
    "into a new output directory"
)


def looks_utf16(head: bytes) -> bool:
    """Whether the first bytes of a file are UTF-16 text (a Windows editor's "Unicode"): a byte
    order mark, then mostly ASCII once decoded (random bytes may start with a mark too)."""
    if not head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return False
    codec = "utf-16-le" if head.startswith(b"\xff\xfe") else "utf-16-be"
    body = head[2 : 2 + (len(head) - 2) // 2 * 2].decode(codec, errors="replace")
    return bool(body) and sum(ch < "\x80" for ch in body) >= 0.9 * len(body)


def csv_damage(path: Path, exc: UnicodeDecodeError | csv.Error) -> str:
    """Why a CSV could not be read, in words that point at the damaged line: the codec's own offset
    counts from a buffered chunk, not from the start of the file, so the line is found again here."""
    if isinstance(exc, csv.Error):
        return f"damaged: not a readable CSV ({exc})"
    with open(path, "rb") as fh:
        if looks_utf16(fh.read(4096)):
            return "the file is UTF-16 text; save it as UTF-8"
        fh.seek(0)  # rows end in newlines, so no UTF-8 character spans two lines
        for number, raw in enumerate(fh, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as bad:
                return f"damaged: line {number} is not UTF-8 text (byte 0x{raw[bad.start]:02x})"
    return f"damaged: not UTF-8 text ({exc.reason})"


def checked_rows(
    path: Path, width: int | None = None, *, delimiter: str = ",", encoding: str = "utf-8", advice: str = ""
) -> Iterator[tuple[int, list[str]]]:
    """(line, fields) of every non-empty row of a CSV, the header first, each later row checked to
    have ``width`` fields (default: the header's). A cut-off or damaged row, or bytes that are not
    text, is refused in one line naming the file and the line (``advice`` appended): pandas would
    fill a short row with NaN and go on."""
    tail = f"; {advice}" if advice else ""
    try:
        with open(path, newline="", encoding=encoding) as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            header = next(reader, None)
            if header is None:
                return
            yield reader.line_num, header
            width = len(header) if width is None else width
            for row in reader:
                if not row:
                    continue
                if len(row) != width:
                    raise InputError(
                        path,
                        f"line {reader.line_num} has {len(row)} fields for {width} columns "
                        f"(a cut-off or damaged row){tail}",
                    )
                yield reader.line_num, row
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(path, f"{csv_damage(path, exc)}{tail}") from exc


def _read_ledger(path: Path, offsets: bool = False) -> tuple[list[str] | None, list[str], array]:
    """The one parser of a ledger file: its header (None for an empty file), the ids of its whole
    data rows in file order, and (``offsets``) the byte offset where each data row starts, then one
    more (the end of the last). A partial last row (a kill mid-write: a partial last line, or lines
    that end inside a quoted name, see :func:`_end_of_whole_rows`) is left out.

    Read as bytes and split at b"\\n" only, each line decoded as UTF-8: a row may span lines (a name
    holding a line break is quoted), so offsets are taken where the csv reader ends a row; a text
    reader would also end a line at a quoted lone "\\r". Damage raises UnicodeDecodeError or
    csv.Error, a failed read OSError: the callers say what they mean."""
    ends = array("q", [0])  # byte offset after each whole line read

    def whole_lines(fh: Iterable[bytes]) -> Iterator[str]:
        held: list[bytes] = []  # lines of a row whose quoted name holds a line break, until it ends
        quotes = 0
        for raw in fh:
            if not raw.endswith(b"\n"):
                return  # a partial last line: no row (opening the ledger cuts it)
            quotes += raw.count(b'"')
            held.append(raw)
            if quotes % 2:
                continue  # the line break is inside quotes: the row goes on
            for line in held:
                if offsets:
                    ends.append(ends[-1] + len(line))
                yield line.decode("utf-8")
            held.clear()
        # lines still held: a row cut inside its quoted name (a kill mid-row); no row either

    ids: list[str] = []
    starts = array("q")
    with open(path, "rb") as fh:
        reader = csv.reader(whole_lines(fh))
        header = next(reader, None)
        if not offsets:
            return header, [row[0] for row in reader if row], starts
        starts.append(ends[reader.line_num])
        for row in reader:
            if row:
                ids.append(row[0])
                starts.append(ends[reader.line_num])
            else:  # an empty line: not a row, the next one starts after it
                starts[-1] = ends[reader.line_num]
    return header, ids, starts


def written_ids(path: Path, strict: bool = False) -> list[str] | None:
    """The ids (as written) of a ledger's whole data rows, in file order (:func:`_read_ledger`). A
    partial last line (a kill mid-write, which opening the ledger cuts) is left out, and the file is
    not changed; an absent file has none. A file that cannot be read is refused in one line naming
    the damage (``strict``), or else gives None, as does a file whose first line is no ledger's
    header: resume's checks, which read the ledgers before they are opened, leave those to
    :class:`Ledger`, which checks the header first (a foreign file is named so, not as rows of ids
    the inputs do not plan)."""
    if not path.is_file():
        return []
    try:
        header, ids, _ = _read_ledger(path)
    except OSError:
        if strict:
            raise
        return None
    except (UnicodeDecodeError, csv.Error) as exc:
        if not strict:
            return None
        raise InputError(path, f"{csv_damage(path, exc)}; {_START_OVER}") from exc
    if not strict and header is not None and header[:1] != [ID_COLUMN]:
        return None  # no ledger's header: the Ledger names the file a foreign one
    return ids


def _ids_and_offsets(path: Path) -> tuple[list[str], np.ndarray]:
    """The ids of a ledger's data rows in file order, and the byte offset where each row starts
    (one more: the end of the last), for :meth:`Ledger.sort_rows` (:func:`_read_ledger`)."""
    try:
        _, ids, starts = _read_ledger(path, offsets=True)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(path, f"{csv_damage(path, exc)}; {_START_OVER}") from exc
    return ids, np.frombuffer(starts, dtype=np.int64)


_SORT_CHUNK = 1 << 16  # rows copied per step of sort_file_rows


def sort_file_rows(path: Path, starts: np.ndarray, keys: np.ndarray) -> np.ndarray | None:
    """Rewrite the CSV file ``path`` with its data rows sorted by ``keys`` (stable); returns the
    permutation (new row j is old row ``perm[j]``), or None when the rows already are in order
    (the file is then left untouched). ``starts``: the byte offset where each data row starts,
    then one more (the end of the last); the bytes before the first row (the header) are kept.

    Why one helper: a resumed run's ledgers (:meth:`Ledger.sort_rows`) and merged shard tables
    (runtime/merge.py) are put in the plan's order the same way. Durable: the sorted copy goes to
    a new random temporary file (not a fixed NAME.sorted a link could be planted at) put in place
    once the source is closed, so a kill leaves the old table or the sorted one. Memory: a key and
    a byte offset per row and the permutation; the rows are copied from a memory map of the file,
    never held. The caller closes any handle it holds on ``path`` first (Windows renames no open
    file)."""
    if len(keys) < 2 or bool(np.all(keys[1:] >= keys[:-1])):
        return None
    perm = np.argsort(keys, kind="stable")
    with (
        replacing(path, "wb") as dst,
        open(path, "rb") as src,
        mmap.mmap(src.fileno(), 0, access=mmap.ACCESS_READ) as mm,
    ):
        dst.write(mm[: int(starts[0])])  # the header
        for s in range(0, len(perm), _SORT_CHUNK):
            chunk = perm[s : s + _SORT_CHUNK]
            for a, b in zip(starts[chunk].tolist(), starts[chunk + 1].tolist(), strict=True):
                dst.write(mm[a:b])
    return perm


class Ledger:
    """One append-only CSV file with a fixed header and an ``id`` first column."""

    def __init__(
        self, path: str | Path, columns: Sequence[str], resume: bool = False, known: list[str] | None = None
    ):
        """``known``: the ids :func:`written_ids` read from the file before it was opened (resume's
        checks), so the file is not read twice; None: read here."""
        self.path = Path(path)
        self.columns = list(columns)
        self.done: set[str] = set()  # ids as written (see escape_text)
        self.rows = 0  # data rows in the file (resumed ones included)
        self.opened_ids: list[str] = []  # the ids of the rows found on opening, in file order
        self._old_rows = 0  # rows the file held before this run appended any (resumed, kept by drop)
        self._appended = False
        self.repaired_bytes = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        refuse_link(self.path)  # before the header is read or a partial line cut (open_in_place: race-free)
        exists = self.path.is_file() and self.path.stat().st_size > 0
        if exists and not resume:
            raise InputError(
                self.path,
                "already exists; pass --resume to continue that run, or choose a new output directory",
            )
        if exists:
            self._check_header()
            self.repaired_bytes = _repair_tail(self.path)
            self.done = self._read_ids(known)
        if not self.path.is_file() or self.path.stat().st_size == 0:
            with open_in_place(self.path, "w", newline="") as fh:
                fh.write(self._line(self.columns))
                fh.flush()
                os.fsync(fh.fileno())
        self._fh = open_in_place(self.path, "a", newline="")  # held open for the whole run

    def _line(self, values: Iterable[object]) -> str:
        """One CSV line (:func:`csv_line`), always UTF-8 encodable (escapes add no comma, quote or
        line break, so escaping the formatted line equals escaping each cell)."""
        return escape_text(csv_line([format_value(v) for v in values]))

    def _check_header(self) -> None:
        """Refuse a file whose first line is not this run's header before the repair cuts anything,
        so a damaged or foreign file is left as it was. A start of the header without its newline (a
        kill while the header was written) is left to the repair, which starts the file again."""
        with open(self.path, "rb") as fh:
            first = fh.readline(1 << 20)
        if not first.endswith(b"\n") and self._line(self.columns).encode().startswith(first):
            return
        try:
            header = next(csv.reader([first.decode("utf-8")]), [])
        except (UnicodeDecodeError, csv.Error) as exc:
            raise InputError(self.path, f"{csv_damage(self.path, exc)}; {_START_OVER}") from exc
        if header[:1] != self.columns[:1]:
            raise InputError(
                self.path, f"damaged or a foreign file: its first line is not a header; {_START_OVER}"
            )
        if header != self.columns:
            raise InputError(
                self.path, "was written with other columns (another model?); cannot resume into it"
            )

    def _read_ids(self, known: list[str] | None) -> set[str]:
        """The ids already in the file (its header checked before and its partial line cut): those
        ``known`` (:func:`written_ids` read them before the file was opened), else read now; one line
        naming the file when a later line is damaged, since resuming into it would lose or repeat
        items."""
        ids = known if known is not None else written_ids(self.path, strict=True)
        assert ids is not None
        self.rows = self._old_rows = len(ids)
        self.opened_ids = ids
        return set(ids)

    def ids_in_order(self) -> list[str]:
        """The ids of the data rows, in file order (as written: see escape_text)."""
        ids = written_ids(self.path, strict=True)
        assert ids is not None
        return ids

    def sort_rows(self, place: dict[str, int]) -> np.ndarray | None:
        """Rewrite the file with its data rows in the order of their ids' ``place`` (stable; an id
        without one goes last); returns the permutation (new row j is old row ``perm[j]``), or
        None when the rows already are in that order (the file is then left untouched).

        Why: a resume appends, so the rows of items tried again (``--retry-errors``) or left over
        by a killed run came after the rows written before them, and the table was not the one an
        uninterrupted run writes. Durable as :meth:`drop`: a new temporary file put in place, so a
        kill leaves the old table or the sorted one (:func:`sort_file_rows`)."""
        ids, starts = _ids_and_offsets(self.path)
        keys = np.fromiter((place.get(i, len(place)) for i in ids), dtype=np.int64, count=len(ids))
        if len(keys) < 2 or bool(np.all(keys[1:] >= keys[:-1])):
            return None
        self._fh.close()
        try:
            return sort_file_rows(self.path, starts, keys)
        finally:
            self._fh = open_in_place(self.path, "a", newline="")  # held open for the whole run

    def drop(self, ids: set[str]) -> None:
        """Remove the rows of ``ids`` (as written), durably: the file is rewritten beside itself and
        put in its place, so a kill leaves the old file or the new one, never half of either (a new
        temporary file: runtime/outfiles.py)."""
        self._fh.close()
        kept = 0
        try:
            with open(self.path, newline="") as src, replacing(self.path, "w", newline="") as dst:
                reader = csv.reader(src)
                dst.write(self._line(next(reader, self.columns)))
                for row in reader:
                    if row and row[0] not in ids:
                        dst.write(self._line(row))
                        kept += 1
        finally:  # a failure names the ledger, not the temporary file beside it (outfiles.replacing)
            self._fh = open_in_place(self.path, "a", newline="")  # held open for the whole run
        self.done -= ids
        self.rows = self._old_rows = kept

    @property
    def appended_to_old(self) -> bool:
        """Whether this run appended rows after rows already there (a resume): they may be out of
        the plan's order (:meth:`sort_rows`)."""
        return self._appended and self._old_rows > 0

    def append(self, rows: Sequence[Sequence[object]]) -> None:
        """Append rows (each starting with its id) durably: write, flush, fsync."""
        if not rows:
            return
        try:
            self._fh.write("".join(self._line(r) for r in rows))
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:  # disk full, quota, I/O error: say which file could not be written
            if exc.filename is None:
                raise writing_error(self.path, exc) from exc
            raise
        self.done.update(escape_text(str(r[0])) for r in rows)
        self.rows += len(rows)
        self._appended = True

    def close(self) -> None:
        """Close the file. Closing writes what a failed append left in the buffer, and may fail
        again (a full disk): named like an append's failure, never a bare "File too large"."""
        _close_naming(self._fh, self.path)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def row_order_path(features_file: Path) -> Path:
    """``features[.shard-i-of-n].rowids`` beside ``features[.shard-i-of-n].npy``."""
    return features_file.with_suffix(".rowids")


def _row_hashes(ids: Sequence[str]) -> bytes:
    return b"".join(hashlib.blake2b(i.encode(), digest_size=RowOrder.WIDTH).digest() for i in ids)


class RowOrder:
    """``features.rowids``: an 8-byte hash of each results row's id (as written), in the order the
    rows and their features were written; appended, fsync'ed, before the rows go into the CSV.

    Why: features.npy is paired with predictions.csv by position alone. A CSV re-sorted (in a
    spreadsheet) between a kill and ``--resume --features`` kept its rows, and the resumed run
    cut and appended features as if the order were the old one: rows paired with other rows'
    features, without a word. ``csv_ids`` are the CSV's ids in file order when the run starts;
    they must begin with the ids recorded here (the file may hold more: a batch killed before
    its rows reached the CSV, cut off here as in the features)."""

    WIDTH = 8

    def __init__(self, path: Path, csv_path: Path, csv_ids: list[str], resume: bool):
        self.path = path
        known = 0
        if resume and path.is_file():
            known = min(path.stat().st_size // self.WIDTH, len(csv_ids))
            with open(path, "rb") as fh:
                recorded = fh.read(known * self.WIDTH)
            _check_order(csv_path, path, recorded, csv_ids[:known])
        self._fh = open_in_place(path, "r+b" if known else "w+b")  # held open for the whole run
        self._fh.truncate(known * self.WIDTH)
        self._fh.seek(0, os.SEEK_END)
        # rows written before this file was (a run without --features, or an older cryoshift): as
        # they are now, so a later re-sort of them is found
        self.append(csv_ids[known:])

    def append(self, ids: Sequence[str]) -> None:
        """Record the ids of rows about to be appended to the CSV, durably."""
        if not ids:
            return
        try:
            self._fh.write(_row_hashes(ids))
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:
            raise writing_error(self.path, exc) from exc

    def close(self) -> None:
        _close_naming(self._fh, self.path)


def _check_order(csv_path: Path, order: Path, recorded: bytes, csv_ids: list[str]) -> None:
    """Refuse a CSV whose first rows are not, in order, those the features were written for."""
    now = _row_hashes(csv_ids)
    if now == recorded:
        return
    w = RowOrder.WIDTH
    row = next(k for k in range(len(csv_ids)) if now[k * w : (k + 1) * w] != recorded[k * w : (k + 1) * w])
    raise InputError(
        csv_path,
        f"data row {row + 1} ({csv_ids[row]}) is not the row whose features were written there: the "
        "rows were re-sorted or edited since the run was interrupted, and resuming would pair rows "
        f"with other rows' features; put the rows back in their order ({order.name} records it), or "
        "classify into a new output directory",
    )


class RunLedgers:
    """The ledgers of one classify run, appended together batch by batch: the results CSV, the
    errors CSV and, with ``features``, ``features.npy`` (runtime/features.py; each batch's
    features go first, so a kill between the two appends leaves rows the resume cuts off).

    ``names`` are the run's files (:func:`~cryoshift.runtime.summary.output_names`); ``notes``
    says what opening them found (a partial last line cut, rows without features).
    """

    def __init__(
        self,
        names: dict[str, Path],
        columns: Sequence[str],
        resume: bool = False,
        features: bool = False,
        feature_dim: int = 0,
        written: dict[str, list[str] | None] | None = None,
    ):
        """``written``: the ids of the ``csv`` and ``errors`` ledgers as :func:`written_ids` read
        them before (resume's checks): each file is then read once."""
        written = written or {}
        self.notes: list[str] = []
        self.features: Any = None
        self.order: RowOrder | None = None
        self._unanswered: tuple[Sequence[Any], Sequence[Any]] | None = None  # items, those without a row
        # every file the run appends to, checked before any is made: a link at errors.csv left a new
        # predictions.csv behind, and the next run was told that one "already exists"
        in_place = [names["csv"], names["errors"]]
        if features:
            from cryoshift.runtime.features import features_path

            in_place += [features_path(names["csv"]), row_order_path(features_path(names["csv"]))]
        for path in in_place:
            refuse_link(path)
        self.results = Ledger(names["csv"], columns, resume, written.get("csv"))
        try:
            self.errors = Ledger(names["errors"], ERROR_COLUMNS, resume, written.get("errors"))
        except BaseException:
            self.results.close()
            raise
        if self.results.repaired_bytes or self.errors.repaired_bytes:
            self.notes.append("cut a partial last line left by the interrupted run")
        if features:  # cut back to (or padded to) the rows the CSV holds, then appended with them
            from cryoshift.runtime.features import FeatureLedger, features_path

            try:
                path = features_path(names["csv"])
                ordered = self.results.opened_ids
                self.order = RowOrder(row_order_path(path), names["csv"], ordered, resume)
                self.features = FeatureLedger(path, self.results.rows, resume, feature_dim)
            except BaseException:
                self.close()
                raise
            self.notes.extend(self.features.notes)
        self.results.opened_ids = self.errors.opened_ids = []  # read: not kept for the whole run

    def put_in_order(self, items: Sequence[Any]) -> None:
        """Sort both tables' rows into the order of ``items`` (the run's plan), the order an
        uninterrupted run writes them, with the features (and their row record) of the rows; for
        the end of a resumed run, after its last batch (the ledgers are not appended to again).

        Why: a resume appends, so the rows of items tried again (``--retry-errors``), or left over
        by the killed run, came last in predictions.csv and predictions.star: two runs of the same
        inputs differed, and rows paired with picks by position were paired wrongly. Each file is
        sorted only when the run appended to rows already there (else it already is in order).
        Each file is a new temporary file put in place; the CSV first, the features then and their
        row record last, so a kill between them leaves a row record the CSV no longer follows,
        which the next ``--resume --features`` refuses, never features paired with other rows."""
        if not any(led.appended_to_old for led in (self.results, self.errors)):
            return
        place: dict[str, int] = {}
        for position, ident in enumerate(_ids(items)):
            place.setdefault(escape_text(ident), position)
        if self.errors.appended_to_old:
            self.errors.sort_rows(place)
        if not self.results.appended_to_old:
            return
        perm = self.results.sort_rows(place)
        if perm is None or (self.features is None and self.order is None):
            return
        from cryoshift.runtime.features import join_features

        if self.features is not None:
            self.features.close()  # its rows filled to the CSV's (NaN where none were kept)
            if self.features.rows == len(perm):
                join_features([(self.features.path, None)], self.features.path, order=perm)
            else:  # features of a width never learnt: they could not follow the rows, so none
                self.drop_features(
                    f"{self.features.path.name} removed: its {self.features.rows} rows could not be put "
                    f"in the order of the {len(perm)} results rows"
                )
        if self.order is not None:
            self.order.close()
            ids = self.results.ids_in_order()
            with replacing(self.order.path, "wb") as fh:
                for s in range(0, len(ids), _SORT_CHUNK):
                    fh.write(_row_hashes(ids[s : s + _SORT_CHUNK]))

    def todo(self, items: Sequence[Any]) -> Sequence[Any]:
        """``items`` whose ids neither ledger holds yet (compared as written: see escape_text)."""
        failed = self.errors.done - self.results.done
        if self._unanswered is not None and self._unanswered[0] is items:  # from failed_before
            left = self._unanswered[1]
            return _without(left, failed) if failed else left
        return _without(items, self.results.done | self.errors.done)

    def unanswered(self, items: Sequence[Any]) -> Sequence[Any]:
        """``items`` with neither a results row nor an error row now (unlike :meth:`todo`, never the
        list remembered before the run): after a run, what it failed to write."""
        return _without(items, self.results.done | self.errors.done)

    def failed_before(self, items: Sequence[Any]) -> set[str]:
        """The ids (as written) of ``items`` that have an error row and no results row: what a
        resume counts as done although it never gave an answer."""
        failed = self.errors.done - self.results.done
        if not failed:
            return set()
        left = _without(items, self.results.done)
        self._unanswered = (items, left)  # todo() goes on from here (each pass formats every id)
        return {ident for ident in map(escape_text, _ids(left)) if ident in failed}

    def retry(self, ids: set[str]) -> None:
        """Take the error rows of ``ids`` out of the errors ledger, so :meth:`todo` gives their items
        again (``classify --resume --retry-errors``).

        Why: a resume counted earlier failures as done, so after fixing their cause (a tomogram
        found, a file repaired) it classified nothing. Removed first, durably: a kill before they
        are retried leaves them to the next resume, and an item is never both a row and an error
        (one that fails again gets a new error row)."""
        if ids:
            self.errors.drop(ids)

    def has(self, ident: str) -> bool:
        """Whether either ledger holds ``ident`` (an item's id, or one read back from a ledger)."""
        ident = escape_text(ident)
        return ident in self.results.done or ident in self.errors.done

    def append(
        self, rows: Sequence[Sequence[object]], errors: Sequence[Sequence[object]], features: Any = None
    ) -> None:
        """One batch: its features (when kept), then its rows, then its error rows; each durable."""
        if self.features is not None and features is not None:
            self.features.append(features)
        if self.order is not None:
            self.order.append([escape_text(str(r[0])) for r in rows])
        self.results.append(rows)
        self.errors.append(errors)

    def drop_features(self, reason: str) -> None:
        """Stop writing features and remove the file (it could no longer match the rows)."""
        if self.features is not None:
            self.features.close()
            self.features.path.unlink(missing_ok=True)
            self.features = None
            self.notes.append(reason)
        if self.order is not None:
            self.order.close()
            self.order.path.unlink(missing_ok=True)
            self.order = None

    def close(self) -> None:
        """Close every file, each even when another fails; the first failure is raised."""
        failed: list[BaseException] = []
        for ledger in (self.features, self.order, self.results, getattr(self, "errors", None)):
            if ledger is None:
                continue
            try:
                ledger.close()
            except OSError as exc:
                failed.append(exc)
        if failed:
            raise failed[0]

    def __enter__(self) -> RunLedgers:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        """Close; when the run already failed (a full disk mid-batch), a failure to close (the same
        disk, flushing the rest of the batch) is not raised over it: the first error names the file
        and its cause, the second said only "File too large", naming nothing."""
        try:
            self.close()
        except OSError:
            if exc_type is None:
                raise


def _close_naming(fh: IO[Any], path: Path) -> None:
    """Close ``fh`` (a ledger's file at ``path``); a failure to write its buffer names ``path``."""
    if fh.closed:
        return
    try:
        fh.close()
    except OSError as exc:
        raise writing_error(path, exc) from exc


def _without(items: Sequence[Any], done: set[str]) -> Sequence[Any]:
    """``items`` whose ids are not in ``done`` (ids as written: see escape_text)."""
    if any("\\" in ident for ident in done):  # escaped ids: look items up by their written text
        done = WrittenIds(done)
    return items.without(done) if hasattr(items, "without") else [it for it in items if it.id not in done]


def _ids(items: Sequence[Any]) -> Iterator[str]:
    """The ids of ``items`` in order; a pick table's formatted in batches, not item by item."""
    for segment in getattr(items, "segments", [items]):
        if hasattr(segment, "ids"):
            yield from segment.ids()
        else:
            yield from (it.id for it in segment)
