"""Streaming reads of pick tables: only the columns needed, as compact numpy arrays.

Why: a 10M-row picks STAR read whole through starfile/pandas took 4.7 GiB and minutes before
it ended in MemoryError, and planning kept one Python object per row on top. Here a STAR file
is scanned once in binary blocks for its ``data_`` blocks (byte ranges), the loop header of
the chosen block is read, and its rows go through pandas' C parser in chunks of
``CHUNK_ROWS`` with the same options starfile uses (so numbers parse to the same doubles),
keeping only the tomogram name and three coordinate columns. A CSV/TSV goes through
``pandas.read_csv(chunksize=...)`` the same way. The result, :class:`PickTable`, holds float64
coordinates, an int32 index into a small table of tomogram names, and the column names: memory
is ~28 bytes per row whatever else the table holds.
"""

from __future__ import annotations

import io
import re
import shlex
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryoshift.runtime.errors import InputError, missing_reason
from cryoshift.runtime.literal_paths import for_pandas

CHUNK_ROWS = 1 << 20
_BLOCK = 4 << 20
_DATA_LINE = re.compile(rb"(?m)^(?:\xef\xbb\xbf)?[ \t]*data_")  # a UTF-8 BOM may open the file
_EMPTY_LINE = re.compile(rb"(?m)^[ \t\r]*(?:#[^\n]*)?\n")
# A line that is only a STAR/CIF keyword cryoshift does not read (nor RELION or starfile): a save
# frame's ``save_NAME`` ... ``save_``, ``stop_`` (the end of a nested loop) or ``global_``. Keywords
# are case-insensitive; a row that merely starts with such a name ("save_01 10 10 10") is data.
_FRAME_LINE = re.compile(rb"(?mi)^(?:\xef\xbb\xbf)?[ \t]*(stop_|global_|save_[^\s#]*)[ \t\r]*(?:#[^\n]*)?$")


@dataclass
class StarBlock:
    """One ``data_`` block of a STAR file: its labels and where its rows lie (bytes)."""

    name: str
    labels: list[str] = field(default_factory=list)
    loop: bool = False
    data_start: int = 0  # first byte after the loop header
    end: int = 0  # first byte of the next block (or the file size)
    values: dict[str, Any] = field(default_factory=dict)  # key-value blocks

    def count_rows(self, path: Path) -> int:
        """Rows of a loop block (non-blank, non-comment lines), counted in binary blocks."""
        if not self.loop:
            return 1
        n = 0
        for chunk in _byte_range(path, self.data_start, self.end):
            n += chunk.count(b"\n") - len(_EMPTY_LINE.findall(chunk))
            tail = chunk[chunk.rfind(b"\n") + 1 :].strip()
            n += bool(tail) and not tail.startswith(b"#")
        return n


def _byte_range(path: Path, start: int, end: int) -> Iterator[bytes]:
    """Whole lines of ``path`` between byte offsets, in blocks of about 4 MiB."""
    with open(path, "rb") as fh:
        fh.seek(start)
        left, carry = end - start, b""
        while left > 0:
            block = fh.read(min(_BLOCK, left))
            if not block:
                break
            left -= len(block)
            block = carry + block
            cut = block.rfind(b"\n") + 1 if left > 0 else len(block)
            carry = block[cut:]
            if cut:
                yield block[:cut]
        if carry:
            yield carry


def scan_star(path: str | Path) -> list[StarBlock]:
    """The blocks of a STAR file, found without parsing its rows (memory independent of size).

    Follows starfile's reading: lines are stripped; a block starts at ``data_NAME``; ``loop_``
    then ``_label`` lines make a table whose rows run to the next ``data_`` line; ``_key value``
    lines make a key-value block.
    """
    from cryoshift.runtime.picks import NAME_LABELS, VERBATIM_LABELS, check_line_lengths

    path = Path(path)
    if not path.exists():
        raise InputError(path, missing_reason(path))
    if path.is_dir():
        raise InputError(path, "is a directory, expected a STAR file")
    check_line_lengths(path)
    size = path.stat().st_size
    loops: list[int] = []
    starts = _data_starts(path, size, loops)
    names = _block_names(path, starts)
    refuse_repeated_blocks(path, starts, names)
    blocks = []
    with open(path, "rb") as fh:
        for i, start in enumerate(starts):
            end = starts[i + 1] if i + 1 < len(starts) else size
            fh.seek(start)
            fh.readline()
            block = StarBlock(names[i], end=end)
            pos = fh.tell()
            while pos < end:  # header: blank and comment lines, loop_, labels, key-value lines
                raw = fh.readline()
                text = raw.decode("utf-8", "replace").strip()
                if block.loop:
                    # RELION reads a loop's labels past blank and comment lines (one after loop_
                    # gave "found no columns"); the first other line is the first row
                    if not text.startswith("_") and not (text == "" or text.startswith("#")):
                        break
                    if text.startswith("_"):
                        block.labels.append(text.split()[0][1:])
                elif text.startswith("loop_"):
                    block.loop = True
                elif text.startswith("_"):
                    try:
                        key, value = shlex.split(text)
                    except ValueError as exc:
                        raise InputError(
                            path, f"not a readable STAR file (ValueError: {exc}: {text[:80]!r})"
                        ) from exc
                    block.labels.append(key[1:])
                    # a name, as in loops: ``nan`` is a name, ``01`` is not 1
                    named = key[1:] in VERBATIM_LABELS or (key[1:] in NAME_LABELS and value in NA_TEXT)
                    block.values[key[1:]] = value if named else _numericise(value)
                elif block.labels and text and not text.startswith("#"):
                    pos = end  # a key-value block ends at its first other line (blank and
                    break  # comment lines between its pairs are skipped, as starfile does)
                pos += len(raw)
            block.data_start = min(pos, end)
            _refuse_second_loop(path, block, start, loops)
            if block.loop or block.labels:
                blocks.append(block)
    if not blocks:
        raise InputError(path, _why_no_blocks(path, has_data=bool(starts)))
    return blocks


_LOOP_LINE = re.compile(rb"(?m)^(?:\xef\xbb\xbf)?[ \t]*loop_[ \t\r]*(?:#[^\n]*)?$")


def _refuse_second_loop(path: Path, block: StarBlock, start: int, loops: list[int]) -> None:
    """Refuse a data block holding two ``loop_`` tables (``loops``: byte offsets of every
    ``loop_`` line of the file, sorted; ``start``: the block's ``data_`` line).

    Why: the rows of a loop run to the next ``data_`` line, so a second ``loop_`` and its labels
    became error rows and its rows were read with the first loop's column order (swapped axes,
    no word where the columns differ only in order). RELION, starfile and cryoshift read one
    table per block, so which columns the second one's rows have is not guessed."""
    inside = [o for o in loops if start <= o < block.end]
    if len(inside) < 2:
        return
    first, second = _lines_of(path, inside[:2])
    raise InputError(
        path,
        f"data_{block.name} holds two loop_ tables (lines {first} and {second}); a STAR block holds "
        f"one table: put the second in a data_ block of its own, or merge them under one loop_ header",
    )


def _why_no_blocks(path: Path, has_data: bool = False) -> str:
    """Why a file has no STAR data blocks, where the bytes tell: a UTF-16 file (a Windows editor's
    "Unicode") or one with classic-Mac CR-only line endings holds blocks no line-based reader finds,
    and "not a STAR file" sent the user looking at the content instead of the encoding. A table
    (``loop_``) without a ``data_`` line above it is said as such: the fix is one line."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    from cryoshift.runtime.ledger import looks_utf16

    if looks_utf16(head) or (b"\x00" in head and b"d\x00a\x00t\x00a\x00_" in head):
        return "no data blocks found: the file is UTF-16 text; save it as UTF-8"
    if b"\r" in head and b"\n" not in head and b"data_" in head:
        return "no data blocks found: lines end in CR only (classic Mac); convert the line endings to LF"
    if not has_data:
        offset = 0
        for chunk in _byte_range(path, 0, path.stat().st_size):
            loop = _LOOP_LINE.search(chunk)
            if loop:
                (line,) = _lines_of(path, [offset + loop.start()])
                return (
                    f"line {line}: loop_ without a data_ line above it (RELION and starfile need one); "
                    "add one (data_particles for picks, data_global for a tomograms.star)"
                )
            offset += len(chunk)
    return "no data blocks found; not a STAR file or the file is empty"


def _data_starts(path: Path, size: int, loops: list[int] | None = None) -> list[int]:
    """Byte offsets of the ``data_`` lines of a STAR file (one streaming pass), refusing a file
    with a save frame, ``stop_`` or ``global_`` (:func:`_refuse_keyword`) in the same pass; the
    offsets of its ``loop_`` lines are added to ``loops`` when given."""
    starts: list[int] = []
    offset = 0
    for chunk in _byte_range(path, 0, size):
        starts.extend(offset + m.start() for m in _DATA_LINE.finditer(chunk))
        if loops is not None:
            loops.extend(offset + m.start() for m in _LOOP_LINE.finditer(chunk))
        keyword = _FRAME_LINE.search(chunk)
        if keyword:
            _refuse_keyword(path, offset + keyword.start(), keyword.group(1).decode("ascii", "replace"))
        offset += len(chunk)
    return starts


def _refuse_keyword(path: Path, offset: int, keyword: str) -> None:
    """Refuse the whole file at its first line holding only a STAR keyword cryoshift does not read.

    Why: such a line was read as a row of the loop above it, so each became an errors row
    ("missing or non-numeric coordinates") and the rows of a save frame counted as the block's;
    no reader of picks (RELION, starfile) reads these either, so it is one refusal, not a guess.
    """
    (line,) = _lines_of(path, [offset])
    if keyword.lower() == "stop_":
        what = f"{keyword!r} (the STAR keyword that ends a nested loop)"
    elif keyword.lower() == "global_":
        what = f"{keyword!r} (a STAR global block)"
    else:
        what = f"{keyword!r} ({'closes' if keyword.lower() == 'save_' else 'opens'} a STAR save frame)"
    raise InputError(
        path,
        f"line {line}: {what} is STAR syntax cryoshift does not read (nor RELION or starfile); "
        "write the picks as a loop_ table in a data_ block, without save frames or stop_",
    )


def _block_names(path: Path, starts: list[int]) -> list[str]:
    """The name after ``data_`` on each line that starts a block."""
    names = []
    with open(path, "rb") as fh:
        for start in starts:
            fh.seek(start)
            first = fh.readline().decode("utf-8", "replace").lstrip("\ufeff").strip()
            names.append(first[5:])
    return names


def refuse_repeated_blocks(
    path: Path, starts: list[int] | None = None, names: list[str] | None = None
) -> None:
    """Refuse a STAR file in which two ``data_`` blocks share a name, naming their lines.

    Why: ``cat a.star b.star > all.star`` repeats ``data_particles``; starfile keeps the last
    block of a name and the streaming reader the first, so half the picks vanished without a
    word. Which one is meant (or both) is the user's call: merge them into one block.
    """
    path = Path(path)
    if starts is None:
        starts = _data_starts(path, path.stat().st_size)
    if names is None:
        names = _block_names(path, starts)
    first: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in first:
            a, b = _lines_of(path, [starts[first[name]], starts[i]])
            raise InputError(
                path,
                f"two data blocks are named {name!r} (data_{name} at lines {a} and {b}); "
                "merge them into one block (one loop_ header) or keep one",
            )
        first[name] = i


def _lines_of(path: Path, offsets: list[int]) -> list[int]:
    """1-based line numbers of byte ``offsets`` (sorted) in ``path``."""
    out, line, pos = [], 1, 0
    todo = list(offsets)
    for chunk in _byte_range(path, 0, max(offsets) + 1):
        while todo and todo[0] < pos + len(chunk):
            out.append(line + chunk.count(b"\n", 0, todo.pop(0) - pos))
        line += chunk.count(b"\n")
        pos += len(chunk)
    return out


def pick_block(path: Path, names: list[str], what: str) -> str:
    """The one block to read among ``names`` (those holding ``what``): ``particles`` if present.

    Several others and no ``particles`` would be a guess that may classify the wrong picks,
    so it is refused, naming them.
    """
    if "particles" in names or len(names) == 1:
        return "particles" if "particles" in names else names[0]
    shown = ", ".join(f"data_{n}" for n in names)
    raise InputError(path, f"several blocks hold {what} ({shown}) and none is data_particles; keep one")


def _numericise(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


# A value in single quotes ('a b', as RELION may write) is read as the same value in double quotes,
# the only quotes pandas' parser knows, with the double quotes inside it doubled. Only a quote
# that opens a value (after a space or at the start of a line) and its partner before a space or
# the end of the line delimit; a quote inside a bare value (it's) is text. Inside a double-quoted
# value, "" is one " (pandas' rule) and '' one ' (how results._quote writes a ', so that starfile,
# which makes every ' a ", still splits the line right). starfile's rule means no name holding a
# ' reads back through starfile in any form; through these readers it does.
_QUOTED = re.compile(rb"""(?m)(?<![^ \t\r\n])(?:"(?:[^"\n]|"")*"|'([^\n]*?)')(?=[ \t\r]|$)""")


def _single_to_double(match: re.Match[bytes]) -> bytes:
    inner = match.group(1)
    if inner is None:
        return match.group(0).replace(b"''", b"'")
    return b'"' + inner.replace(b'"', b'""') + b'"'


def star_quotes(data: bytes) -> bytes:
    """Whole lines of a STAR loop with single-quoted values made double-quoted (see _QUOTED)."""
    return _QUOTED.sub(_single_to_double, data) if b"'" in data else data


class _Slice(io.RawIOBase):
    """Bytes ``start..end`` of a file as a stream, whole lines at a time, quoted values as
    pandas reads them (:func:`star_quotes`)."""

    def __init__(self, path: Path, start: int, end: int):
        self._blocks = _byte_range(path, start, end)  # its file closes with the generator
        self._data = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        while not len(self._data):
            block = next(self._blocks, None)
            if block is None:
                return 0
            self._data = memoryview(star_quotes(block))
        n = min(len(buf), len(self._data))
        buf[:n] = self._data[:n]
        self._data = self._data[n:]
        return n

    def close(self) -> None:
        self._blocks.close()
        super().close()


NA_TEXT = ("nan", "NaN", "<NA>")  # a missing value in a STAR loop, as starfile reads it


def _star_options(labels: list[str], text: tuple[str, ...]) -> dict[str, Any]:
    """pandas options for the rows of a loop block: starfile's, except that ``text`` columns are
    read as written (str, and ``nan``/``<NA>`` are names there, not missing values: a tomogram
    may be called that, and reading it as missing would give its picks to another)."""
    index = {label: i for i, label in enumerate(labels)}
    return {
        "delimiter": r"\s+",
        "header": None,
        "comment": "#",
        "names": list(range(len(labels))),
        "dtype": {index[c]: str for c in text},
        "keep_default_na": False,
        "na_values": {i: list(NA_TEXT) for i, label in enumerate(labels) if label not in text},
        "engine": "c",
    }


def _star_error(path: Path, exc: Exception) -> InputError:
    return InputError(path, f"not a readable STAR file ({type(exc).__name__}: {exc})")


def star_chunks(
    path: Path, block: StarBlock, columns: list[str], text: tuple[str, ...] = (), chunk_rows: int = CHUNK_ROWS
) -> Iterator[pd.DataFrame]:
    """The rows of a loop block in chunks, only ``columns`` (labels); ``text`` columns as written
    (str, see :func:`_star_options`)."""
    index = {label: i for i, label in enumerate(block.labels)}
    use = [index[c] for c in columns]
    if block.data_start >= block.end:
        return
    stream = io.BufferedReader(_Slice(path, block.data_start, block.end), 1 << 20)
    try:
        options = _star_options(block.labels, text)
        reader = pd.read_csv(stream, usecols=use, chunksize=chunk_rows, **options)
        for chunk in reader:
            chunk = chunk[use]
            chunk.columns = columns
            yield chunk
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise _star_error(path, exc) from exc
    finally:
        stream.close()


def read_loop(
    path: Path,
    block: StarBlock,
    text: tuple[str, ...] = (),
    verbatim: tuple[str, ...] = (),
    keep_long: bool = False,
) -> pd.DataFrame:
    """A whole loop block as starfile reads it (every column; a column of numbers made numbers),
    but the ``text`` columns are read as written (see :func:`_star_options`): one holding a name
    written ``nan`` or ``<NA>`` stays text. ``verbatim`` columns (of those) are never made
    numbers: a tomogram named ``01`` is not tomogram ``1``.

    A row with more fields than the block has labels is refused naming its line (pandas would
    otherwise take the first column as the index when every row has one too many), unless
    ``keep_long``: then its fields past the last label are dropped, for a caller that makes such
    rows error rows of their own (:func:`wrong_width_rows`; batch work goes on past one bad row).
    """
    labels = list(block.labels)
    empty = pd.DataFrame(np.zeros((0, len(labels))), columns=labels)  # starfile's empty loop
    if block.data_start >= block.end:
        return empty
    stream = io.BufferedReader(_Slice(path, block.data_start, block.end), 1 << 20)
    try:
        usecols = {"usecols": list(range(len(labels)))} if keep_long else {}
        df = pd.read_csv(stream, **_star_options(labels, text), **usecols)
    except pd.errors.EmptyDataError:
        return empty
    except pd.errors.ParserError as exc:
        raise _overlong_error(path, block) or _star_error(path, exc) from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise _star_error(path, exc) from exc
    finally:
        stream.close()
    if not isinstance(df.index, pd.RangeIndex):  # every row had too many fields
        raise _overlong_error(path, block) or InputError(path, "rows have more fields than labels")
    df.columns = labels
    for label in labels:  # starfile's numbers: a column that is all numbers (or missing) is numeric
        if pd.api.types.is_numeric_dtype(df[label]):
            continue
        if label in verbatim or (label in text and df[label].isin(NA_TEXT).any()):
            continue
        try:
            numbers = pd.to_numeric(df[label])
        except (ValueError, TypeError):
            continue
        if not numbers.isna().all():
            df[label] = numbers
    return df


def _overlong_error(path: Path, block: StarBlock) -> InputError | None:
    """The refusal of a loop block holding rows with more fields than labels (None if none)."""
    long = overlong_rows(path, len(block.labels), block)
    if not long:
        return None
    rows = np.fromiter(long, np.int64, len(long))
    return InputError(path, bad_rows_text(rows, data_row_lines(path, rows, block), long))


# ---------------------------------------------------------------------------------------------
# CSV / TSV


def nul_reason(head: str) -> str:
    """Why a table whose first characters ``head`` hold NUL bytes cannot be read, in words.

    UTF-16 text without a byte order mark is valid UTF-8 (ASCII with a NUL after or before every
    character), so it decoded, and its header was shown as ``t\x00o\x00m\x00o\x00`` in "no
    coordinate columns"; with a mark it is already said to be UTF-16 (ledger.csv_damage)."""
    pairs = head[: len(head) // 2 * 2]
    odd, even = pairs[1::2], pairs[0::2]
    if pairs and (odd.count("\x00") >= 0.9 * len(odd) or even.count("\x00") >= 0.9 * len(even)):
        return "the file looks like UTF-16 text (a NUL byte beside every character); save it as UTF-8"
    return "the file holds NUL bytes: not a text table (a binary file, or a damaged one?)"


def csv_options(path: Path) -> dict[str, Any]:
    """pandas options for a CSV/TSV/whitespace table; the separator is sniffed from the first
    line that is not blank (the header)."""
    import csv

    if not path.exists():
        raise InputError(path, missing_reason(path))
    if path.is_dir():
        raise InputError(path, "is a directory, expected a CSV/TSV file")
    try:
        with open(path, newline="") as fh:
            head = fh.read(8192)
    except UnicodeDecodeError as exc:
        from cryoshift.runtime.ledger import csv_damage

        raise InputError(path, csv_damage(path, exc)) from exc
    except OSError as exc:
        raise InputError(path, f"cannot read as text ({exc})") from exc
    if not head.strip():
        raise InputError(path, "file is empty")
    if "\x00" in head:
        raise InputError(path, nul_reason(head))
    from cryoshift.runtime.picks import check_line_lengths

    check_line_lengths(path)
    skipped, start = csv_header_start(path)
    # pandas skips blank lines too; lines as text splits them (a CR-only file's lines included)
    lines = (t for t in head.splitlines() if t.strip() and not t.lstrip("\ufeff").lstrip().startswith("#"))
    first = next(lines, "")
    if not first:  # comments longer than the head: the header line by its offset
        with open(path, "rb") as fh:
            fh.seek(start)
            first = fh.readline().decode("utf-8", "replace").lstrip("\ufeff").strip()
    if not first:
        raise InputError(path, "no header line: the file holds only blank lines and # comments")
    sep = "\t" if "\t" in first else "," if "," in first else ";" if ";" in first else r"\s+"
    refuse_numeric_header(path, first, sep, skipped + 1)
    refuse_duplicate_header(path, first, sep)
    # Semicolon tables come from spreadsheets in locales that write decimal commas (1,5).
    return {
        # Leading blank and ``#`` comment lines (a note of who picked, with what) are skipped:
        # the header is the first other line.
        "skiprows": skipped,
        "sep": sep,
        "engine": "python" if sep == r"\s+" else "c",
        "comment": None,
        "quoting": csv.QUOTE_MINIMAL,
        "skipinitialspace": True,
        "decimal": "," if sep == ";" else ".",
        # Rows with more fields than the header must not shift the columns: without this, pandas
        # takes the first column as the index when every row has one field too many.
        "index_col": False,
    }


def csv_header_start(path: Path) -> tuple[int, int]:
    """(lines before, byte offset of) the header of a CSV/TSV table: its first line that is neither
    blank nor a ``#`` comment (a UTF-8 BOM aside). Only the leading lines are read."""
    skipped = offset = 0
    with open(path, "rb") as fh:
        for raw in fh:
            text = raw.lstrip(b"\xef\xbb\xbf").strip() if not skipped else raw.strip()
            if text and not text.startswith(b"#"):
                break
            skipped += 1
            offset += len(raw)
    return skipped, offset


def header_names(first: str, sep: str) -> list[str]:
    """The column names of a CSV/TSV header line as written (quotes removed, spaces stripped)."""
    import csv

    if sep == r"\s+":
        return first.split()
    return [c.strip() for c in next(csv.reader([first], delimiter=sep, skipinitialspace=True), [])]


DYNAMO_SUFFIXES = (".tbl",)
READ_TABLES = (
    "cryoshift reads picks from STAR (rlnCoordinateX/Y/Z) or CSV/TSV with a header line naming "
    "x, y, z (and tomo)"
)


def refuse_numeric_header(path: Path, first: str, sep: str, line: int) -> None:
    """Refuse a table whose header line (line ``line``) holds only numbers: it has no column names.

    Why: its first row was read as the header, so a Dynamo ``.tbl`` (columns by position, many
    zeros) was refused as "duplicate column names: 1, 0", and another headerless table as having
    "no coordinate columns" found "10, 20, 30": neither said what is wrong or what is read."""
    names = [n.lstrip("\ufeff") for n in header_names(first, sep)]
    if not names or not all(is_number_text(n) for n in names):
        return
    if path.suffix.lower() in DYNAMO_SUFFIXES:
        raise InputError(
            path,
            f"a Dynamo table (.tbl, columns by position, no names) is not read; {READ_TABLES}: "
            "convert it first (x, y, z are Dynamo's columns 24-26 plus the shifts in 4-6; the "
            "tomogram, column 20)",
        )
    from cryoshift.runtime.picks import _list

    where = f"line {line}, the first after blank and # comment lines" if line > 1 else "line 1"
    imod = f"; {IMOD_POINTS_HINT}" if sep == r"\s+" and len(names) in (3, 4, 5) else ""
    raise InputError(
        path,
        f"the header line holds numbers, not column names: found {_list(names)} ({where}); "
        f"{READ_TABLES}{imod}",
    )


# IMOD's model format (bio3d.colorado.edu/imod/doc/binspec.html): coordinates run 0 to NX in X and
# 0 to NY in Y but -0.5 to NZ - 0.5 in Z, so voxel i's centre is i + 0.5 in X and Y and i in Z;
# cryoshift's x, y, z are voxel centres counted from 0. Not converted here: a headerless table
# of 3 to 5 numbers is not surely model2point's, so the user is told what to subtract.
IMOD_POINTS_HINT = (
    "an IMOD point file (model2point: x y z, or object and contour numbers before them) needs such "
    "a header too, and IMOD models put voxel i's centre at i + 0.5 in X and Y (at i in Z): "
    "subtract 0.5 from x and y (cryoshift's x, y, z are voxel centres counted from 0)"
)


def is_number_text(text: str) -> bool:
    """Whether a header field reads as a number (``1``, ``-0.5``, ``1e3``), not a column name."""
    try:
        float(text)
    except ValueError:
        return False
    return text.strip().lower() not in ("nan", "inf", "-inf", "+inf", "infinity", "-infinity")


def refuse_duplicate_header(path: Path, first: str, sep: str) -> None:
    """Refuse a CSV/TSV whose header names a column twice, as a STAR file with a repeated label is.

    Why: pandas renames the second ``x`` to ``x.1`` and the first was used without a word; which
    one holds the coordinates is a guess. Names equal but for case count as the same, since
    columns are found whatever their case (``X`` is ``x``). Empty names are left to pandas.
    """
    names = [n.lstrip("\ufeff") for n in header_names(first, sep)]
    seen: dict[str, str] = {}
    dup: list[str] = []
    for name in names:
        key = name.lower()
        if key and key in seen and name not in dup:
            dup.append(name if seen[key] == name else f"{seen[key]}/{name}")
        seen.setdefault(key, name)
    if dup:
        from cryoshift.runtime.picks import _list

        raise InputError(path, f"duplicate column names: {_list(dup)}")


def _csv_error(path: Path, exc: Exception) -> InputError:
    return InputError(path, f"not a readable table ({type(exc).__name__}: {exc})")


def csv_columns(path: Path, opts: dict[str, Any] | None = None) -> list[str]:
    """Column names of a CSV/TSV table (its header only); ``opts``: its :func:`csv_options`, when
    already known (each call of that function reads the whole file once)."""
    opts = opts or csv_options(path)
    try:
        return [str(c) for c in pd.read_csv(for_pandas(path), nrows=0, **opts).columns]
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise _csv_error(path, exc) from exc


def csv_chunks(
    path: Path,
    columns: list[str],
    text: tuple[str, ...] = (),
    chunk_rows: int = CHUNK_ROWS,
    opts: dict[str, Any] | None = None,
) -> Iterator[pd.DataFrame]:
    """The rows of a CSV/TSV table in chunks, only ``columns`` (header names as in the file);
    ``opts`` as in :func:`csv_columns`.

    Only an empty field is missing: a tomogram may be named ``NA`` or ``nan`` (the ``text``
    columns keep them as written), and in number columns such words become NaN anyway when
    the coordinates are converted (a row whose coordinates are not numbers)."""
    opts = opts or csv_options(path)
    try:
        reader = pd.read_csv(
            for_pandas(path),
            usecols=columns,
            dtype={c: str for c in text},
            chunksize=chunk_rows,
            keep_default_na=False,
            na_values=[""],
            **opts,
        )
        for chunk in reader:
            yield chunk[columns]
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise _csv_error(path, exc) from exc


# ---------------------------------------------------------------------------------------------
# Pick tables


@dataclass
class PickTable:
    """Picks as arrays: ``xyz`` (n, 3) float64 pixels (or Angstrom from the centre while
    ``centred`` and unconverted), ``tomo`` (n,) int32 into ``names`` ("" = not named)."""

    path: Path
    names: list[str]
    tomo: np.ndarray
    xyz: np.ndarray
    columns: list[str]  # every original column, in file order
    centred: bool = False
    blocks: list[tuple[str, int]] | None = None  # STAR: (block name, rows), for info
    # Rows (0-based, sorted) whose coordinates are not numbers, kept as rows so that each becomes
    # an error row of its own, and their 1-based file lines (-1 where unknown).
    bad_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    bad_lines: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    # Why each bad row fails, aligned with ``bad_rows``; "" = its coordinates are not numbers.
    bad_reasons: list[str] = field(default_factory=list)
    # (n, 3) rlnCenteredCoordinate*Angst where a table holds them besides pixel coordinates:
    # the planner checks that both say the same (never one taken silently).
    angst: np.ndarray | None = None
    # Columns asked for by name (read_pick_table's ``extra``), one value per row as written.
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    # Whether the table names its tomograms (some row has a name). A "" name of such a table is a
    # row left empty (a bad row, :func:`blank_name_rows`), not "the only tomogram given".
    named: bool = False
    # What the reader had to decide and the user should know (mixed decimal marks), one line each.
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tomo)

    @classmethod
    def from_frame(cls, path: str | Path, picks: pd.DataFrame, skip_bad_rows: bool = False) -> PickTable:
        """From :func:`~cryoshift.runtime.picks.read_picks`' DataFrame (``tomo_name``, ``x, y, z``);
        rows without numeric coordinates are refused, or kept as ``bad_rows`` if ``skip_bad_rows``."""
        codes, names = pd.factorize(picks["tomo_name"].astype(str), use_na_sentinel=False)
        xyz = picks[["x", "y", "z"]].to_numpy(dtype=np.float64)
        table = cls(
            Path(path), [str(n) for n in names], codes.astype(np.int32), xyz, list(map(str, picks.columns))
        )
        table.named = table.names != [""]
        table.mark_bad_rows(np.flatnonzero(~np.isfinite(xyz).all(axis=1)), skip_bad_rows)
        return table

    def mark_bad_rows(
        self,
        rows: np.ndarray,
        skip: bool,
        reasons: dict[int, str] | None = None,
        block: StarBlock | None = None,
    ) -> None:
        """Record the rows whose coordinates are not numbers (or, in ``reasons``, rows bad for
        another reason: too many fields), with their file lines (``block``: the STAR loop read).

        Unless ``skip`` (batch planning), any such row refuses the table; a table whose every row
        is bad is refused either way: nothing in it can be classified.
        """
        reasons = reasons or {}
        if reasons:
            rows = np.union1d(np.asarray(rows, np.int64), np.fromiter(reasons, np.int64, len(reasons)))
        if not len(rows):
            return
        lines = data_row_lines(self.path, rows, block)
        if not skip or len(rows) == len(self):
            raise InputError(self.path, bad_rows_text(rows, lines, reasons, every=len(rows) == len(self)))
        self.bad_rows = np.asarray(rows, dtype=np.int64)
        self.bad_lines = lines
        self.bad_reasons = [reasons.get(r, "") for r in self.bad_rows.tolist()]

    def counts(self) -> dict[str, int]:
        """Picks per tomogram name, in order of first appearance."""
        n = np.bincount(self.tomo, minlength=len(self.names))
        return {name: int(c) for name, c in zip(self.names, n, strict=True) if c}


def row_text(row: int, line: int) -> str:
    """``line 12`` (the file's line, 1-based) or, where it is unknown, ``data row 3`` (1-based)."""
    return f"line {line}" if line > 0 else f"data row {row + 1}"


def rows_text(rows: np.ndarray, lines: np.ndarray, limit: int = 5) -> str:
    """``lines 3, 9`` (file lines, 1-based) or ``data rows 2, 8`` where a line is unknown."""
    known = bool((lines[:limit] > 0).all())
    numbers = lines[:limit] if known else np.asarray(rows[:limit]) + 1
    word = ("line" if known else "data row") + ("s" if len(rows) > 1 else "")
    more = " ..." if len(rows) > limit else ""
    return f"{word} {', '.join(str(int(n)) for n in numbers)}{more}"


NOT_NUMBERS = "missing or non-numeric coordinates"  # why a bad row fails unless it says otherwise


def bad_row_reason(row: int, line: int, why: str = "") -> str:
    """The errors.csv reason of a bad pick row: ``why``, by default its coordinates are not numbers."""
    return f"{row_text(row, line)}: {why or NOT_NUMBERS} (row skipped)"


def bad_rows_text(rows: np.ndarray, lines: np.ndarray, reasons: dict[int, str], every: bool = False) -> str:
    """The one line that refuses a table for its bad ``rows`` (sorted, with their file ``lines``):
    how many, then each reason (``reasons[row]``, else :data:`NOT_NUMBERS`) with its lines, e.g.
    ``2 rows have missing or non-numeric coordinates (lines 3, 4); 6 fields where the header
    names 4 (line 9)``; ``every``: no row is good."""
    n = len(rows)
    head = "every row has" if every else "1 row has" if n == 1 else f"{n} rows have"
    groups: dict[str, list[int]] = {}
    for k, row in enumerate(np.asarray(rows).tolist()):
        groups.setdefault(reasons.get(row) or NOT_NUMBERS, []).append(k)
    parts = [f"{why} ({rows_text(rows[ks], lines[ks])})" for why, ks in groups.items()]
    return f"{head} " + "; ".join(parts)


def overlong_rows(
    path: Path, n_fields: int, block: StarBlock | None = None, sep: str | None = None
) -> dict[int, str]:
    """Data rows (0-based) of a table that hold more fields than its header names, with the
    reason (``6 fields where the header names 4``): the rows of the STAR loop ``block``, or of a
    CSV/TSV table whose separator (:func:`csv_options`) is ``sep``.

    Why: pandas drops fields past the header's last one without a word, so a row whose columns
    slipped (a missing separator earlier, a pasted extra value) was classified at whatever the
    first fields said. Rows with too few fields: :func:`wrong_width_rows` (pick tables and
    listings make both error rows). Counted with numpy over the bytes (whitespace runs or
    separators per line); lines holding a quote or a ``#`` are counted by the csv/shlex
    tokenisers instead. Streams in 4 MiB blocks.
    """
    return _width_rows(path, n_fields, block, sep, short=False)


def wrong_width_rows(
    path: Path, n_fields: int, block: StarBlock | None = None, sep: str | None = None
) -> dict[int, str]:
    """:func:`overlong_rows`, and the rows with fewer fields than the header names too.

    Why: a listing row one field short was taken silently (pandas fills the missing columns with
    NaN), and one field too many refused the whole listing; both are now error rows of their own,
    as in pick tables (rows of picks with too few fields already fail: their coordinates are
    missing)."""
    return _width_rows(path, n_fields, block, sep, short=True)


def _width_text(count: int, n_fields: int) -> str:
    return f"{count} field{'s' if count != 1 else ''} where the header names {n_fields}"


def _width_rows(
    path: Path, n_fields: int, block: StarBlock | None, sep: str | None, short: bool
) -> dict[int, str]:
    """Rows with more fields than ``n_fields`` (and, with ``short``, fewer): see overlong_rows."""
    star = block is not None
    if block is not None:
        start, end, split, header_left = block.data_start, block.end, None, 0
    elif sep is None:
        raise ValueError("overlong_rows needs the STAR block or the CSV separator")
    else:
        start, end, header_left = csv_header_start(path)[1], path.stat().st_size, 1
        split = None if sep == r"\s+" else sep.encode()
    out: dict[int, str] = {}
    row = 0
    for chunk in _byte_range(path, start, end):
        counts = _field_counts(chunk, split, star)
        if header_left:  # the CSV header: the first line after blank and # comment lines
            first = np.flatnonzero(counts)
            if not len(first):
                continue
            counts[: first[0] + 1] = 0
            header_left = 0
        row_of = row + np.cumsum(counts > 0) - 1
        wrong = (counts > n_fields) | ((counts > 0) & (counts < n_fields)) if short else counts > n_fields
        for k in np.flatnonzero(wrong).tolist():
            out[int(row_of[k])] = _width_text(int(counts[k]), n_fields)
        row += int(np.count_nonzero(counts))
    return out


_SPECIAL = np.zeros(256, bool)
_SPECIAL[[ord('"'), ord("'"), ord("#")]] = True
_SPACE = np.zeros(256, bool)
_SPACE[[9, 10, 11, 12, 13, 32]] = True


def _field_counts(chunk: bytes, sep: bytes | None, star: bool) -> np.ndarray:
    """Fields on each line of ``chunk`` (whole lines); 0 for a blank (or, in STAR, comment) line."""
    arr = np.frombuffer(chunk, np.uint8)
    newline = arr == 10
    n_lines = int(np.count_nonzero(newline)) + (not chunk.endswith(b"\n"))
    line = np.cumsum(newline, dtype=np.int32)
    line -= newline  # a line's newline belongs to it
    space = _SPACE[arr]
    starts = ~space
    starts[1:] &= space[:-1]  # a word starts where a non-space follows a space
    words = np.bincount(line[starts], minlength=n_lines)
    if sep is None:
        counts = words
    else:
        counts = np.bincount(line[arr == sep[0]], minlength=n_lines) + 1
        counts[words == 0] = 0
    special = _SPECIAL[arr]
    if special.any():
        bounds = np.concatenate([[-1], np.flatnonzero(newline), [len(chunk)]])
        for k in np.unique(line[special]).tolist():
            text = chunk[bounds[k] + 1 : bounds[k + 1]].decode("utf-8", "replace")
            counts[k] = _tokens(text, sep, star) if text.strip() else 0
    return counts


# A whitespace-separated field as pandas' C parser reads it (the STAR and whitespace-table readers):
# a double quote opens a quoted field only at the field's start ("" inside is one quote); one
# inside a word is a letter (quo"te); a # outside quotes starts a comment, mid-word too (ab#c: ab).
_WORD = re.compile(r'"(?:[^"]|"")*"(?=[\s#]|$)|[^\s#]+|#')


def _tokens(text: str, sep: bytes | None, star: bool) -> int:
    """Fields of one line holding quotes or ``#``, as the parsers split it. Why not shlex: it
    opened a quote in mid-word (``quo"te 1 2`` was one field), so a row of quoted names counted
    short and was made an error row of a well-formed table."""
    import csv

    if star or sep is None:  # a STAR's single quotes as its reader sees them (star_quotes)
        line = star_quotes(text.encode()).decode() if star else text
        count = 0
        for word in _WORD.findall(line):
            if word == "#":
                break
            count += 1
        return count
    return len(next(csv.reader([text], delimiter=sep.decode(), skipinitialspace=True), []))


def data_row_lines(path: Path, rows: np.ndarray, block: StarBlock | None = None) -> np.ndarray:
    """1-based file lines of the 0-based data ``rows`` of a pick or listing table (-1 if unknown).

    Rows are counted as the parsers count them: in a STAR loop, non-blank lines once a ``#``
    comment is cut off, from the end of the loop header of the block read (``block``, else the
    one the readers take); in a CSV/TSV, the non-blank lines after the header line. One
    streaming pass, only when a table has bad rows.
    """
    rows = np.asarray(rows, dtype=np.int64)
    out = np.full(len(rows), -1, dtype=np.int64)
    try:
        start, end, star = (block.data_start, block.end, True) if block is not None else _data_range(path)
        with open(path, "rb") as fh:
            line = fh.read(start).count(b"\n") + 1  # the line holding byte ``start``
            order = np.argsort(rows, kind="stable")
            want = rows[order].tolist()
            k = row = 0
            pos = start
            header_left = 0 if star else 1
            while k < len(want) and pos < end:
                raw = fh.readline()
                if not raw:
                    break
                pos += len(raw)
                text = raw.split(b"#", 1)[0] if star else raw
                if text.strip():
                    if header_left:
                        header_left -= 1
                    else:
                        while k < len(want) and want[k] == row:
                            out[order[k]] = line
                            k += 1
                        row += 1
                line += 1
    except (OSError, InputError):
        return out  # the rows are still named (data row N)
    return out


def _data_range(path: Path) -> tuple[int, int, bool]:
    """(first byte, end byte, is STAR) of the rows of the table the readers take from ``path``."""
    from cryoshift.runtime.picks import STAR_SUFFIXES

    if path.suffix.lower() not in STAR_SUFFIXES:
        return csv_header_start(path)[1], path.stat().st_size, False
    block = rows_block(path)
    return block.data_start, block.end, True


def rows_block(path: Path) -> StarBlock:
    """The block of a STAR file whose rows classify reads: the listing's (rlnImageName), else
    the block of picks (:func:`pick_layout`). Results and messages name rows of this block."""
    return _listing_block(path) if _is_listing_star(path) else pick_layout(path).block


def _is_listing_star(path: Path) -> bool:
    return any("rlnImageName" in b.labels for b in scan_star(path) if b.loop)


def _listing_block(path: Path) -> StarBlock:
    """The loop block :func:`~cryoshift.runtime.picks.read_particle_listing` reads."""
    blocks = [b for b in scan_star(path) if b.loop and "rlnImageName" in b.labels]
    name = pick_block(path, [b.name for b in blocks], "rlnImageName")
    return next(b for b in blocks if b.name == name)


def _name_strings(raw: list[Any]) -> list[str]:
    """Tomogram names exactly as written, but for whitespace around them; missing is "".

    Never numbers: ``001``, ``01`` and ``1e3`` are names (facilities and SerialEM/Warp number
    their tomograms). A column of such names used to be made numbers as starfile/pandas read it,
    so picks of ``01`` were cropped from ``1.mrc`` and ``001`` matched no file. A name written
    ``nan`` or ``<NA>`` is a name too (see _star_options)."""
    values = pd.Series(raw, dtype=object)
    missing = values.isna()
    return values.where(~missing, "").astype(str).str.strip().tolist()


def read_pick_table(
    path: str | Path,
    pixel_size: Any = None,
    tomo_shape: Any = None,
    convert: bool = True,
    skip_bad_rows: bool = False,
    unresolved: str = "refuse",
    extra: tuple[str, ...] = (),
    layout: _PickLayout | None = None,
    centre: Any = None,
) -> PickTable:
    """A pick table (STAR or CSV/TSV) as a :class:`PickTable`, read in chunks.

    The same columns, checks and messages as :func:`cryoshift.runtime.picks.read_picks`, which
    returns every column as a DataFrame; this keeps only the tomogram name and coordinates.
    RELION 5 centred Angstrom coordinates are converted with ``pixel_size`` and ``tomo_shape``
    (see :func:`~cryoshift.runtime.picks.centered_to_pixels`) unless ``convert`` is False;
    ``centre`` (per tomogram, (X, Y, Z) voxels, or None) is the point they are measured from
    where it is not the middle of ``tomo_shape`` (see :func:`_centred_to_pixels`);
    ``unresolved="skip"`` leaves NaN for a tomogram whose facts come back None (the caller
    knows why and fails those picks). Rows whose coordinates are not numbers refuse the table
    unless ``skip_bad_rows`` (batch work): then they are kept in ``bad_rows``, each to become an
    error row, and only a table of nothing but bad rows is refused. In batch work a row whose
    tomogram name is empty, in a table that names its tomograms, is such a row too
    (:func:`blank_name_rows`); read otherwise (``info``), its name is "" as written.

    ``extra`` columns (names as in ``layout.columns``) come along as written, one str per row, in
    ``table.extra`` (a Warp/M pixel size, a label): the same rows, read with the same checks.
    ``layout``: :func:`pick_layout`'s, when the caller already has it.
    """
    path = Path(path)
    if path.is_dir():
        entries = list(path.iterdir())
        raise InputError(
            path,
            "empty directory, expected a STAR/CSV file of picks"
            if not entries
            else "is a directory, expected a STAR/CSV file of picks",
        )
    layout = layout or pick_layout(path)
    # one counting pass: the test of each column against all those before it was quadratic, and a
    # STAR with 400,000 labels kept ``info`` busy for over ten minutes
    dup = sorted(c for c, n in Counter(layout.columns).items() if n > 1)
    if dup:
        from cryoshift.runtime.picks import _list

        raise InputError(path, f"duplicate column names: {_list(dup)}")
    rows = _gather_picks(_pick_chunks(path, layout, extra), layout, extra)
    if rows.n == 0:
        raise InputError(path, "no picks: the table has column names but no rows")
    marks_note = rows.marks.check(path) if rows.marks is not None else None
    blocks_info = layout.blocks_info
    if blocks_info is not None:
        blocks_info = [(name, rows.n if count < 0 else count) for name, count in blocks_info]
    names, tomo = _tomogram_names(rows, layout.tomo_col is not None)
    table = PickTable(path, names, tomo, rows.xyz, layout.columns, layout.centred, blocks_info)
    table.named = names != [""]
    table.angst = rows.angst
    table.extra = rows.extra
    if marks_note:
        table.notes.append(marks_note)
    sep = None if layout.csv is None else layout.csv["sep"]
    # rows of another width than the header's are error rows; one whose coordinates are missing keeps
    # that reason. A row short only in a later column (rlnOpticsGroup) was read with NaN there
    coordless = set(rows.bad_rows.tolist())
    width = wrong_width_rows(path, len(layout.columns), layout.block, sep)
    width = {row: why for row, why in width.items() if row not in coordless}
    blank = blank_name_rows(names, tomo, layout.tomo_col) if skip_bad_rows else {}
    try:
        table.mark_bad_rows(rows.bad_rows, skip_bad_rows, {**blank, **width}, layout.block)
    except InputError as exc:
        # ``12,5,3,5,4,5`` under x,y,z (decimal commas, as European spreadsheets write them) splits
        # every number in two: the field count alone did not say why every row is too long
        if sep == "," and len(overlong_rows(path, len(layout.columns), sep=sep)) == rows.n:
            raise InputError(path, f"{exc.reason}; {DECIMAL_COMMA_HINT}") from exc
        raise
    if layout.centred and convert:
        _centred_to_pixels(table, pixel_size, tomo_shape, skip=unresolved == "skip", centre=centre)
    return table


DECIMAL_COMMA_HINT = "decimal commas? write the table with ';' as separator"


@dataclass
class _PickLayout:
    """Where a pick table keeps what cryoshift reads: its block (STAR), column names, the
    tomogram-name column, the three coordinate columns and whether they are centred Angstrom."""

    columns: list[str]
    coords: list[str]
    tomo_col: str | None
    centred: bool
    block: Any = None  # the STAR loop block, None for CSV/TSV
    raw_columns: list[str] | None = None  # CSV header as written (before stripping)
    angst: list[str] | None = None  # centred Angstrom columns also present beside pixel ones
    blocks_info: list[tuple[str, int]] | None = None  # STAR: (block name, rows); -1 = the one read
    csv: dict[str, Any] | None = None  # CSV/TSV: csv_options (separator ...), found once


def pick_layout(path: Path) -> _PickLayout:
    """Where the pick table ``path`` keeps its columns (see :class:`_PickLayout`); refuses a table
    without coordinates, or whose block is a guess, in one line."""
    from cryoshift.runtime.picks import (
        CENTERED_COLUMNS,
        PIXEL_COLUMNS,
        STAR_SUFFIXES,
        TOMO_COLUMNS,
        _find,
        _list,
        no_xyz_reason,
    )

    if path.suffix.lower() in STAR_SUFFIXES:
        blocks = scan_star(path)

        def has_coords(labels: list[str]) -> bool:
            return set(PIXEL_COLUMNS) <= set(labels) or set(CENTERED_COLUMNS) <= set(labels)

        candidates = [b for b in blocks if b.loop and has_coords(b.labels)]
        if not candidates:
            single = next((b for b in blocks if not b.loop and has_coords(b.labels)), None)
            if single is not None:
                raise InputError(
                    path,
                    f"data_{single.name} holds coordinates as key-value pairs; write picks as a loop_ table",
                )
            found = sorted({c for b in blocks for c in b.labels})
            _refuse_tomogram_table(path, found)
            refuse_optimisation_set(path, blocks)
            _refuse_m_species(path, found)
            raise InputError(
                path,
                "no coordinate columns: need rlnCoordinateX/Y/Z or "
                f"rlnCenteredCoordinateX/Y/ZAngst; found {_list(found)}",
            )
        block = pick_block(path, [b.name for b in candidates], "coordinates")
        block = next(b for b in candidates if b.name == block)
        columns = list(block.labels)
        # Warp/M particle STARs name the tilt series by its .tomostar in rlnMicrographName.
        tomo_col = next((c for c in ("rlnTomoName", "rlnMicrographName") if c in columns), None)
        centred = not set(PIXEL_COLUMNS) <= set(columns)
        return _PickLayout(
            columns,
            list(CENTERED_COLUMNS if centred else PIXEL_COLUMNS),
            tomo_col,
            centred,
            block=block,
            blocks_info=[(b.name, b.count_rows(path) if b is not block else -1) for b in blocks],
            angst=list(CENTERED_COLUMNS) if not centred and set(CENTERED_COLUMNS) <= set(columns) else None,
        )
    opts = csv_options(path)
    raw_columns = csv_columns(path, opts)
    columns = [c.strip() for c in raw_columns]
    cols = [_find(columns, a, r, path=path) for a, r in zip("xyz", PIXEL_COLUMNS, strict=True)]
    centred = False
    cent = [_find(columns, c) for c in CENTERED_COLUMNS]
    if None in cols:
        if None in cent:
            skipped = opts.get("skiprows", 0)
            header = f" (line {skipped + 1}, the first after blank and # comment lines)" if skipped else ""
            raise InputError(path, no_xyz_reason(columns, header))
        cols, centred = cent, True
    angst = [str(c) for c in cent] if not centred and None not in cent else None
    return _PickLayout(
        columns,
        [str(c) for c in cols],
        _find(columns, *TOMO_COLUMNS, path=path),
        centred,
        raw_columns=raw_columns,
        angst=angst,
        csv=opts,
    )


def _refuse_tomogram_table(path: Path, labels: list[str]) -> None:
    """Refuse a RELION 5 tomograms.star given where picks are read (``classify model
    tomograms.star``, the two swapped): "no coordinate columns" did not say it is the other file."""
    from cryoshift.runtime.tomograms import RECONSTRUCTION_COLUMNS

    rec = next((c for c in RECONSTRUCTION_COLUMNS if c in labels), None)
    if rec is not None and "rlnTomoName" in labels:
        raise InputError(
            path,
            f"is a table of tomograms (rlnTomoName, {rec}: RELION's tomograms.star), not of picks: "
            "give it with --tomograms, and the picks (particles.star) as the input",
        )


OPTIMISATION_SET_FILES = {"rlnTomoParticlesFile": "picks", "rlnTomoTomogramsFile": "tomograms"}


def refuse_optimisation_set(path: Path, blocks: list[StarBlock]) -> None:
    """Refuse a RELION 5 optimisation set (``rlnTomoParticlesFile``, ``rlnTomoTomogramsFile``: the
    input RELION's tomography jobs take) given where picks (or tomograms) are read, naming the
    files inside it; ``blocks``: its :func:`scan_star`.

    Why: it was refused as "no coordinate columns", which did not say it is a file of file names,
    nor which two files to give instead. It is not followed: its paths are relative to the RELION
    project folder, which need not be where cryoshift runs, and which file is meant is the user's
    to say."""
    named = {
        label: str(b.values[label])
        for b in blocks
        if not b.loop
        for label in OPTIMISATION_SET_FILES
        if label in b.values
    }
    if not named:
        return
    inside = " and ".join(f"the {OPTIMISATION_SET_FILES[k]} {v}" for k, v in named.items())
    particles = named.get("rlnTomoParticlesFile", "particles.star")
    tomograms = named.get("rlnTomoTomogramsFile", "tomograms.star")
    raise InputError(
        path,
        f"is a RELION 5 optimisation set, a file of file names: it names {inside}; give those instead: "
        f"{particles} as the input, -t {tomograms} (its paths are relative to the RELION project folder)",
    )


def _refuse_m_species(path: Path, labels: list[str]) -> None:
    """Refuse a Warp/M species (population) particle file (``wrpCoordinateX1`` ...,
    ``wrpSourceName``): its coordinates, one set per temporal sample, are M's own and not read.

    Why: the generic "no coordinate columns ... found wrpAnglePsi1 ..." did not say which file this
    is or what to give instead."""
    if "wrpCoordinateX1" not in labels and "wrpSourceName" not in labels:
        return
    raise InputError(
        path,
        "is a Warp/M species particle file (wrpCoordinateX1/Y1/Z1, wrpSourceName), which cryoshift "
        "does not read; give the picks as a RELION or Warp particle STAR (rlnCoordinateX/Y/Z or "
        "rlnCenteredCoordinateX/Y/ZAngst, with the tomogram named) or a CSV with a header naming "
        "x, y, z, tomo",
    )


def _pick_chunks(path: Path, layout: _PickLayout, extra: tuple[str, ...] = ()) -> Iterator[pd.DataFrame]:
    """The tomogram-name, coordinate and ``extra`` columns, chunk by chunk, named as in
    ``layout.columns``."""
    tomo_col = layout.tomo_col
    text = ([tomo_col] if tomo_col else []) + [c for c in extra if c != tomo_col]
    wanted = list(dict.fromkeys(text + layout.coords + (layout.angst or [])))
    if layout.block is not None:
        return star_chunks(path, layout.block, wanted, text=tuple(text))
    raw_of = dict(zip(layout.columns, layout.raw_columns or [], strict=True))
    raw_wanted = [raw_of[c] for c in wanted]
    if _decimal_comma(layout):  # numbers as written: which decimal mark each uses is checked
        text = list(dict.fromkeys(text + layout.coords + (layout.angst or [])))
    chunks = csv_chunks(path, raw_wanted, text=tuple(raw_of[c] for c in text), opts=layout.csv)
    return (c.set_axis(wanted, axis=1) for c in chunks)


@dataclass
class _PickRows:
    """Every row's coordinates and tomogram code, and the rows whose coordinates are not numbers."""

    xyz: np.ndarray
    tomo: np.ndarray | None  # codes into ``names_raw``; None without a tomogram column
    names_raw: dict[Any, int]
    n: int
    bad_rows: np.ndarray  # every row (0-based) whose coordinates are not numbers
    angst: np.ndarray | None = None  # centred Angstrom beside the pixel coordinates (layout.angst)
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # requested columns, as written
    marks: DecimalMarks | None = None  # a decimal-comma table's marks (None: not such a table)


def _decimal_comma(layout: _PickLayout) -> bool:
    """Whether ``layout`` is a CSV read with decimal commas (a ';' table, csv_options)."""
    return layout.csv is not None and layout.csv.get("decimal") == ","


# a number whose point may group thousands (1.016, 12.500.000): read as a decimal point, a guess
_GROUPED = r"^[-+]?\d{1,3}(?:\.\d{3})+$"


@dataclass
class DecimalMarks:
    """The decimal marks the coordinates of a ';' table are written with: the first row (0-based)
    and text of a decimal comma (16,5), of a decimal point (16.5), and of a point that may group
    thousands (1.016).

    Why: ';' tables are read with decimal commas (spreadsheets of comma locales), and a value
    written with a point was read as a decimal point without a word: ``16,5`` and ``16.5`` are
    the same, but beside decimal commas ``1.016`` may be 1016 (a German spreadsheet's grouping)."""

    comma: tuple[int, str] | None = None
    point: tuple[int, str] | None = None
    grouped: tuple[int, str] | None = None

    def values(self, column: pd.Series, offset: int) -> np.ndarray:
        """``column`` (text as written) as float64, a decimal comma read as a point; the first
        row of each mark is kept (``offset``: the chunk's first row)."""
        text = column.where(column.notna(), "").astype(str).str.strip()
        comma = text.str.contains(",", regex=False).to_numpy()
        point = text.str.contains(".", regex=False).to_numpy() & ~comma
        for name, rows in (("comma", comma), ("point", point)):
            if getattr(self, name) is None and rows.any():
                k = int(np.argmax(rows))
                setattr(self, name, (offset + k, str(text.iloc[k])))
        if self.grouped is None and point.any():
            grouped = text.str.match(_GROUPED).to_numpy() & point
            if grouped.any():
                k = int(np.argmax(grouped))
                self.grouped = (offset + k, str(text.iloc[k]))
        return coordinate_values(text.str.replace(",", ".", regex=False) if comma.any() else text)

    def check(self, path: Path) -> str | None:
        """Refuse a table mixing decimal commas with a point that may group thousands (which
        number is meant is a guess); the note on other mixed marks (both read as decimal marks);
        None when the table uses one mark."""
        if self.comma is None or self.point is None:
            return None
        rows = np.array(sorted({self.comma[0], self.point[0], (self.grouped or self.point)[0]}), np.int64)
        line = dict(zip(rows.tolist(), data_row_lines(path, rows).tolist(), strict=True))

        def shown(first: tuple[int, str]) -> str:
            return f"{first[1]!r} on {row_text(first[0], line[first[0]])}"

        comma = shown(self.comma)
        if self.grouped is not None:
            raise InputError(
                path,
                f"numbers are written with decimal commas ({comma}) and points ({shown(self.grouped)}): "
                "the point may group thousands (1.016 = 1016) or mark decimals (1.016); write every "
                "number with one decimal mark",
            )
        point = shown(self.point)
        return (
            f"{path}: numbers are written with decimal commas ({comma}) and decimal points ({point}); "
            "both are read as decimal marks (16,5 = 16.5): check that this is what the table means"
        )


def _gather_picks(
    chunks: Iterator[pd.DataFrame], layout: _PickLayout, extra: tuple[str, ...] = ()
) -> _PickRows:
    tomo_col = layout.tomo_col
    names_raw: dict[Any, int] = {}
    tomo_parts, xyz_parts = [], []
    bad_parts: list[np.ndarray] = []
    angst_parts: list[np.ndarray] = []
    extra_parts: dict[str, list[np.ndarray]] = {c: [] for c in extra}
    marks = DecimalMarks() if _decimal_comma(layout) else None
    n = 0

    def numbers(column: pd.Series) -> np.ndarray:
        return coordinate_values(column) if marks is None else marks.values(column, n)

    for chunk in chunks:
        for c, parts in extra_parts.items():
            parts.append(chunk[c].to_numpy(dtype=object))
        if layout.angst:
            angst_parts.append(
                np.column_stack([numbers(chunk[c]) for c in layout.angst]) if len(chunk) else np.zeros((0, 3))
            )
        if tomo_col:
            codes, uniques = pd.factorize(chunk[tomo_col], use_na_sentinel=False)
            remap = np.array(
                [names_raw.setdefault(_na_key(u), len(names_raw)) for u in uniques], dtype=np.int32
            )
            tomo_parts.append(remap[codes] if len(codes) else np.zeros(0, np.int32))
        values = (
            np.column_stack([numbers(chunk[c]) for c in layout.coords]) if len(chunk) else np.zeros((0, 3))
        )
        bad = ~np.isfinite(values).all(axis=1)
        if bad.any():
            bad_parts.append(np.flatnonzero(bad).astype(np.int64) + n)
        xyz_parts.append(values)
        n += len(chunk)
    xyz = (
        (np.concatenate(xyz_parts) if len(xyz_parts) > 1 else xyz_parts[0]) if xyz_parts else np.zeros((0, 3))
    )
    tomo = None
    if tomo_col and tomo_parts:
        tomo = np.concatenate(tomo_parts) if len(tomo_parts) > 1 else tomo_parts[0]
    bad_rows = np.concatenate(bad_parts) if bad_parts else np.zeros(0, np.int64)
    angst = np.concatenate(angst_parts) if angst_parts else None
    kept = {c: np.concatenate(p) if p else np.zeros(0, object) for c, p in extra_parts.items()}
    return _PickRows(xyz, tomo, names_raw, n, bad_rows, angst, kept, marks)


def coordinate_values(column: pd.Series) -> np.ndarray:
    """A coordinate column as float64, anything not a number NaN (a bad row).

    A column of only True/False parses as booleans, which would otherwise become 1.0 and 0.0.
    """
    if column.dtype == bool:
        return np.full(len(column), np.nan)
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)


def blank_name_rows(names: list[str], tomo: np.ndarray, column: str | None) -> dict[int, str]:
    """The rows (0-based) of a table that names its tomograms but leaves a row's name empty, with
    the reason (each becomes an error row naming its line).

    Why: such a row was given to the only ``--tomograms`` file (a guess: exit 0, cropped from a
    tomogram the row never named) or, with several, refused the whole table as naming no tomogram.
    A table whose every name is empty names none: the one-tomogram rule applies to it as to a
    table without the column (README)."""
    if "" not in names or len(names) < 2:
        return {}
    rows = np.flatnonzero(tomo == names.index(""))
    why = f"{EMPTY_NAME} ({column})" if column else EMPTY_NAME
    return dict.fromkeys(rows.tolist(), why)


EMPTY_NAME = "empty tomogram name"


def _tomogram_names(rows: _PickRows, has_tomo_col: bool) -> tuple[list[str], np.ndarray]:
    """Tomogram names and each row's index into them; names equal once stripped are one."""
    if has_tomo_col and rows.tomo is not None:
        raw_names = [None if k is _NA else k for k in rows.names_raw]
        strings = _name_strings(raw_names)
        tomo = rows.tomo
    else:
        tomo, strings = np.zeros(rows.n, np.int32), [""]
    unique: dict[str, int] = {}
    remap = np.array([unique.setdefault(s, len(unique)) for s in strings], dtype=np.int32)
    if not np.array_equal(remap, np.arange(len(strings))):
        tomo = remap[tomo]
    return list(unique), tomo.astype(np.int32, copy=False)


class _NAType:
    pass


_NA = _NAType()


def _na_key(value: Any) -> Any:
    return _NA if value is None or (isinstance(value, float) and value != value) else value


def _centred_to_pixels(
    table: PickTable, pixel_size: Any, tomo_shape: Any, skip: bool = False, centre: Any = None
) -> None:
    """In place: Angstrom from the tomogram centre -> pixels, per tomogram (see picks.py);
    with ``skip``, a tomogram without facts (None) keeps NaN: its picks fail as error rows.

    ``centre`` (per tomogram: (X, Y, Z) voxels, or None for the middle of ``tomo_shape``) is the
    centre RELION measures from: ``rlnTomoSizeX/Y/Z / 2`` of tomograms.star in unbinned pixels,
    over the binning (ParticleSet::getParticleCoordDecenteredPixel, TomogramSet's w0 / 2.0).
    Why: the reconstruction's own size may differ from the table's by a voxel or two (accepted,
    tomograms.SIZE_TOLERANCE), and its middle then put every pick that far from RELION's place.
    """
    from cryoshift.runtime.picks import _per_tomo

    for k, name in enumerate(table.names):
        rows = table.tomo == k
        ps, shape = _per_tomo(pixel_size, name), _per_tomo(tomo_shape, name)
        label = f"tomogram '{name}'" if name else "the tomogram"
        if skip and (ps is None or shape is None):
            table.xyz[rows] = np.nan
            continue
        if ps is None or shape is None:
            raise InputError(
                table.path,
                "rlnCenteredCoordinate*Angst are relative to the tomogram centre: "
                f"give the pixel size and size of {label}: pass the tomogram MRC "
                "with --tomograms (its header has both)",
            )
        ps = float(ps)
        if not ps > 0:
            raise InputError(table.path, f"pixel size of {label} must be positive, got {ps}")
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3:
            raise InputError(table.path, f"tomogram size of {label} must be (Z, Y, X), got {shape}")
        middle = _per_tomo(centre, name) if centre is not None else None
        if middle is None:
            middle = np.array(shape[::-1], dtype=np.float64) / 2.0
        table.xyz[rows] = table.xyz[rows] / ps + np.asarray(middle, dtype=np.float64)
    table.centred = False
