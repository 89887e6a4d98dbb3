"""Values simulate used to take silently wrong: --config fields of the wrong JSON type, a stack of
2-D images read as a 3-D density map, and mmCIF errors that cited "string:46:0" for the file.

Each case makes its small file here and checks the one-line refusal (or the value kept).
"""

from __future__ import annotations

import json
from pathlib import Path

import mrcfile
import numpy as np
import pytest
from hostile_inputs import BOX, VOXEL, Capsys, assert_error, raw_mrc, run_cli

from cryoshift.runtime.errors import InputError
from cryoshift.runtime.info import describe, validate
from cryoshift.runtime.mrc import image_stack_size, read_header, read_volume
from cryoshift.training.simulate import PRESETS, SimulationConfig

TWO = "builtin:ribosome,builtin:p97"


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c1.json"
    path.write_text(text)
    return path


# 1. every --config field is checked against its declared type --------------------------------------


@pytest.mark.parametrize(
    "text, reason",
    [
        ('{"ctf": "no"}', "ctf must be true or false (a boolean: not text, not a number), got 'no'"),
        ('{"dose_weighting": "false"}', "dose_weighting must be true or false"),
        ('{"ctf": 0}', "ctf must be true or false"),
        ('{"neighbours": [1.7, 2.9]}', "neighbours must hold whole numbers (a count), got (1.7, 2.9)"),
        ('{"snr": [true, true]}', "snr must hold numbers (true/false and text are not numbers)"),
        ('{"tilt_max": ["40", 60]}', "tilt_max must hold numbers"),
        ('{"crowding": true}', "crowding must be a finite number, got True"),
        ('{"snr": [0.1, 1], "snr": [5, 5]}', "'snr' is given twice in the JSON; keep one"),
    ],
)
def test_a_config_value_of_the_wrong_type_is_refused_naming_file_and_field(
    tmp_path: Path, text: str, reason: str
) -> None:
    """ "no" and "false" were truthy strings (the CTF applied, "ctf": "no" recorded), 1.7
    neighbours became 1, [true, true] an SNR of 1, and a repeated key kept its last value."""
    path = _config(tmp_path, text)
    with pytest.raises(InputError) as caught:
        SimulationConfig.from_json(path, base=PRESETS["paper"])
    assert caught.value.path == str(path)
    assert caught.value.reason.startswith(reason), caught.value.reason


def test_the_simulate_command_refuses_a_text_switch_in_one_line(tmp_path: Path, capsys: Capsys) -> None:
    config = _config(tmp_path, '{"ctf": "no"}')
    argv = ["simulate", tmp_path / "A", "-s", TWO, "--n", 10, "--box", BOX, "--no-progress", "--threads", 1]
    line = assert_error(run_cli([*argv, "--config", config], capsys), config)
    reason = "ctf must be true or false (a boolean: not text, not a number), got 'no'"
    assert line == f"cryoshift: error: {config}: {reason}", line
    assert not (tmp_path / "A").exists()


def test_well_typed_values_are_kept_and_normalised(tmp_path: Path) -> None:
    path = _config(tmp_path, '{"ctf": false, "dose_weighting": true, "neighbours": [1.0, 2], "snr": null}')
    cfg = SimulationConfig.from_json(path, base=PRESETS["paper"])
    assert cfg.ctf is False and cfg.dose_weighting is True and cfg.snr is None
    assert cfg.neighbours == (1, 2) and all(type(v) is int for v in cfg.neighbours)  # a whole 1.0 is a count
    cfg = SimulationConfig(tilt_max=(np.float32(60), 70), crowding=np.float64(0.5))  # numpy numbers too
    assert cfg.tilt_max == (60.0, 70.0) and all(type(v) is float for v in cfg.tilt_max)
    assert SimulationConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


# 2. a stack of 2-D images is no 3-D map ------------------------------------------------------------


def _image_stack(path: Path, n: int = 50) -> Path:
    """A RELION-style particle stack as mrcfile writes one (space group 0, mz 1, nz images), each
    image a bright disc: read as a 3-D map it is a plausible cylinder-shaped "particle"."""
    y, x = np.mgrid[:BOX, :BOX] - (BOX - 1) / 2
    disc = np.exp(-(x**2 + y**2) / 4.0)
    noise = np.random.default_rng(0).normal(0, 0.01, size=(n, BOX, BOX))
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data((disc + noise).astype(np.float32))
        mrc.set_image_stack()
        mrc.voxel_size = VOXEL
    return path


def test_an_image_stack_is_known_by_its_header_and_refused_as_a_volume(tmp_path: Path) -> None:
    for name in ("particles.mrcs", "particles.mrc"):
        stack = _image_stack(tmp_path / name)
        assert read_header(stack)["images"] == 50
        with pytest.raises(
            InputError, match=r"is a stack of 50 2-D images \(MRC space group 0, mz = 1\), not a 3-D map"
        ):
            read_volume(stack)
        rows = dict(describe(stack).rows)
        assert rows["type"] == "stack of 50 2-D images (not usable as a map or volume)", rows
        assert validate(stack) == ["is a stack of 50 2-D images (MRC space group 0, mz = 1), not a volume"]


def test_volumes_with_other_headers_stay_volumes(tmp_path: Path) -> None:
    """Only space group 0 with mz = 1 over several sections is unambiguous: mrcfile's volumes
    (ispg 1, mz = nz), IMOD-style ones (ispg 0, mz = nz) and a single image are as before."""
    data = np.random.default_rng(1).normal(size=(BOX, BOX, BOX)).astype(np.float32)
    plain = tmp_path / "plain.mrcs"
    with mrcfile.new(plain) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = VOXEL
    imod = raw_mrc(tmp_path / "imod.mrc", ispg=0, data=data.tobytes())  # mz = nz
    for path in (plain, imod):
        assert read_header(path)["images"] == 0
        assert read_volume(path).shape == (BOX, BOX, BOX)
        assert validate(path) == []
    assert image_stack_size(0, 1, 1) == 0  # one image: a 2-D image, refused as such already
    assert image_stack_size(1, 1, 50) == 0  # space group 1 says volume: left to the other checks


def test_simulate_refuses_an_image_stack_as_a_structure(tmp_path: Path, capsys: Capsys) -> None:
    stack = _image_stack(tmp_path / "particles.mrcs")
    argv = ["simulate", tmp_path / "A", "-s", f"{stack},builtin:p97", "--n", 4, "--box", BOX]
    line = assert_error(run_cli([*argv, "--no-progress", "--threads", 1], capsys), stack)
    assert line.endswith("is a stack of 50 2-D images (MRC space group 0, mz = 1), not a 3-D map"), line


def test_a_ccp4_map_is_read_as_the_mrc_file_it_is(tmp_path: Path) -> None:
    """CCP4 maps (.ccp4, as the PDBe and CCP-EM serve them) are MRC files: one was refused as an
    unknown structure type."""
    from cryoshift.training.simulate.structures import _expand

    data = np.random.default_rng(2).normal(size=(BOX, BOX, BOX)).astype(np.float32)
    path = tmp_path / "emd_0001.ccp4"
    with mrcfile.new(path) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = VOXEL
    assert _expand(str(path)) == [str(path)]
    assert read_volume(path).shape == (BOX, BOX, BOX) and validate(path) == []


# 3. mmCIF errors name the file and the line --------------------------------------------------------


def test_an_mmcif_syntax_error_names_the_file_and_line(tmp_path: Path, capsys: Capsys) -> None:
    pytest.importorskip("gemmi")
    bad = tmp_path / "model.cif"
    bad.write_text('data_x\nloop_\n_atom_site.id\n_atom_site.type_symbol\n1 C\n2 "N\n')
    line = assert_error(run_cli(["info", bad], capsys), bad)
    assert (
        line == f'cryoshift: error: {bad}: cannot read atomic model as mmCIF: line 6: unterminated "string"'
    )
    bad.write_text("data_x\n_a.b 1\n_a.b 2\n")
    line = assert_error(run_cli(["info", bad], capsys), bad)
    assert line.endswith("mmCIF: line 3, block data_x: duplicate tag _a.b"), line
