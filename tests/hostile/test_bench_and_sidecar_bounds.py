"""Unbounded numbers and untyped text reaching ``cryoshift bench`` and an engine's sidecar.

bench: --box, --n, --batch-size and --repeats have upper bounds (--box 10^108 was an OverflowError
traceback, --repeats 10^23 timed forever), the batch is capped at --n, and a --json that cannot be
written is named. Sidecar: box_size is bounded by the contract's MAX_BOX (1e308 overflowed bench's
memory check) and the engine block's text fields must be text of their kind (a null onnx_sha256
became the lineage "None", a 2 MB gpu_name a 2-million-character error line).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hostile_inputs import BOX, VOXEL, Capsys, assert_error, run_cli

from cryoshift.runtime.contract import MAX_BOX
from cryoshift.runtime.engine_sidecar import read_engine_sidecar, sidecar_path, write_engine_sidecar
from cryoshift.runtime.errors import InputError
from cryoshift.runtime.metadata import ModelMetadata

SMALL = ["--n", 2, "--repeats", 1, "--batch-size", 2, "--workers", 1, "-b", "cpu"]


def _bench(model: Path, **options: object) -> list[object]:
    """bench argv: SMALL with ``options`` (``batch_size=4`` -> ``--batch-size 4``) replaced."""
    argv: list[object] = ["bench", model]
    given = {f"--{k.replace('_', '-')}": v for k, v in options.items()}
    for flag, value in zip(SMALL[::2], SMALL[1::2], strict=True):
        argv += [flag, given.pop(flag, value)]
    for flag, value in given.items():
        argv += [flag, value]
    return argv


# ---------------------------------------------------------------------------------------------
# bench options


@pytest.mark.parametrize(
    "option,value",
    [
        ("box", 10**108),  # OverflowError traceback in the memory check
        ("box", 99999999999999999999999),  # a 57-digit PiB figure
        ("box", MAX_BOX + 1),
        ("repeats", 99999999999999999999999),  # timed forever
        ("n", 10**9),
        ("batch_size", 10**9),
    ],
)
def test_bench_refuses_unbounded_options(
    option: str, value: int, tmp_path: Path, capsys: Capsys, model: Path
) -> None:
    flag = f"--{option.replace('_', '-')}"
    line = assert_error(run_cli(_bench(model, **{option: value}), capsys), flag)
    # the range, not a memory figure ("--n 1000000000 ... needs 44.7 TiB") nor a traceback
    assert "less than or equal to" in line and len(line) < 300, line


def test_run_bench_refuses_unbounded_options(model: Path) -> None:
    """benchmarks/ scripts call run_bench directly, past the command's ranges."""
    from cryoshift.runtime.bench import run_bench

    with pytest.raises(
        InputError, match=f"--box must be a whole number from 4 to {MAX_BOX}, not a number of"
    ):
        run_bench(model, "cpu", box=10**108)
    with pytest.raises(InputError, match="--repeats must be a whole number from 1 to 100, not 0"):
        run_bench(model, "cpu", repeats=0)


def test_bench_help_shows_the_bounds(capsys: Capsys) -> None:
    _, out, _ = run_cli(["bench", "--help"], capsys)
    assert f"{MAX_BOX}" in out and "8192" in out and "100000" in out, out


def test_bench_caps_the_batch_at_n(tmp_path: Path, capsys: Capsys, model: Path) -> None:
    """--n 2 --batch-size 4096: the in-memory batch was 4096 boxes (--batch-size 100000 took over
    a minute for 4 subtomograms); it is 2, and the figures say so."""
    out = tmp_path / "bench.json"
    code, _, err = run_cli([*_bench(model, batch_size=4096), "--json", out], capsys)
    assert code == 0, err
    assert json.loads(out.read_text())["batch_size"] == 2


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_bench_json_on_a_full_disk_is_named(capsys: Capsys, model: Path) -> None:
    line = assert_error(run_cli([*_bench(model), "--json", "/dev/full"], capsys), "/dev/full")
    assert "is a device, not a regular file" in line, line
    assert Path("/dev/full").is_char_device()  # written to, never replaced by a file


# ---------------------------------------------------------------------------------------------
# engine sidecars


@pytest.fixture
def engine(tmp_path: Path) -> Path:
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(b"hashed, not loaded")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\x00serialised engine")
    meta = ModelMetadata(["a", "b"], box_size=BOX, voxel_size=VOXEL)
    write_engine_sidecar(engine, meta, "NVIDIA H100 80GB HBM3", "10.9.0", onnx_file, (1, 8, 8))
    return engine


def _edit(engine: Path, where: str, key: str, value: Any) -> Path:
    side = sidecar_path(engine)
    data = json.loads(side.read_text())
    (data["engine"] if where == "engine" else data)[key] = value
    side.write_text(json.dumps(data))
    return side


@pytest.mark.parametrize("value", [1e308, 10**9, MAX_BOX + 1])
def test_sidecar_box_size_is_bounded(value: float, engine: Path) -> None:
    side = _edit(engine, "top", "box_size", value)
    with pytest.raises(InputError) as info:
        read_engine_sidecar(engine)
    message = str(info.value)
    assert message.startswith(str(side)) and f"box_size must be a whole number from 1 to {MAX_BOX}" in message
    assert len(message) < 300, message


def test_sidecar_box_size_in_range_is_read(engine: Path) -> None:
    _edit(engine, "top", "box_size", MAX_BOX)
    assert read_engine_sidecar(engine).metadata.box_size == MAX_BOX


@pytest.mark.parametrize(
    "key,value,words",
    [
        ("onnx_sha256", None, "64 hex digits"),  # became the lineage "None"
        ("onnx_sha256", "abc", "64 hex digits"),
        ("engine_sha256", None, "64 hex digits"),  # said the engine did not match
        ("engine_sha256", 5, "64 hex digits"),
        ("engine_sha256", [], "64 hex digits"),
        ("engine_sha256", {}, "64 hex digits"),
        ("precision", 5, "one of fp32, fp16, int8"),
        ("precision", "a\nb", "one of fp32, fp16, int8"),
        ("gpu_name", None, "non-empty line of text"),  # "built for GPU 'None'"
        ("gpu_name", 5, "non-empty line of text"),
        ("gpu_name", [], "non-empty line of text"),
        ("gpu_name", "x" * 2_000_000, "at most 255 characters"),  # a 2,000,197-character line
        ("gpu_name", "", "non-empty line of text"),
        ("tensorrt_version", "10.9\n0", "line of text"),
        ("onnx_file", 5, "one line of text"),
        ("compute_capability", None, "one line of text"),
    ],
)
def test_sidecar_text_fields_are_checked(key: str, value: Any, words: str, engine: Path) -> None:
    side = _edit(engine, "engine", key, value)
    with pytest.raises(InputError) as info:
        read_engine_sidecar(engine)
    message = str(info.value)
    assert message.startswith(str(side)) and f"invalid engine sidecar: engine.{key} must be" in message
    assert words in message and "\n" not in message and len(message) < 300, message


def test_sidecar_written_by_export_is_read(engine: Path) -> None:
    side = read_engine_sidecar(engine)
    assert side.precision == "fp32" and side.compute_capability == "" and side.onnx_file == "model.onnx"
    assert len(side.engine_sha256) == 64 and len(side.onnx_sha256) == 64
