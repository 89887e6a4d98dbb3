"""The warp module: shape, bounded values, randomness per call, identity without deformation."""

from __future__ import annotations

import torch

from cryoshift.training.adapt import Warp


def _bounds(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = x.flatten(1)
    return flat.amin(1).reshape(-1, 1, 1, 1, 1), flat.amax(1).reshape(-1, 1, 1, 1, 1)


def test_shape_range_and_randomness(toy: dict) -> None:
    torch.manual_seed(0)
    warp = Warp(channels=4, max_shift=2.0)
    with torch.no_grad():
        warp.to_intensity.bias.fill_(0.3)  # give the learned intensity branch a visible effect
    x = toy["sx"][:4]
    a, b = warp(x), warp(x)
    assert a.shape == x.shape
    lo, hi = _bounds(x)
    assert bool(((a >= lo - 1e-5) & (a <= hi + 1e-5)).all())
    assert not torch.allclose(a, b, atol=1e-3)  # fresh random deformation decoder at every call
    assert (a - x).abs().max() > 1e-2


def test_zero_shift_and_zero_intensity_is_identity(toy: dict) -> None:
    x = toy["sx"][:3]
    warp = Warp(channels=4, max_shift=0.0)  # intensity output layer starts at zero
    torch.testing.assert_close(warp(x), x, atol=1e-5, rtol=0)


def test_intensity_is_a_fraction_of_each_volume_range(toy: dict) -> None:
    x = toy["sx"][:3] * torch.tensor([1.0, 5.0, 0.2]).reshape(-1, 1, 1, 1, 1)
    warp = Warp(channels=4, max_shift=0.0, intensity=0.1)
    with torch.no_grad():
        warp.to_intensity.bias.fill_(20.0)  # tanh saturates at +1 everywhere
    lo, hi = _bounds(x)
    expected = torch.minimum(x + 0.1 * (hi - lo), hi)
    torch.testing.assert_close(warp(x), expected, atol=1e-4, rtol=0)


def test_learned_parts_receive_gradient(toy: dict) -> None:
    torch.manual_seed(1)
    warp = Warp(channels=4)
    warp(toy["sx"][:2]).square().sum().backward()
    assert warp.strength.weight.grad is not None and warp.strength.weight.grad.abs().sum() > 0
    assert warp.to_intensity.weight.grad.abs().sum() > 0
