"""CB3D, the C3D-like backbone of the Cryo-Shift release (heavy; kept as a reference baseline).

conv 64, pool(1,2,2), conv 128, pool, conv 256 x2, pool, conv 512 x2, pool; FC 4096, 4096,
dropout 0.5. No BatchNorm (as in C3D), so AdaBN has nothing to re-estimate on it. ``width``
scales every channel count and FC size so tests can build it tiny.
"""

from __future__ import annotations

import torch
from torch import nn

from ._base import Backbone, check_box, conv_bn_relu, fc_features, scaled
from ._registry import BACKBONES


class CB3D(Backbone):
    def __init__(
        self, num_classes: int, box_size: int, width: float = 1.0, fc_dim: int = 4096, drop_rate: float = 0.5
    ):
        super().__init__()
        check_box(box_size, "cb3d")
        self.num_classes, self.box_size = num_classes, box_size
        c1, c2, c3, c4 = (scaled(c, width) for c in (64, 128, 256, 512))
        self.stages = nn.Sequential(
            conv_bn_relu(1, c1, bn=False),
            nn.MaxPool3d((1, 2, 2)),
            conv_bn_relu(c1, c2, bn=False),
            nn.MaxPool3d(2),
            conv_bn_relu(c2, c3, bn=False),
            conv_bn_relu(c3, c3, bn=False),
            nn.MaxPool3d(2),
            conv_bn_relu(c3, c4, bn=False),
            conv_bn_relu(c4, c4, bn=False),
            nn.MaxPool3d(2),
        )
        # (Z, Y, X) after pooling: Z is halved three times, Y and X four times (floor each time).
        z, yx = box_size // 2 // 2 // 2, box_size // 2 // 2 // 2 // 2
        fc = scaled(fc_dim, width)
        self.fc = fc_features(c4 * z * yx * yx, fc, drop_rate)
        self.num_features = fc
        self.head = nn.Linear(fc, num_classes)

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.stages(x))


@BACKBONES.register("cb3d")
def cb3d(num_classes: int, box_size: int, **kw) -> CB3D:
    """Full-size CB3D; pass ``width=1/16`` for a tiny test model."""
    return CB3D(num_classes=num_classes, box_size=box_size, **kw)
