"""Pieces shared by every backbone family: the timm-style forward split and small conv blocks.

The trainer and the exporter touch a backbone only through ``forward_features`` (pooled
(B, F) features, which adaptation methods and the shift score need) and ``forward_head``.
"""

from __future__ import annotations

import torch
from torch import nn

MIN_BOX = 16


def check_box(box_size: int, name: str) -> int:
    """Reject boxes the pooling stages cannot handle (ValueError: programmer/config input)."""
    if not isinstance(box_size, int) or isinstance(box_size, bool) or box_size < MIN_BOX:
        raise ValueError(f"backbone {name!r} needs an integer box_size >= {MIN_BOX}, got {box_size!r}")
    return box_size


def scaled(channels: int, width: float) -> int:
    """Channel count under a width multiplier; never below 1 so tiny test models still build."""
    return max(1, round(channels * width))


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1, bn: bool = True) -> nn.Sequential:
    """3x3x3 convolution (padding 1) + optional BatchNorm + ReLU; bias only without BN."""
    layers: list[nn.Module] = [nn.Conv3d(c_in, c_out, 3, stride=stride, padding=1, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm3d(c_out))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def fc_features(in_features: int, dim: int, drop_rate: float) -> nn.Sequential:
    """Flatten + two ReLU/dropout FC layers: the feature head of the C3D-style families (cb3d, dsrf3d).

    Kept in one place so both families produce the same module layout (``fc.1``, ``fc.4``), and
    so their checkpoints keep loading if either changes its convolutional stages.
    """
    return nn.Sequential(
        nn.Flatten(1),
        nn.Linear(in_features, dim),
        nn.ReLU(inplace=True),
        nn.Dropout(drop_rate),
        nn.Linear(dim, dim),
        nn.ReLU(inplace=True),
        nn.Dropout(drop_rate),
    )


class Backbone(nn.Module):
    """Base class: subclasses set ``num_features``/``num_classes``, ``head`` and ``forward_features``."""

    num_features: int
    num_classes: int
    box_size: int
    head: nn.Module

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the linear head (e.g. to fine-tune on a different class set)."""
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes)
