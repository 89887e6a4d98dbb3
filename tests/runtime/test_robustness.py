"""Refusals, bad items, kill -9 + --resume, ledger repair."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cryoshift.runtime import classify
from cryoshift.runtime.errors import InputError
from cryoshift.runtime.ledger import Ledger
from cryoshift.runtime.mrc import write_stack, write_volume
from cryoshift.runtime.results import read_results


def test_wrong_box_stack_is_refused(model_path, tmp_path):
    write_stack(tmp_path / "big.mrcs", np.zeros((3, 24, 24, 24), np.float32), voxel_size=10.0)
    with pytest.raises(InputError, match="model takes 16\\^3"):
        classify(model_path, [str(tmp_path / "big.mrcs")], tmp_path / "out", backend="cpu", progress=False)


def test_contrast_mismatch_is_refused(light_model_path, inputs, tmp_path):
    with pytest.raises(InputError, match="contrast is 'dark' but the model expects 'light'"):
        classify(light_model_path, [str(inputs["stack"])], tmp_path / "out", backend="cpu", progress=False)
    s = classify(
        light_model_path,
        [str(inputs["stack"])],
        tmp_path / "ok",
        backend="cpu",
        progress=False,
        contrast="light",
    )
    assert s.total_rows == 12


def test_voxel_size_mismatch_is_refused_unless_ignored(model_path, helpers, tmp_path):
    vols = helpers.make_volumes(4)
    write_stack(tmp_path / "s.mrcs", vols, voxel_size=11.0)  # 10% off the model's 10 A
    with pytest.raises(InputError, match=r"voxel size 11 A differs .* --ignore-voxel-size"):
        classify(model_path, [str(tmp_path / "s.mrcs")], tmp_path / "out", backend="cpu", progress=False)
    s = classify(
        model_path,
        [str(tmp_path / "s.mrcs")],
        tmp_path / "out2",
        backend="cpu",
        progress=False,
        ignore_voxel_size=True,
    )
    assert s.total_rows == 4
    write_stack(tmp_path / "near.mrcs", vols, voxel_size=10.4)  # 4%: accepted
    assert (
        classify(
            model_path, [str(tmp_path / "near.mrcs")], tmp_path / "out3", backend="cpu", progress=False
        ).total_rows
        == 4
    )


def test_missing_input_and_rerun_without_resume_are_refused(model_path, inputs, tmp_path):
    with pytest.raises(InputError, match="no such file"):
        classify(model_path, [str(tmp_path / "nope.mrc")], tmp_path / "out", backend="cpu", progress=False)
    classify(model_path, [str(inputs["stack"])], tmp_path / "o", backend="cpu", progress=False)
    with pytest.raises(InputError, match="--resume"):
        classify(model_path, [str(inputs["stack"])], tmp_path / "o", backend="cpu", progress=False)
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    with pytest.raises(InputError, match="exists and is not a folder"):
        classify(model_path, [str(inputs["stack"])], a_file, backend="cpu", progress=False)
    assert a_file.read_text() == "x"


def test_all_bad_items_still_finish_the_run(model_path, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.mrc").write_bytes(b"MAP " * 10)
    write_volume(bad / "b.mrc", np.full((16, 16, 16), np.inf, np.float32), voxel_size=10.0)
    s = classify(model_path, [str(bad)], tmp_path / "out", backend="cpu", progress=False)
    assert (s.classified, s.errors, s.total_errors) == (0, 2, 2)
    assert read_results(s.predictions_csv).empty


def test_ledger_cuts_partial_last_line_and_checks_header(tmp_path):
    path = tmp_path / "l.csv"
    with Ledger(path, ["id", "v"]) as led:
        led.append([["a", 1.0], ["b,with comma", 2.0]])
    with open(path, "a") as fh:
        fh.write('"c",3.')  # a write killed mid-line
    with Ledger(path, ["id", "v"], resume=True) as led:
        assert led.done == {"a", "b,with comma"} and led.repaired_bytes == 6
        led.append([["c", 3.0]])
    assert path.read_text().splitlines()[-1] == "c,3"
    with pytest.raises(InputError, match="other columns"):
        Ledger(path, ["id", "w"], resume=True)


def test_resume_into_a_damaged_ledger_is_refused_and_leaves_it_as_it_was(tmp_path):
    """Random bytes where the results were (a disk error, a bad copy): one line naming the file and
    what to do; the file is not cut by the partial-line repair."""
    path = tmp_path / "predictions.csv"
    garbage = bytes(range(256))[::-1] * 4  # not UTF-8 from its first byte; newlines inside
    path.write_bytes(garbage)
    with pytest.raises(InputError, match=r"line 1 is not UTF-8 text.*without --resume") as caught:
        Ledger(path, ["id", "v"], resume=True)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    assert path.read_bytes() == garbage
    # a good header, then damage further on: the damaged line is named
    path.write_bytes(b"id,v\na,1\n\xff\xfe,2\nb,3")
    with pytest.raises(InputError, match="line 3 is not UTF-8 text \\(byte 0xff\\)"):
        Ledger(path, ["id", "v"], resume=True)
    path.write_text("hello world\nmore text\n")  # text, but not a ledger
    with pytest.raises(InputError, match="first line is not a header"):
        Ledger(path, ["id", "v"], resume=True)
    assert path.read_text() == "hello world\nmore text\n"


def test_classify_resume_into_a_corrupt_predictions_csv_says_so_in_one_line(
    model_path, inputs, tmp_path, capsys
):
    from cryoshift.runtime.cli import main

    out = tmp_path / "out"
    args = ["classify", str(model_path), str(inputs["stack"]), "-o", str(out), "-b", "cpu", "-q"]
    assert main(args) == 0
    (out / "predictions.csv").write_bytes(bytes(range(128, 256)) * 8)
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "predictions.csv: damaged: line 1 is not UTF-8 text" in err and "move it" in err


_CHILD = """
import sys
from cryoshift.runtime import classify
classify(sys.argv[1], [sys.argv[2]], sys.argv[3], backend="cpu", batch_size=3, workers=2, resume=True,
         progress=False, threads=1)
"""


def _lines(path) -> int:
    try:
        with open(path, "rb") as fh:
            return fh.read().count(b"\n")
    except FileNotFoundError:
        return 0


def test_kill_9_at_random_moments_then_resume_gives_every_item_once(model_path, helpers, tmp_path):
    n = 900
    stack = tmp_path / "many.mrcs"
    write_stack(stack, np.repeat(helpers.make_volumes(30), n // 30, axis=0), voxel_size=10.0)
    out = tmp_path / "out"
    csv = out / "predictions.csv"
    rng = random.Random(0)
    kills_mid_run = 0
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for attempt in range(4):
        cmd = [sys.executable, "-c", _CHILD, str(model_path), str(stack), str(out)]
        proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
        if attempt == 3:  # the last run is left to finish
            assert proc.wait(timeout=120) == 0, proc.stderr.read().decode()
            break
        before = _lines(csv)
        wanted = before + rng.randint(1, 60)
        # Wait until this run has appended a random number of rows (counted, not timed, so a fast
        # machine cannot finish the whole run inside the wait), then kill -9 at once.
        while proc.poll() is None and _lines(csv) < wanted:
            time.sleep(0.002)
        if proc.poll() is not None:
            assert proc.returncode == 0, proc.stderr.read().decode()
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills_mid_run += len(read_results(csv)) < n  # killed before every row was written
    assert kills_mid_run >= 1
    df = read_results(csv)
    ids = list(df["id"])
    assert len(ids) == len(set(ids)) == n
    assert set(ids) == {f"{i + 1:06d}@{stack}" for i in range(n)}
    assert read_results(out / "predictions.star").shape[0] == n
    # A resume of a finished run changes nothing.
    s = classify(model_path, [str(stack)], out, backend="cpu", resume=True, progress=False)
    assert (s.classified, s.resumed, s.total_rows) == (0, n, n)
    manifest = json.loads(Path(s.manifest).read_text())  # rewritten by the resume, with its counts
    assert (manifest["summary"]["classified"], manifest["summary"]["resumed"]) == (0, n)
    assert (manifest["summary"]["total_rows"], manifest["summary"]["total_errors"]) == (n, 0)


def test_single_file_of_other_voxel_size_in_a_folder_is_an_error_row(model_path, helpers, tmp_path):
    vols = helpers.make_volumes(3)
    folder = tmp_path / "subs"
    folder.mkdir()
    for i, voxel in enumerate((10.0, 12.0, 10.2)):
        write_volume(folder / f"s{i}.mrc", vols[i], voxel_size=voxel)
    s = classify(model_path, [str(folder)], tmp_path / "out", backend="cpu", progress=False)
    errors = read_results(s.errors_csv)
    assert (s.total_rows, s.total_errors) == (2, 1)
    assert errors["id"][0].endswith("s1.mrc") and "voxel size 12 A" in errors["reason"][0]
    s2 = classify(
        model_path, [str(folder)], tmp_path / "out2", backend="cpu", progress=False, ignore_voxel_size=True
    )
    assert (s2.total_rows, s2.total_errors) == (3, 0)


def test_a_failing_model_stops_the_run_promptly_and_keeps_finished_rows(model_path, inputs, tmp_path):
    from cryoshift.runtime.backends import load_model

    model = load_model(model_path, "cpu", batch_size=4)
    calls = {"n": 0}
    real = model._runner

    def flaky(batch):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("device lost")
        return real(batch)

    model._runner = flaky
    with pytest.raises(RuntimeError, match="device lost"):
        classify(model, [str(inputs["stack"])], tmp_path / "out", batch_size=4, workers=2, progress=False)
    import threading

    # The readers were stopped, not left blocked on a full buffer pool.
    assert not [t for t in threading.enumerate() if t.name.startswith("cryoshift-reader")]
    model._runner = real
    s = classify(model, [str(inputs["stack"])], tmp_path / "out", batch_size=4, resume=True, progress=False)
    assert s.total_rows == 12 and s.resumed >= 4


def test_readers_interrupted_before_they_started_stop_cleanly() -> None:
    """Ctrl-C can land while the readers are being started: stopping them must not raise
    ("cannot join thread before it is started"), or the CLI prints a traceback instead of
    'rerun with --resume'."""
    import queue

    from cryoshift.runtime.readers import ProcessReaders, ThreadReaders
    from cryoshift.runtime.sources import Item, VolumeCache

    chunks = [[Item("a", "error", "a", error="x")]]
    ThreadReaders(chunks, 1, 4, 2, queue.Queue(), VolumeCache(), None).stop()
    ProcessReaders(chunks, 1, 4, 2, queue.Queue(), None).stop()


def test_a_batch_no_machine_can_hold_is_capped_at_the_items(model_path, helpers, tmp_path, capsys):
    """--batch-size 10**11 on 3 volumes: the read buffers are allocated whole, so this failed at its
    first allocation (exit 1, "out of host memory", a folder left behind); one batch of 3 does the
    same work, so the batch is capped at the items and the run succeeds."""
    from cryoshift.runtime.cli import main

    stack = write_stack(tmp_path / "s.mrcs", helpers.make_volumes(3), voxel_size=helpers.VOXEL)
    out = tmp_path / "out"
    code = main(["classify", str(model_path), str(stack), "-o", str(out), "--batch-size", str(10**11)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert (out / "predictions.csv").read_text().count("\n") == 4  # header + 3 rows
    assert "Traceback" not in err


# ---------------------------------------------------------------------------------------------
# One bad item in a batch fails alone: reported in errors.csv, the rest classified.


def _tomogram(path: Path, voxel: float = 10.0, seed: int = 0) -> Path:
    data = np.random.default_rng(seed).normal(size=(40, 40, 40)).astype(np.float32)
    return write_volume(path, data, voxel_size=voxel)


def _picks_star(path: Path, rows: list[str]) -> Path:
    head = "data_particles\n\nloop_\n_rlnTomoName #1\n" + "".join(
        f"_rlnCoordinate{axis} #{i}\n" for i, axis in enumerate("XYZ", 2)
    )
    path.write_text(head + "\n".join(rows) + "\n")
    return path


def _errors(summary) -> dict[str, tuple[str, str]]:
    errors = read_results(summary.errors_csv)
    return {r.id: (r.path, r.reason) for r in errors.itertuples()}


def test_a_bad_tomogram_fails_only_its_own_picks(model_path, tmp_path):
    good = _tomogram(tmp_path / "TS_01.mrc")
    trunc = _tomogram(tmp_path / "TS_trunc.mrc")
    trunc.write_bytes(trunc.read_bytes()[:5000])
    _tomogram(tmp_path / "TS_vs5.mrc", voxel=5.0)  # the model's voxels are 10 A
    (tmp_path / "TS_empty.mrc").write_bytes(b"")
    picks = _picks_star(
        tmp_path / "picks.star",
        ["TS_01 20 20 20", "TS_trunc 8 8 8", "TS_vs5 20 20 20", "TS_01 12 14 16", "TS_empty 9 9 9"],
    )
    s = classify(
        model_path, [str(picks)], tmp_path / "out", tomograms=[str(tmp_path)], backend="cpu", progress=False
    )
    assert (s.total_rows, s.total_errors) == (2, 3)
    assert set(read_results(s.predictions_csv)["path"]) == {str(good)}
    errors = _errors(s)
    assert errors["TS_trunc:8.0,8.0,8.0"] == (str(picks), errors["TS_trunc:8.0,8.0,8.0"][1])
    assert errors["TS_trunc:8.0,8.0,8.0"][1].startswith(f"tomogram {trunc}: file is truncated")
    assert "TS_vs5.mrc: voxel size 5 A differs from the model's 10 A" in errors["TS_vs5:20.0,20.0,20.0"][1]
    assert errors["TS_empty:9.0,9.0,9.0"][1].endswith("TS_empty.mrc: file is empty")


def test_centred_picks_of_an_unreadable_tomogram_fail_alone(model_path, tmp_path):
    """RELION 5 centred Angstrom picks need each tomogram's header to be converted: an unreadable
    one used to refuse the whole table."""
    _tomogram(tmp_path / "TS_01.mrc")
    trunc = _tomogram(tmp_path / "TS_bad.mrc")
    trunc.write_bytes(trunc.read_bytes()[:3000])
    picks = tmp_path / "centred.star"
    picks.write_text(
        "data_particles\n\nloop_\n_rlnTomoName #1\n_rlnCenteredCoordinateXAngst #2\n"
        "_rlnCenteredCoordinateYAngst #3\n_rlnCenteredCoordinateZAngst #4\n"
        "TS_01 0 0 0\nTS_bad 0 0 0\nTS_01 30 -20 10\n"
    )
    s = classify(
        model_path, [str(picks)], tmp_path / "out", tomograms=[str(tmp_path)], backend="cpu", progress=False
    )
    assert (s.total_rows, s.total_errors) == (2, 1)
    ((ident, (path, reason)),) = _errors(s).items()
    assert ident.startswith("TS_bad:") and path == str(picks)
    assert reason.startswith(f"tomogram {trunc}: file is truncated")


def test_bad_rows_of_a_pick_table_fail_alone_naming_their_line(model_path, tmp_path):
    _tomogram(tmp_path / "TS_01.mrc")
    star = _picks_star(
        tmp_path / "picks.star",
        [
            "TS_01 20 20 20",
            "# a comment",
            "TS_01 abc 20 20",
            "",
            "TS_01 nan 1 2",
            "TS_01 12 14 inf",
            "TS_01 9 9 9",
        ],
    )
    s = classify(
        model_path, [str(star)], tmp_path / "out", tomograms=[str(tmp_path)], backend="cpu", progress=False
    )
    assert (s.total_rows, s.total_errors) == (2, 3)
    reasons = sorted(reason for path, reason in _errors(s).values() if path == str(star))
    # header: 7 lines; rows on lines 8, (9 comment), 10, (11 blank), 12, 13, 14
    assert reasons == [f"line {n}: missing or non-numeric coordinates (row skipped)" for n in (10, 12, 13)]
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("tomo_name,x,y,z\nTS_01,20,20,20\nTS_01,12,14\nTS_01,9,9,9\n")
    s = classify(
        model_path, [str(ragged)], tmp_path / "out2", tomograms=[str(tmp_path)], backend="cpu", progress=False
    )
    assert (s.total_rows, s.total_errors) == (2, 1)
    assert [reason for _, reason in _errors(s).values()] == [
        "line 3: missing or non-numeric coordinates (row skipped)"
    ]


def test_a_table_of_only_bad_rows_is_refused_in_one_line(model_path, tmp_path):
    _tomogram(tmp_path / "TS_01.mrc")
    star = _picks_star(tmp_path / "picks.star", ["TS_01 abc 20 20", "TS_01 1 nan 2"])
    with pytest.raises(InputError, match=r"every row has missing or non-numeric coordinates \(lines 8, 9\)"):
        classify(
            model_path,
            [str(star)],
            tmp_path / "out",
            tomograms=[str(tmp_path)],
            backend="cpu",
            progress=False,
        )


def test_slice_zero_in_a_listing_is_an_error_row(model_path, helpers, tmp_path):
    write_stack(tmp_path / "stack.mrcs", helpers.make_volumes(3), voxel_size=helpers.VOXEL)
    listing = tmp_path / "listing.star"
    listing.write_text("data_particles\n\nloop_\n_rlnImageName\n1@stack.mrcs\n0@stack.mrcs\n3@stack.mrcs\n")
    s = classify(model_path, [str(listing)], tmp_path / "out", backend="cpu", progress=False)
    assert (s.total_rows, s.total_errors) == (2, 1)
    stack = (tmp_path / "stack.mrcs").resolve()
    assert _errors(s) == {
        f"000000@{stack}": (
            str(listing),
            "line 6: '0@stack.mrcs' has slice number 0; RELION numbers slices from 1",
        )
    }
    only_bad = tmp_path / "bad.star"
    only_bad.write_text("data_particles\n\nloop_\n_rlnImageName\n0@stack.mrcs\n")
    with pytest.raises(InputError, match=r"no row names a usable image; line 5: '0@stack\.mrcs' has slice"):
        classify(model_path, [str(only_bad)], tmp_path / "out2", backend="cpu", progress=False)


def test_voxel_size_mismatch_is_an_error_row_however_the_file_is_given(model_path, helpers, tmp_path):
    """Given on the command line it used to stop the run; in a folder it was an error row."""
    vols = helpers.make_volumes(3)
    for name, voxel, vol in zip(("a.mrc", "vs5.mrc", "b.mrc"), (10.0, 5.0, 10.0), vols, strict=True):
        write_volume(tmp_path / name, vol, voxel_size=voxel)
    files = [str(tmp_path / n) for n in ("a.mrc", "vs5.mrc", "b.mrc")]
    for out, given in (("listed", files), ("glob", [str(tmp_path / "*.mrc")]), ("folder", [str(tmp_path)])):
        s = classify(model_path, given, tmp_path / out, backend="cpu", progress=False)
        assert (s.total_rows, s.total_errors) == (2, 1), out
        ((path, reason),) = _errors(s).values()
        assert path.endswith("vs5.mrc") and "voxel size 5 A differs from the model's 10 A" in reason


def test_nothing_classified_exits_2_with_one_line_even_quiet(model_path, helpers, tmp_path, capsys):
    from cryoshift.runtime.cli import main

    write_volume(tmp_path / "nan.mrc", np.full((16, 16, 16), np.nan, np.float32), voxel_size=10.0)
    (tmp_path / "empty.mrc").write_bytes(b"")
    inputs = [str(tmp_path / "nan.mrc"), str(tmp_path / "empty.mrc")]
    code = main(["classify", str(model_path), *inputs, "-o", str(tmp_path / "out"), "-b", "cpu", "-q"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.strip().splitlines()[-1] == (
        "cryoshift: error: nothing was classified: all 2 items failed; "
        f"the reasons are in {tmp_path / 'out' / 'errors.csv'}"
    )
    assert len(read_results(tmp_path / "out" / "errors.csv")) == 2
    write_volume(tmp_path / "good.mrc", helpers.make_volumes(1)[0], voxel_size=10.0)
    code = main(
        ["classify", str(model_path), *inputs, str(tmp_path / "good.mrc"), "-o", str(tmp_path / "o2")]
    )
    assert code == 0  # one classified: errors.csv lists the others


def test_dangling_link_in_a_folder_is_reported(model_path, helpers, tmp_path):
    folder = tmp_path / "subs"
    folder.mkdir()
    write_volume(folder / "good.mrc", helpers.make_volumes(1)[0], voxel_size=10.0)
    os.symlink(tmp_path / "nowhere.mrc", folder / "a_broken.mrc")  # sorted first: checked in full
    os.symlink(tmp_path / "gone.mrc", folder / "z_broken.mrc")  # later: checked by the reader
    s = classify(model_path, [str(folder)], tmp_path / "out", backend="cpu", progress=False)
    assert (s.total_rows, s.total_errors) == (1, 2)
    for name, target in (("a_broken.mrc", "nowhere.mrc"), ("z_broken.mrc", "gone.mrc")):
        _, reason = _errors(s)[str(folder / name)]
        assert reason == f"dangling symbolic link (points to {tmp_path / target}, which does not exist)"


@pytest.mark.parametrize("cell", [0.0, float("nan"), float("inf"), -160.0])
def test_unusable_header_voxel_size_is_noted_and_null_in_the_manifest(model_path, helpers, tmp_path, cell):
    """Such a file used to be classified in silence and recorded as 1.0 A in the manifest."""
    import struct

    path = write_volume(tmp_path / "v.mrc", helpers.make_volumes(1)[0], voxel_size=10.0)
    raw = bytearray(path.read_bytes())
    struct.pack_into("<3f", raw, 40, cell, cell, cell)
    path.write_bytes(bytes(raw))
    s = classify(model_path, [str(path)], tmp_path / "out", backend="cpu", progress=False)
    assert (s.total_rows, s.total_errors) == (1, 0)
    (note,) = [n for n in s.notes if "voxel size" in n]
    assert note.startswith(
        f"{path}: no usable voxel size in the header (cell = {cell:g}, {cell:g}, {cell:g})"
    )
    manifest = json.loads(Path(s.manifest).read_text())
    assert manifest["data"]["voxel_sizes"] == {str(path): None}


def test_quiet_still_prints_notes_and_errors(model_path, helpers, tmp_path, capsys):
    """-q hides the summary, not a file classified without its voxel size being checked."""
    import struct

    from cryoshift.runtime.cli import main

    path = write_volume(tmp_path / "v.mrc", helpers.make_volumes(1)[0], voxel_size=10.0)
    raw = bytearray(path.read_bytes())
    struct.pack_into("<3f", raw, 40, 0.0, 0.0, 0.0)
    path.write_bytes(bytes(raw))
    (tmp_path / "empty.mrc").write_bytes(b"")
    out_dir = tmp_path / "out"
    args = ["classify", str(model_path), str(path), str(tmp_path / "empty.mrc"), "-o", str(out_dir), "-q"]
    assert main([*args, "-b", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert f"cryoshift: errors: {out_dir / 'errors.csv'} (1 rows)" in err.splitlines()
    assert any(line.startswith(f"cryoshift: note: {path}: no usable voxel size") for line in err.splitlines())


def test_txt_files_are_read_by_their_content(model_path, helpers, tmp_path):
    """A picks table named .txt was read as a truncated MRC; an MRC named .txt is a volume."""
    _tomogram(tmp_path / "TS_01.mrc")
    picks = tmp_path / "picks.txt"
    picks.write_text("tomo_name,x,y,z\nTS_01,20,20,20\nTS_01,12,14,16\n")
    volume = write_volume(tmp_path / "vol.mrc", helpers.make_volumes(1)[0], voxel_size=10.0)
    as_txt = tmp_path / "vol.txt"
    as_txt.write_bytes(volume.read_bytes())
    s = classify(
        model_path,
        [str(picks), str(as_txt)],
        tmp_path / "out",
        tomograms=[str(tmp_path / "TS_01.mrc")],
        backend="cpu",
        progress=False,
    )
    assert (s.total_rows, s.total_errors) == (3, 0)
    assert set(read_results(s.predictions_csv)["id"]) == {
        "TS_01:20.0,20.0,20.0",
        "TS_01:12.0,14.0,16.0",
        str(as_txt),
    }


def test_repeated_picks_are_classified_again_with_a_note(model_path, tmp_path):
    """A pick given twice is kept (it may be meant) but said: a note, and ids suffixed ~2."""
    _tomogram(tmp_path / "TS_01.mrc")
    star = _picks_star(tmp_path / "picks.star", ["TS_01 20 20 20", "TS_01 12 12 12", "TS_01 20 20 20"])
    s = classify(
        model_path, [str(star)], tmp_path / "out", tomograms=[str(tmp_path)], backend="cpu", progress=False
    )
    assert s.total_rows == 3
    assert any("1 picks repeat an earlier pick" in note for note in s.notes), s.notes
    ids = read_results(s.predictions_csv)["id"].tolist()
    assert sum(i.endswith("~2") for i in ids) == 1
