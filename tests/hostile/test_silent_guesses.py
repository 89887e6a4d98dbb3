"""Inputs with two plausible readings, each of which was read one way without a word (a silent
guess): now refused in one line naming the file, the candidates and how to choose.

Each test builds tiny real files and runs the real CLI (the copick one stubs copick's project
object only: copick is an optional extra that may be absent, and the guess is cryoshift's).
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from hostile_inputs import BOX, VOXEL, Capsys, assert_error, errors_table, predictions, put, run_cli, volumes

from cryoshift.runtime.errors import InputError
from cryoshift.runtime.mrc import write_stack, write_volume


def _tomogram(path: Path, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    return write_volume(path, rng.normal(size=(32, 40, 40)).astype(np.float32), voxel_size=VOXEL)


def _star(path: Path, df: pd.DataFrame) -> Path:
    import starfile

    starfile.write({"particles": df}, path, overwrite=True)
    return path


def _classify(model: Path, inputs: list[object], out: Path, *extra: object) -> list[object]:
    return ["classify", model, *inputs, "-o", out, "-q", "-b", "cpu", *extra]


# ---------------------------------------------------------------------------------------------
# report: the truth column of the confusion matrix


def test_report_refuses_two_label_columns(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    """Picks carrying ``class`` and ``label`` (both travel into predictions.star): report drew the
    confusion matrix against whichever came first, as evaluate refuses to."""
    pytest.importorskip("matplotlib")
    tomo = _tomogram(tmp_path / "TS_01.mrc")
    picks = _star(
        tmp_path / "picks.star",
        pd.DataFrame(
            {
                "rlnTomoName": ["TS_01"] * 3,
                "rlnCoordinateX": [14.0, 20.0, 26.0],
                "rlnCoordinateY": [20.0] * 3,
                "rlnCoordinateZ": [16.0] * 3,
                "class": ["a", "b", "a"],
                "label": ["b", "b", "a"],
            }
        ),
    )
    out = tmp_path / "out"
    code, _, err = run_cli(_classify(model, [picks], out, "-t", tomo), capsys)
    assert code == 0, err
    line = assert_error(run_cli(["report", out], capsys), out / "predictions.star")
    assert "several label columns (class, label)" in line, line
    assert not (out / "report.html").exists()


# ---------------------------------------------------------------------------------------------
# export --int8: the voxel size of a calibration folder


def test_int8_calibration_folder_of_two_voxel_sizes_is_refused(tmp_path: Path, capsys: Capsys) -> None:
    """Only the folder's first MRC file was checked against the model's voxel size; the others
    (here one of 20 A beside 10 A ones) calibrated the int8 model unchecked."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from cryoshift.runtime.metadata import ModelMetadata
    from cryoshift.training.backbones import create_backbone
    from cryoshift.training.checkpoint import save_checkpoint

    net = create_backbone("cryonet-small", num_classes=2, box_size=BOX)
    meta = ModelMetadata(class_names=["a", "b"], box_size=BOX, voxel_size=VOXEL)
    ckpt = save_checkpoint(tmp_path / "c.pt", net, "cryonet-small", {"num_classes": 2, "box_size": BOX}, meta)
    folder = tmp_path / "cal"
    folder.mkdir()
    for i, vol in enumerate(volumes(9, seed=3)):
        write_volume(folder / f"p{i}.mrc", vol, voxel_size=2 * VOXEL if i == 8 else VOXEL)
    parity = write_stack(tmp_path / "parity.mrcs", volumes(4), voxel_size=VOXEL)
    out = tmp_path / "deploy"
    argv = [
        "export",
        ckpt,
        "-o",
        out,
        "--no-progress",
        "--int8",
        "--calibration",
        folder,
        "--parity-data",
        parity,
    ]
    line = assert_error(run_cli(argv, capsys), folder)
    assert "different voxel sizes (p0.mrc: 10 A, p8.mrc: 20 A)" in line, line
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# classify: a STAR that is a listing and a pick table at once


def _listing_with_picks(tmp_path: Path) -> Path:
    """RELION's particles.star after Extract: the subtomogram files and the picks they came from."""
    write_stack(tmp_path / "subtomos.mrcs", volumes(2), voxel_size=VOXEL)
    return _star(
        tmp_path / "extracted.star",
        pd.DataFrame(
            {
                "rlnTomoName": ["TS_01", "TS_01"],
                "rlnCoordinateX": [14.0, 26.0],
                "rlnCoordinateY": [20.0, 20.0],
                "rlnCoordinateZ": [16.0, 16.0],
                "rlnImageName": ["000001@subtomos.mrcs", "000002@subtomos.mrcs"],
            }
        ),
    )


def test_listing_with_picks_and_tomograms_is_refused(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    """With -t, such a STAR was read as the listing: beside another picks table the listed files
    were classified instead of crops of the tomograms, without a word. Alone, the refusal said
    "no input is a table of picks" of a table of picks."""
    tomo = _tomogram(tmp_path / "TS_01.mrc")
    both = _listing_with_picks(tmp_path)
    words = "lists subtomogram files (rlnImageName) and holds pick coordinates (rlnCoordinateX)"
    picks = put(tmp_path / "TS_01.csv", "x,y,z\n20,20,16\n")
    out = tmp_path / "o2"
    code, _, err = run_cli(_classify(model, [picks, both], out, "-t", tomo), capsys)
    assert code == 0, err
    assert not predictions(out)["id"].astype(str).str.contains("subtomos.mrcs").any()
    errs = errors_table(out)
    assert len(errs) == 1 and errs["id"][0] == str(both) and words in errs["reason"][0]
    line = assert_error(run_cli(_classify(model, [both], tmp_path / "o1", "-t", tomo), capsys), both)
    assert words in line and "without --tomograms" in line, line
    code, _, err = run_cli(_classify(model, [both], tmp_path / "o3"), capsys)  # no -t: the listing
    assert code == 0, err
    assert len(predictions(tmp_path / "o3")) == 2


# ---------------------------------------------------------------------------------------------
# classify: a tomogram name held by a file and a dangling link


def test_dangling_link_beside_a_tomogram_of_its_name_is_ambiguous(
    model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """A dangling link sorted after a file of its name (TS_01.rec beside TS_01.mrc) was dropped, so
    the picks were cropped from TS_01.mrc; sorted first, the same pair was refused as ambiguous."""
    tomos = tmp_path / "tomos"
    tomos.mkdir()
    _tomogram(tomos / "TS_01.mrc")
    os.symlink(tmp_path / "unmounted" / "TS_01.rec", tomos / "TS_01.rec")
    picks = put(tmp_path / "picks.csv", "tomo,x,y,z\nTS_01,20,20,16\n")
    line = assert_error(run_cli(_classify(model, [picks], tmp_path / "out", "-t", tomos), capsys), picks)
    assert "tomogram name 'TS_01' is ambiguous" in line, line
    assert str(tomos / "TS_01.mrc") in line and str(tomos / "TS_01.rec") in line, line


# ---------------------------------------------------------------------------------------------
# copick: several tomograms of one type in one run


def test_copick_run_with_two_tomograms_of_one_type_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """copick lists every tomogram of a type (a static and an overlay copy, portal depositions);
    the first one listed was cropped."""
    from cryoshift.runtime import copick_io

    def tomogram(kind: str) -> SimpleNamespace:
        return SimpleNamespace(tomo_type=kind)

    tomos = [tomogram("wbp"), tomogram("wbp"), tomogram("denoised")]
    spacing = SimpleNamespace(
        tomograms=tomos, get_tomograms=lambda kind: [t for t in tomos if t.tomo_type == kind]
    )
    run = SimpleNamespace(voxel_spacings=[], get_voxel_spacing=lambda v: spacing)
    config = str(put(tmp_path / "copick.json", "{}"))
    monkeypatch.setattr(copick_io, "require_extra", lambda *a: None)
    monkeypatch.setitem(copick_io._ROOTS, config, SimpleNamespace(get_run=lambda name: run))
    with pytest.raises(InputError) as exc:
        copick_io._find_tomogram(config, "TS_01", 10.0, "wbp")
    line = str(exc.value)
    assert line.startswith(f"{config}: run 'TS_01' at 10 A has 2 'wbp' tomograms"), line
    assert "--copick-tomo-type" in line and "\n" not in line
    assert copick_io._find_tomogram(config, "TS_01", 10.0, "denoised") is tomos[2]


# ---------------------------------------------------------------------------------------------
# classify: the input block predictions.star joins


def test_predictions_star_joins_the_block_the_picks_were_read_from(
    model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """Picks in data_picks after a data_optics loop of as many rows: the picks were read from
    data_picks (the one block with coordinates), but predictions.star took the largest table (the
    first of equals) and wrote the predictions onto the optics rows, exit 0, without a word."""
    from cryoshift.runtime.picks import read_star

    tomo = _tomogram(tmp_path / "TS_01.mrc")
    rows = "".join(f"TS_01 {x} 20 16\n" for x in (14, 20, 26))
    picks = put(
        tmp_path / "picks.star",
        "data_optics\n\nloop_\n_rlnOpticsGroup\n_rlnOpticsGroupName\n1 g1\n2 g2\n3 g3\n\n"
        f"data_picks\n\nloop_\n_rlnTomoName\n_rlnCoordinateX\n_rlnCoordinateY\n_rlnCoordinateZ\n{rows}",
    )
    out = tmp_path / "out"
    code, _, err = run_cli(_classify(model, [picks], out, "-t", tomo), capsys)
    assert code == 0, err
    blocks = read_star(out / "predictions.star")
    particles = blocks["particles"]
    assert list(particles["rlnCoordinateX"]) == [14, 20, 26], particles.columns
    assert "rlnOpticsGroup" not in particles.columns
    assert list(blocks["optics"]["rlnOpticsGroupName"]) == ["g1", "g2", "g3"]
