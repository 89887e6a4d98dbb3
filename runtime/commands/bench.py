"""``cryoshift bench``: how fast this machine classifies, and how fast the pipeline alone can feed.

The measuring is runtime/bench.py's (shared with ``benchmarks/``); this module is the command.
"""

from __future__ import annotations

from pathlib import Path

import typer

from cryoshift.runtime.bench import MAX_BATCH_SIZE, MAX_N, MAX_REPEATS, MIN_FEED_BOX
from cryoshift.runtime.commands._options import Backend
from cryoshift.runtime.contract import MAX_BOX

NAME = "bench"
NO_ARGS_IS_HELP = True


def command(
    model: Path = typer.Argument(..., help="Exported model (model.onnx or model.engine)."),
    backend: Backend = typer.Option(Backend.auto, "--backend", "-b", help="Inference backend to time."),
    batch_size: int = typer.Option(
        64, "--batch-size", min=1, max=MAX_BATCH_SIZE, help="Subtomograms per batch (at most --n)."
    ),
    box: int = typer.Option(
        None,
        "--box",
        min=MIN_FEED_BOX,
        max=MAX_BOX,
        help="Box size of the feed-rate data (default: model's).",
    ),
    n: int = typer.Option(256, "--n", min=1, max=MAX_N, help="Subtomograms per feed-rate input kind."),
    workers: int = typer.Option(
        2, "--workers", min=1, help="Readers in the pipeline (at most 4 threads or 1 process per CPU)."
    ),
    reader_processes: bool = typer.Option(False, "--reader-processes", help="Readers are processes."),
    repeats: int = typer.Option(
        3, "--repeats", min=1, max=MAX_REPEATS, help="Repeats; medians are reported."
    ),
    threads: int = typer.Option(None, "--threads", min=1, help="CPU backend: inference threads."),
    json_out: Path = typer.Option(None, "--json", help="Also write the figures to this JSON file."),
) -> None:
    """Measure inference-only throughput and the pipeline's null-model feed rate on this machine.

    The feed rate (read, crop, batch, write rows; no inference) for a stack, files and a tomogram with picks
    says whether the readers can keep a faster engine busy. Medians of --repeats runs.

    Example: cryoshift bench model.onnx --backend cpu --batch-size 64 --box 32
    """
    import json

    from rich.console import Console
    from rich.table import Table

    from cryoshift.runtime.bench import run_bench
    from cryoshift.runtime.engine_sidecar import check_engine_model_path

    check_engine_model_path(model)  # a pipe or a device was "no such model file"
    if json_out:
        _check_writable(json_out)  # before minutes of timing, not after
    result = run_bench(
        model, backend.value, batch_size, box, n, workers, repeats, threads, processes=reader_processes
    )
    if result["batch_size"] < batch_size:  # run_bench caps the batch at --n; said, not only shown
        typer.echo(
            f"cryoshift: note: --batch-size {batch_size} is more than --n {n}: timed in batches of "
            f"{result['batch_size']}",
            err=True,
        )
    table = Table(title=f"cryoshift bench: {result['backend']}, batch {result['batch_size']}")
    table.add_column("measure")
    table.add_column("subtomograms/s", justify="right")
    table.add_row(
        f"inference only (batch in memory, {result['model_box']}^3)", f"{result['inference']['rate']:,.0f}"
    )
    for kind, fig in result["feed"].items():
        readers = f"{result['workers']} reader {'processes' if reader_processes else 'threads'}"
        table.add_row(
            f"feed rate, null model: {kind} ({result['feed_box']}^3, {readers})", f"{fig['rate']:,.0f}"
        )
    Console().print(table)
    typer.echo(f"medians of {repeats} repeats")
    if json_out:
        _write_json(json_out, json.dumps(result, indent=2) + "\n")


def _write_json(path: Path, text: str) -> None:
    """Write the figures to ``path``, naming it if that fails: a full disk said only "No space left
    on device". A regular file (or a link's target, which stays a link) is written whole and
    renamed into place; a device or a pipe (``/dev/stdout``) is written as it is, never replaced."""
    from cryoshift.runtime.errors import writing_error
    from cryoshift.runtime.outfiles import write_text

    target = path.resolve()
    if target.exists() and not target.is_file():
        try:
            with target.open("w") as fh:
                fh.write(text)
        except OSError as exc:
            raise writing_error(path, exc) from exc
    else:
        write_text(target, text)


def _check_writable(path: Path) -> None:
    """Refuse an output file that cannot be written (a name too long, a folder, a missing or
    read-only folder)."""
    from cryoshift.runtime.errors import InputError, check_name_length

    check_name_length(path, "--json")
    if path.is_dir():
        raise InputError(path, "is a directory; --json takes a file name")
    existed = path.exists()
    if existed and path.is_file() and path.stat().st_size and not _is_bench_json(path):
        # e.g. --json model.onnx or the engine's model.engine.json: written over after the timing
        raise InputError(path, "exists and is not an earlier bench result; --json would overwrite it")
    try:
        with path.open("a"):
            pass
    except OSError as exc:
        raise InputError(path, f"cannot write: {' '.join(str(exc.strerror or exc).split())}") from exc
    if not existed:
        # the file just made, not the name given: for a dangling symbolic link that is its target
        # (unlinking the link put a plain file in its place and left an empty target behind)
        path.resolve().unlink()


def _is_bench_json(path: Path) -> bool:
    """Whether ``path`` holds what --json writes (so a rerun may replace it): a JSON object with
    the inference and feed figures."""
    import json

    try:
        with path.open("rb") as fh:
            value = json.loads(fh.read(1 << 20))
    except (OSError, ValueError):
        return False
    return isinstance(value, dict) and {"inference", "feed"} <= value.keys()
