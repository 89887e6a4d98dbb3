"""`cryoshift train` with no options trains exactly what TrainConfig() describes (one recipe, two places)."""

from __future__ import annotations

import dataclasses
import inspect
import itertools

from cryoshift.runtime.commands import train as train_command
from cryoshift.training.trainer import TrainConfig

CLI_NAMES = {"selection": "selection_criterion"}


def test_cli_defaults_are_the_trainer_defaults() -> None:
    fields = {
        f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING
    }
    checked = 0
    for name, param in inspect.signature(train_command.command).parameters.items():
        key = CLI_NAMES.get(name, name)
        default = getattr(param.default, "default", None)
        if key in fields and default is not None and default is not ...:
            assert default == fields[key], (
                f"--{name.replace('_', '-')}: CLI {default!r} vs TrainConfig {fields[key]!r}"
            )
            checked += 1
    assert (
        checked >= 12
    )  # method, backbone, epochs, batch size, lr, preset, volumes, spectrum, template labels...


def test_impossible_schedule_and_template_settings_are_refused_in_one_line(capsys) -> None:
    from cryoshift.runtime.cli import main

    snr_alone = "--snr-match compares template-matching margins: it needs --template-labels > 0"
    for option, value, message in [
        ("--template-keep", "0", "--template-keep must be in (0, 1], not 0.0"),
        ("--snr-match", "--template-labels=0", snr_alone),
        ("--template-keep", "1.5", "--template-keep must be in (0, 1], not 1.5"),
        ("--test-views", "5", "--test-views must be from 1 to 4, not 5"),
        ("--lr-schedule", "step", "--lr-schedule must be one of cosine, constant, not 'step'"),
    ]:
        code = main(["train", "--source", "builtin", "--box", "16", "--out", "unused", option, value])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and err == [f"cryoshift: error: {message}"]


def test_cosine_schedule_falls_from_lr_to_its_floor() -> None:
    from cryoshift.training.trainer import LR_FLOOR, lr_factor

    values = [lr_factor("cosine", p) for p in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert values[0] == 1.0 and abs(values[-1] - LR_FLOOR) < 1e-12
    assert all(a > b for a, b in itertools.pairwise(values))
    assert abs(values[2] - (1 + LR_FLOOR) / 2) < 1e-12
    assert lr_factor("constant", 0.7) == 1.0


def test_cpu_mixed_precision_only_where_the_cpu_runs_bf16_natively() -> None:
    import torch

    from cryoshift.training.precision import autocast, cpu_has_native_bf16

    conv = torch.nn.Conv3d(1, 2, 3)
    x = torch.randn(1, 1, 6, 6, 6)
    with autocast("cpu", True):
        on = conv(x).dtype
    with autocast("cpu", False):
        off = conv(x).dtype
    assert on == (torch.bfloat16 if cpu_has_native_bf16() else torch.float32)
    assert off == torch.float32
