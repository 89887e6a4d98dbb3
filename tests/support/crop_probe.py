"""A probe for where classify crops: a model whose features are its input box, and tomograms whose
voxels hold their own coordinates, so the centre voxel of each box says where it was cut.

Voxel (x, y, z) of tomogram number k holds x + 100 y + 10000 z + 1 + k * TOMOGRAM_STEP (the + 1
keeps the corner voxel apart from padding), for tomograms under 100 voxels a side.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tiny_onnx import BOX, VOXEL, save_graph

from cryoshift.runtime.metadata import ModelMetadata
from cryoshift.runtime.mrc import write_volume

SHAPE = (24, 48, 40)  # Z, Y, X voxels
TOMOGRAM_STEP = 500_000.0


def build_crop_probe(path: Path) -> Path:
    """A two-class ONNX model whose features are its input box, flattened (run with --features)."""
    from onnx import TensorProto, helper, numpy_helper

    n = BOX**3
    w = np.zeros((2, n), np.float32)
    w[0], w[1] = 1.0 / n, -1.0 / n
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["subtomograms"], ["features"], axis=1),
            helper.make_node("Gemm", ["features", "w"], ["logits"], transB=1),
        ],
        "probe",
        [helper.make_tensor_value_info("subtomograms", TensorProto.FLOAT, ["batch", 1, BOX, BOX, BOX])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2]),
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", n]),
        ],
        [numpy_helper.from_array(w, "w")],
    )
    meta = ModelMetadata(
        class_names=["a", "b"], box_size=BOX, voxel_size=VOXEL, feature_mean=[0.0] * n, feature_var=[1.0] * n
    )
    return save_graph(graph, path, meta)


def coded_tomogram(path: Path, k: int = 0, shape: tuple[int, int, int] = SHAPE, voxel: float = VOXEL) -> Path:
    """Tomogram number ``k`` of ``shape`` (Z, Y, X) whose voxels hold their own coordinates."""
    z, y, x = np.indices(shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (x + 100 * y + 10000 * z + 1 + k * TOMOGRAM_STEP).astype(np.float32)
    return write_volume(path, data, voxel_size=voxel)


def crop_centres(out: Path) -> list[tuple[int, int, int, int]]:
    """(tomogram number, x, y, z) each prediction's box in ``out`` was cut at, from its centre voxel."""
    feats = np.load(out / "features.npy").reshape(-1, BOX, BOX, BOX)
    found = []
    for box in feats:
        v = round(float(box[BOX // 2, BOX // 2, BOX // 2])) - 1
        k, v = divmod(v, int(TOMOGRAM_STEP))
        found.append((k, v % 100, (v // 100) % 100, v // 10000))
    return found
