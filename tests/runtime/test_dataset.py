"""The labelled dataset directory: write whole or in chunks, read with or without labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cryoshift.runtime import InputError, read_dataset, write_dataset
from cryoshift.runtime.dataset import DatasetWriter, is_dataset

CLASSES = ["ribosome", "proteasome", "empty"]


def volumes(n: int, box: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, box, box, box)).astype(np.float32)


def test_write_then_read_labelled(tmp_path: Path) -> None:
    vols = volumes(12)
    labels = np.arange(12) % 3
    params = pd.DataFrame({"snr": np.linspace(0.1, 1.2, 12), "defocus_um": 3.0})
    out = write_dataset(
        tmp_path / "ds",
        vols,
        labels,
        CLASSES,
        voxel_size=6.8,
        contrast="dark",
        table=params,
        meta={"seed": 7, "generator": "test"},
    )
    assert is_dataset(out) and not is_dataset(tmp_path)
    info = json.loads((out / "dataset.json").read_text())
    assert info["format"] == "cryoshift.dataset/1" and info["labelled"] and info["seed"] == 7
    assert info["n"] == 12 and info["box_size"] == 8 and info["class_names"] == CLASSES
    with read_dataset(out, with_labels=True) as ds:
        assert len(ds) == 12 and ds.box_size == 8 and ds.voxel_size == pytest.approx(6.8)
        np.testing.assert_array_equal(ds.volumes, vols)
        np.testing.assert_array_equal(ds.labels, labels)
        assert ds.table["class_name"].tolist()[:3] == CLASSES and ds.class_names == CLASSES
        np.testing.assert_allclose(ds.table["snr"], params["snr"])
        assert ds.meta["generator"] == "test" and ds.contrast == "dark"
    with read_dataset(out) as ds:  # labels stay hidden unless asked for
        assert ds.labels is None
        assert "label" not in ds.table.columns and "class_name" not in ds.table.columns
        assert list(ds.table.columns) == ["index", "snr", "defocus_um"]


def test_unlabelled_set_refuses_labels(tmp_path: Path) -> None:
    out = write_dataset(tmp_path / "target", volumes(4), voxel_size=2.0, contrast="light")
    ds = read_dataset(out)
    assert ds.labels is None and ds.contrast == "light" and not ds.labelled
    ds.close()
    with pytest.raises(InputError, match="dataset is unlabelled; labels were asked for"):
        read_dataset(out, with_labels=True)


def test_chunked_writer_float16(tmp_path: Path) -> None:
    vols = volumes(10)
    with DatasetWriter(
        tmp_path / "ds", n=10, box_size=8, voxel_size=3.0, class_names=CLASSES, dtype=np.float16
    ) as writer:
        for start in range(0, 10, 4):
            chunk = vols[start : start + 4]
            writer.write(chunk, labels=[2] * len(chunk), rows=[{"i2": start + j} for j in range(len(chunk))])
    ds = read_dataset(tmp_path / "ds", with_labels=True)
    assert ds.volumes.dtype == np.float16
    np.testing.assert_allclose(ds.volumes, vols, atol=2e-3)
    assert ds.labels.tolist() == [2] * 10 and ds.table["i2"].tolist() == list(range(10))


def test_unfinished_writes_are_not_datasets(tmp_path: Path) -> None:
    writer = DatasetWriter(tmp_path / "short", n=5, box_size=8)
    writer.write(volumes(2))
    with pytest.raises(InputError, match="only 2 of 5 volumes were written"):
        writer.close()
    assert not is_dataset(tmp_path / "short")
    with pytest.raises(RuntimeError), DatasetWriter(tmp_path / "crash", n=2, box_size=8) as w:
        w.write(volumes(1))
        raise RuntimeError("simulator died")
    with pytest.raises(InputError, match=r"no dataset.json \(an unfinished write"):
        read_dataset(tmp_path / "crash")


def test_bad_input_to_the_writer(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"labels must lie in 0..2"):
        write_dataset(tmp_path / "a", volumes(2), [0, 3], CLASSES)
    with pytest.raises(InputError, match="labels need class_names"):
        write_dataset(tmp_path / "b", volumes(2), [0, 1])
    bad = volumes(2)
    bad[1, 0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN/Inf"):
        write_dataset(tmp_path / "c", bad)
    with pytest.raises(InputError, match="too many volumes"), DatasetWriter(tmp_path / "d", 1, 8) as w:
        w.write(volumes(2))


def test_reader_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty directory"):
        read_dataset(tmp_path / "empty")
    with pytest.raises(InputError, match="no such directory"):
        read_dataset(tmp_path / "missing")
    out = write_dataset(tmp_path / "ds", volumes(3))
    (out / "particles.csv").write_text("index\n0\n1\n")
    with pytest.raises(InputError, match=r"has 2 rows, dataset\.json says 3"):
        read_dataset(out)
    (out / "dataset.json").write_text('{"format": "other"}')
    with pytest.raises(InputError, match="unknown format 'other'"):
        read_dataset(out)
