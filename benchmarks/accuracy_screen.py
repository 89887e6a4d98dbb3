"""Screening of accuracy levers on a development draw (draw 9 by default; the reported draws of
accuracy.py are 0-2).

One training configuration on one target of ``target_sim``, test accuracy of the label-free
selected epoch and, for information only, of every epoch. One JSON line per run is appended to
``--log``. This is how the defaults of ``cryoshift train`` were chosen
(benchmarks/results/accuracy_levers.md); the claims are then measured by accuracy.py on other
draws. The one exception, said where it is used: a chosen default validated with ``--draw 0``
(the same protocol as accuracy.py's draw 0), whose rows accuracy.py then takes with
``--extra-rows`` (results/accuracy_d0_current_default.jsonl); nothing was screened there.

    python benchmarks/accuracy_screen.py NAME lamella-60 '{"method": "selftrain", "spectrum_match": true}'
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import accuracy as A


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("name")
    ap.add_argument("target", choices=sorted(A.target_sim.ALL_TARGETS))
    ap.add_argument("overrides", help="JSON object of TrainConfig fields")
    ap.add_argument("--draw", type=int, default=9)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("screen_work"))
    ap.add_argument("--log", type=Path, default=Path("screen_results.jsonl"))
    ap.add_argument(
        "--resume", action="store_true", help="continue a stopped run of the same NAME (same code and config)"
    )
    args = ap.parse_args(argv)
    import torch

    from cryoshift.training.evaluate import checkpoint_epochs
    from cryoshift.training.trainer import train

    torch.set_num_threads(args.threads)
    overrides = json.loads(args.overrides)
    adapt, test = A.build_target(A.PROFILES["cpu"], args.target, args.draw, args.work)
    volumes, labels = A.load_test(test)
    run_dir = args.work / "runs" / f"{args.name}__{args.target}__d{args.draw}"
    resume = args.resume and (run_dir / "config.json").is_file()
    if not resume:
        shutil.rmtree(run_dir, ignore_errors=True)
    overrides = {"seed": args.draw, **overrides}
    cfg = A.default_config(A.PROFILES["cpu"], run_dir, adapt, threads=args.threads, **overrides)
    t0 = time.time()
    result = train(cfg, resume=resume)
    pred = A.predict(result.model_path, volumes)
    per_epoch = {
        ep: round(float((A.predict(p, volumes) == labels).mean()), 3) for ep, p in checkpoint_epochs(run_dir)
    }
    record = {
        "name": args.name,
        "target": args.target,
        "draw": args.draw,
        "acc": float((pred == labels).mean()),
        "selected": result.selected_epoch,
        "per_epoch": per_epoch,
        "minutes": round((time.time() - t0) / 60, 1),
        "overrides": overrides,
        "shares": np.bincount(pred, minlength=len(A.class_names())).tolist(),
    }
    A.log_record(record, args.log)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
