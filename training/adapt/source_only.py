"""Source-only baseline and AdaBN (the same training plus BatchNorm re-estimation on the target)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ._registry import METHODS
from .base import AdaptationMethod


@METHODS.register("source-only")
class SourceOnly(AdaptationMethod):
    """Cross-entropy on labelled simulation; the method never looks at the target (the baseline to
    beat). With a simulated source and a target, ``cryoshift train``'s default recipe still adds
    template-labelled target volumes and spectrum matching unless they are turned off
    (trainer.recipe_note says so when a run starts)."""

    name = "source-only"
    summary = "simulation alone, the baseline"


@METHODS.register("adabn")
class AdaBN(AdaptationMethod):
    """Source-only training, then BatchNorm statistics re-estimated on target data (Li et al. 2016).

    The cheapest adaptation there is: the domain shift in low-level intensity statistics is
    absorbed by the normalisation layers without any gradient step.
    """

    name = "adabn"
    summary = "BatchNorm statistics re-estimated on the target"
    needs_target = True  # only in finalize(); losses() ignores target_x

    def finalize(self, target_batches: Iterable[torch.Tensor]) -> None:
        """Replace every BatchNorm's running mean/var by the cumulative average over target batches."""
        norms = [m for m in self.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms:
            return  # nothing to re-estimate (e.g. cb3d has no BatchNorm)
        device = next(self.backbone.parameters()).device
        momenta = [m.momentum for m in norms]
        self.backbone.eval()
        seen = 0
        try:
            with torch.no_grad():
                for batch in target_batches:
                    if seen == 0:
                        for m in norms:
                            m.reset_running_stats()
                            m.momentum = None  # cumulative moving average over all batches
                            m.train()
                    self.backbone(batch.to(device))
                    seen += 1
        finally:
            for m, momentum in zip(norms, momenta, strict=True):
                m.momentum = momentum
            self.backbone.eval()
        if seen == 0:
            raise ValueError("adabn.finalize needs at least one target batch")
