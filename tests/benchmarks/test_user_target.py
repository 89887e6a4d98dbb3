"""A user's labelled experimental set as a benchmark target: dataset directory or picks + tomogram."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import domain_data

from cryoshift.runtime.dataset import read_dataset, write_dataset
from cryoshift.runtime.errors import InputError
from cryoshift.runtime.mrc import write_volume

CLASSES = ["a", "b", "c"]


def test_labelled_dataset_is_split_in_disjoint_halves(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    volumes = rng.normal(size=(10, 16, 16, 16)).astype(np.float32)
    volumes[:, 0, 0, 0] = np.arange(10)  # tag each volume
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    src = write_dataset(tmp_path / "mine", volumes, labels, class_names=CLASSES, voxel_size=20.0)
    adapt, test = domain_data.split_user_target(src, CLASSES, tmp_path / "work", box_size=16)
    with read_dataset(adapt, with_labels=True) as a, read_dataset(test, with_labels=True) as t:
        tags_a, tags_t = set(a.volumes[:, 0, 0, 0].astype(int)), set(t.volumes[:, 0, 0, 0].astype(int))
        assert len(a) == 5 and len(t) == 5 and not tags_a & tags_t
        for ds in (a, t):
            assert [int(labels[i]) for i in ds.volumes[:, 0, 0, 0].astype(int)] == list(ds.labels)
    split = domain_data.load_split(test, ["c", "b", "a"])  # benchmark order differs from the file's
    assert sorted(set(split.labels)) <= [0, 1, 2] and split.volumes.shape == (5, 16, 16, 16)
    with pytest.raises(InputError, match="boxes are 16"):
        domain_data.split_user_target(src, CLASSES, tmp_path / "other", box_size=24)


def test_picks_with_a_class_column_are_cropped(tmp_path: Path) -> None:
    tomo = np.zeros((40, 48, 56), dtype=np.float32)
    tomo[20, 24, 28] = 5.0
    write_volume(tmp_path / "t1.mrc", tomo, voxel_size=20.0)
    picks = pd.DataFrame(
        {
            "tomo_name": ["t1"] * 4,
            "x": [28, 10, 40, 28],
            "y": [24, 10, 30, 24],
            "z": [20, 10, 30, 20],
            "class_name": ["b", "a", "c", "b"],
        }
    )
    picks.to_csv(tmp_path / "picks.csv", index=False)
    out = domain_data.picks_to_dataset(
        tmp_path / "picks.csv", CLASSES, tmp_path / "ds", 16, [tmp_path / "t1.mrc"]
    )
    with read_dataset(out, with_labels=True) as ds:
        assert list(ds.labels) == [1, 0, 2, 1] and ds.voxel_size == pytest.approx(20.0)
        assert ds.volumes[0, 8, 8, 8] == 5.0 and ds.volumes[1].max() == 0.0
    picks.drop(columns="class_name").to_csv(tmp_path / "nolabel.csv", index=False)
    with pytest.raises(InputError, match="no class column"):
        domain_data.picks_to_dataset(
            tmp_path / "nolabel.csv", CLASSES, tmp_path / "x", 16, [tmp_path / "t1.mrc"]
        )


def test_the_optics_domain_claims_the_source_voxel_size(tmp_path: Path) -> None:
    """The optics target is simulated at 1.25x the voxel size but claims the source's (an unnoticed
    scale error): recording the true size made the trainer refuse it and domain_shift.py stop."""
    from domains import PROFILES, TARGETS

    profile = PROFILES["tiny"]
    out = domain_data.simulate_split(profile, TARGETS["optics"], 6, 0, tmp_path / "optics")
    with read_dataset(out) as ds:
        assert ds.voxel_size == profile.voxel_size
        assert ds.meta["voxel_size"] == profile.voxel_size
