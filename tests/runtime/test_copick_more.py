"""More copick write-back and reading checks (reports/copick.md, second round): two jobs writing
one session at once, relative roots in the config, copick's logging on stdout, predictions of
segmentation (non-particle) objects. Real tiny copick projects; every test skips without copick.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cryoshift.runtime.cli import main

SHAPE = (24, 40, 40)  # Z, Y, X
SPACING = 10.0
RIBOSOMES = [(12.0, 12.0, 12.0), (28.0, 14.0, 10.0), (20.0, 20.0, 12.0)]


def _project(root: Path, segmentation: tuple[str, ...] = ()) -> Path:
    """One run TS_01 with a noise tomogram and alice's ribosome picks; objects named in
    ``segmentation`` are made ``is_particle: false``."""
    copick = pytest.importorskip("copick")
    from copick.models import PickableObject

    objects = [
        PickableObject(name=name, is_particle=name not in segmentation, label=i + 1, radius=60.0)
        for i, name in enumerate(["ribosome", "proteasome", "junk"])
    ]
    config = root / "config.json"
    copick.new_config(str(config), str(root / "overlay"), proj_name="t", pickable_objects=objects)
    run = copick.from_file(str(config)).new_run("TS_01")
    rng = np.random.default_rng(3)
    run.new_voxel_spacing(SPACING).new_tomogram("wbp").from_numpy(
        rng.normal(0, 1, SHAPE).astype(np.float32), levels=1
    )
    run.new_picks("ribosome", "1", user_id="alice").from_numpy(np.array(RIBOSOMES) * SPACING)
    return config


def _spec(config: Path) -> str:
    return f"copick:{config}?voxel_spacing=10&tomo_type=wbp&picks=ribosome"


def _csv(path: Path, config: Path, rows: list[tuple[str, tuple[float, float, float]]]) -> Path:
    """A predictions table as classify writes it (the columns write-back reads)."""
    tomo = f"copick:{config}#TS_01@10/wbp"
    classes = {"ribosome": 0, "proteasome": 1, "junk": 2}
    lines = ["id,path,x,y,z,class_index,class_name,confidence"]
    lines += [
        f"TS_01:{x:.1f},{y:.1f},{z:.1f},{tomo},{x},{y},{z},{classes[name]},{name},0.9"
        for name, (x, y, z) in rows
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _points(config: Path, session: str) -> dict[str, set[tuple[float, ...]]]:
    """object -> voxel positions of cryoshift's picks of ``session`` in TS_01, as copick reads them."""
    import copick

    run = copick.from_file(str(config)).get_run("TS_01")
    return {
        p.pickable_object_name: {tuple(q) for q in np.round(p.full_positions() / SPACING, 3).tolist()}
        for p in run.get_picks(user_id="cryoshift", session_id=session)
    }


def _child(script: str, *args: str, cwd: Path | None = None) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# ---------------------------------------------------------------------------------------------
# 1. two jobs writing one session at the same time


_WRITER = """
import sys, time
from pathlib import Path
from cryoshift.runtime.copick_io import write_predictions
csv, spec, go = sys.argv[1:4]
while not Path(go).exists():
    time.sleep(0.001)
write_predictions(Path(csv), [spec], "race")
"""


def test_two_jobs_writing_one_session_at_once_keep_both_jobs_points(tmp_path):
    """Write-back reads the session's pick file, keeps the other jobs' points and stores: two
    jobs doing that at once both read before either stored, and one job's points were lost."""
    copick = pytest.importorskip("copick")
    config = _project(tmp_path / "proj")
    run = copick.from_file(str(config)).get_run("TS_01")
    # an earlier job's many points make reading the file take a while: both writers read it together
    rng = np.random.default_rng(0)
    earlier = np.round(rng.uniform(0, 38, (20000, 3)), 1) * SPACING
    seed = run.new_picks("ribosome", "race", user_id="cryoshift")
    seed.from_numpy(earlier, scores=np.full(len(earlier), 0.5))
    seed.store()
    # the two jobs classified different particles (x 39.x: none of the earlier points)
    job_a = [("ribosome", (39.2, float(i), 1.0)) for i in range(30)]
    job_b = [("ribosome", (39.6, float(i), 2.0)) for i in range(30)]
    go = tmp_path / "go"
    writers = [
        _child(_WRITER, str(_csv(tmp_path / f"{n}.csv", config, job)), _spec(config), str(go))
        for n, job in (("a", job_a), ("b", job_b))
    ]
    time.sleep(1.0)  # both imported and waiting
    go.write_text("")
    for proc in writers:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    held = _points(config, "race")["ribosome"]
    assert {p for _, p in job_a} <= held, "job A's points were lost"
    assert {p for _, p in job_b} <= held, "job B's points were lost"
    assert len(held) == len({tuple(p) for p in (earlier / SPACING).round(3).tolist()}) + 60


# ---------------------------------------------------------------------------------------------
# 2. a relative root in the config


def test_a_relative_root_is_refused_away_from_the_configs_folder(model_path, tmp_path, capsys, monkeypatch):
    """copick reads ``overlay_root: local://overlay`` from the current folder: run from another
    folder, cryoshift read (and wrote into) that folder's ``overlay`` without a word."""
    pytest.importorskip("copick")
    config = _project(tmp_path / "proj")
    data = json.loads(config.read_text())
    data["overlay_root"] = "local://overlay"  # meant: proj/overlay, next to the config
    config.write_text(json.dumps(data))
    shutil.copytree(tmp_path / "proj" / "overlay", tmp_path / "overlay")  # another project in the CWD
    argv = ["classify", str(model_path), f"copick:{config}", "--copick-voxel-spacing", "10"]
    argv += ["--copick-tomo-type", "wbp", "--copick-picks", "ribosome", "-b", "cpu", "-q"]
    argv += ["--unknown-threshold", "0"]

    monkeypatch.chdir(tmp_path)
    assert main([*argv, "-o", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "relative copick root (overlay_root local://overlay)" in err and "make it absolute" in err
    assert not list((tmp_path / "overlay").rglob("cryoshift_*.json"))  # the other project untouched

    # from the config's folder both readings are the same folder: read and written there
    monkeypatch.chdir(tmp_path / "proj")
    assert main([*argv, "-o", str(tmp_path / "b")]) == 0
    assert list((tmp_path / "proj" / "overlay").rglob("cryoshift_*.json"))
    assert not list((tmp_path / "overlay").rglob("cryoshift_*.json"))


# ---------------------------------------------------------------------------------------------
# 3. copick's logging on stdout


_CLASSIFY = """
import logging, sys
from cryoshift.runtime.cli import main
code = main(sys.argv[1:])
# what copick logs while cryoshift uses it (a pick file gone between listing and reading ...)
logging.getLogger("copick.impl.filesystem").critical("probe-copick-critical")
logging.getLogger("some.library").warning("probe-library-warning")
sys.exit(code)
"""


def test_copick_does_not_print_on_stdout(model_path, tmp_path):
    """Importing copick set the root logger to print every record (INFO and up) on stdout."""
    pytest.importorskip("copick")
    config = _project(tmp_path / "proj")
    argv = ["classify", str(model_path), f"copick:{config}", "--copick-voxel-spacing", "10"]
    argv += ["--copick-tomo-type", "wbp", "--copick-picks", "ribosome", "-b", "cpu", "-q"]
    argv += ["-o", str(tmp_path / "a")]
    proc = _child(_CLASSIFY, *argv)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert out == ""
    assert "probe-copick-critical" in err and "probe-library-warning" in err


# ---------------------------------------------------------------------------------------------
# 4. predictions of segmentation objects


def test_no_picks_under_objects_that_are_not_particles(tmp_path):
    """A ``junk`` class whose copick object is a segmentation object (``is_particle: false``) was
    written as a pick set like any particle."""
    pytest.importorskip("copick")
    from cryoshift.runtime.copick_io import write_predictions

    config = _project(tmp_path / "proj", segmentation=("junk",))
    rows = [("ribosome", (12.0, 12.0, 12.0)), ("junk", (28.0, 14.0, 10.0)), ("junk", (20.0, 20.0, 12.0))]
    notes = write_predictions(_csv(tmp_path / "p.csv", config, rows), [_spec(config)], "seg")
    assert _points(config, "seg") == {"ribosome": {(12.0, 12.0, 12.0)}}
    (refused,) = [n for n in notes if "junk" in n]
    assert "not particles (is_particle false)" in refused and "junk (2)" in refused
    assert notes[0].startswith("copick: 1 picks written")
