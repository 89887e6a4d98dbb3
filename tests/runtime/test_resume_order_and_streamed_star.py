"""A resumed run's tables in the order an uninterrupted run writes, and a streamed predictions.star
with the same columns as one built in memory.

``classify --resume --retry-errors`` appended the rows of the items tried again after the rows
written before them, so predictions.csv (and the STAR, features.npy) listed a fixed file's row
last, where an uninterrupted run over the same inputs lists it in the inputs' order. A results
table over ``STREAM_ROWS`` rows was written to predictions.star in chunks without the
``rlnCenteredCoordinateX/Y/ZAngst`` that the in-memory path gives every pick row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cryoshift.runtime import classify, star_out
from cryoshift.runtime.features import features_path, read_features
from cryoshift.runtime.ledger import written_ids
from cryoshift.runtime.mrc import write_volume
from cryoshift.runtime.picks import CENTERED_COLUMNS
from cryoshift.runtime.results import read_results


def _volumes(helpers, folder: Path, bad: set[int], only: set[int] | None = None) -> list[Path]:
    """Eight volumes v00..v07 in ``folder``; those numbered in ``bad`` are corrupt files; with
    ``only``, just those are (re)written (a repair touches the broken files, not the good ones,
    which --resume would refuse as changed since their rows were written)."""
    folder.mkdir(parents=True, exist_ok=True)
    vols = helpers.make_volumes(8, helpers.BOX, 3)
    paths = []
    for i in range(8):
        p = folder / f"v{i:02d}.mrc"
        if only is not None and i not in only:
            pass
        elif i in bad:
            p.write_bytes(b"\x00" * 2000)
        else:
            write_volume(p, vols[i], voxel_size=helpers.VOXEL)
        paths.append(p)
    return paths


def _run(model_path: Path, folder: Path, out: Path, **kw):
    return classify(
        model_path, [str(folder)], out, backend="cpu", progress=False, batch_size=2, features=True, **kw
    )


def test_retried_rows_take_their_place_in_the_inputs_order(model_path, helpers, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _volumes(helpers, Path("data"), bad={2, 5})
    out = tmp_path / "resumed"
    first = _run(model_path, Path("data"), out)
    assert first.total_errors == 2
    _volumes(helpers, Path("data"), bad=set(), only={2, 5})  # the corrupt files repaired
    resumed = _run(model_path, Path("data"), out, resume=True, retry_errors=True)
    assert resumed.total_errors == 0
    whole = tmp_path / "whole"
    _run(model_path, Path("data"), whole)

    got, want = pd.read_csv(out / "predictions.csv"), pd.read_csv(whole / "predictions.csv")
    assert list(got["id"]) == list(want["id"])  # v02 and v05 in their places, not last
    assert list(got["id"]) == sorted(got["id"])
    np.testing.assert_allclose(got["confidence"], want["confidence"], rtol=1e-5)
    # the STAR follows the CSV; each features row is still its CSV row's
    assert list(read_results(out / "predictions.star")["id"]) == list(want["id"])
    np.testing.assert_allclose(
        read_features(features_path(out / "predictions.csv")),
        read_features(features_path(whole / "predictions.csv")),
        rtol=1e-4,
        atol=1e-5,
    )
    # and the row record was rewritten with them: a later resume is not refused as re-sorted
    again = _run(model_path, Path("data"), out, resume=True)
    assert again.total_rows == 8
    assert written_ids(out / "predictions.csv") == list(want["id"])


def test_errors_that_fail_again_keep_the_inputs_order(model_path, helpers, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _volumes(helpers, Path("data"), bad={1, 4, 6})
    out = tmp_path / "resumed"
    _run(model_path, Path("data"), out)
    _volumes(helpers, Path("data"), bad={1, 6}, only={4})  # only v04 repaired: v01 and v06 fail again
    _run(model_path, Path("data"), out, resume=True, retry_errors=True)
    whole = tmp_path / "whole"
    _run(model_path, Path("data"), whole)
    for name in ("predictions.csv", "errors.csv"):
        got = pd.read_csv(out / name)["id"].tolist()
        assert got == pd.read_csv(whole / name)["id"].tolist(), name


@pytest.fixture
def picks_and_files(helpers, tmp_path: Path) -> list[str]:
    """A CSV picks table over two tomograms (one pick outside: an error row) and two MRC files."""
    rng = np.random.default_rng(5)
    tomos = tmp_path / "tomos"
    tomos.mkdir()
    for name in ("TS_01", "TS_02"):
        write_volume(
            tomos / f"{name}.mrc", rng.normal(0, 1, (24, 48, 40)).astype(np.float32), voxel_size=helpers.VOXEL
        )
    picks = tmp_path / "picks.csv"
    picks.write_text(
        "tomo,x,y,z\nTS_01,20,24,12\nTS_01,8,8,8\nTS_02,30,30,12\nTS_02,55,5,5\nTS_02,12,30,10\n"
    )
    files = _volumes(helpers, tmp_path / "files", bad=set())[:2]
    return [str(picks), *map(str, files)]


@pytest.mark.parametrize("with_files", [False, True], ids=["picks", "picks and files"])
def test_streamed_star_has_the_centred_coordinates(
    model_path, picks_and_files, tmp_path, monkeypatch, with_files
):
    inputs = picks_and_files if with_files else picks_and_files[:1]
    tomos = [str(tmp_path / "tomos")]
    kw = {"backend": "cpu", "progress": False, "tomograms": tomos, "split_by_class": True}
    classify(model_path, inputs, tmp_path / "memory", **kw)
    monkeypatch.setattr(star_out, "STREAM_ROWS", 1)  # every table streamed
    classify(model_path, inputs, tmp_path / "streamed", **kw)

    memory = (tmp_path / "memory" / "predictions.star").read_text()
    streamed = (tmp_path / "streamed" / "predictions.star").read_text()
    for label in CENTERED_COLUMNS:
        assert f"_{label} " in memory
        assert f"_{label} " in streamed
    assert streamed == memory
    for star in sorted((tmp_path / "memory").glob("predictions_*.star")):
        assert (tmp_path / "streamed" / star.name).read_text() == star.read_text(), star.name


def test_resume_reads_each_ledger_once_and_still_refuses_damage(model_path, helpers, tmp_path, monkeypatch):
    """run.py read the ledgers' ids for its plan check with its own reader, then the ledgers read
    them again; one reader (ledger.written_ids) now serves both, read once per ledger, and a cut
    last line, a damaged line and a foreign file are still told apart as before."""
    from cryoshift.runtime import ledger
    from cryoshift.runtime.errors import InputError

    monkeypatch.chdir(tmp_path)
    _volumes(helpers, Path("data"), bad={3})
    out = tmp_path / "out"
    _run(model_path, Path("data"), out)
    csv_path = out / "predictions.csv"
    text = csv_path.read_text()
    lines = text.splitlines(keepends=True)
    csv_path.write_text("".join(lines[:4]) + lines[4][:10])  # killed mid-write: a partial last line
    assert written_ids(csv_path) == [line.split(",")[0] for line in lines[1:4]]

    reads: list[Path] = []
    real = ledger.written_ids

    def counted(path: Path, strict: bool = False) -> list[str] | None:
        reads.append(Path(path).name)
        return real(path, strict)

    monkeypatch.setattr(ledger, "written_ids", counted)
    monkeypatch.setattr("cryoshift.runtime.run.written_ids", counted)
    summary = _run(model_path, Path("data"), out, resume=True)
    assert reads.count("predictions.csv") == 1 and reads.count("errors.csv") == 1
    assert any("partial last line" in n for n in summary.notes)
    assert summary.total_rows == 7 and summary.total_errors == 1
    assert written_ids(csv_path) == sorted(written_ids(csv_path))

    good = csv_path.read_bytes()
    csv_path.write_bytes(good.replace(b"v05", b"v\xff5"))
    with pytest.raises(InputError, match=r"predictions.csv: damaged: line 6 is not UTF-8 text"):
        _run(model_path, Path("data"), out, resume=True)
    csv_path.write_bytes(b"something else\n" + good)
    with pytest.raises(InputError, match="damaged or a foreign file"):
        _run(model_path, Path("data"), out, resume=True)


def test_picks_of_a_tomogram_found_later_take_their_place(model_path, picks_and_files, tmp_path):
    """Pick tables plan their ids as arrays (runtime/pickrows.py): their rows are put in order too."""
    tomos = tmp_path / "tomos"
    kw = {"backend": "cpu", "progress": False, "tomograms": [str(tomos)], "batch_size": 2}
    (tomos / "TS_01.mrc").rename(tmp_path / "TS_01.mrc")  # missing: its picks fail
    out = tmp_path / "resumed"
    first = classify(model_path, picks_and_files, out, **kw)
    assert first.total_errors == 3
    (tmp_path / "TS_01.mrc").rename(tomos / "TS_01.mrc")  # found
    classify(model_path, picks_and_files, out, resume=True, retry_errors=True, **kw)
    classify(model_path, picks_and_files, tmp_path / "whole", **kw)
    for name in ("predictions.csv", "errors.csv", "predictions.star"):
        got = read_results(out / name)["id"].tolist()
        assert got == read_results(tmp_path / "whole" / name)["id"].tolist(), name
    assert read_results(out / "predictions.csv")["id"].tolist()[:2] == [
        "TS_01:20.0,24.0,12.0",
        "TS_01:8.0,8.0,8.0",
    ]
