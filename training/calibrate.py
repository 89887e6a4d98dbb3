"""Calibration and the reference statistics a deployed model carries.

Three numbers travel in the model metadata so the runtime can say how sure it is and how
far new data lies from what the model was adapted to:

* ``temperature``: temperature scaling (Guo et al. 2017) fitted on held-out *source* data,
  the only labelled data training may use. One scalar keeps the argmax (accuracy) unchanged.
* ``unknown_threshold``: a low quantile (default 5 %) of the calibrated confidence on that
  held-out source data: about 95 % of in-domain, correctly-typed particles pass, junk that
  belongs to no class tends to fall below.
* ``feature_mean``/``feature_var``/``shift_reference``: a diagonal Gaussian of the adapted
  target's features and the median normalised distance of those features, so the runtime's
  shift score (docs/design.md) is ~1 in the adapted domain.

Everything here is numpy. Softmax and the shift score are the runtime's own functions
(:mod:`cryoshift.runtime.scoring`), so what training fits is what the runtime computes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cryoshift.runtime.scoring import VAR_FLOOR, feature_distance, shift_score, softmax

UNKNOWN_QUANTILE = 0.05


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` under softmax(logits / T)."""
    logp = log_softmax(np.asarray(logits, dtype=np.float64) / temperature)
    return float(-logp[np.arange(len(labels)), np.asarray(labels, dtype=int)].mean())


def fit_temperature(
    logits: np.ndarray, labels: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)
) -> float:
    """Temperature minimising NLL on held-out data (1-D search over log T).

    Returns 1.0 when there is nothing to fit (no samples), so a tiny run never breaks.
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)
    if len(labels) == 0:
        return 1.0
    from scipy.optimize import minimize_scalar  # here: evaluating an ONNX model needs no scipy

    res = minimize_scalar(
        lambda log_t: nll(logits, labels, float(np.exp(log_t))),
        bounds=(np.log(bounds[0]), np.log(bounds[1])),
        method="bounded",
        options={"xatol": 1e-4},
    )
    temperature = float(np.exp(res.x))
    # Never return something worse than no calibration (the search is bounded).
    return temperature if nll(logits, labels, temperature) <= nll(logits, labels, 1.0) else 1.0


def unknown_threshold(logits: np.ndarray, temperature: float, quantile: float = UNKNOWN_QUANTILE) -> float:
    """Calibrated confidence below which a prediction is called "unknown"."""
    if len(logits) == 0:
        return 0.0
    confidence = softmax(logits, temperature).max(axis=1)
    return float(np.quantile(confidence, quantile))


@dataclass
class FeatureReference:
    mean: np.ndarray
    var: np.ndarray
    shift_reference: float

    def distance(self, features: np.ndarray) -> np.ndarray:
        """Raw normalised distance sqrt(mean_j (f_j - mu_j)^2 / var_j) per sample (the runtime's)."""
        return feature_distance(features, self.mean, self.var)

    def shift_score(self, features: np.ndarray) -> np.ndarray:
        """Shift score as the runtime computes it (the same function): ~1 in the adapted domain."""
        return shift_score(features, self.mean, self.var, self.shift_reference)


def feature_reference(features: np.ndarray) -> FeatureReference:
    """Diagonal Gaussian of (target) features and the median normalised distance."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) == 0:
        raise ValueError("feature_reference needs a non-empty (N, F) array")
    mean = f.mean(axis=0)
    var = np.maximum(f.var(axis=0), VAR_FLOOR)
    ref = FeatureReference(mean, var, 1.0)
    median = float(np.median(ref.distance(f)))
    ref.shift_reference = median if median > 0 else 1.0
    return ref
