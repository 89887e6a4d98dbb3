"""``python -m cryoshift.training.adapt [--method NAME]``: the adaptation methods at a glance.

Lists every registered method, built-in or plugin (with the distribution that installs it): its
summary, whether it needs an unlabelled target and target labels, and its hyper-parameters with
their defaults, i.e. what ``cryoshift train --method NAME --hparam KEY=VALUE`` takes. A plugin
that cannot be used is one ``cryoshift: error:`` line each (exit status 1, the list still shown).

Example: python -m cryoshift.training.adapt --method selftrain
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from typing import Any

from cryoshift.training.registry import OneLineParser

from . import METHODS

PROG = "python -m cryoshift.training.adapt"
WIDTH = 100


def _default_method() -> str:
    """The method ``cryoshift train`` uses without ``--method`` (TrainConfig's default)."""
    from cryoshift.training.trainer import TrainConfig

    return str(TrainConfig.__dataclass_fields__["method"].default)


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def describe(name: str, default: str | None = None) -> str:
    """The listing's lines for method ``name`` (ValueError: unknown, or a plugin that cannot be used)."""
    cls = METHODS.get(name)
    marks = [f"plugin: {METHODS.origin(name)}"] if METHODS.origin(name) else []
    if name == default:
        marks.append("the default")
    head = name + (f" [{'; '.join(marks)}]" if marks else "")
    summary = getattr(cls, "summary", "")
    lines = [f"{head} - {summary}" if summary else head]
    if getattr(cls, "needs_target_labels", False):
        target = "labelled volumes needed (it reads their labels: --oracle-target-labels, benchmarks only)"
    elif getattr(cls, "needs_target", False):
        target = "unlabelled volumes needed (their labels are never read)"
    else:
        target = "not used"
    lines.append(f"  target: {target}")
    hparams = ", ".join(f"{key}={_shown(value)}" for key, value in sorted(cls.defaults().items()))
    lines += textwrap.wrap(
        f"hyper-parameters: {hparams or 'none'}",
        WIDTH,
        initial_indent="  ",
        subsequent_indent="    ",
        break_on_hyphens=False,
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--method", default=None, help="show this method only")
    args = parser.parse_args(argv)
    default = _default_method()
    if args.method is not None:
        try:
            print(describe(args.method, default))
        except ValueError as exc:
            print(f"cryoshift: error: --method {args.method}: {' '.join(str(exc).split())}", file=sys.stderr)
            return 2
        return 0
    problems = METHODS.problems()  # said here as errors, so the lookups below do not warn
    names = sorted(METHODS.names(), key=lambda n: n != default)
    print("\n".join(describe(name, default) for name in names), flush=True)
    for problem in problems:
        print(f"cryoshift: error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
