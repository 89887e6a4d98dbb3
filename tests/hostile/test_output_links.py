"""Symbolic links planted in an output folder are never written through (runtime/outfiles.py).

A security test showed every output written through a link someone with access to a shared or
received folder had put there: ``errors.csv -> ~/.ssh/authorized_keys`` made classify create that
file with rows whose ids came from a picks table, ``.cryoshift-classify.lock -> victim`` truncated
the victim, and fixed or predictable temporary names (``manifest.json.tmp``, ``.NAME.<pid>.tmp``)
were written through a link too. The policy under test: a file appended to or locked (the ledgers,
the lock file, features.npy) refuses a link at its name in one line, on a new run and on
``--resume``; a whole file replaces a link at its name, leaving its target alone; temporary files
have new random names, so a link at any name cryoshift used before is never touched.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hostile_inputs import VOXEL, Capsys, assert_error, run_cli

from cryoshift.runtime.mrc import write_volume
from cryoshift.runtime.outfiles import LINK_REASON

PRECIOUS = "ssh-ed25519 AAAA... the victim's key\n"


@pytest.fixture()
def job(tmp_path: Path) -> dict[str, Path]:
    """A tomogram, a picks table with two good rows and one naming no tomogram (an error row, as the
    tester's ``NOPE`` whose id is the attacker's text), and a victim file outside the folder."""
    rng = np.random.default_rng(0)
    tomo = write_volume(
        tmp_path / "TS_01.mrc", rng.normal(0, 1, (48, 48, 48)).astype(np.float32), voxel_size=VOXEL
    )
    picks = tmp_path / "picks.csv"
    picks.write_text("tomo,x,y,z\nTS_01,16,16,16\nTS_01,32,32,32\nNOPE,1,1,1\n")
    victims = tmp_path / "victim"
    victims.mkdir()
    (victims / "authorized_keys").write_text(PRECIOUS)
    return {"tomo": tomo, "picks": picks, "victims": victims, "out": tmp_path / "out"}


def _argv(model: Path, job: dict[str, Path], *extra: object) -> list[object]:
    return ["classify", model, job["picks"], "-t", job["tomo"], "-o", job["out"], "-q", "-b", "cpu", *extra]


def _plant(job: dict[str, Path], name: str, existing: bool) -> Path:
    """A link ``out/name`` to the victim file (``existing``) or to a victim path not there yet
    (a dangling link, which writing through would create); returns the link's target."""
    target = job["victims"] / ("authorized_keys" if existing else f"new_{name.strip('.')}")
    link = job["out"] / name
    link.parent.mkdir(parents=True, exist_ok=True)
    link.unlink(missing_ok=True)
    link.symlink_to(target)
    return target


def _untouched(target: Path, existing: bool) -> None:
    if existing:
        assert target.read_text() == PRECIOUS
    else:
        assert not os.path.lexists(target), f"{target} was created through the link"


IN_PLACE = ["predictions.csv", "errors.csv", ".cryoshift-classify.lock"]


@pytest.mark.parametrize("existing", [True, False], ids=["to-a-file", "dangling"])
@pytest.mark.parametrize("name", IN_PLACE)
def test_new_run_refuses_a_link_at_a_file_it_appends_to_or_locks(
    name: str, existing: bool, model: Path, job: dict[str, Path], capsys: Capsys
) -> None:
    target = _plant(job, name, existing)
    line = assert_error(run_cli(_argv(model, job), capsys), job["out"] / name)
    assert LINK_REASON in line, line
    _untouched(target, existing)
    # refused before any ledger was made: nothing the next run would call "already exists"
    assert not any((job["out"] / n).is_file() for n in ("predictions.csv", "errors.csv") if n != name)


@pytest.mark.parametrize("name", [*IN_PLACE, "features.npy", "features.rowids"])
def test_resume_refuses_a_link_at_a_file_it_appends_to_or_locks(
    name: str, model: Path, job: dict[str, Path], capsys: Capsys
) -> None:
    code, _, err = run_cli(_argv(model, job, "--features"), capsys)
    assert code == 0, err
    before = (job["out"] / "predictions.csv").read_bytes()
    target = _plant(job, name, existing=True)
    line = assert_error(run_cli(_argv(model, job, "--resume", "--features"), capsys), job["out"] / name)
    assert LINK_REASON in line, line
    _untouched(target, existing=True)
    if name != "predictions.csv":
        assert (job["out"] / "predictions.csv").read_bytes() == before


@pytest.mark.parametrize("existing", [True, False], ids=["to-a-file", "dangling"])
@pytest.mark.parametrize("name", ["predictions.star", "run.json", "manifest.json"])
def test_a_link_at_a_whole_file_is_replaced_not_written_through(
    name: str, existing: bool, model: Path, job: dict[str, Path], capsys: Capsys
) -> None:
    target = _plant(job, name, existing)
    code, _, err = run_cli(_argv(model, job), capsys)
    assert code == 0, err
    _untouched(target, existing)
    written = job["out"] / name
    assert not written.is_symlink() and written.stat().st_size > 0


def _old_temporary_names(pid: int) -> list[str]:
    """Every temporary name cryoshift wrote under before (this process runs the CLI: its pid)."""
    return [
        f".predictions.{pid}.tmp.star",  # StarWriter
        f".predictions.{pid}.tmp.csv",  # write_results
        f".run.json.{pid}.tmp",  # run.json
        f".errors.csv.{pid}.tmp",  # Ledger.drop (--retry-errors)
        f".predictions.csv.{pid}.tmp",
    ]


def test_links_at_the_old_temporary_names_are_never_followed(
    model: Path, job: dict[str, Path], capsys: Capsys
) -> None:
    """Fixed ``.NAME.<pid>.tmp`` names were predictable: a link there was written through and renamed
    into place. Now each temporary file is new (mkstemp), so such links stay as they were."""
    names = _old_temporary_names(os.getpid())
    targets = [_plant(job, name, existing=False) for name in names]
    code, _, err = run_cli(_argv(model, job), capsys)
    assert code == 0, err
    code, _, err = run_cli(_argv(model, job, "--resume", "--retry-errors"), capsys)  # rewrites errors.csv
    assert code == 0, err
    for name, target in zip(names, targets, strict=True):
        _untouched(target, existing=False)
        assert (job["out"] / name).is_symlink()  # left alone, not replaced either
    assert not [p.name for p in job["out"].glob(".*.tmp") if not p.is_symlink()]  # no temporary file left


def test_a_link_at_manifest_json_tmp_is_never_written_through(
    model: Path, job: dict[str, Path], capsys: Capsys
) -> None:
    target = _plant(job, "manifest.json.tmp", existing=True)
    run_cli(_argv(model, job), capsys)
    _untouched(target, existing=True)


# ---------------------------------------------------------------------------------------------
# a run folder of train: config.json, metrics.csv, plots, checkpoints


def _run_folder_links(run: Path, victims: Path, names: list[str]) -> dict[str, Path]:
    """A link at each of ``names`` (final names and the fixed temporary names used before)."""
    targets = {}
    for name in names:
        link = run / name
        link.parent.mkdir(parents=True, exist_ok=True)
        targets[name] = victims / name.replace("/", "_")
        targets[name].write_text(PRECIOUS)
        link.symlink_to(targets[name])
    return targets


def test_run_folder_files_replace_links_and_never_write_through_them(tmp_path: Path) -> None:
    """A received run folder (``cryoshift train --resume``, ``report``) could hold links at the files
    train rewrites, or at their fixed ``.tmp`` names: config.json.tmp was written through, then
    renamed onto config.json."""
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    from cryoshift.training import run as runfiles
    from cryoshift.training.plots import plot_history

    run, victims = tmp_path / "run", tmp_path / "victims"
    victims.mkdir()
    names = ["config.json", "config.json.tmp", "metrics.csv", "metrics.csv.tmp", "plots/history.png"]
    targets = _run_folder_links(run, victims, names)
    history = [
        {"epoch": 1, "loss_cls": 1.0, "src_val_acc": 0.5},
        {"epoch": 2, "loss_cls": 0.5, "src_val_acc": 0.7},
    ]
    runfiles.write_json(run / "config.json", {"epochs": 2})
    runfiles.write_metrics(run / runfiles.METRICS, history)
    plot_history(history, run / "plots" / "history.png")
    for name, target in targets.items():
        assert target.read_text() == PRECIOUS, f"written through {name}"
    assert [row["epoch"] for row in runfiles.read_metrics(run / runfiles.METRICS)] == [1, 2]
    for name in ("config.json", "metrics.csv", "plots/history.png"):
        assert not (run / name).is_symlink()
    assert (run / "plots" / "history.png").read_bytes().startswith(b"\x89PNG")
    assert (run / "config.json.tmp").is_symlink()  # the old fixed temporary names are left alone


def test_a_checkpoint_replaces_a_link_and_never_writes_through_model_pt_tmp(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from cryoshift.runtime.metadata import ModelMetadata
    from cryoshift.training.checkpoint import read_checkpoint, save_checkpoint

    run, victims = tmp_path / "run", tmp_path / "victims"
    victims.mkdir()
    targets = _run_folder_links(run, victims, ["model.pt", "model.pt.tmp"])
    meta = ModelMetadata(class_names=["a", "b"], box_size=16, voxel_size=VOXEL)
    save_checkpoint(run / "model.pt", torch.nn.Linear(2, 2), "linear", {}, meta)
    assert all(t.read_text() == PRECIOUS for t in targets.values())
    assert not (run / "model.pt").is_symlink()
    assert set(read_checkpoint(run / "model.pt")["state_dict"]) == {"weight", "bias"}


# ---------------------------------------------------------------------------------------------
# the other files cryoshift writes: report.html, evaluation.json, export.json, merge's outputs,
# features files, MRC volumes, metadata and engine sidecars


def _victim(tmp_path: Path, existing: bool) -> Path:
    """A victim file outside the output folder (``existing``), or a victim path not there yet
    whose folder is (a dangling link to it: writing through would create it)."""
    victims = tmp_path / "victims"
    victims.mkdir(exist_ok=True)
    target = victims / ("authorized_keys" if existing else "new_file")
    if existing:
        target.write_text(PRECIOUS)
    return target


def _link(link: Path, target: Path) -> Path:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    return target


@pytest.mark.parametrize("existing", [True, False], ids=["to-a-file", "dangling"])
def test_report_html_replaces_a_link_and_never_writes_through_it(
    existing: bool, model: Path, job: dict[str, Path], capsys: Capsys, tmp_path: Path
) -> None:
    """The tester's finding: a dangling link ``report.html -> ~/.ssh/authorized_keys`` in a received
    results folder made ``cryoshift report`` create that file with the page (a link to an existing
    file was refused as "not an HTML page", naming the victim's file as if it were the user's)."""
    pytest.importorskip("matplotlib")
    code, _, err = run_cli(_argv(model, job), capsys)
    assert code == 0, err
    target = _link(job["out"] / "report.html", _victim(tmp_path, existing))
    code, _, err = run_cli(["report", job["out"]], capsys)
    assert code == 0, err
    _untouched(target, existing)
    page = job["out"] / "report.html"
    assert not page.is_symlink() and page.read_text().startswith("<!DOCTYPE html>")


def test_evaluation_json_in_the_default_folder_replaces_a_link(
    model: Path, dataset: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """evaluate's default folder ``MODEL_eval_DATA`` sits next to the model, often in a shared or
    received folder: a link planted at evaluation.json was written through."""
    pytest.importorskip("matplotlib")
    from cryoshift.training.evaluate import default_out_dir

    out = default_out_dir(model, dataset)
    target = _link(out / "evaluation.json", _victim(tmp_path, existing=False))
    code, _, err = run_cli(["evaluate", model, dataset], capsys)
    assert code == 0, err
    _untouched(target, existing=False)
    written = out / "evaluation.json"
    assert not written.is_symlink() and "accuracy" in written.read_text()


def test_export_json_replaces_a_link(tmp_path: Path, capsys: Capsys) -> None:
    """export.json (export/api.py) was written through a link planted in the export folder."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from cryoshift.runtime.metadata import ModelMetadata
    from cryoshift.runtime.mrc import write_stack
    from cryoshift.training.backbones import create_backbone
    from cryoshift.training.checkpoint import save_checkpoint

    net = create_backbone("cryonet-small", num_classes=2, box_size=16)
    meta = ModelMetadata(class_names=["a", "b"], box_size=16, voxel_size=VOXEL)
    ckpt = save_checkpoint(
        tmp_path / "ckpt.pt", net, "cryonet-small", {"num_classes": 2, "box_size": 16}, meta
    )
    parity = write_stack(
        tmp_path / "parity.mrcs",
        np.random.default_rng(0).normal(0, 1, (8, 16, 16, 16)).astype(np.float32),
        voxel_size=VOXEL,
    )
    out = tmp_path / "deploy"
    target = _link(out / "export.json", _victim(tmp_path, existing=False))
    # the models too: onnx.save (and the int8 quantiser) wrote through a link at their names
    victims = {
        name: _link(out / name, tmp_path / "victims" / f"from_{name}")
        for name in ("model.onnx", "model.fp16.onnx", "model.int8.onnx")
    }
    argv = ["export", ckpt, "-o", out, "--no-progress", "--parity-data", parity, "--fp16", "--int8"]
    code, _, err = run_cli([*argv, "--calibration", parity], capsys)
    assert code == 0, err
    _untouched(target, existing=False)
    assert (
        not (out / "export.json").is_symlink() and '"cryoshift.export/1"' in (out / "export.json").read_text()
    )
    for name, victim in victims.items():
        assert not victim.exists() and not (out / name).is_symlink(), name


def _two_shards(model: Path, job: dict[str, Path], capsys: Capsys) -> Path:
    """``job``'s picks classified as two shards (``--features``) into a folder of their own."""
    shards = job["out"].parent / "shards"
    for i in range(2):
        argv = ["classify", model, job["picks"], "-t", job["tomo"], "-o", shards, "-q", "-b", "cpu"]
        code, _, err = run_cli([*argv, "--features", "--shard", f"{i}/2"], capsys)
        assert code == 0, err
    return shards


def test_merge_never_writes_through_a_link_at_its_outputs_or_old_temporary_names(
    model: Path, job: dict[str, Path], capsys: Capsys
) -> None:
    """merge wrote the joined tables under ``.NAME.<pid>.tmp`` (and sorted them through
    ``NAME.sorted``), and features.npy under ``.features.npy.<pid>.tmp``: a link planted at any of
    them was written through. Whole files with a link at their name replace the link."""
    shards = _two_shards(model, job, capsys)
    pid = os.getpid()
    old = [f".{n}.{pid}.tmp" for n in ("predictions.csv", "errors.csv", "features.npy")]
    old += [f".{n}.{pid}.tmp.sorted" for n in ("predictions.csv", "errors.csv")]
    whole = ["predictions.star", "manifest.json", "features.npy"]
    targets = {name: _plant(job, name, existing=False) for name in old + whole}
    code, _, err = run_cli(["merge", shards, "-o", job["out"]], capsys)
    assert code == 0, err
    for name, target in targets.items():
        _untouched(target, existing=False)
        assert (job["out"] / name).is_symlink() == (name in old), name
    rows = (job["out"] / "predictions.csv").read_text().splitlines()
    assert len(rows) == 3 and np.load(job["out"] / "features.npy").shape[0] == 2
    assert not [p.name for p in job["out"].glob(".*.tmp") if not p.is_symlink()]


@pytest.mark.parametrize("name", ["predictions.csv", "errors.csv"])
def test_merge_refuses_a_link_at_the_tables_it_would_replace(
    name: str, model: Path, job: dict[str, Path], capsys: Capsys
) -> None:
    shards = _two_shards(model, job, capsys)
    target = _plant(job, name, existing=True)
    line = assert_error(run_cli(["merge", shards, "-o", job["out"]], capsys), job["out"] / name)
    assert "did not come from these shards" in line, line
    _untouched(target, existing=True)


@pytest.mark.parametrize("resume", [False, True], ids=["new", "resume"])
def test_a_features_file_refuses_a_link_at_its_name(resume: bool, tmp_path: Path) -> None:
    """FeatureLedger opened features.npy with ``open(path, "w+b")`` (``r+b`` on resume), following a
    link there: the victim was truncated. Now the open itself refuses it (no check-then-open race)."""
    from cryoshift.runtime.errors import InputError
    from cryoshift.runtime.features import FeatureLedger

    target = _victim(tmp_path, existing=True)
    link = tmp_path / "out" / "features.npy"
    _link(link, target)
    with pytest.raises(InputError, match="symbolic link"):
        FeatureLedger(link, rows_done=0, resume=resume)
    assert target.read_text() == PRECIOUS


def test_joined_features_never_follow_a_link_at_the_old_temporary_name(tmp_path: Path) -> None:
    from cryoshift.runtime.features import FeatureLedger, join_features, read_features

    part = tmp_path / "features.shard-0-of-1.npy"
    with FeatureLedger(part) as ledger:
        ledger.append(np.arange(6, dtype=np.float32).reshape(3, 2))
    out = tmp_path / "features.npy"
    target = _link(tmp_path / f".features.npy.{os.getpid()}.tmp", _victim(tmp_path, existing=False))
    _link(out, _victim(tmp_path, existing=True))
    assert join_features([(part, [2, 0])], out) == 2
    _untouched(target, existing=False)
    assert (tmp_path / "victims" / "authorized_keys").read_text() == PRECIOUS
    assert not out.is_symlink() and read_features(out).tolist() == [[4.0, 5.0], [0.0, 1.0]]


def test_mrc_volumes_never_follow_a_link_at_their_name_or_old_temporary_name(tmp_path: Path) -> None:
    """write_volume wrote through ``.NAME.<pid>.tmp`` (mrcfile.new follows links) and renamed it."""
    from cryoshift.runtime.mrc import read_volume

    out = tmp_path / "out" / "vol.mrc"
    old = _link(out.with_name(f".vol.mrc.{os.getpid()}.tmp"), _victim(tmp_path, existing=False))
    existing = _link(out, _victim(tmp_path, existing=True))
    data = np.arange(8**3, dtype=np.float32).reshape(8, 8, 8)
    write_volume(out, data, voxel_size=VOXEL)
    _untouched(old, existing=False)
    _untouched(existing, existing=True)
    assert not out.is_symlink() and np.array_equal(read_volume(out), data)


def test_metadata_and_engine_sidecars_replace_a_link(tmp_path: Path) -> None:
    """ModelMetadata.write_json and the TensorRT engine's sidecar wrote through a link at their name."""
    from cryoshift.runtime.engine_sidecar import read_engine_sidecar, write_engine_sidecar
    from cryoshift.runtime.metadata import ModelMetadata

    meta = ModelMetadata(class_names=["a", "b"], box_size=16, voxel_size=VOXEL)
    target = _victim(tmp_path, existing=True)
    out = tmp_path / "out"
    _link(out / "meta.json", target)
    meta.write_json(out / "meta.json")
    assert ModelMetadata.read_json(out / "meta.json").class_names == ["a", "b"]
    (out / "model.onnx").write_bytes(b"onnx")
    (out / "model.engine").write_bytes(b"engine")
    _link(out / "model.engine.json", target)
    write_engine_sidecar(out / "model.engine", meta, "GPU", "10.0", out / "model.onnx", (1, 4, 8))
    assert read_engine_sidecar(out / "model.engine").gpu_name == "GPU"
    assert target.read_text() == PRECIOUS
    assert not (out / "meta.json").is_symlink() and not (out / "model.engine.json").is_symlink()


@pytest.mark.parametrize("existing", [True, False], ids=["to-a-file", "dangling"])
def test_a_dataset_replaces_links_at_its_files(existing: bool, tmp_path: Path) -> None:
    """A dataset folder written again (simulate into a received folder) wrote volumes.mrc,
    particles.csv and dataset.json through links planted at their names."""
    from cryoshift.runtime.dataset import META, TABLE, VOLUMES, read_dataset, write_dataset

    out = tmp_path / "data"
    targets = {}
    for name in (VOLUMES, TABLE, META):
        (tmp_path / name).mkdir()  # one victim folder per file
        targets[name] = _link(out / name, _victim(tmp_path / name, existing))
    volumes = np.random.default_rng(0).normal(0, 1, (3, 16, 16, 16)).astype(np.float32)
    write_dataset(out, volumes, [0, 1, 0], ["a", "b"], voxel_size=VOXEL)
    for name, target in targets.items():
        _untouched(target, existing)
        assert not (out / name).is_symlink(), name
    with read_dataset(out, with_labels=True) as ds:
        assert len(ds) == 3 and list(ds.labels) == [0, 1, 0]
