"""``python -m cryoshift.training.backbones [--box 32] [--bench]``: the zoo at a glance.

Prints parameters, feature size and GFLOP per subtomogram for every registered backbone (the
numbers the benchmarks' compute bound uses); ``--bench`` also times CPU inference (eval mode,
no grad, batch already in memory), which is a rough figure on a shared machine. A plugin backbone
names the distribution that installs it; one that cannot be used is one ``cryoshift: error:``
line each (exit status 1, the list still shown).

Example: python -m cryoshift.training.backbones --box 32 --bench --pattern 'cryonet*' --threads 2
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from cryoshift.training.registry import OneLineParser

from . import BACKBONES, count_flops, create_backbone
from ._base import MIN_BOX

PROG = "python -m cryoshift.training.backbones"


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse values no backbone can take before building any: one line, not a traceback."""
    if args.box < MIN_BOX:
        parser.error(f"--box {args.box}: the backbones need a box of at least {MIN_BOX} voxels")
    for name, value in (("--classes", args.classes), ("--batch", args.batch), ("--threads", args.threads)):
        if value < 1:
            parser.error(f"{name} {value}: must be at least 1")
    if not 0 < args.seconds < float("inf"):  # NaN fails both
        parser.error(f"--seconds {args.seconds:g}: must be a finite number above 0")
    if not BACKBONES.names(args.pattern):
        known = ", ".join(BACKBONES.names())
        parser.error(f"--pattern {args.pattern!r}: matches no backbone (known: {known})")


def _throughput(model: torch.nn.Module, box: int, batch: int, seconds: float) -> float:
    x = torch.randn(batch, 1, box, box, box)
    with torch.no_grad():
        model(x)  # warm-up
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            model(x)
            n += batch
    return n / (time.perf_counter() - start)


def _name_width(names: list[str]) -> int:
    """The name column's width: the longest name shown (or the header's word). A fixed 14 let
    ``cryonet-deep-centred`` (20 characters) push its row's numbers out of their columns."""
    return max(len("backbone"), *(len(name) for name in names))


def main(argv: list[str] | None = None) -> int:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = OneLineParser(prog=PROG, description=__doc__, formatter_class=fmt)
    parser.add_argument("--box", type=int, default=32, help="cubic box size in voxels")
    parser.add_argument("--classes", type=int, default=5, help="number of classes of the head")
    parser.add_argument("--pattern", default="*", help="only backbones matching this glob, e.g. 'cryonet*'")
    parser.add_argument("--bench", action="store_true", help="also time CPU inference")
    parser.add_argument("--batch", type=int, default=64, help="batch size for --bench")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per backbone for --bench")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads for --bench")
    args = parser.parse_args(argv)
    problems = BACKBONES.problems()  # said below as errors, so the lookups do not warn
    _check(parser, args)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    names = BACKBONES.names(args.pattern)
    width = _name_width(names)
    header = f"{'backbone':<{width}} {'params':>11} {'features':>8} {'GFLOP':>8}"
    print(header + ("  vol/s (CPU)" if args.bench else ""))
    for name in names:
        try:
            model = create_backbone(name, num_classes=args.classes, box_size=args.box).eval()
        except ValueError as exc:  # a family with its own limits (the checks above are everyone's)
            print(f"cryoshift: error: {name}: {' '.join(str(exc).split())}", file=sys.stderr)
            raise SystemExit(2) from None
        params = sum(p.numel() for p in model.parameters())
        gflop = count_flops(model, args.box) / 1e9
        line = f"{name:<{width}} {params:>11,} {model.num_features:>8} {gflop:>8.3f}"
        if args.bench:
            line += f"  {_throughput(model, args.box, args.batch, args.seconds):>11,.0f}"
        origin = BACKBONES.origin(name)
        print(line + (f"  [plugin: {origin}]" if origin else ""), flush=True)
    for problem in problems:
        print(f"cryoshift: error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
