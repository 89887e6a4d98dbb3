"""How right are the template-matching pseudo-labels the default trains on, by the share kept?

`cryoshift train` template-matches the unlabelled target against the user's maps and keeps, per
predicted class, the share ``--template-keep`` of matches with the largest margin between the best
and second-best class (training/pseudo_labels.py). The network memorises what it is given, so the
kept labels' accuracy bounds what they can teach. This scores them against the adaptation split's
true labels (read here only to score; a development draw, never a reported one), one JSON line per
target, same matching as training (estimated tilt range, 1,000 rotations):

    python benchmarks/pseudo_label_screen.py lamella-60 low-dose-45 --draw 9 --work W --log L
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import accuracy as A

KEEPS = (0.2, 0.4, 0.6, 0.8, 1.0)


def kept_accuracy(pred: np.ndarray, margin: np.ndarray, truth: np.ndarray, keep: float) -> tuple[int, float]:
    """Number kept and their accuracy under training/pseudo_labels.py's per-class margin rule."""
    from cryoshift.training.pseudo_labels import kept_by_margin

    mask = kept_by_margin(pred, margin, keep)
    return int(mask.sum()), float((pred[mask] == truth[mask]).mean())


def main(argv: list[str] | None = None) -> int:
    ap = A.target_screen_parser(__doc__, "pseudo_label_screen.jsonl")
    args = ap.parse_args(argv)

    from cryoshift.training.pseudo_labels import ROTATIONS
    from cryoshift.training.simulate.structures import load_structures
    from cryoshift.training.spectrum import estimate_tilt_max
    from cryoshift.training.template_matching import score_margins, template_match

    profile = A.PROFILES["cpu"]
    structures = load_structures(A.maps_source().split(","), profile.box, profile.voxel_size, seed=0)
    for target in args.targets:
        volumes, truth = A.labelled_adaptation(
            target, args.draw, args.work, [str(n) for n in structures.names]
        )
        tilt = estimate_tilt_max(volumes)
        t0 = time.time()
        res = template_match(
            volumes,
            structures.maps,
            tilt,
            n_rotations=ROTATIONS,
            voxel_size=profile.voxel_size,
            threads=args.threads,
        )
        pred = np.asarray(res.predictions)
        margin = score_margins(res.scores)
        record = {
            "target": target,
            "draw": args.draw,
            "matched": len(volumes),
            "tilt_estimated": round(float(tilt), 1),
            "seconds": round(time.time() - t0, 1),
            "kept": {
                str(keep): dict(zip(("n", "accuracy"), kept_accuracy(pred, margin, truth, keep), strict=True))
                for keep in KEEPS
            },
        }
        A.log_record(record, args.log)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
