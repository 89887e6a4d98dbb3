"""Tomogram names as written: numeric-looking names, IMOD's ``_rec`` files, ``--tomograms`` that
match nothing, and the small table-format gaps found beside them (tester 2's findings).

Before: a column of tomogram names that all read as numbers was made numbers, so picks of ``01``
were cropped from ``1.mrc`` with exit 0 (and predictions.star wrote ``1``), ``001`` matched no
``001.mrc`` and ``1e3`` became ``1000.0``. The crops are checked voxel by voxel: each tomogram
holds ``x + 100 y + 10000 z`` plus its own offset, so a crop tells which file and place it is from.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from hostile_inputs import BOX, VOXEL, assert_error, run_cli
from relion5_project import TOMOGRAM_LABELS, star_loop

from cryoshift.runtime.errors import InputError
from cryoshift.runtime.mrc import write_stack, write_volume

SHAPE = (40, 48, 64)  # (Z, Y, X) voxels
PICKS = [(20, 24, 30), (40, 30, 18)]  # (x, y, z) voxels, a box away from every edge


def ramp(offset: float = 0.0) -> np.ndarray:
    z, y, x = np.indices(SHAPE)
    return (x + 100 * y + 10000 * z + offset).astype(np.float32)


def tomograms(folder: Path, names: dict[str, float]) -> Path:
    """One ramp tomogram per name (``{"01": 0.0}``: ``01.mrc`` with offset 0)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, offset in names.items():
        write_volume(folder / f"{name}.mrc", ramp(offset), voxel_size=VOXEL)
    return folder


def csv_picks(path: Path, name: str, header: str = "tomo_name,x,y,z\n") -> Path:
    path.write_text(header + "".join(f"{name},{x},{y},{z}\n" for x, y, z in PICKS))
    return path


def star_picks(path: Path, name: str) -> Path:
    labels = ("rlnTomoName", "rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ")
    path.write_text(star_loop("particles", labels, [f"{name} {x} {y} {z}" for x, y, z in PICKS]))
    return path


def crops(picks: Path, tomo: list[str]) -> tuple[list[str], list[str], np.ndarray]:
    """What classify crops for ``picks``: (tomogram names, files, boxes), through its planner and
    loader (runtime/sources)."""
    from cryoshift.runtime.sources import VolumeCache, load_item, plan_inputs

    cache = VolumeCache()
    plan = plan_inputs([str(picks)], BOX, VOXEL, tomograms=tomo, cache=cache)
    boxes = np.empty((len(plan.items), BOX, BOX, BOX), np.float32)
    for item, out in zip(plan.items, boxes, strict=True):
        load_item(item, out, cache)
    return [it.tomo for it in plan.items], [Path(it.path).name for it in plan.items], boxes


def expected(offset: float) -> np.ndarray:
    t, b = ramp(offset), BOX // 2
    return np.stack([t[z - b : z + b, y - b : y + b, x - b : x + b] for x, y, z in PICKS])


@pytest.mark.parametrize("kind", ["csv", "star"])
def test_zero_padded_name_crops_its_own_tomogram_not_the_number(tmp_path: Path, kind: str) -> None:
    """``01`` beside ``1.mrc``: every pick was cropped from 1.mrc, exit 0."""
    folder = tomograms(tmp_path / "tomos", {"01": 0.0, "1": 0.5})
    picks = (csv_picks if kind == "csv" else star_picks)(tmp_path / f"p.{kind}", "01")
    names, files, boxes = crops(picks, [str(folder)])
    assert names == ["01", "01"]
    assert files == ["01.mrc", "01.mrc"]
    np.testing.assert_array_equal(boxes, expected(0.0))


@pytest.mark.parametrize("name", ["001", "1e3", "0x1"])
def test_numeric_looking_names_match_their_files(tmp_path: Path, name: str) -> None:
    """``001`` was refused ("no tomogram matches '1'"), ``1e3`` became '1000.0'."""
    folder = tomograms(tmp_path / "tomos", {name: 0.0, "002": 0.5})
    names, files, boxes = crops(csv_picks(tmp_path / "p.csv", name), [str(folder)])
    assert names == [name, name] and files == [f"{name}.mrc"] * 2
    np.testing.assert_array_equal(boxes, expected(0.0))


def test_classify_writes_the_names_as_given(
    tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """predictions.csv/.star, errors and the manifest keep ``001`` (predictions.star wrote ``1``)."""
    from cryoshift.runtime.picks import read_star

    folder = tomograms(tmp_path / "tomos", {"001": 0.0, "002": 0.5})
    for kind, write in (("csv", csv_picks), ("star", star_picks)):
        out = tmp_path / f"out_{kind}"
        picks = write(tmp_path / f"p.{kind}", "001")
        code, _, err = run_cli(["classify", model, picks, "-t", folder, "-o", out, "-q", "-b", "cpu"], capsys)
        assert code == 0, err
        with open(out / "predictions.csv", newline="") as fh:
            assert [row["tomo_name"] for row in csv.DictReader(fh)] == ["001", "001"]  # as text
        particles = read_star(out / "predictions.star")["particles"]
        assert particles["rlnTomoName"].tolist() == ["001", "001"]
        assert '"001"' in (out / "manifest.json").read_text()


def test_names_survive_shards_merge_report_and_info(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Tomograms ``001``/``002`` and classes ``01``/``02``/``1e3``, classified in two shards and
    merged: read_predictions (report, info) read the CSV's ``001`` as 1 and ``01`` as 1.0, and the
    STAR file's class names likewise, so info said "classes: 1: ..." and the report "class 1"."""
    from tiny_onnx import build_model

    from cryoshift.runtime.results import read_predictions

    classes = ["01", "02", "1e3"]
    model = build_model(tmp_path / "model.onnx", box=BOX, voxel=VOXEL, classes=classes)
    folder = tomograms(tmp_path / "tomos", {"001": 0.0, "002": 0.5})
    picks = tmp_path / "p.csv"
    picks.write_text(
        "tomo_name,x,y,z\n" + "".join(f"{n},{x},{y},{z}\n" for n in ("001", "002") for x, y, z in PICKS)
    )
    out = tmp_path / "out"
    for shard in ("0/2", "1/2"):
        argv = ["classify", model, picks, "-t", folder, "-o", out, "-q", "-b", "cpu", "--shard", shard]
        code, _, err = run_cli(argv, capsys)
        assert code == 0, err
    code, _, err = run_cli(["merge", out], capsys)
    assert code == 0, err
    for table in ("predictions.csv", "predictions.star", "predictions.shard-0-of-2.csv"):
        rows = read_predictions(out / table)
        names = sorted(rows["rlnTomoName" if table.endswith(".star") else "tomo_name"])  # input columns stay
        assert names == (["001", "002"] if "shard" in table else ["001", "001", "002", "002"]), table
        assert set(rows["class_name"]) | set(rows["best_class"]) <= {*classes, "unknown"}, table
        assert rows["confidence"].dtype.kind == "f", table
    with open(out / "predictions.csv", newline="") as fh:
        assert sorted(row["tomo_name"] for row in csv.DictReader(fh)) == ["001", "001", "002", "002"]
    from cryoshift.runtime.picks import read_star

    written = read_star(out / "predictions.star")["particles"]["rlnTomoName"]
    assert sorted(written) == ["001", "001", "002", "002"]
    predicted = sorted(set(read_predictions(out / "predictions.csv")["class_name"]) - {"unknown"})
    assert predicted, "the tiny model predicted no class: the report/info checks would see none"
    for table in ("predictions.csv", "predictions.star"):
        code, text, err = run_cli(["info", out / table], capsys)
        assert code == 0, err
        shown = next(line for line in text.splitlines() if "classes" in line)
        assert all(f"{name}: " in shown for name in predicted), shown
    code, _, err = run_cli(["report", out], capsys)
    assert code == 0, err
    page = (out / "report.html").read_text()
    for name in predicted:
        assert f"class {name}<" in page
    assert "class 1<" not in page and "class 1.0<" not in page and "class 1000" not in page


def test_readers_keep_names_as_written(tmp_path: Path) -> None:
    """The DataFrame reader (read_picks), the streaming one (read_pick_table) and read_star agree:
    names as written, whitespace aside; ``NA`` in a CSV is a name, an empty field none."""
    from cryoshift.runtime.picks import read_picks, read_star
    from cryoshift.runtime.tables import read_pick_table

    table_csv = tmp_path / "p.csv"
    table_csv.write_text("x,y,z,tomo\n1,2,3, 007\n1,2,3,1e3\n1,2,3,NA\n1,2,3,\n")
    star = star_picks(tmp_path / "p.star", "007")
    want = ["007", "1e3", "NA", ""]
    assert read_picks(table_csv)["tomo_name"].tolist() == want
    table = read_pick_table(table_csv)
    assert [table.names[k] for k in table.tomo] == want
    assert read_picks(star)["tomo_name"].tolist() == ["007", "007"]
    assert read_pick_table(star).names == ["007"]
    assert read_star(star)["particles"]["rlnTomoName"].tolist() == ["007", "007"]


@pytest.mark.parametrize("layout", ["loop", "pairs"])
def test_tomograms_star_names_stay_text(tmp_path: Path, layout: str) -> None:
    """rlnTomoName ``01`` of a tomograms.star (a loop, or key-value pairs for one tomogram) was 1,
    so picks of ``01`` found no tomogram and picks of ``1`` found this one."""
    from cryoshift.runtime.tomograms import read_tomogram_table

    write_volume(tmp_path / "rec_01.mrc", ramp(), voxel_size=VOXEL)
    values = ("01", "2.5", "4", *(str(4 * n) for n in SHAPE[::-1]), "rec_01.mrc")
    labels = TOMOGRAM_LABELS
    table = tmp_path / "tomograms.star"
    if layout == "loop":
        table.write_text(star_loop("global", labels, [" ".join(values)]))
    else:
        table.write_text(
            "data_global\n\n" + "".join(f"_{k} {v}\n" for k, v in zip(labels, values, strict=True))
        )
    assert [e.name for e in read_tomogram_table(table)] == ["01"]
    _, files, boxes = crops(csv_picks(tmp_path / "p.csv", "01"), [str(table)])
    assert files == ["rec_01.mrc"] * 2
    np.testing.assert_array_equal(boxes, expected(0.0))
    with pytest.raises(InputError, match="no tomogram matches name '1'"):
        crops(csv_picks(tmp_path / "q.csv", "1"), [str(table)])


def test_labelled_picks_of_numbered_tomograms(tmp_path: Path) -> None:
    """evaluate: picks of ``007`` were "no tomogram matches name '7'"."""
    from cryoshift.runtime.labelled_picks import read_labelled_picks

    folder = tomograms(tmp_path / "tomos", {"007": 0.0, "7": 0.5})
    picks = tmp_path / "p.csv"
    picks.write_text("tomo_name,x,y,z,class\n" + "".join(f"007,{x},{y},{z},ribosome\n" for x, y, z in PICKS))
    boxes, labels, skipped, _ = read_labelled_picks(picks, [str(folder)], BOX, model_voxel_size=VOXEL)
    assert labels == ["ribosome", "ribosome"] and not skipped
    np.testing.assert_array_equal(boxes, expected(0.0))


# --- IMOD's _rec reconstructions


def test_imod_rec_suffix_matches(tmp_path: Path) -> None:
    """etomo writes ``TS_01_rec.mrc``; picks name ``TS_01``: refused as no match."""
    folder = tmp_path / "tomos"
    folder.mkdir()
    write_volume(folder / "TS_01_rec.mrc", ramp(), voxel_size=VOXEL)
    write_volume(folder / "TS_02_rec.mrc", ramp(0.5), voxel_size=VOXEL)
    _, files, boxes = crops(csv_picks(tmp_path / "p.csv", "TS_01"), [str(folder)])
    assert files == ["TS_01_rec.mrc"] * 2
    np.testing.assert_array_equal(boxes, expected(0.0))


def test_rec_suffix_matching_two_files_is_refused(tmp_path: Path) -> None:
    """Stripping ``_rec`` must not pick one of two files that then share the name."""
    from cryoshift.runtime.sources.paths import DECORATIONS, match_tomogram, tomogram_index

    folder = tmp_path / "tomos"
    folder.mkdir()
    for name in ("TS_01_rec", "TS_01_bin2", "TS_010_rec"):
        write_volume(folder / f"{name}.mrc", ramp(), voxel_size=VOXEL)
    index = tomogram_index([str(folder)])
    with pytest.raises(
        InputError, match=r"'TS_01' is ambiguous: it matches .*TS_01_bin2\.mrc.*TS_01_rec\.mrc"
    ):
        match_tomogram("TS_01", index, tmp_path / "p.csv")
    assert match_tomogram("TS_010", index, tmp_path / "p.csv").name == "TS_010_rec.mrc"
    with pytest.raises(InputError) as exc:
        match_tomogram("TS_1", index, tmp_path / "p.csv")
    assert DECORATIONS in str(exc.value) and "_rec" in DECORATIONS


# --- --tomograms that match nothing


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("empty", "--tomograms folder is empty"),
        ("notes", "--tomograms folder holds no MRC files"),
        ("glob", "--tomograms glob matches no files"),
    ],
)
def test_tomograms_matching_nothing_are_named(
    tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str], case: str, reason: str
) -> None:
    """It said "picks need tomograms: pass them with --tomograms": they were passed."""
    folder = tmp_path / "tomos"
    folder.mkdir()
    if case == "notes":
        (folder / "notes.txt").write_text("not a tomogram\n")
    given = str(folder / "*.mrc") if case == "glob" else str(folder)
    picks = csv_picks(tmp_path / "p.csv", "TS_01")
    for verb in (
        ["classify", model, picks, "-t", given, "-o", tmp_path / "out", "-b", "cpu"],
        [
            "evaluate",
            model,
            csv_picks(tmp_path / "l.csv", "TS_01,junk", "tomo_name,class,x,y,z\n"),
            "-t",
            given,
        ],
    ):
        line = assert_error(run_cli(verb, capsys), given)
        assert reason in line and "pass them with --tomograms" not in line, line


def test_a_second_tomograms_matching_nothing_is_said_when_a_name_is_not_found(tmp_path: Path) -> None:
    from cryoshift.runtime.sources.paths import match_tomogram, tomogram_index

    folder = tomograms(tmp_path / "tomos", {"TS_02": 0.0})
    index = tomogram_index([str(folder), str(tmp_path / "other/*.mrc")])
    with pytest.raises(
        InputError, match=r"no tomogram matches name 'TS_01'.*other/\*\.mrc: glob matches no files"
    ):
        match_tomogram("TS_01", index, tmp_path / "p.csv")


def _empty_tomograms_star(path: Path) -> Path:
    labels = ("rlnTomoName", "rlnTomoTiltSeriesPixelSize", "rlnTomoReconstructedTomogram")
    path.write_text(star_loop("global", labels, []))
    return path


def test_tomograms_star_without_rows_is_named(
    tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``-t tomograms.star`` holding labels but no rows gave no tomogram without a word: the picks
    then said "picks need tomograms: pass them with --tomograms" (they were passed)."""
    from cryoshift.runtime.sources.paths import match_tomogram, tomogram_index

    star = _empty_tomograms_star(tmp_path / "tomograms.star")
    picks = csv_picks(tmp_path / "p.csv", "TS_01")
    argv = ["classify", model, picks, "-t", star, "-o", tmp_path / "out", "-q", "-b", "cpu"]
    line = assert_error(run_cli(argv, capsys), star)
    assert "tomograms.star lists no tomograms" in line and "pass them with --tomograms" not in line, line
    # beside files that do not hold the name: said with the "no tomogram matches"
    folder = tomograms(tmp_path / "tomos", {"TS_02": 0.0})
    index = tomogram_index([str(folder), str(star)])
    said = r"no tomogram matches name 'TS_01'.*tomograms\.star: tomograms\.star lists no tomograms"
    with pytest.raises(InputError, match=said):
        match_tomogram("TS_01", index, picks)


# --- table formats


def test_csv_with_leading_comment_lines(tmp_path: Path) -> None:
    """``# picked by me`` above the header was read as the header ("found #, picked, by, me")."""
    from cryoshift.runtime.picks import read_picks
    from cryoshift.runtime.tables import read_pick_table

    folder = tomograms(tmp_path / "tomos", {"TS_01": 0.0})
    picks = tmp_path / "p.csv"
    picks.write_text(
        '# picked by me, with "tool" 1.2\n\n# another note\ntomo_name,x,y,z\n'
        + "".join(f"TS_01,{x},{y},{z}\n" for x, y, z in PICKS)
    )
    _, _, boxes = crops(picks, [str(folder)])
    np.testing.assert_array_equal(boxes, expected(0.0))
    assert read_picks(picks)["x"].tolist() == [20.0, 40.0]
    tsv = tmp_path / "p.tsv"
    tsv.write_text("# note\nx\ty\tz\n1\t2\t3\n")
    assert read_pick_table(tsv).xyz.tolist() == [[1.0, 2.0, 3.0]]
    # a bad row, and a row with a field too many, are named by their file lines
    bad = tmp_path / "bad.csv"
    bad.write_text("# note\n# another\nx,y,z\n1,2,3\n1,y,3\n1,2,3,4\n")
    with pytest.raises(InputError, match=r"missing or non-numeric coordinates \(line 5\).*\(line 6\)"):
        read_pick_table(bad)


@pytest.mark.parametrize("column", ["path", "rlnImageName"])
def test_csv_listing_with_leading_comment_lines(tmp_path: Path, column: str) -> None:
    """A listing of subtomogram files under a ``# note`` line was taken for a pick table (its
    first line was read as the header): "no coordinate columns: need x, y, z; found path"."""
    from cryoshift.runtime.sources import VolumeCache, load_item, plan_inputs

    boxes = [ramp(offset)[:BOX, :BOX, :BOX] for offset in (0.0, 0.5)]
    for i, box in enumerate(boxes):
        write_volume(tmp_path / f"sub{i}.mrc", box, voxel_size=VOXEL)
    listing = tmp_path / "listing.csv"
    listing.write_text(f"# extracted by me\n\n# another note\n{column}\nsub1.mrc\nsub0.mrc\n")
    cache = VolumeCache()
    plan = plan_inputs([str(listing)], BOX, VOXEL, cache=cache)
    assert [Path(it.path).name for it in plan.items] == ["sub1.mrc", "sub0.mrc"]
    out = np.empty((2, BOX, BOX, BOX), np.float32)
    for item, box in zip(plan.items, out, strict=True):
        load_item(item, box, cache)
    np.testing.assert_array_equal(out, np.stack(boxes[::-1]))


def test_csv_comment_above_a_header_without_coordinates_says_which_line_is_the_header(tmp_path: Path) -> None:
    from cryoshift.runtime.tables import read_pick_table

    picks = tmp_path / "p.csv"
    picks.write_text("# x,y,z\n10,20,30\n")
    with pytest.raises(
        InputError, match=r"found 10, 20, 30 \(line 2, the first after blank and # comment lines\)"
    ):
        read_pick_table(picks)


def test_star_loop_without_data_line(tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It said "no data blocks found; not a STAR file or the file is empty"."""
    picks = star_picks(tmp_path / "p.star", "TS_01")
    picks.write_text("# picks\n" + picks.read_text().replace("data_particles", ""))
    folder = tomograms(tmp_path / "tomos", {"TS_01": 0.0})
    line = assert_error(
        run_cli(["classify", model, picks, "-t", folder, "-o", tmp_path / "out", "-b", "cpu"], capsys), picks
    )
    assert "line 5: loop_ without a data_ line above it" in line, line


def test_listing_paths_are_looked_up_above_the_star(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A RELION listing in ``proj/Select/job009`` naming ``Extract/job008/stack.mrcs`` (relative to
    the project) was found only when run from the project folder; tomograms.star's paths are also
    looked up in each folder above the table."""
    from cryoshift.runtime.picks import read_particle_listing

    proj = tmp_path / "proj"
    stack = proj / "Extract" / "job008" / "stack.mrcs"
    stack.parent.mkdir(parents=True)
    write_stack(stack, np.zeros((3, BOX, BOX, BOX), np.float32), voxel_size=VOXEL)
    listing = proj / "Select" / "job009" / "particles.star"
    listing.parent.mkdir(parents=True)
    listing.write_text(
        star_loop(
            "particles", ["rlnImageName"], ["000003@Extract/job008/stack.mrcs", "1@Extract/job008/stack.mrcs"]
        )
    )
    monkeypatch.chdir(tmp_path)  # neither the project nor the listing's folder
    table = read_particle_listing(listing)
    assert table["path"].tolist() == [str(stack.resolve())] * 2
    assert table["index"].tolist() == [2, 0]
