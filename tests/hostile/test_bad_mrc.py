"""Hostile MRC files through the real CLI: lying, truncated or badly compressed files refused in one
line (or an errors row among good files), unusual but readable files read, non-finite and absurd
voxels turned into errors rows, and fuzzed headers that never escape as anything but InputError.
Every file is built in ``tmp_path`` by the test itself."""

from __future__ import annotations

import gzip
import os
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
from hostile_inputs import (
    BOX,
    VOXEL,
    Capsys,
    assert_error,
    errors_table,
    predictions,
    put,
    raw_mrc,
    run_cli,
    unblocked_fifos,
    volumes,
)

from cryoshift.runtime.mrc import write_stack, write_volume

# ---------------------------------------------------------------------------------------------
# hostile MRC files: `info` and `classify` of a single bad file refuse with one line


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
    # more data than the header says: a wrong nz (or an un-updated stack) and a wrong nx; the
    # first BOX^3 voxels used to be classified silently, by the fast reader and by info alike
    "two_volumes_one_in_header.mrc": lambda p: raw_mrc(p, data=volumes(2).tobytes()),
    "header_nx_too_small.mrc": lambda p: raw_mrc(p, data=bytes((BOX + 1) * BOX * BOX * 4)),
    "ext_past_end.mrc": lambda p: raw_mrc(p, nsymbt=10**9, data=b""),
    "ext_negative.mrc": lambda p: raw_mrc(p, nsymbt=-4096),
    "ext_huge_int.mrc": lambda p: raw_mrc(p, nsymbt=2**31 - 1, data=b""),
    # space group 401 (volume stack) whose mz is 0 (mrcfile divided by it: ZeroDivisionError in a
    # reader thread lost the whole batch, good files included) or does not divide nz
    "stack_mz_zero.mrcs": lambda p: raw_mrc(p, nz=BOX * 2, ispg=401, mz=0),
    "stack_mz_not_dividing.mrcs": lambda p: raw_mrc(p, nz=BOX * 3 - 1, ispg=401, mz=BOX),
    "not_gzip.mrc.gz": lambda p: put(p, b"\x1f\x8b" + np.random.default_rng(2).bytes(3000)),
    "bad_bzip2.mrc": lambda p: put(p, b"BZh9" + np.random.default_rng(3).bytes(3000)),
    "text.mrc": lambda p: put(p, "this is not an MRC file\n" * 100),
    "empty_gzip.mrc.gz": lambda p: put(p, gzip.compress(b"")),
    "gzip_of_junk.mrc.gz": lambda p: put(p, gzip.compress(b"junk" * 400)),
    "gzip_truncated.mrc.gz": lambda p: put(
        p, gzip.compress(raw_mrc(p.with_suffix(".tmp"), data=volumes(1)[0].tobytes()).read_bytes())[:6000]
    ),
    "gzip_short_data.mrc.gz": lambda p: put(
        p, gzip.compress(raw_mrc(p.with_suffix(".tmp"), data=volumes(1)[0].tobytes()[:5000]).read_bytes())
    ),
    # the same un-updated stack header, compressed (found only once decompressed)
    "gzip_two_volumes_one_in_header.mrc.gz": lambda p: put(
        p, gzip.compress(raw_mrc(p.with_suffix(".tmp"), data=volumes(2).tobytes()).read_bytes())
    ),
    "bzip2_two_volumes_one_in_header.mrc.bz2": lambda p: put(
        p,
        __import__("bz2").compress(raw_mrc(p.with_suffix(".tmp"), data=volumes(2).tobytes()).read_bytes()),
    ),
    "gzip_corrupt_middle.mrc.gz": lambda p: put(
        p,
        _corrupt_middle(
            gzip.compress(raw_mrc(p.with_suffix(".tmp"), data=volumes(1)[0].tobytes()).read_bytes())
        ),
    ),
    "bzip2_corrupt.mrc.bz2": lambda p: put(
        p,
        _corrupt_middle(
            __import__("bz2").compress(
                raw_mrc(p.with_suffix(".tmp"), data=volumes(1)[0].tobytes()).read_bytes()
            )
        ),
    ),
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
def test_classify_single_hostile_mrc_is_an_error_row(
    name: str, model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """One bad file among good ones: it lands in errors.csv, the good ones are classified."""
    d = tmp_path / "in"
    d.mkdir()
    for i, v in enumerate(volumes(2)):
        write_volume(d / f"good_{i}.mrc", v, voxel_size=VOXEL)
    bad = HOSTILE_MRC[name](d / f"bad_{name}")
    for extra in d.glob("*.tmp"):
        extra.unlink()
    out = tmp_path / "out"
    code, _, err = run_cli(
        ["classify", model, d / "good_0.mrc", bad, d / "good_1.mrc", "-o", out, "-q", "-b", "cpu"], capsys
    )
    assert code == 0, err
    assert "Traceback" not in err
    errs = errors_table(out)
    assert (len(errs) == 1 and str(bad) in errs.iloc[0].to_string()) or str(bad) in " ".join(
        errs.astype(str).to_numpy().ravel()
    ), errs
    assert len(predictions(out)) == 2


def test_info_and_classify_refuse_a_single_bad_file_named_on_its_own(
    model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """A single hostile file given alone: either a one-line refusal or an errors row, never a traceback."""
    bad = raw_mrc(tmp_path / "trunc.mrc", data=bytes(100))
    code, _, err = run_cli(["classify", model, bad, "-o", tmp_path / "o", "-q", "-b", "cpu"], capsys)
    assert "Traceback" not in err
    if code == 0:
        assert len(errors_table(tmp_path / "o")) == 1
    else:
        assert_error((code, "", err), bad)


# ---------------------------------------------------------------------------------------------
# files that are no MRC at all: named pipes, NumPy arrays and archives


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_named_pipe_is_not_a_regular_file(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    """A FIFO where an MRC file is expected: "not a regular file" (it was "file is empty"), an
    errors row among good files, and never a reader blocked on it."""
    d = tmp_path / "in"
    d.mkdir()
    for i, v in enumerate(volumes(2)):
        write_volume(d / f"good_{i}.mrc", v, voxel_size=VOXEL)
    fifo = d / "pipe.mrc"
    os.mkfifo(fifo)
    with unblocked_fifos(fifo):
        line = assert_error(run_cli(["info", fifo], capsys), fifo)
        assert "named pipe" in line and "not a regular file" in line, line
        out = tmp_path / "out"
        argv = ["classify", model, d / "good_0.mrc", fifo, d / "good_1.mrc", "-o", out, "-q", "-b", "cpu"]
        code, _, err = run_cli(argv, capsys)
        assert code == 0, err
        errs = errors_table(out)
        assert len(errs) == 1 and "not a regular file" in errs["reason"].iloc[0], errs
        assert len(predictions(out)) == 2
        # last of a glob: planning reads no header past the first file, the reader meets the pipe
        out = tmp_path / "out_glob"
        code, _, err = run_cli(["classify", model, d / "*.mrc", "-o", out, "-q", "-b", "cpu"], capsys)
        assert code == 0, err
        errs = errors_table(out)
        assert len(errs) == 1 and "not a regular file" in errs["reason"].iloc[0], errs
        assert len(predictions(out)) == 2


def _npz(p: Path) -> Path:
    np.savez(p, a=np.zeros(2, np.float32))  # a few hundred bytes: "shorter than the MRC header"
    return p


def _npz_of_volumes(p: Path) -> Path:
    np.savez(p, volumes=volumes(2))
    return p


NOT_MRC = {
    "tiny.npz": (_npz, "zip archive"),
    "volumes.npz": (_npz_of_volumes, "zip archive"),
    "volume.npy": (lambda p: np.save(p, volumes(1)[0]) or p, "NumPy .npy array"),
    "zipped_volume.mrc": (lambda p: put(p, _npz(p.with_suffix(".npz")).read_bytes()), "zip archive"),
}


@pytest.mark.parametrize("name", sorted(NOT_MRC))
def test_numpy_files_are_named_not_called_truncated_mrc(
    name: str, model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    make, what = NOT_MRC[name]
    path = make(tmp_path / name)
    line = assert_error(run_cli(["info", path], capsys), path)
    assert what in line and "not an MRC file" in line, line
    result = run_cli(["classify", model, path, "-o", tmp_path / "o", "-q", "-b", "cpu"], capsys)
    line = assert_error(result, path)
    assert what in line and "not an MRC file" in line and "truncated" not in line, line
    # among good files: an errors row saying what it is
    good = write_volume(tmp_path / "good.mrc", volumes(1)[0], voxel_size=VOXEL)
    out = tmp_path / "out"
    code, _, err = run_cli(["classify", model, good, path, "-o", out, "-q", "-b", "cpu"], capsys)
    assert code == 0, err
    errs = errors_table(out)
    assert len(errs) == 1 and what in errs["reason"].iloc[0], errs
    assert len(predictions(out)) == 1


# ---------------------------------------------------------------------------------------------
# unusual but readable MRC files


@pytest.mark.parametrize("cella", [0.0, -50.0, float("nan"), float("inf")])
def test_bad_voxel_size_in_header_is_unknown_not_a_crash(
    cella: float, model: Path, tmp_path: Path, capsys: Capsys
) -> None:
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


def test_nan_inf_voxels_and_constant_volume(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    """NaN/Inf volumes and constant ones (std 0: no signal, e.g. a zero-filled margin) are error
    rows; the good volume is classified."""
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
    assert all(name in errs for name in ("a_nan.mrc", "b_inf.mrc", "c_const.mrc", "d_zero.mrc"))
    assert "every voxel is 7.5" in errs and "every voxel is 0" in errs
    pred = predictions(out)
    assert len(pred) == 1
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
    # a stack header whose mz does not divide nz: refused, not read as a shorter stack
    odd = raw_mrc(tmp_path / "odd_stack.mrcs", nz=BOX * 3 - 1, ispg=401, mz=BOX)
    line = assert_error(
        run_cli(["classify", model, odd, "-o", tmp_path / "o3", "-q", "-b", "cpu"], capsys), odd
    )
    assert "does not divide nz" in line


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


# ---------------------------------------------------------------------------------------------
# values that are finite but break a float32 model


def test_absurd_magnitudes_are_error_rows(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    d = tmp_path / "in"
    d.mkdir()
    write_volume(d / "a_max_const.mrc", np.full((BOX,) * 3, 3e38, np.float32), voxel_size=VOXEL)
    write_volume(d / "b_huge_noise.mrc", volumes(1)[0] * 1e20, voxel_size=VOXEL)
    write_stack(
        d / "c_stack.mrcs",
        np.stack([volumes(1)[0], np.full((BOX,) * 3, -3e38, np.float32)]),
        voxel_size=VOXEL,
    )
    write_volume(d / "d_good.mrc", volumes(1)[0] * 1e4, voxel_size=VOXEL)
    out = tmp_path / "out"
    code, _, err = run_cli(["classify", model, d, "-o", out, "-q", "-b", "cpu"], capsys)
    assert code == 0, err
    errs = errors_table(out)
    assert len(errs) == 3 and all("beyond" in r for r in errs["reason"]), errs
    pred = predictions(out)
    assert len(pred) == 2 and np.isfinite(pred["confidence"].to_numpy(dtype=float)).all()


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
    @given(
        nx=word,
        ny=word,
        nz=word,
        mode=st.one_of(st.sampled_from([0, 1, 2, 3, 4, 6, 12, 101]), anyint),
        nsymbt=st.one_of(st.integers(-10, 2000), anyint),
        ispg=st.sampled_from([0, 1, 401, 630, -1]),
        mz=word,
        cella=st.floats(allow_nan=True, allow_infinity=True, width=32),
        stamp=st.sampled_from([b"\x44\x44", b"\x11\x11", b"\x00\x00", b"\xff\xff"]),
        payload=st.integers(0, 70000),
    )
    def check(
        nx: int,
        ny: int,
        nz: int,
        mode: int,
        nsymbt: int,
        ispg: int,
        mz: int,
        cella: float,
        stamp: bytes,
        payload: int,
    ) -> None:
        path = tmp_path / "fuzz.mrc"
        raw_mrc(
            path,
            nx=nx,
            ny=ny,
            nz=nz,
            mode=mode,
            data=bytes(payload),
            nsymbt=nsymbt,
            cella=cella,
            ispg=ispg,
            mz=mz,
        )
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
