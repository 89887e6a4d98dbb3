"""domain_shift.py keys each trained run by its whole training config, as accuracy.py does.

Only the backbone, epochs, batch size, learning rate and method were keyed, so an edited default of
any other TrainConfig field (test_views, lr_schedule, selection_criterion, amp ...) re-printed the
old runs' numbers. Real tiny data and one 1-epoch run in tmp folders; the published
``benchmarks/results`` are never written."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

pytest.importorskip("torch")

import domain_shift as D  # noqa: E402

from cryoshift.training import trainer  # noqa: E402


def test_an_edited_trainconfig_default_refuses_the_cached_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work, out = tmp_path / "DS", tmp_path / "out"
    monkeypatch.setitem(D.PROFILES, "tiny", dataclasses.replace(D.PROFILES["tiny"], threads=1))
    args = ["--profile", "tiny", "--work", str(work), "--out", str(out), "--no-plots"]
    args += ["--targets", "crowded", "--methods", "source-only"]
    assert D.main(args) == 0
    record = json.loads((work / "runs" / "crowded__source-only__s0.json").read_text())
    assert record["settings"]["lr_schedule"] == "cosine" and record["settings"]["seed"] == 0
    assert "out" not in record["settings"] and "threads" not in record["settings"]
    assert D.main(args) == 0  # the same config: reused

    @dataclasses.dataclass
    class Edited(trainer.TrainConfig):  # an edit of one default nothing passes explicitly
        lr_schedule: str = "constant"

    monkeypatch.setattr(trainer, "TrainConfig", Edited)
    refused = r"s0.json was made with other settings \(lr_schedule 'cosine' -> 'constant'\)"
    with pytest.raises(SystemExit, match=refused):
        D.main(args)


def test_a_run_keyed_by_its_budget_alone_is_checked_on_it_and_noted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A record of before the whole config was keyed is reused with a note when the keys it holds
    match (not refused for the keys it lacks), and refused naming the one that differs."""
    work, out = tmp_path / "DS", tmp_path / "out"
    tiny = dataclasses.replace(D.PROFILES["tiny"], threads=1)
    monkeypatch.setitem(D.PROFILES, "tiny", tiny)
    args = ["--profile", "tiny", "--work", str(work), "--out", str(out), "--no-plots"]
    args += ["--targets", "crowded", "--methods", "source-only"]
    assert D.main(args) == 0
    done = work / "runs" / "crowded__source-only__s0.json"
    record = json.loads(done.read_text())
    old_keys = ("backbone", "epochs", "batch_size", "lr", "method", "method_hparams", "method_origin")
    record["settings"] = {k: record["settings"][k] for k in old_keys}
    done.write_text(json.dumps(record))
    capsys.readouterr()
    assert D.main(args) == 0
    assert "keyed by its budget and method alone: reused" in capsys.readouterr().err

    monkeypatch.setitem(D.PROFILES, "tiny", dataclasses.replace(tiny, batch_size=8))
    with pytest.raises(SystemExit, match=r"other settings \(batch_size 16 -> 8\)"):
        D.main(args)
