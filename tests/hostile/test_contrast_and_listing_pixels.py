"""Contrast and pixel sizes a run used to take on trust (the science probe's findings 2, 3, 4):
inverted data whose DECLARED contrast agrees with the model's, a ``--contrast`` that contradicts
a dataset's record, a listing STAR's ``data_optics`` rlnImagePixelSize never read, and a stack of
2-D images refused as "anisotropic"."""

from __future__ import annotations

import json
from pathlib import Path

import mrcfile
import numpy as np
import pytest
from hostile_inputs import BOX, VOXEL, Capsys, assert_error, errors_table, predictions, run_cli

from cryoshift.runtime.mrc import write_stack
from cryoshift.runtime.polarity import MIN_VOLUMES, PolarityTally, centre_contrast

CLASSES = ["ribosome", "proteasome", "junk"]


def particles(n: int, sign: float = -1.0, seed: int = 0) -> np.ndarray:
    """``n`` centred blobs on noise: dark (``sign`` -1, as in tomograms, the tiny model's
    contrast) or light (+1, an inverted tomogram)."""
    rng = np.random.default_rng(seed)
    r2 = ((np.indices((BOX,) * 3) - (BOX - 1) / 2) ** 2).sum(0)
    blob = np.exp(-r2 / (2 * 2.5**2)).astype(np.float32)
    noise = rng.normal(0, 0.5, (n, BOX, BOX, BOX)).astype(np.float32)
    return sign * blob * rng.uniform(0.5, 1.5, (n, 1, 1, 1)).astype(np.float32) + noise


def labelled(tmp_path: Path, name: str, vols: np.ndarray) -> Path:
    """A labelled dataset of ``vols`` recorded as dark (what the model expects)."""
    from cryoshift.runtime.dataset import write_dataset

    return write_dataset(
        tmp_path / name, vols, labels=[i % 3 for i in range(len(vols))], class_names=CLASSES, voxel_size=VOXEL
    )


# ---------------------------------------------------------------------------------------------
# 2: the data's polarity against the model's contrast


def test_centre_contrast_sign_and_thresholds() -> None:
    """Dark centred particles score negative, light ones positive; a run warns only with enough
    volumes on the wrong side of the model's contrast."""
    dark = particles(40)
    assert (centre_contrast(dark) < 0).mean() > 0.9
    assert (centre_contrast(-dark[:, None]) > 0).mean() > 0.9  # (N, 1, D, D, D) as a batch buffer
    few = PolarityTally()
    few.add(-dark[: MIN_VOLUMES - 1])
    assert few.warning("dark") is None  # too few volumes to say anything
    light = PolarityTally()
    light.add(-dark)
    assert "the data look light (inverted)" in (light.warning("dark") or "")
    assert light.warning("light") is None
    right = PolarityTally()
    right.add(dark)
    assert right.warning("dark") is None
    assert "look dark" in (right.warning("light") or "")
    noise = PolarityTally()
    noise.add(np.random.default_rng(1).normal(0, 1, (200, BOX, BOX, BOX)))
    assert noise.warning("dark") is None and noise.warning("light") is None


def test_classify_warns_when_inverted_data_is_declared_dark(
    model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """An inverted dataset recorded as dark: classified (a warning, not a refusal), one stderr
    line and the same note in the manifest; ``-q`` says it once. The right contrast: no word."""
    inverted = labelled(tmp_path, "inv", particles(40, sign=+1.0))
    code, out, err = run_cli(["classify", model, inverted, "-o", tmp_path / "o", "--no-progress"], capsys)
    assert code == 0, err
    warned = [ln for ln in err.splitlines() if ln.startswith("cryoshift: warning: ")]
    assert len(warned) == 1 and "look light (inverted)" in warned[0], err
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert any("look light (inverted)" in n for n in manifest["summary"]["notes"])
    assert "look light (inverted)" in out  # the summary's note
    assert len(predictions(tmp_path / "o")) == 40
    code, _, err = run_cli(["classify", model, inverted, "-o", tmp_path / "q", "-q"], capsys)
    assert code == 0 and err.count("look light (inverted)") == 1, err

    right = labelled(tmp_path, "dark", particles(40))
    code, out, err = run_cli(["classify", model, right, "-o", tmp_path / "r", "--no-progress"], capsys)
    assert code == 0, err
    assert "inverted" not in err + out
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert not any("inverted" in n for n in manifest["summary"]["notes"])


def test_evaluate_warns_when_inverted_data_is_declared_dark(
    model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    inverted = labelled(tmp_path, "inv", particles(40, sign=+1.0))
    code, _, err = run_cli(["evaluate", model, inverted, "--out", tmp_path / "ev"], capsys)
    assert code == 0, err
    assert err.count("cryoshift: warning: ") == 1 and "look light (inverted)" in err, err
    report = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert any("look light (inverted)" in n for n in report["notes"])
    right = labelled(tmp_path, "dark", particles(40))
    code, _, err = run_cli(["evaluate", model, right, "--out", tmp_path / "ev2"], capsys)
    assert code == 0 and "inverted" not in err, err
    assert not any(
        "inverted" in n for n in json.loads((tmp_path / "ev2" / "evaluation.json").read_text())["notes"]
    )


# ---------------------------------------------------------------------------------------------
# 4: --contrast against a dataset's record


def test_contrast_option_contradicting_a_dataset_is_refused(
    model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """A light dataset with ``--contrast dark`` was classified as dark data, exit 0, no word."""
    from cryoshift.runtime.dataset import write_dataset

    light = write_dataset(tmp_path / "light", particles(6, +1.0), voxel_size=VOXEL, contrast="light")
    line = assert_error(
        run_cli(["classify", model, light, "-o", tmp_path / "o", "--contrast", "dark"], capsys), light
    )
    assert "'light'" in line and "--contrast says 'dark'" in line, line
    assert not (tmp_path / "o" / "predictions.csv").exists()
    dark = write_dataset(tmp_path / "dark", particles(6), voxel_size=VOXEL)
    code, _, err = run_cli(
        ["classify", model, dark, "-o", tmp_path / "d", "--contrast", "dark", "-q"], capsys
    )
    assert code == 0, err  # agreeing with the record is fine


# ---------------------------------------------------------------------------------------------
# 3: a listing STAR's data_optics rlnImagePixelSize


def listing(tmp_path: Path, stated: float | str | None, header_voxel: float = VOXEL, name: str = "l") -> Path:
    """A listing STAR of two slices of a stack whose header says ``header_voxel`` (0: none), its
    data_optics stating ``stated`` (None: no data_optics)."""
    stack = write_stack(tmp_path / f"{name}.mrcs", particles(2), voxel_size=VOXEL)
    if header_voxel != VOXEL:
        with mrcfile.open(stack, mode="r+") as mrc:
            mrc.voxel_size = header_voxel
    optics = (
        ""
        if stated is None
        else f"data_optics\n\nloop_\n_rlnOpticsGroup #1\n_rlnImagePixelSize #2\n1 {stated}\n\n"
    )
    star = tmp_path / f"{name}.star"
    star.write_text(
        optics + "data_particles\n\nloop_\n_rlnImageName #1\n_rlnOpticsGroup #2\n"
        f"000001@{stack.name} 1\n000002@{stack.name} 1\n"
    )
    return star


def test_listing_pixel_size_disagreeing_with_header_is_refused(
    model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    star = listing(tmp_path, 20.0)
    line = assert_error(run_cli(["classify", model, star, "-o", tmp_path / "o"], capsys), star)
    assert "rlnImagePixelSize 20 A" in line and "10 A" in line, line
    agree = listing(tmp_path, 10.2, name="ok")  # within 5 %
    code, _, err = run_cli(["classify", model, agree, "-o", tmp_path / "ok", "-q"], capsys)
    assert code == 0 and len(predictions(tmp_path / "ok")) == 2, err
    damaged = listing(tmp_path, "abc", name="bad")
    line = assert_error(run_cli(["classify", model, damaged, "-o", tmp_path / "bad"], capsys), damaged)
    assert "'abc'" in line, line


@pytest.mark.parametrize("stated", [20.0, 10.0])
def test_listing_pixel_size_checks_a_header_without_one(
    stated: float, model: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """A header without a voxel size was "classified without checking it" though the listing
    stated one: the stated size is checked against the model instead."""
    star = listing(tmp_path, stated, header_voxel=0.0)
    code, out, err = run_cli(["classify", model, star, "-o", tmp_path / "o", "--no-progress"], capsys)
    assert "classified without checking" not in out + err
    if stated == VOXEL:
        assert code == 0 and len(predictions(tmp_path / "o")) == 2, err
        assert "checked by the listing's data_optics rlnImagePixelSize" in out
    else:
        reasons = errors_table(tmp_path / "o")["reason"].tolist()
        assert len(reasons) == 2 and all("rlnImagePixelSize" in r and "20 A" in r for r in reasons), reasons


# ---------------------------------------------------------------------------------------------
# cosmetic: a stack of 2-D images


def test_image_stack_is_not_called_anisotropic(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    """RELION particle images (ispg 0, mz 1) whose cell spans the 32 sections: Z "voxels" of 320 A."""
    images = tmp_path / "img.mrcs"
    with mrcfile.new(images) as mrc:
        mrc.set_data(np.zeros((32, BOX, BOX), np.float32))
        mrc.voxel_size = VOXEL
        mrc.header.ispg, mrc.header.mz = 0, 1
    line = assert_error(run_cli(["classify", model, images, "-o", tmp_path / "o"], capsys), images)
    assert "stack of 32 2-D images" in line and "anisotropic" not in line, line


@pytest.mark.parametrize("path", ["slots", "reader_processes"])
def test_polarity_is_tallied_on_every_pipeline_path(path: str, model: Path, tmp_path: Path) -> None:
    """Device slots (the GPU upload thread hands the host buffer back before the model runs) and
    reader processes (shared memory) see the crops too: the same warning, in the summary's notes."""
    from cryoshift.runtime import classify
    from cryoshift.runtime.backends import load_model

    stack = write_stack(tmp_path / "inv.mrcs", particles(40, sign=+1.0), voxel_size=VOXEL)
    loaded = load_model(model, "cpu", batch_size=8, slots=2 if path == "slots" else 0)
    assert loaded.slots == (2 if path == "slots" else 0)
    summary = classify(
        loaded,
        [str(stack)],
        tmp_path / "o",
        batch_size=8,
        progress=False,
        reader_processes=path == "reader_processes",
    )
    assert summary.classified == 40
    assert any("look light (inverted)" in n for n in summary.notes), summary.notes
    assert summary.warned and summary.warned[0] in summary.notes


def test_device_workers_pass_on_their_polarity_warning(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    """``--devices``: each worker process judges its own crops; the parent said nothing before
    (its statistics are rebuilt from the workers' rows), now its summary and stderr carry the warning."""
    inverted = labelled(tmp_path, "inv", particles(2 * MIN_VOLUMES + 10, sign=+1.0))
    argv = [
        "classify",
        model,
        inverted,
        "-o",
        tmp_path / "o",
        "--devices",
        "0,1",
        "-b",
        "cpu",
        "--no-progress",
    ]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    assert "cryoshift: warning: the data look light (inverted)" in err, err
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert any("look light (inverted)" in n for n in manifest["summary"]["notes"])


@pytest.mark.slow
def test_ray_driver_tallies_the_actors_polarity(model: Path, tmp_path: Path, capsys: Capsys) -> None:
    """``--ray``: the actors send each crop's centre contrast, the driver judges the run."""
    pytest.importorskip("ray.data")
    import ray

    from cryoshift.runtime.distributed import classify_ray

    inverted = labelled(tmp_path, "inv", particles(MIN_VOLUMES + 10, sign=+1.0))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        summary = classify_ray(
            model, [str(inverted)], tmp_path / "o", backend="cpu", batch_size=8, num_workers=1, progress=False
        )
    finally:
        ray.shutdown()
    assert any("look light (inverted)" in n for n in summary.notes), summary.notes
    assert "cryoshift: warning: the data look light (inverted)" in capsys.readouterr().err
