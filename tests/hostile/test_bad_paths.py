"""Hostile paths through the real CLI: folders of non-MRC files, symlink loops, spaces, unicode and
newlines in names, an output folder that is a file, and what the user's terminal sees."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hostile_inputs import VOXEL, Capsys, assert_error, errors_table, predictions, raw_mrc, run_cli, volumes

from cryoshift.runtime.mrc import write_volume

# ---------------------------------------------------------------------------------------------
# paths: directories, symlink loops, spaces, unicode and newlines


def test_directory_of_non_mrc_files(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    d = tmp_path / "junk"
    d.mkdir()
    (d / "a.txt").write_text("hello")
    (d / "b.png").write_bytes(b"\x89PNG")
    assert_error(run_cli(["classify", model, d, "-o", tmp_path / "o", "-q", "-b", "cpu"], capsys), d)
    code, _, err = run_cli(["info", d], capsys)
    assert "Traceback" not in err and code == 2, err


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks")
def test_symlink_loop(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    loop = tmp_path / "loop.mrc"
    os.symlink(loop, loop)
    assert_error(run_cli(["info", loop], capsys), loop)
    code, _, err = run_cli(["classify", model, loop, "-o", tmp_path / "o", "-q", "-b", "cpu"], capsys)
    assert "Traceback" not in err
    if code == 0:
        assert len(errors_table(tmp_path / "o")) == 1
    else:
        assert_error((code, "", err), loop)
    d = tmp_path / "dirloop"
    d.mkdir()
    os.symlink(d / "x.mrc", d / "x.mrc")
    write_volume(d / "y.mrc", volumes(1)[0], voxel_size=VOXEL)
    code, _, err = run_cli(["classify", model, d, "-o", tmp_path / "o2", "-q", "-b", "cpu"], capsys)
    assert code == 0 and "Traceback" not in err, err
    assert len(predictions(tmp_path / "o2")) == 1


def test_spaces_and_unicode_in_paths(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    d = tmp_path / "données été" / "sub tomos ✓"
    d.mkdir(parents=True)
    good = write_volume(d / "ribosome n°1 ü.mrc", volumes(1)[0], voxel_size=VOXEL)
    code, _, err = run_cli(["info", good], capsys)
    assert code == 0, err
    out = tmp_path / "résultats ä"
    code, _, err = run_cli(["classify", model, good, "-o", out, "-q", "-b", "cpu"], capsys)
    assert code == 0, err
    assert len(predictions(out)) == 1
    bad = d / "cassé ✗.mrc"
    bad.write_bytes(b"nope")
    assert_error(run_cli(["info", bad], capsys), bad)


def test_newline_in_file_name_stays_one_line(tmp_path: Path, capsys: Capsys) -> None:
    bad = tmp_path / "two\nlines.mrc"
    bad.write_bytes(b"nope")
    code, _, err = run_cli(["info", bad], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "two\\nlines.mrc" in err


def test_output_folder_that_is_a_file(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    vol = write_volume(tmp_path / "v.mrc", volumes(1)[0], voxel_size=VOXEL)
    blocker = tmp_path / "results"
    blocker.write_text("I am a file")
    assert_error(run_cli(["classify", model, vol, "-o", blocker, "-q", "-b", "cpu"], capsys), blocker)
    ds_blocker = tmp_path / "sim"
    ds_blocker.write_text("I am a file")
    code, _, err = run_cli(["info", tmp_path / "sim" / "dataset.json"], capsys)
    assert "Traceback" not in err and code == 2, err


# ---------------------------------------------------------------------------------------------
# a real subprocess: what the user's terminal sees


def test_subprocess_one_line_error(tmp_path: Path) -> None:
    bad = raw_mrc(tmp_path / "huge dims ✗.mrc", nx=2**31 - 1, ny=2**31 - 1, nz=2**31 - 1, data=b"")
    proc = subprocess.run(
        [sys.executable, "-m", "cryoshift.runtime.cli", "info", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "Traceback" not in proc.stderr
