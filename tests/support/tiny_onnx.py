"""The suite's tiny ONNX classifier: a genuine graph that obeys the model contract, without torch.

Built with ``onnx.helper``: z-score normalisation, a 3-D convolution, ReLU, global pooling, a
linear head, with cryoshift metadata (feature statistics from "in-domain" volumes, as export
stores them). The runtime tests (tests/runtime/conftest.py) and the hostile-input tests
(tests/hostile/conftest.py) classify with it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cryoshift.runtime.metadata import ModelMetadata

BOX = 16
VOXEL = 10.0
CLASSES = ["ribosome", "proteasome", "junk"]
CHANNELS = 8


def build_model(
    path: Path,
    box: int = BOX,
    voxel: float = VOXEL,
    contrast: str = "dark",
    classes: list[str] | None = None,
    seed: int = 0,
    unknown_threshold: float = 0.0,
    temperature: float = 1.5,
    features: bool = True,
) -> Path:
    """Write a small ONNX classifier obeying the model contract; returns its path. ``features=False``
    leaves out the optional 'features' output (an older or foreign export)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    classes = classes or CLASSES
    rng = np.random.default_rng(seed)
    w_conv = rng.normal(0, 0.3, (CHANNELS, 1, 3, 3, 3)).astype(np.float32)
    b_conv = rng.normal(0, 0.1, CHANNELS).astype(np.float32)
    w_fc = rng.normal(0, 4.0, (len(classes), CHANNELS)).astype(np.float32)
    b_fc = rng.normal(0, 0.1, len(classes)).astype(np.float32)
    inits = [
        numpy_helper.from_array(a, n)
        for a, n in [
            (w_conv, "w_conv"),
            (b_conv, "b_conv"),
            (w_fc, "w_fc"),
            (b_fc, "b_fc"),
            (np.array(1e-6, np.float32), "eps"),
        ]
    ]
    nodes = [
        helper.make_node("ReduceMean", ["subtomograms"], ["mean"], axes=[2, 3, 4], keepdims=1),
        helper.make_node("Sub", ["subtomograms", "mean"], ["xc"]),
        helper.make_node("Mul", ["xc", "xc"], ["sq"]),
        helper.make_node("ReduceMean", ["sq"], ["var"], axes=[2, 3, 4], keepdims=1),
        helper.make_node("Sqrt", ["var"], ["std"]),
        helper.make_node("Add", ["std", "eps"], ["den"]),
        helper.make_node("Div", ["xc", "den"], ["xn"]),
        helper.make_node(
            "Conv",
            ["xn", "w_conv", "b_conv"],
            ["c1"],
            kernel_shape=[3, 3, 3],
            pads=[1] * 6,
            strides=[2, 2, 2],
        ),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("GlobalAveragePool", ["r1"], ["gp"]),
        helper.make_node("Flatten", ["gp"], ["features"], axis=1),
        helper.make_node("Gemm", ["features", "w_fc", "b_fc"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "cryoshift-test",
        [helper.make_tensor_value_info("subtomograms", TensorProto.FLOAT, ["batch", 1, box, box, box])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(classes)]),
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", CHANNELS]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    # Reference feature statistics from "in-domain" data, as export would store them.
    meta = ModelMetadata(
        class_names=list(classes),
        box_size=box,
        voxel_size=voxel,
        contrast=contrast,
        temperature=temperature,
        unknown_threshold=unknown_threshold,
        feature_mean=[0.0] * CHANNELS,
        feature_var=[1.0] * CHANNELS,
        method="test",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    feats = run_onnx(path, make_volumes(64, box, seed + 100))[1].astype(np.float64)
    # Centre the logits on the reference data so that every class actually gets predicted.
    centred = (b_fc - w_fc @ feats.mean(0).astype(np.float32)).astype(np.float32)
    model.graph.initializer[3].CopyFrom(numpy_helper.from_array(centred, "b_fc"))
    meta.feature_mean = feats.mean(0).tolist()
    meta.feature_var = (feats.var(0) + 1e-6).tolist()
    dist = np.sqrt(np.mean((feats - feats.mean(0)) ** 2 / (feats.var(0) + 1e-6), axis=1))
    meta.shift_reference = float(np.median(dist))
    if not features:
        del model.graph.output[1]
    return _save(model, path, meta)


def _save(model: object, path: Path, meta: ModelMetadata) -> Path:
    import onnx

    for key, value in meta.to_properties().items():
        entry = model.metadata_props.add()  # type: ignore[attr-defined]
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def save_graph(graph: object, path: Path, meta: ModelMetadata | None = None) -> Path:
    """Save an ``onnx.helper`` graph as an opset-17 model with cryoshift metadata (two classes at
    BOX and VOXEL unless ``meta`` says otherwise): the odd graphs the hostile tests feed the runtime."""
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = meta or ModelMetadata(class_names=["bright", "dark"], box_size=BOX, voxel_size=VOXEL)
    return _save(model, path, meta)


def linear_model(path: Path, shape: list[object] | None = None, reshape_to: int | None = None) -> Path:
    """A contract-shaped classifier without a features output: input 'subtomograms' of ``shape``
    (default (batch, 1, BOX, BOX, BOX); an int batch is a fixed one), logits the mean and minus the
    mean of the box; ``reshape_to`` flattens with a Reshape to that fixed batch instead of a Flatten."""
    from onnx import TensorProto, helper, numpy_helper

    shape = shape or ["batch", 1, BOX, BOX, BOX]
    w = np.full((2, BOX**3), 1.0 / BOX**3, np.float32)
    w[1] *= -1
    inits = [numpy_helper.from_array(w, "w")]
    if reshape_to is not None:
        inits.append(numpy_helper.from_array(np.array([reshape_to, BOX**3], np.int64), "shape"))
        flat = helper.make_node("Reshape", ["subtomograms", "shape"], ["flat"])
    else:
        flat = helper.make_node("Flatten", ["subtomograms"], ["flat"], axis=1)
    graph = helper.make_graph(
        [flat, helper.make_node("Gemm", ["flat", "w"], ["logits"], transB=1)],
        "linear",
        [helper.make_tensor_value_info("subtomograms", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [shape[0], 2])],
        inits,
    )
    return save_graph(graph, path)


def run_onnx(path: Path, volumes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Direct ONNX Runtime reference: logits and features of (N, D, D, D) volumes."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits, feats = sess.run(["logits", "features"], {"subtomograms": volumes[:, None].astype(np.float32)})
    return logits, feats


def make_volumes(n: int, box: int = BOX, seed: int = 0) -> np.ndarray:
    """Blobs of varying size and position on noise: different enough to get varied classes."""
    rng = np.random.default_rng(seed)
    grid = np.indices((box, box, box)).astype(np.float32)
    out = np.empty((n, box, box, box), np.float32)
    for i in range(n):
        centre = rng.uniform(box * 0.3, box * 0.7, 3)[:, None, None, None]
        radius = rng.uniform(1.5, box / 3)
        r2 = ((grid - centre) ** 2).sum(0)
        out[i] = -np.exp(-r2 / (2 * radius**2)) * rng.uniform(0.5, 3) + rng.normal(0, 0.3, (box,) * 3)
    return out


def with_metadata(model: Path, out: Path, field: str, value: str) -> Path:
    """A copy of ONNX ``model`` at ``out`` whose metadata ``cryoshift.<field>`` holds the text
    ``value`` (added when the model has none): a model that lies about itself."""
    import onnx

    m = onnx.load(str(model))
    entry = next((e for e in m.metadata_props if e.key == f"cryoshift.{field}"), None)
    if entry is None:
        entry = m.metadata_props.add()
        entry.key = f"cryoshift.{field}"
    entry.value = value
    onnx.save(m, str(out))
    return out
