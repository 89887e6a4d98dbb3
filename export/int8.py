"""fp32 ONNX -> int8 ONNX with explicit Q/DQ nodes (what TensorRT 11 builds int8 engines from).

Quantisation is onnxruntime.quantization's static QDQ pass, calibrated on target subtomograms
(the data the model will classify, so activation ranges fit it). Symmetric int8 activations and
per-channel weights, the layout TensorRT expects. Only convolutions and matrix products are
quantised; the in-graph normalisation and the rest stay in fp32. ORT's CPU provider runs QDQ
graphs, so the artefact is checked here without a GPU. For 3-D CNNs with a 1-channel stem int8
often gains little over fp16: measure before preferring it.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx

from cryoshift.export.formats import artefact_name
from cryoshift.export.fp16 import preprocessing_nodes
from cryoshift.export.job import ExportJob
from cryoshift.export.parity import ParityError, as_model_input, check_onnx_parity
from cryoshift.export.result import ExportResult
from cryoshift.runtime.contract import INPUT_NAME
from cryoshift.runtime.errors import InputError
from cryoshift.runtime.metadata import ModelMetadata
from cryoshift.runtime.outfiles import replacing_path

QUANTISED_OPS = ["Conv", "ConvTranspose", "MatMul", "Gemm"]
CALIBRATION_VOLUMES = 128
MIN_CALIBRATION_VOLUMES = 8  # fewer give activation ranges of no use


def _reader(volumes: np.ndarray, batch: int = 8):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        """Feeds calibration subtomograms in small batches."""

        def __init__(self) -> None:
            x = as_model_input(volumes)
            self._batches = iter([{INPUT_NAME: x[i : i + batch]} for i in range(0, len(x), batch)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    return Reader()


def quantise(onnx_path: str | Path, out_path: str | Path, calibration: np.ndarray) -> None:
    """Static QDQ quantisation of ``onnx_path`` calibrated on ``calibration`` volumes."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="cryoshift-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # Shape inference + ORT graph cleanup first, as ORT's quantisation guide advises.
        quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
        graph = onnx.load(str(prepared))
        # fp32 normalisation in, fp32 logits out: the prefix and the output-producing head stay float.
        outputs = {o.name for o in graph.graph.output}
        exclude = preprocessing_nodes(graph) + [n.name for n in graph.graph.node if set(n.output) & outputs]
        quantize_static(
            str(prepared),
            str(out_path),
            _reader(calibration),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=QUANTISED_OPS,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=exclude,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
        )


def export_int8_onnx(
    onnx_path: str | Path,
    out_path: str | Path,
    metadata: ModelMetadata,
    calibration: np.ndarray,
    parity_volumes: np.ndarray,
    reference_logits: np.ndarray,
    parity_source: str = "",
    calibration_source: str = "",
) -> ExportResult:
    """Write the Q/DQ int8 ONNX and check its agreement with PyTorch on ORT CPU."""
    from cryoshift.export.onnx import set_metadata

    start = time.perf_counter()
    out_path = Path(out_path)
    check_calibration_path(calibration_source)
    if len(calibration) < MIN_CALIBRATION_VOLUMES:
        raise ValueError(
            f"int8 calibration needs at least {MIN_CALIBRATION_VOLUMES} subtomograms, got {len(calibration)}"
        )
    # a new temporary file put in place (runtime/outfiles.py): a link at the name is replaced, not followed
    with replacing_path(out_path) as tmp:
        quantise(onnx_path, tmp, calibration)
        model = onnx.load(str(tmp))
        extra = {
            **metadata.extra,
            "int8_calibration": calibration_source,
            "int8_calibration_n": len(calibration),
        }
        set_metadata(model, replace(metadata, precision="int8", extra=extra))
        onnx.checker.check_model(model, full_check=True)
        tmp.write_bytes(model.SerializeToString())
    report = check_onnx_parity(out_path, parity_volumes, reference_logits, "int8", parity_source)
    if not report.passed:
        out_path.unlink(missing_ok=True)
        raise ParityError(out_path, report)
    note = f"calibrated on {len(calibration)} volumes from {calibration_source or 'given data'}"
    seconds = time.perf_counter() - start
    return ExportResult("int8", out_path, out_path.stat().st_size, report, seconds, [note])


def prepare_int8(job: ExportJob) -> None:
    """Read the calibration volumes before any work, so a missing calibration set fails fast.

    ``job.calibration`` if given, else the first dataset the run's config names (target first); a
    picks target (STAR/CSV) is cropped from the run's ``tomograms``.
    """
    from cryoshift.export.data import config_data_paths, read_volumes

    given = job.calibration
    if given is None:
        paths = config_data_paths(job.config)
        if not paths:
            raise InputError(
                job.checkpoint,
                "--int8 needs --calibration DATA (target subtomograms); the run's config names no dataset",
            )
        given = paths[0]
    check_calibration_path(given, from_config=job.calibration is None)
    tomograms = list(job.config.get("tomograms") or [])
    check_calibration_fits(given, job.metadata, tomograms)
    volumes = read_volumes(given, job.metadata.box_size, CALIBRATION_VOLUMES, tomograms=tomograms)
    if len(volumes) < MIN_CALIBRATION_VOLUMES:  # said here, before any work, naming the data
        raise InputError(
            given,
            f"{len(volumes)} subtomograms; int8 calibration needs at least {MIN_CALIBRATION_VOLUMES}",
        )
    job.calibration_volumes = volumes
    job.calibration_source = str(given)


def check_calibration_path(path: str | Path, from_config: bool = False) -> None:
    """Refuse calibration data whose path holds a line break or other control character, in one
    line naming the option and the path (escaped, so the line stays one).

    Why: the path is stored in the int8 model's metadata (``extra.int8_calibration``), which the
    runtime's reader refuses with such a character (runtime/metadata.py): the export went through
    and wrote a model that ``cryoshift info`` and classify then refused. ``from_config``: the path
    is the run's config's dataset, not one given with ``--calibration``."""
    from cryoshift.runtime.contract import has_control_character

    text = str(path)
    if not has_control_character(text):
        return
    option = "--int8 calibration data" if from_config else "--calibration"
    named = " (named by the run's config)" if from_config else ""
    raise InputError(
        None,
        f"{option} {text!r}{named}: the path holds a line break or other control character, which "
        "the int8 model's metadata cannot record; give --calibration a path without one (rename or "
        "link the data)",
    )


def check_calibration_fits(
    path: str | Path, metadata: ModelMetadata, tomograms: list[str] | None = None
) -> None:
    """Refuse calibration data the model would not classify, as classify refuses it: another
    contrast, or a voxel size off by more than VOXEL_TOLERANCE. int8 ranges taken from such data
    fit other data than the model meets, and nothing downstream would say so. A picks table
    states no voxel size itself: each tomogram its picks are cropped from (``tomograms``) is
    checked, and the refusal names that tomogram file."""
    from cryoshift.export.data import voxel_and_contrast
    from cryoshift.runtime.labelled_picks import is_pick_table, pick_tomogram_voxels

    voxel, contrast, where = voxel_and_contrast(path)
    if contrast is not None and contrast != metadata.contrast:
        raise InputError(
            where,
            f"calibration data contrast is {contrast!r} but the model expects {metadata.contrast!r}; "
            "calibrate on the data the model will classify",
        )
    _check_calibration_voxel(voxel, where, metadata)
    if is_pick_table(path) and tomograms:  # without tomograms crop_picks says what is missing
        for tomogram, tomo_voxel in pick_tomogram_voxels(path, tomograms, metadata.box_size).items():
            _check_calibration_voxel(tomo_voxel, tomogram, metadata)


def _check_calibration_voxel(voxel: float | None, where: str | Path, metadata: ModelMetadata) -> None:
    """One voxel size of calibration data (None: not stated) against the model's."""
    from cryoshift.runtime.contract import VOXEL_TOLERANCE, voxel_mismatch

    mismatch = None if voxel is None else voxel_mismatch(voxel, metadata.voxel_size)
    if mismatch is not None and mismatch > VOXEL_TOLERANCE:
        raise InputError(
            where,
            f"calibration data voxel size {voxel:.3g} A differs from the model's {metadata.voxel_size:.3g} A "
            f"by {mismatch:.0%} (> {VOXEL_TOLERANCE:.0%}); calibrate on the data the model will classify",
        )


def build_int8(job: ExportJob) -> list[ExportResult]:
    """The formats table's ``int8`` builder: Q/DQ from the fp32 ONNX, calibrated by ``prepare_int8``."""
    onnx_path, reference = job.fp32()
    if job.calibration_volumes is None:
        prepare_int8(job)
    job.say("calibrating int8 Q/DQ ONNX")
    result = export_int8_onnx(
        onnx_path,
        job.out_dir / artefact_name("int8"),
        job.metadata,
        job.calibration_volumes,
        job.volumes,
        reference,
        job.source,
        job.calibration_source,
    )
    job.onnx_variants.append((result.path, "int8"))
    return [result]
