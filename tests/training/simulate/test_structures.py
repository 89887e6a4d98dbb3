"""Structures from the three sources land on one grid: centred, protein positive, comparable scale."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest
from tiny_protein import ATOMS, pdb_text

from cryoshift.runtime.errors import InputError
from cryoshift.training.simulate import BUILTIN_NAMES, builtin_structures, load_structures
from cryoshift.training.simulate.atomic import atom_positions, atomic_density

from .conftest import BOX, VOXEL, centroid


def write_pdb(path) -> None:
    path.write_text(pdb_text())


def test_builtins_are_many_distinct_and_deterministic(builtins16):
    assert len(BUILTIN_NAMES) >= 8
    maps = builtins16.maps
    assert maps.shape == (len(BUILTIN_NAMES), BOX, BOX, BOX) and maps.dtype == np.float32
    flat = maps.reshape(len(maps), -1)
    corr = np.corrcoef(flat)
    off_diagonal = corr[~np.eye(len(maps), dtype=bool)]
    assert off_diagonal.max() < 0.95, "two built-in structures look the same"
    masses = flat.sum(1)
    assert masses.max() / masses.min() > 5, "structures should differ in size like real complexes"
    again = builtin_structures(BOX, VOXEL, seed=0)
    assert np.array_equal(again.maps, maps)
    other = builtin_structures(BOX, VOXEL, seed=1)
    assert not np.array_equal(other.maps, maps)


def test_builtins_centred_positive_and_normalised(builtins16):
    for name, m in zip(builtins16.names, builtins16.maps, strict=True):
        assert np.percentile(m[m > 0], 99.9) == pytest.approx(1.0, rel=1e-3)
        if name in ("filament", "membrane"):  # extend across the box: centred by construction only
            continue
        assert np.allclose(centroid(m, BOX), BOX // 2, atol=0.6), name


def test_builtins_render_in_chunks_bit_for_bit_in_bounded_memory():
    """Rendering held float64 offsets from every voxel to 64 blobs at once, ~2 kB per voxel: a box
    of 192 asked for ~15 GB and one of 256 for ~36 GB (the OOM killer, not a reason). Rendered in
    chunks of voxels, the map is the same to the bit whatever the chunk, and the peak at box 96
    (about 1.8 GB before) stays near one chunk's ~70 MB."""
    import tracemalloc

    from cryoshift.training.simulate.builtin import render_builtin

    rotation = np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))[0]
    for name in BUILTIN_NAMES:
        whole = render_builtin(name, 13, 15.0, seed=2, chunk_voxels=13**3)
        assert whole.dtype == np.float32 and whole.shape == (13, 13, 13) and whole.max() > 0
        for chunk in (1, 7, 100):
            assert render_builtin(name, 13, 15.0, seed=2, chunk_voxels=chunk).tobytes() == whole.tobytes()
    turned = render_builtin("ribosome", 13, 15.0, rotation=rotation, chunk_voxels=13**3)
    assert (
        render_builtin("ribosome", 13, 15.0, rotation=rotation, chunk_voxels=7).tobytes() == turned.tobytes()
    )
    tracemalloc.start()
    try:
        render_builtin("proteasome", 96, 10.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 256 * 2**20, f"{peak / 2**20:.0f} MiB"


def test_pdb_density_has_the_atoms_centre_of_mass(tmp_path):
    pdb = tmp_path / "tiny.pdb"
    write_pdb(pdb)
    xyz = atom_positions(pdb)
    assert xyz.shape == (len(ATOMS), 3)
    density, origin, spacing = atomic_density(pdb, resolution=6.0, spacing=1.0)
    w = np.clip(density.astype(np.float64), 0, None)
    idx = np.indices(density.shape)
    com_xyz = origin + np.array([(i * w).sum() / w.sum() for i in idx])[::-1] * spacing
    assert np.allclose(com_xyz, np.mean(ATOMS, axis=0), atol=0.25)
    # Loaded as a structure: centre of mass on the box centre, protein positive.
    s = load_structures([str(pdb)], box_size=BOX, voxel_size=4.0)
    assert s.names == ["tiny"] and s.maps.shape == (1, BOX, BOX, BOX)
    assert np.allclose(centroid(s.maps[0], BOX), BOX // 2, atol=0.3)
    # The same model as mmCIF gives the same map.
    import gemmi

    st = gemmi.read_structure(str(pdb))
    st.setup_entities()
    st.make_mmcif_document().write_file(str(tmp_path / "tiny_cif.cif"))
    cif = load_structures([str(tmp_path / "tiny_cif.cif")], box_size=BOX, voxel_size=4.0)
    assert np.allclose(cif.maps[0], s.maps[0], atol=1e-4)


def _blob_map(box: int, centre_xyz, sigma: float) -> np.ndarray:
    z, y, x = np.indices((box, box, box))
    cx, cy, cz = centre_xyz
    a = np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * sigma**2))
    b = np.exp(-((x - cx - 6) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * (0.6 * sigma) ** 2))
    return (a + 0.5 * b).astype(np.float32)


def test_mrc_maps_resampled_and_contrast_handled(tmp_path):
    light = _blob_map(40, (17, 22, 18), 3.0)
    with mrcfile.new(tmp_path / "light.mrc") as m:
        m.set_data(100.0 * light)
        m.voxel_size = 5.0
    with mrcfile.new(tmp_path / "dark.mrc") as m:  # a raw-tomogram-like average: protein dark, offset
        m.set_data(3.0 - 2.0 * light)
        m.voxel_size = 5.0
    # Loaded one by one: as two classes of one run they would be refused as the same map.
    (a,) = load_structures([str(tmp_path / "light.mrc")], BOX, 10.0).maps
    (b,) = load_structures([str(tmp_path / "dark.mrc")], BOX, 10.0).maps
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99, "dark map should be inverted to light"
    assert np.allclose(centroid(a, BOX), BOX // 2, atol=0.3)
    # 40 voxels of 5 A = 200 A -> 20 voxels at 10 A: the blob's width halves in voxels.
    width = (a > 0.5).sum(axis=(0, 1)).astype(bool).sum()
    assert 3 <= width <= 7
    with mrcfile.new(tmp_path / "noise.mrc") as m:  # no sparse tail either way: contrast undecidable
        m.set_data(np.random.default_rng(0).normal(size=(24, 24, 24)).astype(np.float32))
        m.voxel_size = 10.0
    with pytest.raises(InputError, match=r"noise\.mrc: cannot tell whether protein is bright or dark"):
        load_structures([str(tmp_path / "noise.mrc")], BOX, 10.0)


def test_directory_skips_bad_files_and_named_bad_file_is_an_error(tmp_path):
    with mrcfile.new(tmp_path / "good.mrc") as m:
        m.set_data(_blob_map(24, (12, 12, 12), 2.0))
        m.voxel_size = 10.0
    (tmp_path / "broken.mrc").write_bytes(b"not an mrc file at all")
    s = load_structures([str(tmp_path)], BOX, VOXEL)
    assert s.names == ["good"] and len(s.skipped) == 1 and s.skipped[0].file == str(tmp_path / "broken.mrc")
    with pytest.raises(InputError, match=r"broken\.mrc"):
        load_structures([str(tmp_path / "broken.mrc")], BOX, VOXEL)
    with pytest.raises(InputError, match="did you mean ribosome"):
        load_structures(["builtin:ribosom"], BOX, VOXEL)
    with pytest.raises(InputError, match="no such file"):
        load_structures([str(tmp_path / "missing.pdb")], BOX, VOXEL)


SHARED = "/work/shared/data/maps/10A"


def test_real_complexes_load_when_present():
    import os

    if not os.path.isdir(SHARED):
        pytest.skip("shared maps of real complexes not present")
    s = load_structures([SHARED], 32, 10.0)
    assert len(s) == 16 and not s.skipped
    for name, m in zip(s.names, s.maps, strict=True):
        assert np.isfinite(m).all() and m.max() > 0.5, name
        assert np.allclose(centroid(m, 32), 16, atol=1.0), name
    # ... and simulate at the requested SNR (measured from two noise realisations).
    import torch

    from cryoshift.training.simulate import SimulationConfig, Simulator
    from cryoshift.training.simulate.fast import snr_from_pair

    sim = Simulator(s, SimulationConfig(snr=(0.5, 0.5)), seed=0)
    p = sim.draw(32, labels=torch.arange(16).repeat(2))
    a = sim.render(p, generator=torch.Generator().manual_seed(1))
    b = sim.render(p, generator=torch.Generator().manual_seed(2))
    assert torch.isfinite(a).all()
    assert float(snr_from_pair(a, b).median()) == pytest.approx(0.5, rel=0.15)
