"""The runtime wing works on a node without PyTorch (the facility GPU install).

Each test runs the real ``cryoshift`` console script in a fresh interpreter. "No torch" is
made by the suite's import blocker (tests/support/import_blocker.py): a ``sitecustomize`` first
on ``PYTHONPATH`` whose meta-path finder raises ImportError for ``torch``, so it is active before
any cryoshift code runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from import_blocker import blocked_env

from cryoshift.runtime.mrc import write_volume

# Runs one or more CLI commands in-process (separated by "::") after the blocker, then reports
# whether torch got imported and whether it can be imported at all.
PROBE = textwrap.dedent("""
    import sys
    import cryoshift.runtime as rt
    from cryoshift.runtime import cli
    for name in ("read_volume", "open_volume", "read_picks", "crop_box", "read_dataset", "write_results",
                 "describe"):
        getattr(rt, name)
    commands, current = [], []
    for arg in sys.argv[1:] + ["::"]:
        if arg == "::":
            commands.append(current)
            current = []
        else:
            current.append(arg)
    codes = []
    try:
        for argv in commands:
            codes.append(cli.main(argv))
    finally:
        print("TORCH_LOADED" if "torch" in sys.modules else "TORCH_ABSENT", file=sys.stderr)
    import importlib.util
    try:  # find_spec asks the finders without importing torch (slow) into this process
        found = importlib.util.find_spec("torch") is not None
    except ImportError:
        found = False
    print("TORCH_IMPORTABLE" if found else "TORCH_BLOCKED", file=sys.stderr)
    sys.exit(max(codes))
""")
PROBE_LINES = ("TORCH_ABSENT", "TORCH_LOADED", "TORCH_IMPORTABLE", "TORCH_BLOCKED")


def run(args: list[str], tmp_path: Path, block: bool) -> subprocess.CompletedProcess[str]:
    env = blocked_env(tmp_path / "site", "torch") if block else dict(os.environ)
    return subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )


def test_help_and_info_without_torch(tmp_path: Path) -> None:
    path = write_volume(tmp_path / "v.mrc", np.ones((8, 8, 8), np.float32), voxel_size=2.0)
    proc = run(["info", str(path), "::", "--help"], tmp_path, block=True)
    assert proc.returncode == 0, proc.stderr
    assert "8 x 8 x 8" in proc.stdout and "info" in proc.stdout
    assert "TORCH_ABSENT" in proc.stderr and "TORCH_BLOCKED" in proc.stderr  # the blocker really blocks


def test_help_and_info_never_import_torch_even_when_installed(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    (tmp_path / "p.csv").write_text("x,y,z\n1,2,3\n")
    proc = run(["--help", "::", "info", str(tmp_path / "p.csv")], tmp_path, block=False)
    assert proc.returncode == 0, proc.stderr
    assert "TORCH_ABSENT" in proc.stderr and "TORCH_IMPORTABLE" in proc.stderr, "cryoshift imported torch"


def test_train_without_torch_names_the_extra(tmp_path: Path) -> None:
    proc = run(
        ["train", "--source", "builtin", "--out", str(tmp_path / "run"), "--box", "16"], tmp_path, block=True
    )
    lines = [line for line in proc.stderr.strip().splitlines() if line not in PROBE_LINES]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and "cryoshift[train]" in lines[0] and lines[0].startswith("cryoshift: error:")


def test_train_help_without_torch_still_helps(tmp_path: Path) -> None:
    """The --method list comes from the training registry; without torch the help says where it is."""
    proc = run(["train", "--help"], tmp_path, block=True)
    assert proc.returncode == 0, proc.stderr
    flat = " ".join(proc.stdout.replace("│", " ").split())
    assert "--method" in flat and "Adaptation method, a name from the training wing's registry" in flat
    assert "the 'train' extra is installed" in flat
