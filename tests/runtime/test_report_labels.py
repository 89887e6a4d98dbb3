"""``cryoshift report``'s labelled-picks figures agree with ``cryoshift evaluate`` (metrics-tester
findings 1, 6 and 7), and the demo's stage times say which stages were re-used (finding 4).

Everything runs on the tiny ONNX model of tests/support and the 6 picks of the runtime fixtures.
"""

from __future__ import annotations

import html
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tiny_training import TINY_DEMO

from cryoshift.runtime.cli import main

BEST = "accuracy on labelled picks, best class (as cryoshift evaluate scores it)"


def _facts(page: str) -> dict[str, str]:
    return {
        html.unescape(k): html.unescape(v)
        for k, v in re.findall(r"<tr><th>([^<]*)</th><td>([^<]*)</td></tr>", page)
    }


def _classify(model: Path, picks: Path, tomos: Path, out: Path) -> None:
    argv = ["classify", str(model), str(picks), "-t", str(tomos), "-o", str(out), "-b", "cpu", "-q"]
    assert main(argv) == 0


def _labelled(model: Path, inputs: dict, tmp_path: Path, column: str, relabel: dict[str, str]) -> Path:
    """The fixture picks with a label column ``column`` holding each pick's best class (from a first
    classify run) written through ``relabel``; the pick outside its tomogram gets ``junk``."""
    import starfile

    first = tmp_path / "first"
    if not first.exists():
        _classify(model, inputs["picks"], inputs["tomos"], first)
    found = pd.read_csv(first / "predictions.csv")
    best = {(r.tomo_name, float(r.x), float(r.y), float(r.z)): r.best_class for r in found.itertuples()}
    picks = starfile.read(inputs["picks"])
    columns = ("rlnTomoName", "rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ")
    keys = zip(*(picks[c] for c in columns), strict=True)
    names = [best.get((t, float(x), float(y), float(z)), "junk") for t, x, y, z in keys]
    picks[column] = [relabel.get(n, n) for n in names]
    path = tmp_path / f"{column}_{len(relabel)}.star"
    starfile.write({"particles": picks}, path)
    return path


def _evaluate(model: Path, picks: Path, inputs: dict, out: Path) -> dict:
    from cryoshift.training.evaluate import evaluate

    return evaluate(model, picks, out, tomograms=[str(inputs["tomos"])])


def test_labels_that_are_not_model_classes_get_no_accuracy(helpers, model_path, inputs, tmp_path, capsys):
    """Labels written as class numbers gave "accuracy 0.000 (as cryoshift evaluate scores it)" and a
    case typo a lower figure, without a word, where evaluate refuses both tables: the page gives no
    accuracy and says (on the page and on stderr) which labels are not classes, and how many."""
    from cryoshift.runtime.errors import InputError

    numbers = {name: str(i + 1) for i, name in enumerate(helpers.CLASSES)}
    capital = {"junk": "Junk"}  # the class most picks of the tiny model are given
    right = _labelled(model_path, inputs, tmp_path, "class", {})
    as_labelled = _evaluate(model_path, right, inputs, tmp_path / "ev")
    for relabel in (numbers, capital):
        picks = _labelled(model_path, inputs, tmp_path, "class", relabel)
        with pytest.raises(InputError, match="are not classes of the model"):
            _evaluate(model_path, picks, inputs, tmp_path / "ev_bad")
        out = tmp_path / f"out_{len(relabel)}"
        _classify(model_path, picks, inputs["tomos"], out)
        capsys.readouterr()
        assert main(["report", str(out)]) == 0
        err = capsys.readouterr().err
        labels = pd.read_csv(out / "predictions.csv")["best_class"]  # every pick's label is its best class
        wrong = sorted({relabel.get(n, n) for n in labels} - set(helpers.CLASSES))
        carry = int(labels.isin([n for n in relabel if relabel[n] in wrong]).sum())
        assert wrong and carry
        said = f"classes {wrong} are not classes of the model"
        assert said in err and f"{carry} of {len(labels)} labelled picks carry them" in err
        facts = _facts((out / "report.html").read_text())
        assert not [k for k in facts if k.startswith("accuracy")], facts
        assert any(said in v for k, v in facts.items() if k == "warning")
    # the same picks labelled with the class names: scored, and as evaluate scores them
    out = tmp_path / "out_right"
    _classify(model_path, right, inputs["tomos"], out)
    assert main(["report", str(out)]) == 0
    facts = _facts((out / "report.html").read_text())
    accuracy = facts.get(BEST) or facts["accuracy on labelled picks"]
    assert accuracy.startswith(f"{as_labelled['accuracy']:.3f} (n={as_labelled['n']})")
    assert "are not classes" not in capsys.readouterr().err


def test_a_class_name_label_column_is_scored_as_evaluate_scores_it(
    helpers, model_path, inputs, tmp_path, capsys
):
    """A picks table labelled in ``class_name`` is scored by evaluate; the report of its classify
    run gave no accuracy (the folder) or a traceback (its predictions.star, where the picks'
    class_name and classify's csClassName were read as two class_name columns)."""
    swap = {helpers.CLASSES[0]: helpers.CLASSES[1], helpers.CLASSES[1]: helpers.CLASSES[0]}
    picks = _labelled(model_path, inputs, tmp_path, "class_name", swap)  # some right, some wrong
    scored = _evaluate(model_path, picks, inputs, tmp_path / "ev")
    assert 0 < scored["accuracy"] < 1
    out = tmp_path / "out"
    _classify(model_path, picks, inputs["tomos"], out)
    for target, page in ((out, out / "report.html"), (out / "predictions.star", tmp_path / "star.html")):
        assert main(["report", str(target), "-o", str(page)]) == 0, capsys.readouterr().err
        facts = _facts(page.read_text())
        accuracy = facts.get(BEST) or facts["accuracy on labelled picks"]
        assert accuracy.startswith(f"{scored['accuracy']:.3f} (n={scored['n']})"), facts
        counts = {k: v for k, v in facts.items() if k.startswith("class ")}
        predicted = pd.read_csv(out / "predictions.csv")["class_name"].value_counts()
        assert {k.removeprefix("class "): int(v.split()[0]) for k, v in counts.items()} == predicted.to_dict()


def test_histograms_stack_the_classes_and_keep_the_legend_off_the_bars(tmp_path, monkeypatch, capsys):
    """Overlaid half-transparent bars hid a small class under a larger one in the same bin, and the
    legend covered the tallest bar: each class's bars now sit on the classes before it, and the
    legend is outside the axes."""
    from cryoshift.runtime import report

    conf = [0.40, 0.40, 0.40, 0.40, 0.40, 0.70, 0.90, 0.90, 0.90, 0.90, 0.90, 0.90]
    best = ["a", "a", "a", "b", "b", "b", "a", "a", "a", "a", "b", "c"]
    rows = pd.DataFrame(
        {
            "id": [f"v{i}.mrc" for i in range(len(conf))],
            "class_name": best,
            "best_class": best,
            "confidence": conf,
            "shift_score": np.linspace(0.8, 1.3, len(conf)),
        }
    )
    rows.to_csv(tmp_path / "predictions.csv", index=False)
    figures: list[dict] = []
    real_png = report._png

    def keep(fig):
        fig.canvas.draw()
        ax = fig.axes[0]
        legend = ax.get_legend()
        figures.append(
            {
                "title": ax.get_title(),
                "patches": [(p.get_x(), p.get_y(), p.get_height(), p.get_facecolor()) for p in ax.patches],
                "legend": legend.get_window_extent() if legend else None,
                "axes": ax.get_window_extent(),
                "labels": [t.get_text() for t in legend.get_texts()] if legend else [],
            }
        )
        return real_png(fig)

    monkeypatch.setattr(report, "_png", keep)
    assert main(["report", str(tmp_path)]) == 0, capsys.readouterr().err
    hist = next(f for f in figures if f["title"] == "Confidence")
    assert hist["labels"] == ["a (n=7)", "b (n=4)", "c (n=1)"]
    bars = [p for p in hist["patches"] if p[2] > 0]
    assert sum(p[2] for p in bars) == len(conf)  # every subtomogram is a unit of bar height
    by_bin: dict[float, list[tuple[float, float]]] = {}
    for x, y, h, _ in bars:
        by_bin.setdefault(round(x, 9), []).append((y, y + h))
    for spans in by_bin.values():  # stacked: no two bars of a bin cover the same height
        spans.sort()
        assert all(top <= bottom + 1e-9 for (_, top), (bottom, _) in itertools.pairwise(spans))
    assert max(y + h for _, y, h, _ in bars) == 6  # the 0.9 bin: a 4, b 1 and c 1 on top of each other
    assert hist["legend"].x0 >= hist["axes"].x1  # the legend is beside the axes, over no bar


def test_demo_says_which_stages_it_reused(tmp_path):
    """demo.json recorded re-used stages as timings (0.1 s for a training, as if it had trained),
    and the README cites it for training times: a re-used stage has no seconds and is listed."""
    pytest.importorskip("torch")
    from cryoshift.runtime.commands.demo import run_demo

    out = tmp_path / "demo"
    first = run_demo(out, quick=True, seed=3, **TINY_DEMO)
    assert first.reused == [] and all(isinstance(v, float) for v in first.seconds.values())
    assert "re-used" not in first.stage_times()
    lines: list[str] = []
    again = run_demo(out, quick=True, seed=3, say=lines.append, **TINY_DEMO)
    stages = ["simulate", "train source-only", "train default"]
    assert again.reused == stages
    assert [k for k, v in again.seconds.items() if v is None] == stages
    assert all(isinstance(again.seconds[k], float) for k in ("template matching", "export", "classify"))
    recorded = json.loads((out / "demo.json").read_text())
    assert recorded["reused"] == stages and all(recorded["seconds"][k] is None for k in stages)
    assert "simulate re-used" in again.stage_times() and "train default re-used" in again.stage_times()
    assert sum("re-used:" in line for line in lines) == 3
