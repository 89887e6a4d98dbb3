"""Particle picks and per-particle listings, read into one pandas table shape.

Why one shape: the classifier should not care whether picks came from RELION 5, Warp,
a template matcher or a spreadsheet. :func:`read_picks` always returns ``tomo_name``
(str, "" if the file has none) and ``x``, ``y``, ``z`` (float pixels of the tomogram,
voxel i centred on i) followed by every original column, untouched.

Accepted inputs
- STAR (read as ``starfile`` reads it, by runtime/tables.py): the block holding coordinates is
  used (RELION 5 writes ``general``/``optics``/``particles``; ``particles`` wins when several
  qualify; several others and no ``particles`` are refused).
  ``rlnCoordinateX/Y/Z`` are pixels; the tomogram is ``rlnTomoName``, else (Warp, M)
  ``rlnMicrographName`` (``TS_01.tomostar``). RELION 5's ``rlnCenteredCoordinateX/Y/ZAngst`` are
  Angstrom relative to the tomogram centre: ``pixel = angst / pixel_size + size / 2``
  per axis (size in voxels, the centre convention RELION 5 and teamtomo tools share), so
  they need the tomogram's pixel size and size. Refinement shifts
  (``rlnOriginX/Y/ZAngst``) are not applied; they stay in the table untouched, and classify's
  planning notes how many picks carry them (crops are centred on the coordinates).
- CSV / TSV / whitespace text with ``x, y, z`` columns (any case), or the three
  ``rlnCenteredCoordinate*Angst`` columns (read as in a STAR), and optionally
  ``tomo``, ``tomo_name`` or ``rlnTomoName`` for the tomogram. Leading blank and ``#`` comment
  lines are skipped (the header is the first other line). The coordinates are read by the reader
  classify uses (tables.read_pick_table: decimal marks, rows of another width than the header),
  so both refuse the same rows with the same line. Their ``x, y, z`` are the reconstruction's
  voxels (README, Picks): a tomograms.star's tilt-series pixel and binning state the unit of a
  STAR's ``rlnCoordinateX/Y/Z`` only; classify's ``--binning``/``--coordinate-pixel-size``
  rescale both alike, and nothing here rescales them.

Tomogram names are kept exactly as written, whitespace aside, in every reader: ``001`` is not
``1`` (:data:`VERBATIM_LABELS`).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
import pandas as pd

from cryoshift.runtime.errors import InputError
from cryoshift.runtime.literal_paths import for_pandas
from cryoshift.runtime.tables import coordinate_values, pick_block

PIXEL_COLUMNS = ("rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ")
CENTERED_COLUMNS = (
    "rlnCenteredCoordinateXAngst",
    "rlnCenteredCoordinateYAngst",
    "rlnCenteredCoordinateZAngst",
)
# Refinement shifts (RELION 3.1+ in Angstrom, older in pixels): the refined centre is the
# coordinate minus the shift. Not applied (see the module docstring); planning says when present.
ORIGIN_COLUMNS = (
    ("rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst"),
    ("rlnOriginX", "rlnOriginY", "rlnOriginZ"),
)
TOMO_COLUMNS = ("rlnTomoName", "tomo_name", "tomo", "tomogram", "rlnMicrographName")
# STAR labels whose values are names (of tomograms, files, classes, results rows): read as written,
# so a tomogram called ``nan`` or ``<NA>`` is that name, never a missing value (tables._star_options).
NAME_LABELS = (
    "rlnTomoName",
    "rlnMicrographName",
    "rlnImageName",
    "rlnTomoParticleName",
    "csClassName",
    "csBestClass",
    "csId",
)
# The names kept exactly as written, never made numbers, wherever a table is read: all of them. A
# tomogram ``01`` is not ``1``, nor ``1e3`` 1000.0; a class ``02`` (csClassName, csBestClass) or a
# row id ``007`` (csId) is not 2 or 7 either: read_star made those numbers, where the results
# readers (results._star_blocks, _read_csv) kept them as written, so one file read two ways.
VERBATIM_LABELS = NAME_LABELS
STAR_SUFFIXES = (".star",)
TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".tab")  # what info and the readers take as a text table
# Names that can only be tables; a .txt/.tab (or a suffixless name) may be an MRC, read by content.
NAMED_TABLE_SUFFIXES = (*STAR_SUFFIXES, ".csv", ".tsv")

# A per-tomogram value: one value for all, a mapping by tomogram name, or a function of the name.
PerTomo = Union[float, Sequence[int], Mapping[str, Any], Callable[[str], Any], None]


MAX_LINE_BYTES = 1 << 20  # a table line longer than 1 MiB is not a pick or listing row


def check_line_lengths(path: Path, limit: int = MAX_LINE_BYTES) -> None:
    """Refuse a table holding a line longer than ``limit`` bytes before any parser sees it.

    Why: pandas/pyarrow allocate several times a line's length, so one 1 GB line took 4 GiB and
    ended in ArrowMemoryError. The scan reads 1 MiB blocks: memory stays flat, time ~ file size.
    """
    long_line = re.compile(rb"[^\n]{%d}" % (limit + 1))
    run, line = 0, 1  # bytes of the line being read so far, its 1-based number
    with open(path, "rb") as fh:
        while block := fh.read(4 << 20):
            first = block.find(b"\n")
            if first < 0:
                run += len(block)
                if run > limit:
                    break
                continue
            if run + first > limit:
                break
            last = block.rfind(b"\n")
            inner = long_line.search(block, first + 1, last) if last - first - 1 > limit else None
            if inner:
                line += block.count(b"\n", 0, inner.start())
                break
            line += block.count(b"\n")
            run = len(block) - last - 1
            if run > limit:
                break
        else:
            return
    raise InputError(
        path,
        f"line {line} is longer than {limit // (1 << 20)} MiB: not a pick or listing "
        "table (STAR/CSV rows are short)",
    )


def read_star(path: str | Path) -> dict[str, pd.DataFrame | dict[str, Any]]:
    """Every block of a STAR file, as ``starfile.read(path, always_dict=True)`` gives them (a loop
    as a DataFrame, numbers as numbers; key-value pairs as a dict), but read by cryoshift's own
    STAR reader (runtime/tables.py), the one the streaming pick reader uses: names
    (:data:`NAME_LABELS`: tomograms, files, classes, ids) are read as written (``nan`` is a name)
    and never made numbers (``01`` is not ``1``), in loops and key-value pairs alike; a value in
    single quotes may hold a ``'`` inside it, and the checks of :func:`~cryoshift.runtime.tables.scan_star` (a
    missing or binary file, over-long lines, two blocks of one name) come with its one pass to
    find the blocks. A row with more fields than labels is refused naming its line.
    """
    from cryoshift.runtime.tables import read_loop, scan_star

    path = Path(path)
    out: dict[str, pd.DataFrame | dict[str, Any]] = {}
    for block in scan_star(path):
        if block.loop:
            names = tuple(c for c in block.labels if c in NAME_LABELS)
            out[block.name] = read_loop(path, block, text=names, verbatim=names)
        else:
            out[block.name] = dict(block.values)
    return out


def read_star_blocks(path: str | Path) -> dict[str, pd.DataFrame]:
    """All blocks of a STAR file as DataFrames (name -> table, :func:`read_star`); key-value
    blocks become one-row tables. Raises :class:`InputError` for a missing, empty or unparsable
    file."""
    out = {}
    for name, block in read_star(path).items():
        out[name] = pd.DataFrame([block]) if isinstance(block, dict) else block
    return out


def star_picks_block(path: Path, blocks: dict[str, pd.DataFrame]) -> pd.DataFrame:
    def has_coords(df: pd.DataFrame) -> bool:
        return set(PIXEL_COLUMNS) <= set(df.columns) or set(CENTERED_COLUMNS) <= set(df.columns)

    candidates = [name for name, df in blocks.items() if has_coords(df)]
    if not candidates:
        found = sorted({c for df in blocks.values() for c in df.columns})
        raise InputError(
            path,
            "no coordinate columns: need rlnCoordinateX/Y/Z or "
            f"rlnCenteredCoordinateX/Y/ZAngst; found {_list(found)}",
        )
    return blocks[pick_block(path, candidates, "coordinates")].reset_index(drop=True)


def no_xyz_reason(columns: Sequence[str], where: str = "") -> str:
    """Why a CSV/text table gives no coordinates (``where``: which line held the header). STAR text
    under another name (``picks.star.bak``, ``picks.txt``) is read as CSV, and "found
    data_particles" did not say that the file is STAR, only misnamed."""
    block = star_block_header(columns)
    if block:
        return f"no coordinate columns: looks like a STAR file ({block}); give it a .star name"
    return f"no coordinate columns: need x, y, z; found {_list(columns)}{where}"


def star_block_header(columns: Sequence[str]) -> str | None:
    """The STAR block name (``data_particles``) a CSV reader took for the header, shown as
    :func:`~cryoshift.runtime.terminal.visible` shows names; None for any other header."""
    from cryoshift.runtime.terminal import visible

    first = str(columns[0]).strip() if len(columns) else ""
    return visible(first) if first.startswith("data_") else None


def _list(columns: Sequence[str], limit: int = 12) -> str:
    if not columns:
        return "no columns"
    shown = ", ".join(str(c) for c in columns[:limit])
    return shown + (f" and {len(columns) - limit} more" if len(columns) > limit else "")


def _read_table(path: Path, names: Sequence[str] = (), keep_long: bool = False) -> pd.DataFrame:
    """CSV/TSV/whitespace text; the separator is sniffed from the first lines (tables.csv_options).

    The columns called one of ``names`` (any case: tomogram or file names) are read exactly as
    written, as the streaming reader reads them (tables.csv_chunks): ``01`` stays ``01``, not the
    number 1, and ``NA`` is a name; only an empty field is missing. ``keep_long``: a row with more
    fields than the header is read without its extra fields (the caller makes it an error row,
    tables.wrong_width_rows), not refused with the parser's message."""
    from cryoshift.runtime.tables import csv_columns, csv_options

    options = csv_options(path)
    source = for_pandas(path)
    wanted = {n.lower() for n in names}
    header = csv_columns(path, options)
    text = [c for c in header if c.strip().lower() in wanted]
    usecols = {"usecols": list(range(len(header)))} if keep_long else {}
    try:
        with warnings.catch_warnings():  # fields past the header's last column are dropped, as classify does
            warnings.simplefilter("ignore", pd.errors.ParserWarning)
            df = pd.read_csv(source, dtype={c: str for c in text}, **options, **usecols)
            if text and df[text].isna().any().any():  # NA, nan ...: names, read again as written
                written = pd.read_csv(
                    source, usecols=text, dtype=str, keep_default_na=False, na_values=[""], **options
                )
                for c in text:
                    df[c] = written[c].to_numpy(dtype=object)
            return df
    except UnicodeDecodeError as exc:
        from cryoshift.runtime.ledger import csv_damage

        raise InputError(path, csv_damage(path, exc)) from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise InputError(path, f"not a readable table ({type(exc).__name__}: {exc})") from exc


def _find(columns: Sequence[str], *names: str, path: str | Path | None = None) -> str | None:
    """The column of a CSV named one of ``names`` (aliases of one fact, any case), or None.

    Two of the aliases in one table are refused (with ``path``): which one holds the fact would
    be a guess, and ``x`` beside a different ``rlnCoordinateX`` (or ``tomo`` beside ``tomo_name``)
    was silently read from the first alias found."""
    lower = {str(c).strip().lower(): c for c in columns}
    found = [lower[n.lower()] for n in names if n.lower() in lower]
    # RELION writes both for tomograms; rlnTomoName wins, as in a STAR file (read_picks)
    relion_pair = {str(c).lower() for c in found} == {"rlntomoname", "rlnmicrographname"}
    if len(found) > 1 and path is not None and not relion_pair:
        raise InputError(
            path,
            f"columns {' and '.join(map(str, found))} are two names for one column (one of "
            f"{', '.join(names)} is read): keep only one; which to read would be a guess",
        )
    return found[0] if found else None


def _per_tomo(value: PerTomo, name: str) -> Any:
    if callable(value):
        return value(name)
    if isinstance(value, Mapping):
        if name not in value:
            return None
        return value[name]
    return value


def centered_to_pixels(
    df: pd.DataFrame, pixel_size: PerTomo, tomo_shape: PerTomo, path: str | Path | None = None
) -> pd.DataFrame:
    """Add ``x, y, z`` pixel columns from RELION 5 ``rlnCenteredCoordinate*Angst`` columns.

    ``pixel_size`` (Angstrom per tomogram voxel) and ``tomo_shape`` ((Z, Y, X) voxels, the
    array shape) may each be one value, a mapping from ``tomo_name`` or a function of it,
    so a multi-tomogram file can be resolved from the tomograms' headers.
    """
    out = df.copy()
    xyz = np.full((len(df), 3), np.nan)
    names = out["tomo_name"] if "tomo_name" in out else pd.Series([""] * len(out), index=out.index)
    angst = out[list(CENTERED_COLUMNS)].to_numpy(dtype=np.float64)
    for name in pd.unique(names):
        rows = (names == name).to_numpy()
        ps, shape = _per_tomo(pixel_size, name), _per_tomo(tomo_shape, name)
        label = f"tomogram '{name}'" if name else "the tomogram"
        if ps is None or shape is None:
            raise InputError(
                path,
                "rlnCenteredCoordinate*Angst are relative to the tomogram centre: "
                f"give the pixel size and size of {label}: pass the tomogram MRC "
                "with --tomograms (its header has both)",
            )
        ps = float(ps)
        if not ps > 0:
            raise InputError(path, f"pixel size of {label} must be positive, got {ps}")
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3:
            raise InputError(path, f"tomogram size of {label} must be (Z, Y, X), got {shape}")
        size_xyz = np.array(shape[::-1], dtype=np.float64)
        xyz[rows] = angst[rows] / ps + size_xyz / 2.0
    out["x"], out["y"], out["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    return out


def _ordered(df: pd.DataFrame) -> pd.DataFrame:
    front = ["tomo_name", "x", "y", "z"]
    return df[front + [c for c in df.columns if c not in front]]


def _check_values(df: pd.DataFrame, path: Path) -> None:
    """Refuse rows whose coordinates are not numbers, naming their file lines (tables.py)."""
    from cryoshift.runtime.tables import PickTable

    PickTable.from_frame(path, df)


def _check_table(df: pd.DataFrame, path: Path, what: str) -> None:
    """Refuse tables that would mislead later steps: duplicated column names (which column is
    meant?) and tables with a header but no rows (a run that classifies nothing and says so
    only in a count is easy to miss)."""
    dup = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
    if dup:
        raise InputError(path, f"duplicate column names: {_list(dup)}")
    if len(df) == 0:
        raise InputError(path, f"no {what}: the table has column names but no rows")


def _csv_picks(
    path: Path, check_values: bool
) -> tuple[pd.DataFrame, str | None, bool, tuple[str, ...], np.ndarray]:
    """A CSV/TSV pick table for :func:`read_picks`: every column as pandas reads it, the
    tomogram-name column, whether the coordinates are centred Angstrom, their columns, and the
    coordinates as the CLI's reader reads them (tables.read_pick_table).

    Why that reader: it holds the rules for the coordinates of a table, one place each, and this
    API read them with pandas alone: a ``;`` table mixing decimal commas and points refused a good
    row as "non-numeric" (line 2 for ``12,5`` where line 3 held ``16.5``), a row with more
    fields than the header was read from its first fields (``12,5,3,5,4,5`` under ``x,y,z`` as
    12, 5, 3), and one such row among others showed pandas' tokenizer message instead of the
    file's line. Rows refused here are refused by ``classify`` with the same line. With
    ``check_values`` False (batch work) a row of another width than the header keeps NaN
    coordinates (an error row, as classify makes it), never the coordinates its first fields give.
    A note on what the reader decided (decimal commas and points both read as decimal marks) is
    a :class:`UserWarning` and kept in the table's ``attrs["notes"]``.
    """
    from cryoshift.runtime.tables import EMPTY_NAME, pick_layout, read_pick_table

    layout = pick_layout(path)
    table = read_pick_table(path, convert=False, skip_bad_rows=not check_values, layout=layout)
    df = _read_table(path, TOMO_COLUMNS, keep_long=True)
    df.columns = [str(c).strip() for c in df.columns]
    if len(df) != len(table):  # both count the non-blank lines after the header: never expected
        raise InputError(path, f"read as {len(df)} rows and as {len(table)} rows: check the table's quoting")
    xyz = table.xyz.copy()
    reasons = zip(table.bad_rows.tolist(), table.bad_reasons, strict=True)
    xyz[[r for r, why in reasons if why and not why.startswith(EMPTY_NAME)]] = np.nan
    for note in table.notes:
        warnings.warn(note, UserWarning, stacklevel=3)
    df.attrs["notes"] = list(table.notes)
    return df, layout.tomo_col, layout.centred, tuple(layout.coords), xyz


def read_picks(
    path: str | Path,
    pixel_size: PerTomo = None,
    tomo_shape: PerTomo = None,
    check_inside: bool = True,
    check_values: bool = True,
) -> pd.DataFrame:
    """Picks as a DataFrame: ``tomo_name``, ``x``, ``y``, ``z`` (float pixels) + original columns.

    ``pixel_size`` and ``tomo_shape`` are only needed for RELION 5 centred Angstrom
    coordinates (see :func:`centered_to_pixels`). If ``tomo_shape`` is given, coordinates
    outside the tomogram raise :class:`InputError` unless ``check_inside`` is False (batch
    work: such picks then fail one by one when cropped; :func:`outside` finds them). Rows
    whose coordinates are not numbers raise, naming their lines, unless ``check_values`` is
    False (batch work: they stay NaN and become error rows).
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
    if path.suffix.lower() in STAR_SUFFIXES:
        df = star_picks_block(path, read_star_blocks(path)).copy()
        # Warp/M particle STARs name the tilt series by its .tomostar in rlnMicrographName.
        tomo_col = next((c for c in ("rlnTomoName", "rlnMicrographName") if c in df.columns), None)
        centered = not set(PIXEL_COLUMNS) <= set(df.columns)
        coords = CENTERED_COLUMNS if centered else PIXEL_COLUMNS
        xyz = None
    else:
        df, tomo_col, centered, coords, xyz = _csv_picks(path, check_values)
    df = df.reset_index(drop=True)
    _check_table(df, path, "picks")
    if tomo_col:
        raw = df[tomo_col]
        tomo = raw.where(raw.notna(), "").astype(str).str.strip()
    else:
        tomo = pd.Series([""] * len(df), dtype=object)
    base = pd.DataFrame({"tomo_name": tomo.to_numpy(dtype=object).astype(str)}, index=df.index)
    if xyz is not None:
        values = xyz
    else:
        values = np.column_stack([coordinate_values(df[c]) for c in coords]) if len(df) else np.zeros((0, 3))
    if centered:
        base[list(CENTERED_COLUMNS)] = values
        base = centered_to_pixels(base, pixel_size, tomo_shape, path).drop(columns=list(CENTERED_COLUMNS))
    else:
        base["x"], base["y"], base["z"] = values[:, 0], values[:, 1], values[:, 2]
    # Every original column travels along, except plain x/y/z/tomo names now held by the front columns.
    replaced = {"x", "y", "z", "tomo_name", "tomo", "tomogram"}
    extra = df[[c for c in df.columns if str(c).lower() not in replaced]]
    out = _ordered(pd.concat([base, extra], axis=1))
    out.attrs["notes"] = list(df.attrs.get("notes", []))
    if check_values:
        _check_values(out, path)
    if tomo_shape is not None and check_inside:
        mask = outside(out, tomo_shape)
        if mask.any():
            i = int(np.flatnonzero(mask)[0])
            row = out.iloc[i]
            shape = _per_tomo(tomo_shape, row["tomo_name"])
            nz, ny, nx = (int(s) for s in shape)
            raise InputError(
                path,
                f"{int(mask.sum())} picks lie outside the tomogram, first row {i}: "
                f"(x, y, z) = ({row['x']:g}, {row['y']:g}, {row['z']:g}) "
                f"not within {nx}x{ny}x{nz} voxels",
            )
    return out


def outside(picks: pd.DataFrame, tomo_shape: PerTomo) -> np.ndarray:
    """Boolean mask of picks whose nearest voxel is outside their tomogram ((Z, Y, X) shapes;
    one shape, a mapping by ``tomo_name`` or a function of it; unknown tomograms are not flagged)."""
    mask = np.zeros(len(picks), dtype=bool)
    names = picks["tomo_name"] if "tomo_name" in picks else pd.Series([""] * len(picks))
    xyz = np.floor(picks[["x", "y", "z"]].to_numpy(dtype=np.float64) + 0.5)
    for name in pd.unique(names):
        shape = _per_tomo(tomo_shape, name)
        if shape is None:
            continue
        rows = (names == name).to_numpy()
        limit = np.array(tuple(int(s) for s in shape)[::-1], dtype=np.float64)
        mask[rows] = ((xyz[rows] < 0) | (xyz[rows] >= limit)).any(axis=1)
    return mask


_IMAGE_RE = re.compile(r"^\s*(\d+)@(.+)$")
# what was meant as a slice number but is none: -1@st.mrcs, 1.5@st.mrcs, @st.mrcs, +2@st.mrcs
_NOT_SLICE = re.compile(r"^\s*([-+]?[\d.]*(?:[eE][-+]?\d+)?)@(.+)$")
MAX_SLICE = 2**31 - 1  # an MRC header's nz is an int32: no stack has more slices
IMAGE_COLUMNS = ("rlnImageName", "path", "image", "image_name")  # a CSV listing's file column
IMAGE_PIXEL = "rlnImagePixelSize"  # a listing STAR's data_optics: the subtomograms' pixel size (A)
STATED_PIXEL = "stated_pixel_size"  # listing_rows' column of it per row (NaN: the STAR states none)


def read_particle_listing(path: str | Path) -> pd.DataFrame:
    """Per-particle subtomogram files as RELION lists them (``rlnImageName``).

    Returns ``path`` (absolute), ``index`` (0-based slice of a stack for
    ``000003@stack.mrcs`` -> 2; -1 for a whole file) and ``stated_pixel_size`` (the row's optics
    group's ``data_optics`` rlnImagePixelSize in A; NaN where the file states none) followed by
    the original columns.
    Relative names are looked up as tomograms.star's reconstructions are
    (:func:`~cryoshift.runtime.tomograms.resolve_relative`): next to the STAR file, then in each
    folder above it (RELION's project folder: ``Select/job009/particles.star`` names
    ``Extract/job008/...``), then in the working directory; the one that exists is used, and a name
    found there as two different files fails its rows (which one is meant would be a guess).
    CSV/TSV listings with an ``rlnImageName``, ``path`` or ``image`` column work too.
    A row that names no usable image (slice ``0@``, an empty name) refuses the listing; batch
    work reads it with :func:`listing_rows` instead, which reports such rows.
    """
    listing, bad = listing_rows(path)
    if bad:
        raise InputError(path, next(iter(bad.values())))
    return listing


def listing_rows(path: str | Path) -> tuple[pd.DataFrame, dict[int, str]]:
    """:func:`read_particle_listing`'s table, and the rows (0-based) that name no usable image
    with the reason, which names the row's line (a bad row fails alone in batch work).

    A listing in which no row is usable is refused: nothing in it can be classified.
    """
    path = Path(path)
    if path.is_dir():
        what = "empty directory" if not any(path.iterdir()) else "is a directory"
        raise InputError(path, f"{what}, expected a STAR file listing subtomograms")
    from cryoshift.runtime.tables import wrong_width_rows

    problems: dict[int, str] = {}
    if path.suffix.lower() in STAR_SUFFIXES:
        blocks, listing_block = _listing_star_blocks(path)
        names = [n for n, df in blocks.items() if "rlnImageName" in df.columns]
        if not names:
            found = sorted({c for df in blocks.values() for c in df.columns})
            raise InputError(path, f"no rlnImageName column (a per-particle listing); found {_list(found)}")
        chosen = pick_block(path, names, "rlnImageName")
        df = blocks[chosen].reset_index(drop=True)
        col = "rlnImageName"
        _check_table(df, path, "subtomograms listed")
        if chosen in listing_block:  # a loop (a key-value block is one row, its fields named)
            block = listing_block[chosen]
            problems.update(wrong_width_rows(path, len(block.labels), block))
        stated = _stated_pixel_sizes(path, blocks.get("optics"), df)
    else:
        from cryoshift.runtime.tables import csv_options

        stated = np.full(0, np.nan)
        df = _read_table(path, IMAGE_COLUMNS, keep_long=True)
        col = _find(df.columns, *IMAGE_COLUMNS, path=path)
        if col is None:
            raise InputError(path, f"no rlnImageName/path column; found {_list(list(df.columns))}")
        problems.update(wrong_width_rows(path, len(df.columns), sep=csv_options(path)["sep"]))
    from cryoshift.runtime.tomograms import resolve_relative

    resolved: dict[str, str] = {}  # name -> absolute path (a stack's rows share one name)
    ambiguous: dict[str, str] = {}  # name -> why it names two different files (resolve_relative)
    paths, index = [], []
    # A missing value (an empty CSV field) names no image; in a STAR file, ``nan`` is a file name.
    values = df[col].astype(object).where(df[col].notna(), "").astype(str)
    for i, value in enumerate(values):
        m = _IMAGE_RE.match(value)
        digits = m.group(1).lstrip("0") if m else ""
        # a slice number longer than any int32 is out of range unread: int() of 5000 digits fails
        too_long = len(digits) > len(str(MAX_SLICE))
        idx = -1 if not m else MAX_SLICE + 1 if too_long else int(m.group(1)) - 1
        name = m.group(2).strip() if m else value.strip()
        wrong = None if m else _NOT_SLICE.match(value)
        if i in problems:  # a row with too many or too few fields: its fields may be shifted
            pass
        elif wrong:  # "-1@st.mrcs" was looked up as a file of that name: "no such file"
            shown = wrong.group(1).strip()
            problems[i] = (
                f"{value.strip()!r}: no slice number before '@'"
                if not shown
                else f"{value.strip()!r}: slice number {shown!r} is not a whole number >= 1"
            ) + " (RELION writes N@stack, N from 1)"
            name = wrong.group(2).strip()
        elif m and idx < 0:
            problems[i] = f"{value!r} has slice number 0; RELION numbers slices from 1"
        elif idx >= MAX_SLICE:
            # np.int64 overflowed on 99999999999999999999999@stack.mrcs: a traceback in info
            shown = digits if len(digits) <= 30 else f"{digits[:12]}...({len(digits)} digits)"
            problems[i] = (
                f"slice number {shown} is out of range (an MRC stack holds at most {MAX_SLICE:,} slices)"
            )
            idx = -1
        elif not name:
            problems[i] = "empty image name"
        if name not in resolved:
            try:
                resolved[name] = str(resolve_relative(name or ".", path).resolve())
            except InputError as exc:  # two different files by that name: this name's rows fail alone
                resolved[name] = str(path.resolve().parent / name)
                ambiguous[name] = exc.reason
        if name in ambiguous and i not in problems:
            problems[i] = ambiguous[name]
        paths.append(resolved[name])
        index.append(idx)
    # object, not pandas' Arrow strings: a path that is not valid UTF-8 (surrogate-escaped) is kept
    front = pd.DataFrame(
        {
            "path": pd.Series(paths, dtype=object),
            "index": np.asarray(index, dtype=np.int64),
            STATED_PIXEL: stated if len(stated) == len(df) else np.full(len(df), np.nan),
        }
    )
    ours = ("path", "index", STATED_PIXEL)
    rest = df.drop(columns=[c for c in ours if c in df.columns]).reset_index(drop=True)
    return pd.concat([front, rest], axis=1), _name_lines(path, problems, len(df))


def _listing_star_blocks(path: Path) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """Every block of a listing STAR as :func:`read_star_blocks` gives them, and its loop blocks
    holding ``rlnImageName`` (name -> tables.StarBlock), whose rows with too many fields are
    kept (their fields past the labels dropped) to become error rows, not refuse the listing."""
    from cryoshift.runtime.tables import read_loop, scan_star

    frames: dict[str, pd.DataFrame] = {}
    listing: dict[str, Any] = {}
    for block in scan_star(path):
        if not block.loop:
            frames[block.name] = pd.DataFrame([dict(block.values)])
            continue
        names = tuple(c for c in block.labels if c in NAME_LABELS)
        keep = "rlnImageName" in block.labels
        frames[block.name] = read_loop(path, block, text=names, verbatim=names, keep_long=keep)
        if keep:
            listing[block.name] = block
    return frames, listing


def _stated_pixel_sizes(path: Path, optics: pd.DataFrame | None, df: pd.DataFrame) -> np.ndarray:
    """Per row of listing ``df``, the ``rlnImagePixelSize`` its optics group states in the STAR's
    ``data_optics`` (NaN: none stated, or a group data_optics does not list). A stated size that is
    no positive number, or several sizes and rows that do not say their group, refuse the listing.

    Why: the stated size was never read, so a listing saying 20 A of files whose header says 10 A
    was classified without a word, and files without a voxel size were classified unchecked
    though the listing said theirs (the planner compares the two: Planner.add_listing)."""
    rows = np.full(len(df), np.nan)
    if optics is None or IMAGE_PIXEL not in optics.columns or not len(optics):
        return rows
    values = pd.to_numeric(optics[IMAGE_PIXEL], errors="coerce").to_numpy(dtype=np.float64)
    group = "rlnOpticsGroup"
    groups = (
        optics[group].astype(str).str.strip().tolist()
        if group in optics.columns
        else [str(i + 1) for i in range(len(optics))]
    )
    sizes = dict(zip(groups, values, strict=True))
    if group in df.columns:
        used = df[group].astype(str).str.strip().tolist()
    elif len(set(values.tolist())) == 1:
        used = [groups[0]] * len(df)
    else:
        raise InputError(
            path,
            f"data_optics states several {IMAGE_PIXEL} values ({', '.join(f'{v:g}' for v in values)}) "
            f"and the particles have no {group} column: which applies to them is a guess",
        )
    for name in dict.fromkeys(used):
        size = sizes.get(name)
        if size is not None and not (np.isfinite(size) and size > 0):
            written = optics[IMAGE_PIXEL].iloc[groups.index(name)]
            raise InputError(
                path, f"data_optics {IMAGE_PIXEL} of optics group {name} is {written!r}, not a size"
            )
    return np.array([sizes.get(name, np.nan) for name in used], dtype=np.float64)


def _name_lines(path: Path, problems: dict[int, str], n_rows: int) -> dict[int, str]:
    """``problems`` (row -> reason) with each reason led by its row's line; all rows bad: refused."""
    if not problems:
        return problems
    from cryoshift.runtime.tables import data_row_lines, row_text

    rows = np.fromiter(problems, dtype=np.int64, count=len(problems))
    lines = data_row_lines(path, rows).tolist()
    named = {int(r): f"{row_text(int(r), n)}: {problems[int(r)]}" for r, n in zip(rows, lines, strict=True)}
    if len(named) == n_rows:
        first = next(iter(named.values()))
        more = f" (and {n_rows - 1} more rows)" if n_rows > 1 else ""
        raise InputError(path, f"no row names a usable image; {first}{more}")
    return named
