"""The accuracy screens train what the benchmark trains, and the ensemble screen averages
probabilities, not votes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import accuracy as A
from ensemble_screen import softmax

pytest.importorskip("torch")


def test_default_config_is_what_train_runs_with_only_the_four_options(tmp_path: Path) -> None:
    """A screen's baseline must be the benchmark's default row: every field but the paths, seed and
    threads equals default_settings(), which is TrainConfig's own defaults."""
    profile = A.PROFILES["cpu"]
    cfg = A.default_config(profile, tmp_path / "run", tmp_path / "adapt", 9, 1).to_dict()
    settings = A.default_settings()
    differing = {k for k, v in settings.items() if cfg[k] != v}
    # epochs: None in TrainConfig, resolved for this machine in settings; seed: the draw's here
    assert differing <= {"epochs", "seed"}
    assert cfg["seed"] == 9 and cfg["threads"] == 1 and cfg["target"] == str(tmp_path / "adapt")
    assert (cfg["box"], cfg["voxel_size"]) == (profile.box, profile.voxel_size)


def test_default_config_applies_overrides_and_refuses_unknown_fields(tmp_path: Path) -> None:
    cfg = A.default_config(A.PROFILES["cpu"], tmp_path / "r", tmp_path / "a", 1, None, epochs=3, lr=5e-4)
    assert (cfg.seed, cfg.epochs, cfg.lr) == (1, 3, 5e-4)
    with pytest.raises(TypeError):
        A.default_config(A.PROFILES["cpu"], tmp_path / "r", tmp_path / "a", 0, None, no_such_field=1)


def test_ensemble_averages_probabilities() -> None:
    """Two members that each get one of two volumes right with confidence and the other wrong
    barely: the mean of probabilities gets both right, a majority of votes could not."""
    a = np.log(np.array([[0.9, 0.1], [0.55, 0.45]]))
    b = np.log(np.array([[0.45, 0.55], [0.1, 0.9]]))
    truth = np.array([0, 1])
    assert (softmax(a).argmax(1) == truth).sum() == 1 and (softmax(b).argmax(1) == truth).sum() == 1
    assert np.allclose(softmax(a).sum(1), 1.0)
    mean = (softmax(a) + softmax(b)) / 2
    assert (mean.argmax(1) == truth).all()


def test_held_out_structures_train_and_match_their_own_maps(tmp_path: Path) -> None:
    """holdout-structures has six other complexes: its default and oracle runs get those maps as
    --source, its data keys them, and source-only (one run per draw on the benchmark's six classes)
    is refused for it rather than scored against the wrong classes."""
    profile = A.PROFILES["cpu"]
    own = A.target_sim.classes_of("holdout-structures")
    assert set(own.values()).isdisjoint(A.target_sim.CLASSES.values()) and len(own) == 6
    for method in ("default", "oracle"):
        cfg = A.train_config(profile, method, 0, tmp_path / "a", tmp_path / "r", "holdout-structures")
        assert [Path(p).stem for p in cfg.source.split(",")] == list(own.values())
    assert A.train_config(profile, "default", 0, tmp_path / "a", tmp_path / "r").source == A.maps_source()
    assert A.data_settings(profile, "holdout-structures", 0)["classes"] == own
    assert "classes" not in A.data_settings(profile, "lamella-60", 0)  # older caches keep their keys
    with pytest.raises(SystemExit):
        A.main(
            ["--targets", "holdout-structures", "--methods", "source-only,default", "--work", str(tmp_path)]
        )
