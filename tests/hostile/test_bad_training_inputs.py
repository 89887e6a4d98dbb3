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


def test_train_on_a_float16_dataset_prints_no_warning(tmp_path: Path, capsys: Capsys) -> None:
    """float16 datasets are a format the writer offers; checking their volumes compared them with
    the 1e15 limit cast to float16 (inf): "RuntimeWarning: overflow encountered in cast" and its
    source line on stderr of every training run on one, source or target."""
    pytest.importorskip("torch")
    from cryoshift.runtime.dataset import write_dataset

    half = volumes(8, seed=1).astype(np.float16)
    src = write_dataset(tmp_path / "src", half, labels=[0, 1] * 4, class_names=["a", "b"], voxel_size=VOXEL)
    tgt = write_dataset(tmp_path / "tgt", half[:4], voxel_size=VOXEL)
    argv = ["train", "--source", src, "--target", tgt, "--out", tmp_path / "run", "--epochs", 1]
    argv += ["--backbone", "cryonet-small", "--method", "dann", "--no-progress"]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    # nothing but cryoshift's own warning that 4 target volumes are too few to adapt to: when the
    # target is read, and in the closing summary marked as the same warning (it read as two); and
    # the note that a dataset source trains without the maps' spectrum matching and template labels
    # (train's progress is on stderr too: the target count and the epoch line)
    small = [line for line in err.splitlines() if "the target holds only 4 subtomograms" in line]
    progress = [
        line for line in err.splitlines() if line.startswith(("epoch 1/1 ", "cryoshift: target: 4 items"))
    ]
    # (and, 4 volumes and one epoch learning nothing, maybe the warning that the target collapsed)
    rest = [
        line
        for line in err.splitlines()
        if line not in small + progress and "is a dataset: " not in line and "collapsed" not in line
    ]
    assert len(progress) == 2, err
    assert "Warning" not in err and rest == [], err
    assert len(small) == 2 and small[1] == small[0] + " (as said at the start)", err


@pytest.mark.parametrize("breakage", ["no_voxel_size_anywhere", "header_contradicts_json"])
def test_train_on_a_dataset_of_unknown_or_contradictory_voxel_size_is_refused(
    breakage: str, tmp_path: Path, capsys: Capsys
) -> None:
    """dataset.json without "voxel_size" and a header without one: the model was stamped 1.0 A (the
    reader's stand-in) and exit 0. A header saying 20 A against dataset.json's 10 A: dataset.json
    won without a word."""
    pytest.importorskip("torch")
    import json

    import mrcfile

    from cryoshift.runtime.dataset import write_dataset

    src = write_dataset(
        tmp_path / "src", volumes(8, seed=1), labels=[0, 1] * 4, class_names=["a", "b"], voxel_size=VOXEL
    )
    with mrcfile.mmap(src / "volumes.mrc", "r+") as m:
        m.voxel_size = 0.0 if breakage == "no_voxel_size_anywhere" else 2 * VOXEL
    if breakage == "no_voxel_size_anywhere":
        meta = json.loads((src / "dataset.json").read_text())
        del meta["voxel_size"]
        (src / "dataset.json").write_text(json.dumps(meta))
        named, words = src / "dataset.json", "has no 'voxel_size' and the header of volumes.mrc none either"
    else:
        named, words = src / "volumes.mrc", "header voxel size 20 A differs from dataset.json's 10 A"
    argv = ["train", "--source", src, "--out", tmp_path / "run", "--epochs", 1, "--method", "source-only"]
    line = assert_error(run_cli([*argv, "--backbone", "cryonet-small", "--no-progress"], capsys), named)
    assert words in line, line
    assert not (tmp_path / "run" / "model.pt").exists()


def test_train_on_a_table_whose_class_names_contradict_its_labels_is_refused(
    tmp_path: Path, capsys: Capsys
) -> None:
    """particles.csv relabelled in its readable column (class_name) but not in 'label': trained
    under the old labels without a word. Names that read as numbers ('007') still match."""
    pytest.importorskip("torch")
    import pandas as pd

    from cryoshift.runtime.dataset import read_dataset, write_dataset

    src = write_dataset(
        tmp_path / "src", volumes(8, seed=1), labels=[0, 1] * 4, class_names=["a", "b"], voxel_size=VOXEL
    )
    table = pd.read_csv(src / "particles.csv")
    table.loc[3, "class_name"] = "a"  # row 3 is label 1, 'b'
    table.to_csv(src / "particles.csv", index=False)
    argv = ["train", "--source", src, "--out", tmp_path / "run", "--epochs", 1, "--method", "source-only"]
    line = assert_error(
        run_cli([*argv, "--backbone", "cryonet-small", "--no-progress"], capsys), src / "particles.csv"
    )
    assert "1 rows' class_name is not the name of their label (first: row 3, label 1 is 'b'" in line
    numbers = write_dataset(tmp_path / "num", volumes(2), [0, 1], ["007", "1.50"], voxel_size=VOXEL)
    assert read_dataset(numbers, with_labels=True).labels.tolist() == [0, 1]


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
    """--voxel-size nan passed the '<= 0' check and ended in a ValueError traceback; then "voxel
    size must be a positive number" named neither the option nor its range."""
    pytest.importorskip("torch")
    result = run_cli(["simulate", tmp_path / "sim", "--n", "4", "--box", BOX, "--voxel-size", voxel], capsys)
    line = assert_error(result, f"--voxel-size {voxel} is outside the accepted range 0.5 to 50 A")
    assert "positive number" not in line


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
        # stored settings were never checked as options are: a ZeroDivisionError / Adam traceback
        ('{"source": "builtin", "out": "x", "box": 16, "batch_size": 0}', "refused: --batch-size must be"),
        ('{"source": "builtin", "out": "x", "box": 16, "lr": -1}', "refused: --lr must be a finite number"),
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


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two genuine one-epoch runs (cryonet-small, 16^3, source-only): 'ab' trained on classes a, b
    and 'abc' on a, b, c; each keeps its checkpoints/resume.pt."""
    pytest.importorskip("torch")
    from cryoshift.runtime.dataset import write_dataset
    from cryoshift.training.trainer import TrainConfig, train

    root = tmp_path_factory.mktemp("two_runs")
    runs = {}
    for names in ("ab", "abc"):
        labels = [i % len(names) for i in range(3 * len(names))]
        source = write_dataset(
            root / f"src_{names}", volumes(len(labels), seed=1), labels, list(names), voxel_size=VOXEL
        )
        config = TrainConfig(source=str(source), out=str(root / names), method="source-only", epochs=1)
        config.backbone, config.batch_size, config.test_views, config.device = "cryonet-small", 4, 1, "cpu"
        config.threads, config.progress, config.template_labels, config.amp = 1, False, 0, False
        train(config)
        runs[names] = root / names
    return runs


def _tamper_resume(kind: str, run: Path, other: Path) -> str:
    """Damage the copied run ``run`` as ``kind`` says; returns the words its refusal must hold."""
    import json
    import shutil

    import torch

    state = run / "checkpoints" / "resume.pt"
    if kind == "another_runs_resume_pt":
        shutil.copy(other / "checkpoints" / "resume.pt", state)
        return "was written under another training config than"
    if kind == "config_json_edited":
        config = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps({**config, "backbone": "encoder4"}))
        return "(backbone=cryonet-small in it, encoder4 in config.json)"
    payload = torch.load(state, map_location="cpu", weights_only=True)
    if kind == "no_history":
        del payload["extra"]["history"]
        words = "damaged resume state (missing 'history')"
    elif kind == "epoch_beyond_history":
        payload["epoch"] = 99
        words = "corrupt cryoshift checkpoint: 'epoch' is 99, but its training config ran 1 epochs"
    else:
        payload["extra"]["optimizer_state"] = {"state": {}, "param_groups": []}
        words = "damaged resume state (loaded state dict has a different number of parameter groups)"
    torch.save(payload, state)
    return words


@pytest.mark.parametrize(
    "kind",
    ["another_runs_resume_pt", "config_json_edited", "no_history", "epoch_beyond_history", "optimizer"],
)
def test_train_resume_with_a_foreign_or_damaged_resume_state_is_one_line(
    kind: str, two_runs: dict[str, Path], tmp_path: Path, capsys: Capsys
) -> None:
    """resume.pt of another run (other classes) or a config.json edited since: torch's
    "Error(s) in loading state_dict" over a dozen lines; a resume.pt with keys missing or of the
    wrong kind: a KeyError or ValueError traceback; an epoch past its history: exit 0 with nothing
    trained. Now one line naming resume.pt."""
    import json
    import shutil

    run = Path(shutil.copytree(two_runs["ab"], tmp_path / "run"))
    words = _tamper_resume(kind, run, two_runs["abc"])
    source = json.loads((run / "config.json").read_text())["source"]
    argv = ["train", "--source", source, "--out", run, "--epochs", 2, "--resume", "--device", "cpu"]
    line = assert_error(
        run_cli([*argv, "--no-progress", "--threads", 1], capsys), run / "checkpoints" / "resume.pt"
    )
    assert words in line, line
    assert len((run / "metrics.csv").read_text().splitlines()) == 2  # the header and epoch 1: no epoch 2


def test_train_resume_without_its_resume_state_says_so(
    two_runs: dict[str, Path], tmp_path: Path, capsys: Capsys
) -> None:
    """resume.pt deleted: --resume trained from epoch 1 again without a word, over the finished
    run (now refused while the run shows finished epochs, and a note when it shows none); resume.pt
    a folder: "resume.pt.tmp: Is a directory" at the first save (now one line naming it)."""
    import json
    import shutil

    run = Path(shutil.copytree(two_runs["ab"], tmp_path / "run"))
    state = run / "checkpoints" / "resume.pt"
    source = json.loads((run / "config.json").read_text())["source"]
    argv = ["train", "--source", source, "--out", run, "--epochs", 1, "--resume", "--device", "cpu"]
    argv += ["--no-progress", "--threads", 1]
    state.unlink()
    state.mkdir()
    assert "is not a file" in assert_error(run_cli(argv, capsys), state)
    state.rmdir()
    model = (run / "model.pt").read_bytes()
    line = assert_error(run_cli(argv, capsys), state)
    assert "missing, but the run has finished 1 epoch (metrics.csv); restore it" in line, line
    assert (run / "model.pt").read_bytes() == model  # nothing trained over it
    for finished in (run / "metrics.csv", run / "model.pt", run / "checkpoints" / "epoch_0001.pt"):
        finished.unlink()  # a run that stopped in its first epoch: nothing to lose
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    assert f"cryoshift: note: {state} is missing" in err and "training from epoch 1" in err


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


def test_train_target_stack_of_another_voxel_size_gives_advice_train_can_follow(tmp_path: Path) -> None:
    """A 20 A stack as a 10 A training's target (alone, or in a folder) was refused or skipped with
    "rescale the data or pass --ignore-voxel-size", an option of classify that train does not have."""
    from cryoshift.runtime.errors import InputError
    from cryoshift.runtime.mrc import write_stack
    from cryoshift.training.data import load_target

    coarse = write_stack(tmp_path / "coarse.mrcs", volumes(3), voxel_size=2 * VOXEL)
    with pytest.raises(InputError) as exc:
        load_target(str(coarse), BOX, VOXEL, "dark", ["a", "b"])
    line = str(exc.value)
    assert line.startswith(f"{coarse}: voxel size 20 A differs") and "--ignore-voxel-size" not in line
    assert "rescale the target to the training voxel size" in line
    folder = tmp_path / "target"
    folder.mkdir()
    write_stack(folder / "coarse.mrcs", volumes(3), voxel_size=2 * VOXEL)
    write_volume(folder / "good.mrc", volumes(1)[0], voxel_size=VOXEL)
    dom = load_target(str(folder), BOX, VOXEL, "dark", ["a", "b"])
    assert len(dom) == 1 and len(dom.skipped) == 1, dom.skipped
    assert "voxel size 20 A" in dom.skipped[0] and "--ignore-voxel-size" not in dom.skipped[0]


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


def test_train_on_a_dataset_with_a_named_class_of_no_volumes_is_refused(
    tmp_path: Path, capsys: Capsys
) -> None:
    """Three class names, labels of two (what `simulate --n 2` of three structures writes): a
    three-class model trained without a word, one output never shown an example."""
    pytest.importorskip("torch")
    from cryoshift.runtime.dataset import write_dataset

    src = write_dataset(
        tmp_path / "src", volumes(6, seed=1), labels=[0, 1] * 3, class_names=["a", "b", "c"], voxel_size=VOXEL
    )
    argv = ["--epochs", 1, "--backbone", "cryonet-small", "--method", "source-only", "--no-progress"]
    line = assert_error(run_cli(["train", "--source", src, "--out", tmp_path / "run", *argv], capsys), src)
    assert "class c has no volumes among the 6 labelled (1 of 3 named classes)" in line
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
