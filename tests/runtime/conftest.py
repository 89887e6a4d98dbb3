"""Tiny real models and data for the runtime tests (16^3 boxes, dozens of volumes).

The test model is a genuine ONNX graph carrying cryoshift metadata (tests/support/tiny_onnx.py),
so the runtime is exercised exactly as with an exported network while the tests stay fast and
need no torch. ``rng`` and ``tomo`` are the small files of the reader tests (mrc, crop, picks).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tiny_onnx import BOX, CLASSES, VOXEL, build_model, make_volumes, run_onnx

from cryoshift.runtime.mrc import write_volume


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model(tmp_path_factory.mktemp("model") / "model.onnx")


@pytest.fixture(scope="session")
def light_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model(tmp_path_factory.mktemp("model_light") / "light.onnx", contrast="light")


def expected_scores(path: Path, volumes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated probabilities and shift scores computed independently of the runtime."""
    from cryoshift.runtime.metadata import read_onnx_metadata

    meta = read_onnx_metadata(path)
    logits, feats = run_onnx(path, volumes)
    z = logits.astype(np.float64) / meta.temperature
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    mu, var = np.array(meta.feature_mean), np.array(meta.feature_var)
    shift = np.sqrt(np.mean((feats - mu) ** 2 / var, axis=1)) / meta.shift_reference
    return p, shift


@pytest.fixture(scope="session")
def helpers():
    """The builders above, for test modules (pytest's importlib mode cannot import conftest)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        build_model=build_model,
        run_onnx=run_onnx,
        make_volumes=make_volumes,
        expected_scores=expected_scores,
        BOX=BOX,
        VOXEL=VOXEL,
        CLASSES=CLASSES,
    )


def make_inputs(root: Path, seed: int = 0) -> dict[str, object]:
    """Every input kind, good and bad, in one folder; returns paths and the volumes behind the ids.

    files/          8 single-volume MRCs + corrupt, wrong-box and NaN files
    stack.mrcs      12-volume stack
    listing.star    rlnImageName rows pointing at 3 stack slices and 2 single files
    tomos/          two tomograms; picks.star (RELION 5 style) with 6 picks, one outside
    dataset/        a 5-volume cryoshift dataset directory
    """
    import pandas as pd
    import starfile

    from cryoshift.runtime.dataset import write_dataset
    from cryoshift.runtime.mrc import write_stack, write_volume

    vols = make_volumes(60, BOX, seed)
    expected: dict[str, np.ndarray] = {}
    files = root / "files"
    files.mkdir(parents=True)
    for i in range(8):
        p = files / f"sub_{i:02d}.mrc"
        write_volume(p, vols[i], voxel_size=VOXEL)
        expected[str(p)] = vols[i]
    (files / "corrupt.mrc").write_bytes(b"\x00" * 2000)
    write_volume(files / "wrong_box.mrc", np.zeros((20, 20, 20), np.float32), voxel_size=VOXEL)
    bad = vols[8].copy()
    bad[1, 2, 3] = np.nan
    write_volume(files / "has_nan.mrc", bad, voxel_size=VOXEL)
    stack = root / "stack.mrcs"
    write_stack(stack, vols[10:22], voxel_size=VOXEL)
    for i in range(12):
        expected[f"{i + 1:06d}@{stack}"] = vols[10 + i]
    listing = root / "listing.star"
    starfile.write(
        {
            "particles": pd.DataFrame(
                {
                    "rlnImageName": [
                        "000002@stack.mrcs",
                        "000005@stack.mrcs",
                        "000012@stack.mrcs",
                        "files/sub_00.mrc",
                        "files/sub_01.mrc",
                    ]
                }
            )
        },
        listing,
    )
    tomos = root / "tomos"
    tomos.mkdir()
    rng = np.random.default_rng(seed + 7)
    tomo_arrays = {}
    for name in ("TS_01", "TS_02"):
        t = rng.normal(0, 1, (24, 48, 40)).astype(np.float32)
        write_volume(tomos / f"{name}.mrc", t, voxel_size=VOXEL)
        tomo_arrays[name] = t
    picks = pd.DataFrame(
        {
            "rlnTomoName": ["TS_01", "TS_01", "TS_01", "TS_02", "TS_02", "TS_02"],
            "rlnCoordinateX": [20.0, 8.0, 39.0, 20.0, 30.0, 55.0],
            "rlnCoordinateY": [24.0, 8.0, 47.0, 10.0, 30.0, 5.0],
            "rlnCoordinateZ": [12.0, 8.0, 23.0, 12.0, 12.0, 5.0],
        }
    )
    picks_path = root / "picks.star"
    starfile.write({"particles": picks}, picks_path)
    from cryoshift.runtime.crop import crop_box

    for row in picks.itertuples(index=False):
        t = tomo_arrays[row.rlnTomoName]
        xyz = (row.rlnCoordinateX, row.rlnCoordinateY, row.rlnCoordinateZ)
        if xyz[0] < t.shape[2] and xyz[1] < t.shape[1]:
            expected[f"{row.rlnTomoName}:{xyz[0]:.1f},{xyz[1]:.1f},{xyz[2]:.1f}"] = crop_box(t, xyz, BOX)[0]
    dataset = root / "dataset"
    write_dataset(dataset, vols[30:35], voxel_size=VOXEL)
    for i in range(5):
        expected[f"{i + 1:06d}@{dataset / 'volumes.mrc'}"] = vols[30 + i]
    return {
        "root": root,
        "files": files,
        "stack": stack,
        "listing": listing,
        "tomos": tomos,
        "picks": picks_path,
        "dataset": dataset,
        "expected": expected,
        "bad": {
            str(files / "corrupt.mrc"),
            str(files / "wrong_box.mrc"),
            str(files / "has_nan.mrc"),
            "TS_02:55.0,5.0,5.0",
        },
    }


@pytest.fixture(scope="session")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    return make_inputs(tmp_path_factory.mktemp("inputs"))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def tomo(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, np.ndarray]:
    """A 20 (Z) x 24 (Y) x 28 (X) float32 tomogram with 4.5 A voxels, written as MRC."""
    data = rng.normal(size=(20, 24, 28)).astype(np.float32)
    path = write_volume(tmp_path / "tomo.mrc", data, voxel_size=4.5)
    return path, data
