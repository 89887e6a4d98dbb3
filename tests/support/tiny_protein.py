"""A tiny made-up "protein" for the structure tests: 14 carbons about 12 A across (3 residues of
backbone and a few side-chain carbons), asymmetric, so a mirrored or mis-centred load shows."""

from __future__ import annotations

ATOMS = [
    (12.0, 4.0, -6.0),
    (13.4, 4.6, -5.8),
    (14.6, 3.7, -5.2),
    (14.4, 2.5, -4.9),
    (15.8, 4.3, -5.0),
    (17.0, 3.6, -4.4),
    (18.2, 4.4, -4.1),
    (18.1, 5.6, -3.7),
    (19.5, 3.6, -3.9),
    (13.2, 6.0, -6.6),
    (20.8, 4.0, -3.0),
    (21.6, 5.2, -2.4),
    (9.0, 1.0, -8.0),
    (11.0, 2.2, -7.1),
]


def pdb_text() -> str:
    """:data:`ATOMS` as PDB ATOM records (fixed columns) and END."""
    lines = []
    for i, (x, y, z) in enumerate(ATOMS, start=1):
        coords = f"{x:8.3f}{y:8.3f}{z:8.3f}"
        lines.append(f"ATOM  {i:5d}  C   ALA A{1 + i // 5:4d}    {coords}  1.00 20.00           C")
    return "\n".join(lines) + "\nEND\n"
