"""Turn a model's raw outputs into the numbers a user reads: calibrated probabilities,
confidence, an ``unknown`` flag and the shift score.

Pure numpy so that every backend (ONNX Runtime, TensorRT, a null model in benchmarks)
scores identically; the formulas follow the model contract in ``docs/design.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cryoshift.runtime.metadata import ModelMetadata


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` computed stably in float64.

    Temperature scaling is how the model was calibrated, so the runtime applies it before
    reading off a confidence; float64 keeps tiny probabilities from rounding to zero.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, not {temperature}")
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def shift_scores(features: np.ndarray, metadata: ModelMetadata) -> np.ndarray:
    """Distance of each feature vector from the adapted domain, ~1 in-domain.

    ``sqrt(mean_j (f_j - mu_j)^2 / var_j) / shift_reference``. A model without stored
    feature statistics gets NaN: an honest "not available" rather than a made-up number.
    """
    f = np.asarray(features, dtype=np.float64)
    n = f.shape[0]
    mean = np.asarray(metadata.feature_mean, dtype=np.float64)
    var = np.asarray(metadata.feature_var, dtype=np.float64)
    if mean.size == 0 or mean.size != f.shape[1] or var.size != mean.size:
        return np.full(n, np.nan)
    var = np.maximum(var, 1e-12)
    dist = np.sqrt(np.mean((f - mean) ** 2 / var, axis=1))
    ref = float(metadata.shift_reference) if metadata.shift_reference > 0 else 1.0
    return dist / ref


@dataclass
class Scores:
    """Per-row results of one batch (all arrays have the batch's length)."""

    probabilities: np.ndarray  # (n, K) float64
    predicted: np.ndarray  # (n,) int class index
    confidence: np.ndarray  # (n,) max probability
    unknown: np.ndarray  # (n,) bool: confidence under the threshold
    shift: np.ndarray  # (n,) shift score (NaN without feature statistics)


def score(logits: np.ndarray, features: np.ndarray, metadata: ModelMetadata,
          unknown_threshold: float | None = None) -> Scores:
    """Score one batch; ``unknown_threshold`` overrides the model's calibrated default."""
    probs = softmax(logits, metadata.temperature)
    predicted = probs.argmax(axis=1)
    confidence = probs[np.arange(probs.shape[0]), predicted]
    threshold = metadata.unknown_threshold if unknown_threshold is None else float(unknown_threshold)
    return Scores(probs, predicted, confidence, confidence < threshold, shift_scores(features, metadata))
