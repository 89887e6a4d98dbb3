"""Host resources: how much memory this process can still take, how many threads are worth asking
for, and byte counts as people read them.

Why a module: a check that refuses work which cannot fit (bench's batches, and any later one) must
read the same figure the kernel acts on, cgroup limits included, and say sizes in one style; and
torch (train, simulate, demo) and onnxruntime (classify, bench) must lower ``--threads`` alike.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from cryoshift.runtime.terminal import say


def check_threads(threads: int | None) -> None:
    """Refuse a ``--threads`` below 1 in one line, before any work: 0 was ignored by torch, -1 a
    torch traceback (train, simulate, demo; the runtime's options declare min=1)."""
    if threads is not None and threads < 1:
        from cryoshift.runtime.errors import InputError

        raise InputError(None, f"--threads must be at least 1, not {threads}")


def capped_threads(threads: int | None) -> int | None:
    """``threads`` lowered to this machine's CPU count, with a note on stderr when it was higher.

    onnxruntime starts one intra-op thread per requested thread, each with its own stack: a
    ``--threads 100000`` under a memory ulimit segfaulted while the session was created; torch's
    pool does the same. Even where it fits, threads beyond the cores only take turns on them.
    The cap is the CPUs this process may run on (:func:`usable_cpus`: a Slurm job's share), as for
    ``--workers``: a job given 4 of a node's 128 cores asked for 128 threads. None or 0 (all cores)
    are returned unchanged.
    """
    cpus = usable_cpus()
    if not threads or int(threads) <= cpus:
        return threads
    say(f"cryoshift: note: --threads {threads} is above the CPU count ({cpus}); using {cpus} threads")
    return cpus


# Most readers per usable CPU. A reader thread spends part of its time waiting on storage (a
# parallel file system: milliseconds a read), so a few per core keep the cores busy; more only take
# turns on them, and each adds a batch buffer to the pool (workers + 2 buffers of batch x box^3).
# A reader process is a whole interpreter (its own imports, ~100 MB) that exists to use a core the
# GIL would not give: one per core is the most that helps (never fewer than the default 2).
READER_THREADS_PER_CPU = 4


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity: a Slurm job's share, not the whole node)."""
    if hasattr(os, "sched_getaffinity"):
        with contextlib.suppress(OSError):
            return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def capped_workers(workers: int, processes: bool = False) -> int:
    """``--workers`` lowered to :data:`READER_THREADS_PER_CPU` reader threads per usable CPU (one
    reader process per CPU, at least 2, with ``processes``), with a note on stderr when it was higher.

    Why: ``--workers 100000`` started that many reader threads (or spawned that many processes)
    before the first batch. 0 (sized to the backend, up to the cores) is returned unchanged.
    """
    cpus = usable_cpus()
    cap = max(2, cpus) if processes else READER_THREADS_PER_CPU * cpus
    if int(workers) <= cap:
        return workers
    kind = "processes" if processes else f"threads ({READER_THREADS_PER_CPU} per CPU)"
    say(
        f"cryoshift: note: --workers {workers} is more readers than {cpus} CPU{'s' * (cpus != 1)} "
        f"can use; using {cap} reader {kind}"
    )
    return cap


def available_memory() -> int | None:
    """Bytes of host memory this process can still take without swapping or the OOM killer; None
    where unknown (then nothing is refused).

    Why MemAvailable and not ``SC_AVPHYS_PAGES`` (MemFree): the kernel gives the page cache back on
    demand, and on a node that has read a few tomograms MemFree is a small share of what can be
    allocated, so it would refuse runs that fit. A cgroup v2 limit (a container, a Slurm job)
    lowers it: /proc/meminfo shows the whole node.
    """
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        except (AttributeError, OSError, ValueError):  # no such sysconf name (macOS)
            return None
    room = _cgroup_room()
    return avail if room is None else min(avail, room)


def _cgroup_room() -> int | None:
    """Bytes left under this process's cgroup v2 memory limit (its file cache counted as free, as
    the kernel reclaims it before the OOM killer acts); None without a limit or cgroup v2."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
        rel = next(line[3:] for line in lines if line.startswith("0::"))
        folder = Path("/sys/fs/cgroup") / rel.lstrip("/")
        limit = (folder / "memory.max").read_text().strip()
        if limit == "max":
            return None
        used = int((folder / "memory.current").read_text())
        stat = dict(line.split() for line in (folder / "memory.stat").read_text().splitlines())
        return max(0, int(limit) - used + int(stat.get("file", 0)))
    except (OSError, ValueError, StopIteration):
        return None


def format_bytes(nbytes: float) -> str:
    """``nbytes`` in binary units: '512 B', '1.5 KiB', '29.8 TiB'."""
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"
