"""``classify --features``: features.npy, one float32 row per prediction row, through resume,
shards, several devices and the report's embedding panel (issue 14)."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pandas as pd
import pytest

from cryoshift.runtime import classify
from cryoshift.runtime.cli import main
from cryoshift.runtime.errors import InputError
from cryoshift.runtime.features import FeatureLedger
from cryoshift.runtime.results import read_results


def _args(inputs) -> list[str]:
    return [str(inputs["files"]), str(inputs["stack"]), str(inputs["picks"]), "-t", str(inputs["tomos"])]


def _classify(model_path, inputs, out, *options: str) -> None:
    """classify every input kind on the CPU into ``out``, quietly; it must succeed."""
    argv = ["classify", str(model_path), *_args(inputs), "-o", str(out), "-b", "cpu", "-q", *options]
    assert main(argv) == 0


def _reference(helpers, model_path, inputs, ids) -> np.ndarray:
    """The model's features for each id, computed by ONNX Runtime directly on the volumes."""
    vols = np.stack([inputs["expected"][i] for i in ids])
    return helpers.run_onnx(model_path, vols)[1]


def _check_aligned(helpers, model_path, inputs, out, name="features.npy", csv="predictions.csv"):
    feats = np.load(out / name, allow_pickle=False)
    rows = read_results(out / csv)
    assert feats.dtype == np.float32 and feats.shape == (
        len(rows),
        len(
            helpers.run_onnx(model_path, np.zeros((1, helpers.BOX, helpers.BOX, helpers.BOX), np.float32))[1][
                0
            ]
        ),
    )
    np.testing.assert_allclose(
        feats, _reference(helpers, model_path, inputs, list(rows["id"])), rtol=1e-5, atol=1e-5
    )
    return feats, rows


def test_features_rows_follow_the_predictions(model_path, inputs, helpers, tmp_path, capsys):
    out = tmp_path / "out"
    _classify(model_path, inputs, str(out), "--features", "--batch-size", "4")
    feats, rows = _check_aligned(helpers, model_path, inputs, out)
    assert len(rows) == 8 + 12 + 5  # good files, stack slices, picks inside their tomograms
    assert len(read_results(out / "errors.csv")) == 4  # no features rows for these
    manifest = pd.read_json(out / "manifest.json", typ="series")
    assert manifest["features"] == {
        "file": "features.npy",
        "rows": 25,
        "dim": feats.shape[1],
        "dtype": "float32",
    }
    assert manifest["settings"]["features"] is True
    # Without --features nothing is written, and the report says how to get the panel.
    plain = tmp_path / "plain"
    assert main(["classify", str(model_path), str(inputs["stack"]), "-o", str(plain), "-b", "cpu", "-q"]) == 0
    assert not (plain / "features.npy").exists()
    assert main(["report", str(plain)]) == 0
    page = (plain / "report.html").read_text()
    assert "not written: rerun classify with --features" in page and "Target embedding" not in page


def _pngs(page: str) -> dict[str, bytes]:
    found = re.findall(
        r'<h2>([^<]+)</h2><img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page
    )
    return {title: base64.b64decode(data) for title, data in found}


def test_report_draws_the_embedding_coloured_by_predicted_class(model_path, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        main(["classify", str(model_path), *_args(inputs), "-o", str(out), "-b", "cpu", "-q", "--features"])
        == 0
    )
    assert main(["report", str(out)]) == 0
    page = (out / "report.html").read_text()
    figures = _pngs(page)
    assert "Target embedding" in figures and "rerun classify with --features" not in page
    png = figures["Target embedding"]
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[16:20], "big") >= 750  # 150 dpi
    import io

    import matplotlib.image

    image = matplotlib.image.imread(io.BytesIO(png))
    colours = {tuple(np.round(px[:3], 2)) for px in image.reshape(-1, image.shape[-1])}
    assert len(colours) > 50  # points in several colours and a legend, not an empty frame
    # Rows that no longer match (another run's file) are reported, not drawn.
    np.save(out / "features.npy", np.zeros((3, 8), np.float32))
    assert main(["report", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "has 3 rows for 25 predictions" in page and "Target embedding" not in _pngs(page)


def test_features_stay_aligned_through_a_killed_run_and_resume(model_path, inputs, helpers, tmp_path, capsys):
    out = tmp_path / "out"
    _classify(model_path, inputs, str(out), "--features", "--batch-size", "4")
    csv = out / "predictions.csv"
    lines = csv.read_text().splitlines(keepends=True)
    # kill -9 between the two appends of a batch: features has 4 rows the CSV lacks, and the CSV
    # ends in half a line.
    csv.write_text("".join(lines[: 1 + 9]) + lines[10][:20])
    feats = np.load(out / "features.npy")
    with open(out / "features.npy", "r+b") as fh:
        fh.truncate(128 + 13 * feats.shape[1] * 4)
    (out / "manifest.json").unlink()
    # goes on writing features: the file is there
    _classify(model_path, inputs, str(out), "--resume", "--batch-size", "4")
    feats, rows = _check_aligned(helpers, model_path, inputs, out)
    assert rows["id"].is_unique and len(rows) == 25


def test_features_added_on_resume_are_nan_for_earlier_rows(model_path, inputs, helpers, tmp_path, capsys):
    out = tmp_path / "out"
    args = [str(model_path), str(inputs["stack"]), "-o", str(out), "-b", "cpu", "-q", "--batch-size", "4"]
    assert main(["classify", *args]) == 0
    csv = out / "predictions.csv"
    csv.write_text("".join(csv.read_text().splitlines(keepends=True)[: 1 + 5]))
    summary = classify(
        model_path,
        [str(inputs["stack"])],
        out,
        backend="cpu",
        progress=False,
        resume=True,
        batch_size=4,
        features=True,
    )
    assert any("5 rows classified earlier without --features" in n for n in summary.notes)
    feats = np.load(out / "features.npy")
    rows = read_results(csv)
    assert feats.shape[0] == len(rows) == 12
    assert np.isnan(feats[:5]).all() and np.isfinite(feats[5:]).all()
    np.testing.assert_allclose(
        feats[5:], _reference(helpers, model_path, inputs, list(rows["id"][5:])), rtol=1e-5, atol=1e-5
    )
    assert main(["report", str(out)]) == 0  # drawn from the rows that have features
    page = (out / "report.html").read_text()
    assert "Target embedding" in _pngs(page) and "5 rows without features (NaN) left out" in page


def test_shards_merge_and_devices_keep_features_aligned(model_path, inputs, helpers, tmp_path, capsys):
    for i in range(3):
        _classify(
            model_path, inputs, str(tmp_path / "s"), "--features", "--shard", f"{i}/3", "--batch-size", "3"
        )
        _check_aligned(
            helpers,
            model_path,
            inputs,
            tmp_path / "s",
            f"features.shard-{i}-of-3.npy",
            f"predictions.shard-{i}-of-3.csv",
        )
    assert main(["merge", str(tmp_path / "s"), "-o", str(tmp_path / "merged")]) == 0
    _, rows = _check_aligned(helpers, model_path, inputs, tmp_path / "merged")
    assert rows["id"].is_unique and len(rows) == 25
    (tmp_path / "s" / "features.shard-2-of-3.npy").unlink()
    assert main(["merge", str(tmp_path / "s"), "-o", str(tmp_path / "merged")]) == 0
    assert "have no features" in capsys.readouterr().out
    assert not (tmp_path / "merged" / "features.npy").exists()  # never a file that no longer matches
    summary = classify(
        model_path,
        _args(inputs)[:3],
        tmp_path / "dev",
        tomograms=[str(inputs["tomos"])],
        backend="cpu",
        progress=False,
        devices=[0, 1],
        features=True,
    )
    assert summary.total_rows == 25
    _check_aligned(helpers, model_path, inputs, tmp_path / "dev")


def test_merge_refuses_rows_copied_into_another_shard(model_path, inputs, helpers, tmp_path, capsys):
    """Rows copied by hand from shard 0 into shard 1 (features too) were "kept once" with a note
    that they were planned twice; merge re-plans the inputs, knows each id's shard, and refuses
    (a real repeat, the same picks in two tables, is tests/runtime/test_merge.py's)."""
    import shutil

    for i in range(2):
        classify(
            model_path,
            [str(inputs["stack"])],
            tmp_path / "s",
            backend="cpu",
            progress=False,
            shard=f"{i}/2",
            features=True,
        )
    # shard 1's ledger gets shard 0's first rows appended (a copy made by hand), features too.
    s0, s1 = (tmp_path / "s" / f"predictions.shard-{i}-of-2.csv" for i in range(2))
    extra = s0.read_text().splitlines(keepends=True)[1:3]
    s1.write_text(s1.read_text() + "".join(extra))
    m1 = tmp_path / "s" / "manifest.shard-1-of-2.json"  # the copy is told to its manifest (merge checks)
    manifest = json.loads(m1.read_text())
    manifest["summary"]["total_rows"] += len(extra)
    m1.write_text(json.dumps(manifest))
    f0, f1 = (np.load(tmp_path / "s" / f"features.shard-{i}-of-2.npy") for i in range(2))
    np.save(tmp_path / "f1.npy", np.concatenate([f1, f0[:2]]))
    shutil.copy(tmp_path / "f1.npy", tmp_path / "s" / "features.shard-1-of-2.npy")
    capsys.readouterr()
    assert main(["merge", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "predictions.shard-1-of-2.csv" in err and "belongs to shard 0/2" in err, err
    assert not (tmp_path / "s" / "predictions.csv").exists()


def test_feature_ledger_is_a_valid_npy_at_every_batch(tmp_path):
    path = tmp_path / "features.npy"
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 5)).astype(np.float32), rng.normal(size=(2, 5)).astype(np.float32)
    ledger = FeatureLedger(path)
    ledger.append(a)
    np.testing.assert_array_equal(np.load(path), a)  # readable while the run goes on
    ledger.append(b.astype(np.float16))  # fp16 outputs are stored as float32
    np.testing.assert_allclose(np.load(path), np.concatenate([a, b]), atol=1e-3)
    ledger.close()
    # Killed while writing its header: a resumed run starts the file afresh.
    path.write_bytes(path.read_bytes()[:40])
    with FeatureLedger(path, rows_done=2, resume=True, dim=5) as ledger:
        ledger.append(a)
    got = np.load(path)
    assert got.shape == (5, 5) and np.isnan(got[:2]).all()
    np.testing.assert_array_equal(got[2:], a)
    # Not a file of ours: refused in one line instead of being overwritten by a resume.
    np.save(path, np.zeros((2, 5), np.float64))
    with pytest.raises(InputError, match="not a features file written by classify --features"):
        FeatureLedger(path, rows_done=2, resume=True)
