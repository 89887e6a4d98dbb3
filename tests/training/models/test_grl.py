"""Gradient reversal and its schedule."""

from __future__ import annotations

import math

import pytest
import torch

from cryoshift.training.adapt import GradientReversal, grl_lambda, reverse_gradient


@pytest.mark.parametrize("lam", [1.0, 0.25, 3.0])
def test_reversal_flips_and_scales_gradient(lam: float) -> None:
    x = torch.randn(5, 4, requires_grad=True)
    w = torch.randn(5, 4)
    y = reverse_gradient(x, lam)
    torch.testing.assert_close(y, x)  # identity forward
    (y * w).sum().backward()
    torch.testing.assert_close(x.grad, -lam * w)


def test_module_lambda_is_settable() -> None:
    grl = GradientReversal()
    grl.lambda_ = 0.5
    x = torch.ones(3, requires_grad=True)
    grl(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.full((3,), -0.5))


def test_schedule() -> None:
    assert grl_lambda(0.0) == 0.0
    assert grl_lambda(1.0, max_weight=2.0) == pytest.approx(2.0 * (2 / (1 + math.exp(-10)) - 1))
    values = [grl_lambda(p / 10) for p in range(11)]
    assert values == sorted(values)
    assert grl_lambda(-1.0) == 0.0 and grl_lambda(5.0) == grl_lambda(1.0)  # clamped
