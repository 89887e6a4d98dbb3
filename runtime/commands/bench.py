"""``cryoshift bench``: run a benchmark."""

from __future__ import annotations

import typer

NAME = "bench"
NO_ARGS_IS_HELP = True


def command() -> None:
    """Run a benchmark."""
    typer.echo("cryoshift bench: not built yet", err=True)
    raise typer.Exit(2)
