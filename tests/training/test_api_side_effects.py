"""``train()`` from Python (a notebook, a script) leaves the process as it found it.

It switched matplotlib to Agg and rewrote ``rcParams`` (a notebook's inline figures stopped
showing), reseeded the global ``random``/numpy/torch generators (the caller's next draws were the
same whatever it had seeded), left torch on ``threads`` and, with ``progress=False``, still printed
its epoch lines to a stdout that is not a terminal (Jupyter's)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from cryoshift.runtime.errors import InputError
from cryoshift.training.plots import DPI
from cryoshift.training.trainer import TrainConfig, TrainResult, train


def _config(domains: dict[str, Path], out: Path, **changes: Any) -> TrainConfig:
    settings: dict[str, Any] = {
        "source": str(domains["source"]),
        "target": str(domains["target_unlabelled"]),
        "out": str(out),
        "method": "dann",
        "backbone": "cryonet-small",
        "epochs": 1,
        "batch_size": 8,
        "threads": 1,
        "progress": False,
        "device": "cpu",
        "amp": False,
        "val_fraction": 0.25,
    }
    return TrainConfig(**{**settings, **changes})


def _rng_states() -> tuple[Any, Any, torch.Tensor]:
    return random.getstate(), np.random.get_state(), torch.get_rng_state()


def _same_rng_states(a: tuple[Any, Any, torch.Tensor], b: tuple[Any, Any, torch.Tensor]) -> bool:
    (py_a, np_a, torch_a), (py_b, np_b, torch_b) = a, b
    numpy_same = np.array_equal(np_a[1], np_b[1]) and (np_a[0], *np_a[2:]) == (np_b[0], *np_b[2:])
    return py_a == py_b and numpy_same and torch.equal(torch_a, torch_b)


def test_train_leaves_matplotlib_backend_and_rcparams_alone(domains: dict[str, Path], tmp_path: Path) -> None:
    before_backend = matplotlib.get_backend()
    matplotlib.use("svg")  # stands in for a notebook's inline backend
    try:
        before = dict(matplotlib.rcParams)
        result = train(_config(domains, tmp_path / "run"))
        assert matplotlib.get_backend() == "svg"
        changed = {k: (before[k], v) for k, v in matplotlib.rcParams.items() if before.get(k) != v}
        assert changed == {}
    finally:
        matplotlib.use(before_backend)
    plots = sorted(p.name for p in (result.run_dir / "plots").glob("*.png"))
    assert "losses.png" in plots and "embedding.png" in plots, plots
    for name in plots:  # still drawn in the house style (150 dpi), only no longer for the process
        with Image.open(result.run_dir / "plots" / name) as image:
            assert image.format == "PNG"
            assert tuple(round(d) for d in image.info["dpi"]) == (DPI, DPI), name


def test_train_gives_back_the_callers_random_generators(domains: dict[str, Path], tmp_path: Path) -> None:
    results: list[TrainResult] = []
    for caller_seed in (1, 2):
        random.seed(caller_seed)
        np.random.seed(caller_seed)
        torch.manual_seed(caller_seed)
        before = _rng_states()
        results.append(train(_config(domains, tmp_path / f"run{caller_seed}")))
        assert _same_rng_states(before, _rng_states()), caller_seed
    # the run's own draws still come from its seed alone, whatever the caller had seeded
    assert results[0].state_digest == results[1].state_digest


def test_train_gives_back_torch_threads_and_generators_on_an_error(
    domains: dict[str, Path], tmp_path: Path
) -> None:
    torch.set_num_threads(2)
    torch.manual_seed(5)
    np.random.seed(5)
    before = _rng_states()
    result = train(_config(domains, tmp_path / "run", threads=1))
    assert result.model_path is not None
    assert torch.get_num_threads() == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError):  # refused while reading the data, after the threads were set
        train(_config(domains, tmp_path / "refused", threads=1, target=str(empty)))
    assert torch.get_num_threads() == 2
    assert _same_rng_states(before, _rng_states())


def test_progress_false_prints_no_progress_lines(
    domains: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """capsys's stdout is no terminal, as Jupyter's is not."""
    train(_config(domains, tmp_path / "quiet"))
    out = capsys.readouterr().out
    assert "epoch 1/1" not in out and "items read" not in out, out
    train(_config(domains, tmp_path / "lines"), log_lines=True)  # what the CLI asks for a SLURM log
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines if line.startswith("epoch ")] == ["1/1"]
    assert any(line.startswith("cryoshift: target: ") for line in lines), lines
