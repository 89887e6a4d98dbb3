"""``cryoshift info``: describe an MRC volume, a picks table, a dataset or an ONNX model."""

from __future__ import annotations

from pathlib import Path

import typer

NAME = "info"
NO_ARGS_IS_HELP = True


def command(
    paths: list[Path] = typer.Argument(
        ...,
        metavar="PATH",
        readable=False,  # an unreadable file is one problem line, the others are still checked
        help="MRC file (.mrc .mrcs .map .rec .st .ali, gzip/bzip2 ok), picks or listing "
        "(.star .csv .tsv), dataset directory, ONNX model, TensorRT engine or its .engine.json sidecar, "
        "or atomic model (PDB/mmCIF). Several allowed.",
    ),
    full: bool = typer.Option(
        False,
        "--full",
        help="Compute min/max/mean from the data even for big "
        "tomograms (default: from the header above 256 MiB).",
    ),
    validate: bool = typer.Option(
        False,
        "--validate",
        help="Check instead of describe: one line per "
        "problem (2-D, NaN/Inf, anisotropic or unset voxel size, unreadable); "
        "exit 0 if every file is usable, 1 if not.",
    ),
) -> None:
    """Describe an MRC volume, a picks table, a RELION 5 tomograms.star, a dataset or an ONNX model.

    MRC: shape, mode, voxel size, min/max/mean. Picks (STAR/CSV): rows, tomograms. tomograms.star:
    tomograms, voxel sizes (pixel x binning), reconstructions found or missing, damaged rows.

    Dataset directory: classes and counts. ONNX model: its cryoshift metadata. TensorRT engine (or
    its .engine.json sidecar): the model's metadata and the GPU, TensorRT version, precision and
    batch profile it was built for, and whether this machine could run it.

    With several paths, bad ones are reported, the rest described; exit code 2.

    --validate: for scripts; 'PATH: ok' or one 'PATH: problem' line each, exit 0 (usable) or 1.

    Example: cryoshift info tomo.mrc picks.star data/sim model.onnx
    """
    # Every value shown comes from a file (tomogram and class names, paths): control characters are
    # shown as escapes and nothing is read as rich markup (runtime/terminal.py).
    from cryoshift.runtime.terminal import plain, visible

    if validate:
        from cryoshift.runtime.info import validate as check

        bad = 0
        for path in paths:
            problems = check(path, atomic=_atomic_rows)
            bad += bool(problems)
            shown = visible(path)
            for problem in problems or ["ok"]:
                typer.echo(f"{shown}: {visible(problem)}")
        raise typer.Exit(1 if bad else 0)
    from rich.console import Console
    from rich.table import Table

    from cryoshift.runtime.errors import InputError
    from cryoshift.runtime.info import describe

    console = Console()
    failed = []
    for path in paths:
        try:
            desc = describe(path, full=full, atomic=_atomic_rows)
        except InputError as exc:
            if len(paths) == 1:
                raise
            typer.echo(f"cryoshift: error: {visible(exc)}", err=True)
            failed.append(path)
            continue
        table = Table(title=plain(f"{desc.path} ({desc.kind})"), show_header=False, title_justify="left")
        table.add_column("key", style="bold")
        table.add_column("value", overflow="fold")
        for key, value in desc.rows:
            table.add_row(plain(key), plain(value))
        console.print(table)
    if failed:
        raise typer.Exit(2)


def _atomic_rows(path: Path) -> list[tuple[str, str]]:
    """A PDB/mmCIF file as simulate and train read it (training's reader; needs gemmi)."""
    from cryoshift.runtime.errors import require_extra

    require_extra("train", "cryoshift info of an atomic model", "gemmi")
    from cryoshift.training.simulate.atomic import describe_model

    return describe_model(path)
