"""``simulate_dataset`` from Python holds the OUT_DIR lock that ``cryoshift simulate`` holds.

Two calls into one folder (two threads, two notebooks) both returned and left a dataset of one
seed's labels over both seeds' volumes; the lock lived only in the CLI. Real simulations of a
few 16^3 volumes, real locks.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from cryoshift.runtime.errors import InputError
from cryoshift.runtime.lock import SIMULATE_LOCK, FolderLock
from cryoshift.training.simulate import PRESETS, Structures, load_structures, simulate_dataset
from cryoshift.training.simulate.dataset import simulate_lock

FILES = ("volumes.mrc", "particles.csv", "dataset.json")


@pytest.fixture(scope="module")
def two16() -> Structures:
    return load_structures(["builtin:ribosome", "builtin:proteasome"], 16, 20.0)


def _simulate(out: Path, structures: Structures, n: int = 6, seed: int = 0) -> Path:
    return simulate_dataset(out, structures, PRESETS["paper"], n, seed=seed, batch_size=32, progress=False)


def _bytes(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in FILES}


def test_a_call_into_a_folder_another_simulate_is_writing_is_refused(
    tmp_path: Path, two16: Structures
) -> None:
    """A simulate run holds the folder (here: its real lock, as a `cryoshift simulate` in another
    process would): the library call is refused naming its pid, and writes nothing."""
    out = tmp_path / "sim"
    out.mkdir()
    with FolderLock(out, SIMULATE_LOCK, "simulate run", "OUT_DIR"), pytest.raises(InputError) as refused:
        _simulate(out, two16)
    message = str(refused.value)
    assert f"another simulate run (pid {os.getpid()}) is writing to this folder" in message, message
    assert "choose another OUT_DIR" in message, message
    assert sorted(p.name for p in out.iterdir()) == [SIMULATE_LOCK]
    assert (_simulate(out, two16) / "dataset.json").is_file()  # free again


def test_a_call_while_another_thread_holds_the_folder_is_refused(tmp_path: Path, two16: Structures) -> None:
    """The lock the library takes refuses another thread of the same process (a notebook's
    background job), while the thread holding it (the CLI: lock, checks, then the writing) goes on."""
    out = tmp_path / "sim"
    errors: list[BaseException] = []

    def other() -> None:
        try:
            _simulate(out, two16, seed=1)
        except BaseException as exc:
            errors.append(exc)

    with simulate_lock(out):
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert len(errors) == 1 and isinstance(errors[0], InputError), errors
        assert "another simulate run" in str(errors[0]) and not (out / "volumes.mrc").exists()
        _simulate(out, two16)  # the holding thread itself writes under its lock
    assert (out / "dataset.json").is_file()


def test_two_threads_into_one_folder_leave_one_whole_dataset(tmp_path: Path, two16: Structures) -> None:
    """The tester's case: two seeds simulated at once into one folder. Either one is refused (they
    overlapped) or they ran one after the other; in both cases the folder holds exactly the
    dataset its dataset.json names, byte for byte (it held a mix of both seeds' volumes)."""
    n = 128
    clean = {seed: _bytes(_simulate(tmp_path / f"clean{seed}", two16, n, seed)) for seed in (0, 1)}
    out = tmp_path / "shared"
    start = threading.Barrier(2)
    refused: list[InputError] = []

    def run(seed: int) -> None:
        start.wait()
        try:
            _simulate(out, two16, n, seed)
        except InputError as exc:
            refused.append(exc)

    threads = [threading.Thread(target=run, args=(seed,)) for seed in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(refused) <= 1, refused
    for exc in refused:
        assert "another simulate run" in str(exc), exc
    seed = json.loads((out / "dataset.json").read_text())["seed"]
    got = _bytes(out)
    for name in FILES:
        if name == "dataset.json":
            continue  # records the folder it was written to
        assert got[name] == clean[seed][name], f"{name} is not seed {seed}'s"
