"""Fixtures shared by the hostile-input tests: the tiny ONNX classifier and a small labelled dataset.

Helpers (running the CLI, checking its one-line refusals, hand-made MRC files) are in
tests/support/hostile_inputs.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hostile_inputs import BOX, VOXEL, volumes
from tiny_onnx import build_model


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A genuine tiny ONNX classifier with cryoshift metadata (16^3 boxes, 10 A voxels)."""
    return build_model(tmp_path_factory.mktemp("model") / "model.onnx", box=BOX, voxel=VOXEL)


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    from cryoshift.runtime.dataset import write_dataset

    return write_dataset(
        tmp_path / "ds",
        volumes(6),
        labels=[0, 1, 2, 0, 1, 2],
        class_names=["ribosome", "proteasome", "junk"],
        voxel_size=VOXEL,
    )
