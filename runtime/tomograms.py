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
directory; the first that exists wins (or the one next to the STAR when none does, so the
error names a sensible path).

Half-map (``rlnTomoReconstructedTomogramHalf1``) and denoised
(``rlnTomoReconstructedTomogramDenoised``) columns are used only when the full
reconstruction column is absent, in that order of preference: denoised, then half 1.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
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
    # Why the row cannot be used (a pixel size or binning that is 0, negative, NaN or text),
    # naming the table and the row; "" for a usable row. Only this tomogram's picks fail.
    problem: str = ""

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
    """A path written in a RELION STAR file, resolved as the module docstring says."""
    p = Path(name)
    if p.is_absolute():
        return p
    base = star.resolve().parent
    candidates = [base / p, *(parent / p for parent in base.parents), Path(os.getcwd()) / p]
    for c in candidates:
        if c.exists():
            return c
    return base / p


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
    """``row[label]`` as a positive number, with "" or why it is none. A column the table does
    not have is "not given" (None, ""); a value of the column that is zero, negative, NaN or text
    is damaged (a binning of 0 used to be read as 1, and NaN as "not given", the header's voxel
    size then used without a word)."""
    if label not in columns:
        return None, ""
    raw = row[label]
    value = _number(raw)
    if value is None:
        return None, f"{label} {raw!r}; it must be a positive number"
    return value, ""


def read_tomogram_table(path: str | Path, keep_damaged: bool = False) -> list[TomogramEntry]:
    """The tomograms listed in a RELION 5 ``tomograms.star`` (see the module docstring).

    A row whose pixel size or binning is damaged (0, negative, NaN, text) is kept with its
    ``problem`` set: only that tomogram's picks fail (error rows naming the table and the row).
    A table whose every row is damaged is refused (nothing in it can be used), unless
    ``keep_damaged`` (``cryoshift info`` describes it); so are missing or duplicated columns,
    rows without a name or reconstruction, a name listed twice and a file listed twice.
    """
    from cryoshift.runtime.picks import read_star_blocks

    path = Path(path)
    blocks = read_star_blocks(path)
    _refuse_picks(path, blocks)
    names = [n for n, df in blocks.items() if "rlnTomoName" in df.columns]
    if not names:
        found = sorted({str(c) for df in blocks.values() for c in df.columns})
        raise InputError(path, f"not a tomogram table: no rlnTomoName column (found {', '.join(found[:8])})")
    if "global" not in names and len(names) > 1:  # which block lists the tomograms is a guess: refuse
        raise InputError(
            path,
            f"several blocks list tomograms (data_{', data_'.join(names)}) and none is data_global; "
            "keep one, or name it data_global",
        )
    df = blocks["global" if "global" in names else names[0]].reset_index(drop=True)
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
    entries = []
    seen: set[str] = set()
    files: dict[str, str] = {}  # reconstruction file -> the tomogram that has it
    for i, row in df.iterrows():
        name = str(row["rlnTomoName"]).strip()
        if not name or name in seen:
            raise InputError(
                path, f"row {i}: " + ("empty rlnTomoName" if not name else f"tomogram {name!r} listed twice")
            )
        seen.add(name)
        rec = str(row[col]).strip()
        if not rec or rec == "nan":
            raise InputError(path, f"row {i}: tomogram {name!r} has no {col}")
        ts_pixel, bad_pixel = _positive(row, PIXEL_COLUMN, df.columns)
        binning, bad_binning = _positive(row, BINNING_COLUMN, df.columns)
        damaged = " and ".join(b for b in (bad_pixel, bad_binning) if b)
        problem = f"{path}: row {i}: tomogram {name!r} has {damaged}" if damaged else ""
        # Without a binning the row does not say the reconstruction's voxel size: its header
        # does (binning 1 was assumed, and the header of a binned reconstruction then refused
        # as "2.5 A x binning 1").
        pixel = ts_pixel * binning if ts_pixel and binning else None
        sizes = [_number(row.get(label)) for label in SIZE_COLUMNS]
        size = (sizes[0], sizes[1], sizes[2]) if None not in sizes else None
        rec_path = resolve_relative(rec, path)
        # Two tomograms with one reconstruction: the picks of one would be cropped from the
        # other's volume without a word.
        other = files.setdefault(os.path.realpath(rec_path), name)
        if other != name:
            raise InputError(
                path,
                f"row {i}: tomogram {name!r} has the reconstruction of tomogram {other!r} ({rec}); "
                "each tomogram needs its own file",
            )
        entries.append(TomogramEntry(name, rec_path, pixel, ts_pixel, binning, size, rec, problem))
    if entries and all(e.problem for e in entries) and not keep_damaged:
        first = entries[0].problem[len(f"{path}: ") :]
        every = f"every row is damaged ({len(entries)} in all), first " if len(entries) > 1 else ""
        raise InputError(path, f"no usable tomogram: {every}{first}")
    return entries


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


MAX_BINNING_HINT = 64  # the largest coordinate-to-tomogram ratio read as a binning mismatch


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
    ratios = []  # per pick: its largest coordinate over the tomogram's size on that axis
    for k, shape in shapes.items():
        rows = np.flatnonzero(tomo == k)
        if not len(rows):
            continue
        size = np.array(tuple(shape)[::-1], dtype=np.float64)  # (X, Y, Z) voxels
        part = xyz[rows]
        near = np.floor(part + 0.5)
        n_out += int(((near < 0) | (near >= size)).any(axis=1).sum())
        n_in += len(rows)
        ratios.append(np.abs(part / size).max(axis=1))
    if not n_in or n_out * 2 <= n_in:
        return None
    # ratio ~N for picks spread over an N-x larger frame: the largest, of the picks no binning
    # explains left out (one pick at 1e308 made the factor a 300-digit number)
    per_pick = np.concatenate(ratios)
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
    factor = max(2, round(ratio))
    binnings = sorted({int(e.binning) for e in (tables or {}).values() if e.binning and e.binning > 1})
    if binnings and min(binnings) / 1.5 <= ratio <= max(binnings) * 1.05:
        factor = min(binnings, key=lambda b: abs(b - ratio))
    return (
        f"{head}; the coordinates look {factor}x too large for the reconstructions (unbinned pixel "
        f"picks?): rerun with --binning {factor} or --coordinate-pixel-size <A per pick pixel>"
    )
