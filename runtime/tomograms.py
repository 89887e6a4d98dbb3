"""Tomogram tables: RELION 5 ``tomograms.star`` given to ``-t``, and the pixel-size facts
that turn pick coordinates into voxels of the reconstruction.

RELION 5 (``Reconstruct tomograms`` / ``Denoise`` jobs) writes ``tomograms.star`` with one
``data_global`` loop, one row per tomogram::

    _rlnTomoName                   TS_01
    _rlnTomoTiltSeriesPixelSize    2.5      (A per pixel of the tilt series, unbinned)
    _rlnTomoTomogramBinning        4        (reconstruction voxel = 2.5 x 4 = 10 A)
    _rlnTomoSizeX/Y/Z              unbinned tomogram size in pixels
    _rlnTomoReconstructedTomogram  Tomograms/job006/tomograms/rec_TS_01.mrc

Paths in RELION files are relative to the RELION project directory, which is usually two
folders above the STAR file (``<project>/Tomograms/job006/tomograms.star``). A relative path
is looked up next to the STAR file first, then in each folder above it, then in the working
directory; the one that exists is used (or the one next to the STAR when none does, so the
error names a sensible path). Two different files found there are refused, naming both: which
one is meant is a guess (the same file reached twice, as the project folder is often the
working directory too, is no ambiguity).

Half-map (``rlnTomoReconstructedTomogramHalf1``) and denoised
(``rlnTomoReconstructedTomogramDenoised``) columns are used only when the full
reconstruction column is absent, in that order of preference: denoised, then half 1.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from cryoshift.runtime.errors import InputError

RECONSTRUCTION_COLUMNS = (
    "rlnTomoReconstructedTomogram",
    "rlnTomoReconstructedTomogramDenoised",
    "rlnTomoReconstructedTomogramHalf1",
)


@dataclass(frozen=True)
class TomogramEntry:
    """One row of a tomogram table."""

    name: str
    path: Path
    pixel_size: float | None  # A per voxel of the reconstruction (tilt-series pixel x binning)
    tilt_series_pixel_size: float | None  # A per unbinned pixel
    binning: float | None
    size: tuple[float, float, float] | None = None  # rlnTomoSizeX/Y/Z, unbinned pixels
    written: str = ""  # the reconstruction's path as the table writes it
    # Why the tomogram cannot be used (a damaged pixel size, binning or size, no reconstruction,
    # a name listed twice, a file another tomogram gives too), naming the table and the row's
    # file line; "" for a usable row. Only this tomogram's picks fail.
    problem: str = ""
    # What the table says about rows no pick can reach (an empty rlnTomoName), for the summary
    notes: tuple[str, ...] = ()

    def voxels(self) -> tuple[float, float, float] | None:
        """The reconstruction's (X, Y, Z) voxels the row implies (unbinned size / binning)."""
        if self.size is None or not self.binning:
            return None
        x, y, z = (s / self.binning for s in self.size)
        return x, y, z


def is_tomogram_table(path: str | Path) -> bool:
    """A STAR file (``-t tomograms.star``) rather than a volume."""
    return Path(path).suffix.lower() == ".star"


def resolve_relative(name: str, star: Path) -> Path:
    """A path written in a RELION STAR file, resolved as the module docstring says.

    Why every place is looked at: the first that existed was used, so with ``Tomograms/TS_01.mrc``
    next to the STAR and another in the working directory (RELION's project folder, which RELION
    reads it from) one was picked without a word. Raises InputError (naming ``star``) then."""
    p = Path(name)
    if p.is_absolute():
        return p
    base = star.resolve().parent
    candidates = [base / p, *(parent / p for parent in base.parents), Path(os.getcwd()) / p]
    found: list[Path] = []  # the files (a folder is never a file to read: "." is everywhere)
    for c in candidates:
        if c.exists() and not c.is_dir() and not any(_same_file(c, f) for f in found):
            found.append(c)
    if len(found) > 1:
        raise InputError(
            star,
            f"{name} is both {found[0]} and {found[1]}, two different files (a relative path is looked "
            "up next to the STAR file, in each folder above it and in the working directory); which "
            "one is meant is a guess: write the path in full, or remove the wrong file",
        )
    return next((c for c in candidates if c.exists()), base / p)


def _same_file(a: Path, b: Path) -> bool:
    """``a`` and ``b`` are one file (a link, or one folder reached two ways)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _number(value: object) -> float | None:
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) and out > 0 else None


PIXEL_COLUMN = "rlnTomoTiltSeriesPixelSize"
BINNING_COLUMN = "rlnTomoTomogramBinning"
SIZE_COLUMNS = ("rlnTomoSizeX", "rlnTomoSizeY", "rlnTomoSizeZ")


def _positive(row: Any, label: str, columns: Any) -> tuple[float | None, str]:
    """``row[label]`` as a positive number, with "" or the damaged value as shown in a message.
    A column the table does not have is "not given" (None, ""); a value of the column that is
    zero, negative, NaN or text is damaged (a binning of 0 used to be read as 1, and NaN as "not
    given", the header's voxel size then used without a word)."""
    if label not in columns:
        return None, ""
    raw = row[label]
    value = _number(raw)
    if value is None:
        return None, f"{label} {raw!r}"
    return value, ""


NOT_WHOLE = "not a whole number of pixels"  # a damaged rlnTomoSizeX/Y/Z, as its message says


def _whole_size(row: Any, label: str, columns: Any) -> tuple[float | None, str]:
    """:func:`_positive` for an rlnTomoSizeX/Y/Z, which must be a whole number of pixels too.

    Why: 256.5 was accepted, and its half-pixel centre moved every centred pick (x = 16.0625
    instead of 16); a size that is not whole is a damaged row, not a size to guess from."""
    value, bad = _positive(row, label, columns)
    if value is not None and not float(value).is_integer():
        return None, f"{label} {row[label]!r} ({NOT_WHOLE})"
    return value, bad


@dataclass
class _Row:
    """One data row of a tomogram table as read, before the rows are checked against each other."""

    index: int  # 0-based data row
    name: str
    written: str  # the reconstruction as written; "" when the row has none
    path: Path
    pixel: float | None
    ts_pixel: float | None
    binning: float | None
    size: tuple[float, float, float] | None
    damaged: list[str]  # the row's damaged values ("rlnTomoSizeX 0.0")
    ambiguous: str = ""  # why the reconstruction's path is a guess (resolve_relative), or ""


def _read_row(path: Path, i: int, row: Any, columns: Any, col: str) -> _Row:
    """Data row ``i`` (a mapping of ``columns``) of the table ``path``; ``col``: its reconstruction."""
    rec = str(row[col]).strip()
    rec = "" if rec == "nan" else rec
    ts_pixel, bad_pixel = _positive(row, PIXEL_COLUMN, columns)
    binning, bad_binning = _positive(row, BINNING_COLUMN, columns)
    sizes, bad_sizes = zip(*(_whole_size(row, label, columns) for label in SIZE_COLUMNS), strict=True)
    # A damaged rlnTomoSizeX/Y/Z was dropped without a word, and with it the check of the
    # reconstruction's size that places centred-Angstrom picks.
    size = (sizes[0], sizes[1], sizes[2]) if None not in sizes else None
    # Without a binning the row does not say the reconstruction's voxel size: its header does
    # (binning 1 was assumed, and the header of a binned reconstruction then refused as
    # "2.5 A x binning 1").
    pixel = ts_pixel * binning if ts_pixel and binning else None
    # No reconstruction: the folder of the table stands in (never read: the row's picks fail).
    ambiguous = ""
    try:
        rec_path = resolve_relative(rec, path) if rec else path.resolve().parent
    except InputError as exc:  # two files: only this tomogram's picks fail (_problems)
        rec_path, ambiguous = path.resolve().parent / rec, exc.reason
    damaged = [b for b in (bad_pixel, bad_binning, *bad_sizes) if b]
    name = str(row["rlnTomoName"]).strip()
    return _Row(i, name, rec, rec_path, pixel, ts_pixel, binning, size, damaged, ambiguous)


def _places(path: Path, block: str, rows: list[int]) -> dict[int, int]:
    """The file line (1-based) of each 0-based data row of the loop ``block``; -1 where it is not
    known (a key-value block). One pass over the file, only when a row is to be named."""
    import numpy as np

    from cryoshift.runtime.tables import data_row_lines, scan_star

    if not rows:
        return {}
    star = next((b for b in scan_star(path) if b.name == block and b.loop), None)
    lines = data_row_lines(path, np.asarray(rows), star) if star is not None else [-1] * len(rows)
    return {r: int(line) for r, line in zip(rows, lines, strict=True)}


def _where(rows: list[int], lines: dict[int, int]) -> str:
    """``line 15`` / ``lines 14, 15`` (the file's lines), or ``data row 2`` where a line is not
    known: how every message of this module names a row (as tables.row_text names pick rows)."""
    import numpy as np

    from cryoshift.runtime.tables import rows_text

    return rows_text(np.asarray(rows), np.asarray([lines.get(r, -1) for r in rows]))


def partial_sizes(columns: Any) -> str:
    """Why a table's size columns cannot be used when it has some of rlnTomoSizeX/Y/Z but not all
    ("" when it has all three or none): every tomogram of it fails with this reason.

    Why: with one missing, the size check of the reconstruction was skipped, so an XZY
    (axis-swapped) reconstruction was cropped with Y and Z swapped, without a word; checking only
    the axes given would miss a swap into the missing one."""
    have = [c for c in SIZE_COLUMNS if c in columns]
    if not have or len(have) == len(SIZE_COLUMNS):
        return ""
    missing = [c for c in SIZE_COLUMNS if c not in columns]
    return (
        f"the table has {' and '.join(have)} but no {' or '.join(missing)}, so the reconstruction's "
        "size cannot be checked (a trimmed or axis-swapped one would place picks elsewhere); "
        "give all three size columns or none"
    )


def _problems(rows: list[_Row], col: str, partial: str = "") -> dict[int, tuple[list[int], str]]:
    """What makes rows unusable, by the first row of each: (the rows it concerns, why), with the
    tomogram named. A name listed more than once fails every row of it (which one is meant is a
    guess); rows of several names sharing one reconstruction file fail each of those names (the
    picks of one would be cropped from the other's volume); ``partial`` (:func:`partial_sizes`)
    fails every name. Rows without a name are left out here: no pick can reach them (see
    :func:`read_tomogram_table`)."""
    groups: dict[str, list[_Row]] = {}
    for r in rows:
        if r.name:
            groups.setdefault(r.name, []).append(r)
    owners: dict[str, list[_Row]] = {}  # reconstruction file -> the first row of each name giving it
    for group in groups.values():
        for key in dict.fromkeys(os.path.realpath(r.path) for r in group if r.written):
            owners.setdefault(key, []).append(next(r for r in group if os.path.realpath(r.path) == key))
    out: dict[int, tuple[list[int], str]] = {}
    for name, group in groups.items():
        first = group[0]
        if len(group) > 1:
            times = "twice" if len(group) == 2 else f"{len(group)} times"
            why = f"is listed {times}, so which row is meant is a guess; keep one"
            out[first.index] = ([r.index for r in group], f"tomogram {name!r} {why}")
            continue
        if not first.written:
            out[first.index] = ([first.index], f"tomogram {name!r} has no {col}")
            continue
        if first.ambiguous:
            out[first.index] = ([first.index], f"tomogram {name!r}: {first.ambiguous}")
            continue
        others = [o for o in owners[os.path.realpath(first.path)] if o.name != name]
        if others:
            shown = ", ".join(repr(o.name) for o in others[:3]) + (" ..." if len(others) > 3 else "")
            why = f"shares its reconstruction {first.written} with tomogram {shown}"
            why += "; each tomogram needs its own file"
            out[first.index] = ([first.index], f"tomogram {name!r} {why}")
        elif partial:
            out[first.index] = ([first.index], f"tomogram {name!r}: {partial}")
        elif first.damaged:
            which = (
                "it must be a positive number"
                if len(first.damaged) == 1
                else "each must be a positive number"
            )
            if any(NOT_WHOLE in d for d in first.damaged):
                which += " (rlnTomoSizeX/Y/Z a whole one)"
            out[first.index] = (
                [first.index],
                f"tomogram {name!r} has {' and '.join(first.damaged)}; {which}",
            )
    return out


def read_tomogram_table(path: str | Path, keep_damaged: bool = False) -> list[TomogramEntry]:
    """The tomograms listed in a RELION 5 ``tomograms.star`` (see the module docstring), one per
    name, in the order of the table.

    A tomogram that cannot be used is kept with its ``problem`` set, naming the table and its
    row(s) by file line: only that tomogram's picks fail (error rows). That is a row whose pixel
    size, binning or rlnTomoSizeX/Y/Z is damaged (0, negative, NaN, text), a row without a
    reconstruction, a name listed more than once (all its rows), a reconstruction file that
    several names give (each of them), and every row of a table with only some of
    rlnTomoSizeX/Y/Z. A row with an empty rlnTomoName has no picks to fail: it is
    left out, said in ``notes`` (every entry carries the table's notes; the planner adds them to
    the run's summary). A table in which no tomogram is usable is refused, unless
    ``keep_damaged`` (``cryoshift info`` describes it: every row is returned then, a row without a
    name as an entry named "" with its ``problem``); so are missing or duplicated columns.
    """
    from cryoshift.runtime.picks import read_star_blocks

    path = Path(path)
    blocks = read_star_blocks(path)
    _refuse_picks(path, blocks)
    names = [n for n, df in blocks.items() if "rlnTomoName" in df.columns]
    if not names:
        from cryoshift.runtime.tables import refuse_optimisation_set, scan_star

        refuse_optimisation_set(path, scan_star(path))  # -t optimisation_set.star: name its tables
        found = sorted({str(c) for df in blocks.values() for c in df.columns})
        raise InputError(path, f"not a tomogram table: no rlnTomoName column (found {', '.join(found[:8])})")
    if "global" not in names and len(names) > 1:  # which block lists the tomograms is a guess: refuse
        raise InputError(
            path,
            f"several blocks list tomograms (data_{', data_'.join(names)}) and none is data_global; "
            "keep one, or name it data_global",
        )
    block = "global" if "global" in names else names[0]
    df = blocks[block].reset_index(drop=True)
    used = ("rlnTomoName", PIXEL_COLUMN, BINNING_COLUMN, *SIZE_COLUMNS, *RECONSTRUCTION_COLUMNS)
    twice = [c for c in used if list(df.columns).count(c) > 1]
    if twice:  # which of the two is meant is a guess (and row[label] was two values)
        raise InputError(path, f"column {twice[0]} is given twice; keep one")
    col = next((c for c in RECONSTRUCTION_COLUMNS if c in df.columns), None)
    if col is None:
        raise InputError(
            path,
            "no reconstruction column: need rlnTomoReconstructedTomogram (run RELION's "
            "Reconstruct tomograms job, or pass the MRC files to -t instead)",
        )
    rows = [_read_row(path, int(i), row, df.columns, col) for i, row in enumerate(df.to_dict("records"))]
    problems = _problems(rows, col, partial_sizes(df.columns))
    unnamed = [r.index for r in rows if not r.name]
    lines = _places(path, block, sorted({i for rs, _ in problems.values() for i in rs} | set(unnamed)))
    said = {i: f"{path}: {_where(rs, lines)}: {why}" for i, (rs, why) in problems.items()}
    for i in unnamed:
        written = rows[i].written or f"no {col}"
        said[i] = (
            f"{path}: {_where([i], lines)}: empty rlnTomoName (reconstruction {written}); no pick can "
            "name this tomogram, so the row is left out"
        )
    notes = tuple(said[i] for i in unnamed)
    entries = []
    seen: set[str] = set()
    for r in rows:
        if (r.name and r.name in seen) or (not r.name and not keep_damaged):
            continue
        seen.add(r.name)
        problem = said.get(r.index, "")
        entries.append(
            TomogramEntry(
                r.name,
                r.path,
                r.pixel,
                r.ts_pixel,
                r.binning,
                r.size,
                r.written,
                problem,
                () if keep_damaged else notes,
            )
        )
    if rows and not keep_damaged and all(e.problem for e in entries):
        first = said[min(said)][len(f"{path}: ") :]
        every = f"every row is damaged ({len(rows)} in all), first " if len(rows) > 1 else ""
        raise InputError(path, f"no usable tomogram: {every}{first}")
    return entries


def table_notes(entries: Any) -> list[str]:
    """The notes of the tables ``entries`` (TomogramEntry) came from, each once, in order."""
    return list(dict.fromkeys(note for e in entries for note in e.notes))


def _refuse_picks(path: Path, blocks: dict[str, Any]) -> None:
    """Refuse a table of picks given as a tomogram table (``-t particles.star``): it was refused
    as lacking rlnTomoReconstructedTomogram, which sent users to RELION's Reconstruct job."""
    from cryoshift.runtime.picks import CENTERED_COLUMNS, PIXEL_COLUMNS

    columns = {c for df in blocks.values() for c in df.columns}
    if columns & set(RECONSTRUCTION_COLUMNS):
        return
    shown = {"rlnCenteredCoordinateX/Y/ZAngst": CENTERED_COLUMNS, "rlnCoordinateX/Y/Z": PIXEL_COLUMNS}
    coords = next((text for text, labels in shown.items() if set(labels) <= columns), None)
    if coords is not None:
        raise InputError(
            path,
            f"is a table of picks ({coords}), not of tomograms: give it as an input, and the "
            "tomograms (tomograms.star or the MRC files) with --tomograms",
        )


# A reconstruction whose MRC Y axis is at most this fraction of both X and Z looks un-rotated.
# Why this bound: IMOD's ``tilt`` writes X, Z, Y (the MRC's Y is the specimen's thickness) until
# ``trimvol -rx`` / ``clip rotx`` rotates it; a slab is rarely more than half as thick as it is
# wide, so an un-rotated one has Y at most about half of X and Z (the tester's 88x48x72: 2/3).
# A rotated tomogram (RELION, Warp, IMOD after rotation) has Z, its thickness, thinnest, and is
# never taken for one whatever the bound; only a tomogram cropped narrower in Y than its
# thickness would be, and a tomograms.star stating its size lets it through (unrotated_reason).
SIZE_TOLERANCE = 2.0  # voxels a reconstruction may differ from tomograms.star's size / binning
UNROTATED_Y_FRACTION = Fraction(2, 3)


def unrotated_reason(shape: tuple[int, ...], entry: TomogramEntry | None = None) -> str:
    """Why a tomogram of ``shape`` (Z, Y, X voxels) looks un-rotated (stored XZY), or "".

    Why: picks in X, Y, Z were cropped from such a file with Y and Z swapped, exit 0 and no word
    (every pick still fell inside, so :func:`outside_hint` never spoke); which axis is the
    thickness is a guess, so its picks fail. A tomograms.star row (``entry``) whose
    rlnTomoSizeX/Y/Z / binning agree with the file is the user's confirmation that Y is right."""
    if len(shape) != 3:
        return ""
    x, y, z = (int(v) for v in tuple(shape)[::-1])
    if not y <= UNROTATED_Y_FRACTION * min(x, z):
        return ""
    expected = entry.voxels() if entry is not None else None
    stated = ""
    if expected is not None:
        if all(abs(h - e) <= SIZE_TOLERANCE for h, e in zip((x, y, z), expected, strict=True)):
            return ""  # the table states this size: Y is the thin axis on purpose
        stated = f" (tomograms.star gives {'x'.join(f'{e:.4g}' for e in expected)})"
    return (
        f"it is {x}x{y}x{z} voxels (X, Y, Z){stated}, Y at most {UNROTATED_Y_FRACTION} of X and Z, so it "
        "looks un-rotated (stored XZY, Y the specimen's thickness, as IMOD's tilt writes it before "
        "trimvol -rx or clip rotx) and its picks would be cropped with Y and Z swapped; rotate it "
        "(trimvol -rx in.mrc out.mrc), or, if Y really is its thinnest axis, give it in a "
        "tomograms.star whose rlnTomoSizeX/Y/Z (unbinned) state this size"
    )


def refuse_unrotated(path: str | Path, shape: tuple[int, ...], entry: TomogramEntry | None = None) -> None:
    """Raise InputError naming ``path`` when :func:`unrotated_reason` finds it un-rotated: only
    that tomogram's picks fail (error rows), the others' are classified."""
    reason = unrotated_reason(shape, entry)
    if reason:
        raise InputError(path, reason)


MAX_BINNING_HINT = 64  # the largest coordinate-to-tomogram ratio read as a binning mismatch
# A binning scales every axis alike: the picks' reach over the tomogram's size (their largest
# coordinate / its size) may differ this many times between axes (picks seldom fill the slab's Z)
AXIS_RATIO_SPREAD = 1.5


def outside_hint(
    picks: str | Path,
    items: list,
    shapes: dict[str, tuple[int, ...]],
    tables: dict[str, TomogramEntry] | None = None,
) -> str | None:
    """A note when most picks of one table fall outside their tomograms, saying how many times
    too large the coordinates look (unbinned pixel picks against a binned reconstruction).

    ``items`` are planned items (``x, y, z`` voxels, ``tomo``), ``shapes`` (Z, Y, X) by name.
    """
    import numpy as np

    rows = [it for it in items if it.kind == "tomogram" and it.tomo in shapes]
    names = list(shapes)
    xyz = np.array([(it.x, it.y, it.z) for it in rows], dtype=np.float64).reshape(-1, 3)
    tomo = np.array([names.index(it.tomo) for it in rows], dtype=np.int32)
    return outside_hint_arrays(picks, xyz, tomo, dict(enumerate(shapes.values())), tables)


def outside_hint_arrays(
    picks: str | Path,
    xyz: Any,
    tomo: Any,
    shapes: dict[int, tuple[int, ...]],
    tables: dict[str, TomogramEntry] | None = None,
) -> str | None:
    """:func:`outside_hint` on arrays: ``xyz`` (n, 3) voxels, ``tomo`` (n,) tomogram numbers,
    ``shapes`` (Z, Y, X) by number (picks of numbers without a shape are left out)."""
    import numpy as np

    n_out = n_in = 0
    ratios = []  # per pick and axis: its coordinate over the tomogram's size on that axis
    for k, shape in shapes.items():
        rows = np.flatnonzero(tomo == k)
        if not len(rows):
            continue
        size = np.array(tuple(shape)[::-1], dtype=np.float64)  # (X, Y, Z) voxels
        part = xyz[rows]
        near = np.floor(part + 0.5)
        n_out += int(((near < 0) | (near >= size)).any(axis=1).sum())
        n_in += len(rows)
        ratios.append(np.abs(part / size))
    if not n_in or n_out * 2 <= n_in:
        return None
    # ratio ~N for picks spread over an N-x larger frame: the largest, of the picks no binning
    # explains left out (one pick at 1e308 made the factor a 300-digit number)
    per_axis = np.concatenate(ratios)
    per_pick = per_axis.max(axis=1)
    absurd = ~(per_pick <= MAX_BINNING_HINT)  # nan included
    head = f"{n_out} of {n_in} picks in {Path(picks).name} lie outside their tomograms"
    if absurd.sum() * 2 > n_out:
        return head + (
            f"; {int(absurd.sum())} lie more than {MAX_BINNING_HINT}x their tomogram's size away, which no "
            "binning explains: check the coordinate columns and their unit (tomogram voxels, or "
            "--coordinate-pixel-size)"
        )
    ratio = float(per_pick[~absurd].max(initial=0.0))
    if ratio < 1.5:
        return head + "; check the tomogram names and the coordinate convention"
    reach = per_axis[~absurd].max(axis=0)  # (X, Y, Z): how far the picks reach on each axis
    if not reach.max() <= reach.min() * AXIS_RATIO_SPREAD:
        return head + _axes_disagree(reach)
    factor = max(2, round(ratio))
    binnings = sorted({int(e.binning) for e in (tables or {}).values() if e.binning and e.binning > 1})
    if binnings and min(binnings) / 1.5 <= ratio <= max(binnings) * 1.05:
        factor = min(binnings, key=lambda b: abs(b - ratio))
    return (
        f"{head}; the coordinates look {factor}x too large for the reconstructions (unbinned pixel "
        f"picks?): rerun with --binning {factor} or --coordinate-pixel-size <A per pick pixel>"
    )


def _axes_disagree(reach: Any) -> str:
    """The hint's end when the picks reach ``reach`` (X, Y, Z) times the tomograms' size on each
    axis, ratios no one binning gives. Why: the largest ratio was offered as a binning, so a
    reconstruction with Y and Z swapped (IMOD's un-rotated XZY) read as "3x too large ... rerun
    with --binning 3", and following it cropped every pick at the wrong place."""
    shown = ", ".join(f"{a} {r:.2g}x" for a, r in zip("XYZ", reach, strict=True))
    return (
        f"; the picks reach {shown} the tomograms' size on each axis, which no one binning explains: "
        "check the tomograms' axis order against the picks' (a reconstruction with Y and Z swapped, "
        "as IMOD writes it before rotation?) and the coordinate columns"
    )
