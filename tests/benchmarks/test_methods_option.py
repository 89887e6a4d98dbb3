"""The benchmarks' ``--methods`` take any registered method, an installed plugin's too, and refuse
the others naming every known one."""

from __future__ import annotations

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


def test_unknown_methods_are_refused_with_every_known_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert A.unknown_methods(("template_matching", "selftrain", "default", "oracle")) is None
    refusal = A.unknown_methods(("dann", "nope"))
    assert refusal is not None and refusal.startswith("unknown method(s) nope; known: template_matching, ")
    assert "selftrain" in refusal  # registered, not in BASELINES: trained like the baselines
    with pytest.raises(SystemExit) as exit_info:
        A.main(["--methods", "nope", "--work", str(tmp_path)])
    assert exit_info.value.code == 2 and "unknown method(s) nope; known:" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before any job
    assert D.unknown_methods(["selftrain", "dann"]) is None
    with pytest.raises(SystemExit) as exit_info:
        D.main(["--methods", "dann", "nope", "--work", str(tmp_path / "ds")])
    assert exit_info.value.code == 2 and "unknown method(s) nope; known: adabn," in capsys.readouterr().err


def test_a_plugin_method_is_taken_by_both_benchmarks(tmp_path: Path) -> None:
    site = tmp_path / "site"
    info = site / "cs_bench_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cs-bench-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[cryoshift.methods]\nbench-demo = cs_bench_plugin:Demo\n")
    (site / "cs_bench_plugin.py").write_text(
        "from cryoshift.training.adapt import AdaptationMethod\n\n\n"
        "class Demo(AdaptationMethod):\n    name = 'bench-demo'\n"
    )
    code = (
        "import accuracy as A, domain_shift as D\n"
        "print(A.unknown_methods(('bench-demo', 'dann')), D.unknown_methods(['bench-demo']))\n"
        "print(A.unknown_methods(('nope',)))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(BENCHMARKS)]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    taken, refused = done.stdout.splitlines()
    assert taken == "None None"
    assert refused.startswith("unknown method(s) nope; known: template_matching, ")
    assert refused.endswith(", default, bench-demo, selftrain")  # registered methods after the table's
