"""One writer per output folder: an ``flock`` on a lock file that dies with its process.

Why: two ``classify --resume`` runs on one folder both read the same ledger, classify the same
missing items and append them twice. The lock is taken on an open file descriptor, so the kernel
drops it when the process ends however it ends (kill -9 included): a stale lock file never
blocks a later run. The file holds the holder's pid so the refusal can name it.

The lock file is opened without following a link (runtime/outfiles.py): a link planted at its
name in a shared folder (``.cryoshift-classify.lock -> victim``) is refused, where it had its
target truncated and overwritten with a pid.

The lock file gets the mode any other output gets (``0666 & ~umask``): a run folder shared by a
group (umask 002, every data file group-writable) had a 0644 lock, so a colleague's ``--resume``
was refused with "Permission denied" on the one file it could not open. A lock file that still
cannot be opened for writing (made 0644 by an older cryoshift) is locked through a read-only
descriptor: ``flock`` needs no write access; only the holder's pid is not written then.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from cryoshift.runtime.errors import InputError
from cryoshift.runtime.outfiles import open_fd_in_place

CLASSIFY_LOCK_STEM = ".cryoshift-classify"  # a classify run's lock: {stem}[.shard-i-of-n].lock

try:  # POSIX; elsewhere the folder is not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class FolderLock:
    """Exclusive lock on ``folder / name``; :meth:`acquire` refuses in one line while another process
    holds it."""

    def __init__(
        self,
        folder: str | Path,
        name: str = ".cryoshift.lock",
        what: str = "cryoshift run",
        option: str = "--out",
    ):
        self.folder = Path(folder)
        self.path = self.folder / name
        self.what = what
        self.option = option  # how the refusal names the folder's option (simulate: OUT_DIR)
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        if fcntl is None:  # pragma: no cover
            return self
        fd, writable = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)  # not "held by another" (a file system without flock): said as it is
                raise OSError(exc.errno, f"cannot lock: {exc.strerror}", str(self.path)) from exc
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise InputError(
                self.folder,
                f"another {self.what} (pid {holder}) is writing to this folder; "
                f"wait for it to finish or choose another {self.option}",
            ) from None
        if writable:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def _open(self) -> tuple[int, bool]:
        """The lock file's descriptor (made with the umask's mode, as every output is) and whether
        it is writable: an existing lock this user may only read (another user's, made 0644 by
        an older cryoshift) is opened read-only, which ``flock`` accepts. One that cannot even be
        read is refused in one line saying it may be removed when no run is using the folder."""
        try:
            return open_fd_in_place(self.path, os.O_RDWR | os.O_CREAT, 0o666), True
        except PermissionError:
            if not os.path.lexists(self.path):
                raise  # the folder itself is not writable: said as it is
        try:
            return open_fd_in_place(self.path, os.O_RDONLY), False
        except PermissionError:
            raise InputError(
                self.path,
                "Permission denied (the lock file of another user); when no cryoshift run is "
                "writing this folder it can be removed",
            ) from None

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor drops the flock

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def lock_name(shard: tuple[int, int] | None = None) -> str:
    """Shards of one run write different files into one folder: each has its own lock."""
    suffix = f".shard-{shard[0]}-of-{shard[1]}" if shard else ""
    return f"{CLASSIFY_LOCK_STEM}{suffix}.lock"


# The locks of the other writing verbs (their folders hold no classify results: not CLASSIFY_LOCK_STEM)
SIMULATE_LOCK = ".cryoshift-simulate.lock"  # a simulate run's, in its OUT_DIR
TRAIN_LOCK = ".cryoshift-train.lock"  # a train run's, in its --out (rank 0 takes it)
EXPORT_LOCK = ".cryoshift-export.lock"  # an export's, in its -o


class Held:
    """What :func:`holding` yields: the lock, and whether a failure may remove the folder it made."""

    def __init__(self, lock: FolderLock):
        self.lock = lock
        self.keep = False

    def keep_folder(self) -> None:
        """From now on a failure leaves the folder: the writer under way cleans up its own files
        (simulate removes its partial stack) and the folder stays, as it did before the lock."""
        self.keep = True


@contextmanager
def holding(folder: str | Path, name: str, what: str, option: str = "--out") -> Iterator[Held]:
    """Make ``folder`` (and its parents) and hold its lock ``name`` for the ``with`` block.

    Why: simulate, train and export checked their folder once and then wrote for minutes, so two
    runs started together both passed the check and wrote into each other's files (a dataset of
    two seeds' volumes under one seed's labels). The lock comes before those checks: the second
    run is refused in one line naming the first's pid. A run that fails (a refused input) leaves
    no folder it made behind (until :meth:`Held.keep_folder`), nor a lock file it made; the
    refused second run touches nothing (the folder is the first's)."""
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    fresh = not os.path.lexists(folder / name)
    lock = FolderLock(folder, name, what, option).acquire()  # refused: raises before anything is touched
    held = Held(lock)
    try:
        yield held
    except BaseException:
        if fresh:
            _remove_made(folder if created and not held.keep else None, lock)
        raise
    finally:
        lock.release()


def holder(folder: str | Path, name: str) -> str | None:
    """The pid (as the lock file says it) of the process that holds ``folder / name`` now, or
    ``None`` when nothing holds it (or there is no such lock file, or it cannot be read).

    Why: a reader of a folder another verb is writing (``export RUN`` while ``train --resume``
    trains RUN) would read a model about to be replaced, or be told the run "stopped" before it
    selected one. Checking takes no lock a writer could trip over: a shared lock is tried on a
    read-only descriptor and dropped at once; no file is made, no link followed."""
    if fcntl is None:  # pragma: no cover
        return None
    try:
        fd = os.open(Path(folder) / name, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _remove_made(folder: Path | None, lock: FolderLock) -> None:
    """Remove the lock file a failed run made (it is still held: no other run is using it), and
    ``folder`` (the one the run made) when nothing else is in it: a refused input leaves the
    folder as it found it."""
    try:
        lock.path.unlink()
        if folder is not None and not any(folder.iterdir()):
            folder.rmdir()
    except OSError:  # something appeared or cannot be removed: left as it is
        pass
