"""AdaBN re-estimates BatchNorm statistics on the target and leaves the model in eval mode."""

from __future__ import annotations

import pytest
import torch

from cryoshift.training.adapt import create_method
from cryoshift.training.backbones import create_backbone


def _method() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_method(
        "adabn",
        backbone=create_backbone("cryonet-small", num_classes=3, box_size=16),
        num_classes=3,
        box_size=16,
    )


def test_bn_stats_move_to_target_statistics() -> None:
    method = _method()
    target = 3.0 + 2.0 * torch.randn(12, 1, 16, 16, 16)
    first_conv, first_bn = method.backbone.stages[0][0], method.backbone.stages[0][1]
    with torch.no_grad():
        pre = first_conv(target)  # what the first BN sees
    want_mean = pre.mean(dim=(0, 2, 3, 4))
    assert not torch.allclose(first_bn.running_mean, want_mean, atol=1e-2)
    method.finalize(target[i : i + 4] for i in range(0, 12, 4))
    torch.testing.assert_close(first_bn.running_mean, want_mean, atol=1e-4, rtol=1e-4)
    want_var = pre.var(dim=(0, 2, 3, 4))
    torch.testing.assert_close(first_bn.running_var, want_var, atol=0.0, rtol=0.05)
    assert first_bn.momentum == 0.1 and first_bn.num_batches_tracked == 3
    assert not method.backbone.training


def test_no_batches_raises_and_keeps_stats() -> None:
    method = _method()
    before = method.backbone.stages[0][1].running_mean.clone()
    with pytest.raises(ValueError, match="at least one target batch"):
        method.finalize(iter([]))
    torch.testing.assert_close(method.backbone.stages[0][1].running_mean, before)
