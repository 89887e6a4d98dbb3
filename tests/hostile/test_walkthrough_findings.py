"""Findings of a user walkthrough, through the real CLI on small real data: in batch work a bad item
is an error row and the rest goes on; nothing is dropped without a word, nothing silently wrong.

- a named pipe in a folder input (or a ``--tomograms`` folder) was dropped without a word, though
  named on its own it is an error row;
- ``evaluate MODEL particles.star -t ...`` wrote its report to ``model_eval_particles.star/``;
- the error rows of picks whose coordinates could not be converted (a damaged tomograms.star row)
  were ``TS_02:nan,nan,nan``, ``~2``, ``~3``: ids that say nothing of the pick;
- ``train --source DATASET --target T`` skipped spectrum matching and template-matching labels
  without a word, while config.json recorded them as on.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hostile_inputs import (
    VOXEL,
    Capsys,
    errors_table,
    predictions,
    run_cli,
    train_argv,
    unblocked_fifos,
    volumes,
)
from relion5_project import write_project
from tiny_onnx import linear_model

from cryoshift.runtime.dataset import write_dataset
from cryoshift.runtime.mrc import write_volume

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")


def _classify(model: Path, *inputs: object, out: Path) -> list[object]:
    return ["classify", model, *inputs, "-o", out, "-q", "-b", "cpu"]


# ---------------------------------------------------------------------------------------------
# 1. non-regular files in a folder input


@needs_fifo
@pytest.mark.parametrize("pipe_name", ["a_pipe.mrc", "z_pipe.mrc"])  # planned first, and later
def test_a_named_pipe_in_a_folder_is_an_error_row(
    model: Path, tmp_path: Path, capsys: Capsys, pipe_name: str
) -> None:
    """A FIFO under an MRC name in a folder input was dropped: no error row, no note (named on its
    own it is an error row). Now it is an error row saying what it is, the good files are
    classified, and a FIFO without an MRC name is counted in a note."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i, v in enumerate(volumes(2)):
        write_volume(folder / f"good_{i}.mrc", v, voxel_size=VOXEL)
    pipe, other = folder / pipe_name, folder / "notes"
    os.mkfifo(pipe)
    os.mkfifo(other)
    out = tmp_path / "out"
    with unblocked_fifos(pipe, other):
        code, _, err = run_cli(_classify(model, folder, out=out), capsys)
    assert code == 0, err
    assert len(predictions(out)) == 2
    errs = errors_table(out)
    assert errs["id"].tolist() == [str(pipe)], errs
    assert "named pipe (FIFO), not a regular file" in errs["reason"].iloc[0], errs
    notes = json.loads((out / "manifest.json").read_text())["summary"]["notes"]
    said = [n for n in notes if "notes" in n and "not a regular file" in n]
    assert len(said) == 1 and said[0].startswith(f"{folder}: skipped 1 entry"), notes
    assert said[0] in err  # said on stderr too, not only in the manifest


@needs_fifo
def test_a_folder_of_only_a_named_pipe_says_what_it_is(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    """A folder whose one MRC entry is a FIFO was "folder holds no MRC files"; now the pipe is named."""
    folder = tmp_path / "in"
    folder.mkdir()
    pipe = folder / "only.mrc"
    os.mkfifo(pipe)
    with unblocked_fifos(pipe):
        code, _, err = run_cli(_classify(model, folder, out=tmp_path / "out"), capsys)
    assert code == 2, err
    assert f"{pipe}: is a named pipe (FIFO)" in err, err


@needs_fifo
def test_a_named_pipe_in_a_tomograms_folder_fails_its_picks_saying_so(
    model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """A FIFO TS_02.mrc in a --tomograms folder was dropped, so TS_02's picks failed as "no tomogram
    matches name 'TS_02'", a search for a file that is there; now they say what it is."""
    tomos = tmp_path / "tomos"
    tomos.mkdir()
    data = np.random.default_rng(0).normal(0, 1, (24, 48, 40)).astype(np.float32)
    write_volume(tomos / "TS_01.mrc", data, voxel_size=VOXEL)
    pipe = tomos / "TS_02.mrc"
    os.mkfifo(pipe)
    picks = tmp_path / "picks.csv"
    table = {"tomo": ["TS_01", "TS_02"], "x": [20.0, 20.0], "y": [24.0, 24.0], "z": [12.0, 12.0]}
    pd.DataFrame(table).to_csv(picks, index=False)
    out = tmp_path / "out"
    with unblocked_fifos(pipe):
        code, _, err = run_cli(_classify(model, picks, "-t", tomos, out=out), capsys)
    assert code == 0, err
    assert predictions(out)["id"].tolist() == ["TS_01:20.0,24.0,12.0"]
    (reason,) = errors_table(out)["reason"].tolist()
    assert reason.startswith(f"tomogram {pipe}: is a named pipe (FIFO)"), reason


# ---------------------------------------------------------------------------------------------
# 2. evaluate's default report folder


def test_evaluate_names_its_default_folder_by_the_tables_stem(
    model: Path, dataset: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """Labelled picks particles.star without --out went to model_eval_particles.star/ (a folder
    named like a STAR file); now model_eval_particles/. A dataset folder keeps its whole name."""
    pytest.importorskip("matplotlib")  # evaluate's report plot
    here = tmp_path / "models"
    here.mkdir()
    onnx = Path(shutil.copy(model, here / "model.onnx"))
    tomos = tmp_path / "tomos"
    tomos.mkdir()
    data = np.random.default_rng(1).normal(0, 1, (32, 48, 48)).astype(np.float32)
    write_volume(tomos / "TS_01.mrc", data, voxel_size=VOXEL)
    picks = tmp_path / "particles.star"
    rows = "\n".join(
        f"TS_01 {x:.1f} {x:.1f} 16.0 {name}"
        for x, name in ((16.0, "ribosome"), (22.0, "junk"), (28.0, "proteasome"), (34.0, "ribosome"))
    )
    labels = ["rlnTomoName", "rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ", "class"]
    head = "".join(f"_{label} #{i}\n" for i, label in enumerate(labels, 1))
    picks.write_text(f"\ndata_particles\n\nloop_\n{head}{rows}\n")
    code, _, err = run_cli(["evaluate", onnx, picks, "-t", tomos], capsys)
    assert code == 0, err
    assert (here / "model_eval_particles" / "evaluation.json").is_file()
    assert not (here / "model_eval_particles.star").exists()

    named = dataset.rename(tmp_path / "exp.v2")  # a dataset folder: its name, dots and all
    code, _, err = run_cli(["evaluate", onnx, named], capsys)
    assert code == 0, err
    assert (here / "model_eval_exp.v2" / "evaluation.json").is_file()


# ---------------------------------------------------------------------------------------------
# 3. ids of picks without coordinates

SHAPE = (24, 48, 40)  # Z, Y, X voxels of each reconstruction
PICKS = {  # voxels (x, y, z) of the 10 A reconstructions
    "TS_01": [(20.0, 24.0, 12.0), (12.0, 30.0, 10.0)],
    "TS_02": [(18.0, 20.0, 12.0), (28.0, 40.0, 11.0), (10.0, 10.0, 13.0)],
}


def test_picks_of_a_damaged_tomogram_row_are_named_by_their_line(tmp_path: Path, capsys: Capsys) -> None:
    """TS_02's tomograms.star row has a negative pixel size, so its centred picks cannot be
    converted: their error rows were TS_02:nan,nan,nan, ~2, ~3, and a row whose X is not a number
    TS_01:nan,24.1,12.2. Now each is named by its line in particles.star; the good picks keep
    their ids, and --resume finds every row done (nothing failed twice)."""
    model = linear_model(tmp_path / "linear.onnx")
    tomograms, particles = write_project(
        tmp_path / "relion", PICKS, SHAPE, 10.0, fields={"TS_02": {"rlnTomoTiltSeriesPixelSize": "-2.5"}}
    )
    particles.write_text(particles.read_text().rstrip("\n") + "\nTS_01 abc 1.0 2.0\n")
    lines = particles.read_text().splitlines()
    line_of = [i + 1 for i, text in enumerate(lines) if text.startswith(("TS_02", "TS_01 abc"))]
    out = tmp_path / "out"
    argv = _classify(model, particles, "-t", tomograms, out=out)
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    errs = errors_table(out)
    assert errs["id"].tolist() == [f"TS_02:line {n}" for n in line_of[:3]] + [f"TS_01:line {line_of[3]}"]
    assert all("nan" not in ident for ident in errs["id"])
    assert predictions(out)["id"].tolist() == ["TS_01:20.0,24.0,12.0", "TS_01:12.0,30.0,10.0"]

    code, _, err = run_cli([*argv, "--resume"], capsys)
    assert code == 0, err
    assert len(errors_table(out)) == 4 and len(predictions(out)) == 2


# ---------------------------------------------------------------------------------------------
# 4. train with a dataset source: what does not apply, said and recorded


def _dataset_source(tmp_path: Path) -> Path:
    return write_dataset(
        tmp_path / "source",
        volumes(12),
        labels=[0, 1] * 6,
        class_names=["ribosome", "proteasome"],
        voxel_size=VOXEL,
    )


def test_dataset_source_settings_name_what_does_not_apply(tmp_path: Path) -> None:
    """The settings a dataset source cannot use (they need the maps of a simulated source), at the
    values that say what runs, and one note naming those that were on; nothing for a simulated
    source, and no note without a target (nothing would run for any source)."""
    pytest.importorskip("torch")
    from cryoshift.training.data import dataset_source_settings
    from cryoshift.training.trainer import TrainConfig

    source = _dataset_source(tmp_path)
    config = TrainConfig(source=str(source), out=str(tmp_path / "run"), target=str(tmp_path / "t"))
    changes, note = dataset_source_settings(config)
    assert changes == {"spectrum_match": False, "template_labels": 0}
    assert note is not None and note.startswith(f"--source {source} is a dataset: ")
    assert "spectrum matching (--spectrum-match) and template-matching labels (--template-labels 600)" in note
    assert "do not apply" in note and "config.json records them off" in note

    asked = TrainConfig(
        source=str(source),
        out="r",
        target="t",
        spectrum_match=False,
        tilt_match=True,
        snr_match=True,
        template_rule="agree",
    )
    changes, note = dataset_source_settings(asked)
    assert changes == {
        "tilt_match": False,
        "snr_match": False,
        "template_labels": 0,
        "template_rule": "margin",
    }
    assert note is not None and "spectrum matching" not in note and "SNR matching (--snr-match)" in note
    TrainConfig(**{**asked.to_dict(), **changes}).check()  # what config.json records is a valid config

    assert dataset_source_settings(TrainConfig(source=str(source), out="r"))[1] is None  # no target
    off = TrainConfig(source=str(source), out="r", target="t", spectrum_match=False, template_labels=0)
    assert dataset_source_settings(off) == ({}, None)
    assert dataset_source_settings(TrainConfig(source="builtin:ribosome", out="r", target="t")) == ({}, None)


def test_train_with_a_dataset_source_says_and_records_what_does_not_apply(
    tmp_path: Path, capsys: Capsys
) -> None:
    """train --source DATASET --target T skipped spectrum matching and template-matching labels
    without a word, and config.json recorded spectrum_match true, template_labels 600."""
    pytest.importorskip("torch")
    source = _dataset_source(tmp_path)
    target = tmp_path / "target"
    target.mkdir()
    for i, v in enumerate(volumes(6, seed=3)):
        write_volume(target / f"t_{i}.mrc", v, voxel_size=VOXEL)
    out = tmp_path / "run"
    code, _, err = run_cli(train_argv(source, out, "--target", target), capsys)
    assert code == 0, err
    said = [line for line in err.splitlines() if "is a dataset:" in line]
    assert len(said) == 1 and said[0].startswith("cryoshift: note: --source "), err
    config = json.loads((out / "config.json").read_text())
    assert config["spectrum_match"] is False and config["template_labels"] == 0
