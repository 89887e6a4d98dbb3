"""``cryoshift export``: a trained checkpoint -> verified ONNX (+ fp16, int8 Q/DQ, TensorRT engines)."""

from __future__ import annotations

from pathlib import Path

import typer

from cryoshift.runtime.commands._options import NO_PROGRESS

NAME = "export"
NO_ARGS_IS_HELP = True


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"  # pragma: no cover


def command(
    checkpoint: Path = typer.Argument(
        ..., help="Training run directory (its selected model.pt) or a checkpoint .pt file."
    ),
    out: Path = typer.Option(
        ...,
        "--out",
        "-o",
        help="Output directory (created; one holding another checkpoint's export is refused): model.onnx, "
        "the derived formats and export.json (what was written, parity, versions).",
    ),
    fp16: bool = typer.Option(
        False,
        "--fp16",
        help="Also write model.fp16.onnx: fp16 weights and "
        "activations, fp32 input/outputs and normalisation (for GPUs).",
    ),
    tensorrt: bool = typer.Option(
        False,
        "--tensorrt",
        help="Also build a TensorRT engine from each ONNX "
        "written (model.engine, model.fp16.engine, model.int8.engine) with a "
        ".engine.json sidecar. Needs an NVIDIA GPU + TensorRT; skipped otherwise.",
    ),
    int8: bool = typer.Option(
        False,
        "--int8",
        help="Also write model.int8.onnx with explicit Q/DQ nodes, "
        "calibrated on target subtomograms (--calibration, else the run's target).",
    ),
    calibration: Path = typer.Option(
        None,
        "--calibration",
        help="int8 calibration subtomograms: dataset "
        "directory, MRC volume stack, or directory of MRC volumes.",
    ),
    parity_data: Path = typer.Option(
        None,
        "--parity-data",
        help="Subtomograms for the parity check "
        "(dataset directory or MRC stack). Default: the run's target/source "
        "data, else random volumes with a warning.",
    ),
    opset: int = typer.Option(None, "--opset", help="ONNX opset (default 20; 17 or newer)."),
    batch_max: int = typer.Option(
        None,
        "--batch-max",
        help="Largest batch of the TensorRT optimisation profile (engines accept 1..N and are tuned for N; "
        "default 256). Only with --tensorrt.",
    ),
    test_views: int = typer.Option(
        None,
        "--test-views",
        help="Poses the graph averages per subtomogram (1-4; default: as trained). "
        "1 classifies 4x faster than 4, 0-0.7 points less accurately on the benchmark.",
    ),
    no_progress: bool = NO_PROGRESS,
) -> None:
    """Export a trained checkpoint to deployable artefacts that `cryoshift classify` trusts.

    model.onnx takes raw subtomograms (batch, 1, D, H, W) with a dynamic batch, normalises each
    one inside the graph and returns logits and features; its metadata carries class names, box
    and voxel size, contrast, calibration, shift-score statistics and provenance (see `cryoshift
    info model.onnx`). Every artefact is checked against PyTorch right after it is written (max
    |logit difference| and argmax agreement); an export that breaks parity fails with exit code 1
    and leaves no artefact behind.

    Example:
        cryoshift export runs/ribo -o deploy --fp16 --int8 --calibration data/exp --parity-data data/exp
    """
    from cryoshift.runtime.errors import require_extra

    require_extra("train", "cryoshift export", "torch", "onnx")
    import contextlib
    import warnings

    from rich.console import Console
    from rich.table import Table

    from cryoshift.export import export_checkpoint
    from cryoshift.export.parity import ParityError
    from cryoshift.export.result import ExportWarning
    from cryoshift.runtime.errors import InputError, check_out_folder
    from cryoshift.runtime.terminal import markup_safe, plain, visible  # paths and messages name files
    from cryoshift.training.checkpoint import resolve_checkpoint

    if batch_max is not None and batch_max < 1:
        raise InputError(None, f"--batch-max must be at least 1, got {batch_max}")
    resolve_checkpoint(checkpoint)  # a run folder without its model, named before any work
    check_out_folder(out, "--out", "to write the model into")  # before the lock makes the folder
    console = Console(stderr=True)
    # export_checkpoint holds the folder's export lock and refuses another checkpoint's export
    # folder (export/api.refuse_earlier_export), for this command and the Python API alike
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with contextlib.nullcontext() if no_progress else console.status("exporting") as status:
                results = export_checkpoint(
                    checkpoint,
                    out,
                    fp16=fp16,
                    tensorrt=tensorrt,
                    int8=int8,
                    calibration=calibration,
                    parity_data=parity_data,
                    opset=opset,
                    batch_max=batch_max,
                    progress=None if status is None else status.update,
                    test_views=test_views,
                )
        except ParityError as exc:
            typer.echo(f"cryoshift: error: parity check failed: {visible(exc)}", err=True)
            raise typer.Exit(1) from exc
    from cryoshift.export.api import ExportNote
    from cryoshift.export.int8 import IN_SAMPLE

    for w in caught:
        if issubclass(w.category, ExportNote):  # a fact about the model or the folder, not a problem
            typer.echo(f"cryoshift: note: {visible(w.message)}", err=True)
        elif issubclass(w.category, ExportWarning):
            console.print(f"[yellow]warning:[/] {markup_safe(w.message)}")
    table = Table(title=plain(f"cryoshift export -> {out}"))
    for col in ("format", "file", "size", "max dlogit", "agreement", "parity", "s"):
        table.add_column(col, justify="right" if col in ("size", "s", "max dlogit") else "left", no_wrap=True)
    for r in results:
        p = r.parity
        table.add_row(
            r.format,
            plain(r.path.name),
            _size(r.size_bytes),
            "-" if p is None else f"{p.max_abs_logit_diff:.2e}",
            "-" if p is None else f"{p.argmax_agreement:.0%} of {p.n}",
            "not checked"
            if p is None
            else ("ok" if p.passed else "FAILED")
            + (" (in-sample)" if any(n.startswith(IN_SAMPLE) for n in r.notes) else ""),
            f"{r.seconds:.1f}",
        )
    Console().print(table)
    if results and results[0].parity is not None:
        Console().print(
            f"parity data: {markup_safe(results[0].parity.source)}; "
            f"report: {markup_safe(out / 'export.json')}",
            soft_wrap=True,
        )
