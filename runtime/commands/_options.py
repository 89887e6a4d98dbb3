"""Options shared by several verbs, so that an option means the same thing in each of them.

Light on purpose (stdlib and typer, which every command module imports anyway): every command
module imports it at the top, before ``--help``.
"""

from __future__ import annotations

from enum import Enum

import typer

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
