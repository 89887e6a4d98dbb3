"""Writing into output folders: the one policy by which every file cryoshift writes goes to disk.

Why: an output folder may be shared (a project folder) or received (a run folder someone sent),
and whoever could write into it could plant a symbolic link at a name cryoshift writes:
``errors.csv -> ~/.ssh/authorized_keys`` made ``classify`` create that file with rows whose ids
are tomogram names from a picks table, and a link at the lock file truncated its target. Fixed or
predictable temporary names (``manifest.json.tmp``, ``.NAME.<pid>.tmp``) were written through a
planted link the same way. Two rules, so no output is ever written through a link:

* A whole file (:class:`PendingFile`, :func:`replacing`, :func:`replacing_path`,
  :func:`write_text`, :func:`write_bytes`) is written to a new temporary file beside its name
  (``.cs-<random>.tmp``, short so that any legal name can be written),
  made by :func:`tempfile.mkstemp` (``O_EXCL`` and a random name: it never follows or reuses
  anything planted), fsync'ed, then :func:`os.replace`\\ d onto the name. A link at the name is
  replaced, never followed; its target is left as it was. A reader never sees half a file.
* A file written in place (a ledger appended to, the lock file, a features file cut back on
  resume) is opened by :func:`open_in_place` with ``O_NOFOLLOW`` (and ``O_CLOEXEC``): a link at
  its name is refused in one line (:data:`LINK_REASON`) instead of followed. Windows has no
  ``O_NOFOLLOW``; there the name is checked with :func:`os.path.islink` first.

Neither rule ever puts a file in place of something that is not one: a device, a named pipe or
a socket at a name is refused in one line (:func:`refuse_special`); ``report -o /dev/full`` had
replaced the device with the page.

Reading through a link is left alone: inputs (a picks table, a tomogram) are often links.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from cryoshift.runtime.errors import InputError, writing_error

LINK_REASON = "is a symbolic link; cryoshift does not write through links in an output folder"
NOT_REGULAR_REASON = "not a regular file; cryoshift writes only regular files in an output folder"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation below Python's own
# open() modes the in-place files use, as os.open flags
_FLAGS = {
    "a": os.O_WRONLY | os.O_APPEND | os.O_CREAT,
    "r+": os.O_RDWR,
    "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
    "w+": os.O_RDWR | os.O_CREAT | os.O_TRUNC,
}


@functools.cache
def _umask() -> int:
    """This process's umask, read once (Linux: /proc, without changing it; elsewhere by setting
    and restoring it), so a file made by mkstemp (0600) gets the mode ``open`` would have given
    it: outputs in a shared project folder stay readable by the group as before."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def refuse_link(path: str | Path) -> None:
    """Refuse ``path`` in one line when it is a symbolic link (the portable check)."""
    if os.path.islink(path):
        raise InputError(path, LINK_REASON)


def special_kind(path: str | Path, follow: bool = False) -> str | None:
    """What ``path`` is in words ("a device", "a named pipe (FIFO)", "a socket") when it exists and
    is neither a regular file, a folder nor (unless ``follow``) a symbolic link; None otherwise
    (missing or unreadable included: writing it says why)."""
    try:
        mode = os.stat(path).st_mode if follow else os.lstat(path).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def refuse_special(path: str | Path) -> None:
    """Refuse in one line a whole file to be written at ``path`` when a device, a named pipe or a
    socket is there: the rename would replace it (``/dev/full`` became a regular file)."""
    kind = special_kind(path)
    if kind:
        raise InputError(path, f"is {kind}, {NOT_REGULAR_REASON}")


class NotRegularFileError(Exception):
    """What :func:`open_regular_fd` found at a path is not a regular file (a folder, a named pipe,
    a device); each caller says it in its own words."""


def open_regular_fd(path: str | Path, flags: int, mode: int = 0o666) -> int:
    """``os.open(path, flags)`` of a regular file, never through a link at ``path``: the one way
    both a file written in place (:func:`open_fd_in_place`) and a run file ``cryoshift report``
    inlines are opened, each caller saying the refusals in its own words.

    A link at ``path`` fails as ``O_NOFOLLOW`` makes it (:class:`OSError` ELOOP, EMLINK on
    FreeBSD; Windows has no ``O_NOFOLLOW``, so there the caller checks for a link first). Anything
    else that is not a regular file raises :class:`NotRegularFileError`, the descriptor closed
    again: a pipe would block a reader (open it with ``O_NONBLOCK``), a device be written to. The
    descriptor is not inherited by child processes."""
    fd = os.open(path, flags | _NOFOLLOW | _CLOEXEC | _BINARY, mode)
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        os.close(fd)
        raise
    if not regular:
        os.close(fd)
        raise NotRegularFileError(path)
    return fd


def open_fd_in_place(path: str | Path, flags: int, mode: int = 0o666) -> int:
    """``os.open(path, flags)`` that never follows a link at ``path`` (refused: :data:`LINK_REASON`)
    and refuses anything there that is not a regular file (a pipe would block, a device be
    written to); the descriptor is not inherited by child processes (:func:`open_regular_fd`)."""
    if not _NOFOLLOW:  # pragma: no cover - Windows
        refuse_link(path)
    try:
        return open_regular_fd(path, flags, mode)
    except NotRegularFileError:
        raise InputError(path, f"is {NOT_REGULAR_REASON}") from None
    except OSError as exc:
        # Linux and macOS say ELOOP for a link refused by O_NOFOLLOW, FreeBSD EMLINK
        if exc.errno in (errno.ELOOP, errno.EMLINK) and os.path.islink(path):
            raise InputError(path, LINK_REASON) from None
        raise


def open_in_place(
    path: str | Path, mode: str, encoding: str | None = None, newline: str | None = None
) -> IO[Any]:
    """``open(path, mode)`` for a file written where it is (a ledger appended to, a file cut back
    on resume): ``mode`` is one of ``a r+ w w+`` (each with ``b`` for bytes); a link at ``path`` is
    refused (:func:`open_fd_in_place`)."""
    flags = _FLAGS[mode.replace("b", "")]
    fd = open_fd_in_place(path, flags)
    try:
        if "b" in mode:
            return os.fdopen(fd, mode)
        return os.fdopen(fd, mode, encoding=encoding or "utf-8", newline=newline)
    except BaseException:
        os.close(fd)
        raise


# A temporary file is ``.cs-<8 random>.tmp`` beside its target: hidden, ending in ``.tmp`` (so a
# leftover is recognisable), and short. It once held the target's name (``.NAME.<random>.tmp``,
# 14 bytes more), so a legal name of 242-255 bytes could not be written ("File name too long").
TEMPORARY_PREFIX = ".cs-"
TEMPORARY_SUFFIX = ".tmp"


def _temporary(path: Path) -> tuple[int, Path]:
    """A new, empty, exclusively created file beside ``path`` (same folder, so the final rename is
    atomic), with the mode a plain ``open`` would have given it."""
    fd, name = tempfile.mkstemp(prefix=TEMPORARY_PREFIX, suffix=TEMPORARY_SUFFIX, dir=path.parent)
    if hasattr(os, "fchmod"):
        with contextlib.suppress(OSError):  # a file system without modes (FAT, some mounts): 0600 stays
            os.fchmod(fd, 0o666 & ~_umask())
    return fd, Path(name)


def _about_write(exc: OSError, tmp: Path) -> bool:
    """Whether ``exc`` is about writing the file (it names the temporary file or no file), not
    about another file the caller was reading while it wrote."""
    return exc.filename is None or os.fspath(exc.filename) == os.fspath(tmp)


class PendingFile:
    """The whole file ``path`` being written under a new temporary name beside it (see the module
    docstring): :attr:`file` takes the content, :meth:`commit` puts it in place, :meth:`discard`
    drops it. A file-system failure (a full disk, a folder in the way) names ``path``, never the
    temporary file (:func:`~cryoshift.runtime.errors.writing_error`)."""

    def __init__(
        self, path: str | Path, mode: str = "w", encoding: str | None = None, newline: str | None = None
    ):
        self.path = Path(path)
        refuse_special(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd, self.tmp = _temporary(self.path)
        except OSError as exc:
            raise writing_error(self.path, exc) from exc
        try:
            if "b" in mode:
                self.file: IO[Any] | None = os.fdopen(fd, mode)
            else:
                self.file = os.fdopen(fd, mode, encoding=encoding or "utf-8", newline=newline)
        except BaseException:
            os.close(fd)
            self.tmp.unlink(missing_ok=True)
            raise

    def commit(self) -> Path:
        """Flush, fsync and close the file, then rename it onto ``path`` (replacing whatever entry,
        a link included, is there)."""
        fh = self.file
        if fh is None:
            raise RuntimeError(f"{self.path}: already committed or discarded")
        try:
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
            self.file = None
            os.replace(self.tmp, self.path)
        except OSError as exc:
            raise writing_error(self.path, exc) from exc
        finally:
            self.discard()
        return self.path

    def discard(self) -> None:
        """Drop the temporary file (a file already under ``path`` stays). Closing may fail again (a
        full disk: the rest of the buffer): the first failure is the one said."""
        fh, self.file = self.file, None
        try:
            if fh is not None:
                fh.close()
        except OSError:
            pass
        finally:
            self.tmp.unlink(missing_ok=True)


@contextmanager
def replacing(
    path: str | Path, mode: str = "w", encoding: str | None = None, newline: str | None = None
) -> Iterator[IO[Any]]:
    """Write the whole file ``path`` through the yielded file object; it is put in place when the
    block ends without an error, and dropped otherwise. ``mode``: ``w`` (text, UTF-8 unless
    ``encoding``) or ``wb``."""
    pending = PendingFile(path, mode, encoding, newline)
    try:
        assert pending.file is not None
        yield pending.file
    except OSError as exc:
        pending.discard()
        if _about_write(exc, pending.tmp):
            raise writing_error(pending.path, exc) from exc
        raise
    except BaseException:
        pending.discard()
        raise
    pending.commit()


@contextmanager
def replacing_path(path: str | Path) -> Iterator[Path]:
    """For a library that writes only to a file name (mrcfile, a features file): the name of a new,
    empty temporary file beside ``path``, made as :class:`PendingFile` makes it; fsync'ed and put
    in place when the block ends without an error, removed otherwise.

    The library reopens the name: safe from a link planted beforehand (the name is new and random),
    not from one swapped in during the write by someone watching the folder; write through
    :func:`replacing` where the library takes a file object."""
    path = Path(path)
    refuse_special(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = _temporary(path)
        os.close(fd)
    except OSError as exc:
        raise writing_error(path, exc) from exc
    try:
        yield tmp
        fd = open_fd_in_place(tmp, os.O_RDWR)  # Windows fsyncs only a writable handle
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        if _about_write(exc, tmp):
            raise writing_error(path, exc) from exc
        raise
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str, encoding: str = "utf-8", newline: str | None = None) -> Path:
    """Write ``text`` as the whole file ``path`` (see :func:`replacing`)."""
    with replacing(path, "w", encoding, newline) as fh:
        fh.write(text)
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` as the whole file ``path`` (see :func:`replacing`)."""
    with replacing(path, "wb") as fh:
        fh.write(data)
    return Path(path)
