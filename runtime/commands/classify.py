"""``cryoshift classify``: classify experimental subtomograms with an exported model."""

from __future__ import annotations

import typer

NAME = "classify"
NO_ARGS_IS_HELP = True


def command() -> None:
    """Classify experimental subtomograms with an exported model."""
    typer.echo("cryoshift classify: not built yet", err=True)
    raise typer.Exit(2)
