"""Planning a pick table (STAR or CSV of coordinates): its tomogram names matched to files, its
coordinates brought to reconstruction voxels (RELION 5 centred Angstrom, Warp/M pixel sizes,
``--binning`` / ``--coordinate-pixel-size``), its rows kept as arrays (runtime/pickrows.py).

Each function takes the :class:`~cryoshift.runtime.sources.planner.Planner` it adds to, as
copick_io.plan does for copick projects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cryoshift.runtime.errors import InputError
from cryoshift.runtime.sources.items import PlanRefusal
from cryoshift.runtime.sources.paths import match_tomogram


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


def plan_pick_table(planner: Any, path: Path) -> None:
    """Read the coordinates of the pick table ``path`` and add its rows to ``planner``."""
    from cryoshift.runtime.picks import read_picks
    from cryoshift.runtime.tables import PickTable, read_pick_table

    centred = (
        path.suffix.lower() == ".star"
        and star_has(path, "rlnCenteredCoordinateXAngst")
        and not star_has(path, "rlnCoordinateX")
    )
    in_voxels = centred  # Angstrom picks (and Warp/M picks with a stated pixel size) need no --binning
    rescaled = planner.binning or planner.coordinate_pixel_size
    if centred:
        # RELION 5 centred Angstrom coordinates: converted with each tomogram's own header;
        # picks outside the tomogram become error rows when cropped, like pixel picks.
        picks = read_pick_table(
            path,
            pixel_size=lambda name: tomogram_pixel(planner, path, name),
            tomo_shape=lambda name: tomogram_header(planner, path, name)["shape"],
        )
    elif rescaled or not star_has(path, "rlnDetectorPixelSize"):
        picks = read_pick_table(path)  # streamed: only names and coordinates, as arrays
    else:
        picks = read_picks(path)
        if not rescaled:  # Warp/M: the table's own pixel size
            from cryoshift.runtime.warp import scale_to_voxels

            picks, note = scale_to_voxels(path, picks, lambda name: tomogram_pixel(planner, path, name))
            if note:
                planner.notes.append(note)
                in_voxels = True
        picks = PickTable.from_frame(path, picks)
    add_picks(planner, path, picks, scale=not in_voxels)


def tomogram_header(planner: Any, picks: Path, name: str) -> dict[str, Any]:
    """The MRC header of the tomogram a pick table calls ``name``."""
    from cryoshift.runtime.mrc import read_header

    index = planner.tomogram_index()
    if not name and len(index) == 1:
        name = next(iter(index))
    return read_header(match_tomogram(name, index, picks))


def tomogram_pixel(planner: Any, picks: Path, name: str) -> float:
    """A per voxel of a tomogram: its tomograms.star row (tilt-series pixel x binning) when
    there is one, else the MRC header."""
    header = tomogram_header(planner, picks, name)
    entry = planner.tomo_tables.get(name)
    return entry.pixel_size if entry is not None and entry.pixel_size else header["voxel_size"]


def coordinate_scale(planner: Any, name: str, vol: Any) -> float:
    """Factor from pick pixels to reconstruction voxels (--binning / --coordinate-pixel-size)."""
    if planner.binning:
        return 1.0 / planner.binning
    if planner.coordinate_pixel_size:
        entry = planner.tomo_tables.get(name)
        voxel = entry.pixel_size if entry is not None and entry.pixel_size else float(vol.voxel_size or 0)
        if voxel <= 0:
            raise InputError(
                name,
                "--coordinate-pixel-size needs the tomogram's voxel size, and its "
                "header has none; use --binning instead",
            )
        return planner.coordinate_pixel_size / voxel
    return 1.0


def add_picks(planner: Any, path: Path, picks: Any, scale: bool = True) -> None:
    """Plan a :class:`~cryoshift.runtime.tables.PickTable` as one lazy selection of rows
    (:class:`~cryoshift.runtime.pickrows.PickRows`): per tomogram name, in order of first
    appearance, its file or the reason it has none; items are made from the arrays when read."""
    from cryoshift.runtime.pickrows import PickRows, PickSource, RowIds

    index = planner.tomogram_index()
    names = list(picks.names)
    if "" in names:  # rows naming no tomogram: the only one given, else a refusal
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
    unmatched: dict[str, str] = {}  # picks of a tomogram not given: error rows, not a refusal
    scales = np.ones(len(names))
    for k, name in enumerate(names):
        if scale and (planner.binning or planner.coordinate_pixel_size):
            try:
                vol = planner.cache.get(str(match_tomogram(name, index, path)))
            except InputError:
                vol = None
            scales[k] = coordinate_scale(planner, name, vol) if vol is not None else 1.0
        try:
            tomo_path = match_tomogram(name, index, path)
        except InputError as exc:
            if not index:
                raise
            unmatched[name] = exc.reason
            continue
        _check_tomogram(planner, tomo_path)
        tomo_for[name] = tomo_path
    if unmatched and not tomo_for:  # nothing matched at all: a naming problem, say it once
        raise InputError(path, next(iter(unmatched.values())))
    xyz = picks.xyz
    if (scales != 1.0).any():
        xyz = xyz * scales[tomo][:, None]
    from cryoshift.runtime.tomograms import outside_hint_arrays

    shapes = {k: planner.cache.get(str(tomo_for[n])).data.shape for k, n in enumerate(names) if n in tomo_for}
    hint = outside_hint_arrays(path, xyz, tomo, shapes, planner.tomo_tables)
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
    )
    rows = PickRows(source)
    planner.items.add_rows(rows)
    if path.suffix.lower() == ".star":
        planner.origins.append((str(path), RowIds(rows)))


def _check_tomogram(planner: Any, tomo_path: Path) -> None:
    """A tomogram to crop from: one volume, isotropic, of the model's voxel size."""
    vol = planner.cache.get(str(tomo_path))
    if vol.is_stack:
        raise InputError(tomo_path, "is a volume stack, not a tomogram")
    if vol.anisotropic:
        from cryoshift.runtime.mrc import check_isotropic

        check_isotropic(vol.header, tomo_path)
    planner.check_voxel(tomo_path, vol)
