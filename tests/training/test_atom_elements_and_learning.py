"""Elements of PDB atoms without an element column, and the "did not learn the source" warning.

A PDB file whose element columns (77-78) are blank and whose atom names are left-aligned (as many
tools write them) had every C-alpha read by gemmi as calcium; a run whose source loss was high but
whose source validation accuracy was good was told it had learned nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

# (residue number, residue name, atom name, element) of a small peptide with a hydrogen
PEPTIDE = [
    (1, "ALA", "N", "N"),
    (1, "ALA", "CA", "C"),
    (1, "ALA", "C", "C"),
    (1, "ALA", "O", "O"),
    (1, "ALA", "CB", "C"),
    (1, "ALA", "HB1", "H"),
    (2, "SER", "N", "N"),
    (2, "SER", "CA", "C"),
    (2, "SER", "C", "C"),
    (2, "SER", "O", "O"),
    (2, "SER", "CB", "C"),
    (2, "SER", "OG", "O"),
    (2, "SER", "HG", "H"),
    (3, "MET", "N", "N"),
    (3, "MET", "CA", "C"),
    (3, "MET", "C", "C"),
    (3, "MET", "O", "O"),
    (3, "MET", "CB", "C"),
    (3, "MET", "CG", "C"),
    (3, "MET", "SD", "S"),
    (3, "MET", "CE", "C"),
]


def _record(serial: int, resseq: int, resname: str, name: str, element: str, xyz, style: str) -> str:
    """One ATOM/HETATM line. ``style``: "elements" (names aligned as the PDB says, columns 77-78
    filled), "bare" (names left-aligned, no element: cut at column 66 or blank 77-78 in turn),
    "bare-aligned" (names aligned as the PDB says, no element)."""
    record = "ATOM  " if resname in ("ALA", "SER", "MET") else "HETATM"
    aligned = f" {name:<3}" if len(element) == 1 and len(name) < 4 else f"{name:<4}"
    field = f"{name:<4}" if style == "bare" else aligned
    x, y, z = xyz
    line = f"{record}{serial:5d} {field} {resname:>3} A{resseq:4d}    {x:8.3f}{y:8.3f}{z:8.3f}  1.00 20.00"
    if style == "elements":
        return line + " " * 10 + f"{element.upper():>2}"
    return line if serial % 2 else line + " " * 14  # 66 columns, or 80 with blank 77-78


def _write(path: Path, style: str, ion_style: str | None = None, ion_element: str = "Ca") -> Path:
    rng = np.random.default_rng(0)
    lines = [
        _record(i, seq, res, name, el, rng.uniform(0, 14, 3), style)
        for i, (seq, res, name, el) in enumerate(PEPTIDE, 1)
    ]
    if ion_style is not None:  # a calcium ion, residue CA, next to the peptide
        lines.append(_record(len(PEPTIDE) + 1, 101, "CA", "CA", ion_element, (7.0, 7.0, 7.0), ion_style))
    path.write_text("\n".join(lines) + "\nEND\n")
    return path


def test_a_c_alpha_without_element_column_is_carbon(tmp_path: Path, capsys) -> None:
    """A left-aligned CA in an amino acid without an element column was calcium for gemmi."""
    from cryoshift.training.simulate.atomic import atomic_density

    reference, _, _ = atomic_density(_write(tmp_path / "elements.pdb", "elements"), 8.0)
    capsys.readouterr()
    bare, _, _ = atomic_density(_write(tmp_path / "bare.pdb", "bare"), 8.0)
    err = capsys.readouterr().err
    assert bare.shape == reference.shape
    np.testing.assert_allclose(bare, reference, rtol=1e-5, atol=1e-6 * float(reference.max()))
    assert f"{len(PEPTIDE)} atoms have blank element columns" in err and "bare.pdb" in err
    assert "unknown element" not in err  # HB1 was X for gemmi; by its name it is a hydrogen
    capsys.readouterr()
    atomic_density(tmp_path / "elements.pdb", 8.0)
    assert "element" not in capsys.readouterr().err  # a file with elements gets no note


@pytest.mark.parametrize("ion_style", ["bare", "bare-aligned"])
def test_a_calcium_ion_without_element_column_stays_calcium(tmp_path: Path, ion_style: str) -> None:
    """Residue CA (an ion) is calcium whichever way its name is aligned; right-aligned, gemmi read
    it as carbon."""
    from cryoshift.training.simulate.atomic import atomic_density

    reference, _, _ = atomic_density(_write(tmp_path / "elements.pdb", "elements", "elements"), 8.0)
    bare, _, _ = atomic_density(_write(tmp_path / "bare.pdb", "bare", ion_style), 8.0)
    np.testing.assert_allclose(bare, reference, rtol=1e-5, atol=1e-6 * float(reference.max()))
    carbon, _, _ = atomic_density(_write(tmp_path / "carbon.pdb", "elements", "elements", "C"), 8.0)
    assert np.abs(carbon - reference).max() > 0.05 * reference.max()  # calcium is not carbon


def test_the_not_learned_warning_reads_the_source_validation_accuracy() -> None:
    """A high source loss with a good validation accuracy learned the source; a high loss with an
    accuracy at chance did not; a low loss is no warning (a toy run's few validation volumes read
    near chance by chance)."""
    from cryoshift.training.select import training_warnings

    high_loss_good_accuracy = [
        {"epoch": 1, "src_val_acc": 0.40, "loss_ce": 9.0},
        {"epoch": 2, "src_val_acc": 0.92, "loss_ce": 8.5},
    ]
    assert training_warnings(high_loss_good_accuracy, 2, num_classes=4) == []
    at_chance = [
        {"epoch": 1, "src_val_acc": 0.26, "loss_ce": 3.0},
        {"epoch": 2, "src_val_acc": 0.24, "loss_ce": 2.2},  # ln 4 + 0.5 = 1.89
    ]
    (line,) = training_warnings(at_chance, 2, num_classes=4)
    assert line.startswith("training did not learn the source: epoch 2") and "--lr" in line
    low_loss = [{"epoch": 1, "src_val_acc": 0.24, "loss_ce": 0.2}]
    assert training_warnings(low_loss, 1, num_classes=4) == []
    # a diverged run that answers one class on an unbalanced source scores its majority share
    one_class = [{"epoch": 1, "src_val_acc": 0.7, "loss_ce": 2.9e12, "src_top_share": 1.0}]
    (line,) = training_warnings(one_class, 1, num_classes=2)
    assert line.startswith("training did not learn the source: epoch 1")
    # no source validation data (None, or "" read back from metrics.csv): the loss is all there is
    for missing in (None, ""):
        unmeasured = [{"epoch": 1, "src_val_acc": missing, "loss_ce": 2.9e12}]
        (line,) = training_warnings(unmeasured, 1, num_classes=4)
        assert "cross-entropy" in line
        assert training_warnings([{**unmeasured[0], "loss_ce": 0.5}], 1, num_classes=4) == []
