"""A model's outputs are checked on every run of the graph, in classify, evaluate and bench.

Hostile graphs that pass every load-time check (their output shapes are symbolic, or decided by
the data): an extra logits row that shifted every answer onto the next subtomogram, logits wider
than the class list, integer or bool logits scored as floats, outputs reduced over the batch or of
another rank (tracebacks). Each is the model's fault, so the run stops with one line naming the
model and the shapes. NaN logits in evaluate are failed volumes, not predictions; NaN features
leave rows without a shift score, which the run counts for its summary.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hostile_inputs import Capsys, assert_error, run_cli
from tiny_onnx import BOX, VOXEL, build_model, make_volumes

from cryoshift.runtime.errors import InputError
from cryoshift.runtime.mrc import write_stack

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

CLASSES = ["ribosome", "proteasome", "chaperonin"]


# ---------------------------------------------------------------------------------------------
# hostile variants of the suite's tiny model (as the tester built them: tests/support/tiny_onnx.py
# plus onnx.helper edits of its tail)


def _logits_tail(model: Any, nodes: list[Any], inits: tuple[Any, ...] = (), elem: int | None = None) -> None:
    """Rename the graph's logits to 'logits_raw' and make 'logits' from it with ``nodes``; the
    output's shape is cleared (symbolic), so no load-time check can see what it will be."""
    for node in model.graph.node:
        node.output[:] = ["logits_raw" if o == "logits" else o for o in node.output]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(inits)
    model.graph.output[0].type.tensor_type.ClearField("shape")
    if elem is not None:
        model.graph.output[0].type.tensor_type.elem_type = elem


def _features_tail(model: Any, nodes: list[Any], inits: tuple[Any, ...] = ()) -> None:
    """As :func:`_logits_tail` for 'features' (which the logits head reads as 'features_raw')."""
    for node in model.graph.node:
        node.output[:] = ["features_raw" if o == "features" else o for o in node.output]
        node.input[:] = ["features_raw" if i == "features" else i for i in node.input]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(inits)
    model.graph.output[1].type.tensor_type.ClearField("shape")


def _const(value: Any, name: str, dtype: Any = np.float32) -> Any:
    return numpy_helper.from_array(np.array(value, dtype), name)


def _shift(m: Any) -> None:  # a fixed row on top: n+1 rows
    first = _const([[9.0, 0.0, 0.0]], "first")
    _logits_tail(m, [helper.make_node("Concat", ["first", "logits_raw"], ["logits"], axis=0)], (first,))


def _wider_by_data(m: Any) -> None:  # one more column, its count computed from the input
    nodes = [
        helper.make_node("Equal", ["subtomograms", "subtomograms"], ["eq"]),
        helper.make_node("Cast", ["eq"], ["eqf"], to=TensorProto.INT64),
        helper.make_node("ReduceMax", ["eqf"], ["one"], keepdims=0),
        helper.make_node("Concat", ["z3", "one1"], ["pads"], axis=0),
        helper.make_node("Mul", ["one", "ncols"], ["one1"]),
        helper.make_node("Pad", ["logits_raw", "pads", "padval"], ["logits"]),
    ]
    nodes = [nodes[0], nodes[1], nodes[2], nodes[4], nodes[3], nodes[5]]  # topological order
    inits = (_const([0, 0, 0], "z3", np.int64), _const([1], "ncols", np.int64), _const(50.0, "padval"))
    _logits_tail(m, nodes, inits)


def _cast(to: int) -> Callable[[Any], None]:
    def edit(m: Any) -> None:
        _logits_tail(m, [helper.make_node("Cast", ["logits_raw"], ["logits"], to=to)], elem=to)

    return edit


def _bool(m: Any) -> None:
    node = helper.make_node("Greater", ["logits_raw", "zero"], ["logits"])
    _logits_tail(m, [node], (_const(0.0, "zero"),), elem=TensorProto.BOOL)


def _logits_batch_mean(m: Any) -> None:
    _logits_tail(m, [helper.make_node("ReduceMean", ["logits_raw"], ["logits"], axes=[0], keepdims=1)])


def _features_batch_mean(m: Any) -> None:
    _features_tail(m, [helper.make_node("ReduceMean", ["features_raw"], ["features"], axes=[0], keepdims=1)])


def _rank3(m: Any) -> None:
    node = helper.make_node("Unsqueeze", ["logits_raw", "ax"], ["logits"])
    _logits_tail(m, [node], (_const([1], "ax", np.int64),))


def _rank1(m: Any) -> None:
    _logits_tail(m, [helper.make_node("ReduceMax", ["logits_raw"], ["logits"], axes=[1], keepdims=0)])


def _nan_for_negative_mean(m: Any) -> None:
    """logits + 0 * sqrt(mean voxel): NaN logits exactly for the volumes whose mean is negative."""
    nodes = [
        helper.make_node("ReduceMean", ["subtomograms"], ["vmean"], axes=[1, 2, 3, 4], keepdims=0),
        helper.make_node("Unsqueeze", ["vmean", "ax"], ["vmean2"]),
        helper.make_node("Sqrt", ["vmean2"], ["root"]),
        helper.make_node("Mul", ["root", "zero"], ["poison"]),
        helper.make_node("Add", ["logits_raw", "poison"], ["logits"]),
    ]
    _logits_tail(m, nodes, (_const([1], "ax", np.int64), _const(0.0, "zero")))


def _nan_everywhere(m: Any) -> None:
    _logits_tail(m, [helper.make_node("Mul", ["logits_raw", "nan"], ["logits"])], (_const(np.nan, "nan"),))


def _nan_features(m: Any) -> None:
    _features_tail(
        m, [helper.make_node("Mul", ["features_raw", "nan"], ["features"])], (_const(np.nan, "nan"),)
    )


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model(tmp_path_factory.mktemp("outputs") / "good.onnx", classes=CLASSES)


def variant(good: Path, edit: Callable[[Any], None], name: str) -> Path:
    """``good`` edited by ``edit``, saved next to it as ``name``.onnx (metadata kept)."""
    model = onnx.load(str(good))
    edit(model)
    path = good.with_name(f"{name}.onnx")
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_stack(tmp_path_factory.mktemp("stack") / "s.mrcs", make_volumes(3, BOX, 3), voxel_size=VOXEL)


def _labelled(root: Path, offsets: list[float]) -> Path:
    """A labelled dataset of one volume per offset (the offset moves its mean, not its class)."""
    from cryoshift.runtime.dataset import write_dataset

    vols = make_volumes(len(offsets), BOX, 7) + np.asarray(offsets, np.float32)[:, None, None, None]
    labels = [i % len(CLASSES) for i in range(len(offsets))]
    return write_dataset(root / "ds", vols, labels=labels, class_names=CLASSES, voxel_size=VOXEL)


def _classify(model: Path, stack: Path, out: Path, capsys: Capsys) -> tuple[int | str, str, str]:
    """Classify the 3-volume ``stack`` as one batch (so the batch an error names is known)."""
    return run_cli(["classify", model, stack, "-o", out, "-q", "-b", "cpu", "--batch-size", 3], capsys)


# ---------------------------------------------------------------------------------------------
# 1-4: one line naming the model and the shapes, in classify, evaluate and bench

REFUSED = {
    "shift": (_shift, "shape 4x3 for a batch of 3"),
    "wider_by_data": (_wider_by_data, "shape 3x4 for a batch of 3 subtomograms, but the metadata names 3"),
    "int64": (_cast(TensorProto.INT64), "type int64, not floating point"),
    "bool": (_bool, "type bool, not floating point"),
    "logits_batch_mean": (_logits_batch_mean, "'logits' output has shape 1x3 for a batch of 3"),
    "features_batch_mean": (_features_batch_mean, "'features' output has shape 1x8 for a batch of 3"),
    "rank3": (_rank3, "shape 3x1x3 for a batch of 3"),
    "rank1": (_rank1, "'logits' output has shape 3 for a batch of 3"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_classify_refuses_outputs_off_the_contract(
    name: str, good: Path, stack: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """Before: an extra row or column, or integer logits, were written as answers (exit 0); the
    reduced or reshaped outputs were tracebacks."""
    edit, words = REFUSED[name]
    model = variant(good, edit, name)
    line = assert_error(_classify(model, stack, tmp_path / "o", capsys), model)
    assert words in line


@pytest.mark.parametrize("name", ["shift", "wider_by_data", "int64", "features_batch_mean", "rank1"])
def test_evaluate_and_bench_refuse_them_too(name: str, good: Path, tmp_path: Path, capsys: Capsys) -> None:
    """Before: evaluate scored them (or crashed in its metrics) and bench reported a rate."""
    edit, _ = REFUSED[name]
    model = variant(good, edit, name)
    data = _labelled(tmp_path, [0.0] * 6)
    line = assert_error(run_cli(["evaluate", model, data, "--out", tmp_path / "rep"], capsys), model)
    assert "batch of 6" in line or "type int64" in line
    bench = ["bench", model, "--backend", "cpu", "--n", 4, "--repeats", 1, "--batch-size", 2]
    assert_error(run_cli(bench, capsys), model)


def test_float16_logits_are_accepted_as_float32(
    good: Path, stack: Path, tmp_path: Path, capsys: Capsys
) -> None:
    model = variant(good, _cast(TensorProto.FLOAT16), "fp16")
    code, _, err = _classify(model, stack, tmp_path / "half", capsys)
    assert code == 0, err
    code, _, err = _classify(good, stack, tmp_path / "full", capsys)
    assert code == 0, err
    half = (tmp_path / "half" / "predictions.csv").read_text().splitlines()
    full = (tmp_path / "full" / "predictions.csv").read_text().splitlines()
    assert [r.split(",")[8] for r in half] == [r.split(",")[8] for r in full]  # class_name


def test_fixed_batch_padding_is_dropped_but_an_extra_row_is_not(good: Path) -> None:
    """Slots (IO binding, the GPU path run on the CPU EP) compute a padded batch of batch_size rows:
    only that padding is dropped. Before: logits[:n] of n+1 rows shifted every answer silently."""
    from cryoshift.runtime.backends import load_model

    vols = make_volumes(3, BOX, 5)[:, None]
    batch = np.zeros((4, 1, BOX, BOX, BOX), np.float32)
    batch[:3] = vols
    ok = load_model(good, "cpu", batch_size=4, slots=2)
    ok.upload(0, batch)
    logits, features = ok.compute(0, 3)
    assert logits.shape == (3, 3) and features.shape == (3, 8)
    np.testing.assert_allclose(ok.predict(vols)[0], logits, rtol=1e-5, atol=1e-5)  # padded pieces
    shifted = load_model(variant(good, _shift, "shift_slots"), "cpu", batch_size=4, slots=2)
    shifted.upload(0, batch)
    with pytest.raises(InputError, match="shape 5x3 for a batch of 4"):
        shifted.compute(0, 3)
    with pytest.raises(InputError, match="shape 5x3 for a batch of 4"):
        shifted.predict(vols)


def test_scoring_refuses_a_row_count_other_than_the_items() -> None:
    """Before: finite_outputs sliced logits[:len(items)], whatever their count."""
    from cryoshift.runtime.pipeline import finite_outputs

    with pytest.raises(ValueError, match="one row per item"):
        finite_outputs([object(), object()], np.zeros((3, 3), np.float32), np.zeros((3, 0), np.float32))  # type: ignore[list-item]


# ---------------------------------------------------------------------------------------------
# 5: NaN logits in evaluate are failed volumes; evaluation.json is strict JSON


def _strict_json(path: Path) -> dict[str, Any]:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{path} holds {constant}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_evaluate_scores_only_the_volumes_with_finite_logits(
    good: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """Before: NaN logits were scored as class 0 ("NLL nan") and evaluation.json held a bare NaN."""
    model = variant(good, _nan_for_negative_mean, "nan_some")
    data = _labelled(tmp_path, [5.0, -5.0, 5.0, 5.0, -5.0, 5.0])
    code, out, err = run_cli(["evaluate", model, data, "--out", tmp_path / "rep"], capsys)
    assert code == 0, err
    said = " ".join(out.split())  # rich wraps long lines
    assert "2 of 6 volumes failed" in said and "NLL nan" not in said
    report = _strict_json(tmp_path / "rep" / "evaluation.json")
    assert report["n"] == 4 and report["failed_volumes"] == 2
    assert np.asarray(report["confusion_matrix"]).sum() == 4
    assert np.isfinite(report["nll"]) and any("2 of 6 volumes failed" in n for n in report["notes"])


def test_evaluate_refuses_a_model_whose_logits_are_never_finite(
    good: Path, tmp_path: Path, capsys: Capsys
) -> None:
    model = variant(good, _nan_everywhere, "nan_all")
    data = _labelled(tmp_path, [0.0] * 6)
    line = assert_error(run_cli(["evaluate", model, data, "--out", tmp_path / "rep"], capsys), model)
    assert "not finite" in line and "all 6 volumes" in line


def test_json_safe_makes_non_finite_numbers_null() -> None:
    from cryoshift.training.evaluate import json_safe

    got = json_safe({"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": -float("inf")}, "e": 2})
    assert json.dumps(got, allow_nan=False) == '{"a": null, "b": [1.0, null], "c": {"d": null}, "e": 2}'


# ---------------------------------------------------------------------------------------------
# 6: rows whose shift score could not be computed are counted for the run's summary


def _pipeline_stats(model_path: Path, stack: Path, tmp_path: Path) -> Any:
    from cryoshift.runtime.backends import load_model
    from cryoshift.runtime.pipeline import run_pipeline
    from cryoshift.runtime.run import RunOptions, plan_run
    from cryoshift.runtime.sources import VolumeCache

    model = load_model(model_path, "cpu", batch_size=2)
    cache = VolumeCache()
    _, items, _ = plan_run(model.metadata, RunOptions([str(stack)], tmp_path, progress=False), cache)
    return run_pipeline(
        model, items, lambda rows, errors: None, batch_size=2, workers=1, cache=cache, progress=False
    )


def test_rows_without_a_shift_score_are_counted(good: Path, stack: Path, tmp_path: Path) -> None:
    """Before: NaN features gave shift_score nan on every row without a word."""
    stats = _pipeline_stats(variant(good, _nan_features, "nan_features"), stack, tmp_path / "a")
    assert stats.done == 3 and stats.shift_missing == 3
    assert len(stats.notes) == 1 and "3 of 3 rows have no shift score" in stats.notes[0]
    clean = _pipeline_stats(good, stack, tmp_path / "b")
    assert clean.shift_missing == 0 and clean.notes == []


def test_classify_says_how_many_rows_have_no_shift_score(
    good: Path, stack: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """The count reaches the run's summary and manifest (it was counted, then dropped)."""
    code, _, err = _classify(variant(good, _nan_features, "nan_features"), stack, tmp_path / "o", capsys)
    assert code == 0, err
    notes = json.loads((tmp_path / "o" / "manifest.json").read_text())["summary"]["notes"]
    assert any("3 of 3 rows have no shift score" in n for n in notes), notes
