"""Warp 2 / M conventions that pick tables carry (see the README's Warp section).

Followed: WarpTools' "Tomogram Particle File Reference" (warpem.github.io/warp, reference/
warptools/tomogram_particle_files). A Warp particle STAR is RELION 3.0-style: ``rlnCoordinateX/Y/Z``
are pixels of a tomogram, zero at the centre of the first voxel (cryoshift's own convention), and
``rlnMicrographName`` names the tilt series' ``.tomostar`` file (read by :mod:`cryoshift.runtime.picks`
as the tomogram name; ``TS_01.tomostar`` meets ``reconstruction/TS_01_10.00Apx.mrc`` through
:func:`cryoshift.runtime.sources.tomogram_key`).

The pixel size of those coordinates is not part of that format (``ts_export_particles
--coords_angpix`` says it). Files written for M and by Warp 1 carry it the RELION 3.0 way:
``rlnDetectorPixelSize`` (micrometres) and ``rlnMagnification``, pixel = detector pixel x 10^4 /
magnification A (Warp writes magnification 10000 and the pixel size in A as detector pixel). When
those columns are present, and neither ``--binning`` nor ``--coordinate-pixel-size`` is given,
coordinates are scaled from that pixel size to each reconstruction's voxel size.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cryoshift.runtime.errors import InputError

if TYPE_CHECKING:
    from cryoshift.runtime.tables import PickTable

DETECTOR_COLUMNS = ("rlnDetectorPixelSize", "rlnMagnification")


def coordinate_pixel_sizes(columns: Mapping[str, Any]) -> np.ndarray | None:
    """A per coordinate pixel, per row, from ``rlnDetectorPixelSize``/``rlnMagnification`` (a
    table, or a mapping of those columns' values); None when the table does not carry both. A row
    whose values say nonsense (missing, text, zero, negative) gets NaN: its pick fails
    (:func:`unusable_rows`). Such rows used to make the whole table read as reconstruction
    pixels, every other row's pixel size dropped without a word."""
    if not all(c in columns for c in DETECTOR_COLUMNS):
        return None
    detector, magnification = (
        pd.to_numeric(pd.Series(columns[c]), errors="coerce").to_numpy(np.float64) for c in DETECTOR_COLUMNS
    )
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        pixel = detector * 1e4 / magnification
    pixel[~(np.isfinite(pixel) & (pixel > 0))] = np.nan
    return pixel


def unusable_rows(columns: Mapping[str, Any]) -> dict[int, str]:
    """Rows (0-based) whose ``rlnDetectorPixelSize``/``rlnMagnification`` give no pixel size, with
    the reason (a pick error row): cropping them at unscaled coordinates would be a guess."""
    pixel = coordinate_pixel_sizes(columns)
    if pixel is None:
        return {}
    detector, magnification = (columns[c] for c in DETECTOR_COLUMNS)
    return {
        int(r): (
            f"rlnDetectorPixelSize {detector[r]!s} and rlnMagnification {magnification[r]!s} give no "
            "pixel size for its coordinates (detector pixel x 10^4 / magnification must be a "
            "positive number)"
        )
        for r in np.flatnonzero(np.isnan(pixel)).tolist()
    }


def check_detector_columns(path: Path, columns: list[str]) -> None:
    """Refuse a table that carries one of the two columns that state its coordinates' pixel size
    but not the other: the coordinates were read as reconstruction pixels, the stated size dropped."""
    present = [c for c in DETECTOR_COLUMNS if c in columns]
    if len(present) != 1:
        return
    (missing,) = (c for c in DETECTOR_COLUMNS if c not in columns)
    raise InputError(
        path,
        f"has {present[0]} but no {missing}, so the pixel size of its coordinates "
        f"(rlnDetectorPixelSize x 10^4 / rlnMagnification A) is unknown; add {missing} (Warp writes "
        "magnification 10000 and the pixel size in A), or give --coordinate-pixel-size or --binning",
    )


def scale_to_voxels(path: Path, picks: PickTable, voxel_of: Callable[[str], float]) -> str | None:
    """Bring pixel picks with a stated pixel size (see the module docstring; ``picks.extra`` holds
    the two columns, read_pick_table's ``extra``) to voxels of their reconstructions, in place,
    and say what was done; unchanged (None) when the table states none or it already equals the
    voxel size. ``voxel_of(tomo_name)`` is the reconstruction's voxel size in A (an unmatched name
    is left alone: its picks become error rows later)."""
    pixel = coordinate_pixel_sizes(picks.extra)
    if pixel is None:
        return None
    factors = np.ones(len(picks))
    for k, name in enumerate(picks.names):
        try:
            voxel = float(voxel_of(name) or 0.0)
        except InputError:
            continue
        rows = picks.tomo == k
        if voxel > 0:
            factors[rows] = pixel[rows] / voxel
    factors[np.isnan(factors)] = 1.0  # rows without a pixel size fail (unusable_rows)
    if np.allclose(factors, 1.0, rtol=1e-3):
        return None
    picks.xyz = picks.xyz * factors[:, None]
    shown = ", ".join(f"{p:g}" for p in np.unique(pixel[~np.isnan(pixel)])[:3])
    return (
        f"{path.name}: coordinates read as {shown} A pixels (rlnDetectorPixelSize/rlnMagnification) "
        "and scaled to the reconstructions' voxels; --coordinate-pixel-size overrides"
    )
