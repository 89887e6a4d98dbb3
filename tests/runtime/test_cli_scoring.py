"""The classify/bench verbs, the torch-free guarantee, scoring formulas and GPU paths (skipped
without a GPU)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from import_blocker import blocked_env

from cryoshift.runtime.cli import main
from cryoshift.runtime.metadata import ModelMetadata
from cryoshift.runtime.results import read_results
from cryoshift.runtime.scoring import score, shift_scores, softmax


def test_softmax_temperature_and_unknown():
    logits = np.array([[2.0, 0.0, 0.0], [0.1, 0.0, 0.0]])
    p1, p2 = softmax(logits, 1.0), softmax(logits, 2.0)
    np.testing.assert_allclose(p1.sum(1), 1.0)
    assert p2[0, 0] < p1[0, 0]  # a higher temperature flattens
    np.testing.assert_allclose(p1[0], np.exp([2, 0, 0]) / np.exp([2, 0, 0]).sum())
    meta = ModelMetadata(class_names=["a", "b", "c"], box_size=16, voxel_size=10, unknown_threshold=0.5)
    s = score(logits, np.zeros((2, 0)), meta)
    assert list(s.unknown) == [False, True] and list(s.predicted) == [0, 0]
    assert np.isnan(s.shift).all()  # no feature statistics: no made-up shift score
    assert list(score(logits, np.zeros((2, 0)), meta, unknown_threshold=0.0).unknown) == [False, False]


def test_shift_score_is_one_at_reference_distance():
    meta = ModelMetadata(
        class_names=["a"],
        box_size=16,
        voxel_size=10,
        feature_mean=[1.0, 2.0],
        feature_var=[4.0, 1.0],
        shift_reference=2.0,
    )
    f = np.array([[1.0, 2.0], [1.0 + 2 * 2.0, 2.0 + 2.0]])  # 0 and 2 standard deviations away
    np.testing.assert_allclose(shift_scores(f, meta), [0.0, 1.0])


def test_cli_classify_writes_results_and_summary(model_path, inputs, tmp_path, capsys):
    code = main(
        [
            "classify",
            str(model_path),
            str(inputs["picks"]),
            "-t",
            str(inputs["tomos"] / "*.mrc"),
            str(inputs["stack"]),
            "-o",
            str(tmp_path / "out"),
            "--backend",
            "auto",
            "--batch-size",
            "4",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "backend: cpu" in out and "classified 17 subtomograms, 1 errors" in out
    assert len(read_results(tmp_path / "out" / "predictions.star")) == 17


def test_cli_bad_input_exits_2_with_one_line(model_path, tmp_path, capsys):
    code = main(["classify", str(model_path), str(tmp_path / "missing.mrcs"), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("cryoshift: error: ") and "missing.mrcs: no such file" in last
    assert main(["classify", str(model_path), "x.mrc", "--shard", "3/2"]) == 2
    assert main(["classify", str(tmp_path / "nomodel.onnx"), "x.mrc"]) == 2


def test_cli_bench_reports_inference_and_feed_rates(model_path, tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(
        [
            "bench",
            str(model_path),
            "--backend",
            "cpu",
            "--n",
            "16",
            "--repeats",
            "1",
            "--batch-size",
            "8",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    result = json.loads(out.read_text())
    assert result["inference"]["rate"] > 0
    assert set(result["feed"]) == {"stack", "files", "tomogram"}
    assert all(fig["rate"] > 0 and fig["errors"] == 0 for fig in result["feed"].values())


def test_cli_bench_refuses_an_unwritable_json_before_timing(model_path, tmp_path, capsys):
    """A --json under a missing folder used to fail only after the whole benchmark had run."""
    target = tmp_path / "no" / "such" / "bench.json"
    args = ["bench", str(model_path), "--backend", "cpu", "--n", "4", "--repeats", "1", "--json"]
    assert main([*args, str(target)]) == 2
    err = capsys.readouterr().err
    assert f"{target}: cannot write" in err and "inference" not in err
    assert main([*args, str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


# Run under the suite's import blocker (torch unimportable from interpreter start).
_NO_TORCH = r"""
import sys
import cryoshift.runtime
import cryoshift.runtime.backends, cryoshift.runtime.pipeline, cryoshift.runtime.sources
import cryoshift.runtime.ledger, cryoshift.runtime.scoring, cryoshift.runtime.distributed
import cryoshift.runtime.run, cryoshift.runtime.devices, cryoshift.runtime.summary  # the engine first:
from cryoshift.runtime import classify, load_model
import types
assert isinstance(classify, types.FunctionType), classify  # the public name is the function, no module
from cryoshift.runtime.cli import main
model = load_model(sys.argv[1], "cpu")
assert model.metadata.box_size == 16
summary = classify(sys.argv[1], [sys.argv[2]], sys.argv[3] + "/api", backend="cpu", progress=False)
assert summary.total_rows == 12, summary
code = main(["classify", sys.argv[1], sys.argv[2], "-o", sys.argv[3] + "/cli", "-q"])
assert code == 0, code
assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules), "torch was imported"
try:
    import torch
except ImportError as exc:
    assert "blocked by the test" in str(exc), exc  # the blocker was active all along
else:
    raise AssertionError("torch was importable")
print("ok without torch")
"""


def test_runtime_and_classify_work_with_torch_unimportable(model_path, inputs, tmp_path):
    cmd = [sys.executable, "-c", _NO_TORCH, str(model_path), str(inputs["stack"]), str(tmp_path)]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, env=blocked_env(tmp_path / "site", "torch")
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ok without torch" in proc.stdout


def _has_gpu_provider(name: str) -> bool:
    import onnxruntime as ort

    from cryoshift.runtime.backends import gpu_name

    return name in ort.get_available_providers() and gpu_name() is not None


@pytest.mark.gpu
@pytest.mark.parametrize(
    "backend,provider", [("cuda", "CUDAExecutionProvider"), ("tensorrt", "TensorrtExecutionProvider")]
)
def test_gpu_backends_agree_with_cpu(model_path, inputs, tmp_path, backend, provider):
    if not _has_gpu_provider(provider):
        pytest.skip(f"no GPU with {provider} here")
    from cryoshift.runtime import classify

    kw = dict(progress=False, batch_size=8)
    cpu = classify(model_path, [str(inputs["stack"])], tmp_path / "cpu", backend="cpu", **kw)
    gpu = classify(
        model_path, [str(inputs["stack"])], tmp_path / backend, backend=backend, **kw
    )  # 12 items, batch 8: the last batch is padded to the fixed shape
    a, b = read_results(cpu.predictions_csv), read_results(gpu.predictions_csv)
    assert list(a["id"]) == list(b["id"])
    np.testing.assert_allclose(a["confidence"], b["confidence"], atol=1e-3)
    assert (a["best_class"] == b["best_class"]).mean() >= 0.9


def test_fixed_shape_predict_pads_and_splits_any_batch(model_path, helpers):
    from cryoshift.runtime.backends import load_model

    free = load_model(model_path, "cpu", batch_size=4)
    fixed = load_model(model_path, "cpu", batch_size=4)
    fixed.fixed_batch = True  # the GPU backends' contract, exercised on the CPU session
    vols = helpers.make_volumes(7)[:, None]
    for n in (1, 4, 7):
        a, fa = free.predict(vols[:n])
        b, fb = fixed.predict(vols[:n])
        assert a.shape == b.shape == (n, 3) and fa.shape == fb.shape
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_io_binding_runner_matches_plain_run(model_path, helpers):
    # The CUDA/TensorRT runner's binding calls, exercised on CPU memory (no GPU needed).
    import onnxruntime as ort

    from cryoshift.runtime.backends import _OrtCpu, _OrtIoBinding

    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    bound = _OrtIoBinding(ort, sess, 4, 16, 0, device="cpu")
    vols = helpers.make_volumes(4)[:, None]
    for _ in range(2):  # the bound input is refilled in place
        logits, feats = bound(vols)
        ref_logits, ref_feats = _OrtCpu(sess)(vols)
        np.testing.assert_allclose(logits, ref_logits, atol=1e-5)
        np.testing.assert_allclose(feats, ref_feats, atol=1e-5)
        vols = vols[::-1].copy()


def test_gpu_backend_without_its_provider_is_refused_in_one_line(model_path, tmp_path, capsys):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    code = main(["classify", str(model_path), str(tmp_path), "-b", "cuda", "-o", str(tmp_path / "o")])
    assert code == 2
    assert "backend cuda needs onnxruntime with CUDAExecutionProvider" in capsys.readouterr().err
