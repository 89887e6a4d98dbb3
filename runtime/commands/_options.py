"""Options shared by several verbs, so that an option means the same thing in each of them.

Light on purpose (stdlib and typer, which every command module imports anyway): every command
module imports it at the top, before ``--help``.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import typer

from cryoshift.runtime.terminal import say, visible

# ``--no-progress`` of classify, train, export and demo: one option, one help text. Progress
# bars and spinners only; summaries, notes and errors are still printed.
NO_PROGRESS = typer.Option(False, "--no-progress", help="No progress bar or spinner (logs, CI).")


class Backend(str, Enum):
    """``--backend`` of ``classify`` and ``bench``: the names of ``cryoshift.runtime.backends.BACKENDS``."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    tensorrt = "tensorrt"
    engine = "engine"


def echo_summary(summary: Any, quiet: bool) -> None:
    """A run's summary (classify, merge) on stdout; with ``-q`` only its warnings, on stderr:
    quiet hides the report, not what the user must know about the results. Lines name tomograms
    and files from the inputs: their control characters are shown, not sent (runtime/terminal.py)."""
    if not quiet:
        for line in summary.lines():
            typer.echo(visible(line))  # stdout, the result: undelivered ends the run with 1 (typer's EPIPE)
        return
    for line in summary.warning_lines():
        say(f"cryoshift: {line}")  # stderr: a warning that cannot be printed never stops the run
