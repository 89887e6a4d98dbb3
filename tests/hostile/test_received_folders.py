"""Folders and files someone else made, read or written by cryoshift (a security tester's findings).

A run folder received for ``report`` inlined any file a link at ``plots/embedding.png`` pointed to,
and a manifest note with line breaks put a line of the sender's choosing into the page.
``--split-by-class`` wrote two classes whose names differ only in characters a file name cannot
hold (``TRiC-α``, ``TRiC-β``) to one file, and deleted every ``predictions_*.star`` of the output
folder, a user's own among them. ``merge`` re-read the files a shard manifest names from the
folder it names without a word, and a ``copick:`` input without copick installed was a traceback.
A few MB of gzip whose header said gigabytes were decompressed whole and the OOM killer ended the
batch; a STAR with 400,000 labels kept ``info`` busy for over ten minutes.
"""

from __future__ import annotations

import base64
import gzip
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hostile_inputs import VOXEL, Capsys, assert_error, put, raw_mrc, run_cli

from cryoshift.runtime.mrc import write_volume

METRICS = "epoch,loss,src_val_acc,tgt_im\n0,1.0,0.5,0.1\n1,0.8,0.6,0.2\n"
SECRET = b"\x89PNG\r\n\x1a\n" + b"-----BEGIN OPENSSH PRIVATE KEY----- the reader's own key"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEvil attacker@example"


@pytest.fixture()
def plt() -> None:
    pytest.importorskip("matplotlib")


@pytest.fixture()
def job(tmp_path: Path) -> dict[str, Path]:
    """Two tomograms and picks in both."""
    rng = np.random.default_rng(0)
    tomos = tmp_path / "tomos"
    for name in ("TS_01", "TS_02"):
        write_volume(
            tomos / f"{name}.mrc", rng.normal(0, 1, (48, 48, 48)).astype(np.float32), voxel_size=VOXEL
        )
    picks = put(tmp_path / "picks.csv", "tomo,x,y,z\nTS_01,16,16,16\nTS_01,32,32,32\nTS_02,24,24,24\n")
    return {"tomos": tomos, "picks": picks, "out": tmp_path / "out"}


def _classify(model: Path, job: dict[str, Path], *extra: object) -> list[object]:
    return ["classify", model, job["picks"], "-t", job["tomos"], "-o", job["out"], "-q", "-b", "cpu", *extra]


# ---------------------------------------------------------------------------------------------
# report: a received run folder's figure and notes


def _run_folder(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    (run / "plots").mkdir(parents=True)
    put(run / "metrics.csv", METRICS)
    return run


@pytest.mark.parametrize("how", ["file-link", "folder-link"])
def test_report_never_inlines_a_figure_reached_through_a_link(
    how: str, plt: None, tmp_path: Path, capsys: Capsys
) -> None:
    """``plots/embedding.png -> ~/.ssh/id_ed25519`` (or ``plots`` a link to another folder) put the
    reader's own file, base64, into the page they then mail on."""
    run = _run_folder(tmp_path)
    elsewhere = tmp_path / "home"
    elsewhere.mkdir()
    put(elsewhere / "embedding.png", SECRET)
    if how == "file-link":
        (run / "plots" / "embedding.png").symlink_to(elsewhere / "embedding.png")
        link = run / "plots" / "embedding.png"
    else:
        (run / "plots").rmdir()
        (run / "plots").symlink_to(elsewhere)
        link = run / "plots"
    code, _, err = run_cli(["report", run, "-o", tmp_path / "page.html"], capsys)
    assert code == 0, err
    page = (tmp_path / "page.html").read_text()
    assert base64.b64encode(SECRET).decode()[:40] not in page
    assert f"not shown: {link} is a link" in page and "Feature embedding" not in page
    assert f"not shown: {link} is a link" in err  # said on the terminal too


def test_report_still_inlines_the_run_folders_own_figure(plt: None, tmp_path: Path, capsys: Capsys) -> None:
    run = _run_folder(tmp_path)
    put(run / "plots" / "embedding.png", SECRET)  # a regular file of the run: inlined as before
    code, _, err = run_cli(["report", run, "-o", tmp_path / "page.html"], capsys)
    assert code == 0, err
    page = (tmp_path / "page.html").read_text()
    assert base64.b64encode(SECRET).decode() in page and "not shown" not in page


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_report_says_a_figure_that_is_a_pipe_is_not_shown_and_does_not_wait_on_it(
    plt: None, tmp_path: Path, capsys: Capsys
) -> None:
    run = _run_folder(tmp_path)
    os.mkfifo(run / "plots" / "embedding.png")  # no writer: a blocking open would hang the report
    code, _, err = run_cli(["report", run, "-o", tmp_path / "page.html"], capsys)
    assert code == 0, err
    said = f"not shown: {run / 'plots' / 'embedding.png'} is not a regular file"
    assert said in (tmp_path / "page.html").read_text() and said in err


def test_report_shows_line_breaks_of_a_manifest_note_instead_of_obeying_them(
    plt: None, model: Path, job: dict[str, Path], capsys: Capsys
) -> None:
    """The key reached authorized_keys as a line of its own: the note held ``\\nKEY\\n``."""
    code, _, err = run_cli(_classify(model, job), capsys)
    assert code == 0, err
    manifest = job["out"] / "manifest.json"
    record = json.loads(manifest.read_text())
    record["summary"]["notes"] = [f"harmless\n{KEY}\r\nmore\x1b[2J\u2028end"]
    manifest.write_text(json.dumps(record))
    code, _, err = run_cli(["report", job["out"]], capsys)
    assert code == 0, err
    page = (job["out"] / "report.html").read_text()
    lines = page.splitlines()
    assert not any(line.startswith("ssh-ed25519") for line in lines)
    assert next(line for line in lines if "harmless" in line).count(KEY) == 1
    assert f"harmless\\n{KEY}\\r\\nmore\\x1b[2J\\u2028end" in page


# ---------------------------------------------------------------------------------------------
# classify --split-by-class


def _results(path: Path, classes: list[str], picked: list[int]) -> Path:
    """A results table as classify writes it, of a model with ``classes``; row i of class picked[i]."""
    n = len(picked)
    probs = np.full((n, len(classes)), 0.1 / max(len(classes) - 1, 1))
    probs[np.arange(n), picked] = 0.9
    table = pd.DataFrame(
        {
            "id": [f"TS_01:{i}.0,2.0,3.0" for i in range(n)],
            "tomo_name": ["TS_01"] * n,
            "x": np.arange(n, dtype=float),
            "y": [2.0] * n,
            "z": [3.0] * n,
            "class_index": picked,
            "class_name": [classes[k] for k in picked],
            "best_class": [classes[k] for k in picked],
            "unknown": [0] * n,
            "confidence": [0.9] * n,
            "shift_score": [1.0] * n,
            **{f"prob_{c}": probs[:, k] for k, c in enumerate(classes)},
        }
    )
    table.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
def test_classes_with_one_file_safe_name_get_a_file_each(
    streamed: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``TRiC-α`` and ``TRiC-β`` both became ``predictions_TRiC-_.star``: the second replaced the
    first, whose particles were lost without a word. ``Ribo``/``ribo`` would clash on a file system
    that ignores case (macOS, Windows)."""
    from cryoshift.runtime import star_out
    from cryoshift.runtime.results import read_results

    if streamed:
        monkeypatch.setattr(star_out, "STREAM_ROWS", 1)
    classes = ["TRiC-α", "TRiC-β", "Ribo", "ribo", "junk"]
    csv = _results(tmp_path / "predictions.csv", classes, [0, 1, 1, 2, 3, 4, 0])
    split = star_out.write_predictions_star(csv, tmp_path / "predictions.star", split_by_class=True)
    assert {p.name: name for p, name in split.items()} == {
        "predictions_Ribo_3.star": "Ribo",
        "predictions_TRiC-_1.star": "TRiC-α",
        "predictions_TRiC-_2.star": "TRiC-β",
        "predictions_junk.star": "junk",
        "predictions_ribo_4.star": "ribo",
    }
    for path, name in split.items():
        assert set(read_results(path)["class_name"]) == {name}
    assert sum(len(read_results(p)) for p in split) == 7


def test_split_by_class_names_its_files_and_keeps_a_users_own_stars(tmp_path: Path, capsys: Capsys) -> None:
    """Every ``predictions_*.star`` of -o was deleted (a user's ``predictions_curated_by_hand.star``
    vanished); now only the per-class files a run recorded in its manifest are removed by a rerun."""
    from tiny_onnx import build_model

    model = build_model(tmp_path / "greek.onnx", classes=["TRiC-α", "TRiC-β"], seed=3)
    rng = np.random.default_rng(1)
    tomos = tmp_path / "tomos"
    write_volume(tomos / "TS_01.mrc", rng.normal(0, 1, (64, 64, 64)).astype(np.float32), voxel_size=VOXEL)
    rows = "".join(f"TS_01,{x},{y},{z}\n" for x, y, z in rng.integers(8, 56, (24, 3)).tolist())
    picks = put(tmp_path / "picks.csv", "tomo,x,y,z\n" + rows)
    out = tmp_path / "out"
    out.mkdir()
    mine = put(out / "predictions_curated_by_hand.star", "data_mine\n")
    argv = ["classify", model, picks, "-t", tomos, "-o", out, "-q", "-b", "cpu"]
    code, _, err = run_cli([*argv, "--split-by-class"], capsys)
    assert code == 0, err
    assert mine.read_text() == "data_mine\n"
    recorded = json.loads((out / "manifest.json").read_text())["class_stars"]
    classes = json.loads((out / "manifest.json").read_text())["summary"]["class_counts"]
    assert set(recorded.values()) == set(classes) and len(recorded) == len(classes)
    assert {p.name for p in out.glob("predictions_*.star")} == {*recorded, mine.name}
    for name, cls in recorded.items():  # named by the class: one per class, none lost
        assert name in err and (cls in err or name == f"predictions_{cls}.star")
    # a rerun without --split-by-class removes the recorded files, now out of date, and no other
    code, _, err = run_cli([*argv, "--resume"], capsys)
    assert code == 0, err
    assert {p.name for p in out.glob("predictions_*.star")} == {mine.name}
    assert "removed the per-class STARs of an earlier run" in err
    assert mine.read_text() == "data_mine\n"


def test_a_rerun_removes_only_plain_recorded_names_in_its_folder(tmp_path: Path) -> None:
    """A manifest is data: recorded names outside the folder or of other files are never removed."""
    from cryoshift.runtime.star_out import remove_earlier_class_stars

    out = tmp_path / "out"
    out.mkdir()
    star = out / "predictions.star"
    files = [
        put(out / n, "x")
        for n in ("predictions_a.star", "predictions_b.star", "predictions.csv", "other.star")
    ]
    outside = put(tmp_path / "predictions_x.star", "x")
    recorded = [
        "predictions_a.star",
        "predictions_b.star",
        "predictions.csv",
        "other.star",
        "../predictions_x.star",
    ]
    removed = remove_earlier_class_stars(star, [*recorded, 7, None], keep=[out / "predictions_b.star"])
    assert removed == [files[0]]
    assert [p.exists() for p in files] == [False, True, True, True] and outside.exists()


# ---------------------------------------------------------------------------------------------
# merge: what a shard manifest makes it read


def _shards(model: Path, job: dict[str, Path], capsys: Capsys) -> Path:
    shards = job["out"].parent / "shards"
    for i in range(2):
        argv = ["classify", model, job["picks"], "-t", job["tomos"], "-o", shards, "-q", "-b", "cpu"]
        code, _, err = run_cli([*argv, "--shard", f"{i}/2"], capsys)
        assert code == 0, err
    return shards


def test_merge_says_which_folder_and_files_it_re_read(
    model: Path, job: dict[str, Path], capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """merge chdir-ed into the folder a shard manifest names and read the inputs it lists (a
    received manifest: another user's secret.star), copying their STAR blocks, without a word."""
    monkeypatch.chdir(job["picks"].parent)
    shards = _shards(model, job, capsys)
    code, _, err = run_cli(["merge", shards, "-o", job["out"], "-q"], capsys)
    assert code == 0, err
    note = (
        f"merge re-read the inputs {job['picks']} and tomograms {job['tomos']} named in the shard manifests"
    )
    assert note in err and f"relative names from {os.getcwd()}" in err
    notes = json.loads((job["out"] / "manifest.json").read_text())["summary"]["notes"]
    assert any(n.startswith(note) for n in notes)


@pytest.mark.skipif(importlib.util.find_spec("copick") is not None, reason="copick is installed here")
def test_merge_of_copick_shards_without_copick_names_the_extra(
    model: Path, job: dict[str, Path], capsys: Capsys
) -> None:
    """Shards of a ``copick:`` input merged where copick is not installed: a ModuleNotFoundError
    traceback once the merged tables were written; now one line naming the extra, before any."""
    shards = _shards(model, job, capsys)
    spec = f"copick:{job['out'].parent / 'config.json'}?voxel_spacing=10&tomo_type=wbp&picks=ribosome"
    for manifest in shards.glob("manifest.shard-*.json"):
        record = json.loads(manifest.read_text())
        record["inputs"] = [spec]
        manifest.write_text(json.dumps(record))
    line = assert_error(
        run_cli(["merge", shards, "-o", job["out"]], capsys), "pip install 'cryoshift[copick]'"
    )
    assert "copick" in line
    assert not (job["out"] / "predictions.csv").exists()


# ---------------------------------------------------------------------------------------------
# a compressed tomogram whose header says more data than there is memory for


def _gzip_mrc(path: Path, n: int, data: bytes | None = None) -> Path:
    """An n^3 float32 MRC, gzip-compressed (zeros, a few KB of gzip, unless ``data``)."""
    plain = raw_mrc(path.with_suffix(""), nx=n, ny=n, nz=n, mode=2, data=data)
    path.write_bytes(gzip.compress(plain.read_bytes(), compresslevel=1))
    plain.unlink()
    return path


def test_a_gzip_bomb_is_refused_before_it_is_decompressed(tmp_path: Path, capsys: Capsys) -> None:
    """A header of 4096^3 float32 (256 GiB) in a few bytes of gzip: refused from the header alone
    (mrcfile decompresses a compressed file whole, before any check)."""
    bomb = _gzip_mrc(tmp_path / "bomb.mrc.gz", 4096, data=bytes(4096))
    line = assert_error(run_cli(["info", bomb], capsys), bomb)
    assert "256.0 GiB of data (4096x4096x4096 float32)" in line and "more than the" in line, line
    assert "available" in line and "decompress the file to a plain .mrc" in line


def test_a_compressed_tomogram_too_big_for_memory_is_one_error_row(
    model: Path, job: dict[str, Path], capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In batch work the file is one error row per pick and the other tomograms are classified
    (the OOM killer ended the whole batch). The memory this process may take is set low for the
    test: the 48^3 float32 tomogram (432 KiB) would take about twice that to read."""
    from cryoshift.runtime import hostmem

    (job["tomos"] / "TS_02.mrc").unlink()
    data = np.random.default_rng(2).normal(0, 1, 48**3).astype("<f4").tobytes()
    _gzip_mrc(job["tomos"] / "TS_02.mrc.gz", 48, data)  # the old code classified it (enough memory here)
    monkeypatch.setattr(hostmem, "available_memory", lambda: 600 << 10)
    code, _, err = run_cli(_classify(model, job), capsys)
    assert code == 0, err
    errors = pd.read_csv(job["out"] / "errors.csv")
    assert list(errors["id"].str.startswith("TS_02")) == [True]
    assert "more than the 600.0 KiB available" in errors["reason"][0]
    assert len(pd.read_csv(job["out"] / "predictions.csv")) == 2


# ---------------------------------------------------------------------------------------------
# a STAR with very many labels


def test_info_of_a_star_with_200000_labels_answers_in_seconds(tmp_path: Path) -> None:
    """The duplicate-label check compared each label with all before it: 400,000 labels kept
    ``info`` busy for over ten minutes. Run as a process, so the old code fails on the timeout."""
    labels = ["_rlnTomoName", "_rlnCoordinateX", "_rlnCoordinateY", "_rlnCoordinateZ"]
    labels += [f"_extra{i}" for i in range(200_000)] + ["_extra7"]
    head = "data_particles\n\nloop_\n" + "".join(f"{label} #{i}\n" for i, label in enumerate(labels, 1))
    star = put(tmp_path / "wide.star", head + "TS_01 1 2 3" + " 0" * (len(labels) - 4) + "\n")
    run = subprocess.run(
        [sys.executable, "-m", "cryoshift.runtime.cli", "info", str(star)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip() == f"cryoshift: error: {star}: duplicate column names: extra7"
