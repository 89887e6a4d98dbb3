"""Target-aware SNR: the margin curve, its inversion, and an estimate that finds a known noise level."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryoshift.training.simulate import builtin_structures
from cryoshift.training.simulate.config import SimulationConfig
from cryoshift.training.simulate.simulator import Simulator
from cryoshift.training.snr_match import SPAN, margin_curve, match_snr, snr_for_margin
from cryoshift.training.template_matching import score_margins, template_match


def test_the_margin_curve_never_falls_and_inverts_log_linearly() -> None:
    snr = np.array([0.01, 0.01, 0.1, 0.1, 1.0, 1.0])
    margins = np.array([0.01, 0.01, 0.05, 0.05, 0.04, 0.04])  # a chance dip at the cleanest bin
    curve = margin_curve(snr, margins, bins=3)
    assert [round(s, 6) for s, _ in curve] == [0.01, 0.1, 1.0]
    assert [m for _, m in curve] == [0.01, 0.05, 0.05]
    assert snr_for_margin(0.03, curve) == pytest.approx(np.sqrt(0.01 * 0.1))  # halfway in log SNR
    assert snr_for_margin(0.001, curve) == pytest.approx(0.01)  # harder than the probe: its lowest SNR
    assert snr_for_margin(0.2, curve) == pytest.approx(0.1)  # the first bin that reaches it


def test_a_target_of_known_snr_is_found_within_the_simulated_span() -> None:
    torch.set_num_threads(1)
    structures = builtin_structures(24, 14.0, seed=0, names=["ribosome", "proteasome", "p97", "membrane"])
    config = SimulationConfig(tilt_max=(60.0, 60.0), defocus_um=(-3.0, -3.0), shift_voxels=1.0)
    estimates = []
    for snr in (0.005, 0.2):
        target, _, _ = Simulator(structures, config.replace(snr=(snr, snr)), seed=1).sample(48)
        matched = template_match(target.numpy(), structures.maps, 60.0, n_rotations=300, voxel_size=14.0)
        probe = Simulator(structures, config, seed=2)
        found = match_snr(score_margins(matched.scores), probe, structures.maps, 60.0, 14.0, count=96)
        assert snr / SPAN < found.estimate < snr * SPAN
        assert found.simulated == pytest.approx((found.estimate / SPAN, found.estimate * SPAN))
        estimates.append(found.estimate)
    assert estimates[0] < estimates[1]
