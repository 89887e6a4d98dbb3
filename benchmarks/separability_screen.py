"""How hard is a target to tell apart, next to the simulation the default trains on?

Template matching against the class maps measures how separable subtomograms are in units that
mean the same for any data: its accuracy, and the margin between the best and the second-best class
score. This scores a development target (its labels read only to score) and, beside it, volumes
simulated as training simulates them for that target (the `broad` preset with the target's tilt range
and average spectrum imposed) at fixed SNRs, one JSON line per target, plus the SNR that
`--snr-match` (training/snr_match.py) would estimate from the target's margins:

    python benchmarks/separability_screen.py lamella-60 low-dose-45 --draw 9 --work W --log L
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import accuracy as A

SNRS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.2, 1.0)
PER_SNR = 120


def describe(predictions: np.ndarray, truth: np.ndarray, margins: np.ndarray) -> dict[str, float]:
    """Template-matching accuracy and margin quantiles (10, 50, 90 %) of one set of volumes."""
    q10, q50, q90 = np.quantile(margins, [0.1, 0.5, 0.9])
    return {
        "n": len(truth),
        "accuracy": round(float((predictions == truth).mean()), 4),
        "margin_q10": round(float(q10), 4),
        "margin_q50": round(float(q50), 4),
        "margin_q90": round(float(q90), 4),
    }


def tm_margins(
    volumes: np.ndarray, maps: np.ndarray, tilt: float, voxel_size: float, threads: int
) -> tuple[np.ndarray, np.ndarray]:
    """Template-matching predictions and margins, matched as training matches the target."""
    from cryoshift.training.pseudo_labels import ROTATIONS
    from cryoshift.training.template_matching import score_margins, template_match

    res = template_match(volumes, maps, tilt, n_rotations=ROTATIONS, voxel_size=voxel_size, threads=threads)
    return np.asarray(res.predictions), score_margins(res.scores)


def main(argv: list[str] | None = None) -> int:
    ap = A.target_screen_parser(__doc__, "separability_screen.jsonl")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from cryoshift.training.data import SimulatedSource
    from cryoshift.training.snr_match import match_snr
    from cryoshift.training.spectrum import SpectrumMatch, estimate_tilt_max, tilt_match_range

    profile = A.PROFILES["cpu"]
    for target in args.targets:
        t0 = time.time()
        source = SimulatedSource(A.maps_source(), profile.box, profile.voxel_size, "broad", seed=args.seed)
        maps, names = source.structures.maps, [str(n) for n in source.structures.names]
        volumes, truth = A.labelled_adaptation(target, args.draw, args.work, names)
        tilt = estimate_tilt_max(volumes)
        source.match_target(tilt_max=tilt_match_range(tilt))

        pred, margins = tm_margins(volumes, maps, tilt, profile.voxel_size, args.threads)
        record = {
            "target": target,
            "draw": args.draw,
            "tilt_estimated": tilt,
            "target_tm": describe(pred, truth, margins),
        }
        simulated = {}
        for snr in SNRS:
            source.match_target(snr=(snr, snr))
            spectrum = SpectrumMatch.fit(volumes, source.draw(512).volumes, seed=args.seed)
            vol, labels, _ = source.simulator.sample(PER_SNR)
            sim_pred, sim_margins = tm_margins(
                spectrum.apply(vol.float().numpy()), maps, tilt, profile.voxel_size, args.threads
            )
            simulated[str(snr)] = describe(sim_pred, labels.numpy(), sim_margins)
        record["simulated_tm"] = simulated
        found = match_snr(
            margins,
            source.simulator,
            maps,
            tilt,
            profile.voxel_size,
            spectrum_target=volumes,
            seed=args.seed,
            threads=args.threads,
        )
        record["snr_match"] = found.summary(None)
        record["seconds"] = round(time.time() - t0, 1)
        A.log_record(record, args.log)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
