"""Target-aware simulation: the spectrum filter moves a source's average spectrum onto the target's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryoshift.training import spectrum
from cryoshift.training.spectrum import TILT_MATCH_MARGIN, SpectrumMatch, mean_power, tilt_match_range


def _volumes(n: int, box: int, seed: int, wedge: bool, colour: float) -> np.ndarray:
    """White noise shaped in Fourier space: optionally a missing wedge about Y, and a 1/f^colour slope."""
    g = torch.Generator().manual_seed(seed)
    spec = torch.fft.rfftn(torch.randn(n, box, box, box, generator=g), dim=(-3, -2, -1))
    kz = torch.fft.fftfreq(box).view(-1, 1, 1)
    ky = torch.fft.fftfreq(box).view(1, -1, 1)
    kx = torch.fft.rfftfreq(box).view(1, 1, -1)
    k = torch.sqrt(kz**2 + ky**2 + kx**2).clamp_min(1 / box)
    filt = k.pow(-colour / 2)
    if wedge:
        filt = filt * (kz.abs() <= kx.abs() * np.tan(np.deg2rad(50)))  # tilt range +-50 deg
    return torch.fft.irfftn(spec * filt, s=(box,) * 3, dim=(-3, -2, -1)).numpy().astype(np.float32)


def test_full_strength_match_reproduces_the_target_spectrum() -> None:
    source = _volumes(200, 16, seed=1, wedge=False, colour=0.0)
    target = _volumes(200, 16, seed=2, wedge=True, colour=1.0)
    match = SpectrumMatch.fit(target, source, strength=(1.0, 1.0))
    fresh = _volumes(200, 16, seed=3, wedge=False, colour=0.0)
    before = np.log(mean_power(fresh).numpy()[1:, 1:, 1:] + 1e-9)
    after = np.log(mean_power(match.apply(fresh)).numpy()[1:, 1:, 1:] + 1e-9)
    goal = np.log(mean_power(target).numpy()[1:, 1:, 1:] + 1e-9)
    inside = goal > np.log(1e-3)  # outside the wedge (inside it the gain is clamped, not exact)
    assert np.abs(after - goal)[inside].mean() < 0.35 < np.abs(before - goal)[inside].mean()
    # the wedge of the target appears in the filtered source
    wedge = goal < np.log(1e-3)
    assert wedge.any() and np.exp(after[wedge]).mean() < 0.05 * np.exp(after[inside]).mean()


def test_strength_zero_is_the_identity_and_draws_are_seeded() -> None:
    source = _volumes(50, 16, seed=1, wedge=False, colour=0.0)
    target = _volumes(50, 16, seed=2, wedge=True, colour=1.0)
    ident = SpectrumMatch.fit(target, source, strength=(0.0, 0.0))
    np.testing.assert_allclose(ident.apply(source), source, atol=1e-5)
    a = SpectrumMatch.fit(target, source, seed=7).apply(source)
    b = SpectrumMatch.fit(target, source, seed=7).apply(source)
    np.testing.assert_array_equal(a, b)


def test_chunked_filter_gives_each_volume_its_own_strength(monkeypatch: pytest.MonkeyPatch) -> None:
    """The filter runs in chunks of APPLY_CHUNK volumes (2-3x faster than a whole epoch at once):
    every volume gets the strength drawn for its own index, whatever the chunk boundaries."""
    source = _volumes(37, 16, seed=1, wedge=False, colour=0.0)
    target = _volumes(37, 16, seed=2, wedge=True, colour=1.0)
    monkeypatch.setattr(spectrum, "APPLY_CHUNK", 1000)
    whole = SpectrumMatch.fit(target, source, seed=3).apply(source)
    monkeypatch.setattr(spectrum, "APPLY_CHUNK", 5)
    chunked = SpectrumMatch.fit(target, source, seed=3).apply(source)
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-6)
    assert chunked.dtype == np.float32


def test_mean_power_of_a_read_only_stack_warns_nothing() -> None:
    """A dataset's volumes are a read-only memory map: torch warned about non-writable arrays on
    the user's terminal; the power is read from a copy, and equals the writable array's."""
    import warnings

    vols = np.random.default_rng(3).normal(size=(4, 12, 12, 12)).astype(np.float32)
    frozen = vols.copy()
    frozen.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        power = mean_power(frozen)
    assert torch.equal(power, mean_power(vols))


def test_tilt_match_simulates_the_tilt_range_the_estimator_reads_back() -> None:
    """Target-aware tilt: a source matched to +-50 deg draws only such tilt ranges, and the spectrum
    estimator finds that range again in its volumes (from a preset spanning 40-70 deg)."""
    from cryoshift.training.data import SimulatedSource
    from cryoshift.training.spectrum import estimate_tilt_max

    source = SimulatedSource("builtin:ribosome,builtin:proteasome", 32, 10.0, "broad", seed=3)
    assert source.config.tilt_max == (40.0, 70.0)
    source.match_target(tilt_max=(50.0, 50.0))
    _, _, rows = source.simulator.sample(4)
    assert {row["tilt_max"] for row in rows} == {50.0}
    estimate = estimate_tilt_max(source.draw(200).volumes)
    assert 46.0 <= estimate <= 56.0
    source.match_target(tilt_max=(70.0, 70.0))
    assert estimate + 8.0 <= estimate_tilt_max(source.draw(200).volumes)
    assert tilt_match_range(51.0) == (51.0 - TILT_MATCH_MARGIN, 51.0 + TILT_MATCH_MARGIN)
    assert tilt_match_range(25.0)[0] == 20.0 and tilt_match_range(88.0)[1] == 90.0
