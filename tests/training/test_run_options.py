"""The resume note names ignored settings by their `cryoshift train` options: every name it can
show must be one the command declares (run.train_option holds the few that differ from the field)."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

pytest.importorskip("torch")

from cryoshift.runtime.commands import train as train_command
from cryoshift.training import run
from cryoshift.training.trainer import TrainConfig


def _declared() -> dict[str, str]:
    """Every option string of the train command -> its declaration ('--x/--no-x' kept whole)."""
    out: dict[str, str] = {}
    for param in inspect.signature(train_command.command).parameters.values():
        for decl in getattr(param.default, "param_decls", ()) or ():
            for part in decl.split("/"):
                out[part] = decl
    return out


def test_every_resumable_setting_is_shown_under_a_declared_option() -> None:
    declared = _declared()
    for field in dataclasses.fields(TrainConfig):
        if field.name in run._RESUME_TAKES:
            continue
        flag = run.train_option(field.name)
        if flag is None:
            assert "--" + field.name.replace("_", "-") not in declared, f"{field.name} has an option now"
            continue
        assert flag in declared, f"{field.name}: the note would say {flag}, which train does not declare"
        if field.name in run._NEGATABLE:
            assert declared[flag] == f"{flag}/--no-{flag[2:]}", f"{field.name}: {declared[flag]}"


def test_the_note_uses_the_declared_option_names() -> None:
    base = TrainConfig(source="a", out="r")
    given = dataclasses.replace(base, method_kwargs={"tau": 2.0}, spectrum_match=False, lr=0.01)
    notes = run.ignored_on_resume(given, base)
    assert "--hparam" in " ".join(notes) and "--no-spectrum-match (run: --spectrum-match)" in notes
    assert "--lr 0.01 (run: 0.001)" in notes
