"""Backbones (timm style): one file per family, registered by name in ``BACKBONES``.

Every backbone takes normalised (B, 1, D, D, D) input for any cubic D >= 16 and exposes
``num_features``, ``forward_features(x) -> (B, F)``, ``forward_head(f) -> (B, K)`` and
``forward(x) -> logits``. ``model.backbone_name`` is its registry name and ``model.config`` the
keyword arguments that rebuild it (``create_backbone(model.backbone_name, **model.config)``), which
is what checkpoints store as ``backbone`` and ``backbone_kwargs``.

A backbone of another package is a factory (or class) its distribution declares in the
``cryoshift.backbones`` entry-point group (``PLUGIN_GROUP``; training/registry.py): every
process then finds it by name, so ``cryoshift export``/``evaluate`` rebuild its checkpoints too.
"""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from cryoshift.runtime.errors import require_package_extra

try:
    from torch import nn
except ImportError:  # no torch: the extra to install in one line (`python -m` too), not a traceback
    require_package_extra("train", __name__, "torch")
    raise  # torch is there: something else is missing

from . import cb3d, cryonet, dsrf3d, encoder4  # noqa: F401  (registers the families)
from ._base import MAX_TEST_VIEWS, Backbone, check_test_views
from ._registry import BACKBONES
from .flops import count_flops

DEFAULT_BACKBONE = "cryonet"
PLUGIN_GROUP = "cryoshift.backbones"


def _plugin_problem(name: str, obj: object) -> str | None:
    """Why a ``cryoshift.backbones`` entry point's object cannot build a backbone (None: it can)."""
    return None if callable(obj) else f"is a {type(obj).__name__}, not a class or factory function"


BACKBONES.enable_plugins(PLUGIN_GROUP, check=_plugin_problem)

__all__ = [
    "BACKBONES",
    "DEFAULT_BACKBONE",
    "MAX_TEST_VIEWS",
    "PLUGIN_GROUP",
    "Backbone",
    "check_backbone_kwarg_names",
    "check_backbone_kwarg_types",
    "check_test_views_option",
    "count_flops",
    "create_backbone",
    "list_backbones",
    "one_pose",
    "set_test_views",
]


def create_backbone(
    name: str, num_classes: int, box_size: int, test_views: int | None = None, **kw: Any
) -> nn.Module:
    """Build backbone ``name`` for ``num_classes`` classes and cubic ``box_size``.

    Keyword arguments that are None keep the family default (an unset CLI option never overrides
    it); an unknown name raises ValueError with the closest valid name. ``test_views`` > 1 makes
    eval-mode forwards average that many wedge-preserving poses (see ``_base``); only backbones
    built on :class:`Backbone` support it.
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    model = BACKBONES.create(name, num_classes=num_classes, box_size=box_size, **kw)
    if test_views is not None:
        set_test_views(model, test_views, name)
    model.backbone_name = name
    model.config = {
        "num_classes": num_classes,
        "box_size": box_size,
        **{k: v for k, v in kw.items() if v is not None},
        **({"test_views": test_views} if test_views is not None else {}),
    }
    return model


def list_backbones(pattern: str = "*") -> list[str]:
    return BACKBONES.names(pattern)


def set_test_views(model: nn.Module, test_views: int, name: str = "") -> None:
    """Make ``model``'s eval-mode forwards average ``test_views`` poses (ValueError if out of range, or
    if > 1 on a model that is not a :class:`Backbone` and so could not honour it)."""
    if check_test_views(test_views) > 1 and not isinstance(model, Backbone):
        label = repr(name) if name else type(model).__name__
        raise ValueError(f"backbone {label} does not support test_views (it is not a cryoshift Backbone)")
    if isinstance(model, Backbone):
        model.test_views = test_views


@contextmanager
def one_pose(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` scoring one pose inside the block, its own test views restored after (even on error):
    the trainer's per-epoch scores need not pay for the views the selected model is exported with."""
    views = getattr(model, "test_views", 1)
    set_test_views(model, 1)
    try:
        yield model
    finally:
        set_test_views(model, views)


def check_test_views_option(test_views: int) -> None:
    """The ``--test-views`` bound of ``train`` and ``export``, as a one-line input error."""
    from cryoshift.runtime.errors import InputError

    if not 1 <= test_views <= MAX_TEST_VIEWS:
        raise InputError(None, f"--test-views must be from 1 to {MAX_TEST_VIEWS}, not {test_views}")


def _constructor_defaults(backbone: str) -> dict[str, Any]:
    """The keyword defaults of the class that registry entry ``backbone`` builds (its factory's
    return annotation): the factories take ``**kw``, so their own signature says nothing about
    what a keyword should be. ValueError for an unknown name (with the closest valid one)."""
    built = _built_class(backbone)
    if built is None:
        return {}
    return {
        name: p.default
        for name, p in inspect.signature(built.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def _built_class(backbone: str) -> type | None:
    """The class registry entry ``backbone`` builds (None: its factory does not say). A plugin may
    register the class itself, or a factory whose annotations cannot be resolved here."""
    entry = BACKBONES.get(backbone)
    if isinstance(entry, type):
        return entry
    try:
        built = typing.get_type_hints(entry).get("return")
    except (NameError, TypeError, AttributeError):  # a forward reference this module cannot see
        return None
    return built if isinstance(built, type) else None


def _takes_any_keyword(backbone: str) -> bool:
    """Whether the class ``backbone`` builds takes ``**kwargs`` (or cannot be looked at): then no
    keyword can be refused as unknown before it is built."""
    built = _built_class(backbone)
    if built is None:
        return True
    kinds = {p.kind for p in inspect.signature(built.__init__).parameters.values()}
    return inspect.Parameter.VAR_KEYWORD in kinds


# Keywords set by create_backbone's callers, never by --backbone-opt (trainer._BACKBONE_KEYS_SET_BY_TRAIN).
_BUILD_KEYWORDS = ("num_classes", "box_size", "test_views")

# Ranges of numeric keywords, checked before torch sees them: drop_rate=2 failed inside torch
# ("dropout probability has to be between 0 and 1") naming neither option nor backbone.
# Per keyword: the test and how the refusal says the range.
_KWARG_RANGES: dict[str, tuple[typing.Callable[[float], bool], str]] = {
    "drop_rate": (lambda v: 0 <= v <= 1, "from 0 to 1"),
    "width": (lambda v: v > 0, "above 0"),
    "fc_dim": (lambda v: v >= 1, "at least 1"),
}


# Checked default types, in the order tested (bool before int: True is an int to isinstance).
_KWARG_TYPES: tuple[tuple[type, str], ...] = ((bool, "bool"), (int, "int"), (float, "float"), (str, "str"))


def _shown(value: Any) -> str:
    """A value as the user writes it in ``--backbone-opt NAME=VALUE`` (JSON, strings bare)."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def check_backbone_kwarg_names(backbone: str, kwargs: dict[str, Any]) -> None:
    """Refuse a ``--backbone-opt`` key the backbone does not take, naming the keys it does.

    ``--backbone-opt nonsense=1`` reached the constructor and came back as "CryoNet.__init__() got
    an unexpected keyword argument", naming neither the option nor what would be accepted. A class
    that takes ``**kwargs`` (none today) is left to its constructor."""
    from cryoshift.runtime.errors import InputError

    try:
        defaults = _constructor_defaults(backbone)
        open_ended = _takes_any_keyword(backbone)
    except ValueError as exc:
        raise InputError(None, str(exc)) from exc
    unknown = [name for name in kwargs if name not in defaults]
    if not unknown or open_ended:
        return
    import difflib

    options = sorted(k for k in defaults if k not in _BUILD_KEYWORDS)
    close = difflib.get_close_matches(unknown[0], options, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise InputError(
        None,
        f"--backbone-opt {unknown[0]}: {backbone} has no such option ({hint}it takes "
        f"{', '.join(options) or 'none'})",
    )


def check_backbone_kwarg_types(backbone: str, kwargs: dict[str, Any]) -> None:
    """Refuse a ``--backbone-opt`` value of another type than the backbone's default for it, in one line.

    Values come from the command line as JSON or bare strings, so ``drop_rate=abc`` reached the
    constructor as the string 'abc' and failed inside torch ("'<' not supported between instances
    of 'str' and 'int'"), naming neither the option nor the backbone. int is accepted where a float
    is expected; a bool is not taken for an int or float (JSON ``true`` for ``depth`` is a typo, not
    1). Keywords without a default of one of these types (sequences such as ``widths``, unknown
    names) are left to the constructor.
    """
    from cryoshift.runtime.errors import InputError

    try:
        defaults = _constructor_defaults(backbone)
    except ValueError as exc:
        raise InputError(None, str(exc)) from exc
    for name, value in kwargs.items():
        if name not in defaults:
            continue
        default = defaults[name]
        expected = next((label for kind, label in _KWARG_TYPES if isinstance(default, kind)), None)
        if expected is None or value is None:  # None keeps the default (create_backbone)
            continue
        if expected == "bool":
            fits = isinstance(value, bool)
        elif expected == "int":
            fits = isinstance(value, int) and not isinstance(value, bool)
        elif expected == "float":
            fits = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            fits = isinstance(value, str)
        if not fits:
            article = "an" if expected == "int" else "a"
            raise InputError(
                None,
                f"--backbone-opt {name}={_shown(value)}: {backbone} expects {article} {expected} "
                f"(default {_shown(default)})",
            )
        _check_range(backbone, name, value, default)


def _check_range(backbone: str, name: str, value: Any, default: Any) -> None:
    """Refuse a number outside its keyword's range (:data:`_KWARG_RANGES`), NaN included."""
    import math

    from cryoshift.runtime.errors import InputError

    if name not in _KWARG_RANGES or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    inside, words = _KWARG_RANGES[name]
    if not (math.isfinite(value) and inside(value)):
        raise InputError(
            None,
            f"--backbone-opt {name}={_shown(value)}: {backbone} takes {name} {words} "
            f"(default {_shown(default)})",
        )
