"""Hostile and unusual class structures (``simulate --structures``, ``train --source``, ``info``)
and checkpoints ``export`` cannot use: one line naming the file, never a traceback, never a
silently wrong class."""

from __future__ import annotations

import gzip
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hostile_inputs import BOX, VOXEL, Capsys, assert_error, run_cli

from cryoshift.runtime.errors import InputError

pytest.importorskip("gemmi")


def _atom(serial: int, x: float, y: float, z: float) -> str:
    return f"ATOM  {serial:5d}  CA  ALA A{serial:4d}    {x:8.3f}{y:8.3f}{z:8.3f}  1.00 20.00           C\n"


def _protein(shift: float = 0.0, seed: int = 0) -> str:
    """80 carbon atoms in a ~50 A blob: a small particle at 10 A voxels."""
    pts = np.random.default_rng(seed).normal(0, 12, (80, 3)) + shift
    return "".join(_atom(i + 1, *p) for i, p in enumerate(pts))


def _pdb(path: Path, text: str) -> Path:
    path.write_text(text + "END\n")
    return path


def _cif(path: Path, pdb: Path) -> Path:
    import gemmi

    st = gemmi.read_structure(str(pdb))
    st.setup_entities()
    st.make_mmcif_document().write_file(str(path))
    return path


def _simulate(sources: list[object], tmp_path: Path, capsys: Capsys) -> tuple[int | str, str, str]:
    args: list[object] = ["simulate", tmp_path / "sim", "--n", 4, "--box", BOX, "--no-progress"]
    for s in sources:
        args += ["--structures", s]
    return run_cli(args, capsys)


def test_empty_mmcif_is_one_line(tmp_path: Path, capsys: Capsys) -> None:
    """gemmi raised IndexError (vector::_M_range_check) through the CLI."""
    pytest.importorskip("torch")
    empty = tmp_path / "empty.cif"
    empty.write_bytes(b"")
    line = assert_error(_simulate([empty], tmp_path, capsys), empty)
    assert "file is empty" in line


def test_non_utf8_file_name_is_read(tmp_path: Path) -> None:
    """gemmi takes only UTF-8 paths: a TypeError traceback. The class name escapes the byte."""
    from cryoshift.training.simulate import load_structures

    folder = tmp_path / "models"
    folder.mkdir()
    with open(os.fsencode(folder) + b"/caf\xe9.pdb", "w") as fh:
        fh.write(_protein() + "END\n")
    s = load_structures([str(folder)], BOX, VOXEL)
    assert s.names == ["caf\\xe9"] and not s.skipped


def test_gzipped_models_and_maps_are_read(tmp_path: Path) -> None:
    """.pdb.gz, .cif.gz and .mrc.gz were refused as "unknown structure type '.gz'"."""
    from cryoshift.runtime.mrc import write_volume
    from cryoshift.training.simulate import load_structures

    pdb = _pdb(tmp_path / "plain.pdb", _protein())
    cif = _cif(tmp_path / "plain.cif", pdb)
    (tmp_path / "a.pdb.gz").write_bytes(gzip.compress(pdb.read_bytes()))
    (tmp_path / "b.cif.gz").write_bytes(gzip.compress(cif.read_bytes()))
    z, y, x = np.indices((24,) * 3) - 12
    write_volume(
        tmp_path / "m.mrc", np.exp(-(x**2 + 2 * y**2 + (z - 2) ** 2) / 8.0).astype(np.float32), VOXEL
    )
    (tmp_path / "c.mrc.gz").write_bytes(gzip.compress((tmp_path / "m.mrc").read_bytes()))
    # One by one: copies of one model in one run are refused as classes of the same map.
    loaded = [load_structures([str(tmp_path / n)], BOX, VOXEL) for n in ("a.pdb.gz", "b.cif.gz", "c.mrc.gz")]
    assert [s.names for s in loaded] == [["a"], ["b"], ["c"]]
    plain = load_structures([str(pdb)], BOX, VOXEL).maps[0]
    assert np.allclose(loaded[0].maps[0], plain, atol=1e-5) and np.allclose(
        loaded[1].maps[0], plain, atol=1e-4
    )


def test_two_files_of_one_class_name_are_refused(tmp_path: Path, capsys: Capsys) -> None:
    """a/1abc.pdb and b/1abc.cif became classes '1abc' and '1abc_1' without a word (and in a folder
    with x.pdb, x.cif and x_1.pdb, class 'x_1' was x.cif, not x_1.pdb)."""
    pytest.importorskip("torch")
    from cryoshift.training.simulate import load_structures

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = _pdb(tmp_path / "a" / "1abc.pdb", _protein())
    second = _cif(tmp_path / "b" / "1abc.cif", first)
    line = assert_error(_simulate([first, second], tmp_path, capsys), second)
    assert "class name '1abc'" in line and str(first) in line
    folder = tmp_path / "folder"
    folder.mkdir()
    _pdb(folder / "x.pdb", _protein())
    _cif(folder / "x.cif", folder / "x.pdb")
    _pdb(folder / "x_1.pdb", _protein(seed=1))
    with pytest.raises(InputError, match="class name 'x' is taken already"):
        load_structures([str(folder)], BOX, VOXEL)
    with pytest.raises(InputError, match="class name 'ribosome'"):
        load_structures(["builtin:ribosome", str(_pdb(tmp_path / "ribosome.pdb", _protein()))], BOX, VOXEL)


def test_models_apart_are_refused_superposed_use_the_first(tmp_path: Path) -> None:
    """Of two models 850 A apart (an assembly stored per model) the first was silently the class."""
    from cryoshift.training.simulate import load_structures

    apart = tmp_path / "apart.pdb"
    apart.write_text(
        f"MODEL        1\n{_protein()}ENDMDL\nMODEL        2\n{_protein(shift=500.0)}ENDMDL\nEND\n"
    )
    with pytest.raises(InputError, match="2 models that are not superposed"):
        load_structures([str(apart)], BOX, VOXEL)
    with pytest.raises(InputError, match="2 models that are not superposed"):
        load_structures([str(_cif(tmp_path / "apart.cif", apart))], BOX, VOXEL)
    nmr = tmp_path / "nmr.pdb"
    nmr.write_text(f"MODEL        1\n{_protein()}ENDMDL\nMODEL        2\n{_protein(shift=0.5)}ENDMDL\nEND\n")
    one = _pdb(tmp_path / "one.pdb", _protein())
    first = load_structures([str(nmr)], BOX, VOXEL).maps[0]
    assert np.allclose(first, load_structures([str(one)], BOX, VOXEL).maps[0], atol=1e-5)


def test_structure_mostly_outside_the_box_is_refused(tmp_path: Path, capsys: Capsys) -> None:
    """Two atoms 5000 A apart, or a map whose header says 100 A voxels where 10 were meant: the box
    held nothing of the particle and the class was a masked, rescaled sliver."""
    pytest.importorskip("torch")
    from cryoshift.runtime.mrc import write_volume

    far = _pdb(tmp_path / "far.pdb", _atom(1, 0, 0, 0) + _atom(2, 5000, 0, 0) + _atom(3, 5000, 1.5, 0))
    line = assert_error(_simulate([far], tmp_path, capsys), far)
    assert "% of its density falls inside the 16-voxel box" in line and line.count(str(far)) == 1
    z, y, x = np.indices((24,) * 3) - 12
    blob = np.exp(-(x**2 + 2 * y**2 + (z - 2) ** 2) / 8.0).astype(np.float32)
    coarse = write_volume(tmp_path / "coarse.mrc", blob, voxel_size=100.0)
    assert_error(_simulate([coarse], tmp_path, capsys), coarse)


def test_structure_smaller_than_a_voxel_is_refused(tmp_path: Path, capsys: Capsys) -> None:
    """One atom, or atoms in nm: a featureless blob was simulated as a class."""
    pytest.importorskip("torch")
    for name, text in (
        ("atom.pdb", _atom(1, 1, 2, 3)),
        ("nm.pdb", _atom(1, 0, 0, 0) + _atom(2, 1.5, 0.5, 0)),
    ):
        tiny = _pdb(tmp_path / name, text)
        line = assert_error(_simulate([tiny], tmp_path, capsys), tiny)
        assert "less than one 10 A voxel" in line


def test_map_resampling_and_inversion_are_said(tmp_path: Path, capsys: Capsys) -> None:
    """A map of another voxel size was resampled, a dark one inverted, and neither was said."""
    pytest.importorskip("torch")
    from cryoshift.runtime.mrc import write_volume

    z, y, x = np.indices((24,) * 3) - 12
    blob = np.exp(-(x**2 + 2 * y**2 + (z - 2) ** 2) / 8.0).astype(np.float32)
    fine = write_volume(tmp_path / "fine.mrc", blob, voxel_size=5.0)
    dark = write_volume(tmp_path / "dark.mrc", -blob, voxel_size=VOXEL)
    code, _, err = _simulate([fine, dark], tmp_path, capsys)
    assert code == 0, err
    assert f"note: {fine}: 5 A voxels resampled to 10 A" in err
    assert f"note: {dark}: protein dark, inverted to light" in err


@pytest.mark.parametrize("voxel", ["1e-6", "1e6"])
def test_builtins_that_render_as_one_map_are_refused(voxel: str, tmp_path: Path, capsys: Capsys) -> None:
    """At --voxel-size 1e-6 (every built-in fills the box) or 1e6 (every one is a dot) the classes'
    maps were identical (correlation 1.000): a dataset of one particle under 9 labels, exit 0."""
    # simulate refuses such a --voxel-size before (config.BOUNDS); train's simulated source reads here
    from cryoshift.runtime.errors import InputError
    from cryoshift.training.simulate import load_structures

    with pytest.raises(InputError) as caught:
        load_structures(["builtin"], BOX, float(voxel))
    line = str(caught.value)
    assert "built-in classes 'ribosome' and 'proteasome'" in line
    assert "render as the same map" in line and "correlation 1.000000 > 0.99999" in line
    assert "check --voxel-size" in line


def test_maps_that_are_copies_of_each_other_are_refused(tmp_path: Path, capsys: Capsys) -> None:
    """Two files of one map (a copy under another name, here at another scale) became two classes
    the simulator renders alike, and simulate exited 0."""
    pytest.importorskip("torch")
    from cryoshift.runtime.mrc import write_volume

    z, y, x = np.indices((24,) * 3) - 12
    blob = np.exp(-(x**2 + 2 * y**2 + (z - 2) ** 2) / 8.0).astype(np.float32)
    first = write_volume(tmp_path / "first.mrc", blob, voxel_size=VOXEL)
    copy = write_volume(tmp_path / "copy.mrc", 7.0 * blob, voxel_size=VOXEL)
    line = assert_error(_simulate([first, copy], tmp_path, capsys), copy)
    assert f"class 'copy' has the same map as class 'first' ({first})" in line
    assert "check that the maps differ" in line
    assert not (tmp_path / "sim" / "dataset.json").exists()
    folder = tmp_path / "maps"  # copies in a folder: the same, however the files are named
    folder.mkdir()
    for name in ("a", "b"):
        write_volume(folder / f"{name}.mrc", blob, voxel_size=VOXEL)
    line = assert_error(_simulate([folder], tmp_path, capsys), folder / "b.mrc")
    assert f"class 'b' has the same map as class 'a' ({folder / 'a.mrc'})" in line
    other = write_volume(tmp_path / "other.mrc", np.roll(blob, 3, axis=0) + blob.T, voxel_size=VOXEL)
    code, _, err = _simulate([first, other], tmp_path, capsys)  # maps that differ still pass
    assert code == 0, err


def test_train_says_each_structure_note_once(tmp_path: Path, capsys: Capsys) -> None:
    """train built its source twice (training and validation draws), so every note and skip line
    about the structures was printed twice, and every map read and resampled twice."""
    pytest.importorskip("torch")
    from cryoshift.runtime.mrc import write_volume

    z, y, x = np.indices((24,) * 3) - 12
    blob = np.exp(-(x**2 + 2 * y**2 + (z - 2) ** 2) / 8.0).astype(np.float32)
    folder = tmp_path / "maps"
    folder.mkdir()
    fine = write_volume(folder / "fine.mrc", blob, voxel_size=5.0)
    write_volume(folder / "other.mrc", np.roll(blob, 3, axis=0) + blob.T, voxel_size=VOXEL)
    (folder / "broken.pdb").write_text("HEADER nothing here\nEND\n")
    from cryoshift.training.trainer import TrainConfig, train

    config = TrainConfig(source=str(folder), out=str(tmp_path / "run"), box=BOX, epochs=1, sim_per_epoch=8)
    config.sim_val, config.batch_size, config.backbone, config.method = 4, 4, "cryonet-small", "source-only"
    config.template_labels, config.test_views, config.progress, config.threads = 0, 1, False, 1
    train(config)
    err = capsys.readouterr().err
    assert err.count(f"note: {fine}: 5 A voxels resampled to 10 A") == 1
    assert len([line for line in err.splitlines() if "broken.pdb" in line]) == 1


def test_symbolic_link_loops(tmp_path: Path, capsys: Capsys) -> None:
    """A link loop named directly was "no such file"; a link to '.' named x.pdb in a folder was read
    as a model with "no heavy atoms"."""
    pytest.importorskip("torch")
    from cryoshift.training.simulate import load_structures

    loop = tmp_path / "loop.pdb"
    os.symlink("loop.pdb", loop)
    line = assert_error(_simulate([loop], tmp_path, capsys), loop)
    assert "symbolic link loop" in line
    folder = tmp_path / "folder"
    folder.mkdir()
    os.symlink(".", folder / "self.pdb")
    _pdb(folder / "good.pdb", _protein())
    _pdb(folder / "good2.pdb", _protein(seed=3))
    s = load_structures([str(folder)], BOX, VOXEL)
    assert s.names == ["good", "good2"] and not s.skipped


def test_train_with_one_class_is_refused(tmp_path: Path, capsys: Capsys) -> None:
    """One structure trained a one-class 'classifier' that answered it for every volume."""
    pytest.importorskip("torch")
    result = run_cli(
        [
            "train",
            "--source",
            "builtin:ribosome",
            "--box",
            BOX,
            "--out",
            tmp_path / "run",
            "--epochs",
            1,
            "--sim-per-epoch",
            8,
            "--batch-size",
            4,
            "--backbone",
            "cryonet-small",
            "--method",
            "source-only",
            "--template-labels",
            0,
            "--no-progress",
            "--threads",
            1,
        ],
        capsys,
    )
    line = assert_error(result, "builtin:ribosome")
    assert "only one class (ribosome)" in line
    assert not (tmp_path / "run" / "model.pt").exists()


def test_info_describes_atomic_models(tmp_path: Path, capsys: Capsys) -> None:
    """info called a .pdb / .cif.gz an "unknown file type"; a broken one is one line."""
    pdb = _pdb(tmp_path / "m.pdb", _protein())
    (tmp_path / "m.cif.gz").write_bytes(gzip.compress(_cif(tmp_path / "m.cif", pdb).read_bytes()))
    for path in (pdb, tmp_path / "m.cif.gz"):
        code, out, err = run_cli(["info", path], capsys)
        assert code == 0 and "heavy atoms used" in out and "80" in out, err
    only_h = _pdb(tmp_path / "h.pdb", _protein().replace("  CA  ALA", "  H   ALA").replace("C\n", "H\n"))
    assert "no heavy atoms" in assert_error(run_cli(["info", only_h], capsys), only_h)
    code, out, _ = run_cli(["info", "--validate", only_h, pdb], capsys)
    assert code == 1 and f"{pdb}: ok" in out and f"{only_h}: atomic model has no heavy atoms" in out


def test_export_refuses_foreign_zip_and_future_checkpoint(tmp_path: Path, capsys: Capsys) -> None:
    """A zip that is not torch.save's ended in torch's "[enforce fail at inline_container.cc]"; a
    checkpoint of a newer format was "not a cryoshift checkpoint"."""
    torch = pytest.importorskip("torch")
    foreign = tmp_path / "foreign.pt"
    with zipfile.ZipFile(foreign, "w") as zf:
        zf.writestr("weights.txt", "1 2 3")
    line = assert_error(run_cli(["export", foreign, "--out", tmp_path / "a"], capsys), foreign)
    assert "zip archive without torch.save's data.pkl" in line and "enforce" not in line
    future = tmp_path / "future.pt"
    torch.save({"format": "cryoshift.checkpoint/2", "state_dict": {}}, future)
    line = assert_error(run_cli(["export", future, "--out", tmp_path / "b"], capsys), future)
    assert "'cryoshift.checkpoint/2' is not one this cryoshift reads" in line and "newer cryoshift" in line
    text = tmp_path / "text.pt"
    text.write_text("not weights\n")
    assert "not a torch.save archive" in assert_error(
        run_cli(["export", text, "--out", tmp_path / "c"], capsys), text
    )


def test_map_smaller_than_a_voxel_is_refused(tmp_path: Path, capsys: Capsys) -> None:
    """A map whose header gives nm-sized voxels as Angstrom (a 24-voxel particle spanning 2.4 A)
    was shrunk into one voxel and simulated as a featureless class."""
    pytest.importorskip("torch")
    from cryoshift.runtime.mrc import write_volume

    z, y, x = np.indices((24,) * 3) - 12
    blob = np.exp(-(x**2 + 2 * y**2 + (z - 2) ** 2) / 8.0).astype(np.float32)
    tiny = write_volume(tmp_path / "tiny.mrc", blob, voxel_size=0.1)
    line = assert_error(_simulate([tiny], tmp_path, capsys), tiny)
    assert "less than one 10 A voxel" in line


def test_atoms_of_occupancy_zero_carry_no_density(tmp_path: Path, capsys: Capsys) -> None:
    """Occupancy-0 atoms add no density: a far-away one must not count towards the extent (the
    model was refused as mostly outside the box), and a model of only such atoms is refused in one
    line (its density was empty)."""
    pytest.importorskip("torch")

    def unoccupied(text: str) -> str:
        return "".join(line[:54] + "  0.00" + line[60:] + "\n" for line in text.splitlines())

    far = _pdb(tmp_path / "far.pdb", _protein() + unoccupied(_atom(900, 5000, 0, 0)))
    assert _simulate([far, "builtin:p97"], tmp_path / "far", capsys)[0] == 0  # one class is refused
    empty = _pdb(tmp_path / "empty.pdb", unoccupied(_protein()))
    line = assert_error(_simulate([empty], tmp_path, capsys), empty)
    assert "have occupancy 0" in line


@pytest.mark.parametrize(
    ("column", "value", "words"),
    [
        ("b", "   nan", "80 atoms have a NaN or infinite occupancy or B-factor"),
        ("occ", "   nan", "80 atoms have a NaN or infinite occupancy or B-factor"),
        ("b", "-9999.", "B-factors down to -9999 A^2"),
    ],
)
def test_nan_or_impossible_b_factors_are_named(
    column: str, value: str, words: str, tmp_path: Path, capsys: Capsys
) -> None:
    """gemmi's density of an atom with a NaN B-factor or occupancy, or a B-factor below minus the
    resolution's blur, is NaN; the model was refused as "only 0.0 % of its density falls inside
    the 16-voxel box ... check --voxel-size", of a particle that fits."""
    pytest.importorskip("torch")
    start = 60 if column == "b" else 54
    text = "".join(line[:start] + value + line[start + 6 :] + "\n" for line in _protein().splitlines())
    bad = _pdb(tmp_path / "bad.pdb", text)
    line = assert_error(_simulate([bad], tmp_path, capsys), bad)
    assert words in line and "inside the" not in line, line


@pytest.mark.parametrize("payload", [b"\x00" * 1000, (_protein() + "END\n").encode("utf-16")])
def test_model_file_of_no_atoms_is_called_so(payload: bytes, tmp_path: Path, capsys: Capsys) -> None:
    """NUL bytes or a UTF-16 PDB parse as a model of no atoms: it was "atomic model has no heavy
    atoms (hydrogens and waters are left out)", as if the file held only those."""
    pytest.importorskip("torch")
    bad = tmp_path / "bad.pdb"
    bad.write_bytes(payload)
    line = assert_error(_simulate([bad], tmp_path, capsys), bad)
    assert "holds no atoms: not a PDB file (no ATOM/HETATM records)" in line and "heavy" not in line


def test_map_of_small_numbers_is_read_and_a_constant_one_is_called_constant(
    tmp_path: Path, capsys: Capsys
) -> None:
    """A map scaled by 1e-20 (other units) was refused as "cannot tell whether protein is bright or
    dark (skewness 0.00)": the skewness had an absolute floor under its variance. A constant map
    got that same line, which sends the user to crop a map that holds nothing."""
    pytest.importorskip("torch")
    from cryoshift.runtime.mrc import write_volume
    from cryoshift.training.simulate import load_structures

    z, y, x = np.indices((24,) * 3) - 12
    blob = np.exp(-(x**2 + 2 * y**2 + (z - 2) ** 2) / 8.0).astype(np.float32)
    plain = write_volume(tmp_path / "plain.mrc", blob, voxel_size=VOXEL)
    small = write_volume(tmp_path / "small.mrc", blob * np.float32(1e-20), voxel_size=VOXEL)
    got = load_structures([str(small)], BOX, VOXEL).maps[0]
    assert np.allclose(got, load_structures([str(plain)], BOX, VOXEL).maps[0], atol=1e-5)
    flat = write_volume(tmp_path / "flat.mrc", np.full((24,) * 3, 3.0, np.float32), voxel_size=VOXEL)
    line = assert_error(_simulate([flat], tmp_path, capsys), flat)
    assert "map is constant (every voxel 3)" in line and "bright or dark" not in line


@pytest.mark.parametrize("cell", [0.0, -240.0, float("nan")])
def test_map_of_an_unusable_cell_names_the_cell(cell: float, tmp_path: Path, capsys: Capsys) -> None:
    """A negative or NaN cell was reported as "voxel size missing in the MRC header (0)", which hid
    the value written there; a zero cell is still called missing."""
    pytest.importorskip("torch")
    import mrcfile

    from cryoshift.runtime.mrc import write_volume

    z, y, x = np.indices((24,) * 3) - 12
    blob = np.exp(-(x**2 + 2 * y**2 + (z - 2) ** 2) / 8.0).astype(np.float32)
    path = write_volume(tmp_path / "cell.mrc", blob, voxel_size=VOXEL)
    with mrcfile.mmap(path, "r+") as m:
        m.header.cella.x = cell
    line = assert_error(_simulate([path], tmp_path, capsys), path)
    words = "missing (cell 0)" if cell == 0 else f"unusable (cell X {cell:g} A)"
    assert f"voxel size {words} in the MRC header" in line, line


def _sheet(box: int = 24, planes: int = 2) -> np.ndarray:
    """A membrane-like sheet filling the box in X and Y, ``planes`` voxels thick in Z, its density
    varying smoothly along the sheet (so that it is skewed and smooth like a density map)."""
    z, y, x = np.indices((box,) * 3)
    sheet = 1.0 + 0.3 * np.sin(x / 3.0) * np.cos(y / 4.0)
    first = box // 2 - planes // 2
    return np.where((z >= first) & (z < first + planes), sheet, 0.0).astype(np.float32)


@pytest.mark.parametrize("blur", [0.0, 0.5])
def test_a_map_of_a_thin_sheet_is_refused(blur: float, tmp_path: Path, capsys: Capsys) -> None:
    """A smooth sheet 2 voxels thick passed every check (one voxel on an axis, noise, the span)
    and was simulated as a class, whether it filled the box in X and Y or lay tilted in it. A
    particle's density is at least 3 voxels thick wherever it is wide: one line naming the file."""
    pytest.importorskip("torch")
    from scipy import ndimage

    from cryoshift.runtime.mrc import write_volume

    flat = _sheet()
    tilted = ndimage.rotate(flat, 30, axes=(0, 2), reshape=False, order=1)  # across Z and X
    for name, data in (("sheet", flat), ("tilted", tilted)):
        if blur:
            data = ndimage.gaussian_filter(data, blur)
        path = write_volume(tmp_path / f"{name}.mrc", data.astype(np.float32), voxel_size=VOXEL)
        line = assert_error(_simulate([path, "builtin:p97"], tmp_path / name, capsys), path)
        assert line.startswith(f"cryoshift: error: {path}: its density is a sheet "), line
        assert "voxels thick across its thinnest direction and" in line, line
        assert "(a particle's map is at least 3 voxels thick wherever it is that wide)" in line, line
        assert not (tmp_path / name / "sim" / "volumes.mrc").exists()


def test_rods_membrane_patches_and_tightly_cropped_maps_are_taken(tmp_path: Path, capsys: Capsys) -> None:
    """The check is on thickness, not on touching the box's faces: a rod along one axis (a
    filament), a membrane patch spanning two (like builtin:membrane), a real complex's map cropped
    so tightly that its density touches the faces along its long axis, and a sheet 4 voxels thick
    are all simulated as classes."""
    pytest.importorskip("torch")
    import mrcfile

    from cryoshift.runtime.mrc import write_volume
    from cryoshift.training.simulate import load_structures
    from cryoshift.training.simulate.builtin import render_builtin

    z, y, x = np.indices((24,) * 3) - 12
    rod = np.exp(-(y**2 + (z + 1) ** 2) / (2 * 1.5**2)) * (1 + 0.2 * np.cos(x / 2.0))
    # a rod two voxels wide (DNA at 10 A) and a compact particle 3 voxels across: thin every way
    # but one, or every way, and no sheet
    thin_rod = np.exp(-(y**2 + z**2) / (2 * 0.6**2)) * (1 + 0.2 * np.cos(x / 2.0))
    ball = np.exp(-(x**2 + y**2 + z**2) / (2 * 0.9**2)) * (1 + 0.2 * (x > 0))
    membrane = render_builtin("membrane", 24, VOXEL, 0)
    real = Path(__file__).parents[2].parent / "shared" / "data" / "maps" / "10A" / "3d2f.mrc"
    if not real.exists():
        pytest.skip(f"{real} is not here")
    with mrcfile.open(real) as m:
        complex_ = m.data.astype(np.float32)
    strong = np.nonzero(complex_ > 0.05 * complex_.max())
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in strong)
    long_axis = int(np.argmax([s.stop - s.start for s in box]))
    crop = tuple(s if axis == long_axis else slice(None) for axis, s in enumerate(box))
    cropped = complex_[crop]  # its density touches both faces along its long axis
    files = [
        write_volume(tmp_path / "rod.mrc", rod.astype(np.float32), voxel_size=VOXEL),
        write_volume(tmp_path / "membrane.mrc", membrane, voxel_size=VOXEL),
        write_volume(tmp_path / "cropped.mrc", np.ascontiguousarray(cropped), voxel_size=VOXEL),
        write_volume(tmp_path / "thick.mrc", _sheet(planes=4), voxel_size=VOXEL),
    ]
    thin = [
        write_volume(tmp_path / "thin_rod.mrc", thin_rod.astype(np.float32), voxel_size=VOXEL),
        write_volume(tmp_path / "ball.mrc", ball.astype(np.float32), voxel_size=VOXEL),
    ]
    structures = load_structures([str(f) for f in files + thin], BOX, VOXEL)
    names = ["rod", "membrane", "cropped", "thick", "thin_rod", "ball"]
    assert structures.names == names and not structures.skipped, structures.skipped
    assert all(m.max() > 0 for m in structures.maps)
    code, _, err = _simulate(files, tmp_path, capsys)
    assert code == 0, err
