"""Backbone screening on the simulated source alone: can the network classify what it trains on?

Why: on the accuracy benchmark the default network reached only ~65-72 % on its own simulated
validation volumes while template matching against the same maps scored 95 % on such volumes, so
the classifier, not only the domain gap, held accuracy back. This trains one backbone
configuration source-only (no target, no adaptation) on the ``broad`` simulation of the benchmark's
six maps and appends one JSON line per run: the simulated validation accuracy per epoch, the
training speed and the cost per volume. A development screen: its conclusions are checked on the
targets by accuracy_screen.py and accuracy.py before anything becomes a default.

    python benchmarks/backbone_screen.py NAME cryonet '{"head": "full"}' --epochs 8
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import accuracy as A


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("name")
    ap.add_argument("backbone")
    ap.add_argument("backbone_kwargs", help="JSON object of backbone keyword arguments")
    ap.add_argument("--train", default="{}", help="JSON object of TrainConfig overrides (lr, batch_size...)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--sim-per-epoch", type=int, default=2048)
    ap.add_argument("--preset", default="broad")
    ap.add_argument("--seed", type=int, default=9)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", type=Path, default=Path("screen_work"))
    ap.add_argument("--log", type=Path, default=Path("backbone_screen.jsonl"))
    args = ap.parse_args(argv)

    from cryoshift.training.backbones import create_backbone
    from cryoshift.training.backbones.flops import count_flops
    from cryoshift.training.trainer import TrainConfig, train

    kwargs = json.loads(args.backbone_kwargs)
    overrides = json.loads(args.train)
    run_dir = args.work / "backbones" / args.name
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = TrainConfig(
        source=A.maps_source(),
        out=str(run_dir),
        method="source-only",
        backbone=args.backbone,
        backbone_kwargs=kwargs,
        epochs=args.epochs,
        sim_per_epoch=args.sim_per_epoch,
        sim_preset=args.preset,
        sim_val=512,
        box=32,
        voxel_size=10.0,
        seed=args.seed,
        threads=args.threads,
        progress=False,
    )
    cfg = TrainConfig.from_dict({**cfg.to_dict(), **overrides})
    t0 = time.time()
    train(cfg)
    with (run_dir / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    net = create_backbone(args.backbone, num_classes=len(A.class_names()), box_size=32, **kwargs)
    record = {
        "name": args.name,
        "backbone": args.backbone,
        "kwargs": kwargs,
        "train": overrides,
        "preset": args.preset,
        "epochs": args.epochs,
        "sim_per_epoch": args.sim_per_epoch,
        "val_acc": [round(float(r["src_val_acc"]), 4) for r in rows],
        "train_vol_per_s": round(sum(float(r["train_vol_per_s"]) for r in rows) / len(rows), 1),
        "gflop": round(count_flops(net, 32) / 1e9, 3),
        "minutes": round((time.time() - t0) / 60, 1),
    }
    A.log_record(record, args.log)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
