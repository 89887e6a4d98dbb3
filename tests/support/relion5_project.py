"""A small RELION 5 project for tests: ``Tomograms/job006/{tomograms.star, tomograms/rec_<name>.mrc}``
and centred-Angstrom picks in ``Picks/job007/particles.star`` (the layout RELION 5 writes).

Why one builder: the hostile-input tests of tomograms.star (its rows, and Warp/RELION mix-ups)
each wrote the same project with their own copy of the table's columns and row arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cryoshift.runtime.mrc import write_volume

TOMOGRAM_LABELS = (
    "rlnTomoName",
    "rlnTomoTiltSeriesPixelSize",
    "rlnTomoTomogramBinning",
    "rlnTomoSizeX",
    "rlnTomoSizeY",
    "rlnTomoSizeZ",
    "rlnTomoReconstructedTomogram",
)
PICK_LABELS = ("rlnTomoName", *(f"rlnCenteredCoordinate{a}Angst" for a in "XYZ"))


def star_loop(block: str, labels: Sequence[str], rows: Sequence[str]) -> str:
    """One STAR data block holding a loop of ``labels`` (numbered) and ``rows``."""
    head = "".join(f"_{label} #{i}\n" for i, label in enumerate(labels, 1))
    return f"\ndata_{block}\n\nloop_\n{head}" + "\n".join(rows) + "\n\n"


def reconstruction(path: Path, shape: tuple[int, int, int], voxel: float, seed: int = 0) -> Path:
    """A noise reconstruction of ``shape`` (Z, Y, X) voxels of ``voxel`` A at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(seed).normal(0, 1, shape).astype(np.float32)
    return write_volume(path, data, voxel_size=voxel)


def write_project(
    root: Path,
    picks: dict[str, list[tuple[float, float, float]]],
    shape: tuple[int, int, int],
    voxel: float,
    binning: int = 4,
    fields: dict[str, dict[str, str]] | None = None,
    labels: Sequence[str] = TOMOGRAM_LABELS,
    names: dict[str, str] | None = None,
    written: Sequence[str] | None = None,
) -> tuple[Path, Path]:
    """(tomograms.star, particles.star) of a project under ``root`` whose tomograms are the keys of
    ``picks`` (their picks in reconstruction voxels x, y, z), each reconstructed at ``shape`` (Z, Y,
    X) and ``voxel`` A from a tilt series of ``voxel / binning`` A.

    ``fields`` replaces a tomogram's row values by column (``{"TS_02": {"rlnTomoTomogramBinning":
    "0"}}``); ``labels``: the table's columns, in order (a column left out, or given twice);
    ``names``: the name the picks give a tomogram; ``written``: the reconstructions written (all
    by default; the others are missing)."""
    job = root / "Tomograms" / "job006"
    (job / "tomograms").mkdir(parents=True, exist_ok=True)
    size_x, size_y, size_z = (n * binning for n in shape[::-1])
    rows = []
    for seed, name in enumerate(picks):
        rec = f"Tomograms/job006/tomograms/rec_{name}.mrc"
        if written is None or name in written:
            reconstruction(root / rec, shape, voxel, seed)
        values = {
            "rlnTomoName": name,
            "rlnTomoTiltSeriesPixelSize": f"{voxel / binning:.6f}",
            "rlnTomoTomogramBinning": f"{binning:.6f}",
            "rlnTomoSizeX": str(size_x),
            "rlnTomoSizeY": str(size_y),
            "rlnTomoSizeZ": str(size_z),
            "rlnTomoReconstructedTomogram": rec,
            **(fields or {}).get(name, {}),
        }
        rows.append(" ".join(values[label] for label in labels))
    tomograms = job / "tomograms.star"
    tomograms.write_text("\n# version 50001\n" + star_loop("global", labels, rows))
    centre = np.array(shape[::-1], dtype=float) / 2
    lines = []
    for name, coords in picks.items():
        for p in coords:
            c = (np.array(p) - centre) * voxel
            lines.append(f"{(names or {}).get(name, name)} {c[0]:.6f} {c[1]:.6f} {c[2]:.6f}")
    particles = root / "Picks" / "job007" / "particles.star"
    particles.parent.mkdir(parents=True, exist_ok=True)
    particles.write_text(star_loop("particles", PICK_LABELS, lines))
    return tomograms, particles
