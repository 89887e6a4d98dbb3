"""The Python API's inputs, as a script or notebook passes them.

- ``classify(model, "folder", out)``: one path given alone is one input (its characters were each
  taken for an input, '/' included, so the root folder was scanned); a ``Path`` too, and
  ``tomograms``; something that is not a path is a TypeError naming the argument.
- ``Model.predict`` on an array of another shape names the shape passed and the one expected
  (the model's own shape was reported as the batch's; a wrong box ran silently on this graph).
- ``Model.predict`` on a float64 or integer batch gives the float32 batch's logits (a deliberate
  cast); a bool or complex batch is refused (it was cast to 0/1 volumes, or lost its imaginary
  part); an empty batch gives (0, K) and (0, F) arrays; volumes holding NaN/Inf or absurd values
  are refused naming their rows (they came back as NaN logits, which argmax reads as class 0).
- ``classify(devices=...)`` and ``--devices`` share one parser: ``1`` was a bare TypeError,
  ``"0,1"`` three devices '0', ',' and '1', ``"cpu"`` devices 'c', 'p', 'u'; now an int, a list
  of ints and "0,1" are accepted and anything else is one line naming the argument.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tiny_onnx import BOX, VOXEL, make_volumes

from cryoshift.runtime import InputError, classify, load_model, read_predictions
from cryoshift.runtime.devices import DeviceInference, parse_devices
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


def test_predict_casts_float64_and_integer_batches(model_path: Path) -> None:
    model = load_model(model_path, "cpu")
    volumes = make_volumes(4, BOX, seed=1)[:, None]
    logits, features = model.predict(volumes)
    got, got_features = model.predict(volumes.astype(np.float64))
    assert got.dtype == got_features.dtype == np.float32
    np.testing.assert_array_equal(got, logits)
    np.testing.assert_array_equal(got_features, features)
    counts = np.round(volumes * 1000).astype(np.int16)  # an integer MRC mode
    np.testing.assert_array_equal(model.predict(counts)[0], model.predict(counts.astype(np.float32))[0])


@pytest.mark.parametrize("dtype", [bool, np.complex64])
def test_predict_refuses_a_batch_that_is_not_real_numbers(model_path: Path, dtype: type) -> None:
    model = load_model(model_path, "cpu")
    with pytest.raises(InputError, match=f"a batch of type {np.dtype(dtype)}; the model takes real numbers"):
        model.predict(make_volumes(2, BOX, seed=1)[:, None].astype(dtype))


@pytest.mark.parametrize("slots", [None, 1])  # the CPU session, and the fixed-batch IO binding path
def test_predict_on_an_empty_batch_gives_empty_arrays(model_path: Path, slots: int | None) -> None:
    model = load_model(model_path, "cpu", batch_size=4, slots=slots)
    logits, features = model.predict(np.zeros((0, 1, BOX, BOX, BOX), np.float64))
    assert logits.shape == (0, 3) and features.shape == (0, 8)
    assert logits.dtype == features.dtype == np.float32


@pytest.mark.parametrize("slots", [None, 1])
def test_predict_refuses_volumes_that_are_not_finite_naming_their_rows(
    model_path: Path, slots: int | None
) -> None:
    model = load_model(model_path, "cpu", batch_size=4, slots=slots)
    volumes = make_volumes(4, BOX, seed=1)[:, None]
    partly = volumes.copy()
    partly[1, 0, 3, 3, 3] = np.nan
    partly[3, 0, 0, 0, 0] = -np.inf
    with pytest.raises(InputError) as caught:
        model.predict(partly)
    assert "4 volumes with NaN or infinite values in rows 1, 3:" in caught.value.reason, caught.value.reason
    with pytest.raises(InputError, match="NaN or infinite values in rows 0, 1, 2, 3:"):
        model.predict(np.full_like(volumes, np.nan))
    huge = volumes.astype(np.float64)
    huge[2] *= 1e300  # beyond float32: the cast made it inf
    with pytest.raises(InputError, match=r"values beyond \+-1e\+15 in row 2:"):
        model.predict(huge)
    # only the rows asked for count: a pipeline buffer's stale rows past n are not the caller's
    logits, _ = model.predict(partly, 1)
    assert logits.shape == (1, 3) and np.isfinite(logits).all()


def test_predict_with_fp16_transfer_refuses_values_float16_cannot_hold(model_path: Path) -> None:
    model = load_model(model_path, "cpu", transfer="fp16")
    volumes = make_volumes(2, BOX, seed=1)[:, None]
    model.predict(volumes)  # in range: runs
    volumes[1] *= 1e6
    with pytest.raises(InputError, match=r"values beyond \+-65504 \(float16 input\) in row 1:"):
        model.predict(volumes)


@pytest.mark.parametrize(
    ("given", "wanted"),
    [
        (None, None),
        ("", None),
        ([], None),
        (0, [0]),
        (np.int64(2), [2]),
        ([0, 1], [0, 1]),
        ((1,), [1]),
        (range(3), [0, 1, 2]),
        (np.arange(2), [0, 1]),
        ("0,1", [0, 1]),
        (" 0 , 1 ,", [0, 1]),
        ("3", [3]),
    ],
)
def test_devices_forms_a_user_passes_are_accepted(given: object, wanted: list[int] | None) -> None:
    assert parse_devices(given) == wanted  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ("cpu", "devices 'cpu': give a GPU number (0), a list of them ([0, 1]) or a comma-separated"),
        ("0;1", "devices '0;1': give a GPU number (0)"),
        (1.0, "devices 1.0 is a float: give a GPU number (0)"),
        (True, "devices True is a bool: give"),
        ({"gpu": 0}, "is a dict: give"),
        ([0, 1.5], "devices: 1.5 is a float, not a GPU number"),
        (["0", "1"], "devices: '0' is a str, not a GPU number"),
        ([0, 0], "devices 0,0 lists a GPU twice"),
        ("0,-1", "devices 0,-1: GPU numbers start at 0, not -1"),
    ],
)
def test_devices_other_values_are_refused_in_one_line(given: object, said: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_devices(given)  # type: ignore[arg-type]
    line = str(caught.value)
    assert said in line and "\n" not in line, line
    assert "the CPU is chosen by the backend" in line or given != "cpu"


def test_devices_messages_name_the_cli_option_there() -> None:
    with pytest.raises(InputError, match=r"^--devices '0,x': give"):
        parse_devices("0,x", "--devices")


def test_device_workers_get_the_parsed_devices(model_path: Path) -> None:
    # a string was iterated: devices '0', ',' and '1', one worker each (CUDA_VISIBLE_DEVICES=',')
    assert DeviceInference(model_path, "0,1", backend="cpu").devices == [0, 1]  # type: ignore[arg-type]
    with pytest.raises(InputError, match="devices 'cpu'"):
        DeviceInference(model_path, "cpu", backend="cpu")  # type: ignore[arg-type]


@pytest.mark.parametrize("devices", [1, "1", [1]])
def test_classify_takes_one_gpu_number_in_any_form(
    model_path: Path, folder: Path, tmp_path: Path, devices: object
) -> None:
    """``classify(devices=1)`` was a bare TypeError (``len()`` of an int); on the CPU backend every
    form runs and says the GPU was not used."""
    summary = classify(model_path, folder, tmp_path / "out", backend="cpu", devices=devices, progress=False)
    assert len(read_predictions(tmp_path / "out" / "predictions.csv")) == N
    assert any("--devices 1: ran on the CPU" in line for line in summary.lines()), summary.lines()
