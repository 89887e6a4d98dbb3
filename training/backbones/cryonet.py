"""CryoNet: the default, throughput-first backbone.

A plain stack of 3x3x3 Conv3d + BatchNorm + ReLU stages, the later ones strided, then global
average pooling and a linear head. No data-dependent Python control flow, so the ONNX graph is
only Conv/BatchNorm(folded)/Relu/GlobalAveragePool/Gemm and any cubic box size works. The
``-centred`` variants replace the global average pool by a convolution over the whole final grid
(a learnt weighting by position: picks are centred), so their graph is fixed to the trained box.
``cryonet`` costs ~0.10 GFLOP per 32^3 subtomogram (see ``count_flops``): the stem is strided, so
no activation is ever stored at full resolution (that, not the FLOPs, is what limits 3-D conv speed
on CPU and GPU memory bandwidth). ``cryonet-fine`` keeps a full-resolution first layer (~0.23 GFLOP,
~2-4x slower) for classes that differ only in fine detail.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ._base import Backbone, check_box, conv_bn_relu
from ._registry import BACKBONES
from .canonical import CanonicalPose
from .lowpass import AntiAlias


def _stages(
    widths: Sequence[int], strides: Sequence[int], depth: int, residual: bool, stem: int = 0
) -> nn.Sequential:
    """Conv stages: each a (strided) 3x3x3 conv, then ``depth - 1`` more (plain or residual)."""
    stages: list[nn.Module] = []
    c_in = 1
    if stem:  # one light full-resolution convolution before the strided stages
        stages.append(conv_bn_relu(1, stem))
        c_in = stem
    for width, stride in zip(widths, strides, strict=True):
        stages.append(conv_bn_relu(c_in, width, stride=stride))
        if residual and depth > 1:
            stages.append(ResidualConvs(width, depth - 1))
        else:
            stages += [conv_bn_relu(width, width) for _ in range(depth - 1)]
        c_in = width
    return nn.Sequential(*stages)


def _pool(
    head: str, channels: int, size: int, strides: Sequence[int], features: int
) -> tuple[nn.Module, int]:
    """(pooling module, feature count) of a stage stack's output grid."""
    if head == "avg":  # translation-invariant: where a feature sits in the box is forgotten
        return nn.AdaptiveAvgPool3d(1), channels
    if head == "full":  # picks are centred: a learnt weighting over the final grid keeps the layout
        for stride in strides:
            size = -(-size // stride)  # each 3x3x3 conv with padding 1 gives ceil(size / stride)
        pool = nn.Sequential(
            nn.Conv3d(channels, features, size, bias=False),
            nn.BatchNorm3d(features),
            nn.ReLU(inplace=True),
        )
        return pool, features
    raise ValueError(f"cryonet head must be 'avg' or 'full', not {head!r}")


class CryoNet(Backbone):
    def __init__(
        self,
        num_classes: int,
        box_size: int,
        widths: Sequence[int] = (16, 32, 64, 128),
        strides: Sequence[int] = (2, 2, 1, 2),
        drop_rate: float = 0.0,
        depth: int = 1,
        head: str = "avg",
        head_features: int = 256,
        residual: bool = False,
        stem: int = 0,
        centre_crop: int = 0,
        centre_widths: Sequence[int] = (8, 16, 32, 64),
        centre_strides: Sequence[int] = (1, 2, 1, 2),
        canonical: bool = False,
        antialias: bool = False,
    ):
        super().__init__()
        check_box(box_size, "cryonet")
        if len(widths) != len(strides) or not widths or len(centre_widths) != len(centre_strides):
            raise ValueError("cryonet needs one stride per stage width")
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"cryonet depth (convolutions per stage) must be a positive int, not {depth!r}")
        for name, value in (("stem", stem), ("centre_crop", centre_crop)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"cryonet {name} must be a non-negative int (0 = off), not {value!r}")
        for name, flag in (("residual", residual), ("canonical", canonical), ("antialias", antialias)):
            if not isinstance(flag, bool):
                raise ValueError(f"cryonet {name} must be true or false, not {flag!r}")
        if centre_crop and not (centre_crop < box_size and (box_size - centre_crop) % 2 == 0):
            raise ValueError(
                f"cryonet centre_crop must be smaller than the box ({box_size}) with an even margin, "
                f"not {centre_crop!r}"
            )
        self.num_classes, self.box_size = num_classes, box_size
        # optional pose normalisation in front of everything (backbones/canonical.py)
        self.canonical = CanonicalPose(box_size) if canonical else None
        # optional fixed low-pass before the main branch's strided first convolution (lowpass.py)
        self.antialias = AntiAlias(box_size) if antialias else None
        self.stages = _stages(widths, strides, depth, residual, stem)
        self.pool, self.num_features = _pool(head, widths[-1], box_size, strides, head_features)
        # Optional second branch: the central crop at full resolution. Small complexes fill only the
        # middle of the box, and the main branch halves the resolution in its first convolution.
        self.centre_crop = int(centre_crop)
        if self.centre_crop:
            self.centre_stages = _stages(centre_widths, centre_strides, depth, residual)
            self.centre_pool, extra = _pool(
                head, centre_widths[-1], centre_crop, centre_strides, head_features
            )
            self.num_features += extra
        self.drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes)

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.canonical is not None:
            x = self.canonical(x)
        main = x if self.antialias is None else self.antialias(x)
        features = torch.flatten(self.pool(self.stages(main)), 1)
        if not self.centre_crop:
            return features
        a = (self.box_size - self.centre_crop) // 2
        b = a + self.centre_crop
        centre = self.centre_pool(self.centre_stages(x[:, :, a:b, a:b, a:b]))
        return torch.cat([features, torch.flatten(centre, 1)], 1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(features))

    def dense_layer(self) -> tuple[nn.Module, int]:
        """(module, channels) whose output map dense supervision decodes (training/dense.py): the
        last one before the final strided stage, the finest map that has seen most of the stack
        (8^3 with 64 channels for the default strides at 32^3)."""
        modules = list(self.stages)
        firsts = [i for i, m in enumerate(modules) if _stride(m) > 1]
        end = firsts[-1] if len(firsts) > 1 else len(modules)
        convs = [c for stage in modules[:end] for c in stage.modules() if isinstance(c, nn.Conv3d)]
        return modules[end - 1], convs[-1].out_channels


def _stride(module: nn.Module) -> int:
    """Stride of a stage module's first convolution (1 for a residual block)."""
    conv = next((m for m in module.modules() if isinstance(m, nn.Conv3d)), None)
    return int(conv.stride[0]) if conv is not None else 1


class ResidualConvs(nn.Module):
    """``count`` 3x3x3 conv + BatchNorm layers (ReLU between) whose output is added to their input.

    Why: the identity path lets a stage's extra convolutions start as a no-op and learn a correction,
    which trains deeper stacks faster than plain ones at the same FLOPs (He et al. 2016).
    """

    def __init__(self, channels: int, count: int):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(count):
            layers.append(nn.Conv3d(channels, channels, 3, padding=1, bias=False))
            layers.append(nn.BatchNorm3d(channels))
            if i < count - 1:
                layers.append(nn.ReLU(inplace=True))
        self.body = nn.Sequential(*layers)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


def _create(num_classes: int, box_size: int, **kw) -> CryoNet:
    return CryoNet(num_classes=num_classes, box_size=box_size, **kw)


@BACKBONES.register("cryonet")
def cryonet(num_classes: int, box_size: int, **kw) -> CryoNet:
    """Default: widths 16-32-64-128, strides 2-2-1-2, 128 features, ~0.10 GFLOP at 32^3."""
    return _create(num_classes, box_size, **{"widths": (16, 32, 64, 128), "strides": (2, 2, 1, 2), **kw})


@BACKBONES.register("cryonet-fine")
def cryonet_fine(num_classes: int, box_size: int, **kw) -> CryoNet:
    """Full-resolution first layer: strides 1-2-2-2, 128 features, ~0.23 GFLOP at 32^3."""
    return _create(num_classes, box_size, **{"widths": (16, 32, 64, 128), "strides": (1, 2, 2, 2), **kw})


@BACKBONES.register("cryonet-small")
def cryonet_small(num_classes: int, box_size: int, **kw) -> CryoNet:
    """Tiny variant for tests and smoke runs: widths 8-16-32, 32 features."""
    return _create(num_classes, box_size, **{"widths": (8, 16, 32), "strides": (2, 2, 2), **kw})


@BACKBONES.register("cryonet-deep")
def cryonet_deep(num_classes: int, box_size: int, **kw) -> CryoNet:
    """Two convolutions per stage: widths 16-32-64-128, strides 2-2-1-2, ~0.3 GFLOP at 32^3."""
    return _create(
        num_classes, box_size, **{"widths": (16, 32, 64, 128), "strides": (2, 2, 1, 2), "depth": 2, **kw}
    )


@BACKBONES.register("cryonet-centred")
def cryonet_centred(num_classes: int, box_size: int, **kw) -> CryoNet:
    """cryonet with a centred head: a learnt weighting over the final 4^3 grid (picks are centred, so
    where a feature sits says which complex it is) instead of global average pooling; 256 features,
    ~0.11 GFLOP at 32^3. +5 points on simulated validation, +9-14 on targets (accuracy_levers.md)."""
    return _create(
        num_classes, box_size, **{"widths": (16, 32, 64, 128), "strides": (2, 2, 1, 2), "head": "full", **kw}
    )


@BACKBONES.register("cryonet-deep-centred")
def cryonet_deep_centred(num_classes: int, box_size: int, **kw) -> CryoNet:
    """cryonet-deep with the centred head of ``cryonet-centred``; ~0.36 GFLOP at 32^3."""
    return _create(
        num_classes,
        box_size,
        **{"widths": (16, 32, 64, 128), "strides": (2, 2, 1, 2), "depth": 2, "head": "full", **kw},
    )
