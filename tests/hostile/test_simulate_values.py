"""Values and inputs ``cryoshift simulate`` took without a word, through the real CLI: a dataset of
one class (refused only later by train), extreme imaging values (``--snr 1e-30``, ``--cs -1``,
``--tilt-step 1000``, ``--voxel-size 1e-6``, ``--n 10**12``), a structure file whose name holds a
comma, an OUT_DIR that already holds a dataset (overwritten), a dataset larger than the free disk,
atoms of unknown element (simulated with a made-up scattering factor), maps of one voxel on an
axis and maps of all-positive noise (simulated as a class)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hostile_inputs import BOX, VOXEL, Capsys, assert_error, raw_mrc, run_cli

from cryoshift.runtime.mrc import write_volume

TWO = "builtin:rubisco,builtin:p97"


def _simulate(out: Path, capsys: Capsys, *extra: object, structures: str = TWO) -> tuple[int | str, str, str]:
    """A 4-volume, one-thread run into ``out`` (options given later win)."""
    argv = ["simulate", out, "--n", 4, "--box", BOX, "--no-progress", "--threads", 1]
    return run_cli([*argv, "--structures", structures, *extra], capsys)


def _pdb(path: Path, elements: list[str], seed: int = 0) -> Path:
    """A PDB file of carbon-like atoms in a ~50 A blob with the given element column."""
    atoms = np.random.default_rng(seed).normal(0, 12, (len(elements), 3))
    rows = [
        f"ATOM  {i + 1:5d}  CA  ALA A{i + 1:4d}    {x:8.3f}{y:8.3f}{z:8.3f}  1.00 20.00          {el:>2s}\n"
        for i, ((x, y, z), el) in enumerate(zip(atoms, elements, strict=True))
    ]
    path.write_text("".join(rows) + "END\n")
    return path


def _blob() -> np.ndarray:
    z, y, x = np.indices((24,) * 3) - 12
    return np.exp(-(x**2 + 2 * y**2 + (z - 2) ** 2) / 8.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# 1. one class


def test_simulate_refuses_a_single_class(tmp_path: Path, capsys: Capsys) -> None:
    """One structure gave a dataset train refuses ("a classifier needs volumes of at least two
    classes") only after the simulation; a folder whose other files are all skipped is the same."""
    pytest.importorskip("torch")
    out = tmp_path / "sim"
    line = assert_error(_simulate(out, capsys, structures="builtin:rubisco"), "builtin:rubisco")
    assert "gives one class (rubisco): a classifier needs at least two classes" in line, line
    assert not (out / "volumes.mrc").exists()

    folder = tmp_path / "maps"
    folder.mkdir()
    write_volume(folder / "blob.mrc", _blob(), voxel_size=VOXEL)
    (folder / "broken.mrc").write_bytes(b"not a map")
    code, _, err = _simulate(out, capsys, structures=str(folder))
    skipped, line = err.splitlines()  # the skipped file is said as ever, then the refusal
    assert code == 2 and skipped.startswith(f"cryoshift: skipped {folder / 'broken.mrc'}"), err
    assert line.startswith(f"cryoshift: error: {folder}: gives one class (blob; 1 skipped)"), line


# ---------------------------------------------------------------------------------------------
# 2. values outside physically sensible ranges


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        (["--snr", "1e-30", "1"], "--snr (snr) 1e-30 is outside the accepted range 0.0001 to 1000"),
        (["--snr", "0.1", "1e9"], "--snr (snr) 1e+09 is outside the accepted range 0.0001 to 1000"),
        (["--cs", "-1", "2"], "--cs (cs_mm) -1 is outside the accepted range 0 to 10 mm"),
        (["--cs", "2700", "2700"], "--cs (cs_mm) 2700 is outside"),  # Cs in um
        (
            ["--tilt-step", "1000", "1000"],
            "--tilt-step (tilt_step) 1000 is outside the accepted range 0.1 to 30",
        ),
        (["--tilt-step", "0", "3"], "--tilt-step (tilt_step) 0 is outside"),
        (["--tilt-max", "10", "20", "--tilt-step", "15", "15"], "15 is larger than the tilt range"),
        (
            ["--tilt-max", "40", "120"],
            "--tilt-max (tilt_max) 120 is outside the accepted range 5 to 90 degrees",
        ),
        (
            ["--defocus", "-30000", "-10000"],
            "--defocus (defocus_um) -30000 is outside the accepted range -20 to 20",
        ),
        (["--voltage", "300000", "300000"], "--voltage (voltage_kv) 300000 is outside"),  # V for kV
        (
            ["--bfactor", "1e9", "1e9"],
            "--bfactor (bfactor) 1e+09 is outside the accepted range 0 to 5000 A^2",
        ),
        (["--dose", "0", "1e6"], "--dose (dose) 1000000 is outside the accepted range 0 to 1000 e-/A^2"),
        (["--astigmatism", "0", "500"], "--astigmatism (astigmatism_um) 500 is outside"),
        (["--noise-alpha", "100", "100"], "--noise-alpha (noise_alpha) 100 is outside"),
        (["--gradient", "1e30", "1e30"], "--gradient (gradient) 1e+30 is outside"),
        (
            ["--neighbours", "1", "1000"],
            "--neighbours (neighbours) 1000 is outside the accepted range 0 to 30",
        ),
        (["--voxel-size", "1e-6"], "--voxel-size 1e-06 is outside the accepted range 0.5 to 50 A"),
        (["--voxel-size", "1000"], "--voxel-size 1000 is outside the accepted range 0.5 to 50 A"),
        (["--n", str(10**12)], "--n 1e+12 is outside the accepted range 1 to 10000000"),  # mrcfile traceback
        (["--resolution", "1e6"], "--resolution 1000000 is outside the accepted range 0.5 to 500 A"),
    ],
)
def test_simulate_refuses_values_outside_their_range(
    options: list[str], reason: str, tmp_path: Path, capsys: Capsys
) -> None:
    pytest.importorskip("torch")
    out = tmp_path / "sim"
    line = assert_error(_simulate(out, capsys, *options), options[0].split()[0])
    assert reason in line, line
    assert not (out / "volumes.mrc").exists()


def test_simulate_refuses_config_fields_outside_their_range(tmp_path: Path, capsys: Capsys) -> None:
    """--config files go through the same table: a field with no option is named as a field."""
    pytest.importorskip("torch")
    config = tmp_path / "sim.json"
    config.write_text(json.dumps({"flex_voxels": [0, 50]}))
    line = assert_error(_simulate(tmp_path / "sim", capsys, "--config", config), "flex_voxels")
    assert "flex_voxels (a --config field) 50 is outside the accepted range 0 to 10 voxels" in line, line
    config.write_text(json.dumps({"cs_mm": [-2, 2]}))
    line = assert_error(_simulate(tmp_path / "sim", capsys, "--config", config), "--cs (cs_mm) -2")


def test_the_bounds_are_one_table_that_every_preset_keeps() -> None:
    """Every numeric simulation field has its range in config.BOUNDS, and the presets lie inside."""
    from cryoshift.training.simulate.config import BOUNDS, PRESETS, SimulationConfig

    words = {"fidelity", "dose_order", "dose_weighting", "ctf", "contrast"}
    numeric = {f.name for f in dataclasses.fields(SimulationConfig)} - words
    assert numeric <= set(BOUNDS), numeric - set(BOUNDS)
    for name, cfg in PRESETS.items():
        assert SimulationConfig.from_dict(cfg.to_dict()) == cfg, name


def test_simulate_takes_the_values_of_real_facilities(tmp_path: Path, capsys: Capsys) -> None:
    """The bounds are generous: the ends of ordinary ranges pass (Cs-corrected 0 mm, 20 um
    underfocus, +-90 deg with 1 deg steps, 80-300 kV, low and high SNR, 0.5 A and 50 A voxels)."""
    pytest.importorskip("torch")
    options = [
        *("--cs", "0", "2.7"),
        *("--defocus", "-20", "-0.5"),
        *("--tilt-max", "60", "90", "--tilt-step", "1", "5"),
        *("--voltage", "80", "300", "--snr", "0.0001", "1000"),
        *("--bfactor", "0", "1000", "--dose-weighting", "--dose", "40", "300"),
    ]
    code, _, err = _simulate(tmp_path / "fine", capsys, *options)
    assert code == 0, err
    for voxel in ("0.5", "50"):
        code, _, err = _simulate(tmp_path / f"voxel{voxel}", capsys, "--voxel-size", voxel)
        assert code == 0, err


def test_the_check_of_simulated_volumes_still_names_the_drawn_values() -> None:
    """What the bounds let through and still leaves no signal is refused after the simulation
    (the CLI cases of test_evaluate_simulate_inputs.py now stop at the bounds)."""
    from cryoshift.runtime.errors import InputError
    from cryoshift.training.simulate.dataset import check_volumes

    volumes = np.zeros((2, BOX, BOX, BOX), np.float32)
    rows = [{"class_name": "rubisco", "bfactor": 4000.0, "snr": 0.5}] * 2
    with pytest.raises(InputError, match=r"simulated volume 5 \(class rubisco\) is blank") as caught:
        check_volumes(volumes, rows, 5)
    assert "bfactor 4e+03" in str(caught.value)


# ---------------------------------------------------------------------------------------------
# 3. a comma in a file name


def test_simulate_takes_a_file_whose_name_holds_a_comma(
    tmp_path: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--structures split every value at commas, so 'a,b.pdb' was "a: no such file" unless given as
    its folder. An existing path is kept whole, alone or inside a comma-separated list."""
    pytest.importorskip("torch")
    pytest.importorskip("gemmi")
    monkeypatch.chdir(tmp_path)
    _pdb(tmp_path / "a,b.pdb", ["C"] * 80)
    _pdb(tmp_path / "c.pdb", ["C"] * 80, seed=1)
    code, _, err = _simulate(Path("one"), capsys, "--structures", "builtin:p97", structures="a,b.pdb")
    assert code == 0, err
    assert json.loads((tmp_path / "one" / "dataset.json").read_text())["class_names"] == ["a,b", "p97"]
    code, _, err = _simulate(Path("two"), capsys, structures="a,b.pdb,c.pdb,builtin:p97")
    assert code == 0, err
    assert json.loads((tmp_path / "two" / "dataset.json").read_text())["class_names"] == ["a,b", "c", "p97"]
    line = assert_error(_simulate(Path("three"), capsys, structures="a,x.pdb,c.pdb"), "a")
    assert "no such file" in line, line  # no such path: split as before


# ---------------------------------------------------------------------------------------------
# 4. an OUT_DIR that holds a dataset


def test_simulate_refuses_an_out_dir_that_holds_a_dataset(tmp_path: Path, capsys: Capsys) -> None:
    """A second run into the same OUT_DIR overwrote volumes.mrc, particles.csv and dataset.json."""
    pytest.importorskip("torch")
    out = tmp_path / "sim"
    code, _, err = _simulate(out, capsys)
    assert code == 0, err
    before = (out / "dataset.json").read_bytes()
    line = assert_error(_simulate(out, capsys, "--seed", 1), out)
    assert "already holds a dataset (volumes.mrc, particles.csv, dataset.json)" in line, line
    assert "choose another OUT_DIR, or remove it" in line, line
    assert (out / "dataset.json").read_bytes() == before

    unfinished = tmp_path / "unfinished"  # what a killed run leaves: the stack, no dataset.json
    unfinished.mkdir()
    (unfinished / "volumes.mrc").write_bytes(b"\0" * 1024)
    line = assert_error(_simulate(unfinished, capsys), unfinished)
    assert "already holds an unfinished dataset (no dataset.json" in line, line

    other = tmp_path / "other"  # a folder of other files is fine
    other.mkdir()
    (other / "notes.txt").write_text("x")
    code, _, err = _simulate(other, capsys)
    assert code == 0, err


def test_a_failed_simulation_leaves_no_stack_behind(
    tmp_path: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that fails after the writer made volumes.mrc left it behind: the folder then looked
    like an unfinished dataset and the corrected run was refused."""
    pytest.importorskip("torch")
    from cryoshift.runtime.errors import InputError
    from cryoshift.training.simulate import dataset

    def fail(*args: object) -> None:
        raise InputError("simulation config", "made to fail")

    out = tmp_path / "sim"
    with monkeypatch.context() as patch:
        patch.setattr(dataset, "_write_chunk", fail)
        assert_error(_simulate(out, capsys), "made to fail")
    assert out.is_dir() and not (out / "volumes.mrc").exists()
    code, _, err = _simulate(out, capsys)
    assert code == 0, err


def test_simulate_refuses_a_dataset_larger_than_the_free_disk(
    tmp_path: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stack is made at full size up front; on a full disk the run failed (or filled it) later."""
    pytest.importorskip("torch")
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=10_000))
    out = tmp_path / "sim"
    line = assert_error(_simulate(out, capsys), out)
    assert "the dataset needs 64.0 KiB (4 volumes of 16^3 float32) but only 9.8 KiB is free" in line, line
    assert not (out / "volumes.mrc").exists()


def test_the_free_disk_is_checked_before_the_structures_are_made(
    tmp_path: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk check ran after the structures were made, which for many PDB/mmCIF files takes
    long; it needs only --n, --box and float32, so a full disk is said before any file is read."""
    pytest.importorskip("torch")
    pytest.importorskip("gemmi")
    import cryoshift.training.simulate as simulate

    models = tmp_path / "models"
    models.mkdir()
    for seed in range(3):
        _pdb(models / f"m{seed}.pdb", ["C"] * 80, seed=seed)
    made = []
    real_load = simulate.load_structures

    def load_structures(*args: object, **kwargs: object) -> object:
        made.append(args)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(simulate, "load_structures", load_structures)
    real = shutil.disk_usage
    with monkeypatch.context() as patch:
        patch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=10_000))
        out = tmp_path / "sim"
        line = assert_error(_simulate(out, capsys, structures=str(models)), out)
    assert "the dataset needs 64.0 KiB (4 volumes of 16^3 float32) but only 9.8 KiB is free" in line, line
    assert made == [], "the structures were made before the disk check"
    code, _, err = _simulate(out, capsys, structures=str(models))  # with the space, the same run works
    assert code == 0 and len(made) == 1, err


# ---------------------------------------------------------------------------------------------
# 5. unknown elements, maps of one voxel on an axis, maps of noise


def test_atoms_of_unknown_element_are_left_out_with_a_count(tmp_path: Path, capsys: Capsys) -> None:
    """gemmi gives an atom of element X (an X or junk element column) a made-up scattering factor:
    such atoms were simulated without a word. They are left out with one warning that counts them;
    a model of only such atoms is refused."""
    pytest.importorskip("torch")
    pytest.importorskip("gemmi")
    from cryoshift.training.simulate import load_structures

    mixed = _pdb(tmp_path / "mixed.pdb", ["C"] * 70 + ["X"] * 10)
    code, _, err = _simulate(tmp_path / "sim", capsys, structures=f"{mixed},builtin:p97")
    assert code == 0, err
    warning = f"cryoshift: warning: {mixed}: 10 of 80 atoms have an unknown element (X) and are left out"
    warnings = [ln for ln in err.splitlines() if "unknown element" in ln]
    assert len(warnings) == 1 and warnings[0].startswith(warning), err
    # the density is the one of the 70 known atoms
    known = tmp_path / "known.pdb"
    known.write_text("".join(mixed.read_text().splitlines(keepends=True)[:70]) + "END\n")
    np.testing.assert_allclose(
        load_structures([str(mixed)], BOX, VOXEL).maps,
        load_structures([str(known)], BOX, VOXEL).maps,
        atol=1e-5,
    )

    unknown = _pdb(tmp_path / "junk.pdb", ["Q"] * 80)  # junk reads as X too
    line = assert_error(_simulate(tmp_path / "sim2", capsys, structures=f"{unknown},builtin:p97"), unknown)
    assert "all 80 atoms have an unknown element (X)" in line, line


@pytest.mark.parametrize(("nx", "ny", "nz"), [(1, 1, 1), (BOX, BOX, 1), (BOX, 1, BOX), (1, BOX, BOX)])
def test_maps_of_one_voxel_on_an_axis_are_refused(
    nx: int, ny: int, nz: int, tmp_path: Path, capsys: Capsys
) -> None:
    """A single voxel was called "a 2-D image (1x1)"; every map of one voxel on an axis is refused
    in the same words, naming the file."""
    pytest.importorskip("torch")
    data = np.random.default_rng(0).exponential(1.0, nx * ny * nz).astype("<f4").tobytes()
    path = raw_mrc(tmp_path / "thin.mrc", nx=nx, ny=ny, nz=nz, data=data)
    line = assert_error(_simulate(tmp_path / "sim", capsys, structures=f"{path},builtin:p97"), path)
    what = "a single voxel" if nx == ny == nz == 1 else f"{nx} x {ny} x {nz} voxels (X, Y, Z)"
    assert f"the map is {what}: a density map needs at least 2 voxels on every axis" in line, line


@pytest.mark.parametrize("noise", ["exponential", "lognormal"])
def test_maps_of_positive_noise_are_refused(noise: str, tmp_path: Path, capsys: Capsys) -> None:
    """All-positive skewed noise passed the contrast check (its skewness is that of a density) and
    was simulated as a class of noise; a smooth map beside it still passes."""
    pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    values = rng.exponential(1.0, (24,) * 3) if noise == "exponential" else rng.lognormal(0.0, 1.0, (24,) * 3)
    path = write_volume(tmp_path / "noise.mrc", values.astype(np.float32), voxel_size=VOXEL)
    line = assert_error(_simulate(tmp_path / "sim", capsys, structures=f"{path},builtin:p97"), path)
    assert "its voxels do not correlate with their neighbours (mean correlation 0.00;" in line, line
    blob = write_volume(tmp_path / "blob.mrc", _blob(), voxel_size=VOXEL)
    code, _, err = _simulate(tmp_path / "fine", capsys, structures=f"{blob},builtin:p97")
    assert code == 0, err


def test_train_s_simulated_source_takes_a_file_whose_name_holds_a_comma(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """train --source split at commas the old way (its own copy of the split), so the file that
    simulate now takes whole was "a: no such file" there."""
    pytest.importorskip("torch")
    pytest.importorskip("gemmi")
    from cryoshift.training.data import SimulatedSource

    monkeypatch.chdir(tmp_path)
    _pdb(tmp_path / "a,b.pdb", ["C"] * 80)
    source = SimulatedSource("a,b.pdb,builtin:p97", 16, 10.0, "realistic", seed=0)
    assert source.structures.names == ["a,b", "p97"]
