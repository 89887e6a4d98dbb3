"""FLOP counting for the compute bound in the benchmarks.

Counts 2 x multiply-adds of every Conv3d and Linear layer via forward hooks on one sample, so
the count follows the real graph (box-size dependent FC layers included). BatchNorm, ReLU and
pooling are ignored: they are memory-bound and fold or fuse away in an inference engine.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def count_flops(model: nn.Module, box_size: int) -> int:
    """FLOPs (2 x MACs) of conv/linear layers for one (1, 1, D, D, D) subtomogram."""
    total = 0

    def conv_hook(module: nn.Conv3d, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        per_output = (module.in_channels // module.groups) * math.prod(module.kernel_size)
        total += 2 * out[0].numel() * per_output

    def linear_hook(module: nn.Linear, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        total += 2 * (out[0].numel() // module.out_features) * module.in_features * module.out_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv3d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        with torch.no_grad():
            model(torch.zeros(1, 1, box_size, box_size, box_size, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return int(total)
