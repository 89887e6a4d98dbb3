"""The trainer end to end on 16^3 blobs: every method, resume, the no-target-labels rule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_training import TINY_SIMULATED_SELFTRAIN

from cryoshift.runtime.dataset import read_dataset, write_dataset
from cryoshift.runtime.errors import InputError
from cryoshift.training.checkpoint import RUN_MODEL, load_checkpoint
from cryoshift.training.select import training_warnings
from cryoshift.training.snr_match import PROBE_BINS, SPAN
from cryoshift.training.spectrum import tilt_match_range
from cryoshift.training.trainer import TrainConfig, train

METHODS = ["source-only", "adabn", "dann", "mada", "warp", "cryoshift", "selftrain", "oracle"]


def _config(domains: dict[str, Path], out: Path, **kw: object) -> TrainConfig:
    base = {
        "source": str(domains["source"]),
        "target": str(domains["target_unlabelled"]),
        "out": str(out),
        "backbone": "cryonet-small",
        "epochs": 2,
        "batch_size": 8,
        "lr": 2e-3,
        "progress": False,
        "val_fraction": 0.25,
    }
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("method", METHODS)
def test_each_method_trains_end_to_end_and_its_loss_falls(
    domains: dict[str, Path], tmp_path: Path, method: str
) -> None:
    oracle = method == "oracle"
    target = domains["target"] if oracle else domains["target_unlabelled"]
    result = train(
        _config(domains, tmp_path / method, method=method, target=str(target), oracle_target_labels=oracle)
    )
    first, last = result.history[0], result.history[-1]
    assert last["loss_ce"] < first["loss_ce"]
    assert np.isfinite(last["loss_total"])
    assert result.selected_epoch in (1, 2)
    assert result.model_path == tmp_path / method / RUN_MODEL
    meta = result.metadata
    assert meta.method == method and meta.class_names == ["sphere", "rod", "dumbbell"]
    assert meta.box_size == 16 and meta.voxel_size == 10.0 and meta.contrast == "dark"
    assert len(meta.feature_mean) == len(meta.feature_var) > 0 and meta.shift_reference > 0


def test_run_directory_and_weights_only_checkpoint(domains: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = train(_config(domains, run, method="dann"))
    for name in (
        "config.json",
        "versions.json",
        "metrics.csv",
        "selection.json",
        RUN_MODEL,
        "checkpoints/epoch_0001.pt",
        "checkpoints/epoch_0002.pt",
        "checkpoints/resume.pt",
        "plots/losses.png",
        "plots/confusion_source_val.png",
        "plots/embedding.png",
    ):
        assert (run / name).is_file(), name
    payload = torch.load(run / RUN_MODEL, map_location="cpu", weights_only=True)  # no pickle needed
    assert payload["metadata"]["temperature"] == pytest.approx(result.metadata.temperature)
    model, meta, _ = load_checkpoint(run)
    x = torch.randn(3, 1, 16, 16, 16)
    assert model(x).shape == (3, 3)
    assert meta.extra["selected_epoch"] == result.selected_epoch
    selection = json.loads((run / "selection.json").read_text())
    assert selection["uses_target_labels"] is False and len(selection["epochs"]) == 2
    assert selection["method_hparams"]["dann_weight"] == 1.0  # defaults recorded, not only those given
    assert json.loads((run / "config.json").read_text())["method"] == "dann"
    assert (run / "metrics.csv").read_text().count("\n") == 3
    # a second run into the same directory is refused, resume is the way to continue
    with pytest.raises(InputError, match="--resume"):
        train(_config(domains, run, method="dann"))


@pytest.mark.parametrize(
    "kw",
    [
        {"method": "cryoshift"},  # warp draws random fields: the RNG state must carry over
        # the mean teacher's weights and step count must carry over too
        {"method": "selftrain", "method_kwargs": {"teacher_decay": 0.9, "adapt_start": 0.0}},
    ],
    ids=["cryoshift", "selftrain-teacher"],
)
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(
    domains: dict[str, Path], tmp_path: Path, kw: dict[str, object]
) -> None:
    kw = {**kw, "epochs": 2}
    full = train(_config(domains, tmp_path / "full", **kw))
    killed = train(_config(domains, tmp_path / "killed", **kw), stop_after_epoch=1)
    assert killed.model_path is None and len(killed.history) == 1
    resumed = train(_config(domains, tmp_path / "killed", **kw), resume=True)
    assert resumed.state_digest == full.state_digest
    assert [r["loss_total"] for r in resumed.history] == [r["loss_total"] for r in full.history]
    a = torch.load(tmp_path / "full" / RUN_MODEL, weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "killed" / RUN_MODEL, weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "killed" / "metrics.csv").read_text().count("\n") == 3


def test_resume_names_the_options_it_ignores(
    domains: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Resume keeps the run's stored settings (but epochs, device, progress, threads): options given
    otherwise were dropped without a word. One note names them; the equal ones, the ones resume
    takes, those left at their defaults and the ones the trainer fills in (epochs, dense_weight
    None, recorded as numbers) are not listed."""
    run = tmp_path / "run"
    kw = {"method": "source-only", "epochs": 3, "weight_decay": 1e-4}
    train(_config(domains, run, **kw), stop_after_epoch=1)
    capsys.readouterr()
    given = {"lr": 0.01, "template_keep": 0.5, "spectrum_match": False, "weight_decay": 0.0}
    train(_config(domains, run, **{**kw, **given}, device="cpu", threads=1), resume=True, stop_after_epoch=2)
    notes = [line for line in capsys.readouterr().err.splitlines() if "resuming" in line]
    # a dataset source records spectrum matching off (it cannot run): --no-spectrum-match agrees
    assert notes == [
        "cryoshift: note: resuming with the run's stored settings; ignored: --lr 0.01 (run: 0.002), "
        "--template-keep 0.5 (run: 0.6)"
    ]
    stored = json.loads((run / "config.json").read_text())
    assert stored["lr"] == 0.002 and stored["template_keep"] == 0.6 and stored["weight_decay"] == 1e-4
    assert stored["device"] == "cpu"  # taken from the command line, like epochs
    many = {"lr": 0.01, "lr_schedule": "constant", "seed": 5, "val_fraction": 0.5, "tilt_match": True}
    many |= {"template_keep": 0.5, "template_rule": "agree", "max_target": 20, "amp": False}
    many |= {"selection_criterion": "snd"}  # 10 ignored: 6 named, 4 counted
    train(_config(domains, run, **{**kw, **many}), resume=True, stop_after_epoch=2)
    (note,) = [line for line in capsys.readouterr().err.splitlines() if "resuming" in line]
    assert note.endswith("--tilt-match (run: --no-tilt-match), --template-keep 0.5 (run: 0.6) and 4 more")
    assert note.count("(run: ") == 6
    train(_config(domains, run, **{**kw, "epochs": None, "dense_weight": None}), resume=True)
    assert "resuming" not in capsys.readouterr().err
    assert json.loads((run / "config.json").read_text())["dense_weight"] == 0.0


def _permuted_copy(src: Path, dst: Path) -> Path:
    ds = read_dataset(src, with_labels=True)
    labels = np.random.default_rng(5).permutation(ds.labels)
    return write_dataset(dst, np.asarray(ds.volumes), labels, ds.class_names, voxel_size=ds.voxel_size)


def test_training_never_reads_target_labels(domains: dict[str, Path], tmp_path: Path) -> None:
    # Shuffled target labels must not change a single weight or the model selection.
    shuffled = _permuted_copy(domains["target"], tmp_path / "shuffled")
    a = train(_config(domains, tmp_path / "a", method="mada", target=str(domains["target"]), epochs=1))
    b = train(_config(domains, tmp_path / "b", method="mada", target=str(shuffled), epochs=1))
    assert a.state_digest == b.state_digest
    sa = json.loads((tmp_path / "a" / "selection.json").read_text())
    sb = json.loads((tmp_path / "b" / "selection.json").read_text())
    assert sa["epochs"] == sb["epochs"]
    # ... and the only way to use them is the oracle with an explicit flag
    with pytest.raises(InputError, match="oracle-target-labels"):
        train(_config(domains, tmp_path / "c", method="oracle", target=str(domains["target"])))
    with pytest.raises(InputError, match="only for the 'oracle'"):
        train(_config(domains, tmp_path / "d", method="dann", oracle_target_labels=True))
    with pytest.raises(InputError, match="unlabelled"):  # the oracle cannot invent labels
        train(_config(domains, tmp_path / "e", method="oracle", oracle_target_labels=True))


def test_bad_inputs_are_refused_clearly(domains: dict[str, Path], tmp_path: Path) -> None:
    small = write_dataset(tmp_path / "small", np.zeros((4, 12, 12, 12), np.float32), voxel_size=10.0)
    with pytest.raises(InputError, match="source boxes are 16"):
        train(_config(domains, tmp_path / "r1", method="dann", target=str(small)))
    with pytest.raises(InputError, match="needs unlabelled target"):
        train(_config(domains, tmp_path / "r2", method="dann", target=None))
    with pytest.raises(InputError, match="unknown method"):
        train(_config(domains, tmp_path / "r3", method="dan"))
    with pytest.raises(InputError, match="nothing to resume"):
        train(_config(domains, tmp_path / "nothing", method="dann"), resume=True)


def test_target_from_a_directory_of_mrc_files(domains: dict[str, Path], tmp_path: Path) -> None:
    from cryoshift.runtime.mrc import write_volume

    ds = read_dataset(domains["target_unlabelled"])
    mrcs = tmp_path / "mrcs"
    mrcs.mkdir()
    for i in range(12):
        write_volume(mrcs / f"p{i:02d}.mrc", np.asarray(ds.volumes[i]), voxel_size=10.0)
    (mrcs / "broken.mrc").write_bytes(b"not an mrc")
    result = train(_config(domains, tmp_path / "run", method="dann", target=str(mrcs), epochs=1))
    assert result.model_path is not None
    assert result.metadata.data_fingerprints["target"].startswith("sha256:")


def test_simulated_source_on_the_fly_and_resume(domains: dict[str, Path], tmp_path: Path) -> None:
    kw = {
        "source": "builtin:ribosome,builtin:proteasome",
        "box": 16,
        "sim_per_epoch": 16,
        "sim_val": 8,
        "method": "dann",
        "epochs": 2,
    }
    full = train(_config(domains, tmp_path / "full", **kw))
    assert full.metadata.class_names == ["ribosome", "proteasome"]
    train(_config(domains, tmp_path / "cut", **kw), stop_after_epoch=1)
    resumed = train(
        _config(domains, tmp_path / "cut", **{**kw, "epochs": None}), resume=True
    )  # stored budget
    assert resumed.state_digest == full.state_digest


def test_the_default_budget_is_the_machines_and_is_recorded(domains: dict[str, Path], tmp_path: Path) -> None:
    from cryoshift.training.precision import cpu_has_native_bf16
    from cryoshift.training.trainer import EPOCHS_FP32, EPOCHS_REDUCED_PRECISION, default_epochs

    assert (
        default_epochs("cpu", amp=False) == EPOCHS_FP32 < EPOCHS_REDUCED_PRECISION == default_epochs("cuda:0")
    )
    native = EPOCHS_REDUCED_PRECISION if cpu_has_native_bf16() else EPOCHS_FP32
    assert default_epochs("cpu") == native
    train(_config(domains, tmp_path / "run", epochs=None, device="cpu"), stop_after_epoch=1)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["epochs"] == native


def test_target_aware_source_resumes_and_reports(
    domains: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Tilt, SNR and spectrum matching and template-matching pseudo-labels: recorded, and resume
    stays bit-identical."""
    kw = {
        **TINY_SIMULATED_SELFTRAIN,
        "epochs": 2,
        "spectrum_match": True,
        "tilt_match": True,
        "snr_match": True,
        "template_labels": 12,
    }
    full = train(_config(domains, tmp_path / "full", **kw))
    sel = json.loads((tmp_path / "full" / "selection.json").read_text())
    tilt = sel["tilt_match"]
    assert tilt["simulated"] == list(tilt_match_range(tilt["estimate"]))
    assert sel["template_labels"]["tilt_max"] == round(tilt["estimate"], 1)  # estimated once, used twice
    snr = sel["snr_match"]
    assert snr["simulated"] == pytest.approx([snr["estimate"] / SPAN, snr["estimate"] * SPAN], rel=1e-3)
    assert snr["preset"] == [0.02, 3.0] and len(snr["curve"]) == PROBE_BINS
    assert sel["spectrum_match"]["gain_max"] >= sel["spectrum_match"]["gain_min"] > 0
    assert sel["template_labels"]["matched"] == 12 and 3 <= sel["template_labels"]["kept"] <= 12
    small, *rest = sel["warnings"]  # a tiny target: said first (small_target_warning), then the rest
    assert small.startswith("the target holds only") and rest == training_warnings(
        full.history, full.selected_epoch
    )
    err = capsys.readouterr().err
    printed = [line for line in err.splitlines() if line.startswith("cryoshift: warning: ")]
    # recorded = what the user saw at the end; the small target also as soon as it was read
    again = [w + " (as said at the start)" if w == small else w for w in sel["warnings"]]
    assert printed == [f"cryoshift: warning: {w}" for w in [small, *again]]
    shares = (tmp_path / "full" / "target_classes.csv").read_text().splitlines()
    assert shares[0] == "class,count,share" and len(shares) == 4
    train(_config(domains, tmp_path / "cut", **kw), stop_after_epoch=1)
    resumed = train(_config(domains, tmp_path / "cut", **kw), resume=True)
    assert resumed.state_digest == full.state_digest


@pytest.mark.parametrize("rule", ["agree", "agree-only"])
def test_template_labels_by_agreement_are_recorded_and_resume(
    domains: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], rule: str
) -> None:
    """--template-rule agree/agree-only: after the epoch before self-training starts, the target
    labels become the matches the network agrees with; recorded, said, and a run stopped after the
    vote resumes bit-identically (the chosen rows travel in the resume checkpoint)."""
    kw = {
        **TINY_SIMULATED_SELFTRAIN,
        "epochs": 3,
        "template_labels": 12,
        "template_rule": rule,
        "method_kwargs": {"adapt_start": 0.4},  # the vote after epoch floor(0.4 x 3) = 1
    }
    full = train(_config(domains, tmp_path / "full", **kw))
    found = json.loads((tmp_path / "full" / "selection.json").read_text())["template_labels"]
    assert found["rule"] == rule and found["agree_epoch"] == 1 and found["matched"] == 12
    assert 0 <= found["agreed"] <= 12 and sum(found["agreed_class_counts"]) == found["agreed"]
    said = f"after epoch 1, training on the {found['agreed']} of 12 matched target subtomograms"
    assert said in capsys.readouterr().err
    train(_config(domains, tmp_path / "cut", **kw), stop_after_epoch=2)
    resumed = train(_config(domains, tmp_path / "cut", **kw), resume=True)
    assert resumed.state_digest == full.state_digest


def test_selftrain_target_every_trains_and_resumes(domains: dict[str, Path], tmp_path: Path) -> None:
    """The trainer gives selftrain a target batch every k-th step only: the run trains, records the
    setting, and a resumed run is bit-identical (the steps with a target batch are fixed by step)."""
    kw = {
        "method": "selftrain",
        "epochs": 2,
        "method_kwargs": {"target_every": 3, "adapt_start": 0.0, "adapt_ramp": 0.01},
    }
    full = train(_config(domains, tmp_path / "full", **kw))
    config = json.loads((tmp_path / "full" / "config.json").read_text())
    assert config["method_kwargs"]["target_every"] == 3
    assert all("loss_im" in row for row in full.history)  # the target terms ran
    train(_config(domains, tmp_path / "cut", **kw), stop_after_epoch=1)
    resumed = train(_config(domains, tmp_path / "cut", **kw), resume=True)
    assert resumed.state_digest == full.state_digest


def test_cli_train_then_evaluate(domains: dict[str, Path], tmp_path: Path) -> None:
    from cryoshift.runtime.cli import main

    run = tmp_path / "run"
    rc = main(
        [
            "train",
            "--source",
            str(domains["source"]),
            "--target",
            str(domains["target_unlabelled"]),
            "--method",
            "dann",
            "--backbone",
            "cryonet-small",
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--out",
            str(run),
            "--no-progress",
            "--hparam",
            "dann_weight=0.5",
        ]
    )
    assert rc == 0
    assert json.loads((run / "config.json").read_text())["method_kwargs"] == {"dann_weight": 0.5}
    rc = main(["evaluate", str(run), str(domains["target"]), "--out", str(tmp_path / "ev")])
    assert rc == 0
    report = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert report["n"] == 30 and 0 <= report["accuracy"] <= 1
    assert sum(map(sum, report["confusion_matrix"])) == 30
    ck = report["checkpoints"]
    assert [e["epoch"] for e in ck["epochs"]] == [1, 2]
    assert ck["selection_gap"] == pytest.approx(ck["oracle_accuracy"] - ck["selected_accuracy"])
    assert (tmp_path / "ev" / "confusion.png").is_file()
    # errors are one line and exit 2
    assert main(["evaluate", str(run), str(tmp_path / "nope")]) == 2
    assert main(["train", "--source", str(domains["source"]), "--out", str(run)]) == 2


def test_target_from_picks_and_a_tomogram(
    domains: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cryoshift.runtime.mrc import write_volume

    ds = read_dataset(domains["target_unlabelled"])
    tomo = np.zeros((32, 64, 64), np.float32)
    picks = []
    for i in range(8):  # paste 8 target particles into a small tomogram, one pick each
        z, y, x = 8, 8 + 16 * (i // 4 % 4), 8 + 16 * (i % 4)
        tomo[z - 8 : z + 8, y - 8 : y + 8, x - 8 : x + 8] = ds.volumes[i]
        picks.append(f"{x},{y},{z}")
    picks.append("500,500,500")  # outside the tomogram: reported and skipped
    write_volume(tmp_path / "tomo.mrc", tomo, voxel_size=10.0)
    (tmp_path / "picks.csv").write_text("x,y,z\n" + "\n".join(picks) + "\n")
    result = train(
        _config(
            domains,
            tmp_path / "run",
            method="dann",
            target=str(tmp_path / "picks.csv"),
            tomograms=[str(tmp_path / "tomo.mrc")],
            epochs=1,
        )
    )
    assert result.model_path is not None
    err = capsys.readouterr().err
    assert "skipped target item" in err and "outside the tomogram" in err


def test_source_only_without_target_or_validation(domains: dict[str, Path], tmp_path: Path) -> None:
    result = train(
        _config(domains, tmp_path / "run", method="source-only", target=None, val_fraction=0.0, epochs=1)
    )
    meta = result.metadata
    assert meta.temperature == 1.0 and meta.unknown_threshold == 0.0  # nothing held out to calibrate on
    assert meta.extra["feature_reference"] == "source" and len(meta.feature_mean) > 0


def test_a_reduced_precision_step_of_non_finite_gradients_is_redone_in_fp32(
    domains: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bf16 step with a finite loss but a non-finite gradient (seen on a 2-core CPU, at random, in
    one conv weight's gradient) was applied: Adam made every weight NaN and the next step raised
    "training diverged". The step is redone in fp32 with a note; the run finishes with finite weights."""
    from cryoshift.training import trainer

    real, calls = trainer._finite_gradients, []

    def first_check_fails(optimiser: torch.optim.Optimizer) -> bool:
        calls.append(1)  # the first check of the run says non-finite, every later one is real
        return len(calls) > 1 and real(optimiser)

    monkeypatch.setattr(trainer, "_finite_gradients", first_check_fails)
    result = train(_config(domains, tmp_path / "run", method="source-only", epochs=1, amp=True))
    err = capsys.readouterr().err
    assert err.count("step redone in fp32") == 1, err
    state = torch.load(tmp_path / "run" / RUN_MODEL, weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    assert result.model_path is not None


def test_finite_gradients_sees_one_bad_value() -> None:
    from cryoshift.training.trainer import _finite_gradients

    weights = [torch.nn.Parameter(torch.zeros(4, 3, 3, 3, 2)), torch.nn.Parameter(torch.zeros(5))]
    opt = torch.optim.Adam(weights)
    assert _finite_gradients(opt)  # no gradients yet
    for w in weights:
        w.grad = torch.ones_like(w)
    weights[0].grad = weights[0].grad.contiguous(memory_format=torch.channels_last_3d)
    assert _finite_gradients(opt)
    weights[0].grad[1, 2, 0, 1, 1] = float("inf")
    assert not _finite_gradients(opt)


def test_pose_normalised_backbone_trains_in_bf16_and_reloads(
    domains: dict[str, Path], tmp_path: Path
) -> None:
    """--backbone-opt canonical=true trains (its frame computed in fp32 under the bf16 autocast),
    stores the option with the run and rebuilds the same network from the weights-only checkpoint."""
    import torch

    from cryoshift.training.checkpoint import load_checkpoint

    result = train(_config(domains, tmp_path / "run", backbone_kwargs={"canonical": True}, amp=True))
    assert np.isfinite(result.history[-1]["loss_total"])
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["backbone_kwargs"] == {"canonical": True}
    model, _, _ = load_checkpoint(result.model_path)
    assert model.canonical is not None
    x = torch.randn(3, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.isfinite(model.eval()(x)).all()
