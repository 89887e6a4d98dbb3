"""Data correctness and reliability through the real CLI (issue 13).

Each test reproduces a case that used to give a silently wrong answer or stop a batch: picks
cropped from the wrong tomogram, MRC axis order ignored, concurrent runs duplicating rows, one
bad explicit input stopping a run, huge tables, and misleading messages.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import os
import subprocess
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest
from import_blocker import blocked_env

from cryoshift.runtime.cli import main
from cryoshift.runtime.mrc import write_stack, write_volume

BOX = 16
VOXEL = 10.0
Capsys = pytest.CaptureFixture[str]


def run_cli(argv: list[object], capsys: Capsys) -> tuple[int | str, str, str]:
    capsys.readouterr()
    try:
        code: int | str = main([str(a) for a in argv])
    except BaseException as exc:  # a traceback for a user
        code = f"uncaught {type(exc).__name__}: {exc}"
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(result: tuple[int | str, str, str], name: object, code: int = 2) -> str:
    got, _out, err = result
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert got == code, f"exit {got!r}; stderr: {err!r}"
    assert len(lines) == 1 and lines[0].startswith("cryoshift: error: "), err
    assert str(name) in lines[0], lines[0]
    return lines[0]


def density(seed: int = 0, shape: tuple[int, int, int] = (BOX, BOX, BOX)) -> np.ndarray:
    """An asymmetric volume: any mirroring or axis swap changes what a model sees."""
    rng = np.random.default_rng(seed)
    vol = rng.normal(0, 1, shape).astype(np.float32)
    vol[: shape[0] // 3, : shape[1] // 2, : shape[2] // 4] += 3.0
    return vol


def write_ordered(
    path: Path,
    vol: np.ndarray,
    order: tuple[int, int, int],
    voxel: tuple[float, float, float] = (VOXEL, VOXEL, VOXEL),
) -> Path:
    """Store ``vol`` (Z, Y, X) with axis order ``order`` = (mapc, mapr, maps) as another program would."""
    mapc, mapr, maps = order
    axis_of = {1: 2, 2: 1, 3: 0}  # physical axis -> axis of vol
    stored = np.ascontiguousarray(vol.transpose(axis_of[maps], axis_of[mapr], axis_of[mapc]))
    nz, ny, nx = vol.shape
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(stored)
        mrc.header.mapc, mrc.header.mapr, mrc.header.maps = order
        mrc.header.mx, mrc.header.my, mrc.header.mz = nx, ny, nz  # sampling along X, Y, Z
        mrc.header.cella = (voxel[0] * nx, voxel[1] * ny, voxel[2] * nz)
    return path


def star(path: Path, df: pd.DataFrame) -> Path:
    import starfile

    starfile.write({"particles": df}, path, overwrite=True)
    return path


def predictions(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "predictions.csv")


def errors(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "errors.csv")


# ---------------------------------------------------------------------------------------------
# 1. picks are cropped from the tomogram they name, never from a similar name


def _tomogram(path: Path, seed: int) -> Path:
    return write_volume(path, density(seed, (24, 40, 32)), voxel_size=VOXEL)


def _picks(path: Path, names: list[str]) -> Path:
    n = len(names)
    return star(
        path,
        pd.DataFrame(
            {
                "rlnTomoName": names,
                "rlnCoordinateX": [16.0] * n,
                "rlnCoordinateY": [20.0] * n,
                "rlnCoordinateZ": [12.0] * n,
            }
        ),
    )


def test_ts3_is_never_cropped_from_ts34(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    """Before: picks of TS_3 were cropped from TS_34.mrc (TS_3.mrc not given), no warning."""
    ts34 = _tomogram(tmp_path / "TS_34.mrc", 1)
    picks = _picks(tmp_path / "picks.star", ["TS_3", "TS_34"])
    out = tmp_path / "out"
    code, _, err = run_cli(["classify", model, picks, "-t", ts34, "-o", out, "-q", "-b", "cpu"], capsys)
    assert code == 0, err
    pred, errs = predictions(out), errors(out)
    assert list(pred["tomo_name"]) == ["TS_34"]
    assert (
        len(errs) == 1 and "TS_3:" in errs["id"][0] and "no tomogram matches name 'TS_3'" in errs["reason"][0]
    )
    only = _picks(tmp_path / "only3.star", ["TS_3"])
    line = one_error_line(
        run_cli(["classify", model, only, "-t", ts34, "-o", tmp_path / "o2", "-q", "-b", "cpu"], capsys), only
    )
    assert "TS_3" in line


def test_documented_decorations_match(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    """TS_12 <-> TS_12_bin4.mrc (before: 'no tomogram matches' once TS_1.mrc was also given),
    rec_ prefix, Warp's _10.00Apx suffix, .rec and .mrc.gz files, Warp's .tomostar names."""
    tomos = tmp_path / "tomos"
    tomos.mkdir()
    _tomogram(tomos / "TS_1.mrc", 1)
    _tomogram(tomos / "TS_12_bin4.mrc", 2)
    _tomogram(tomos / "rec_TS_5.rec", 3)
    _tomogram(tomos / "TS_7_10.00Apx.mrc", 4)
    gz = _tomogram(tmp_path / "TS_9.mrc", 5)
    (tomos / "TS_9.mrc.gz").write_bytes(gzip.compress(gz.read_bytes()))
    gz.unlink()
    names = ["TS_12", "TS_1", "TS_5", "TS_7", "TS_9.tomostar"]
    picks = _picks(tmp_path / "picks.star", names)
    out = tmp_path / "out"
    code, _, err = run_cli(["classify", model, picks, "-t", tomos, "-o", out, "-q", "-b", "cpu"], capsys)
    assert code == 0, err
    pred = predictions(out)
    assert sorted(pred["tomo_name"]) == sorted(names), pred
    by_name = dict(zip(pred["tomo_name"], pred["path"], strict=True))
    assert by_name["TS_12"].endswith("TS_12_bin4.mrc") and by_name["TS_1"].endswith("TS_1.mrc")
    assert by_name["TS_5"].endswith("rec_TS_5.rec") and by_name["TS_9.tomostar"].endswith("TS_9.mrc.gz")
    assert not (out / "errors.csv").exists() or len(errors(out)) == 0


def test_ambiguous_match_is_an_error_row_naming_the_candidates(
    model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    tomos = tmp_path / "tomos"
    tomos.mkdir()
    _tomogram(tomos / "TS_12_bin4.mrc", 1)
    _tomogram(tomos / "TS_12_bin8.mrc", 2)
    _tomogram(tomos / "TS_2.mrc", 3)
    picks = _picks(tmp_path / "picks.star", ["TS_12", "TS_2", "TS_12_bin8"])
    out = tmp_path / "out"
    code, _, err = run_cli(["classify", model, picks, "-t", tomos, "-o", out, "-q", "-b", "cpu"], capsys)
    assert code == 0, err
    assert sorted(predictions(out)["tomo_name"]) == ["TS_12_bin8", "TS_2"]  # the exact name wins
    reason = errors(out)["reason"][0]
    assert "ambiguous" in reason and "TS_12_bin4.mrc" in reason and "TS_12_bin8.mrc" in reason


# ---------------------------------------------------------------------------------------------
# 2. MRC axis order (mapc/mapr/maps) and anisotropic voxels


ORDERS = [(1, 2, 3), (2, 1, 3), (3, 1, 2)]


def test_axis_orders_give_identical_predictions(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    """Before: the same density stored 2-1-3 was read mirrored and got other probabilities."""
    from cryoshift.runtime.mrc import read_volume

    vols = [density(s) for s in range(3)]
    probs = []
    for order in ORDERS:
        folder = tmp_path / "o{}{}{}".format(*order)
        folder.mkdir()
        for i, vol in enumerate(vols):
            path = write_ordered(folder / f"v{i}.mrc", vol, order)
            assert np.array_equal(read_volume(path), vol), order
        out = tmp_path / f"out{folder.name}"
        code, _, err = run_cli(["classify", model, folder, "-o", out, "-q", "-b", "cpu"], capsys)
        assert code == 0, err
        pred = predictions(out).sort_values("id")
        probs.append(pred[[c for c in pred.columns if c.startswith("prob_")]].to_numpy())
    np.testing.assert_allclose(probs[1], probs[0], atol=1e-6)
    np.testing.assert_allclose(probs[2], probs[0], atol=1e-6)
    assert np.abs(np.diff(probs[0], axis=0)).max() > 1e-3  # the volumes are told apart at all


def test_axis_order_in_tomograms_and_info(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    tomo = density(7, (24, 40, 32))
    write_ordered(tmp_path / "TS_01.mrc", tomo, (1, 2, 3))
    other = tmp_path / "other"
    other.mkdir()
    write_ordered(other / "TS_01.mrc", tomo, (3, 1, 2))
    picks = _picks(tmp_path / "picks.star", ["TS_01", "TS_01"])
    results = []
    for where in (tmp_path, other):
        out = where / "out"
        code, _, err = run_cli(
            ["classify", model, picks, "-t", where / "TS_01.mrc", "-o", out, "-q", "-b", "cpu"], capsys
        )
        assert code == 0, err
        results.append(predictions(out)["confidence"].to_numpy())
    np.testing.assert_allclose(results[0], results[1], atol=1e-6)
    code, out, err = run_cli(["info", other / "TS_01.mrc"], capsys)
    assert code == 0, err
    assert "24, 40, 32" in out.replace(" x ", ", ") and "3-1-2" in out


def test_anisotropic_voxels_reported_by_info_refused_by_classify(
    model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """EMD-3001 style: order 3-1-2 with 0.448/0.3925/0.459 A voxels (before: one voxel size)."""
    path = write_ordered(tmp_path / "emd.map", density(1, (25, 43, 73)), (3, 1, 2), (0.448, 0.3925, 0.459))
    code, out, err = run_cli(["info", path], capsys)
    assert code == 0, err
    assert "0.448 x 0.3925 x 0.459" in out and "anisotropic" in out
    assert "25 x 43 x 73" in out  # (Z, Y, X) after honouring the axis order
    cube = write_ordered(tmp_path / "cube.mrc", density(2), (1, 2, 3), (10.0, 10.0, 12.0))
    line = one_error_line(
        run_cli(
            ["classify", model, cube, "-o", tmp_path / "o", "-q", "-b", "cpu", "--ignore-voxel-size"], capsys
        ),
        cube,
    )
    assert "anisotropic" in line and "10 x 10 x 12" in line


def test_train_refuses_anisotropic_target(tmp_path: Path) -> None:
    from cryoshift.runtime.errors import InputError
    from cryoshift.runtime.sources import VolumeCache, load_item, plan_inputs

    cube = write_ordered(tmp_path / "cube.mrc", density(2), (1, 2, 3), (10.0, 10.0, 12.0))
    good = write_volume(tmp_path / "good.mrc", density(3), voxel_size=VOXEL)
    plan = plan_inputs([str(good), str(cube)], BOX, VOXEL)
    bad = [it for it in plan.items if it.kind == "error"]
    assert len(bad) == 1 and "anisotropic" in bad[0].error
    with pytest.raises(InputError, match="anisotropic"):  # the training target loader's path
        load_item(
            plan.items[0]._replace(kind="file", path=str(cube)),
            np.zeros((BOX,) * 3, np.float32),
            VolumeCache(),
            VOXEL,
        )


def test_simulate_structure_axis_order(tmp_path: Path) -> None:
    from cryoshift.runtime.errors import InputError
    from cryoshift.training.simulate.structures import load_structures

    vol = density(4, (20, 24, 28))
    vol[vol < 1.5] = 0
    box = 2 * BOX  # the scattered density spans 200-280 A: it must fit the box's sphere (structures.py)
    a = load_structures([str(write_ordered(tmp_path / "a.mrc", vol, (1, 2, 3)))], box, VOXEL)
    b = load_structures([str(write_ordered(tmp_path / "b.mrc", vol, (2, 1, 3)))], box, VOXEL)
    np.testing.assert_allclose(a.maps, b.maps, atol=1e-6)
    with pytest.raises(InputError, match="anisotropic"):
        load_structures([str(write_ordered(tmp_path / "c.mrc", vol, (1, 2, 3), (10, 10, 13)))], box, VOXEL)


# ---------------------------------------------------------------------------------------------
# 4. one bad explicit input never stops the batch; 7. one suffix table


def test_bad_explicit_inputs_become_error_rows(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    """Before: 40 inputs including a dangling link, an empty folder and a non-MRC exited 2, nothing done."""
    good = [write_volume(tmp_path / f"good{i}.mrc", density(i), voxel_size=VOXEL) for i in range(30)]
    os.symlink(tmp_path / "gone.mrc", tmp_path / "dangling.mrc")
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "junk.mrc").write_bytes(b"junk" * 300)
    unreadable = write_volume(tmp_path / "locked.mrc", density(99), voxel_size=VOXEL)
    unreadable.chmod(0)
    wrong_box = write_stack(tmp_path / "big.mrcs", np.zeros((2, 20, 20, 20), np.float32), voxel_size=VOXEL)
    bad = [
        tmp_path / "dangling.mrc",
        tmp_path / "empty",
        tmp_path / "notes.txt",
        tmp_path / "junk.mrc",
        tmp_path / "missing.mrc",
        unreadable,
        wrong_box,
        tmp_path / "nothing*.mrc",
        tmp_path / "no.star",
        tmp_path / "empty.star",
    ]
    (tmp_path / "empty.star").write_text("")
    out = tmp_path / "out"
    try:
        code, _, err = run_cli(["classify", model, *good, *bad, "-o", out, "-q", "-b", "cpu"], capsys)
    finally:
        unreadable.chmod(0o644)
    assert code == 0, err
    assert len(predictions(out)) == 30 + (1 if os.geteuid() == 0 else 0)  # root reads mode-0 files
    errs = errors(out)
    reasons = dict(zip(errs["path"], errs["reason"], strict=True))
    assert "dangling symbolic link" in reasons[str(tmp_path / "dangling.mrc")]
    assert "empty folder" in reasons[str(tmp_path / "empty")]
    assert "no such file" in reasons[str(tmp_path / "missing.mrc")]
    assert "20x20x20" in reasons[str(wrong_box)]
    assert "matches no files" in reasons[str(tmp_path / "nothing*.mrc")]
    assert not any("Errno" in r for r in reasons.values()), reasons
    assert len(errs) == len(bad) - (1 if os.geteuid() == 0 else 0)


def test_glob_listed_bad_files_have_clean_reasons(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    d = tmp_path / "subs"
    d.mkdir()
    for i in range(3):
        write_volume(d / f"a{i}.mrc", density(i), voxel_size=VOXEL)
    os.symlink(d / "gone.mrc", d / "a9.mrc")
    out = tmp_path / "out"
    code, _, err = run_cli(["classify", model, str(d / "*.mrc"), "-o", out, "-q", "-b", "cpu"], capsys)
    assert code == 0, err
    reason = errors(out)["reason"][0]
    assert "dangling symbolic link" in reason and "Errno" not in reason


def test_one_suffix_table(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    """Before: a folder of .mrc.gz 'matches no files'; info x.map.bz2 said 'unknown file type'."""
    d = tmp_path / "gz"
    d.mkdir()
    for i in range(3):
        raw = write_volume(tmp_path / f"v{i}.mrc", density(i), voxel_size=VOXEL).read_bytes()
        (d / f"v{i}.mrc.gz").write_bytes(gzip.compress(raw))
    out = tmp_path / "out"
    code, _, err = run_cli(["classify", model, d, "-o", out, "-q", "-b", "cpu"], capsys)
    assert code == 0, err
    assert len(predictions(out)) == 3
    bz = tmp_path / "x.map.bz2"
    bz.write_bytes(bz2.compress((tmp_path / "v0.mrc").read_bytes()))
    code, text, err = run_cli(["info", bz], capsys)
    assert code == 0, err
    assert "bzip2" in text


@pytest.fixture()
def no_scipy_env(tmp_path: Path) -> dict[str, str]:
    return blocked_env(tmp_path / "block", "scipy")


def _cli(
    args: list[object], env: dict[str, str] | None = None, timeout: int = 120
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cryoshift.runtime.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


# ---------------------------------------------------------------------------------------------
# 3. one writer per output folder


def test_held_output_folder_is_refused_naming_the_pid(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    from cryoshift.runtime.lock import FolderLock, lock_name

    vol = write_volume(tmp_path / "v.mrc", density(0), voxel_size=VOXEL)
    out = tmp_path / "out"
    out.mkdir()
    with FolderLock(out, lock_name(None)):
        line = one_error_line(
            run_cli(["classify", model, vol, "-o", out, "-q", "-b", "cpu", "--resume"], capsys), out
        )
        assert f"pid {os.getpid()}" in line
        # another shard of the same run writes other files: it is not blocked
        code, _, err = run_cli(
            ["classify", model, vol, "-o", out, "-q", "-b", "cpu", "--shard", "0/2"], capsys
        )
        assert code == 0, err
    code, _, err = run_cli(["classify", model, vol, "-o", out, "-q", "-b", "cpu"], capsys)  # lock gone
    assert code == 0, err


def test_refused_run_leaves_no_empty_output_folder(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    out = tmp_path / "fresh_out"
    args = ["classify", model, tmp_path / "missing.mrc", "-o", out, "-q", "-b", "cpu"]
    code, _, err = run_cli(args, capsys)
    assert code == 2, err
    assert not out.exists()  # only the lock file would have been there


def _classify_noise_stack(model: Path, tmp_path: Path, n: int) -> tuple[list[str], Path]:
    """A subprocess `classify` command over a stack of n noise volumes, and its output folder."""
    stack = write_stack(
        tmp_path / "s.mrcs",
        np.random.default_rng(0).normal(0, 1, (n, BOX, BOX, BOX)).astype(np.float32),
        voxel_size=VOXEL,
    )
    out = tmp_path / "out"
    return [
        sys.executable,
        "-m",
        "cryoshift.runtime.cli",
        "classify",
        str(model),
        str(stack),
        "-o",
        str(out),
        "-q",
    ], out


def test_two_concurrent_resume_runs_never_duplicate_rows(model: Path, tmp_path: Path) -> None:
    """Before: both runs exited 0 and 2,300-2,450 of 3,000 rows were written twice (CSV and STAR)."""
    cmd, out = _classify_noise_stack(model, tmp_path, 3000)
    cmd += ["-b", "cpu", "--resume", "--batch-size", "32"]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    results = [(p.wait(timeout=300), p.stderr.read() if p.stderr else "") for p in procs]
    for code, err in results:
        assert code in (0, 2), err
        if code == 2:
            lines = err.strip().splitlines()
            assert len(lines) == 1 and "pid " in lines[0] and "writing to this folder" in lines[0], err
    assert any(code == 0 for code, _ in results)
    pred = predictions(out)
    assert len(pred) == 3000 and pred["id"].is_unique
    import starfile

    star_rows = starfile.read(out / "predictions.star")
    assert len(star_rows) == 3000 and star_rows["rlnImageName"].is_unique


# ---------------------------------------------------------------------------------------------
# 8. devices and engines


def test_classify_leaves_the_callers_environment_alone(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryoshift.runtime import classify

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    vol = write_volume(tmp_path / "v.mrc", density(0), voxel_size=VOXEL)
    classify(model, [str(vol)], tmp_path / "out", backend="cpu", devices=[0], progress=False)
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_ray_driver_reads_an_engine_without_running_it(model: Path, tmp_path: Path) -> None:
    """The Ray driver only needs metadata and a hash: a GPU-only engine must not be opened on CPU."""
    from cryoshift.runtime.distributed import driver_model
    from cryoshift.runtime.engine_sidecar import write_engine_sidecar
    from cryoshift.runtime.metadata import read_onnx_metadata

    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not really an engine")
    write_engine_sidecar(
        engine, read_onnx_metadata(model), "NVIDIA H100 80GB HBM3", "11.0.0", model, (1, 64, 256)
    )
    local = driver_model(engine, "auto")
    assert local.backend == "engine" and local.metadata.box_size == BOX and len(local.sha256) == 64
    assert driver_model(model, "cpu").metadata.box_size == BOX


def test_one_gpu_name_lookup_for_sidecars() -> None:
    from cryoshift.runtime import backends, engine_sidecar

    assert "query_gpu_name" in inspect_source(backends.gpu_name)
    assert engine_sidecar.query_gpu_name(0) == backends.gpu_name(0)


def inspect_source(fn: object) -> str:
    import inspect

    return inspect.getsource(fn)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# 9. messages


def test_onnx_external_data_refusal_says_what_is_missing(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    import onnx

    proto = onnx.load(model)
    ext = tmp_path / "ext.onnx"
    onnx.save(
        proto,
        ext,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="ext.onnx.data",
        size_threshold=0,
    )
    (tmp_path / "ext.onnx.data").unlink()
    vol = write_volume(tmp_path / "v.mrc", density(0), voxel_size=VOXEL)
    for argv in (["info", ext], ["classify", ext, vol, "-o", tmp_path / "o", "-q", "-b", "cpu"]):
        line = one_error_line(run_cli(argv, capsys), ext)
        assert "ext.onnx.data" in line and "missing" in line and "(Fail)" not in line


# ---------------------------------------------------------------------------------------------
# 6. evaluate without scipy, and a model without a features output


def _labelled(tmp_path: Path, classes: list[str]) -> Path:
    from cryoshift.runtime.dataset import write_dataset

    vols = np.stack([density(i) for i in range(6)])
    return write_dataset(
        tmp_path / "ds", vols, labels=[0, 1, 2, 0, 1, 2], class_names=classes[:3], voxel_size=VOXEL
    )


def test_evaluate_onnx_without_scipy(model: Path, tmp_path: Path, no_scipy_env: dict[str, str]) -> None:
    """Before: a traceback (calibrate.py imported scipy at the top)."""
    import onnx

    proto = onnx.load(model)
    classes = json_value(proto, "cryoshift.class_names")
    data = _labelled(tmp_path, list(classes))
    blocked = subprocess.run([sys.executable, "-c", "import scipy"], env=no_scipy_env, capture_output=True)
    assert blocked.returncode != 0  # the blocker works
    done = _cli(["evaluate", model, data, "--out", tmp_path / "rep"], env=no_scipy_env)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "accuracy" in done.stdout


def json_value(proto: object, key: str) -> object:
    import json

    return json.loads(next(p.value for p in proto.metadata_props if p.key == key))  # type: ignore[attr-defined]


def test_evaluate_model_without_features_output(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    """Before: accepted by classify, an onnxruntime traceback in evaluate."""
    import onnx

    proto = onnx.load(model)
    kept = [o for o in proto.graph.output if o.name != "features"]
    del proto.graph.output[:]
    proto.graph.output.extend(kept)
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, bare)
    classes = json_value(proto, "cryoshift.class_names")
    code, out, err = run_cli(
        ["evaluate", bare, _labelled(tmp_path, list(classes)), "--out", tmp_path / "rep"], capsys
    )
    assert "Traceback" not in err and "uncaught" not in str(code)
    if code == 0:
        assert "accuracy" in out
    else:
        one_error_line((code, out, err), bare)


# ---------------------------------------------------------------------------------------------
# 10. info --validate: an exit code scripts can trust


def test_info_validate(tmp_path: Path, capsys: Capsys) -> None:
    """Before: info exited 0 on 2-D, NaN and Inf maps, so scripts could not tell."""
    good = write_volume(tmp_path / "good.mrc", density(0), voxel_size=VOXEL)
    flat = write_volume(tmp_path / "flat.mrc", density(0)[:1], voxel_size=VOXEL)
    nan = density(1)
    nan[0, 0, 0] = np.nan
    nan[1, 1, 1] = np.inf
    nanf = write_volume(tmp_path / "nan.mrc", nan, voxel_size=VOXEL)
    aniso = write_ordered(tmp_path / "aniso.mrc", density(2), (1, 2, 3), (10.0, 10.0, 12.0))
    junk = tmp_path / "junk.mrc"
    junk.write_bytes(b"x" * 2000)
    code, out, err = run_cli(["info", "--validate", good], capsys)
    assert code == 0 and out.strip() == f"{good}: ok", (out, err)
    for bad, words in ((flat, "2-D"), (nanf, "2 NaN/Inf"), (aniso, "anisotropic"), (junk, "not an MRC")):
        code, out, err = run_cli(["info", "--validate", bad], capsys)
        assert code == 1, (bad, out, err)
        assert words in out and all(line.startswith(f"{bad}: ") for line in out.strip().splitlines()), out
    code, out, _ = run_cli(["info", "--validate", good, flat], capsys)
    assert code == 1 and len(out.strip().splitlines()) == 2
    code, out, _ = run_cli(["info", flat], capsys)  # plain info still describes it
    assert code == 0


def test_weights_only_refusal_shows_the_key_line(tmp_path: Path, capsys: Capsys) -> None:
    """Before: torch's advice to retry with weights_only=False, without the refused global."""
    import pickle

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, ("echo pwned",))

    bad = tmp_path / "model.pt"
    with open(bad, "wb") as fh:
        pickle.dump({"format": "x", "p": Payload()}, fh, protocol=2)
    line = one_error_line(run_cli(["export", bad, "-o", tmp_path / "deploy"], capsys), bad).split(str(bad))[1]
    assert "unsupported GLOBAL posix.system" in line and "weights_only" not in line and "False" not in line


def test_disk_full_names_the_file(tmp_path: Path) -> None:
    from cryoshift.runtime.ledger import Ledger

    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    ledger = Ledger.__new__(Ledger)
    ledger.path = tmp_path / "predictions.csv"
    ledger._fh = open("/dev/full", "w")  # noqa: SIM115 - closed below
    ledger._line = lambda row: ",".join(map(str, row)) + "\n"  # type: ignore[method-assign]
    ledger.done = set()
    with pytest.raises(OSError) as caught:
        ledger.append([["a", 1]] * 10000)
    with contextlib.suppress(OSError):  # closing flushes what is left: /dev/full refuses it again
        ledger._fh.close()
    assert caught.value.filename == str(tmp_path / "predictions.csv")


def test_sigint_says_rerun_with_resume(model: Path, tmp_path: Path) -> None:
    import signal
    import time

    cmd, out = _classify_noise_stack(model, tmp_path, 4000)
    # A process started with SIGINT ignored (as an earlier test in the suite may leave this one, or a
    # shell leaves a background job) keeps ignoring Ctrl-C, as it should; the user's terminal does not.
    proc = subprocess.Popen(
        [*cmd, "-b", "cpu", "--batch-size", "8"],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while not (out / "predictions.csv").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    if proc.poll() is not None:
        pytest.skip("the run finished before it could be interrupted")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    rows = len((out / "predictions.csv").read_text().splitlines()) - 1
    if proc.returncode == 0 and rows == 4000:  # the signal came after the last row: nothing to interrupt
        pytest.skip("the run finished before the interrupt reached it")
    assert proc.returncode == 130, f"exit {proc.returncode} after {rows} of 4000 rows: {err}"
    assert err.strip().splitlines()[-1] == "cryoshift: interrupted; rerun with --resume to continue", err
    assert "Traceback" not in err


# ---------------------------------------------------------------------------------------------
# 5. huge tables: an absurd line is refused in one line, before any parser allocates for it


def test_table_with_a_huge_line_is_refused(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    """Before: a 1 GB line made pyarrow raise ArrowMemoryError at 4.2 GiB (info and classify).
    The scan is the same for any length above the 1 MiB limit; 64 MiB keeps the test fast."""
    vol = write_volume(tmp_path / "TS_01.mrc", density(0, (24, 40, 32)), voxel_size=VOXEL)
    for name, head in (("picks.csv", b"x,y,z\n1,2,3\n"), ("picks.star", b"data_\nloop_\n_rlnCoordinateX\n")):
        path = tmp_path / name
        with open(path, "wb") as fh:
            fh.write(head)
            fh.write(b"7" * (64 << 20))
            fh.write(b"\n")
        for argv in (
            ["info", path],
            ["classify", model, path, "-t", vol, "-o", tmp_path / "o", "-q", "-b", "cpu"],
        ):
            line = one_error_line(run_cli(argv, capsys), path)
            assert "longer than 1 MiB" in line


def test_unexpected_reader_failure_is_an_error_row(
    model: Path, tmp_path: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader library failing on one file in a way nobody foresaw (mrcfile divided by a zero mz)
    used to kill its reader thread, lose that thread's chunk (good files too) and exit 0 with
    fewer rows. Now that file is an error row naming the failure and the others are classified."""
    from cryoshift.runtime import readers

    good = [write_volume(tmp_path / f"g{i}.mrc", density(i), voxel_size=VOXEL) for i in range(3)]
    real = readers.load_item

    def load_item(item, out, cache, voxel_size=None):  # type: ignore[no-untyped-def]
        if item.path.endswith("g1.mrc"):
            raise ZeroDivisionError("integer division or modulo by zero")
        return real(item, out, cache, voxel_size)

    monkeypatch.setattr(readers, "load_item", load_item)
    out = tmp_path / "o"
    code, _, err = run_cli(["classify", model, *good, "-o", out, "-q", "-b", "cpu"], capsys)
    assert code == 0, err
    assert sorted(Path(p).name for p in predictions(out)["path"]) == ["g0.mrc", "g2.mrc"]
    (reason,) = errors(out)["reason"]
    assert reason == "unexpected error reading it: ZeroDivisionError: integer division or modulo by zero"


def test_merge_refuses_shards_of_other_inputs_or_settings(
    model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """A shard is every n-th planned item, so shards of different inputs lose or repeat items, and
    shards with another --unknown-threshold (or contrast, tomograms ...) mean different things per
    row. Both used to merge silently ("classified 5 subtomograms" of 7)."""
    stack = write_stack(tmp_path / "s.mrcs", np.stack([density(i) for i in range(4)]), voxel_size=VOXEL)
    files = tmp_path / "files"
    for i in range(3):
        write_volume(files / f"v{i}.mrc", density(10 + i), voxel_size=VOXEL)

    def shard(out: str, i: int, *args: object) -> None:
        argv = ["classify", model, *args, "-o", tmp_path / out, "-q", "-b", "cpu", "--shard", f"{i}/2"]
        assert run_cli(argv, capsys)[0] == 0

    shard("a", 0, files, stack)
    shard("fewer", 1, files)
    shard("strict", 1, files, stack, "--unknown-threshold", "0.9")
    line = one_error_line(run_cli(["merge", tmp_path / "a", tmp_path / "fewer"], capsys), tmp_path / "a")
    assert "different inputs" in line, line
    line = one_error_line(run_cli(["merge", tmp_path / "a", tmp_path / "strict"], capsys), tmp_path / "a")
    assert "different --unknown-threshold" in line, line
    shard("b", 1, files, stack)
    assert run_cli(["merge", tmp_path / "a", tmp_path / "b", "-o", tmp_path / "m"], capsys)[0] == 0
    assert len(pd.read_csv(tmp_path / "m" / "predictions.csv")) == 7
    manifest = tmp_path / "b" / "manifest.shard-1-of-2.json"
    good = manifest.read_text()
    broken_ones = (
        good[: len(good) // 2],  # cut short, or not a manifest: a traceback before
        "[1, 2]",
        "[" * 100_000 + "]" * 100_000,  # nested too deep: RecursionError escaped json.loads
        good.replace('"settings": {', '"settings": null, "x": {', 1),  # AttributeError on settings
    )
    for broken in broken_ones:
        manifest.write_text(broken)
        one_error_line(
            run_cli(["merge", tmp_path / "a", tmp_path / "b", "-o", tmp_path / "m"], capsys), manifest
        )


def test_a_volume_or_an_empty_file_given_as_a_checkpoint_is_named_for_what_it_is(
    tmp_path: Path, capsys: Capsys
) -> None:
    """Before: torch's unpickler error ("Unsupported operand 16") for an MRC handed over as a model."""
    from cryoshift.runtime import write_volume

    volume = write_volume(tmp_path / "particle.mrc", np.zeros((8, 8, 8), np.float32), voxel_size=10.0)
    line = one_error_line(run_cli(["export", volume, "-o", tmp_path / "deploy"], capsys), volume)
    assert "the file is an MRC volume, not a torch.save archive" in line
    empty = tmp_path / "model.pt"
    empty.write_bytes(b"")
    line = one_error_line(run_cli(["export", empty, "-o", tmp_path / "deploy"], capsys), empty)
    assert "the file is empty" in line
