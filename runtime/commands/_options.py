"""Option types shared by several verbs, so that an option means the same thing in each of them.

Light on purpose (stdlib only): every command module imports it at the top, before ``--help``.
"""

from __future__ import annotations

from enum import Enum


class Backend(str, Enum):
    """``--backend`` of ``classify`` and ``bench``: the names of ``cryoshift.runtime.backends.BACKENDS``."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    tensorrt = "tensorrt"
    engine = "engine"
