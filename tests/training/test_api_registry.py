"""The Python API's registries and TrainConfig, as a notebook or script uses them.

- Re-running the cell that registers a method or backbone replaces the entry (the class is a new
  object each run, of the same qualified name); another object under a taken name is still
  refused unless ``replace=True``.
- A wrongly typed TrainConfig field is one InputError naming the field, its value and the type
  expected, before any data is read; a ``pathlib.Path`` and numpy integers are taken.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cryoshift.runtime.errors import InputError
from cryoshift.training.adapt import METHODS, create_method
from cryoshift.training.registry import Registry
from cryoshift.training.trainer import TrainConfig, train

# The notebook cell of the README's plugin example, cut down: a method registered from __main__
CELL = textwrap.dedent(
    """
    from cryoshift.training.adapt import METHODS, AdaptationMethod

    @METHODS.register("api-test-cell")
    class CellMethod(AdaptationMethod):
        version = VERSION
    """
)


def _run_cell(source: str, version: int, module: str = "__main__") -> dict[str, Any]:
    """Run ``source`` as a notebook cell does: a fresh run of the code in module ``module``."""
    namespace: dict[str, Any] = {"__name__": module, "VERSION": version}
    exec(compile(source, "<cell>", "exec"), namespace)
    return namespace


@pytest.fixture
def cell_name() -> Iterator[str]:
    yield "api-test-cell"
    METHODS._entries.pop("api-test-cell", None)  # the session's registry as it was


def test_rerunning_a_cell_replaces_its_method(cell_name: str) -> None:
    first = _run_cell(CELL, 1)["CellMethod"]
    second = _run_cell(CELL, 2)["CellMethod"]  # raised "method 'api-test-cell' is already registered"
    assert first is not second
    assert METHODS.get(cell_name) is second
    built = create_method(cell_name, backbone=_tiny_backbone(), num_classes=3, box_size=16)
    assert type(built) is second and built.version == 2


def test_another_definition_under_a_taken_name_is_refused(cell_name: str) -> None:
    first = _run_cell(CELL, 1)["CellMethod"]
    with pytest.raises(ValueError, match=r"already registered by __main__\.CellMethod.*replace=True"):
        _run_cell(CELL, 2, module="another_module")  # same class name, another module
    with pytest.raises(ValueError, match="already registered"):
        _run_cell(CELL.replace("class CellMethod", "class OtherMethod"), 3)  # another name, same module
    assert METHODS.get(cell_name) is first


def test_replace_true_swaps_any_entry() -> None:
    registry: Registry[object] = Registry("backbone")

    def net_a() -> str:
        return "a"

    def net_b() -> str:
        return "b"

    registry.register("net")(net_a)
    registry.register("net")(net_a)  # the same object again: no error, unchanged
    assert registry.create("net") == "a"
    with pytest.raises(ValueError, match="backbone 'net' is already registered"):
        registry.register("net")(net_b)
    registry.register("net", replace=True)(net_b)
    assert registry.create("net") == "b"
    assert registry.names() == ["net"]


def _tiny_backbone() -> Any:
    from cryoshift.training.backbones import create_backbone

    return create_backbone("cryonet-small", num_classes=3, box_size=16)


# ---------------------------------------------------------------------------------------------
# TrainConfig field types


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("epochs", "2", "expected int or None"),
        ("lr", "1e-3", "expected float"),
        ("amp", "no", "expected bool"),
        ("tomograms", "tomo.mrc", "expected a list of str"),
        ("method_kwargs", None, "expected a dict with str keys"),
    ],
)
def test_a_wrongly_typed_field_is_one_input_error(
    tmp_path: Path, domains: dict[str, Path], field: str, value: object, expected: str
) -> None:
    settings: dict[str, Any] = {
        "source": str(domains["source"]),
        "out": str(tmp_path / "run"),
        "method": "source-only",
        "backbone": "cryonet-small",
        "epochs": 1,
        "batch_size": 8,
        "progress": False,
        "device": "cpu",
        "amp": False,
    }
    config = TrainConfig(**{**settings, field: value})
    with pytest.raises(InputError) as caught:  # was a raw TypeError (epochs: '<' between str and int)
        train(config)
    reason = caught.value.reason
    assert f"TrainConfig {field}={value!r} has the wrong type" in reason, reason
    assert expected in reason, reason
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_paths_and_numpy_numbers_train(tmp_path: Path, domains: dict[str, Path]) -> None:
    """``pathlib.Path`` data paths (was an AttributeError splitting the source) and numpy integers
    (what a notebook's arithmetic gives) are what they stand for: the run trains and records str."""
    config = TrainConfig(
        source=domains["source"],  # type: ignore[arg-type]
        out=tmp_path / "run",  # type: ignore[arg-type]
        target=domains["target_unlabelled"],  # type: ignore[arg-type]
        method="source-only",
        backbone="cryonet-small",
        epochs=np.int64(1),  # type: ignore[arg-type]
        batch_size=8,
        test_views=1,
        progress=False,
        device="cpu",
        amp=False,
        threads=1,
    )
    assert config.source == str(domains["source"]) and config.out == str(tmp_path / "run")
    assert type(config.epochs) is int
    result = train(config)
    assert result.model_path is not None and result.model_path.is_file()
    assert TrainConfig.from_dict(
        __import__("json").loads((tmp_path / "run" / "config.json").read_text())
    ).source == str(domains["source"])
