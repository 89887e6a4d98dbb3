"""Label-free model selection across checkpoints.

The Cryo-Shift release picked its checkpoint with *labelled* target data; here no target
label is used. Each epoch gets:

* ``src_val_acc``: accuracy on held-out labelled source data (the task is still solved);
* ``snd``: soft neighbourhood density (Saito et al., ICCV 2021) of the target predictions,
  normalised to [0, 1]: high when target samples sit in dense, well-separated clusters;
* ``tgt_entropy``: mean prediction entropy on the target, normalised by log K (reported).

SND alone rewards a collapsed model (all targets identical -> uniform neighbourhoods) and
source accuracy alone ignores the target, so the rule combines them: among the epochs whose
source validation accuracy is within ``tolerance`` of the best one, take the highest SND
(ties -> the later epoch). ``score`` in selection.json is SND for eligible epochs and -1
otherwise, so the chosen epoch is simply the arg-max.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cryoshift.training.calibrate import softmax

SND_TEMPERATURE = 0.05  # as in the SND paper
DEFAULT_TOLERANCE = 0.05
MAX_SND_SAMPLES = 2000  # the similarity matrix is N x N


def soft_neighbourhood_density(
    probabilities: np.ndarray, temperature: float = SND_TEMPERATURE, max_samples: int = MAX_SND_SAMPLES,
    seed: int = 0,
) -> float:
    """Mean entropy of each target sample's softmax over its similarities to the others.

    Similarities are cosine similarities of the softmax outputs, self excluded; the result is
    divided by log(N - 1) so it lies in [0, 1] whatever the number of samples.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if len(p) > max_samples:
        p = p[np.random.default_rng(seed).choice(len(p), max_samples, replace=False)]
    n = len(p)
    if n < 3:
        return 0.0
    p = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
    sim = (p @ p.T) / temperature
    np.fill_diagonal(sim, -np.inf)
    sim -= sim.max(axis=1, keepdims=True)
    w = np.exp(sim)
    w /= w.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(w > 0, w * np.log(w), 0.0).sum(axis=1)
    return float(ent.mean() / np.log(n - 1))


def mean_entropy(probabilities: np.ndarray) -> float:
    """Mean prediction entropy normalised by log K (0 = certain, 1 = uniform)."""
    p = np.asarray(probabilities, dtype=np.float64)
    if len(p) == 0 or p.shape[1] < 2:
        return 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    return float(ent.mean() / np.log(p.shape[1]))


def target_scores(target_logits: np.ndarray) -> dict[str, float]:
    probs = softmax(target_logits)
    return {"snd": soft_neighbourhood_density(probs), "tgt_entropy": mean_entropy(probs)}


def select_epoch(rows: Sequence[dict[str, Any]], tolerance: float = DEFAULT_TOLERANCE) -> dict[str, Any]:
    """Pick an epoch from per-epoch rows holding ``epoch``, ``src_val_acc`` and ``snd``.

    Returns ``{"selected_epoch", "rule", "tolerance", "epochs": [{epoch, src_val_acc, snd,
    tgt_entropy, eligible, score}]}`` (the content of selection.json).
    """
    if not rows:
        raise ValueError("no epochs to select from")
    best_acc = max(float(r.get("src_val_acc", 0.0)) for r in rows)
    epochs = []
    for r in rows:
        acc = float(r.get("src_val_acc", 0.0))
        eligible = acc >= best_acc - tolerance - 1e-12
        snd = float(r.get("snd", 0.0))
        epochs.append({
            "epoch": int(r["epoch"]),
            "src_val_acc": acc,
            "snd": snd,
            "tgt_entropy": float(r.get("tgt_entropy", float("nan"))),
            "eligible": bool(eligible),
            "score": snd if eligible else -1.0,
        })
    chosen = max(epochs, key=lambda e: (e["score"], e["epoch"]))
    return {
        "selected_epoch": chosen["epoch"],
        "rule": f"max SND among epochs with source val accuracy >= best - {tolerance}",
        "tolerance": tolerance,
        "uses_target_labels": False,
        "epochs": epochs,
    }
