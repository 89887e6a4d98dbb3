"""``cryoshift merge``: shard outputs joined exactly once per id."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from cryoshift.runtime import classify
from cryoshift.runtime.cli import main
from cryoshift.runtime.results import read_results


def test_merge_joins_shards_once_and_keeps_star_columns(model_path, inputs, tmp_path, capsys):
    args = [str(inputs["picks"]), str(inputs["stack"]), str(inputs["listing"])]
    whole = classify(
        model_path, args, tmp_path / "whole", tomograms=[str(inputs["tomos"])], backend="cpu", progress=False
    )
    for i in range(3):
        classify(
            model_path,
            args,
            tmp_path / "shards",
            tomograms=[str(inputs["tomos"])],
            backend="cpu",
            progress=False,
            shard=f"{i}/3",
        )
    # A retried array task left a copy of shard 1 in a second folder: refused, not doubled.
    (tmp_path / "retry").mkdir()
    for name in ("predictions", "errors"):
        shutil.copy(tmp_path / "shards" / f"{name}.shard-1-of-3.csv", tmp_path / "retry")
    assert main(["merge", str(tmp_path / "shards"), str(tmp_path / "retry")]) == 2
    assert "also in" in capsys.readouterr().err
    assert main(["merge", str(tmp_path / "shards"), "-o", str(tmp_path / "merged")]) == 0
    merged = read_results(tmp_path / "merged" / "predictions.csv")
    ref = read_results(whole.predictions_csv)
    assert merged["id"].is_unique and set(merged["id"]) == set(ref["id"])
    assert dict(zip(merged["id"], merged["class_name"], strict=True)) == dict(
        zip(ref["id"], ref["class_name"], strict=True)
    )
    errors = read_results(tmp_path / "merged" / "errors.csv")
    assert set(errors["id"]) == set(read_results(whole.errors_csv)["id"])
    import starfile

    star = starfile.read(tmp_path / "merged" / "predictions.star")
    assert len(star) == len(ref) and "rlnImageName" in star and "csId" in star


def test_merge_elsewhere_reads_the_shards_relative_inputs_where_they_ran(
    model_path, inputs, tmp_path, monkeypatch, capsys
):
    """Shards given relative paths, merged from another folder, used to lose the input's columns."""
    work = tmp_path / "work"
    shutil.copytree(inputs["tomos"], work / "tomos")
    shutil.copy(inputs["picks"], work / "picks.star")
    monkeypatch.chdir(work)
    for i in range(2):
        classify(
            model_path,
            ["picks.star"],
            "shards",
            tomograms=["tomos"],
            backend="cpu",
            progress=False,
            shard=f"{i}/2",
        )
    monkeypatch.chdir(tmp_path)
    assert main(["merge", "work/shards", "-o", "merged"]) == 0
    assert "not readable here" not in capsys.readouterr().out
    import starfile

    blocks = starfile.read(tmp_path / "merged" / "predictions.star", always_dict=True)
    star = blocks["particles"]
    assert "rlnTomoName" in star and "rlnCoordinateX" in star and "csClassName" in star
    assert len(star) == len(read_results(tmp_path / "merged" / "predictions.csv"))


def test_merge_says_which_shards_are_missing(model_path, inputs, tmp_path, capsys):
    classify(model_path, [str(inputs["stack"])], tmp_path / "s", backend="cpu", progress=False, shard="0/2")
    assert main(["merge", str(tmp_path / "s")]) == 2
    assert "shards 1 of 2 are missing" in capsys.readouterr().err
    assert main(["merge", str(tmp_path / "s"), "--allow-missing"]) == 0
    assert len(read_results(tmp_path / "s" / "predictions.csv")) == 6


@pytest.mark.parametrize("name", ["nothing"])
def test_merge_of_a_folder_without_shards_is_refused(tmp_path, capsys, name):
    assert main(["merge", str(tmp_path)]) == 2
    assert "no predictions.shard-i-of-n.csv" in capsys.readouterr().err


# ------------------------------------------------------------------ damaged shards


@pytest.fixture(scope="module")
def three_shards(model_path, inputs, tmp_path_factory):
    """A folder of 3 finished shards of the inputs' files (good and bad ones: errors in some shards)."""
    out = tmp_path_factory.mktemp("shards") / "s"
    for i in range(3):
        classify(model_path, [str(inputs["files"])], out, backend="cpu", progress=False, shard=f"{i}/3")
    return out


def _copy(shards, tmp_path):
    return shutil.copytree(shards, tmp_path / "s")


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    return err


def _shard_with_errors(folder) -> int:
    return next(i for i in range(3) if len(read_results(folder / f"errors.shard-{i}-of-3.csv")))


@pytest.mark.parametrize("kind", ["predictions", "errors"])
def test_merge_refuses_a_shard_table_that_is_not_utf8(three_shards, tmp_path, capsys, kind):
    folder = _copy(three_shards, tmp_path)
    bad = folder / f"{kind}.shard-1-of-3.csv"
    bad.write_bytes(bytes(range(128, 256)) * 8)
    assert main(["merge", str(folder)]) == 2
    err = _one_error_line(capsys)
    assert bad.name in err and "not UTF-8" in err and "rerun shard 1/3" in err
    # nothing half-written: no merged tables, no temporary files
    assert sorted(p.name for p in folder.glob("*predictions.csv*")) == []
    assert not list(folder.glob(".*.tmp"))


def test_merge_refuses_a_latin1_row_in_an_errors_shard(three_shards, tmp_path, capsys):
    folder = _copy(three_shards, tmp_path)
    with open(folder / "errors.shard-2-of-3.csv", "ab") as fh:
        fh.write(b"\xe9t\xe9.mrc,x,bad\n")
    assert main(["merge", str(folder)]) == 2
    err = _one_error_line(capsys)
    assert "errors.shard-2-of-3.csv" in err and "is not UTF-8 text (byte 0xe9)" in err


def test_merge_refuses_a_shard_whose_last_row_is_cut_off(three_shards, tmp_path, capsys):
    folder = _copy(three_shards, tmp_path)
    shard = folder / "predictions.shard-0-of-3.csv"
    shard.write_bytes(shard.read_bytes()[:-60])
    assert main(["merge", str(folder)]) == 2
    assert "predictions.shard-0-of-3.csv: its last row is cut off" in _one_error_line(capsys)
    # cut mid-row but ending in a newline (a copy that lost bytes): the short row is named by line
    shard.write_bytes(shard.read_bytes() + b"\n")
    assert main(["merge", str(folder)]) == 2
    err = _one_error_line(capsys)
    assert re.search(r"predictions\.shard-0-of-3\.csv: line \d+ has \d+ fields for \d+ columns", err)


def test_merge_refuses_shards_with_fewer_rows_than_their_manifests(three_shards, tmp_path, capsys):
    folder = _copy(three_shards, tmp_path)
    shard = folder / "predictions.shard-0-of-3.csv"
    rows = shard.read_text().splitlines(keepends=True)
    shard.write_text(rows[0])  # header only: the shard's rows lost
    assert main(["merge", str(folder)]) == 2
    err = _one_error_line(capsys)
    says = f"manifest.shard-0-of-3.json says the shard wrote {len(rows) - 1}"
    assert f"predictions.shard-0-of-3.csv: 0 rows, but {says}" in err
    shard.write_text("".join(rows))
    i = _shard_with_errors(folder)
    (folder / f"errors.shard-{i}-of-3.csv").unlink()  # its error rows would vanish from errors.csv
    assert main(["merge", str(folder)]) == 2
    err = _one_error_line(capsys)
    assert f"errors.shard-{i}-of-3.csv: missing, but manifest.shard-{i}-of-3.json says" in err
    shutil.copy(three_shards / f"errors.shard-{i}-of-3.csv", folder)
    assert main(["merge", str(folder)]) == 0  # the repaired folder merges, every row kept
    total = sum(len(read_results(folder / f"predictions.shard-{k}-of-3.csv")) for k in range(3))
    errors = sum(len(read_results(folder / f"errors.shard-{k}-of-3.csv")) for k in range(3))
    assert len(read_results(folder / "predictions.csv")) == total
    assert len(read_results(folder / "errors.csv")) == errors


def test_merge_names_the_shard_whose_columns_differ(three_shards, tmp_path, capsys):
    folder = _copy(three_shards, tmp_path)
    shard = folder / "predictions.shard-0-of-3.csv"
    shard.write_text("".join(",".join(line.split(",")[:5]) + "\n" for line in shard.read_text().splitlines()))
    assert main(["merge", str(folder)]) == 2
    err = _one_error_line(capsys)
    assert "predictions.shard-0-of-3.csv: columns differ" in err and "lacks y, z, class_index" in err
    assert "shard-1" not in err


# ------------------------------------------------------------------ rows held to the plan


def _rows(path):
    return path.read_text().splitlines(keepends=True)


def test_merge_refuses_a_row_of_another_shard_in_place_of_its_own(three_shards, tmp_path, capsys):
    """Shard 1's first row replaced by shard 0's (row counts unchanged): merge kept the id once
    with a note that it was "planned more than once" and lost shard 1's item, exit 0."""
    folder = _copy(three_shards, tmp_path)
    first = _rows(folder / "predictions.shard-0-of-3.csv")[1]
    shard = folder / "predictions.shard-1-of-3.csv"
    rows = _rows(shard)
    rows[1] = first
    shard.write_text("".join(rows))
    assert main(["merge", str(folder)]) == 2
    err = _one_error_line(capsys)
    ident = next(iter(read_results(folder / "predictions.shard-0-of-3.csv")["id"]))
    assert f"predictions.shard-1-of-3.csv: row 1 (line 2): id {ident!r} belongs to shard 0/3" in err
    assert not (folder / "predictions.csv").exists()


def test_merge_refuses_a_row_whose_id_the_inputs_do_not_plan(three_shards, tmp_path, capsys):
    folder = _copy(three_shards, tmp_path)
    i = _shard_with_errors(folder)
    shard = folder / f"errors.shard-{i}-of-3.csv"
    rows = _rows(shard)
    rows[1] = "/elsewhere/other.mrc" + rows[1][rows[1].index(",") :]
    shard.write_text("".join(rows))
    assert main(["merge", str(folder)]) == 2
    err = _one_error_line(capsys)
    assert f"errors.shard-{i}-of-3.csv: row 1 (line 2): id '/elsewhere/other.mrc' is not one" in err


def test_merge_refuses_a_planned_id_no_shard_holds_unless_allowed(three_shards, tmp_path, capsys):
    """A row removed (and its manifest's count with it): every shard finished, one item in none."""
    folder = _copy(three_shards, tmp_path)
    shard = folder / "predictions.shard-2-of-3.csv"
    rows = _rows(shard)
    lost = next(iter(read_results(shard)["id"]))
    shard.write_text("".join(rows[:1] + rows[2:]))
    manifest = folder / "manifest.shard-2-of-3.json"
    m = json.loads(manifest.read_text())
    m["summary"]["total_rows"] -= 1
    manifest.write_text(json.dumps(m))
    assert main(["merge", str(folder)]) == 2
    err = _one_error_line(capsys)
    assert f"1 planned id is in no shard's predictions or errors ({lost!r} of shard 2)" in err
    assert "--allow-missing" in err and not (folder / "predictions.csv").exists()
    assert main(["merge", str(folder), "--allow-missing"]) == 0
    assert "1 planned id is in no shard's predictions or errors" in capsys.readouterr().out
    assert lost not in set(read_results(folder / "predictions.csv")["id"])


def test_an_id_in_two_tables_is_planned_and_merged_once(model_path, inputs, tmp_path, capsys):
    """The same picks in two tables: each id is planned once (the later table's repeats are dropped
    when planning, as in an unsharded run), so no shard holds another's id and merge keeps them all."""
    copy = tmp_path / "copy.star"
    shutil.copy(inputs["picks"], copy)
    args = [str(inputs["picks"]), str(copy)]
    for i in range(4):
        classify(
            model_path,
            args,
            tmp_path / "s",
            tomograms=[str(inputs["tomos"])],
            backend="cpu",
            progress=False,
            shard=f"{i}/4",
            features=True,
        )
    assert main(["merge", str(tmp_path / "s")]) == 0
    assert "planned more than once" not in capsys.readouterr().out
    merged = read_results(tmp_path / "s" / "predictions.csv")
    errors = read_results(tmp_path / "s" / "errors.csv")
    assert merged["id"].is_unique and len(merged) + len(errors) == 6
    assert np.load(tmp_path / "s" / "features.npy").shape[0] == len(merged)


def test_a_repeat_merged_without_readable_inputs_is_not_called_planned_twice(
    model_path, inputs, tmp_path, monkeypatch, capsys
):
    """Inputs moved away: rows cannot be held to the plan, so a repeat is kept once as before, but
    the note no longer says the id was planned more than once (nothing showed it was)."""
    shutil.copy(inputs["stack"], tmp_path / "stack.mrcs")
    monkeypatch.chdir(tmp_path)
    for i in range(2):
        classify(model_path, ["stack.mrcs"], "s", backend="cpu", progress=False, shard=f"{i}/2")
    shard = tmp_path / "s" / "predictions.shard-1-of-2.csv"
    rows = _rows(shard)
    rows[1] = _rows(tmp_path / "s" / "predictions.shard-0-of-2.csv")[1]
    shard.write_text("".join(rows))
    (tmp_path / "stack.mrcs").rename(tmp_path / "moved.mrcs")
    assert main(["merge", "s"]) == 0
    out = capsys.readouterr().out
    assert "1 rows repeat the id of an earlier row" in out and "not readable here to tell" in out
    assert "planned more than once (an input given twice?)" not in out


# ------------------------------------------------------------------ manifests and names


def _edit_manifest(folder, edit):
    path = folder / "manifest.shard-1-of-3.json"
    m = json.loads(path.read_text())
    edit(m)
    path.write_text(json.dumps(m))


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        (lambda m: m.pop("data"), "no data object"),
        (lambda m: m.update(data=[1]), "no data object"),
        (lambda m: m["data"].pop("box_size"), "data.box_size is not a box size"),
        (lambda m: m["data"].update(voxel_sizes="10"), "data.voxel_sizes is not an object"),
        (lambda m: m["model"].update(voxel_size="10"), "model.voxel_size is not a voxel size"),
        (lambda m: m.update(inputs="files"), "inputs is not a list of paths"),
        (lambda m: m.pop("format"), "format (not given) is not cryoshift.classify/N"),
        (lambda m: m.update(format="other/1"), 'format "other/1" is not cryoshift.classify/N'),
        (lambda m: m["settings"].update(shard=[5, 3]), "settings.shard is [5, 3], but the file name"),
        (lambda m: m["settings"].update(shard=["a", 3]), 'settings.shard is ["a", 3], but'),
        (lambda m: m["settings"].update(shard=[True, 3]), "settings.shard is [true, 3], but"),
        (lambda m: m["settings"].update(shard=None), "settings.shard is (not given), but"),
    ],
)
def test_merge_refuses_a_manifest_without_the_facts_it_reads(three_shards, tmp_path, capsys, edit, said):
    """``data`` missing or not an object was a KeyError/TypeError traceback; a manifest of another
    format or of another shard than its file name says was merged as that shard."""
    folder = _copy(three_shards, tmp_path)
    _edit_manifest(folder, edit)
    assert main(["merge", str(folder)]) == 2
    err = _one_error_line(capsys)
    assert "manifest.shard-1-of-3.json: not a readable shard manifest (" in err and said in err


def test_merge_refuses_a_shard_file_whose_index_is_not_below_its_count(three_shards, tmp_path, capsys):
    folder = _copy(three_shards, tmp_path)
    for name in ("predictions", "errors"):
        shutil.copy(folder / f"{name}.shard-2-of-3.csv", folder / f"{name}.shard-3-of-3.csv")
    shutil.copy(folder / "manifest.shard-2-of-3.json", folder / "manifest.shard-3-of-3.json")
    assert main(["merge", str(folder)]) == 2
    err = _one_error_line(capsys)
    assert "predictions.shard-3-of-3.csv: not a shard's table: shard 3 of 3 (a shard i/n has i < n)" in err


def test_merge_says_a_column_is_repeated_not_reordered(three_shards, tmp_path, capsys):
    folder = _copy(three_shards, tmp_path)
    shard = folder / "predictions.shard-0-of-3.csv"
    rows = _rows(shard)  # an extra x column at the end, a value in every row
    shard.write_text("".join([rows[0].rstrip("\n") + ",x\n"] + [r.rstrip("\n") + ",1\n" for r in rows[1:]]))
    assert main(["merge", str(folder)]) == 2
    err = _one_error_line(capsys)
    assert "predictions.shard-0-of-3.csv: columns differ" in err and "repeats x" in err
    assert "another order" not in err
