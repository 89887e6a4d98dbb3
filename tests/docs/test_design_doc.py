"""docs/design.md stays the code's: its module table is regenerated from the docstrings, and every
repository path it names exists (it points nowhere outside the repository)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DESIGN = ROOT / "docs" / "design.md"
TOP = ("runtime/", "training/", "export/", "benchmarks/", "tests/", "docs/")


def test_module_table_is_current() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "modules.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


def test_every_module_of_the_wings_is_listed() -> None:
    text = DESIGN.read_text()
    for wing in ("runtime", "training", "export"):
        for path in (ROOT / wing).rglob("*.py"):
            rel = path.relative_to(ROOT / wing)
            name = f"{rel.parent.as_posix()}/" if rel.name == "__init__.py" else rel.as_posix()
            if rel != Path("__init__.py"):
                assert f"| `{name}` |" in text, f"{wing}/{name} is not in docs/design.md"


def test_paths_it_names_exist_and_stay_inside_the_repository() -> None:
    text = DESIGN.read_text()
    assert "../" not in text and "/work/" not in text
    named = [p for p in re.findall(r"`([^`\s]+)`", text) if p.startswith(TOP) and "<" not in p]
    assert len(named) > 5
    missing = [p for p in named if not (ROOT / p).exists()]
    assert missing == []
