"""copick projects in and out: a local project built with copick's own API (new_config, new_run,
new_voxel_spacing, new_tomogram(...).from_numpy, new_picks(...).from_numpy), classified through the
CLI, cross-checked against the same tomograms and picks given as MRC + CSV, and the predicted picks
read back with copick. Skipped when copick is not installed (pip install 'cryoshift[copick]').
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from import_blocker import block_imports

from cryoshift.runtime.cli import main

SHAPE = (24, 48, 40)  # Z, Y, X
SPACING = 10.0
PICKS = {  # voxels (x, y, z)
    "TS_01": [(20.0, 24.0, 12.0), (12.0, 30.0, 10.0), (30.0, 16.0, 14.0), (25.0, 35.0, 9.0)],
    "TS_02": [(18.0, 20.0, 12.0), (28.0, 40.0, 11.0), (10.0, 10.0, 13.0)],
}


def _project(root: Path) -> tuple[Path, dict[str, np.ndarray]]:
    copick = pytest.importorskip("copick")
    from copick.models import PickableObject

    objects = [
        PickableObject(name="particle", is_particle=True, label=1, radius=60.0),
        PickableObject(name="ribosome", is_particle=True, label=2, radius=120.0),
        PickableObject(name="proteasome", is_particle=True, label=3, radius=80.0),
    ]  # no "junk"
    config = root / "copick_config.json"
    copick.new_config(str(config), str(root / "overlay"), proj_name="test", pickable_objects=objects)
    project = copick.from_file(str(config))
    rng = np.random.default_rng(11)
    tomos = {}
    for name, picks in PICKS.items():
        run = project.new_run(name)
        tomo = rng.normal(0, 1, SHAPE).astype(np.float32)
        run.new_voxel_spacing(SPACING).new_tomogram("wbp").from_numpy(tomo, levels=1)
        tomos[name] = tomo
        xyz = np.array(picks) * SPACING
        shift = np.zeros((len(xyz), 4, 4)) + np.eye(4)
        shift[0, :3, 3] = [5.0, -5.0, 0.0]  # a refined shift: the centre is location + translation
        xyz[0] -= [5.0, -5.0, 0.0]
        run.new_picks("particle", "1", user_id="alice").from_numpy(xyz, shift)
        run.new_picks("particle", "1", user_id="bob").from_numpy(xyz[1:2])  # alice's second pick again
    return config, tomos


def _classify(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    code = main(["classify", *argv, "-b", "cpu"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_copick_round_trip(model_path, tmp_path, capsys):
    copick = pytest.importorskip("copick")

    from cryoshift.runtime.mrc import write_volume
    from cryoshift.runtime.results import read_results

    config, tomos = _project(tmp_path / "proj")
    out = tmp_path / "out"
    text = _classify(
        [
            str(model_path),
            f"copick:{config}",
            "--copick-voxel-spacing",
            "10",
            "--copick-tomo-type",
            "wbp",
            "--copick-picks",
            "particle:alice:1",
            "--copick-session",
            "7",
            "-o",
            str(out),
        ],
        capsys,
    )
    assert "written to" in text
    got = read_results(out / "predictions.csv")
    assert {(r.tomo_name, r.x, r.y, r.z) for r in got.itertuples()} == {
        (n, *p) for n, picks in PICKS.items() for p in picks
    }
    # The same voxels given as MRC files + a CSV table: the same classes and confidences.
    mrc = tmp_path / "mrc"
    mrc.mkdir()
    for name, tomo in tomos.items():
        write_volume(mrc / f"{name}.mrc", tomo, voxel_size=SPACING)
    (mrc / "picks.csv").write_text(
        "tomo,x,y,z\n" + "".join(f"{n},{x},{y},{z}\n" for n, p in PICKS.items() for x, y, z in p)
    )
    _classify(
        [str(model_path), str(mrc / "picks.csv"), "-t", str(mrc), "-o", str(tmp_path / "ref"), "-q"], capsys
    )
    ref = read_results(tmp_path / "ref" / "predictions.csv").set_index("id").loc[got["id"]]
    assert list(ref["class_name"]) == list(got["class_name"])
    np.testing.assert_allclose(ref["confidence"], got["confidence"], rtol=1e-6)

    # Predictions back in the project: user cryoshift, session 7, Angstrom, confidence as score.
    project = copick.from_file(str(config))
    for name in PICKS:
        run = project.get_run(name)
        mine = got[got["tomo_name"] == name]
        for cls in ("ribosome", "proteasome"):
            rows = mine[mine["class_name"] == cls]
            sets = run.get_picks(object_name=cls, user_id="cryoshift", session_id="7")
            if rows.empty:
                assert not sets or len(sets[0].points) == 0
                continue
            (picks,) = sets
            pos = picks.full_positions()
            order = np.lexsort(pos.T[::-1])
            expected = rows[["x", "y", "z"]].to_numpy() * SPACING
            np.testing.assert_allclose(pos[order], expected[np.lexsort(expected.T[::-1])])
            np.testing.assert_allclose(np.sort(picks.scores()), np.sort(rows["confidence"].to_numpy()))
        assert not run.get_picks(object_name="junk")
    if (got["class_name"] == "junk").any():
        assert "not written: junk" in text
    # A second run of the same session replaces its picks (no duplicates) and never reads them as input.
    _classify(
        [
            str(model_path),
            f"copick:{config}",
            "--copick-voxel-spacing",
            "10",
            "--copick-tomo-type",
            "wbp",
            "--copick-picks",
            "*",
            "--copick-session",
            "7",
            "-o",
            str(tmp_path / "again"),
            "-q",
        ],
        capsys,
    )
    again = read_results(tmp_path / "again" / "predictions.csv")
    assert len(again) == len(got)  # alice's and bob's picks: bob's point is alice's, classified once
    project = copick.from_file(str(config))
    total = sum(len(p.points) for n in PICKS for p in project.get_run(n).get_picks(user_id="cryoshift"))
    assert total == int((got["class_name"].isin(["ribosome", "proteasome"])).sum())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["copick_session"] == "7"


def test_copick_missing_tomogram_and_bad_options(model_path, tmp_path, capsys):
    config, _ = _project(tmp_path / "proj")
    code = main(
        [
            "classify",
            str(model_path),
            f"copick:{config}",
            "--copick-voxel-spacing",
            "10",
            "--copick-tomo-type",
            "denoised",
            "--copick-picks",
            "particle",
            "-o",
            str(tmp_path / "o"),
            "-b",
            "cpu",
            "-q",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "no 'denoised' tomogram (has: wbp)" in err and len(err.strip().splitlines()) == 1
    code = main(
        [
            "classify",
            str(model_path),
            f"copick:{config}",
            "--copick-voxel-spacing",
            "10",
            "--copick-tomo-type",
            "wbp",
            "-o",
            str(tmp_path / "p"),
            "-b",
            "cpu",
            "-q",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "--copick-picks" in err


def test_copick_target_for_training(model_path, tmp_path):
    """train --target copick:... goes through training/data.py load_target's planned path."""
    from cryoshift.runtime.copick_io import with_options
    from cryoshift.training.data import load_target

    config, tomos = _project(tmp_path / "proj")
    spec = with_options(f"copick:{config}", 10.0, "wbp", ["particle:alice"])
    domain = load_target(spec, 16, SPACING, "dark", ["a", "b"])
    assert len(domain) == sum(len(p) for p in PICKS.values())
    x, y, z = (int(v) for v in PICKS["TS_02"][1])
    centres = np.asarray(domain.volumes)[:, 8, 8, 8]  # box 16: the picked voxel sits at index 8
    assert np.isclose(centres, tomos["TS_02"][z, y, x]).any()


@pytest.mark.parametrize("with_stack", [False, True], ids=["alone", "beside-a-stack"])
def test_missing_copick_names_the_extra(model_path, tmp_path, capsys, monkeypatch, with_stack):
    """Beside other inputs, a copick input without the extra was an "unexpected error" row, every
    other input was classified, and the run failed at the end (no manifest, a rerun refused)."""
    from cryoshift.runtime.mrc import write_stack

    block_imports(monkeypatch, "copick")
    config = tmp_path / "c.json"
    config.write_text("{}")
    stack = write_stack(tmp_path / "s.mrcs", np.zeros((2, 16, 16, 16), np.float32), voxel_size=10.0)
    code = main(
        [
            "classify",
            str(model_path),
            *([str(stack)] if with_stack else []),
            f"copick:{config}",
            "--copick-voxel-spacing",
            "10",
            "--copick-tomo-type",
            "wbp",
            "--copick-picks",
            "ribosome",
            "-o",
            str(tmp_path / "o"),
            "-b",
            "cpu",
            "-q",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "cryoshift[copick]" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o" / "predictions.csv").exists()  # refused before any work
