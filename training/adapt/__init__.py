"""Adaptation methods, registered by name in ``METHODS``.

``create_method(name, backbone=, num_classes=, box_size=, **hparams)`` returns an ``nn.Module``
with ``backbone``, ``needs_target``, ``needs_target_labels``, ``losses(...)``,
``param_groups(lr)`` and ``finalize(target_batches)`` (see ``base.py`` for the contract). Every
module of this package is imported here, so a new method is one file: its class, registered with
``@METHODS.register(name)``, its ``summary`` and its hyper-parameter defaults (``HPARAMS``).
``known_hparams()`` lists every hyper-parameter, ``methods_help()`` the methods for the CLI.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from torch import nn

from ._registry import METHODS
from .base import AdaptationMethod, known_hparams
from .grl import GradientReversal, grl_lambda, reverse_gradient
from .warp import Warp

for _module in pkgutil.iter_modules(__path__):  # registers the methods
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "METHODS",
    "AdaptationMethod",
    "GradientReversal",
    "Warp",
    "create_method",
    "grl_lambda",
    "known_hparams",
    "methods_help",
    "reverse_gradient",
]


def create_method(
    name: str, backbone: nn.Module, num_classes: int, box_size: int, **hparams: Any
) -> AdaptationMethod:
    """Wrap ``backbone`` in adaptation method ``name``; unknown names and hparams suggest the closest."""
    cls = METHODS.get(name)
    return cls(backbone=backbone, num_classes=num_classes, box_size=box_size, **hparams)


def methods_help(default: str | None = None) -> str:
    """The registered methods with their summaries, ``default`` first: the CLI's ``--method`` help."""
    names = sorted(METHODS.names(), key=lambda n: n != default)
    parts = []
    for name in names:
        summary = getattr(METHODS.get(name), "summary", "")
        if name == default:
            summary = f"the default: {summary}" if summary else "the default"
        parts.append(f"{name} ({summary})" if summary else name)
    return ", ".join(parts[:-1]) + (f" or {parts[-1]}" if len(parts) > 1 else parts[-1])
