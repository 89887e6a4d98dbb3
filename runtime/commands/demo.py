"""``cryoshift demo``: run the whole pipeline end to end on built-in structures."""

from __future__ import annotations

import typer

NAME = "demo"
NO_ARGS_IS_HELP = False


def command() -> None:
    """Run the whole pipeline end to end on built-in structures."""
    typer.echo("cryoshift demo: not built yet", err=True)
    raise typer.Exit(2)
