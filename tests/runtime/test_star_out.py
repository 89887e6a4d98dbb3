"""predictions.star must read back with the values written, whatever the names look like.

STAR reads a bare ``data_x`` as a new block, ``_x`` as a label, ``#x`` as a comment, ``loop_``
as a loop: tomogram names and ids like these must be written in quotes (bug: they were not,
and the file could not be read by cryoshift's ``info``, by starfile or by RELION).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import starfile

from cryoshift.runtime.results import read_results
from cryoshift.runtime.star_out import write_predictions_star

HOSTILE = [
    "data_x",
    "DATA_y",
    "_weird",
    "loop_",
    "save_a",
    "stop_",
    "global_",
    "#hash",
    "mid#hash",
    "$dollar",
    ";semi",
    "[bracket",
    "with space",
    "_with space",
    "plain",
]


def _results_csv(path: Path, names: list[str]) -> Path:
    """A results table as classify writes it: one pick per tomogram name."""
    n = len(names)
    pd.DataFrame(
        {
            "id": [f"{t}:1.0,2.0,3.0" for t in names],
            "tomo_name": names,
            "x": [1.0] * n,
            "y": [2.0] * n,
            "z": [3.0] * n,
            "class_index": [i % 2 for i in range(n)],
            "class_name": ["_a" if i % 2 == 0 else "data_b" for i in range(n)],
            "best_class": ["_a" if i % 2 == 0 else "data_b" for i in range(n)],
            "unknown": [0] * n,
            "confidence": [0.75] * n,
            "shift_score": [1.0] * n,
            "prob__a": [0.75] * n,
            "prob_data_b": [0.25] * n,
        }
    ).to_csv(path, index=False)
    return path


def _check(star: Path, names: list[str]) -> None:
    """Both readers give back every name and id as written."""
    table = starfile.read(star, always_dict=True, parse_as_string=["rlnTomoName", "csId"])["particles"]
    assert list(table["rlnTomoName"]) == names
    assert list(table["csId"]) == [f"{t}:1.0,2.0,3.0" for t in names]
    ours = read_results(star)
    assert list(ours["rlnTomoName"]) == names
    assert list(ours["id"]) == [f"{t}:1.0,2.0,3.0" for t in names]


def test_reserved_names_read_back(tmp_path: Path) -> None:
    csv = _results_csv(tmp_path / "predictions.csv", HOSTILE)
    star = tmp_path / "predictions.star"
    write_predictions_star(csv, star)
    _check(star, HOSTILE)
    text = star.read_text()
    assert '"data_x"' in text and '"_weird"' in text and '"mid#hash"' in text
    assert "\tplain\t" not in text and "\nplain\t" in text  # ordinary values stay bare


def test_reserved_names_read_back_per_class(tmp_path: Path) -> None:
    csv = _results_csv(tmp_path / "predictions.csv", HOSTILE)
    star = tmp_path / "predictions.star"
    split = write_predictions_star(csv, star, split_by_class=True)
    assert sorted(p.name for p in split) == ["predictions__a.star", "predictions_data_b.star"]
    for path in split:
        table = starfile.read(path, always_dict=True, parse_as_string=["rlnTomoName", "csClassName"])[
            "particles"
        ]
        assert set(table["csClassName"]) == {path.stem.removeprefix("predictions_")}
        assert set(table["rlnTomoName"]) <= set(HOSTILE) and len(table)


def test_input_star_rows_and_blocks_read_back(tmp_path: Path) -> None:
    """Rows that came from an input STAR keep its columns and other blocks, quoted as needed."""
    names = ["data_x", "_weird", "ok"]
    src = tmp_path / "picks.star"
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["_opticsGroup1"]})
    picks = pd.DataFrame(
        {
            "rlnTomoName": names,
            "rlnCoordinateX": [1.0] * 3,
            "rlnCoordinateY": [2.0] * 3,
            "rlnCoordinateZ": [3.0] * 3,
        }
    )
    starfile.write({"optics": optics, "particles": picks}, src, quote_all_strings=True)
    csv = _results_csv(tmp_path / "predictions.csv", names)
    star = tmp_path / "predictions.star"
    ids = [f"{t}:1.0,2.0,3.0" for t in names]
    write_predictions_star(csv, star, origins=[(str(src), ids)])
    _check(star, names)
    back = starfile.read(star, always_dict=True, parse_as_string=["rlnOpticsGroupName"])
    assert list(back["optics"]["rlnOpticsGroupName"]) == ["_opticsGroup1"]


@pytest.mark.parametrize("name", ["data_x", "_weird"])
def test_streamed_star_reads_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """The >1M-row path (chunks, no input columns) quotes the same way."""
    import cryoshift.runtime.star_out as star_out

    monkeypatch.setattr(star_out, "STREAM_ROWS", 1)
    names = [name, "plain", "#c"]
    csv = _results_csv(tmp_path / "predictions.csv", names)
    star = tmp_path / "predictions.star"
    write_predictions_star(csv, star)
    _check(star, names)


def test_tabs_and_line_breaks_are_left_out_with_a_note(tmp_path):
    """A name with a tab or a line break crashed the STAR writer (csv: need to escape); then it was
    written as the escape ``tab\\there``, a name of no tomogram. Now its row is left out of
    predictions.star, named in a note; predictions.csv (the writer's input here) keeps it."""
    names = ["tab\there", "line\nbreak", "plain"]
    csv_path = _results_csv(tmp_path / "predictions.csv", names)
    notes: list[str] = []
    write_predictions_star(csv_path, tmp_path / "predictions.star", [], notes=notes)
    star = starfile.read(tmp_path / "predictions.star")
    assert star["rlnTomoName"].tolist() == ["plain"]
    assert len(notes) == 2
    for name, note in zip(names[:2], notes, strict=True):
        assert "left out" in note and repr(name) in note and "predictions.csv" in note
    assert list(read_results(csv_path)["tomo_name"]) == names


def test_results_star_quotes_like_predictions_star(tmp_path):
    """write_results (the other STAR writer) used the old rule: data_x/_x were written bare."""
    from cryoshift.runtime.results import write_results

    rows = pd.read_csv(_results_csv(tmp_path / "in.csv", HOSTILE), dtype=str, keep_default_na=False)
    write_results(rows, tmp_path / "out.csv", tmp_path / "out.star")
    star = starfile.read(tmp_path / "out.star")
    assert star["rlnTomoName"].tolist() == HOSTILE


# Names that read back wrong: a quote inside a quoted value ended it early (starfile could not read
# the file at all), and nan/<NA> became missing, giving the picks no tomogram (or the only one).
QUOTES_AND_MISSING = ['quo"te', 'a "b" c', "it's", "a 'b' c", "nan", "NaN", "<NA>", "plain"]
STARFILE_CANNOT = {"it's", "a 'b' c", "nan", "NaN", "<NA>"}  # starfile: ' becomes ", nan missing
# A quote in a name that must be quoted: no STAR form reads back as written in both RELION and
# starfile (results.star_problem), so predictions.star leaves such rows out, each named in a note.
STAR_CANNOT = {'a "b" c', "a 'b' c"}
WRITTEN = [name for name in QUOTES_AND_MISSING if name not in STAR_CANNOT]


def test_quotes_and_missing_markers_in_names_read_back(tmp_path: Path) -> None:
    """Every name written reads back as written through cryoshift's STAR readers (the results
    reader and the streaming pick reader); starfile reads the file and every name it can read in
    any form. The names no STAR value carries (STAR_CANNOT) are left out, each named in a note."""
    from cryoshift.runtime.tables import read_pick_table

    star = tmp_path / "predictions.star"
    notes: list[str] = []
    write_predictions_star(_results_csv(tmp_path / "predictions.csv", QUOTES_AND_MISSING), star, notes=notes)
    assert len(notes) == len(STAR_CANNOT)
    assert all(any(repr(name) in note and "left out" in note for note in notes) for name in STAR_CANNOT)
    names = WRITTEN
    ours = read_results(star)
    assert list(ours["rlnTomoName"]) == names
    assert list(ours["id"]) == [f"{t}:1.0,2.0,3.0" for t in names]
    picks = read_pick_table(star)
    assert [picks.names[k] for k in picks.tomo] == names
    table = starfile.read(star, always_dict=True, parse_as_string=["rlnTomoName"])["particles"]
    kept = [(a, b) for a, b in zip(names, table["rlnTomoName"], strict=True) if a not in STARFILE_CANNOT]
    assert [a for a, _ in kept] == [b for _, b in kept] and len(kept) == 2


def test_classify_star_output_round_trips_names(model_path: Path, tmp_path: Path, capsys) -> None:
    """classify's own predictions.star, classified again as picks, gives the same tomograms and
    classes; read back as picks, the same names (bug: 'a "b" c' made the file unreadable to
    starfile, and nan/<NA> tomograms lost their picks' names). predictions.csv holds every name;
    predictions.star leaves out those no STAR value carries (STAR_CANNOT), named in notes."""
    import numpy as np

    from cryoshift.runtime.cli import main
    from cryoshift.runtime.mrc import write_volume
    from cryoshift.runtime.picks import read_picks
    from cryoshift.runtime.results import write_star
    from cryoshift.runtime.tables import read_pick_table

    names = QUOTES_AND_MISSING
    tomos = tmp_path / "tomos"
    tomos.mkdir()
    rng = np.random.default_rng(2)
    for name in names:
        write_volume(
            tomos / f"{name}.mrc", rng.normal(0, 1, (24, 32, 32)).astype(np.float32), voxel_size=10.0
        )
    picks = pd.DataFrame(
        {"rlnTomoName": names, "rlnCoordinateX": 16.0, "rlnCoordinateY": 16.0, "rlnCoordinateZ": 12.0}
    )
    src = write_star({"particles": picks}, tmp_path / "picks.star")

    def classify(table: Path, out: Path) -> pd.DataFrame:
        argv = ["classify", str(model_path), str(table), "-t", str(tomos), "-o", str(out), "-b", "cpu", "-q"]
        assert main(argv) == 0, capsys.readouterr().err
        assert not (out / "errors.csv").exists() or len(read_results(out / "errors.csv")) == 0
        return read_results(out / "predictions.csv")

    first = classify(src, tmp_path / "o1")
    assert list(first["tomo_name"]) == names
    err = capsys.readouterr().err
    assert all(f"left out {name + ':16.0,16.0,12.0'!r}" in err for name in STAR_CANNOT), err
    star = tmp_path / "o1" / "predictions.star"
    assert list(read_results(star)["rlnTomoName"]) == WRITTEN
    assert list(read_picks(star)["tomo_name"]) == WRITTEN
    table = read_pick_table(star)
    assert [table.names[k] for k in table.tomo] == WRITTEN
    again = classify(star, tmp_path / "o2")
    classes = dict(zip(first["tomo_name"], first["class_name"], strict=True))
    assert list(again["tomo_name"]) == WRITTEN
    assert list(again["class_name"]) == [classes[name] for name in WRITTEN]
