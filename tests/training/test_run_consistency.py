"""A run stays one run: --resume goes on only on the data it started with, ``evaluate --run`` takes
only the run's own model, exports and runs say when a model is not calibrated, a dataset folder
and a run folder are not written into as the other, and the messages around them are one short
line that names the problem (16^3 blobs of conftest.py, one- and two-epoch source-only runs)."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from hostile_inputs import Capsys, assert_error, run_cli

from cryoshift.runtime.dataset import read_dataset, write_dataset
from cryoshift.runtime.errors import InputError
from cryoshift.training.trainer import TrainConfig, train


def _config(source: Path, out: Path, **kw: object) -> TrainConfig:
    """A tiny source-only run (cryonet-small, one pose, fp32, one thread)."""
    base: dict[str, object] = {
        "source": str(source),
        "out": str(out),
        "method": "source-only",
        "backbone": "cryonet-small",
        "test_views": 1,
        "epochs": 2,
        "batch_size": 8,
        "val_fraction": 0.25,
        "template_labels": 0,
        "amp": False,
        "device": "cpu",
        "threads": 1,
        "progress": False,
    }
    return TrainConfig(**{**base, **kw})  # type: ignore[arg-type]


def _rewrite(
    original: Path, dst: Path, names: list[str], relabel: dict[int, int], n: int | None = None
) -> Path:
    """``original``'s volumes written again to ``dst`` with the classes ``names``, each label k
    becoming ``relabel[k]`` (a source simulated again with its classes in another order); a
    fourth name takes every fourth volume."""
    ds = read_dataset(original, with_labels=True)
    volumes, labels = np.asarray(ds.volumes), [relabel[int(k)] for k in ds.labels]
    if len(names) > 3:
        labels[::4] = [3] * len(labels[::4])
    n = len(labels) if n is None else n
    shutil.rmtree(dst, ignore_errors=True)
    return write_dataset(dst, volumes[:n], labels[:n], names, voxel_size=ds.voxel_size)


@pytest.fixture(scope="module")
def runs(domains: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """'a' and 'b': one epoch on the source, seeds 0 and 1; 'c': on other data (the labelled target)."""
    root = tmp_path_factory.mktemp("runs")
    made = {
        "a": train(_config(domains["source"], root / "a", epochs=1)),
        "b": train(_config(domains["source"], root / "b", epochs=1, seed=1)),
        "c": train(_config(domains["target"], root / "c", epochs=1)),
    }
    return {name: result.run_dir for name, result in made.items()}


# --------------------------------------------------------------------------- --resume on other data


@pytest.mark.parametrize(
    ("names", "relabel", "shown"),
    [
        (["dumbbell", "rod", "sphere"], {0: 2, 1: 1, 2: 0}, "dumbbell, rod, sphere"),
        # a class more: was "damaged resume state (Error(s) in loading state_dict ...)"
        (["sphere", "rod", "dumbbell", "cube"], {0: 0, 1: 1, 2: 2}, "sphere, rod, dumbbell, cube"),
    ],
)
def test_resume_refuses_a_source_made_again_with_other_classes(
    domains: dict[str, Path], tmp_path: Path, names: list[str], relabel: dict[int, int], shown: str
) -> None:
    """The source simulated again with its classes in another order resumed without a word: the
    last epochs trained on re-indexed labels and model.pt was calibrated against them."""
    source = Path(shutil.copytree(domains["source"], tmp_path / "source"))
    run = tmp_path / "run"
    train(_config(source, run), stop_after_epoch=1)
    _rewrite(domains["source"], source, names, relabel)
    with pytest.raises(InputError) as exc:
        train(_config(source, run), resume=True)
    assert exc.value.path == str(source)
    assert f"its classes are {shown}, the run's were sphere, rod, dumbbell" in exc.value.reason
    assert "start a new run with another --out" in exc.value.reason
    assert not (run / "model.pt").exists()


def test_resume_refuses_a_changed_source_or_target_and_names_which(
    domains: dict[str, Path], tmp_path: Path
) -> None:
    """Same classes, other volumes: the fingerprint tells; the target is checked as the source is."""
    source = Path(shutil.copytree(domains["source"], tmp_path / "source"))
    target = Path(shutil.copytree(domains["target_unlabelled"], tmp_path / "target"))
    run = tmp_path / "run"
    config = _config(source, run, method="adabn", target=str(target))
    train(config, stop_after_epoch=1)
    train(config, resume=True, stop_after_epoch=1)  # nothing changed: resumes (no epoch left to run)

    ds = read_dataset(target)
    shutil.rmtree(target)
    write_dataset(target, np.asarray(ds.volumes)[:20], voxel_size=10.0)
    with pytest.raises(InputError, match=r"the target changed since .*\(fingerprint") as exc:
        train(config, resume=True)
    assert exc.value.path == str(target)

    shutil.rmtree(target)
    shutil.copytree(domains["target_unlabelled"], target)
    _rewrite(domains["source"], source, ["sphere", "rod", "dumbbell"], {0: 0, 1: 1, 2: 2}, n=45)
    with pytest.raises(InputError, match=r"the source changed since .*\(fingerprint") as exc:
        train(config, resume=True)
    assert exc.value.path == str(source)


def test_resume_refuses_a_simulated_sources_structure_file_edited_since(tmp_path: Path) -> None:
    """A simulated source is drawn afresh each epoch; its fingerprint was of the --source text, so
    a map file changed between the start and the resume went unnoticed."""
    from cryoshift.runtime.mrc import write_volume
    from cryoshift.training.simulate.structures import load_structures

    maps = tmp_path / "maps"
    maps.mkdir()
    found = load_structures(["builtin:ribosome", "builtin:proteasome"], 16, 10.0)
    for name, density in zip(found.names, found.maps, strict=True):
        write_volume(maps / f"{name}.mrc", density, voxel_size=10.0)
    run = tmp_path / "run"
    config = _config(maps, run, box=16, sim_per_epoch=16, sim_val=8, spectrum_match=False, dense_weight=0.0)
    train(config, stop_after_epoch=1)
    train(config, resume=True, stop_after_epoch=1)  # the same files: resumes
    write_volume(maps / "proteasome.mrc", np.roll(found.maps[1], 3, axis=0), voxel_size=10.0)
    with pytest.raises(InputError, match="the source's structure files changed since"):
        train(config, resume=True)


# --------------------------------------------------------------------------- a target that is the source


@pytest.mark.parametrize("given", ["folder", "stack"])
def test_a_byte_identical_copy_of_the_source_is_refused_as_target(
    domains: dict[str, Path], tmp_path: Path, given: str
) -> None:
    copy = Path(shutil.copytree(domains["source"], tmp_path / "copy"))
    target = copy if given == "folder" else copy / "volumes.mrc"
    with pytest.raises(InputError, match="is a copy of the --source dataset") as exc:
        train(_config(domains["source"], tmp_path / "run", method="adabn", target=str(target)))
    assert exc.value.path == str(target)


# --------------------------------------------------------------------------- evaluate --run


def test_evaluate_refuses_a_run_that_did_not_make_the_model(
    runs: dict[str, Path], domains: dict[str, Path], tmp_path: Path
) -> None:
    """Its epochs were scored beside the model, with a 'label-free choice ... gap' line."""
    from cryoshift.training.evaluate import evaluate

    with pytest.raises(InputError, match=r"was not made by the --run .*training config \(seed=") as exc:
        evaluate(runs["a"] / "model.pt", domains["target"], tmp_path / "e1", runs["b"])
    assert exc.value.path == str(runs["a"] / "model.pt")
    with pytest.raises(InputError, match="its source data differ"):
        evaluate(runs["c"], domains["target"], tmp_path / "e2", runs["a"])
    # the run's own checkpoint, even copied elsewhere, is scored with its run's epochs
    copy = Path(shutil.copy(runs["a"] / "checkpoints" / "epoch_0001.pt", tmp_path / "mine.pt"))
    report = evaluate(copy, domains["target"], tmp_path / "e3", runs["a"])
    assert report["checkpoints"]["epochs"]


# --------------------------------------------------------------------------- uncalibrated models


def test_a_run_named_with_relative_paths_records_them_absolute_for_export_elsewhere(
    domains: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capsys
) -> None:
    """config.json recorded --source/--target as typed; ``export`` run from another folder then
    found no data under ``../source`` and checked parity on random volumes (or on another folder's
    data of the same name). The run records absolute paths; a resume from the first folder with the
    same relative names still counts as the same data (no "ignored --source" note)."""
    work = tmp_path / "work"
    shutil.copytree(domains["source"], work / "data" / "source")
    shutil.copytree(domains["target"], work / "data" / "target")
    monkeypatch.chdir(work)
    cfg = _config(Path("data/source"), Path("run"), epochs=1, target="data/target")
    train(cfg)
    stored = json.loads((work / "run" / "config.json").read_text())
    assert stored["source"] == str(work / "data" / "source")
    assert stored["target"] == str(work / "data" / "target")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    from cryoshift.export.api import export_checkpoint

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_checkpoint(work / "run", elsewhere / "deploy")
    assert not [w for w in caught if "random volumes" in str(w.message)], [str(w.message) for w in caught]

    monkeypatch.chdir(work)
    capsys.readouterr()
    result = train(_config(Path("data/source"), Path("run"), epochs=2, target="data/target"), resume=True)
    assert result.run_dir.resolve() == (work / "run").resolve()
    assert "ignored" not in capsys.readouterr().err


def test_export_of_an_epoch_checkpoint_notes_it_is_not_calibrated(
    runs: dict[str, Path], tmp_path: Path, capsys: Capsys
) -> None:
    """It exported with temperature 1, unknown threshold 0 and no shift-score reference; classify
    then marked nothing unknown and wrote NaN shift scores, and nothing said so."""
    epoch = runs["a"] / "checkpoints" / "epoch_0001.pt"
    code, _, err = run_cli(["export", epoch, "-o", tmp_path / "e", "--no-progress"], capsys)
    assert code == 0, err
    notes = [line for line in err.splitlines() if line.startswith("cryoshift: note:")]
    assert len(notes) == 1, err
    assert "not calibrated" in notes[0] and "classify marks nothing unknown" in notes[0]
    assert "NaN shift scores" in notes[0]
    assert f"the run's {runs['a'] / 'model.pt'} is the calibrated model" in notes[0]
    assert json.loads((tmp_path / "e" / "export.json").read_text())["notes"] == [notes[0][17:]]

    from cryoshift.export.api import CalibrationNote, export_checkpoint

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_checkpoint(runs["a"], tmp_path / "m")
    assert not [w for w in caught if issubclass(w.category, CalibrationNote)]


def test_a_run_without_source_validation_says_so_and_claims_nothing_unmeasured(
    domains: dict[str, Path], tmp_path: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--val-fraction 0: nothing said at the start; selection.json recorded src_val_acc 0.0, and a
    collapse warning said the source classes 'stay apart' with no source data to tell."""
    from cryoshift.training import trainer
    from cryoshift.training.select import target_scores

    def collapsed(*args: object) -> dict[str, float]:
        return {**target_scores(*args), "collapsed": 1.0, "tgt_top_share": 0.9}  # type: ignore[arg-type]

    monkeypatch.setattr(trainer, "target_scores", collapsed)
    target = domains["target_unlabelled"]
    run = tmp_path / "run"
    train(_config(domains["source"], run, method="adabn", target=str(target), val_fraction=0.0, epochs=1))
    err = capsys.readouterr().err
    assert "cryoshift: note: --val-fraction 0 holds no source volumes out: the model is not calibrated" in err
    selection = json.loads((run / "selection.json").read_text())
    assert [row["src_val_acc"] for row in selection["epochs"]] == [None]
    (warning,) = [w for w in selection["warnings"] if "collapsed" in w]
    assert "stay apart was not measured" in warning and "while the source classes stay apart" not in warning


# --------------------------------------------------------------------------- a dataset is not a run


def test_train_refuses_a_dataset_folder_as_out(domains: dict[str, Path], tmp_path: Path) -> None:
    folder = Path(shutil.copytree(domains["source"], tmp_path / "data"))
    with pytest.raises(InputError, match=r"holds a dataset \(volumes.mrc, particles.csv, dataset.json\)"):
        train(_config(domains["source"], folder))
    assert not (folder / "config.json").exists()


def test_simulate_refuses_a_run_folder(runs: dict[str, Path], capsys: Capsys) -> None:
    argv = ["simulate", runs["b"], "-s", "builtin:ribosome,builtin:proteasome", "--n", 4, "--box", 16]
    line = assert_error(run_cli([*argv, "--no-progress"], capsys), runs["b"])
    assert "holds a training run (config.json, model.pt, checkpoints)" in line
    assert not (runs["b"] / "dataset.json").exists()


# --------------------------------------------------------------------------- messages


def test_a_source_folder_without_dataset_json_says_so(domains: dict[str, Path], tmp_path: Path) -> None:
    """It said 'not a dataset directory; to simulate from structures give --box'."""
    folder = Path(shutil.copytree(domains["source"], tmp_path / "data"))
    (folder / "dataset.json").unlink()
    with pytest.raises(
        InputError, match=r"holds volumes\.mrc and particles\.csv but no dataset\.json"
    ) as exc:
        train(_config(folder, tmp_path / "run"))
    assert exc.value.path == str(folder) and "--box" not in exc.value.reason


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"nonsense": 1}, "--backbone-opt nonsense: cryonet-small has no such option (it takes antialias,"),
        ({"drop_rat": 0.1}, "has no such option (did you mean drop_rate? it takes"),
        ({"drop_rate": 2}, "--backbone-opt drop_rate=2: cryonet-small takes drop_rate from 0 to 1"),
    ],
)
def test_backbone_options_are_named_with_what_is_accepted(
    domains: dict[str, Path], tmp_path: Path, options: dict[str, object], words: str
) -> None:
    """'CryoNet.__init__() got an unexpected keyword argument' and torch's dropout message."""
    with pytest.raises(InputError) as exc:
        train(_config(domains["source"], tmp_path / "run", backbone_kwargs=options))
    assert words in str(exc.value)


def test_weights_that_do_not_fit_are_summarised(runs: dict[str, Path], tmp_path: Path) -> None:
    """torch's message listed every key and shape, on one line of thousands of characters."""
    import torch

    from cryoshift.training.checkpoint import load_checkpoint

    payload = torch.load(runs["a"] / "model.pt", weights_only=True)
    payload["backbone"] = "cryonet"  # wider stages than the cryonet-small weights
    torch.save(payload, tmp_path / "other.pt")
    with pytest.raises(InputError) as exc:
        load_checkpoint(tmp_path / "other.pt")
    reason = exc.value.reason
    assert "weights do not fit backbone 'cryonet': 6 weights missing (stages.3.0.weight," in reason
    assert "of another shape (stages.0.0.weight 8x1x3x3x3 saved, 16x1x3x3x3 built," in reason
    assert "Error(s)" not in reason and len(reason) < 400


def test_a_target_dataset_without_a_voxel_size_is_checked_by_its_header(
    domains: dict[str, Path], tmp_path: Path
) -> None:
    """A target dataset whose dataset.json lacks ``voxel_size`` stands on its stack header's
    (runtime/dataset.py); the target check read only dataset.json, so a 12 A target trained
    beside a 10 A source without a word."""
    from hostile_inputs import without_dataset_voxel_size

    target = without_dataset_voxel_size(domains["target_unlabelled"], tmp_path / "target12", 12.0)
    with pytest.raises(InputError, match="target voxel size 12 A differs from the training voxel size 10 A"):
        train(_config(domains["source"], tmp_path / "run", method="adabn", target=str(target)))


def test_a_method_other_than_the_default_is_told_what_the_recipe_adds() -> None:
    """``--method source-only`` with a simulated source and a target trained on template labels and
    a spectrum-matched source without a word, though "the target is never seen"."""
    from cryoshift.training.trainer import recipe_note

    base = {"source": "builtin", "out": "o", "target": "t"}
    note = recipe_note(TrainConfig(**base, method="source-only"))
    assert note is not None and "600 template-labelled target subtomograms" in note
    assert "--template-labels 0 --no-spectrum-match" in note
    assert recipe_note(TrainConfig(**base, method="dann", template_labels=0, spectrum_match=False)) is None
    assert recipe_note(TrainConfig(**base, method="selftrain")) is None


# --------------------------------------------------------------------------- a run folder's parts agree


def _edit_checkpoint(path: Path, **change: object) -> Path:
    """``path`` saved again with payload entries ``change``d; ``metadata`` entries are merged."""
    import torch

    payload = torch.load(path, map_location="cpu", weights_only=True)
    payload["metadata"].update(change.pop("metadata", {}))  # type: ignore[arg-type]
    payload.update(change)
    torch.save(payload, path)
    return path


def _copy_run(run: Path, dst: Path) -> Path:
    shutil.copytree(run, dst)
    return dst


@pytest.fixture(scope="module")
def simulated_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One source-only epoch on three built-in structures: the config alone names the classes."""
    root = tmp_path_factory.mktemp("simulated")
    source = Path("builtin:ribosome,builtin:proteasome,builtin:membrane")
    cfg = _config(source, root / "run", epochs=1, box=16, sim_per_epoch=16, sim_val=8)
    return train(cfg).run_dir


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("class_names", ["membrane", "proteasome", "ribosome"]),
        ("normalisation", "minmax"),
        ("contrast", "light"),
        ("voxel_size", 5.0),
    ],
)
def test_export_and_evaluate_refuse_metadata_its_own_config_contradicts(
    field: str, value: object, simulated_run: Path, domains: dict[str, Path], tmp_path: Path, capsys: Capsys
) -> None:
    """An edited class order, normalisation or contrast was exported (parity passes: both sides
    read the same edit) and scored with every class renamed. One line naming model.pt and the field."""
    run = _copy_run(simulated_run, tmp_path / "run")
    _edit_checkpoint(run / "model.pt", metadata={field: value})
    line = assert_error(
        run_cli(["export", run, "-o", tmp_path / "x", "--no-progress"], capsys), run / "model.pt"
    )
    assert f"its metadata's {field}" in line and "contradicts the training config" in line, line
    assert not (tmp_path / "x").exists()
    line = assert_error(
        run_cli(["evaluate", run, domains["target"], "--out", tmp_path / "e"], capsys), "model.pt"
    )
    assert f"its metadata's {field}" in line, line


def test_integer_weights_are_refused(runs: dict[str, Path], tmp_path: Path) -> None:
    """Weights cast to int32 (mostly 0) were cast back silently: export passed parity at dlogit 0
    and evaluate scored the truncated model."""
    import torch

    from cryoshift.training.checkpoint import load_checkpoint

    path = Path(shutil.copy(runs["a"] / "model.pt", tmp_path / "int.pt"))
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    _edit_checkpoint(
        path, state_dict={k: v.to(torch.int32) if v.is_floating_point() else v for k, v in state.items()}
    )
    with pytest.raises(InputError, match=r"weights not floating point \(\S+ int32 saved, float32 built"):
        load_checkpoint(path)


def test_a_model_from_another_run_is_not_taken_for_the_runs_own(
    runs: dict[str, Path], domains: dict[str, Path], tmp_path: Path
) -> None:
    """Run b's model.pt copied into run a was exported and evaluated as run a's (the --run check
    skipped a model inside the run folder)."""
    from cryoshift.export.api import export_checkpoint
    from cryoshift.training.evaluate import evaluate

    run = _copy_run(runs["a"], tmp_path / "run")
    shutil.copy(runs["b"] / "model.pt", run / "model.pt")
    words = r"was not made by this run \(seed differs from config.json\)"
    with pytest.raises(InputError, match=words) as exc:
        export_checkpoint(run, tmp_path / "x")
    assert exc.value.path == str(run / "model.pt")
    with pytest.raises(InputError, match=words):
        evaluate(run, domains["target"], tmp_path / "e")
    assert not (tmp_path / "x").exists() and not (tmp_path / "e").exists()


def test_evaluate_refuses_a_selection_of_another_epoch_than_model_pt(
    runs: dict[str, Path], domains: dict[str, Path], tmp_path: Path
) -> None:
    """selection.json's epoch was printed as the label-free choice (with a gap) beside the
    accuracy of a model.pt of another epoch."""
    from cryoshift.training.evaluate import evaluate

    run = _copy_run(runs["a"], tmp_path / "run")
    selection = json.loads((run / "selection.json").read_text())
    (run / "selection.json").write_text(json.dumps({**selection, "selected_epoch": 2}))
    with pytest.raises(InputError, match=r"selected_epoch is 2, but .*model.pt was saved at epoch 1") as exc:
        evaluate(run, domains["target"], tmp_path / "e")
    assert exc.value.path == str(run / "selection.json")


def test_evaluate_without_a_label_free_choice_prints_no_epoch_none(
    runs: dict[str, Path], domains: dict[str, Path], tmp_path: Path, capsys: Capsys
) -> None:
    """An unreadable selection.json printed "label-free choice: epoch None (accuracy n/a)"."""
    run = _copy_run(runs["a"], tmp_path / "run")
    (run / "selection.json").write_text("")
    code, out, err = run_cli(["evaluate", run, domains["target"], "--out", tmp_path / "e"], capsys)
    assert code == 0, err
    assert "None" not in out and "gap" not in out
    assert "label-free choice unknown" in out


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"metadata": {"class_names": ["sphere", "rod", "dumbbell", "cube"]}}, "metadata names 4 classes"),
        ({"backbone_kwargs": "box"}, "its network was built for 32^3 boxes but its metadata says 16^3"),
        ({"config": "a string"}, "'config' should be a dict, found str"),
    ],
)
def test_evaluate_refuses_what_export_refuses(
    change: dict[str, object], words: str, runs: dict[str, Path], domains: dict[str, Path], tmp_path: Path
) -> None:
    """Each was refused by export and scored by evaluate (a row "cube n/a", a box the network was
    not built for, a config that is not one)."""
    import torch

    from cryoshift.training.evaluate import evaluate

    path = Path(shutil.copy(runs["a"] / "model.pt", tmp_path / "odd.pt"))
    if change.get("backbone_kwargs") == "box":
        kwargs = torch.load(path, map_location="cpu", weights_only=True)["backbone_kwargs"]
        change = {"backbone_kwargs": {**kwargs, "box_size": 32}}
    _edit_checkpoint(path, **change)
    with pytest.raises(InputError, match=re.escape(words)) as exc:
        evaluate(path, domains["target"], tmp_path / "e")
    assert exc.value.path == str(path)


# --------------------------------------------------------------------------- evaluate and export outputs


def test_evaluate_default_out_keeps_the_report_of_other_data_of_the_same_name(
    runs: dict[str, Path], domains: dict[str, Path], tmp_path: Path, capsys: Capsys
) -> None:
    """``evaluate run0 sim16`` then ``evaluate run0 other/sim16`` both wrote run0/eval/sim16: the
    second report silently replaced the first. The same data evaluated again still replaces its own."""
    run = _copy_run(runs["a"], tmp_path / "run")
    other = Path(shutil.copytree(domains["target"], tmp_path / "other" / domains["target"].name))
    folder = run / "eval" / domains["target"].name
    assert run_cli(["evaluate", run, domains["target"]], capsys)[0] == 0
    line = assert_error(run_cli(["evaluate", run, other], capsys), folder)
    assert str(domains["target"].resolve()) in line and str(other) in line and "--out" in line, line
    assert json.loads((folder / "evaluation.json").read_text())["data"] == str(domains["target"])
    assert run_cli(["evaluate", run, domains["target"]], capsys)[0] == 0
    assert run_cli(["evaluate", run, other, "--out", tmp_path / "e"], capsys)[0] == 0


def test_an_epoch_checkpoint_over_model_pt_is_named_as_such_when_exported(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    """An uncalibrated model.pt of a run that held source volumes out was blamed on
    --val-fraction 0; it is most likely an epoch checkpoint copied over model.pt."""
    from cryoshift.export.api import CalibrationNote, export_checkpoint

    run = _copy_run(runs["a"], tmp_path / "run")
    shutil.copy(run / "checkpoints" / "epoch_0001.pt", run / "model.pt")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_checkpoint(run, tmp_path / "x")
    notes = [str(w.message) for w in caught if issubclass(w.category, CalibrationNote)]
    assert len(notes) == 1, notes
    assert "epoch checkpoint (not the run's calibrated model.pt?)" in notes[0], notes[0]
    assert "held no source volumes out" not in notes[0], notes[0]


def test_export_and_evaluate_refuse_a_logit_count_in_the_same_words(
    runs: dict[str, Path], domains: dict[str, Path], tmp_path: Path
) -> None:
    """Export kept its own check, naming the classes; evaluate's said less. One check now."""
    from cryoshift.export.api import export_checkpoint
    from cryoshift.training.evaluate import evaluate

    path = Path(shutil.copy(runs["a"] / "model.pt", tmp_path / "odd.pt"))
    _edit_checkpoint(path, metadata={"class_names": ["sphere", "rod", "dumbbell", "cube"]})
    with pytest.raises(InputError) as exported:
        export_checkpoint(path, tmp_path / "x")
    with pytest.raises(InputError) as evaluated:
        evaluate(path, domains["target"], tmp_path / "e")
    assert exported.value.reason == evaluated.value.reason
    assert "names 4 classes (sphere, rod, dumbbell, cube)" in evaluated.value.reason


@pytest.mark.parametrize(("epoch", "shown"), [(-5, "found -5"), ("two", "found 'two'"), (99, "ran 1 epochs")])
def test_an_epoch_that_is_no_epoch_of_the_run_is_refused(
    epoch: object, shown: str, runs: dict[str, Path], domains: dict[str, Path], tmp_path: Path, capsys: Capsys
) -> None:
    """model.pt's epoch -5, 99 or "two" was exported into export.json's provenance and scored."""
    run = _copy_run(runs["a"], tmp_path / "run")
    _edit_checkpoint(run / "model.pt", epoch=epoch)
    line = assert_error(
        run_cli(["export", run, "-o", tmp_path / "x", "--no-progress"], capsys), run / "model.pt"
    )
    assert "'epoch'" in line and shown in line, line
    line = assert_error(
        run_cli(["evaluate", run, domains["target"], "--out", tmp_path / "e"], capsys), run / "model.pt"
    )
    assert shown in line, line


def test_epoch_0_of_a_model_saved_outside_a_run_is_kept(runs: dict[str, Path], tmp_path: Path) -> None:
    """save_checkpoint's default epoch is 0: such a checkpoint still reads."""
    from cryoshift.training.checkpoint import read_checkpoint

    path = _edit_checkpoint(Path(shutil.copy(runs["a"] / "model.pt", tmp_path / "m.pt")), epoch=0)
    assert read_checkpoint(path)["epoch"] == 0


def test_weights_that_overflow_are_named_not_a_parity_failure(runs: dict[str, Path], tmp_path: Path) -> None:
    """Finite weights of 1e38 answer NaN: export said "fp32 parity FAILED: max |dlogit| nan ...
    agreement 100%", which reads as an exporter bug rather than a damaged checkpoint."""
    import torch

    from cryoshift.export.api import export_checkpoint

    path = Path(shutil.copy(runs["a"] / "model.pt", tmp_path / "huge.pt"))
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    _edit_checkpoint(path, state_dict={k: v * 1e38 if v.is_floating_point() else v for k, v in state.items()})
    with pytest.raises(InputError, match="logits are not finite on the parity volumes"):
        export_checkpoint(path, tmp_path / "out")
    assert not (tmp_path / "out" / "model.onnx").exists()
