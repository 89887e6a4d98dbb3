"""info flags an un-rotated (XZY) tomogram; merge runs from a deleted current directory given
absolute paths; report leaves matplotlib's backend and rcParams as it found them."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from cryoshift.runtime import classify, describe
from cryoshift.runtime.cli import main
from cryoshift.runtime.errors import InputError
from cryoshift.runtime.merge import merge_shards
from cryoshift.runtime.mrc import write_volume
from cryoshift.runtime.results import read_results

# ------------------------------------------------------------------ info: an XZY tomogram


def test_info_says_a_tomogram_looks_unrotated_and_how_to_rotate_it(tmp_path: Path, capsys) -> None:
    """88x48x72 (X, Y, Z) is IMOD's tilt output before trimvol -rx: classify refuses its picks,
    info described it as an ordinary volume. Said in one row, not refused; a rotated one is not."""
    rng = np.random.default_rng(0)
    xzy = write_volume(tmp_path / "xzy.mrc", rng.normal(size=(72, 48, 88)).astype(np.float32), voxel_size=10)
    rotated = write_volume(
        tmp_path / "rot.mrc", rng.normal(size=(48, 72, 88)).astype(np.float32), voxel_size=10
    )
    rows = dict(describe(xzy).rows)
    assert "XZY" in rows["axes"] and "trimvol -rx" in rows["axes"] and "\n" not in rows["axes"]
    assert "axes" not in dict(describe(rotated).rows)
    assert main(["info", str(xzy)]) == 0  # info describes: no refusal
    assert "trimvol" in capsys.readouterr().out
    assert main(["info", "--validate", str(xzy)]) == 0


# ------------------------------------------------------------------ merge: deleted current directory


def _absolute_shards(model_path, inputs, tmp_path: Path, ran_in: Path) -> Path:
    """Two shards of a RELION picks table classified with absolute paths, run from ``ran_in``."""
    ran_in.mkdir()
    here = os.getcwd()
    os.chdir(ran_in)
    try:
        for i in range(2):
            classify(
                model_path,
                [str(inputs["picks"])],
                tmp_path / "shards",
                tomograms=[str(inputs["tomos"])],
                backend="cpu",
                progress=False,
                shard=f"{i}/2",
            )
    finally:
        os.chdir(here)
    return tmp_path / "shards"


@pytest.mark.parametrize("keep_run_folder", [True, False])
def test_merge_from_a_deleted_current_directory_with_absolute_paths(
    model_path, inputs, tmp_path: Path, keep_run_folder: bool
) -> None:
    """contextlib.chdir saves the current directory by name: from a deleted one the re-read of
    the inputs failed (predictions.star lost the picks' columns) or, the shards' own folder gone
    too, merge stopped with FileNotFoundError."""
    import starfile

    shards = _absolute_shards(model_path, inputs, tmp_path, tmp_path / "ran")
    if not keep_run_folder:
        shutil.rmtree(tmp_path / "ran")
    here = os.getcwd()
    gone = tmp_path / "gone"
    gone.mkdir()
    os.chdir(gone)
    gone.rmdir()
    try:
        summary = merge_shards([shards], tmp_path / "merged")
        with pytest.raises(InputError, match="current directory no longer exists"):
            merge_shards([shards], "merged")  # a relative path names nothing there: one line
    finally:
        os.chdir(here)
    assert not any("not readable here" in note for note in summary.notes), summary.notes
    star = starfile.read(tmp_path / "merged" / "predictions.star")
    assert "rlnTomoName" in star and "rlnCoordinateX" in star and "csClassName" in star
    assert len(star) == len(read_results(tmp_path / "merged" / "predictions.csv")) > 0


# ------------------------------------------------------------------ report: matplotlib's state


def test_report_leaves_the_backend_and_rcparams_as_they_were(tmp_path: Path, capsys) -> None:
    """A notebook's backend (here svg, not Agg) and its rcParams are untouched by report, whose
    figures are still drawn in its own style (class names as text, not TeX)."""
    import matplotlib
    import pandas as pd

    names = ["$\\foo$", "_bg"]
    (tmp_path / "r").mkdir()
    pd.DataFrame(
        {
            "id": ["a.mrc", "b.mrc", "c.mrc"],
            "class_name": [names[0], names[1], names[1]],
            "confidence": [0.9, 0.8, 0.7],
            "shift_score": [1.0, 1.2, 0.9],
            **{f"prob_{c}": [0.5, 0.5, 0.5] for c in names},
        }
    ).to_csv(tmp_path / "r" / "predictions.csv", index=False)
    old = matplotlib.get_backend()
    try:
        matplotlib.use("svg")
        with matplotlib.rc_context({"font.size": 17.0, "text.parse_math": True}):
            before = dict(matplotlib.rcParams)
            assert main(["report", str(tmp_path / "r")]) == 0, capsys.readouterr().err
            assert matplotlib.get_backend() == "svg"
            assert dict(matplotlib.rcParams) == before
    finally:
        matplotlib.use(old)
    page = (tmp_path / "r" / "report.html").read_text()
    assert len(re.findall(r'src="data:image/png;base64,[A-Za-z0-9+/=]+"', page)) == 3
