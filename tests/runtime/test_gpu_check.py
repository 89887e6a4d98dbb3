"""benchmarks/gpu_check.py runs on a CPU machine: CPU rows measured, every GPU row skipped with a reason."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


def test_gpu_check_quick_on_cpu(model_path, tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--model", str(model_path), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    rows = result["rows"]
    assert not [r for r in rows if r["status"] == "failed"]
    measured = {r["name"] for r in rows if r["status"] == "measured"}
    assert "ORT CPU, fp16 transfer" in measured
    assert any(
        r["kind"] == "e2e-stack" and r["status"] == "measured" and r["ratio_to_engine_only"] > 0
        for r in rows
        if r.get("backend") == "cpu"
    )
    assert any(r.get("kind") == "e2e-tomogram" and r["status"] == "measured" for r in rows)
    if result["environment"]["gpu"] is None:
        gpu_rows = [r for r in rows if r["status"] == "skipped"]
        assert len(gpu_rows) >= 20 and all(r["reason"] for r in gpu_rows)
        sections = {r["section"] for r in gpu_rows}
        assert {"parity", "throughput", "training", "devices"} <= sections
    assert "| row | status | figures |" in (tmp_path / "gpu_check.md").read_text()
