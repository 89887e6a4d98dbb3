"""How right are template-matching labels that the network agrees with?

`cryoshift train --template-rule agree` (training/pseudo_labels.agreement_labels) relabels the
matched target subtomograms, at the start of self-training, as those whose template-matching
class the network trained so far predicts too. This measures that rule before any full training:
the default recipe (60-epoch schedule) is trained up to the epoch before self-training, with the
kept template labels (``--regime kept``: what ``agree`` does) or none (``none``: ``agree-only``),
and its per-epoch deployable models vote on the adaptation split. Target labels are read only to
score, on development draws; one JSON line per target (``accuracy_levers.md``, fourteenth round):

    python benchmarks/agreement_screen.py lamella-60 low-dose-45 --regime kept --draw 9 --work W --log L
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import accuracy as A

VOTE_EPOCHS = (10, 14, 18)  # the last is the vote of the 60-epoch default (adapt_start 0.3)


def scored(mask: np.ndarray, template: np.ndarray, truth: np.ndarray) -> dict[str, float | int | None]:
    """Size of a label set and the share of its template-matching labels that are right."""
    right = float((template[mask] == truth[mask]).mean()) if mask.any() else None
    return {"n": int(mask.sum()), "accuracy": None if right is None else round(right, 3)}


def main(argv: list[str] | None = None) -> int:
    ap = A.target_screen_parser(__doc__, "agreement_screen.jsonl")
    ap.add_argument("--regime", choices=("kept", "none"), default="kept")
    args = ap.parse_args(argv)
    import torch

    from cryoshift.training import run as R
    from cryoshift.training.pseudo_labels import KEEP_FRACTION, ROTATIONS, kept_by_margin
    from cryoshift.training.simulate.structures import load_structures
    from cryoshift.training.spectrum import estimate_tilt_max
    from cryoshift.training.template_matching import score_margins, template_match
    from cryoshift.training.trainer import train

    torch.set_num_threads(args.threads)
    profile = A.PROFILES["cpu"]
    structures = load_structures(A.maps_source().split(","), profile.box, profile.voxel_size, seed=0)
    names = [str(n) for n in structures.names]
    for target in args.targets:
        adapt, _ = A.build_target(profile, target, args.draw, args.work)
        volumes, truth = A.labelled_adaptation(target, args.draw, args.work, names)
        res = template_match(
            volumes,
            structures.maps,
            estimate_tilt_max(volumes),
            n_rotations=ROTATIONS,
            voxel_size=profile.voxel_size,
            threads=args.threads,
        )
        template = np.asarray(res.predictions)
        kept = kept_by_margin(template, score_margins(res.scores), KEEP_FRACTION)
        run_dir = args.work / "runs" / f"vote-{args.regime}__{target}__d{args.draw}"
        cfg = A.default_config(
            profile,
            run_dir,
            adapt,
            args.draw,
            args.threads,
            epochs=60,  # the vote epochs are of a 60-epoch schedule, on any machine
            template_labels=600 if args.regime == "kept" else 0,
        )
        train(cfg, stop_after_epoch=max(VOTE_EPOCHS))
        record = {"target": target, "draw": args.draw, "regime": args.regime}
        record["template_matching"] = scored(np.ones_like(kept), template, truth)
        record["kept_by_margin"] = scored(kept, template, truth)
        for epoch in VOTE_EPOCHS:
            network = A.predict(R.epoch_checkpoint(run_dir, epoch), volumes)
            agree = network == template
            record[f"epoch_{epoch}"] = {
                "network_accuracy": round(float((network == truth).mean()), 3),
                "agree": scored(agree, template, truth),
                "kept_and_agree": scored(kept & agree, template, truth),
                "agree_not_kept": scored(agree & ~kept, template, truth),
                "kept_not_agree": scored(kept & ~agree, template, truth),
            }
        A.log_record(record, args.log)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
