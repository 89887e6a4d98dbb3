"""copick findings of the facility test (reports/copick.md): write-back that replaced another job's
predictions (F1), ``train --target copick:...`` made into a local path (F2), session ids copick
renames (F3), and the messages for common mistakes (F5, F6, F8). Tests that need copick skip
without it; the path handling of F2 is pure cryoshift and always runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from cryoshift.runtime.cli import main

SHAPE = (24, 40, 40)  # Z, Y, X
SPACING = 10.0
RIBOSOMES = {"TS_01": [(12.0, 12.0, 12.0), (28.0, 14.0, 10.0)], "TS_02": [(20.0, 20.0, 12.0)]}
PROTEASOMES = {"TS_01": [(14.0, 28.0, 12.0), (28.0, 28.0, 14.0)], "TS_02": [(10.0, 30.0, 10.0)]}


def _project(root: Path) -> Path:
    """Two runs, alice's ribosome and proteasome picks; every class of the test model has an object."""
    copick = pytest.importorskip("copick")
    from copick.models import PickableObject

    objects = [
        PickableObject(name=name, is_particle=True, label=i + 1, radius=60.0)
        for i, name in enumerate(["ribosome", "proteasome", "junk"])
    ]
    config = root / "config.json"
    copick.new_config(str(config), str(root / "overlay"), proj_name="t", pickable_objects=objects)
    project = copick.from_file(str(config))
    rng = np.random.default_rng(3)
    for name in RIBOSOMES:
        run = project.new_run(name)
        run.new_voxel_spacing(SPACING).new_tomogram("wbp").from_numpy(
            rng.normal(0, 1, SHAPE).astype(np.float32), levels=1
        )
        for obj, picks in (("ribosome", RIBOSOMES), ("proteasome", PROTEASOMES)):
            run.new_picks(obj, "1", user_id="alice").from_numpy(np.array(picks[name]) * SPACING)
    return config


def _classify(model: Path, config: Path, out: Path, *extra: str) -> list[str]:
    argv = ["classify", str(model), f"copick:{config}", "--copick-voxel-spacing", "10"]
    argv += ["--copick-tomo-type", "wbp", "-o", str(out), "-b", "cpu", "-q", "--unknown-threshold", "0"]
    return argv + list(extra)


def _predictions(config: Path) -> dict[tuple[str, str, str], set[tuple[float, ...]]]:
    """(run, object, session) -> the voxel positions of cryoshift's picks, as copick reads them."""
    import copick

    project = copick.from_file(str(config))
    found = {}
    for run in project.runs:
        for picks in run.get_picks(user_id="cryoshift"):
            pos = np.round(picks.full_positions() / SPACING, 3)
            found[(run.name, picks.pickable_object_name, picks.session_id)] = {tuple(p) for p in pos.tolist()}
    return found


def _all(picks: dict[str, list[tuple[float, float, float]]]) -> set[tuple[str, tuple[float, ...]]]:
    return {(run, p) for run, points in picks.items() for p in points}


def _held(found: dict, session: str) -> set[tuple[str, tuple[float, ...]]]:
    return {(run, p) for (run, _, s), points in found.items() if s == session for p in points}


# ---------------------------------------------------------------------------------------------
# F1: a job over other picks kept nothing of the session's earlier predictions


@pytest.mark.parametrize("session", [[], ["--copick-session", "split"]], ids=["default", "explicit"])
def test_a_job_over_other_picks_keeps_the_sessions_earlier_predictions(model_path, tmp_path, capsys, session):
    """Job 1 classified alice's ribosomes, job 2 (same model, so same session) her proteasomes:
    job 2 emptied job 1's sets in every run it touched, saying only "N picks written"."""
    pytest.importorskip("copick")
    config = _project(tmp_path / "proj")
    assert (
        main(_classify(model_path, config, tmp_path / "a", "--copick-picks", "ribosome:alice", *session)) == 0
    )
    first = _predictions(config)
    (name,) = {s for _, _, s in first}
    assert _held(first, name) == _all(RIBOSOMES)
    capsys.readouterr()

    assert (
        main(_classify(model_path, config, tmp_path / "b", "--copick-picks", "proteasome:alice", *session))
        == 0
    )
    assert "replacing" not in capsys.readouterr().err  # nothing of job 1's was at job 2's picks
    both = _predictions(config)
    assert _held(both, name) == _all(RIBOSOMES) | _all(PROTEASOMES)
    assert sum(len(p) for p in both.values()) == len(_all(RIBOSOMES) | _all(PROTEASOMES))  # no duplicate

    # Rerunning job 1 replaces exactly its own predictions: same points, no duplicates, job 2's kept.
    assert (
        main(_classify(model_path, config, tmp_path / "c", "--copick-picks", "ribosome:alice", *session)) == 0
    )
    assert f"replacing {len(_all(RIBOSOMES))} earlier predictions" in capsys.readouterr().err
    assert _predictions(config) == both


def test_written_picks_claim_no_orientation(model_path, tmp_path):
    """F4: identity transforms were stored with copick's default trust_orientation true."""
    copick = pytest.importorskip("copick")
    config = _project(tmp_path / "proj")
    assert main(_classify(model_path, config, tmp_path / "a", "--copick-picks", "ribosome")) == 0
    sets = [p for run in copick.from_file(str(config)).runs for p in run.get_picks(user_id="cryoshift")]
    for picks in sets:
        picks.refresh()  # copick reads a set's file lazily: its trust_orientation is a default before
    assert sets and not any(p.trust_orientation for p in sets)


# ---------------------------------------------------------------------------------------------
# F2: train --target copick:... was recorded as CWD/copick:... ("matches no files")


def test_a_copick_spec_is_recorded_as_a_spec_not_a_path(tmp_path, monkeypatch):
    """``_absolute`` took the query's ``?`` for a glob and made the whole spec a local path."""
    from cryoshift.training.run import _absolute, absolute_data_paths

    monkeypatch.chdir(tmp_path)
    query = "voxel_spacing=10&tomo_type=wbp&picks=ribosome:alice:1"
    spec = f"copick:/data/project.json?{query}"
    assert _absolute(spec) == spec
    assert _absolute(f"copick:proj/config.json?{query}") == f"copick:{tmp_path}/proj/config.json?{query}"
    config = SimpleNamespace(source="builtin", target=spec, tomograms=[])
    assert "target" not in absolute_data_paths(config)


def test_train_reads_a_copick_target_from_the_command_line(tmp_path, monkeypatch):
    """README's ``cryoshift train --target copick:project.json --copick-...`` always failed."""
    pytest.importorskip("torch")
    pytest.importorskip("copick")
    from cryoshift.runtime.dataset import write_dataset

    config = _project(tmp_path / "proj")
    rng = np.random.default_rng(0)
    source = write_dataset(
        tmp_path / "source",
        rng.normal(0, 1, (24, 16, 16, 16)).astype(np.float32),
        np.arange(24) % 3,
        ["ribosome", "proteasome", "junk"],
        voxel_size=SPACING,
        contrast="dark",
    )
    monkeypatch.chdir(tmp_path)  # a relative config: recorded absolute inside the spec
    argv = ["train", "--source", str(source), "--target", "copick:proj/config.json"]
    argv += ["--copick-voxel-spacing", "10", "--copick-tomo-type", "wbp", "--copick-picks", "ribosome:alice"]
    argv += ["--epochs", "1", "--batch-size", "8", "--device", "cpu", "--threads", "1", "--no-progress"]
    assert main([*argv, "--out", "run"]) == 0
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["target"]
    assert recorded.startswith(f"copick:{config}?") and "picks=ribosome:alice" in recorded


# ---------------------------------------------------------------------------------------------
# F3: --copick-session my_session was stored as my-session, the note named my_session


def test_a_session_copick_renames_is_named_as_stored(model_path, tmp_path, capsys, recwarn):
    pytest.importorskip("copick")
    config = _project(tmp_path / "proj")
    argv = _classify(
        model_path, config, tmp_path / "a", "--copick-picks", "ribosome", "--copick-session", "my_session"
    )
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "session my-session (copick's spelling of 'my_session')" in err
    # copick's UserWarning ("has been sanitized") printed a stray source line on stderr
    assert not [w for w in recwarn if "sanitized" in str(w.message)]
    assert {s for _, _, s in _predictions(config)} == {"my-session"}
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert json.dumps(manifest).count('"my-session"') >= 1 and '"my_session"' not in json.dumps(manifest)
    # the id as typed finds them again
    argv = _classify(model_path, config, tmp_path / "b", "--copick-picks", "*:cryoshift:my_session")
    assert main(argv) == 0
    assert (tmp_path / "b" / "predictions.csv").read_text().count("\n") == 1 + len(_all(RIBOSOMES))


# ---------------------------------------------------------------------------------------------
# F5, F6, F8: messages


def _error(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    return err


def test_missing_picks_say_what_the_project_has(model_path, tmp_path, capsys):
    pytest.importorskip("copick")
    config = _project(tmp_path / "proj")
    err = _error(_classify(model_path, config, tmp_path / "a", "--copick-picks", "nosuch"), capsys)
    assert "object nosuch not in the config (has: junk, proteasome, ribosome)" in err
    err = _error(_classify(model_path, config, tmp_path / "b", "--copick-picks", "ribosome:carol"), capsys)
    assert "in 2 runs (pick sets there: proteasome:alice:1, ribosome:alice:1)" in err


def test_a_config_that_is_not_copicks_is_one_short_line(model_path, tmp_path, capsys):
    pytest.importorskip("copick")
    config = tmp_path / "c.json"
    config.write_text('{"name": "x"}')
    err = _error(_classify(model_path, config, tmp_path / "a", "--copick-picks", "ribosome"), capsys)
    assert err.endswith("not a copick config: missing overlay_root, pickable_objects")


def test_a_relative_root_is_named(model_path, tmp_path, capsys, monkeypatch):
    pytest.importorskip("copick")
    config = _project(tmp_path / "proj")
    data = json.loads(config.read_text())
    data["overlay_root"] = "local://proj/overlay"  # right from tmp_path, nothing from elsewhere
    config.write_text(json.dumps(data))
    monkeypatch.chdir(tmp_path / "proj")
    err = _error(_classify(model_path, config, tmp_path / "a", "--copick-picks", "ribosome"), capsys)
    assert (
        "no runs (overlay_root local://proj/overlay): a relative root is read from the current folder" in err
    )


def test_a_failed_write_back_says_the_results_are_complete(model_path, tmp_path, capsys):
    """Only "OVERLAY: Not a directory" was said; that predictions.csv was complete and --resume
    writes the picks was left to guess."""
    pytest.importorskip("copick")
    config = _project(tmp_path / "proj")
    good = json.loads(config.read_text())
    blocker = tmp_path / "afile"
    blocker.write_text("")
    bad = dict(good, static_root=good["overlay_root"], overlay_root=f"local://{blocker}/overlay")
    config.write_text(json.dumps(bad))
    argv = _classify(model_path, config, tmp_path / "a", "--copick-picks", "ribosome")
    err = _error(argv, capsys)
    assert "could not write the predictions into the copick overlay_root" in err
    assert "predictions.csv is complete" in err and "--resume" in err
    assert (tmp_path / "a" / "predictions.csv").is_file()
    blocker.unlink()
    assert main([*argv, "--resume"]) == 0
    found = _predictions(config)
    (session,) = {s for _, _, s in found}
    assert _held(found, session) == _all(RIBOSOMES)


def test_info_says_it_does_not_read_copick_projects(tmp_path, capsys):
    """``info copick:config.json`` said "no such file or directory" of an existing config."""
    config = tmp_path / "config.json"
    config.write_text("{}")
    code = main(["info", f"copick:{config}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "info does not read copick projects" in err and len(err.splitlines()) == 1
