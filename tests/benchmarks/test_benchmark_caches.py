"""The benchmarks' --work caches are reused only under the settings that made them, and a subset run
does not silently replace a results file (--out, --merge, --replace).

Each test runs the real scripts on tiny data in tmp folders (``--work`` and ``--out`` both), so the
published ``benchmarks/results`` are never written."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

pytest.importorskip("torch")

import accuracy as A  # noqa: E402
import domain_shift as D  # noqa: E402

TARGETS = ("lamella-60", "low-dose-45")

# Box 16 at 20 A, a handful of volumes, template matching with 4 rotations: seconds per job.
TINY = A.Profile(
    "tinytest",
    draws=1,
    n_adapt=6,
    n_test=6,
    box=16,
    voxel_size=20.0,
    baseline_epochs=1,
    baseline_sim_per_epoch=16,
    baseline_backbone="cryonet-small",
    tm_rotations=4,
    tm_max_shift=1,
    threads=1,
    methods=("template_matching",),
    targets=TARGETS,
)


def published() -> dict[str, float]:
    return {p.name: p.stat().st_mtime for p in A.RESULTS.iterdir()}


def use(monkeypatch: pytest.MonkeyPatch, profile: A.Profile) -> None:
    monkeypatch.setitem(A.PROFILES, profile.name, profile)


def test_accuracy_cache_refuses_other_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = published()
    work, out = tmp_path / "W", tmp_path / "out"
    use(monkeypatch, TINY)
    assert A.main(["--profile", "tinytest", "--work", str(work), "--out", str(out)]) == 0
    assert (out / "accuracy_tinytest.md").is_file()
    rec = json.loads(A.record_path(work, "lamella-60", "template_matching", 0).read_text())
    assert rec["settings"]["tm_rotations"] == 4

    # another budget on the same --work: the cached record is refused, naming what differs
    use(monkeypatch, dataclasses.replace(TINY, tm_rotations=8))
    with pytest.raises(SystemExit) as refused:
        A.main(["--profile", "tinytest", "--work", str(work), "--out", str(out), "--collect"])
    msg = str(refused.value.code)
    assert "lamella-60__template_matching__d0.json was made with other settings" in msg
    assert "tm_rotations 4 -> 8" in msg and "its own --work" in msg

    # another data size: the cached target data are refused too (scoring reads them)
    use(monkeypatch, dataclasses.replace(TINY, n_test=5))
    with pytest.raises(SystemExit, match=r"lamella-60__d0 was made with other settings \(n_test 6 -> 5\)"):
        A.build_target(A.PROFILES["tinytest"], "lamella-60", 0, work)

    # an item of an older harness (no settings recorded): reused with a one-line note
    A.settings_file(work / "data" / "lamella-60__d0").unlink()
    A.build_target(A.PROFILES["tinytest"], "lamella-60", 0, work)
    assert "lamella-60__d0 was made before cached items recorded their settings" in capsys.readouterr().err
    assert published() == before


def test_accuracy_trained_run_refused_when_method_default_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A method's default edited after its run was cached (a plugin's new version, a cryoshift
    upgrade) must not re-print the old run's numbers."""
    from cryoshift.training.adapt.base import AdaptationMethod

    work = tmp_path / "W"
    profile = dataclasses.replace(TINY, methods=("source-only",), targets=("lamella-60",))
    use(monkeypatch, profile)
    args = ["--profile", "tinytest", "--work", str(work), "--out", str(tmp_path / "out")]
    assert A.main(args) == 0
    run = work / "runs" / "all__source-only__d0"
    assert json.loads(A.settings_file(run).read_text())["method_hparams"]["label_smoothing"] == 0.0

    monkeypatch.setitem(AdaptationMethod.HPARAMS, "label_smoothing", 0.2)
    with pytest.raises(SystemExit, match=r"label_smoothing 0.0 -> 0.2"):
        A.main(args)  # the job's record
    A.record_path(work, "*", "source-only", 0).unlink()
    with pytest.raises(
        SystemExit, match=r"all__source-only__d0 was made with other settings .*label_smoothing"
    ):
        A.main(args)  # the trained run itself


def test_plugin_origin_is_part_of_the_settings(tmp_path: Path) -> None:
    site = tmp_path / "site"
    info = site / "cs_cache_plugin-0.2.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cs-cache-plugin\nVersion: 0.2\n")
    (info / "entry_points.txt").write_text("[cryoshift.methods]\ncache-demo = cs_cache_plugin:Demo\n")
    (site / "cs_cache_plugin.py").write_text(
        "from cryoshift.training.adapt import AdaptationMethod\n\n\n"
        "class Demo(AdaptationMethod):\n    name = 'cache-demo'\n    HPARAMS = {'w': 0.5}\n"
    )
    code = "import accuracy as A, json\nprint(json.dumps(A.method_settings('cache-demo', {})))\n"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(BENCHMARKS)]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    settings = json.loads(done.stdout.splitlines()[-1])
    assert settings["method_origin"] == "distribution cs-cache-plugin 0.2"
    assert settings["method_hparams"]["w"] == 0.5
    older = settings | {"method_origin": "distribution cs-cache-plugin 0.1"}
    with pytest.raises(SystemExit, match=r"method_origin 'distribution cs-cache-plugin 0.1' -> '.*0.2'"):
        A.check_cached(tmp_path / "run", settings, older)


def test_accuracy_subset_does_not_replace_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = published()
    work, out = tmp_path / "W", tmp_path / "out"
    use(monkeypatch, TINY)
    base = ["--profile", "tinytest", "--work", str(work), "--out", str(out)]
    assert A.main(base) == 0
    table = (out / "accuracy_tinytest.md").read_text()
    assert "lamella-60" in table and "low-dose-45" in table
    with pytest.raises(SystemExit) as refused:
        A.main([*base, "--targets", "lamella-60"])
    err = capsys.readouterr().err
    assert refused.value.code == 2 and "holds 1 (target, method, draw) cell(s) that this run lacks" in err
    assert "low-dose-45/template_matching/0" in err and "--merge" in err and "--replace" in err
    assert (out / "accuracy_tinytest.md").read_text() == table
    assert A.main([*base, "--targets", "lamella-60", "--merge"]) == 0
    assert "low-dose-45" in (out / "accuracy_tinytest.md").read_text()
    assert A.main([*base, "--targets", "lamella-60", "--replace"]) == 0
    assert "low-dose-45" not in (out / "accuracy_tinytest.md").read_text()
    # --merge keeps rows scored under the same settings only
    use(monkeypatch, dataclasses.replace(TINY, tm_rotations=8))
    other = [
        "--profile",
        "tinytest",
        "--work",
        str(tmp_path / "W2"),
        "--out",
        str(out),
        "--targets",
        "lamella-60",
    ]
    with pytest.raises(SystemExit, match=r"--merge: .*accuracy_tinytest.json was scored with other settings"):
        A.main([*other, "--merge"])
    assert published() == before


def test_accuracy_empty_method_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        A.main(["--methods", "nope,,", "--work", str(tmp_path / "W")])
    assert refused.value.code == 2 and "unknown method(s) nope; known:" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:
        A.main(["--methods", ",", "--work", str(tmp_path / "W")])
    assert refused.value.code == 2 and "names no method" in capsys.readouterr().err


def test_domain_shift_cache_and_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = published()
    work, out = tmp_path / "DS", tmp_path / "out"
    tiny = D.PROFILES["tiny"]
    monkeypatch.setitem(D.PROFILES, "tiny", dataclasses.replace(tiny, threads=1))
    args = ["--profile", "tiny", "--work", str(work), "--out", str(out), "--no-plots", "--targets", "crowded"]
    # a results file holding a cell this run lacks: refused before any work
    (out).mkdir()
    (out / "domain_shift_tiny.json").write_text(
        json.dumps({"runs": [{"target": "crowded", "method": "dann", "seed": 0}]})
    )
    with pytest.raises(SystemExit) as refused:
        D.main([*args, "--methods", "source-only"])
    err = capsys.readouterr().err
    assert refused.value.code == 2 and "crowded/dann/0" in err and "--replace" in err
    assert not work.exists()
    assert D.main([*args, "--methods", "source-only", "--replace"]) == 0
    assert json.loads((out / "domain_shift_tiny.json").read_text())["runs"][0]["method"] == "source-only"

    # another batch size (not among the settings checked before): the cached run is refused
    monkeypatch.setitem(D.PROFILES, "tiny", dataclasses.replace(tiny, threads=1, batch_size=8))
    with pytest.raises(
        SystemExit, match=r"crowded__source-only__s0.json was made with other settings \(batch_size"
    ):
        D.main([*args, "--methods", "source-only"])
    # other data sizes: the simulated data are refused
    monkeypatch.setitem(D.PROFILES, "tiny", dataclasses.replace(tiny, threads=1, n_target=32))
    with pytest.raises(SystemExit, match=r"data was made with other settings \(n_target 64 -> 32\)"):
        D.main([*args, "--methods", "source-only"])
    assert published() == before
