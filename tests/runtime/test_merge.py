"""``cryoshift merge``: shard outputs joined exactly once per id."""

from __future__ import annotations

import re
import shutil

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
