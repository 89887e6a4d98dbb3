"""What an export records of the model (its ONNX metadata and description) and of itself
(export.json), on checkpoints of real one-epoch training runs: a re-export killed part-way leaves
the earlier export whole, and the model says which method trained it and with what."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_training import TINY_SIMULATED_SELFTRAIN

onnx = pytest.importorskip("onnx")

from cryoshift.export.api import (  # noqa: E402
    REPORT,
    STAGING_PREFIX,
    UNFINISHED,
    earlier_export,
    export_checkpoint,
)
from cryoshift.runtime.dataset import write_dataset  # noqa: E402
from cryoshift.runtime.metadata import read_onnx_metadata  # noqa: E402
from cryoshift.training.trainer import TrainConfig, train  # noqa: E402

# A subprocess export that SIGKILLs itself as the fp16 step starts: after the new model.onnx was
# built, before the new export.json is written (argv: the `cryoshift export` arguments).
KILLED_AT_FP16 = """
import os, signal, sys
from cryoshift.export import fp16

def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

fp16.export_fp16 = killed
from cryoshift.runtime.cli import main
sys.exit(main(sys.argv[1:]))
"""
CLI = "import sys; from cryoshift.runtime.cli import main; sys.exit(main(sys.argv[1:]))"


def _train(root: Path, name: str, make_blobs, **kw: object) -> Path:
    """A one-epoch run on a simulated 16^3 source with an unlabelled target (the default recipe:
    template labels and spectrum matching run)."""
    target = root / "target"
    if not target.exists():
        vols, _ = make_blobs(30, seed=3, offset=5.0, scale=3.0)
        write_dataset(target, vols, voxel_size=10.0, contrast="dark")
    config = {
        **TINY_SIMULATED_SELFTRAIN,
        "target": str(target),
        "out": str(root / name),
        "backbone": "cryonet-small",
        "epochs": 1,
        "batch_size": 8,
        "progress": False,
        "threads": 1,
        "template_labels": 12,
        **kw,
    }
    train(TrainConfig(**config))  # type: ignore[arg-type]
    return root / name


@pytest.fixture(scope="module")
def runs(make_blobs, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = Path(tmp_path_factory.mktemp("records"))
    return {
        "selftrain": _train(root, "selftrain", make_blobs),  # `cryoshift train`'s default method
        "source-only": _train(root, "source-only", make_blobs, method="source-only"),
    }


def _opset(path: Path) -> int:
    return next(o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx"))


def _cli_export(run: Path, out: Path, *extra: str, killed: bool = False) -> subprocess.CompletedProcess:
    """`cryoshift export RUN -o OUT --fp16 EXTRA` in a process of its own (killed: by KILLED_AT_FP16)."""
    code = KILLED_AT_FP16 if killed else CLI
    argv = ["export", str(run), "-o", str(out), "--no-progress", "--fp16", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env, timeout=600
    )


def test_a_re_export_killed_part_way_leaves_the_earlier_export_whole(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    """Re-exporting into a folder holding a finished export replaced its export.json with an
    unfinished record, then model.onnx, before the new formats were proven: a SIGKILL while the
    fp16 step ran left a new model.onnx (opset 18) beside the old model.fp16.onnx (opset 20) and no
    finished record of either. Built aside, the earlier export stays as it was, byte for byte."""
    out = tmp_path / "deploy"
    first = _cli_export(runs["selftrain"], out)
    assert first.returncode == 0, first.stderr
    before = {name: (out / name).read_bytes() for name in earlier_export(out)}  # not the lock file
    assert set(before) == {REPORT, "model.onnx", "model.fp16.onnx"}

    killed = _cli_export(runs["selftrain"], out, "--opset", "18", killed=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    for name, data in before.items():  # export.json, model.onnx, model.fp16.onnx: as they were
        assert (out / name).read_bytes() == data, name
    report = json.loads((out / REPORT).read_text())
    assert UNFINISHED not in report and _opset(out / "model.onnx") == 20
    assert [p.name for p in out.iterdir() if p.name.startswith(STAGING_PREFIX)]  # what the kill left

    again = _cli_export(runs["selftrain"], out, "--opset", "18")
    assert again.returncode == 0, again.stderr
    assert not [p.name for p in out.iterdir() if p.name.startswith(STAGING_PREFIX)]  # cleared
    report = json.loads((out / REPORT).read_text())
    assert UNFINISHED not in report and [r["format"] for r in report["results"]] == ["onnx", "fp16"]
    assert all(Path(r["path"]).parent == out for r in report["results"])  # where the files are
    assert _opset(out / "model.onnx") == 18 and _opset(out / "model.fp16.onnx") == 18


def test_a_re_export_stopped_in_process_leaves_the_earlier_export_whole(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for an export stopped by an exception (Ctrl-C) in the fp16 step: nothing of it is
    left in the folder, staging folder included."""
    from cryoshift.export import fp16

    out = tmp_path / "deploy"
    export_checkpoint(runs["selftrain"], out, fp16=True)
    before = {name: (out / name).read_bytes() for name in earlier_export(out)}

    def stopped(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(fp16, "export_fp16", stopped)
    with pytest.raises(KeyboardInterrupt):
        export_checkpoint(runs["selftrain"], out, fp16=True, opset=18)
    assert {name: (out / name).read_bytes() for name in earlier_export(out)} == before
    assert not [p.name for p in out.iterdir() if p.name.startswith(STAGING_PREFIX)]


def test_the_exported_model_names_its_runs_method(runs: dict[str, Path], tmp_path: Path) -> None:
    """`cryoshift train`'s default run (selftrain, template labels) exports ``method: selftrain``:
    the method is the run's own (config.json's), never another word for it."""
    export_checkpoint(runs["selftrain"], tmp_path / "export")
    meta = read_onnx_metadata(tmp_path / "export" / "model.onnx")
    config = json.loads((runs["selftrain"] / "config.json").read_text())
    assert meta.method == config["method"] == "selftrain"
    assert meta.extra["recipe"]["template_labels"] == 12
    report = json.loads((tmp_path / "export" / REPORT).read_text())
    assert report["metadata"]["method"] == "selftrain"


def test_the_model_description_says_what_the_method_trained_with(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    """A ``--method source-only`` run with the default recipe trained on template-matched target
    subtomograms and a source filtered to the target's spectrum; the model's description (the ONNX
    doc_string other tools show) said neither, and read as a model that never saw the target.
    ``method`` stays the adaptation method's name, as every record of the run gives it."""
    export_checkpoint(runs["source-only"], tmp_path / "export")
    model = onnx.load(str(tmp_path / "export" / "model.onnx"))
    meta = read_onnx_metadata(tmp_path / "export" / "model.onnx")
    assert meta.method == "source-only" and meta.extra["recipe"]["spectrum_match"] is True
    assert "; method source-only, trained with pseudo-labels from template matching on 12 target " in (
        model.doc_string
    )
    assert "a source filtered to the target's spectrum" in model.doc_string


def test_a_model_without_a_recipe_is_described_by_its_method_alone(tmp_path: Path) -> None:
    """A model made before the recipe was recorded claims nothing it cannot know."""
    from dataclasses import replace

    from cryoshift.export.onnx import method_in_words
    from cryoshift.runtime.metadata import ModelMetadata

    meta = ModelMetadata(class_names=["a", "b"], box_size=16, voxel_size=10.0, method="dann")
    assert method_in_words(meta) == "; method dann"
    assert method_in_words(replace(meta, method="")) == ""
