"""Planning a pick table (STAR or CSV of coordinates): its tomogram names matched to files, its
coordinates brought to reconstruction voxels (RELION 5 centred Angstrom, Warp/M pixel sizes,
``--binning`` / ``--coordinate-pixel-size``), its rows kept as arrays (runtime/pickrows.py).

Each function takes the :class:`~cryoshift.runtime.sources.planner.Planner` it adds to, as
copick_io.plan does for copick projects.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from cryoshift.runtime.contract import VOXEL_TOLERANCE, voxel_mismatch
from cryoshift.runtime.errors import InputError
from cryoshift.runtime.picks import ORIGIN_COLUMNS, PIXEL_COLUMNS
from cryoshift.runtime.sources.items import PlanRefusal
from cryoshift.runtime.sources.paths import match_tomogram, strip_suffix
from cryoshift.runtime.tomograms import SIZE_TOLERANCE

STACK_NOT_TOMOGRAM = "is a volume stack, not a tomogram"  # crop from tomograms (one volume) only
_WARP_PIXEL = re.compile(r"_(\d+(?:\.\d+)?)Apx$")  # Warp's reconstruction names: TS_01_10.00Apx


def star_has(path: Path, label: str) -> bool:
    """Cheap sniff of a STAR file's column labels (no full parse)."""
    try:
        with open(path, errors="replace") as fh:
            for _, line in zip(range(200), fh, strict=False):
                if line.strip().startswith("_" + label):
                    return True
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc}") from exc
    return False


STACKS_2D = "rlnTomoSubTomosAre2DStacks"  # RELION 5 Extract's data_general flag (1: the default)


def refuse_2d_extraction(path: Path) -> None:
    """Refuse a RELION 5 Extract particles.star whose ``rlnImageName`` files are per-particle
    stacks of 2-D tilt-series images (``data_general`` ``rlnTomoSubTomosAre2DStacks 1``), naming
    what it is and what to give instead; a STAR without an ``rlnImageName`` listing passes.

    Why: with ``-t`` it was told to delete rlnImageName; without, each stack became an error row
    ("stack of 41 2-D images"): neither said that the file holds no subtomograms, and that the
    picks the extraction started from (its input particles.star) are what cryoshift crops."""
    from cryoshift.runtime.tables import scan_star

    if path.suffix.lower() != ".star":
        return
    blocks = scan_star(path)
    if not any(b.loop and "rlnImageName" in b.labels for b in blocks):
        return  # picks (RELION 5's picking jobs write the flag too): no listing to mistake
    flag = next((b.values[STACKS_2D] for b in blocks if not b.loop and STACKS_2D in b.values), None)
    if str(flag).strip() not in ("1", "1.0"):
        return
    raise InputError(
        path,
        f"is a RELION 5 Extract output of 2-D tilt-series stacks ({STACKS_2D} 1: rlnImageName names "
        "per-particle stacks of 2-D images, not subtomograms); give the picks' particles.star from "
        "the picking or refinement job (the Extract job's input) with -t tomograms.star instead, or "
        "extract 3-D subtomograms (Extract's 2D stacks option off)",
    )


def plan_pick_table(planner: Any, path: Path) -> None:
    """Read the coordinates of the pick table ``path`` and add its rows to ``planner``.

    Every kind (RELION pixels or centred Angstrom, Warp/M, CSV) is read by one reader
    (tables.read_pick_table), so every kind gets its checks: rows with too many fields and rows
    whose coordinates are not numbers become error rows, and pixel coordinates that disagree with
    centred Angstrom ones beside them fail (add_picks).
    """
    from cryoshift.runtime.tables import pick_layout, read_pick_table
    from cryoshift.runtime.warp import (
        DETECTOR_COLUMNS,
        check_detector_columns,
        scale_to_voxels,
        unusable_rows,
    )

    layout = pick_layout(path)
    star = path.suffix.lower() == ".star"
    # Centred Angstrom columns mean the same in a CSV as in a STAR (a CSV has no tomograms.star
    # of its own: the -t tomograms' headers, or a -t tomograms.star, give pixel size and centre).
    # A CSV of them used to be refused with "pass the tomogram MRC with --tomograms" although -t
    # was given.
    centred = layout.centred
    in_voxels = centred  # Angstrom picks (and Warp/M picks with a stated pixel size) need no --binning
    rescaled = planner.binning or planner.coordinate_pixel_size
    if star and not centred and not rescaled:
        check_detector_columns(path, layout.columns)
    # Warp/M: the table states its coordinates' pixel size, used unless the user gives one
    warp = star and not centred and not rescaled and set(DETECTOR_COLUMNS) <= set(layout.columns)
    if star and not centred and (planner.coordinate_pixel_size or not (warp or layout.angst)):
        _refuse_groupless_picks(path, layout)  # before any reading of the groups' sizes
    if star and not centred and planner.coordinate_pixel_size:
        _refuse_mixed_optics(planner, path, layout.columns)
    # Pixel picks whose files state a pixel size (RELION 4's data_optics, a tomograms.star's
    # tilt-series pixel and binning): checked per tomogram below, against the options too;
    # centred Angstrom columns beside the pixel ones settle the unit (_disagreeing_rows).
    stated = not centred and not warp and not layout.angst
    # Both kinds: the stated size is one reading of the pixel columns in the agreement check
    # (cryoshift's own predictions.star of a --binning run holds unbinned pixels beside centred)
    both = star and not centred and not warp and bool(layout.angst)
    optics = optics_pixel_sizes(path) if star and (stated or both) else None
    problems: dict[str, str] = {}  # tomogram name -> why its picks cannot be converted
    shifts = shift_columns(layout.columns)
    if centred and rescaled:  # the user may think their picks are binned: say they are not scaled
        option = "--binning" if planner.binning else "--coordinate-pixel-size"
        note = (
            f"{path}: coordinates in centred Angstrom (RELION 5) are placed with each tomogram's own "
            f"voxel size; {option} applies to pixel coordinates only and is not used for them"
        )
        if note not in planner.notes:
            planner.notes.append(note)
    if centred:
        # RELION 5 centred Angstrom coordinates: converted with each tomogram's own header;
        # picks outside the tomogram become error rows when cropped, like pixel picks, and the
        # picks of a tomogram that cannot be read become error rows naming it (add_picks).
        def shape(name: str) -> Any:
            return tomogram_shape(planner, path, name)

        picks = read_pick_table(
            path,
            pixel_size=_or_problem(problems, path, lambda name: tomogram_pixel(planner, path, name)),
            tomo_shape=_or_problem(problems, path, shape),
            skip_bad_rows=True,
            unresolved="skip",
            extra=shifts,
            layout=layout,
            centre=_or_problem(problems, path, lambda name: tomogram_centre(planner, path, name)),
        )
    else:  # streamed: names and coordinates (and a Warp/M pixel size), as arrays
        extra = (DETECTOR_COLUMNS if warp else ()) + shifts
        if optics and OPTICS_GROUP in layout.columns:
            extra += (OPTICS_GROUP,)
        picks = read_pick_table(path, skip_bad_rows=True, extra=extra, layout=layout)
    if optics and stated and not rescaled:  # an option says what the coordinates are: the groups need not
        _fail_unknown_groups(planner, path, picks, optics)
    if stated:
        # RELION's pixel columns mean the same in a CSV (a particles.star saved as a table) as in a STAR
        relion = star or tuple(layout.coords) == PIXEL_COLUMNS
        _refuse_ambiguous_pixels(planner, path, picks, optics.sizes if optics else {}, problems, relion)
    planner.notes.extend(n for n in picks.notes if n not in planner.notes)  # mixed decimal marks
    shift_note = _shift_note(path, picks.extra, shifts)
    if shift_note:
        planner.notes.append(shift_note)
    if warp:
        # A row without a usable pixel size, and a tomogram whose voxel size cannot be known,
        # fail their picks (bad rows, problems), never cropped at unscaled coordinates.
        unusable = unusable_rows(picks.extra)
        if unusable:
            _add_bad_rows(path, picks, unusable)
        voxel_of = _or_problem(problems, path, lambda name: tomogram_pixel(planner, path, name))
        note = scale_to_voxels(path, picks, voxel_of)
        if note:
            planner.notes.append(note)
            in_voxels = True
    add_picks(
        planner,
        path,
        picks,
        scale=not in_voxels,
        problems=problems,
        pixels=not centred,
        optics=optics if both else None,
    )


def shift_columns(columns: list[str]) -> tuple[str, ...]:
    """The refinement-shift columns (``rlnOriginX/Y/ZAngst``, RELION 3's pixel ``rlnOriginX/Y/Z``)
    a pick table has, named as in ``columns``: a STAR's labels, or a CSV's header, whose names
    are found whatever their case (as x, y, z are). Why: a CSV carrying them got no "shifts not
    applied" note while the same picks as a STAR did."""
    lower = {c.lower(): c for c in reversed(columns)}
    found = []
    for group in ORIGIN_COLUMNS:
        for label in group:
            name = label if label in columns else lower.get(label.lower())
            if name is not None and name not in found:
                found.append(name)
    return tuple(found)


def _shift_note(path: Path, extra: Any, columns: tuple[str, ...]) -> str | None:
    """A note when picks carry refinement shifts (``rlnOriginX/Y/ZAngst``): cropping at the
    coordinates alone is what the user asked for only if the shifts are zero, so say it."""
    if not columns:
        return None
    values = np.column_stack([pd.to_numeric(pd.Series(extra[c]), errors="coerce") for c in columns])
    moved = np.nan_to_num(np.abs(values)).max(axis=1) > 0
    if not moved.any():
        return None
    unit = "A" if columns[0].lower().endswith("angst") else "pixels"
    return (
        f"{path}: {int(moved.sum())} of {len(moved)} picks carry refinement shifts ({', '.join(columns)}, "
        f"up to {np.nanmax(np.abs(values)):.3g} {unit}), which are not applied: subtomograms are cropped "
        "at the coordinates; re-centre the picks first (relion_star_handler --center) if they matter"
    )


def _add_bad_rows(path: Path, picks: Any, more: dict[int, str]) -> None:
    """Make ``more`` (row -> reason) bad rows of ``picks`` besides those it has; a table whose
    every row is bad is refused (nothing in it can be classified)."""
    from cryoshift.runtime.tables import bad_rows_text

    rows, lines, reasons = _merge_bad_rows(path, picks, more)
    if len(rows) == len(picks):
        raise InputError(
            path, bad_rows_text(rows, lines, dict(zip(rows.tolist(), reasons, strict=True)), every=True)
        )
    picks.bad_rows, picks.bad_lines, picks.bad_reasons = rows, lines, reasons


TILT_SERIES_PIXEL = "rlnTomoTiltSeriesPixelSize"


def _refuse_mixed_optics(planner: Any, path: Path, columns: list[str]) -> None:
    """Refuse ``--coordinate-pixel-size`` for pixel picks whose optics groups (RELION 4's
    data_optics) have different tilt-series pixel sizes: one value is wrong for some of them, and
    their picks were cropped at coordinates scaled by it without a word.

    Only usable sizes (positive, finite) differ: a group whose value is damaged (nan, 0, text)
    states no size the option could contradict (without the option its picks fail, offering
    --coordinate-pixel-size), and it was shown as "group 2 nan A", as if nan were a pixel size."""
    table = _optics_table(path)
    if table is None or OPTICS_GROUP not in table.columns:
        return
    written = table[TILT_SERIES_PIXEL].astype(object).where(table[TILT_SERIES_PIXEL].notna(), "")
    sizes = dict(zip(table[OPTICS_GROUP].astype(str).str.strip(), written, strict=True))
    if len(_usable_sizes(sizes)) < 2:
        return
    if OPTICS_GROUP in columns:  # only the groups the picks use (a second read, only here)
        from cryoshift.runtime.tables import read_pick_table

        used = read_pick_table(path, skip_bad_rows=True, extra=(OPTICS_GROUP,), convert=False)
        groups = {str(g).strip() for g in set(used.extra[OPTICS_GROUP])}
        sizes = {g: v for g, v in sizes.items() if g in groups}
        if len(_usable_sizes(sizes)) < 2:
            return
    usable = _usable_sizes(sizes)
    shown = ", ".join(_group_pixel_text(g, usable.get(g), v) for g, v in list(sizes.items())[:4])
    raise InputError(
        path,
        f"--coordinate-pixel-size {planner.coordinate_pixel_size:g} is one pixel size, but the picks' "
        f"optics groups have different ones (data_optics {TILT_SERIES_PIXEL}: {shown}); classify "
        "each group's picks on its own, or give --binning if every tomogram is binned alike",
    )


def _refuse_groupless_picks(path: Path, layout: Any) -> None:
    """Refuse pixel picks without an ``rlnOpticsGroup`` column beside a ``data_optics`` of optics
    groups whose tilt-series pixel sizes differ: which group, so which pixel size, applies to each
    pick is unknown.

    Why: each path guessed another group (no option: group 1's size; ``--binning``: group 2's;
    ``--coordinate-pixel-size``: "the picks' optics groups have different ones"), three messages
    for one problem. Groups of one size (or damaged sizes, which _fail_unknown_groups reports)
    leave nothing to choose."""
    if OPTICS_GROUP in layout.columns:
        return
    optics = optics_pixel_sizes(path)
    if optics is None or len(optics.sizes) < 2:
        return
    sizes = list(optics.sizes.values())
    if all(_agree(sizes[0], v) for v in sizes[1:]):
        return
    shown = ", ".join(f"group {g} {v:g} A" for g, v in list(optics.sizes.items())[:4])
    more = f" and {len(sizes) - 4} more" if len(sizes) > 4 else ""
    block = f"data_{layout.block.name}" if layout.block is not None else "the picks"
    raise InputError(
        path,
        f"{block} has no {OPTICS_GROUP} column, but data_optics lists {len(sizes)} optics groups of "
        f"different {TILT_SERIES_PIXEL} ({shown}{more}): which applies to each pick is unknown; add "
        f"an {OPTICS_GROUP} column to {block}, or keep only the picks' group in data_optics",
    )


def _usable_sizes(written: dict[str, Any]) -> dict[str, float]:
    """The groups of ``written`` (group -> value as written) whose value is a positive finite
    number of A, as floats (NaN is unequal to itself: two damaged groups read as two sizes)."""
    values = pd.to_numeric(pd.Series(list(written.values()), dtype=object), errors="coerce")
    return {g: float(v) for g, v in zip(written, values, strict=True) if np.isfinite(v) and v > 0}


def _group_pixel_text(group: str, size: float | None, written: Any) -> str:
    """One optics group in the mixed-optics refusal: its pixel size, or that it has none usable
    (with the value as written), never "nan A"."""
    if size is not None:
        return f"group {group} {size:g} A"
    return f"group {group} no usable pixel size ({str(written).strip()!r})"


OPTICS_GROUP = "rlnOpticsGroup"


def _optics_table(path: Path) -> pd.DataFrame | None:
    """A STAR's ``data_optics`` loop (its tilt-series pixel sizes as written), or None when it has
    none or states no ``rlnTomoTiltSeriesPixelSize``."""
    from cryoshift.runtime.tables import read_loop, scan_star

    optics = next((b for b in scan_star(path) if b.name == "optics" and b.loop), None)
    if optics is None or TILT_SERIES_PIXEL not in optics.labels:
        return None
    return read_loop(path, optics, text=(TILT_SERIES_PIXEL,), verbatim=(TILT_SERIES_PIXEL,))


class OpticsPixels(NamedTuple):
    """What a STAR's ``data_optics`` states of its tilt-series pixel sizes, per optics group."""

    sizes: dict[str, float]  # group -> rlnTomoTiltSeriesPixelSize (A), positive numbers only
    damaged: dict[str, str]  # group -> the value as written, where it is no positive number


def optics_pixel_sizes(path: Path) -> OpticsPixels | None:
    """The ``rlnTomoTiltSeriesPixelSize`` (A) of each optics group of a STAR's ``data_optics``
    loop, or None when it states none.

    A value that is no positive finite number (nan, 0, -10, abc, inf) is kept as damaged, as
    tomograms.star's damaged pixel sizes are (runtime/tomograms.py): such groups were dropped
    without a word, and their picks cropped as if in the tomogram's voxels."""
    table = _optics_table(path)
    if table is None:
        return None
    written = table[TILT_SERIES_PIXEL].astype(object).where(table[TILT_SERIES_PIXEL].notna(), "")
    values = pd.to_numeric(table[TILT_SERIES_PIXEL], errors="coerce")
    groups = (
        table[OPTICS_GROUP].astype(str).str.strip()
        if OPTICS_GROUP in table.columns
        else pd.Series([str(i + 1) for i in range(len(table))])
    )
    sizes: dict[str, float] = {}
    damaged: dict[str, str] = {}
    for group, value, raw in zip(groups, values, written, strict=True):
        if np.isfinite(value) and value > 0:
            sizes[group] = float(value)
        else:
            damaged[group] = str(raw).strip()
    return OpticsPixels(sizes, damaged) if sizes or damaged else None


def _fail_unknown_groups(planner: Any, path: Path, picks: Any, optics: OpticsPixels) -> None:
    """Make the picks of each optics group whose ``data_optics`` pixel size is damaged, or that
    ``data_optics`` does not list at all, bad rows naming the group (a table whose every pick is
    in such a group is refused): where those pixel coordinates lie cannot be known. Without an
    ``rlnOpticsGroup`` column every pick is in the table's groups, damaged ones included.

    Why: picks of an unlisted group (data_optics 1 and 2, every pick group 3) skipped the pixel
    size check and were cropped as tomogram voxels without a word."""
    if OPTICS_GROUP in picks.extra:
        groups = [str(g).strip() for g in picks.extra[OPTICS_GROUP]]
    elif optics.damaged:
        groups = [next(iter(optics.damaged))] * len(picks)
    else:
        return
    way_out = (
        "; correct data_optics, or give --coordinate-pixel-size or --binning"
        if getattr(planner, "scale_options", True)
        else "; correct data_optics"
    )
    listed = ", ".join(sorted({*optics.sizes, *optics.damaged}))

    def reason(group: str) -> str:
        if group in optics.damaged:
            return (
                f"optics group {group} has {TILT_SERIES_PIXEL} {optics.damaged[group]!r} in data_optics, "
                f"not a positive number of A, so where its pixel picks lie is unknown{way_out}"
            )
        if group not in optics.sizes:
            return (
                f"optics group {group or '(empty)'}, which data_optics does not list (it lists group "
                f"{listed}), so the pixel size of its pixel picks is unknown{way_out}"
            )
        return ""

    bad = {row: why for row, why in ((row, reason(g)) for row, g in enumerate(groups)) if why}
    if bad:
        _add_bad_rows(path, picks, bad)


class StatedPixel(NamedTuple):
    """A pixel size the files state for a tomogram's pixel picks, and which file says it."""

    size: float  # A per pixel of the coordinates as the file states them
    said: str  # "data_optics gives rlnTomoTiltSeriesPixelSize 5 A", as the reasons show it


def _stated_pixels(
    planner: Any, name: str, tomo_path: Path, sizes: list[float], relion: bool
) -> list[StatedPixel]:
    """The pixel sizes the files state for the pixel picks of tomogram ``name``: ``sizes`` (the
    data_optics groups its picks are in), else, for a STAR's picks (``relion``: RELION writes its
    rlnCoordinateX/Y/Z in tilt-series pixels; a CSV's x, y, z are documented as the
    reconstruction's voxels), its tomograms.star row's tilt-series pixel where the row gives a
    binning too (the reconstruction is that many times coarser)."""
    if sizes:
        return [StatedPixel(v, f"data_optics gives {TILT_SERIES_PIXEL} {v:g} A") for v in sizes]
    entry = table_entry(planner, name, tomo_path) if relion else None
    if entry is None or not entry.pixel_size:
        return []
    ts, binning = entry.tilt_series_pixel_size, entry.binning
    return [StatedPixel(ts, f"tomograms.star gives {TILT_SERIES_PIXEL} {ts:g} A (binning {binning:g})")]


def _refuse_ambiguous_pixels(
    planner: Any, path: Path, picks: Any, optics: dict[str, float], problems: dict[str, str], relion: bool
) -> None:
    """Fail the picks of each tomogram (kept in ``problems``) whose pixel coordinates' stated
    pixel size (:func:`_stated_pixels`) is not its voxel size when neither ``--binning`` nor
    ``--coordinate-pixel-size`` says what they are, or is neither the option's reading nor the
    voxel size when one does.

    Why: RELION 4 writes rlnCoordinateX/Y/Z in unbinned tilt-series pixels, but picks made on the
    binned tomogram (and tables written by other tools) carry the same columns in its voxels;
    they were cropped as voxels without a word, so RELION 4's own picks landed 2x (bin 2) too far
    out. Which reading is right is the user's to say: the reason offers both. An option that
    matches neither (``--binning 4`` for 5 A pixels of a 10 A tomogram) cropped every pick at the
    wrong place, exit 0; so did a stated size that was not the model's where the header gives no
    voxel size to compare it with (the tomogram is read in the model's voxels then).
    """
    if not optics and not (relion and _has_tomogram_table(planner)):
        return  # no file states a pixel size: no header to read for it
    groups = None
    if OPTICS_GROUP in picks.extra:
        groups = np.array([str(g).strip() for g in picks.extra[OPTICS_GROUP]], dtype=object)
    for k, name in enumerate(picks.names):
        if name in problems:
            continue
        if groups is None:
            sizes = sorted(set(optics.values()))
        else:
            used = set(groups[picks.tomo == k].tolist())
            sizes = sorted({v for g, v in optics.items() if g in used})
        try:
            voxel, header = _voxel_of(planner, path, name)
            stated = _stated_pixels(planner, name, header["path"], sizes, relion)
        except PlanRefusal:
            raise
        except InputError:
            continue  # unmatched, unreadable: add_picks says so as for any pick table
        known = voxel is not None
        voxel = voxel if known else float(getattr(planner, "model_voxel", 0) or 0)
        if not stated or voxel <= 0:
            continue
        why = (
            _option_reason(planner, name, stated, voxel, known)
            if planner.binning or planner.coordinate_pixel_size
            else _pixels_reason(planner, name, stated, voxel, known)
        )
        if why:
            problems[name] = why


def _has_tomogram_table(planner: Any) -> bool:
    """Whether ``-t`` gave a tomograms.star (its rows are read with the tomogram index)."""
    try:
        planner.tomogram_index()
    except PlanRefusal:
        raise
    except InputError:
        return False  # add_picks says why, as for any pick table
    return bool(planner.tomo_tables)


def _agree(a: float, b: float) -> bool:
    """Two pixel sizes the same within the project's voxel-size tolerance."""
    return (voxel_mismatch(a, b) or 0.0) <= VOXEL_TOLERANCE


def _voxels_text(voxel: float, known: bool) -> str:
    """The tomogram's voxel size in a reason: its own, or the model's standing in for a header
    without one (the tomogram is cropped as if in the model's voxels then)."""
    if known:
        return f"the tomogram's voxels are {voxel:.4g} A"
    return f"the tomogram's header has no usable voxel size (it is read in the model's {voxel:.4g} A voxels)"


def _readings(stated: float, voxel: float, known: bool) -> str:
    """The options that say each reading of pixel picks: tilt-series pixels of ``stated`` A, or the
    tomogram's voxels (--coordinate-pixel-size needs the header's voxel size; --binning does not)."""
    if known:
        return (
            f"give --coordinate-pixel-size {stated:g} if they are tilt-series pixels (as RELION 4 "
            f"writes them), or --coordinate-pixel-size {voxel:.4g} (or --binning 1) if they are the "
            "tomogram's voxels"
        )
    return (
        f"give --binning {voxel / stated:.4g} if they are tilt-series pixels (as RELION 4 writes "
        "them), or --binning 1 if they are the tomogram's voxels"
    )


def _pixels_reason(planner: Any, name: str, stated: list[StatedPixel], voxel: float, known: bool) -> str:
    """Why pixel picks of tomogram ``name`` fail when no option is given (see
    :func:`_refuse_ambiguous_pixels`), "" when every stated size is the voxel size; with the way
    out this command has: classify's options, or (evaluate, train, export, which have none)
    rescaling the table."""
    off = next((s for s in stated if not _agree(s.size, voxel)), None)
    if off is None:
        return ""
    pixel = off.size
    head = (
        f"the picks of tomogram {name!r} are pixel coordinates (rlnCoordinateX/Y/Z) and {off.said}, "
        f"but {_voxels_text(voxel, known)}: RELION 4 writes such coordinates in tilt-series pixels, "
        "while picks made on the binned tomogram are in its voxels, so where they lie is a guess; "
    )
    if getattr(planner, "scale_options", True):
        return head + _readings(pixel, voxel, known)
    already = (
        f"set {TILT_SERIES_PIXEL} to {voxel:.4g}"
        if off.said.startswith("data_optics")
        else "give the tomogram files to --tomograms instead of tomograms.star"
    )
    return head + (
        "this command has no --binning or --coordinate-pixel-size: rescale the coordinates to the "
        f"tomogram's voxels (x {pixel / voxel:.4g} if they are tilt-series pixels, as RELION 4 writes "
        f"them), or {already} if they already are"
    )


def _option_reason(planner: Any, name: str, stated: list[StatedPixel], voxel: float, known: bool) -> str:
    """Why pixel picks of tomogram ``name`` fail when ``--binning`` / ``--coordinate-pixel-size``
    reads them as pixels of a size the files do not state (neither a stated tilt-series pixel nor
    the tomogram's voxel), "" when the option agrees with them. Why: the option was applied
    without a look at what the table says, and every pick cropped at the wrong place, exit 0."""
    if planner.binning:
        option, implied = f"--binning {planner.binning:g}", voxel / planner.binning
    else:
        option, implied = (
            f"--coordinate-pixel-size {planner.coordinate_pixel_size:g}",
            planner.coordinate_pixel_size,
        )
    if _agree(implied, voxel):
        return ""  # the tomogram's voxels: the reading every refusal offers
    off = next((s for s in stated if not _agree(implied, s.size)), None)
    if off is None:
        return ""
    return (
        f"{option} reads the picks of tomogram {name!r} as {implied:.4g} A pixels, but {off.said} and "
        f"{_voxels_text(voxel, known)}: the option agrees with neither; {_readings(off.size, voxel, known)}"
    )


def table_entry(planner: Any, name: str, tomo_path: str | Path | None = None) -> Any:
    """The tomograms.star row (TomogramEntry) of the tomogram a pick table calls ``name``: by
    rlnTomoName, else the row listing the file the name matched (``tomo_path``). Picks naming a
    reconstruction by its file name or path got no row: the table's voxel size and its checks
    against the header were skipped for them, without a word."""
    entry = planner.tomo_tables.get(name)
    if entry is not None or not planner.tomo_tables:
        return entry
    if tomo_path is None:
        try:
            tomo_path = match_tomogram(name, planner.tomogram_index(), Path(name))
        except InputError:
            return None
    return next((e for e in planner.tomo_tables.values() if Path(e.path) == Path(tomo_path)), None)


def _or_problem(problems: dict[str, str], picks: Path, fact: Any) -> Any:
    """``fact(name)``, or None with the reason kept in ``problems`` when that tomogram cannot be
    used: its picks become error rows instead of the whole table failing (PlanRefusal still stops)."""

    def get(name: str) -> Any:
        try:
            return fact(name)
        except PlanRefusal:
            raise
        except InputError as exc:
            own = exc.path is None or exc.path == str(picks)
            problems.setdefault(name, exc.reason if own else tomogram_problem(exc.path, exc))
            return None

    return get


def tomogram_header(planner: Any, picks: Path, name: str) -> dict[str, Any]:
    """The MRC header of the tomogram a pick table calls ``name``."""
    from cryoshift.runtime.mrc import read_header

    index = planner.tomogram_index()
    if not name and len(index) == 1:
        name = next(iter(index))
    tomo_path = match_tomogram(name, index, picks)
    refuse_damaged(table_entry(planner, name, tomo_path))
    try:
        return read_header(tomo_path)
    except InputError as exc:
        raise _not_found(planner, name, tomo_path, exc) from exc


def refuse_damaged(entry: Any) -> None:
    """Refuse the tomograms.star row ``entry`` when it cannot be used (a damaged pixel size,
    binning or size, no reconstruction, a name listed twice, a file another row gives: its
    ``problem``): its reason names the table and the line, and only that tomogram's picks fail
    with it (the header's voxel size is not used in its place)."""
    if entry is not None and entry.problem:
        raise InputError(None, entry.problem)


def _not_found(planner: Any, name: str, tomo_path: Path, exc: InputError) -> InputError:
    """``exc``, for a tomograms.star reconstruction that is not there, saying where it was looked
    for: the path shown (next to the STAR) read like a path joined wrongly, for a RELION path
    relative to the project folder."""
    entry = table_entry(planner, name, tomo_path)
    if entry is None or not entry.written or os.path.lexists(tomo_path):
        return exc
    return InputError(
        exc.path,
        f"{exc.reason}; tomograms.star gives {entry.written}, found neither next to it, nor in a "
        "folder above it, nor in the working directory",
    )


def tomogram_shape(planner: Any, picks: Path, name: str) -> tuple[int, int, int]:
    """(Z, Y, X) voxels of the tomogram a pick table calls ``name``, from its header (to centre
    RELION 5 picks). A header that is no 3-D volume is refused naming the tomogram, as cropping
    refuses it, so its picks become error rows (``_or_problem``): a 2-D image's (Y, X) used to
    fail the whole table as "tomogram size must be (Z, Y, X)", good tomograms' picks included."""
    from cryoshift.runtime.mrc import refuse_2d

    header = tomogram_header(planner, picks, name)
    if header["is_stack"]:
        raise InputError(header["path"], STACK_NOT_TOMOGRAM)
    if header.get("images"):
        raise image_stack_error(planner, name, header["path"], header["images"])
    refuse_2d(header["path"], header)
    entry = table_entry(planner, name, header["path"])
    if header["voxel_size_known"]:  # a wrong binning is said as such, before the size it implies
        _check_entry_voxel(header["path"], header["voxel_size"], entry)
    note = _check_size(header["path"], header["shape"], entry, name)
    if note and note not in planner.notes:
        planner.notes.append(note)
    return header["shape"]


def _record_placement(planner: Any, picks: Path, tomo_for: dict[str, Path]) -> None:
    """Each tomogram's voxel size and RELION centre as its picks are read (:func:`tomogram_pixel`,
    :func:`tomogram_centre`, else the reconstruction's middle), for the centred-Angstrom columns
    predictions.star writes (Plan.placement). A tomogram whose voxel size cannot be told gets
    none: its picks then get no centred columns, never a position from a guessed scale."""
    for name, tomo_path in tomo_for.items():
        try:
            voxel = float(tomogram_pixel(planner, picks, name))
            centre = tomogram_centre(planner, picks, name)
        except InputError:
            continue
        if centre is None:
            shape = planner.cache.get(str(tomo_path)).data.shape
            centre = np.asarray(shape[::-1], dtype=np.float64) / 2.0
        x, y, z = (float(v) for v in centre)
        planner.placement[str(tomo_path)] = (voxel, (x, y, z))


def tomogram_centre(planner: Any, picks: Path, name: str) -> np.ndarray | None:
    """(X, Y, Z) voxels RELION 5 measures the centred-Angstrom picks of tomogram ``name`` from:
    its tomograms.star row's rlnTomoSizeX/Y/Z (unbinned) / 2 / binning; None without such a row
    (the reconstruction's middle is used then). See tables._centred_to_pixels for why."""
    header = tomogram_header(planner, picks, name)
    entry = table_entry(planner, name, header["path"])
    expected = entry.voxels() if entry is not None else None
    return None if expected is None else np.asarray(expected, dtype=np.float64) / 2.0


IMAGE_STACK = "2-D images"  # what an image-stack refusal says the file holds


def image_stack_error(planner: Any, name: str, tomo_path: str | Path, images: int) -> InputError:
    """The refusal of an MRC whose header marks a stack of ``images`` 2-D images (space group 0,
    mz = 1: a tilt series, particle images) where a tomogram must go, naming the other
    ``--tomograms`` files the pick name meets once decorations are stripped (IMOD's raw stack
    ``TS_01.mrc`` beside its reconstruction ``TS_01_rec.mrc``).

    Why: it was cropped as a tomogram without a word, its images taken for Z sections; and the
    exact name won over the reconstruction, so the reconstruction is named, not taken instead
    (which file is meant is the user's to say)."""
    from cryoshift.runtime.sources.paths import tomogram_key

    others: list[str] = []
    try:
        index = planner.tomogram_index()
        key = tomogram_key(name)
        others = sorted(
            {str(p) for stem, p in index.items() if tomogram_key(stem) == key and Path(p) != Path(tomo_path)}
        )
    except InputError:
        pass
    hint = ""
    if others:
        shown = ", ".join(others[:3]) + (" ..." if len(others) > 3 else "")
        hint = f"; {shown} also matches {name!r}: give only the reconstruction with --tomograms"
    return InputError(
        tomo_path,
        f"is a stack of {images} {IMAGE_STACK} (MRC space group 0, mz = 1: a tilt series?), not a "
        f"tomogram{hint}",
    )


def _check_size(tomo_path: str | Path, shape: tuple[int, ...], entry: Any, name: str = "") -> str | None:
    """The reconstruction's size agrees with its tomograms.star row (rlnTomoSizeX/Y/Z unbinned
    pixels / binning), where the row gives both: centred-Angstrom picks are placed from the
    volume's centre, so a trimmed, padded or axis-swapped (XZY) reconstruction put every pick
    elsewhere without a word.

    A difference within :data:`SIZE_TOLERANCE` is accepted with the note returned (None where
    the sizes are equal): the picks are placed from the table's centre, as RELION places them,
    and that is half a voxel per voxel of difference from the reconstruction's middle, which
    was done without a word (a table one binned voxel off shifted every pick by half a voxel)."""
    expected = entry.voxels() if entry is not None else None
    if expected is None:
        return None
    have = tuple(int(v) for v in tuple(shape)[::-1])  # (X, Y, Z)
    shown = "x".join(f"{e:.4g}" for e in expected)
    size = "x".join(f"{s:g}" for s in entry.size)
    if all(abs(h - e) <= SIZE_TOLERANCE for h, e in zip(have, expected, strict=True)):
        if all(h == e for h, e in zip(have, expected, strict=True)):
            return None
        centre = ", ".join(f"{e / 2:g}" for e in expected)
        middle = ", ".join(f"{h / 2:g}" for h in have)
        return (
            f"{tomo_path}: tomogram {name or entry.name!r} is {have[0]}x{have[1]}x{have[2]} voxels (X, Y, Z) "
            f"but tomograms.star gives {shown} (rlnTomoSizeX/Y/Z {size} / binning {entry.binning:g}); its "
            f"centred-Angstrom picks are placed from the table's centre ({centre}), as RELION places "
            f"them, not the reconstruction's middle ({middle}); correct rlnTomoSizeX/Y/Z if the "
            "reconstruction is right"
        )
    raise InputError(
        tomo_path,
        f"it is {have[0]}x{have[1]}x{have[2]} voxels (X, Y, Z) but tomograms.star gives {shown} "
        f"(rlnTomoSizeX/Y/Z {size} / binning {entry.binning:g}), so centred-Angstrom picks cannot be "
        "placed in it; give the reconstruction the table describes, or correct rlnTomoSizeX/Y/Z",
    )


def _voxel_of(planner: Any, picks: Path, name: str) -> tuple[float | None, dict[str, Any]]:
    """A per voxel of a tomogram (its tomograms.star row's tilt-series pixel x binning when there
    is one, else the MRC header's; None when neither gives one), with its header."""
    header = tomogram_header(planner, picks, name)
    entry = table_entry(planner, name, header["path"])
    if entry is not None and entry.pixel_size:
        return entry.pixel_size, header
    return (header["voxel_size"] if header["voxel_size_known"] else None), header


def tomogram_pixel(planner: Any, picks: Path, name: str) -> float:
    """A per voxel of a tomogram (:func:`_voxel_of`); a header without one is refused, never
    taken as 1 A."""
    voxel, header = _voxel_of(planner, picks, name)
    if voxel is not None:
        return voxel
    cell = ", ".join(f"{c:g}" for c in header.get("cell", ()))
    raise InputError(
        header["path"],
        f"no usable voxel size in the header (cell = {cell}): cannot bring the picks' "
        "coordinates to its voxels",
    )


def coordinate_scale(planner: Any, name: str, vol: Any) -> float:
    """Factor from pick pixels to reconstruction voxels (--binning / --coordinate-pixel-size)."""
    if planner.binning:
        return 1.0 / planner.binning
    if planner.coordinate_pixel_size:
        entry = table_entry(planner, name, getattr(vol, "path", None))
        known = getattr(vol, "voxel_size_known", True)  # unset: the reader's 1.0 is no voxel size
        header = float(vol.voxel_size or 0) if known else 0.0
        voxel = entry.pixel_size if entry is not None and entry.pixel_size else header
        if voxel <= 0:
            raise InputError(
                getattr(vol, "path", name),
                "--coordinate-pixel-size needs the tomogram's voxel size, and its "
                "header has none; use --binning instead",
            )
        return planner.coordinate_pixel_size / voxel
    return 1.0


def tomogram_problem(tomo_path: str | Path, exc: InputError) -> str:
    """The reason written for each pick of an unusable tomogram: it names the tomogram file."""
    where = exc.path if exc.path and exc.path != str(tomo_path) else None
    return f"tomogram {tomo_path}: " + (f"{where}: " if where else "") + exc.reason


def add_picks(
    planner: Any,
    path: Path,
    picks: Any,
    scale: bool = True,
    problems: dict[str, str] | None = None,
    pixels: bool = True,
    optics: OpticsPixels | None = None,
) -> None:
    """Plan a :class:`~cryoshift.runtime.tables.PickTable` as one lazy selection of rows
    (:class:`~cryoshift.runtime.pickrows.PickRows`): per tomogram name, in order of first
    appearance, its file or the reason it has none; items are made from the arrays when read.

    A tomogram that cannot be used (unreadable, truncated, 2-D, anisotropic, another voxel size;
    or listed in ``problems``, found while converting coordinates) fails its own picks, each an
    error row naming the tomogram file (a damaged tomograms.star row: naming the table and the
    row); the other tomograms' picks are classified. Rows whose
    coordinates are not numbers (``picks.bad_rows``) are error rows naming their line.
    ``pixels``: the coordinates were written as pixels (not centred Angstrom), so a table of
    fractions of the volume is refused (:func:`_refuse_normalised`). ``optics``: the
    ``data_optics`` pixel sizes of a table holding pixel and centred Angstrom columns, one
    reading of its pixel columns (:func:`_disagreeing_rows`)."""
    from cryoshift.runtime.pickrows import PickRows, PickSource, RowIds
    from cryoshift.runtime.tomograms import table_notes

    index = planner.tomogram_index()
    # rows of a tomograms.star that no pick can reach (an empty rlnTomoName): said, once
    planner.notes.extend(n for n in table_notes(planner.tomo_tables.values()) if n not in planner.notes)
    names = list(picks.names)
    # rows naming no tomogram in a table that names none: the only one given, else a refusal (a
    # blank name in a table that names its tomograms is that row's error, tables.blank_name_rows)
    if "" in names and not getattr(picks, "named", False):
        if len(index) != 1:
            raise PlanRefusal(
                path,
                "picks name no tomogram (no tomo_name/rlnTomoName column); "
                "pass exactly one tomogram with --tomograms",
            )
        names[names.index("")] = next(iter(index))
    unique: dict[str, int] = {}
    remap = np.array([unique.setdefault(n, len(unique)) for n in names], dtype=np.int32)
    tomo = picks.tomo if np.array_equal(remap, np.arange(len(names))) else remap[picks.tomo]
    names = list(unique)
    tomo_for: dict[str, Path] = {}
    # Picks of a tomogram not given, or of one that cannot be used: error rows, not a refusal.
    unmatched: dict[str, str] = dict(problems or {})
    scales = np.ones(len(names))
    for k, name in enumerate(names):
        if name in unmatched:
            continue
        try:
            tomo_path = match_tomogram(name, index, path)
        except InputError as exc:
            if not index:
                raise
            unmatched[name] = exc.reason
            continue
        entry = table_entry(planner, name, tomo_path)
        if entry is not None and entry.problem:  # a damaged tomograms.star row: its picks fail
            unmatched[name] = entry.problem
            continue
        try:
            _check_tomogram(planner, tomo_path, entry, name)
            if scale and (planner.binning or planner.coordinate_pixel_size):
                scales[k] = coordinate_scale(planner, name, planner.cache.get(str(tomo_path)))
        except PlanRefusal:
            raise
        except InputError as exc:
            unmatched[name] = tomogram_problem(tomo_path, _not_found(planner, name, tomo_path, exc))
            continue
        tomo_for[name] = tomo_path
    if unmatched and not tomo_for:  # nothing matched at all: a naming problem, say it once
        raise InputError(path, next(iter(unmatched.values())))
    _record_placement(planner, path, tomo_for)
    xyz = picks.xyz
    if (scales != 1.0).any():
        xyz = xyz * scales[tomo][:, None]
    bad_rows, bad_lines = picks.bad_rows, picks.bad_lines
    bad_reasons = getattr(picks, "bad_reasons", None)
    if getattr(picks, "angst", None) is not None:
        checked = _disagreeing_rows(planner, path, picks, names, tomo, xyz, tomo_for, optics)
        if len(checked.placed):  # agreeing as stated-size pixels: the centred columns place them
            xyz = xyz.copy() if xyz is picks.xyz else xyz
            xyz[checked.placed] = checked.centred
        if checked.bad:
            bad_rows, bad_lines, bad_reasons = _merge_bad_rows(path, picks, checked.bad)
    from cryoshift.runtime.tomograms import outside_hint_arrays

    shapes = {k: planner.cache.get(str(tomo_for[n])).data.shape for k, n in enumerate(names) if n in tomo_for}
    hint_xyz, hint_tomo = xyz, tomo
    good = None
    if len(bad_rows):  # rows that are not numbers fail alone: not a hint (a copy only then)
        good = np.ones(len(tomo), bool)
        good[bad_rows] = False
        hint_xyz, hint_tomo = xyz[good], tomo[good]
    if pixels:  # the coordinates as written (before --binning)
        _refuse_normalised(path, picks.xyz, tomo, shapes, names)
    hint = outside_hint_arrays(path, hint_xyz, hint_tomo, shapes, planner.tomo_tables)
    if hint:
        planner.notes.append(hint)
    key = (str(path.resolve()), bool(scale), planner.binning, planner.coordinate_pixel_size)
    source = PickSource(
        str(path),
        key,
        names,
        tomo,
        xyz,
        [str(tomo_for[n]) if n in tomo_for else None for n in names],
        [unmatched.get(n, "") for n in names],
        bad_rows,
        bad_lines,
        bad_reasons,
        _unplaced(path, xyz, bad_rows, bad_lines),
        padded_rows(xyz, tomo, shapes, planner.box, bad_rows),
    )
    # kept (a user may mean it), but never without a word; picks that fail anyway (their tomogram
    # unusable: centred picks then have no coordinates, all "equal") are no repeats to speak of
    note = _repeats_note(path, *_real_repeats(source, tomo_for))
    if note:
        planner.notes.append(note)
    rows = PickRows(source)
    planner.items.add_rows(rows)
    if path.suffix.lower() == ".star":
        planner.origins.append((str(path), RowIds(rows)))


NORMALISED_MIN_VOXELS = 8  # a tomogram axis this long holds far more than coordinates of 0 to 1


def _refuse_normalised(
    path: Path, xyz: np.ndarray, tomo: np.ndarray, shapes: dict[int, tuple[int, ...]], names: list[str]
) -> None:
    """Refuse a table of pixel picks whose every coordinate lies between 0 and 1 (some not a
    whole number) while each tomogram they are matched to is at least
    :data:`NORMALISED_MIN_VOXELS` voxels on every axis.

    Why: WarpTools writes template-matching STARs with ``--normalized_coords`` as fractions of the
    volume; read as pixels, every pick was cropped at the tomogram's corner, exit 0, without a
    word. The scale is not guessed (the volume Warp normalised by is not known here): the user
    exports pixel coordinates instead. ``xyz`` (the table's coordinates as read; values that are
    not numbers are passed over) and ``tomo`` row by row, ``shapes`` (Z, Y, X) by tomogram number
    (the matched ones), ``names`` by number. Column reductions first: no copy of a large table
    unless every value already lies in 0..1.
    """
    if not shapes or not len(xyz):
        return
    for axis in range(3):
        column = xyz[:, axis]
        with np.errstate(invalid="ignore"):
            low, high = np.fmin.reduce(column), np.fmax.reduce(column)
        if not (low >= 0.0 and high <= 1.0):  # NaN (nothing finite) fails too
            return
    finite = np.isfinite(xyz).all(axis=1)
    values = xyz[finite]
    if np.array_equal(values, np.floor(values)):
        return  # whole voxels 0 and 1: picks at a corner, not fractions
    used = [int(k) for k in np.unique(tomo[finite]) if int(k) in shapes]
    if not used or min(min(shapes[k]) for k in used) < NORMALISED_MIN_VOXELS:
        return
    first = used[0]
    nz, ny, nx = shapes[first]
    more = f" (and {len(used) - 1} more tomograms)" if len(used) > 1 else ""
    raise InputError(
        path,
        f"every pick's coordinates lie between 0 and 1, but tomogram {names[first]!r} is {nx}x{ny}x{nz} "
        f"voxels{more}: the coordinates look normalised (fractions of the volume, as WarpTools writes "
        "them with --normalized_coords), not pixels; export the picks in pixel coordinates (without "
        "--normalized_coords)",
    )


PADDED_CHUNK = 1 << 20  # rows checked at a time: memory stays flat for tables of millions


def padded_rows(
    xyz: np.ndarray, tomo: np.ndarray, shapes: dict[int, tuple[int, ...]], box: int, bad_rows: np.ndarray
) -> np.ndarray:
    """The rows (sorted) whose crop of ``box``^3 reaches past their tomogram's edge, though their
    centre is inside it: crop.crop_box fills the part outside with the mean of the part inside.

    Why: those crops were padded without a word (crop_box's flag was dropped); the run's summary
    and manifest count them (summary.finish_run, pickrows.ItemList.padded). Computed here, from
    the coordinates, because the readers' processes keep no count the summary can see. Rows of a
    tomogram not in ``shapes`` (unusable) and ``bad_rows`` are never counted."""
    if not shapes or not len(tomo):
        return np.zeros(0, np.int64)
    sizes = np.full((int(max(int(tomo.max()), max(shapes)) + 1), 3), -1.0)  # -1: never inside
    for k, shape in shapes.items():
        sizes[k] = tuple(shape)[::-1]  # (X, Y, Z)
    half = int(box) // 2
    out = []
    for start in range(0, len(tomo), PADDED_CHUNK):
        part = slice(start, start + PADDED_CHUNK)
        size = sizes[tomo[part]]
        with np.errstate(invalid="ignore"):
            centre = np.floor(xyz[part] + 0.5)
            inside = ((centre >= 0) & (centre < size)).all(axis=1)
            low = centre - half
            edge = ((low < 0) | (low + box > size)).any(axis=1)
        out.append(np.flatnonzero(inside & edge) + start)
    found = np.concatenate(out).astype(np.int64)
    if len(bad_rows) and len(found):
        found = found[~np.isin(found, bad_rows)]
    return found


def _unplaced(
    path: Path, xyz: np.ndarray, bad_rows: np.ndarray, bad_lines: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """The rows without coordinates (a value that is not a number, or centred ones of a tomogram
    that could not be converted: NaN) and their file lines, for their ids (pickrows.PickSource);
    None when every row has them. The lines of bad rows are known; the others are counted once."""
    from cryoshift.runtime.tables import data_row_lines

    finite = np.ones(len(xyz), bool)
    for axis in range(3):  # one column at a time: no (n, 3) temporary for a table of millions
        finite &= np.isfinite(xyz[:, axis])
    rows = np.flatnonzero(~finite)
    if not len(rows):
        return None
    lines = np.full(len(rows), -1, np.int64)
    known = np.isin(rows, bad_rows)
    if known.any():
        lines[known] = np.asarray(bad_lines, np.int64)[np.searchsorted(bad_rows, rows[known])]
    if not known.all():
        lines[~known] = data_row_lines(path, rows[~known])
    return rows.astype(np.int64), lines


def _real_repeats(source: Any, tomo_for: dict[str, Path]) -> tuple[int, int]:
    """Picks sharing the id of an earlier pick (``source.dup_rows``) of a usable tomogram with
    numeric coordinates, and how many of them are exact repeats (the same tomogram and the very
    same coordinates as an earlier row); the others only round alike (ids give 0.1 voxel)."""
    rows = source.dup_rows
    if not len(rows):
        return 0, 0
    usable = np.array([n in tomo_for for n in source.names], dtype=bool)
    rows = rows[usable[source.tomo[rows]] & np.isfinite(source.xyz[rows]).all(axis=1)]
    if not len(rows):
        return 0, 0
    # an exact repeat is a row whose (tomogram, x, y, z) first occurs at an earlier row
    keys = np.column_stack([source.tomo.astype(np.float64), source.xyz.astype(np.float64)])
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    exact = first[inverse.reshape(-1)[rows]] < rows
    return len(rows), int(np.count_nonzero(exact))


def _repeats_note(path: Path, repeated: int, exact: int) -> str | None:
    """The note on picks sharing an id in one table (None: none do). Why two wordings: ids round
    coordinates to 0.1 voxel, so picks 0.02 voxel apart share one, and they were all called
    "repeats of an earlier pick of the same tomogram and coordinates"."""
    if not repeated:
        return None
    again = "each is classified again, its id suffixed ~2, ~3 ..."
    if exact == repeated:
        same = "repeat an earlier pick of the same tomogram and coordinates"
        return f"{path}: {repeated} picks {same}; {again}"
    return (
        f"{path}: {repeated} picks share an id with an earlier pick (same tomogram, coordinates equal "
        f"to 0.1 voxel, as ids give them; exact repeats: {exact}, distinct picks that only round "
        f"alike: {repeated - exact}); {again}"
    )


AGREE_VOXELS = 1.0  # pixel and centred Angstrom coordinates of one pick may differ by this much


class Agreement(NamedTuple):
    """What :func:`_disagreeing_rows` found of a table holding pixel and centred Angstrom columns."""

    bad: dict[int, str]  # row -> why it fails (the two disagree, or cannot be checked)
    placed: np.ndarray  # rows whose pixel columns agree only read as the stated pixel size
    centred: np.ndarray  # (len(placed), 3) their voxels from the centred Angstrom columns


def _row_stated_sizes(
    planner: Any, path: Path, picks: Any, names: list[str], tomo: np.ndarray, optics: OpticsPixels | None
) -> np.ndarray:
    """Per row, the pixel size (A) the files state for its pixel columns, NaN where none: its
    optics group's ``rlnTomoTiltSeriesPixelSize`` (the table's one size without a group column),
    else, for a STAR, its tomograms.star row's tilt-series pixel (RELION writes
    rlnCoordinateX/Y/Z in tilt-series pixels)."""
    sizes = np.full(len(tomo), np.nan)
    if optics is not None and optics.sizes:
        if OPTICS_GROUP in picks.extra:
            groups = [str(g).strip() for g in picks.extra[OPTICS_GROUP]]
            sizes[:] = [optics.sizes.get(g, np.nan) for g in groups]
        elif len(set(optics.sizes.values())) == 1:
            sizes[:] = next(iter(optics.sizes.values()))
    if path.suffix.lower() == ".star" and planner.tomo_tables:
        for k, name in enumerate(names):
            entry = table_entry(planner, name)
            rows = np.flatnonzero((tomo == k) & np.isnan(sizes))
            if entry is not None and entry.pixel_size and len(rows):
                sizes[rows] = entry.tilt_series_pixel_size
    return sizes


def _disagreeing_rows(
    planner: Any,
    path: Path,
    picks: Any,
    names: list[str],
    tomo: np.ndarray,
    xyz: np.ndarray,
    tomo_for: dict[str, Path],
    optics: OpticsPixels | None = None,
) -> Agreement:
    """Rows whose pixel coordinates and rlnCenteredCoordinate*Angst (both in the table) are more
    than :data:`AGREE_VOXELS` apart once brought to the tomogram's voxels, with the reason.

    Why: the pixel columns were used and the others ignored; where they disagree, one of them is
    wrong and which is unknown, so such a pick fails instead of being cropped at a guess. When
    every checked row disagrees, the table is refused (a convention, binning or pixel size is
    off for all of it). Picks whose tomogram has no usable voxel size cannot be checked: they fail.

    Without --binning / --coordinate-pixel-size, pixel columns in the pixel size the files state
    (``optics``' groups, else tomograms.star's tilt-series pixel, as RELION 4 writes them) that
    agree with the centred ones are accepted, placed by the centred columns. Why: cryoshift's own
    predictions.star of a ``--binning`` run (unbinned pixels beside centred Angstrom) was refused
    when read again, and evaluate and train have no --binning to give.
    """
    out: dict[int, str] = {}
    placed: list[np.ndarray] = []
    centred: list[np.ndarray] = []
    checked = 0
    first = ""
    optioned = bool(planner.binning or planner.coordinate_pixel_size)
    stated = (
        np.full(len(tomo), np.nan)
        if optioned
        else _row_stated_sizes(planner, path, picks, names, tomo, optics)
    )
    for k, name in enumerate(names):
        if name not in tomo_for:
            continue  # its picks fail already (unmatched or unusable tomogram)
        rows = np.flatnonzero(tomo == k)
        vol = planner.cache.get(str(tomo_for[name]))
        entry = table_entry(planner, name, tomo_for[name])
        known = getattr(vol, "voxel_size_known", True) and float(vol.voxel_size or 0) > 0
        ps = entry.pixel_size if entry is not None and entry.pixel_size else (vol.voxel_size if known else 0)
        if not ps:
            for r in rows.tolist():
                out[r] = (
                    "the table holds pixel and centred Angstrom coordinates and the tomogram's "
                    "voxel size is unknown, so they cannot be checked against each other"
                )
            continue
        table_size = entry.voxels() if entry is not None else None  # RELION's centre (tomogram_centre)
        size = np.array(table_size if table_size is not None else vol.data.shape[::-1], dtype=np.float64)
        expected = picks.angst[rows] / float(ps) + size / 2.0
        diff = np.abs(expected - xyz[rows])
        finite = np.isfinite(diff).all(axis=1)
        checked += int(finite.sum())
        far = finite & (diff > AGREE_VOXELS).any(axis=1)
        # the same pixel columns read as pixels of the stated size (NaN: none stated)
        as_stated = np.abs(expected - xyz[rows] * (stated[rows] / float(ps))[:, None])
        agree = far & np.isfinite(as_stated).all(axis=1) & (as_stated <= AGREE_VOXELS).all(axis=1)
        if agree.any():
            placed.append(rows[agree])
            centred.append(expected[agree])
        for j in np.flatnonzero(far & ~agree).tolist():
            px, ex = xyz[rows[j]], expected[j]
            also = (
                f", nor read as pixels of the stated {stated[rows[j]]:.4g} A"
                if np.isfinite(stated[rows[j]])
                else ""
            )
            out[int(rows[j])] = (
                f"pixel coordinates ({px[0]:.1f}, {px[1]:.1f}, {px[2]:.1f}) and "
                f"rlnCenteredCoordinate*Angst ({ex[0]:.1f}, {ex[1]:.1f}, {ex[2]:.1f} in voxels of "
                f"{ps:.4g} A) disagree{also}; remove the wrong columns"
            )
            first = first or out[int(rows[j])]
    if checked and sum(1 for r in out if "disagree" in out[r]) == checked:
        way_out = (
            " (or give --binning / --coordinate-pixel-size if the pixel coordinates are not in the "
            "tomogram's voxels)"
            if getattr(planner, "scale_options", True)
            else ""
        )
        raise InputError(path, f"every pick's {first}{way_out}")
    if placed:
        return Agreement(out, np.concatenate(placed), np.concatenate(centred))
    return Agreement(out, np.zeros(0, np.int64), np.zeros((0, 3)))


def _merge_bad_rows(path: Path, picks: Any, more: dict[int, str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``picks``' bad rows with ``more`` (row -> reason) added, sorted, with their file lines."""
    from cryoshift.runtime.tables import data_row_lines

    known = getattr(picks, "bad_reasons", None) or [""] * len(picks.bad_rows)
    reasons = dict(zip(picks.bad_rows.tolist(), known, strict=True))
    for row, why in more.items():
        reasons.setdefault(row, why)
    rows = np.array(sorted(reasons), dtype=np.int64)
    return rows, data_row_lines(path, rows), [reasons[r] for r in rows.tolist()]


def _check_tomogram(planner: Any, tomo_path: Path, entry: Any = None, name: str = "") -> None:
    """A tomogram to crop from: one volume (not a stack of volumes, nor of 2-D images: picks
    ``name`` it), isotropic, of the model's voxel size; where a
    tomograms.star row gives its voxel size too (tilt-series pixel x binning), the two agree:
    centred-Angstrom picks are converted with the STAR's, so a disagreement would crop elsewhere."""
    vol = planner.cache.get(str(tomo_path))
    if vol.is_stack:
        raise InputError(tomo_path, STACK_NOT_TOMOGRAM)
    header = getattr(vol, "header", None)
    images = header.get("images", 0) if isinstance(header, dict) else 0
    if images:
        raise image_stack_error(planner, name, tomo_path, images)
    if vol.anisotropic:
        from cryoshift.runtime.mrc import check_isotropic

        check_isotropic(vol.header, tomo_path)
    planner.check_tomogram_axes(tomo_path, vol)  # an un-rotated (XZY) reconstruction: its picks fail
    planner.check_voxel(tomo_path, vol)
    known = getattr(vol, "voxel_size_known", True) and float(vol.voxel_size or 0) > 0
    named = _WARP_PIXEL.search(strip_suffix(Path(tomo_path).name)) if known else None
    if named and (voxel_mismatch(float(named.group(1)), float(vol.voxel_size)) or 0.0) > VOXEL_TOLERANCE:
        # Warp names a reconstruction by its voxel size (TS_01_10.00Apx.mrc): a header saying
        # another was used without a word, and one of the two is wrong.
        raise InputError(
            tomo_path,
            f"its name says {float(named.group(1)):g} A per voxel ({named.group(0)[1:]}) but its header "
            f"says {float(vol.voxel_size):.4g} A; correct whichever is wrong",
        )
    if known:
        _check_entry_voxel(tomo_path, float(vol.voxel_size), entry)


def _check_entry_voxel(tomo_path: str | Path, header: float, entry: Any) -> None:
    """The header's voxel size agrees with the tomograms.star row's (tilt-series pixel x binning)."""
    if entry is None or not entry.pixel_size:
        return
    if (voxel_mismatch(entry.pixel_size, header) or 0.0) > VOXEL_TOLERANCE:
        raise InputError(
            tomo_path,
            f"its header says {header:.4g} A per voxel but tomograms.star gives "
            f"{entry.pixel_size:.4g} A ({entry.tilt_series_pixel_size:.4g} A x binning "
            f"{entry.binning:g}); correct whichever is wrong",
        )
