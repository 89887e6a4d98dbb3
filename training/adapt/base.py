"""The adaptation-method contract shared with the trainer.

A method is an ``nn.Module`` that owns the backbone (``method.backbone``, the part that is
exported) plus whatever it needs besides (discriminators, the warp net). The trainer calls only
``losses``, ``param_groups`` and ``finalize``, so a new method is one file and one import line.

Hyper-parameters form one flat namespace shared by all methods (``DEFAULT_HPARAMS``): the trainer
can pass the same dictionary to any method, each method reads the keys it uses (``USES``), and a
misspelt key fails loudly with the closest valid name.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .grl import grl_lambda, reverse_gradient

DEFAULT_HPARAMS: dict[str, Any] = {
    "ce_weight": 1.0,  # cross-entropy on labelled source (and warped source)
    "dann_weight": 1.0,  # DANN domain BCE
    "mada_weight": 1.0,  # mean over classes of the class-wise domain BCEs
    "img_weight": 1.0,  # image-level (warp) discriminator BCE
    "target_weight": 1.0,  # oracle only: cross-entropy on labelled target
    "grl_max": 1.0,  # gradient-reversal weight reached at the end of the ramp
    "disc_hidden": 256,  # feature-discriminator width
    "disc_lr_mult": 1.0,  # discriminator lr = lr * disc_lr_mult
    "warp_lr_mult": 10.0,  # warp lr = lr * warp_lr_mult (the release: 5e-3 warp vs ~1e-4 net)
    "warp_channels": 8,  # warp encoder width (kept small: it runs on every training batch)
    "warp_max_shift": 2.0,  # largest displacement of the random deformation, in voxels
    "warp_sigma": 2.0,  # Gaussian smoothing of the displacement field, in voxels
    "warp_intensity": 0.1,  # additive intensity change as a fraction of each volume's value range
    "img_disc_channels": 8,  # image-discriminator width
    "label_smoothing": 0.0,
    "im_weight": 1.0,  # selftrain: information maximisation on the target
    "pseudo_weight": 0.5,  # selftrain: cross-entropy on class-balanced confident target predictions
    "pseudo_fraction": 0.5,  # selftrain: share of each predicted class used as pseudo-labels
    "adapt_start": 0.3,  # selftrain: fraction of training before the target terms start
    "adapt_ramp": 0.2,  # selftrain: fraction of training over which they ramp up to full weight
}


def check_hparams(method: str, hparams: dict[str, Any]) -> dict[str, Any]:
    """Merge ``hparams`` (None = default) into the defaults; unknown keys raise ValueError."""
    merged = dict(DEFAULT_HPARAMS)
    for key, value in hparams.items():
        if key not in DEFAULT_HPARAMS:
            close = difflib.get_close_matches(key, DEFAULT_HPARAMS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"method {method!r}: unknown hyper-parameter {key!r}; "
                f"valid: {', '.join(sorted(DEFAULT_HPARAMS))}.{hint}"
            )
        if value is not None:
            merged[key] = value
    return merged


class AdaptationMethod(nn.Module):
    """Base: source cross-entropy only. Subclasses override ``losses`` and set the flags."""

    name: ClassVar[str] = "source-only"
    needs_target: ClassVar[bool] = False
    needs_target_labels: ClassVar[bool] = False
    USES: ClassVar[tuple[str, ...]] = ("ce_weight", "label_smoothing")

    def __init__(self, backbone: nn.Module, num_classes: int, box_size: int, **hparams: Any):
        super().__init__()
        if getattr(backbone, "num_classes", num_classes) != num_classes:
            raise ValueError(f"backbone has {backbone.num_classes} classes but method got {num_classes}")
        self.backbone = backbone
        self.num_classes = num_classes
        self.box_size = box_size
        merged = check_hparams(self.name, hparams)
        self.hparams: dict[str, Any] = {k: merged[k] for k in self.USES}

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
        """Scalar losses for one step; ``total`` is what the trainer backpropagates."""
        self._check_inputs(target_x, target_y, target_required=False)
        ce = self._ce(self.backbone(source_x), source_y)
        return {"total": self.hparams["ce_weight"] * ce, "ce": ce.detach()}

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimiser parameter groups (``name``, ``params``, ``lr``); by default one backbone group."""
        return self._groups(lr)

    def finalize(self, target_batches: Iterable[torch.Tensor]) -> None:
        """Hook run once after training on normalised target batches; a no-op by default."""
        return None
