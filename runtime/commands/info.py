"""``cryoshift info``: describe an MRC volume, a picks table, a dataset or an ONNX model."""

from __future__ import annotations

import typer

NAME = "info"
NO_ARGS_IS_HELP = False


def command() -> None:
    """Describe an MRC volume, a picks table, a dataset or an ONNX model."""
    typer.echo("cryoshift info: not built yet", err=True)
    raise typer.Exit(2)
