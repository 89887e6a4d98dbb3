"""Hostile and unusual input files through the real CLI.

Why: users feed cryoshift files it never saw - truncated, lying headers, wrong formats,
pickles with payloads. The contract is one line ``cryoshift: error: PATH: REASON`` on stderr
and exit code 2 (never a traceback), or, in batch work, an errors-table row while the good
items are still classified. Every file here is built in ``tmp_path`` by the test itself.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cryoshift.runtime.cli import main
from cryoshift.runtime.mrc import write_stack, write_volume

BOX = 16
VOXEL = 10.0
Capsys = pytest.CaptureFixture[str]


# ---------------------------------------------------------------------------------------------
# helpers


def _to_stderr(message: Warning | str, category: type[Warning], filename: str, lineno: int,
               file: object = None, line: str | None = None) -> None:
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def run_cli(argv: list[object], capsys: Capsys) -> tuple[int | str, str, str]:
    """Run the CLI in-process; an exception escaping ``main`` is what a user would see as a traceback."""
    capsys.readouterr()
    try:
        with warnings.catch_warnings():
            # As in a terminal: library warnings would print on stderr (pytest would hide them).
            warnings.simplefilter("default")
            for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.simplefilter("ignore", category)
            warnings.showwarning = _to_stderr
            code: int | str = main([str(a) for a in argv])
    except BaseException as exc:
        import traceback

        code = "uncaught " + "".join(traceback.format_exception_only(type(exc), exc)).strip()
    out, err = capsys.readouterr()
    return code, out, err


def assert_error(result: tuple[int | str, str, str], name: str | Path, code: int = 2) -> str:
    """Exit ``code``, exactly one stderr line starting 'cryoshift: error:', naming ``name``."""
    got, _out, err = result
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert got == code, f"exit {got!r}; stderr: {err!r}"
    assert "Traceback" not in err
    assert len(lines) == 1, f"stderr is not one line: {err!r}"
    assert lines[0].startswith("cryoshift: error: "), lines[0]
    assert str(name) in lines[0], f"{name} not named in {lines[0]!r}"
    return lines[0]


def raw_mrc(path: Path, nx: int = BOX, ny: int = BOX, nz: int = BOX, mode: int = 2, data: bytes | None = None,
            nsymbt: int = 0, cella: float | None = None, mx: int | None = None, ispg: int = 0,
            mz: int | None = None) -> Path:
    """A hand-made MRC2014 header (little-endian) followed by ``data`` (default: zeros of the right size)."""
    ints = np.zeros(56, "<i4")
    ints[:4] = [nx, ny, nz, mode]
    ints[7:10] = [mx if mx is not None else nx, ny, mz if mz is not None else nz]
    ints[16:19] = [1, 2, 3]
    ints[22], ints[23] = ispg, nsymbt
    head = bytearray(ints.tobytes())
    cell = cella if cella is not None else VOXEL * (mx if mx is not None else nx)
    head[40:52] = struct.pack("<3f", cell, VOXEL * ny, VOXEL * (mz if mz is not None else nz))
    head[52:64] = struct.pack("<3f", 90.0, 90.0, 90.0)
    head = head + bytes(1024 - len(head))
    head[208:212] = b"MAP "
    head[212:216] = b"\x44\x44\x00\x00"
    if data is None:
        itemsize = {0: 1, 1: 2, 2: 4, 6: 2, 12: 2}.get(mode, 4)
        data = bytes(max(nx * ny * nz * itemsize, 0))
    ext = bytes(nsymbt) if 0 < nsymbt <= 65536 else b""  # a lying nsymbt gets no bytes
    path.write_bytes(bytes(head) + ext + data)
    return path


def volumes(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, (n, BOX, BOX, BOX)).astype(np.float32)


def errors_table(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "errors.csv")


def predictions(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "predictions.csv")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A genuine tiny ONNX classifier with cryoshift metadata (see tests/runtime/conftest.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "_runtime_conftest", Path(__file__).resolve().parents[1] / "runtime" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod.build_model(tmp_path_factory.mktemp("model") / "model.onnx", box=BOX, voxel=VOXEL)


# ---------------------------------------------------------------------------------------------
# hostile MRC files: `info` and `classify` of a single bad file refuse with one line


def _put(p: Path, data: bytes | str) -> Path:
    """Write ``data`` to ``p`` and return ``p`` (for the tables of hostile files below)."""
    if isinstance(data, str):
        p.write_text(data)
    else:
        p.write_bytes(data)
    return p


def _zero(p: Path) -> Path:
    p.write_bytes(b"")
    return p


def _random(p: Path) -> Path:
    p.write_bytes(np.random.default_rng(1).bytes(5000))
    return p


def _short(p: Path) -> Path:
    p.write_bytes(b"MAP " * 10)
    return p


HOSTILE_MRC = {
    "zero_bytes.mrc": _zero,
    "random_bytes.mrc": _random,
    "shorter_than_header.mrc": _short,
    "negative_nx.mrc": lambda p: raw_mrc(p, nx=-16, data=b""),
    "zero_nz.mrc": lambda p: raw_mrc(p, nz=0, data=b""),
    "huge_dims.mrc": lambda p: raw_mrc(p, nx=2**31 - 1, ny=2**31 - 1, nz=2**31 - 1, data=bytes(4096)),
    "overflow_dims.mrc": lambda p: raw_mrc(p, nx=2**16, ny=2**16, nz=2**16, data=bytes(4096)),
    "mode3.mrc": lambda p: raw_mrc(p, mode=3, data=bytes(BOX**3 * 4)),
    "mode4.mrc": lambda p: raw_mrc(p, mode=4, data=bytes(BOX**3 * 8)),
    "mode101.mrc": lambda p: raw_mrc(p, nx=15, ny=15, nz=15, mode=101, data=bytes(15 * 15 * 8)),
    "mode_minus1.mrc": lambda p: raw_mrc(p, mode=-1, data=bytes(BOX**3 * 4)),
    "truncated.mrc": lambda p: raw_mrc(p, data=bytes(BOX**3 * 2)),
    "ext_past_end.mrc": lambda p: raw_mrc(p, nsymbt=10**9, data=b""),
    "ext_negative.mrc": lambda p: raw_mrc(p, nsymbt=-4096),
    "ext_huge_int.mrc": lambda p: raw_mrc(p, nsymbt=2**31 - 1, data=b""),
    "not_gzip.mrc.gz": lambda p: _put(p, b"\x1f\x8b" + np.random.default_rng(2).bytes(3000)),
    "bad_bzip2.mrc": lambda p: _put(p, b"BZh9" + np.random.default_rng(3).bytes(3000)),
    "text.mrc": lambda p: _put(p, "this is not an MRC file\n" * 100),
    "empty_gzip.mrc.gz": lambda p: _put(p, gzip.compress(b"")),
    "gzip_of_junk.mrc.gz": lambda p: _put(p, gzip.compress(b"junk" * 400)),
    "gzip_truncated.mrc.gz": lambda p: _put(p, gzip.compress(
        raw_mrc(p.with_suffix(".tmp"), data=volumes(1)[0].tobytes()).read_bytes())[:6000]),
    "gzip_short_data.mrc.gz": lambda p: _put(p, gzip.compress(
        raw_mrc(p.with_suffix(".tmp"), data=volumes(1)[0].tobytes()[:5000]).read_bytes())),
    "gzip_corrupt_middle.mrc.gz": lambda p: _put(p, _corrupt_middle(gzip.compress(
        raw_mrc(p.with_suffix(".tmp"), data=volumes(1)[0].tobytes()).read_bytes()))),
    "bzip2_corrupt.mrc.bz2": lambda p: _put(p, _corrupt_middle(__import__("bz2").compress(
        raw_mrc(p.with_suffix(".tmp"), data=volumes(1)[0].tobytes()).read_bytes()))),
}


def _corrupt_middle(blob: bytes) -> bytes:
    """Keep the compression header, scramble the stream after it."""
    mid = len(blob) // 2
    return blob[:40] + np.random.default_rng(8).bytes(mid - 40) + blob[mid:]


@pytest.mark.parametrize("name", sorted(HOSTILE_MRC))
def test_info_refuses_hostile_mrc(name: str, tmp_path: Path, capsys: Capsys) -> None:
    path = HOSTILE_MRC[name](tmp_path / name)
    assert_error(run_cli(["info", path], capsys), path)


@pytest.mark.parametrize("name", sorted(HOSTILE_MRC))
def test_classify_single_hostile_mrc_is_an_error_row(name: str, model: Path, tmp_path: Path,
                                                     capsys: Capsys) -> None:
    """One bad file among good ones: it lands in errors.csv, the good ones are classified."""
    d = tmp_path / "in"
    d.mkdir()
    for i, v in enumerate(volumes(2)):
        write_volume(d / f"good_{i}.mrc", v, voxel_size=VOXEL)
    bad = HOSTILE_MRC[name](d / f"bad_{name}")
    for extra in d.glob("*.tmp"):
        extra.unlink()
    out = tmp_path / "out"
    code, _, err = run_cli(["classify", model, d / "good_0.mrc", bad, d / "good_1.mrc", "-o", out, "-q",
                            "-b", "cpu"], capsys)
    assert code == 0, err
    assert "Traceback" not in err
    errs = errors_table(out)
    assert (len(errs) == 1 and str(bad) in errs.iloc[0].to_string()) or str(bad) in " ".join(
        errs.astype(str).to_numpy().ravel()), errs
    assert len(predictions(out)) == 2


def test_info_and_classify_refuse_a_single_bad_file_named_on_its_own(model: Path, tmp_path: Path,
                                                                      capsys: Capsys) -> None:
    """A single hostile file given alone: either a one-line refusal or an errors row, never a traceback."""
    bad = raw_mrc(tmp_path / "trunc.mrc", data=bytes(100))
    code, _, err = run_cli(["classify", model, bad, "-o", tmp_path / "o", "-q", "-b", "cpu"], capsys)
    assert "Traceback" not in err
    if code == 0:
        assert len(errors_table(tmp_path / "o")) == 1
    else:
        assert_error((code, "", err), bad)


# ---------------------------------------------------------------------------------------------
# unusual but readable MRC files


@pytest.mark.parametrize("cella", [0.0, -50.0, float("nan"), float("inf")])
def test_bad_voxel_size_in_header_is_unknown_not_a_crash(cella: float, model: Path, tmp_path: Path,
                                                         capsys: Capsys) -> None:
    path = raw_mrc(tmp_path / "vs.mrc", cella=cella, data=volumes(1)[0].tobytes())
    code, _out, err = run_cli(["info", path], capsys)
    assert code == 0 and "Traceback" not in err, err
    code, _, err = run_cli(["classify", model, path, "-o", tmp_path / "o", "-q", "-b", "cpu"], capsys)
    assert code == 0 and "Traceback" not in err, err
    assert len(predictions(tmp_path / "o")) == 1


def test_mx_zero_voxel_size(tmp_path: Path, capsys: Capsys) -> None:
    path = raw_mrc(tmp_path / "mx0.mrc", mx=0, data=volumes(1)[0].tobytes())
    code, _, err = run_cli(["info", path], capsys)
    assert code == 0 and "Traceback" not in err, err


def test_odd_sized_float16_and_uint16_volumes_are_read(tmp_path: Path, capsys: Capsys) -> None:
    for mode, dtype in ((12, np.float16), (6, np.uint16), (0, np.int8), (1, np.int16)):
        arr = (np.arange(15 * 13 * 11) % 50).astype(dtype)
        path = raw_mrc(tmp_path / f"odd_{mode}.mrc", nx=11, ny=13, nz=15, mode=mode, data=arr.tobytes())
        code, _out, err = run_cli(["info", path], capsys)
        assert code == 0 and "Traceback" not in err, (mode, err)


def test_nan_inf_voxels_and_constant_volume(model: Path, tmp_path: Path,
                                            capsys: Capsys) -> None:
    """NaN/Inf volumes are error rows; an all-constant volume (std 0) gives finite outputs."""
    d = tmp_path / "in"
    d.mkdir()
    v = volumes(3)
    nan, inf = v[0].copy(), v[1].copy()
    nan[3, 3, 3] = np.nan
    inf[0, 0, 0] = -np.inf
    write_volume(d / "a_nan.mrc", nan, voxel_size=VOXEL)
    write_volume(d / "b_inf.mrc", inf, voxel_size=VOXEL)
    write_volume(d / "c_const.mrc", np.full((BOX,) * 3, 7.5, np.float32), voxel_size=VOXEL)
    write_volume(d / "d_zero.mrc", np.zeros((BOX,) * 3, np.float32), voxel_size=VOXEL)
    write_volume(d / "e_good.mrc", v[2], voxel_size=VOXEL)
    out = tmp_path / "out"
    code, _, err = run_cli(["classify", model, d, "-o", out, "-q", "-b", "cpu"], capsys)
    assert code == 0, err
    errs = " ".join(errors_table(out).astype(str).to_numpy().ravel())
    assert "a_nan.mrc" in errs and "b_inf.mrc" in errs
    pred = predictions(out)
    assert len(pred) == 3
    scores = pred[["confidence", "shift_score"] + [c for c in pred.columns if c.startswith("prob_")]]
    assert np.isfinite(scores.to_numpy(dtype=np.float64)).all(), pred
    code, _, err = run_cli(["info", d / "a_nan.mrc"], capsys)
    assert code == 0 and "Traceback" not in err, err


def test_constant_volume_through_onnx_is_finite(model: Path) -> None:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    x = np.full((2, 1, BOX, BOX, BOX), 3.0, np.float32)
    x[1] = 0.0
    logits, feats = sess.run(["logits", "features"], {"subtomograms": x})
    assert np.isfinite(logits).all() and np.isfinite(feats).all()


def test_2d_image_non_cubic_and_wrong_box(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    d = tmp_path / "in"
    d.mkdir()
    raw_mrc(d / "a_image2d.mrc", nz=1, data=volumes(1)[0][0].tobytes())
    write_volume(d / "b_noncubic.mrc", np.ones((BOX, BOX, BOX + 4), np.float32), voxel_size=VOXEL)
    write_volume(d / "c_wrongbox.mrc", np.ones((BOX + 2,) * 3, np.float32), voxel_size=VOXEL)
    write_volume(d / "d_good.mrc", volumes(1)[0], voxel_size=VOXEL)
    out = tmp_path / "out"
    code, _, err = run_cli(["classify", model, d, "-o", out, "-q", "-b", "cpu"], capsys)
    assert code == 0, err
    assert len(errors_table(out)) == 3 and len(predictions(out)) == 1
    code, _, err = run_cli(["info", d / "a_image2d.mrc"], capsys)
    assert code == 0 and "Traceback" not in err, err
    # a 4-D stack of the wrong box can never work with this model: refused up front
    stack = write_stack(tmp_path / "wrong box.mrcs", np.zeros((3, 12, 12, 12), np.float32), voxel_size=VOXEL)
    assert_error(run_cli(["classify", model, stack, "-o", tmp_path / "o2", "-q", "-b", "cpu"], capsys), stack)
    # a stack header whose mz does not divide nz
    odd = raw_mrc(tmp_path / "odd_stack.mrcs", nz=BOX * 3 - 1, ispg=401, mz=BOX)
    code, _, err = run_cli(["classify", model, odd, "-o", tmp_path / "o3", "-q", "-b", "cpu"], capsys)
    assert "Traceback" not in err
    if code != 0:
        assert_error((code, "", err), odd)


# ---------------------------------------------------------------------------------------------
# picks tables


@pytest.fixture()
def tomo(tmp_path: Path) -> Path:
    t = np.random.default_rng(5).normal(0, 1, (24, 40, 32)).astype(np.float32)  # Z, Y, X
    return write_volume(tmp_path / "TS_01.mrc", t, voxel_size=VOXEL)


def _star(path: Path, df: pd.DataFrame) -> Path:
    import starfile

    starfile.write({"particles": df}, path)
    return path


STAR_BAD = {
    "empty.star": lambda p: _put(p, ""),
    "whitespace.star": lambda p: _put(p, "\n\n   \n"),
    "no_block.star": lambda p: _put(p, "# just a comment\nhello world\n"),
    "binary.star": lambda p: _put(p, np.random.default_rng(4).bytes(2000)),
    "no_coords.star": lambda p: _star(p, pd.DataFrame({"rlnTomoName": ["TS_01"], "rlnAngleRot": [1.0]})),
    "text_coords.star": lambda p: _put(p,
        "data_particles\n\nloop_\n_rlnTomoName #1\n_rlnCoordinateX #2\n_rlnCoordinateY #3\n"
        "_rlnCoordinateZ #4\nTS_01 abc def ghi\nTS_01 1 2 3\n"),
    "nan_coords.star": lambda p: _put(p,
        "data_particles\n\nloop_\n_rlnTomoName #1\n_rlnCoordinateX #2\n_rlnCoordinateY #3\n"
        "_rlnCoordinateZ #4\nTS_01 nan 5 5\nTS_01 8 8 8\n"),
    "dup_columns.star": lambda p: _put(p,
        "data_particles\n\nloop_\n_rlnTomoName #1\n_rlnCoordinateX #2\n_rlnCoordinateX #3\n"
        "_rlnCoordinateY #4\n_rlnCoordinateZ #5\nTS_01 8 9 8 8\n"),
    "loop_no_rows.star": lambda p: _put(p,
        "data_particles\n\nloop_\n_rlnTomoName #1\n_rlnCoordinateX #2\n_rlnCoordinateY #3\n"
        "_rlnCoordinateZ #4\n"),
    "ragged.star": lambda p: _put(p,
        "data_particles\n\nloop_\n_rlnTomoName #1\n_rlnCoordinateX #2\n_rlnCoordinateY #3\n"
        "_rlnCoordinateZ #4\nTS_01 8 8\nTS_01 8 8 8 9 9\n"),
    "missing_x.csv": lambda p: _put(p, "tomo,y,z\nTS_01,5,5\n"),
    "header_only.csv": lambda p: _put(p, "tomo,x,y,z\n"),
    "empty.csv": lambda p: _put(p, ""),
    "binary.csv": lambda p: _put(p, b"\xff\xfe\x00\x01" * 300),
    "quote.csv": lambda p: _put(p, 'tomo,x,y,z\n"TS_01,5,5,5\n'),
}


@pytest.mark.parametrize("name", sorted(STAR_BAD))
def test_bad_picks_tables_are_refused(name: str, model: Path, tomo: Path, tmp_path: Path,
                                      capsys: Capsys) -> None:
    """A table that cannot be read at all refuses the run (or, if readable, bad rows become errors)."""
    path = STAR_BAD[name](tmp_path / name)
    out = tmp_path / "out"
    code, _, err = run_cli(["classify", model, path, "-t", tomo, "-o", out, "-q", "-b", "cpu"], capsys)
    assert "Traceback" not in err, err
    if code == 0:  # readable table: every bad row must be an errors row, nothing silently lost
        n_rows = len(predictions(out)) + len(errors_table(out))
        assert n_rows >= 1 and len(errors_table(out)) >= 1, (name, err)
    else:
        assert_error((code, "", err), path)
    code, _, err = run_cli(["info", path], capsys)
    assert "Traceback" not in err, err
    if code != 0:
        assert_error((code, "", err), path)


def test_picks_outside_the_tomogram_become_error_rows(model: Path, tomo: Path, tmp_path: Path,
                                                      capsys: Capsys) -> None:
    picks = _star(tmp_path / "picks.star", pd.DataFrame({
        "rlnTomoName": ["TS_01"] * 4,
        "rlnCoordinateX": [16.0, 500.0, -40.0, 10.0],
        "rlnCoordinateY": [20.0, 10.0, 10.0, 10.0],
        "rlnCoordinateZ": [12.0, 10.0, -1e300, 1e300],
    }))
    out = tmp_path / "out"
    code, _, err = run_cli(["classify", model, picks, "-t", tomo, "-o", out, "-q", "-b", "cpu"], capsys)
    assert code == 0, err
    assert len(predictions(out)) == 1 and len(errors_table(out)) == 3


def test_relion5_centered_picks_outside_become_error_rows(model: Path, tomo: Path, tmp_path: Path,
                                                          capsys: Capsys) -> None:
    """Centred Angstrom picks outside the tomogram must not refuse the whole table."""
    picks = _star(tmp_path / "centered.star", pd.DataFrame({
        "rlnTomoName": ["TS_01"] * 3,
        "rlnCenteredCoordinateXAngst": [0.0, 10_000.0, -5.0],
        "rlnCenteredCoordinateYAngst": [0.0, 0.0, 5.0],
        "rlnCenteredCoordinateZAngst": [0.0, 0.0, -10_000.0],
    }))
    out = tmp_path / "out"
    code, _, err = run_cli(["classify", model, picks, "-t", tomo, "-o", out, "-q", "-b", "cpu"], capsys)
    assert code == 0, err
    assert len(predictions(out)) == 1 and len(errors_table(out)) == 2


def test_semicolon_csv_and_nan_row(model: Path, tomo: Path, tmp_path: Path,
                                   capsys: Capsys) -> None:
    semi = tmp_path / "semi.csv"
    semi.write_text("tomo;x;y;z\nTS_01;16;20;12\nTS_01;10,5;10.5;10\n")  # decimal comma (and point)
    out = tmp_path / "out"
    code, _, err = run_cli(["classify", model, semi, "-t", tomo, "-o", out, "-q", "-b", "cpu"], capsys)
    assert code == 0, err
    assert len(predictions(out)) == 2


# ---------------------------------------------------------------------------------------------
# per-particle listings (rlnImageName)


def test_listing_with_bad_references(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    write_stack(tmp_path / "stack.mrcs", volumes(3), voxel_size=VOXEL)
    listing = _star(tmp_path / "listing.star", pd.DataFrame({"rlnImageName": [
        "000001@stack.mrcs", "000009@stack.mrcs", "abc@stack.mrcs", "missing.mrc", "000002@nope.mrcs",
        "000003@stack.mrcs"]}))
    out = tmp_path / "out"
    code, _, err = run_cli(["classify", model, listing, "-o", out, "-q", "-b", "cpu"], capsys)
    assert code == 0, err
    assert len(predictions(out)) == 2 and len(errors_table(out)) == 4


def test_listing_slice_zero_is_refused(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    write_stack(tmp_path / "stack.mrcs", volumes(2), voxel_size=VOXEL)
    listing = _star(tmp_path / "l0.star", pd.DataFrame({"rlnImageName": ["000000@stack.mrcs"]}))
    code, _, err = run_cli(["classify", model, listing, "-o", tmp_path / "o", "-q", "-b", "cpu"], capsys)
    assert "Traceback" not in err
    if code != 0:
        assert_error((code, "", err), listing)


# ---------------------------------------------------------------------------------------------
# paths: directories, symlink loops, spaces and unicode


def test_directory_of_non_mrc_files(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    d = tmp_path / "junk"
    d.mkdir()
    (d / "a.txt").write_text("hello")
    (d / "b.png").write_bytes(b"\x89PNG")
    assert_error(run_cli(["classify", model, d, "-o", tmp_path / "o", "-q", "-b", "cpu"], capsys), d)
    code, _, err = run_cli(["info", d], capsys)
    assert "Traceback" not in err and code == 2, err


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks")
def test_symlink_loop(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    loop = tmp_path / "loop.mrc"
    os.symlink(loop, loop)
    assert_error(run_cli(["info", loop], capsys), loop)
    code, _, err = run_cli(["classify", model, loop, "-o", tmp_path / "o", "-q", "-b", "cpu"], capsys)
    assert "Traceback" not in err
    if code == 0:
        assert len(errors_table(tmp_path / "o")) == 1
    else:
        assert_error((code, "", err), loop)
    d = tmp_path / "dirloop"
    d.mkdir()
    os.symlink(d / "x.mrc", d / "x.mrc")
    write_volume(d / "y.mrc", volumes(1)[0], voxel_size=VOXEL)
    code, _, err = run_cli(["classify", model, d, "-o", tmp_path / "o2", "-q", "-b", "cpu"], capsys)
    assert code == 0 and "Traceback" not in err, err
    assert len(predictions(tmp_path / "o2")) == 1


def test_spaces_and_unicode_in_paths(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    d = tmp_path / "données été" / "sub tomos ✓"
    d.mkdir(parents=True)
    good = write_volume(d / "ribosome n°1 ü.mrc", volumes(1)[0], voxel_size=VOXEL)
    code, _, err = run_cli(["info", good], capsys)
    assert code == 0, err
    out = tmp_path / "résultats ä"
    code, _, err = run_cli(["classify", model, good, "-o", out, "-q", "-b", "cpu"], capsys)
    assert code == 0, err
    assert len(predictions(out)) == 1
    bad = d / "cassé ✗.mrc"
    bad.write_bytes(b"nope")
    assert_error(run_cli(["info", bad], capsys), bad)


# ---------------------------------------------------------------------------------------------
# models: garbage ONNX, ONNX without metadata, malicious checkpoints


def test_garbage_onnx(tmp_path: Path, capsys: Capsys) -> None:
    vol = write_volume(tmp_path / "v.mrc", volumes(1)[0], voxel_size=VOXEL)
    for name, payload in (("garbage.onnx", np.random.default_rng(6).bytes(4000)), ("empty.onnx", b""),
                          ("text.onnx", b"hello world\n")):
        bad = tmp_path / name
        bad.write_bytes(payload)
        assert_error(run_cli(["classify", bad, vol, "-o", tmp_path / "o", "-q", "-b", "cpu"], capsys), bad)
        assert_error(run_cli(["info", bad], capsys), bad)


def test_onnx_without_metadata(tmp_path: Path, capsys: Capsys, model: Path) -> None:
    import onnx

    m = onnx.load(str(model))
    del m.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(m, str(bare))
    vol = write_volume(tmp_path / "v.mrc", volumes(1)[0], voxel_size=VOXEL)
    assert_error(run_cli(["classify", bare, vol, "-o", tmp_path / "o", "-q", "-b", "cpu"], capsys), bare)
    # metadata present but lying (a string where a number is expected, bad JSON)
    m = onnx.load(str(model))
    for entry in m.metadata_props:
        if entry.key == "cryoshift.box_size":
            entry.value = '"sixteen"'
        if entry.key == "cryoshift.class_names":
            entry.value = "[not json"
    liar = tmp_path / "liar.onnx"
    onnx.save(m, str(liar))
    assert_error(run_cli(["classify", liar, vol, "-o", tmp_path / "o2", "-q", "-b", "cpu"], capsys), liar)
    code, _, err = run_cli(["info", liar], capsys)
    assert "Traceback" not in err
    if code != 0:
        assert_error((code, "", err), liar)


class _Payload:
    """Pickled, this object calls ``open(marker, 'w')`` on load: proof that unpickling ran code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_checkpoint_is_refused_and_does_not_run(tmp_path: Path,
                                                          capsys: Capsys) -> None:
    torch = pytest.importorskip("torch")
    marker = tmp_path / "PWNED"
    zipped = tmp_path / "evil.pt"
    torch.save({"format": "cryoshift.checkpoint/1", "x": _Payload(marker)}, zipped)
    legacy = tmp_path / "legacy.pt"
    with open(legacy, "wb") as fh:
        pickle.dump({"x": _Payload(marker)}, fh)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(np.random.default_rng(7).bytes(3000))
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    not_ours = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(3)}, not_ours)
    for bad in (zipped, legacy, garbage, empty, not_ours):
        assert_error(run_cli(["export", bad, "-o", tmp_path / "exp", "--no-progress"], capsys), bad)
        assert not marker.exists(), f"{bad.name}: the pickle payload ran"
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.pt").write_bytes(zipped.read_bytes())
    assert_error(run_cli(["export", run, "-o", tmp_path / "exp", "--no-progress"], capsys), run)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# dataset directories


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    from cryoshift.runtime.dataset import write_dataset

    return write_dataset(tmp_path / "ds", volumes(6), labels=[0, 1, 2, 0, 1, 2],
                         class_names=["ribosome", "proteasome", "junk"], voxel_size=VOXEL)


@pytest.mark.parametrize("breakage", ["invalid_json", "n_disagrees", "box_disagrees", "json_list",
                                      "no_volumes", "csv_garbage", "volumes_garbage", "n_string",
                                      "labels_out_of_range", "labels_text", "class_names_string",
                                      "contrast_grey", "voxel_text", "voxel_nan"])
def test_broken_dataset(breakage: str, dataset: Path, model: Path, tmp_path: Path,
                        capsys: Capsys) -> None:
    meta = dataset / "dataset.json"
    info = json.loads(meta.read_text())
    if breakage == "invalid_json":
        meta.write_text("{not json")
    elif breakage == "n_disagrees":
        meta.write_text(json.dumps({**info, "n": 9}))
    elif breakage == "box_disagrees":
        meta.write_text(json.dumps({**info, "box_size": 32}))
    elif breakage == "json_list":
        meta.write_text("[1, 2, 3]")
    elif breakage == "n_string":
        meta.write_text(json.dumps({**info, "n": "many"}))
    elif breakage == "no_volumes":
        (dataset / "volumes.mrc").unlink()
    elif breakage == "csv_garbage":
        (dataset / "particles.csv").write_bytes(b"\x00\xff" * 100)
    elif breakage == "volumes_garbage":
        (dataset / "volumes.mrc").write_bytes(b"x" * 5000)
    elif breakage == "class_names_string":
        meta.write_text(json.dumps({**info, "class_names": "abc"}))
    elif breakage == "contrast_grey":
        meta.write_text(json.dumps({**info, "contrast": "grey"}))
    elif breakage == "voxel_text":
        meta.write_text(json.dumps({**info, "voxel_size": "ten"}))
    elif breakage == "voxel_nan":
        meta.write_text(json.dumps({**info, "voxel_size": float("nan")}))
    elif breakage == "labels_out_of_range":
        t = pd.read_csv(dataset / "particles.csv")
        t["label"] = [0, 1, 7, 0, 1, -2]
        t.to_csv(dataset / "particles.csv", index=False)
    elif breakage == "labels_text":
        t = pd.read_csv(dataset / "particles.csv")
        t["label"] = ["a", "b", "c", "a", "b", "c"]
        t.to_csv(dataset / "particles.csv", index=False)
    labels_only = breakage.startswith("labels")
    for argv in (["info", dataset], ["evaluate", model, dataset, "--out", tmp_path / "ev"],
                 ["classify", model, dataset, "-o", tmp_path / "cl", "-q", "-b", "cpu"]):
        code, out, err = run_cli(argv, capsys)
        assert "Traceback" not in err, (argv[0], err)
        if labels_only and argv[0] != "evaluate":
            continue  # labels are not read by info/classify
        if argv[0] == "classify" and breakage in ("csv_garbage",):
            continue  # classify reads only the stack
        assert_error((code, out, err), dataset)


# ---------------------------------------------------------------------------------------------
# training target loading and simulate --structures


def test_train_target_loading_skips_bad_items(tmp_path: Path) -> None:
    from cryoshift.training.data import load_target

    d = tmp_path / "target"
    d.mkdir()
    for i, v in enumerate(volumes(3)):
        write_volume(d / f"g{i}.mrc", v, voxel_size=VOXEL)
    raw_mrc(d / "h_trunc.mrc", data=bytes(10))
    (d / "i_zero.mrc").write_bytes(b"")
    raw_mrc(d / "j_mode4.mrc", mode=4)
    nan = volumes(1)[0]
    nan[0, 0, 0] = np.nan
    write_volume(d / "k_nan.mrc", nan, voxel_size=VOXEL)
    dom = load_target(str(d), BOX, VOXEL, "dark", ["a", "b"])
    assert len(dom) == 3
    assert len(dom.skipped) == 4 and all(s.split(": ")[0].endswith(".mrc") for s in dom.skipped)


def test_train_refuses_hostile_target(tmp_path: Path, capsys: Capsys, dataset: Path) -> None:
    pytest.importorskip("torch")
    for name, payload in (("t.star", b""), ("t.csv", b"a;b\n1;2\n"), ("t.mrc", b"junk" * 300)):
        bad = tmp_path / name
        bad.write_bytes(payload)
        result = run_cli(["train", "--source", dataset, "--target", bad, "--out", tmp_path / f"run_{name}",
                          "--epochs", "1", "--backbone", "cryonet-small", "--no-progress", "--threads", "1"],
                         capsys)
        assert_error(result, bad)


@pytest.mark.parametrize("name,payload", [("empty.pdb", b""), ("junk.pdb", b"HELLO\x00\xff" * 50),
                                          ("junk.cif", b"data_x\n_loop\n\x00\x01"),
                                          ("junk.mrc", b"abc" * 400),
                                          ("noatoms.pdb", b"REMARK nothing\nEND\n"),
                                          ("zero.mrc", None)])
def test_simulate_refuses_bad_structure_file(name: str, payload: bytes | None, tmp_path: Path,
                                             capsys: Capsys) -> None:
    pytest.importorskip("torch")
    bad = tmp_path / name
    if payload is None:
        write_volume(bad, np.zeros((BOX,) * 3, np.float32), voxel_size=VOXEL)
    else:
        bad.write_bytes(payload)
    result = run_cli(["simulate", tmp_path / "sim", "--structures", bad, "--n", "4", "--box", BOX], capsys)
    assert_error(result, bad)


# ---------------------------------------------------------------------------------------------
# a real subprocess: what the user's terminal sees


def test_subprocess_one_line_error(tmp_path: Path) -> None:
    bad = raw_mrc(tmp_path / "huge dims ✗.mrc", nx=2**31 - 1, ny=2**31 - 1, nz=2**31 - 1, data=b"")
    proc = subprocess.run([sys.executable, "-m", "cryoshift.runtime.cli", "info", str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------------------
# more: evaluate's model argument, hostile tomograms behind picks, odd paths


def test_evaluate_refuses_bad_models(model: Path, dataset: Path, tmp_path: Path, capsys: Capsys) -> None:
    torch = pytest.importorskip("torch")
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pt"
    torch.save({"x": _Payload(marker)}, evil)
    legacy = tmp_path / "legacy.pt"
    with open(legacy, "wb") as fh:
        pickle.dump({"x": _Payload(marker)}, fh)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(np.random.default_rng(9).bytes(999))
    for bad in (evil, legacy, garbage, tmp_path / "missing.onnx"):
        assert_error(run_cli(["evaluate", bad, dataset, "--out", tmp_path / "ev"], capsys), bad)
    assert not marker.exists()


def test_evaluate_refuses_unlabelled_data(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    from cryoshift.runtime.dataset import write_dataset

    unl = write_dataset(tmp_path / "unl", volumes(4), voxel_size=VOXEL)
    assert_error(run_cli(["evaluate", model, unl, "--out", tmp_path / "ev"], capsys), unl)
    stack = write_stack(tmp_path / "s.mrcs", volumes(2), voxel_size=VOXEL)
    assert_error(run_cli(["evaluate", model, stack, "--out", tmp_path / "ev2"], capsys), stack)


def test_big_endian_mrc_is_read(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    vol = volumes(1)[0]
    path = raw_mrc(tmp_path / "be.mrc", data=vol.astype(">f4").tobytes())
    head = bytearray(path.read_bytes())
    ints = np.frombuffer(bytes(head[:1024]), "<i4").astype(">i4").tobytes()
    floats_cell = struct.unpack("<6f", bytes(head[40:64]))
    head[:1024] = ints
    head[40:64] = struct.pack(">6f", *floats_cell)
    head[208:212] = b"MAP "
    head[212:216] = b"\x11\x11\x00\x00"
    path.write_bytes(bytes(head))
    code, _, err = run_cli(["info", path], capsys)
    assert code == 0, err
    code, _, err = run_cli(["classify", model, path, "-o", tmp_path / "o", "-q", "-b", "cpu"], capsys)
    assert code == 0, err
    assert len(predictions(tmp_path / "o")) == 1


@pytest.mark.parametrize("kind", ["truncated", "image2d", "stack", "garbage", "nan_patch", "loop"])
def test_hostile_tomogram_behind_picks(kind: str, model: Path, tmp_path: Path, capsys: Capsys) -> None:
    """A bad tomogram refuses the run naming it, or (NaN patch) only its affected picks fail."""
    tomo = tmp_path / "TS_01.mrc"
    t = np.random.default_rng(5).normal(0, 1, (24, 40, 32)).astype(np.float32)
    if kind == "truncated":
        raw_mrc(tomo, nx=32, ny=40, nz=24, data=t.tobytes()[:20000])
    elif kind == "image2d":
        write_volume(tomo, t[:1], voxel_size=VOXEL)
        raw_mrc(tomo, nx=32, ny=40, nz=1, data=t[0].tobytes())
    elif kind == "stack":
        write_stack(tomo, volumes(2), voxel_size=VOXEL)
    elif kind == "garbage":
        tomo.write_bytes(np.random.default_rng(3).bytes(5000))
    elif kind == "nan_patch":
        t[:8, :8, :8] = np.nan
        write_volume(tomo, t, voxel_size=VOXEL)
    else:
        os.symlink(tomo, tomo)
    picks = _star(tmp_path / "picks.star", pd.DataFrame({
        "rlnTomoName": ["TS_01", "TS_01"], "rlnCoordinateX": [4.0, 20.0], "rlnCoordinateY": [4.0, 24.0],
        "rlnCoordinateZ": [4.0, 14.0]}))
    out = tmp_path / "out"
    result = run_cli(["classify", model, picks, "-t", tomo, "-o", out, "-q", "-b", "cpu"], capsys)
    if kind == "nan_patch":
        assert result[0] == 0, result[2]
        assert len(predictions(out)) == 1 and len(errors_table(out)) == 1
    else:
        assert_error(result, tomo)


def test_newline_in_file_name_stays_one_line(tmp_path: Path, capsys: Capsys) -> None:
    bad = tmp_path / "two\nlines.mrc"
    bad.write_bytes(b"nope")
    code, _, err = run_cli(["info", bad], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "two\\nlines.mrc" in err


def test_bad_model_paths(tmp_path: Path, capsys: Capsys) -> None:
    vol = write_volume(tmp_path / "v.mrc", volumes(1)[0], voxel_size=VOXEL)
    d = tmp_path / "modeldir"
    d.mkdir()
    for bad in (d, tmp_path / "missing.onnx", vol):
        assert_error(run_cli(["classify", bad, vol, "-o", tmp_path / "o", "-q", "-b", "cpu"], capsys), bad)


@pytest.mark.parametrize("field,value", [("class_names", "5"), ("class_names", "[]"), ("temperature", "0"),
                                         ("temperature", "-1"), ("feature_var", "[0, 0]"),
                                         ("feature_mean", "[1.0]"), ("box_size", "-16"),
                                         ("voxel_size", "NaN"), ("unknown_threshold", '"high"'),
                                         ("shift_reference", "0"), ("class_names", '["a", "b"]'),
                                         ("class_names", '["a", "b", "c", "d"]'), ("contrast", '"grey"')])
def test_onnx_with_lying_metadata(field: str, value: str, model: Path, tmp_path: Path,
                                  capsys: Capsys) -> None:
    """Metadata the runtime trusts must be sane: refused in one line, or probabilities stay finite
    (the shift score is NaN by design when the feature statistics do not fit the features)."""
    import onnx

    m = onnx.load(str(model))
    for entry in m.metadata_props:
        if entry.key == f"cryoshift.{field}":
            entry.value = value
    liar = tmp_path / f"liar_{field}.onnx"
    onnx.save(m, str(liar))
    vol = write_volume(tmp_path / "v.mrc", volumes(1)[0], voxel_size=VOXEL)
    out = tmp_path / "o"
    result = run_cli(["classify", liar, vol, "-o", out, "-q", "-b", "cpu"], capsys)
    if result[0] == 0:
        pred = predictions(out)
        scores = pred[["confidence"] + [c for c in pred.columns if c.startswith("prob_")]]
        assert len(pred) == 1 and np.isfinite(scores.to_numpy(dtype=np.float64)).all(), pred
    else:
        assert_error(result, liar)


def test_output_folder_that_is_a_file(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    vol = write_volume(tmp_path / "v.mrc", volumes(1)[0], voxel_size=VOXEL)
    blocker = tmp_path / "results"
    blocker.write_text("I am a file")
    assert_error(run_cli(["classify", model, vol, "-o", blocker, "-q", "-b", "cpu"], capsys), blocker)
    ds_blocker = tmp_path / "sim"
    ds_blocker.write_text("I am a file")
    code, _, err = run_cli(["info", tmp_path / "sim" / "dataset.json"], capsys)
    assert "Traceback" not in err and code == 2, err


# ---------------------------------------------------------------------------------------------
# fuzz: random MRC headers never escape as anything but InputError


def test_random_headers_fail_only_with_input_error(tmp_path: Path) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from cryoshift.runtime.errors import InputError
    from cryoshift.runtime.info import describe
    from cryoshift.runtime.mrc import read_volume

    small = st.integers(-3, 40)
    anyint = st.integers(-(2**31), 2**31 - 1)
    word = st.one_of(small, anyint)

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(nx=word, ny=word, nz=word, mode=st.one_of(st.sampled_from([0, 1, 2, 3, 4, 6, 12, 101]), anyint),
           nsymbt=st.one_of(st.integers(-10, 2000), anyint), ispg=st.sampled_from([0, 1, 401, 630, -1]),
           mz=word, cella=st.floats(allow_nan=True, allow_infinity=True, width=32),
           stamp=st.sampled_from([b"\x44\x44", b"\x11\x11", b"\x00\x00", b"\xff\xff"]),
           payload=st.integers(0, 70000))
    def check(nx: int, ny: int, nz: int, mode: int, nsymbt: int, ispg: int, mz: int, cella: float,
              stamp: bytes, payload: int) -> None:
        path = tmp_path / "fuzz.mrc"
        raw_mrc(path, nx=nx, ny=ny, nz=nz, mode=mode, data=bytes(payload), nsymbt=nsymbt, cella=cella,
                ispg=ispg, mz=mz)
        head = bytearray(path.read_bytes())
        head[212:214] = stamp
        path.write_bytes(bytes(head))
        for reader in (read_volume, describe):
            try:
                reader(path)
            except InputError as exc:
                assert "\n" not in str(exc)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning escaping to the user's terminal is a failure too
        check()


def test_simulate_refuses_bad_structure_sources(tmp_path: Path, capsys: Capsys) -> None:
    pytest.importorskip("torch")
    junk = tmp_path / "junk dir"
    junk.mkdir()
    (junk / "notes.txt").write_text("hello")
    (junk / "broken.pdb").write_bytes(b"ATOM  garbage\n")
    cfg = tmp_path / "cfg.json"
    cfg.write_text("{not json")
    cfg_list = tmp_path / "cfg_list.json"
    cfg_list.write_text("[1, 2]")
    cfg_field = tmp_path / "cfg_field.json"
    cfg_field.write_text('{"snr": "loud", "no_such_field": 3}')
    empty = tmp_path / "empty dir"
    empty.mkdir()
    for extra, name in ((["--structures", junk], junk), (["--structures", empty], empty),
                        (["--structures", tmp_path / "missing.mrc"], tmp_path / "missing.mrc"),
                        (["--config", cfg], cfg), (["--config", cfg_list], cfg_list),
                        (["--config", cfg_field], cfg_field)):
        result = run_cli(["simulate", tmp_path / "sim", "--n", "4", "--box", BOX, *extra], capsys)
        assert_error(result, name)
    code, _, err = run_cli(["simulate", tmp_path / "sim", "--n", "4", "--box", BOX, "--structures",
                            "builtin:no_such_thing"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_export_refuses_checkpoints_with_broken_contents(tmp_path: Path, capsys: Capsys) -> None:
    """Right format tag, wrong insides: missing keys, unknown backbone, odd kwargs, foreign weights."""
    torch = pytest.importorskip("torch")
    meta = {"class_names": ["a", "b"], "box_size": BOX, "voxel_size": VOXEL}
    good = {"format": "cryoshift.checkpoint/1", "backbone": "cryonet-small",
            "backbone_kwargs": {"num_classes": 2, "box_size": BOX}, "state_dict": {"w": torch.zeros(2)},
            "metadata": meta, "epoch": 0, "config": {}, "extra": {}}
    cases = {
        "only_format.pt": {"format": "cryoshift.checkpoint/1"},
        "no_metadata.pt": {k: v for k, v in good.items() if k != "metadata"},
        "bad_metadata.pt": {**good, "metadata": {"class_names": 3, "box_size": "x", "voxel_size": 1}},
        "metadata_list.pt": {**good, "metadata": [1, 2]},
        "unknown_backbone.pt": {**good, "backbone": "no-such-net"},
        "bad_kwargs.pt": {**good, "backbone_kwargs": {"num_classes": 2, "box_size": BOX, "bogus": 1}},
        "kwargs_list.pt": {**good, "backbone_kwargs": [1, 2]},
        "foreign_weights.pt": good,
        "state_not_dict.pt": {**good, "state_dict": [1, 2, 3]},
        "list_payload.pt": [1, 2, 3],
    }
    for name, payload in cases.items():
        path = tmp_path / name
        torch.save(payload, path)
        assert_error(run_cli(["export", path, "-o", tmp_path / "exp", "--no-progress"], capsys), path)


def test_evaluate_with_data_that_does_not_fit_the_model(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    from cryoshift.runtime.dataset import write_dataset

    small = write_dataset(tmp_path / "small", np.zeros((3, 12, 12, 12), np.float32), labels=[0, 1, 2],
                          class_names=["ribosome", "proteasome", "junk"], voxel_size=VOXEL)
    other = write_dataset(tmp_path / "other", volumes(3), labels=[0, 1, 0], class_names=["cat", "dog"],
                          voxel_size=VOXEL)
    for data in (small, other):
        result = run_cli(["evaluate", model, data, "--out", tmp_path / f"ev_{data.name}"], capsys)
        line = assert_error(result, "")  # a mismatch of two files: naming either is fair
        assert str(data) in line or str(model) in line, line


def test_train_cli_skips_bad_target_items(tmp_path: Path, capsys: Capsys) -> None:
    """Batch work in training: a bad target file is reported on stderr and skipped, the run goes on."""
    pytest.importorskip("torch")
    from cryoshift.runtime.dataset import write_dataset

    src = write_dataset(tmp_path / "src", volumes(8, seed=1), labels=[0, 1] * 4, class_names=["a", "b"],
                        voxel_size=VOXEL)
    tgt = tmp_path / "target files"
    tgt.mkdir()
    for i, v in enumerate(volumes(4, seed=2)):
        write_volume(tgt / f"g{i}.mrc", v, voxel_size=VOXEL)
    bad = _put(tgt / "h_bad.mrc", b"junk" * 400)
    trunc = raw_mrc(tgt / "i_trunc.mrc", data=bytes(99))
    code, _, err = run_cli(["train", "--source", src, "--target", tgt, "--out", tmp_path / "run",
                            "--epochs", 1, "--backbone", "cryonet-small", "--batch-size", 4, "--no-progress",
                            "--threads", 1, "--method", "source-only"], capsys)
    assert code == 0 and "Traceback" not in err, err
    skipped = [ln for ln in err.splitlines() if "skipped target item" in ln]
    assert len(skipped) == 2 and str(bad) in skipped[0] and str(trunc) in skipped[1], err
    assert (tmp_path / "run" / "model.pt").is_file()


# ---------------------------------------------------------------------------------------------
# values that are finite but break a float32 model, and a model that returns NaN


def test_absurd_magnitudes_are_error_rows(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    d = tmp_path / "in"
    d.mkdir()
    write_volume(d / "a_max_const.mrc", np.full((BOX,) * 3, 3e38, np.float32), voxel_size=VOXEL)
    write_volume(d / "b_huge_noise.mrc", volumes(1)[0] * 1e20, voxel_size=VOXEL)
    write_stack(d / "c_stack.mrcs", np.stack([volumes(1)[0], np.full((BOX,) * 3, -3e38, np.float32)]),
                voxel_size=VOXEL)
    write_volume(d / "d_good.mrc", volumes(1)[0] * 1e4, voxel_size=VOXEL)
    out = tmp_path / "out"
    code, _, err = run_cli(["classify", model, d, "-o", out, "-q", "-b", "cpu"], capsys)
    assert code == 0, err
    errs = errors_table(out)
    assert len(errs) == 3 and all("beyond" in r for r in errs["reason"]), errs
    pred = predictions(out)
    assert len(pred) == 2 and np.isfinite(pred["confidence"].to_numpy(dtype=float)).all()


def _nan_model(path: Path) -> Path:
    """logits = log(mean voxel) per class: NaN for volumes with a negative mean."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from cryoshift.runtime.metadata import ModelMetadata

    w = np.full((2, BOX**3), 1.0 / BOX**3, np.float32)
    nodes = [helper.make_node("Flatten", ["subtomograms"], ["flat"], axis=1),
             helper.make_node("Gemm", ["flat", "w"], ["mean"], transB=1),
             helper.make_node("Log", ["mean"], ["logits"])]
    x = helper.make_tensor_value_info("subtomograms", TensorProto.FLOAT, ["batch", 1, BOX, BOX, BOX])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])
    graph = helper.make_graph(nodes, "nan", [x], [y], [numpy_helper.from_array(w, "w")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    meta = ModelMetadata(class_names=["a", "b"], box_size=BOX, voxel_size=VOXEL)
    for key, value in meta.to_properties().items():
        entry = m.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(m, str(path))
    return path


def test_non_finite_model_output_is_an_error_row(tmp_path: Path, capsys: Capsys) -> None:
    nan_model = _nan_model(tmp_path / "nan.onnx")
    vols = np.stack([np.full((BOX,) * 3, v, np.float32) for v in (1, -1, 2, -3)])
    stack = write_stack(tmp_path / "s.mrcs", vols, voxel_size=VOXEL)
    out = tmp_path / "out"
    code, _, err = run_cli(["classify", nan_model, stack, "-o", out, "-q", "-b", "cpu", "--batch-size", 3],
                           capsys)
    assert code == 0, err
    assert sorted(errors_table(out)["id"]) == [f"000002@{stack}", f"000004@{stack}"]
    assert sorted(predictions(out)["id"]) == [f"000001@{stack}", f"000003@{stack}"]


def test_train_with_nan_volumes_in_datasets(tmp_path: Path, capsys: Capsys) -> None:
    """A NaN volume in a target dataset is skipped and reported; in the labelled source it refuses the run."""
    pytest.importorskip("torch")
    import mrcfile

    from cryoshift.runtime.dataset import write_dataset

    src = write_dataset(tmp_path / "src", volumes(8, seed=1), labels=[0, 1] * 4, class_names=["a", "b"],
                        voxel_size=VOXEL)
    tgt = write_dataset(tmp_path / "tgt", volumes(5, seed=2), voxel_size=VOXEL)
    with mrcfile.mmap(tgt / "volumes.mrc", "r+") as m:
        m.data[3, 1, 1, 1] = np.nan
        m.data[4, 0, 0, 0] = 1e30
    argv = ["--epochs", 1, "--backbone", "cryonet-small", "--batch-size", 4, "--no-progress", "--threads", 1,
            "--method", "dann"]
    code, _, err = run_cli(["train", "--source", src, "--target", tgt, "--out", tmp_path / "run", *argv],
                           capsys)
    assert code == 0 and "Traceback" not in err, err
    skipped = [ln for ln in err.splitlines() if "skipped target item" in ln]
    assert len(skipped) == 2 and "000004@" in skipped[0] and "000005@" in skipped[1], err
    with mrcfile.mmap(src / "volumes.mrc", "r+") as m:
        m.data[2, 0, 0, 0] = np.inf
    result = run_cli(["train", "--source", src, "--target", tgt, "--out", tmp_path / "run2", *argv], capsys)
    assert_error(result, src)


def test_evaluate_refuses_nan_volumes(model: Path, dataset: Path, tmp_path: Path, capsys: Capsys) -> None:
    import mrcfile

    with mrcfile.mmap(dataset / "volumes.mrc", "r+") as m:
        m.data[1, 0, 0, 0] = np.nan
    assert_error(run_cli(["evaluate", model, dataset, "--out", tmp_path / "ev"], capsys), dataset)
    code, _, err = run_cli(["classify", model, dataset, "-o", tmp_path / "cl", "-q", "-b", "cpu"], capsys)
    assert code == 0, err
    assert len(errors_table(tmp_path / "cl")) == 1 and len(predictions(tmp_path / "cl")) == 5


@pytest.mark.parametrize("kind", ["rank4", "float16", "no_logits"])
def test_onnx_off_contract_graph(kind: str, tmp_path: Path, capsys: Capsys) -> None:
    """A graph whose input is not float32 (batch, 1, D, H, W), or without 'logits', is refused up front."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from cryoshift.runtime.metadata import ModelMetadata

    dtype = TensorProto.FLOAT16 if kind == "float16" else TensorProto.FLOAT
    shape = ["batch", BOX, BOX, BOX] if kind == "rank4" else ["batch", 1, BOX, BOX, BOX]
    out_name = "scores" if kind == "no_logits" else "logits"
    w = np.full((2, BOX**3), 1.0 / BOX**3, np.float16 if kind == "float16" else np.float32)
    nodes = [helper.make_node("Flatten", ["subtomograms"], ["flat"], axis=1),
             helper.make_node("Gemm", ["flat", "w"], [out_name], transB=1)]
    graph = helper.make_graph(nodes, "off", [helper.make_tensor_value_info("subtomograms", dtype, shape)],
                              [helper.make_tensor_value_info(out_name, dtype, ["batch", 2])],
                              [numpy_helper.from_array(w, "w")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    meta = ModelMetadata(class_names=["a", "b"], box_size=BOX, voxel_size=VOXEL)
    for key, value in meta.to_properties().items():
        entry = m.metadata_props.add()
        entry.key, entry.value = key, value
    path = tmp_path / f"{kind}.onnx"
    onnx.save(m, str(path))
    vol = write_volume(tmp_path / "v.mrc", volumes(1)[0], voxel_size=VOXEL)
    assert_error(run_cli(["classify", path, vol, "-o", tmp_path / "o", "-q", "-b", "cpu"], capsys), path)


def test_picks_of_a_tomogram_not_given_are_error_rows(model: Path, tomo: Path, tmp_path: Path,
                                                       capsys: Capsys) -> None:
    picks = _star(tmp_path / "mixed.star", pd.DataFrame({
        "rlnTomoName": ["TS_01", "TS_99", "TS_01", "TS_99"], "rlnCoordinateX": [16.0, 5.0, 10.0, 5.0],
        "rlnCoordinateY": [20.0, 5.0, 10.0, 5.0], "rlnCoordinateZ": [12.0, 5.0, 10.0, 5.0]}))
    out = tmp_path / "out"
    code, _, err = run_cli(["classify", model, picks, "-t", tomo, "-o", out, "-q", "-b", "cpu"], capsys)
    assert code == 0, err
    errs = errors_table(out)
    assert len(predictions(out)) == 2 and len(errs) == 2 and errs["id"].nunique() == 2, errs
    assert all("TS_99" in r for r in errs["reason"])
    only_missing = _star(tmp_path / "missing.star", pd.DataFrame({
        "rlnTomoName": ["TS_99"], "rlnCoordinateX": [5.0], "rlnCoordinateY": [5.0], "rlnCoordinateZ": [5.0]}))
    result = run_cli(["classify", model, only_missing, "-t", tomo, "-o", tmp_path / "o2", "-q", "-b", "cpu"],
                     capsys)
    assert "TS_99" in assert_error(result, only_missing)
