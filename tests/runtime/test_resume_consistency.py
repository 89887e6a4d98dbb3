"""Rows made at different times join one table only when they mean the same thing.

``--resume`` goes on with what run.json recorded (model, inputs, settings, the tomograms' size and
time); ``--shard`` runs are held to their folder's run; ``merge`` refuses shards planned from other
inputs (a picks table re-sorted between SLURM tasks) and results that did not come from its
shards; features stay paired with their rows; earlier errors are said, and retried on request.
Each case was a silently wrong or lost result before (rc 0).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cryoshift.runtime import classify
from cryoshift.runtime.cli import main
from cryoshift.runtime.errors import InputError
from cryoshift.runtime.merge import merge_shards
from cryoshift.runtime.mrc import write_volume
from cryoshift.runtime.results import read_results

N_PICKS = 40


def _write_picks(path: Path, picks: pd.DataFrame) -> Path:
    import starfile

    starfile.write({"particles": picks}, path, overwrite=True)
    return path


@pytest.fixture
def data(tmp_path: Path, helpers) -> Path:
    """tomos/ with TS_01 and TS_02 (32 x 40 x 40 voxels), picks.star with 40 distinct picks."""
    rng = np.random.default_rng(3)
    tomos = tmp_path / "tomos"
    tomos.mkdir()
    for name in ("TS_01", "TS_02"):
        write_volume(tomos / f"{name}.mrc", rng.normal(size=(32, 40, 40)).astype(np.float32), voxel_size=10.0)
    picks = pd.DataFrame(
        {
            "rlnTomoName": ["TS_01", "TS_02"] * (N_PICKS // 2),
            "rlnCoordinateX": 8.0 + np.arange(N_PICKS) * 0.5,
            "rlnCoordinateY": rng.integers(8, 32, N_PICKS).astype(float),
            "rlnCoordinateZ": rng.integers(8, 24, N_PICKS).astype(float),
        }
    )
    _write_picks(tmp_path / "picks.star", picks)
    return tmp_path


def _classify(model: Path, data: Path, out: Path, **kw) -> object:
    kw.setdefault("tomograms", [str(data / "tomos")])
    return classify(model, [str(data / "picks.star")], out, backend="cpu", progress=False, **kw)


def _cli(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["classify", str(model), str(data / "picks.star"), "-t", str(data / "tomos"), "-o", str(out),
            "-b", "cpu", "-q", *extra]  # fmt: skip


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cryoshift: error: "), err
    return err[0]


def _resort(picks: Path) -> None:
    """Rewrite the picks table sorted by another column (as a user's script or spreadsheet would)."""
    import starfile

    _write_picks(picks, starfile.read(picks).sort_values("rlnCoordinateY", kind="stable"))


# ------------------------------------------------------------- 1: shards in a folder of another run


def test_a_shard_of_another_model_or_settings_is_refused_in_a_folders_run(
    model_path, helpers, data, tmp_path, capsys
):
    other = helpers.build_model(tmp_path / "other.onnx", seed=1)
    out = tmp_path / "A"
    _classify(model_path, data, out)
    before = (out / "predictions.csv").read_bytes()
    assert main(_cli(other, data, out, "--shard", "0/2")) == 2
    err = _one_error(capsys)
    assert f"{out / 'run.json'}: this folder holds a run of model {model_path}" in err and str(other) in err
    assert main(_cli(model_path, data, out, "--shard", "0/2", "--unknown-threshold", "0.9")) == 2
    assert "--unknown-threshold 0.0, not 0.9" in _one_error(capsys)
    assert not [p for p in out.glob("*shard*") if not p.name.endswith(".lock")]
    assert (out / "predictions.csv").read_bytes() == before


def test_merge_never_replaces_results_that_did_not_come_from_its_shards(
    model_path, helpers, data, tmp_path, capsys
):
    """Shards of model B merged into a folder of model A's complete run replaced its table (rc 0),
    and a resume with A then found every row "done"."""
    other = helpers.build_model(tmp_path / "other.onnx", seed=1)
    out, elsewhere = tmp_path / "A", tmp_path / "B"
    _classify(model_path, data, out)
    before = (out / "predictions.csv").read_bytes()
    _classify(other, data, elsewhere, shard="0/2")
    assert main(["merge", str(elsewhere), "--allow-missing", "-o", str(out)]) == 2
    err = _one_error(capsys)
    assert f"{out / 'run.json'}: this folder holds a classify run of model {model_path}" in err
    assert "merge into another folder with -o" in err
    # shards of the same model and settings: still not this folder's rows to replace
    for i in range(2):
        _classify(model_path, data, out, shard=f"{i}/2")
    assert main(["merge", str(out)]) == 2
    err = _one_error(capsys)
    assert f"{out / 'predictions.csv'}: holds results that did not come from these shards" in err
    assert (out / "predictions.csv").read_bytes() == before
    # into a folder of its own it merges, and merging there again (more shards done) is fine
    for _ in range(2):
        assert main(["merge", str(out), "-o", str(tmp_path / "merged"), "-q"]) == 0
    assert capsys.readouterr().out == ""  # -q: no summary
    merged = read_results(tmp_path / "merged" / "predictions.csv")
    assert sorted(merged["id"]) == sorted(read_results(out / "predictions.csv")["id"])


# ------------------------------------------------------------- 2: resume with changed inputs/settings


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"unknown_threshold": 0.9}, "--unknown-threshold 0.0, not 0.9"),
        ({"binning": 2.0}, "--binning (not given), not 2.0"),
        ({"tomograms": ["OTHER"]}, "--tomograms"),
    ],
)
def test_resume_refuses_other_settings_than_the_run_started_with(model_path, data, tmp_path, change, says):
    out = tmp_path / "out"
    _classify(model_path, data, out)
    rows = (out / "predictions.csv").read_bytes()
    if change.get("tomograms") == ["OTHER"]:  # same names, other data
        shutil.copytree(data / "tomos", tmp_path / "tomos2")
        write_volume(tmp_path / "tomos2" / "TS_01.mrc", np.zeros((32, 40, 40), np.float32), voxel_size=10.0)
        change = {"tomograms": [str(tmp_path / "tomos2")]}
    with pytest.raises(InputError, match="this run was started with") as caught:
        _classify(model_path, data, out, resume=True, **change)
    assert says in str(caught.value) and "new output directory (-o)" in str(caught.value)
    assert str(out / "run.json") in str(caught.value)
    assert (out / "predictions.csv").read_bytes() == rows


def test_resume_compares_relative_inputs_by_the_folder_they_were_given_in(
    model_path, data, tmp_path, monkeypatch
):
    """The same relative names from another folder are other files; from the same folder, the same."""
    monkeypatch.chdir(data)
    out = tmp_path / "out"
    classify(model_path, ["picks.star"], out, tomograms=["tomos"], backend="cpu", progress=False)
    s = classify(model_path, [str(data / "picks.star")], out, tomograms=[str(data / "tomos")],
                 backend="cpu", progress=False, resume=True)  # fmt: skip
    assert (s.classified, s.resumed) == (0, N_PICKS)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(data / "tomos", elsewhere / "tomos")
    shutil.copy(data / "picks.star", elsewhere)
    monkeypatch.chdir(elsewhere)
    with pytest.raises(InputError, match="this run was started with inputs"):
        classify(
            model_path, ["picks.star"], out, tomograms=["tomos"], backend="cpu", progress=False, resume=True
        )


def test_resume_refuses_a_tomogram_replaced_under_its_name(model_path, data, tmp_path):
    out = tmp_path / "out"
    _classify(model_path, data, out)
    tomo = data / "tomos" / "TS_02.mrc"
    write_volume(tomo, np.ones((32, 40, 40), np.float32), voxel_size=10.0)
    os.utime(tomo, ns=(0, 10**18))  # a new time for certain, whatever the clock's resolution
    with pytest.raises(InputError, match="changed since this run started") as caught:
        _classify(model_path, data, out, resume=True)
    assert str(tomo) in str(caught.value)


# ------------------------------------------------------------- 3: shards of a re-sorted table


def test_merge_refuses_shards_planned_from_a_table_re_sorted_between_them(model_path, data, tmp_path, capsys):
    """Shard 0 read the table, then it was re-sorted, then shard 1 read it: merge said "N rows found
    in more than one shard were kept once" and lost as many picks, rc 0."""
    out = tmp_path / "s"
    _classify(model_path, data, out, shard="0/2")
    _resort(data / "picks.star")
    _classify(model_path, data, out, shard="1/2")
    assert main(["merge", str(out)]) == 2
    err = _one_error(capsys)
    assert "shard 1 planned other items than shard 0" in err and "re-sorted" in err
    assert not (out / "predictions.csv").exists()
    # a resume of shard 0 on the re-sorted table would take another share: refused too
    with pytest.raises(InputError, match="this shard started on inputs that planned"):
        _classify(model_path, data, out, shard="0/2", resume=True)


def test_merge_refuses_an_id_in_two_shards_without_fingerprints(model_path, data, tmp_path, capsys):
    """Shards of an older cryoshift record no plan: an id found in two shards is the sign of a
    split that lost other items, refused naming the id (it was kept once, with a note)."""
    out = tmp_path / "s"
    for i in range(2):
        _classify(model_path, data, out, shard=f"{i}/2")
    for i in range(2):
        manifest = out / f"manifest.shard-{i}-of-2.json"
        m = json.loads(manifest.read_text())
        m["settings"].pop("planned_inputs", None)
        if i == 1:
            m["summary"]["total_rows"] += 1
        manifest.write_text(json.dumps(m))
    first = (out / "predictions.shard-0-of-2.csv").read_text().splitlines()[1]
    with open(out / "predictions.shard-1-of-2.csv", "a") as fh:
        fh.write(first + "\n")
    assert main(["merge", str(out)]) == 2
    err = _one_error(capsys)
    ident = first.split('"')[1]
    assert "in more than one shard" in err and ident in err and "rerun every shard" in err


def test_an_input_given_twice_still_merges_once(model_path, data, tmp_path):
    out = tmp_path / "s"
    twice = [str(data / "picks.star")] * 2
    for i in range(3):
        classify(model_path, twice, out, tomograms=[str(data / "tomos")], backend="cpu", progress=False,
                 shard=f"{i}/3")  # fmt: skip
    s = merge_shards([out])
    assert s.total_rows == N_PICKS and read_results(out / "predictions.csv")["id"].is_unique


# ------------------------------------------------------------- 4: features paired with their rows


def _killed_with_features(model: Path, data: Path, out: Path, keep: int) -> dict[str, np.ndarray]:
    """A --features run cut back to its first ``keep`` rows, as a kill between a batch's features
    and its rows leaves it; returns every id's features from the whole run."""
    _classify(model, data, out, features=True)
    df = read_results(out / "predictions.csv")
    feats = np.load(out / "features.npy")
    by_id = dict(zip(df["id"], feats, strict=True))
    lines = (out / "predictions.csv").read_text().splitlines(keepends=True)
    (out / "predictions.csv").write_text("".join(lines[: keep + 1]))
    (out / "manifest.json").unlink()
    return by_id


def test_resume_with_features_refuses_rows_re_sorted_since_the_kill(model_path, data, tmp_path):
    """The user sorted predictions.csv in a spreadsheet, then resumed: features.npy rows were
    paired with other rows (rc 0)."""
    out = tmp_path / "out"
    _killed_with_features(model_path, data, out, keep=25)
    lines = (out / "predictions.csv").read_text().splitlines(keepends=True)
    resorted = lines[:1] + sorted(lines[1:], key=lambda line: line.split(",")[5])
    assert resorted != lines
    (out / "predictions.csv").write_text("".join(resorted))
    with pytest.raises(InputError, match=r"predictions\.csv: data row \d+ .* is not the row whose features"):
        _classify(model_path, data, out, resume=True, features=True)
    assert (out / "predictions.csv").read_text() == "".join(resorted)
    (out / "predictions.csv").write_text("".join(lines))  # put back: resumes, every row its features
    _classify(model_path, data, out, resume=True, features=True)
    by_id = _killed_with_features(model_path, data, tmp_path / "ref", keep=N_PICKS)
    df = read_results(out / "predictions.csv")
    feats = np.load(out / "features.npy")
    assert len(df) == N_PICKS and all(
        np.allclose(by_id[i], f, atol=1e-5) for i, f in zip(df["id"], feats, strict=True)
    )


# ------------------------------------------------------------- 5: earlier errors on resume


def test_resume_says_earlier_errors_and_retries_them_when_asked(model_path, data, tmp_path, capsys):
    out = tmp_path / "out"
    moved = tmp_path / "TS_02.mrc"
    shutil.move(data / "tomos" / "TS_02.mrc", moved)
    first = _classify(model_path, data, out)
    assert (first.total_rows, first.total_errors) == (N_PICKS // 2, N_PICKS // 2)
    shutil.move(moved, data / "tomos" / "TS_02.mrc")  # the missing tomogram is found
    s = _classify(model_path, data, out, resume=True)
    assert s.classified == 0 and any(
        f"{N_PICKS // 2} of the items already done failed before and were not tried again" in n
        and "--retry-errors" in n
        for n in s.notes
    )
    assert main(_cli(model_path, data, out, "--resume", "--retry-errors")) == 0
    assert read_results(out / "predictions.csv")["id"].is_unique
    assert len(read_results(out / "predictions.csv")) == N_PICKS
    assert len(read_results(out / "errors.csv")) == 0
    capsys.readouterr()
    assert main(_cli(model_path, data, tmp_path / "new", "--retry-errors")) == 2
    assert "--retry-errors goes with --resume" in _one_error(capsys)
