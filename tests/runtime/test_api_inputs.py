"""The Python API's inputs, as a script or notebook passes them.

- ``classify(model, "folder", out)``: one path given alone is one input (its characters were each
  taken for an input, '/' included, so the root folder was scanned); a ``Path`` too, and
  ``tomograms``; something that is not a path is a TypeError naming the argument.
- ``Model.predict`` on an array of another shape names the shape passed and the one expected
  (the model's own shape was reported as the batch's; a wrong box ran silently on this graph).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tiny_onnx import BOX, VOXEL, make_volumes

from cryoshift.runtime import InputError, classify, load_model, read_predictions
from cryoshift.runtime.mrc import write_volume

N = 6


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A folder of N single-volume MRC files."""
    root = tmp_path / "particles"
    root.mkdir()
    for i, volume in enumerate(make_volumes(N, BOX, seed=3)):
        write_volume(root / f"p_{i:02d}.mrc", volume, voxel_size=VOXEL)
    return root


@pytest.mark.parametrize("as_type", [str, Path])
def test_one_folder_given_alone_is_one_input(
    model_path: Path, folder: Path, tmp_path: Path, as_type: type
) -> None:
    out = tmp_path / "out"
    summary = classify(model_path, as_type(folder), out, backend="cpu", progress=False, workers=1)
    rows = read_predictions(out / "predictions.csv")
    assert len(rows) == N, summary.lines()
    assert sorted(Path(p).name for p in rows["id"]) == [f"p_{i:02d}.mrc" for i in range(N)]


def test_a_list_of_paths_and_a_generator_still_work(model_path: Path, folder: Path, tmp_path: Path) -> None:
    files = sorted(folder.glob("*.mrc"))
    classify(model_path, files[:2], tmp_path / "a", backend="cpu", progress=False, workers=1)
    assert len(read_predictions(tmp_path / "a" / "predictions.csv")) == 2
    classify(model_path, folder.glob("*.mrc"), tmp_path / "b", backend="cpu", progress=False, workers=1)
    assert len(read_predictions(tmp_path / "b" / "predictions.csv")) == N


@pytest.mark.parametrize("bad", [3, None, {"a": 1}])
def test_inputs_that_are_not_paths_are_refused(model_path: Path, tmp_path: Path, bad: object) -> None:
    with pytest.raises(TypeError, match="inputs must be a path or a list of paths"):
        classify(model_path, bad, tmp_path / "out", backend="cpu", progress=False)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="inputs must be a path or a list of paths; 3 is a int"):
        classify(model_path, ["x.mrc", 3], tmp_path / "out", backend="cpu", progress=False)  # type: ignore[list-item]


def test_predict_names_the_shape_passed(model_path: Path) -> None:
    model = load_model(model_path, "cpu")
    expected = f"the model takes Nx1x{BOX}x{BOX}x{BOX}"
    for shape, shown in [
        ((2, 1, 20, 20, 20), "2x1x20x20x20"),  # another box: this graph (global pooling) ran it
        ((2, BOX, BOX, BOX), f"2x{BOX}x{BOX}x{BOX}"),  # no channel axis
        ((2, 2, BOX, BOX, BOX), f"2x2x{BOX}x{BOX}x{BOX}"),
    ]:
        with pytest.raises(InputError) as caught:
            model.predict(np.zeros(shape, np.float32))
        reason = caught.value.reason
        assert f"a batch of shape {shown}" in reason and expected in reason, reason
    logits, _ = model.predict(make_volumes(3, BOX, seed=1)[:, None])  # the right shape still runs
    assert logits.shape == (3, 3)
