"""The method registry lives in its own module so method files can register without import cycles."""

from __future__ import annotations

from torch import nn

from cryoshift.training.registry import Registry

METHODS: Registry[nn.Module] = Registry("method")
