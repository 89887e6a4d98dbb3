"""Self-training: its target terms, their schedule, and that they help on a shifted toy target."""

from __future__ import annotations

import pytest
import torch

from cryoshift.training.adapt import create_method
from cryoshift.training.adapt.selftrain import balanced_pseudo_labels, information_maximisation_loss
from cryoshift.training.backbones import create_backbone


def test_information_maximisation_prefers_confident_diverse_predictions() -> None:
    confident_diverse = torch.eye(3).repeat(4, 1) * 20
    confident_collapsed = torch.zeros(12, 3)
    confident_collapsed[:, 0] = 20
    uniform = torch.zeros(12, 3)
    values = [
        float(information_maximisation_loss(x)) for x in (confident_diverse, confident_collapsed, uniform)
    ]
    assert values[0] == pytest.approx(-torch.log(torch.tensor(3.0)).item(), abs=1e-4)
    assert values[0] < values[1] and values[0] < values[2]


def test_pseudo_labels_take_the_most_confident_of_each_predicted_class() -> None:
    # Six samples predicted class 0 (confidence rising with index), two predicted class 1.
    logits = torch.zeros(8, 2)
    logits[:6, 0] = torch.arange(1.0, 7.0)
    logits[6:, 1] = torch.tensor([1.0, 5.0])
    mask, labels = balanced_pseudo_labels(logits, fraction=0.5)
    assert mask.tolist() == [False, False, False, True, True, True, False, True]
    assert labels[mask].tolist() == [0, 0, 0, 1]


def _method() -> torch.nn.Module:
    torch.manual_seed(0)
    backbone = create_backbone("cryonet-small", num_classes=3, box_size=16)
    return create_method(
        "selftrain", backbone=backbone, num_classes=3, box_size=16, adapt_start=0.5, adapt_ramp=0.25
    )


def test_target_terms_follow_the_schedule(toy: dict) -> None:
    method = _method()
    assert [method.target_weight(p) for p in (0.0, 0.5, 0.625, 0.75, 1.0)] == [0, 0, 0.5, 1, 1]
    early = method.losses(toy["sx"][:4], toy["sy"][:4], target_x=toy["tx"][:4], progress=0.2)
    late = method.losses(toy["sx"][:4], toy["sy"][:4], target_x=toy["tx"][:4], progress=0.9)
    assert set(early) == {"total", "ce"}
    assert {"im", "pseudo"} <= set(late)
    assert float(late["total"].detach()) != pytest.approx(float(late["ce"]))


def test_target_every_k_steps_leaves_the_steps_between_to_the_source(toy: dict) -> None:
    """``target_every`` > 1 (the default is 4): a step without a target batch trains on the source
    alone (no error, no target terms); a step with one gets the terms; with 1 every step needs one."""
    torch.manual_seed(0)
    backbone = create_backbone("cryonet-small", num_classes=3, box_size=16)
    method = create_method("selftrain", backbone=backbone, num_classes=3, box_size=16, target_every=4)
    without = method.losses(toy["sx"][:4], toy["sy"][:4], target_x=None, progress=0.9)
    assert set(without) == {"total", "ce"}
    assert float(without["total"].detach()) == pytest.approx(float(without["ce"]))
    with_target = method.losses(toy["sx"][:4], toy["sy"][:4], target_x=toy["tx"][:4], progress=0.9)
    assert {"im", "pseudo"} <= set(with_target)
    every_step = create_method("selftrain", backbone=backbone, num_classes=3, box_size=16, target_every=1)
    with pytest.raises(ValueError, match="needs target_x"):
        every_step.losses(toy["sx"][:4], toy["sy"][:4], target_x=None, progress=0.9)


def test_selftrain_moves_target_predictions_towards_confident_balanced_classes(toy: dict) -> None:
    """On the toy target (other contrast, offset, noise) self-training raises target IM above
    the source-only run that starts from the same weights and sees the same source batches."""
    from cryoshift.training.select import information_maximisation

    def run(name: str) -> float:
        torch.manual_seed(0)
        backbone = create_backbone("cryonet-small", num_classes=3, box_size=16)
        schedule = {"adapt_start": 0.0, "adapt_ramp": 0.1} if name == "selftrain" else {}
        method = create_method(name, backbone=backbone, num_classes=3, box_size=16, **schedule)
        opt = torch.optim.Adam(method.param_groups(3e-3))
        method.train()
        for step in range(30):
            idx = slice((step % 3) * 8, (step % 3) * 8 + 8)
            kw = {"target_x": toy["tx"][idx]} if name == "selftrain" else {}
            out = method.losses(toy["sx"][idx], toy["sy"][idx], progress=step / 30, **kw)
            opt.zero_grad()
            out["total"].backward()
            opt.step()
        method.eval()
        with torch.no_grad():
            probs = torch.softmax(method.backbone(toy["tx"]), 1).numpy()
        return information_maximisation(probs)

    assert run("selftrain") > run("source-only") + 0.05


def test_teacher_is_a_moving_average_that_labels_and_becomes_the_model(toy: dict) -> None:
    """``teacher_decay``: the teacher starts as the student, follows it by the warmed-up decay
    after each optimiser step, is neither trained nor in the backbone's weights, and ``finalize``
    gives the model its weights (then AdaBN)."""
    torch.manual_seed(0)
    backbone = create_backbone("cryonet-small", num_classes=3, box_size=16)
    method = create_method("selftrain", backbone=backbone, num_classes=3, box_size=16, teacher_decay=0.9)
    assert method.teacher is not None and not any(p.requires_grad for p in method.teacher.parameters())
    optimised = {id(p) for g in method.param_groups(1e-2) for p in g["params"]}
    assert optimised.isdisjoint(id(p) for p in method.teacher.parameters())
    opt = torch.optim.Adam(method.param_groups(1e-2))
    method.train()
    student_before = [p.detach().clone() for p in method.backbone.parameters()]
    out = method.losses(toy["sx"][:4], toy["sy"][:4], target_x=toy["tx"][:4], progress=0.9)
    # the first update averages the student with itself
    for mean, start in zip(method.teacher.parameters(), student_before, strict=True):
        assert torch.equal(mean, start)
    opt.zero_grad()
    out["total"].backward()
    opt.step()
    method.losses(toy["sx"][:4], toy["sy"][:4], target_x=None, progress=0.9)
    first = next(method.teacher.parameters())
    kept = 2 / 11  # the warmed-up decay of the second update, (1 + 1) / (10 + 1), below 0.9
    expected = kept * student_before[0] + (1 - kept) * next(method.backbone.parameters()).detach()
    assert torch.allclose(first, expected, atol=1e-6)
    assert not torch.allclose(first, next(method.backbone.parameters()))
    assert int(method.teacher_steps) == 2
    method.finalize([toy["tx"][:8]])
    assert torch.equal(next(method.backbone.parameters()), first)
    with pytest.raises(ValueError, match="teacher_decay"):
        create_method("selftrain", backbone=backbone, num_classes=3, box_size=16, teacher_decay=1.0)
