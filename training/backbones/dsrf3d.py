"""DSRF3D-v2 (as described for the Cryo-Shift release): three double-conv stages then two FC layers.

[conv32 x2, pool, conv64 x2, pool, conv128 x2, pool], FC 1024 x2, dropout 0.7. The FC input
size depends on the box size (three floor-halving max pools), so it is computed here rather than
hard-coded for 40^3. The features are the output of the second FC layer.
"""

from __future__ import annotations

import torch
from torch import nn

from ._base import Backbone, check_box, conv_bn_relu, fc_features, scaled
from ._registry import BACKBONES


class DSRF3D(Backbone):
    def __init__(
        self, num_classes: int, box_size: int, width: float = 1.0, fc_dim: int = 1024, drop_rate: float = 0.7
    ):
        super().__init__()
        check_box(box_size, "dsrf3d-v2")
        self.num_classes, self.box_size = num_classes, box_size
        layers: list[nn.Module] = []
        c_in, side = 1, box_size
        for c in (32, 64, 128):
            c = scaled(c, width)
            layers += [conv_bn_relu(c_in, c), conv_bn_relu(c, c), nn.MaxPool3d(2)]
            c_in, side = c, side // 2
        self.stages = nn.Sequential(*layers)
        fc = scaled(fc_dim, width)
        self.fc = fc_features(c_in * side**3, fc, drop_rate)
        self.num_features = fc
        self.head = nn.Linear(fc, num_classes)

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.stages(x))


@BACKBONES.register("dsrf3d-v2")
def dsrf3d_v2(num_classes: int, box_size: int, **kw) -> DSRF3D:
    """Full-size DSRF3D-v2 (~3.9 GFLOP at 32^3); pass ``width=0.125`` for a tiny test model."""
    return DSRF3D(num_classes=num_classes, box_size=box_size, **kw)
