"""fp32 ONNX export: contract, metadata round trip, dynamic batch, parity, and a broken export caught."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from cryoshift.export import ParityError
from cryoshift.export.onnx import ExportWrapper, export_onnx, torch_reference
from cryoshift.export.parity import check_onnx_parity, compare_logits
from cryoshift.runtime.metadata import read_onnx_metadata


def test_metadata_round_trip(exported) -> None:
    result, meta, path = exported
    assert result.format == "onnx" and result.path == path and result.size_bytes == path.stat().st_size
    back = read_onnx_metadata(path)
    for field in (
        "class_names",
        "box_size",
        "voxel_size",
        "contrast",
        "normalisation",
        "temperature",
        "unknown_threshold",
        "feature_mean",
        "feature_var",
        "shift_reference",
        "method",
        "backbone",
        "data_fingerprints",
    ):
        assert getattr(back, field) == getattr(meta, field), field
    assert back.precision == "fp32"
    assert back.cryoshift_version and back.created  # filled in by the exporter


def test_graph_contract_and_optimised(exported) -> None:
    _, _, path = exported
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version >= 17
    (inp,) = model.graph.input
    assert inp.name == "subtomograms"
    dims = inp.type.tensor_type.shape.dim
    assert len(dims) == 5 and not dims[0].HasField("dim_value")  # dynamic batch
    assert [d.dim_value for d in dims[1:]] == [1, 16, 16, 16]
    assert [o.name for o in model.graph.output] == ["logits", "features"]
    ops = {n.op_type for n in model.graph.node}
    assert "BatchNormalization" not in ops  # folded into the convolutions
    assert "ReduceMean" in ops  # the per-subtomogram normalisation is in the graph


def test_parity_and_dynamic_batch(exported, tiny_model, parity_volumes) -> None:
    result, meta, path = exported
    report = result.parity
    assert report is not None and report.passed and report.n == len(parity_volumes)
    assert report.max_abs_logit_diff <= report.tolerance <= 1e-3 * max(1.0, 100.0)
    assert report.argmax_agreement == 1.0
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ref_logits, ref_feats = torch_reference(ExportWrapper(tiny_model, meta.normalisation), parity_volumes[:7])
    for batch in (1, 7):
        x = parity_volumes[:batch, None]
        logits, feats = sess.run(["logits", "features"], {"subtomograms": x})
        assert logits.shape == (batch, 2) and feats.shape == (batch, tiny_model.num_features)
        np.testing.assert_allclose(logits, ref_logits[:batch], atol=1e-4)
        np.testing.assert_allclose(feats, ref_feats[:batch], atol=1e-4)
    # Normalisation in the graph: the intensity scale of a tomogram does not change the answer.
    scaled = sess.run(["logits"], {"subtomograms": parity_volumes[:7, None] * 3.0 - 50.0})[0]
    np.testing.assert_allclose(scaled, ref_logits, atol=1e-3)


def test_the_model_has_learnt_something(exported, make_blobs) -> None:
    """The parity checks below are only meaningful if argmax is not a coin toss."""
    _, _, path = exported
    vols, labels = make_blobs(40, seed=9, offset=-20.0, scale=7.0)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    pred = sess.run(["logits"], {"subtomograms": vols[:, None]})[0].argmax(1)
    assert (pred == labels).mean() >= 0.8


def test_weights_altered_after_tracing_is_caught(
    tiny_model, parity_volumes, metadata, tmp_path, monkeypatch
) -> None:
    """A graph that does not compute what PyTorch computes must never be handed over."""
    import copy

    import cryoshift.export.onnx as onnx_export

    model = copy.deepcopy(tiny_model)
    real_trace = onnx_export.trace_to_onnx

    def trace_then_alter(wrapper, box_size, opset=onnx_export.DEFAULT_OPSET):
        proto = real_trace(wrapper, box_size, opset)
        with torch.no_grad():  # weights change after the graph was captured (a stale export)
            wrapper.backbone.head.weight.mul_(-1.0)
        return proto

    monkeypatch.setattr(onnx_export, "trace_to_onnx", trace_then_alter)
    out = tmp_path / "broken.onnx"
    wrapper = ExportWrapper(model, metadata.normalisation)
    with pytest.raises(ParityError) as info:
        export_onnx(wrapper, metadata, out, parity_volumes)
    assert not info.value.report.passed
    assert info.value.report.argmax_agreement < 1.0
    assert "parity FAILED" in str(info.value)
    assert not out.exists()  # nothing left behind for the runtime to trust


def test_tampered_onnx_fails_parity(exported, parity_volumes, tiny_model, metadata, tmp_path: Path) -> None:
    _, _, path = exported
    model = onnx.load(str(path))
    conv_weight = next(i for i in model.graph.initializer if len(i.dims) == 5)
    arr = onnx.numpy_helper.to_array(conv_weight).copy()
    arr[:] = np.random.default_rng(0).normal(size=arr.shape)
    conv_weight.CopyFrom(onnx.numpy_helper.from_array(arr, conv_weight.name))
    bad = tmp_path / "tampered.onnx"
    onnx.save(model, bad)
    reference, _ = torch_reference(ExportWrapper(tiny_model, metadata.normalisation), parity_volumes)
    report = check_onnx_parity(bad, parity_volumes, reference)
    assert not report.passed and report.max_abs_logit_diff > report.tolerance


def test_compare_logits_bars() -> None:
    ref = np.array([[2.0, -1.0], [-3.0, 4.0]])
    assert compare_logits(ref, ref + 1e-4).passed
    assert not compare_logits(ref, ref + 1e-2).passed  # fp32 bar: 1e-3 x max(1, 4)
    assert compare_logits(ref, ref + 1e-2, precision="fp16").passed
    flipped = ref[:, ::-1]
    report = compare_logits(ref, flipped, precision="int8")
    assert report.argmax_agreement == 0.0 and not report.passed


def test_backbone_contract_enforced() -> None:
    with pytest.raises(TypeError, match="forward_features"):
        ExportWrapper(torch.nn.Linear(4, 2))


def test_test_views_travel_into_the_graph(tiny_model, parity_volumes, metadata, tmp_path: Path) -> None:
    """A 4-view model exports with its views inside the graph: ONNX == PyTorch, and a particle turned by
    180 degrees about a volume axis gets the same logits from the runtime."""
    from cryoshift.export import export_model
    from cryoshift.training.backbones import create_backbone

    model = create_backbone(
        "cryonet-small", num_classes=metadata.num_classes, box_size=metadata.box_size, test_views=4
    )
    model.load_state_dict(tiny_model.state_dict())
    model.eval()
    path = tmp_path / "views.onnx"
    export_model(model, metadata, path, parity_volumes=parity_volumes)  # raises if parity fails
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = parity_volumes[:6, None].astype(np.float32)
    turned = np.ascontiguousarray(x[:, :, ::-1, :, ::-1])  # 180 degrees about y
    a = session.run(["logits"], {"subtomograms": x})[0]
    b = session.run(["logits"], {"subtomograms": turned})[0]
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    with torch.no_grad():  # one pose alone is not invariant, so the check above can fail
        wrapper = ExportWrapper(tiny_model.eval(), metadata.normalisation)
        plain = [wrapper(torch.from_numpy(v))[0] for v in (x, turned)]
    assert not np.allclose(plain[0].numpy(), plain[1].numpy(), rtol=1e-4, atol=1e-4)
