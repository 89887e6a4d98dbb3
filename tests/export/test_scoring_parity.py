"""Training and the runtime give the same probabilities and shift scores for one model.

Why: calibration (temperature, feature reference) is fitted in training and applied in the
runtime; the two once computed softmax and the shift score with their own code and different
variance floors. Here one small model goes both ways: the checkpoint through the training code
(PyTorch) and the exported ONNX through the runtime (onnxruntime, ``load_model`` + ``score``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cryoshift.runtime import scoring
from cryoshift.runtime.metadata import ModelMetadata
from cryoshift.training import calibrate


def test_pytorch_checkpoint_and_onnx_runtime_give_equal_scores(
    tiny_model, metadata, make_blobs, tmp_path: Path
) -> None:
    from cryoshift.export import export_checkpoint
    from cryoshift.runtime.backends import load_model
    from cryoshift.runtime.dataset import write_dataset
    from cryoshift.training.checkpoint import save_checkpoint
    from cryoshift.training.evaluate import predict_checkpoint
    from cryoshift.training.forward import forward_numpy

    reference_volumes, _ = make_blobs(48, seed=11, offset=300.0, scale=40.0)
    volumes, _ = make_blobs(20, seed=12, offset=310.0, scale=55.0)  # a little shifted: scores differ from 1
    # Calibrate as the trainer does: features of the reference data through the training forward.
    _, ref_feats = forward_numpy(tiny_model, reference_volumes, metadata.normalisation, "cpu")
    ref = calibrate.feature_reference(ref_feats)
    meta = ModelMetadata(
        **{
            **metadata.to_dict(),
            "feature_mean": ref.mean.tolist(),
            "feature_var": ref.var.tolist(),
            "shift_reference": ref.shift_reference,
        }
    )
    checkpoint = save_checkpoint(
        tmp_path / "model.pt", tiny_model, "cryonet-small", {"num_classes": 2, "box_size": 16}, meta
    )
    parity = write_dataset(tmp_path / "parity", reference_volumes, voxel_size=meta.voxel_size)
    onnx_path = export_checkpoint(checkpoint, tmp_path / "export", parity_data=parity)[0].path

    # PyTorch: the checkpoint through training's prediction and calibration code.
    torch_pred = predict_checkpoint(checkpoint, volumes)
    torch_probs = calibrate.softmax(torch_pred.logits, meta.temperature)
    torch_shift = calibrate.FeatureReference(ref.mean, ref.var, ref.shift_reference).shift_score(
        torch_pred.features
    )
    # ONNX: the exported file through the runtime, as classify runs it.
    model = load_model(onnx_path, backend="cpu")
    logits, feats = model.predict(volumes[:, None])
    onnx_scores = scoring.score(logits, feats, model.metadata)

    assert np.isfinite(torch_shift).all() and torch_shift.std() > 0
    np.testing.assert_allclose(onnx_scores.probabilities, torch_probs, atol=1e-5)
    np.testing.assert_allclose(onnx_scores.shift, torch_shift, rtol=1e-4)
    assert (onnx_scores.predicted == torch_probs.argmax(axis=1)).all()
    # The same arrays give bit-identical numbers: one implementation, not two that agree today.
    same = scoring.score(torch_pred.logits, torch_pred.features, model.metadata)
    assert np.array_equal(same.probabilities, torch_probs)
    assert np.array_equal(same.shift, torch_shift)


def test_one_variance_floor_for_training_and_runtime() -> None:
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(50, 6))
    feats[:, 2] = 0.25  # a dead feature: zero variance in the reference data
    ref = calibrate.feature_reference(feats)
    assert ref.var[2] == scoring.VAR_FLOOR
    # Statistics stored by another tool with a variance under the floor: both sides floor it alike.
    var = ref.var.copy()
    var[2] = 1e-12
    meta = ModelMetadata(
        class_names=["a"],
        box_size=4,
        voxel_size=1.0,
        feature_mean=ref.mean.tolist(),
        feature_var=var.tolist(),
        shift_reference=ref.shift_reference,
    )
    probe = feats + rng.normal(scale=1e-3, size=feats.shape)
    runtime = scoring.shift_scores(probe, meta)
    training = calibrate.FeatureReference(ref.mean, var, ref.shift_reference).shift_score(probe)
    assert np.array_equal(runtime, training)
    np.testing.assert_array_equal(runtime, ref.shift_score(probe))
