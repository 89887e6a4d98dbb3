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
    """Write the figures as the whole file ``path``, as every cryoshift output is written
    (runtime/outfiles.py): under a new temporary name beside it, then renamed into place, so a
    reader never sees half a file and a link at the name is replaced, its target left alone. A full
    disk is said naming ``path``. A device or a pipe there was refused before the timing
    (:func:`_check_writable`); one that appeared since is refused here, never written into."""
    from cryoshift.runtime.outfiles import write_text

    _refuse_special(path)
    write_text(path, text)


def _refuse_special(path: Path) -> None:
    """Refuse in one line a device, a named pipe or a socket at ``path``, or a link to one, as
    ``report -o`` does: ``--json /dev/full`` was written into (a pipe with no reader blocked
    forever), and a link was written through to its target."""
    from cryoshift.runtime.errors import InputError
    from cryoshift.runtime.outfiles import special_kind

    kind = special_kind(path, follow=True)
    if kind:
        link = "a symbolic link to " if path.is_symlink() else ""
        raise InputError(path, f"is {link}{kind}, not a regular file; --json takes a file name to write")


def _check_writable(path: Path) -> None:
    """Refuse, before minutes of timing, an output file that cannot be written: a name too long,
    a folder, a device or a pipe (or a link to one), an existing file that is not an earlier bench
    result, or a missing or read-only folder. Probed as :func:`_write_json` writes: a new file
    beside the name, removed again; nothing at the name is opened (a pipe would block, a link be
    followed)."""
    import os
    import tempfile

    from cryoshift.runtime.errors import InputError, check_name_length
    from cryoshift.runtime.outfiles import TEMPORARY_PREFIX, TEMPORARY_SUFFIX

    check_name_length(path, "--json")
    if path.is_dir():
        raise InputError(path, "is a directory; --json takes a file name")
    _refuse_special(path)
    # a link at the name is replaced, its target left alone: only a file there counts
    if not path.is_symlink() and path.is_file() and path.stat().st_size and not _is_bench_json(path):
        # e.g. --json model.onnx or the engine's model.engine.json: written over after the timing
        raise InputError(path, "exists and is not an earlier bench result; --json would overwrite it")
    try:
        fd, probe = tempfile.mkstemp(prefix=TEMPORARY_PREFIX, suffix=TEMPORARY_SUFFIX, dir=path.parent)
    except OSError as exc:
        reason = " ".join(str(exc.strerror or exc).split())
        raise InputError(path, f"cannot write: {reason}") from exc
    os.close(fd)
    os.unlink(probe)


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
