"""Hostile model files: what a model or an engine sidecar says must not make the runtime read other
files, use a value silently, hang, or carry megabytes into every output.

Each test builds a small real model (tests/support/tiny_onnx.py) and edits its metadata_props with
onnx.helper, or writes an engine sidecar next to random engine bytes (no TensorRT is needed: the
sidecar and the fp32 reference of ``--transfer fp16`` are read without it).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hostile_inputs import Capsys, assert_error, run_cli, unblocked_fifos
from tiny_onnx import build_model

from cryoshift.runtime.contract import class_name_problem
from cryoshift.runtime.engine_sidecar import read_engine_sidecar, sidecar_path, write_engine_sidecar
from cryoshift.runtime.errors import InputError
from cryoshift.runtime.metadata import is_onnx, read_onnx_metadata

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")


def _edited(src: Path, dst: Path, edits: dict[str, object], added: dict[str, object] | None = None) -> Path:
    """A copy of model ``src`` at ``dst`` with cryoshift.FIELD set to JSON of ``edits[FIELD]``, and
    ``added`` entries appended as further metadata_props (a second entry of a key, for one)."""
    import onnx

    model = onnx.load(str(src))
    for entry in model.metadata_props:
        field = entry.key.removeprefix("cryoshift.")
        if field in edits:
            entry.value = json.dumps(edits[field])
    for field, value in (added or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = f"cryoshift.{field}", json.dumps(value)
    onnx.save(model, str(dst))
    return dst


def _refusal(path: Path) -> str:
    with pytest.raises(InputError) as err:
        read_onnx_metadata(path)
    assert err.value.path == str(path)
    return err.value.reason


# -- metadata_props ------------------------------------------------------------------------------


def test_a_duplicated_metadata_key_is_refused(model_path: Path, tmp_path: Path) -> None:
    """onnxruntime keeps the last of two cryoshift.class_names: the classes were renamed silently."""
    names = read_onnx_metadata(model_path).class_names
    dup = _edited(model_path, tmp_path / "dup.onnx", {}, {"class_names": names[::-1]})
    reason = _refusal(dup)
    assert "cryoshift.class_names (2 times)" in reason, reason


@pytest.mark.parametrize(
    ("edits", "words"),
    [
        ({"method": "x" * 4097}, "method is 4,097 characters long"),
        ({"extra": {"note": "y" * 10_000}}, "extra.note is 10,000 characters long"),
        ({"class_names": ["a" * 300, "b", "c"]}, "a name of 300 characters"),
        ({"class_names": [f"c{i}" for i in range(1001)]}, "class_names holds 1,001 names"),
        ({"feature_mean": [0.0] * 70_000, "feature_var": [1.0] * 70_000}, "holds 70,000 values"),
        ({"extra": {f"k{i}": i for i in range(600)}}, "extra holds more than 1,000 names and values"),
    ],
)
def test_oversized_metadata_is_refused(
    edits: dict[str, object], words: str, model_path: Path, tmp_path: Path
) -> None:
    """A 50 MB cryoshift.method went into every manifest, run.json and report."""
    reason = _refusal(_edited(model_path, tmp_path / "big.onnx", edits))
    assert words in reason, reason


def test_a_huge_property_is_refused_before_it_is_parsed(model_path: Path, tmp_path: Path) -> None:
    reason = _refusal(_edited(model_path, tmp_path / "huge.onnx", {"method": "z" * 4_100_000}))
    assert "cryoshift.method is 4,100,002 characters long" in reason, reason


@pytest.mark.parametrize("voxel", [0, 0.0])
def test_a_model_without_a_voxel_size_is_refused(voxel: float, model_path: Path, tmp_path: Path) -> None:
    """voxel_size 0 skipped every run's voxel-size check without a word."""
    reason = _refusal(_edited(model_path, tmp_path / "vox.onnx", {"voxel_size": voxel}))
    assert "voxel_size must be the positive voxel size (A) of the training data, not 0" in reason, reason


@pytest.mark.parametrize("char", ["\u202e", "\u2066", "\u200b", "\u200d", "\ufeff", "\u00ad"])
def test_class_names_with_invisible_characters_are_refused(
    char: str, model_path: Path, tmp_path: Path
) -> None:
    """'ribo' U+202E 'some' shows as 'riboemos': listings named another class than the stored one."""
    name = f"ribo{char}some"
    assert "invisible characters" in (class_name_problem(name) or "")
    reason = _refusal(_edited(model_path, tmp_path / "bidi.onnx", {"class_names": [name, "b", "c"]}))
    assert f"U+{ord(char):04X}" in reason and "class_names has a name with invisible" in reason, reason


def test_metadata_texts_with_bidi_controls_are_refused(model_path: Path, tmp_path: Path) -> None:
    reason = _refusal(_edited(model_path, tmp_path / "m.onnx", {"method": "dann\u202e.tset"}))
    assert "method holds invisible characters (U+202E" in reason, reason


def test_an_undeclared_input_shape_is_said_so(tmp_path: Path) -> None:
    """onnxruntime says rank 0 for an input without a shape: the refusal said "rank 0"."""
    from onnx import TensorProto, helper
    from tiny_onnx import save_graph

    def graph(shape: list[object] | None) -> object:
        return helper.make_graph(
            [helper.make_node("Identity", ["subtomograms"], ["logits"])],
            "g",
            [helper.make_tensor_value_info("subtomograms", TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)],
        )

    reason = _refusal(save_graph(graph(None), tmp_path / "noshape.onnx"))
    assert "the graph does not declare its shape" in reason, reason
    reason = _refusal(save_graph(graph([]), tmp_path / "scalar.onnx"))  # declared, of rank 0
    assert "of rank 0" in reason, reason


# -- model paths that are no regular file ---------------------------------------------------------


@needs_fifo
def test_is_onnx_refuses_a_named_pipe_without_opening_it(tmp_path: Path) -> None:
    fifo = tmp_path / "model.pt"
    os.mkfifo(fifo)
    with unblocked_fifos(fifo), pytest.raises(InputError, match="is a named pipe"):
        is_onnx(fifo)


@needs_fifo
@pytest.mark.parametrize("verb", ["classify", "bench", "evaluate"])
def test_every_verb_says_a_model_is_a_named_pipe_or_a_device(
    verb: str, model_path: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """classify and bench said "no such model file"; evaluate blocked forever on the pipe."""
    fifo = tmp_path / "fifo.pt"
    os.mkfifo(fifo)
    device = tmp_path / "zero.onnx"
    device.symlink_to("/dev/zero")
    tail = {"classify": [tmp_path, "-o", tmp_path / "out"], "bench": [], "evaluate": [tmp_path]}[verb]
    with unblocked_fifos(fifo):
        for path, words in ((fifo, "is a named pipe"), (device, "is a device")):
            line = assert_error(run_cli([verb, path, *tail], capsys), path)
            assert words in line and "not a regular file" in line, line


def _engine(folder: Path, model: Path, onnx_name: str = "model.onnx") -> Path:
    """model.engine (random bytes) with its sidecar, built "from" ``model`` copied next to it."""
    folder.mkdir(parents=True, exist_ok=True)
    engine = folder / "model.engine"
    engine.write_bytes(os.urandom(512))
    onnx = Path(shutil.copy(model, folder / onnx_name))
    write_engine_sidecar(engine, read_onnx_metadata(model), "GPU", "10.9.0", onnx, (1, 4, 8))
    return engine


def test_classify_and_evaluate_name_engine_files_for_what_they_are(
    model_path: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """classify of the sidecar said "Protobuf parsing failed"; evaluate of an engine said "not a
    readable weights-only checkpoint"."""
    engine = _engine(tmp_path / "eng", model_path)
    side = sidecar_path(engine)
    for verb, tail in (("classify", [tmp_path, "-o", tmp_path / "out"]), ("bench", [])):
        line = assert_error(run_cli([verb, side, *tail], capsys), side)
        assert f"is the JSON sidecar of a TensorRT engine; give the engine itself: {engine}" in line, line
    for path in (engine, side):
        line = assert_error(run_cli(["evaluate", path, tmp_path], capsys), path)
        assert "evaluate takes a checkpoint (.pt), a training run directory or an .onnx model" in line, line


# -- engine sidecars -------------------------------------------------------------------------------


def _rewrite(engine: Path, **block: object) -> Path:
    side = sidecar_path(engine)
    data = json.loads(side.read_text())
    data["engine"].update(block)
    side.write_text(json.dumps(data))
    return side


@pytest.mark.parametrize(
    "batch",
    [{"batch_max": -5}, {"batch_max": "lots"}, {"batch_min": 0}, {"batch_opt": 9}, {"batch_max": True}],
)
def test_sidecar_batch_sizes_are_validated(
    batch: dict[str, object], model_path: Path, tmp_path: Path
) -> None:
    """A batch_max of -5 was taken as it was (and the advice was --batch-size -5)."""
    side = _rewrite(_engine(tmp_path, model_path), **batch)
    with pytest.raises(InputError, match="invalid engine sidecar") as err:
        read_engine_sidecar(side)
    assert err.value.path == str(side)


def test_a_sidecar_naming_a_field_twice_is_refused(model_path: Path, tmp_path: Path) -> None:
    side = sidecar_path(_engine(tmp_path, model_path))
    text = side.read_text()
    side.write_text(text.replace('"class_names":', '"class_names": ["x", "y", "z"], "class_names":', 1))
    with pytest.raises(InputError, match="it names 'class_names' more than once"):
        read_engine_sidecar(side)


def test_a_sidecar_is_read_and_parsed_once(
    model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The duplicate-key refusal read and parsed the sidecar a second time after the reader had;
    a field named twice inside the engine block is still refused in the sidecar's words."""
    side = sidecar_path(_engine(tmp_path, model_path))
    reads: list[Path] = []
    read_text = Path.read_text

    def counted(path: Path, *args: Any, **kwargs: Any) -> str:
        reads.append(path)
        return read_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counted)
    read_engine_sidecar(side)
    assert reads.count(side) == 1
    side.write_text(read_text(side).replace('"onnx_sha256":', '"onnx_sha256": "0", "onnx_sha256":', 1))
    with pytest.raises(InputError, match="invalid engine sidecar: it names 'onnx_sha256' more than once"):
        read_engine_sidecar(side)
    assert reads.count(side) == 2


def _reference(engine: Path) -> object:
    """The fp32 model ``--transfer fp16`` on ``engine`` would be checked against (None: none)."""
    from cryoshift.runtime.transfer import _reference_model

    return _reference_model(SimpleNamespace(path=engine, backend="engine", batch_size=4))


def test_the_fp32_reference_is_the_onnx_next_to_the_engine(
    model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sidecar's onnx_file was opened relative to the working directory: another model of that
    name there became the reference, and the right one next to the engine was not found."""
    engine = _engine(tmp_path / "eng", model_path)
    work = tmp_path / "work"
    build_model(work / "model.onnx", seed=7)  # same name, another model
    monkeypatch.chdir(work)
    reference = _reference(engine)
    assert reference is not None and Path(reference.path) == engine.parent / "model.onnx"


def test_no_reference_next_to_the_engine_skips_the_check(model_path: Path, tmp_path: Path) -> None:
    engine = _engine(tmp_path, model_path)
    (tmp_path / "model.onnx").unlink()
    assert _reference(engine) is None


@pytest.mark.parametrize("name", ["/etc/passwd", "../other/model.onnx", "sub/model.onnx", ".."])
def test_an_onnx_file_that_is_a_path_is_refused(
    name: str, model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/etc/passwd was opened, and ../other/model.onnx (from the working directory) loaded."""
    engine = _engine(tmp_path / "eng", model_path)
    _rewrite(engine, onnx_file=name)
    for folder in (tmp_path / "other", tmp_path / "eng" / "sub", tmp_path / "work" / "sub"):
        folder.mkdir(parents=True)  # the very model the engine was built from, where each path leads
        shutil.copy(model_path, folder / "model.onnx")
    monkeypatch.chdir(tmp_path / "work")
    with pytest.raises(InputError, match="must be the name of a file next to the engine, not a path"):
        _reference(engine)


def test_a_link_out_of_the_engine_folder_is_refused(model_path: Path, tmp_path: Path) -> None:
    """Even to the very model (the same sha256): a sidecar may not lead the runtime elsewhere."""
    engine = _engine(tmp_path / "eng", model_path)
    (tmp_path / "eng" / "model.onnx").unlink()
    (tmp_path / "eng" / "model.onnx").symlink_to(model_path)
    with pytest.raises(InputError, match="is a link leading out of the engine's folder"):
        _reference(engine)


def test_a_reference_of_another_sha256_is_refused(
    model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = _engine(tmp_path, model_path)
    build_model(tmp_path / "model.onnx", seed=3)  # re-exported over the one the engine was built from
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="its sha256 differs from the sidecar's onnx_sha256"):
        _reference(engine)
