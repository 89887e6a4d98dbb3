"""What machine a benchmark ran on: the pieces every benchmark script records next to its figures.

Benchmark figures mean nothing without the CPU that produced them; ``platform.processor()`` is
empty on most Linux machines, so the model name is read from /proc/cpuinfo where there is one.
"""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else ``platform.processor()``, else "unknown"."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
