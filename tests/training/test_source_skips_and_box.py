"""A ``train --source`` folder's skipped structure files are recorded and said; RCSB assembly files
(``.pdb1``, ``.pdb2.gz`` ...) are read as PDB; a box the backbone cannot take is refused before any
data is read (``train``) or noted as untrainable (``simulate``)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import mrcfile
import numpy as np
import pytest
from tiny_protein import pdb_text

from cryoshift.runtime.cli import main
from cryoshift.runtime.mrc import write_volume

VOXEL = 4.0


def _blob(path: Path, stretch: tuple[float, float, float]) -> Path:
    z, y, x = np.indices((24,) * 3) - 12.0
    a, b, c = stretch
    volume = np.exp(-((x / a) ** 2 + (y / b) ** 2 + ((z - 1) / c) ** 2) / 2.0).astype(np.float32)
    return write_volume(path, volume, voxel_size=VOXEL)


def _structure_folder(folder: Path) -> Path:
    """Three readable structures (two maps and an RCSB assembly file) and a map of voxel size 0."""
    folder.mkdir()
    _blob(folder / "a.mrc", (1.5, 3.0, 2.0))
    _blob(folder / "b.mrc", (3.5, 1.2, 1.2))
    (folder / "t.pdb1").write_text(pdb_text())
    bad = _blob(folder / "g.mrc", (2.0, 2.0, 3.0))
    with mrcfile.mmap(bad, "r+") as m:
        m.header.cella.x = 0.0  # "voxel size missing (cell 0)": skipped inside a folder
    return folder


def test_a_skipped_structure_file_is_recorded_in_the_run_and_said_at_the_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """g.mrc dropped out of the run with one stderr line among the notes: the model had three
    classes, and neither selection.json nor train's summary said a fourth file was given."""
    pytest.importorskip("torch")
    source = _structure_folder(tmp_path / "structures")
    out = tmp_path / "run"
    argv = ["train", "--source", str(source), "--box", "16", "--voxel-size", str(VOXEL)]
    argv += ["--method", "source-only", "--backbone", "cryonet-small", "--test-views", "1"]
    argv += ["--epochs", "1", "--sim-per-epoch", "16", "--batch-size", "8", "--template-labels", "0"]
    argv += ["--no-spectrum-match", "--device", "cpu", "--threads", "1", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    record = json.loads((out / "selection.json").read_text())["source_structures"]
    assert [row["class"] for row in record["used"]] == ["a", "b", "t"]
    assert [Path(row["source"]).name for row in record["used"]] == ["a.mrc", "b.mrc", "t.pdb1"]
    (skipped,) = record["skipped"]
    assert Path(skipped["file"]) == source / "g.mrc"
    assert skipped["reason"].startswith("voxel size missing (cell 0)")
    line = next(text for text in printed.splitlines() if text.startswith("source: "))
    assert line.startswith("source: 3 of 4 structures used; skipped: g.mrc (voxel size missing (cell 0)")


def test_rcsb_assembly_files_are_read_as_pdb_named_or_in_a_folder(tmp_path: Path) -> None:
    """h.pdb1 was left out of a folder without a word and refused when named ("unknown structure
    type '.pdb1'"); gemmi reads it as the PDB text it is, gzipped too."""
    pytest.importorskip("gemmi")
    from cryoshift.training.simulate.structures import load_structures

    folder = tmp_path / "assemblies"
    folder.mkdir()
    (folder / "1abc.pdb1").write_text(pdb_text())
    (folder / "2xyz.pdb12.gz").write_bytes(gzip.compress(pdb_text().replace("ALA A", "ALA B").encode()))
    _blob(folder / "m.mrc", (1.5, 3.0, 2.0))
    reference = tmp_path / "ref.pdb"
    reference.write_text(pdb_text())
    loaded = load_structures([str(folder / "1abc.pdb1"), str(folder / "m.mrc")], 16, VOXEL)
    assert loaded.names == ["1abc", "m"] and not loaded.skipped
    expected = load_structures([str(reference), str(folder / "m.mrc")], 16, VOXEL).maps[0]
    assert np.allclose(loaded.maps[0], expected)
    listed = load_structures([str(folder / "2xyz.pdb12.gz"), str(folder / "m.mrc")], 16, VOXEL)
    assert listed.names == ["2xyz", "m"] and np.allclose(listed.maps[0], expected)
    from cryoshift.training.simulate.structures import _expand

    assert [Path(p).name for p in _expand(str(folder))] == ["1abc.pdb1", "2xyz.pdb12.gz", "m.mrc"]


def test_train_refuses_a_box_below_the_backbone_minimum_before_reading_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--box 15 read the target and template-matched it, then stopped naming backbone 'cryonet' (a
    family) when no --backbone was given. The target here does not exist: reading it would fail
    with another message."""
    pytest.importorskip("torch")
    missing = tmp_path / "no_target"
    out = tmp_path / "run"
    base = ["train", "--source", "builtin", "--target", str(missing), "--box", "15", "--out", str(out)]
    assert main([*base, "--threads", "1"]) != 0
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "--box 15 is too small for the default backbone cryonet-deep-centred" in line
    assert "at least 16 voxels" in line and "no_target" not in line
    assert main([*base, "--backbone", "cb3d", "--threads", "1"]) != 0
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "--box 15 is too small for backbone cb3d (backbones of the cb3d family" in line
    assert not out.exists()


def test_simulate_notes_an_untrainable_box_and_train_refuses_the_dataset_before_the_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """simulate takes boxes from 8 (other uses), but said nothing of train refusing them; train
    refused such a dataset only after the target was read and template-matched."""
    pytest.importorskip("torch")
    data = tmp_path / "o15"
    argv = ["simulate", str(data), "--structures", "builtin:ribosome,builtin:proteasome", "--n", "8"]
    assert main([*argv, "--box", "15", "--voxel-size", "10", "--no-progress", "--threads", "1"]) == 0
    err = capsys.readouterr().err
    assert "note: --box 15 is below the 16 voxels the built-in backbones need" in err
    assert "`cryoshift train` cannot train on this dataset" in err
    missing = tmp_path / "no_target"
    out = tmp_path / "run"
    assert main(["train", "--source", str(data), "--target", str(missing), "--out", str(out)]) != 0
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{data}: a box of 15 is too small for the default backbone cryonet-deep-centred" in line
    assert "no_target" not in line
    # a box the backbones take gets no note
    assert main(["simulate", str(tmp_path / "o16"), *argv[2:], "--box", "16", "--voxel-size", "10"]) == 0
    assert "cannot train on" not in capsys.readouterr().err
