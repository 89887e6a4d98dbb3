"""SimulationConfig.from_json: a full config file, and a partial one laid over a base (a preset)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cryoshift.runtime.errors import InputError
from cryoshift.training.simulate import PRESETS, SimulationConfig


def test_round_trip_and_partial_file_over_a_preset(tmp_path: Path) -> None:
    base = PRESETS["paper"]
    full = tmp_path / "full.json"
    base.to_json(full)
    assert SimulationConfig.from_json(full) == base
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"snr": [0.5, 2.0]}))
    cfg = SimulationConfig.from_json(partial, base=base)
    assert tuple(cfg.snr) == (0.5, 2.0)
    assert cfg.replace(snr=base.snr) == base  # every other field comes from the base


@pytest.mark.parametrize(
    "text, reason",
    [("[1, 2]", "must be an object"), ("{", "cannot read"), ('{"snrr": [1, 2]}', "did you mean snr")],
)
def test_bad_files_name_the_file(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "c.json"
    path.write_text(text)
    with pytest.raises(InputError, match=reason) as info:
        SimulationConfig.from_json(path, base=PRESETS["paper"])
    assert str(path) in str(info.value)
