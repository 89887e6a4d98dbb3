"""Values of classify's and export's own files that used to pass unchecked: a predictions CSV read
twice (once for the rows, once to check them), a manifest whose throughput is NaN or negative, a
model whose class name holds a line break, shard errors tables with empty fields, and shard
manifests whose counts or times are text. Every file is made here by the test, and each case goes
through the real CLI (or the one reader it is about)."""

from __future__ import annotations

import builtins
import csv
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hostile_inputs import (
    BOX,
    VOXEL,
    Capsys,
    assert_error,
    classify_in_two_shards,
    put,
    raw_mrc,
    run_cli,
    volumes,
)

PREDICTIONS = "id,class_name,confidence,shift_score\na,x,0.5,1.0\nb,y,0.9,1.2\nc,x,0.7,0.9\n"


@pytest.fixture()
def plt() -> None:
    pytest.importorskip("matplotlib")


# ---------------------------------------------------------------------------------------------
# predictions tables: read from the disk once, checked as before


def test_a_predictions_csv_is_opened_once_for_reading_and_checking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """report and info read the table (pandas: the header, then the rows) and then opened it again
    to check every row: three reads of a file that may be gigabytes."""
    from cryoshift.runtime import read_predictions  # the public API (runtime/__init__ exports it)

    table = put(tmp_path / "predictions.csv", PREDICTIONS)
    opened: list[str] = []
    real = io.open

    def counting(file: object, *args: object, **kwargs: object) -> object:
        if isinstance(file, (str, os.PathLike)) and os.fspath(file) == str(table):
            opened.append(str(file))
        return real(file, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(builtins, "open", counting)
    monkeypatch.setattr(io, "open", counting)
    rows = read_predictions(table, ("id", "class_name", "confidence", "shift_score"))
    assert list(rows["id"]) == ["a", "b", "c"] and rows["confidence"].tolist() == [0.5, 0.9, 0.7]
    assert len(opened) == 1, opened


@pytest.mark.parametrize(
    "text,words",
    [
        (PREDICTIONS + "d,y\n", "line 5 has 2 fields for 4 columns (a cut-off or damaged row)"),
        ("id,class_name,confidence,shift_score\na,x,high,1.0\n", "line 2: confidence 'high' is not a number"),
        (
            "id,class_name,confidence,confidence,shift_score\na,x,0.5,0.9,1.0\n",
            "column confidence appears twice",
        ),
    ],
)
def test_the_one_read_still_refuses_what_the_second_read_refused(
    text: str, words: str, tmp_path: Path
) -> None:
    """The same refusals, in the same words, from the bytes read once."""
    from cryoshift.runtime.errors import InputError
    from cryoshift.runtime.results import read_predictions

    table = put(tmp_path / "predictions.csv", text)
    with pytest.raises(InputError) as refused:
        read_predictions(table)
    assert refused.value.path == str(table) and words in refused.value.reason, refused.value


# ---------------------------------------------------------------------------------------------
# report: the manifest's throughput and times


def _results(root: Path, summary: str) -> Path:
    folder = root / "r"
    folder.mkdir()
    put(folder / "predictions.csv", PREDICTIONS)
    put(folder / "manifest.json", '{"summary": {"total_errors": 0, "pipeline_s": 2.0, ' + summary + "}}")
    return folder


@pytest.mark.parametrize(
    "summary,field",
    [
        ('"rate": NaN', "summary.rate"),
        ('"rate": Infinity', "summary.rate"),
        ('"rate": -12.5', "summary.rate"),
        ('"rate": 1e400', "summary.rate"),  # JSON's way to say infinity without the word
        ('"rate": 1' + "0" * 400, "summary.rate"),  # an integer no float holds
        ('"rate": 3.0, "wall_s": NaN', "summary.wall_s"),
        ('"rate": 3.0, "read_s": -1', "summary.read_s"),
        ('"rate": 3.0, "total_errors": -2', "summary.total_errors"),
    ],
)
def test_report_refuses_a_manifest_rate_or_time_that_is_nan_infinite_or_negative(
    summary: str, field: str, plt: None, tmp_path: Path, capsys: Capsys
) -> None:
    """The page said "nan subtomograms/s" (or "-12.5", "inf") and exit 0: classify never writes such
    a rate, and a manifest's other damaged values (a NaN threshold, a negative count) are refused."""
    folder = _results(tmp_path, summary)
    line = assert_error(run_cli(["report", folder], capsys), folder / "manifest.json")
    assert f"not a cryoshift classify manifest: {field} is not a finite number >= 0" in line, line
    assert not (folder / "report.html").exists()


def test_report_prints_a_real_rate(plt: None, tmp_path: Path, capsys: Capsys) -> None:
    """A rate of 0 (nothing classified) and a whole-number one are classify's: the page shows them."""
    for rate in ("0", "40"):
        (tmp_path / rate).mkdir()
        folder = _results(tmp_path / rate, f'"rate": {rate}')
        code, _, err = run_cli(["report", folder], capsys)
        assert code == 0, err
        assert f"{float(rate):,.1f} subtomograms/s" in (folder / "report.html").read_text()


# ---------------------------------------------------------------------------------------------
# model metadata: class names with control characters


BAD_NAMES = ["ribo\nsome", "ribo\tsome", "ribo\rsome", "ribo\x1b[31msome", "ribo\u2028some", "ribo\x85some"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_info_refuses_a_class_name_holding_a_control_character(
    name: str, tmp_path: Path, capsys: Capsys
) -> None:
    """A line break in a stored class name split info's table (the row went on under the next key),
    and a terminal escape recoloured it; classify would write it into every listing."""
    pytest.importorskip("onnx")
    from tiny_onnx import build_model

    model = build_model(tmp_path / "model.onnx", box=BOX, voxel=VOXEL, classes=["proteasome", name, "junk"])
    line = assert_error(run_cli(["info", model], capsys), model)
    assert "invalid model metadata: class_names has a name with a control character" in line, line
    assert repr(name) in line, line  # shown escaped, on the one line
    code, out, _ = run_cli(["info", "--validate", model], capsys)
    assert code == 1 and out.startswith(f"{model}: invalid model metadata: class_names"), out


def test_classify_refuses_a_model_with_a_line_break_in_a_class_name(tmp_path: Path, capsys: Capsys) -> None:
    pytest.importorskip("onnx")
    from tiny_onnx import build_model

    from cryoshift.runtime.mrc import write_volume

    model = build_model(tmp_path / "model.onnx", box=BOX, voxel=VOXEL, classes=["a", "b\nc", "d"])
    volume = write_volume(tmp_path / "v.mrc", volumes(1)[0], voxel_size=VOXEL)
    out = tmp_path / "out"
    line = assert_error(run_cli(["classify", model, volume, "-o", out, "-q", "-b", "cpu"], capsys), model)
    assert "class_names has a name with a control character" in line, line
    assert not (out / "predictions.csv").exists()


def test_the_json_readers_refuse_a_class_name_with_a_line_break(tmp_path: Path) -> None:
    """The engine sidecar and the metadata JSON go through the same check as an ONNX model."""
    from cryoshift.runtime.engine_sidecar import SIDECAR_FORMAT, read_engine_sidecar, sidecar_path
    from cryoshift.runtime.errors import InputError
    from cryoshift.runtime.metadata import ModelMetadata

    data = ModelMetadata(class_names=["a", "b\nc"], box_size=BOX, voxel_size=VOXEL).to_dict()
    meta = put(tmp_path / "meta.json", json.dumps(data))
    with pytest.raises(InputError) as refused:
        ModelMetadata.read_json(meta)
    assert refused.value.path == str(meta) and "class_names has a name with a control" in refused.value.reason
    engine = put(tmp_path / "model.engine", b"not read")
    block = {"format": SIDECAR_FORMAT, "gpu_name": "x", "tensorrt_version": "10.0.0", "onnx_sha256": "0" * 64}
    side = put(sidecar_path(engine), json.dumps({**data, "engine": {**block, "batch_max": 8}}))
    with pytest.raises(InputError) as refused:
        read_engine_sidecar(engine)
    assert refused.value.path == str(side) and "class_names has a name with a control" in refused.value.reason
    # names with spaces, accents or other scripts are names
    fine = {**data, "class_names": ["80S_ribosome", "Ångström", "蛋白酶体", "a_b-c.d"]}
    assert ModelMetadata.from_dict(fine).class_names == fine["class_names"]


def test_export_refuses_a_checkpoint_whose_class_name_holds_a_line_break(
    tmp_path: Path, capsys: Capsys
) -> None:
    """A training run over a dataset whose class name has a line break wrote it into its checkpoint;
    export copied it into model.onnx, which then split info's table."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from cryoshift.runtime.metadata import ModelMetadata
    from cryoshift.training.backbones import create_backbone
    from cryoshift.training.checkpoint import save_checkpoint

    net = create_backbone("cryonet-small", num_classes=2, box_size=BOX)
    meta = ModelMetadata(class_names=["a", "b\nc"], box_size=BOX, voxel_size=VOXEL)
    ckpt = save_checkpoint(
        tmp_path / "ckpt.pt", net, "cryonet-small", {"num_classes": 2, "box_size": BOX}, meta
    )
    out = tmp_path / "deploy"
    line = assert_error(run_cli(["export", ckpt, "-o", out, "--no-progress"], capsys), ckpt)
    assert "invalid model metadata: class_names has a name with a control character" in line, line
    assert not (out / "model.onnx").exists()


# ---------------------------------------------------------------------------------------------
# merge: the values of shard errors tables, and the shard manifests' counts and times


@pytest.fixture(scope="module")
def shards(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two genuine shards of one classify run over 4 good volumes and 2 of NaN (an errors row each)."""
    from cryoshift.runtime.mrc import write_volume

    root = tmp_path_factory.mktemp("shards")
    folder = root / "in"
    folder.mkdir()
    for i, v in enumerate(volumes(4, seed=5)):
        write_volume(folder / f"v{i}.mrc", v, voxel_size=VOXEL)
    for i in range(2):
        raw_mrc(folder / f"nan{i}.mrc", data=np.full((BOX, BOX, BOX), np.nan, np.float32).tobytes())
    classify_in_two_shards(model, folder, root / "shards")
    for i in range(2):
        assert len(_rows(root / "shards" / f"errors.shard-{i}-of-2.csv")) == 2  # header and one row
    return root / "shards"


def _rows(table: Path) -> list[list[str]]:
    with open(table, newline="") as fh:
        return list(csv.reader(fh))


def _write_rows(table: Path, rows: list[list[str]]) -> None:
    with open(table, "w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)


def _copy(shards: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(shards, tmp_path / "shards"))


def test_untouched_shards_with_errors_still_merge(shards: Path, tmp_path: Path, capsys: Capsys) -> None:
    folder = _copy(shards, tmp_path)
    code, _, err = run_cli(["merge", folder, "-o", tmp_path / "merged"], capsys)
    assert code == 0, err
    errors = _rows(tmp_path / "merged" / "errors.csv")
    assert errors[0] == ["id", "path", "reason"] and len(errors) == 3
    assert all("NaN" in row[2] for row in errors[1:]), errors


@pytest.mark.parametrize("column,value", [("id", ""), ("path", ""), ("reason", ""), ("reason", "   ")])
def test_merge_refuses_an_errors_row_with_an_empty_field(
    column: str, value: str, shards: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """An errors row without its id, file or reason (classify writes all three, never empty) was
    copied into the merged errors.csv, exit 0: a failed item that says neither which nor why."""
    folder = _copy(shards, tmp_path)
    table = folder / "errors.shard-1-of-2.csv"
    rows = _rows(table)
    rows[1][rows[0].index(column)] = value
    _write_rows(table, rows)
    out = tmp_path / "merged"
    line = assert_error(run_cli(["merge", folder, "-o", out], capsys), table)
    assert f"row 1 (line 2), column {column}: empty, which classify never writes" in line, line
    assert "rerun shard 1/2" in line, line
    assert not (out / "errors.csv").exists() and not (out / "predictions.csv").exists()


def test_merge_refuses_errors_tables_of_other_columns(shards: Path, tmp_path: Path, capsys: Capsys) -> None:
    """Every shard's errors table with other columns (so the shards agree) was merged as it was: an
    errors.csv without a reason column."""
    folder = _copy(shards, tmp_path)
    for i in range(2):
        table = folder / f"errors.shard-{i}-of-2.csv"
        rows = _rows(table)
        _write_rows(table, [["id", "path", "why"], *rows[1:]])
    first = folder / "errors.shard-0-of-2.csv"
    line = assert_error(run_cli(["merge", folder, "-o", tmp_path / "m"], capsys), first)
    assert "columns (id, path, why) are not those of an errors table (id, path, reason)" in line, line


@pytest.mark.parametrize(
    "key,value,words",
    [
        ("read_s", '"slow"', "summary.read_s is not a time in seconds"),
        ("pipeline_s", "NaN", "summary.pipeline_s is not a time in seconds"),
        ("wait_s", "-4.0", "summary.wait_s is not a time in seconds"),
        ("classified", "2.5", "summary.classified is not a count"),
        ("errors", '"1"', "summary.errors is not a count"),
    ],
)
def test_merge_refuses_a_shard_manifest_count_or_time_it_cannot_add(
    key: str, value: str, words: str, shards: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """Text as a time or a count was a TypeError traceback from the sum; a NaN or negative time went
    into the merged manifest (and its report said "nan s")."""
    folder = _copy(shards, tmp_path)
    manifest = folder / "manifest.shard-1-of-2.json"
    data = json.loads(manifest.read_text())
    data["summary"][key] = "@VALUE@"
    manifest.write_text(json.dumps(data).replace('"@VALUE@"', value))
    line = assert_error(run_cli(["merge", folder, "-o", tmp_path / "m"], capsys), manifest)
    assert f"not a readable shard manifest ({words}" in line, line
