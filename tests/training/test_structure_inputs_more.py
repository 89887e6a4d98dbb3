"""Source structures (structures tester's report, second round): IMOD's flags read through the
public header, refusals and notes whose advice fits the case, the note before a large model's
density, and a bright detached piece (a gold bead) named. Each test writes a tiny real map or
model and goes through the real loaders."""

from __future__ import annotations

import struct
from pathlib import Path

import mrcfile
import numpy as np
import pytest
from scipy import ndimage

from cryoshift.runtime.errors import InputError
from cryoshift.runtime.mrc import IMOD_SIGNED_BYTES, IMOD_STAMP, read_header
from cryoshift.training.simulate import atomic
from cryoshift.training.simulate.structures import load_structures

BOX = 16
VOXEL = 10.0


def _write(path: Path, data: np.ndarray, voxel: float = VOXEL) -> Path:
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(data)
        m.voxel_size = voxel
    return path


def _blob(n: int = 32, scale: float = 1.0) -> np.ndarray:
    """A smooth, asymmetric particle (three overlapping Gaussians, ``scale`` times 3 voxels wide) on
    zero solvent."""
    z, y, x = np.mgrid[:n, :n, :n].astype(np.float64)
    c = n / 2
    out = np.zeros((n, n, n))
    for (dz, dy, dx), s in (((0, 0, 0), 3.0), ((0, 3, 4), 2.0), ((3, -2, 0), 2.0)):
        dz, dy, dx, s = dz * scale, dy * scale, dx * scale, s * scale
        out += np.exp(-((z - c - dz) ** 2 + (y - c - dy) ** 2 + (x - c - dx) ** 2) / (2 * s**2))
    return out.astype(np.float32)


def _refusal(path: Path) -> str:
    with pytest.raises(InputError) as info:
        load_structures([str(path)], BOX, VOXEL)
    return str(info.value)


def _note(path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    load_structures([str(path)], BOX, VOXEL)
    return capsys.readouterr().err


# --- 1. IMOD's flags through read_header --------------------------------------------------------


def test_read_header_says_whether_a_byte_map_carries_imods_stamp(tmp_path: Path) -> None:
    """structures.py asked runtime.mrc's private ``_check_raw_header`` for IMOD's flags; the public
    header holds them: None without the stamp (signed or unsigned unknown), the flags with it."""
    plain = _write(tmp_path / "plain.mrc", np.arange(27, dtype=np.int8).reshape(3, 3, 3))
    assert read_header(plain)["imod_flags"] is None
    stamped = _write(tmp_path / "stamped.mrc", np.arange(27, dtype=np.int8).reshape(3, 3, 3))
    with open(stamped, "r+b") as fh:
        fh.seek(152)
        fh.write(struct.pack("<ii", IMOD_STAMP, IMOD_SIGNED_BYTES))
    header = read_header(stamped)
    assert header["imod_flags"] == IMOD_SIGNED_BYTES and not header["unsigned_bytes"]


# --- 2. refusals and notes whose advice fits the case -------------------------------------------


def test_a_map_cropped_tightly_is_told_to_pad_not_to_crop(tmp_path: Path) -> None:
    """Smooth density on every face and no sparse tail: a map cropped inside its particle. It was
    told "crop it to the particle"; the fix is a margin of solvent."""
    field = ndimage.gaussian_filter(np.random.default_rng(3).normal(size=(24, 24, 24)), 2.0)
    path = _write(tmp_path / "cropped.mrc", field.astype(np.float32))
    reason = _refusal(path)
    assert "cannot tell whether protein is bright or dark" in reason, reason
    assert "pad it with solvent" in reason and "crop it" not in reason, reason


def test_a_map_drowned_in_noise_is_told_so(tmp_path: Path) -> None:
    """A particle under strong white solvent noise is a noise problem, not a cropping one."""
    rng = np.random.default_rng(0)
    data = _blob(32) + rng.normal(0, 0.5, (32, 32, 32)).astype(np.float32)
    reason = _refusal(_write(tmp_path / "noisy.mrc", data))
    assert "cannot tell whether protein is bright or dark" in reason, reason
    assert "solvent noise" in reason and "low-pass filter" in reason and "pad" not in reason, reason


def test_a_hot_voxel_is_named_not_called_noise(tmp_path: Path) -> None:
    """One voxel 1000x a fine map's peak makes its voxels uncorrelated; it was refused as "noise,
    not a particle's density"."""
    data = _blob(32)
    data[3, 5, 7] = 1000.0 * data.max()
    reason = _refusal(_write(tmp_path / "hot.mrc", data))
    assert "do not correlate with their neighbours" in reason, reason
    assert "brightest voxel stands" in reason and "this is noise" not in reason, reason


def test_the_cropping_note_says_what_was_measured_not_filament(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A structure longer than the box along one axis gets the cropping note; it called TRiC "a
    filament or membrane?"; now it says along how many axes it is longer than the box."""
    z, y, x = np.mgrid[:32, :32, :32].astype(np.float64)
    rod = np.exp(-((z - 16) ** 2 + (y - 16) ** 2) / 8.0) * (np.abs(x - 16) < 12)
    rod += 0.5 * np.exp(-((z - 16) ** 2 + (y - 19) ** 2 + (x - 20) ** 2) / 4.0)  # not symmetric
    err = _note(_write(tmp_path / "rod.mrc", rod.astype(np.float32)), capsys)
    assert "the class is cropped to it" in err, err
    assert "longer than the box along one axis" in err and "filament" not in err, err


def _pdb_line(i: int, name: str, xyz: np.ndarray, element: str) -> str:
    x, y, z = xyz
    # atom names written from column 13, as the report's file: gemmi reads "HB2 " as element X
    return (
        f"ATOM  {i + 1:5d} {name:<4s} LIG A{i + 1:4d}    {x:8.3f}{y:8.3f}{z:8.3f}  1.00 20.00          "
        f"{element:>2s}\n"
    )


def _model(path: Path, extra: list[tuple[str, str]], n: int = 300) -> Path:
    rng = np.random.default_rng(1)
    xyz = rng.uniform(-1, 1, (4 * n, 3))
    xyz = xyz[(xyz**2).sum(1) <= 1][:n] * [30.0, 20.0, 12.5]
    lines = [_pdb_line(i, "CA", p, "C") for i, p in enumerate(xyz)]
    lines += [_pdb_line(n + k, name, xyz[k] + 1.0, element) for k, (name, element) in enumerate(extra)]
    path.write_text("".join(lines) + "END\n")
    return path


def test_hydrogens_without_elements_are_not_told_to_set_elements(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A PDB file with no element column whose hydrogens are named HB2: gemmi reads them as X, and
    the warning said "set their elements to include them", though hydrogens are left out anyway."""
    only_h = _model(tmp_path / "with_h.pdb", [("HB2", "")] * 40)
    err = _note(only_h, capsys)
    line = next(ln for ln in err.splitlines() if "unknown element" in ln)
    assert line.startswith(f"cryoshift: note: {only_h}: 40 of 340 atoms have an unknown element"), line
    assert "named as hydrogens" in line and "set their elements" not in line, line

    mixed = _model(tmp_path / "mixed.pdb", [("HB2", "")] * 40 + [("QQ", "Q")] * 10)
    err = _note(mixed, capsys)
    line = next(ln for ln in err.splitlines() if "unknown element" in ln)
    assert line.startswith(f"cryoshift: warning: {mixed}: 50 of 350 atoms have an unknown element"), line
    assert "40 of them are named as hydrogens" in line and "set their elements" in line, line


# --- 3. a large model: one note before the wait, the same density ---------------------------------


def test_a_large_model_gets_one_note_before_its_density(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 1.5M-atom model took minutes with nothing printed. Above LARGE_MODEL_ATOMS heavy atoms a
    note says so (the limit lowered here so that a few thousand atoms pass it); the density is
    centred on the atoms (the shift is now one gemmi transform, not a Python loop per atom)."""
    path = _model(tmp_path / "big.pdb", [], n=3000)
    xyz = atomic.atom_positions(path)
    density, origin, spacing = atomic.atomic_density(path, resolution=20.0, spacing=4.0)
    assert "heavy atoms" not in capsys.readouterr().err
    weights = np.clip(density, 0, None)
    centre_zyx = np.array(ndimage.center_of_mass(weights))
    np.testing.assert_allclose(origin + centre_zyx[::-1] * spacing, xyz.mean(0), atol=1.0)

    monkeypatch.setattr(atomic, "LARGE_MODEL_ATOMS", 1000)
    again, _, _ = atomic.atomic_density(path, resolution=20.0, spacing=4.0)
    notes = [ln for ln in capsys.readouterr().err.splitlines() if "heavy atoms" in ln]
    assert notes == [
        f"cryoshift: note: {path}: {len(xyz)} heavy atoms; computing their density takes a while "
        "(about 2 minutes per million atoms)"
    ]
    np.testing.assert_array_equal(again, density)


def test_unusable_atoms_are_still_refused_from_the_table(tmp_path: Path) -> None:
    """The checks now read one numpy table of the atoms: a NaN B-factor and all-zero occupancies
    are still refused in words."""
    path = _model(tmp_path / "nan.pdb", [])
    text = path.read_text().splitlines(keepends=True)
    text[5] = text[5][:60] + "   nan" + text[5][66:]
    path.write_text("".join(text))
    with pytest.raises(InputError, match="1 atoms have a NaN or infinite occupancy or B-factor"):
        load_structures([str(path)], BOX, VOXEL)
    zero = _model(tmp_path / "zero.pdb", [])
    zero.write_text(zero.read_text().replace("  1.00 20.00", "  0.00 20.00"))
    with pytest.raises(InputError, match="all 300 heavy atoms have occupancy 0"):
        load_structures([str(zero)], BOX, VOXEL)


# --- 4. a bright detached piece (gold bead) --------------------------------------------------------


def _bead_map(brightness: float) -> np.ndarray:
    data = _blob(24, scale=0.5)  # 10 A voxels: the particle fits the 160 A box
    z, y, x = np.mgrid[:24, :24, :24]
    bead = (z - 12) ** 2 + (y - 12) ** 2 + (x - 18) ** 2 <= 1
    data[bead] = brightness * data.max()
    return data


def test_a_bright_detached_bead_is_named_in_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A gold bead (a small sphere 5x the particle's peak, apart from it) was kept in the class and
    set its scale without a word; now a note names the file and the piece."""
    path = _write(tmp_path / "bead.mrc", _bead_map(5.0))
    err = _note(path, capsys)
    line = next(ln for ln in err.splitlines() if "detached piece" in ln)
    assert line.startswith(f"cryoshift: note: {path}: "), line
    assert "5.0 times as bright" in line and "gold bead" in line, line


def test_a_dim_detached_piece_or_a_clean_particle_gets_no_bead_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second piece as bright as the particle (a subunit apart, the same density) is no bead, and
    a clean particle gets no note at all."""
    dim = _write(tmp_path / "dim.mrc", _bead_map(1.0))
    assert "detached piece" not in _note(dim, capsys)
    clean = _write(tmp_path / "clean.mrc", _blob(24, scale=0.5))
    assert _note(clean, capsys) == ""
