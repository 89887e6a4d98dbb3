"""Label-free model selection across checkpoints.

The Cryo-Shift release picked its checkpoint with *labelled* target data; here no target
label is used. Each epoch gets:

* ``src_val_acc``: accuracy on held-out labelled source data (the task is still solved);
* ``snd``: soft neighbourhood density (Saito et al., ICCV 2021) of the target predictions,
  normalised to [0, 1]: high when target samples sit in dense, well-separated clusters;
* ``tgt_entropy``: mean prediction entropy on the target, normalised by log K;
* ``tgt_im``: information maximisation, (H(mean p) - mean H(p)) / log K in [0, 1]: high when
  each target prediction is confident AND the predictions spread over the classes.

Source accuracy alone ignores the target, so the rule combines them: among the epochs whose
source validation accuracy is within ``tolerance`` of the best one, take the highest target
criterion (ties -> the later epoch). The default criterion is ``im``: SND rewards a model
whose target predictions are all near-uniform (every sample then has many equally close
neighbours; measured on the 16^3 test data: SND 1.00 after one epoch, 0.99 after three with
better source accuracy), and entropy alone rewards collapsing onto one class; IM penalises
both. ``snd`` and ``entropy`` (1 - tgt_entropy) remain selectable. ``score`` in
selection.json is the criterion for eligible epochs and -1 otherwise, so the chosen epoch is
the arg-max.
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


def information_maximisation(probabilities: np.ndarray) -> float:
    """(H(mean p) - mean H(p)) / log K: confident and diverse predictions score high."""
    p = np.asarray(probabilities, dtype=np.float64)
    if len(p) == 0 or p.shape[1] < 2:
        return 0.0
    marginal = p.mean(axis=0, keepdims=True)
    return float(mean_entropy(marginal) - mean_entropy(p))


CRITERIA = {"im": "tgt_im", "snd": "snd", "entropy": "tgt_entropy"}


def target_scores(target_logits: np.ndarray) -> dict[str, float]:
    """Every label-free target criterion of one model (rows of metrics.csv / selection.json)."""
    probs = softmax(target_logits)
    return {"snd": soft_neighbourhood_density(probs), "tgt_entropy": mean_entropy(probs),
            "tgt_im": information_maximisation(probs)}


def _criterion(row: dict[str, Any], criterion: str) -> float:
    if criterion not in CRITERIA:
        raise ValueError(f"unknown selection criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    value = float(row.get(CRITERIA[criterion], 0.0))
    if not np.isfinite(value):
        return 0.0
    return 1.0 - value if criterion == "entropy" else value


def select_epoch(rows: Sequence[dict[str, Any]], tolerance: float = DEFAULT_TOLERANCE,
                 criterion: str = "im") -> dict[str, Any]:
    """Pick an epoch from per-epoch rows holding ``epoch``, ``src_val_acc`` and target scores.

    Rows without target scores (no target given) select on source accuracy alone. Returns
    ``{"selected_epoch", "rule", "criterion", "tolerance", "epochs": [{epoch, src_val_acc, snd,
    tgt_entropy, tgt_im, eligible, score}]}`` (the content of selection.json).
    """
    if not rows:
        raise ValueError("no epochs to select from")
    if criterion not in CRITERIA:
        raise ValueError(f"unknown selection criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    best_acc = max(float(r.get("src_val_acc", 0.0)) for r in rows)
    epochs = []
    for r in rows:
        acc = float(r.get("src_val_acc", 0.0))
        eligible = acc >= best_acc - tolerance - 1e-12
        value = _criterion(r, criterion) if CRITERIA[criterion] in r else acc
        epochs.append({
            "epoch": int(r["epoch"]),
            "src_val_acc": acc,
            "snd": float(r.get("snd", float("nan"))),
            "tgt_entropy": float(r.get("tgt_entropy", float("nan"))),
            "tgt_im": float(r.get("tgt_im", float("nan"))),
            "eligible": bool(eligible),
            "score": value if eligible else -1.0,
        })
    chosen = max(epochs, key=lambda e: (e["score"], e["epoch"]))
    return {
        "selected_epoch": chosen["epoch"],
        "rule": f"max target {criterion} among epochs with source val accuracy >= best - {tolerance}",
        "criterion": criterion,
        "tolerance": tolerance,
        "uses_target_labels": False,
        "epochs": epochs,
    }
