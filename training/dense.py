"""Dense supervision from the simulator: the network also draws the particle it classifies.

Why: a class label is one number per simulated volume, and on the noisy, wedged volumes of cryo-ET
the network needs hundreds of thousands of them before it tells small complexes apart
(benchmarks/results/accuracy_levers.md, ninth round: volumes, not architecture, moved it). The
simulator knows much more about each volume than its class: the clean density of the particle it
rotated into the box, before neighbours, CTF, wedge and noise were added. Asking an intermediate
feature map to predict that density on its own coarse grid (a g^3 average, g = box / 4 for the
cryonet family) is hundreds of numbers of supervision per volume (512 at 32^3); it teaches the features the
particle's shape, filled in across the missing wedge, which is what the class decision needs.

The decoder is one 3x3x3 convolution from the feature map to one channel, so nearly all of the
work has to happen in the backbone. It is a training aid only: it lives beside the backbone, is
never exported, and adds one small convolution on an 8^3 map to a step. Volumes without a clean
density (target volumes labelled by template matching) simply add nothing to this loss.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cryoshift.runtime.errors import InputError


def standardise(particles: np.ndarray) -> np.ndarray:
    """Each (g, g, g) density to zero mean and unit variance: the loss weighs every volume alike."""
    flat = particles.reshape(len(particles), -1)
    mean = flat.mean(1, keepdims=True)
    std = flat.std(1, keepdims=True)
    return ((flat - mean) / np.maximum(std, 1e-6)).reshape(particles.shape).astype(np.float32)


# --dense-weight where nobody set it and it applies (a simulated source and a backbone with a dense
# feature map; elsewhere it is off): benchmarks/results/accuracy_levers.md, tenth round.
DEFAULT_WEIGHT = 0.0


def has_dense_layer(name: str, kwargs: dict[str, Any], box: int | None) -> bool:
    """Whether backbone ``name`` has a map dense supervision can decode (True when it cannot even be
    built: the trainer then reports the bad backbone or option in its own words). A pose-normalised
    backbone (``canonical``) has none: its maps are of the rotated box, the target density is not."""
    from cryoshift.training.backbones import create_backbone

    try:
        net = create_backbone(name, num_classes=2, box_size=box or 32, **kwargs)
    except (ValueError, TypeError):
        return True
    return hasattr(net, "dense_layer") and getattr(net, "canonical", None) is None


def check_backbone(name: str, kwargs: dict[str, Any], box: int | None) -> None:
    """Refuse a backbone without a dense feature map before any data is read (InputError)."""
    if not has_dense_layer(name, kwargs, box):
        if kwargs.get("canonical"):
            raise InputError(None, _ROTATED_BOX)
        raise InputError(None, _NO_DENSE_LAYER.format(name=name))


_ROTATED_BOX = (
    "--dense-weight draws the particle in the box's frame, and --backbone-opt canonical=true rotates "
    "the box into the particle's own first: use one or the other"
)
_NO_DENSE_LAYER = "--dense-weight needs a backbone with a dense feature map (the cryonet family), not {name}"


class DenseSupervision(nn.Module):
    """Predicts the clean particle density from the backbone's ``dense_layer`` feature map.

    ``arm()`` before a step's losses, ``loss(particles)`` after: the first backbone forward in
    between is captured. Every adaptation method passes the source batch first through the
    backbone (alone or as the first rows of a concatenated batch), so the first ``len(particles)``
    rows of that forward are the source volumes.
    """

    def __init__(self, backbone: nn.Module, weight: float):
        super().__init__()
        if not hasattr(backbone, "dense_layer"):
            raise InputError(None, _NO_DENSE_LAYER.format(name=type(backbone).__name__))
        layer, channels = backbone.dense_layer()
        self.weight = float(weight)
        self.decoder = nn.Conv3d(channels, 1, 3, padding=1)
        self._armed = False
        self._features: torch.Tensor | None = None
        holder = self

        def capture(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            # a plain function, not a bound method: copies of the backbone (per-epoch deployable
            # models) keep a hook that refers to this instance, which is disarmed outside a step
            if holder._armed:
                holder._features = output
                holder._armed = False

        self._handle = layer.register_forward_hook(capture)
        self.grid = self._probe_grid(backbone)

    def _probe_grid(self, backbone: nn.Module) -> int:
        """Edge of the feature map's grid for this backbone's box (one small forward)."""
        box = int(backbone.box_size)
        device = next(backbone.parameters()).device
        was_training = backbone.training
        backbone.eval()
        views = getattr(backbone, "test_views", 1)
        backbone.test_views = 1
        try:
            self.arm()
            with torch.no_grad():
                backbone(torch.zeros(1, 1, box, box, box, device=device))
        finally:
            backbone.test_views = views
            backbone.train(was_training)
        features = self._take()
        return int(features.shape[-1])

    def arm(self) -> None:
        """Capture the next backbone forward."""
        self._armed, self._features = True, None

    def _take(self) -> torch.Tensor:
        features, self._features, self._armed = self._features, None, False
        if features is None:
            raise RuntimeError("dense supervision: no backbone forward was captured since arm()")
        return features

    def loss(self, particles: torch.Tensor) -> torch.Tensor:
        """Mean squared error of the predicted densities of the rows that have one (finite rows)."""
        features = self._take()[: len(particles)]
        rows = torch.isfinite(particles.flatten(1)).all(1)
        if not bool(rows.any()):
            return features.sum() * 0.0  # keeps the graph (and DDP's bookkeeping) whole
        pred = self.decoder(features[rows]).squeeze(1).float()
        return F.mse_loss(pred, particles[rows].float())

    def close(self) -> None:
        """Remove the hook: the trained backbone leaves with nothing attached."""
        self._handle.remove()
        self._armed, self._features = False, None
