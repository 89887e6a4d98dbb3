"""A structure file's class is the particle the user meant, or a one-line refusal saying why not.

Real-world maps and models that once gave a wrong class without a word: an unmasked map with
solvent noise (the class was a noise halo, or the noise itself), a particle much larger than the
box (cropped to a fragment), a header voxel size left at 1.0 A or given in nm (the class at the
wrong scale), EMDB half maps and masks (one particle as several classes), a tight crop (density
missing), and refusals that pointed the wrong way.
"""

from __future__ import annotations

import numpy as np
import pytest

from cryoshift.runtime.errors import InputError
from cryoshift.runtime.mrc import write_volume
from cryoshift.training.simulate.structures import load_structures

BOX, VOXEL = 24, 4.0  # the class grid: 96 A


def tripod_points() -> np.ndarray:
    """A chiral tripod (A): arms of 40, 25 and 12 A along +x, +y and +z from one corner."""
    arms = [np.arange(0.0, length + 0.1, 2.0) for length in (40.0, 25.0, 12.0)]
    points = [np.stack([a if k == axis else 0 * a for k in range(3)], axis=1) for axis, a in enumerate(arms)]
    return np.concatenate(points)  # (n, 3) x, y, z


def tripod_map(shape: int, voxel: float, at_voxel: np.ndarray, sigma: float = 3.0) -> np.ndarray:
    """The tripod as Gaussian atoms on a (Z, Y, X) grid, its corner at voxel ``at_voxel`` (x, y, z)."""
    axis = np.arange(shape) * voxel
    out = np.zeros((shape,) * 3)
    for x, y, z in tripod_points() + np.asarray(at_voxel) * voxel:
        gz, gy, gx = (np.exp(-((axis - c) ** 2) / (2 * sigma**2)) for c in (z, y, x))
        out += gz[:, None, None] * gy[None, :, None] * gx[None, None, :]
    return out


def rg(m: np.ndarray) -> float:
    w = np.clip(m, 0, None).ravel()
    idx = np.indices(m.shape).reshape(3, -1).astype(float)
    c = (idx * w).sum(1) / w.sum()
    return float(np.sqrt((((idx - c[:, None]) ** 2).sum(0) * w).sum() / w.sum()) * VOXEL)


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def load(path) -> np.ndarray:
    return load_structures([str(path)], BOX, VOXEL).maps[0]


@pytest.mark.parametrize("noise", [0.01, 0.03])
@pytest.mark.parametrize("corner", [(20, 20, 20), (4, 6, 5)], ids=["centred", "off-centre"])
def test_solvent_noise_is_masked_off(tmp_path, noise, corner):
    """An unmasked map (noise of 1-3 % of the peak in a 144 A box) gives the noise-free class: it
    was a noise halo (Rg 24-31 A for 16) or, off-centre, the box's noise (correlation 0)."""
    clean = tripod_map(72, 2.0, np.array(corner))
    noisy = clean + np.random.default_rng(0).normal(0, noise * clean.max(), clean.shape)
    reference = load(write_volume(tmp_path / "clean.mrc", clean.astype(np.float32), voxel_size=2.0))
    got = load(write_volume(tmp_path / "noisy.mrc", noisy.astype(np.float32), voxel_size=2.0))
    assert rg(got) == pytest.approx(rg(reference), rel=0.15)
    assert corr(got, reference) >= 0.9


def test_noise_without_a_particle_is_refused_as_such(tmp_path):
    """A map of smooth, skewed solvent noise and no particle is refused as noise, not sent to
    check --voxel-size."""
    from scipy import ndimage

    rng = np.random.default_rng(1)
    noise = ndimage.gaussian_filter(rng.exponential(1.0, (48, 48, 48)), 1.0)
    path = write_volume(tmp_path / "solvent.mrc", noise.astype(np.float32), voxel_size=4.0)
    with pytest.raises(InputError, match=r"solvent noise only.*mask it"):
        load(path)


def test_structure_much_larger_than_the_box_is_refused(tmp_path):
    """Atoms filling a 300 A sphere in a 160 A box: it passed as a 140 A fragment."""
    rng = np.random.default_rng(2)
    xyz = rng.normal(size=(3000, 3))
    xyz = 150.0 * xyz / np.linalg.norm(xyz, axis=1)[:, None] * rng.random(3000)[:, None] ** (1 / 3)
    lines = [
        f"ATOM  {i + 1:5d}  CA  ALA A{i % 9999 + 1:4d}    {x:8.3f}{y:8.3f}{z:8.3f}  1.00 20.00           C"
        for i, (x, y, z) in enumerate(xyz)
    ]
    path = tmp_path / "big.pdb"
    path.write_text("\n".join(lines) + "\nEND\n")
    with pytest.raises(InputError, match=r"% of its density falls inside the 16-voxel box.*larger --box"):
        load_structures([str(path)], 16, 10.0)


@pytest.mark.parametrize(("header", "why"), [(1.0, "unset header"), (0.2, "span 5 A")])
def test_implausible_header_voxel_size_is_refused(tmp_path, header, why):
    """The 50 A tripod at 2 A voxels with 1.0 A (an unset header) or 0.2 A (nm) in its header was
    simulated at half or a tenth of its size with a mere note."""
    density = tripod_map(40, 2.0, np.array([8, 8, 10])).astype(np.float32)
    path = write_volume(tmp_path / "tripod.mrc", density, voxel_size=header)
    with pytest.raises(InputError, match=rf"header voxel size {header:g} A.*{why}.*voxel_size"):
        load(path)
    load(write_volume(tmp_path / "right.mrc", density, voxel_size=2.0))  # the true one loads


def test_half_maps_and_masks_are_not_classes(tmp_path):
    """An EMDB entry's folder (map, two half maps, a mask) gave four classes of one particle."""
    density = tripod_map(40, 2.0, np.array([8, 8, 10]))
    rng = np.random.default_rng(3)
    entry = tmp_path / "emdb"
    entry.mkdir()
    write_volume(entry / "emd_1111.map", density.astype(np.float32), voxel_size=2.0)
    for half in (1, 2):
        noisy = density + rng.normal(0, 0.05 * density.max(), density.shape)
        write_volume(entry / f"emd_1111_half_map_{half}.map", noisy.astype(np.float32), voxel_size=2.0)
    mask = (density > 0.1 * density.max()).astype(np.float32)
    write_volume(entry / "emd_1111_msk_1.map", mask, voxel_size=2.0)
    loaded = load_structures([str(entry)], BOX, VOXEL)
    assert loaded.names == ["emd_1111"] and len(loaded.skipped) == 3
    with pytest.raises(InputError, match="half map"):
        load_structures([str(entry / "emd_1111_half_map_1.map")], BOX, VOXEL)
    binary = write_volume(tmp_path / "shape.mrc", mask, voxel_size=2.0)  # a mask by its values
    with pytest.raises(InputError, match=r"mask \(the map holds only two values"):
        load(binary)


def test_one_map_at_two_samplings_is_the_same_structure_twice(tmp_path):
    """The tripod sampled at 2 A and at 1.5 A correlated 0.9999 on the grid, under the old limit:
    two classes of one particle."""
    a = write_volume(tmp_path / "a.mrc", tripod_map(40, 2.0, np.array([8, 8, 10])).astype(np.float32), 2.0)
    b = write_volume(tmp_path / "b.mrc", tripod_map(54, 1.5, np.array([11, 11, 13])).astype(np.float32), 1.5)
    with pytest.raises(InputError, match=r"'b' has the same map as class 'a'.*same structure twice"):
        load_structures([str(a), str(b)], BOX, VOXEL)


def test_tight_crop_is_said(tmp_path, capsys):
    """A map cropped to its atoms' bounding box lost density beyond its faces without a word."""
    full = tripod_map(40, 2.0, np.array([8, 8, 10]))
    load(write_volume(tmp_path / "full.mrc", full.astype(np.float32), voxel_size=2.0))
    assert "touches the map's faces" not in capsys.readouterr().err
    tight = np.ascontiguousarray(full[10:17, 8:21, 8:29])  # z, y, x: the atoms' bounding box
    load(write_volume(tmp_path / "tight.mrc", tight.astype(np.float32), voxel_size=2.0))
    assert "touches the map's faces" in capsys.readouterr().err


def test_refusals_name_the_real_cause(tmp_path):
    """mmCIF without label_alt_id (read now), PDB coordinates wider than their columns, and a
    built-in given twice were refused for reasons that sent the user the wrong way."""
    rows = "\n".join(
        f"ATOM {i + 1} C CA ALA A {i + 1} {x:.3f} {y:.3f} {z:.3f}"
        for i, (x, y, z) in enumerate(tripod_points())
    )
    columns = (
        "group_PDB id type_symbol label_atom_id label_comp_id label_asym_id label_seq_id "
        "Cartn_x Cartn_y Cartn_z"
    )
    cif = tmp_path / "short.cif"
    cif.write_text("data_x\nloop_\n" + "".join(f"_atom_site.{c}\n" for c in columns.split()) + rows + "\n")
    assert load(cif).max() > 0.5
    far = tmp_path / "far.pdb"
    far.write_text(
        "\n".join(
            f"ATOM  {i + 1:5d}  CA  ALA A{i + 1:4d}    {x + 9000:8.3f}{y - 8800:8.3f}{z + 9000:8.3f}"
            "  1.00 20.00           C"
            for i, (x, y, z) in enumerate(tripod_points())
        )
        + "\nEND\n"
    )
    with pytest.raises(InputError, match="overflow their PDB columns"):
        load(far)
    with pytest.raises(InputError, match="given twice"):
        load_structures(["builtin:ribosome", "builtin:ribosome"], 16, 10.0)
