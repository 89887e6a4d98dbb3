"""A CSV cell holding a bare ``\\r`` (Linux allows it in a file name) is quoted by every CSV writer,
as the ledgers and the results tables quote it (ledger.csv_line).

Bug: a dataset's particles.csv (and bench's picks.csv, the throughput benchmark's naive-loop
table) was written by pandas' ``to_csv``, which on Python 3.11 quotes only the characters of its
line terminator: a source file name ``a\\rb.mrc`` was written bare, and every reader (the csv
module's, pandas') split its row there, so the table held a row too many, cut in two.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cryoshift.runtime.dataset import TABLE, read_dataset, write_dataset

SOURCES = ["a\rb.mrc", "plain.mrc", "c\r\nd,e.mrc", 'f"\r.mrc', "g\n.mrc"]


def test_dataset_table_with_carriage_returns_reads_back(tmp_path: Path) -> None:
    n = len(SOURCES)
    volumes = np.random.default_rng(0).normal(0, 1, (n, 16, 16, 16)).astype(np.float32)
    rows = [{"source": s, "defocus": 1.0 / 3.0 + k} for k, s in enumerate(SOURCES)]
    out = write_dataset(
        tmp_path / "ds", volumes, [k % 2 for k in range(n)], ["a", "b"], voxel_size=10.0, table=rows
    )
    with open(out / TABLE, newline="", encoding="utf-8") as fh:
        read = list(csv.reader(fh))
    assert {len(r) for r in read} == {5} and len(read) == n + 1  # no row cut in two
    assert read[0] == ["index", "label", "class_name", "source", "defocus"]
    assert [r[3] for r in read[1:]] == SOURCES
    table = pd.read_csv(out / TABLE, keep_default_na=False)
    assert list(table["source"]) == SOURCES
    assert list(table["index"]) == list(range(n))
    assert list(table["defocus"]) == [1.0 / 3.0 + k for k in range(n)]  # numbers written as before
    assert (out / TABLE).read_bytes().count(b"\n") == n + 1 + 2  # rows end in \n; two inside quotes
    with read_dataset(out, with_labels=True) as ds:
        assert len(ds) == n and list(ds.table["source"]) == SOURCES


def test_bench_picks_table_reads_back_as_picks(tmp_path: Path) -> None:
    """bench's picks.csv, now written by results.write_results, is still the picks it drew."""
    from cryoshift.runtime.bench import make_bench_data
    from cryoshift.runtime.picks import read_picks

    make_bench_data(tmp_path, 4, 8, 10.0)
    picks = read_picks(tmp_path / "picks.csv")
    assert list(picks["tomo_name"]) == ["bench_tomo"] * 4
    with open(tmp_path / "picks.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["tomo_name", "x", "y", "z"] and len(rows) == 5
    assert picks[["x", "y", "z"]].to_numpy().tolist() == [[float(v) for v in r[1:]] for r in rows[1:]]


def test_throughput_naive_loop_table_with_carriage_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The throughput benchmark's naive-loop table keeps a file name holding ``\\r`` in one row."""
    torch = pytest.importorskip("torch")
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from throughput import naive_loop

    from cryoshift.runtime.mrc import write_volume

    files = [tmp_path / name for name in ("a\rb.mrc", "plain.mrc", "c\r.mrc")]
    for path in files:
        write_volume(path, np.zeros((8, 8, 8), np.float32), voxel_size=10.0)
    out = tmp_path / "naive.csv"
    assert naive_loop(lambda x: (torch.tensor([[0.0, 1.0]]), None), files, out) == len(files)
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert [r[0] for r in rows[1:]] == [str(p) for p in files] and {len(r) for r in rows} == {3}
    assert list(pd.read_csv(out)["path"]) == [str(p) for p in files]
