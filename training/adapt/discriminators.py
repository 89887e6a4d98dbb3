"""Domain discriminators: an MLP on pooled features and a small 3-D CNN on whole volumes.

Both return one logit per sample (source/simulated = 0, target/experimental = 1); the losses use
BCE-with-logits. They are deliberately small: on features the discriminator only has to be strong
enough to give the backbone a useful adversarial signal.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FEATURE_DISCRIMINATOR_HPARAMS = {"disc_hidden": 256}  # feature-discriminator width (DANN, MADA)


class FeatureDiscriminator(nn.Module):
    """MLP F -> hidden -> hidden -> 1 with ReLU and dropout (the usual DANN/MADA discriminator)."""

    def __init__(self, in_features: int, hidden: int = 256, drop_rate: float = 0.5):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(drop_rate),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(drop_rate),
            nn.Linear(hidden, 1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features).squeeze(1)


class ImageDiscriminator(nn.Module):
    """Strided 3-D CNN on (B, 1, D, D, D) volumes: simulated (0) or experimental (1)?"""

    def __init__(self, channels: int = 8):
        super().__init__()
        c = channels
        layers: list[nn.Module] = []
        c_in = 1
        for c_out in (c, 2 * c, 4 * c):
            layers += [nn.Conv3d(c_in, c_out, 3, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
            c_in = c_out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool3d(1), nn.Flatten(1))
        self.head = nn.Linear(c_in, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)


def domain_labels(n_source: int, n_target: int, device: torch.device) -> torch.Tensor:
    """Float labels for BCE: ``n_source`` zeros then ``n_target`` ones."""
    return torch.cat([torch.zeros(n_source, device=device), torch.ones(n_target, device=device)])


def domain_bce(logits: torch.Tensor, n_source: int) -> torch.Tensor:
    """Mean BCE of one discriminator's logits on a batch of ``n_source`` source samples then target."""
    labels = domain_labels(n_source, logits.shape[0] - n_source, logits.device)
    return F.binary_cross_entropy_with_logits(logits, labels)
