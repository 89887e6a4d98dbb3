"""Oracle: supervised on source AND labelled target. The ceiling for benchmarks, never for users."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ._registry import METHODS
from .base import AdaptationMethod


@METHODS.register("oracle")
class Oracle(AdaptationMethod):
    """Cross-entropy on source plus ``target_weight`` x cross-entropy on labelled target."""

    name = "oracle"
    summary = "reads target labels: benchmarks only"
    needs_target_labels = True
    HPARAMS: ClassVar[dict[str, Any]] = {"target_weight": 1.0}  # cross-entropy on labelled target

    def losses(
        self,
        source_x: torch.Tensor,
        source_y: torch.Tensor,
        target_x: torch.Tensor | None = None,
        progress: float = 1.0,
        target_y: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        if (target_x is None) != (target_y is None):
            raise ValueError("method 'oracle' needs target_x and target_y together")
        n_s = source_x.shape[0]
        x = source_x if target_x is None else torch.cat([source_x, target_x])
        logits = self.backbone(x)
        ce = self._ce(logits[:n_s], source_y)
        out = {"ce": ce.detach()}
        total = self.hparams["ce_weight"] * ce
        if target_x is not None:
            ce_target = self._ce(logits[n_s:], target_y)
            total = total + self.hparams["target_weight"] * ce_target
            out["ce_target"] = ce_target.detach()
        out["total"] = total
        return out
