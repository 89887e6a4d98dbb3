"""Result tables: one row per subtomogram, written as CSV (for people) and STAR (for RELION,
Warp, ArtiaX) with identical rows.

Column mapping, CSV -> STAR (``read_results`` applies it backwards, so both files read
back into the same DataFrame):

==================  =====================================================
CSV                 STAR
==================  =====================================================
``id``              ``rlnImageName`` (subtomogram name, e.g. ``000003@stack.mrcs``)
``tomo_name``       ``rlnTomoName``
``x`` ``y`` ``z``   ``rlnCoordinateX`` ``rlnCoordinateY`` ``rlnCoordinateZ`` (pixels)
``class_index``     ``rlnClassNumber`` = class_index + 1 (RELION counts from 1; -1 "unknown" -> 0)
``prob_<class>``    ``csProb_<class>``
``rln...``          unchanged (original RELION columns of the picks travel along)
``snake_case``      ``cs`` + CamelCase: ``class_name`` -> ``csClassName``, ``confidence`` ->
                    ``csConfidence``, ``shift_score`` -> ``csShiftScore``
anything else       ``cs_`` + the name unchanged
==================  =====================================================

An original column that would land on the STAR name of a canonical column (an
``rlnCoordinateX`` next to ``x``) is dropped from both files; the canonical column
carries the value. Floats are written with 9 significant digits in both files, booleans
as 0/1, missing numbers as NaN, missing strings as "".

Every STAR file cryoshift writes goes through :class:`StarWriter` (``write_results`` here,
``predictions.star`` in runtime/star_out.py): the blocks before the particles whole, then the
particles block in chunks, so a table of millions of rows is never formatted in one piece. The
text is starfile's (tab-separated; strings that are empty or hold a space in double quotes; a
missing value ``<NA>``), and the file appears under its name only when complete. A name no STAR
value carries back as written (:func:`star_problem`: a line break, two spaces in a row, a quote
in a value that must be quoted) is refused by ``write_results`` and left out of predictions.star
with a note, never written as another name. CSV cells holding a comma, a quote or a line break
(``\\r`` too) are quoted, as the ledgers quote them.

Both files are written as runtime/outfiles.py writes every whole file: to a new temporary file
beside the name, then put in its place, so a link planted at the name is replaced, never written
through.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np
import pandas as pd

from cryoshift.runtime.errors import InputError, missing_reason, writing_error
from cryoshift.runtime.ledger import frame_csv_text
from cryoshift.runtime.literal_paths import for_pandas
from cryoshift.runtime.outfiles import PendingFile, replacing

FIXED = {
    "id": "rlnImageName",
    "tomo_name": "rlnTomoName",
    "x": "rlnCoordinateX",
    "y": "rlnCoordinateY",
    "z": "rlnCoordinateZ",
    "class_index": "rlnClassNumber",
}
FIXED_BACK = {v: k for k, v in FIXED.items()}
BLOCK = "particles"
FLOAT_FORMAT = "%.9g"
MISSING_VALUES = ("nan", "NaN", "<NA>")  # how a results table writes a missing number
_SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z][a-z0-9]*)*$")
_CAMEL = re.compile(r"^cs[A-Z][A-Za-z0-9]*$")


def star_name(column: str) -> str:
    """The STAR label for a result column (see the module table)."""
    column = str(column)
    if not column or any(ch.isspace() for ch in column):
        raise ValueError(f"column name {column!r} cannot be a STAR label (empty or has spaces)")
    if column in FIXED:
        return FIXED[column]
    if column.startswith("rln"):
        return column
    if column.startswith("prob_") and len(column) > 5:
        return "csProb_" + column[5:]
    if _SNAKE.match(column):
        return "cs" + "".join(part.capitalize() for part in column.split("_"))
    return "cs_" + column


def csv_name(label: str) -> str:
    """Inverse of :func:`star_name`."""
    if label in FIXED_BACK:
        return FIXED_BACK[label]
    if label.startswith("rln"):
        return label
    if label.startswith("cs_"):
        return label[3:]
    if label.startswith("csProb_"):
        return "prob_" + label[7:]
    if _CAMEL.match(label):
        return re.sub(r"(?<!^)([A-Z])", r"_\1", label[2:]).lower()
    return label


def _prepare(rows: pd.DataFrame) -> pd.DataFrame:
    """Normalise values so CSV and STAR carry exactly the same text."""
    df = rows.reset_index(drop=True).copy()
    df.columns = [str(c) for c in df.columns]
    targets = {c: star_name(c) for c in df.columns}
    canonical = {targets[c] for c in df.columns if c in FIXED}
    drop = [c for c in df.columns if c not in FIXED and targets[c] in canonical]
    df = df.drop(columns=drop)
    seen: dict[str, str] = {}
    for c in df.columns:
        if targets[c] in seen:
            raise ValueError(f"columns {seen[targets[c]]!r} and {c!r} both map to STAR label {targets[c]!r}")
        seen[targets[c]] = c
    for c in df.columns:
        col = df[c]
        if col.dtype == bool:
            df[c] = col.astype(np.int64)
        elif not pd.api.types.is_numeric_dtype(col):
            df[c] = col.astype(object).where(col.notna(), "").astype(str)
    return df


def write_results(rows: pd.DataFrame, csv_path: str | Path, star_path: str | Path | None = None) -> Path:
    """Write ``rows`` to ``csv_path`` and, if given, ``star_path`` (same rows, same order).

    Files are written to a temporary name and renamed, so a reader never sees half a table.
    """
    df = _prepare(rows)
    csv_path = Path(csv_path)
    if star_path is not None:
        bad = star_problems(df)
        if bad:
            raise InputError(
                Path(star_path),
                f"cannot hold {bad[0][1]}; write the CSV alone (no STAR path) or rename the item",
            )
    with replacing(csv_path, "w", newline="") as fh:
        fh.write(frame_csv_text(df, index=False, float_format=FLOAT_FORMAT, na_rep="nan"))
    if star_path is not None:
        star = df.copy()
        if "class_index" in star.columns:
            idx = pd.to_numeric(star["class_index"], errors="coerce")
            star["class_index"] = np.where(idx >= 0, idx + 1, 0).astype(np.int64)
        star.columns = [star_name(c) for c in star.columns]
        write_star({BLOCK: star}, star_path)
    return csv_path


def read_results(path: str | Path) -> pd.DataFrame:
    """A results table written by :func:`write_results`, from its CSV or its STAR file."""
    path = _table_file(path)
    return _as_text(_read_star(path) if path.suffix.lower() == ".star" else _read_csv(path))


def read_predictions(path: str | Path, required: tuple[str, ...] = ()) -> pd.DataFrame:
    """A predictions table (CSV or STAR) as :func:`read_results` reads it, checked row by row
    (:func:`check_result_rows`). ``required``: the columns the caller needs, refused in one line
    when absent (before the rows are checked). :func:`read_prediction_table` gives the STAR
    file's own labels too.

    ``cryoshift report`` and ``cryoshift info`` read predictions through it, so that info never
    describes (or crashes on) a table that report refuses."""
    return read_prediction_table(path, required).rows


class PredictionTable(NamedTuple):
    """What one read of a predictions table gives (:func:`read_prediction_table`)."""

    rows: pd.DataFrame  # named as read_results names them
    # A STAR file's labels of the block read, in the order of ``rows.columns`` (None for a CSV):
    # an input column (the true classes) is found by the name the file gives it, not by reading
    # the file again.
    star_labels: list[str] | None = None

    def column(self, label: str) -> pd.Series:
        """The rows' values of the STAR label ``label`` (one of :attr:`star_labels`)."""
        return self.rows.iloc[:, (self.star_labels or []).index(label)]


def read_prediction_table(
    path: str | Path, required: tuple[str, ...] = (), check: bool = True
) -> PredictionTable:
    """:func:`read_predictions` with the STAR file's labels; ``check=False`` leaves out the row
    check (a table read only for an input column). A CSV is read from the disk once, for the rows
    and their check; a STAR file by the STAR reader (runtime/tables.py, which reads by byte ranges
    of the file), its rows then checked in one more pass over its lines."""
    path = _table_file(path)
    data: bytes | None = None
    labels: list[str] | None = None
    if path.suffix.lower() == ".star":
        df, labels = _read_star_labels(path)
    else:
        data = path.read_bytes()
        df = _read_csv(path, data)
    df = _as_text(df)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise InputError(
            path,
            f"not a cryoshift predictions table: no {', '.join(missing)} column"
            f"{'s' if len(missing) > 1 else ''} (give the output of cryoshift classify)",
        )
    if check:
        check_result_rows(path, df, data)
    return PredictionTable(df, labels)


def _table_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, missing_reason(path) if not path.exists() else "is not a file")
    return path


def _read_star(path: Path) -> pd.DataFrame:
    """The predictions block of a results STAR file, under the CSV's column names."""
    return _read_star_labels(path)[0]


def _read_star_labels(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """:func:`_read_star`, and the block's own labels (in the order of the columns)."""
    from cryoshift.runtime.tables import pick_block

    blocks = _star_blocks(path)  # several blocks and none data_particles: refused, not guessed
    df = blocks[pick_block(path, list(blocks), "predictions")].reset_index(drop=True).copy()
    labels = [str(c) for c in df.columns]
    if "rlnClassNumber" in df.columns:
        num = pd.to_numeric(df["rlnClassNumber"], errors="coerce")
        df["rlnClassNumber"] = (num - 1).astype(np.int64)
    if "csId" in df.columns:  # classify's STAR (runtime/star_out.py): csId is the id, input columns stay
        df.columns = [
            "id" if c == "csId" else c if c in FIXED_BACK and c != "rlnClassNumber" else csv_name(c)
            for c in df.columns
        ]
    else:
        df.columns = [csv_name(c) for c in df.columns]
    return df, labels


def _star_blocks(path: Path) -> dict[str, pd.DataFrame]:
    """Every block of a results STAR file as a DataFrame (key-value blocks as one row), as
    picks.read_star_blocks reads them, but every name column (picks.NAME_LABELS: csClassName,
    csBestClass, csId, rlnTomoName ...; and csPath, the ``path`` of :func:`write_results`) as
    written: a class ``01`` is not 1.0. So is an input column of true classes (``class``,
    ``label``, ... as the labelled-picks readers name them): a true class ``01`` read as 1 never
    matched the predicted class ``01``, and report's confusion matrix counted it wrong."""
    from cryoshift.runtime.labelled_picks import LABEL_COLUMNS
    from cryoshift.runtime.picks import NAME_LABELS
    from cryoshift.runtime.tables import read_loop, scan_star

    labels = {*NAME_LABELS, star_name("path")}
    out = {}
    for block in scan_star(path):
        if block.loop:
            names = tuple(c for c in block.labels if c in labels or c.lower() in LABEL_COLUMNS)
            out[block.name] = read_loop(path, block, text=names, verbatim=names)
        else:
            out[block.name] = pd.DataFrame([dict(block.values)])
    return out


def _read_csv(path: Path, data: bytes | None = None) -> pd.DataFrame:
    """A results CSV/TSV, from ``data`` (the file's bytes, already read) or else from ``path``."""

    def source() -> str | io.BytesIO:
        return for_pandas(path) if data is None else io.BytesIO(data)

    sep = _separator(path)
    try:
        header = [str(c) for c in pd.read_csv(source(), sep=sep, nrows=0).columns]
        names = _name_columns()
        return pd.read_csv(
            source(),
            sep=sep,
            keep_default_na=False,
            na_values={c: list(MISSING_VALUES) for c in header if c not in names},
            dtype={c: str for c in header if c in names},
        )
    except UnicodeDecodeError as exc:
        from cryoshift.runtime.ledger import csv_damage

        raise InputError(path, csv_damage(path, exc)) from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(path, f"not a readable results table ({exc})") from exc


def _as_text(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with every column that is not numbers as text (a missing value as "")."""
    for c in df.columns:
        if not pd.api.types.is_numeric_dtype(df[c]):
            df[c] = df[c].astype(object).where(df[c].notna(), "").astype(str)
    return df


def _separator(path: Path) -> str:
    return "\t" if path.suffix.lower() in (".tsv", ".tab") else ","


def _name_columns() -> set[str]:
    """The columns of a results CSV that hold names (of subtomograms, files, tomograms, classes):
    read as written, never made numbers (tomogram ``001`` is not 1, class ``01`` not 1.0) nor
    missing (``nan`` may be a tomogram's or a class's name). Those of picks.NAME_LABELS, and
    ``path`` (the file an item was read from)."""
    from cryoshift.runtime.picks import NAME_LABELS

    return {csv_name(label) for label in NAME_LABELS} | {"path"}


# ---------------------------------------------------------------------------------------------
# Predictions tables, checked row by row (report and info)

NUMERIC_COLUMNS = ("confidence", "shift_score")  # report draws them as histograms, info summarises them


def is_number(text: str) -> bool:
    """Whether a cell holds a number or a missing value (both fine), not other text."""
    if text.strip() in ("", *MISSING_VALUES):
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


def repeated_columns(header: list[str]) -> str:
    """The column names a table header holds more than once, joined ("" when none)."""
    return ", ".join(sorted({c for c in header if header.count(c) > 1}))


def check_result_rows(path: Path, df: pd.DataFrame, data: bytes | None = None) -> None:
    """Refuse a predictions table (CSV or STAR, read into ``df``) with a cut-off or damaged row or
    text in a number column (read_results refuses a STAR file with several blocks and none
    data_particles). ``data``: a CSV's bytes, when the caller has read them (else the file is read).
    :func:`read_predictions` reads a table and checks it."""
    if path.suffix.lower() == ".star":
        _check_star_rows(path)
        _check_numbers(path, df)
    else:
        _check_rows(path, path.read_bytes() if data is None else data)


def _check_rows(path: Path, data: bytes) -> None:
    """Refuse a predictions CSV (its bytes ``data``) with a cut-off row or a non-numeric confidence or
    shift score, naming the line: pandas fills a short row with NaN and keeps a column with text as
    text, so the page would otherwise show figures of the wrong numbers without a word."""
    rows = _checked_rows(path, data, _separator(path))
    _, header = next(rows, (0, []))
    repeated = repeated_columns(header)
    if repeated:  # pandas renames the second "confidence.1" and the first was drawn without a word
        raise InputError(path, f"column {repeated} appears twice; keep one")
    numeric = [(header.index(c), c) for c in NUMERIC_COLUMNS if c in header]
    for line, row in rows:
        for i, name in numeric:
            if not is_number(row[i]):
                raise InputError(path, f"line {line}: {name} {row[i]!r} is not a number")


def _checked_rows(path: Path, data: bytes, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(line, fields) of every non-empty row of the CSV ``data`` (the bytes of ``path``), the header
    first, each later row checked to have the header's width, as ledger.checked_rows reads a file."""
    from cryoshift.runtime.ledger import csv_damage

    try:
        with io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            header = next(reader, None)
            if header is None:
                return
            yield reader.line_num, header
            for row in reader:
                if not row:
                    continue
                if len(row) != len(header):
                    raise InputError(
                        path,
                        f"line {reader.line_num} has {len(row)} fields for {len(header)} columns "
                        "(a cut-off or damaged row)",
                    )
                yield reader.line_num, row
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(path, csv_damage(path, exc)) from exc


def _star_fields(text: str) -> list[str] | None:
    """The values of one STAR loop row (None when a quote is left open: a row cut off mid-way).

    STAR (CIF) rules: a value opening with a quote ends at the same quote followed by whitespace
    or the line's end (``'TS"02'``, ``"it's"``); a quote inside a bare value is text (``TS"02``);
    inside double quotes ``""`` is one quote (the form :func:`_quote` writes). Why not shlex: it
    read the bare ``TS"02`` cryoshift writes as an open quote."""
    if '"' not in text and "'" not in text:
        return text.split()
    fields: list[str] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            return fields
        quote = text[i]
        if quote in "'\"":
            end = i + 1
            while True:
                end = text.find(quote, end)
                if end < 0:
                    return None
                if end + 1 >= n or text[end + 1].isspace():
                    break
                end += 2 if quote == '"' and text[end + 1] == '"' else 1  # "" is one " (CSV's form)
            fields.append(text[i + 1 : end])
            i = end + 1
        else:
            start = i
            while i < n and not text[i].isspace():
                i += 1
            fields.append(text[start:i])


def _check_star_rows(path: Path) -> None:
    """Refuse a predictions STAR file with a cut-off or damaged loop row, naming the line: the STAR
    reader fills a short row with NaN, as pandas does for a CSV (see :func:`_check_rows`)."""
    width = 0  # labels of the loop being read (0: not in a loop)
    labels = False  # reading a loop's labels
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            text = line.strip()
            if text == "loop_":
                width, labels = 0, True
            elif text.startswith("data_"):
                width, labels = 0, False
            elif text.startswith("_"):
                width += labels  # a key-value pair outside a loop's labels counts for nothing
            elif text and not text.startswith("#"):
                labels = False
                fields = _star_fields(text) if width else []
                if fields is None or (width and len(fields) != width):
                    got = "an open quote" if fields is None else f"{len(fields)} fields"
                    raise InputError(
                        path, f"line {number} has {got} for {width} columns (a cut-off or damaged row)"
                    )


def _check_numbers(path: Path, df: pd.DataFrame) -> None:
    """Refuse a predictions table (STAR) whose confidence or shift score holds text, naming the row."""
    for name in NUMERIC_COLUMNS:
        if name not in df or pd.api.types.is_numeric_dtype(df[name]):
            continue
        bad = next((i for i, text in enumerate(df[name].astype(str)) if not is_number(text)), None)
        if bad is not None:
            raise InputError(path, f"data row {bad + 1}: {name} {df[name].iloc[bad]!r} is not a number")


# ---------------------------------------------------------------------------------------------
# STAR files, streamed

STAR_NA = "<NA>"  # a missing value, as starfile writes it


# STAR (CIF) reads a bare value that starts with one of these characters or words as syntax, not
# as a value: ``data_x`` opens a block, ``_x`` is a label, ``#`` a comment, ``loop_`` a loop. Such
# values, empty ones and those with whitespace go in double quotes: any character str.split()
# splits on (a space, \v, \f, \x1c-\x1f, \x85, \xa0, \u2028, \u3000 ...), since readers
# split a row so (a bare ``TS\xa001`` made a row of one field too many, and ``report`` refused
# cryoshift's own file); "#" anywhere too (text to STAR,
# but a comment to starfile's pandas reader). A value holding a ``"`` and nothing else that needs
# quotes is written bare (``TS"02``): a quote inside a bare value is text in STAR (CIF), and
# starfile and cryoshift read it back so (it was ``"TS""02"``, CSV's form, which STAR reads as
# ``TS""02``). One that also needs quotes (``a "b" c``) keeps CSV's form, ``"a ""b"" c"``: STAR's
# own form, ``'a "b" c'``, makes starfile (which turns every ``'`` into ``"``) fail on the whole
# file, while this one starfile and cryoshift read back; RELION may not (see the README's limits).
# A ``'`` inside double quotes is doubled (``"a ''b''"``):
# starfile makes every ``'`` a ``"`` and would otherwise split the line wrongly; cryoshift's
# reader reads ``''`` there as ``'`` (tables.star_quotes). Tabs and line breaks, which no quoting
# carries through a whitespace-separated table, are written as the escapes \t, \n, \r. The
# writers of results refuse such names first, and those with a quote that need quotes
# (:func:`star_problem`: RELION reads none of these forms back); the forms stay for other callers.
#
# Two kinds of names need cryoshift's reader (picks.read_star, tables.star_chunks), as no form
# of them reads back through starfile: ``nan``/``NaN``/``<NA>`` (starfile reads them as missing
# even in quotes; cryoshift reads name columns as written) and any holding a ``'`` (starfile makes
# every ``'`` a ``"``). Bare values are written as they are.
_RESERVED_START = ("_", "#", "$", "'", '"', ";", "[", "]")
_RESERVED_WORDS = ("data_", "save_", "loop_", "stop_", "global_")
_CONTROL = str.maketrans({"\t": "\\t", "\n": "\\n", "\r": "\\r"})
# What str.split() splits on: for str patterns re's \s is exactly str.isspace()
_WHITESPACE = re.compile(r"\s")


def _needs_quotes(value: str) -> bool:
    return (
        not value
        or _WHITESPACE.search(value) is not None
        or "#" in value
        or value.startswith(_RESERVED_START)
        or value.lower().startswith(_RESERVED_WORDS)
    )


# What no STAR value can carry so that RELION reads it back as written (its reader, src/strings.cpp:
# simplify and unescape run on every line before nextTokenInSTAR splits it): a tab (read as a
# space), \n \r \v \f \b \a (dropped), two spaces in a row (read as one, inside quotes too), and
# a quote of either kind in a value that must be quoted (RELION ends a quoted value at its quote
# followed by whitespace and knows no doubling: ``"a ""b"" c"`` is two values to it, ``"a ''b''"``
# reads as ``a ''b''``; the undoubled ``'a "b" c'`` or ``"a 'b'"`` makes starfile misread the
# row). A quote inside a bare value is text to every reader (``TS"02``, ``it's``).
_NOT_CARRIED = re.compile("[\t\n\r\v\f\b\a]|  ")
_QUOTES = re.compile("[\"']")


def star_problem(value: str) -> str | None:
    """Why the text ``value`` cannot be a STAR loop value that reads back as written through
    RELION, starfile and cryoshift's readers (None when it can: see _NOT_CARRIED). The writers of
    results (:func:`write_results`, runtime/star_out.py) refuse such an item rather than write a
    value that names another file or tomogram."""
    found = _NOT_CARRIED.search(value)
    if found is not None:
        if found.group(0) == "  ":
            return "holds two spaces in a row, which RELION reads as one"
        return f"holds the control character {found.group(0)!r}, which RELION drops or reads as a space"
    if _QUOTES.search(value) and _needs_quotes(value):
        return (
            "holds a quote and needs quoting (whitespace, or a start STAR reads as syntax): "
            "no STAR quoting of it reads back as written in both RELION and starfile"
        )
    return None


def star_problems(rows: pd.DataFrame, name: str = "id") -> list[tuple[int, str]]:
    """(position, line) of each row of ``rows`` holding a text cell that :func:`star_problem`
    refuses, the line naming the row (its ``name`` column, else its number), the value and why;
    [] when every row can be written. Only those rows are looked at one by one."""
    bad = np.zeros(len(rows), dtype=bool)
    text = [c for c in rows.columns if not pd.api.types.is_numeric_dtype(rows[c])]
    for c in text:
        col = rows[c].astype(object).where(rows[c].notna(), "").astype(str)
        bad |= col.str.contains(_NOT_CARRIED).to_numpy(dtype=bool)
        quoted = col.str.contains(_QUOTES).to_numpy(dtype=bool)
        if quoted.any():  # only these few looked at one by one
            bad[quoted] |= col[quoted].map(_needs_quotes).to_numpy(dtype=bool)
    out = []
    for i in np.flatnonzero(bad):
        row = rows.iloc[i]
        label = f"{row[name]!r}" if name in rows.columns else f"row {i + 1}"
        for c in text:
            value = "" if pd.isna(row[c]) else str(row[c])
            reason = star_problem(value)
            if reason is not None:
                shown = "" if c == name or value == str(row.get(name)) else f" ({c} {value!r})"
                out.append((int(i), f"{label}{shown}: {reason}"))
                break
    return out


def _quote(value: Any) -> Any:
    """A text value as a STAR loop must hold it to read back the same (see _RESERVED_START)."""
    if isinstance(value, str):
        value = value.translate(_CONTROL)
        return '"' + _double_quotes(value) + '"' if _needs_quotes(value) else value
    return value


def _double_quotes(value: str) -> str:
    """The inside of a double-quoted STAR value: each quote, of either kind, doubled."""
    return value.replace('"', '""').replace("'", "''")


def _quote_pair(value: Any) -> Any:
    """A text value of a key-value pair (``_key value``), which STAR readers split as a shell
    does (shlex: quotes of either kind, backslash escapes): in double quotes where needed, as
    starfile writes them, with a backslash before each ``\\`` and ``"`` inside."""
    if isinstance(value, str):
        value = value.translate(_CONTROL)
        if _needs_quotes(value) or "'" in value or '"' in value or "\\" in value:
            return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def _star_column(col: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        return col
    if pd.api.types.infer_dtype(col, skipna=False) == "string":  # all text: quoted in one pass
        text = col.astype(object)
        if text.str.contains("[\t\n\r]", regex=True).any():
            text = text.map(lambda v: v.translate(_CONTROL))
        need = (
            (text.str.len() == 0)
            | text.str.contains(r"[\s#]", regex=True)
            | text.str.startswith(_RESERVED_START)
            | text.str.lower().str.startswith(_RESERVED_WORDS)
        )
        if not need.any():
            return text
        return text.where(~need, '"' + text.map(_double_quotes) + '"')
    return col.map(_quote)  # mixed values: one at a time


def star_rows(rows: pd.DataFrame) -> str:
    """The data lines of a loop block for ``rows`` (one line per row, each ending in a newline)."""
    if not len(rows):
        return ""
    text = pd.DataFrame({i: _star_column(rows.iloc[:, i]) for i in range(rows.shape[1])})
    return text.to_csv(
        sep="\t",
        header=False,
        index=False,
        float_format=FLOAT_FORMAT,
        na_rep=STAR_NA,
        quoting=csv.QUOTE_NONE,
        lineterminator="\n",
    )


def _star_block(name: str, block: pd.DataFrame | dict[str, Any]) -> str:
    """A whole block: key-value pairs (a dict) or a loop (a DataFrame)."""
    if isinstance(block, dict):
        pairs = "".join(f"_{k}\t\t\t{_quote_pair(v)}\n" for k, v in block.items())
        return f"data_{name}\n\n{pairs}\n\n"
    return _loop_header(name, list(block.columns)) + star_rows(block) + "\n\n"


def _loop_header(name: str, labels: list[str]) -> str:
    return f"data_{name}\n\nloop_\n" + "".join(f"_{c} #{i}\n" for i, c in enumerate(labels, 1))


class StarWriter:
    """One STAR file written as it goes: ``blocks`` whole first, then the loop block ``name``
    whose rows arrive in chunks (:meth:`write`; ``name=None``: no such block). It is written
    under a new temporary name (runtime/outfiles.py :class:`PendingFile`) and put in place by
    :meth:`commit` (``with``: on leaving without an error; an error removes it), so a reader
    never sees half a file and a link at the name is replaced, not written through.

    Example::

        with StarWriter("out.star", "particles", ["rlnImageName", "csClassName"]) as star:
            for chunk in chunks:
                star.write(chunk)
    """

    def __init__(
        self,
        path: str | Path,
        name: str | None,
        labels: Iterable[str] = (),
        blocks: dict[str, pd.DataFrame | dict[str, Any]] | None = None,
    ):
        from cryoshift.runtime import __version__

        self.path = Path(path)
        self.name = name
        self.labels = [str(c) for c in labels]
        self._pending: PendingFile | None = PendingFile(self.path)  # names self.path if it fails
        try:
            fh = self._open()
            fh.write(f"# Created by cryoshift {__version__}\n\n\n")
            for block_name, block in (blocks or {}).items():
                fh.write(_star_block(block_name, block))
            if name is not None:
                fh.write(_loop_header(name, self.labels))
        except BaseException as exc:
            self.discard()
            if isinstance(exc, OSError):
                raise writing_error(self.path, exc) from exc
            raise

    def _open(self) -> IO[str]:
        if self._pending is None or self._pending.file is None:
            raise RuntimeError(f"{self.path}: already committed or discarded")
        return self._pending.file

    def write(self, rows: pd.DataFrame) -> None:
        """Append rows of the loop block (columns in the order of ``labels``)."""
        if self.name is None or [str(c) for c in rows.columns] != self.labels:
            raise ValueError(f"columns {list(rows.columns)} are not the loop block's labels {self.labels}")
        fh = self._open()
        try:
            fh.write(star_rows(rows))
        except OSError as exc:
            raise writing_error(self.path, exc) from exc

    def commit(self) -> Path:
        """Finish the file and give it its name."""
        fh = self._open()
        pending, self._pending = self._pending, None
        assert pending is not None
        try:
            if self.name is not None:
                fh.write("\n\n")
        except OSError as exc:
            pending.discard()
            raise writing_error(self.path, exc) from exc
        return pending.commit()  # fsync'ed, then renamed; a failure names self.path

    def discard(self) -> None:
        """Drop the file being written (a file already under the final name stays)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.discard()

    def __enter__(self) -> StarWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def write_star(blocks: dict[str, pd.DataFrame | dict[str, Any]], path: str | Path) -> Path:
    """Write ``blocks`` (name -> DataFrame: a loop; dict: key-value pairs) to ``path`` through
    :class:`StarWriter`: a loop block last is streamed, the blocks before it go whole."""
    if not blocks:
        raise ValueError("a STAR file needs at least one block")
    *head, last = list(blocks)
    table = blocks[last]
    if isinstance(table, dict):
        with StarWriter(path, None, blocks=blocks):
            pass
        return Path(path)
    with StarWriter(path, last, table.columns, {n: blocks[n] for n in head}) as star:
        star.write(table)
    return Path(path)
