"""MADA: discriminator k's loss is weighted per sample by the (detached) probability of class k."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cryoshift.training.adapt import create_method
from cryoshift.training.adapt.mada import mada_loss
from cryoshift.training.backbones import create_backbone


def test_per_class_weighting_matches_hand_computation() -> None:
    logits = torch.tensor([[0.3, -1.0], [2.0, 0.5], [-0.2, 1.5], [0.0, -0.7]], requires_grad=True)
    probs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.5, 0.5]], requires_grad=True)
    domains = torch.tensor([0.0, 0.0, 1.0, 1.0])

    def bce(z: float, t: float) -> float:
        return float(F.softplus(torch.tensor(z)) - t * z)

    exp0 = (bce(0.3, 0) + bce(-0.2, 1) + 0.5 * bce(0.0, 1)) / 4
    exp1 = (bce(0.5, 0) + 0.5 * bce(-0.7, 1)) / 4
    total, per_class = mada_loss(logits, probs, domains)
    torch.testing.assert_close(per_class, torch.tensor([exp0, exp1]))
    torch.testing.assert_close(total, torch.tensor((exp0 + exp1) / 2))
    total.backward()
    assert probs.grad is None  # weights are detached: the classifier is not trained by them
    # a sample with zero probability of class k sends no gradient to discriminator k
    assert logits.grad[0, 1] == 0 and logits.grad[1, 0] == 0 and logits.grad[2, 1] == 0
    assert logits.grad[3, 0] != 0 and logits.grad[3, 1] != 0


def test_only_the_predicted_class_discriminator_learns(toy: dict) -> None:
    """If the classifier is certain of class 0 everywhere, only discriminator 0 gets gradient."""
    torch.manual_seed(0)
    backbone = create_backbone("cryonet-small", num_classes=3, box_size=16)
    with torch.no_grad():
        backbone.head.weight.zero_()
        backbone.head.bias.copy_(torch.tensor([60.0, 0.0, 0.0]))
    method = create_method("mada", backbone=backbone, num_classes=3, box_size=16, disc_hidden=16)
    method.losses(toy["sx"][:6], toy["sy"][:6], target_x=toy["tx"][:6], progress=1.0)["total"].backward()
    heads = method.class_discriminators.heads

    def grad_norm(module: torch.nn.Module) -> float:
        return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)

    assert grad_norm(heads[0]) > 1e-3
    assert grad_norm(heads[1]) < 1e-12 and grad_norm(heads[2]) < 1e-12
