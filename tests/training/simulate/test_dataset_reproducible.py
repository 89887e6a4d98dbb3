"""A simulated dataset is a function of (structures, config, seed, n): batch size, threads and the
time of the run change no byte of it (``cryoshift simulate --seed``'s promise)."""

from __future__ import annotations

from pathlib import Path

import mrcfile
import pandas as pd
import pytest
import torch

from cryoshift.runtime.errors import InputError
from cryoshift.training.simulate import PRESETS, Simulator, Structures, load_structures, simulate_dataset

FILES = ("volumes.mrc", "particles.csv", "dataset.json")


@pytest.fixture(scope="module")
def three16() -> Structures:
    """The tester's case: ribosome, proteasome and chaperonin at 16^3, 20 A."""
    names = ("ribosome", "proteasome", "chaperonin")
    return load_structures([f"builtin:{name}" for name in names], 16, 20.0, seed=0)


def _simulate(
    folder: Path, structures: Structures, preset: str, n: int, batch_size: int, threads: int = 1
) -> Path:
    torch.set_num_threads(threads)
    try:
        return simulate_dataset(
            folder, structures, PRESETS[preset], n, seed=0, batch_size=batch_size, progress=False
        )
    finally:
        torch.set_num_threads(1)


def _bytes(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in FILES}


@pytest.mark.parametrize(
    ("preset", "n", "runs"),
    [
        # batch sizes 1, 7 and the default, and two threads: the tester's 60 volumes of three classes
        ("paper", 60, ((256, 1), (7, 1), (1, 1), (7, 2), (256, 2))),
        # crowding and structural variants over two 256-volume banks of variants
        ("broad", 300, ((256, 1), (7, 2), (100, 1))),
        # the tilt-series fidelity, rendered in groups of 8
        ("tilt", 20, ((256, 1), (3, 1), (5, 2))),
    ],
)
def test_batch_size_and_threads_change_no_byte(three16, tmp_path, preset, n, runs) -> None:
    # Each chunk of --batch-size volumes drew its parameters as columns from one generator, so the
    # batch (lowered by simulate to fit the memory free) changed the classes and volumes (26/19/15
    # against 24/22/14 labels for batch 7), and --threads changed the render chunks (6e-8).
    first = _bytes(_simulate(tmp_path / "ref", three16, preset, n, *runs[0]))
    for i, (batch_size, threads) in enumerate(runs[1:]):
        other = _bytes(_simulate(tmp_path / str(i), three16, preset, n, batch_size, threads))
        for name in FILES:
            assert other[name] == first[name], (preset, batch_size, threads, name)


def test_two_identical_runs_give_identical_bytes(three16, tmp_path) -> None:
    # mrcfile stamped the creation time into the stack's label: no two runs were byte-identical
    a = _simulate(tmp_path / "a", three16, "paper", 8, 256)
    b = _simulate(tmp_path / "b", three16, "paper", 8, 256)
    assert _bytes(a) == _bytes(b)
    with mrcfile.open(a / "volumes.mrc") as mrc:
        labels = [bytes(label).rstrip(b"\0 ") for label in mrc.header.label[: mrc.header.nlabl]]
    assert len(labels) == 1 and labels[0].startswith(b"cryoshift ") and labels[0].endswith(b", seed 0")


def test_a_smaller_dataset_is_the_start_of_a_larger_one(three16, tmp_path) -> None:
    # whole blocks are drawn: a smaller dataset of the same seed has the same classes and parameters
    short = pd.read_csv(_simulate(tmp_path / "short", three16, "broad", 40, 256) / "particles.csv")
    long = pd.read_csv(_simulate(tmp_path / "long", three16, "broad", 60, 256) / "particles.csv")
    pd.testing.assert_frame_equal(short, long.iloc[:40])
    other = Simulator(three16, PRESETS["broad"], seed=1).sample_cells([(0, 40)])[2]
    assert [r["rot"] for r in other] != short["rot"].tolist()  # and another seed other ones


def test_cells_out_of_order_are_drawn_again_the_same(three16) -> None:
    # an earlier block asked for after a later one is drawn again from the start of the stream
    in_order = Simulator(three16, PRESETS["broad"], seed=2)
    cells = in_order.dataset_cells(300)
    expected = [in_order.sample_cells([cell]) for cell in cells]
    shuffled = Simulator(three16, PRESETS["broad"], seed=2)
    for i in (9, 2, 8, 0):
        vol, labels, rows = shuffled.sample_cells([cells[i]])
        assert torch.equal(vol, expected[i][0]) and torch.equal(labels, expected[i][1])
        assert rows == expected[i][2]


def test_datasets_leave_the_training_draws_alone(three16) -> None:
    # train's on-the-fly draws (sample) keep their stream: drawing dataset volumes in between
    # neither consumes the simulator's generators nor leaves another bank of variants behind
    cfg = PRESETS["broad"]
    plain = Simulator(three16, cfg, seed=3)
    expected = [plain.sample(6) for _ in range(2)]
    mixed = Simulator(three16, cfg, seed=3)
    got = [mixed.sample(6)]
    mixed.sample_cells(mixed.dataset_cells(40))
    got.append(mixed.sample(6))
    for (va, la, ra), (vb, lb, rb) in zip(expected, got, strict=True):
        assert torch.equal(va, vb) and torch.equal(la, lb) and ra == rb


def test_dataset_cells_are_fixed_groups_within_blocks(three16) -> None:
    sim = Simulator(three16, PRESETS["paper"], seed=0)  # 32 volumes of 16^3 per group
    cells = sim.dataset_cells(600)
    assert cells[:2] == [(0, 32), (32, 64)] and (224, 256) in cells and (256, 288) in cells
    assert cells[-1] == (576, 600) and all(a // 256 == (b - 1) // 256 for a, b in cells)
    with pytest.raises(InputError, match="consecutive runs"):
        sim.sample_cells([(0, 32), (40, 50)])
