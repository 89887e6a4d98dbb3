"""``cryoshift train``: train a domain-adapted classifier."""

from __future__ import annotations

import typer

NAME = "train"
NO_ARGS_IS_HELP = True


def command() -> None:
    """Train a domain-adapted classifier."""
    typer.echo("cryoshift train: not built yet", err=True)
    raise typer.Exit(2)
