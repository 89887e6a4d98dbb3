"""Template-matching baseline on a ``target_sim`` target: accuracy and speed from the command line.

The method itself (wedge-aware constrained cross-correlation, coarse-to-fine over rotations and
shifts) lives in ``cryoshift.training.template_matching``, so the demo can show it too.

CLI: ``python benchmarks/template_matching.py --target lamella-60 --n 120 --seed 0``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from target_sim import ALL_TARGETS, CLASSES, MAPS_10A, _render, load_maps, make_target

from cryoshift.training.template_matching import TMResult, template_match

__all__ = ["TMResult", "template_match"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Template-matching baseline on a target_sim target.")
    ap.add_argument("--target", required=True, choices=[*sorted(ALL_TARGETS), "clean"])
    ap.add_argument("--n", type=int, default=120)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--box", type=int, default=32)
    ap.add_argument("--rotations", type=int, default=2000)
    ap.add_argument("--lowpass", type=float, default=40.0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    maps, names = load_maps(CLASSES, args.box, 10.0, MAPS_10A)
    if args.target == "clean":  # noise-free, centred, randomly rotated maps, +-60 wedge: the sanity check
        rng = np.random.default_rng(args.seed)
        labels = rng.permutation(np.arange(args.n) % len(names))
        from target_sim import _random_rotations

        vols = -_render(
            torch.from_numpy(maps), labels, _random_rotations(rng, args.n), np.zeros((args.n, 3)), 1.0
        ).numpy()
        tilt_max = 60.0
    else:
        phys = ALL_TARGETS[args.target]
        vols, labels, _ = make_target(phys, args.n, args.seed, args.box, threads=args.threads)
        tilt_max = phys.tilt_max
    res = template_match(
        vols, maps, tilt_max, n_rotations=args.rotations, lowpass_A=args.lowpass, threads=args.threads
    )
    acc = float((res.predictions == labels).mean())
    conf = np.zeros((len(names), len(names)), int)
    np.add.at(conf, (labels, res.predictions), 1)
    print(
        f"{args.target}: template matching accuracy {acc:.3f} on {args.n} "
        f"({args.rotations} rotations, lowpass {args.lowpass:g} A), {res.rate:.2f} subtomograms/s "
        f"({res.seconds:.1f} s, {args.threads} threads)"
    )
    print("confusion (rows true, cols predicted):", names)
    print(conf)


if __name__ == "__main__":
    main()
