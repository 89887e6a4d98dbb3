"""Adaptation methods, registered by name in ``METHODS``.

``create_method(name, backbone=, num_classes=, box_size=, **hparams)`` returns an ``nn.Module``
with ``backbone``, ``needs_target``, ``needs_target_labels``, ``losses(...)``,
``param_groups(lr)`` and ``finalize(target_batches)`` (see ``base.py`` for the contract). Every
module of this package is imported here, so a new method is one file: its class, registered with
``@METHODS.register(name)``, its ``summary`` and its hyper-parameter defaults (``HPARAMS``).
A method of another package is an :class:`AdaptationMethod` subclass its distribution declares
in the ``cryoshift.methods`` entry-point group (``PLUGIN_GROUP``; training/registry.py), so every
process finds it, ``cryoshift train --resume`` included. ``known_hparams()`` lists every
hyper-parameter, ``methods_help()`` the methods for the CLI; ``python -m cryoshift.training.adapt``
lists them with their hyper-parameters.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from cryoshift.runtime.errors import require_package_extra

try:
    from torch import nn
except ImportError:  # no torch: the extra to install in one line (`python -m` too), not a traceback
    require_package_extra("train", __name__, "torch")
    raise  # torch is there: something else is missing

from ._registry import METHODS
from .base import AdaptationMethod, known_hparams
from .grl import GradientReversal, grl_lambda, reverse_gradient
from .warp import Warp

PLUGIN_GROUP = "cryoshift.methods"

for _module in pkgutil.iter_modules(__path__):  # registers the methods
    if _module.name != "__main__":  # the listing command, run by ``python -m`` only
        importlib.import_module(f"{__name__}.{_module.name}")


def _plugin_problem(name: str, obj: object) -> str | None:
    """Why a ``cryoshift.methods`` entry point's object is not a method (None: it is one).

    A plain function or another class would fail later, in ``known_hparams`` of every run; a
    class whose ``name`` is not its entry point's (inherited ``'source-only'``) named the wrong
    method in its own error messages."""
    if not (isinstance(obj, type) and issubclass(obj, AdaptationMethod)):
        what = f"class {obj.__name__}" if isinstance(obj, type) else f"a {type(obj).__name__}"
        return f"is {what}, not a subclass of cryoshift.training.adapt.AdaptationMethod"
    if obj.name != name:
        return f"is class {obj.__name__} with name {obj.name!r}: set name = {name!r} in the class"
    return None


METHODS.enable_plugins(PLUGIN_GROUP, check=_plugin_problem)

__all__ = [
    "METHODS",
    "PLUGIN_GROUP",
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
