"""Three export findings, on tiny real models (tests/export/conftest.py):

* ``--test-views`` other than the count training calibrated for keeps a calibration that is not
  valid for the graph; the export said nothing. It now warns, and records the fitted count in the
  model (``extra.calibration_test_views``) and export.json's notes.
* The export quieted torch.onnx by setting logger levels for the whole process: another thread's
  records were dropped while it ran, and two exports at once left torch.onnx at ERROR for good.
* torch.onnx.export is not thread-safe: two exports in two threads broke each other's
  torch.export step (and fell back to TorchScript, or failed).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from cryoshift.export.api import CalibrationViewsWarning, export_checkpoint
from cryoshift.runtime.cli import main
from cryoshift.runtime.metadata import CALIBRATION_VIEWS, ModelMetadata
from cryoshift.runtime.mrc import write_stack

LOGGERS = ("torch.onnx", "torch.export", "torch._export", "onnxscript", "onnx_ir")
FALLBACK = "used the TorchScript exporter"  # export/onnx.trace_to_onnx's word for a failed torch.export


def _checkpoint(path: Path, model: torch.nn.Module, metadata: ModelMetadata, views: int = 4) -> Path:
    """``model`` saved as a checkpoint whose network averages ``views`` poses, as a run's model.pt
    (trained with --test-views 4, the default) is; its metadata's calibration counts as fitted for them."""
    from cryoshift.training.checkpoint import save_checkpoint

    kwargs = {"num_classes": len(metadata.class_names), "box_size": metadata.box_size, "test_views": views}
    return save_checkpoint(path, model, "cryonet-small", kwargs, metadata)


def _parity(tmp_path: Path, volumes: np.ndarray) -> Path:
    return write_stack(tmp_path / "parity.mrcs", volumes[:12], voxel_size=13.68)


def _model_extra(path: Path) -> dict:
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return ModelMetadata.from_properties(props).extra


def test_fewer_test_views_than_calibrated_for_is_said_and_recorded(
    tiny_model: torch.nn.Module, metadata: ModelMetadata, parity_volumes: np.ndarray, tmp_path: Path
) -> None:
    """A 4-view model exported with 1 view: the calibration stays (export cannot refit it), but the
    export warns naming both counts and the way to a calibrated model, and says so in export.json and
    the model's metadata; the trained count exports with no such warning and no such record."""
    ckpt = _checkpoint(tmp_path / "model.pt", tiny_model, metadata)
    parity = _parity(tmp_path, parity_volumes)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_checkpoint(ckpt, tmp_path / "one", parity_data=parity, test_views=1)
    said = [str(w.message) for w in caught if issubclass(w.category, CalibrationViewsWarning)]
    assert len(said) == 1, [str(w.message) for w in caught]
    assert "fitted for 4 test views and is not valid for the 1" in said[0], said[0]
    assert "train with --test-views 1" in said[0] and str(ckpt) in said[0], said[0]
    report = json.loads((tmp_path / "one" / "export.json").read_text())
    assert said[0] in report["notes"]
    extra = _model_extra(tmp_path / "one" / "model.onnx")
    assert extra["test_views"] == 1 and extra[CALIBRATION_VIEWS] == 4, extra

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_checkpoint(ckpt, tmp_path / "four", parity_data=parity)
    assert not [w for w in caught if issubclass(w.category, CalibrationViewsWarning)]
    assert json.loads((tmp_path / "four" / "export.json").read_text())["notes"] == []
    extra = _model_extra(tmp_path / "four" / "model.onnx")
    assert extra["test_views"] == 4 and CALIBRATION_VIEWS not in extra, extra


def test_the_cli_prints_it_as_a_warning(
    tiny_model: torch.nn.Module,
    metadata: ModelMetadata,
    parity_volumes: np.ndarray,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``cryoshift export --test-views 1`` of a 4-view model: a warning on stderr, exit 0."""
    ckpt = _checkpoint(tmp_path / "model.pt", tiny_model, metadata)
    argv = ["export", ckpt, "-o", tmp_path / "deploy-1view", "--test-views", "1", "--no-progress"]
    code = main([str(a) for a in [*argv, "--parity-data", _parity(tmp_path, parity_volumes)]])
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert code == 0, err
    assert "warning: " in err and "fitted for 4 test views and is not valid for the 1" in err, err
    # whoever receives the model reads it too: info names both counts
    assert main(["info", str(tmp_path / "deploy-1view" / "model.onnx")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "fitted for 4 test views, not the 1 this model averages" in out, out


def test_an_export_leaves_logger_levels_and_other_threads_records_alone(
    tiny_model: torch.nn.Module, metadata: ModelMetadata, parity_volumes: np.ndarray, tmp_path: Path
) -> None:
    """Levels set before the export are the levels after it, no logger or handler keeps a filter,
    and what another thread logs to torch.onnx while the export runs reaches its handler."""
    from cryoshift.export import export_model

    loggers = [logging.getLogger(name) for name in LOGGERS]
    before = [(lg.level, list(lg.filters)) for lg in loggers]
    handler_filters = [list(h.filters) for lg in loggers for h in lg.handlers]
    received: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            received.append(record.getMessage())

    keep = Keep(logging.DEBUG)
    theirs = logging.getLogger("torch.onnx")
    old_level = theirs.level
    theirs.setLevel(logging.INFO)  # another part of the process wants torch.onnx's INFO records
    theirs.addHandler(keep)
    stop = threading.Event()
    sent: list[str] = []

    def other_thread() -> None:
        while not stop.is_set():
            sent.append(f"record {len(sent)}")
            theirs.info(sent[-1])
            time.sleep(0.002)

    try:
        sender = threading.Thread(target=other_thread)
        sender.start()
        try:
            export_model(tiny_model, metadata, tmp_path / "model.onnx", parity_volumes=parity_volumes)
        finally:
            stop.set()
            sender.join()
        assert theirs.level == logging.INFO
        assert keep.filters == []
    finally:
        theirs.removeHandler(keep)
        theirs.setLevel(old_level)
    assert len(sent) > 10 and received == sent, f"{len(received)} of {len(sent)} records arrived"
    assert [(lg.level, list(lg.filters)) for lg in loggers] == before
    assert [list(h.filters) for lg in loggers for h in lg.handlers] == handler_filters


def test_two_threads_export_two_checkpoints_at_once(
    tiny_model: torch.nn.Module, metadata: ModelMetadata, parity_volumes: np.ndarray, tmp_path: Path
) -> None:
    """Two checkpoints, two folders, two threads started together: both exports succeed with
    torch.export (no TorchScript fallback), both fp32 parities pass, and the logger levels set
    before are unchanged after."""
    import copy

    other = copy.deepcopy(tiny_model)  # another network: same margins, other weights
    with torch.no_grad():
        for param in other.parameters():
            param.mul_(1.05)
    ckpts = [
        _checkpoint(tmp_path / "a.pt", tiny_model, metadata, views=1),
        _checkpoint(tmp_path / "b.pt", other, metadata, views=1),
    ]
    parity = _parity(tmp_path, parity_volumes)
    levels = {name: logging.getLogger(name).level for name in LOGGERS}
    found = levels["onnxscript"]
    logging.getLogger("onnxscript").setLevel(logging.WARNING)  # set by the caller before the exports
    levels["onnxscript"] = logging.WARNING
    results: dict[int, list] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def export(i: int) -> None:
        try:
            start.wait()
            results[i] = export_checkpoint(ckpts[i], tmp_path / f"out{i}", parity_data=parity)
        except BaseException as exc:  # re-raised in the test's thread below
            errors.append(exc)

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            threads = [threading.Thread(target=export, args=(i,)) for i in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        assert not errors, errors
        assert not [w for w in caught if FALLBACK in str(w.message)], [str(w.message) for w in caught]
        for i in range(2):
            (onnx_result,) = results[i]
            assert onnx_result.path == tmp_path / f"out{i}" / "model.onnx" and onnx_result.path.is_file()
            assert onnx_result.parity is not None and onnx_result.parity.passed, onnx_result.parity
            report = json.loads((tmp_path / f"out{i}" / "export.json").read_text())
            assert all(r["parity"]["passed"] for r in report["results"])
        assert {name: logging.getLogger(name).level for name in LOGGERS} == levels
    finally:
        logging.getLogger("onnxscript").setLevel(found)
