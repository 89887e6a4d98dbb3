"""The command line from a deleted working directory, a polarity warning that cannot be printed, and
the one reader of a ledger's ids (runtime/cli.py, runtime/polarity.py, runtime/ledger.py)."""

from __future__ import annotations

import csv
import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tiny_onnx import BOX, CLASSES, VOXEL

from cryoshift.runtime.cli import CWD_GONE, main
from cryoshift.runtime.ledger import Ledger, _ids_and_offsets, written_ids
from cryoshift.runtime.polarity import MIN_VOLUMES

CLI = Path(sys.executable).with_name("cryoshift")


def _from_deleted_cwd(tmp_path: Path, *argv: object) -> subprocess.CompletedProcess[str]:
    """Run the installed ``cryoshift`` with ``argv`` from a working directory deleted under it."""
    gone = tmp_path / "gone"
    gone.mkdir()
    script = f'cd "{gone}" && rmdir "{gone}" && exec "$0" "$@"'
    return subprocess.run(
        ["sh", "-c", script, str(CLI), *map(str, argv)], capture_output=True, text=True, timeout=300
    )


def _in_deleted_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gone = tmp_path / "gone_here"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()


# ---------------------------------------------------------------------------------------------
# 1: verbs that need no working directory run from a deleted one


def test_info_and_bench_with_absolute_paths_run_from_a_deleted_directory(
    model_path: Path, tmp_path: Path
) -> None:
    """Both were refused ("the current directory no longer exists") although they read and write
    only the absolute paths given."""
    done = _from_deleted_cwd(tmp_path, "info", model_path)
    assert done.returncode == 0, done.stderr
    assert "cryoshift: error" not in done.stderr and "fp32" in done.stdout

    figures = tmp_path / "bench.json"
    args = [
        "bench",
        model_path,
        "-b",
        "cpu",
        "--n",
        "4",
        "--repeats",
        "1",
        "--workers",
        "1",
        "--json",
        figures,
    ]
    done = subprocess.run(
        ["sh", "-c", f'd="{tmp_path}/g2" && mkdir "$d" && cd "$d" && rmdir "$d" && exec "$0" "$@"', str(CLI)]
        + [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(figures.read_text())  # the figures were written where told


def test_verbs_that_need_the_directory_are_still_refused(
    model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative path (info's input, bench's --json), or a verb not checked to run without the
    directory (classify, which records it as its inputs' folder), is refused in one line
    before anything is made; help and --version need no directory and are shown."""
    _in_deleted_cwd(tmp_path, monkeypatch)
    refused = [
        ["info", "model.onnx"],
        ["bench", str(model_path), "-b", "cpu", "--n", "4", "--json", "bench.json"],
        ["merge", str(tmp_path / "shards"), "-o", "merged"],
        ["classify", str(model_path), str(tmp_path / "vols"), "-o", str(tmp_path / "out")],
    ]
    for argv in refused:
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2 and err.strip() == f"cryoshift: error: {CWD_GONE}", (argv, err)
    assert not (tmp_path / "merged").exists() and not (tmp_path / "out").exists()

    assert main(["--version"]) == 0 and "cryoshift" in capsys.readouterr().out
    assert main(["info", "--help"]) == 0 and "Usage" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# 4: a polarity warning that cannot be printed does not stop the run


def _inverted(n: int, seed: int = 0) -> np.ndarray:
    """``n`` light blobs on noise: inverted data for the tiny model, which expects dark density."""
    rng = np.random.default_rng(seed)
    r2 = ((np.indices((BOX,) * 3) - (BOX - 1) / 2) ** 2).sum(0)
    blob = np.exp(-r2 / (2 * 2.5**2)).astype(np.float32)
    noise = rng.normal(0, 0.5, (n, BOX, BOX, BOX)).astype(np.float32)
    return blob * rng.uniform(0.5, 1.5, (n, 1, 1, 1)).astype(np.float32) + noise


@pytest.mark.parametrize("quiet", ["-q", "--no-progress"])
def test_polarity_warning_on_a_closed_stderr_pipe_keeps_the_run(
    model_path: Path, tmp_path: Path, quiet: str
) -> None:
    """``cryoshift classify ... 2>&1 | head`` whose reader is gone: the warning, printed after every
    row was written, raised BrokenPipeError, and the run stopped (exit 1) before manifest.json and
    predictions.star were written."""
    from cryoshift.runtime.dataset import write_dataset

    vols = _inverted(MIN_VOLUMES + 10)
    data = write_dataset(
        tmp_path / "inv",
        vols,
        labels=[i % 3 for i in range(len(vols))],
        class_names=CLASSES,
        voxel_size=VOXEL,
    )
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [str(CLI), "classify", str(model_path), str(data), "-o", str(out), "-b", "cpu", quiet],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    proc.stderr.close()  # the reader of stderr is gone before anything was written to it
    proc.communicate(timeout=300)
    assert proc.returncode == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert any("look light (inverted)" in note for note in manifest["summary"]["notes"])
    assert (out / "predictions.star").is_file()
    assert len(written_ids(out / "predictions.csv") or []) == len(vols)


# ---------------------------------------------------------------------------------------------
# 3: one reader of a ledger's ids


def test_ids_and_row_offsets_come_from_the_one_reader(tmp_path: Path) -> None:
    """A ledger with a name holding a line break (a quoted row over two lines), an empty line and a
    partial last line: the ids resume reads and the ids the sort reads are the same rows, and the
    sort puts each row, whole, in its place."""
    path = tmp_path / "predictions.csv"
    with Ledger(path, ["id", "score"]) as ledger:
        ledger.append([["b", 1], ["a\nz", 2]])
    with open(path, "a", newline="") as fh:
        fh.write("\n")  # an empty line (a hand edit): no row
    with Ledger(path, ["id", "score"], resume=True) as ledger:
        ledger.append([["c", 3]])
        assert ledger.sort_rows({"a\nz": 0, "b": 1, "c": 2}) is not None
    with open(path, newline="") as fh:
        assert [row for row in csv.reader(fh) if row] == [
            ["id", "score"],
            ["a\nz", "2"],
            ["b", "1"],
            ["c", "3"],
        ]

    with open(path, "a", newline="") as fh:
        fh.write("d,")  # a kill mid-write: a partial last line is no row
    ids, starts = _ids_and_offsets(path)
    assert ids == written_ids(path) == written_ids(path, strict=True) == ["a\nz", "b", "c"]
    data = path.read_bytes()
    rows = [
        next(csv.reader(data[a:b].decode().splitlines(keepends=True)))
        for a, b in itertools.pairwise(starts.tolist())
    ]
    assert [r[0] for r in rows] == ids


# ---------------------------------------------------------------------------------------------
# 2: the verb the resume advice is read for is the verb click runs


def test_resume_advice_reads_the_verb_click_runs() -> None:
    """The advice after Ctrl-C reads the verb as the first argument not starting with "-"; click
    agrees as long as no root option takes a value (``--log-level debug classify`` would read
    "debug"), which this guards. A ``--`` before the verb is skipped by both."""
    import typer

    from cryoshift.runtime.cli import app, interrupted_line
    from cryoshift.runtime.ledger import RESUME_HINT

    root = typer.main.get_command(app)
    assert all(getattr(p, "is_flag", False) for p in root.params), [p.name for p in root.params]
    assert interrupted_line(["--", "classify", "m.onnx", "x", "-o", "--resume"], False).endswith(RESUME_HINT)
    assert not interrupted_line(["--", "bench", "classify"], False).endswith(RESUME_HINT)
