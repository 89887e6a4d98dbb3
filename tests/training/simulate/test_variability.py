"""Structural variability: deformations of the requested size, missing lobes, bound blobs, seeding."""

from __future__ import annotations

import pytest
import torch

from cryoshift.training.simulate import variability
from cryoshift.training.simulate.config import SimulationConfig
from cryoshift.training.simulate.simulator import Simulator


def test_zero_displacement_is_the_identity_and_fields_have_the_requested_rms() -> None:
    dens = torch.rand(2, 16, 16, 16)
    torch.testing.assert_close(variability.deform(dens, torch.zeros(2, 16, 16, 16, 3)), dens)
    numbers = variability.random_numbers([1, 2])
    fields = variability.flex_fields(numbers["coarse"], 16, torch.tensor([0.5, 2.0]), torch.device("cpu"))
    rms = fields.square().mean(dim=(1, 2, 3, 4)).sqrt()
    torch.testing.assert_close(rms, torch.tensor([0.5, 2.0]))


def test_missing_lobe_removes_and_extra_blob_adds_density() -> None:
    z, y, x = torch.meshgrid(*(torch.arange(16.0) - 8,) * 3, indexing="ij")
    ball = (x**2 + y**2 + z**2 < 36).float().expand(3, 16, 16, 16)
    numbers = variability.random_numbers([3, 4, 5])
    out = variability.vary_composition(
        ball,
        torch.full((3,), 6.0),
        torch.tensor([True, False, False]),
        torch.tensor([False, True, False]),
        numbers,
    )
    mass = out.flatten(1).sum(1)
    base = ball[0].sum()
    assert mass[0] < 0.95 * base  # a lobe of 0.3-0.45 radii is gone
    assert mass[1] > 1.02 * base  # a blob was bound
    torch.testing.assert_close(out[2], ball[2])  # untouched


def test_simulator_variability_is_seeded_and_changes_the_particles(builtins16) -> None:
    plain = SimulationConfig(snr=None, tilt_max=(90.0, 90.0), shift_voxels=0.0, defocus_um=(-3.0, -3.0))
    varied = plain.replace(flex_voxels=(1.0, 2.0), p_partial=0.5, p_extra=0.5)
    a, la, rows = Simulator(builtins16, varied, seed=3).sample(12)
    b, _, _ = Simulator(builtins16, varied, seed=3).sample(12)
    c, lc, _ = Simulator(builtins16, plain, seed=3).sample(12)
    torch.testing.assert_close(a, b)
    assert torch.equal(la, lc)  # variability draws come after every other parameter
    assert all(0 <= r["variant"] < Simulator.VARIANTS for r in rows)
    diff = (a - c).flatten(1).norm(dim=1) / c.flatten(1).norm(dim=1)
    assert float(diff.median()) > 0.1


def test_magnification_scales_a_particle_about_the_centre() -> None:
    """A ball of radius 5 magnified by 1.2 has radius 6 (volume x 1.2^3); scale 1 is the identity."""
    a = torch.arange(24.0) - 11.5
    z, y, x = torch.meshgrid(a, a, a, indexing="ij")
    ball = torch.sigmoid((5.0 - (x**2 + y**2 + z**2).sqrt()) / 0.3).expand(2, 24, 24, 24)
    field = variability.magnification_field(torch.tensor([1.0, 1.2]), 24, torch.device("cpu"))
    out = variability.deform(ball, field)
    torch.testing.assert_close(out[0], ball[0])
    ratio = float(out[1].sum() / ball[1].sum())
    assert abs(ratio - 1.2**3) < 0.05 * 1.2**3
    centre = lambda v: (v * x).sum() / v.sum()  # noqa: E731 - the centre of mass stays put
    assert abs(float(centre(out[1]))) < 1e-3


def test_magnified_variants_change_the_particles_and_stay_seeded(builtins16) -> None:
    plain = SimulationConfig(snr=None, tilt_max=(90.0, 90.0), shift_voxels=0.0, defocus_um=(-3.0, -3.0))
    zoomed = plain.replace(magnification=(1.1, 1.15))
    a, la, _ = Simulator(builtins16, zoomed, seed=4).sample(8)
    b, _, _ = Simulator(builtins16, zoomed, seed=4).sample(8)
    c, lc, _ = Simulator(builtins16, plain, seed=4).sample(8)
    torch.testing.assert_close(a, b)
    assert torch.equal(la, lc)
    # a magnified particle spreads over more voxels: its density falls off further from the centre
    r = torch.stack(torch.meshgrid(*(torch.arange(16.0) - 8,) * 3, indexing="ij")).square().sum(0).sqrt()
    spread = lambda v: (v.abs() * r).flatten(1).sum(1) / v.abs().flatten(1).sum(1)  # noqa: E731
    assert bool((spread(a) > spread(c)).float().mean() > 0.7)


def test_magnification_outside_its_range_is_refused() -> None:
    from cryoshift.runtime.errors import InputError

    for bad in ((0.2, 1.0), (1.0, 3.0), (1.1, 0.9)):
        with pytest.raises(InputError, match="magnification"):
            SimulationConfig(magnification=bad)
