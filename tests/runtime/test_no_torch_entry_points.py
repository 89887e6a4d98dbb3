"""The torch wings' developer entry points on a node without PyTorch.

``python -m cryoshift.training.backbones`` / ``.adapt`` and ``import cryoshift.export`` ended in a
ModuleNotFoundError traceback from deep inside the package; they say, as ``cryoshift train``
does, which extra to install. "No torch" is made by the suite's import blocker
(tests/support/import_blocker.py) in a fresh interpreter, as in test_no_torch.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from import_blocker import blocked_env

INSTALL = "pip install 'cryoshift[train]'"


def _python_without_torch(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` in a fresh interpreter in which ``import torch`` fails."""
    return subprocess.run(
        [sys.executable, *args],
        env=blocked_env(tmp_path / "site", "torch"),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )


LISTINGS = ["cryoshift.training.backbones", "cryoshift.training.adapt"]


@pytest.mark.parametrize("package", LISTINGS)
def test_a_listing_without_torch_is_one_line_naming_the_extra(package: str, tmp_path: Path) -> None:
    """``python -m`` imports the package before its ``__main__``: that import said it, in a traceback."""
    proc = _python_without_torch(["-m", package], tmp_path)
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"cryoshift: error: {package} needs the 'train' extra")
    assert lines[0].endswith(INSTALL), lines


@pytest.mark.parametrize("package", ["cryoshift.export", *LISTINGS])
def test_importing_a_torch_package_without_torch_names_the_extra(package: str, tmp_path: Path) -> None:
    """The import still fails with an ImportError (``except ImportError`` keeps working), now one
    that says what to install."""
    probe = f"try:\n    import {package}\nexcept ImportError as exc:\n    print(type(exc).__name__, exc)"
    proc = _python_without_torch(["-c", probe], tmp_path)
    assert proc.returncode == 0, proc.stderr
    said = proc.stdout.strip()
    assert said.startswith(f"MissingExtraError {package} needs the 'train' extra"), said
    assert "No module named 'torch'" in said and said.endswith(INSTALL), said
