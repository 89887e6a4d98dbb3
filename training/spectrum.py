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
        v = torch.as_tensor(np.asarray(volumes[start : start + chunk], dtype=np.float32))
        flat = v.flatten(1)
        v = (v - flat.mean(1).view(-1, 1, 1, 1)) / (flat.std(1).view(-1, 1, 1, 1) + 1e-6)
        power = torch.fft.rfftn(v, dim=(-3, -2, -1), norm="ortho").abs().square().sum(0).double()
        total = power if total is None else total + power
    if total is None:
        raise ValueError("no volumes to measure a power spectrum on")
    return total / n


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
        gain = torch.exp(self.log_gain.unsqueeze(0) * power.view(-1, 1, 1, 1))
        spec = torch.fft.rfftn(v, dim=(-3, -2, -1), norm="ortho") * gain
        out = torch.fft.irfftn(spec, s=v.shape[-3:], dim=(-3, -2, -1), norm="ortho")
        return out.numpy().astype(np.float32, copy=False)

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
