"""Hostile inputs of the training verbs through the real CLI: bad target items skipped and reported
(train), hostile targets and NaN source volumes refused, bad structure files, folders and configs
refused (simulate)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hostile_inputs import BOX, VOXEL, Capsys, assert_error, put, raw_mrc, run_cli, volumes

from cryoshift.runtime.mrc import write_volume

# ---------------------------------------------------------------------------------------------
# training target loading


def test_train_target_loading_skips_bad_items(tmp_path: Path) -> None:
    from cryoshift.training.data import load_target

    d = tmp_path / "target"
    d.mkdir()
    for i, v in enumerate(volumes(3)):
        write_volume(d / f"g{i}.mrc", v, voxel_size=VOXEL)
    raw_mrc(d / "h_trunc.mrc", data=bytes(10))
    (d / "i_zero.mrc").write_bytes(b"")
    raw_mrc(d / "j_mode4.mrc", mode=4)
    nan = volumes(1)[0]
    nan[0, 0, 0] = np.nan
    write_volume(d / "k_nan.mrc", nan, voxel_size=VOXEL)
    dom = load_target(str(d), BOX, VOXEL, "dark", ["a", "b"])
    assert len(dom) == 3
    assert len(dom.skipped) == 4 and all(s.split(": ")[0].endswith(".mrc") for s in dom.skipped)


def test_train_target_that_is_a_numpy_archive_is_named(tmp_path: Path) -> None:
    """A tiny .npz given as target volumes: "a zip archive ... not an MRC file", not "truncated"."""
    from cryoshift.runtime.errors import InputError
    from cryoshift.training.data import load_target

    npz = tmp_path / "target.npz"
    np.savez(npz, volumes=np.zeros(3, np.float32))
    with pytest.raises(InputError, match=r"is a zip archive \(NumPy \.npz or similar\), not an MRC") as exc:
        load_target(str(npz), BOX, VOXEL, "dark", ["a", "b"])
    assert "truncated" not in str(exc.value) and str(npz) in str(exc.value)


def test_train_refuses_hostile_target(tmp_path: Path, capsys: Capsys, dataset: Path) -> None:
    pytest.importorskip("torch")
    for name, payload in (("t.star", b""), ("t.csv", b"a;b\n1;2\n"), ("t.mrc", b"junk" * 300)):
        bad = tmp_path / name
        bad.write_bytes(payload)
        result = run_cli(
            [
                "train",
                "--source",
                dataset,
                "--target",
                bad,
                "--out",
                tmp_path / f"run_{name}",
                "--epochs",
                "1",
                "--backbone",
                "cryonet-small",
                "--no-progress",
                "--threads",
                "1",
            ],
            capsys,
        )
        assert_error(result, bad)


def test_train_cli_skips_bad_target_items(tmp_path: Path, capsys: Capsys) -> None:
    """Batch work in training: a bad target file is reported on stderr and skipped, the run goes on."""
    pytest.importorskip("torch")
    from cryoshift.runtime.dataset import write_dataset

    src = write_dataset(
        tmp_path / "src", volumes(8, seed=1), labels=[0, 1] * 4, class_names=["a", "b"], voxel_size=VOXEL
    )
    tgt = tmp_path / "target files"
    tgt.mkdir()
    for i, v in enumerate(volumes(4, seed=2)):
        write_volume(tgt / f"g{i}.mrc", v, voxel_size=VOXEL)
    bad = put(tgt / "h_bad.mrc", b"junk" * 400)
    trunc = raw_mrc(tgt / "i_trunc.mrc", data=bytes(99))
    code, _, err = run_cli(
        [
            "train",
            "--source",
            src,
            "--target",
            tgt,
            "--out",
            tmp_path / "run",
            "--epochs",
            1,
            "--backbone",
            "cryonet-small",
            "--batch-size",
            4,
            "--no-progress",
            "--threads",
            1,
            "--method",
            "source-only",
        ],
        capsys,
    )
    assert code == 0 and "Traceback" not in err, err
    skipped = [ln for ln in err.splitlines() if "skipped target item" in ln]
    assert len(skipped) == 2 and str(bad) in skipped[0] and str(trunc) in skipped[1], err
    assert (tmp_path / "run" / "model.pt").is_file()


def test_train_with_nan_volumes_in_datasets(tmp_path: Path, capsys: Capsys) -> None:
    """A NaN or blank volume in a target dataset is skipped and reported; in the labelled source
    it refuses the run."""
    pytest.importorskip("torch")
    import mrcfile

    from cryoshift.runtime.dataset import write_dataset

    src = write_dataset(
        tmp_path / "src", volumes(8, seed=1), labels=[0, 1] * 4, class_names=["a", "b"], voxel_size=VOXEL
    )
    tgt = write_dataset(tmp_path / "tgt", volumes(5, seed=2), voxel_size=VOXEL)
    with mrcfile.mmap(tgt / "volumes.mrc", "r+") as m:
        m.data[3, 1, 1, 1] = np.nan
        m.data[4, 0, 0, 0] = 1e30
        m.data[1] = 0.0  # a blank box: no signal, yet it would take part in the target terms
    argv = [
        "--epochs",
        1,
        "--backbone",
        "cryonet-small",
        "--batch-size",
        4,
        "--no-progress",
        "--threads",
        1,
        "--method",
        "dann",
    ]
    code, _, err = run_cli(
        ["train", "--source", src, "--target", tgt, "--out", tmp_path / "run", *argv], capsys
    )
    assert code == 0 and "Traceback" not in err, err
    skipped = [ln for ln in err.splitlines() if "skipped target item" in ln]
    assert len(skipped) == 3, err
    assert "000002@" in skipped[0] and "000004@" in skipped[1] and "000005@" in skipped[2], err
    with mrcfile.mmap(src / "volumes.mrc", "r+") as m:
        m.data[2, 0, 0, 0] = np.inf
    result = run_cli(["train", "--source", src, "--target", tgt, "--out", tmp_path / "run2", *argv], capsys)
    assert_error(result, src)


# ---------------------------------------------------------------------------------------------
# simulate --structures and --config


def _atom(serial: int, x: float, y: float, z: float) -> str:
    """One PDB ATOM record (fixed columns)."""
    return f"ATOM  {serial:5d}  CA  ALA A{serial:4d}    {x:8.3f}{y:8.3f}{z:8.3f}  1.00  0.00           C\n"


@pytest.mark.parametrize(
    "name,payload",
    [
        ("empty.pdb", b""),
        ("junk.pdb", b"HELLO\x00\xff" * 50),
        ("junk.cif", b"data_x\n_loop\n\x00\x01"),
        ("junk.mrc", b"abc" * 400),
        ("noatoms.pdb", b"REMARK nothing\nEND\n"),
        # a NaN coordinate gave a RuntimeWarning above the error line
        ("nan_coords.pdb", (_atom(1, float("nan"), 10, 10) + _atom(2, 12, 10, 10)).encode()),
        # atoms 10000 A apart: gemmi was asked for a 5000^3 grid (500 GB; "out of host memory
        # ... lower --batch-size", an option simulate does not have)
        ("huge_span.pdb", (_atom(1, 0, 0, 0) + _atom(2, 9999, 9999, 9999)).encode()),
        ("zero.mrc", None),
    ],
)
def test_simulate_refuses_bad_structure_file(
    name: str, payload: bytes | None, tmp_path: Path, capsys: Capsys
) -> None:
    pytest.importorskip("torch")
    bad = tmp_path / name
    if payload is None:
        write_volume(bad, np.zeros((BOX,) * 3, np.float32), voxel_size=VOXEL)
    else:
        bad.write_bytes(payload)
    result = run_cli(["simulate", tmp_path / "sim", "--structures", bad, "--n", "4", "--box", BOX], capsys)
    assert_error(result, bad)


def test_simulate_refuses_bad_structure_sources(tmp_path: Path, capsys: Capsys) -> None:
    pytest.importorskip("torch")
    junk = tmp_path / "junk dir"
    junk.mkdir()
    (junk / "notes.txt").write_text("hello")
    (junk / "broken.pdb").write_bytes(b"ATOM  garbage\n")
    cfg = tmp_path / "cfg.json"
    cfg.write_text("{not json")
    cfg_list = tmp_path / "cfg_list.json"
    cfg_list.write_text("[1, 2]")
    cfg_field = tmp_path / "cfg_field.json"
    cfg_field.write_text('{"snr": "loud", "no_such_field": 3}')
    empty = tmp_path / "empty dir"
    empty.mkdir()
    for extra, name in (
        (["--structures", junk], junk),
        (["--structures", empty], empty),
        (["--structures", tmp_path / "missing.mrc"], tmp_path / "missing.mrc"),
        (["--config", cfg], cfg),
        (["--config", cfg_list], cfg_list),
        (["--config", cfg_field], cfg_field),
    ):
        result = run_cli(["simulate", tmp_path / "sim", "--n", "4", "--box", BOX, *extra], capsys)
        assert_error(result, name)
    code, _, err = run_cli(
        ["simulate", tmp_path / "sim", "--n", "4", "--box", BOX, "--structures", "builtin:no_such_thing"],
        capsys,
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


@pytest.mark.parametrize("voxel", ["nan", "inf", "0"])
def test_simulate_refuses_a_voxel_size_that_is_not_a_positive_number(
    voxel: str, tmp_path: Path, capsys: Capsys
) -> None:
    """--voxel-size nan passed the '<= 0' check and ended in a ValueError traceback."""
    pytest.importorskip("torch")
    result = run_cli(["simulate", tmp_path / "sim", "--n", "4", "--box", BOX, "--voxel-size", voxel], capsys)
    assert_error(result, "voxel size must be a positive number")


# ---------------------------------------------------------------------------------------------
# train --resume with a damaged config.json


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{bad", "not a readable training config"),
        ("[1]", "not an object"),
        ("{}", "not a training config (missing source, out)"),
        ('{"source": "builtin", "out": "x", "epochs": "many"}', "wrong type: epochs='many'"),
        ('{"source": "builtin", "out": "x", "surprise": 1}', "unknown training config keys: surprise"),
    ],
)
def test_train_resume_with_damaged_config_is_one_line(
    tmp_path: Path, capsys: Capsys, text: str, reason: str
) -> None:
    """A half-written or foreign config.json: one error line naming it, exit 2, no traceback."""
    pytest.importorskip("torch")
    run = tmp_path / "run"
    run.mkdir()
    config = run / "config.json"
    config.write_text(text)
    argv = ["train", "--source", "builtin", "--box", str(BOX), "--epochs", "2", "--out", run, "--resume"]
    line = assert_error(
        run_cli([*argv, "--device", "cpu", "--no-progress", "--threads", "1"], capsys), config
    )
    assert reason in line


# ---------------------------------------------------------------------------------------------
# train --target: volumes of another voxel size


def test_train_target_of_another_voxel_size_is_skipped(tmp_path: Path) -> None:
    """A 5 A volume among 10 A ones is skipped with the reason (it was used for adaptation without a
    word); a header without a usable voxel size is used, with one note for all such files."""
    from cryoshift.training.data import load_target

    d = tmp_path / "target"
    d.mkdir()
    v = volumes(4)
    write_volume(d / "a_good.mrc", v[0], voxel_size=VOXEL)
    write_volume(d / "b_good.mrc", v[1], voxel_size=VOXEL * 1.03)  # within the 5% tolerance
    write_volume(d / "c_vs5.mrc", v[2], voxel_size=VOXEL / 2)
    raw_mrc(d / "d_nocell.mrc", cella=0.0, data=v[3].tobytes())
    dom = load_target(str(d), BOX, VOXEL, "dark", ["a", "b"])
    assert len(dom) == 3
    np.testing.assert_array_equal(dom.volumes[:2], v[:2])
    assert len(dom.skipped) == 1 and dom.skipped[0].startswith(str(d / "c_vs5.mrc"))
    assert "voxel size 5 A differs" in dom.skipped[0]
    assert len(dom.notes) == 1 and str(d / "d_nocell.mrc") in dom.notes[0] and "voxel size" in dom.notes[0]


def test_train_target_dataset_of_another_voxel_size_is_refused(tmp_path: Path) -> None:
    from cryoshift.runtime.dataset import write_dataset
    from cryoshift.runtime.errors import InputError
    from cryoshift.training.data import load_target

    ds = write_dataset(tmp_path / "ds5", volumes(3), voxel_size=VOXEL / 2)
    with pytest.raises(
        InputError, match="target voxel size 5 A differs from the training voxel size 10 A"
    ) as exc:
        load_target(str(ds), BOX, VOXEL, "dark", ["a", "b"])
    assert str(ds / "dataset.json") in str(exc.value)
    ok = write_dataset(tmp_path / "ds10", volumes(3), voxel_size=VOXEL)
    assert len(load_target(str(ok), BOX, VOXEL, "dark", ["a", "b"])) == 3


# ---------------------------------------------------------------------------------------------
# train --target with --tomograms


def test_train_tomograms_with_a_target_that_is_no_picks_table_are_refused(
    tmp_path: Path, capsys: Capsys, dataset: Path
) -> None:
    """--tomograms with a dataset or MRC folder as --target was ignored without a word: only picks
    are cropped from tomograms. A picks table (or a glob of them) still takes them."""
    from cryoshift.runtime.errors import InputError
    from cryoshift.training.data import load_target

    rng = np.random.default_rng(0)
    tomo = write_volume(tmp_path / "TS_01.mrc", rng.normal(size=(32, 32, 32)).astype(np.float32), VOXEL)
    folder = tmp_path / "subtomos"
    folder.mkdir()
    for i, v in enumerate(volumes(2)):
        write_volume(folder / f"p{i}.mrc", v, voxel_size=VOXEL)
    single = folder / "p0.mrc"
    cases = [
        (dataset, "a dataset directory"),
        (folder, "a folder of subtomograms"),
        (single, "not a STAR/CSV table"),
        ("copick:project.json", "a copick project"),
    ]
    for target, kind in cases:
        with pytest.raises(InputError) as exc:
            load_target(str(target), BOX, VOXEL, "dark", ["a", "b"], tomograms=[str(tomo)])
        line = str(exc.value)
        assert line.startswith(f"{target}: --tomograms only applies to a picks STAR/CSV target"), line
        assert kind in line and "\n" not in line
    listing = put(tmp_path / "listing.star", f"data_\n\nloop_\n_rlnImageName #1\n{single}\n")
    with pytest.raises(InputError) as exc:  # a table, but of subtomogram files, not of picks
        load_target(str(listing), BOX, VOXEL, "dark", ["a", "b"], tomograms=[str(tomo)])
    assert str(exc.value).startswith(f"{listing}: --tomograms only applies to a table of picks")
    picks = put(tmp_path / "picks.csv", "x,y,z\n16,16,16\n12,14,16\n")
    for target in (picks, tmp_path / "pick*.csv"):
        assert len(load_target(str(target), BOX, VOXEL, "dark", ["a", "b"], tomograms=[str(tomo)])) == 2
    assert len(load_target(str(dataset), BOX, VOXEL, "dark", ["a", "b"], tomograms=[])) == 6
    pytest.importorskip("torch")
    argv = ["train", "--source", dataset, "--target", dataset, "--tomograms", tomo, "--out", tmp_path / "run"]
    result = run_cli(
        [*argv, "--epochs", 1, "--backbone", "cryonet-small", "--no-progress", "--threads", 1], capsys
    )
    assert "--tomograms only applies to a picks STAR/CSV target" in assert_error(result, dataset)
    assert not (tmp_path / "run" / "model.pt").exists()


# ---------------------------------------------------------------------------------------------
# train --target: data of the other contrast convention


def test_train_target_dataset_of_another_contrast_is_refused(tmp_path: Path) -> None:
    """A 'light' target for a 'dark' source was used for adaptation without a word (as a dataset
    of another voxel size is, it is refused: all its volumes share dataset.json's contrast)."""
    from cryoshift.runtime.dataset import write_dataset
    from cryoshift.runtime.errors import InputError
    from cryoshift.training.data import load_target

    light = write_dataset(tmp_path / "light", volumes(3), voxel_size=VOXEL, contrast="light")
    with pytest.raises(InputError, match="target contrast is 'light' but the source's is 'dark'") as exc:
        load_target(str(light), BOX, VOXEL, "dark", ["a", "b"])
    assert str(light / "dataset.json") in str(exc.value)
    assert len(load_target(str(light), BOX, VOXEL, "light", ["a", "b"])) == 3


def test_train_cli_refuses_a_target_of_another_contrast_in_one_line(
    tmp_path: Path, capsys: Capsys, dataset: Path
) -> None:
    pytest.importorskip("torch")
    from cryoshift.runtime.dataset import write_dataset

    light = write_dataset(tmp_path / "light", volumes(3), voxel_size=VOXEL, contrast="light")
    argv = ["train", "--source", dataset, "--target", light, "--out", tmp_path / "run", "--epochs", 1]
    result = run_cli([*argv, "--backbone", "cryonet-small", "--no-progress", "--threads", 1], capsys)
    line = assert_error(result, light / "dataset.json")
    assert "target contrast is 'light' but the source's is 'dark'" in line
    assert not (tmp_path / "run" / "model.pt").exists()


def test_train_on_a_dataset_whose_labels_hold_one_class_is_refused(tmp_path: Path, capsys: Capsys) -> None:
    """Two class names but every label the first: a 'classifier' that answers one class trained."""
    pytest.importorskip("torch")
    from cryoshift.runtime.dataset import write_dataset

    src = write_dataset(
        tmp_path / "src", volumes(6, seed=1), labels=[0] * 6, class_names=["a", "b"], voxel_size=VOXEL
    )
    argv = ["--epochs", 1, "--backbone", "cryonet-small", "--method", "source-only", "--no-progress"]
    line = assert_error(run_cli(["train", "--source", src, "--out", tmp_path / "run", *argv], capsys), src)
    assert "the labels hold one class (a) of the 2 named" in line
    assert not (tmp_path / "run" / "model.pt").exists()


def test_train_light_source_with_an_mrc_target_names_what_to_do(tmp_path: Path, capsys: Capsys) -> None:
    """A light source with a target of MRC files: the planner's refusal said "pass the right
    --contrast", an option train does not have."""
    pytest.importorskip("torch")
    from cryoshift.runtime.dataset import write_dataset

    src = write_dataset(
        tmp_path / "src",
        volumes(6, seed=1),
        labels=[0, 1] * 3,
        class_names=["a", "b"],
        voxel_size=VOXEL,
        contrast="light",
    )
    target = write_volume(tmp_path / "t.mrc", volumes(1, seed=2)[0], voxel_size=VOXEL)
    argv = ["train", "--source", src, "--target", target, "--out", tmp_path / "run", "--epochs", 1]
    line = assert_error(run_cli([*argv, "--backbone", "cryonet-small", "--no-progress"], capsys), target)
    assert "--contrast dark" in line and "pass the right" not in line
