"""``cryoshift evaluate``: score a checkpoint or ONNX model on a labelled dataset."""

from __future__ import annotations

import typer

NAME = "evaluate"
NO_ARGS_IS_HELP = True


def command() -> None:
    """Score a checkpoint or ONNX model on a labelled dataset."""
    typer.echo("cryoshift evaluate: not built yet", err=True)
    raise typer.Exit(2)
