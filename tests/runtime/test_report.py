"""``cryoshift report``: one self-contained HTML page for a classify output or a training run."""

from __future__ import annotations

import json
import re

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
    assert "cryoshift[train]" in capsys.readouterr().err
