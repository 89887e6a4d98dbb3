"""Turn a model's raw outputs into the numbers a user reads: calibrated probabilities,
confidence, an ``unknown`` flag and the shift score.

Pure numpy so that every backend (ONNX Runtime, TensorRT, a null model in benchmarks)
scores identically; the formulas follow the model contract in ``docs/design.md``. Training
(``cryoshift.training.calibrate``) imports these functions, so the temperature, threshold and
shift reference it fits are computed with exactly the numbers the runtime reports.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cryoshift.runtime.metadata import ModelMetadata

VAR_FLOOR = 1e-6  # smallest feature variance the shift score divides by (training and runtime alike)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` computed stably in float64.

    Temperature scaling is how the model was calibrated, so the runtime applies it before
    reading off a confidence; float64 keeps tiny probabilities from rounding to zero.

    The row maximum is subtracted *before* dividing by the temperature (the same softmax): for
    finite logits the largest entry is then exactly 0 and the others at most -inf, never
    ``inf - inf``. Dividing first turned finite logits over a tiny temperature (5e-324) into NaN
    probabilities, which argmax read as class 0.
    """
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive number, not {temperature}")
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    with np.errstate(over="ignore"):  # a difference over a tiny temperature is -inf: exp gives 0
        z /= float(temperature)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def feature_distance(features: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Normalised distance ``sqrt(mean_j (f_j - mu_j)^2 / var_j)`` of each row from a diagonal Gaussian.

    ``var`` is floored at :data:`VAR_FLOOR`: a feature that never varied in the reference data
    (a dead channel) must not turn a tiny difference into an enormous score. Training computes
    the reference statistics with this same function and floor.
    """
    f = np.asarray(features, dtype=np.float64)
    var = np.maximum(np.asarray(var, dtype=np.float64), VAR_FLOOR)
    return np.sqrt(np.mean((f - np.asarray(mean, dtype=np.float64)) ** 2 / var, axis=1))


def shift_score(features: np.ndarray, mean: np.ndarray, var: np.ndarray, reference: float) -> np.ndarray:
    """:func:`feature_distance` over the reference distance (~1 in the adapted domain)."""
    return feature_distance(features, mean, var) / (float(reference) if reference > 0 else 1.0)


def shift_scores(features: np.ndarray, metadata: ModelMetadata) -> np.ndarray:
    """Distance of each feature vector from the adapted domain, ~1 in-domain.

    ``sqrt(mean_j (f_j - mu_j)^2 / var_j) / shift_reference``. A model without stored
    feature statistics gets NaN: an honest "not available" rather than a made-up number.
    """
    f = np.asarray(features, dtype=np.float64)
    mean = np.asarray(metadata.feature_mean, dtype=np.float64)
    var = np.asarray(metadata.feature_var, dtype=np.float64)
    if mean.size == 0 or mean.size != f.shape[1] or var.size != mean.size:
        return np.full(f.shape[0], np.nan)
    return shift_score(f, mean, var, metadata.shift_reference)


@dataclass
class Scores:
    """Per-row results of one batch (all arrays have the batch's length)."""

    probabilities: np.ndarray  # (n, K) float64
    predicted: np.ndarray  # (n,) int class index
    confidence: np.ndarray  # (n,) max probability
    unknown: np.ndarray  # (n,) bool: confidence under the threshold
    shift: np.ndarray  # (n,) shift score (NaN without feature statistics)


def score(
    logits: np.ndarray, features: np.ndarray, metadata: ModelMetadata, unknown_threshold: float | None = None
) -> Scores:
    """Score one batch; ``unknown_threshold`` overrides the model's calibrated default.

    Logits must be finite (the pipeline makes rows with NaN/Inf logits error rows first,
    runtime/pipeline.py ``finite_outputs``): a row of NaN probabilities would be read by argmax as
    class 0 with a NaN confidence, a silently wrong answer, so any such row is refused here.
    """
    probs = softmax(logits, metadata.temperature)
    bad = ~np.isfinite(probs).all(axis=1)
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} of {len(probs)} rows have probabilities that are not finite (their "
            "logits are not finite): such rows must become error rows before scoring"
        )
    predicted = probs.argmax(axis=1)
    confidence = probs[np.arange(probs.shape[0]), predicted]
    threshold = metadata.unknown_threshold if unknown_threshold is None else float(unknown_threshold)
    return Scores(probs, predicted, confidence, confidence < threshold, shift_scores(features, metadata))
