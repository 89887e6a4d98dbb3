"""MADA (Pei et al. 2018): one domain discriminator per class, weighted by class probability.

Discriminator k sees every sample's features through gradient reversal, and its per-sample BCE
(source=0, target=1) is weighted by the classifier's detached softmax probability of class k. The
features are thus aligned class by class: a target cluster is pulled toward the source cluster of
the class the classifier believes it is, not toward the source distribution as a whole.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import METHODS
from .base import ADVERSARIAL_HPARAMS, AdaptationMethod
from .discriminators import FEATURE_DISCRIMINATOR_HPARAMS, FeatureDiscriminator, domain_labels


def mada_loss(
    domain_logits: torch.Tensor, probs: torch.Tensor, domains: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-weighted domain BCE.

    ``domain_logits`` (B, K): discriminator k's logit for each sample; ``probs`` (B, K): class
    probabilities (detached here); ``domains`` (B,): 0 source, 1 target. Returns (mean over
    classes, per-class losses (K,)), each class loss being the mean over samples of p_k * BCE_k.
    """
    bce = F.binary_cross_entropy_with_logits(
        domain_logits, domains.unsqueeze(1).expand_as(domain_logits), reduction="none"
    )
    per_class = (probs.detach() * bce).mean(dim=0)
    return per_class.mean(), per_class


class ClassDiscriminators(nn.Module):
    """K feature discriminators evaluated on the same features; output (B, K) logits."""

    def __init__(self, num_classes: int, in_features: int, hidden: int):
        super().__init__()
        self.heads = nn.ModuleList(FeatureDiscriminator(in_features, hidden) for _ in range(num_classes))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.stack([d(features) for d in self.heads], dim=1)


class MADAMixin:
    """The MADA term, shared by ``mada`` and ``cryoshift``."""

    HPARAMS: ClassVar[dict[str, Any]] = {
        "mada_weight": 1.0,  # mean over classes of the class-wise domain BCEs
        **ADVERSARIAL_HPARAMS,
        **FEATURE_DISCRIMINATOR_HPARAMS,
    }
    backbone: nn.Module
    hparams: dict[str, Any]
    class_discriminators: ClassDiscriminators

    def _build_mada(self) -> None:
        self.class_discriminators = ClassDiscriminators(
            self.num_classes, self.backbone.num_features, int(self.hparams["disc_hidden"])
        )

    def _mada_term(
        self, feats: torch.Tensor, logits: torch.Tensor, domains: torch.Tensor, progress: float
    ) -> torch.Tensor:
        probs = torch.softmax(logits.detach(), dim=1)
        loss, _ = mada_loss(self.class_discriminators(self._reversed(feats, progress)), probs, domains)
        return loss


@METHODS.register("mada")
class MADA(MADAMixin, AdaptationMethod):
    name = "mada"
    summary = "one domain discriminator per class"
    needs_target = True

    def __init__(self, backbone: nn.Module, num_classes: int, box_size: int, **hparams: Any):
        super().__init__(backbone, num_classes, box_size, **hparams)
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
        n_s = source_x.shape[0]
        feats = self.backbone.forward_features(torch.cat([source_x, target_x]))
        logits = self.backbone.forward_head(feats)
        ce = self._ce(logits[:n_s], source_y)
        domains = domain_labels(n_s, target_x.shape[0], feats.device)
        mada = self._mada_term(feats, logits, domains, progress)
        total = self.hparams["ce_weight"] * ce + self.hparams["mada_weight"] * mada
        return {"total": total, "ce": ce.detach(), "mada": mada.detach()}

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        return self._groups(lr, [self.class_discriminators])
