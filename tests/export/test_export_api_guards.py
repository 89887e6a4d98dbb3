"""``export_checkpoint`` from Python guards its folder as ``cryoshift export`` does, and leaves the
process alone: the refusal of another checkpoint's export folder and the folder's export lock
(both lived only in the CLI: a dann model.onnx sat next to a source-only model.fp16.onnx), no
``sys.stdout`` swapped for every thread (another thread's prints were lost), and no converter
warning leaking out of ``fp16=True``. Real checkpoints of the tiny 16^3 model, real exports."""

from __future__ import annotations

import copy
import os
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
import torch

onnx = pytest.importorskip("onnx")

from cryoshift.export.api import REPORT, export_checkpoint  # noqa: E402
from cryoshift.runtime.errors import InputError  # noqa: E402
from cryoshift.runtime.lock import EXPORT_LOCK, FolderLock  # noqa: E402
from cryoshift.runtime.metadata import ModelMetadata, read_onnx_metadata  # noqa: E402


def _metadata(method: str) -> ModelMetadata:
    return ModelMetadata(
        class_names=["sphere", "rod"],
        box_size=16,
        voxel_size=13.68,
        temperature=1.3,
        unknown_threshold=0.4,  # calibrated: no CalibrationNote
        method=method,
        feature_mean=[0.0] * 32,
        feature_var=[1.0] * 32,
    )


@pytest.fixture(scope="module")
def checkpoints(tiny_model, make_blobs, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two checkpoints of two networks ("source-only", "dann") with a real parity dataset. The dann
    one has a weight below fp16's smallest value, which the fp16 converter warns about."""
    from cryoshift.runtime.dataset import write_dataset
    from cryoshift.training.checkpoint import save_checkpoint

    root = Path(tmp_path_factory.mktemp("guards"))
    vols, _ = make_blobs(24, seed=21, offset=500.0, scale=30.0)
    target = write_dataset(root / "target", vols, voxel_size=13.68)
    other = copy.deepcopy(tiny_model)
    with torch.no_grad():
        first = next(p for p in other.parameters() if p.dim() == 5)
        first.view(-1)[0] = 1e-9  # rounded by the converter, with a UserWarning
    made = {}
    for method, model in (("source-only", tiny_model), ("dann", other)):
        made[method] = save_checkpoint(
            root / method / "model.pt",
            model,
            "cryonet-small",
            dict(model.config),
            _metadata(method),
            epoch=1,
            config={"target": str(target)},
        )
    return made


def _method(path: Path) -> str:
    return read_onnx_metadata(path).method


def test_another_checkpoints_export_folder_is_refused(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    """The tester's case: a source-only export with fp16, then dann's export into the same folder
    went through and mixed the two networks. It is refused now, as the CLI refuses it, and the
    folder is left as it was; the same checkpoint exported again goes on."""
    out = tmp_path / "deploy"
    export_checkpoint(checkpoints["source-only"], out, fp16=True)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(InputError) as refused:
        export_checkpoint(checkpoints["dann"], out)
    message = str(refused.value)
    assert "already holds another checkpoint's export (export.json, model.fp16.onnx, model.onnx)" in message
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _method(out / "model.onnx") == _method(out / "model.fp16.onnx") == "source-only"
    export_checkpoint(checkpoints["source-only"], out, fp16=True)  # the same network: allowed


def test_an_export_into_a_folder_another_export_holds_is_refused(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    """An export under way holds the folder (its real lock): the API call is refused naming its pid
    and writes nothing, as `cryoshift export` is."""
    out = tmp_path / "deploy"
    out.mkdir()
    with FolderLock(out, EXPORT_LOCK, "export"), pytest.raises(InputError) as refused:
        export_checkpoint(checkpoints["dann"], out)
    assert f"another export (pid {os.getpid()}) is writing to this folder" in str(refused.value)
    assert sorted(p.name for p in out.iterdir()) == [EXPORT_LOCK]


def test_two_threads_exporting_two_networks_into_one_folder(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    """Two exports started together into one folder: one finishes, the other is refused (by the
    lock while the first runs, or as another checkpoint's export after it), and the folder holds
    one network's files only. Both used to finish, each over the other's files."""
    out = tmp_path / "deploy"
    start = threading.Barrier(2)
    outcome: dict[str, BaseException | None] = {}

    def run(method: str) -> None:
        start.wait()
        try:
            export_checkpoint(checkpoints[method], out, fp16=method == "source-only")
            outcome[method] = None
        except BaseException as exc:
            outcome[method] = exc

    threads = [threading.Thread(target=run, args=(method,)) for method in checkpoints]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    finished = [method for method, exc in outcome.items() if exc is None]
    refused = [exc for exc in outcome.values() if exc is not None]
    assert len(finished) == 1 and len(refused) == 1, outcome
    assert isinstance(refused[0], InputError), refused[0]
    assert "another export (pid" in str(refused[0]) or "another checkpoint's export" in str(refused[0])
    onnx_files = sorted(out.glob("model*.onnx"))
    assert {_method(path) for path in onnx_files} == set(finished), onnx_files
    assert (out / REPORT).is_file()


def test_an_export_keeps_what_other_threads_print(
    checkpoints: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The export swapped sys.stdout for the whole process while it ran (redirect_stdout): a
    background thread's lines printed meanwhile were lost. Every one arrives now."""
    stop = threading.Event()
    printed = [0]

    def ticker() -> None:
        while not stop.is_set():
            print(f"tick {printed[0]}", flush=True)
            printed[0] += 1
            time.sleep(0.01)

    thread = threading.Thread(target=ticker)
    thread.start()
    try:
        export_checkpoint(checkpoints["source-only"], tmp_path / "deploy")
    finally:
        stop.set()
        thread.join()
    assert sys.stdout is not None
    ticks = [line for line in capsys.readouterr().out.splitlines() if line.startswith("tick ")]
    assert printed[0] > 5  # the export took long enough to tell
    assert len(ticks) == printed[0], f"{printed[0] - len(ticks)} of {printed[0]} lines lost"


def test_fp16_export_lets_no_converter_warning_out(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    """onnxconverter_common warns for each weight it rounds to fp16's range (a raw source line
    reaching the user); the parity check measures that rounding, so the warning is dropped where
    the converter is called, and the caller's filters are left as they were."""
    filters = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_checkpoint(checkpoints["dann"], tmp_path / "deploy", fp16=True)
        inside = list(warnings.filters)
    leaked = [str(w.message) for w in caught if "will be truncated" in str(w.message)]
    assert not leaked, leaked
    assert inside[0][0] == "always" and len(inside) == len(filters) + 1  # nothing added for good
    assert _method(tmp_path / "deploy" / "model.fp16.onnx") == "dann"
