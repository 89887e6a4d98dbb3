"""Pieces shared by every backbone family: the timm-style forward split and small conv blocks.

The trainer and the exporter touch a backbone only through ``forward_features`` (pooled
(B, F) features, which adaptation methods and the shift score need) and ``forward_head``.

Test-time views: in eval mode a backbone built with ``test_views=4`` averages its features over
the identity and the three 180-degree rotations about the volume axes, the poses that keep a
tilt series' missing wedge where it was (``cryoshift.training.augment``). The head is linear, so
this averages the logits: +1 to +4 points on the benchmark targets (benchmarks/results/
accuracy_levers.md) for 4x the inference cost. It is part of the model, so calibration, evaluation
and the exported ONNX graph see the same prediction (the trainer's cheap per-epoch scores set it to
1). Training-mode forwards see one view (the views are drawn as augmentation there).
"""

from __future__ import annotations

import torch
from torch import nn

from cryoshift.training.augment import ROTATIONS

MIN_BOX = 16
MAX_TEST_VIEWS = len(ROTATIONS)


def check_box(box_size: int, name: str) -> int:
    """Reject boxes the pooling stages cannot handle (ValueError: programmer/config input)."""
    if not isinstance(box_size, int) or isinstance(box_size, bool) or box_size < MIN_BOX:
        # the family's name (cryonet, cb3d ...): the registry name in use is the caller's to say
        raise ValueError(
            f"backbones of the {name} family need an integer box_size >= {MIN_BOX}, got {box_size!r}"
        )
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


def check_test_views(test_views: int) -> int:
    """Reject a test-view count outside 1..MAX_TEST_VIEWS (ValueError: config input)."""
    if (
        isinstance(test_views, bool)
        or not isinstance(test_views, int)
        or not 1 <= test_views <= MAX_TEST_VIEWS
    ):
        raise ValueError(f"test_views must be an integer from 1 to {MAX_TEST_VIEWS}, not {test_views!r}")
    return test_views


class Backbone(nn.Module):
    """Base class: subclasses set ``num_features``/``num_classes``, ``head`` and ``pooled_features``.

    ``test_views`` (set by ``create_backbone``) is how many wedge-preserving poses an eval-mode
    forward averages; 1 is a plain forward.
    """

    num_features: int
    num_classes: int
    box_size: int
    head: nn.Module
    test_views: int = 1

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """(B, F) features of one pose of each input volume."""
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        views = 1 if self.training else self.test_views
        if views == 1:
            return self.pooled_features(x)
        # (z, y, x) volume axes are dims 2-4 of a (B, 1, D, H, W) batch; one batch of views * B
        poses = [x] + [torch.flip(x, [a + 2 for a in axes]) for axes in ROTATIONS[1:views]]
        return self.pooled_features(torch.cat(poses, 0)).unflatten(0, (views, -1)).mean(0)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the linear head (e.g. to fine-tune on a different class set)."""
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes)
