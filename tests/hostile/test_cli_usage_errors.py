"""Usage errors and needless chatter of the real command line (a user walkthrough):

1. A bad option value, an unknown option or command, a missing argument printed typer's usage
   and a framed panel (several lines, exit 2); now one ``cryoshift: error:`` line naming the
   option and where to read more, exit 2. ``--help`` and a bare command (which shows its help)
   are unchanged.
2. ``python -m cryoshift.training.backbones --box 12`` ended in a traceback.
3. Every CPU ``classify``, even with ``-q``, noted that onnxruntime has no TensorRT or CUDA
   provider, as if something were broken; with ``--backend auto`` and no GPU that is expected.
4. NaN/Inf subtomograms are reported by cryoshift alone, without numpy's RuntimeWarnings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hostile_inputs import BOX, VOXEL, Capsys, assert_error, errors_table, run_cli, volumes

from cryoshift.runtime import backends
from cryoshift.runtime.cli import main
from cryoshift.runtime.mrc import write_volume

# ---------------------------------------------------------------------------------------------
# 1. usage errors: one line


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["simulate", "OUT", "--n", "abc"],
            "--n abc: Input should be a valid integer, unable to parse string as an integer "
            "(see cryoshift simulate --help)",
        ),
        (["simulate", "OUT", "--n=abc"], "--n abc: Input should be a valid integer"),
        (
            ["classify", "m.onnx", "sub.mrc", "--unknown-threshold", "1.5"],
            "--unknown-threshold 1.5: Input should be less than or equal to 1 "
            "(see cryoshift classify --help)",
        ),
        (["classify", "m.onnx", "sub.mrc", "--batch-size", "0"], "--batch-size 0: Input should be greater"),
        (  # the value is in the reason already: not said twice
            ["classify", "m.onnx", "sub.mrc", "--backend", "gpu"],
            "--backend: 'gpu' is not one of 'auto', 'cpu', 'cuda', 'tensorrt', 'engine' "
            "(see cryoshift classify --help)",
        ),
        (["classify", "m.onnx", "sub.mrc", "-b", "gpu"], "-b: 'gpu' is not one of"),
        (["simulate", "OUT", "--snr", "1", "x"], "--snr: Input should be a valid number"),  # a pair: no value
        (["simulate", "OUT", "--bogus"], "No such option: --bogus"),
        (["simulate", "OUT", "--n"], "Option '--n' requires an argument (see cryoshift simulate --help)"),
        (["classify", "m.onnx"], "Missing argument 'inputs' (see cryoshift classify --help)"),
        (
            ["simulate", "OUT", "extra"],
            "Got unexpected extra argument(s) (extra) (see cryoshift simulate --help)",
        ),
        (["nosuch"], "No such command 'nosuch' (see cryoshift --help)"),
        (["simlate"], "No such command 'simlate'. Did you mean 'simulate'? (see cryoshift --help)"),
        (["--bogus"], "No such option: --bogus (see cryoshift --help)"),
    ],
)
def test_a_usage_error_is_one_line_and_exit_2(
    argv: list[str], line: str, tmp_path: Path, capsys: Capsys
) -> None:
    argv = [str(tmp_path / a) if a in ("OUT", "m.onnx", "sub.mrc") else a for a in argv]
    result = run_cli(argv, capsys)
    got = assert_error(result, line)
    assert "Usage:" not in result[2] and "╭" not in result[2] and result[1] == ""
    assert got.startswith("cryoshift: error: ") and line in got
    assert not (tmp_path / "OUT").exists()


def test_control_characters_in_a_bad_value_stay_on_one_line(tmp_path: Path, capsys: Capsys) -> None:
    line = assert_error(run_cli(["simulate", tmp_path, "--n", "1\n2\x1b[31m"], capsys), "--n")
    assert "\x1b" not in line


def test_help_and_a_bare_command_are_unchanged(capsys: Capsys) -> None:
    assert main(["--help"]) == 0
    out, err = capsys.readouterr()
    assert "Usage: cryoshift" in out and "classify" in out and err == ""
    assert main(["classify", "--help"]) == 0
    out, err = capsys.readouterr()
    assert "Usage: cryoshift classify" in out and "--unknown-threshold" in out and err == ""
    assert main(["classify"]) == 2  # no arguments: the help, exit 2 as before
    out, err = capsys.readouterr()
    assert "Usage: cryoshift classify" in out and err == ""
    assert main([]) == 2
    assert "Usage: cryoshift" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("cryoshift ")


def test_input_errors_and_typer_exit_codes_are_unchanged(tmp_path: Path, capsys: Capsys) -> None:
    assert_error(run_cli(["info", tmp_path / "missing.mrc"], capsys), "missing.mrc")  # InputError: 2
    bad = write_volume(tmp_path / "nan.mrc", np.full((BOX,) * 3, np.nan, np.float32), voxel_size=VOXEL)
    code, out, _ = run_cli(["info", "--validate", bad], capsys)  # typer.Exit(1)
    assert code == 1 and "NaN/Inf voxels" in out


# ---------------------------------------------------------------------------------------------
# 2. python -m cryoshift.training.backbones


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["--box", "12"], "cryoshift: error: --box 12: the backbones need a box of at least 16 voxels"),
        (["--box", "abc"], "cryoshift: error: --box: invalid int value: 'abc'"),
        (["--classes", "0"], "cryoshift: error: --classes 0: must be at least 1"),
        (["--seconds", "nan"], "cryoshift: error: --seconds nan: must be a finite number above 0"),
        (["--pattern", "nope*"], "cryoshift: error: --pattern 'nope*': matches no backbone (known: cb3d"),
        (["--bogus"], "cryoshift: error: unrecognized arguments: --bogus"),
    ],
)
def test_the_backbone_table_refuses_bad_options_in_one_line(
    argv: list[str], line: str, capsys: Capsys
) -> None:
    pytest.importorskip("torch")
    from cryoshift.training.backbones.__main__ import main as backbones_main

    with pytest.raises(SystemExit) as exit_info:
        backbones_main(argv)
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(line), err
    assert lines[0].endswith("(see python -m cryoshift.training.backbones --help)")


# ---------------------------------------------------------------------------------------------
# 3. no provider notes on a machine without a GPU


@pytest.fixture()
def subtomograms(tmp_path: Path) -> Path:
    folder = tmp_path / "subs"
    folder.mkdir()
    for i, v in enumerate(volumes(3)):
        write_volume(folder / f"v{i}.mrc", v, voxel_size=VOXEL)
    return folder


def test_auto_on_a_cpu_only_machine_says_nothing_about_gpu_providers(
    model: Path, subtomograms: Path, tmp_path: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backends, "gpu_name", lambda device_id=0: None)
    assert backends.load_model(model).notes == []
    code, out, err = run_cli(["classify", model, subtomograms, "-o", tmp_path / "q", "-q"], capsys)
    assert (code, out, err) == (0, "", "")
    code, out, err = run_cli(["classify", model, subtomograms, "-o", tmp_path / "v"], capsys)
    assert code == 0 and "passed over" not in err and "note:" not in out + err, out + err
    assert "cryoshift: backend cpu" in err  # the one line that says what auto chose (not under -q)


def test_a_gpu_without_its_provider_is_still_noted(
    model: Path, subtomograms: Path, tmp_path: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backends, "gpu_name", lambda device_id=0: "NVIDIA Test GPU")
    monkeypatch.setattr(backends, "available_backends", lambda: ["cpu"])
    notes = backends.load_model(model).notes
    assert notes == [
        "tensorrt: onnxruntime has no TensorrtExecutionProvider (install cryoshift[gpu])",
        "cuda: onnxruntime has no CUDAExecutionProvider (install cryoshift[gpu])",
    ]
    code, _, err = run_cli(["classify", model, subtomograms, "-o", tmp_path / "q", "-q"], capsys)
    assert code == 0 and "note: cuda: onnxruntime has no CUDAExecutionProvider" in err


def test_an_explicit_gpu_backend_on_a_cpu_only_install_still_says_why(
    model: Path, subtomograms: Path, tmp_path: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backends, "available_backends", lambda: ["cpu"])
    ort = backends._ort()
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    result = run_cli(["classify", model, subtomograms, "-o", tmp_path / "c", "-b", "cuda"], capsys)
    assert "CUDAExecutionProvider" in assert_error(result, model)


# ---------------------------------------------------------------------------------------------
# 4. NaN/Inf subtomograms: cryoshift's lines only


def test_nan_and_inf_subtomograms_print_no_numpy_warnings(
    model: Path, subtomograms: Path, tmp_path: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backends, "gpu_name", lambda device_id=0: None)
    base = volumes(1, seed=3)[0]
    bad = {"nan": base.copy(), "inf": base.copy(), "all_nan": np.full_like(base, np.nan)}
    bad["nan"][1, 2, 3] = np.nan
    bad["inf"][3, 2, 1], bad["inf"][0, 0, 0] = np.inf, -np.inf
    for name, data in bad.items():
        write_volume(subtomograms / f"{name}.mrc", data, voxel_size=VOXEL)
        half = data.astype(np.float16)
        write_volume(subtomograms / f"{name}_fp16.mrc", half, voxel_size=VOXEL)
    out = tmp_path / "out"
    code, _, err = run_cli(["classify", model, subtomograms, "-o", out, "-q"], capsys)
    assert code == 0 and err.splitlines() == [f"cryoshift: errors: {out / 'errors.csv'} (6 rows)"], err
    assert len(errors_table(out)) == 6
    for name in bad:
        code, _, err = run_cli(["info", subtomograms / f"{name}.mrc"], capsys)
        assert code == 0 and err == "", err
        code, _, err = run_cli(["info", "--validate", subtomograms / f"{name}_fp16.mrc"], capsys)
        assert code == 1 and err == "", err
