"""A plugin distribution written to disk as pip would install it, for the registry tests: its
modules and a ``dist-info`` folder with METADATA and entry_points.txt, which importlib.metadata
then finds like any installed package once the folder is on ``sys.path``."""

from __future__ import annotations

import textwrap
from pathlib import Path


def write_distribution(site: Path, dist: str, modules: dict[str, str], entry_points: str) -> Path:
    """A distribution as installed in ``site``: its modules and its ``dist-info`` folder."""
    site.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    return site
