"""Names (of classes, results rows, tomograms, backbones) reach the user exactly as written, in
every reader and every table: a class ``02`` is not 2, ``1e3`` not 1000.0."""

from __future__ import annotations

from pathlib import Path

import pytest

from cryoshift.runtime.cli import main

_CS_LOOP = (
    "data_particles\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n_rlnCoordinateZ #3\n"
    "_csId #4\n_csClassName #5\n_csBestClass #6\n_rlnClassNumber #7\n"
    "10 11 12 02 1e3 007 1\n"
    "20 21 22.5 10 02 1.50 2\n"
)


def test_read_star_keeps_cryosparc_name_columns_as_written(tmp_path: Path) -> None:
    """csId, csClassName and csBestClass that looked like numbers were made numbers (``02`` -> 2,
    ``1e3`` -> 1000.0): a class ``02`` became another class. Coordinates stay numbers."""
    from cryoshift.runtime.picks import read_picks, read_star

    star = tmp_path / "p.star"
    star.write_text(_CS_LOOP)
    table = read_star(star)["particles"]
    assert table["csId"].tolist() == ["02", "10"]
    assert table["csClassName"].tolist() == ["1e3", "02"]
    assert table["csBestClass"].tolist() == ["007", "1.50"]
    assert table["rlnCoordinateZ"].tolist() == [12.0, 22.5]
    assert table["rlnClassNumber"].tolist() == [1, 2]
    picks = read_picks(star)
    assert picks["csClassName"].tolist() == ["1e3", "02"]
    assert picks[["x", "y", "z"]].to_numpy().tolist() == [[10, 11, 12], [20, 21, 22.5]]


def test_read_star_keeps_a_cryosparc_name_pair_as_written(tmp_path: Path) -> None:
    """A key-value block's class name (``_csClassName 02``) is a name too, as in a loop."""
    from cryoshift.runtime.picks import read_star

    star = tmp_path / "one.star"
    star.write_text("data_general\n\n_csClassName 02\n_csId 1e3\n_rlnImagePixelSize 1.50\n")
    block = read_star(star)["general"]
    assert block == {"csClassName": "02", "csId": "1e3", "rlnImagePixelSize": 1.5}


_LABELLED_STAR = (
    "data_particles\n\nloop_\n_csId #1\n_csClassName #2\n_csConfidence #3\n_csShiftScore #4\n_class #5\n"
    "a.mrc ribosome 0.9 1.0 ribosome\n"
    "b.mrc proteasome 0.8 1.2 proteasome\n"
    "c.mrc ribosome 0.7 0.9 proteasome\n"
)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".CSV"])
def test_report_takes_labels_from_the_star_beside_any_predictions_table(
    suffix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A predictions.tsv (or .CSV) got no confusion matrix from the predictions.star beside it, where
    predictions.csv did: the labels travel in the STAR file whatever the table's format."""
    sep = "\t" if suffix == ".tsv" else ","
    rows = [
        ("id", "class_name", "confidence", "shift_score"),
        ("a.mrc", "ribosome", "0.9", "1.0"),
        ("b.mrc", "proteasome", "0.8", "1.2"),
        ("c.mrc", "ribosome", "0.7", "0.9"),
    ]
    table = tmp_path / f"predictions{suffix}"
    table.write_text("".join(sep.join(row) + "\n" for row in rows))
    (tmp_path / "predictions.star").write_text(_LABELLED_STAR)
    page = tmp_path / "page.html"
    assert main(["report", str(table), "-o", str(page)]) == 0, capsys.readouterr().err
    text = page.read_text()
    assert "Confusion matrix" in text and "0.667 (n=3)" in text


def test_report_matches_true_classes_that_look_like_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A STAR's column of true classes ``01``/``02`` was read as numbers (1, 2): no row matched its
    predicted class ``01``/``02`` and report drew a 0 % confusion matrix for a perfect run."""
    from cryoshift.runtime.results import read_prediction_table

    star = tmp_path / "predictions.star"
    star.write_text(
        "data_particles\n\nloop_\n_csId #1\n_csClassName #2\n_csConfidence #3\n_csShiftScore #4\n"
        "_label #5\na.mrc 01 0.9 1.0 01\nb.mrc 02 0.8 1.2 02\nc.mrc 01 0.7 0.9 01\n"
    )
    assert read_prediction_table(star).rows["label"].tolist() == ["01", "02", "01"]
    page = tmp_path / "page.html"
    assert main(["report", str(star), "-o", str(page)]) == 0, capsys.readouterr().err
    assert "1.000 (n=3)" in page.read_text()


def test_read_prediction_table_is_a_lazy_public_reader() -> None:
    """``from cryoshift.runtime import read_prediction_table`` failed, where read_predictions and
    the other public readers are there (loaded on first use)."""
    import cryoshift.runtime as runtime
    from cryoshift.runtime.results import read_prediction_table

    assert "read_prediction_table" in runtime.__all__ and "read_prediction_table" in dir(runtime)
    assert runtime.read_prediction_table is read_prediction_table


def test_the_backbone_table_sizes_its_name_column_to_the_longest_name(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``cryonet-deep-centred`` (20 characters) pushed its row's numbers out of their columns; every
    row's number columns end where the header's do."""
    pytest.importorskip("torch")
    from cryoshift.training.backbones.__main__ import main as backbones_main

    backbones_main(["--box", "16", "--classes", "2", "--pattern", "cryonet-deep*"])
    header, *rows = capsys.readouterr().out.splitlines()
    assert [row.split()[0] for row in rows] == ["cryonet-deep", "cryonet-deep-centred"]
    # the number columns are right-aligned: each ends where its header word ends
    ends = [i for i, ch in enumerate(header) if ch != " " and header[i + 1 : i + 2] in ("", " ")][1:]
    for row in rows:
        assert len(row) == len(header), (header, row)
        assert all(row[end] != " " and row[end + 1 : end + 2] in ("", " ") for end in ends), (header, row)
        assert row.startswith(row.split()[0] + " ")
