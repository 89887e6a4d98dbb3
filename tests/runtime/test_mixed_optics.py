"""--coordinate-pixel-size with RELION 4 optics groups, one of whose pixel size is damaged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hostile_inputs import Capsys, assert_error, put, run_cli
from relion5_project import star_loop
from tiny_onnx import VOXEL

from cryoshift.runtime.mrc import write_volume

LABELS = ("rlnTomoName", "rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ", "rlnOpticsGroup")


def _picks(path: Path, sizes: list[str]) -> Path:
    """One pick per optics group of TS_01, data_optics stating ``sizes`` (as written)."""
    optics = star_loop(
        "optics",
        ("rlnOpticsGroup", "rlnTomoTiltSeriesPixelSize"),
        [f"{i + 1} {s}" for i, s in enumerate(sizes)],
    )
    rows = [f"TS_01 {20 + i} 24 12 {i + 1}" for i in range(len(sizes))]
    return put(path, optics + star_loop("particles", LABELS, rows))


def _tomogram(path: Path) -> Path:
    write_volume(path, np.random.default_rng(0).normal(size=(24, 48, 40)).astype(np.float32), VOXEL)
    return path


def test_a_group_without_a_usable_pixel_size_is_said_as_such(
    model_path, tmp_path: Path, capsys: Capsys
) -> None:
    """The refusal showed such a group as "group 2 nan A", as if nan were its pixel size."""
    tomo = _tomogram(tmp_path / "TS_01.mrc")
    star = _picks(tmp_path / "mixed.star", ["5.0", "nan", "7.5"])
    argv = ["classify", model_path, star, "-t", tomo, "-o", tmp_path / "o", "-b", "cpu"]
    line = assert_error(run_cli([*argv, "--coordinate-pixel-size", 5], capsys), star)
    assert "group 1 5 A, group 2 no usable pixel size ('nan'), group 3 7.5 A" in line, line
    assert "nan A" not in line, line


def test_damaged_groups_alone_are_not_mixed_pixel_sizes(model_path, tmp_path: Path, capsys: Capsys) -> None:
    """One usable size beside damaged ones contradicts no --coordinate-pixel-size (without it those
    groups' picks fail, offering the option): classified, not refused as "group 2 nan A"."""
    tomo = _tomogram(tmp_path / "TS_01.mrc")
    star = _picks(tmp_path / "one.star", ["5.0", "nan"])
    code, _, err = run_cli(
        [
            "classify",
            model_path,
            star,
            "-t",
            tomo,
            "-o",
            tmp_path / "o",
            "-b",
            "cpu",
            "--coordinate-pixel-size",
            5,
        ],
        capsys,
    )
    assert code == 0, err
