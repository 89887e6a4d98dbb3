"""The ``cryoshift`` command line.

Only light modules are imported here; each command module imports its heavy wing
(torch, onnx) inside the command body, so ``cryoshift --help`` and ``classify`` work on
a node without PyTorch. Errors that users cause print one line and exit with code 2.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import PurePath
from typing import get_args

import typer
from typer.core import TyperCommand, TyperGroup

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
from cryoshift.runtime.errors import CWD_GONE, InputError, MissingExtraError
from cryoshift.runtime.ledger import RESUME_HINT
from cryoshift.runtime.terminal import visible

try:  # newer typer carries its own copy of click
    from typer._click.exceptions import BadParameter, MissingParameter, UsageError
except ImportError:  # pragma: no cover - older typer runs on click itself
    from click.exceptions import BadParameter, MissingParameter, UsageError


def _flat(text: str) -> str:
    """``text`` on one line: runs of whitespace become one space, control characters '?'."""
    return "".join(c if c.isprintable() else "?" for c in " ".join(text.split()))


def _given(param: object, argv: tuple[str, ...]) -> tuple[str, str | None]:
    """How the user wrote option ``param`` and the value given to it, if that is unambiguous.

    The value is shown only for an option that takes one value and was given once: for a
    repeated option or a pair (``--snr LO HI``) one token could name the wrong value.
    """
    opts = [o for o in getattr(param, "opts", []) if o.startswith("-")]
    seen: list[tuple[str, str | None]] = []
    for i, token in enumerate(argv):
        if token == "--":
            break
        for opt in opts:
            if token == opt:
                seen.append((opt, argv[i + 1] if i + 1 < len(argv) else None))
            elif opt.startswith("--") and token.startswith(opt + "="):
                seen.append((opt, token[len(opt) + 1 :]))
            elif len(opt) == 2 and not token.startswith("--") and token.startswith(opt) and len(token) > 2:
                seen.append((opt, token[2:]))  # -b1 for -b 1
    long = next((o for o in opts if o.startswith("--")), opts[0] if opts else str(param))
    if not seen:
        return long, None
    single = len(seen) == 1 and getattr(param, "nargs", 1) == 1 and not getattr(param, "is_flag", False)
    return seen[-1][0], seen[-1][1] if single else None


def usage_error_line(exc: UsageError, argv: tuple[str, ...], command_path: str) -> str:
    """The one line a usage error prints: what was wrong and where to read how it is done.

    typer/click print the command's usage and a framed panel (several lines, exit 2); the house
    rule is one ``cryoshift: error:`` line naming the option, e.g. ``--n abc: Input should be a
    valid integer, unable to parse string as an integer (see cryoshift simulate --help)``.
    """
    import shlex

    param = getattr(exc, "param", None)
    if isinstance(exc, BadParameter) and not isinstance(exc, MissingParameter) and param is not None:
        reason = exc.message.removeprefix("Value error, ")  # pydantic's prefix: no news to a user
        if getattr(param, "param_type_name", "") == "option":
            opt, value = _given(param, argv)
            quoted = None if value is None else shlex.quote(value)
            shown = value is not None and f"'{value}'" not in reason and quoted not in reason.split()
            message = f"{opt} {quoted}: {reason}" if shown else f"{opt}: {reason}"
        else:
            message = f"{getattr(param, 'name', param)}: {reason}"
    else:
        message = exc.format_message()
    return f"cryoshift: error: {_flat(message).rstrip('.')} (see {command_path} --help)"


class OneLineUsageErrors(TyperGroup):
    """The root group: a usage error (bad option value, unknown option or command, missing
    argument) prints one line and exits with its code (2), instead of typer's usage box.

    Parsing happens in ``make_context`` (the root's options) and in ``invoke`` (the command name,
    then the command's own options): both are covered. ``--help`` and a command run without
    arguments (which shows its help) are left as they are.
    """

    _argv: tuple[str, ...] = ()  # the root's arguments, to quote the value an option was given

    def _one_line(self, exc: UsageError, command_path: str) -> typer.Exit:
        ctx = getattr(exc, "ctx", None)
        path = ctx.command_path if ctx is not None else command_path
        typer.echo(usage_error_line(exc, self._argv, path), err=True)
        return typer.Exit(exc.exit_code)

    def make_context(
        self, info_name: str | None, args: list[str], parent: typer.Context | None = None, **extra: object
    ) -> typer.Context:
        if parent is None:
            self._argv = tuple(str(a) for a in args)
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except UsageError as exc:
            if _shows_help(exc):
                raise
            raise self._one_line(exc, info_name or "cryoshift") from None

    def invoke(self, ctx: typer.Context) -> object:
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            if _shows_help(exc):
                raise
            sub = ctx.invoked_subcommand
            raise self._one_line(exc, f"{ctx.command_path} {sub}" if sub else ctx.command_path) from None


def _shows_help(exc: UsageError) -> bool:
    """A command run without arguments shows its help (printed already) and exits 2: as before."""
    return type(exc).__name__ == "NoArgsIsHelpError"  # by name, as typer checks it (older click lacks it)


# Parameters that take paths although typed as text (they also take names, globs or
# ``copick:CONFIG``); every parameter typed ``Path`` is a path anyway. Free-text options
# (``--devices``, ``--label-column``, ``--copick-*``) are not paths: an empty one may mean something.
_TEXT_PATHS = frozenset({"inputs", "tomograms", "source", "target", "structures"})
EMPTY_PATH = "empty path (an unset shell variable?)"


def _is_path_type(annotation: object) -> bool:
    """Whether a parameter annotated ``annotation`` holds paths: ``Path``, ``list[Path]``, ``Path | None``."""
    if isinstance(annotation, type):
        return issubclass(annotation, PurePath)
    return any(_is_path_type(arg) for arg in get_args(annotation))


def _takes_paths(param: object) -> bool:
    """Whether ``param`` (an option or argument of a verb) names files or folders."""
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    return _is_path_type(annotation) or getattr(param, "name", None) in _TEXT_PATHS


def _param_name(param: object) -> str:
    """How an error names ``param``: an option by its long form, an argument as the usage shows it."""
    opts = getattr(param, "opts", [])
    if getattr(param, "param_type_name", "") == "option" and opts:
        return next((o for o in opts if o.startswith("--")), opts[0])
    return str(getattr(param, "name", param)).upper()


def refuse_empty_paths(params: Sequence[object], raw: Mapping[str, object]) -> None:
    """Refuse a path option or argument given as ``''`` (``-o "$OUT"`` with OUT unset) in one line.

    Why: ``Path('')`` is ``.``, so an empty --out wrote results into the working folder, an empty
    input or -t scanned it, with exit status 0. ``raw`` holds the values as typed, before
    conversion (afterwards ``''`` and ``.`` cannot be told apart)."""
    for param in params:
        value = raw.get(getattr(param, "name", None) or "")
        values = value if isinstance(value, (list, tuple)) else [value]
        if _takes_paths(param) and "" in values:
            raise InputError(_param_name(param), EMPTY_PATH)


# Verbs checked to run from a deleted working directory once every path they are given is
# absolute: they read the files named and write only where told. Every other verb is refused
# there whatever it is given (the safe rule; a verb joins the list once checked): simulate, train,
# export and evaluate import torch, which dies there ("Intel oneMKL FATAL ERROR: Cannot load
# libtorch_cpu.so"); classify records the working directory (the folder its relative inputs are
# read from). merge re-reads the shards' inputs in their run's folder and comes back through a
# handle on the working directory (merge._working_in), so a deleted one is no obstacle.
CWD_FREE_VERBS = frozenset({"info", "bench", "merge"})


def _cwd_gone() -> bool:
    """Whether the working directory was deleted under this process (``os.getcwd()`` fails)."""
    try:
        os.getcwd()
    except FileNotFoundError:
        return True
    return False


def needs_cwd(verb: str, params: Sequence[object], raw: Mapping[str, object]) -> bool:
    """Whether ``verb``, given the option and argument values ``raw`` (as typed), uses the working
    directory: always, unless it is one of :data:`CWD_FREE_VERBS`; for those, when a path is relative
    (given, or a default left unset)."""
    if verb not in CWD_FREE_VERBS:
        return True
    for param in params:
        if not _takes_paths(param):
            continue
        name = getattr(param, "name", None) or ""
        value = raw[name] if name in raw else getattr(param, "default", None)
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, (str, PurePath)) and not os.path.isabs(v) for v in values):
            return True
    return False


class EmptyPathsRefused(TyperCommand):
    """A verb's options and arguments parsed as typer does, then an empty path refused
    (:func:`refuse_empty_paths`); put in front of every verb's command class (:func:`_command_class`).

    First, a verb that needs the working directory (:func:`needs_cwd`) is refused when it was
    deleted under this shell (:data:`CWD_GONE`): before any heavy import or any folder is made,
    so every such verb says the real cause (classify said a bare "No such file or directory" after
    making a partial output folder). Decided here, on click's own parse of the verb's arguments,
    not on a second reading of argv, so ``--`` and option values that look like paths are read as
    click reads them. Help (``--help``, a verb without arguments) is shown as ever."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        raw, _, _ = self.make_parser(ctx).parse_args(args=list(args))  # the values as typed
        params = self.get_params(ctx)
        shows_help = raw.get("help") or (self.no_args_is_help and not args)
        if not shows_help and _cwd_gone() and needs_cwd(self.name or "", params, raw):
            typer.echo(f"cryoshift: error: {CWD_GONE}", err=True)
            raise typer.Exit(2)
        rest = super().parse_args(ctx, args)  # --help and usage errors before an empty path
        refuse_empty_paths(params, raw)
        return rest


def _command_class(module: object) -> type[TyperCommand]:
    """The command class of a verb's module (its COMMAND_CLASS, else typer's) with
    :class:`EmptyPathsRefused` in front: one check for every verb, a verb's own class included."""
    base = getattr(module, "COMMAND_CLASS", None)
    if base is None:
        return EmptyPathsRefused
    return type(base.__name__, (EmptyPathsRefused, base), {"__doc__": base.__doc__})


app = typer.Typer(
    name="cryoshift",
    cls=OneLineUsageErrors,
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
        cls=_command_class(_module),
    )(_module.command)


# Finished rows and checkpoints are already on disk (fsync'd ledgers): say how to go on; a verb
# without --resume starts again (it keeps nothing half-written).
_RESUME_ADVICE = {True: RESUME_HINT, False: "rerun the command to start again"}
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
EXIT_TERMINATED = 128 + 15  # 128 + SIGTERM, as a shell reports a kill (SLURM's time limit)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a SLURM time limit or preemption, ``kill``), raised in the main thread.

    Why: SIGTERM ended every verb at once, with no word and no cleanup: ``finally`` blocks and
    temporary folders never ran (bench left hundreds of MB under /tmp, train its ``.cs-*.tmp``
    files). As a KeyboardInterrupt it takes the path Ctrl-C takes, whose cleanup every verb has."""


def _verb_has_resume(argv: Sequence[str]) -> bool:
    """Whether the verb named in ``argv`` (the root's options skipped) takes ``--resume``, read from
    its command's parameters, so a verb that gains the option is said right without a list."""
    verb = next((a for a in argv if not a.startswith("-")), None)
    command = typer.main.get_command(app)
    found = command.commands.get(verb) if verb and hasattr(command, "commands") else None
    return any("--resume" in getattr(p, "opts", ()) for p in getattr(found, "params", ()))


def interrupted_line(argv: Sequence[str], terminated: bool) -> str:
    """The one line an interrupted verb prints: what stopped it, and how to go on."""
    what = "terminated (SIGTERM)" if terminated else "interrupted"
    return f"cryoshift: {what}; {_RESUME_ADVICE[_verb_has_resume(argv)]}"


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[list[int]]:
    """While the block runs, SIGTERM raises :class:`Terminated` in the main thread (once: a second
    one during the cleanup it started is only counted); yields the signals received. Elsewhere (a
    thread, an embedding program's non-main thread) nothing is installed. The handler before is put
    back afterwards. Child processes keep their own: device workers and reader processes start from
    a new interpreter or the fork server (default SIGTERM), and Python handlers are not inherited
    across exec."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, frame: object) -> None:
        received.append(signum)
        if len(received) == 1:
            raise Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield received
    finally:  # None: a handler set outside Python, which cannot be put back; the default then
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


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
    """Console entry point; returns the exit code (2 for bad input or a missing extra, 130 after
    Ctrl-C, 143 after SIGTERM)."""
    _system_arrow_allocator()
    _few_malloc_arenas_under_a_limit()
    with _sigterm_raises() as terminated:
        try:
            code = _run(argv)
        except KeyboardInterrupt:  # a SIGTERM just after the verb ended
            code = EXIT_INTERRUPTED
    if code == EXIT_INTERRUPTED:  # typer turns Ctrl-C (and Terminated) into a silent exit 130
        shown = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
        typer.echo(interrupted_line(shown, bool(terminated)), err=True)
        return EXIT_TERMINATED if terminated else code
    return code


def _run(argv: list[str] | None) -> int:
    """Run the verb; returns its exit code, having printed the one line of an error users cause."""
    try:
        app(args=argv, prog_name="cryoshift", standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    except (InputError, MissingExtraError) as exc:
        # names from files (a tomogram, a class) may hold escape sequences: shown, not sent to the terminal
        typer.echo(f"cryoshift: error: {visible(exc)}", err=True)
        return 2
    except OSError as exc:  # the file system refused (a file where a folder must go, no space, ...)
        where = f"{exc.filename}: " if exc.filename else ""
        reason = " ".join(str(exc.strerror or exc).split())
        typer.echo(f"cryoshift: error: {visible(where + reason)}", err=True)
        return 2
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
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
