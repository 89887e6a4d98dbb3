"""The warp methods: "warp" (warp + image discriminator, no MADA) and "cryoshift" (warp + MADA).

Each step: the warp alters the simulated batch; an image-level discriminator learns simulated (0)
vs experimental (1) on warped simulations and target volumes, and through gradient reversal the
warp learns to make simulations look experimental. The classifier is trained on the unwarped and
the (detached) warped simulations with their labels; ``cryoshift`` adds class-wise feature
alignment (MADA) between all simulated features and the target's.

Loss weights. The release uses 10 * CE + 10 * image BCE + mean MADA with a constant reversal
weight of 1e2. Here the defaults are 1 : 1 : 1 with the ramped reversal weight (``grl_max``), so
that "cryoshift" is exactly "mada" plus the warp terms (a clean ablation); with Adam a common
factor does not change the updates much, so 10:10:1 is ``ce_weight=10, img_weight=10``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ._registry import METHODS
from .base import ADVERSARIAL_HPARAMS, AdaptationMethod
from .discriminators import ImageDiscriminator, domain_bce, domain_labels
from .mada import MADAMixin
from .warp import Warp


class WarpMixin:
    HPARAMS: ClassVar[dict[str, Any]] = {
        "img_weight": 1.0,  # image-level (warp) discriminator BCE
        **ADVERSARIAL_HPARAMS,
        "warp_lr_mult": 10.0,  # warp lr = lr * warp_lr_mult (the release: 5e-3 warp vs ~1e-4 net)
        "warp_channels": 8,  # warp encoder width (kept small: it runs on every training batch)
        "warp_max_shift": 2.0,  # largest displacement of the random deformation, in voxels
        "warp_sigma": 2.0,  # Gaussian smoothing of the displacement field, in voxels
        "warp_intensity": 0.1,  # additive intensity change as a fraction of each volume's value range
        "img_disc_channels": 8,  # image-discriminator width
    }
    hparams: dict[str, Any]
    warp: Warp
    img_discriminator: ImageDiscriminator

    def _build_warp(self) -> None:
        h = self.hparams
        self.warp = Warp(int(h["warp_channels"]), h["warp_max_shift"], h["warp_sigma"], h["warp_intensity"])
        self.img_discriminator = ImageDiscriminator(int(h["img_disc_channels"]))

    def _warp_terms(
        self, source_x: torch.Tensor, target_x: torch.Tensor, progress: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(warped source, detached for the classifier; image-discriminator BCE)."""
        warped = self.warp(source_x)
        logits = self.img_discriminator(torch.cat([self._reversed(warped, progress), target_x]))
        return warped.detach(), domain_bce(logits, source_x.shape[0])


@METHODS.register("warp")
class WarpRandomization(WarpMixin, AdaptationMethod):
    name = "warp"
    summary = "learned warp of the simulation + image discriminator"
    needs_target = True

    def __init__(self, backbone: nn.Module, num_classes: int, box_size: int, **hparams: Any):
        super().__init__(backbone, num_classes, box_size, **hparams)
        self._build_warp()

    def losses(
        self,
        source_x: torch.Tensor,
        source_y: torch.Tensor,
        target_x: torch.Tensor | None = None,
        progress: float = 1.0,
        target_y: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        self._check_inputs(target_x, target_y, target_required=True)
        warped, img = self._warp_terms(source_x, target_x, progress)
        logits = self.backbone(torch.cat([source_x, warped]))
        ce = self._ce(logits, torch.cat([source_y, source_y]))
        total = self.hparams["ce_weight"] * ce + self.hparams["img_weight"] * img
        return {"total": total, "ce": ce.detach(), "img_disc": img.detach()}

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        return self._groups(lr, [self.img_discriminator], warp=self.warp)


@METHODS.register("cryoshift")
class CryoShift(MADAMixin, WarpMixin, AdaptationMethod):
    """Full Cryo-Shift: warp randomization + image discriminator + MADA."""

    name = "cryoshift"
    summary = "the paper: warp + MADA"
    needs_target = True

    def __init__(self, backbone: nn.Module, num_classes: int, box_size: int, **hparams: Any):
        super().__init__(backbone, num_classes, box_size, **hparams)
        self._build_warp()
        self._build_mada()

    def losses(
        self,
        source_x: torch.Tensor,
        source_y: torch.Tensor,
        target_x: torch.Tensor | None = None,
        progress: float = 1.0,
        target_y: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        self._check_inputs(target_x, target_y, target_required=True)
        n_s, n_t = source_x.shape[0], target_x.shape[0]
        warped, img = self._warp_terms(source_x, target_x, progress)
        feats = self.backbone.forward_features(torch.cat([source_x, warped, target_x]))
        logits = self.backbone.forward_head(feats)
        ce = self._ce(logits[: 2 * n_s], torch.cat([source_y, source_y]))
        mada = self._mada_term(feats, logits, domain_labels(2 * n_s, n_t, feats.device), progress)
        h = self.hparams
        total = h["ce_weight"] * ce + h["img_weight"] * img + h["mada_weight"] * mada
        return {"total": total, "ce": ce.detach(), "img_disc": img.detach(), "mada": mada.detach()}

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        return self._groups(lr, [self.img_discriminator, self.class_discriminators], warp=self.warp)
