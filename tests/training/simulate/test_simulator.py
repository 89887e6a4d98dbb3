"""Simulator behaviour: seeds, parameter records, crowding, on-the-fly batches, datasets and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from cryoshift.runtime.cli import main
from cryoshift.runtime.dataset import read_dataset
from cryoshift.runtime.errors import InputError
from cryoshift.training.simulate import PARAM_COLUMNS, PRESETS, SimulationConfig, Simulator, simulate_dataset

from .conftest import BOX


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_same_seed_same_data_other_seed_other_data(builtins16, preset):
    cfg = PRESETS[preset]
    a = Simulator(builtins16, cfg, seed=11).sample(6)
    b = Simulator(builtins16, cfg, seed=11).sample(6)
    c = Simulator(builtins16, cfg, seed=12).sample(6)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]
    assert not torch.equal(a[0], c[0])
    assert a[0].dtype == torch.float32 and a[0].shape == (6, BOX, BOX, BOX) and a[1].dtype == torch.long
    assert torch.isfinite(a[0]).all()


def test_every_parameter_is_recorded_within_its_range(builtins16):
    cfg = PRESETS["realistic"]
    sim = Simulator(builtins16, cfg, seed=0)
    _, labels, rows = sim.sample(200)
    table = pd.DataFrame(rows)
    assert set(PARAM_COLUMNS) <= set(table.columns)
    assert (table["label"].to_numpy() == labels.numpy()).all()
    assert (table["class_name"] == [builtins16.names[i] for i in labels]).all()
    for column, field in [
        ("snr", "snr"),
        ("tilt_max", "tilt_max"),
        ("defocus_um", "defocus_um"),
        ("cs_mm", "cs_mm"),
        ("bfactor", "bfactor"),
        ("dose", "dose"),
    ]:
        lo, hi = getattr(cfg, field)
        assert table[column].between(lo, hi).all(), column
    assert (table[["shift_x", "shift_y", "shift_z"]].abs() <= cfg.shift_voxels).all().all()
    assert np.allclose(table["wedge_angle"], 90 - table["tilt_max"])
    assert set(np.unique(labels.numpy())) == set(range(len(builtins16)))  # classes drawn uniformly
    crowded = table["n_neighbours"] > 0
    assert 0.3 < crowded.mean() < 0.7  # crowding probability 0.5
    listed = table.loc[crowded, "neighbour_classes"].str.count(";") + 1
    assert (listed == table.loc[crowded, "n_neighbours"]).all()
    # Paper defaults: SNR log-uniform over 0.03-10 -> median near the geometric mean sqrt(0.3).
    paper = pd.DataFrame(Simulator(builtins16, SimulationConfig(), seed=0).sample(400)[2])
    assert 0.3 < paper["snr"].median() < 1.2
    assert paper["tilt_max"].between(40, 90).all() and paper["defocus_um"].between(-12, 0).all()


def test_neighbours_add_density_to_the_box(builtins16):
    cfg = SimulationConfig(snr=None, ctf=False, tilt_max=(90.0, 90.0), crowding=1.0, neighbours=(2, 2))
    sim = Simulator(builtins16, cfg, seed=2)
    p = sim.draw(8)
    neighbours, names, poses = sim._neighbours(p)
    crowded = -sim.render(p, neighbours=neighbours)
    alone = -sim.render(p)
    assert (crowded.sum((1, 2, 3)) > alone.sum((1, 2, 3)) + 1e-3).all()
    assert all(n.count(";") == 1 for n in names)
    assert all(len(pose.split(";")) == 2 and len(pose.split(";")[0].split(",")) == 6 for pose in poses)


def test_batches_are_an_endless_training_source(builtins16):
    sim = Simulator(builtins16, PRESETS["paper"], seed=0)
    it = sim.batches(4)
    first, labels = next(it)
    second, _ = next(it)
    assert first.shape == (4, 1, BOX, BOX, BOX) and labels.shape == (4,)
    assert not torch.equal(first, second)


def test_config_round_trip_and_validation(tmp_path):
    for cfg in PRESETS.values():
        data = json.loads(json.dumps(cfg.to_dict()))
        assert SimulationConfig.from_dict(data) == cfg
    assert PRESETS["paper"] == SimulationConfig()
    with pytest.raises(InputError, match="did you mean snr"):
        SimulationConfig.from_dict({"snrr": [1, 2]})
    with pytest.raises(InputError, match=r"lo 5\.0 is larger"):
        SimulationConfig(snr=(5.0, 1.0))
    with pytest.raises(InputError, match="fidelity"):
        SimulationConfig(fidelity="exact")
    # a wrong type or a NaN names the field instead of failing in a comparison (or passing it)
    for bad, field in (
        ({"snr": "abc"}, "snr must be a"),
        ({"snr": [float("nan"), 1.0]}, "snr must hold finite"),
        ({"crowding": float("nan")}, "crowding must be a finite number"),
        ({"shift_voxels": "1"}, "shift_voxels must be a finite number"),
        ({"tilt_max": 60}, "tilt_max must be a"),
    ):
        with pytest.raises(InputError, match=field):
            SimulationConfig.from_dict(bad)
    assert SimulationConfig.from_dict({"snr": None}).snr is None  # noise off stays allowed


def test_simulate_dataset_writes_the_format_and_is_reproducible(builtins16, tmp_path):
    cfg = PRESETS["realistic"]
    a = simulate_dataset(tmp_path / "a", builtins16, cfg, 10, seed=4, batch_size=4, progress=False)
    b = simulate_dataset(tmp_path / "b", builtins16, cfg, 10, seed=4, batch_size=4, progress=False)
    for name in ("volumes.mrc", "particles.csv", "dataset.json"):  # byte for byte, header too
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    ds = read_dataset(a, with_labels=True)
    assert len(ds) == 10 and ds.box_size == BOX and ds.class_names == builtins16.names
    info = json.loads((a / "dataset.json").read_text())
    assert info["seed"] == 4 and info["simulation"] == cfg.to_dict() and info["contrast"] == "dark"
    assert info["structures"][0].startswith("builtin:") and "torch" in info["versions"]
    table = pd.read_csv(a / "particles.csv")
    assert {"index", "label", "class_name", "snr", "defocus_um", "rot"} <= set(table.columns)


def test_cli_help_lists_the_builtins():
    from cryoshift.runtime.commands import simulate as verb
    from cryoshift.training.simulate import BUILTIN_NAMES, PRESETS

    assert list(verb.BUILTIN_NAMES) == BUILTIN_NAMES
    assert list(verb.PRESET_NAMES) == list(PRESETS)


def test_cli_writes_a_dataset_and_reports_bad_input(tmp_path, capsys):
    out = tmp_path / "sim"
    code = main(
        [
            "simulate",
            str(out),
            "--structures",
            "builtin:ribosome,builtin:proteasome",
            "--n",
            "6",
            "--box",
            "16",
            "--voxel-size",
            "20",
            "--snr",
            "0.5",
            "2",
            "--tilt-max",
            "50",
            "60",
            "--seed",
            "3",
            "--no-progress",
        ]
    )
    assert code == 0
    table = pd.read_csv(out / "particles.csv")
    assert len(table) == 6 and set(table["class_name"]) <= {"ribosome", "proteasome"}
    assert table["snr"].between(0.5, 2).all() and table["tilt_max"].between(50, 60).all()
    config = tmp_path / "sim.json"
    config.write_text(json.dumps({"fidelity": "tilt", "crowding": 0.5}))
    code = main(
        [
            "simulate",
            str(tmp_path / "sim2"),
            "--structures",
            "builtin:globular,builtin:p97",  # two classes: one is refused
            "--n",
            "2",
            "--box",
            "16",
            "--voxel-size",
            "20",
            "--config",
            str(config),
            "--no-progress",
        ]
    )
    assert code == 0
    assert json.loads((tmp_path / "sim2" / "dataset.json").read_text())["simulation"]["fidelity"] == "tilt"
    capsys.readouterr()
    assert main(["simulate", str(tmp_path / "bad"), "--structures", str(tmp_path / "nope.mrc")]) == 2
    assert "cryoshift: error:" in capsys.readouterr().err
    assert main(["simulate", str(tmp_path / "bad"), "--preset", "papr"]) == 2
    config.write_text(json.dumps({"snr": [1, 2], "wedge": 3}))
    assert main(["simulate", str(tmp_path / "bad"), "--config", str(config)]) == 2


def test_data_do_not_depend_on_the_number_of_threads(builtins16):
    """Threads change how a batch is chunked; every volume's noise has its own seed, so data stay put."""
    for preset, n in (("realistic", 70), ("realistic", 5), ("tilt", 5)):  # chunks of 32/35, 5/3, 5/3
        outs = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            outs.append(Simulator(builtins16, PRESETS[preset], seed=3).sample(n)[0])
        torch.set_num_threads(1)
        # batched kernels may round differently for other batch sizes: equal to float precision
        assert torch.allclose(outs[0], outs[1], rtol=0, atol=1e-5 * float(outs[0].abs().max())), preset


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_matches_cpu_parameters_and_physics(builtins16):
    cfg = SimulationConfig(snr=(1.0, 1.0), tilt_max=(60.0, 60.0))
    cpu = Simulator(builtins16, cfg, seed=0).sample(32)
    gpu = Simulator(builtins16, cfg, device="cuda", seed=0).sample(32)
    assert gpu[0].device.type == "cuda" and cpu[2] == gpu[2]  # same parameters drawn
    clean_cpu = Simulator(builtins16, cfg.replace(ctf=True), seed=0)
    p = clean_cpu.draw(8)
    a = clean_cpu.render(p, noise=False)
    b = Simulator(builtins16, cfg, device="cuda", seed=0).render(p, noise=False).cpu()
    assert torch.allclose(a, b, atol=1e-4 * float(a.abs().max()))


def test_particle_densities_are_the_clean_particle_alone(builtins16):
    # Dense supervision's answer: the particle as rotated, shifted and varied into the box, without
    # neighbours, CTF, wedge or noise, averaged onto a coarse grid; the volumes do not change.
    cfg = PRESETS["broad"]  # crowding, shifts and structural variants all on
    plain, _, plain_rows = Simulator(builtins16, cfg, seed=3).sample(8)
    grid = torch.full((8, 4, 4, 4), float("nan"))
    vol, _, rows = Simulator(builtins16, cfg, seed=3).sample(8, particles=grid)
    assert torch.equal(vol, plain) and rows == plain_rows
    replay = Simulator(builtins16, cfg, seed=3)
    p = replay.draw(8)
    neighbours, _, _ = replay._neighbours(p)
    alone = replay._density(p, torch.empty(0, 9, dtype=torch.float64))
    expected = torch.nn.functional.adaptive_avg_pool3d(alone.unsqueeze(1), 4).squeeze(1)
    assert torch.allclose(grid, expected, atol=1e-6)
    crowded = sorted({int(i) for i in neighbours[:, 0]})
    assert crowded, "the broad preset should crowd some of 8 volumes"
    with_neighbours = replay._density(p, neighbours)
    pooled = torch.nn.functional.adaptive_avg_pool3d(with_neighbours.unsqueeze(1), 4).squeeze(1)
    assert not torch.allclose(grid[crowded], pooled[crowded], atol=1e-3)
