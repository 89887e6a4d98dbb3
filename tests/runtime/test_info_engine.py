"""``cryoshift info`` describes a TensorRT engine and its ``.engine.json`` sidecar (it refused both as
an unknown file type): the model, the GPU, TensorRT version, batch profile and precision it was
built for, and whether this machine could run it. No TensorRT here: the engine is a fake file and
the sidecar is written by the writer export uses (runtime/engine_sidecar.write_engine_sidecar)."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

from cryoshift.runtime.cli import main
from cryoshift.runtime.engine_sidecar import write_engine_sidecar
from cryoshift.runtime.errors import InputError
from cryoshift.runtime.info import NEEDS_TENSORRT, describe, validate
from cryoshift.runtime.metadata import read_onnx_metadata


@pytest.fixture
def engine(tmp_path: Path, model_path: Path) -> Path:
    onnx = shutil.copy(model_path, tmp_path / "model.onnx")
    path = tmp_path / "model.int8.engine"
    path.write_bytes(b"not a real engine")
    write_engine_sidecar(path, read_onnx_metadata(onnx), "NVIDIA H200", "10.9.0", onnx, (1, 8, 64))
    return path


@pytest.mark.parametrize("given", ["engine", "sidecar"])
def test_info_shows_the_model_and_the_engine_block(
    engine: Path, given: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = engine if given == "engine" else engine.with_name(engine.name + ".json")
    rows = dict(describe(path).rows)
    assert rows["classes"] == "3: ribosome, proteasome, junk"
    assert rows["box size"] == "16" and rows["voxel size (A)"] == "10"
    assert rows["built for GPU"] == "NVIDIA H200"
    assert rows["TensorRT"] == "10.9.0"
    assert rows["batch profile"] == "min 1, opt 8, max 64"
    assert rows["engine precision"] == "fp32"
    assert rows["engine file"].endswith("sha256 matches the sidecar")
    assert rows["this machine"].startswith(("no:", "yes", "GPU matches"))
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "NVIDIA H200" in out and "min 1, opt 8, max 64" in out


def test_this_machine_row_compares_the_gpu_without_tensorrt(
    engine: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed: the version is compared instead")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA H200'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    assert NEEDS_TENSORRT in dict(describe(engine).rows)["this machine"]
    smi.write_text("#!/bin/sh\necho 'NVIDIA A100-SXM4-80GB'\n")
    assert dict(describe(engine).rows)["this machine"] == "no: this machine's GPU is 'NVIDIA A100-SXM4-80GB'"


def test_an_engine_without_sidecar_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "lone.engine"
    path.write_bytes(b"garbage")
    with pytest.raises(InputError, match=r"no sidecar lone\.engine\.json next to the engine"):
        describe(path)
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no sidecar lone.engine.json" in err


def test_validate_names_an_engine_that_is_not_the_one_described(engine: Path) -> None:
    assert validate(engine) == []
    engine.write_bytes(b"another engine")
    (problem,) = validate(engine)
    assert "does not match its sidecar" in problem
    assert "does not match its sidecar" in dict(describe(engine).rows)["engine file"]
    engine.unlink()
    (problem,) = validate(engine.with_name(engine.name + ".json"))
    assert "engine file missing" in problem


# Not an engine, but info's other header fix (facility report 13): an MRC2014 header whose dmax <
# dmin says its statistics were not computed; they were shown as if they were (0 / -1 / -2).
@pytest.mark.parametrize(("dmin", "dmax", "shown"), [(0.0, -1.0, None), (-3.0, 5.0, "-3 / 5 / 0.5")])
def test_mrc_header_statistics_not_computed_are_not_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dmin: float, dmax: float, shown: str | None
) -> None:
    import mrcfile
    import numpy as np

    from cryoshift.runtime import info

    path = tmp_path / "big.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.ones((8, 8, 8), np.float32))
        mrc.voxel_size = 10.0
        mrc.header.dmin, mrc.header.dmax, mrc.header.dmean = dmin, dmax, 0.5 if shown else -2.0
    monkeypatch.setattr(info, "FULL_STATS_BYTES", 0)  # as for a tomogram over 256 MiB: header only
    value = dict(describe(path).rows)["min / max / mean"]
    missing = "not in header (--full computes them)"
    assert value == (f"{shown} (from header; --full computes them)" if shown else missing)
    assert dict(describe(path, full=True).rows)["min / max"] == "1 / 1"
