"""A dataset folder inside a target folder (or matched by a glob) through ``cryoshift train`` and
``cryoshift classify``, which plan their inputs with the same walk (runtime/sources/planner.py).

A dataset is read as one (its recorded contrast, voxel size and table) only when it is an input
itself. Met inside a folder it was passed over without a word; a glob matching it made an item
that "is a directory, expected an MRC file"; a recursive glob read its stack as bare volumes, so
a light dataset sitting in a dark target trained (or was classified) as dark data, its recorded
contrast unchecked. Now it is skipped with one note saying how to read it, and an input holding
nothing else is refused in one line naming it, never with the planner's contrast refusal (which
tells a training run to "use a model exported for 'light' data or pass the right --contrast").

Tiny settings: 16^3 volumes, cryonet-small, one epoch.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hostile_inputs import (
    VOXEL,
    Capsys,
    assert_error,
    errors_table,
    predictions,
    run_cli,
    train_argv,
    volumes,
)


def _target_folder(root: Path) -> Path:
    """Three dark target subtomograms and, beside them, a light simulated-style dataset."""
    from cryoshift.runtime.dataset import write_dataset
    from cryoshift.runtime.mrc import write_volume

    folder = root / "target"
    folder.mkdir()
    for i, vol in enumerate(volumes(3, seed=5)):
        write_volume(folder / f"t{i}.mrc", vol, voxel_size=VOXEL)
    write_dataset(
        folder / "sim",
        volumes(4, seed=6),
        labels=[0, 1, 0, 1],
        class_names=["a", "b"],
        voxel_size=VOXEL,
        contrast="light",
    )
    return folder


def _train_note(target: str, dataset: Path) -> str:
    return (
        f"cryoshift: note: {target}: skipped the dataset folder {dataset}; a dataset is target data "
        f"only as the --target itself (--target {dataset})"
    )


@pytest.mark.parametrize(
    "spec", ["{folder}", "{folder}/*", "{folder}/**/*.mrc"], ids=["folder", "glob", "deep"]
)
def test_train_skips_a_dataset_folder_inside_the_target_with_a_note(
    spec: str, tmp_path: Path, capsys: Capsys, dataset: Path
) -> None:
    pytest.importorskip("torch")
    folder = _target_folder(tmp_path)
    target = spec.format(folder=folder)
    code, out, err = run_cli(train_argv(dataset, tmp_path / "run", "--target", target), capsys)
    assert code == 0, err
    assert "cryoshift: target: 3 items read" in err.splitlines()  # the three subtomograms, no more
    assert "items read" not in out  # progress, not a result: stderr
    notes = [line for line in err.splitlines() if "note:" in line and "is a dataset: " not in line]
    assert notes == [_train_note(target, folder / "sim")]  # (and the dataset source's own note)
    assert "skipped target item" not in err  # the dataset folder is no bad target item


@pytest.mark.parametrize("spec", ["{folder}", "{folder}/s*"], ids=["folder", "glob"])
def test_train_refuses_a_target_that_holds_only_a_dataset_folder_in_one_line(
    spec: str, tmp_path: Path, capsys: Capsys, dataset: Path
) -> None:
    pytest.importorskip("torch")
    folder = _target_folder(tmp_path)
    for mrc in folder.glob("*.mrc"):
        mrc.unlink()
    target = spec.format(folder=folder)
    line = assert_error(run_cli(train_argv(dataset, tmp_path / "run", "--target", target), capsys), target)
    sim = folder / "sim"
    words = "holds no MRC files, only" if spec == "{folder}" else "matches only"
    assert line == (
        f"cryoshift: error: {target}: {words} the dataset folder {sim}; a dataset is target data only "
        f"as the --target itself (--target {sim})"
    )
    assert "contrast" not in line
    assert not (tmp_path / "run" / "model.pt").exists()


def test_the_dataset_itself_is_still_a_target_and_its_contrast_is_checked(
    tmp_path: Path, capsys: Capsys, dataset: Path
) -> None:
    """What the note advises: the dataset given as the --target is read as one, its recorded
    contrast checked (here refused: the source is dark), in train's own words."""
    pytest.importorskip("torch")
    sim = _target_folder(tmp_path) / "sim"
    line = assert_error(run_cli(train_argv(dataset, tmp_path / "run", "--target", sim), capsys), sim)
    assert "target contrast is 'light' but the source's is 'dark'" in line and "model" not in line, line


def test_classify_skips_a_dataset_folder_its_glob_matches_with_a_note(
    model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """classify plans with the same walk: the glob made an error row ("is a directory, expected an
    MRC file") for the dataset folder, and a recursive glob classified its light stack as dark."""
    folder = _target_folder(tmp_path)
    for n, spec in enumerate((str(folder), f"{folder}/*", f"{folder}/**/*.mrc")):
        out = tmp_path / f"out{n}"
        code, stdout, err = run_cli(["classify", model, spec, "-o", out, "-b", "cpu"], capsys)
        assert code == 0, err
        assert sorted(Path(p).name for p in predictions(out)["path"]) == ["t0.mrc", "t1.mrc", "t2.mrc"]
        assert not (out / "errors.csv").exists() or errors_table(out).empty
        note = (
            f"{spec}: skipped the dataset folder {folder / 'sim'}; a dataset is classified only as an "
            f"input of its own (e.g. {folder / 'sim'})"
        )
        assert note in stdout + err
