"""A structure file of a source folder that cannot be loaded is recorded with its exact path and
reason, whatever its name holds: the skip was kept as one ``"PATH: REASON"`` string and split back
at the first ``": "`` after a structure file name, so ``x.mrc: copy.mrc`` was recorded as the file
``x.mrc`` with the reason ``copy.mrc: ...``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cryoshift.runtime.cli import main
from cryoshift.runtime.errors import InputError
from cryoshift.runtime.mrc import write_volume

VOXEL = 4.0
BAD_NAMES = ("bad: map.mrc", "x.mrc: copy.mrc")


def _blob(path: Path, stretch: tuple[float, float, float]) -> None:
    z, y, x = np.indices((24,) * 3) - 12.0
    a, b, c = stretch
    volume = np.exp(-((x / a) ** 2 + (y / b) ** 2 + ((z - 1) / c) ** 2) / 2.0).astype(np.float32)
    write_volume(path, volume, voxel_size=VOXEL)


def _folder(tmp_path: Path) -> tuple[Path, list[dict[str, str]]]:
    """Two good maps and two unreadable files with ``": "`` in their names, and the records the
    bad files must get (the reason: what loading the file alone says)."""
    from cryoshift.training.simulate.structures import load_structures

    folder = tmp_path / "structures"
    folder.mkdir()
    _blob(folder / "a.mrc", (1.5, 3.0, 2.0))
    _blob(folder / "b.mrc", (3.5, 1.2, 1.2))
    expected = []
    for name in BAD_NAMES:
        bad = folder / name
        bad.write_bytes(b"not an mrc file at all")
        with pytest.raises(InputError) as caught:
            load_structures([str(bad)], 16, VOXEL)
        assert caught.value.path == str(bad)
        expected.append({"file": str(bad), "reason": caught.value.reason})
    return folder, sorted(expected, key=lambda row: row["file"])


def test_train_records_the_exact_path_and_reason_of_a_skipped_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torch")
    folder, expected = _folder(tmp_path)
    out = tmp_path / "run"
    argv = ["train", "--source", str(folder), "--box", "16", "--voxel-size", str(VOXEL)]
    argv += ["--method", "source-only", "--backbone", "cryonet-small", "--test-views", "1"]
    argv += ["--epochs", "1", "--sim-per-epoch", "16", "--batch-size", "8", "--template-labels", "0"]
    argv += ["--no-spectrum-match", "--device", "cpu", "--threads", "1", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    record = json.loads((out / "selection.json").read_text())["source_structures"]
    assert [row["class"] for row in record["used"]] == ["a", "b"]
    assert sorted(record["skipped"], key=lambda row: row["file"]) == expected
    # the stderr line at the skip and train's closing line name each file in full
    for row in expected:
        assert f"cryoshift: skipped {row['file']}: {row['reason']}" in captured.err.splitlines()
    line = next(text for text in captured.out.splitlines() if text.startswith("source: "))
    assert line.startswith("source: 2 of 4 structures used; skipped: ")
    for row in expected:
        assert f"{Path(row['file']).name} ({row['reason']})" in line


def test_simulate_records_the_exact_path_and_reason_of_a_skipped_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torch")
    folder, expected = _folder(tmp_path)
    out = tmp_path / "sim"
    argv = ["simulate", str(out), "--structures", str(folder), "--n", "4", "--box", "16"]
    argv += ["--voxel-size", str(VOXEL), "--no-progress", "--threads", "1"]
    assert main(argv) == 0, capsys.readouterr().err
    info = json.loads((out / "dataset.json").read_text())
    assert info["class_names"] == ["a", "b"]
    assert sorted(info["structures_skipped"], key=lambda row: row["file"]) == expected
