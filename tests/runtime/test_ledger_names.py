"""File names holding line breaks (Linux allows ``\\r`` and ``\\n`` in them) go through classify,
its ledgers and ``--resume`` whole; and a line cryoshift cannot print (stderr a pipe whose reader
is gone) never stops a run."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cryoshift.runtime.cli import main
from cryoshift.runtime.ledger import RunLedgers, written_ids
from cryoshift.runtime.mrc import write_volume
from cryoshift.runtime.sources import Item
from cryoshift.runtime.summary import output_names

# plan order (sorted names): the odd names first, two plain ones after them
GOOD = ["a\rb.mrc", "c\nd.mrc", "e\r\nf.mrc", "g\r.mrc", "z_1.mrc", "z_2.mrc"]
BAD = "bad\rname.mrc"  # not an MRC: an error row


def _folder(tmp_path: Path, helpers) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    vols = helpers.make_volumes(len(GOOD), helpers.BOX, 3)
    for name, vol in zip(GOOD, vols, strict=True):
        write_volume(folder / name, vol, voxel_size=helpers.VOXEL)
    (folder / BAD).write_bytes(b"\x00" * 2000)
    return folder


def _rows(path: Path) -> list[list[str]]:
    """The data rows of a CSV as the csv module reads a file (newline="": universal line ends)."""
    with open(path, newline="", encoding="utf-8") as fh:
        return [row for row in csv.reader(fh)][1:]


def _classify(model: Path, folder: Path, out: Path, *more: str) -> int:
    return main(["classify", str(model), str(folder), "-o", str(out), "-b", "cpu", "-q", *more])


def test_names_holding_line_breaks_are_classified_whole(model_path, helpers, tmp_path, capsys):
    """A bare ``\\r`` in a name was written unquoted (Python 3.11's csv writer quotes only its line
    terminator's characters), and the run ended after its last batch with an IndexError traceback
    in the row count; each row now holds its whole name, in every CSV the run writes. No STAR
    value carries a line break back as written, so predictions.star leaves those rows out, each
    named in a note (it wrote them as escapes, the names of no file)."""
    folder = _folder(tmp_path, helpers)
    out = tmp_path / "out"
    assert _classify(model_path, folder, out) == 0
    err = capsys.readouterr().err
    rows = _rows(out / "predictions.csv")
    assert [r[0] for r in rows] == [str(folder / n) for n in GOOD]
    with open(out / "predictions.csv", newline="", encoding="utf-8") as fh:
        assert {len(r) for r in rows} == {len(next(csv.reader(fh)))}  # every row whole
    assert [r[0] for r in _rows(out / "errors.csv")] == [str(folder / BAD)]
    summary = json.loads((out / "manifest.json").read_text())["summary"]
    assert (summary["total_rows"], summary["total_errors"]) == (len(GOOD), 1)
    assert sum(summary["class_counts"].values()) == len(GOOD)
    assert written_ids(out / "predictions.csv", strict=True) == [str(folder / n) for n in GOOD]
    # the STAR file holds the plain names only, one line each; each line-break name is in a note
    star = (out / "predictions.star").read_text().splitlines()
    assert [line.split("\t")[0] for line in star if line.startswith(str(folder))] == [
        str(folder / n) for n in ("z_1.mrc", "z_2.mrc")
    ]
    notes = [line for line in err.splitlines() if "predictions.star: left out" in line]
    assert len(notes) == 4, err
    for name, note in zip(GOOD[:4], notes, strict=True):
        assert repr(str(folder / name)) in note and "predictions.csv" in note


@pytest.mark.parametrize("cut", ["inside_quoted_name", "mid_line_after_cr_name"])
def test_a_run_killed_by_such_a_name_resumes_to_the_same_table(model_path, helpers, tmp_path, cut):
    """A kill mid-row can leave the file ending just after the line break inside a quoted name:
    that line was taken for a whole row, and ``--resume`` refused the cut name as an id the inputs
    do not plan. The partial row is now cut, and the resumed run writes the uninterrupted table."""
    folder = _folder(tmp_path, helpers)
    out = tmp_path / "out"
    assert _classify(model_path, folder, out) == 0
    table = out / "predictions.csv"
    whole = table.read_bytes()
    if cut == "inside_quoted_name":  # "…/c\n  then the kill
        at = whole.index(b"/c\nd.mrc") + len(b"/c\n")
    else:  # half of the row after the \r-named ones
        at = whole.index(f"\n{folder}/z_1.mrc".encode()) + 1 + 12
    table.write_bytes(whole[:at])
    assert _classify(model_path, folder, out, "--resume") == 0
    assert [r[0] for r in _rows(table)] == [str(folder / n) for n in GOOD]
    before, after = _rows_of(whole), _rows(table)
    assert [r[:12] for r in after] == [r[:12] for r in before]  # ids, paths, classes, flags
    np.testing.assert_allclose(
        np.array([r[12:] for r in after], float), np.array([r[12:] for r in before], float), rtol=1e-6
    )
    summary = json.loads((out / "manifest.json").read_text())["summary"]
    assert (summary["total_rows"], summary["total_errors"]) == (len(GOOD), 1)


def _rows_of(data: bytes) -> list[list[str]]:
    return [row for row in csv.reader(io.StringIO(data.decode("utf-8"), newline=""))][1:]


def test_ledgers_keep_and_resume_ids_with_line_breaks(tmp_path):
    """The ledger alone: ids with ``\\r``, ``\\n`` and ``\\r\\n`` are read back as written, a row cut
    after the line break inside its quoted id is no row, and a resume skips exactly the rows kept."""
    names = output_names(tmp_path, None)
    ids = ["a\rb", "c\nd", "e\r\nf", "plain"]
    with RunLedgers(names, ["id", "v"]) as ledgers:
        ledgers.append([[i, n] for n, i in enumerate(ids)], [["x\ry", "x\ry", "unreadable"]])
    assert written_ids(names["csv"], strict=True) == ids
    assert written_ids(names["errors"], strict=True) == ["x\ry"]
    whole = names["csv"].read_bytes()
    names["csv"].write_bytes(whole[: whole.index(b"e\r\n") + 3])  # killed inside "e\r\nf"
    assert written_ids(names["csv"]) == ids[:2]
    items = [Item(i, "file", i) for i in ids]
    with RunLedgers(names, ["id", "v"], resume=True) as ledgers:
        assert [it.id for it in ledgers.todo(items)] == ["e\r\nf", "plain"]
        ledgers.append([["e\r\nf", 2], ["plain", 3]], [])
    assert names["csv"].read_bytes() == whole


# ---- a line that cannot be printed ------------------------------------------------------------

_CLOSED_PIPE = """
import os, subprocess, sys
r, w = os.pipe()
os.close(r)  # the reader is gone before the first line: every write to the pipe fails
p = subprocess.run(sys.argv[1:], stderr=w, stdout=subprocess.PIPE)
os.close(w)
sys.stdout.write(p.stdout.decode("utf-8", "replace"))
sys.exit(p.returncode)
"""


def _with_closed_stderr(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` with its stderr a pipe whose reader has gone (``cmd 2>&1 | head -1`` after the
    first line); its stdout is captured."""
    env = {**os.environ, "PYTHONUNBUFFERED": "0"}
    return subprocess.run(
        [sys.executable, "-c", _CLOSED_PIPE, *argv], capture_output=True, text=True, env=env, timeout=300
    )


def test_say_drops_a_line_it_cannot_print_and_the_program_goes_on(tmp_path):
    """The one guarded writer (terminal.say): a line to a gone reader is dropped, later lines and
    the flush at exit fail no more, and the program writes its files and exits 0."""
    done = tmp_path / "done.txt"
    script = textwrap.dedent(
        f"""
        import sys
        from cryoshift.runtime.terminal import say
        assert say("note: first") is False
        say("note: second \\x1b]0;x")  # to the null device now
        print("partial", end="", file=sys.stderr)  # left in the buffer for the flush at exit
        assert say("summary line", err=False) is True
        open({str(done)!r}, "w").write("ok")
        """
    )
    result = _with_closed_stderr(sys.executable, "-c", script)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "summary line\n"
    assert done.read_text() == "ok"


@pytest.mark.parametrize("quiet", [False, True])
def test_classify_with_a_closed_stderr_writes_its_results(model_path, helpers, tmp_path, quiet):
    """``cryoshift classify ... 2>&1 | head -1``: the backend line (progress on) stopped the run
    before its first row, the error count (``-q``) after its rows with exit 1; the results and the
    manifest matter more than a line, so both are written and the exit is 0."""
    folder = _folder(tmp_path, helpers)
    out = tmp_path / "out"
    cli = [sys.executable, "-m", "cryoshift.runtime.cli", "classify", str(model_path), str(folder)]
    result = _with_closed_stderr(*cli, "-o", str(out), "-b", "cpu", *(["-q"] if quiet else []))
    assert result.returncode == 0, result.stdout
    assert json.loads((out / "manifest.json").read_text())["summary"]["total_rows"] == len(GOOD)
    assert len(_rows(out / "predictions.csv")) == len(GOOD)
