"""What a `cryoshift train` run folder records of how a model was made (config.json, versions.json,
the model's metadata), as a methods developer reads it from elsewhere, after a --resume, or from the
exported model alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_training import TINY_SIMULATED_SELFTRAIN

from cryoshift.runtime import __version__
from cryoshift.runtime.info import describe
from cryoshift.runtime.metadata import ModelMetadata
from cryoshift.training import run
from cryoshift.training.checkpoint import RUN_MODEL, load_checkpoint
from cryoshift.training.trainer import TrainConfig, train


def _config(domains: dict[str, Path], out: str, **kw: object) -> TrainConfig:
    base: dict[str, object] = {
        "source": str(domains["source"]),
        "target": str(domains["target_unlabelled"]),
        "out": out,
        "method": "source-only",
        "backbone": "cryonet-small",
        "epochs": 1,
        "batch_size": 8,
        "progress": False,
    }
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def dataset_run(domains: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch run on a dataset source, started with a relative --out from its parent folder."""
    parent = tmp_path_factory.mktemp("records")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(parent)
        train(_config(domains, "run"))
    return parent / "run"


def test_config_json_records_where_the_run_is_and_no_simulation_for_a_dataset_source(
    dataset_run: Path,
) -> None:
    """config.json recorded ``out: "run"`` (nowhere, read from another folder) and, for a dataset
    source, ``sim_preset: broad, sim_per_epoch: 6144`` as if 6144 volumes were simulated an epoch."""
    config = _json(dataset_run / "config.json")
    assert config["out"] == str(dataset_run) and Path(config["out"]).is_absolute()
    assert config["sim_preset"] is None and config["sim_per_epoch"] is None and config["sim_val"] is None
    assert TrainConfig.from_dict(config).sim_preset is None  # the record reads back as a config
    # and the model says it trained on the source alone: no template labels, no spectrum matching
    _, metadata, _ = load_checkpoint(dataset_run / RUN_MODEL)
    recipe = metadata.extra["recipe"]
    assert recipe["template_labels"] == 0 and recipe["spectrum_match"] is False
    pytest.importorskip("onnx")  # export's module: the recipe it reads of an older checkpoint
    from cryoshift.export.api import recorded_recipe

    assert recorded_recipe(dataset_run / RUN_MODEL, config) == recipe


def test_a_simulated_source_records_its_simulation_settings(tmp_path: Path) -> None:
    """None given with a simulated source means the default, recorded as the number used (the
    config the run records is checked, not trained: the source here simulates nothing yet)."""
    from cryoshift.training.trainer import _simulation_settings

    config = TrainConfig(source="builtin", out=str(tmp_path / "r"), box=16, sim_per_epoch=None)
    assert _simulation_settings(config) == {"sim_per_epoch": 6144}


def test_resume_keeps_the_first_sessions_versions_and_adds_each_session(
    domains: dict[str, Path], tmp_path: Path
) -> None:
    """versions.json was rewritten by every --resume: a run trained under two cryoshift (or torch)
    versions recorded only the last. An older versions.json (no sessions) stays the first session."""
    out = tmp_path / "run"
    train(_config(domains, str(out)))
    first = _json(out / "versions.json")
    assert [s["first_epoch"] for s in first["sessions"]] == [1]
    assert first["sessions"][0]["cryoshift"] == first["cryoshift"] == __version__
    # as an older cryoshift, on another torch, wrote it
    old = {k: v for k, v in first.items() if k != "sessions"} | {"cryoshift": "0.0.1", "torch": "1.0"}
    (out / "versions.json").write_text(json.dumps(old))
    train(_config(domains, str(out), epochs=2), resume=True)
    record = _json(out / "versions.json")
    assert record["cryoshift"] == "0.0.1" and record["torch"] == "1.0"  # the run started with these
    sessions = record["sessions"]
    assert [(s["cryoshift"], s["first_epoch"]) for s in sessions] == [("0.0.1", None), (__version__, 2)]
    assert sessions[0]["started"] is None and isinstance(sessions[1]["started"], str)
    assert sessions[1]["torch"] != "1.0"
    assert run.recorded_version(out) == __version__  # what wrote config.json last
    train(_config(domains, str(out), epochs=3), resume=True)
    assert [s["first_epoch"] for s in _json(out / "versions.json")["sessions"]] == [None, 2, 3]


def test_an_older_dataset_run_that_recorded_simulation_settings_still_resumes(
    domains: dict[str, Path], tmp_path: Path
) -> None:
    """An older cryoshift recorded the simulation defaults for a dataset source, in config.json and
    in the resume state: --resume must not take the difference for another run's resume state."""
    out = tmp_path / "run"
    train(_config(domains, str(out)))
    config = _json(out / "config.json")
    old = {**config, "sim_preset": "broad", "sim_per_epoch": 6144, "sim_val": 256}
    (out / "config.json").write_text(json.dumps(old))
    assert run.resume_state_mismatch(old, config) == [] and run.resume_state_mismatch(config, old) == []
    assert run.resume_state_mismatch(old, {**old, "sim_per_epoch": 12}) != []  # a real difference
    result = train(_config(domains, str(out), epochs=2), resume=True)
    assert [row["epoch"] for row in result.history] == [1, 2]
    resumed = _json(out / "config.json")
    assert resumed["sim_preset"] is None and resumed["sim_per_epoch"] is None  # recorded as used now


def test_the_exported_model_names_the_recipe_a_source_only_run_trained_with(
    domains: dict[str, Path], tmp_path: Path
) -> None:
    """The ONNX metadata of a ``source-only`` run trained with template-labelled target volumes
    said ``method: source-only`` and nothing else: it read as the method alone."""
    onnx = pytest.importorskip("onnx")
    from cryoshift.export.api import export_checkpoint, recorded_recipe

    out = tmp_path / "run"
    kw = {**TINY_SIMULATED_SELFTRAIN, "method": "source-only", "template_labels": 12, "spectrum_match": True}
    train(_config(domains, str(out), **kw))
    export_checkpoint(out, tmp_path / "export", parity_data=str(domains["source"]))
    model = onnx.load(str(tmp_path / "export" / "model.onnx"))
    meta = ModelMetadata.from_properties({p.key: p.value for p in model.metadata_props})
    assert meta.method == "source-only"
    recipe = meta.extra["recipe"]
    assert recipe["template_labels"] == 12 and recipe["template_rule"] == "margin"
    assert recipe["spectrum_match"] is True and recipe["target_labels"] is False
    # a checkpoint from before the metadata held it: export reads the same from the run's record
    assert recorded_recipe(out / RUN_MODEL, _json(out / "config.json")) == recipe
    assert recorded_recipe(tmp_path / "elsewhere.pt", _json(out / "config.json")) is None  # unknown
    # `cryoshift info` on the exported model shows it
    rows = dict(describe(tmp_path / "export" / "model.onnx").rows)
    assert "template_labels=12" in rows["trained with"] and "spectrum_match=true" in rows["trained with"]
