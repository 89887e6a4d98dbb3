"""Gradient reversal: identity forward, gradient multiplied by -lambda backward.

Placing it between a feature extractor and a domain discriminator lets one optimiser step train
the discriminator to separate domains while pushing the features to confuse it (Ganin & Lempitsky).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def grl_lambda(progress: float, max_weight: float = 1.0) -> float:
    """DANN schedule ``max_weight * (2 / (1 + exp(-10 p)) - 1)``: 0 at the start, ~max at the end.

    Starting at 0 keeps noisy early discriminator gradients out of a classifier that has not yet
    learned anything; ``progress`` is clamped to [0, 1].
    """
    p = min(max(float(progress), 0.0), 1.0)
    return max_weight * (2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0)


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, lambda_: float) -> torch.Tensor:
        ctx.lambda_ = lambda_
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.lambda_ * grad, None


def reverse_gradient(x: torch.Tensor, lambda_: float = 1.0) -> torch.Tensor:
    """Identity on ``x`` whose backward pass multiplies the gradient by ``-lambda_``."""
    return _ReverseGrad.apply(x, float(lambda_))


class GradientReversal(nn.Module):
    """Module form with a settable ``lambda_`` (methods set it from the schedule every step)."""

    def __init__(self, lambda_: float = 1.0):
        super().__init__()
        self.lambda_ = float(lambda_)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reverse_gradient(x, self.lambda_)

    def extra_repr(self) -> str:
        return f"lambda_={self.lambda_:g}"
