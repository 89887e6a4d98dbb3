"""Adaptation methods, registered by name in ``METHODS``.

``create_method(name, backbone=, num_classes=, box_size=, **hparams)`` returns an ``nn.Module``
with ``backbone``, ``needs_target``, ``needs_target_labels``, ``losses(...)``,
``param_groups(lr)`` and ``finalize(target_batches)`` (see ``base.py`` for the contract and
``DEFAULT_HPARAMS`` for every hyper-parameter).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from . import cryoshift, dann, mada, oracle, selftrain, source_only  # noqa: F401  (registers the methods)
from ._registry import METHODS
from .base import DEFAULT_HPARAMS, AdaptationMethod
from .grl import GradientReversal, grl_lambda, reverse_gradient
from .warp import Warp

__all__ = [
    "DEFAULT_HPARAMS",
    "METHODS",
    "AdaptationMethod",
    "GradientReversal",
    "Warp",
    "create_method",
    "grl_lambda",
    "reverse_gradient",
]


def create_method(
    name: str, backbone: nn.Module, num_classes: int, box_size: int, **hparams: Any
) -> AdaptationMethod:
    """Wrap ``backbone`` in adaptation method ``name``; unknown names and hparams suggest the closest."""
    cls = METHODS.get(name)
    return cls(backbone=backbone, num_classes=num_classes, box_size=box_size, **hparams)
