"""The CPU chunk of the simulator shrinks with the box: a thread rendered 32 volumes at once at any
box, which at --box 256 is 32 x 7 working volumes of 64 MiB (14 GiB) per thread, and the memory
checks counted as much. What the chunks change in the volumes (float rounding only) is measured."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cryoshift.training.simulate import PRESETS, Simulator, builtin_structures  # noqa: E402
from cryoshift.training.simulate.memory import batch_memory, in_flight  # noqa: E402

BOX = 40  # a box above 32, where the chunks shrink (16 volumes; tilt 4), still quick
N = 20  # more than a chunk at BOX


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def structures():
    return builtin_structures(BOX, 10.0, seed=0, names=["rubisco", "p97", "membrane"])


def test_the_cpu_chunk_holds_as_many_voxels_at_any_box() -> None:
    """32 volumes (tilt 8) at --box 32 and below, as before; fewer at larger boxes, one at least."""
    assert [Simulator.cpu_chunk("fast", box) for box in (8, 16, 32, 40, 64, 128, 256, 512)] == [
        32,
        32,
        32,
        16,
        4,
        1,
        1,
        1,
    ]
    assert [Simulator.cpu_chunk("tilt", box) for box in (16, 32, 40, 64, 256)] == [8, 8, 4, 1, 1]
    for box in (32, 48, 64, 100):  # a chunk's voxels stay within those of 32 volumes of 32^3
        assert Simulator.cpu_chunk("fast", box) * box**3 <= 32 * 32**3


def test_the_memory_checks_count_the_smaller_chunks() -> None:
    """At --box 256 on 16 threads 16 volumes are in flight, not 512: a batch of 64 volumes is
    estimated at 64 + 16 x 7 volumes of 64 MiB (11 GiB), where 64 x 8 (32 GiB) was counted."""
    config = PRESETS["paper"]
    assert in_flight(64, "fast", "cpu", 16, 256) == 16
    assert in_flight(64, "fast", "cpu", 16, 32) == 64  # small boxes: as before
    assert in_flight(64, "fast", "cuda", 16, 256) == 64  # a GPU renders the batch at once
    need = batch_memory(64, 256, 2, config, "cpu", threads=16)
    assert need.host == (64 + 16 * 7) * 256**3 * 4


def _sample(cls: type[Simulator], structures, preset: str, extra: dict) -> tuple[np.ndarray, list[dict]]:
    sim = cls(structures, PRESETS[preset].replace(**extra), seed=3)
    volumes, _labels, rows = sim.sample(N)
    return volumes.numpy(), rows


class _PerVolume(Simulator):
    CPU_CHUNK = CPU_CHUNK_TILT = 1


class _OneChunk(Simulator):
    CHUNK_BOX = BOX  # 32 (tilt 8) volumes per chunk at BOX: the batch in one chunk


@pytest.mark.parametrize(
    ("preset", "extra"),
    [("paper", {}), ("realistic", {"crowding": 1.0}), ("tilt", {}), ("broad", {})],
)
def test_the_volumes_of_a_seed_do_not_depend_on_the_chunks_but_for_rounding(
    preset: str, extra: dict, structures
) -> None:
    """A seed gives the same parameters, noise and neighbours whatever the chunks (per-volume noise
    seeds on the CPU), and the same chunks give bit-identical volumes. Other chunks give volumes
    that differ only by float rounding (a batched FFT rounds differently from one volume's: a few
    1e-6 of the values, measured), so a --box above 32 simulates what 32-volume chunks did; here
    the old single chunk (_OneChunk) even gives the same bits, which is not promised."""
    chunked, rows = _sample(Simulator, structures, preset, extra)
    again, rows_again = _sample(Simulator, structures, preset, extra)
    assert np.array_equal(chunked, again) and rows == rows_again  # deterministic
    assert Simulator.cpu_chunk(PRESETS[preset].fidelity, BOX) < N  # several chunks here
    peak = float(np.abs(chunked).max())
    for cls in (_PerVolume, _OneChunk):
        other, other_rows = _sample(cls, structures, preset, extra)
        assert other_rows == rows  # the draws are the chunks' own business
        assert np.abs(other - chunked).max() <= 1e-4 * peak, (
            cls.__name__,
            np.abs(other - chunked).max(),
            peak,
        )
