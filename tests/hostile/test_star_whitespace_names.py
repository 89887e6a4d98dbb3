"""Names holding whitespace other than a plain space are quoted in the STAR files cryoshift writes.

A tomogram ``TS\\xa001`` (or with \\v, \\f, \\x1c-\\x1f, \\x85, \\u2028, \\u3000: whatever
``str.split()`` splits on) was written bare, so every STAR reader split its row into one field
too many and ``cryoshift report out/predictions.star`` refused cryoshift's own file ("line 18 has
13 fields for 11 columns"). Each must read back as written, through starfile and cryoshift's reader.
\v and \f, which RELION's reader drops, no STAR value carries back as written (as \t \n \r):
write_results refuses such a table in one line, and classify leaves such rows out of
predictions.star, each named in a note (predictions.csv keeps them).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hostile_inputs import VOXEL, Capsys, run_cli

from cryoshift.runtime.mrc import write_volume
from cryoshift.runtime.results import read_predictions, read_results, write_results

# Every character str.split() splits on but a space (quoted before) and those no STAR value carries
# back as written (results.star_problem: \t \n \r \v \f)
SPLIT_ON = [chr(c) for c in range(0x110000) if chr(c).isspace() and chr(c) not in " \t\n\r\v\f"]
NAMES = [f"TS{ch}{k:02d}" for k, ch in enumerate(SPLIT_ON)]
LEFT_OUT = ["TS\v90", "TS\f91"]  # left out of predictions.star with a note


def test_whitespace_names_read_back_through_starfile_and_cryoshift(tmp_path: Path) -> None:
    starfile = pytest.importorskip("starfile")
    rows = pd.DataFrame(
        {
            "id": [f"{k:06d}@stack.mrcs" for k in range(len(NAMES))],
            "tomo_name": NAMES,
            "x": 1.0,
            "y": 2.0,
            "z": 3.0,
            "class_name": [f"ribo{ch}some" for ch in SPLIT_ON],
            "confidence": 0.5,
        }
    )
    write_results(rows, tmp_path / "p.csv", tmp_path / "p.star")
    for read in (read_results, read_predictions):  # read_predictions: the row check report and info use
        back = read(tmp_path / "p.star")
        assert list(back["tomo_name"]) == NAMES
        assert list(back["class_name"]) == list(rows["class_name"])
    assert list(read_results(tmp_path / "p.csv")["tomo_name"]) == NAMES
    assert list(starfile.read(tmp_path / "p.star")["rlnTomoName"]) == NAMES


@pytest.mark.parametrize("name", LEFT_OUT)
def test_vertical_tab_and_form_feed_names_are_refused_for_star(tmp_path: Path, name: str) -> None:
    """A \v or \f name: write_results refuses the STAR in one line naming the file and the item
    (RELION drops the character: another name), writes nothing; the CSV alone keeps the name."""
    from cryoshift.runtime.errors import InputError

    rows = pd.DataFrame({"id": ["000000@stack.mrcs"], "tomo_name": [name], "x": 1.0, "y": 2.0, "z": 3.0})
    with pytest.raises(InputError) as caught:
        write_results(rows, tmp_path / "p.csv", tmp_path / "p.star")
    assert "p.star" in str(caught.value) and "control character" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "p.star").exists()
    write_results(rows, tmp_path / "p.csv")
    assert list(read_results(tmp_path / "p.csv")["tomo_name"]) == [name]


def test_classify_output_with_such_tomogram_names_is_read_by_info(
    model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """End to end: tomograms named with odd whitespace, classified from a picks table; the
    predictions.star classify wrote is read by ``info`` (the check ``report`` makes) and starfile.
    The \v and \f tomograms' rows are left out of it, each named in a note; predictions.csv keeps
    every row."""
    starfile = pytest.importorskip("starfile")
    rng = np.random.default_rng(0)
    tomos = tmp_path / "tomos"
    tomos.mkdir()
    first = write_volume(
        tomos / f"{NAMES[0]}.mrc", rng.normal(0, 1, (32, 32, 32)).astype(np.float32), voxel_size=VOXEL
    )
    for name in NAMES[1:] + LEFT_OUT:
        shutil.copy(first, tomos / f"{name}.mrc")
    picks = tmp_path / "picks.csv"
    picks.write_text("tomo,x,y,z\n" + "".join(f"{n},16,16,16\n" for n in NAMES + LEFT_OUT), encoding="utf-8")
    out = tmp_path / "out"
    code, _, err = run_cli(["classify", model, picks, "-t", tomos, "-o", out, "-q", "-b", "cpu"], capsys)
    assert code == 0, err
    assert len(pd.read_csv(out / "errors.csv")) == 0
    assert sorted(read_results(out / "predictions.csv")["tomo_name"]) == sorted(NAMES + LEFT_OUT)
    notes = [line for line in err.splitlines() if "predictions.star: left out" in line]
    assert len(notes) == len(LEFT_OUT), err
    assert all(any(repr(name) in note for note in notes) for name in LEFT_OUT), err
    code, _, err = run_cli(["info", out / "predictions.star"], capsys)
    assert code == 0, err
    assert sorted(starfile.read(out / "predictions.star")["rlnTomoName"]) == sorted(NAMES)
