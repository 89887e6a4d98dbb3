"""``cryoshift simulate``: simulate a labelled dataset of subtomograms."""

from __future__ import annotations

import typer

NAME = "simulate"
NO_ARGS_IS_HELP = True


def command() -> None:
    """Simulate a labelled dataset of subtomograms."""
    typer.echo("cryoshift simulate: not built yet", err=True)
    raise typer.Exit(2)
