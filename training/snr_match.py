"""Target-aware noise level: simulate the source about as hard to tell apart as the target is.

Why: the ``broad`` preset draws SNR 0.02-3, yet template matching against the user's maps tells the
classes of the benchmark targets apart far less clearly than those of any simulated volume in that
range (benchmarks/results/accuracy_levers.md, eighth round), so the network would learn from volumes
much cleaner than the ones it must classify. The margin between the best and the second-best class
score of template matching measures how separable a subtomogram is, in the same units for target and
simulation, whatever made it hard (dose, ice, structural change). So: template-match a probe of
simulated volumes whose SNR is spread log-uniformly over a wide range (in the target's tilt range:
a wider wedge lowers the margins and would read as a cleaner target), read off the SNR at which
their median margin equals the target's (already matched for the pseudo-labels), and simulate SNRs
within a factor ``SPAN`` of it. No target label is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

PROBE_SNR = (0.001, 3.0)  # the probe's log-uniform SNR range: wider than any preset's
# simulated volumes template-matched (about a minute on one CPU core at 32^3): with 240 the estimate
# for one target spread 0.012-0.029 over probe seeds (accuracy_levers.md, eighth round)
PROBE_COUNT = 480
PROBE_BINS = 8  # SNR bins of the probe's margin curve
SPECTRUM_REFERENCE = 512  # simulated volumes the probe's provisional spectrum filter is fitted to
SPAN = 4.0  # simulate SNR from estimate / SPAN to estimate x SPAN


@dataclass
class SnrMatch:
    estimate: float  # the SNR whose median template-matching margin equals the target's
    simulated: tuple[float, float]  # the SNR range simulated from now on
    target_margin: float  # the target's median margin
    curve: list[tuple[float, float]]  # (SNR, median margin) per probe bin, made non-decreasing
    seconds: float

    def summary(self, preset: tuple[float, float] | None) -> dict[str, Any]:
        def digits(value: float) -> float:  # SNRs span decades: significant digits, not decimals
            return float(f"{value:.4g}")

        return {
            "estimate": digits(self.estimate),
            "simulated": [digits(v) for v in self.simulated],
            "preset": list(preset) if preset is not None else None,
            "target_margin": digits(self.target_margin),
            "curve": [[digits(s), digits(m)] for s, m in self.curve],
            "seconds": round(self.seconds, 1),
        }


def margin_curve(snr: np.ndarray, margins: np.ndarray, bins: int = PROBE_BINS) -> list[tuple[float, float]]:
    """(SNR, median margin) of ``bins`` equal-count SNR bins, the margins made non-decreasing in SNR
    (a cleaner volume is never harder to tell apart; a bin's median can dip by chance)."""
    order = np.argsort(snr)
    groups = [g for g in np.array_split(order, min(bins, len(order))) if len(g)]
    x = [float(np.exp(np.median(np.log(snr[g])))) for g in groups]
    y = np.maximum.accumulate([float(np.median(margins[g])) for g in groups])
    return list(zip(x, y.tolist(), strict=True))


def snr_for_margin(margin: float, curve: list[tuple[float, float]]) -> float:
    """The lowest SNR at which the probe's median margin reaches ``margin`` (log-linear between
    bins). Harder than the whole probe: its lowest bin; clearer than all of it: the first bin of
    its top plateau (the least clean level consistent with the target)."""
    log_snr = np.log([s for s, _ in curve])
    medians = np.asarray([m for _, m in curve])
    margin = min(margin, float(medians[-1]))
    if margin <= medians[0]:
        return float(np.exp(log_snr[0]))
    upper = int(np.flatnonzero(medians >= margin)[0])  # first bin at or past the margin
    if medians[upper] == margin:
        return float(np.exp(log_snr[upper]))
    lower = int(np.flatnonzero(medians[:upper] < margin)[-1])
    frac = (margin - medians[lower]) / (medians[upper] - medians[lower])
    return float(np.exp(log_snr[lower] + frac * (log_snr[upper] - log_snr[lower])))


def match_snr(
    target_margins: np.ndarray,
    simulator: Any,
    maps: np.ndarray,
    tilt_max: float,
    voxel_size: float,
    *,
    spectrum_target: np.ndarray | None = None,
    seed: int = 0,
    count: int = PROBE_COUNT,
    threads: int | None = None,
) -> SnrMatch:
    """Estimate the target's SNR from its template-matching margins (see the module docstring).

    ``simulator`` (a ``simulate.Simulator``) draws the probe with its own configuration but SNR
    ``PROBE_SNR``. With ``spectrum_target`` (target volumes) the probe gets the target's average
    spectrum as training gives it to the source: a provisional filter (seeded by ``seed``), fitted
    against a draw at the probe's SNRs, since the final one is fitted after the SNR is set.
    ``tilt_max`` and ``maps`` are those the target was matched with.
    """
    import time

    from cryoshift.training.pseudo_labels import ROTATIONS
    from cryoshift.training.spectrum import SpectrumMatch
    from cryoshift.training.template_matching import score_margins, template_match

    t0 = time.perf_counter()
    config = simulator.config
    simulator.config = config.replace(snr=PROBE_SNR)
    try:
        spectrum = None
        if spectrum_target is not None:
            reference = simulator.sample(SPECTRUM_REFERENCE)[0].float().cpu().numpy()
            spectrum = SpectrumMatch.fit(spectrum_target, reference, seed=seed)
        volumes, _, rows = simulator.sample(count)
    finally:
        simulator.config = config
    probe = volumes.float().cpu().numpy()
    if spectrum is not None:
        probe = spectrum.apply(probe)
    result = template_match(
        probe, maps, tilt_max, n_rotations=ROTATIONS, voxel_size=voxel_size, threads=threads
    )
    curve = margin_curve(np.array([r["snr"] for r in rows]), score_margins(result.scores))
    target = float(np.median(target_margins))
    estimate = snr_for_margin(target, curve)
    simulated = (estimate / SPAN, estimate * SPAN)
    return SnrMatch(estimate, simulated, target, curve, time.perf_counter() - t0)
