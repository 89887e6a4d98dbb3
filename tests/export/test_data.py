"""Where parity and calibration volumes come from: given data, the run's config (target first), random."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from cryoshift.export import ExportWarning
from cryoshift.export.data import config_data_paths, find_volumes, read_volumes
from cryoshift.runtime.dataset import write_dataset
from cryoshift.runtime.errors import InputError
from cryoshift.runtime.mrc import write_volume


def test_readers(tmp_path: Path, make_blobs) -> None:
    vols, _ = make_blobs(12, seed=1)
    ds = write_dataset(tmp_path / "ds", vols, voxel_size=10.0)
    np.testing.assert_allclose(read_volumes(ds, 16), vols)
    assert read_volumes(ds, 16, limit=5).shape == (5, 16, 16, 16)  # a seeded subset
    np.testing.assert_array_equal(read_volumes(ds, 16, limit=5), read_volumes(ds, 16, limit=5))
    folder = tmp_path / "mrcs"
    folder.mkdir()
    for i in range(3):
        write_volume(folder / f"p{i}.mrc", vols[i], voxel_size=10.0)
    np.testing.assert_allclose(read_volumes(folder, 16), vols[:3])
    import gzip  # compressed volumes in a folder count too, as they do for classify

    packed = tmp_path / "packed"
    packed.mkdir()
    for i in range(2):
        raw = write_volume(tmp_path / f"q{i}.mrc", vols[i], voxel_size=10.0).read_bytes()
        (packed / f"q{i}.mrc.gz").write_bytes(gzip.compress(raw))
    np.testing.assert_allclose(read_volumes(packed, 16), vols[:2])
    with pytest.raises(InputError, match="does not match the model's 24"):
        read_volumes(ds, 24)
    with pytest.raises(InputError, match="no such file"):
        read_volumes(tmp_path / "missing.mrc")
    junk = tmp_path / "junk.mrc"
    junk.write_bytes(b"x" * 100)
    with pytest.raises(InputError, match=r"junk\.mrc"):
        read_volumes(junk)


def test_config_target_first_and_random_fallback(tmp_path: Path, make_blobs) -> None:
    src = write_dataset(tmp_path / "src", make_blobs(4, seed=2)[0], voxel_size=10.0)
    tgt = write_dataset(tmp_path / "tgt", make_blobs(5, seed=3)[0], voxel_size=10.0)
    config = {"source": str(src), "target": str(tgt), "other": {"data": str(tmp_path / "gone")}}
    assert config_data_paths(config) == [tgt, src]
    vols, where = find_volumes(16, config=config)
    assert where == str(tgt) and len(vols) == 5
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vols, where = find_volumes(16, config={"target": str(tmp_path / "gone")})
    assert where == "random volumes" and vols.shape[1:] == (16, 16, 16)
    assert any(issubclass(w.category, ExportWarning) and "random" in str(w.message) for w in caught)
