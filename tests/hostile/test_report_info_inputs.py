"""Hostile inputs to `cryoshift report` and `cryoshift info` through the real CLI: tables, run files
and page names that are not what they claim, and model metadata of the wrong types. Each case was a
traceback, a page or description of other numbers than the file's, or a line that named the wrong
thing; now it is one line naming the file (or, where the data are usable, a warning)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hostile_inputs import BOX, Capsys, assert_error, predictions, put, raw_mrc, run_cli
from tiny_onnx import with_metadata

PREDICTIONS = "id,class_name,confidence,shift_score\na,x,0.5,1.0\nb,y,0.9,1.2\nc,x,0.7,0.9\n"
METRICS = "epoch,loss,src_val_acc,tgt_im\n0,1.0,0.5,0.1\n1,0.8,0.6,0.2\n2,0.6,0.7,0.3\n"
STAR_LOOP = "loop_\n_csId #1\n_csClassName #2\n_csConfidence #3\n_csShiftScore #4\n"


def _folder(root: Path, name: str, files: dict[str, str]) -> Path:
    folder = root / name
    folder.mkdir()
    for fname, text in files.items():
        put(folder / fname, text)
    return folder


@pytest.fixture()
def plt() -> None:
    pytest.importorskip("matplotlib")


# ---------------------------------------------------------------------------------------------
# report: files that are there but are not files


def test_report_names_a_table_that_is_a_folder_or_a_dangling_link(
    plt: None, tmp_path: Path, capsys: Capsys
) -> None:
    """A predictions.csv that is a folder or a dangling link was "no predictions.csv here" (about the
    folder); a run's metrics.csv that is a dangling link was "missing"."""
    folder = _folder(tmp_path, "dir", {})
    (folder / "predictions.csv").mkdir()
    line = assert_error(run_cli(["report", folder], capsys), folder / "predictions.csv")
    assert "is a folder" in line, line
    folder = _folder(tmp_path, "dangling", {})
    os.symlink("gone.csv", folder / "predictions.csv")
    line = assert_error(run_cli(["report", folder], capsys), folder / "predictions.csv")
    assert "dangling symbolic link" in line, line
    run = _folder(tmp_path, "run", {"config.json": "{}"})
    os.symlink("gone.csv", run / "metrics.csv")
    line = assert_error(run_cli(["report", run], capsys), run / "metrics.csv")
    assert "dangling symbolic link" in line, line


def test_report_refuses_run_json_files_that_are_folders_or_dangling_links(
    plt: None, tmp_path: Path, capsys: Capsys
) -> None:
    """manifest.json or config.json as a folder, selection.json as a dangling link: taken for absent,
    the page left out the run's facts (throughput, the selected epoch) without a word."""
    results = _folder(tmp_path, "results", {"predictions.csv": PREDICTIONS})
    (results / "manifest.json").mkdir()
    line = assert_error(run_cli(["report", results], capsys), results / "manifest.json")
    assert "is a folder" in line, line
    run = _folder(tmp_path, "run", {"metrics.csv": METRICS})
    (run / "config.json").mkdir()
    assert_error(run_cli(["report", run], capsys), run / "config.json")
    run = _folder(tmp_path, "run2", {"metrics.csv": METRICS})
    os.symlink("gone.json", run / "selection.json")
    line = assert_error(run_cli(["report", run], capsys), run / "selection.json")
    assert "dangling symbolic link" in line, line


# ---------------------------------------------------------------------------------------------
# report: classify results


def test_report_of_a_manifest_naming_a_class_twice(plt: None, tmp_path: Path, capsys: Capsys) -> None:
    """class_names ["x", "x", "y"] (or naming "unknown") in manifest.json was a TypeError traceback
    from the per-tomogram figure."""
    for i, names in enumerate((["x", "x", "y"], ["x", "unknown", "y"])):
        manifest = json.dumps({"model": {"class_names": names}})
        folder = _folder(tmp_path, f"r{i}", {"predictions.csv": PREDICTIONS, "manifest.json": manifest})
        code, _, err = run_cli(["report", folder], capsys)
        assert code == 0 and "Traceback" not in err, (code, err)
        assert (folder / "report.html").is_file()


@pytest.mark.parametrize(
    "manifest",
    [
        '{"model": {"unknown_threshold": NaN}}',
        '{"model": {"unknown_threshold": 1.5}}',
        '{"tomograms": {"T": {"x": -5}}}',
    ],
)
def test_report_refuses_manifest_values_out_of_range(
    manifest: str, plt: None, tmp_path: Path, capsys: Capsys
) -> None:
    """A NaN or 1.5 threshold was drawn as a line "unknown below nan", a negative count was tabled."""
    folder = _folder(tmp_path, "r", {"predictions.csv": PREDICTIONS, "manifest.json": manifest})
    line = assert_error(run_cli(["report", folder], capsys), folder / "manifest.json")
    assert "not a cryoshift classify manifest" in line, line


def test_report_refuses_a_repeated_predictions_column(plt: None, tmp_path: Path, capsys: Capsys) -> None:
    """Two confidence columns: pandas renamed the second, and the first was drawn without a word."""
    table = "id,class_name,confidence,confidence,shift_score\na,x,0.5,0.9,1.0\n"
    folder = _folder(tmp_path, "r", {"predictions.csv": table})
    line = assert_error(run_cli(["report", folder], capsys), folder / "predictions.csv")
    assert "confidence appears twice" in line, line


def test_predictions_in_several_star_blocks_are_refused(plt: None, tmp_path: Path, capsys: Capsys) -> None:
    """Two blocks of predictions and no data_particles: report and info read the first (1 of 3 rows)."""
    star = f"data_a\n\n{STAR_LOOP}a x 0.5 1.0\n\ndata_b\n\n{STAR_LOOP}b y 0.1 1.0\nc y 0.2 1.0\n"
    folder = _folder(tmp_path, "r", {"predictions.star": star})
    for argv in (["report", folder], ["info", folder / "predictions.star"]):
        line = assert_error(run_cli(argv, capsys), folder / "predictions.star")
        assert "none is data_particles" in line, line


def test_report_of_an_empty_star_table_names_the_table(plt: None, tmp_path: Path, capsys: Capsys) -> None:
    """A folder whose predictions.star has no rows: the line named the folder, not the table."""
    folder = _folder(tmp_path, "r", {"predictions.star": f"data_particles\n\n{STAR_LOOP}"})
    line = assert_error(run_cli(["report", folder], capsys), folder / "predictions.star")
    assert "no predictions" in line, line


# ---------------------------------------------------------------------------------------------
# report: training runs


@pytest.mark.parametrize(
    "metrics,reason",
    [
        ("epoch,loss\n", "no epochs"),
        (METRICS + "3,0.5", "line 5 has 2 fields for 4 columns"),
        ("epoch,loss\n0,abc\n1,1.0\n", "line 2: loss 'abc' is not a number"),
        ("epoch,loss\nx,1.0\n", "line 2: epoch 'x' is not a whole number"),
        ("epoch,loss\n,1.0\n1,0.5\n", "epoch '' is not a whole number"),
        ("epoch,loss,loss\n0,1.0,2.0\n", "column loss appears twice"),
    ],
)
def test_report_refuses_a_damaged_metrics_table(
    metrics: str, reason: str, plt: None, tmp_path: Path, capsys: Capsys
) -> None:
    """Header only, a cut-off row, text as a loss or an epoch, a repeated column: a page of empty,
    NaN-filled or categorical figures (other numbers than the file's), exit 0."""
    run = _folder(tmp_path, "run", {"metrics.csv": metrics})
    line = assert_error(run_cli(["report", run], capsys), run / "metrics.csv")
    assert reason in line, line


@pytest.mark.parametrize(
    "selection",
    [
        '{"selected_epoch": "one"}',
        '{"selected_epoch": {"a": 1}}',
        '{"selected_epoch": true}',
        '{"selected_epoch": NaN}',
        '{"selected_epoch": 1, "warnings": 5}',
        '{"selected_epoch": 1, "warnings": null}',
        '{"selected_epoch": 1, "warnings": "abc"}',
    ],
)
def test_report_refuses_a_selection_of_wrong_types(
    selection: str, plt: None, tmp_path: Path, capsys: Capsys
) -> None:
    """A dict as the epoch or a number as the warnings was a TypeError traceback; text as the epoch
    was drawn as a category, and text as the warnings listed one character per warning."""
    run = _folder(tmp_path, "run", {"metrics.csv": METRICS, "selection.json": selection})
    line = assert_error(run_cli(["report", run], capsys), run / "selection.json")
    assert "not a cryoshift selection file" in line, line


def test_report_warns_of_a_selected_epoch_missing_from_the_metrics(
    plt: None, tmp_path: Path, capsys: Capsys
) -> None:
    """selection.json from another run (epoch 99 of a 3-epoch table) was marked without a word."""
    run = _folder(tmp_path, "run", {"metrics.csv": METRICS, "selection.json": '{"selected_epoch": 99}'})
    code, _, err = run_cli(["report", run], capsys)
    assert code == 0, err
    assert "selected epoch 99 is not in metrics.csv" in err
    assert "selected epoch 99 is not in metrics.csv" in (run / "report.html").read_text()


def test_report_leaves_out_an_embedding_that_is_not_a_png(plt: None, tmp_path: Path, capsys: Capsys) -> None:
    """A damaged plots/embedding.png was inlined as a broken image."""
    run = _folder(tmp_path, "run", {"metrics.csv": METRICS})
    (run / "plots").mkdir()
    put(run / "plots" / "embedding.png", b"not a png")
    code, _, err = run_cli(["report", run], capsys)
    assert code == 0, err
    page = (run / "report.html").read_text()
    assert "is not a PNG image" in page and "Feature embedding" not in page


# ---------------------------------------------------------------------------------------------
# report --out


def test_report_out_never_overwrites_another_file(plt: None, tmp_path: Path, capsys: Capsys) -> None:
    """--out naming the run's own metrics.csv replaced it by the page (the run's record lost)."""
    run = _folder(tmp_path, "run", {"metrics.csv": METRICS})
    line = assert_error(run_cli(["report", run, "--out", run / "metrics.csv"], capsys), run / "metrics.csv")
    assert "is not an HTML page" in line, line
    assert (run / "metrics.csv").read_text() == METRICS
    page = tmp_path / "page.html"
    for _ in range(2):  # an earlier page is replaced
        code, _, err = run_cli(["report", run, "--out", page], capsys)
        assert code == 0, err


def test_report_out_that_cannot_be_written_says_why(plt: None, tmp_path: Path, capsys: Capsys) -> None:
    """A folder and a path under a file as --out were "Is a directory" and "File exists" (naming
    the other file). A dangling link as --out was "No such file or directory", or, where the
    link's target folder existed, the page was written through it: now the link is replaced by
    the page and its target never made (runtime/outfiles.py)."""
    run = _folder(tmp_path, "run", {"metrics.csv": METRICS})
    line = assert_error(run_cli(["report", run, "--out", tmp_path], capsys), tmp_path)
    assert "is a folder" in line, line
    under = run / "metrics.csv" / "page.html"
    line = assert_error(run_cli(["report", run, "--out", under], capsys), under)
    assert f"{run / 'metrics.csv'} is a file, not a folder" in line, line
    link = tmp_path / "link.html"
    os.symlink(tmp_path / "no" / "such" / "page.html", link)
    code, _, err = run_cli(["report", run, "--out", link], capsys)
    assert code == 0, err
    assert not link.is_symlink() and link.read_text().startswith("<!DOCTYPE html>")
    assert not (tmp_path / "no").exists()


def test_report_out_in_a_folder_that_is_a_dangling_link_or_a_loop_says_so(
    plt: None, tmp_path: Path, capsys: Capsys
) -> None:
    """A page in a folder that is a dangling link or a loop of links was "cannot write the report:
    File exists", naming neither the link nor what is wrong with it (check_out_folder's walk, which
    other verbs use, named it)."""
    run = _folder(tmp_path, "run", {"metrics.csv": METRICS})
    dangling = tmp_path / "dangling"
    os.symlink(tmp_path / "nowhere", dangling)
    loop_a, loop_b = tmp_path / "loop_a", tmp_path / "loop_b"
    os.symlink(loop_b, loop_a)
    os.symlink(loop_a, loop_b)
    for folder, words in (
        (dangling, "is a dangling symbolic link"),
        (dangling / "deeper", "is a dangling symbolic link"),
        (loop_a, "is a symbolic link loop"),
    ):
        page = folder / "page.html"
        line = assert_error(run_cli(["report", run, "--out", page], capsys), page)
        link = dangling if folder.parent == dangling else folder
        assert f"cannot write the report: {link} {words}" in line, line
    assert not (tmp_path / "nowhere").exists()


# ---------------------------------------------------------------------------------------------
# info: results tables and models


@pytest.mark.parametrize(
    "name,text",
    [
        ("text.csv", "id,class_name,confidence,shift_score\na,x,high,1.0\n"),
        ("cut.csv", "id,class_name,confidence,shift_score\na,x,0.5,1.0\nb,y\n"),
        ("text.star", f"data_particles\n\n{STAR_LOOP}a x hi 1.0\n"),
        ("cut.star", f"data_particles\n\n{STAR_LOOP}a x 0.5 1.0\nb y\n"),
    ],
)
def test_info_refuses_results_tables_that_report_refuses(
    name: str, text: str, tmp_path: Path, capsys: Capsys
) -> None:
    """Text as a confidence or a cut-off row: a TypeError traceback (the median of text), or a
    description of NaN-filled rows for a cut-off STAR row."""
    table = put(tmp_path / name, text)
    assert_error(run_cli(["info", table], capsys), table)
    code, out, _ = run_cli(["info", "--validate", table], capsys)
    assert code == 1 and out.startswith(f"{table}: "), out


def _edited_model(model: Path, tmp_path: Path, field: str, value: str) -> Path:
    """A copy of ``model`` with the metadata ``field`` set to the JSON ``value``."""
    return with_metadata(model, tmp_path / f"{field}.onnx", field, value)


@pytest.mark.parametrize(
    "field,value",
    [
        ("extra", "[1, 2]"),
        ("extra", '"x"'),
        ("extra", "null"),
        ("data_fingerprints", "[1, 2]"),
        ("box_size", "16.7"),
        ("box_size", '"16"'),
        ("box_size", "1e400"),
        ("voxel_size", "true"),
        ("class_names", '["ribosome", "ribosome", "junk"]'),
        ("method", "[1, 2]"),
        ("feature_mean", "5"),
    ],
)
def test_info_refuses_model_metadata_of_wrong_types(
    field: str, value: str, model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """extra or data_fingerprints not an object, box_size 1e400: tracebacks. box_size 16.7 was read
    as 16, true as 1, a class named twice was accepted (two classes' predictions under one name);
    a number as feature_mean was "'int' object is not iterable", naming no field."""
    pytest.importorskip("onnx")
    liar = _edited_model(model, tmp_path, field, value)
    reason = assert_error(run_cli(["info", liar], capsys), liar).split(f"{liar}: ", 1)[1]
    assert reason.startswith("invalid model metadata") and field in reason, reason  # the file is named for it
    code, out, _ = run_cli(["info", "--validate", liar], capsys)
    assert code == 1 and out.startswith(f"{liar}: invalid model metadata"), out


@pytest.mark.parametrize(
    "value,named",
    [
        ('{"int8_calibration": "/data/cal\\nibration", "int8_calibration_n": 32}', "extra.int8_calibration"),
        ('{"selection_rule": "max target im\\tfake"}', "extra.selection_rule"),
        ('{"notes": ["ok", "a\\u2028b"]}', "extra.notes"),
        ('{"report": {"by": "x\\u001b[31m"}}', "extra.report.by"),
        ('{"calibration\\nsource": "x"}', "extra"),
    ],
)
def test_info_refuses_a_control_character_in_any_extra_metadata_text(
    value: str, named: str, model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """Only the extra entries info shows (test_views, backbone_options) were checked: a line break
    in extra.int8_calibration (the calibration path export --int8 stores) or in any other entry
    passed, and went wherever the metadata went next. One line naming the model and the field."""
    pytest.importorskip("onnx")
    liar = _edited_model(model, tmp_path, "extra", value)
    line = assert_error(run_cli(["info", liar], capsys), liar)
    assert f"invalid model metadata: {named} holds a control character" in line, line
    code, out, _ = run_cli(["info", "--validate", liar], capsys)
    assert code == 1 and out.startswith(f"{liar}: invalid model metadata: {named} holds"), out


def test_info_describes_an_int8_model_whose_calibration_path_is_one_line(
    model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """The check is about line breaks and escapes, not about text: spaces and accents are fine."""
    pytest.importorskip("onnx")
    fine = _edited_model(model, tmp_path, "extra", '{"int8_calibration": "/data/Ångström cal", "n": 32}')
    code, _, err = run_cli(["info", fine], capsys)
    assert code == 0, err


def test_info_shows_backbone_options_that_are_not_name_value_pairs(
    model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """extra.backbone_options as a list was left out of the description without a word."""
    pytest.importorskip("onnx")
    odd = _edited_model(model, tmp_path, "extra", '{"backbone_options": ["canonical"]}')
    code, out, err = run_cli(["info", odd], capsys)
    assert code == 0, err
    assert "backbone options" in out and "canonical" in out


def test_info_of_an_empty_file_without_suffix_says_it_is_empty(tmp_path: Path, capsys: Capsys) -> None:
    """A zero-byte file with no suffix was an "unknown file type" (a .txt one was "file is empty")."""
    empty = put(tmp_path / "picks", b"")
    line = assert_error(run_cli(["info", empty], capsys), empty)
    assert "file is empty" in line, line


def test_a_dataset_labelled_flag_that_is_not_true_or_false_is_refused(tmp_path: Path, capsys: Capsys) -> None:
    """dataset.json "labelled": "no" was read as labelled (bool of a non-empty string)."""
    import numpy as np

    from cryoshift.runtime.dataset import write_dataset

    ds = write_dataset(
        tmp_path / "ds", np.random.default_rng(0).normal(size=(3, 16, 16, 16)).astype(np.float32)
    )
    meta = json.loads((ds / "dataset.json").read_text())
    (ds / "dataset.json").write_text(json.dumps({**meta, "labelled": "no"}))
    line = assert_error(run_cli(["info", ds], capsys), ds / "dataset.json")
    assert "'labelled' must be true or false" in line, line


@pytest.mark.parametrize("name", ["predictions.csv", "picks.csv"])
def test_a_utf16_table_is_named_as_such(name: str, tmp_path: Path, capsys: Capsys) -> None:
    """A table saved as a Windows editor's "Unicode": the codec's words ("can't decode byte 0xff")
    did not say what to do."""
    path = tmp_path / name
    head = (
        "id,class_name,confidence,shift_score\na,x,0.5,1.0\n"
        if name == "predictions.csv"
        else "tomo,x,y,z\nT,1,2,3\n"
    )
    path.write_text(head, encoding="utf-16")
    line = assert_error(run_cli(["info", path], capsys), path)
    assert "UTF-16 text; save it as UTF-8" in line, line


def test_info_of_an_mrc_without_a_voxel_size_shows_no_number(
    model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """A header whose cell is 0 was "voxel size (A) │ 1 (not set in header)": the reader's stand-in
    looked like a real size. Now it says what classify does with the file (it classifies it as if
    its voxels were the model's, with a note), which the run below shows."""
    import numpy as np

    from cryoshift.runtime.info import describe

    data = np.random.default_rng(0).normal(size=(BOX, BOX, BOX)).astype("<f4").tobytes()
    vol = raw_mrc(tmp_path / "sub.mrc", cella=0.0, data=data)
    code, out, err = run_cli(["info", vol], capsys)
    assert code == 0, err
    shown = next(line for line in out.splitlines() if "voxel size (A)" in line)
    assert "not set in header: classify takes it to be the model's" in shown, out
    assert "│ 1 " not in shown, out
    stack = raw_mrc(tmp_path / "subs.mrcs", nz=3 * BOX, mz=BOX, ispg=401, cella=0.0)
    voxel = dict(describe(stack).rows)["voxel size (A)"]
    assert voxel == "not set in header: classify takes it to be the model's, unchecked", voxel

    argv = ["classify", model, vol, "-o", tmp_path / "out", "-q", "-b", "cpu"]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    assert len(predictions(tmp_path / "out")) == 1
    assert f"{vol}: no usable voxel size in the header" in out + err, (out, err)
