"""The suite's one import blocker: make modules unimportable to prove code runs without them.

One meta-path finder, first on ``sys.meta_path``, raises ImportError for the named modules and
their submodules. Two ways to install it:

* ``blocked_env(folder, "torch")`` for a child interpreter: writes ``folder/sitecustomize.py``
  and returns ``os.environ`` with ``folder`` first on PYTHONPATH, so the finder is in place
  before any cryoshift code runs (the torch-free runtime, evaluate without scipy);
* ``block_imports(monkeypatch, "matplotlib")`` in this process: drops the modules from
  ``sys.modules`` and installs the finder, both undone when the test ends.

(``tests/support`` is on pytest's ``pythonpath``, see pyproject.toml.)
"""

from __future__ import annotations

import inspect
import os
import sys
from pathlib import Path

import pytest


class ImportBlocker:
    """A meta-path finder refusing ``names`` and their submodules."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = tuple(names)

    def blocks(self, name: str) -> bool:
        return any(name == n or name.startswith(n + ".") for n in self.names)

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if self.blocks(name):
            raise ImportError(f"No module named {name!r} (blocked by the test)")
        return None


def blocked_env(folder: Path, *names: str) -> dict[str, str]:
    """Environment for a subprocess in which ``import NAME`` fails for each of ``names``."""
    folder.mkdir(parents=True, exist_ok=True)
    source = inspect.getsource(ImportBlocker)
    install = f"sys.meta_path.insert(0, ImportBlocker({tuple(names)!r}))"
    (folder / "sitecustomize.py").write_text(
        f"from __future__ import annotations\n\nimport sys\n\n\n{source}\n\n{install}\n"
    )
    return {**os.environ, "PYTHONPATH": str(folder) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def block_imports(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Make ``names`` unimportable in this process until the test ends."""
    blocker = ImportBlocker(names)
    for name in [m for m in sys.modules if blocker.blocks(m)]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [blocker, *sys.meta_path])
