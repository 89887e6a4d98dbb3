"""Encoder4: the small four-block encoder of the Cryo-Shift release followed by one linear layer.

Four blocks of conv3 + BN + ReLU + maxpool with 16, 16, 16, 128 channels. The features are the
flattened last block, so their length depends on the box size (128 for 16^3-31^3, 1024 at 40^3).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ._base import Backbone, check_box, conv_bn_relu
from ._registry import BACKBONES


class Encoder4(Backbone):
    def __init__(self, num_classes: int, box_size: int, widths: Sequence[int] = (16, 16, 16, 128)):
        super().__init__()
        check_box(box_size, "encoder4")
        self.num_classes, self.box_size = num_classes, box_size
        layers: list[nn.Module] = []
        c_in, side = 1, box_size
        for c in widths:
            layers += [conv_bn_relu(c_in, c), nn.MaxPool3d(2)]
            c_in, side = c, side // 2
        if side < 1:
            raise ValueError(f"encoder4 with {len(widths)} blocks needs box_size >= {2 ** len(widths)}")
        self.stages = nn.Sequential(*layers)
        self.num_features = c_in * side**3
        self.head = nn.Linear(self.num_features, num_classes)

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.stages(x), 1)


@BACKBONES.register("encoder4")
def encoder4(num_classes: int, box_size: int, **kw) -> Encoder4:
    """The release's small encoder (16, 16, 16, 128 channels) + linear classifier."""
    return Encoder4(num_classes=num_classes, box_size=box_size, **kw)
