"""Every cached item of the benchmarks' ``--work`` is keyed by the settings that made it: simulated
splits of domain_shift.py, splits of a ``--target-dataset``, and the default recipe's epoch count as
the trainer resolves it. Each was reused under other settings (by name alone, or keyed as None).

Real tiny data in tmp folders; the published ``benchmarks/results`` are never written."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

pytest.importorskip("torch")

import _cache as C  # noqa: E402
import accuracy as A  # noqa: E402
import domain_data  # noqa: E402
import domain_shift as D  # noqa: E402
from domains import PROFILES, TARGETS  # noqa: E402

from cryoshift.runtime.dataset import write_dataset  # noqa: E402

CLASSES = ["a", "b", "c"]


def test_both_benchmarks_share_one_cache_module() -> None:
    """domain_shift.py took its cache helpers from accuracy.py; both now use _cache.py's."""
    for name in ("check_cached", "read_settings", "write_settings", "settings_differ"):
        assert getattr(D, name) is getattr(C, name), name
    for name in ("check_cached", "read_settings", "write_settings", "settings_file", "method_settings"):
        assert getattr(A, name) is getattr(C, name), name


def test_simulated_split_is_reused_only_under_its_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    profile = PROFILES["tiny"]
    out = tmp_path / "target_crowded_adapt"
    domain_data.simulate_split(profile, TARGETS["crowded"], 6, 10, out)
    made = (out / "volumes.mrc").stat().st_mtime_ns
    assert json.loads(C.settings_file(out).read_text())["seed"] == 10
    domain_data.simulate_split(profile, TARGETS["crowded"], 6, 10, out)  # the same: reused
    assert (out / "volumes.mrc").stat().st_mtime_ns == made

    # the same target at another place of --targets (another seed), another size, another domain
    with pytest.raises(
        SystemExit, match=r"target_crowded_adapt was made with other settings \(seed 10 -> 12\)"
    ):
        domain_data.simulate_split(profile, TARGETS["crowded"], 6, 12, out)
    with pytest.raises(SystemExit, match=r"\(n 6 -> 5\)"):
        domain_data.simulate_split(profile, TARGETS["crowded"], 5, 10, out)
    with pytest.raises(SystemExit, match=r"other settings \(spec\."):
        domain_data.simulate_split(profile, TARGETS["optics"], 6, 10, out)
    with pytest.raises(SystemExit, match=r"box_size 16 -> 24"):
        domain_data.simulate_split(dataclasses.replace(profile, box_size=24), TARGETS["crowded"], 6, 10, out)

    # a split of an older harness (no settings recorded): reused with a one-line note, as before
    C.settings_file(out).unlink()
    domain_data.simulate_split(profile, TARGETS["crowded"], 6, 12, out)
    assert "target_crowded_adapt was made before cached items recorded" in capsys.readouterr().err
    assert (out / "volumes.mrc").stat().st_mtime_ns == made


def _labelled(folder: Path, offset: float) -> Path:
    volumes = np.random.default_rng(0).normal(size=(8, 16, 16, 16)).astype(np.float32) + offset
    labels = np.arange(8) % 3
    return write_dataset(folder, volumes, labels, class_names=CLASSES, voxel_size=20.0)


def test_user_target_split_is_keyed_by_the_dataset(tmp_path: Path) -> None:
    """Another ``--target-dataset`` of the same name on the same --work reused the first one's split."""
    first = _labelled(tmp_path / "a" / "mine", 0.0)
    work = tmp_path / "work" / "user_mine"
    adapt, _ = domain_data.split_user_target(first, CLASSES, work, box_size=16)
    made = (adapt / "volumes.mrc").stat().st_mtime_ns
    assert domain_data.split_user_target(first, CLASSES, work, box_size=16)[0] == adapt  # reused
    assert (adapt / "volumes.mrc").stat().st_mtime_ns == made

    other = _labelled(tmp_path / "b" / "mine", 0.0)  # another folder, same name (and content)
    with pytest.raises(
        SystemExit, match=r"user_mine was made with other settings \(dataset '.*/a/mine' -> '.*/b/mine'\)"
    ):
        domain_data.split_user_target(other, CLASSES, work, box_size=16)
    _labelled(first, 1.0)  # the same folder, rewritten with other volumes
    with pytest.raises(SystemExit, match=r"\(dataset_content '[0-9a-f]+' -> '[0-9a-f]+'\)"):
        domain_data.split_user_target(first, CLASSES, work, box_size=16)
    with pytest.raises(SystemExit, match=r"seed 0 -> 1"):
        domain_data.split_user_target(first, CLASSES, work, box_size=16, seed=1)


TINY = A.Profile(
    "tinytest",
    draws=1,
    n_adapt=6,
    n_test=6,
    box=16,
    voxel_size=20.0,
    threads=1,
    methods=("default",),
    targets=("lamella-60",),
    # the default recipe at its own epoch count, on a tiny simulation and network
    default_overrides={"sim_per_epoch": 16, "sim_val": 16, "backbone": "cryonet-small", "template_labels": 0},
)


def _default_epochs(monkeypatch: pytest.MonkeyPatch, epochs: int) -> None:
    """Set the trainer's default epoch count, for either precision (as an edit of trainer.py would)."""
    from cryoshift.training import trainer

    monkeypatch.setattr(trainer, "EPOCHS_FP32", epochs)
    monkeypatch.setattr(trainer, "EPOCHS_REDUCED_PRECISION", epochs)


def test_default_recipe_keys_the_epoch_count_it_trains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``epochs=None`` (the trainer's default) was keyed unresolved: a change of the default epoch
    count re-printed the runs trained with the old one."""
    monkeypatch.setitem(A.PROFILES, "tinytest", TINY)
    _default_epochs(monkeypatch, 1)
    args = ["--profile", "tinytest", "--work", str(tmp_path / "W"), "--out", str(tmp_path / "out")]
    assert A.main(args) == 0
    run = tmp_path / "W" / "runs" / "lamella-60__default__d0"
    record = A.record_path(tmp_path / "W", "lamella-60", "default", 0)
    assert json.loads((run / "config.json").read_text())["epochs"] == 1
    assert json.loads(C.settings_file(run).read_text())["epochs"] == 1
    assert json.loads(record.read_text())["settings"]["train"]["epochs"] == 1

    _default_epochs(monkeypatch, 2)
    with pytest.raises(
        SystemExit, match=r"lamella-60__default__d0.json was made with other settings .*epochs 1 -> 2"
    ):
        A.main(args)  # the job's record
    kept = record.read_text()
    record.unlink()
    with pytest.raises(
        SystemExit, match=r"lamella-60__default__d0 was made with other settings \(epochs 1 -> 2\)"
    ):
        A.main(args)  # the trained run itself
    record.write_text(kept)

    # a work folder of the older harness, which keyed None: checked against what its run used
    stored = json.loads(C.settings_file(run).read_text())
    C.write_settings(run, stored | {"epochs": None})
    old = json.loads(kept)
    old["settings"]["train"]["epochs"] = None
    record.write_text(json.dumps(old))
    with pytest.raises(SystemExit, match=r"epochs 1 -> 2"):
        A.main(args)
    _default_epochs(monkeypatch, 1)
    assert A.main(args) == 0  # the default it was trained with: reused
