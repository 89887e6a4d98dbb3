"""``export --int8`` refuses calibration data whose path holds a line break or other control
character, in one line naming the option and the path, before any work. The path is stored in the
int8 model's metadata (``extra.int8_calibration``), and the runtime's reader refuses such a text:
the export went through and wrote a model that info and classify then refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hostile_inputs import BOX, VOXEL, Capsys, assert_error, run_cli, volumes

from cryoshift.export.int8 import check_calibration_path, export_int8_onnx, prepare_int8
from cryoshift.export.job import ExportJob
from cryoshift.runtime.errors import InputError
from cryoshift.runtime.metadata import ModelMetadata
from cryoshift.runtime.mrc import write_stack

ODD = ["cal\nibration", "cal\ribration", "cal\tibration", "cal\x1bibration", "cal\u2028ibration"]


def _metadata() -> ModelMetadata:
    return ModelMetadata(class_names=["a", "b"], box_size=BOX, voxel_size=VOXEL)


@pytest.mark.parametrize("name", ODD)
def test_a_calibration_path_with_a_control_character_is_refused_in_one_line(name: str) -> None:
    """The line names the option and the path, escaped: the refusal stays one line."""
    with pytest.raises(InputError) as info:
        check_calibration_path(f"/data/{name}.mrcs")
    line = str(info.value)
    assert line.startswith(f"--calibration {f'/data/{name}.mrcs'!r}: the path holds a line break"), line
    assert line.isprintable() and len(line.splitlines()) == 1, line
    check_calibration_path("/data/Ångström cal.mrcs")  # other text, spaces and letters, is fine


def test_export_cli_refuses_it_before_writing_anything(tmp_path: Path, capsys: Capsys) -> None:
    """A real stack under the odd name: it was read, the int8 model written with the name inside."""
    from cryoshift.training.backbones import create_backbone
    from cryoshift.training.checkpoint import save_checkpoint

    net = create_backbone("cryonet-small", num_classes=2, box_size=BOX)
    ckpt = save_checkpoint(
        tmp_path / "ckpt.pt", net, "cryonet-small", {"num_classes": 2, "box_size": BOX}, _metadata()
    )
    parity = write_stack(tmp_path / "parity.mrcs", volumes(4), voxel_size=VOXEL)
    odd = write_stack(tmp_path / "cal\nibration.mrcs", volumes(12), voxel_size=VOXEL)
    out = tmp_path / "deploy"
    argv = [
        "export",
        ckpt,
        "-o",
        out,
        "--no-progress",
        "--int8",
        "--calibration",
        odd,
        "--parity-data",
        parity,
    ]
    line = assert_error(run_cli(argv, capsys), repr(str(odd)))
    assert line.startswith("cryoshift: error: --calibration "), line
    assert not out.exists()


def test_a_config_named_calibration_path_is_refused_naming_int8(tmp_path: Path) -> None:
    """Without --calibration the run's target is calibrated on: its path is held to the same rule."""
    odd = write_stack(tmp_path / "tar\nget.mrcs", volumes(12), voxel_size=VOXEL)
    job = ExportJob(
        tmp_path / "ckpt.pt",
        {"target": str(odd)},
        _metadata(),
        tmp_path / "deploy",
        None,
        volumes(4),
        "",
        lambda _msg: None,
    )
    with pytest.raises(InputError, match=r"^--int8 calibration data .* \(named by the run's config\)"):
        prepare_int8(job)
    assert job.calibration_volumes is None


def test_the_int8_writer_refuses_it_too(tmp_path: Path) -> None:
    """export_int8_onnx (the step that stores the path) refuses it before quantising, for callers
    that do not go through prepare_int8."""
    cal = np.zeros((8, BOX, BOX, BOX), np.float32)
    with pytest.raises(InputError, match="control character"):
        export_int8_onnx(
            tmp_path / "model.onnx",
            tmp_path / "model.int8.onnx",
            _metadata(),
            cal,
            cal,
            np.zeros((8, 2), np.float32),
            calibration_source="cal\nibration",
        )
    assert not (tmp_path / "model.int8.onnx").exists()
