"""``binning`` / ``coordinate_pixel_size`` are checked on every path, not in the CLI alone.

The CLI refused --binning inf (every pick scaled to (0, 0, 0)) and --coordinate-pixel-size 0 (read
as "not given": picks cropped unscaled), but the Python API, ``classify_ray`` and merge's re-read
shard settings reached the planner unchecked, and "not both" held only on the command line.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from hostile_inputs import Capsys, assert_error, run_cli

from cryoshift.runtime import classify
from cryoshift.runtime.errors import InputError

BINNING_LINE = (
    "--binning must be a number from 1 to 64 (how many times finer the picks' pixels are than the "
    "reconstruction's voxels), not {}"
)
PIXEL_LINE = (
    "--coordinate-pixel-size must be a pixel size in A from 0.01 to 10000 (A per pixel of the picks' "
    "coordinates), not {}"
)
BOTH_LINE = "give --binning or --coordinate-pixel-size, not both"

REFUSED = [  # (binning, coordinate_pixel_size, the one line)
    (math.inf, None, BINNING_LINE.format("inf")),
    (math.nan, None, BINNING_LINE.format("nan")),
    (0.0, None, BINNING_LINE.format("0")),
    (65.0, None, BINNING_LINE.format("65")),
    (None, 0.0, PIXEL_LINE.format("0")),
    (None, -4.0, PIXEL_LINE.format("-4")),
    (None, math.inf, PIXEL_LINE.format("inf")),
    (2.0, 5.0, BOTH_LINE),
]


def _picks(inputs: dict[str, object]) -> tuple[list[str], list[str]]:
    return [str(inputs["picks"])], [str(inputs["tomos"])]


@pytest.mark.parametrize(("binning", "pixel", "line"), REFUSED)
def test_the_api_refuses_a_scale_no_picks_have_before_any_work(
    model_path: Path, inputs: dict[str, object], tmp_path: Path, binning, pixel, line: str
) -> None:
    """classify(binning=inf) put every pick at (0, 0, 0) and 0 cropped them unscaled, exit 0: now
    the CLI's own line, before the output folder is made."""
    picks, tomos = _picks(inputs)
    out = tmp_path / "out"
    with pytest.raises(InputError) as caught:
        classify(
            model_path,
            picks,
            out,
            tomograms=tomos,
            backend="cpu",
            progress=False,
            binning=binning,
            coordinate_pixel_size=pixel,
        )
    assert caught.value.path is None and caught.value.reason == line
    assert not out.exists()


def test_the_api_refuses_a_scale_that_is_no_number(model_path: Path, tmp_path: Path) -> None:
    """A binning of True (or text) is no binning: refused as such, not read as 1 (or a TypeError)."""
    for value, shown in ((True, "True"), ("2", "'2'")):
        with pytest.raises(InputError) as caught:
            classify(model_path, [], tmp_path / "out", backend="cpu", binning=value)
        assert caught.value.reason == BINNING_LINE.format(shown)


def test_ray_refuses_a_scale_no_picks_have_before_ray_starts(
    model_path: Path, inputs: dict[str, object], tmp_path: Path
) -> None:
    from cryoshift.runtime.distributed import classify_ray

    picks, tomos = _picks(inputs)
    with pytest.raises(InputError) as caught:
        classify_ray(model_path, picks, tmp_path / "out", tomograms=tomos, binning=math.inf)
    assert caught.value.reason == BINNING_LINE.format("inf")
    with pytest.raises(InputError) as caught:
        classify_ray(model_path, picks, tmp_path / "out", binning=2.0, coordinate_pixel_size=5.0)
    assert caught.value.reason == BOTH_LINE
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("options", "line"),
    [
        (["--binning", "inf"], BINNING_LINE.format("inf")),
        (["--coordinate-pixel-size", "0"], PIXEL_LINE.format("0")),
        (["--binning", "2", "--coordinate-pixel-size", "5"], BOTH_LINE),
    ],
)
def test_the_cli_line_is_unchanged(
    model_path: Path, inputs: dict[str, object], tmp_path: Path, capsys: Capsys, options, line: str
) -> None:
    picks, tomos = _picks(inputs)
    argv = ["classify", model_path, *picks, "-t", *tomos, "-o", tmp_path / "out", "-b", "cpu", *options]
    assert assert_error(run_cli(argv, capsys), "") == f"cryoshift: error: {line}"


@pytest.fixture(scope="module")
def shards(model_path: Path, inputs: dict[str, object], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two shards of the runtime ``inputs``' picks, classified once for the merge tests."""
    picks, tomos = _picks(inputs)
    root = tmp_path_factory.mktemp("scale_shards")
    for i in range(2):
        classify(
            model_path,
            picks,
            root / "shards",
            tomograms=tomos,
            backend="cpu",
            progress=False,
            shard=f"{i}/2",
        )
    return root / "shards"


@pytest.mark.parametrize(
    ("setting", "value", "line"),
    [
        ("binning", math.inf, BINNING_LINE.format("inf")),
        ("coordinate_pixel_size", 0, PIXEL_LINE.format("0")),
        ("binning", "2", BINNING_LINE.format("'2'")),
    ],
)
def test_merge_refuses_shard_settings_no_run_accepts_naming_the_manifest(
    shards: Path, tmp_path: Path, capsys: Capsys, setting: str, value: object, line: str
) -> None:
    """merge plans the shards' inputs again with their manifests' settings: a binning of inf (an
    edited or foreign manifest) re-planned every pick at (0, 0, 0) and merged with exit 0."""
    folder = shutil.copytree(shards, tmp_path / "shards")
    for i in range(2):
        manifest = folder / f"manifest.shard-{i}-of-2.json"
        record = json.loads(manifest.read_text())
        record["settings"][setting] = value
        manifest.write_text(json.dumps(record))
    first = folder / "manifest.shard-0-of-2.json"
    got = assert_error(run_cli(["merge", folder, "-o", tmp_path / "merged"], capsys), first)
    assert got == f"cryoshift: error: {first}: not a readable shard manifest (its settings: {line})"
