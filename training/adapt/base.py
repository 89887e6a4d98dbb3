"""The adaptation-method contract shared with the trainer.

A method is an ``nn.Module`` that owns the backbone (``method.backbone``, the part that is
exported) plus whatever it needs besides (discriminators, the warp net). The trainer calls only
``losses``, ``param_groups`` and ``finalize``, so a new method is one file in this package
(``training/adapt/__init__.py`` imports every module here, which registers it).

Hyper-parameters form one flat namespace shared by all methods: a key means one thing, with one
default, in every method that takes it. Each class declares the defaults of the keys it adds in
``HPARAMS``, next to the code that reads them; a method takes the ``HPARAMS`` of its whole class
hierarchy (``defaults()``: a mixin's keys come with the mixin) and refuses every other key,
another method's included, naming the keys it takes (and the closest one to a misspelling).
Each value must be of its default's kind in the method it is given to (``kind_problems``; a
plugin may give a key of its own another kind). Rules on the values beyond their kind (a range,
keys that depend on each other) go in the class's ``hparam_problems``, which the command line runs
before any data is read and the constructor runs again (``check_hparams``).

A method of another package follows the same contract and is installed with a
``cryoshift.methods`` entry point (README, "Your own method or backbone"); its class sets
``name`` to its entry point's name.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import METHODS
from .grl import grl_lambda, reverse_gradient

# Read by the adversarial helpers below (``_reversed``, ``_groups``); methods with a discriminator
# take them into their ``HPARAMS``.
ADVERSARIAL_HPARAMS: dict[str, Any] = {
    "grl_max": 1.0,  # gradient-reversal weight reached at the end of the ramp
    "disc_lr_mult": 1.0,  # discriminator lr = lr * disc_lr_mult
}


def known_hparams() -> dict[str, Any]:
    """Every hyper-parameter some registered method takes, with its default (the flat namespace)."""
    known: dict[str, Any] = {}
    for name in METHODS.names():
        known.update(METHODS.get(name).defaults())  # type: ignore[attr-defined]
    return known


def methods_taking(key: str) -> list[str]:
    """The registered methods that take hyper-parameter ``key`` (sorted; empty for a key none knows)."""
    return [name for name in METHODS.names() if key in METHODS.get(name).defaults()]  # type: ignore[attr-defined]


def unused_hparams(method: str, hparams: dict[str, Any]) -> list[str]:
    """The keys of ``hparams`` that are another method's and not ``method``'s, in their order.

    :func:`check_hparams` refuses them; before it did, the Python API accepted them and trained
    without them (``create_method("selftrain", dann_weight=0.5)``), and the run's config.json and
    resume state recorded them. What resumes such a run drops exactly these: keys no method takes
    were refused then too (a misspelling, or a newer cryoshift's key), and an unknown ``method``
    is the registry's to refuse (an empty list)."""
    try:
        own = METHODS.get(method).defaults()  # type: ignore[attr-defined]
    except ValueError:
        return []
    return [key for key in hparams if key not in own and methods_taking(key)]


def kind_problems(defaults: dict[str, Any], hparams: dict[str, Any]) -> list[str]:
    """Values of ``hparams`` not of their default's kind in ``defaults`` (one method's own
    defaults), one clause each, e.g. "target_every must be a whole number >= 1, not 2.5".

    Why the method's own defaults: the kind was taken from one dictionary merged over every
    registered method (:func:`known_hparams`, the last name winning), so a plugin that declared
    ``teacher_decay`` a string made ``selftrain``'s ``teacher_decay=0.9`` refused, and a plugin's
    float ``target_every`` let ``selftrain`` take 2.5 (trained as 2, recorded as 2.5). Numbers must
    be finite and >= 0 (whole ones, counts, >= 1, or >= 0 where the default is 0): a word or NaN
    ended in a traceback in the first step, a negative weight trained without a word. A bool or
    string default takes a bool or a string; other defaults (None, a list) are left to the method;
    None means the default, and keys the method does not take are :func:`hparam_refusal`'s."""
    problems = []
    for key, value in hparams.items():
        if key not in defaults or value is None:
            continue
        default = defaults[key]
        if isinstance(default, (bool, str)):
            if not isinstance(value, type(default)):
                kind = "true or false" if isinstance(default, bool) else "a string"
                problems.append(f"{key} must be {kind}, not {value!r}")
            continue
        if not isinstance(default, (int, float)):
            continue
        whole = isinstance(default, int)
        kinds = (int,) if whole else (int, float)
        number = isinstance(value, kinds) and not isinstance(value, bool)
        # a count is >= 1, unless its default is 0 (a plugin's warm-up steps): the default is
        # always a value one may give
        low = (0 if default == 0 else 1) if whole else 0
        if not number or not math.isfinite(value) or value < low:
            kind = f"a whole number >= {low}" if whole else "a finite number >= 0"
            problems.append(f"{key} must be {kind}, not {value!r}")
    return problems


def in_range(key: str, value: Any, low: float, high: float, low_open: bool, high_open: bool) -> str | None:
    """The clause refusing ``value`` of ``key`` outside its interval (None: inside), written as
    the interval, e.g. "pseudo_fraction must be in (0, 1], not 5": the one wording of the ranges."""
    value = float(value)
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    if above and below:
        return None
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    return f"{key} must be in {interval}, not {value:g}"


def check_hparams(method: type[AdaptationMethod], hparams: dict[str, Any]) -> dict[str, Any]:
    """``method``'s defaults with ``hparams`` on top (None = default), checked as the command line
    checks them: the keys, the kinds (:func:`kind_problems`) and the method's rules
    (``hparam_problems``), each refusal a ValueError of one line.

    Another method's key used to be accepted and ignored (one dictionary for every method), so
    ``create_method("selftrain", ..., dann_weight=0.5)`` trained without the setting, without a
    word; and NaN, negative or string values passed the Python API (only ``cryoshift train``
    checked their kind).
    """
    defaults = method.defaults()
    refused = [key for key in hparams if key not in defaults]
    if refused:
        raise ValueError(hparam_refusal(method.name, refused, sorted(defaults)))
    problems = kind_problems(defaults, hparams)
    if problems:
        raise ValueError("; ".join(problems))
    merged = {key: default if hparams.get(key) is None else hparams[key] for key, default in defaults.items()}
    problems = method.hparam_problems(merged)
    if problems:
        raise ValueError("; ".join(problems))
    return merged


def hparam_refusal(method: str, refused: list[str], takes: list[str], prefix: str = "") -> str:
    """Why ``method`` refuses the hyper-parameters ``refused``, one clause per key (the methods that
    take it, or the closest of ``takes`` to a misspelling), then the keys it takes: the one wording
    of the Python API and of ``--hparam`` (``prefix``), e.g. "--hparam dann_weight is a
    hyper-parameter of dann, not of method 'selftrain'; it takes adapt_ramp, ..."."""
    clauses = []
    for key in refused:
        users = methods_taking(key)
        if users:
            why = f"is a hyper-parameter of {', '.join(users)}, not of method {method!r}"
        else:
            close = difflib.get_close_matches(key, takes, n=1)
            why = f"is not a hyper-parameter of method {method!r}" + (
                f" (did you mean {close[0]}?)" if close else ""
            )
        clauses.append(f"{prefix}{key} {why}")
    return "; ".join(clauses) + (f"; it takes {', '.join(takes)}" if takes else "; it takes none")


class AdaptationMethod(nn.Module):
    """Base: source cross-entropy only. Subclasses override ``losses`` and set the flags."""

    name: ClassVar[str] = "source-only"
    summary: ClassVar[str] = ""  # a few words for the CLI's list of methods
    needs_target: ClassVar[bool] = False
    needs_target_labels: ClassVar[bool] = False
    HPARAMS: ClassVar[dict[str, Any]] = {
        "ce_weight": 1.0,  # cross-entropy on labelled source (and warped source)
        "label_smoothing": 0.0,
    }

    def __init__(self, backbone: nn.Module, num_classes: int, box_size: int, **hparams: Any):
        super().__init__()
        if getattr(backbone, "num_classes", num_classes) != num_classes:
            raise ValueError(f"backbone has {backbone.num_classes} classes but method got {num_classes}")
        self.backbone = backbone
        self.num_classes = num_classes
        self.box_size = box_size
        self.hparams: dict[str, Any] = check_hparams(type(self), hparams)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """This method's hyper-parameters and defaults: the ``HPARAMS`` of its classes and mixins."""
        merged: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            merged.update(vars(klass).get("HPARAMS", {}))
        return merged

    @classmethod
    def hparam_problems(cls, hparams: dict[str, Any]) -> list[str]:
        """What is wrong with ``hparams`` (this method's defaults with the given values on top), one
        clause per problem that starts with the key, e.g. "teacher_decay must be in [0, 1), not 1.5".

        A classmethod, so that the rule lives in one place yet runs before any data is read:
        ``cryoshift train`` and ``TrainConfig`` call it first (trainer.check_method_hparams, which
        writes "--hparam " before each clause), the constructor again for the Python API. A rule
        checked in ``__init__`` alone refused ``--hparam teacher_decay=1.5`` only after the source
        and target were read, minutes in. Whether each value is a number of the default's kind is
        checked before (:func:`kind_problems`); an override extends
        ``super().hparam_problems(hparams)``. Here: ``label_smoothing`` in [0, 1) (torch refuses
        other values, with a traceback, at the first step)."""
        value = hparams.get("label_smoothing")
        if not isinstance(value, (int, float)) or isinstance(value, bool):  # a plugin's own kind
            return []
        problem = in_range("label_smoothing", value, 0.0, 1.0, False, True)
        return [problem] if problem else []

    # -- helpers -----------------------------------------------------------------------------
    def _check_inputs(
        self, target_x: torch.Tensor | None, target_y: torch.Tensor | None, target_required: bool
    ) -> None:
        if target_y is not None and not self.needs_target_labels:
            raise ValueError(
                f"method {self.name!r} is unsupervised on the target: target_y must not be given "
                "(only 'oracle' may see target labels)"
            )
        if target_required and target_x is None:
            raise ValueError(f"method {self.name!r} needs target_x (unlabelled target batch)")

    def _reversed(self, x: torch.Tensor, progress: float) -> torch.Tensor:
        """``x`` behind gradient reversal at this step's ramped weight (``grl_lambda`` up to ``grl_max``)."""
        return reverse_gradient(x, grl_lambda(progress, self.hparams["grl_max"]))

    def _ce(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, label_smoothing=float(self.hparams.get("label_smoothing", 0.0)))

    def _group(self, name: str, modules: Iterable[nn.Module], lr: float) -> dict[str, Any] | None:
        params = [p for m in modules for p in m.parameters() if p.requires_grad]
        return {"name": name, "params": params, "lr": lr} if params else None

    def _groups(
        self, lr: float, discriminators: Iterable[nn.Module] = (), warp: nn.Module | None = None
    ) -> list[dict[str, Any]]:
        """Backbone at ``lr``, discriminators at ``lr * disc_lr_mult``, the warp at ``lr * warp_lr_mult``.

        Groups without trainable parameters are left out. One place for the learning-rate rules,
        so that the adversarial methods cannot drift apart.
        """
        groups = [self._group("backbone", [self.backbone], lr)]
        discriminators = list(discriminators)
        if discriminators:
            groups.append(self._group("discriminator", discriminators, lr * self.hparams["disc_lr_mult"]))
        if warp is not None:
            groups.append(self._group("warp", [warp], lr * self.hparams["warp_lr_mult"]))
        return [g for g in groups if g]

    # -- the contract ------------------------------------------------------------------------
    def losses(
        self,
        source_x: torch.Tensor,
        source_y: torch.Tensor,
        target_x: torch.Tensor | None = None,
        progress: float = 1.0,
        target_y: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Scalar losses for one step; ``total`` is what the trainer backpropagates.

        The step's first backbone forward must have ``source_x`` as its first rows (alone or
        concatenated with other volumes): dense supervision reads them there (training/dense.py).
        """
        self._check_inputs(target_x, target_y, target_required=False)
        ce = self._ce(self.backbone(source_x), source_y)
        return {"total": self.hparams["ce_weight"] * ce, "ce": ce.detach()}

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimiser parameter groups (``name``, ``params``, ``lr``); by default one backbone group."""
        return self._groups(lr)

    def finalize(self, target_batches: Iterable[torch.Tensor]) -> None:
        """Hook run once after training on normalised target batches; a no-op by default."""
        return None
