"""What ``cryoshift simulate`` (and train's on-the-fly simulation) still took without a word: a
batch larger than the memory (256 volumes at --box 512 are 128 GiB before the simulator's working
buffers: the OOM killer, after the stack was made), errors of a --config file that named "simulation
config" instead of the file, an --n below the number of classes (a dataset train refuses later) and
a positive --defocus, which is overfocus here but underfocus in CTFFIND and RELION.

The memory checks are tested with the available memory made small (``hostmem.available_memory``),
at a tiny box; the estimate they rest on is measured against the simulator's real peak."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hostile_inputs import BOX, Capsys, assert_error, run_cli

TWO = "builtin:rubisco,builtin:p97"
THREE = "builtin:rubisco,builtin:p97,builtin:globular"


def _simulate(out: Path, capsys: Capsys, *extra: object, structures: str = TWO) -> tuple[int | str, str, str]:
    """A one-thread run at --box BOX into ``out`` (give --n; options given later win)."""
    argv = ["simulate", out, "--box", BOX, "--no-progress", "--threads", 1, "--structures", structures]
    return run_cli([*argv, *extra], capsys)


def _memory(monkeypatch: pytest.MonkeyPatch, available: int) -> None:
    """Make ``available`` bytes of host memory what the checks read."""
    from cryoshift.runtime import hostmem

    monkeypatch.setattr(hostmem, "available_memory", lambda: available)


def _need(n: int, box: int = BOX, config: object = None) -> int:
    """The host memory a one-thread batch of ``n`` volumes of the paper preset needs, as estimated."""
    from cryoshift.training.simulate import PRESETS
    from cryoshift.training.simulate.memory import batch_memory

    return batch_memory(n, box, 2, config or PRESETS["paper"], "cpu", threads=1).host


def _notes(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("cryoshift: note:")]


# ---------------------------------------------------------------------------------------------
# 1. a batch larger than the memory


def test_an_explicit_batch_size_that_cannot_fit_is_refused_before_the_work(
    tmp_path: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--batch-size 256 was simulated whatever the box: a batch beyond the memory died in the OOM
    killer. Refused in one line, before the structures are even made, saying what it needs and
    the largest --batch-size that fits."""
    pytest.importorskip("torch")
    import cryoshift.training.simulate as simulate

    def no_structures(*args: object, **kwargs: object) -> None:
        raise AssertionError("the structures were made before the memory check")

    _memory(monkeypatch, _need(64))
    out = tmp_path / "sim"
    with monkeypatch.context() as patch:
        patch.setattr(simulate, "load_structures", no_structures)
        line = assert_error(_simulate(out, capsys, "--n", 300, "--batch-size", 256), "--batch-size 256")
    assert line.startswith(f"cryoshift: error: --batch-size 256 at --box {BOX} needs "), line
    assert f"of host memory (256 volumes of {BOX}^3 float32 and the simulator's working buffers)" in line
    assert line.endswith("is available; use --batch-size 64 or less"), line
    assert not (out / "volumes.mrc").exists()
    # the batch it suggests does fit
    code, _, err = _simulate(out, capsys, "--n", 300, "--batch-size", 64)
    assert code == 0 and not _notes(err), err
    assert len(pd.read_csv(out / "particles.csv")) == 300


def test_the_default_batch_size_is_lowered_to_fit_with_a_note(
    tmp_path: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --batch-size the default 256 is lowered to what fits, with one note; the dataset
    is the one an explicit --batch-size of that size writes (the note tells the batch used)."""
    pytest.importorskip("torch")
    from cryoshift.runtime.hostmem import format_bytes

    _memory(monkeypatch, _need(64))
    code, _, err = _simulate(tmp_path / "auto", capsys, "--n", 150)
    assert code == 0, err
    need = format_bytes(_need(150))
    available = format_bytes(_need(64))
    assert _notes(err) == [
        "cryoshift: note: --batch-size lowered from 256 to 64 to fit the memory available "
        f"(150 volumes at --box {BOX} need {need} of host memory, {available} is available)"
    ], err
    code, _, err = _simulate(tmp_path / "given", capsys, "--n", 150, "--batch-size", 64)
    assert code == 0, err
    auto = (tmp_path / "auto" / "volumes.mrc").read_bytes()
    assert (tmp_path / "given" / "volumes.mrc").read_bytes() == auto
    # with the memory to spare, the default stays and says nothing; the batch size sets the memory
    # used, not the data: the same seed gives the same file byte for byte (it did not)
    _memory(monkeypatch, _need(150))
    code, _, err = _simulate(tmp_path / "roomy", capsys, "--n", 150)
    assert code == 0 and not _notes(err), err
    assert (tmp_path / "roomy" / "volumes.mrc").read_bytes() == auto


@pytest.mark.parametrize("given", [[], ["--batch-size", 1]])
def test_a_box_of_which_one_volume_cannot_fit_is_refused(
    given: list[object], tmp_path: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When even one volume does not fit, no batch size helps: the refusal says to lower --box."""
    pytest.importorskip("torch")
    _memory(monkeypatch, _need(1) - 1)
    line = assert_error(_simulate(tmp_path / "sim", capsys, "--n", 4, *given), f"--box {BOX}")
    assert line.startswith(f"cryoshift: error: one volume at --box {BOX} needs "), line
    assert line.endswith("is available; lower --box"), line
    # structural variability keeps a bank of variants of every class: said, with its way out
    config = tmp_path / "vary.json"
    config.write_text(json.dumps({"flex_voxels": [0, 1]}))
    line = assert_error(_simulate(tmp_path / "sim", capsys, "--n", 4, "--config", config), "--box")
    assert "with the structural variability's variants of every class" in line, line
    assert line.endswith("lower --box (or simulate without structural variability)"), line


_PEAK = """
import json, sys
import numpy as np
import torch
torch.set_num_threads(1)
from cryoshift.training.simulate import PRESETS, Simulator, Structures
from cryoshift.training.simulate.memory import batch_memory

n = 12

def structures(box):
    z, y, x = np.indices((box,) * 3) - box // 2
    maps = np.stack([np.exp(-(x**2 + y**2 + z**2) / 30.0), np.exp(-(2 * x**2 + y**2 + (z - 2) ** 2) / 40.0)])
    return Structures(["a", "b"], maps.astype(np.float32), 10.0)

def status(key):
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(key))

for preset, extra, box in json.loads(sys.argv[1]):
    config = PRESETS[preset].replace(**extra)
    sim = Simulator(structures(box), config, seed=0)
    sim.sample(2)  # first-call imports and caches (scipy.fft's) are no batch's
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak (VmHWM) starts again from the current RSS
    base = status("VmRSS")
    volumes = sim.sample(n)[0]
    used = status("VmHWM") - base
    del sim, volumes
    print(json.dumps([preset, extra, box, used, batch_memory(n, box, 2, config, "cpu", threads=1).host]))
"""


def test_the_memory_estimate_bounds_the_simulators_real_peak(tmp_path: Path) -> None:
    """The checks rest on an estimate of the simulator's working buffers: it must not be below the
    real peak (the OOM killer again), nor so far above it that batches that fit are refused.
    Measured as the peak RSS of a fresh process (fixed malloc thresholds: freed memory goes back),
    after a first small batch (imports and caches). At --box 64 a thread renders 4 volumes at once,
    not the whole batch (Simulator.cpu_chunk): the estimate that counts 4 holds."""
    pytest.importorskip("torch")
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("the peak RSS cannot be reset here (Linux /proc only)")
    cases = [
        ["paper", {}, 40],
        ["realistic", {"crowding": 1.0}, 40],  # neighbours in every box
        ["tilt", {"crowding": 0.5}, 40],
        ["paper", {"flex_voxels": [0, 1], "magnification": [0.95, 1.05]}, 40],  # a bank of variants
        ["paper", {}, 64],  # chunks of 4 volumes
    ]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MALLOC_MMAP_THRESHOLD_": "65536",
        "MALLOC_TRIM_THRESHOLD_": "0",
    }
    done = subprocess.run(
        [sys.executable, "-c", _PEAK, json.dumps(cases)], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    for line in done.stdout.splitlines():
        preset, extra, box, used, estimate = json.loads(line)
        assert used <= estimate <= 2.5 * used, (preset, extra, box, used >> 20, estimate >> 20)


def test_train_s_simulated_source_draws_in_batches_that_fit_and_refuses_what_cannot(
    capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """train draws an epoch (--sim-per-epoch 6144) in one batch of the simulator: on a GPU all of
    it rendered at once (~50 GiB of working buffers at --box 64), and at large boxes the host ran
    out too. The draw is split into batches that fit, with one note; an epoch whose volumes alone
    cannot fit is refused in one line naming the options."""
    torch = pytest.importorskip("torch")
    from cryoshift.runtime.errors import InputError
    from cryoshift.training.data import SimulatedSource

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        source = SimulatedSource(TWO, BOX, 10.0, "paper", seed=0)
        n, volume = 120, BOX**3 * 4
        # the epoch's volumes and a batch of 20 beside them; not the whole in one batch
        _memory(monkeypatch, n * volume + _need(20))
        assert _need(n) > n * volume + _need(20)
        capsys.readouterr()
        drawn = [source.draw(n) for _ in range(2)]
        notes = _notes(capsys.readouterr().err)
        assert notes == [
            f"cryoshift: note: simulating {n} volumes at --box {BOX} in batches of 20 to fit the memory "
            f"available (at once they need {_format(_need(n))} of host memory, "
            f"{_format(n * volume + _need(20))} is available)"
        ], notes  # once per source, not every epoch
        for domain in drawn:
            assert domain.volumes.shape == (n, BOX, BOX, BOX) and domain.volumes.dtype == np.float32
            assert set(domain.labels.tolist()) == {0, 1}
            assert np.isfinite(domain.volumes).all() and (domain.volumes.reshape(n, -1).std(1) > 0).all()
        assert not np.array_equal(drawn[0].volumes, drawn[1].volumes)  # fresh volumes every epoch
        source.particle_grid = 4  # dense supervision: every batch fills its share of the particles
        particles = source.draw(n).particles
        assert particles.shape == (n, 4, 4, 4) and np.isfinite(particles).all()
        assert np.allclose(particles.reshape(n, -1).std(1), 1.0, atol=1e-3)

        _memory(monkeypatch, n * volume - 1)
        with pytest.raises(InputError) as caught:
            source.draw(n)
        assert str(caught.value) == (
            f"simulating {n} volumes at --box {BOX} needs {_format(n * volume)} of host memory "
            f"({n} volumes of {BOX}^3 float32), but {_format(n * volume - 1)} is available; "
            "lower --sim-per-epoch (or --sim-val) or --box"
        )
    finally:
        torch.set_num_threads(before)


def _format(nbytes: int) -> str:
    from cryoshift.runtime.hostmem import format_bytes

    return format_bytes(nbytes)


# ---------------------------------------------------------------------------------------------
# 2. errors of a --config file name the file


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"fidelity": "warp"}, "fidelity must be one of ('fast', 'tilt'), got 'warp'"),
        ({"flex_voxels": [0, 50]}, "flex_voxels (a --config field) 50 is outside the accepted range"),
        ({"snr": [2, 1]}, "snr: lo 2.0 is larger than hi 1.0"),
        ({"tilt_max": [10, 20], "tilt_step": [15, 15]}, "--tilt-step (tilt_step) 15 is larger than the"),
        ({"shift_voxels": 50}, "a shift of 50 voxels can move particles out of the"),
    ],
)
def test_errors_of_a_config_file_name_the_file(
    fields: dict[str, object], reason: str, tmp_path: Path, capsys: Capsys
) -> None:
    """SimulationConfig.validate named "simulation config": with several configs about (a preset,
    the file, the options) the user was left to guess which one. The file's path comes first."""
    pytest.importorskip("torch")
    config = tmp_path / "my sim.json"
    config.write_text(json.dumps(fields))
    line = assert_error(_simulate(tmp_path / "sim", capsys, "--n", 4, "--config", config), config)
    assert line.startswith(f"cryoshift: error: {config}: {reason}"), line
    assert "simulation config" not in line, line


def test_a_config_read_in_python_names_its_file_too(tmp_path: Path) -> None:
    from cryoshift.runtime.errors import InputError
    from cryoshift.training.simulate import PRESETS, SimulationConfig

    config = tmp_path / "sim.json"
    config.write_text(json.dumps({"cs_mm": [-2, 2]}))
    for base in (None, PRESETS["broad"]):
        with pytest.raises(InputError) as caught:
            SimulationConfig.from_json(config, base=base)
        assert caught.value.path == str(config), caught.value
    with pytest.raises(InputError) as caught:  # a config from no file keeps its old name
        SimulationConfig(cs_mm=(-2.0, 2.0))
    assert caught.value.path == "simulation config"


@pytest.mark.parametrize(
    ("options", "line"),
    [
        (["--snr", "2", "1"], "--snr: lo 2.0 is larger than hi 1.0"),
        (["--fidelity", "warp"], "--fidelity must be one of ('fast', 'tilt'), got 'warp'"),
        (["--contrast", "grey"], "--contrast must be one of ('dark', 'light'), got 'grey'"),
        (["--dose-order", "random"], "--dose-order must be one of ("),
        (["--crowding", "nan"], "--crowding must be a finite number, got nan"),
        (["--cs", "-1", "2"], "--cs (cs_mm) -1 is outside the accepted range 0 to 10 mm"),
        (["--tilt-max", "10", "20", "--tilt-step", "15", "15"], "--tilt-step (tilt_step) 15 is larger than"),
    ],
)
def test_errors_of_an_option_name_the_option(
    options: list[str], line: str, tmp_path: Path, capsys: Capsys
) -> None:
    """A bad value given on the command line was reported as "simulation config: snr: lo 2.0 ...":
    neither a file nor the option the user typed. The option comes first now, with no path."""
    pytest.importorskip("torch")
    out = tmp_path / "sim"
    got = assert_error(_simulate(out, capsys, "--n", 4, *options), options[0])
    assert got.startswith(f"cryoshift: error: {line}"), got
    assert "simulation config" not in got, got
    assert not out.exists()


def test_an_option_and_a_config_file_are_each_named_for_their_own_values(
    tmp_path: Path, capsys: Capsys
) -> None:
    """With --config and options together, an error names where its value came from: the option
    for a value it set (even over a file that holds a good one), the file for the file's values
    (an option beside them changes nothing), the file too where a file's value and an option's
    clash. Good values of both are simulated, the option's over the file's."""
    pytest.importorskip("torch")
    config = tmp_path / "sim.json"
    config.write_text(json.dumps({"snr": [0.1, 1], "tilt_max": [10, 20]}))
    got = assert_error(
        _simulate(tmp_path / "a", capsys, "--n", 4, "--config", config, "--snr", 2, 1), "--snr"
    )
    assert got == "cryoshift: error: --snr: lo 2.0 is larger than hi 1.0", got
    got = assert_error(
        _simulate(tmp_path / "b", capsys, "--n", 4, "--config", config, "--tilt-step", 15, 15), config
    )
    assert got.startswith(f"cryoshift: error: {config}: --tilt-step (tilt_step) 15 is larger than"), got
    config.write_text(json.dumps({"snr": [2, 1]}))
    got = assert_error(_simulate(tmp_path / "c", capsys, "--n", 4, "--config", config, "--cs", 1, 2), config)
    assert got == f"cryoshift: error: {config}: snr: lo 2.0 is larger than hi 1.0", got
    config.write_text(json.dumps({"snr": [0.1, 0.2], "cs_mm": [2, 2]}))
    code, _, err = _simulate(tmp_path / "d", capsys, "--n", 4, "--config", config, "--snr", 0.5, 2)
    assert code == 0, err
    drawn = pd.read_csv(tmp_path / "d" / "particles.csv")
    assert drawn["snr"].between(0.5, 2).all() and (drawn["cs_mm"] == 2).all()


def test_the_check_of_simulated_volumes_names_the_config_file_or_no_file() -> None:
    """The check of the simulated volumes named "simulation config" whatever set the ranges: now
    the --config file they came from, or no file when options set every range it names (the
    reason names the options); a config from Python keeps its old name."""
    from cryoshift.runtime.errors import InputError
    from cryoshift.training.simulate.config import Origin
    from cryoshift.training.simulate.dataset import SIGNAL_PARAMETERS, check_volumes

    volumes = np.zeros((2, BOX, BOX, BOX), np.float32)  # blank: no signal left
    rows = [{"class_name": "rubisco", "bfactor": 4000.0, "snr": 0.5}] * 2
    signal = {name: (1.0, 1.0) for name, _ in SIGNAL_PARAMETERS}
    for origin, path in [
        (Origin.of({"bfactor": (4000.0, 4000.0)}, "sim.json"), "sim.json"),
        (Origin.of({"bfactor": (4000.0, 4000.0)}), None),
        (Origin.of(signal, "sim.json"), None),
        (None, "simulation config"),
    ]:
        with pytest.raises(InputError, match=r"simulated volume 3 \(class rubisco\) is blank") as caught:
            check_volumes(volumes, rows, 3, origin)
        assert caught.value.path == path, (origin, caught.value)
        assert "bring --bfactor, --dose" in caught.value.reason


# ---------------------------------------------------------------------------------------------
# 3. fewer volumes than classes, and a class the draw left empty


def test_n_below_the_number_of_classes_is_refused(tmp_path: Path, capsys: Capsys) -> None:
    """--n 2 of three structures wrote a dataset with a class of no volume, which train refuses
    ("class globular has no volumes") only later. Classes are drawn at random, so some class
    surely gets none: refused up front. --n equal to the classes is taken."""
    pytest.importorskip("torch")
    out = tmp_path / "sim"
    line = assert_error(_simulate(out, capsys, "--n", 2, structures=THREE), "--n 2")
    assert line == (
        "cryoshift: error: --n 2 is fewer than the 3 classes (rubisco, p97, globular): some class "
        "would get no volume, and train refuses such a dataset; use --n 3 or more (hundreds per class "
        "to train)"
    ), line
    assert not (out / "volumes.mrc").exists()
    code, _, err = _simulate(out, capsys, "--n", 3, structures=THREE)
    assert code == 0, err


def test_a_draw_that_leaves_a_class_empty_is_warned_about(tmp_path: Path, capsys: Capsys) -> None:
    """--n at or above the number of classes can still leave one empty by chance (each volume's
    class is drawn at random): one warning then, and only then; train does refuse that dataset."""
    pytest.importorskip("torch")
    from cryoshift.runtime.errors import InputError
    from cryoshift.training.data import load_source_dataset

    seen = set()
    for seed in range(8):
        out = tmp_path / f"seed{seed}"
        code, _, err = _simulate(out, capsys, "--n", 3, "--seed", seed, structures=THREE)
        assert code == 0, err
        drawn = set(pd.read_csv(out / "particles.csv")["class_name"])
        empty = [name for name in ("rubisco", "p97", "globular") if name not in drawn]
        warnings = [line for line in err.splitlines() if line.startswith("cryoshift: warning:")]
        seen.add(bool(empty))
        if not empty:
            assert warnings == [], err
            load_source_dataset(out)
            continue
        assert warnings == [
            f"cryoshift: warning: {out}: class {', '.join(empty)} got none of the 3 volumes (each "
            "volume's class is drawn at random); train refuses a dataset with an empty class: "
            "simulate more volumes (--n) or draw again (--seed)"
        ], err
        with pytest.raises(InputError, match="has no volumes"):
            load_source_dataset(out)
    assert seen == {True, False}  # both cases came up among the seeds


# ---------------------------------------------------------------------------------------------
# 4. a positive defocus


@pytest.mark.parametrize(
    ("options", "note"),
    [
        (["--defocus", "1", "3"], "--defocus 1 3 reaches 3 um, overfocus: "),
        (["--defocus", "-2", "0.5"], "--defocus -2 0.5 reaches 0.5 um, overfocus: "),
    ],
)
def test_a_positive_defocus_is_simulated_with_a_note(
    options: list[str], note: str, tmp_path: Path, capsys: Capsys
) -> None:
    """Positive defocus is overfocus in cryoshift but underfocus in CTFFIND and RELION: a range
    copied from them was simulated as overfocus without a word. Legal, so a note, not an error."""
    pytest.importorskip("torch")
    out = tmp_path / "sim"
    code, _, err = _simulate(out, capsys, "--n", 4, *options)
    assert code == 0, err
    lo, hi = float(options[1]), float(options[2])
    fix = f"give --defocus {-hi:g} {-lo:g}" if lo >= 0 else "keep both ends at or below 0"
    assert _notes(err) == [
        f"cryoshift: note: {note}here negative defocus is underfocus (CTFFIND and RELION write "
        f"underfocus as positive); for underfocus {fix}"
    ], err
    assert pd.read_csv(out / "particles.csv")["defocus_um"].between(lo, hi).all()  # as asked


def test_a_config_s_positive_defocus_is_noted_naming_the_file(tmp_path: Path, capsys: Capsys) -> None:
    pytest.importorskip("torch")
    config = tmp_path / "sim.json"
    config.write_text(json.dumps({"defocus_um": [0.5, 2]}))
    code, _, err = _simulate(tmp_path / "sim", capsys, "--n", 4, "--config", config)
    assert code == 0, err
    notes = _notes(err)
    assert len(notes) == 1 and notes[0].startswith(
        f"cryoshift: note: {config}: defocus_um [0.5, 2] reaches 2 um, overfocus"
    ), err
    assert notes[0].endswith("for underfocus give --defocus -2 -0.5"), notes
    # underfocus (the presets', or a negative range) and a config without CTF say nothing
    for extra in (["--defocus", "-3", "-1"], []):
        code, _, err = _simulate(tmp_path / f"quiet{len(extra)}", capsys, "--n", 4, *extra)
        assert code == 0 and not _notes(err), err
    config.write_text(json.dumps({"defocus_um": [0.5, 2], "ctf": False}))
    code, _, err = _simulate(tmp_path / "no_ctf", capsys, "--n", 4, "--config", config)
    assert code == 0 and not _notes(err), err
