"""The physics, measured on simulated volumes: wedge, SNR, CTF zeros, rotation, contrast, dose."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cryoshift.training.simulate import SimulationConfig, Simulator, Structures
from cryoshift.training.simulate.fast import snr_from_pair
from cryoshift.training.simulate.physics import euler_matrices, rotate_passes, rotate_trilinear

from .conftest import BOX


def _power(vol: torch.Tensor) -> torch.Tensor:
    return torch.fft.fftn(vol, dim=(-3, -2, -1)).abs().square().mean(0)


def _wedge_regions(box: int, tilt_max: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(missing, measured) masks on the full FFT grid, a margin away from the wedge edge, DC excluded."""
    f = torch.fft.fftfreq(box)
    kz, _ky, kx = torch.meshgrid(f, f, f, indexing="ij")
    angle = torch.rad2deg(torch.atan2(kz.abs(), kx.abs()))
    radius = torch.sqrt(kz**2 + kx**2)
    missing = (angle > tilt_max + 8) & (radius > 1.5 / box)
    measured = (angle < tilt_max - 8) & (radius > 1.5 / box)
    return missing, measured


@pytest.mark.parametrize("fidelity", ["fast", "tilt"])
def test_missing_wedge_is_empty_and_the_rest_is_not(builtins16, fidelity):
    cfg = SimulationConfig(
        fidelity=fidelity,
        snr=(0.5, 0.5),
        tilt_max=(50.0, 50.0),
        tilt_step=(2.0, 2.0),
        defocus_um=(-2.0, -2.0),
    )
    vol, _, rows = Simulator(builtins16, cfg, seed=3).sample(8 if fidelity == "fast" else 4)
    assert all(r["wedge_angle"] == pytest.approx(40.0) for r in rows)
    missing, measured = _wedge_regions(BOX, 50.0)
    p = _power(vol)
    inside, outside = float(p[missing].mean()), float(p[measured].mean())
    # fast: exactly zero up to float error; tilt: back-projection leaks a little interpolation error.
    limit = 1e-6 if fidelity == "fast" else 0.05
    assert inside < limit * outside, (inside, outside)


@pytest.mark.parametrize("fidelity", ["fast", "tilt"])
def test_measured_snr_matches_the_requested_one(builtins16, fidelity):
    """SNR from two noise realisations of the same signal: cov(a, b) / (var(a - b) / 2), median within 15%."""
    cfg = SimulationConfig(fidelity=fidelity, snr=(0.1, 5.0), shift_voxels=0.0)
    sim = Simulator(builtins16, cfg, seed=5)
    n = 48 if fidelity == "fast" else 12
    p = sim.draw(n)
    a = sim.render(p, generator=torch.Generator().manual_seed(1))
    b = sim.render(p, generator=torch.Generator().manual_seed(2))
    ratio = (snr_from_pair(a, b) / p["snr"].float()).numpy()
    assert np.median(ratio) == pytest.approx(1.0, abs=0.15), ratio
    assert (np.abs(np.log(ratio)) < math.log(2.0)).all(), ratio
    # The noise in real space is Gaussian (excess kurtosis ~ 0), whatever its Fourier coefficients are.
    diff = (a - b).flatten(1)
    diff = (diff - diff.mean(1, keepdim=True)) / diff.std(1, keepdim=True)
    assert abs(float((diff**4).mean()) - 3.0) < 0.15
    # The clean signal, rendered without noise, has the same per-volume SNR against the noise.
    clean = sim.render(p, noise=False)
    exact = clean.flatten(1).var(1) / (a - clean).flatten(1).var(1)
    assert np.allclose(exact.numpy() / p["snr"].numpy(), 1.0, atol=0.15 if fidelity == "fast" else 1e-3)


def test_ctf_zeros_fall_at_the_textbook_frequencies():
    """A point-like structure (flat spectrum) through the CTF: |CTF| ~ 0 where chi(k) + asin(A) = m pi."""
    box, voxel = 32, 5.0
    delta = np.zeros((1, box, box, box), np.float32)
    delta[0, box // 2, box // 2, box // 2] = 1.0
    point = Structures(names=["point"], maps=delta, voxel_size=voxel)
    base = dict(
        snr=None,
        tilt_max=(90.0, 90.0),
        shift_voxels=0.0,
        defocus_um=(-2.0, -2.0),
        cs_mm=(2.7, 2.7),
        amplitude_contrast=(0.1, 0.1),
    )
    with_ctf = Simulator(point, SimulationConfig(**base), seed=0)
    no_ctf = Simulator(point, SimulationConfig(**base, ctf=False), seed=0)
    p = with_ctf.draw(2)
    transfer = torch.fft.rfftn(with_ctf.render(p), dim=(-3, -2, -1)).abs() / torch.fft.rfftn(
        no_ctf.render(p), dim=(-3, -2, -1)
    ).abs().clamp_min(1e-6)
    # Textbook: lambda(300 kV) = 0.019687 A; chi = pi lam df k^2 - pi/2 Cs lam^3 k^4, df = 2 um underfocus.
    lam, df, cs, amp = 0.019687, 2.0e4, 2.7e7, 0.1
    k = np.linspace(0, 1 / (2 * voxel), 20000)
    phase = math.pi * lam * df * k**2 - 0.5 * math.pi * cs * lam**3 * k**4 + math.asin(amp)
    order = np.floor(phase / math.pi)
    zeros = [k[i] for i in range(1, len(k)) if order[i] != order[i - 1]]
    assert len(zeros) >= 2
    fz = torch.fft.fftfreq(box, d=voxel).view(-1, 1, 1)
    fy = torch.fft.fftfreq(box, d=voxel).view(1, -1, 1)
    fx = torch.fft.rfftfreq(box, d=voxel).view(1, 1, -1)
    kk = torch.sqrt(fz**2 + fy**2 + fx**2).expand(box, box, box // 2 + 1)
    overall = float(transfer.mean())
    for k0 in zeros:
        shell = (kk - k0).abs() < 0.08 / (box * voxel)  # within 0.08 of a Fourier bin of the zero
        assert int(shell.sum()) > 20
        assert float(transfer[:, shell].mean()) < 0.2 * overall, k0
    between = (kk - 0.5 * (zeros[0] + zeros[1])).abs() < 0.15 / (box * voxel)
    assert float(transfer[:, between].mean()) > 0.8 * overall


def test_rotation_preserves_total_density(builtins16):
    # ribosome, proteasome, rubisco, p97 (the ~2-voxel "globular" protein is checked separately below)
    maps = torch.as_tensor(builtins16.maps[[0, 1, 3, 6]])
    g = torch.Generator().manual_seed(0)
    angles = torch.rand(4, 3, generator=g) * torch.tensor([2 * math.pi, math.pi, 2 * math.pi])
    shift = torch.zeros(4, 3)
    passes = rotate_passes(maps, angles[:, 0], angles[:, 1], angles[:, 2], shift)
    tri = rotate_trilinear(maps, euler_matrices(angles[:, 0], angles[:, 1], angles[:, 2]), shift)
    total = maps.sum((1, 2, 3))
    assert torch.allclose(passes.sum((1, 2, 3)), total, rtol=0.01)
    assert torch.allclose(tri.sum((1, 2, 3)), total, rtol=0.01)
    cc = torch.nn.functional.cosine_similarity(passes.flatten(1), tri.flatten(1))
    assert (cc > 0.97).all(), cc
    # And through the whole simulator: no CTF, no wedge, no noise -> output = -density, sum preserved
    # (to 1% for particles several voxels wide; interpolation moves up to ~5% of a 2-voxel one).
    cfg = SimulationConfig(snr=None, ctf=False, tilt_max=(90.0, 90.0), shift_voxels=1.0)
    labels = torch.arange(len(builtins16)).repeat(2)
    vol, labels, _ = Simulator(builtins16, cfg, seed=1).sample(len(labels), labels=labels)
    expected = torch.as_tensor(builtins16.maps).sum((1, 2, 3))[labels]
    error = (-vol.sum((1, 2, 3)) / expected - 1).abs()
    small = labels == builtins16.names.index("globular")
    assert (error[~small] < 0.01).all(), error
    assert (error[small] < 0.05).all(), error


def test_rotation_matches_the_analytic_rotation_of_a_structure():
    """Built-ins are sums of Gaussians, so a rotated copy can be rendered exactly (no interpolation)."""
    from cryoshift.training.simulate.builtin import render_builtin

    box, voxel = 24, 12.0
    g = torch.Generator().manual_seed(4)
    for name in ("ribosome", "proteasome", "rubisco"):
        angles = torch.rand(3, generator=g) * torch.tensor([2 * math.pi, math.pi, 2 * math.pi])
        rot, tilt, psi = (a.view(1) for a in angles)
        matrix = euler_matrices(rot, tilt, psi)
        exact = torch.as_tensor(render_builtin(name, box, voxel, rotation=matrix[0].double().numpy()))
        start = torch.as_tensor(render_builtin(name, box, voxel)).unsqueeze(0)
        zero = torch.zeros(1, 3)
        for result, tolerance in (
            (rotate_passes(start, rot, tilt, psi, zero)[0], 0.10),
            (rotate_trilinear(start, matrix, zero)[0], 0.06),
        ):
            error = float((result - exact).norm() / exact.norm())
            assert error < tolerance, (name, error)


def test_default_output_is_dark_and_options_flip_it(builtins16):
    cfg = SimulationConfig(snr=None, tilt_max=(90.0, 90.0), shift_voxels=0.0, defocus_um=(-3.0, -3.0))
    labels = torch.tensor([0, 1, 2, 3])
    sim = Simulator(builtins16, cfg, seed=0)
    p = sim.draw(4, labels)
    dens = sim._density(p, torch.empty(0, 9, dtype=torch.float64))
    corr = torch.nn.functional.cosine_similarity(sim.render(p).flatten(1), dens.flatten(1))
    assert (corr < -0.3).all(), corr  # protein darker than solvent
    light = Simulator(builtins16, cfg.replace(contrast="light"), seed=0).render(p)
    assert torch.allclose(light, -sim.render(p), atol=1e-6)
    inverted = Simulator(builtins16, cfg.replace(invert_contrast=1.0), seed=0)
    q = inverted.draw(4, labels)
    assert (q["inverted"] == 1).all()


def test_dose_weighting_damps_high_frequencies(builtins16):
    cfg = SimulationConfig(
        snr=None, tilt_max=(60.0, 60.0), shift_voxels=0.0, defocus_um=(-1.0, -1.0), dose=(150.0, 150.0)
    )
    sim = Simulator(builtins16, cfg, seed=0)
    p = sim.draw(6)
    damped = Simulator(builtins16, cfg.replace(dose_weighting=True), seed=0).render(p)
    plain = sim.render(p)
    f = torch.fft.fftfreq(BOX)
    kk = torch.sqrt(sum(g**2 for g in torch.meshgrid(f, f, f, indexing="ij")))
    high, low = kk > 0.3, (kk > 0) & (kk < 0.08)
    ratio = _power(damped) / _power(plain).clamp_min(1e-12)
    assert float(ratio[high].mean()) < 0.8 * float(ratio[low].mean())


@pytest.mark.parametrize("dose_order", [None, "sequential"])
def test_fidelity_levels_agree_without_noise(builtins16, dose_order):
    """Same parameters, no noise: the tilt-series reconstruction matches the Fourier model (scale, shape)."""
    cfg = SimulationConfig(snr=None, tilt_max=(60.0, 60.0), tilt_step=(2.0, 2.0), defocus_um=(-3.0, -3.0))
    if dose_order is not None:  # strong, asymmetric dose weighting: both levels must weight the same tilts
        cfg = cfg.replace(dose_weighting=True, dose_order=dose_order, dose=(300.0, 300.0))
    fast = Simulator(builtins16, cfg, seed=0)
    tilt = Simulator(builtins16, cfg.replace(fidelity="tilt"), seed=0)
    p = fast.draw(len(builtins16), labels=torch.arange(len(builtins16)))
    a, b = fast.render(p), tilt.render(p)
    a = (a - a.mean((1, 2, 3), keepdim=True)).flatten(1)
    b = (b - b.mean((1, 2, 3), keepdim=True)).flatten(1)
    scale = b.std(1) / a.std(1)
    assert ((scale > 0.85) & (scale < 1.15)).all(), scale
    assert (torch.nn.functional.cosine_similarity(a, b) > 0.85).all()


def test_astigmatism_moves_the_first_zero_along_its_axis():
    """Defocus df +- astig/2 along the astigmatism angle and across it: first zeros where the formula says."""
    box, voxel = 32, 5.0
    delta = np.zeros((1, box, box, box), np.float32)
    delta[0, box // 2, box // 2, box // 2] = 1.0
    point = Structures(names=["point"], maps=delta, voxel_size=voxel)
    cfg = SimulationConfig(
        snr=None,
        tilt_max=(90.0, 90.0),
        shift_voxels=0.0,
        defocus_um=(-2.0, -2.0),
        astigmatism_um=(1.5, 1.5),
        cs_mm=(2.7, 2.7),
        amplitude_contrast=(0.0, 0.0),
    )
    sim, ref = Simulator(point, cfg, seed=0), Simulator(point, cfg.replace(ctf=False), seed=0)
    p = sim.draw(1)
    p["astigmatism_angle"][:] = 0.0  # along x
    transfer = (
        torch.fft.rfftn(sim.render(p), dim=(-3, -2, -1)).abs()
        / torch.fft.rfftn(ref.render(p), dim=(-3, -2, -1)).abs().clamp_min(1e-6)
    )[0]
    along_x = transfer[0, 0, 1 : box // 2].numpy()  # kz = ky = 0
    along_y = transfer[0, 1 : box // 2, 0].numpy()
    lam = 0.019687
    for profile, defocus in ((along_x, 2.75e4), (along_y, 1.25e4)):
        k1 = math.sqrt(1.0 / (lam * defocus))  # first zero of sin(pi lam df k^2) (Cs negligible here)
        lo, hi = int(0.6 * k1 * box * voxel), int(1.4 * k1 * box * voxel) + 1  # bins around the zero
        found = (lo + np.argmin(profile[lo - 1 : hi - 1])) / (box * voxel)
        assert abs(found - k1) <= 1.0 / (box * voxel), (found, k1)
