"""``python -m cryoshift.training.backbones [--box 32] [--bench]``: the zoo at a glance.

Prints parameters, feature size and GFLOP per subtomogram for every registered backbone (the
numbers the benchmarks' compute bound uses); ``--bench`` also times CPU inference (eval mode,
no grad, batch already in memory), which is a rough figure on a shared machine.

Example: python -m cryoshift.training.backbones --box 32 --bench --pattern 'cryonet*' --threads 2
"""

from __future__ import annotations

import argparse
import time

import torch

from . import BACKBONES, count_flops, create_backbone


def _throughput(model: torch.nn.Module, box: int, batch: int, seconds: float) -> float:
    x = torch.randn(batch, 1, box, box, box)
    with torch.no_grad():
        model(x)  # warm-up
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            model(x)
            n += batch
    return n / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--box", type=int, default=32, help="cubic box size in voxels")
    parser.add_argument("--classes", type=int, default=5, help="number of classes of the head")
    parser.add_argument("--pattern", default="*", help="only backbones matching this glob, e.g. 'cryonet*'")
    parser.add_argument("--bench", action="store_true", help="also time CPU inference")
    parser.add_argument("--batch", type=int, default=64, help="batch size for --bench")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per backbone for --bench")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads for --bench")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    header = f"{'backbone':<14} {'params':>11} {'features':>8} {'GFLOP':>8}"
    print(header + ("  vol/s (CPU)" if args.bench else ""))
    for name in BACKBONES.names(args.pattern):
        model = create_backbone(name, num_classes=args.classes, box_size=args.box).eval()
        params = sum(p.numel() for p in model.parameters())
        line = f"{name:<14} {params:>11,} {model.num_features:>8} {count_flops(model, args.box) / 1e9:>8.3f}"
        if args.bench:
            line += f"  {_throughput(model, args.box, args.batch, args.seconds):>11,.0f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
