"""Template-matching pseudo-labels: the user's maps label part of the unlabelled target.

Why: a network trained on simulation alone has to cross the whole domain gap by itself; template
matching against the same maps (training/template_matching.py) already reaches the target's own
voxels, but is thousands of times too slow to run on every particle of a facility's data. Run it
once, on a few hundred target subtomograms, keep the matches it is most sure of (per class, so a
frequent class cannot crowd out a rare one), and train on those next to the simulation: the
network then sees real target voxels with (mostly) right labels, and classifies everything else
at network speed. No target label is read: the labels come from the maps the user trains on.
The tilt range for the wedge-aware templates is estimated from the target's own spectrum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_COUNT = 300  # target subtomograms matched (a few minutes on 2 CPU cores)
KEEP_FRACTION = 0.6  # share of each class's matches kept, by score margin
ROTATIONS = 1000
# how the matches become labels (TrainConfig.template_rule): by margin throughout; by margin and, from
# the start of self-training, by agreement with the network; by agreement only
TEMPLATE_RULES = ("margin", "agree", "agree-only")
AGREE_AT = 0.3  # fraction of training after which the network votes, for methods without adapt_start


@dataclass
class PseudoLabels:
    index: np.ndarray  # (m,) rows of the target that got a label
    labels: np.ndarray  # (m,) class indices
    tilt_max: float  # the tilt range used for the wedge (estimated when not given)
    seconds: float
    matched: int  # target subtomograms matched (before keeping the confident ones)
    class_counts: list[int]  # kept labels per class
    margins: np.ndarray  # (matched,) best minus second-best class score of every matched volume
    matched_index: np.ndarray  # (matched,) rows of the target that were matched
    predictions: np.ndarray  # (matched,) template matching's class of every matched volume

    def summary(self) -> dict[str, object]:
        return {
            "matched": self.matched,
            "kept": len(self.index),
            "tilt_max": round(self.tilt_max, 1),
            "seconds": round(self.seconds, 1),
            "class_counts": self.class_counts,
        }


def template_pseudo_labels(
    target: np.ndarray,
    maps: np.ndarray,
    voxel_size: float,
    count: int = DEFAULT_COUNT,
    keep: float = KEEP_FRACTION,
    tilt_max: float | None = None,
    seed: int = 0,
    threads: int | None = None,
) -> PseudoLabels:
    """Match ``count`` target volumes (seeded subset) against positive ``maps`` (K, D, D, D); keep the
    ``keep`` share of each predicted class with the largest margin between best and second-best class."""
    from cryoshift.training.spectrum import estimate_tilt_max
    from cryoshift.training.template_matching import score_margins, template_match

    rng = np.random.default_rng(seed)
    n = min(int(count), len(target))
    index = np.sort(rng.choice(len(target), n, replace=False))
    volumes = np.ascontiguousarray(np.asarray(target[index], dtype=np.float32))
    wedge = float(tilt_max) if tilt_max is not None else estimate_tilt_max(volumes)
    result = template_match(
        volumes, maps, wedge, n_rotations=ROTATIONS, voxel_size=voxel_size, threads=threads
    )
    margin = score_margins(result.scores)
    pred = np.asarray(result.predictions, dtype=np.int64)
    sel = np.flatnonzero(kept_by_margin(pred, margin, keep))
    counts = np.bincount(pred[sel], minlength=maps.shape[0]).tolist()
    return PseudoLabels(index[sel], pred[sel], wedge, float(result.seconds), n, counts, margin, index, pred)


def kept_by_margin(predictions: np.ndarray, margins: np.ndarray, keep: float) -> np.ndarray:
    """Mask of the matches kept as labels: per predicted class, the ``keep`` share (at least one)
    with the largest margin between best and second-best class, so a frequent class cannot crowd
    out a rare one."""
    mask = np.zeros(len(predictions), dtype=bool)
    for k in np.unique(predictions):
        members = np.flatnonzero(predictions == k)
        take = max(1, round(keep * len(members)))
        mask[members[np.argsort(-margins[members], kind="stable")[:take]]] = True
    return mask


def agreement_labels(found: PseudoLabels, network: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, labels): the matched target volumes whose template-matching class the network
    predicts too (``network``: its classes of ``found.matched_index``, in that order).

    Why: a fixed share kept by margin suits one target and not another (99.7 % right on a clean
    target, 80 % on a noisy one; benchmarks/results/accuracy_levers.md, seventh round). Two
    classifiers that err differently (template matching's rotation search, a network trained on
    simulation) rarely agree on a wrong class, so their agreement sets a share from the target
    itself: most of a clean target, less of a noisy one."""
    network = np.asarray(network)
    if network.shape != found.predictions.shape:
        raise ValueError(f"{network.shape[0]} network predictions for {found.matched} matched volumes")
    agree = network == found.predictions
    return found.matched_index[agree], found.predictions[agree]
