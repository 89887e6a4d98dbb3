"""DANN: one domain discriminator on the pooled features behind gradient reversal."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ._registry import METHODS
from .base import ADVERSARIAL_HPARAMS, AdaptationMethod
from .discriminators import FEATURE_DISCRIMINATOR_HPARAMS, FeatureDiscriminator, domain_bce


@METHODS.register("dann")
class DANN(AdaptationMethod):
    """Cross-entropy on source + BCE(source=0, target=1) of a feature discriminator through a GRL.

    Source and target go through the backbone in one batch so BatchNorm sees both domains.
    """

    name = "dann"
    summary = "one domain discriminator"
    needs_target = True
    HPARAMS: ClassVar[dict[str, Any]] = {
        "dann_weight": 1.0,  # DANN domain BCE
        **ADVERSARIAL_HPARAMS,
        **FEATURE_DISCRIMINATOR_HPARAMS,
    }

    def __init__(self, backbone: nn.Module, num_classes: int, box_size: int, **hparams: Any):
        super().__init__(backbone, num_classes, box_size, **hparams)
        self.discriminator = FeatureDiscriminator(backbone.num_features, int(self.hparams["disc_hidden"]))

    def losses(
        self,
        source_x: torch.Tensor,
        source_y: torch.Tensor,
        target_x: torch.Tensor | None = None,
        progress: float = 1.0,
        target_y: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        self._check_inputs(target_x, target_y, target_required=True)
        n_s = source_x.shape[0]
        feats = self.backbone.forward_features(torch.cat([source_x, target_x]))
        ce = self._ce(self.backbone.forward_head(feats[:n_s]), source_y)
        dann = domain_bce(self.discriminator(self._reversed(feats, progress)), n_s)
        total = self.hparams["ce_weight"] * ce + self.hparams["dann_weight"] * dann
        return {"total": total, "ce": ce.detach(), "dann": dann.detach()}

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        return self._groups(lr, [self.discriminator])
