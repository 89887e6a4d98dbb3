"""Fast fidelity level: one Fourier-space filter per subtomogram.

volume = irfftn( FFT(rotated density) * CTF * wedge * dose * envelope + noise * wedge * colour )

The signal is the rotated, shifted (and crowded) density; its filter is the 3-D CTF
(astigmatism by azimuth in the image plane), a continuous missing wedge about Y, the
dose filter of the nearest tilt and a B-factor envelope. The noise is drawn directly in Fourier
space, restricted to the same wedge (no data means no noise there) and coloured, then scaled by
Parseval so that var(signal) / var(noise) over the box equals the drawn SNR.

Left out (the tilt-series level has them): discrete tilt sampling and its streaks/Crowther gaps,
noise that varies per tilt (thicker ice at high tilt), the CTF acting per 2-D image,
back-projection artefacts. Left out by both: defocus gradient across tilted images, Ewald sphere
and multislice effects, beam-induced motion, alignment errors, detector MTF and shot noise.
"""

from __future__ import annotations

import torch

from cryoshift.training.simulate.physics import (
    complex_white_noise,
    ctf,
    irfftn3,
    spectrum_variance,
    wedge_and_dose,
)


def fourier_filters(
    grid: dict[str, torch.Tensor],
    p: dict[str, torch.Tensor],
    use_ctf: bool,
    dose_weighting: bool,
    dose_order: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(signal filter, noise filter), each (n, D, D, D//2+1) real, for the drawn parameters."""
    k2 = grid["k2"]
    noise_filter = (grid["tilt"].abs() <= p["tilt_max"].view(-1, 1, 1, 1) + 1e-4).to(k2.dtype)
    if dose_weighting:
        signal_filter = wedge_and_dose(
            grid, p["tilt_max"], p["tilt_step"], p["dose"], dose_order, p["voltage_kv"]
        )
    else:
        signal_filter = noise_filter
    if use_ctf:
        astig = p["astigmatism_um"] * 1e4
        phi = grid["phi"] if bool((astig != 0).any()) else None
        transfer = ctf(
            k2,
            phi,
            -p["defocus_um"] * 1e4,
            astig,
            torch.deg2rad(p["astigmatism_angle"]),
            p["voltage_kv"],
            p["cs_mm"],
            p["amplitude_contrast"],
        )
        signal_filter = transfer.mul_(signal_filter)
    else:  # no CTF: plain dark contrast (protein negative)
        signal_filter = -signal_filter
    if bool((p["bfactor"] != 0).any()):
        signal_filter = signal_filter * torch.exp(-p["bfactor"].view(-1, 1, 1, 1) * k2 / 4.0)
    alpha = p["noise_alpha"]
    if bool((alpha != 0).any()):
        f = torch.sqrt(k2).clamp_min(1e-12)
        noise_filter = noise_filter * (f / f.max()).pow(-0.5 * alpha.view(-1, 1, 1, 1))
    # (signal_filter never aliases noise_filter here: the CTF, sign and envelope steps make new tensors)
    noise_filter[:, 0, 0, 0] = 0.0  # zero-mean noise
    return signal_filter, noise_filter


def render_fast(
    density: torch.Tensor,
    p: dict[str, torch.Tensor],
    grid: dict[str, torch.Tensor],
    use_ctf: bool,
    dose_weighting: bool,
    dose_order: str,
    noise: bool,
    generator: torch.Generator | list[int] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Simulate from rotated densities (n, D, D, D); returns (volumes, signal variance per sample)."""
    n, box = density.shape[0], density.shape[-1]
    n_vox = box**3
    signal_filter, noise_filter = fourier_filters(grid, p, use_ctf, dose_weighting, dose_order)
    spec = torch.fft.rfftn(density, dim=(-3, -2, -1), norm="ortho")
    spec_re = torch.view_as_real(spec)  # real views: complex x real products would upcast the filter
    spec_re.mul_(signal_filter.unsqueeze(-1))
    weight = grid["weight"]
    signal_var = spectrum_variance(spec, weight, n_vox)
    if noise:
        # Expected noise variance = mean |H|^2 over the full spectrum (Parseval, ortho norm).
        binary = not bool((p["noise_alpha"] != 0).any())  # a 0/1 mask is its own square
        power = noise_filter if binary else noise_filter.square()
        noise_power = power.flatten(1) @ weight.expand(noise_filter.shape[1:]).flatten()
        sigma = torch.sqrt(signal_var / p["snr"] / (noise_power / n_vox).clamp_min(1e-20))
        noise_filter.mul_(grid["noise_gain"] * sigma.view(-1, 1, 1, 1))
        white = complex_white_noise((n, box, box, box // 2 + 1), generator, density.device)
        spec_re.addcmul_(torch.view_as_real(white), noise_filter.unsqueeze(-1))
    vol = irfftn3(spec, box)
    return vol, signal_var


def snr_from_pair(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SNR measured from two noisy realisations of the same signal: cov(a, b) / (var(a - b) / 2).

    Independent of how the simulator thinks about its own noise, so tests can use it.
    """
    a = a.flatten(1) - a.flatten(1).mean(1, keepdim=True)
    b = b.flatten(1) - b.flatten(1).mean(1, keepdim=True)
    signal = (a * b).mean(1)
    noise = ((a - b) ** 2).mean(1) / 2
    return signal / noise


__all__ = ["fourier_filters", "render_fast", "snr_from_pair"]
