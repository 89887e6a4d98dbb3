"""Findings of the second hostile-input pass that concern training, structures, reports and MRC
names: a PDB atom whose coordinate overflowed (``********``, read as 0 by gemmi), target items
skipped by train past the first ten (recorded nowhere), an infinite accuracy or a NaN loss in a run's
metrics.csv, and xz/zstd-compressed MRC files (passed over in a folder, "not an MRC file" alone).

Tiny real data throughout (16^3 volumes, a one-epoch run).
"""

from __future__ import annotations

import csv
import lzma
import pickle
from pathlib import Path

import mrcfile
import numpy as np
import pytest
from hostile_inputs import VOXEL, Capsys, assert_error, errors_table, run_cli, train_argv, volumes

# ---------------------------------------------------------------------------------------------
# PDB coordinates that overflowed their columns


def _pdb(path: Path, extra: str = "") -> Path:
    """A small PDB model (a 30 A helix of CA atoms), with ``extra`` records before END."""
    rows = []
    for i in range(40):
        x, y, z = 10 * np.cos(i / 3), 10 * np.sin(i / 3), 1.5 * i
        rows.append(
            f"ATOM  {i + 1:5d}  CA  ALA A{i + 1:4d}    {x:8.3f}{y:8.3f}{z:8.3f}  1.00 20.00           C"
        )
    path.write_text("\n".join(rows) + "\n" + extra + "END\n")
    return path


def test_a_pdb_atom_with_an_overflowed_coordinate_is_refused_naming_its_line(
    tmp_path: Path, capsys: Capsys
) -> None:
    """gemmi reads ``********`` (what PDB writers print for 10000 A and more) as 0: the atom was
    put at the origin and simulated without a word, a wrong density for a large assembly."""
    pytest.importorskip("gemmi")
    from cryoshift.runtime.errors import InputError
    from cryoshift.training.simulate.atomic import atomic_density, describe_model

    good = _pdb(tmp_path / "good.pdb")
    assert dict(describe_model(good))["heavy atoms used"] == "40"
    starred = "ATOM     41  CA  ALA A  41    ********   1.000   1.000  1.00 20.00           C\n"
    bad = _pdb(tmp_path / "stars.pdb", starred)
    with pytest.raises(InputError) as exc:
        atomic_density(bad, resolution=20.0, spacing=4.0)
    assert "line 41" in str(exc.value) and "********" in str(exc.value) and "mmCIF" in str(exc.value)
    line = assert_error(run_cli(["info", bad], capsys), bad)
    assert "1 atom has an overflowed coordinate" in line


# ---------------------------------------------------------------------------------------------
# every skipped target item in the run folder


def _write_mrc(path: Path, data: np.ndarray) -> Path:
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = VOXEL
    return path


def test_train_writes_every_skipped_target_item_with_its_reason(
    tmp_path: Path, dataset: Path, capsys: Capsys
) -> None:
    """train named 10 bad target items and then "... and 12 more": the rest were recorded nowhere.
    All are in skipped_items.csv, and the "more" line names that file."""
    pytest.importorskip("torch")
    from cryoshift.training.data import SKIPPED_ITEMS, Skipped

    target = tmp_path / "target"
    target.mkdir()
    for i, vol in enumerate(volumes(4, seed=3)):
        _write_mrc(target / f"good_{i}.mrc", vol)
    bad = [target / f"nan_{i:02d}.mrc" for i in range(8)] + [target / f"empty_{i}.mrc" for i in range(5)]
    for path in bad[:8]:
        _write_mrc(path, np.full((16, 16, 16), np.nan, np.float32))
    for path in bad[8:]:
        path.write_bytes(b"")
    out = tmp_path / "run"
    code, _, err = run_cli(train_argv(dataset, out, "--target", target, "--method", "adabn"), capsys)
    assert code == 0, err
    assert f"... and 3 more unreadable target items (all 13, with reasons: {out / SKIPPED_ITEMS})" in err
    with open(out / SKIPPED_ITEMS, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["item"] for r in rows) == sorted(str(p) for p in bad)
    reasons = {Path(r["item"]).name: r["reason"] for r in rows}
    assert reasons["nan_07.mrc"] == "contains NaN or infinite values"
    assert reasons["empty_4.mrc"] == "file is empty"
    # the lines keep their parts through a pickle (spawned data workers)
    line = pickle.loads(pickle.dumps(Skipped("a: b.mrc", "why")))
    assert line == "a: b.mrc: why" and (line.item, line.reason) == ("a: b.mrc", "why")


# ---------------------------------------------------------------------------------------------
# report: an accuracy that is no accuracy, a loss that diverged

_HEADER = "epoch,loss_total,loss_ce,src_val_acc,snd\n"


def _run_folder(tmp_path: Path, rows: str) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text(_HEADER + rows)
    return run


@pytest.mark.parametrize("value", ["inf", "nan", "1.5", "-0.1"])
def test_report_refuses_an_accuracy_outside_0_to_1(tmp_path: Path, capsys: Capsys, value: str) -> None:
    """An infinite accuracy was drawn (or left out) without a word: the table is damaged."""
    run = _run_folder(tmp_path, f"1,0.7,0.7,0.5,0.1\n2,0.6,0.6,{value},0.2\n")
    line = assert_error(run_cli(["report", run], capsys), run / "metrics.csv")
    assert f"line 3: src_val_acc '{value}' is not an accuracy (a number from 0 to 1)" in line


def test_report_notes_a_diverged_loss_and_keeps_an_empty_accuracy(tmp_path: Path, capsys: Capsys) -> None:
    """A NaN loss is what a diverged run writes: the page and the terminal say so (the plot just
    left the epoch out); an empty accuracy (no validation data) is still fine."""
    run = _run_folder(tmp_path, "1,0.7,0.7,,0.1\n2,nan,nan,,0.2\n3,inf,0.5,,0.3\n")
    code, _, err = run_cli(["report", run], capsys)
    assert code == 0, err
    note = "the loss is NaN or infinite from epoch 2 (loss_total at 2 epochs, loss_ce at 1 epoch)"
    assert note in err and "training diverged" in err
    assert note in (run / "report.html").read_text()


# ---------------------------------------------------------------------------------------------
# MRC files under a compression cryoshift does not read


def test_an_xz_compressed_mrc_is_named_alone_and_in_a_folder(
    tmp_path: Path, model: Path, capsys: Capsys
) -> None:
    """``good.mrc.xz`` was passed over without a word in a folder and called "not an MRC file ...
    or corrupt" when named: it is said to be xz-compressed, with what to do."""
    folder = tmp_path / "in"
    folder.mkdir()
    plain = _write_mrc(folder / "a.mrc", volumes(1)[0])
    xz = folder / "b.mrc.xz"
    xz.write_bytes(lzma.compress(plain.read_bytes()))
    zst = tmp_path / "c.mrc.zst"  # zstd's frame magic: no zstd module is needed to test the name
    zst.write_bytes(b"\x28\xb5\x2f\xfd" + bytes(2000))
    want = "xz-compressed; cryoshift reads gzip and bzip2: decompress it"
    assert want in assert_error(run_cli(["info", xz], capsys), xz)
    assert "zstd-compressed" in assert_error(run_cli(["info", zst], capsys), zst)
    out = tmp_path / "out"
    code, _, err = run_cli(["classify", model, folder, "-o", out, "-q"], capsys)
    assert code == 0, err
    errors = errors_table(out)
    assert list(errors["reason"]) == [f"is {want} (xz -d)"], errors
