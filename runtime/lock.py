"""One writer per output folder: an ``flock`` on a lock file that dies with its process.

Why: two ``classify --resume`` runs on one folder both read the same ledger, classify the same
missing items and append them twice. The lock is taken on an open file descriptor, so the kernel
drops it when the process ends however it ends (kill -9 included): a stale lock file never
blocks a later run. The file holds the holder's pid so the refusal can name it.

The lock file is opened without following a link (runtime/outfiles.py): a link planted at its
name in a shared folder (``.cryoshift-classify.lock -> victim``) is refused, where it had its
target truncated and overwritten with a pid.
"""

from __future__ import annotations

import os
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

    def __init__(self, folder: str | Path, name: str = ".cryoshift.lock", what: str = "cryoshift run"):
        self.folder = Path(folder)
        self.path = self.folder / name
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        if fcntl is None:  # pragma: no cover
            return self
        fd = open_fd_in_place(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise InputError(
                self.folder,
                f"another {self.what} (pid {holder}) is writing to this folder; "
                "wait for it to finish or choose another --out",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

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
