"""The house's import rule, read from the source (docs/design.md, "The import rule").

- runtime imports neither torch nor the training or export wings; only a command module
  (runtime/commands/<verb>.py) may import them, and only inside a function, so that
  ``cryoshift --help`` and ``classify`` never load them;
- training may use the runtime, never export;
- export may use both.

test_no_torch.py proves the first point by running the CLI with torch blocked; this test names the
file and line of any import that breaks the rule, including ones no test happens to execute.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "cryoshift.training", "cryoshift.export")


def _imports(source: str, package: list[str]) -> list[tuple[str, int, bool]]:
    """(absolute module, line, at module level) for every import in ``source`` of ``package``."""
    tree = ast.parse(source)
    in_function: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            in_function.update(id(child) for child in ast.walk(node) if child is not node)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            names = [module] + [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        found += [(name, node.lineno, id(node) not in in_function) for name in names]
    return found


def _file_imports(path: Path, wing: str) -> list[tuple[str, int, bool]]:
    return _imports(path.read_text(), ["cryoshift", wing, *path.relative_to(ROOT / wing).parent.parts])


def _breaks(wing: str, allowed: Callable[[Path, str, bool], bool]) -> list[str]:
    bad = []
    for path in sorted((ROOT / wing).rglob("*.py")):
        for name, line, top in _file_imports(path, wing):
            heavy = next((h for h in HEAVY if name == h or name.startswith(h + ".")), None)
            if heavy and not allowed(path.relative_to(ROOT), heavy, top):
                bad.append(f"{path.relative_to(ROOT)}:{line}: imports {name}")
    return bad


def test_runtime_imports_no_heavy_wing_except_inside_commands() -> None:
    def allowed(path: Path, heavy: str, top: bool) -> bool:
        return path.parts[:2] == ("runtime", "commands") and not top

    assert _breaks("runtime", allowed) == []


def test_training_never_imports_export() -> None:
    assert _breaks("training", lambda path, heavy, top: heavy != "cryoshift.export") == []


def test_the_checker_sees_every_form() -> None:
    """Plain, relative and function-level imports are all resolved to absolute module names."""
    source = "import torch.nn\nfrom ... import training\n\n\ndef f():\n    from cryoshift.export import onnx"
    found = _imports(source, ["cryoshift", "runtime", "commands"])
    assert ("torch.nn", 1, True) in found and ("cryoshift.training", 2, True) in found
    assert ("cryoshift.export.onnx", 6, False) in found
    in_demo = {
        name
        for name, _, top in _file_imports(ROOT / "runtime" / "commands" / "demo.py", "runtime")
        if not top
    }
    assert {"cryoshift.export", "cryoshift.training.trainer", "torch"} <= in_demo
