"""A label-free check, from the crops, that the data's polarity matches the model's contrast.

Why: the contrast a run is checked against is the one DECLARED (dataset.json, ``--contrast``);
an inverted tomogram (light density where the model expects dark) was classified with exit 0
and confident, wrong classes. The voxels themselves say which way the density goes: a pick is
centred on a particle, so the centre of its box differs from the rim of the box in the
particle's direction. Per volume :func:`centre_contrast` is (mean of a central sphere of radius
box/6 - mean of the shell box/3..box/2) / the volume's standard deviation; negative for dark
density. One volume says little (crowding, membranes, off-centre picks), a run says a lot:
:class:`PolarityTally` warns only when there are at least :data:`MIN_VOLUMES` volumes, their
mean is on the wrong side of zero by more than :data:`MIN_T` standard errors and most volumes
agree (:data:`MIN_AGREE`). It is a warning, never a refusal: odd data (a membrane through every
box) may be legitimately so. Cost: two dot products per volume on a grid of 16-31 samples per
axis (:data:`GRID`), about a millisecond per batch of 64 on one core: negligible next to the network.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

MIN_VOLUMES = 30  # fewer volumes: no warning, the evidence is too thin
MIN_T = 5.0  # |mean| / standard error of the per-volume statistic on the wrong side
MIN_AGREE = 0.6  # fraction of volumes on the wrong side
GRID = 16  # at least this many samples per axis: a box is read on a grid of stride box // GRID


def _stride(box: int) -> int:
    """Every how many voxels a ``box``^3 volume is sampled per axis (1 for small boxes)."""
    return max(1, box // GRID)


@lru_cache(maxsize=8)
def _weights(box: int) -> tuple[np.ndarray, np.ndarray]:
    """Averaging weights (flattened, on the strided grid) of the central sphere (radius box/6)
    and the outer shell (box/3..box/2) of a ``box``^3 volume."""
    axis = np.arange(0, box, _stride(box), dtype=np.float64) - (box - 1) / 2
    r = np.sqrt(axis[:, None, None] ** 2 + axis[None, :, None] ** 2 + axis[None, None, :] ** 2).ravel()
    centre = r <= max(box / 6, 1.0)
    shell = (r >= box / 3) & (r <= box / 2)
    return (centre / max(centre.sum(), 1)).astype(np.float32), (shell / max(shell.sum(), 1)).astype(
        np.float32
    )


def centre_contrast(volumes: np.ndarray) -> np.ndarray:
    """Per volume of ``volumes`` (N, D, D, D) or (N, 1, D, D, D), any float dtype: (mean of the
    central sphere - mean of the outer shell) / standard deviation, float64 (N,). Negative when
    the centred particle is darker (lower) than its surroundings. A constant or non-finite volume
    gives NaN (left out of the tally)."""
    volumes = np.asarray(volumes)
    n, box = len(volumes), volumes.shape[-1]
    if not n:
        return np.empty(0)
    step = _stride(box)
    grid = volumes.reshape(n, box, box, box)[:, ::step, ::step, ::step]
    flat = np.asarray(grid, dtype=np.float32).reshape(n, -1)
    centre_w, shell_w = _weights(box)
    mean = flat.mean(axis=1, dtype=np.float64)
    std = np.sqrt(np.maximum((flat.astype(np.float64) ** 2).mean(axis=1) - mean**2, 0.0))
    diff = (flat @ centre_w).astype(np.float64) - (flat @ shell_w).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(std > 0, diff / std, np.nan)


class PolarityTally:
    """Running sums of :func:`centre_contrast` over a run (constant memory, any number of volumes)."""

    def __init__(self) -> None:
        self.n = 0
        self.total = 0.0
        self.squares = 0.0
        self.positive = 0

    def add(self, volumes: np.ndarray) -> None:
        """Count the volumes of one batch (see :func:`centre_contrast` for the shapes)."""
        self.add_values(centre_contrast(volumes))

    def add_values(self, values: np.ndarray) -> None:
        """Count per-volume :func:`centre_contrast` values computed elsewhere (a Ray actor's);
        NaN (a constant volume) is left out."""
        values = np.asarray(values, dtype=np.float64)
        values = values[np.isfinite(values)]
        self.n += len(values)
        self.total += float(values.sum())
        self.squares += float((values**2).sum())
        self.positive += int((values > 0).sum())

    def t_statistic(self) -> float:
        """Mean / standard error (NaN below two volumes; +-inf when every value is equal)."""
        if self.n < 2:
            return math.nan
        mean = self.total / self.n
        var = max(self.squares / self.n - mean**2, 0.0) * self.n / (self.n - 1)
        if var == 0:
            return math.copysign(math.inf, mean) if mean else math.nan
        return mean / math.sqrt(var / self.n)

    def warning(self, model_contrast: str) -> str | None:
        """One line when the volumes clearly contradict ``model_contrast`` ("dark": particle
        density lower than its surroundings; "light": higher), else None."""
        if self.n < MIN_VOLUMES:
            return None
        t = self.t_statistic()
        light = model_contrast == "light"
        wrong_t = -t if light else t  # the expected sign is negative for dark, positive for light
        agree = (self.n - self.positive if light else self.positive) / self.n
        if not wrong_t > MIN_T or agree < MIN_AGREE:
            return None
        seen = "dark" if light else "light"
        return (
            f"the data look {seen} (inverted) but the model expects {model_contrast!r} contrast: in "
            f"{round(100 * agree)}% of {self.n} volumes the box centre is {'lower' if light else 'higher'} "
            f"than its rim (t = {t:+.1f}); check the tomograms' polarity (classes of inverted data are "
            "wrong)"
        )


def volumes_warning(volumes: np.ndarray, model_contrast: str, chunk: int = 256) -> str | None:
    """:meth:`PolarityTally.warning` of ``volumes`` already in memory (evaluate's), tallied in
    chunks so the strided copy stays small."""
    tally = PolarityTally()
    for start in range(0, len(volumes), chunk):
        tally.add(volumes[start : start + chunk])
    return tally.warning(model_contrast)


def say(warning: str) -> None:
    """The one stderr line of a polarity warning (the note itself goes where the run's notes go).
    It comes after every row was written: a line that cannot be printed (stderr a pipe whose reader
    is gone) is dropped by :func:`cryoshift.runtime.terminal.say`, never raised, so the manifest and
    predictions.star are still written; the warning is kept in the manifest's notes anyway."""
    from cryoshift.runtime.terminal import say as say_line

    say_line(f"cryoshift: warning: {warning}")
