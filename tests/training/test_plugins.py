"""Plugins: a method and a backbone of another distribution, found through its entry points.

Each test writes a real distribution on disk (a module and a ``*.dist-info`` folder with METADATA
and entry_points.txt), the way ``pip install`` leaves one, and puts its folder on the path:
importlib.metadata then finds it like any installed package. The end-to-end test runs the CLI in
new processes, as a user would (``train``, ``train --resume``, ``evaluate``, the listing): what
registers the plugin there is its entry point alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from plugin_dist import write_distribution

from cryoshift.training.registry import Registry

REPO = Path(__file__).resolve().parents[2]

# A third-party method (registered by its own decorator too, under its entry point's name) and a
# backbone (registered by its entry point alone), written as a methods developer would.
DEMO_SOURCE = '''
"""A methods developer's package: one adaptation method, one backbone."""
import torch
import torch.nn.functional as F
from torch import nn

from cryoshift.training.adapt import METHODS, AdaptationMethod
from cryoshift.training.backbones import Backbone


@METHODS.register("demo-entropy")
class EntropyMin(AdaptationMethod):
    name = "demo-entropy"
    summary = "source cross-entropy + target entropy minimisation"
    needs_target = True
    HPARAMS = {"entropy_weight": 0.1}

    @classmethod
    def hparam_problems(cls, hparams):
        problems = super().hparam_problems(hparams)
        if hparams["entropy_weight"] > 1:
            problems.append(f"entropy_weight must be at most 1, not {hparams['entropy_weight']}")
        return problems

    def losses(self, source_x, source_y, target_x=None, progress=1.0, target_y=None):
        self._check_inputs(target_x, target_y, target_required=False)
        ce = self._ce(self.backbone(source_x), source_y)
        total, out = self.hparams["ce_weight"] * ce, {"ce": ce.detach()}
        if target_x is not None:
            p = F.softmax(self.backbone(target_x), 1)
            entropy = -(p * torch.log(p.clamp_min(1e-8))).sum(1).mean()
            total = total + self.hparams["entropy_weight"] * entropy
            out["entropy"] = entropy.detach()
        out["total"] = total
        return out


class TinyNet(Backbone):
    def __init__(self, num_classes, box_size, width=4):
        super().__init__()
        self.num_classes, self.box_size, self.num_features = num_classes, box_size, width
        self.body = nn.Sequential(
            nn.Conv3d(1, width, 3, stride=2, padding=1),
            nn.BatchNorm3d(width),
            nn.ReLU(),
            nn.AdaptiveAvgPool3d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(width, num_classes)

    def pooled_features(self, x):
        return self.body(x)


def tiny_net(num_classes: int, box_size: int, **kw) -> TinyNet:
    return TinyNet(num_classes, box_size, **kw)
'''


def _builtin() -> object:
    return "built-in"


class Thing:
    """What a plugin entry of the unit tests points at."""


def _registry(group: str) -> Registry:
    registry: Registry = Registry("method")
    registry.register("builtin")(_builtin)
    registry.enable_plugins(group, check=lambda name, obj: None if isinstance(obj, type) else "is no class")
    return registry


def test_a_plugin_is_imported_on_first_lookup_and_registered_under_its_entry_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = f"lazy_{tmp_path.name.replace('-', '_')}"
    site = write_distribution(
        tmp_path / "site",
        "cs-lazy",
        {module: "class Method:\n    pass\n"},
        f"[cs.test.lazy]\nlazy = {module}:Method\n",
    )
    monkeypatch.syspath_prepend(str(site))
    registry = _registry("cs.test.lazy")
    assert module not in sys.modules  # enabling reads nothing
    assert registry.names() == ["builtin", "lazy"]
    assert module in sys.modules
    assert registry.get("lazy") is sys.modules[module].Method and "lazy" in registry
    assert registry.origin("lazy") == "distribution cs-lazy 0.1" and registry.origin("builtin") is None
    assert registry.problems() == []


def test_a_plugin_that_cannot_be_used_is_one_line_when_asked_for_and_a_warning_once_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tag = tmp_path.name.replace("-", "_")
    good, fails, shadow = f"good_{tag}", f"fails_{tag}", f"shadow_{tag}"
    site = tmp_path / "site"
    write_distribution(
        site, "cs-good", {good: "class Method:\n    pass\n"}, f"[cs.test.bad]\ngood = {good}:Method\n"
    )
    write_distribution(
        site,
        "cs-fails",
        {fails: "import no_such_module_anywhere\n"},
        f"[cs.test.bad]\nfails = {fails}:Method\n",
    )
    write_distribution(
        site,
        "cs-shadow",
        {shadow: "VALUE = 1\nclass Method:\n    pass\n"},
        f"[cs.test.bad]\nbuiltin = {shadow}:Method\nnot-a-class = {shadow}:VALUE\ntwice = {shadow}:Method\n",
    )
    write_distribution(site, "cs-twice", {}, f"[cs.test.bad]\ntwice = {good}:Method\n")
    # one malformed entry_points.txt made importlib.metadata.entry_points() raise for every group
    write_distribution(site, "cs-malformed", {}, "[cs.test.bad]\njust-a-name\n")
    monkeypatch.syspath_prepend(str(site))
    registry = _registry("cs.test.bad")

    # the built-in and the good plugin work; each problem is said once, on one line, no traceback
    assert registry.names() == ["builtin", "good"]
    assert registry.get("builtin") is _builtin  # a plugin cannot take a built-in's name
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 5 and all(w.startswith("cryoshift: warning: ") for w in warnings), warnings
    assert (
        f"cryoshift: warning: method 'fails' cannot be used: its plugin (distribution cs-fails 0.1, "
        f"entry point {fails}:Method) fails to import (ModuleNotFoundError: No module named "
        "'no_such_module_anywhere')"
    ) in warnings
    assert (
        f"cryoshift: warning: plugin method 'builtin' (distribution cs-shadow 0.1, entry point "
        f"{shadow}:Method) is ignored: 'builtin' is a built-in method; rename the entry point"
    ) in warnings
    assert any("'not-a-class' cannot be used" in w and w.endswith("is no class") for w in warnings)
    assert any(
        "'twice' cannot be used: plugins of distribution cs-" in w and w.endswith("; uninstall one")
        for w in warnings
    )
    assert any(
        w.startswith("cryoshift: warning: the 'cs.test.bad' entry points of distribution cs-malformed 0.1 ")
        and w.endswith("; its methods are not available")
        for w in warnings
    )
    registry.names()
    assert capsys.readouterr().err == ""  # once per process

    # asking for a broken one is the error itself: one line naming plugin, distribution, problem
    with pytest.raises(ValueError) as refused:
        registry.get("fails")
    said = next(w for w in warnings if "'fails'" in w)
    assert str(refused.value) == said.removeprefix("cryoshift: warning: ")
    assert "\n" not in str(refused.value) and "fails" not in registry


def test_a_method_plugin_must_be_a_method_named_as_its_entry_point() -> None:
    from cryoshift.training.adapt import _plugin_problem
    from cryoshift.training.adapt.source_only import SourceOnly

    class Unnamed(SourceOnly):
        pass

    class Named(SourceOnly):
        name = "mine"

    assert _plugin_problem("mine", Named) is None
    assert _plugin_problem("mine", Unnamed) == (
        "is class Unnamed with name 'source-only': set name = 'mine' in the class"
    )
    assert "not a subclass of cryoshift.training.adapt.AdaptationMethod" in str(_plugin_problem("mine", len))


def _cli(
    args: list[str], env: dict[str, str], module: str = "cryoshift.runtime.cli"
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, timeout=120, cwd=REPO
    )


@pytest.mark.slow  # five new processes, each importing torch: ~30 s on 2 busy cores
def test_a_plugin_method_and_backbone_train_resume_evaluate_and_are_listed_from_the_cli(
    domains: dict[str, Path], tmp_path: Path
) -> None:
    site = write_distribution(
        tmp_path / "site",
        "cs-demo",
        {"cs_demo_plugin": DEMO_SOURCE},
        """
        [cryoshift.methods]
        demo-entropy = cs_demo_plugin:EntropyMin

        [cryoshift.backbones]
        demo-net = cs_demo_plugin:tiny_net
        """,
    )
    # an unrelated broken plugin: said once as a warning, never in the way of the others
    write_distribution(site, "cs-broken", {}, "[cryoshift.methods]\nbroken = cs_missing_module:Method\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    env |= {"OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    run = tmp_path / "run"
    train = [
        "train",
        "--source",
        str(domains["source"]),
        "--target",
        str(domains["target_unlabelled"]),
        "--method",
        "demo-entropy",
        "--backbone",
        "demo-net",
        "--batch-size",
        "8",
        "--val-fraction",
        "0.25",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--no-progress",
        "--out",
        str(run),
    ]

    # refused before any data is read: the plugin's own rule, in one line
    start = time.perf_counter()
    refused = _cli([*train, "--epochs", "1", "--hparam", "entropy_weight=5"], env)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.splitlines()[-1] == (
        "cryoshift: error: --hparam entropy_weight must be at most 1, not 5"
    ), refused.stderr
    assert not run.exists() and time.perf_counter() - start < 60

    done = _cli([*train, "--epochs", "1", "--hparam", "entropy_weight=0.2"], env)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("method 'broken' cannot be used") == 1, done.stderr
    config = json.loads((run / "config.json").read_text())
    assert config["method"] == "demo-entropy" and config["backbone"] == "demo-net"
    selection = json.loads((run / "selection.json").read_text())
    assert selection["method_hparams"] == {"ce_weight": 1.0, "label_smoothing": 0.0, "entropy_weight": 0.2}

    resumed = _cli([*train, "--epochs", "2", "--resume"], env)  # a new process finds it again
    assert resumed.returncode == 0, resumed.stderr
    assert (run / "metrics.csv").read_text().count("\n") == 3  # header + epochs 1 and 2
    rows = (run / "metrics.csv").read_text().splitlines()
    assert "loss_entropy" in rows[0]

    evaluated = _cli(["evaluate", str(run), str(domains["target"]), "--out", str(tmp_path / "ev")], env)
    assert evaluated.returncode == 0, evaluated.stderr  # the checkpoint rebuilds the plugin backbone
    assert json.loads((tmp_path / "ev" / "evaluation.json").read_text())["n"] == 30

    listing = _cli([], env, module="cryoshift.training.adapt")
    assert listing.returncode == 1  # a plugin cannot be used: said, and the status says so
    assert "demo-entropy [plugin: distribution cs-demo 0.1] - source cross-entropy + target entropy" in (
        listing.stdout
    )
    assert "entropy_weight=0.1" in listing.stdout and "selftrain [the default]" in listing.stdout
    errors = listing.stderr.splitlines()
    assert len(errors) == 1 and errors[0].startswith(
        "cryoshift: error: method 'broken' cannot be used: its "
        "plugin (distribution cs-broken 0.1, entry point cs_missing_module:Method) fails to import"
    ), errors


def test_a_value_a_method_refuses_is_refused_before_any_data_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--hparam teacher_decay=1.5`` (selftrain's mean-teacher decay is in [0, 1)) was refused by
    the constructor, after the source and target were read, minutes in. The source here does not
    exist: the refusal comes first, in one line."""
    from cryoshift.runtime.cli import main

    missing = tmp_path / "no-such-dataset"
    argv = ["train", "--source", str(missing), "--target", str(missing), "--out", str(tmp_path / "run")]
    assert main([*argv, "--method", "selftrain", "--hparam", "teacher_decay=1.5"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "cryoshift: error: --hparam teacher_decay must be in [0, 1), not 1.5"
    ]
    assert not (tmp_path / "run").exists()
