"""``cryoshift report``: one self-contained HTML page for a classify output or a training run."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
from import_blocker import block_imports

from cryoshift.runtime.cli import main


def _pngs(page: str) -> list[str]:
    return re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)


def test_report_of_classified_labelled_picks(model_path, inputs, tmp_path, capsys):
    import starfile

    picks = starfile.read(inputs["picks"])
    picks["class"] = ["ribosome", "junk", "proteasome", "junk", "ribosome", "junk"]
    starfile.write({"particles": picks}, tmp_path / "labelled.star")
    out = tmp_path / "out"
    assert (
        main(
            [
                "classify",
                str(model_path),
                str(tmp_path / "labelled.star"),
                "-t",
                str(inputs["tomos"]),
                "-o",
                str(out),
                "-b",
                "cpu",
                "-q",
            ]
        )
        == 0
    )
    assert main(["report", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert len(_pngs(page)) == 4  # counts, confidence, shift score, confusion matrix
    assert "http" not in page.replace("http-equiv", "")  # nothing fetched from elsewhere
    for text in (
        "Class counts per tomogram",
        "TS_01",
        "unknown",
        "subtomograms/s",
        "accuracy on labelled picks",
    ):
        assert text in page
    import base64

    png = base64.b64decode(_pngs(page)[0])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width = int.from_bytes(png[16:20], "big")
    assert width >= 700  # 150 dpi: a 5-inch figure is >= 750 px, not a 300 px thumbnail


def test_report_of_a_training_run(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "loss_total": [1.2, 0.9, 0.8],
            "loss_ce": [1.0, 0.7, 0.6],
            "src_val_acc": [0.5, 0.7, 0.72],
            "tgt_im": [0.1, 0.3, 0.25],
        }
    ).to_csv(run / "metrics.csv", index=False)
    (run / "selection.json").write_text(
        json.dumps(
            {"selected_epoch": 2, "rule": "max target im", "warnings": ["target predictions collapsed: test"]}
        )
    )
    (run / "config.json").write_text(json.dumps({"method": "cryoshift", "backbone": "cryonet"}))
    assert main(["report", str(run), "-o", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert len(_pngs(page)) == 2 and "selected epoch" in page and "cryoshift" in page
    assert "target predictions collapsed: test" in page  # the run's warnings are on the page
    # the trainer's embedding (target coloured by predicted class) is shown when the run has it
    import base64

    (run / "plots").mkdir()
    (run / "plots" / "embedding.png").write_bytes(base64.b64decode(_pngs(page)[0]))
    assert main(["report", str(run), "-o", str(tmp_path / "r2.html")]) == 0
    page = (tmp_path / "r2.html").read_text()
    assert len(_pngs(page)) == 3 and "Feature embedding" in page


def test_report_without_matplotlib_names_the_extra(tmp_path, capsys, monkeypatch):
    block_imports(monkeypatch, "matplotlib")
    assert main(["report", str(tmp_path)]) == 2
    assert "cryoshift[plots]" in capsys.readouterr().err  # matplotlib alone, not torch


# ------------------------------------------------------------------ damaged predictions

CLASSES = ("ribosome", "proteasome")


def _predictions(folder, rows=None):
    """A small classify-style predictions.csv (3 rows) in ``folder``; ``rows`` replace cells."""
    folder.mkdir(exist_ok=True)
    table = pd.DataFrame(
        {
            "id": ["a.mrc", "b.mrc", "c.mrc"],
            "class_name": ["ribosome", "proteasome", "ribosome"],
            "confidence": [0.9, 0.8, 0.7],
            "shift_score": [1.0, 1.2, 0.9],
            **{f"prob_{c}": [0.5, 0.5, 0.5] for c in CLASSES},
        }
    )
    for (i, column), value in (rows or {}).items():
        table[column] = table[column].astype(object)
        table.loc[i, column] = value
    path = folder / "predictions.csv"
    table.to_csv(path, index=False)
    return path


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and "Warning" not in err
    return err


def test_report_refuses_a_cut_off_last_row(tmp_path, capsys):
    path = _predictions(tmp_path / "r")
    path.write_bytes(path.read_bytes()[:-12])  # the last row loses its last fields
    assert main(["report", str(tmp_path / "r")]) == 2
    assert "predictions.csv: line 4 has 4 fields for 6 columns" in _one_error_line(capsys)
    assert not (tmp_path / "r" / "report.html").exists()


def test_report_refuses_a_non_numeric_confidence(tmp_path, capsys):
    _predictions(tmp_path / "r", {(1, "confidence"): "abc"})
    assert main(["report", str(tmp_path / "r")]) == 2
    assert "predictions.csv: line 3: confidence 'abc' is not a number" in _one_error_line(capsys)


def test_report_refuses_a_cut_or_non_numeric_star_row(tmp_path, capsys):
    star = tmp_path / "p.star"
    head = "data_particles\n\nloop_\n_csId #1\n_csClassName #2\n_csConfidence #3\n_csShiftScore #4\n"
    star.write_text(head + "a.mrc ribosome 0.9 1.0\nb.mrc ribosome 0.8\n")
    assert main(["report", str(star), "-o", str(tmp_path / "x.html")]) == 2
    assert "p.star: line 9 has 3 fields for 4 columns" in _one_error_line(capsys)
    star.write_text(head + "a.mrc ribosome 0.9 1.0\nb.mrc ribosome abc 1.0\n")
    assert main(["report", str(star), "-o", str(tmp_path / "x.html")]) == 2
    assert "p.star: data row 2: confidence 'abc' is not a number" in _one_error_line(capsys)


def test_report_leaves_nan_and_inf_scores_out_with_one_warning_each(tmp_path, capsys):
    import warnings

    _predictions(
        tmp_path / "r", {(0, "confidence"): "nan", (1, "confidence"): "nan", (2, "shift_score"): "inf"}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no library warning leaks out of the figures
        assert main(["report", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"cryoshift: warning: {tmp_path / 'r' / 'predictions.csv'}: 2 of 3 rows have a NaN or infinite "
        "confidence; left out of its histogram",
        f"cryoshift: warning: {tmp_path / 'r' / 'predictions.csv'}: 1 of 3 rows have a NaN or infinite "
        "shift_score; left out of its histogram",
    ]
    page = (tmp_path / "r" / "report.html").read_text()
    assert "2 of 3 rows have a NaN or infinite confidence" in page and len(_pngs(page)) == 3
    # every value non-finite: still a page, the empty histogram says why
    _predictions(tmp_path / "r", {(i, "confidence"): "nan" for i in range(3)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["report", str(tmp_path / "r")]) == 0
    assert "3 of 3 rows have a NaN or infinite confidence" in capsys.readouterr().err


def test_report_warns_of_confidences_outside_zero_to_one(tmp_path, capsys):
    """An edited table's confidence 7.5 was drawn on a stretched histogram without a word."""
    _predictions(tmp_path / "r", {(0, "confidence"): "7.5", (1, "confidence"): "-0.5"})
    assert main(["report", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"cryoshift: warning: {tmp_path / 'r' / 'predictions.csv'}: 2 of 3 rows have a confidence outside "
        "0-1 (from -0.5 to 7.5): not classify's probabilities; an edited table?"
    ]
    _predictions(tmp_path / "r", {(0, "confidence"): "1.0", (1, "confidence"): "0"})  # the ends are fine
    assert main(["report", str(tmp_path / "r")]) == 0
    assert capsys.readouterr().err.strip() == ""


def test_report_of_a_folder_that_keeps_only_the_star_table(tmp_path, capsys):
    """A classify folder kept for RELION with predictions.star alone was "no predictions.csv"."""
    folder = tmp_path / "r"
    folder.mkdir()
    head = "data_particles\n\nloop_\n_csId #1\n_csClassName #2\n_csConfidence #3\n_csShiftScore #4\n"
    (folder / "predictions.star").write_text(head + "a.mrc ribosome 0.9 1.0\nb.mrc proteasome 0.8 1.1\n")
    assert main(["report", str(folder)]) == 0, capsys.readouterr().err
    assert "ribosome" in (folder / "report.html").read_text()


_LABELLED_STAR = (
    "data_particles\n\nloop_\n_csId #1\n_csClassName #2\n_csConfidence #3\n_csShiftScore #4\n_class #5\n"
    "c.mrc ribosome 0.7 0.9 proteasome\n"  # rows in another order than the CSV's: paired by id
    "a.mrc ribosome 0.9 1.0 ribosome\n"
    'd.mrc proteasome 0.6 1.3 ""\n'  # a pick without a label is left out of the matrix
    "b.mrc proteasome 0.8 1.2 proteasome\n"
)


def test_report_draws_the_confusion_matrix_from_the_star_table_or_the_one_beside_a_csv(tmp_path, capsys):
    """The input's label column travels in classify's predictions.star only: report takes it from
    the STAR table it reports (the one read), or from the predictions.star beside a CSV."""
    star_only = tmp_path / "star"
    star_only.mkdir()
    (star_only / "predictions.star").write_text(_LABELLED_STAR)
    both = tmp_path / "both"
    both.mkdir()
    (both / "predictions.star").write_text(_LABELLED_STAR)
    (both / "predictions.csv").write_text(
        "id,class_name,confidence,shift_score\na.mrc,ribosome,0.9,1.0\nb.mrc,proteasome,0.8,1.2\n"
        "c.mrc,ribosome,0.7,0.9\nd.mrc,proteasome,0.6,1.3\n"
    )
    for given in (star_only / "predictions.star", star_only, both / "predictions.csv", both):
        page = tmp_path / "page.html"
        assert main(["report", str(given), "-o", str(page)]) == 0, capsys.readouterr().err
        text = page.read_text()
        assert "Confusion matrix" in text and "0.667 (n=3)" in text, given
    (both / "predictions.star").unlink()  # a CSV alone carries no labels
    assert main(["report", str(both), "-o", str(page)]) == 0
    assert "Confusion matrix" not in page.read_text()


def test_report_of_a_run_folder_without_metrics_names_what_is_missing(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"method": "cryoshift"}))
    assert main(["report", str(run)]) == 2
    err = _one_error_line(capsys)
    assert f"{run / 'metrics.csv'}: missing" in err and "predictions.csv" not in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 2
    assert "no predictions.csv (classify output) or metrics.csv (training run) here" in _one_error_line(
        capsys
    )


def test_report_draws_class_names_as_text(tmp_path, capsys, monkeypatch):
    """A class named "$\\alpha_x$" was set as TeX (a name like "$\\foo$" stopped the report with a
    mathtext error), and one named "_bg" was left out of every legend (matplotlib hides labels
    that start with "_")."""
    from cryoshift.runtime import report

    names = ["$\\foo$", "_bg"]
    table = pd.DataFrame(
        {
            "id": ["a.mrc", "b.mrc", "c.mrc"],
            "class_name": [names[0], names[1], names[1]],
            "confidence": [0.9, 0.8, 0.7],
            "shift_score": [1.0, 1.2, 0.9],
            **{f"prob_{c}": [0.5, 0.5, 0.5] for c in names},
        }
    )
    (tmp_path / "r").mkdir()
    table.to_csv(tmp_path / "r" / "predictions.csv", index=False)
    assert main(["report", str(tmp_path / "r")]) == 0, capsys.readouterr().err
    assert len(_pngs((tmp_path / "r" / "report.html").read_text())) == 3
    legends = []
    real_png = report._png

    def keep_legend(fig):
        legends.append(
            [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
        )
        return real_png(fig)

    monkeypatch.setattr(report, "_png", keep_legend)
    report._fig_counts(report._plt(), table, names, dict.fromkeys(names, "C0"))
    assert legends == [names]


# ------------------------------------------------------------------ what the accuracy scores


def _classify(model, picks, tomos, out, *extra: str) -> None:
    argv = ["classify", str(model), str(picks), "-t", str(tomos), "-o", str(out), "-b", "cpu", "-q"]
    assert main([*argv, *extra]) == 0


def _facts(page: str) -> dict[str, str]:
    import html

    return {
        html.unescape(k): html.unescape(v)
        for k, v in re.findall(r"<tr><th>([^<]*)</th><td>([^<]*)</td></tr>", page)
    }


def _labelled_run(helpers, inputs, tmp_path) -> tuple[object, float]:
    """A model calibrated at 0.30 (3 classes: no confidence under 1/3) run on the picks twice: in
    ``first`` as they are; in ``out`` labelled with each pick's best class (evaluate scores 1.000)
    and with --unknown-threshold between the two lowest confidences (one pick rejected). Returns the
    model and that threshold."""
    import starfile

    model = helpers.build_model(tmp_path / "m.onnx", unknown_threshold=0.3)
    _classify(model, inputs["picks"], inputs["tomos"], tmp_path / "first")
    found = pd.read_csv(tmp_path / "first" / "predictions.csv")
    assert len(found) == 5 and (found["class_name"] == found["best_class"]).all()
    best = {(r.tomo_name, float(r.x), float(r.y), float(r.z)): r.best_class for r in found.itertuples()}
    picks = starfile.read(inputs["picks"])
    columns = ("rlnTomoName", "rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ")
    xyz = zip(*(picks[c] for c in columns), strict=True)
    picks["class"] = [best.get((t, float(x), float(y), float(z)), "junk") for t, x, y, z in xyz]
    starfile.write({"particles": picks}, tmp_path / "labelled.star")
    low = np.sort(found["confidence"].to_numpy())
    threshold = round(float(low[0] + low[1]) / 2, 6)
    assert low[0] < threshold < low[1]
    labelled = tmp_path / "labelled.star"
    _classify(model, labelled, inputs["tomos"], tmp_path / "out", "--unknown-threshold", str(threshold))
    return model, threshold


def test_report_gives_the_best_class_and_the_after_rejection_accuracy(helpers, inputs, tmp_path, capsys):
    """The page said "accuracy on labelled picks 0.500" (the class given, a pick rejected as unknown
    counting as wrong) where evaluate said 0.522 (the best class of every pick), neither saying
    which: the page gives both, each saying what it scores, the first equal to evaluate's."""
    from cryoshift.training.evaluate import evaluate

    model, threshold = _labelled_run(helpers, inputs, tmp_path)
    out = tmp_path / "out"
    assert main(["report", str(out)]) == 0, capsys.readouterr().err
    facts = _facts((out / "report.html").read_text())
    under = f"confidence under {threshold:.2f}, classify --unknown-threshold"
    assert facts["accuracy on labelled picks, best class (as cryoshift evaluate scores it)"] == (
        "1.000 (n=5): the model's best class of every pick, unknown rejection not applied"
    )
    assert facts["accuracy on labelled picks after unknown rejection"] == (
        f"0.800 (n=5): the class classify gave; the 1 of 5 picks rejected as unknown ({under}) "
        "count as wrong; 1.000 of the 4 kept are right"
    )
    scored = evaluate(model, tmp_path / "labelled.star", tmp_path / "ev", tomograms=[str(inputs["tomos"])])
    assert scored["accuracy"] == 1.0 and scored["n"] == 5 and "best class" in scored["scored"]


def test_report_draws_the_threshold_the_run_used_and_says_whose(
    helpers, inputs, tmp_path, capsys, monkeypatch
):
    """The page drew the model's calibrated threshold ("unknown below 0.30") on the confidence
    histogram of a run made with --unknown-threshold, whose unknowns lie under another value."""
    from cryoshift.runtime import report

    _, threshold = _labelled_run(helpers, inputs, tmp_path)
    legends: list[str] = []
    real_png = report._png

    def keep_legend(fig):
        legends.extend(
            t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()
        )
        return real_png(fig)

    monkeypatch.setattr(report, "_png", keep_legend)
    assert main(["report", str(tmp_path / "out")]) == 0, capsys.readouterr().err
    assert f"unknown below {threshold:.2f} (classify --unknown-threshold)" in legends
    assert not any("0.30" in text for text in legends)
    facts = _facts((tmp_path / "out" / "report.html").read_text())
    assert facts[f"unknown (confidence under {threshold:.2f}, classify --unknown-threshold)"] == "1 (20.0%)"
    legends.clear()  # a run without --unknown-threshold: the model's calibrated threshold, so named
    assert main(["report", str(tmp_path / "first")]) == 0
    assert "unknown below 0.30 (the model's calibration)" in legends
    facts = _facts((tmp_path / "first" / "report.html").read_text())
    assert facts["unknown (confidence under 0.30, the model's calibration)"] == "0 (0.0%)"


def test_report_says_the_best_class_is_not_recoverable_without_its_column(tmp_path, capsys):
    """A table without best_class (an older or edited one) cannot give the best class of a pick
    rejected as unknown: the page says so rather than scoring its rejection as the answer."""
    star = tmp_path / "predictions.star"
    star.write_text(
        "data_particles\n\nloop_\n_csId #1\n_csClassName #2\n_csConfidence #3\n_csShiftScore #4\n_class #5\n"
        "a.mrc ribosome 0.9 1.0 ribosome\nb.mrc unknown 0.3 1.2 proteasome\nc.mrc ribosome 0.7 0.9 ribosome\n"
    )
    page = tmp_path / "page.html"
    assert main(["report", str(star), "-o", str(page)]) == 0, capsys.readouterr().err
    facts = _facts(page.read_text())
    assert facts["accuracy on labelled picks, best class (as cryoshift evaluate scores it)"] == (
        "not recoverable: the table has no best class (best_class column) for 1 of the 1 picks "
        "rejected as unknown"
    )
    assert facts["accuracy on labelled picks after unknown rejection"].startswith("0.667 (n=3)")


def test_report_refuses_a_manifest_threshold_setting_out_of_range(tmp_path, capsys):
    """settings.unknown_threshold is now drawn, so it is checked as the model's is."""
    for value in ("1.5", '"high"'):
        _predictions(tmp_path / "r")
        (tmp_path / "r" / "manifest.json").write_text(f'{{"settings": {{"unknown_threshold": {value}}}}}')
        assert main(["report", str(tmp_path / "r")]) == 2
        assert "settings.unknown_threshold is not" in _one_error_line(capsys)
