"""The formats table drives export: each row names its builder, export_checkpoint looks it up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cryoshift.export import formats
from cryoshift.export.formats import FORMATS


def test_every_row_names_callables_that_exist_and_a_build_order() -> None:
    order = list(FORMATS)
    for name, fmt in FORMATS.items():
        for target in (fmt.builder, fmt.prepare, fmt.unavailable):
            if target:
                assert callable(formats._resolve(target)), target
        assert fmt.needs_gpu == bool(fmt.unavailable) == bool(fmt.skipped), name
        if fmt.built_from is not None:  # built after the format it derives from
            assert order.index(fmt.built_from) < order.index(name)
    assert [f.name for f in FORMATS.values() if f.built_from is None] == ["onnx"]


def test_export_checkpoint_calls_the_builders_the_table_names(
    tiny_model, make_blobs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryoshift.export import export_checkpoint
    from cryoshift.export import fp16 as fp16_module
    from cryoshift.export import tensorrt as tensorrt_module
    from cryoshift.runtime.dataset import write_dataset
    from cryoshift.runtime.metadata import ModelMetadata
    from cryoshift.training.checkpoint import save_checkpoint

    calls = []

    def fake(name):
        def build(job):
            calls.append((name, job.onnx_path, list(job.onnx_variants), job.reference is not None))
            return []

        return build

    monkeypatch.setattr(fp16_module, "build_fp16", fake("fp16"))
    monkeypatch.setattr(tensorrt_module, "build_tensorrt", fake("tensorrt"))
    monkeypatch.setattr(tensorrt_module, "tensorrt_unavailable", lambda: None)  # as on a GPU machine
    meta = ModelMetadata(class_names=["sphere", "rod"], box_size=16, voxel_size=13.68)
    ckpt = save_checkpoint(tmp_path / "model.pt", tiny_model, "cryonet-small", dict(tiny_model.config), meta)
    parity = write_dataset(tmp_path / "parity", make_blobs(16, seed=3)[0], voxel_size=13.68)
    results = export_checkpoint(ckpt, tmp_path / "out", fp16=True, tensorrt=True, parity_data=parity)

    onnx_path = tmp_path / "out" / "model.onnx"
    assert [r.format for r in results] == ["onnx"] and onnx_path.is_file()
    # the builders run in the export's staging folder inside out/, moved into out/ once all passed
    built = calls[0][1]
    assert built.name == "model.onnx" and built.parent.parent == tmp_path / "out"
    assert not built.parent.exists()  # removed once its files were moved
    assert calls == [
        ("fp16", built, [(built, "fp32")], True),
        ("tensorrt", built, [(built, "fp32")], True),
    ]
    report = json.loads((tmp_path / "out" / "export.json").read_text())
    assert report["requested"] == ["onnx", "fp16", "tensorrt"] and report["skipped"] == []

    # The same request where the GPU check says no: the table's GPU row is skipped, in one line.
    monkeypatch.setattr(tensorrt_module, "tensorrt_unavailable", lambda: "no GPU in this test")
    calls.clear()
    with pytest.warns(UserWarning, match="TensorRT engines skipped: no GPU in this test"):
        export_checkpoint(ckpt, tmp_path / "out2", tensorrt=True, parity_data=parity)
    assert calls == []
