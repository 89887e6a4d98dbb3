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
    table, or a mapping of those columns' values); None when the table does not say (or says
    nonsense: zero, negative, missing values)."""
    if not all(c in columns for c in DETECTOR_COLUMNS):
        return None
    detector, magnification = (
        pd.to_numeric(pd.Series(columns[c]), errors="coerce").to_numpy(np.float64) for c in DETECTOR_COLUMNS
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        pixel = detector * 1e4 / magnification
    if not len(pixel) or not (np.isfinite(pixel) & (pixel > 0)).all():
        return None
    return pixel


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
    if np.allclose(factors, 1.0, rtol=1e-3):
        return None
    picks.xyz = picks.xyz * factors[:, None]
    shown = ", ".join(f"{p:g}" for p in np.unique(pixel)[:3])
    return (
        f"{path.name}: coordinates read as {shown} A pixels (rlnDetectorPixelSize/rlnMagnification) "
        "and scaled to the reconstructions' voxels; --coordinate-pixel-size overrides"
    )
