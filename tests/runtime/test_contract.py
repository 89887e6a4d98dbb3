"""The model contract lives in runtime/contract.py only: no wing defines its facts again.

Why: the ONNX names, CONTRASTS and the MRC tables were once defined in up to four places and
could drift apart without any test noticing. This test reads the source of every wing.
"""

from __future__ import annotations

import ast
from pathlib import Path

from cryoshift.runtime import contract

ROOT = Path(__file__).resolve().parents[2]
WINGS = ("runtime", "export", "training")
# Names that only contract.py may bind (old spellings included, so a copy cannot come back).
CONTRACT_NAMES = {
    "INPUT_NAME",
    "INPUT",
    "OUTPUT_NAMES",
    "OUTPUTS",
    "LOGITS",
    "FEATURES",
    "CONTRASTS",
    "NORMALISATIONS",
    "VOXEL_TOLERANCE",
    "CUDA_DEVICE",
    "MRC_HEADER_BYTES",
    "HEADER_BYTES",
    "_HEADER",
    "MRC_MODES",
    "MODES",
    "_MODES",
    "MRC_MODE_NAMES",
    "MODE_NAMES",
    "MAP_SUFFIXES",
    "MRC_SUFFIXES",
    "BASE_SUFFIXES",
    "MRC_BASE_SUFFIXES",
    "COMPRESSED_SUFFIXES",
    "MRC_COMPRESSED_SUFFIXES",
}
# Literal values that give a copy away even under another name.
CONTRACT_TUPLES = {contract.CONTRASTS, contract.OUTPUT_NAMES, contract.NORMALISATIONS}
# Known copies waiting for their owner (trainer.py is being edited elsewhere): remove when fixed.
PENDING: set[str] = set()


def _sources() -> list[Path]:
    files = [p for wing in WINGS for p in sorted((ROOT / wing).rglob("*.py"))]
    return [p for p in files if p.name != "contract.py" or p.parent.name != "runtime"]


def _bound_names(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Assign):
        return [t.id for t in node.targets if isinstance(t, ast.Name)]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return [node.target.id]
    return []


def _literal(node: ast.AST) -> object:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def test_no_module_redefines_the_contract() -> None:
    found = []
    for path in _sources():
        tree = ast.parse(path.read_text(), str(path))
        where = path.relative_to(ROOT)
        for node in ast.walk(tree):
            found += [
                f"{where}:{node.lineno} binds {name}" for name in _bound_names(node) if name in CONTRACT_NAMES
            ]
            if isinstance(node, ast.Tuple) and any(_literal(node) == t for t in CONTRACT_TUPLES):
                found.append(f"{where}:{node.lineno} spells out {_literal(node)}")
            if isinstance(node, ast.Dict) and {_literal(k) for k in node.keys} == set(contract.MRC_MODES):
                found.append(f"{where}:{node.lineno} holds its own table of MRC modes")
    found = [f for f in found if f"{f.split(':')[0]} {f.split(' ', 1)[1]}" not in PENDING]
    assert _sources() and not found, "\n".join(found)


def test_the_contract_tables_agree_with_each_other() -> None:
    assert contract.OUTPUT_NAMES[0] == contract.LOGITS and contract.FEATURES in contract.OUTPUT_NAMES
    assert set(contract.MRC_MODES) == set(contract.MRC_MODE_NAMES)
    assert all(contract.MRC_MODES[m].name == contract.MRC_MODE_NAMES[m] for m in contract.MRC_MODES)
    assert all(d == d.newbyteorder("<") for d in contract.MRC_MODES.values())  # MRC data is little-endian
    assert set(contract.MAP_SUFFIXES) < set(contract.MRC_BASE_SUFFIXES) < set(contract.MRC_SUFFIXES)
    assert ".map.gz" in contract.MRC_SUFFIXES and ".st.bz2" in contract.MRC_SUFFIXES
