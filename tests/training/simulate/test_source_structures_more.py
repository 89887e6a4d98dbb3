"""Source structures that became silently wrong classes (structures tester's report): MD waters,
unstamped unsigned bytes, a box cutting the particle, RCSB
assembly files. Each test writes a tiny real map or model and goes through the real loaders."""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pytest

from cryoshift.runtime.errors import InputError
from cryoshift.training.simulate.atomic import describe_model
from cryoshift.training.simulate.structures import load_structures

BOX = 16
VOXEL = 10.0


def _atom(i: int, name: str, res: str, chain: str, seq: int, xyz, element: str) -> str:
    x, y, z = xyz
    return (
        f"ATOM  {i % 99999 + 1:5d} {name:<4s} {res:<4s}{chain}{seq % 10000:4d}    "
        f"{x:8.3f}{y:8.3f}{z:8.3f}  1.00 20.00          {element:>2s}\n"
    )


def _particle(seed: int = 0, n: int = 400) -> np.ndarray:
    """Atoms filling an asymmetric ellipsoid (60 x 40 x 25 A) around the origin."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(-1, 1, (4 * n, 3))
    p = p[(p**2).sum(1) <= 1][:n]
    return p * [30.0, 20.0, 12.5]


def _protein_lines(xyz: np.ndarray, chain: str = "A") -> list[str]:
    return [_atom(i, "CA", "ALA", chain, i + 1, p, "C") for i, p in enumerate(xyz)]


def _class(path: Path) -> np.ndarray:
    return load_structures([str(path)], BOX, VOXEL).maps[0]


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


# --- 1. molecular-dynamics waters --------------------------------------------------------------


@pytest.mark.parametrize(
    ("resname", "atom"), [("SOL", "OW"), ("TIP3", "OH2"), ("T3P", "O"), ("SPC", "OW"), ("OPC", "OW")]
)
def test_md_waters_are_removed_and_counted(tmp_path: Path, resname: str, atom: str) -> None:
    """A GROMACS/CHARMM/AMBER snapshot: thousands of water oxygens around the protein were kept as
    density (gemmi knows only HOH, WAT, H2O, DOD) and the class was a block of solvent."""
    xyz = _particle()
    protein = tmp_path / "protein.pdb"
    protein.write_text("".join(_protein_lines(xyz)) + "END\n")
    rng = np.random.default_rng(1)
    waters = rng.uniform(-45, 45, (3000, 3))
    lines = _protein_lines(xyz) + [
        _atom(1000 + i, atom, resname, "W", i + 1, w, "O") for i, w in enumerate(waters)
    ]
    snapshot = tmp_path / "snapshot.pdb"
    snapshot.write_text("".join(lines) + "END\n")
    assert _corr(_class(snapshot), _class(protein)) > 0.999
    rows = dict(describe_model(snapshot))
    assert "3000 in waters" in rows["atoms"]
    assert rows["heavy atoms used"] == str(len(xyz))


# --- maps the tests write ----------------------------------------


def _blob(size: int = 32) -> np.ndarray:
    """A smooth asymmetric particle (two Gaussian lobes) at the centre of a size^3 map, peak 1."""
    z, y, x = np.indices((size, size, size)) - size / 2
    lobe1 = np.exp(-((x / 4.0) ** 2 + (y / 2.5) ** 2 + (z / 2.0) ** 2))
    lobe2 = 0.6 * np.exp(-(((x - 4) / 2.0) ** 2 + ((y + 3) / 2.0) ** 2 + (z / 2.0) ** 2))
    density = lobe1 + lobe2
    return density / density.max()


def _write_map(path: Path, data: np.ndarray, voxel: float = VOXEL, dtype=np.float32) -> Path:
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.ascontiguousarray(data).astype(dtype))
        m.voxel_size = voxel
    return path


# --- 3. unsigned bytes without IMOD's stamp -----------------------------------------------------


def test_unstamped_unsigned_bytes_are_refused(tmp_path: Path) -> None:
    """uint8 bytes written as mode 0 without IMOD's stamp: read signed, the particle's core (above
    127) wrapped to negative and the class was a hollow shell."""
    unsigned = np.round(10 + 245 * _blob()).astype(np.uint8)
    path = _write_map(tmp_path / "u8.mrc", unsigned.view(np.int8), dtype=np.int8)
    with pytest.raises(InputError, match=r"8-bit \(mode 0\) map without IMOD's flag") as info:
        load_structures([str(path)], BOX, VOXEL)
    assert "float32 (mode 2)" in str(info.value)


def test_unstamped_bytes_below_128_still_load(tmp_path: Path) -> None:
    """Bytes that are all below 128 read the same signed or unsigned: the map is a fine class."""
    small = np.round(120 * _blob()).astype(np.int8)
    loaded = _class(_write_map(tmp_path / "s8.mrc", small, dtype=np.int8))
    reference = _class(_write_map(tmp_path / "ref.mrc", _blob()))
    assert _corr(loaded, reference) > 0.99


# --- 4. a box cutting through the particle --------------------------------------------------------


def test_box_cutting_off_a_few_percent_is_noted(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A map whose box cuts ~5-8 % of the particle off: the cut's cross-section is a small share of
    a large map's border (0.2-0.4 %), under the old 1 % threshold, so nothing was said."""
    size = 56
    z, y, x = np.indices((size, size, size)) - size / 2
    particle = np.exp(-((x / 7.0) ** 2 + (y / 5.0) ** 2 + (z / 9.0) ** 2))
    full = tmp_path / "full.mrc"
    _write_map(full, particle, voxel=3.0)
    load_structures([str(full)], BOX, VOXEL)
    assert "touches the map's faces" not in capsys.readouterr().err
    keep = next(k for k in range(size, 0, -1) if particle[:k].sum() < 0.95 * particle.sum())
    lost = 1 - particle[:keep].sum() / particle.sum()
    assert 0.05 <= lost < 0.1
    load_structures([str(_write_map(tmp_path / "cut.mrc", particle[:keep], voxel=3.0))], BOX, VOXEL)
    assert "touches the map's faces" in capsys.readouterr().err


# --- 5. RCSB biological-assembly files -----------------------------------------------------------


def _copies(gap: float) -> tuple[np.ndarray, np.ndarray]:
    """Copy 1 of a dimer and copy 2, its C2 image about the Z axis through (gap / 2, 0, 0)."""
    one = _particle(seed=3, n=300) * [0.4, 0.4, 1.0] + [gap / 2, 0.0, 0.0]
    two = one * [-1.0, -1.0, 1.0]
    return one, two


def _two_models(one: np.ndarray, two: np.ndarray) -> str:
    """A PDB text of two MODELs, ``one`` and ``two``."""
    models = [
        f"MODEL        {i}\n" + "".join(_protein_lines(xyz)) + "ENDMDL\n" for i, xyz in ((1, one), (2, two))
    ]
    return "".join(models) + "END\n"


@pytest.mark.parametrize("gap", [6.0, 40.0])
def test_assembly_file_models_are_the_copies(tmp_path: Path, gap: float) -> None:
    """An RCSB .pdb1 stores each copy as a MODEL. Copies whose centres lie within 10 A (an
    intertwined dimer) were taken for an NMR ensemble and simulated as a monomer; copies further
    apart were refused, though the README lists .pdb1 files as supported."""
    one, two = _copies(gap)
    assembly = tmp_path / "dimer.pdb1"
    assembly.write_text(_two_models(one, two))
    chains = tmp_path / "chains.pdb"
    chains.write_text("".join(_protein_lines(one, "A") + _protein_lines(two, "B")) + "END\n")
    monomer = tmp_path / "monomer.pdb"
    monomer.write_text("".join(_protein_lines(one)) + "END\n")
    got = _class(assembly)
    assert _corr(got, _class(chains)) > 0.9999
    assert _corr(got, _class(monomer)) < 0.999
    assert "copies of one biological assembly: all are used" in dict(describe_model(assembly))["models"]
    assert dict(describe_model(assembly))["heavy atoms used"] == str(len(one) + len(two))


def test_ordinary_pdb_ensemble_still_uses_the_first_model(tmp_path: Path) -> None:
    """The same two superposed-ish models in a .pdb file: an NMR ensemble, the first is used."""
    one, two = _copies(6.0)
    nmr = tmp_path / "nmr.pdb"
    nmr.write_text(_two_models(one, two))
    monomer = tmp_path / "monomer.pdb"
    monomer.write_text("".join(_protein_lines(one)) + "END\n")
    assert _corr(_class(nmr), _class(monomer)) > 0.9999


# --- 6. one structure turned or mirrored as two classes --------------------------------------------


def _chiral(size: int = 32) -> np.ndarray:
    """A chiral particle: three Gaussian arms of different lengths along X, Y and Z from a core."""
    z, y, x = np.indices((size, size, size)) - size / 2
    arms = (
        np.exp(-(((x - 3.5) / 3.5) ** 2 + (y / 1.5) ** 2 + (z / 1.5) ** 2))
        + np.exp(-((x / 1.5) ** 2 + ((y - 2.5) / 2.5) ** 2 + (z / 1.5) ** 2))
        + np.exp(-((x / 1.5) ** 2 + (y / 1.5) ** 2 + ((z - 1.5) / 1.8) ** 2))
    )
    return arms / arms.max()


@pytest.mark.parametrize("turn", ["rot90", "mirror"])
def test_one_structure_turned_or_mirrored_is_refused(tmp_path: Path, turn: str) -> None:
    """The same particle in another frame (two depositions) or hand correlated 0.5-0.8 as the maps
    lay, under the 0.98 limit, and became two classes of one particle under random rotations."""
    particle = _chiral()
    other = np.rot90(particle, 1, (1, 2)) if turn == "rot90" else particle[::-1]
    a = _write_map(tmp_path / "complex_emdb.mrc", particle)
    b = _write_map(tmp_path / "complex_other.mrc", other)
    with pytest.raises(InputError, match="turned or mirrored") as info:
        load_structures([str(a), str(b)], BOX, VOXEL)
    assert "complex_emdb" in str(info.value) and "complex_other" in str(info.value)


def test_distinct_structures_are_not_taken_for_turned_copies(tmp_path: Path) -> None:
    """The control: the chiral particle and the two-lobed blob stay two classes."""
    a = _write_map(tmp_path / "chiral.mrc", _chiral())
    b = _write_map(tmp_path / "blob.mrc", _blob())
    assert load_structures([str(a), str(b)], BOX, VOXEL).names == ["chiral", "blob"]
