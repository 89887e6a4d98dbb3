"""Hyper-parameters and the method contract, as a methods developer meets them.

A method's values are checked against its own defaults (not a namespace merged over every
installed method), with ranges, by the CLI and the Python API alike; ``--resume`` trains with the
values the run started with; a run records the plugin distribution that provided its method and
whether it trained on target labels; a method breaking the ``losses()`` contract is named.

The plugins here are real distributions on disk (as in test_plugins.py), found through their
entry points by the process's own method registry, which each test restores afterwards.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from plugin_dist import write_distribution

from cryoshift.runtime.errors import InputError
from cryoshift.training.trainer import TrainConfig, train

PLUGIN_SOURCE = '''
"""A methods developer's package: methods that use, clash with or break the contract."""
import torch
import torch.nn.functional as F

from cryoshift.training.adapt import AdaptationMethod


class EntropyMin(AdaptationMethod):
    name = "hp-entropy"
    needs_target = True
    HPARAMS = {"entropy_weight": 0.1}

    def losses(self, source_x, source_y, target_x=None, progress=1.0, target_y=None):
        self._check_inputs(target_x, target_y, target_required=False)
        ce = self._ce(self.backbone(source_x), source_y)
        total, out = self.hparams["ce_weight"] * ce, {"ce": ce.detach()}
        if target_x is not None:
            p = F.softmax(self.backbone(target_x).float(), 1)
            entropy = -(p * torch.log(p.clamp_min(1e-8))).sum(1).mean()
            total = total + self.hparams["entropy_weight"] * entropy
            out["entropy"] = entropy.detach()
        out["total"] = total
        return out


class Clash(AdaptationMethod):
    """Declares two of selftrain's keys with other kinds (allowed: they are its own)."""

    name = "hp-clash"
    HPARAMS = {"target_every": 1.5, "teacher_decay": "off", "warmup_steps": 0}


class NoTotal(AdaptationMethod):
    name = "hp-nototal"

    def losses(self, source_x, source_y, target_x=None, progress=1.0, target_y=None):
        return {"loss": self._ce(self.backbone(source_x), source_y)}


class NanLoss(AdaptationMethod):
    name = "hp-nan"

    def losses(self, source_x, source_y, target_x=None, progress=1.0, target_y=None):
        ce = self._ce(self.backbone(source_x), source_y)
        return {"total": ce * float("nan"), "ce": ce.detach()}
'''


ENTRY_POINTS = """
[cryoshift.methods]
hp-entropy = {module}:EntropyMin
hp-clash = {module}:Clash
hp-nototal = {module}:NoTotal
hp-nan = {module}:NanLoss
"""


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Install the plugin distribution ``cs-hp 0.1`` and let the method registry read it anew (its
    state is restored after the test); the plugin's module name."""
    from cryoshift.training.adapt import METHODS

    METHODS.names()  # the built-ins (and any installed plugin) loaded first
    module = f"cs_hp_{tmp_path.name.replace('-', '_')}"
    site = write_distribution(
        tmp_path / "site", "cs-hp", {module: PLUGIN_SOURCE}, ENTRY_POINTS.format(module=module)
    )
    monkeypatch.syspath_prepend(str(site))
    for attr in ("_entries", "_origins", "_provided", "_broken"):
        monkeypatch.setattr(METHODS, attr, dict(getattr(METHODS, attr, {})), raising=False)
    monkeypatch.setattr(METHODS, "_loaded", False)
    assert "hp-clash" in METHODS.names()
    return module


def _config(domains: dict[str, Path], out: Path, **kw: object) -> TrainConfig:
    base = {
        "source": str(domains["source"]),
        "target": str(domains["target_unlabelled"]),
        "out": str(out),
        "backbone": "cryonet-small",
        "test_views": 1,
        "epochs": 1,
        "batch_size": 8,
        "lr": 2e-3,
        "progress": False,
        "val_fraction": 0.25,
        "threads": 1,
    }
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def _refusal(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    """stderr of ``cryoshift train`` on a source that does not exist: a refusal that comes before
    any data is read is the only line."""
    from cryoshift.runtime.cli import main

    missing = str(tmp_path / "no-such-dataset")
    argv = ["train", "--source", missing, "--target", missing, "--out", str(tmp_path / "run"), *args]
    assert main(argv) == 2
    assert not (tmp_path / "run").exists()
    return capsys.readouterr().err.splitlines()


# -- finding 2: each value is checked against the chosen method's own defaults --------------------


def test_a_plugins_key_of_another_kind_changes_nothing_for_a_built_in_method(
    plugin: str, tmp_path: Path
) -> None:
    def check(method: str, **kwargs: object) -> None:
        TrainConfig(source="s", out=str(tmp_path / "o"), method=method, method_kwargs=kwargs).check()

    check("selftrain", teacher_decay=0.9)  # was "must be a string, not 0.9" (the plugin's kind)
    with pytest.raises(InputError) as exc:  # was accepted: trained as 2, recorded as 2.5
        check("selftrain", target_every=2.5)
    assert exc.value.reason == "--hparam target_every must be a whole number >= 1, not 2.5"
    check("hp-clash", target_every=2.5, teacher_decay="on")  # the plugin's own kinds, for it
    with pytest.raises(InputError) as exc:
        check("hp-clash", teacher_decay=0.9)
    assert exc.value.reason == (
        "--hparam teacher_decay must be a string, not 0.9 "
        """(a string that reads as a number is quoted: --hparam 'teacher_decay="0.9"')"""
    )


def test_a_count_whose_default_is_0_may_be_0(plugin: str, tmp_path: Path) -> None:
    """A plugin's ``warmup_steps: 0`` was refused at its own default ("a whole number >= 1")."""
    from cryoshift.training.adapt import create_method
    from cryoshift.training.backbones import create_backbone

    TrainConfig(
        source="s", out=str(tmp_path / "o"), method="hp-clash", method_kwargs={"warmup_steps": 0}
    ).check()
    with pytest.raises(InputError) as exc:
        TrainConfig(
            source="s", out=str(tmp_path / "o"), method="hp-clash", method_kwargs={"warmup_steps": -1}
        ).check()
    assert exc.value.reason == "--hparam warmup_steps must be a whole number >= 0, not -1"
    backbone = create_backbone("cryonet-small", num_classes=3, box_size=16)
    with pytest.raises(ValueError, match="target_every must be a whole number >= 1, not 0"):
        create_method("selftrain", backbone, 3, 16, target_every=0)  # a count with another default


# -- finding 5: ranges, before any data is read ------------------------------------------------


@pytest.mark.parametrize(
    ("method", "hparam", "line"),
    [
        ("dann", "label_smoothing=1.5", "label_smoothing must be in [0, 1), not 1.5"),
        ("source-only", "label_smoothing=1", "label_smoothing must be in [0, 1), not 1"),
        ("selftrain", "pseudo_fraction=5", "pseudo_fraction must be in (0, 1], not 5"),
        ("selftrain", "pseudo_fraction=0", "pseudo_fraction must be in (0, 1], not 0"),
        ("selftrain", "adapt_ramp=1.5", "adapt_ramp must be in [0, 1], not 1.5"),
        (
            "selftrain",
            "adapt_start=7",
            "adapt_start must be in [0, 1), not 7 (the target terms would never start)",
        ),
    ],
)
def test_a_value_out_of_range_is_one_line_before_any_data_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], method: str, hparam: str, line: str
) -> None:
    err = _refusal(tmp_path, capsys, "--method", method, "--hparam", hparam)
    assert err == [f"cryoshift: error: --hparam {line}"]


def test_a_start_the_runs_last_step_never_reaches_is_said(
    domains: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """adapt_start 0.99 in a 1-epoch run of a few steps: the target terms never start (an AdaBN run
    labelled selftrain). Not refusable before the data is read (the step count comes from it)."""
    result = train(
        _config(domains, tmp_path / "run", method="selftrain", method_kwargs={"adapt_start": 0.99})
    )
    err = capsys.readouterr().err
    assert "cryoshift: note: adapt_start 0.99: the target terms of 'selftrain' never start in this run" in err
    assert "loss_im" not in result.history[-1]  # indeed never started


# -- finding 3: --resume trains with the hyper-parameters the run started with ------------------


def test_resume_keeps_the_runs_hyper_parameters_when_a_default_changed(
    plugin: str,
    domains: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from cryoshift.training.adapt import METHODS

    out = tmp_path / "run"
    train(_config(domains, out, method="hp-entropy", epochs=2), stop_after_epoch=1)

    # the plugin's next version changes its default
    monkeypatch.setitem(METHODS.get("hp-entropy").HPARAMS, "entropy_weight", 0.9)
    capsys.readouterr()
    result = train(_config(domains, out, method="hp-entropy", epochs=2), resume=True)
    notes = [line for line in capsys.readouterr().err.splitlines() if "hyper-parameters it started" in line]
    assert notes == [
        "cryoshift: note: the run resumes with the hyper-parameters it started with, where today's "
        "defaults differ: entropy_weight=0.1 (default now 0.9)"
    ]
    row = result.history[-1]  # epoch 2 trained with 0.1, not 0.9
    assert row["epoch"] == 2
    assert row["loss_total"] == pytest.approx(row["loss_ce"] + 0.1 * row["loss_entropy"], rel=1e-3)
    selection = json.loads((out / "selection.json").read_text())
    assert selection["method_hparams"]["entropy_weight"] == 0.1


# -- finding 7: a run records the distribution of the plugin method it used --------------------


def test_versions_json_records_the_plugin_distribution_of_the_method(
    plugin: str, domains: dict[str, Path], tmp_path: Path
) -> None:
    train(_config(domains, tmp_path / "plugin", method="hp-entropy"))
    versions = json.loads((tmp_path / "plugin" / "versions.json").read_text())
    assert versions["plugins"] == {
        "method": {"name": "hp-entropy", "distribution": "cs-hp", "version": "0.1"}
    }
    train(_config(domains, tmp_path / "builtin", method="adabn"))
    assert "plugins" not in json.loads((tmp_path / "builtin" / "versions.json").read_text())


# -- finding 6: the Python API checks what the CLI checks -------------------------------------


@pytest.mark.parametrize(
    ("method", "kwargs", "message"),
    [
        ("dann", {"dann_weight": math.nan}, "dann_weight must be a finite number >= 0, not nan"),
        ("dann", {"dann_weight": -5}, "dann_weight must be a finite number >= 0, not -5"),
        ("dann", {"dann_weight": "abc"}, "dann_weight must be a finite number >= 0, not 'abc'"),
        ("dann", {"disc_hidden": 2.5}, "disc_hidden must be a whole number >= 1, not 2.5"),
        ("selftrain", {"pseudo_fraction": 5}, "pseudo_fraction must be in (0, 1], not 5"),
        ("source-only", {"label_smoothing": 1.5}, "label_smoothing must be in [0, 1), not 1.5"),
    ],
)
def test_create_method_refuses_what_the_command_line_refuses(
    method: str, kwargs: dict[str, object], message: str
) -> None:
    from cryoshift.training.adapt import create_method
    from cryoshift.training.backbones import create_backbone

    backbone = create_backbone("cryonet-small", num_classes=3, box_size=16)
    with pytest.raises(ValueError) as exc:
        create_method(method, backbone, 3, 16, **kwargs)
    assert str(exc.value) == message
    assert create_method("dann", backbone, 3, 16, dann_weight=0.5).hparams["dann_weight"] == 0.5


# -- finding 8: a run that trains on target labels says so -----------------------------------


def test_an_oracle_run_records_and_says_that_it_trained_on_target_labels(
    domains: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cryoshift.runtime.cli import main

    out = tmp_path / "oracle"
    argv = ["train", "--source", str(domains["source"]), "--target", str(domains["target"])]
    argv += ["--method", "oracle", "--oracle-target-labels", "--backbone", "cryonet-small"]
    argv += ["--epochs", "1", "--batch-size", "8", "--val-fraction", "0.25", "--test-views", "1"]
    argv += ["--device", "cpu", "--threads", "1", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "the run trained on target labels" in printed and "chosen without target labels" not in printed
    assert json.loads((out / "selection.json").read_text())["uses_target_labels"] is True


# -- finding 9: a method breaking the losses() contract is named -------------------------------


def test_a_method_without_total_or_with_a_nan_first_loss_is_named(
    plugin: str, domains: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(InputError) as exc:
        train(_config(domains, tmp_path / "a", method="hp-nototal"))
    assert exc.value.reason == (
        "method 'hp-nototal': losses() returned no 'total' tensor (got 'loss'); the contract "
        "(adapt/base.py): a dict of scalar losses whose 'total' is backpropagated"
    )
    with pytest.raises(InputError) as exc:
        train(_config(domains, tmp_path / "b", method="hp-nan"))
    assert exc.value.reason.startswith(
        "method 'hp-nan': losses() returned a non-finite 'total' at epoch 1 step 0"
    )
    assert "--lr" not in exc.value.reason


# -- finding 11: --hparam values as a user means them -------------------------------------------


def test_hparam_values_are_read_as_a_user_means_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cryoshift.runtime.commands.train import _parse_kv

    parsed = _parse_kv(
        ["a=.5", "b=5.", "c=True", "d=False", "e=5", "f=1e-3", "g='1'", 'h="1"', "i=abc"], "--hparam"
    )
    assert parsed == {
        "a": 0.5,
        "b": 5.0,
        "c": True,
        "d": False,
        "e": 5,
        "f": 1e-3,
        "g": "'1'",
        "h": "1",
        "i": "abc",
    }
    assert isinstance(parsed["e"], int) and isinstance(parsed["b"], float)
    err = _refusal(tmp_path, capsys, "--method", "dann", "--hparam", "dann_weight=null")
    assert err == [
        "cryoshift: error: --hparam dann_weight=null is not a value: leave the key out to use its default"
    ]


# -- finding 12: a method name in other letter case is suggested ------------------------------


def test_a_method_name_in_capitals_gets_its_suggestion() -> None:
    from cryoshift.training.adapt import METHODS

    with pytest.raises(ValueError) as exc:
        METHODS.get("DANN")
    assert str(exc.value).endswith("Did you mean 'dann'?")
