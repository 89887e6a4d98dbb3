"""Target-aware simulation: give the simulated source the target's average power spectrum.

Why: the parts of the domain shift that are the same for every particle of a data set (the
missing wedge of its tilt range, the CTF envelope of its defocus range, the detector MTF, the
colour of the noise after weighted back-projection, the reconstruction's low-pass) all live in
the average 3-D power spectrum of the subtomograms. That average can be measured on the
unlabelled target without any label and without a model of the microscope: per-subtomogram
z-scored volumes, |FFT|^2, averaged. Dividing it by the same average over simulated volumes
gives a fixed 3-D Fourier filter that maps the simulation's spectrum onto the target's; training
on filtered simulations leaves the network less shift to bridge. The filter touches only the
source during training; the target and the exported model are unchanged.

Each simulated volume gets the filter raised to a random power in ``strength`` (0 = untouched,
1 = full match), so the network also keeps seeing the broad, unmatched randomisation: the target
average is a mean over many particles, never an exact description of any one of them.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

# The ratio of two noisy averages is clamped: frequencies where the simulation has (almost) no
# power, such as the inside of a wider missing wedge, would otherwise be amplified without bound.
GAIN_LIMITS = (0.05, 20.0)
DEFAULT_STRENGTH = (0.5, 1.0)


def mean_power(volumes: np.ndarray | torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Average |rFFT|^2 (D, D, D//2+1) of per-volume z-scored volumes (N, D, D, D), float64."""
    total: torch.Tensor | None = None
    n = len(volumes)
    for start in range(0, n, chunk):
        # a copy: a read-only memory map made torch warn about non-writable arrays
        v = torch.from_numpy(np.array(volumes[start : start + chunk], dtype=np.float32))
        flat = v.flatten(1)
        v = (v - flat.mean(1).view(-1, 1, 1, 1)) / (flat.std(1).view(-1, 1, 1, 1) + 1e-6)
        power = torch.fft.rfftn(v, dim=(-3, -2, -1), norm="ortho").abs().square().sum(0).double()
        total = power if total is None else total + power
    if total is None:
        raise ValueError("no volumes to measure a power spectrum on")
    return total / n


APPLY_CHUNK = 64  # volumes filtered at once by SpectrumMatch.apply


class SpectrumMatch:
    """A fixed Fourier gain sqrt(P_target / P_source), applied with a random strength per volume."""

    def __init__(
        self,
        target_power: torch.Tensor,
        source_power: torch.Tensor,
        strength: tuple[float, float] = DEFAULT_STRENGTH,
        seed: int = 0,
    ):
        if target_power.shape != source_power.shape:
            raise ValueError(
                f"power spectra differ in shape: {tuple(target_power.shape)} vs {tuple(source_power.shape)}"
            )
        ratio = target_power / source_power.clamp_min(1e-12)
        gain = torch.sqrt(ratio).clamp(*GAIN_LIMITS)
        gain[0, 0, 0] = 1.0  # the mean is removed by normalisation anyway
        self.log_gain = torch.log(gain).float()
        self.strength = (float(strength[0]), float(strength[1]))
        self.generator = torch.Generator().manual_seed(int(seed))

    @classmethod
    def fit(
        cls,
        target_volumes: np.ndarray,
        source_volumes: np.ndarray,
        strength: tuple[float, float] = DEFAULT_STRENGTH,
        seed: int = 0,
    ) -> SpectrumMatch:
        return cls(mean_power(target_volumes), mean_power(source_volumes), strength, seed)

    def apply(self, volumes: np.ndarray) -> np.ndarray:
        """Filtered copy of (N, D, D, D) float32 volumes."""
        v = torch.as_tensor(np.ascontiguousarray(volumes, dtype=np.float32))
        if len(v) == 0:
            return np.asarray(volumes, dtype=np.float32)
        lo, hi = self.strength
        power = lo + (hi - lo) * torch.rand(len(v), generator=self.generator)
        out = torch.empty_like(v)
        # in chunks: a whole epoch's volumes at once made gain and spectrum arrays of ~1 GB each,
        # and the filter ran 2x slower than on chunks that stay in cache (6144 volumes of 32^3)
        for start in range(0, len(v), APPLY_CHUNK):
            part = slice(start, start + APPLY_CHUNK)
            gain = torch.exp(self.log_gain.unsqueeze(0) * power[part].view(-1, 1, 1, 1))
            spec = torch.fft.rfftn(v[part], dim=(-3, -2, -1), norm="ortho") * gain
            out[part] = torch.fft.irfftn(spec, s=v.shape[-3:], dim=(-3, -2, -1), norm="ortho")
        return out.numpy()

    def summary(self) -> dict[str, float]:
        """Numbers for the run record: how far the filter moves the source."""
        g = torch.exp(self.log_gain)
        return {
            "gain_min": float(g.min()),
            "gain_max": float(g.max()),
            "gain_median": float(g.median()),
            "strength_lo": self.strength[0],
            "strength_hi": self.strength[1],
        }


# --tilt-match: simulated tilt ranges span the target's estimate +- this (degrees); the estimate
# reads 1-5 degrees high on simulated and benchmark volumes (the edge blurs outwards), inside it
TILT_MATCH_MARGIN = 8.0


def tilt_match_range(estimate: float) -> tuple[float, float]:
    """The tilt ranges (+-degrees) to simulate for a target whose estimated range is ``estimate``."""
    return max(20.0, estimate - TILT_MATCH_MARGIN), min(90.0, estimate + TILT_MATCH_MARGIN)


def _shell_means(power: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Each frequency's shell average of ``power`` (shells one Fourier voxel wide), shaped as it."""
    box = power.shape[0]
    shell = torch.round(radius * box).long().expand_as(power).flatten()
    sums = torch.zeros(int(shell.max()) + 1, dtype=power.dtype).index_add_(0, shell, power.flatten())
    counts = torch.bincount(shell, minlength=len(sums)).to(power.dtype)
    means = sums / counts.clamp(min=1)
    return means[shell].view_as(power).clamp(min=torch.finfo(power.dtype).tiny)


def estimate_tilt_max(volumes: np.ndarray, band: tuple[float, float] = (0.08, 0.3)) -> float:
    """The tilt range (+-degrees, tilt axis Y, beam Z) of reconstructed subtomograms, from their spectrum.

    Inside the missing wedge there is no data, so the average power of the volumes, as a function of
    the angle between a frequency and the X axis in the XZ plane, drops at the largest tilt. The
    estimate is where that power profile crosses halfway between its level near X (measured
    everywhere) and its level near Z (inside any wedge). Used to build the wedge-aware templates of
    template matching when the tilt range was not given.

    The power is first divided by its average over each frequency shell: the wedge is a feature of
    angle, not of radius, and in a small box each angle bin holds its own mix of radii. Where the
    signal dominates the band (a phase plate's strong low frequencies, whose power falls a
    hundredfold across it) that mix made the profile swing by a factor of e between neighbouring
    bins, and a +-60 degree target read as +-29-35; shell by shell the profile is the wedge's alone
    (the five benchmark targets read 63/55/49/45/63 for 60/50/45/40/60).
    """
    power = mean_power(volumes).float()  # (D, D, D//2+1): z, y, x
    box = power.shape[0]
    kz = torch.fft.fftfreq(box).view(-1, 1, 1)
    ky = torch.fft.fftfreq(box).view(1, -1, 1)
    kx = torch.fft.rfftfreq(box).view(1, 1, -1)
    radius = torch.sqrt(kz**2 + ky**2 + kx**2)
    power = power / _shell_means(power, radius)
    angle = torch.rad2deg(torch.atan2(kz.abs(), kx.abs())).expand_as(power)  # 0 = X axis, 90 = beam
    near_plane = (ky.abs() <= 0.5 * torch.sqrt(kz**2 + kx**2)).expand_as(power)
    sel = (radius >= band[0]) & (radius <= band[1]) & near_plane
    width = max(2.0, 64.0 / box)  # angle bins wide enough to hold frequencies in small boxes
    edges = torch.arange(0.0, 90.0 + width, width)
    profile = []
    for lo, hi in itertools.pairwise(edges):
        m = sel & (angle >= lo) & (angle < hi)
        profile.append(float(power[m].mean()) if bool(m.any()) else float("nan"))
    prof = np.log(np.asarray(profile) + 1e-12)
    centres = 0.5 * (edges[:-1] + edges[1:]).numpy()

    def level(values: np.ndarray) -> float:  # small boxes have empty angle bins near the beam
        values = values[np.isfinite(values)]
        return float(np.median(values)) if len(values) else float("nan")

    inside, beam = level(prof[centres < 25]), level(prof[centres > 76])
    if not np.isfinite(inside) or not np.isfinite(beam) or inside - beam < 0.5:
        return 90.0  # no visible wedge: a full tilt range (or too little data to tell)
    half = inside - 0.3 * (inside - beam)  # the first clear drop (interpolation blurs the edge outwards)
    below = np.flatnonzero((prof < half) & (centres >= 25))
    return float(np.clip(centres[below[0]] if len(below) else 90.0, 20.0, 90.0))
