"""Does a trained network classify its own kind of simulation as well as template matching does?

The default trails template matching on every benchmark target, and the oracle (trained on target
labels) sits at the default's level, so the limit may be the classifier, not the domain gap. This
measures that limit where no domain gap exists: volumes simulated with the `broad` preset at fixed
SNRs, classified by a checkpoint (for instance one of `backbone_screen.py`, trained source-only on
that preset) and by wedge-aware template matching against the same maps. One JSON line per model:
both accuracies per SNR and the class pairs the network confuses most.

    python benchmarks/classifier_gap.py W/backbones/base/model.pt --name base --log L
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import accuracy as A
from separability_screen import tm_margins

SNRS = (0.02, 0.05, 0.2, 1.0)
PER_SNR = 150


def confused_pairs(truth: np.ndarray, predictions: np.ndarray, names: list[str], top: int = 3) -> list[dict]:
    """The ``top`` unordered class pairs with the most errors between them (either direction)."""
    k = len(names)
    confusion = np.zeros((k, k), int)
    np.add.at(confusion, (truth, predictions), 1)
    both = confusion + confusion.T
    pairs = [(int(both[i, j]), i, j) for i in range(k) for j in range(i + 1, k) if both[i, j]]
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    return [{"pair": f"{names[i]}/{names[j]}", "errors": n} for n, i, j in pairs[:top]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path, help="checkpoint (.pt) trained on the benchmark's six maps")
    ap.add_argument("--name", default=None, help="label of the record (default: the run directory)")
    ap.add_argument("--per-snr", type=int, default=PER_SNR)
    ap.add_argument("--seed", type=int, default=123)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--log", type=Path, default=Path("classifier_gap.jsonl"))
    args = ap.parse_args(argv)

    import torch

    from cryoshift.training.checkpoint import load_checkpoint
    from cryoshift.training.data import SimulatedSource
    from cryoshift.training.forward import forward_numpy
    from cryoshift.training.spectrum import estimate_tilt_max

    torch.set_num_threads(args.threads)
    t0 = time.time()
    model, metadata, _ = load_checkpoint(args.model)
    profile = A.PROFILES["cpu"]
    source = SimulatedSource(A.maps_source(), profile.box, profile.voxel_size, "broad", seed=args.seed)
    names = [str(n) for n in source.structures.names]
    if list(metadata.class_names) != names:
        raise SystemExit(f"{args.model}: classes {metadata.class_names} are not the benchmark's {names}")
    per_snr = {}
    for snr in SNRS:
        source.match_target(snr=(snr, snr))
        volumes, labels, _ = source.simulator.sample(args.per_snr)
        volumes, truth = volumes.float().numpy(), labels.numpy()
        logits, _ = forward_numpy(model, volumes, metadata.normalisation, "cpu", 64)
        net = logits.argmax(1)
        tm, _ = tm_margins(
            volumes, source.structures.maps, estimate_tilt_max(volumes), profile.voxel_size, args.threads
        )
        per_snr[str(snr)] = {
            "network": round(float((net == truth).mean()), 4),
            "template_matching": round(float((tm == truth).mean()), 4),
            "network_confuses": confused_pairs(truth, net, names),
        }
    record = {
        "name": args.name or args.model.parent.name,
        "model": str(args.model),
        "per_snr_volumes": args.per_snr,
        "seed": args.seed,
        "per_snr": per_snr,
        "seconds": round(time.time() - t0, 1),
    }
    A.log_record(record, args.log)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
