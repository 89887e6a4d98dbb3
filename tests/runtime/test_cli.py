"""``cryoshift info`` on the command line: a table for good input, one error line and exit 2 for bad."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cryoshift.runtime.cli import main
from cryoshift.runtime.mrc import write_volume


def test_info_prints_a_table(tomo: tuple[Path, np.ndarray], capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = tomo
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "voxel size (A)" in out and "20 x 24 x 28" in out and "float32" in out


@pytest.mark.parametrize("case", ["truncated", "2d", "nan", "empty_dir", "no_coords", "unknown"])
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if case == "truncated":
        path = write_volume(tmp_path / "t.mrc", np.zeros((16, 16, 16), np.float32))
        path.write_bytes(path.read_bytes()[:2048])
        reason = "file is truncated: header says 16x16x16 float32 = 16384 bytes of data, file has 1024"
    elif case == "2d":
        import mrcfile

        path = tmp_path / "img.mrc"
        with mrcfile.new(path) as mrc:
            mrc.set_data(np.zeros((8, 8), np.float32))
        assert main(["info", str(path)]) == 0  # info describes it ...
        assert "2-D image" in capsys.readouterr().out
        from cryoshift.runtime import read_volume

        with pytest.raises(ValueError, match="2-D image"):  # ... but it is no volume
            read_volume(path)
        return
    elif case == "nan":
        data = np.zeros((4, 4, 4), np.float32)
        data[0, 0, 0] = np.nan
        path = write_volume(tmp_path / "nan.mrc", data)
        assert main(["info", str(path)]) == 0
        assert "non-finite voxels" in capsys.readouterr().out
        return
    elif case == "empty_dir":
        path = tmp_path / "empty"
        path.mkdir()
        reason = "empty directory"
    elif case == "no_coords":
        path = tmp_path / "p.star"
        path.write_text("data_particles\n\nloop_\n_rlnAngleRot #1\n1.0\n")
        reason = (
            "no coordinate columns: need rlnCoordinateX/Y/Z or rlnCenteredCoordinateX/Y/ZAngst; "
            "found rlnAngleRot"
        )
    else:
        path = tmp_path / "a.bin"
        path.write_text("x")
        reason = "unknown file type '.bin'"
    assert main(["info", str(path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"cryoshift: error: {path}: {reason}")


def test_several_paths_report_bad_ones_and_go_on(
    tomo: tuple[Path, np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = tomo
    assert main(["info", str(tmp_path / "missing.mrc"), str(path)]) == 2
    captured = capsys.readouterr()
    assert "missing.mrc: no such file" in captured.err and "20 x 24 x 28" in captured.out


def test_classify_no_progress_hides_the_progress_not_the_summary(
    model_path: Path, helpers, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """classify had only -q (which also hides the summary); --no-progress is the option train,
    export and demo have for logs and CI."""
    folder = tmp_path / "subs"
    folder.mkdir()
    for i, v in enumerate(helpers.make_volumes(3)):
        write_volume(folder / f"v{i}.mrc", v, voxel_size=helpers.VOXEL)
    args = ["classify", str(model_path), str(folder), "-b", "cpu"]
    assert main([*args, "-o", str(tmp_path / "shown")]) == 0
    shown = capsys.readouterr()
    # what it hides, on stderr (stdout holds only the summary: a closed pipe there lost rows)
    assert "classifying" in shown.err and "cryoshift: backend" in shown.err
    assert "classifying" not in shown.out
    assert main([*args, "-o", str(tmp_path / "hidden"), "--no-progress"]) == 0
    hidden = capsys.readouterr()
    assert "classifying" not in hidden.out and hidden.err == ""
    assert "classified 3 subtomograms, 0 errors" in hidden.out  # the summary stays


def test_every_verb_with_progress_shares_one_no_progress_option() -> None:
    import inspect

    from cryoshift.runtime.commands import _options, classify, demo, export, train

    for verb in (classify, train, export, demo):
        assert inspect.signature(verb.command).parameters["no_progress"].default is _options.NO_PROGRESS, verb
