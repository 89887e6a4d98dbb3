"""``classify`` into a log (stderr not a terminal: SLURM, ``2> log``) prints plain progress lines on
stderr, as ``train`` prints one line per epoch; rich drew only its last frame there, so a long run
said nothing until it ended. ``--no-progress`` and ``-q`` silence them. Never on stdout: a reader
of stdout that left (``| head``) once killed the writer thread through them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cryoshift.runtime.cli import main
from cryoshift.runtime.mrc import write_stack
from cryoshift.runtime.pipeline import Progress

LINE = re.compile(
    r"^classifying (\d+)/40 \(\d+%\) [\d,]+ subtomograms/s( ETA \d+:\d\d:\d\d)? elapsed \d+:\d\d:\d\d$"
)


@pytest.fixture
def stack(tmp_path: Path, helpers) -> Path:
    return write_stack(tmp_path / "s.mrcs", helpers.make_volumes(40), voxel_size=helpers.VOXEL)


def _classify(model: Path, stack: Path, out: Path, *extra: str) -> None:
    args = ["classify", str(model), str(stack), "-o", str(out), "--threads", "1", "--batch-size", "8"]
    assert main([*args, *extra]) == 0


def test_classify_into_a_log_prints_plain_lines_and_no_rich_frame(
    model_path: Path, stack: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _classify(model_path, stack, tmp_path / "r")
    out, err = capsys.readouterr()
    assert "classifying " not in out  # stdout holds the summary alone
    lines = [line for line in err.splitlines() if line.startswith("classifying ")]
    assert lines, err
    assert all(LINE.match(line) for line in lines), lines
    assert [int(LINE.match(line).group(1)) for line in lines][-1] == 40  # the last line says done
    assert "ETA" in lines[0]  # 5 batches of 8 are each over 10 %: a line each, the early ones with an ETA
    for text in (out, err):
        assert "\x1b" not in text and "\r" not in text and "━" not in text  # no rich frame


@pytest.mark.parametrize("flag", ["--no-progress", "-q"])
def test_no_progress_and_quiet_silence_the_lines(
    model_path: Path, stack: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str
) -> None:
    _classify(model_path, stack, tmp_path / "r", flag)
    out, err = capsys.readouterr()
    assert "classifying " not in out and "classifying " not in err


def test_lines_come_every_interval_or_fraction_and_once_at_the_end(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with Progress(1000, "classifying", plain=True, every_s=0.0, every_fraction=1.0) as bar:
        for _ in range(3):
            bar.advance(10)  # an interval of 0 s: a line each time
    assert capsys.readouterr().err.count("classifying ") == 3
    with Progress(1000, "classifying", plain=True, every_s=3600.0, every_fraction=0.25) as bar:
        for _ in range(10):
            bar.advance(100)  # a line at 25 %, 50 %, 75 %, 100 %; nothing from the clock
    err = capsys.readouterr().err
    assert [line.split()[1] for line in err.splitlines()] == ["300/1000", "600/1000", "900/1000", "1000/1000"]
    with Progress(1000, "classifying", plain=True, every_s=3600.0, every_fraction=1.0) as bar:
        bar.advance(10)  # nothing due: only the closing line
    assert capsys.readouterr().err.splitlines()[0].startswith("classifying 10/1000 (1%)")
    with Progress(1000, "classifying", enabled=False, plain=True, every_s=0.0) as bar:
        bar.advance(10)
    assert capsys.readouterr() == ("", "")
