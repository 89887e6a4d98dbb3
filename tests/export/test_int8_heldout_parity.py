"""The int8 parity check runs on volumes held out from calibration (facility report, finding 12).

Calibration and parity volumes were two draws of one data set with the same seed (the run's target
by default, or ``--calibration X --parity-data X``): 46 of 64 parity volumes were calibration
volumes, so "parity ok" was partly in-sample. Now they are disjoint; data too small to hold any out
is said to be in-sample, in export.json and in a warning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cryoshift.export.api import PARITY_VOLUMES
from cryoshift.export.data import find_volumes, volume_digests
from cryoshift.export.int8 import (
    CALIBRATION_VOLUMES,
    HELD_OUT,
    IN_SAMPLE,
    int8_parity_split,
    prepare_int8,
)
from cryoshift.export.job import ExportJob
from cryoshift.runtime.cli import main
from cryoshift.runtime.dataset import write_dataset

VOXEL = 13.68


def _metadata():
    from cryoshift.runtime.metadata import ModelMetadata

    return ModelMetadata(
        class_names=["sphere", "rod"],
        box_size=16,
        voxel_size=VOXEL,
        temperature=1.3,
        method="cryoshift",
        feature_mean=[0.0] * 32,
        feature_var=[1.0] * 32,
    )


def _job(tmp_path: Path, target: Path) -> ExportJob:
    """An export job as export_checkpoint makes it: parity volumes read as it reads them."""
    config = {"target": str(target)}
    volumes, source = find_volumes(16, None, config, limit=PARITY_VOLUMES)
    return ExportJob(
        tmp_path / "model.pt", config, _metadata(), tmp_path / "out", None, volumes, source, print
    )


@pytest.mark.parametrize(
    ("n", "calibrated", "parity"), [(200, CALIBRATION_VOLUMES, PARITY_VOLUMES), (40, 20, 20)]
)
def test_calibration_and_parity_volumes_of_one_data_set_are_disjoint(
    make_blobs, tmp_path: Path, n: int, calibrated: int, parity: int
) -> None:
    vols, _ = make_blobs(n, seed=5, offset=500.0, scale=30.0)
    job = _job(tmp_path, write_dataset(tmp_path / "target", vols, voxel_size=VOXEL))
    prepare_int8(job)
    index, kind, overlap = int8_parity_split(job)
    assert (len(job.calibration_volumes), len(index), kind, overlap) == (calibrated, parity, HELD_OUT, 0)
    assert not set(volume_digests(job.calibration_volumes)) & set(volume_digests(job.volumes[index]))
    everything = set(volume_digests(vols))  # real volumes of the data set, not stand-ins
    assert set(volume_digests(job.calibration_volumes)) <= everything


@pytest.fixture(scope="module")
def runs(tiny_model, make_blobs, tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Training run directories whose config names a target of 40 and of 12 volumes."""
    from cryoshift.training.checkpoint import save_checkpoint

    out = {}
    for n in (40, 12):
        root = Path(tmp_path_factory.mktemp(f"run{n}"))
        vols, _ = make_blobs(n, seed=21, offset=500.0, scale=30.0)
        target = write_dataset(root / "target", vols, voxel_size=VOXEL)
        save_checkpoint(
            root / "run" / "model.pt",
            tiny_model,
            "cryonet-small",
            dict(tiny_model.config),
            _metadata(),
            epoch=3,
            config={"target": str(target)},
        )
        out[n] = root
    return out


@pytest.mark.parametrize(("n", "expected"), [(40, (20, 20, HELD_OUT, 0)), (12, (12, 12, IN_SAMPLE, 12))])
def test_export_json_records_both_counts_and_whether_parity_was_held_out(
    runs: dict[int, Path], n: int, expected: tuple, capsys: pytest.CaptureFixture[str]
) -> None:
    root = runs[n]
    assert main(["export", str(root / "run"), "-o", str(root / "deploy"), "--int8", "--no-progress"]) == 0
    captured = capsys.readouterr()
    report = json.loads((root / "deploy" / "export.json").read_text())
    record = report["int8_calibration"]
    got = (
        record["calibration_volumes"],
        record["parity_volumes"],
        record["parity"],
        record["parity_volumes_also_calibrated"],
    )
    assert got == expected
    (int8,) = [r for r in report["results"] if r["format"] == "int8"]
    assert int8["parity"]["n"] == expected[1]
    assert expected[2] in int8["parity"]["source"]
    assert any(expected[2] in note for note in int8["notes"])
    fp32 = next(r for r in report["results"] if r["format"] == "onnx")
    assert fp32["parity"]["n"] == n  # the other formats still check every parity volume
    printed = "in-sample" in captured.out + captured.err
    assert printed == (expected[2] == IN_SAMPLE)  # a warning says so; held-out needs no warning
    assert np.isfinite(int8["parity"]["max_abs_logit_diff"])
