"""Self-training on the unlabelled target: information maximisation + class-balanced pseudo-labels.

Why this and not only adversarial alignment: on subtomograms the domain discriminators of
DANN/MADA/warp saturate within a few epochs (BCE ~1e-5: the domains are trivially told apart
by noise texture and wedge), after which no useful gradient reaches the backbone. Self-training
needs no discriminator. It asks the classifier itself to make confident, class-diverse
decisions on the target (SHOT-style information maximisation, Liang et al. ICML 2020) and
trains on its own most confident target predictions, taken per predicted class so that a big
class cannot swallow the small ones (class-balanced self-training, Zou et al. ECCV 2018).

Source and target pass through the backbone separately, so each BatchNorm layer normalises
each domain with its own batch statistics during training; ``finalize`` then re-estimates the
running statistics on the target (AdaBN), which is what the exported model uses.

With ``teacher_decay`` > 0 the pseudo-labels come from a teacher whose weights are an exponential
moving average of the student's (mean teacher, Tarvainen & Valpola 2017; self-ensembling for
domain adaptation, French et al. ICLR 2018), and the exported model is that average. A model
labelling its own batch reinforces its own mistakes on the step it makes them; an average over
about ``1 / (1 - decay)`` steps changes slowly, and averaged weights sit in flatter minima that
transfer better to shifted data (SWAD, Cha et al. NeurIPS 2021).

The target terms start at ``adapt_start`` (fraction of training) and ramp up linearly over
``adapt_ramp``: self-training on a model that cannot yet classify the source would only
reinforce noise.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import METHODS
from .base import in_range
from .source_only import AdaBN


def information_maximisation_loss(logits: torch.Tensor) -> torch.Tensor:
    """Mean prediction entropy minus the entropy of the mean prediction (both in nats)."""
    p = F.softmax(logits.float(), dim=1)
    log_p = F.log_softmax(logits.float(), dim=1)
    conditional = -(p * log_p).sum(1).mean()
    marginal = p.mean(0)
    diversity = -(marginal * torch.log(marginal.clamp_min(1e-8))).sum()
    return conditional - diversity


def balanced_pseudo_labels(logits: torch.Tensor, fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask, labels): per predicted class, the most confident ``fraction`` of its samples."""
    with torch.no_grad():
        conf, pred = F.softmax(logits.float(), dim=1).max(1)
        mask = torch.zeros_like(pred, dtype=torch.bool)
        for k in pred.unique():
            members = (pred == k).nonzero().flatten()
            keep = max(1, round(fraction * len(members)))
            mask[members[conf[members].topk(keep).indices]] = True
    return mask, pred


@METHODS.register("selftrain")
class SelfTrain(AdaBN):
    """Source cross-entropy + target information maximisation + class-balanced pseudo-labels."""

    name = "selftrain"
    summary = "self-training with AdaBN"
    needs_target = True
    HPARAMS: ClassVar[dict[str, Any]] = {
        "im_weight": 1.0,  # information maximisation on the target
        "pseudo_weight": 0.5,  # cross-entropy on class-balanced confident target predictions
        "pseudo_fraction": 0.5,  # share of each predicted class used as pseudo-labels
        "adapt_start": 0.3,  # fraction of training before the target terms start
        "adapt_ramp": 0.2,  # fraction of training over which they ramp up to full weight
        # the target terms every k-th step: the target pass doubled a step's cost while its terms
        # are near saturation for most of the run (trainer.py gives the other steps no target
        # batch). 4: self-training epochs 35 % shorter, accuracy unchanged on the development
        # draws (benchmarks/results/accuracy_levers.md, twelfth round)
        "target_every": 4,
        # > 0: pseudo-labels from, and the exported model is, an exponential moving average of
        # the weights with this decay per step (0: off; see the module docstring)
        "teacher_decay": 0.0,
    }

    @classmethod
    def hparam_problems(cls, hparams: dict[str, Any]) -> list[str]:
        """The ranges, refused before any data is read: each value outside one failed or trained
        something else only at the first target step, a third of the run in.

        ``teacher_decay`` in [0, 1): the mean teacher keeps this fraction of its average per step.
        ``pseudo_fraction`` in (0, 1]: above 1 topk raised a traceback, 0 still kept one volume
        per class. ``adapt_start`` in [0, 1): at 1 (or later) the target terms never start, an
        AdaBN run labelled selftrain (a start the run's last step does not reach is a note,
        trainer.py). ``adapt_ramp`` in [0, 1]: a fraction of training."""
        problems = super().hparam_problems(hparams)
        rules = (
            ("teacher_decay", 0.0, 1.0, False, True),
            ("pseudo_fraction", 0.0, 1.0, True, False),
            ("adapt_start", 0.0, 1.0, False, True),
            ("adapt_ramp", 0.0, 1.0, False, False),
        )
        for key, low, high, low_open, high_open in rules:
            problem = in_range(key, hparams[key], low, high, low_open, high_open)
            if problem and key == "adapt_start" and float(hparams[key]) >= 1.0:
                problem += " (the target terms would never start)"
            if problem:
                problems.append(problem)
        return problems

    def __init__(self, backbone: nn.Module, num_classes: int, box_size: int, **hparams: Any):
        super().__init__(backbone, num_classes, box_size, **hparams)
        decay = float(self.hparams["teacher_decay"])
        self.teacher: nn.Module | None = None
        if decay > 0:
            self.teacher = copy.deepcopy(backbone).requires_grad_(False)
            # steps averaged so far: the decay is warmed up as (1 + n) / (10 + n), so that the
            # first steps' random weights do not linger in the average; a buffer, so it resumes
            self.register_buffer("teacher_steps", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def _update_teacher(self) -> None:
        """One moving-average step towards the student's current weights (its buffers copied)."""
        assert self.teacher is not None
        n = int(self.teacher_steps)
        decay = min(float(self.hparams["teacher_decay"]), (1 + n) / (10 + n))
        for mean, current in zip(self.teacher.parameters(), self.backbone.parameters(), strict=True):
            mean.lerp_(current.detach(), 1.0 - decay)
        for mean, current in zip(self.teacher.buffers(), self.backbone.buffers(), strict=True):
            mean.copy_(current)
        self.teacher_steps += 1

    def target_weight(self, progress: float) -> float:
        """0 before ``adapt_start``, then a linear ramp to 1 over ``adapt_ramp`` of training."""
        start, ramp = float(self.hparams["adapt_start"]), max(float(self.hparams["adapt_ramp"]), 1e-6)
        return float(min(1.0, max(0.0, (progress - start) / ramp)))

    def losses(
        self,
        source_x: torch.Tensor,
        source_y: torch.Tensor,
        target_x: torch.Tensor | None = None,
        progress: float = 1.0,
        target_y: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        # no target batch on the steps between target steps (``target_every``)
        self._check_inputs(target_x, target_y, target_required=int(self.hparams["target_every"]) == 1)
        if self.teacher is not None and self.training:
            self._update_teacher()  # towards the weights the last optimiser step made
        ce = self._ce(self.backbone(source_x), source_y)
        total = self.hparams["ce_weight"] * ce
        out = {"ce": ce.detach()}
        weight = self.target_weight(progress)
        # before the ramp the target costs nothing (AdaBN still sees it in finalize)
        if weight > 0 and target_x is not None:
            logits = self.backbone(target_x)
            im = information_maximisation_loss(logits)
            labeller = logits
            if self.teacher is not None:
                with torch.no_grad():
                    self.teacher.train(self.backbone.training)  # the student's batch statistics
                    labeller = self.teacher(target_x)
            mask, labels = balanced_pseudo_labels(labeller, float(self.hparams["pseudo_fraction"]))
            pseudo = F.cross_entropy(logits[mask], labels[mask])
            total = total + weight * (self.hparams["im_weight"] * im + self.hparams["pseudo_weight"] * pseudo)
            out.update(im=im.detach(), pseudo=pseudo.detach())
        out["total"] = total
        return out

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        return self._groups(lr)

    def finalize(self, target_batches: Iterable[torch.Tensor]) -> None:
        """The teacher's weights become the model's (when there is one), then AdaBN on the target."""
        if self.teacher is not None:
            self.backbone.load_state_dict(self.teacher.state_dict())
        super().finalize(target_batches)
