"""The ``cryoshift`` command line.

Only light modules are imported here; each command module imports its heavy wing
(torch, onnx) inside the command body, so ``cryoshift --help`` and ``classify`` work on
a node without PyTorch. Errors that users cause print one line and exit with code 2.
"""

from __future__ import annotations

import os
import sys

import typer

from cryoshift.runtime.commands import (
    bench,
    classify,
    demo,
    evaluate,
    export,
    info,
    merge,
    report,
    simulate,
    train,
)
from cryoshift.runtime.errors import InputError, MissingExtraError

app = typer.Typer(
    name="cryoshift",
    help="Classify cryo-ET subtomograms with domain-adapted networks: "
    "simulate -> train -> export -> classify.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        from cryoshift.runtime import __version__

        typer.echo(f"cryoshift {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", callback=_version, is_eager=True
    ),
) -> None:
    """Classify cryo-ET subtomograms with domain-adapted networks."""


for _module in (info, simulate, train, evaluate, export, classify, merge, report, bench, demo):
    app.command(
        name=_module.NAME,
        no_args_is_help=getattr(_module, "NO_ARGS_IS_HELP", True),
        cls=getattr(_module, "COMMAND_CLASS", None),
    )(_module.command)


# Finished rows and checkpoints are already on disk (fsync'd ledgers): say how to go on.
_INTERRUPTED = "cryoshift: interrupted; rerun with --resume to continue"


def _system_arrow_allocator() -> None:
    """Let pyarrow allocate with malloc unless the user chose its allocator.

    pandas keeps string columns in pyarrow, whose default allocator (mimalloc) reserves 1 GiB of
    address space at its first allocation. Under an address-space limit (``ulimit -v``, common on
    shared nodes) that reservation alone is half of a 2 GiB cap: a 10M-row picks table ran out of
    address space at 0.78 GiB resident. With malloc the same run peaks at ~1.5 GiB of address space.
    Set here, in the process that runs the command (device workers inherit the variable).
    """
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return
    os.environ["ARROW_DEFAULT_MEMORY_POOL"] = "system"  # read when pyarrow is first imported
    if "pyarrow" in sys.modules:  # imported already (main() called from Python): switch it too
        import pyarrow

        pyarrow.set_memory_pool(pyarrow.system_memory_pool())


ARENAS_UNDER_LIMIT = 2
_M_ARENA_MAX = -8  # glibc mallopt parameter


def _few_malloc_arenas_under_a_limit() -> None:
    """Under an address-space limit, cap glibc's malloc arenas at :data:`ARENAS_UNDER_LIMIT`.

    glibc gives each thread that allocates its own arena, reserving 64 MiB of address space
    per arena (up to 8 per core): inference and reader threads on a many-core node reserve GiBs
    that a ``ulimit -v`` counts although little of it is ever used (on 2 cores: classify of 1M
    picks 0.94 -> 0.67 GiB of address space). Without a limit nothing changes. Must run before
    the threads start; a libc without ``mallopt`` (musl) is left alone.
    """
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or os.environ.get("MALLOC_ARENA_MAX"):
        return
    import contextlib
    import ctypes

    with contextlib.suppress(AttributeError, OSError):  # not glibc: left alone
        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, ARENAS_UNDER_LIMIT)


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit code (2 for bad input or a missing extra)."""
    _system_arrow_allocator()
    _few_malloc_arenas_under_a_limit()
    try:
        app(args=argv, prog_name="cryoshift", standalone_mode=True)
    except SystemExit as exc:
        code = int(exc.code or 0) if not isinstance(exc.code, str) else 1
        if code == 130:  # typer turns Ctrl-C into a silent exit 130
            typer.echo(_INTERRUPTED, err=True)
        return code
    except (InputError, MissingExtraError) as exc:
        typer.echo(f"cryoshift: error: {exc}", err=True)
        return 2
    except OSError as exc:  # the file system refused (a file where a folder must go, no space, ...)
        where = f"{exc.filename}: " if exc.filename else ""
        reason = " ".join(str(exc.strerror or exc).split())
        typer.echo(f"cryoshift: error: {where}{reason}", err=True)
        return 2
    except KeyboardInterrupt:
        typer.echo(_INTERRUPTED, err=True)
        return 130
    except (MemoryError, RuntimeError) as exc:
        # host RAM (MemoryError) or a GPU (torch's OutOfMemoryError, a RuntimeError): one line with
        # the remedy, not a traceback; other RuntimeErrors are bugs and keep theirs
        if isinstance(exc, RuntimeError) and type(exc).__name__ != "OutOfMemoryError":
            raise
        where = "GPU" if isinstance(exc, RuntimeError) else "host"
        typer.echo(f"cryoshift: error: out of {where} memory ({_first_line(exc)}); {_OOM_REMEDY}", err=True)
        return 1
    return 0


_OOM_REMEDY = "ask for less: a smaller --batch-size, box or number of volumes"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
