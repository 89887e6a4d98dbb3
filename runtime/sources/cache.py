"""Opening volumes: a thread-safe cache of memory-mapped MRC files shared by planning and the
readers, and file-system failures said in words."""

from __future__ import annotations

import errno
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from cryoshift.runtime.errors import InputError, missing_reason


class VolumeCache:
    """Thread-safe LRU of opened memory-mapped MRC files (stacks and tomograms stay open)."""

    def __init__(self, size: int = 32):
        self.size = size
        self._open: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str) -> Any:
        with self._lock:
            vol = self._open.get(path)
            if vol is not None:
                self._open.move_to_end(path)
                return vol
        vol = open_mrc(path)
        with self._lock:
            self._open[path] = vol
            while len(self._open) > self.size:
                self._open.popitem(last=False)
        return vol


def open_mrc(path: str | Path) -> Any:
    """Memory-map an MRC file via the runtime reader, with every failure as InputError."""
    from cryoshift.runtime.mrc import open_volume

    if str(path).startswith("copick:"):  # a copick tomogram (runtime/copick_io.py)
        from cryoshift.runtime.copick_io import open_volume as open_copick

        return open_copick(str(path))
    try:
        return open_volume(path)
    except InputError:
        raise
    except OSError as exc:
        raise InputError(path, os_reason(path, exc)) from exc
    except ValueError as exc:
        raise InputError(path, f"cannot read MRC file ({exc})") from exc


def os_reason(path: str | Path, exc: OSError) -> str:
    """A file-system failure in words (no ``[Errno 2]``): what a user can act on."""
    if isinstance(exc, FileNotFoundError) or exc.errno == errno.ELOOP:
        return missing_reason(path, "no such file or directory")
    if isinstance(exc, IsADirectoryError):
        return "is a directory, expected an MRC file"
    if isinstance(exc, PermissionError):
        return permission_reason(path)
    return f"cannot read: {' '.join(str(exc.strerror or exc).split())}"


def permission_reason(path: str | Path) -> str:
    """ "permission denied" and what was refused: the file, a folder's listing, or a folder on the
    way that cannot be entered (named: chmod-ing the file would not help).
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except PermissionError:
        folder = path.parent
        for parent in reversed(path.parents):  # the first folder whose entries cannot be reached
            try:
                os.stat(parent)
            except PermissionError:
                break
            folder = parent
        return f"permission denied (cannot enter folder {folder})"
    except OSError:
        return "permission denied"
    import stat

    if stat.S_ISDIR(st.st_mode):
        return "permission denied (cannot list the folder)"
    return "permission denied (cannot read the file)"
