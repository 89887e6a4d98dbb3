"""Errors that reach users.

Every reader raises :class:`InputError` with the offending path and a one-line reason, so
the CLI can print ``cryoshift: error: PATH: REASON`` and batch runs can write the same
text into their errors table instead of stopping.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import NamedTuple


class InputError(ValueError):
    """Bad user input: a file that cannot be read or does not fit the job."""

    def __init__(self, path: str | Path | None, reason: str):
        self.path = None if path is None else str(path)
        # One line, whatever the cause says: library messages (pandas, torch) span several lines.
        self.reason = " ".join(str(reason).split())
        shown = None if self.path is None else self.path.replace("\n", "\\n").replace("\r", "\\r")
        super().__init__(f"{shown}: {self.reason}" if shown else self.reason)


class MissingExtraError(ImportError):
    """A command needs an optional dependency group that is not installed."""

    def __init__(self, extra: str, what: str, cause: BaseException | None = None):
        self.extra = extra
        missing = f" ({cause})" if cause else ""
        super().__init__(f"{what} needs the '{extra}' extra{missing}: pip install 'cryoshift[{extra}]'")


def require_extra(extra: str, what: str, *modules: str) -> None:
    """Import ``modules`` or raise :class:`MissingExtraError` naming the extra to install."""
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise MissingExtraError(extra, what, exc) from exc


def require_package_extra(extra: str, package: str, *modules: str) -> None:
    """Like :func:`require_extra`, at the top of ``package``, which cannot be imported without
    ``modules`` (``cryoshift.training.backbones`` without torch): importing it raises
    :class:`MissingExtraError`; running it with ``python -m`` prints the one line the ``cryoshift``
    command prints for a missing extra instead, exit status 2.

    Why: ``python -m PACKAGE`` imports the package while Python is still locating its ``__main__``
    (``sys.argv[0]`` is ``"-m"`` until then, as the ``-m`` documentation says), so the error
    comes before ``__main__`` could catch it and runpy shows it as a traceback."""
    try:
        require_extra(extra, package, *modules)
    except MissingExtraError as exc:
        if sys.argv[:1] != ["-m"]:
            raise
        print(f"cryoshift: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def missing_reason(path: str | Path, missing: str = "no such file") -> str:
    """Why ``path``, which ``Path.exists`` calls absent, cannot be opened: ``missing``, or the
    symbolic link that cannot be followed. ``exists`` says False for a loop of links as for a
    dangling one, and "no such file" (or "dangling") misled for a name that is there."""
    try:
        os.stat(path)
        return missing  # there after all (a race): the caller's own words
    except OSError as exc:
        loop = exc.errno == errno.ELOOP
    try:
        target = os.readlink(path)
    except OSError:  # not a link itself (a loop may be in a folder on the way)
        return "symbolic link loop in its path" if loop else missing
    if loop:
        return f"symbolic link loop (points to {target}; following it never reaches a file)"
    return f"dangling symbolic link (points to {target}, which does not exist)"


class Blocked(NamedTuple):
    """What stops a folder from being made (:func:`blocked_folder`)."""

    path: Path  # the folder itself or one above it
    link: bool  # a dangling link or a loop of links; else something there that is not a folder


def blocked_folder(out: str | Path) -> Blocked | None:
    """What stops the folder ``out`` from being made or used, walking up from it; None when ``out``
    is a folder or can be made in the nearest folder above it. mkdir says only "File exists" for a
    link that cannot be followed and "Not a directory" for a path under a file, naming neither:
    :func:`check_out_folder` and ``cryoshift report`` say it in words."""
    out = Path(out)
    for folder in (out, *out.parents):
        if folder.is_symlink() and not folder.exists():
            return Blocked(folder, True)
        if folder.exists():
            return None if folder.is_dir() else Blocked(folder, False)
    return None


# What a verb says when the working directory was deleted under the shell (the CLI's check, merge's
# refusal of a relative path there).
CWD_GONE = "the current directory no longer exists (deleted under this shell): cd to an existing folder"
NAME_MAX = 255  # the usual longest file name in bytes, where the file system does not say its own


def _name_max(folder: Path) -> int:
    """The longest file name, in bytes, that the file system of ``folder`` (which exists) allows."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):  # Windows has no pathconf; some mounts do not say
        return NAME_MAX


def check_name_length(path: str | Path, option: str) -> None:
    """Refuse ``path`` in one line, before any work, when a part of it that does not exist yet has
    a name longer than its file system allows. Why: the failure came after the work ("File name
    too long" once a whole benchmark had run), or as a bare OSError from a check on the way."""
    path = Path(path)
    missing = []
    for part in (path, *path.parents):
        if os.path.isdir(part):
            break
        missing.append(part)
    else:
        part = Path(os.curdir)
    limit = _name_max(part)
    for name in reversed(missing):
        size = len(os.fsencode(name.name))
        if size > limit:
            too_long = f"name is {size} bytes; this file system allows at most {limit}"
            raise InputError(name, f"{too_long}; choose a shorter {option}")


def check_out_folder(out: str | Path, option: str, what: str) -> None:
    """Refuse an output folder that cannot be made (:func:`blocked_folder`, a name too long), in
    words and before any work, not when mkdir fails after the work is done (``what`` says what the
    folder is for). A literal ``~`` at its start is said once (literal_paths)."""
    from cryoshift.runtime.literal_paths import note_unexpanded_tilde

    out = Path(out)
    check_name_length(out, option)
    note_unexpanded_tilde(out)
    blocked = blocked_folder(out)
    if blocked is None:
        return
    folder, link = blocked
    if link:
        on_way = "" if folder == out else f", on the way to {out}"
        raise InputError(folder, f"{missing_reason(folder)}{on_way}; choose another {option}")
    if folder == out:
        raise InputError(out, f"exists and is not a folder; {option} names the folder {what}")
    raise InputError(folder, f"is not a folder, so {option} {out} cannot be made in it")


def not_a_file(path: Path) -> str | None:
    """What is under ``path`` when something is there but no regular file (a folder, a symbolic
    link loop or dangling link, a pipe), in words; None for a regular file or nothing at all (the
    callers say what an absent one means). Such a file was reported as "missing" or taken for
    absent."""
    if path.is_file():
        return None
    if path.is_dir():
        return "is a folder"
    if not os.path.lexists(path):
        return None
    return missing_reason(path, "is a special file")


def writing_error(path: Path, exc: OSError) -> OSError:
    """``exc`` (raised while ``path`` was written under its temporary name, or renamed to it), as
    an OSError of the same kind that names ``path`` and says what to do.

    Why: the message named the temporary ``.predictions.NNN.tmp.star`` (a folder in the way said
    "Is a directory" of a file the user never made), and a full disk named no file at all."""
    if os.path.isdir(path) and not os.path.islink(path):
        reason = "a folder of this name is in the way; move it, or choose another output folder"
    elif exc.errno == errno.ENOSPC:
        reason = "cannot write: no space left on device; free space or choose another output folder"
    elif exc.errno == errno.EDQUOT:
        reason = "cannot write: disk quota exceeded; free space or choose another output folder"
    else:
        reason = f"cannot write: {' '.join(str(exc.strerror or exc).split())}"
    try:
        return type(exc)(exc.errno, reason, str(path))
    except TypeError:  # an OSError subclass with its own arguments
        return OSError(exc.errno, reason, str(path))
