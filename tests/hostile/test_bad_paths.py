"""Hostile paths through the real CLI: folders of non-MRC files, symlink loops, spaces, unicode and
newlines in names, an output folder that is a file, and what the user's terminal sees."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
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


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks")
def test_symlink_loop_is_named_a_loop_not_missing(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    """A loop of links was "no such file or directory" (info), "dangling symbolic link (points to
    loop.mrc, which does not exist)" (classify) or "no such model file": the name is there."""
    good = write_volume(tmp_path / "good.mrc", volumes(1)[0], voxel_size=VOXEL)
    loops = {}
    for name in ("loop.mrc", "loop.star", "loop.onnx"):
        loops[name] = tmp_path / name
        os.symlink(name, loops[name])
    out = tmp_path / "o"
    for argv, culprit in (
        (["info", loops["loop.mrc"]], loops["loop.mrc"]),
        (["info", loops["loop.star"]], loops["loop.star"]),
        (["classify", loops["loop.onnx"], good, "-o", out, "-q", "-b", "cpu"], loops["loop.onnx"]),
        (["classify", model, loops["loop.star"], "-o", out, "-q", "-b", "cpu"], loops["loop.star"]),
        (["report", loops["loop.mrc"]], loops["loop.mrc"]),
    ):
        line = assert_error(run_cli(argv, capsys), culprit)
        assert "symbolic link loop" in line, line
    code, _, err = run_cli(["classify", model, loops["loop.mrc"], good, "-o", out, "-q", "-b", "cpu"], capsys)
    assert code == 0, err
    (reason,) = errors_table(out)["reason"].tolist()
    assert reason.startswith("symbolic link loop (points to loop.mrc"), reason


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


# ---------------------------------------------------------------------------------------------
# recursive globs through directory links; folders and files that cannot be read


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks")
def test_recursive_glob_does_not_follow_directory_links(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    """``**`` followed a link to ``.``: the one file was classified 41 times; with a second link
    (``up.mrc`` -> ``../lp``) the walk was exponential and classify hung."""
    lp = tmp_path / "lp"
    lp.mkdir()
    write_volume(lp / "good.mrc", volumes(1)[0], voxel_size=VOXEL)
    os.symlink(".", lp / "self")
    os.symlink("../lp", lp / "up.mrc")
    out = tmp_path / "o"
    code, _, err = run_cli(["classify", model, f"{lp}/**/*.mrc", "-o", out, "-q", "-b", "cpu"], capsys)
    assert code == 0, err
    assert predictions(out)["path"].tolist() == [str(lp / "good.mrc")]
    assert errors_table(out)["id"].tolist() == [str(lp / "up.mrc")]  # a folder under an MRC name


def test_safe_glob_matches_glob_without_links(tmp_path: Path) -> None:
    """Without links, ``**`` expands as Python's glob does (hidden folders skipped, "dir/**")."""
    import glob

    from cryoshift.runtime.sources.paths import safe_glob

    for p in ("a/b/c/w.mrc", "a/y.mrc", "x.mrc", ".h/q.mrc", "a/b/t.txt", "d/.hid.mrc"):
        (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / p).write_text("")
    for pattern in ("**/*.mrc", "**", "*/**/*.mrc", "**/b/*", "**/**/*.mrc", "a/**/c/*.mrc", "**/"):
        full = f"{tmp_path}/{pattern}"
        assert sorted(set(safe_glob(full))) == sorted(set(glob.glob(full, recursive=True))), pattern


def _unprivileged() -> list[str] | None:
    """A command prefix under which permissions hold (root: drop the capabilities that bypass
    them with setpriv), or None where that is impossible."""
    if os.geteuid() != 0:
        return []
    import shutil

    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    probe = subprocess.run([setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--", "true"])
    return (
        [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--"] if probe.returncode == 0 else None
    )


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_unreadable_inputs_are_error_rows(model: Path, tmp_path: Path) -> None:
    """A file in a folder that cannot be entered, a folder that cannot be listed, an unreadable
    file: each was an abort of the whole run (rc 2, nothing classified), one under a misleading
    name (``sub/dataset.json``); ``info --validate`` stopped at the first."""
    prefix = _unprivileged()
    if prefix is None:
        pytest.skip("root without setpriv: permissions cannot be made to hold")
    np_ = tmp_path / "np"
    (np_ / "sub").mkdir(parents=True)
    for p in ("a.mrc", "sub/c.mrc", "b.mrc"):
        write_volume(np_ / p, volumes(1)[0], voxel_size=VOXEL)
    os.chmod(np_ / "sub", 0)
    os.chmod(np_ / "b.mrc", 0)
    cli = [*prefix, sys.executable, "-m", "cryoshift.runtime.cli"]
    try:
        out = tmp_path / "o"
        argv = [str(np_ / "a.mrc"), str(np_ / "sub/c.mrc"), str(np_ / "sub"), str(np_ / "b.mrc")]
        proc = subprocess.run(
            [*cli, "classify", str(model), *argv, "-o", str(out), "-q", "-b", "cpu"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        assert predictions(out)["path"].tolist() == [str(np_ / "a.mrc")]
        reasons = dict(zip(errors_table(out)["id"], errors_table(out)["reason"], strict=True))
        assert reasons == {
            str(np_ / "sub/c.mrc"): f"permission denied (cannot enter folder {np_ / 'sub'})",
            str(np_ / "sub"): "permission denied (cannot list the folder)",
            str(np_ / "b.mrc"): "permission denied (cannot read the file)",
        }, reasons
        proc = subprocess.run(
            [*cli, "info", "--validate", str(np_ / "sub/c.mrc"), str(np_ / "b.mrc"), str(np_ / "a.mrc")],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 1, proc.stderr
        assert proc.stdout.splitlines() == [
            f"{np_ / 'sub/c.mrc'}: permission denied (cannot enter folder {np_ / 'sub'})",
            f"{np_ / 'b.mrc'}: permission denied (cannot read the file)",
            f"{np_ / 'a.mrc'}: ok",
        ], proc.stdout
    finally:
        os.chmod(np_ / "sub", 0o755)
        os.chmod(np_ / "b.mrc", 0o644)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_unreadable_tomogram_folder_fails_only_its_picks(model: Path, tmp_path: Path) -> None:
    """An unreadable -t folder aborted the run; now picks found elsewhere are classified, the
    others fail naming the folder, and a note says it was not read."""
    prefix = _unprivileged()
    if prefix is None:
        pytest.skip("root without setpriv: permissions cannot be made to hold")
    t = np.random.default_rng(8).normal(0, 1, (24, 40, 32)).astype(np.float32)
    for p in ("a/good.mrc", "c/other.mrc"):
        (tmp_path / p).parent.mkdir(exist_ok=True)
        write_volume(tmp_path / p, t, voxel_size=VOXEL)
    picks = tmp_path / "p.csv"
    picks.write_text("tomo,x,y,z\ngood,16,20,12\nother,16,20,12\n")
    os.chmod(tmp_path / "c", 0)
    try:
        out = tmp_path / "o"
        proc = subprocess.run(
            [
                *prefix,
                sys.executable,
                "-m",
                "cryoshift.runtime.cli",
                "classify",
                str(model),
                str(picks),
                "-t",
                str(tmp_path / "a"),
                "-t",
                str(tmp_path / "c"),
                "-o",
                str(out),
                "-b",
                "cpu",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        assert predictions(out)["tomo_name"].tolist() == ["good"]
        (reason,) = errors_table(out)["reason"].tolist()
        assert "no tomogram matches name 'other'" in reason and f"it may be in {tmp_path / 'c'}" in reason
        assert "--tomograms folder not read" in proc.stdout + proc.stderr
    finally:
        os.chmod(tmp_path / "c", 0o755)
