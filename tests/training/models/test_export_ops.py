"""The default backbone must export to a plain ONNX graph that onnxruntime runs identically."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import torch

from cryoshift.training.backbones import create_backbone

ALLOWED = {
    "Conv",
    "BatchNormalization",
    "Relu",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "Flatten",
    "Gemm",
    "MatMul",
    "Add",
    "Reshape",
}


def test_cryonet_exports_to_plain_ops_with_dynamic_batch() -> None:
    torch.manual_seed(0)
    model = create_backbone("cryonet", num_classes=4, box_size=16).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # legacy exporter: fast and enough here
        torch.onnx.export(
            model,
            (torch.zeros(1, 1, 16, 16, 16),),
            buffer,
            dynamo=False,
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "batch"}},
        )
    graph = onnx.load_from_string(buffer.getvalue())
    assert {n.op_type for n in graph.graph.node} <= ALLOWED
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 1, 16, 16, 16)
    got = session.run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(got, model(x).detach().numpy(), atol=1e-4, rtol=1e-4)
