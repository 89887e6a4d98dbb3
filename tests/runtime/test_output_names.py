"""Names in the tables classify writes read back exactly as written, or are refused by name.

- predictions.csv (and every CSV ``write_results`` writes): a name holding a bare ``\\r`` was
  written unquoted by pandas (Python 3.11's csv writer quotes only its line terminator's
  characters), so the csv module and pandas split its row there.
- predictions.star: a name no STAR value carries back (a line break, two spaces in a row, a quote
  in a value that must be quoted) was written as another name (``c\\rd.mrc`` as the text
  ``c\\rd.mrc``; ``"q ""x"" y.mrc"``, which RELION splits into two values). Such a row is now
  left out of the STAR with a note naming it, and stays in predictions.csv.
- Class names holding a comma or a quote read back through both tables.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from cryoshift.runtime.cli import main
from cryoshift.runtime.errors import InputError
from cryoshift.runtime.mrc import write_volume
from cryoshift.runtime.results import read_results, write_results

CLASSES = ["ribo,some", 'pro"teasome', "junk"]
# File names a STAR value carries back as written, through RELION and cryoshift (and starfile, but
# for the ``'``, which starfile turns into ``"`` in any form: a documented limit of starfile)
GOOD = ["a b.mrc", 'a"b.mrc', "e\u00a0f.mrc", "it's.mrc", "plain.mrc"]
# ... and those none does, each with the words its note must hold
BAD = {"c\rd.mrc": "'\\r'", 'q "x" y.mrc': "quote", "two  spaces.mrc": "two spaces"}


def relion_fields(line: str) -> list[str]:
    """The values RELION 5 reads from one STAR loop line (src/strings.cpp): ``simplify`` first
    (a tab becomes a space; \\n \\v \\b \\r \\f \\a are dropped; runs of spaces become one), then
    ``nextTokenInSTAR`` (a value opening with a quote ends at that quote followed by a space or
    the line's end; no doubling of quotes)."""
    line = "".join(ch for ch in line.replace("\t", " ") if ch not in "\n\v\b\r\f\a")
    line = re.sub(" +", " ", line).strip()
    fields, i = [], 0
    while i < len(line):
        if line[i] == " ":
            i += 1
            continue
        if line[i] in "'\"":
            quote, end = line[i], i + 1
            while True:
                end = line.find(quote, end)
                assert end >= 0, f"open quote in {line!r}"
                if end + 1 == len(line) or line[end + 1] == " ":
                    break
                end += 1
            fields.append(line[i + 1 : end])
            i = end + 1
        else:
            end = line.find(" ", i)
            end = len(line) if end < 0 else end
            fields.append(line[i:end])
            i = end
    return fields


def relion_rows(star: Path) -> list[dict[str, str]]:
    """The particles loop of ``star`` as RELION reads it: label -> value, per row."""
    labels: list[str] = []
    rows = []
    for line in star.read_text(encoding="utf-8").split("\n"):
        if line.startswith("_"):
            labels.append(line.split()[0][1:])
        elif labels and line.strip() and not line.startswith(("#", "data_", "loop_")):
            fields = relion_fields(line)
            assert len(fields) == len(labels), f"RELION reads {fields} for {labels}"
            rows.append(dict(zip(labels, fields, strict=True)))
    return rows


def _csv_rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def test_write_results_quotes_carriage_returns_and_reads_back(tmp_path: Path) -> None:
    rows = pd.DataFrame(
        {
            "id": ["a\rb.mrc", 'c,d".mrc', "e\nf.mrc", "g\r\nh.mrc", "plain.mrc"],
            "class_name": [*CLASSES, "x,y", 'q"z'],
            "confidence": [0.5, 0.6, 0.7, 0.8, 0.9],
        }
    )
    csv_path = write_results(rows, tmp_path / "r.csv")
    back = _csv_rows(csv_path)
    assert back[0] == ["id", "class_name", "confidence"]
    assert [r[:2] for r in back[1:]] == rows[["id", "class_name"]].to_numpy().tolist()
    assert csv_path.read_bytes().count(b"\r\n") == 1  # only inside "g\r\nh.mrc": rows end in \n
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    assert table["id"].tolist() == rows["id"].tolist()
    assert read_results(csv_path)["class_name"].tolist() == rows["class_name"].tolist()


def test_write_results_refuses_a_name_no_star_value_carries(tmp_path: Path) -> None:
    rows = pd.DataFrame({"id": ["ok.mrc", "a\rb.mrc"], "confidence": [0.5, 0.6]})
    with pytest.raises(InputError) as err:
        write_results(rows, tmp_path / "r.csv", tmp_path / "r.star")
    message = str(err.value)
    assert "\n" not in message and "r.star" in message and "'a\\rb.mrc'" in message
    assert not (tmp_path / "r.star").exists() and not (tmp_path / "r.csv").exists()


@pytest.fixture(scope="module")
def classified(tmp_path_factory: pytest.TempPathFactory, helpers) -> Path:
    """classify over files named GOOD and BAD, with a model whose class names hold , and "."""
    root = tmp_path_factory.mktemp("names")
    model = helpers.build_model(root / "model.onnx", classes=CLASSES)
    files = root / "files"
    files.mkdir()
    names = [*GOOD, *BAD]
    for name, volume in zip(names, helpers.make_volumes(len(names), helpers.BOX, 3), strict=True):
        write_volume(files / name, volume, voxel_size=helpers.VOXEL)
    out = root / "out"
    assert main(["classify", str(model), str(files), "-o", str(out), "-b", "cpu", "-q"]) == 0
    return out


def test_predictions_csv_holds_every_name_and_class_exactly(classified: Path) -> None:
    folder = classified.parent / "files"
    rows = _csv_rows(classified / "predictions.csv")
    header = rows[0]
    assert [f"prob_{c}" for c in CLASSES] == header[-3:]
    assert sorted(r[0] for r in rows[1:]) == sorted(str(folder / n) for n in [*GOOD, *BAD])
    assert {len(r) for r in rows} == {len(header)}
    assert {r[header.index("class_name")] for r in rows[1:]} <= set(CLASSES)
    table = read_results(classified / "predictions.csv")
    assert sorted(table["id"]) == sorted(str(folder / n) for n in [*GOOD, *BAD])
    assert [c for c in table.columns if c.startswith("prob_")] == [f"prob_{c}" for c in CLASSES]


def test_predictions_star_reads_back_exactly_or_leaves_the_row_out_by_name(classified: Path) -> None:
    starfile = pytest.importorskip("starfile")
    folder = classified.parent / "files"
    star = classified / "predictions.star"
    relion = relion_rows(star)
    assert sorted(r["rlnImageName"] for r in relion) == sorted(str(folder / n) for n in GOOD)
    assert {r["csClassName"] for r in relion} <= set(CLASSES)
    ours = read_results(star)
    assert sorted(ours["id"]) == sorted(str(folder / n) for n in GOOD)
    assert [c for c in ours.columns if c.startswith("prob_")] == [f"prob_{c}" for c in CLASSES]
    theirs = starfile.read(star)
    misread = str(folder / 'it"s.mrc')  # starfile's reading of it's.mrc
    assert sorted(n for n in theirs["rlnImageName"] if n != misread) == sorted(
        str(folder / n) for n in GOOD if "'" not in n
    )
    notes = json.loads((classified / "manifest.json").read_text())["summary"]["notes"]
    for name, why in BAD.items():
        said = [n for n in notes if repr(str(folder / name)) in n]
        assert len(said) == 1 and why in said[0] and "predictions.csv" in said[0], notes


def test_the_streamed_star_leaves_out_the_same_rows(
    classified: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The >1M-row path (written in chunks) applies the same rule."""
    import cryoshift.runtime.star_out as star_out

    monkeypatch.setattr(star_out, "STREAM_ROWS", 1)
    folder = classified.parent / "files"
    notes: list[str] = []
    star_out.write_predictions_star(classified / "predictions.csv", tmp_path / "p.star", notes=notes)
    relion = relion_rows(tmp_path / "p.star")
    assert sorted(r["rlnImageName"] for r in relion) == sorted(str(folder / n) for n in GOOD)
    assert len(notes) == len(BAD) and all("left out" in n for n in notes)
