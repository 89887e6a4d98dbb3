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

from cryoshift.runtime.scoring import softmax

SND_TEMPERATURE = 0.05  # as in the SND paper
DEFAULT_TOLERANCE = 0.05
MAX_SND_SAMPLES = 2000  # the similarity matrix is N x N


def soft_neighbourhood_density(
    probabilities: np.ndarray,
    temperature: float = SND_TEMPERATURE,
    max_samples: int = MAX_SND_SAMPLES,
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

# Above this, a loss of a domain discriminator (BCE, nats) means it still cannot tell the domains
# apart well; far below it the discriminator wins outright and its reversed gradient carries nothing.
SATURATED_BCE = 0.05
DISCRIMINATOR_LOSSES = ("dann", "mada", "img_disc")


def collapse_share(num_classes: int) -> float:
    """Share of the target taken by one predicted class above which predictions count as collapsed.

    "Most of the target" (0.5) for six classes or more; with few classes a balanced set already gives
    one class 1/K, so the bar rises to 2.5/K (0.83 for three classes), never above 0.9.
    """
    return float(min(0.9, max(0.5, 2.5 / max(num_classes, 1))))


# Share of the target taken by one predicted class at which an epoch counts as collapsed whatever its
# source predictions do. Why: the rule above flags a target collapse only while the source stays
# spread, so an epoch answering one class for both domains (a 2-epoch toy: chance on the source,
# 100 % of the target in one class) stayed eligible, beat a better epoch and was exported unwarned.
ONE_CLASS_SHARE = 0.95


def is_collapsed(row: dict[str, Any]) -> bool:
    """Whether an epoch's record (a metrics.csv / history row) counts as collapsed: flagged by
    :func:`target_scores`, or (a row recorded before the one-class rule, read back on resume) with
    at least :data:`ONE_CLASS_SHARE` of the target in one class."""
    if float(row.get("collapsed", 0.0) or 0.0) > 0:
        return True
    top = float(row.get("tgt_top_share", 0.0) or 0.0)
    return bool(np.isfinite(top) and top >= ONE_CLASS_SHARE)


def class_shares(logits: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """Fraction of samples predicted as each class (the predicted-class histogram, normalised)."""
    logits = np.asarray(logits)
    k = num_classes if num_classes is not None else (logits.shape[1] if logits.ndim == 2 else 0)
    if len(logits) == 0 or k == 0:
        return np.zeros(k)
    return np.bincount(logits.argmax(1), minlength=k)[:k] / len(logits)


def target_scores(target_logits: np.ndarray, source_logits: np.ndarray | None = None) -> dict[str, float]:
    """Every label-free target criterion of one model (rows of metrics.csv / selection.json).

    ``tgt_top_share`` is the share of the commonest predicted target class (``src_top_share``: the
    same on the source, when given); ``collapsed`` (1/0) is set when it passes :func:`collapse_share`
    while the source predictions (if given) do not, i.e. the model sends most of the target to one
    class although it keeps the source classes apart, or when it reaches :data:`ONE_CLASS_SHARE`
    whatever the source does (a model answering one class for everything is no better).
    """
    probs = softmax(target_logits)
    k = probs.shape[1] if probs.ndim == 2 else 0
    top = float(class_shares(target_logits).max()) if len(probs) else 0.0
    source_top = 0.0
    scores: dict[str, float] = {}
    if source_logits is not None and len(source_logits):
        source_top = float(class_shares(source_logits).max())
        scores["src_top_share"] = source_top
    collapsed = (top > collapse_share(k) and source_top <= collapse_share(k)) or top >= ONE_CLASS_SHARE
    return {
        "snd": soft_neighbourhood_density(probs),
        "tgt_entropy": mean_entropy(probs),
        "tgt_im": information_maximisation(probs),
        "tgt_top_share": top,
        **scores,
        "collapsed": float(collapsed),
    }


# Target subtomograms below which an adapting method has little to learn the target from: its
# batch statistics, discriminators, template labels and label-free selection all read the target.
SMALL_TARGET = 100


def small_target_warning(n_target: int) -> str | None:
    """The warning for an adapting run whose target holds fewer than :data:`SMALL_TARGET` volumes
    (None otherwise): a picks table whose rows mostly failed trained on 1 target subtomogram
    without a word."""
    if n_target >= SMALL_TARGET:
        return None
    return (
        f"the target holds only {n_target} subtomogram{'s' * (n_target != 1)}: adaptation learns the "
        f"target from its volumes and needs hundreds (>= {SMALL_TARGET}); expect no better than "
        "--method source-only"
    )


def training_warnings(
    rows: Sequence[dict[str, Any]],
    selected_epoch: int | None = None,
    n_target: int | None = None,
    source_measured: bool = True,
    num_classes: int | None = None,
) -> list[str]:
    """One-line warnings a user must see: a selected model that did not learn the source (its
    source validation accuracy at chance, :func:`not_learned_warning`; ``num_classes`` sets
    chance), collapsed target predictions, saturated discriminators, a target too small to adapt to
    (``n_target``: its size, for a method that adapts). ``source_measured`` False: the run held
    out no source validation data, so the collapse warning claims nothing about the source
    classes."""
    warnings = []
    small = None if n_target is None else small_target_warning(n_target)
    if small:
        warnings.append(small)
    if not rows:
        return warnings
    # select_epoch only chooses a collapsed epoch when every epoch collapsed.
    chosen = next((r for r in rows if int(r["epoch"]) == selected_epoch), rows[-1])
    unlearned = None if num_classes is None else not_learned_warning(chosen, num_classes)
    if unlearned:
        warnings.append(unlearned)
    if is_collapsed(chosen):
        share = 100 * float(chosen.get("tgt_top_share", 0.0))
        every = " (as every epoch does)" if len(rows) > 1 and all(is_collapsed(r) for r in rows) else ""
        warnings.append(
            f"target predictions collapsed: epoch {int(chosen['epoch'])} puts {share:.0f} % of "
            f"the target in one class{every}{_source_clause(chosen, source_measured, num_classes)} "
            "before trusting it"
        )
    last = rows[-1]
    for key in DISCRIMINATOR_LOSSES:
        value = last.get(f"loss_{key}")
        if value is not None and np.isfinite(float(value)) and float(value) < SATURATED_BCE:
            warnings.append(
                f"the {key} discriminator saturated (BCE {float(value):.2g} in the last "
                "epoch): it tells the domains apart outright, so its reversed gradient no "
                "longer aligns them"
            )
    return warnings


TARGET_ADVICE = "; check the target (contrast, box, voxel size)"


def _source_clause(row: dict[str, Any], source_measured: bool, num_classes: int | None) -> str:
    """The collapse warning's words on the source (apart, mostly one class too, or not measured)
    and what to check, from a leading space or ";" on. A model that answers one class on the source
    too learned nothing from it, so the advice is then about training, not the target."""
    if not source_measured:
        return (
            " (with no source validation data, whether the source classes stay apart was not measured)"
            + TARGET_ADVICE
        )
    source = row.get("src_top_share")
    if source is None or source == "":  # a row recorded before src_top_share: flagged only if apart
        apart = float(row.get("collapsed", 0.0) or 0.0) > 0
        return (" while the source classes stay apart" if apart else "") + TARGET_ADVICE
    if float(source) > collapse_share(num_classes or 1):
        return (
            f" and {100 * float(source):.0f} % of the source validation data too: it has not learned to "
            "tell the classes apart; check the source data, --epochs and --lr"
        )
    return " while the source classes stay apart" + TARGET_ADVICE


# A source cross-entropy this far above guessing's, ln(K), is a network that learned nothing.
NOT_LEARNED_MARGIN = 0.5
# A source validation accuracy within this share of the way from chance (1/K) to 1 is a network
# that learned nothing (a tenth: 25 % of 4 classes warns up to 32.5 %, 2 classes up to 55 %).
NOT_LEARNED_GAIN = 0.1


def _value(row: dict[str, Any], key: str) -> float | None:
    """``row[key]`` as a float, None when absent or empty (metrics.csv writes a missing one as "")."""
    value = row.get(key)
    return None if value is None or value == "" else float(value)


def not_learned_warning(row: dict[str, Any], num_classes: int) -> str | None:
    """A warning when epoch ``row``'s model did not learn the source, else None.

    The trigger is the source cross-entropy (``loss_ce``): not finite (the weights diverged), or
    above a uniform guess's ln(K) + :data:`NOT_LEARNED_MARGIN`. ``--lr 1e6`` trained to a loss of
    2.9e12 and exported a model without a word; the label-free selection cannot see it (every epoch
    is as bad). A finite high loss is then checked against the source validation accuracy
    (``src_val_acc``): the loss is the mean over an epoch's steps, so a few diverging steps make it
    huge while the model the epoch ends with classifies well, and such a run was told it had
    learned nothing. It warns only when the accuracy is unmeasured, within :data:`NOT_LEARNED_GAIN`
    of the way from chance (1/K) to 1, or earned by answering one class (``src_top_share`` >=
    :data:`ONE_CLASS_SHARE`: on an unbalanced source that class's share reads as a fair accuracy).
    Why the accuracy is not a trigger alone: a few validation volumes (a toy run) read near chance
    by chance."""
    loss = _value(row, "loss_ce")
    if num_classes < 2 or loss is None:
        return None
    chance, guess = 1.0 / num_classes, float(np.log(num_classes))
    if np.isfinite(loss):
        if loss <= guess + NOT_LEARNED_MARGIN:
            return None
        accuracy = _value(row, "src_val_acc")
        learned = (
            accuracy is not None
            and np.isfinite(accuracy)
            and accuracy > chance + NOT_LEARNED_GAIN * (1 - chance)
            and (_value(row, "src_top_share") or 0.0) < ONE_CLASS_SHARE
        )
        if learned:
            return None
    return (
        f"training did not learn the source: epoch {int(row['epoch'])}'s source cross-entropy is "
        f"{loss:.3g}, above a uniform guess's {guess:.2f} (ln {num_classes} classes); it diverged or "
        "never started: check --lr and the source data before trusting the model"
    )


def _criterion(row: dict[str, Any], criterion: str) -> float:
    if criterion not in CRITERIA:
        raise ValueError(f"unknown selection criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    value = float(row.get(CRITERIA[criterion], 0.0))
    if not np.isfinite(value):
        return 0.0
    return 1.0 - value if criterion == "entropy" else value


def select_epoch(
    rows: Sequence[dict[str, Any]],
    tolerance: float = DEFAULT_TOLERANCE,
    criterion: str = "im",
    trained_on_target_labels: bool = False,
) -> dict[str, Any]:
    """Pick an epoch from per-epoch rows holding ``epoch``, ``src_val_acc`` and target scores.

    Rows without target scores (no target given) select on source accuracy alone. Returns
    ``{"selected_epoch", "rule", "criterion", "tolerance", "uses_target_labels", "epochs":
    [{epoch, src_val_acc, snd, tgt_entropy, tgt_im, eligible, score}]}`` (the content of
    selection.json).

    ``uses_target_labels`` is about the whole run, not the selection alone (which never reads
    target labels): ``trained_on_target_labels``, true for the oracle or a plugin method that
    trains on them. It was always false, so a comparison that filtered on it took the oracle for
    a label-free method.
    """
    if not rows:
        raise ValueError("no epochs to select from")
    if criterion not in CRITERIA:
        raise ValueError(f"unknown selection criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    # A collapsed epoch is never chosen, unless every epoch collapsed (then the warning says so).
    usable = [r for r in rows if not is_collapsed(r)] or list(rows)
    best_acc = max(float(r.get("src_val_acc", 0.0)) for r in usable)
    epochs = []
    for r in rows:
        acc = float(r.get("src_val_acc", 0.0))
        eligible = acc >= best_acc - tolerance - 1e-12 and (r in usable)
        value = _criterion(r, criterion) if CRITERIA[criterion] in r else acc
        epochs.append(
            {
                "epoch": int(r["epoch"]),
                "src_val_acc": acc,
                "snd": float(r.get("snd", float("nan"))),
                "tgt_entropy": float(r.get("tgt_entropy", float("nan"))),
                "tgt_im": float(r.get("tgt_im", float("nan"))),
                "tgt_top_share": float(r.get("tgt_top_share", float("nan"))),
                "collapsed": is_collapsed(r),
                "eligible": bool(eligible),
                "score": value if eligible else -1.0,
            }
        )
    chosen = max(epochs, key=lambda e: (e["score"], e["epoch"]))
    return {
        "selected_epoch": chosen["epoch"],
        "rule": f"max target {criterion} among epochs with source val accuracy >= best - {tolerance}, "
        "collapsed epochs excluded",
        "criterion": criterion,
        "tolerance": tolerance,
        "uses_target_labels": bool(trained_on_target_labels),
        "epochs": epochs,
    }
