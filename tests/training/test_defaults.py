"""`cryoshift train` with no options trains exactly what TrainConfig() describes (one recipe, two places)."""

from __future__ import annotations

import dataclasses
import inspect

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
