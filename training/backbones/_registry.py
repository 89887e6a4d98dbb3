"""The backbone registry lives in its own module so family files can register without import cycles."""

from __future__ import annotations

from torch import nn

from cryoshift.training.registry import Registry

BACKBONES: Registry[nn.Module] = Registry("backbone")
