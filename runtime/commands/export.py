"""``cryoshift export``: export a trained checkpoint to ONNX (fp16, TensorRT)."""

from __future__ import annotations

import typer

NAME = "export"
NO_ARGS_IS_HELP = True


def command() -> None:
    """Export a trained checkpoint to ONNX (fp16, TensorRT)."""
    typer.echo("cryoshift export: not built yet", err=True)
    raise typer.Exit(2)
