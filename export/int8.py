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
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx

from cryoshift.export.formats import artefact_name
from cryoshift.export.fp16 import preprocessing_nodes
from cryoshift.export.job import ExportJob
from cryoshift.export.parity import ParityError, as_model_input, check_onnx_parity
from cryoshift.export.result import ExportResult, ExportWarning
from cryoshift.runtime.contract import INPUT_NAME
from cryoshift.runtime.errors import InputError
from cryoshift.runtime.metadata import ModelMetadata
from cryoshift.runtime.outfiles import replacing_path

QUANTISED_OPS = ["Conv", "ConvTranspose", "MatMul", "Gemm"]
CALIBRATION_VOLUMES = 128
MIN_CALIBRATION_VOLUMES = 8  # fewer give activation ranges of no use
# The int8 parity check runs on parity volumes that are not calibration volumes (one data set
# often serves both: the run's target by default). Fewer than this many held out say little, so
# then the check runs on every parity volume, in-sample, and export.json and a warning say so.
MIN_HELD_OUT_PARITY = 8
IN_SAMPLE = "in-sample"
HELD_OUT = "held out"


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
    split_note: str = "",
) -> ExportResult:
    """Write the Q/DQ int8 ONNX and check its agreement with PyTorch on ORT CPU (on
    ``parity_volumes``: :func:`build_int8` gives those held out from ``calibration``, and
    ``split_note`` says how they relate)."""
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
    notes = [note, split_note] if split_note else [note]
    seconds = time.perf_counter() - start
    return ExportResult("int8", out_path, out_path.stat().st_size, report, seconds, notes)


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
    # Enough for the calibration set even when every parity volume is among them (the same data)
    pool = read_volumes(
        given, job.metadata.box_size, CALIBRATION_VOLUMES + len(job.volumes), tomograms=tomograms
    )
    if len(pool) < MIN_CALIBRATION_VOLUMES:  # said here, before any work, naming the data
        raise InputError(
            given,
            f"{len(pool)} subtomograms; int8 calibration needs at least {MIN_CALIBRATION_VOLUMES}",
        )
    job.calibration_volumes = calibration_apart_from(pool, job.volumes)
    job.calibration_source = str(given)


def calibration_apart_from(pool: np.ndarray, parity: np.ndarray, seed: int = 0) -> np.ndarray:
    """Up to :data:`CALIBRATION_VOLUMES` calibration volumes from ``pool`` that are not ``parity``
    volumes, so the int8 parity check is measured on volumes calibration never saw.

    Why: calibration and parity volumes were two draws from the same data with the same seed
    (the run's target by default): 46 of 64 parity volumes were calibration volumes. When too few
    other volumes are left (small data), parity volumes are moved over until calibration has half
    the data (at least :data:`MIN_CALIBRATION_VOLUMES`); if that leaves fewer than
    :data:`MIN_HELD_OUT_PARITY` parity volumes out, the whole pool calibrates and the parity check
    is in-sample (:func:`int8_parity_split` says so)."""
    from cryoshift.export.data import volume_digests

    in_parity = set(volume_digests(parity))
    shared = np.array([d in in_parity for d in volume_digests(pool)], dtype=bool)
    apart = np.flatnonzero(~shared)
    if len(apart) >= MIN_CALIBRATION_VOLUMES:
        if len(apart) > CALIBRATION_VOLUMES:
            apart = np.sort(np.random.default_rng(seed).choice(apart, CALIBRATION_VOLUMES, replace=False))
        return pool[apart]
    wanted = max(MIN_CALIBRATION_VOLUMES, min(CALIBRATION_VOLUMES, len(pool) // 2))
    moved = np.flatnonzero(shared)[: wanted - len(apart)]
    if int(shared.sum()) - len(moved) < MIN_HELD_OUT_PARITY:  # nothing useful left to hold out
        return pool[:CALIBRATION_VOLUMES]
    return pool[np.sort(np.concatenate([apart, moved]))]


def int8_parity_split(job: ExportJob) -> tuple[np.ndarray, str, int]:
    """(indices of ``job.volumes`` the int8 parity check runs on, :data:`HELD_OUT` or
    :data:`IN_SAMPLE`, how many of those volumes are also calibration volumes): the parity volumes
    that are not calibration volumes when at least :data:`MIN_HELD_OUT_PARITY` are (or all of
    them are), else every parity volume, in-sample."""
    from cryoshift.export.data import volume_digests

    if job.calibration_volumes is None:
        raise RuntimeError("the int8 parity split needs the calibration volumes (prepare_int8)")
    calibrated = set(volume_digests(job.calibration_volumes))
    shared = np.array([d in calibrated for d in volume_digests(job.volumes)], dtype=bool)
    held = np.flatnonzero(~shared)
    if len(held) >= MIN_HELD_OUT_PARITY or len(held) == len(job.volumes):
        return held, HELD_OUT, 0
    return np.arange(len(job.volumes)), IN_SAMPLE, int(shared.sum())


def int8_record(job: ExportJob) -> dict[str, object]:
    """What export.json records of the int8 calibration and its parity check: the two counts, and
    whether the parity volumes were held out from calibration or were partly calibration volumes."""
    index, kind, overlap = int8_parity_split(job)
    return {
        "calibration_data": job.calibration_source,
        "calibration_volumes": len(job.calibration_volumes),
        "parity_data": job.source,
        "parity_volumes": len(index),
        "parity": kind,
        "parity_volumes_also_calibrated": overlap,
    }


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
    index, kind, overlap = int8_parity_split(job)
    if kind == IN_SAMPLE:
        split = (
            f"{IN_SAMPLE}: {overlap} of the {len(index)} parity volumes are also calibration volumes "
            "(too few volumes to hold any out)"
        )
        warnings.warn(f"int8 parity check is {split}", ExportWarning, stacklevel=2)
    else:
        split = f"parity on {len(index)} volumes {HELD_OUT} from calibration"
    result = export_int8_onnx(
        onnx_path,
        job.out_dir / artefact_name("int8"),
        job.metadata,
        job.calibration_volumes,
        job.volumes[index],
        reference[index],
        f"{job.source} ({split})",
        job.calibration_source,
        split,
    )
    job.onnx_variants.append((result.path, "int8"))
    return [result]
