"""What training says when it refuses or skips something, checked word by word: hyper-parameters
of another method given through the Python API, a config.json with keys this cryoshift does not
know, target items that do not fit the run (they were said not to fit "the model's" box or voxel
size, before there was a model), and a resumed run whose stored source is gone (a note that the
given --source was ignored came before the error about the stored one).

Each check fires before any training; tiny settings (16^3 volumes) throughout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from hostile_inputs import BOX, VOXEL, Capsys, assert_error, run_cli, train_argv, volumes

if TYPE_CHECKING:
    from torch import nn

# ---------------------------------------------------------------------------------------------
# hyper-parameters a method does not take


def _backbone() -> nn.Module:
    from cryoshift.training.backbones import create_backbone

    return create_backbone("cryonet-small", num_classes=3, box_size=BOX)


def test_a_method_refuses_another_methods_hyper_parameter_in_the_python_api() -> None:
    """create_method("selftrain", dann_weight=0.5) trained without the setting and without a word:
    check_hparams took any method's key and ignored it (only the command line refused it)."""
    pytest.importorskip("torch")
    from cryoshift.training.adapt import METHODS, create_method

    takes = ", ".join(sorted(METHODS.get("selftrain").defaults()))
    with pytest.raises(ValueError) as exc:
        create_method("selftrain", backbone=_backbone(), num_classes=3, box_size=BOX, dann_weight=0.5)
    assert (
        str(exc.value)
        == f"dann_weight is a hyper-parameter of dann, not of method 'selftrain'; it takes {takes}"
    )
    # several keys: each named, with its methods where it has some, and the closest spelling
    with pytest.raises(ValueError) as exc:
        create_method(
            "source-only",
            backbone=_backbone(),
            num_classes=3,
            box_size=BOX,
            warp_sigma=2.0,
            ce_wieght=1.0,
        )
    assert str(exc.value) == (
        "warp_sigma is a hyper-parameter of cryoshift, warp, not of method 'source-only'; "
        "ce_wieght is not a hyper-parameter of method 'source-only' (did you mean ce_weight?); "
        "it takes ce_weight, label_smoothing"
    )
    # a key the method takes is still set, and None still means its default
    method = create_method(
        "dann", backbone=_backbone(), num_classes=3, box_size=BOX, dann_weight=0.5, grl_max=None
    )
    assert method.hparams == {**METHODS.get("dann").defaults(), "dann_weight": 0.5}


def test_train_refuses_another_methods_hyper_parameter_before_reading_data(tmp_path: Path) -> None:
    """The Python API's train() built the method only after the source and the target were read
    (and template-matched); the refusal now comes first, in the command line's words."""
    pytest.importorskip("torch")
    from cryoshift.runtime.errors import InputError
    from cryoshift.training.trainer import TrainConfig, train

    out = tmp_path / "run"
    config = TrainConfig(
        source=str(tmp_path / "no_such_source"),
        out=str(out),
        method="selftrain",
        method_kwargs={"dann_weight": 0.5},
    )
    with pytest.raises(InputError) as exc:
        train(config)
    assert "--hparam dann_weight is a hyper-parameter of dann, not of method 'selftrain'; it takes " in str(
        exc.value
    )
    assert not out.exists()


def test_train_resume_refuses_a_stored_hyper_parameter_no_method_takes(
    tmp_path: Path, capsys: Capsys
) -> None:
    """A config.json whose method_kwargs hold a key no method takes (a hand edit; the Python API
    never took one): one line naming config.json, not a run that ignores the setting."""
    pytest.importorskip("torch")
    from cryoshift.training.trainer import TrainConfig

    run = tmp_path / "run"
    run.mkdir()
    stored = TrainConfig(
        source=str(tmp_path / "gone"),
        out=str(run),
        epochs=1,
        method="selftrain",
        method_kwargs={"ce_wieght": 2.0},
    )
    (run / "config.json").write_text(json.dumps(stored.to_dict()))
    argv = [
        "train",
        "--source",
        tmp_path / "gone",
        "--out",
        run,
        "--resume",
        "--device",
        "cpu",
        "--no-progress",
    ]
    line = assert_error(run_cli(argv, capsys), run / "config.json")
    assert (
        "a stored setting is refused: --hparam ce_wieght is not a hyper-parameter of method "
        "'selftrain' (did you mean ce_weight?)"
    ) in line


def _run_stopped_after_one_epoch(tmp_path: Path, dataset: Path) -> Path:
    """A real two-epoch source-only run, killed after its first epoch (config.json, resume.pt)."""
    from cryoshift.training.trainer import TrainConfig, train

    run = tmp_path / "run"
    config = TrainConfig(
        source=str(dataset),
        out=str(run),
        epochs=2,
        method="source-only",
        backbone="cryonet-small",
        test_views=1,
        batch_size=4,
        device="cpu",
        threads=1,
        amp=False,
        progress=False,
    )
    train(config, stop_after_epoch=1)
    return run


def _as_an_older_cryoshift_recorded_it(run: Path, kwargs: dict[str, object], in_config: bool) -> None:
    """Record ``kwargs`` as the run's hyper-parameters in its resume state, and in config.json
    too (``in_config``) or there without the keys of other methods (taken out by hand)."""
    import torch

    state = run / "checkpoints" / "resume.pt"
    payload = torch.load(state, map_location="cpu", weights_only=True)
    payload["config"]["method_kwargs"] = dict(kwargs)
    torch.save(payload, state)
    config = json.loads((run / "config.json").read_text())
    own = ("ce_weight", "label_smoothing")  # source-only's
    config["method_kwargs"] = {k: v for k, v in kwargs.items() if in_config or k in own}
    (run / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("in_config", [True, False], ids=["as_recorded", "config_json_edited"])
def test_resume_of_a_run_whose_stored_hyper_parameters_include_another_method_s(
    in_config: bool, tmp_path: Path, capsys: Capsys, dataset: Path
) -> None:
    """create_method("source-only", dann_weight=0.5) once trained without the key, and the run
    recorded it; since the method refuses other methods' keys, --resume of such a run was refused
    ("a stored setting is refused: --hparam dann_weight is a hyper-parameter of dann ..."), and
    taking the key out of config.json was refused too (the resume state "was written under another
    training config"). Now the run resumes without the key, saying so once."""
    pytest.importorskip("torch")
    run = _run_stopped_after_one_epoch(tmp_path, dataset)
    _as_an_older_cryoshift_recorded_it(run, {"dann_weight": 0.5, "ce_weight": 1.0}, in_config)
    argv = ["train", "--source", dataset, "--out", run, "--resume", "--device", "cpu", "--no-progress"]
    code, _out, err = run_cli(argv, capsys)
    assert code == 0, err
    notes = [line for line in err.splitlines() if line.startswith("cryoshift: note:")]
    if in_config:
        assert notes == [
            "cryoshift: note: the run's stored hyper-parameter dann_weight=0.5 was never used by "
            "source-only; ignored"
        ]
    else:  # config.json no longer holds it: nothing was ignored
        assert notes == []
    assert json.loads((run / "config.json").read_text())["method_kwargs"] == {"ce_weight": 1.0}
    assert (run / "metrics.csv").read_text().count("\n") == 3  # the header and both epochs
    # given again on a resume, another method's key is one of the options resume ignores
    _as_an_older_cryoshift_recorded_it(run, {"dann_weight": 0.5, "grl_max": 1.0}, in_config=True)
    code, _out, err = run_cli([*argv, "--epochs", 3, "--hparam", "mada_weight=0.2"], capsys)
    assert code == 0, err
    (note,) = [line for line in err.splitlines() if line.startswith("cryoshift: note:")]
    assert note == (
        "cryoshift: note: resuming with the run's stored settings; ignored: --hparam mada_weight=0.2 "
        "(run: none); the run's stored hyper-parameters dann_weight=0.5, grl_max=1 were never used by "
        "source-only; ignored"
    )


def test_resume_drops_only_keys_of_other_methods(tmp_path: Path) -> None:
    """What resume drops is what the run's method never used and the Python API once took: another
    method's key. A misspelling (refused then too) stays refused, a method's own key is kept, and
    a new run still refuses another method's key
    (test_train_refuses_another_methods_hyper_parameter_before_reading_data)."""
    pytest.importorskip("torch")
    from cryoshift.training.adapt.base import unused_hparams

    assert unused_hparams("source-only", {"dann_weight": 0.5, "ce_weight": 2.0, "ce_wieght": 1}) == [
        "dann_weight"
    ]
    assert unused_hparams("dann", {"dann_weight": 0.5}) == []
    assert unused_hparams("no-such-method", {"dann_weight": 0.5}) == []


# ---------------------------------------------------------------------------------------------
# config.json with keys this cryoshift does not know


def _resume_config_with_a_new_key(tmp_path: Path, capsys: Capsys, versions: object) -> str:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"source": "builtin", "out": str(run), "surprise": 1}))
    if versions is not None:
        (run / "versions.json").write_text(json.dumps(versions))
    argv = ["train", "--source", "builtin", "--box", BOX, "--epochs", 1, "--out", run, "--resume"]
    return assert_error(run_cli([*argv, "--device", "cpu", "--no-progress"], capsys), run / "config.json")


def test_a_config_from_a_newer_cryoshift_says_to_upgrade(tmp_path: Path, capsys: Capsys) -> None:
    """ "unknown training config keys: surprise" did not say that a newer cryoshift wrote the run
    (its versions.json records which)."""
    pytest.importorskip("torch")
    from cryoshift.runtime import __version__

    line = _resume_config_with_a_new_key(tmp_path, capsys, {"cryoshift": "999.1.0", "python": "3.12"})
    assert line.endswith(
        f"unknown training config keys: surprise (written by cryoshift 999.1.0, this is {__version__}: "
        "upgrade cryoshift)"
    ), line


def test_an_uninstalled_cryoshift_does_not_call_a_recorded_version_newer(
    tmp_path: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A source tree that is not installed reports version 0.0.0 (runtime/__init__.py), and every
    recorded version was newer than that: "written by cryoshift 0.1.0, this is 0.0.0: upgrade
    cryoshift" for a run this very tree wrote."""
    pytest.importorskip("torch")
    import cryoshift.runtime
    from cryoshift.training.run import is_newer_version

    monkeypatch.setattr(cryoshift.runtime, "__version__", cryoshift.runtime.UNKNOWN_VERSION)
    line = _resume_config_with_a_new_key(tmp_path, capsys, {"cryoshift": "0.1.0"})
    assert line.endswith("unknown training config keys: surprise (written by another cryoshift version?)"), (
        line
    )
    assert not is_newer_version("999.1.0", "0.0.0")
    assert is_newer_version("0.1.10", "0.1.9") and not is_newer_version("0.0.0", "0.1.0")


@pytest.mark.parametrize(
    "versions",
    [None, {"cryoshift": "0.0.1"}, {"cryoshift": "not a version"}, ["a list"], {"python": "3.12"}],
    ids=["no_versions_json", "older", "unreadable_version", "not_an_object", "no_cryoshift_key"],
)
def test_a_config_with_unknown_keys_hints_at_another_version(
    versions: object, tmp_path: Path, capsys: Capsys
) -> None:
    pytest.importorskip("torch")
    line = _resume_config_with_a_new_key(tmp_path, capsys, versions)
    assert line.endswith("unknown training config keys: surprise (written by another cryoshift version?)"), (
        line
    )


# ---------------------------------------------------------------------------------------------
# target items that do not fit the training run


def _odd_target_folder(root: Path) -> Path:
    """A usable 16^3 volume at 10 A, one at 5 A, a 12^3 volume and a stack of 12^3 volumes."""
    from cryoshift.runtime.mrc import write_stack, write_volume

    folder = root / "target"
    folder.mkdir()
    good, fine = volumes(2)
    small = np.random.default_rng(1).normal(size=(3, 12, 12, 12)).astype(np.float32)
    write_volume(folder / "a_good.mrc", good, voxel_size=VOXEL)
    write_volume(folder / "b_vs5.mrc", fine, voxel_size=VOXEL / 2)
    write_volume(folder / "c_box12.mrc", small[0], voxel_size=VOXEL)
    write_stack(folder / "d_box12.mrcs", small[1:], voxel_size=VOXEL)
    return folder


def test_train_says_target_items_do_not_fit_the_training_run_not_the_model(tmp_path: Path) -> None:
    """Training's skipped target items said the runtime planner's "the model's 16^3" and "the model
    takes 16^3 boxes": there is no model yet, the target is checked against the source's size."""
    pytest.importorskip("torch")
    from cryoshift.runtime.errors import InputError
    from cryoshift.training.data import load_target

    folder = _odd_target_folder(tmp_path)
    dom = load_target(str(folder), BOX, VOXEL, "dark", ["a", "b"])
    assert len(dom) == 1
    assert dom.skipped == [
        f"{folder / 'b_vs5.mrc'}: voxel size 5 A differs from the training run's 10 A by 50% (> 5%); "
        "rescale the target to the training voxel size",
        f"{folder / 'c_box12.mrc'}: box 12x12x12 does not match the training run's 16^3",
        f"{folder / 'd_box12.mrcs'}: volumes are 12x12x12 but the training run takes 16^3 boxes; "
        "re-extract at the training run's box size",
    ]
    with pytest.raises(InputError) as exc:  # the stack alone: the whole target is refused
        load_target(str(folder / "d_box12.mrcs"), BOX, VOXEL, "dark", ["a", "b"])
    assert "the training run takes 16^3 boxes" in str(exc.value) and "model" not in str(exc.value)


def test_classify_still_checks_items_against_the_model(tmp_path: Path) -> None:
    """The planner and the item loader keep "the model's" wording for classify, evaluate, export."""
    from cryoshift.runtime.errors import InputError
    from cryoshift.runtime.sources import VolumeCache, load_item, plan_inputs

    folder = _odd_target_folder(tmp_path)
    cache = VolumeCache()
    plan = plan_inputs([str(folder)], BOX, VOXEL, cache=cache)
    reasons = []
    out = np.empty((BOX,) * 3, dtype=np.float32)
    for item in plan.items:
        try:
            load_item(item, out, cache, VOXEL)
        except InputError as exc:
            reasons.append(exc.reason)
    assert reasons == [
        "voxel size 5 A differs from the model's 10 A by 50% (> 5%); "
        "rescale the data or pass --ignore-voxel-size",
        "box 12x12x12 does not match the model's 16^3",
        "volumes are 12x12x12 but the model takes 16^3 boxes; re-extract at the model's box size",
    ]


# ---------------------------------------------------------------------------------------------
# --resume with another --source


def _run_with_a_stored_config(tmp_path: Path, **settings: object) -> Path:
    """A run folder holding only config.json (a run killed before its first epoch ended)."""
    from cryoshift.training.trainer import TrainConfig

    run = tmp_path / "run"
    run.mkdir()
    base = {"source": str(tmp_path / "moved_away"), "out": str(run), "epochs": 1, "method": "source-only"}
    stored = TrainConfig(**{**base, **settings})  # type: ignore[arg-type]
    (run / "config.json").write_text(json.dumps(stored.to_dict()))
    return run


def test_resume_with_another_source_prints_the_error_alone(
    tmp_path: Path, capsys: Capsys, dataset: Path
) -> None:
    """The run's source dataset moved, --resume --source NEW: a note "ignored: --source NEW (run:
    OLD)" came first, then "OLD: not a dataset directory; to simulate from structures give --box"
    (--box is ignored on --resume too). Now one line: the stored source is what resume trains on."""
    pytest.importorskip("torch")
    run = _run_with_a_stored_config(tmp_path)
    stored = tmp_path / "moved_away"
    line = assert_error(run_cli(train_argv(dataset, run, "--resume"), capsys), stored)
    assert line == (
        f"cryoshift: error: {stored}: not a dataset directory (any more?): the run's source, from "
        f"{run / 'config.json'}; --resume trains on the source the run started with, not on --source "
        f"{dataset}: put the dataset back there, or start a new run without --resume"
    )
    # the same --source as stored: nothing to say about --source
    line = assert_error(run_cli(train_argv(stored, run, "--resume"), capsys), stored)
    assert "the run's source" in line and "not on --source" not in line and "--box" not in line


def test_resume_refusing_a_stored_setting_prints_no_note_first(
    tmp_path: Path, capsys: Capsys, dataset: Path
) -> None:
    """A refusal of the stored config itself ("epochs": null) came after the note naming the
    options given otherwise: the run did not resume, so there was nothing they were ignored for."""
    pytest.importorskip("torch")
    run = _run_with_a_stored_config(tmp_path, epochs=None)
    argv = ["train", "--source", dataset, "--out", run, "--resume", "--backbone", "cryonet-small"]
    argv += ["--device", "cpu", "--threads", 1, "--no-progress"]  # no --epochs
    line = assert_error(run_cli(argv, capsys), run / "config.json")
    assert 'holds no epoch count ("epochs": null)' in line


def test_a_picks_target_keeps_the_planner_s_notes(tmp_path: Path) -> None:
    """train read a picks target through the runtime's planner and kept only its voxel-size notes:
    that the picks carry refinement shifts cropping ignores (or that a --tomograms folder could not
    be read) reached classify's summary but never train's."""
    from cryoshift.runtime.mrc import write_volume
    from cryoshift.training.data import _load_planned

    rng = np.random.default_rng(0)
    tomo = write_volume(
        tmp_path / "TS_01.mrc", rng.normal(size=(20, 24, 28)).astype(np.float32), voxel_size=10.0
    )
    star = tmp_path / "refined.star"
    columns = ["rlnTomoName", "rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ", "rlnOriginXAngst"]
    head = "data_particles\n\nloop_\n" + "".join(f"_{c} #{i}\n" for i, c in enumerate(columns, 1))
    star.write_text(head + "TS_01 10 12 9 -12.5\nTS_01 14 12 9 0\n")
    domain = _load_planned(str(star), 8, 10.0, "dark", [str(tomo)], None)
    assert len(domain.volumes) == 2
    assert any("refinement shifts" in note and str(star) in note for note in domain.notes), domain.notes
