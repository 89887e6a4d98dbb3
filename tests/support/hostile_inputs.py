"""Helpers of the hostile-input tests (tests/hostile/test_bad_*.py): run the real CLI in-process
and check its one-line refusals, and build hostile files by hand.

The contract under test is one line ``cryoshift: error: PATH: REASON`` on stderr and exit code 2
(never a traceback), or, in batch work, an errors-table row while the good items are still
classified. The fixtures they share (``model``, ``dataset``) are in tests/hostile/conftest.py.
"""

from __future__ import annotations

import contextlib
import os
import struct
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cryoshift.runtime.cli import main

BOX = 16
VOXEL = 10.0
Capsys = pytest.CaptureFixture[str]


def _to_stderr(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: object = None,
    line: str | None = None,
) -> None:
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def run_cli(argv: list[object], capsys: Capsys) -> tuple[int | str, str, str]:
    """Run the CLI in-process; an exception escaping ``main`` is what a user would see as a traceback."""
    capsys.readouterr()
    try:
        with warnings.catch_warnings():
            # As in a terminal: library warnings would print on stderr (pytest would hide them).
            warnings.simplefilter("default")
            for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.simplefilter("ignore", category)
            warnings.showwarning = _to_stderr
            code: int | str = main([str(a) for a in argv])
    except BaseException as exc:
        import traceback

        code = "uncaught " + "".join(traceback.format_exception_only(type(exc), exc)).strip()
    out, err = capsys.readouterr()
    return code, out, err


def assert_error(result: tuple[int | str, str, str], name: str | Path, code: int = 2) -> str:
    """Exit ``code``, exactly one stderr line starting 'cryoshift: error:', naming ``name``."""
    got, _out, err = result
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert got == code, f"exit {got!r}; stderr: {err!r}"
    assert "Traceback" not in err
    assert len(lines) == 1, f"stderr is not one line: {err!r}"
    assert lines[0].startswith("cryoshift: error: "), lines[0]
    assert str(name) in lines[0], f"{name} not named in {lines[0]!r}"
    return lines[0]


def raw_mrc(
    path: Path,
    nx: int = BOX,
    ny: int = BOX,
    nz: int = BOX,
    mode: int = 2,
    data: bytes | None = None,
    nsymbt: int = 0,
    cella: float | None = None,
    mx: int | None = None,
    ispg: int = 0,
    mz: int | None = None,
) -> Path:
    """A hand-made MRC2014 header (little-endian) followed by ``data`` (default: zeros of the right size)."""
    ints = np.zeros(56, "<i4")
    ints[:4] = [nx, ny, nz, mode]
    ints[7:10] = [mx if mx is not None else nx, ny, mz if mz is not None else nz]
    ints[16:19] = [1, 2, 3]
    ints[22], ints[23] = ispg, nsymbt
    head = bytearray(ints.tobytes())
    cell = cella if cella is not None else VOXEL * (mx if mx is not None else nx)
    head[40:52] = struct.pack("<3f", cell, VOXEL * ny, VOXEL * (mz if mz is not None else nz))
    head[52:64] = struct.pack("<3f", 90.0, 90.0, 90.0)
    head = head + bytes(1024 - len(head))
    head[208:212] = b"MAP "
    head[212:216] = b"\x44\x44\x00\x00"
    if data is None:
        itemsize = {0: 1, 1: 2, 2: 4, 6: 2, 12: 2}.get(mode, 4)
        data = bytes(max(nx * ny * nz * itemsize, 0))
    ext = bytes(nsymbt) if 0 < nsymbt <= 65536 else b""  # a lying nsymbt gets no bytes
    path.write_bytes(bytes(head) + ext + data)
    return path


def volumes(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, (n, BOX, BOX, BOX)).astype(np.float32)


def density_map(path: Path) -> Path:
    """A small Gaussian blob saved as an MRC map with a voxel size: a real simulate source."""
    import mrcfile

    grid = np.indices((BOX,) * 3) - BOX / 2
    blob = np.exp(-(grid**2).sum(0) / (2 * 2.5**2)).astype(np.float32)
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(blob)
        mrc.voxel_size = VOXEL
    return path


def errors_table(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "errors.csv")


def predictions(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "predictions.csv")


def put(p: Path, data: bytes | str) -> Path:
    """Write ``data`` to ``p`` and return ``p`` (for the tables of hostile files below)."""
    if isinstance(data, str):
        p.write_text(data)
    else:
        p.write_bytes(data)
    return p


def train_argv(source: Path, out: Path, *options: object) -> list[object]:
    """A one-epoch, one-thread, fp32 source-only run (options given later win)."""
    return [
        "train",
        "--source",
        source,
        "--out",
        out,
        "--epochs",
        1,
        "--backbone",
        "cryonet-small",
        "--method",
        "source-only",
        "--test-views",
        1,
        "--batch-size",
        4,
        "--device",
        "cpu",
        "--threads",
        1,
        "--no-amp",
        "--no-progress",
        *options,
    ]


def classify_in_two_shards(model: Path, folder: Path, out: Path) -> Path:
    """``out`` after classifying ``folder`` as two SLURM-style shards (``--shard i/2``), for merge."""
    for i in range(2):
        args = ["classify", model, folder, "-o", out, "-q", "-b", "cpu", "--shard", f"{i}/2"]
        assert main([str(a) for a in args]) == 0
    return out


@contextlib.contextmanager
def unblocked_fifos(*fifos: Path) -> Iterator[None]:
    """Guard of the named-pipe tests: a reader blocked on one of ``fifos`` (the bug they test for)
    gets end-of-file within seconds, so the test fails on its message instead of hanging. Opening
    the write end without blocking fails (ENXIO) while nobody reads, so a correct run is untouched."""
    stop = threading.Event()

    def unblock() -> None:
        while not stop.wait(2.0):
            for fifo in fifos:
                with contextlib.suppress(OSError):
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    guard = threading.Thread(target=unblock, daemon=True)
    guard.start()
    try:
        yield
    finally:
        stop.set()
        guard.join()


def without_dataset_voxel_size(dataset: Path, copy_to: Path, header_voxel: float) -> Path:
    """A copy of ``dataset`` whose dataset.json has no ``voxel_size`` and whose stack header says
    ``header_voxel``: the reader then stands on the header (runtime/dataset.py)."""
    import json
    import shutil

    data = Path(shutil.copytree(dataset, copy_to))
    meta = json.loads((data / "dataset.json").read_text())
    del meta["voxel_size"]
    (data / "dataset.json").write_text(json.dumps(meta))
    set_header_voxel(data, header_voxel)
    return data


def set_header_voxel(dataset: Path, voxel: float) -> None:
    """Rewrite the voxel size in a dataset's volumes.mrc header."""
    import mrcfile

    with mrcfile.open(dataset / "volumes.mrc", mode="r+") as mrc:
        mrc.voxel_size = voxel
