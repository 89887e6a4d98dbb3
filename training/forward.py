"""Raw volumes through a backbone in eval mode: the one batch forward of the training wing.

The trainer (validation, calibration, feature reference) and evaluate (checkpoints) both need
``(logits, features)`` of numpy volumes; they share this function so the normalisation, batching
and dtype rules cannot drift apart.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cryoshift.training.normalise import normalise


@torch.no_grad()
def forward_numpy(
    backbone: nn.Module, volumes: np.ndarray, mode: str, device: str, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """(logits, features) of raw volumes (N, D, D, D) through ``backbone`` in eval mode.

    Each batch is normalised with ``mode`` (as the exported graph does) on ``device``; the
    backbone's train/eval state is restored afterwards. No volumes: two (0, 0) arrays.
    """
    was_training = backbone.training
    backbone.eval()
    logits, feats = [], []
    for start in range(0, len(volumes), batch_size):
        x = torch.from_numpy(np.array(volumes[start : start + batch_size], dtype=np.float32)).unsqueeze(1)
        x = normalise(x.to(device), mode)
        f = backbone.forward_features(x)
        logits.append(backbone.forward_head(f).float().cpu().numpy())
        feats.append(f.float().cpu().numpy())
    backbone.train(was_training)
    if not logits:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    return np.concatenate(logits), np.concatenate(feats)
