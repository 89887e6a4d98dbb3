"""Hostile inputs of ``cryoshift evaluate`` and ``cryoshift simulate`` through the real CLI that
used to give a silently wrong report or dataset, or a message that did not say what was wrong:
a particles.csv out of volume order, one subtomogram labelled two ways, output folders that are
dangling links, link loops or under a file, imaging parameters that leave no signal, and structure
file names that give no usable class name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hostile_inputs import BOX, VOXEL, Capsys, assert_error, run_cli, volumes

from cryoshift.runtime.dataset import write_dataset
from cryoshift.runtime.mrc import write_volume

pytest.importorskip("matplotlib")  # evaluate's report plot


def _unmakeable_folders(tmp_path: Path) -> list[tuple[Path, Path, str]]:
    """(folder to write to, path the error names, words it says): a dangling link, a loop of links
    (mkdir said "File exists" for both) and a folder under a file (mkdir said "Not a directory")."""
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    loop_a, loop_b = tmp_path / "loop_a", tmp_path / "loop_b"
    loop_a.symlink_to(loop_b)
    loop_b.symlink_to(loop_a)
    afile = tmp_path / "afile"
    afile.write_text("x")
    return [
        (dangling, dangling, "dangling symbolic link"),
        (loop_a, loop_a, "symbolic link loop"),
        (afile / "sub", afile, "is not a folder"),
    ]


# ---------------------------------------------------------------------------------------------
# evaluate


@pytest.mark.parametrize("edit", ["sorted_by_class", "repeated_row"])
def test_evaluate_refuses_a_table_out_of_volume_order(
    edit: str, model: Path, dataset: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """Labels are paired with volumes by row: a particles.csv sorted by class (its index column
    says so) or with a repeated row was scored against the wrong volumes with exit 0."""
    table_path = dataset / "particles.csv"
    table = pd.read_csv(table_path)
    if edit == "sorted_by_class":
        table = table.sort_values("label", kind="stable")
    else:
        table = pd.concat([table.iloc[:1], table.iloc[:-1]])  # row 0 twice, the last one lost
    table.to_csv(table_path, index=False)
    out = tmp_path / "ev"
    line = assert_error(run_cli(["evaluate", model, dataset, "--out", out], capsys), table_path)
    assert "out of volume order (first: row 1 has index" in line, line
    assert not out.exists()


def test_evaluate_refuses_one_volume_labelled_two_ways(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    """A volume copied under another label, or a pick listed twice with two classes: one label is
    wrong, and both were scored (the model counted wrong whatever it answered)."""
    vols = volumes(4)
    vols[3] = vols[0]
    data = write_dataset(
        tmp_path / "ds",
        vols,
        labels=[0, 1, 2, 2],
        class_names=["ribosome", "proteasome", "junk"],
        voxel_size=VOXEL,
    )
    line = assert_error(
        run_cli(["evaluate", model, data, "--out", tmp_path / "ev"], capsys), data / "particles.csv"
    )
    assert "volumes 0 and 3 are the same volume, labelled 'ribosome' and 'junk'" in line, line

    tomos = tmp_path / "tomos"
    tomos.mkdir()
    tomogram = np.random.default_rng(1).normal(0, 1, (32, 48, 48)).astype(np.float32)
    write_volume(tomos / "TS_01.mrc", tomogram, voxel_size=VOXEL)
    picks = tmp_path / "labelled.csv"
    pd.DataFrame(
        {
            "tomo": ["TS_01"] * 4,
            "x": [20.0, 20.0, 24.0, 28.0],
            "y": [20.0, 20.0, 24.0, 28.0],
            "z": [16.0] * 4,
            "class": ["ribosome", "junk", "junk", "proteasome"],
        }
    ).to_csv(picks, index=False)
    argv = ["evaluate", model, picks, "-t", tomos, "--out", tmp_path / "ev_picks"]
    line = assert_error(run_cli(argv, capsys), picks)
    assert "two picks crop the same subtomogram" in line and "'ribosome' and 'junk'" in line, line
    # the same pick twice under one label is still scored (the planner notes the repeat)
    picks.write_text(picks.read_text().replace("20.0,20.0,16.0,junk", "20.0,20.0,16.0,ribosome"))
    code, _, err = run_cli([*argv[:-1], tmp_path / "ev_same"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "ev_same" / "evaluation.json").read_text())["n"] == 4


def test_evaluate_refuses_an_out_folder_that_cannot_be_made(
    model: Path, dataset: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """--out a dangling link or a loop of links was "File exists", a folder under a file "Not a
    directory" (naming the folder, not the file in the way), each after the model had run."""
    for out, named, words in _unmakeable_folders(tmp_path):
        line = assert_error(run_cli(["evaluate", model, dataset, "--out", out], capsys), named)
        assert words in line, line


# ---------------------------------------------------------------------------------------------
# simulate


def _protein(seed: int) -> str:
    """A PDB file of 80 carbon atoms in a ~50 A blob: a small particle at 10 A voxels."""
    atoms = np.random.default_rng(seed).normal(0, 12, (80, 3))
    rows = [
        f"ATOM  {i + 1:5d}  CA  ALA A{i + 1:4d}    {x:8.3f}{y:8.3f}{z:8.3f}  1.00 20.00           C\n"
        for i, (x, y, z) in enumerate(atoms)
    ]
    return "".join(rows) + "END\n"


def _simulate(out: Path, capsys: Capsys, *extra: object) -> tuple[int | str, str, str]:
    argv = ["simulate", out, "--n", 4, "--box", BOX, "--no-progress", "--threads", 1]
    return run_cli([*argv, "--structures", "builtin:rubisco,builtin:p97", *extra], capsys)


def test_simulate_refuses_an_out_dir_that_cannot_be_made(tmp_path: Path, capsys: Capsys) -> None:
    """OUT_DIR a dangling link, a loop of links or a file was "File exists"; under a file, "Not a
    directory" naming the folder to make rather than the file in the way."""
    pytest.importorskip("torch")
    cases = _unmakeable_folders(tmp_path)
    cases.append((tmp_path / "afile", tmp_path / "afile", "exists and is not a folder"))
    for out, named, words in cases:
        line = assert_error(_simulate(out, capsys), named)
        assert words in line, line
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize(
    ("options", "words"),
    [
        # each is now outside config.BOUNDS and refused before any volume is simulated (the check
        # of the simulated volumes is tested directly in test_simulate_values.py)
        (["--bfactor", "1e9", "1e9"], "is outside the accepted range"),  # wrote zeros, exit 0
        (["--dose-weighting", "--dose", "1e9", "1e9"], "is outside the accepted range"),  # the same
        (["--noise-alpha", "100", "100"], "is outside the accepted range"),  # "OUT: volumes 0..3 ... NaN/Inf"
        (["--gradient", "1e30", "1e30"], "is outside the accepted range"),  # wrote values of 1e30, exit 0
    ],
)
def test_simulate_refuses_parameters_that_leave_no_usable_signal(
    options: list[str], words: str, tmp_path: Path, capsys: Capsys
) -> None:
    pytest.importorskip("torch")
    out = tmp_path / "sim"
    line = assert_error(_simulate(out, capsys, *options), options[-3])  # the option named
    assert words in line, line
    assert "simulation config" not in line, line
    assert options[-1].replace("1e9", "1e+09").replace("1e30", "1e+30") in line, line
    assert not (out / "dataset.json").exists()


def test_simulate_refuses_file_names_that_give_no_class_name(tmp_path: Path, capsys: Capsys) -> None:
    """A file named ``.pdb`` or `` .pdb`` gave an empty or blank class (refused later naming the
    output folder, or kept as the class " "); a line break in the name was kept as a class name
    that split the summary line and could not come back from a STAR file. Named directly the file
    is refused; in a folder it is skipped with one line and the other classes are simulated."""
    pytest.importorskip("torch")
    pytest.importorskip("gemmi")
    folder = tmp_path / "structures"
    folder.mkdir()
    blank = folder / " .pdb"
    broken = folder / "a\nb.pdb"
    for seed, path in enumerate((blank, broken, folder / ".pdb")):
        path.write_text(_protein(seed))  # a ~50 A particle, which the old code took
    line = assert_error(_simulate(tmp_path / "named", capsys, "--structures", blank), blank)
    assert "gives an empty class name (' ')" in line, line

    code, out, err = _simulate(tmp_path / "sim", capsys, "--structures", folder)
    assert code == 0, err
    skipped = [ln for ln in err.splitlines() if ln.startswith("cryoshift: skipped")]
    assert len(skipped) == 3, err
    assert any("holds control characters ('\\n')" in ln and "a\\nb.pdb" in ln for ln in skipped), err
    info = json.loads((tmp_path / "sim" / "dataset.json").read_text())
    assert info["class_names"] == ["rubisco", "p97"]
    assert len(info["structures_skipped"]) == 3
    assert "\n" not in out.strip()


def test_evaluate_and_simulate_still_take_ordinary_inputs(
    model: Path, dataset: Path, tmp_path: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checks above are not too eager: a report into a folder reached through a good link, a
    dataset of no index column, a simulation into a relative folder with ordinary B-factors."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    table = pd.read_csv(dataset / "particles.csv").drop(columns="index")
    table.to_csv(dataset / "particles.csv", index=False)
    code, _, err = run_cli(["evaluate", model, dataset, "--out", tmp_path / "link" / "ev"], capsys)
    assert code == 0, err
    assert (real / "ev" / "evaluation.json").is_file()

    pytest.importorskip("torch")
    monkeypatch.chdir(tmp_path)  # a relative OUT_DIR whose parent is "."
    code, _, err = _simulate(Path("sim"), capsys, "--bfactor", "0", "300")
    assert code == 0, err
    assert json.loads((tmp_path / "sim" / "dataset.json").read_text())["n"] == 4
