"""The export wing's two entry points.

``export_model``: an in-memory backbone -> one verified ONNX file (tests and the runtime use it to
make models). ``export_checkpoint``: a training run or checkpoint -> ONNX plus the requested
derived formats, each verified after writing, and ``export.json`` recording what was written,
from what, with which library versions.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import replace
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from cryoshift.export.data import find_volumes, random_volumes
from cryoshift.export.formats import FORMATS, artefact_name, select_formats
from cryoshift.export.job import ExportJob
from cryoshift.export.onnx import (
    ExportWrapper,
    check_export_inputs,
    check_opset,
    complete_metadata,
    export_onnx,
)
from cryoshift.export.parity import ParityError
from cryoshift.export.result import ExportResult, ExportWarning
from cryoshift.runtime.engine_sidecar import SIDECAR_SUFFIX, file_sha256
from cryoshift.runtime.errors import InputError, check_out_folder
from cryoshift.runtime.lock import EXPORT_LOCK, holding
from cryoshift.runtime.metadata import CALIBRATION_VIEWS, ModelMetadata, checked
from cryoshift.runtime.outfiles import TEMPORARY_PREFIX, TEMPORARY_SUFFIX, write_text

DEFAULT_BATCH_MAX = 256
PARITY_VOLUMES = 64
REPORT = "export.json"
REPORT_FORMAT = "cryoshift.export/1"
UNFINISHED = "unfinished"  # export.json's key while the export runs (true); the finished report lacks it
METADATA_ARGUMENT = "export_model(metadata=...)"  # how a refusal names export_model's metadata
Progress = Callable[[str], None]


class ExportNote(ExportWarning):
    """A fact about the export or the model, not a problem with it: the CLI prints it as a note
    (``cryoshift: note: ...``), where other :class:`ExportWarning` s are printed as warnings."""


class CalibrationNote(ExportNote):
    """An export of a model training did not calibrate (an epoch checkpoint, resume.pt, a run
    trained with --val-fraction 0): it exports, but classify then rejects nothing as unknown or
    writes no shift score, and said nothing about it. The CLI prints it as a note."""


class CalibrationViewsWarning(ExportWarning):
    """An export whose ``test_views`` differs from the count the model's calibration was fitted
    for (:func:`calibration_views_note`). A problem, not a fact: the CLI prints it as a warning."""


def calibration_views_note(metadata: ModelMetadata, checkpoint: Path, fitted: int, views: int) -> str | None:
    """What is wrong with ``metadata``'s calibration in a graph that averages ``views`` poses when
    training fitted it for ``fitted``; None when they agree or there is no calibration to be wrong.

    Why: training fits the temperature and the unknown threshold on held-out source logits, and the
    shift-score reference on target features, all averaged over the run's test views (4 by
    default). One pose is less sure than four and its features spread wider, so the same numbers
    in a 1-view model misstate its confidences, unknown calls and shift scores; the export said
    nothing. Export cannot refit them: the held-out volumes are
    rebuilt by the training run (its seeded split or simulation, its tilt/SNR/spectrum matching),
    so the numbers are kept, recorded (``extra.calibration_test_views``) and said, never silently."""
    if views == fitted:
        return None
    parts = []
    if metadata.temperature != 1.0:
        parts.append("temperature")
    if metadata.unknown_threshold > 0:
        parts.append("unknown threshold")
    if metadata.feature_mean:
        parts.append("shift-score reference")
    if not parts:  # nothing fitted (calibration_note says so): nothing to be wrong
        return None
    surer = "less" if views < fitted else "more"
    return (
        f"{checkpoint}: its calibration ({', '.join(parts)}) was fitted for {fitted} test views and is "
        f"not valid for the {views} this model averages (a graph averaging {views} is {surer} sure than one "
        f"averaging {fitted}): "
        "its confidences, unknown calls and shift scores will be off; export cannot refit it (only the "
        f"training run rebuilds its held-out data): train with --test-views {views} for a model "
        f"calibrated for {views}"
    )


def export_model(
    model: nn.Module,
    metadata: ModelMetadata,
    out_path: str | Path,
    parity_volumes: np.ndarray | None = None,
    opset: int | None = None,
) -> ExportResult:
    """Export an in-memory backbone (timm-style contract) to a verified fp32 ONNX file.

    Without ``parity_volumes`` the parity check runs on random volumes and says so in a warning.
    Metadata that the runtime would refuse when reading the model (the readers' checks), or that does
    not describe the model's outputs, raises :class:`InputError` before any file is written.
    """
    # Refused here, naming the argument, as the runtime would refuse the model when reading it.
    metadata = checked(metadata, METADATA_ARGUMENT)
    source = "given volumes"
    if parity_volumes is None:
        warnings.warn(
            "no parity volumes given; checking ONNX against PyTorch on random volumes",
            ExportWarning,
            stacklevel=2,
        )
        parity_volumes, source = random_volumes(16, metadata.box_size), "random volumes"
    return export_onnx(
        model, metadata, out_path, parity_volumes, opset=opset, parity_source=source, source=METADATA_ARGUMENT
    )


def earlier_export(out_dir: str | Path) -> list[str]:
    """Names of the files in ``out_dir`` that an export writes (its report, every format's artefact
    and engine sidecar): a folder holding any of them holds another export."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    engines = {artefact_name("tensorrt", f.precision) for f in FORMATS.values()}
    names = {REPORT} | {artefact_name(f.name) for f in FORMATS.values()} | engines
    names |= {engine + SIDECAR_SUFFIX for engine in engines}
    return sorted(name for name in names if (out_dir / name).exists())


def refuse_earlier_export(out_dir: Path, checkpoint: Path, test_views: int | None) -> None:
    """Refuse an --out folder that holds an export of another network. Written over, it would mix
    two networks' artefacts: an older model.fp16.onnx or model.int8.onnx next to a new model.onnx
    (whose export.json no longer lists them) would be deployed as if it were the new model.

    The same checkpoint exported again (the README's engine built on the GPU node into the folder
    the CPU node exported to) is the same network: allowed, unless ``test_views`` changes the
    graph. So is an unfinished export of it (export.json marked unfinished: killed while its
    artefacts were moved into the folder), with an :class:`ExportNote`. Artefacts without any
    export.json cannot be told apart from another network's. Checked by :func:`export_checkpoint`
    (under the folder's export lock), so the Python API refuses what the CLI refuses.
    """
    from cryoshift.training.checkpoint import RUN_MODEL

    found = earlier_export(out_dir)
    if not found:
        return
    report = read_report(out_dir)
    unfinished = report is not None and report.get(UNFINISHED) is True
    if unfinished and found == [REPORT]:  # stopped before its first artefact: nothing to mix with
        return
    try:
        earlier_sha = report["checkpoint_sha256"]
        earlier_views = report["metadata"]["extra"].get("test_views")
    except (KeyError, TypeError, AttributeError):
        earlier_sha = earlier_views = None  # no readable record: whose export it is cannot be told
    source = checkpoint / RUN_MODEL if checkpoint.is_dir() else checkpoint
    same = earlier_sha is not None and source.is_file() and file_sha256(source) == earlier_sha
    if same and test_views in (None, earlier_views):
        if unfinished:
            files = ", ".join(found)
            warnings.warn(
                f"{out_dir}: holds an unfinished export of this checkpoint ({files}); exporting it again",
                ExportNote,
                stacklevel=3,
            )
        return
    whose = _whose(report, same, unfinished, earlier_views)
    raise InputError(
        out_dir,
        f"already holds {whose} ({', '.join(found)}); choose another --out, or delete them to export here",
    )


def _whose(report: dict[str, Any] | None, same: bool, unfinished: bool, views: object) -> str:
    """Whose export a refused --out folder holds, in words (:func:`refuse_earlier_export`)."""
    if report is None:  # an export killed before it wrote any record, or files put there by hand
        return (
            f"an export's files but no readable {REPORT} (an export stopped before it finished?), "
            "so whose checkpoint they are cannot be told"
        )
    if same:
        return f"{'an unfinished export' if unfinished else 'an export'} with {views} test views"
    return "an unfinished export of another checkpoint" if unfinished else "another checkpoint's export"


def _begin_report(out_dir: Path, checkpoint: Path, sha: str, metadata: ModelMetadata) -> None:
    """Write export.json marked unfinished (:data:`UNFINISHED`) just before the staged artefacts
    are moved into ``out_dir`` (:func:`_commit`); the finished report replaces it. Why: a kill
    between the moves and export.json left artefacts no record named, and the rerun of the same
    checkpoint was refused as another checkpoint's export. The record says whose export the
    folder's artefacts are, and that it never finished."""
    record = {
        "format": REPORT_FORMAT,
        UNFINISHED: True,
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": sha,
        "metadata": metadata.to_dict(),
    }
    write_text(out_dir / REPORT, json.dumps(record, indent=2, default=str) + "\n")


# The folder an export builds its artefacts in, inside --out: hidden and ending in ``.tmp`` like
# outfiles' temporary files, with a prefix of its own so that only an export's leftovers are removed.
STAGING_PREFIX = TEMPORARY_PREFIX + "export-"


def staging_folder(out_dir: Path) -> Path:
    """A new, empty folder inside ``out_dir`` that the formats are built in, after removing those
    a killed export left. Why: the builders wrote straight into ``out_dir``, and a re-export into
    an earlier export's folder replaced its finished export.json (then its model.onnx) before the
    new artefacts were proven; a kill part-way left the earlier artefacts without their record.
    Built aside, the earlier export stays whole until :func:`_commit`. :func:`export_checkpoint`
    holds the folder's export lock, so no other export is building in it. The TensorRT timing
    cache is copied in, so engines built again are built from it as before."""
    from cryoshift.export.tensorrt import TIMING_CACHE

    for entry in out_dir.iterdir():
        name = entry.name
        if name.startswith(STAGING_PREFIX) and name.endswith(TEMPORARY_SUFFIX) and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, suffix=TEMPORARY_SUFFIX, dir=out_dir))
    cache = out_dir / TIMING_CACHE
    if cache.is_file() and not cache.is_symlink():
        shutil.copyfile(cache, staging / TIMING_CACHE)
    return staging


def _commit(staging: Path, out_dir: Path, results: list[ExportResult]) -> list[ExportResult]:
    """Move every file built in ``staging`` (artefacts, engine sidecars, the timing cache) into
    ``out_dir``, each by one rename (a link at the name is replaced, never followed), remove the
    staging folder, and return ``results`` naming the files where they now are."""
    for entry in sorted(staging.iterdir()):
        if not entry.name.startswith(TEMPORARY_PREFIX):  # a builder's own unfinished temporary
            os.replace(entry, out_dir / entry.name)
    shutil.rmtree(staging, ignore_errors=True)
    return [replace(r, path=out_dir / r.path.name) if r.path.parent == staging else r for r in results]


def read_report(out_dir: Path) -> dict[str, Any] | None:
    """The export.json in ``out_dir`` as a dict; None when it is absent, unreadable or not an object
    (whose export the folder holds cannot then be told)."""
    try:
        report = json.loads((out_dir / REPORT).read_text())
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) else None


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "platform": platform.platform()}
    for name in (
        "cryoshift",
        "torch",
        "onnx",
        "onnxruntime",
        "onnxslim",
        "onnxconverter-common",
        "onnxscript",
        "numpy",
        "tensorrt",
        "polygraphy",
    ):
        try:
            found[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return found


def export_checkpoint(
    checkpoint_or_run: str | Path,
    out_dir: str | Path,
    fp16: bool = False,
    tensorrt: bool = False,
    int8: bool = False,
    calibration: str | Path | None = None,
    parity_data: str | Path | None = None,
    opset: int | None = None,
    batch_max: int | None = None,
    progress: Progress | None = None,
    test_views: int | None = None,
) -> list[ExportResult]:
    """Export a checkpoint (or a run directory's selected ``model.pt``) to ``out_dir``.

    ``batch_max`` (TensorRT only; default :data:`DEFAULT_BATCH_MAX`) is the largest batch of the
    engines' optimisation profile. ``test_views`` overrides how many wedge-preserving poses the
    graph averages per subtomogram (default: the trained model's; 1 is 4x faster than 4 and a
    little less accurate). The count is recorded in the artefacts' metadata (``extra.test_views``).
    A count other than the one training calibrated for keeps that calibration (export cannot refit
    it), warns (:class:`CalibrationViewsWarning`) and records the fitted count in the metadata
    (``extra.calibration_test_views``) and export.json's ``notes``. Exports in several threads of
    one process are safe: the graph step runs one at a time (``export.onnx.GRAPH_LOCK``).

    Writes ``model.onnx`` always, then ``model.fp16.onnx`` / ``model.int8.onnx`` / engines as asked;
    every artefact passes its parity check or the export raises
    :class:`cryoshift.export.parity.ParityError`. TensorRT without a GPU is skipped with a warning.
    The formats are built in a staging folder inside ``out_dir`` and moved into it once all passed:
    an export that fails or is stopped (killed included) leaves an earlier export there whole.

    The export holds ``out_dir``'s lock (``.cryoshift-export.lock``) while it runs: a second export
    into the folder, from this process or another, raises :class:`InputError` naming the first's
    pid. A folder holding another checkpoint's export (or this one's with other ``test_views``)
    raises :class:`InputError` too (:func:`refuse_earlier_export`).
    """
    from cryoshift.training.checkpoint import (
        calibration_note,
        checkpoint_config,
        load_checkpoint,
        resolve_checkpoint,
    )
    from cryoshift.training.evaluate import check_made_by_its_run
    from cryoshift.training.trainer import RECIPE

    say = progress or (lambda _msg: None)
    formats = select_formats(
        fp16=fp16,
        tensorrt=tensorrt,
        int8=int8,
        calibration=calibration,
        parity_data=parity_data,
        opset=opset,
        batch_max=batch_max,
    )
    check_opset(opset)  # before the checkpoint is read and any folder is made
    checkpoint = resolve_checkpoint(checkpoint_or_run)
    out_dir = Path(out_dir)
    check_out_folder(out_dir, "--out", "to write the model into")  # mkdir would say "File exists"
    # One export per folder, for the CLI and the Python API alike: a second one checked the first's
    # model.onnx (a false parity failure) or found it gone (an onnxruntime traceback), and one into
    # another checkpoint's folder left a model.fp16.onnx of that network beside this model.onnx.
    # The lock comes before the earlier-export check and the long checkpoint read; a refused export
    # leaves no folder or lock file it made (runtime/lock.holding).
    with holding(out_dir, EXPORT_LOCK, "export"):
        refuse_earlier_export(out_dir, checkpoint, test_views)
        say(f"loading {checkpoint}")
        # the checkpoint's own checks (parts that disagree, damaged weights) run as it is read
        model, metadata, payload = load_checkpoint(checkpoint)
        check_made_by_its_run(checkpoint)
        config = checkpoint_config(payload, checkpoint)
        if not metadata.backbone:
            metadata = replace(metadata, backbone=str(payload.get("backbone", "")))
        note = calibration_note(metadata, checkpoint, config)
        fitted = int(getattr(model, "test_views", 1))  # what training's calibration averaged
        if test_views is not None:
            from cryoshift.training.backbones import check_test_views_option, set_test_views

            check_test_views_option(test_views)
            try:  # a model that cannot average poses must not be labelled as doing so
                set_test_views(model, test_views, str(payload.get("backbone", "")))
            except ValueError as exc:
                raise InputError(checkpoint, str(exc)) from exc
        views = int(getattr(model, "test_views", 1))
        extra = {**metadata.extra, "test_views": views}
        views_note = calibration_views_note(metadata, checkpoint, fitted, views)
        if views_note:
            extra[CALIBRATION_VIEWS] = fitted
        if RECIPE not in extra:  # a checkpoint from before training recorded it: its run's record
            recipe = recorded_recipe(checkpoint, config)
            if recipe is not None:
                extra[RECIPE] = recipe
        options = backbone_options(payload)
        if options:  # e.g. canonical=true: the name alone would not say what the graph computes
            extra["backbone_options"] = options
        metadata = complete_metadata(replace(metadata, extra=extra), "fp32")
        wrapper = ExportWrapper(model, metadata.normalisation).eval()
        # What the runtime would refuse in the written model, refused now, naming the checkpoint
        metadata = check_export_inputs(wrapper, metadata, checkpoint)

        say("reading parity volumes")
        volumes, source = find_volumes(metadata.box_size, parity_data, config, limit=PARITY_VOLUMES)
        job = ExportJob(
            checkpoint,
            config,
            metadata,
            out_dir,
            wrapper,
            volumes,
            source,
            say,
            opset=opset,
            batch_max=DEFAULT_BATCH_MAX if batch_max is None else batch_max,
            calibration=calibration,
        )
        steps = [FORMATS[name] for name in formats]
        for fmt in steps:  # e.g. int8 calibration data: resolved before any work, so it fails fast
            fmt.prepare_job(job)
        sha = file_sha256(checkpoint)
        # Built aside; the folder's earlier export (its export.json included) stays as it was until
        # every format passed, and stays as it was when one fails or the export is stopped
        job.out_dir = staging_folder(out_dir)
        if note:  # said once the export is under way (a refused one needs no note)
            warnings.warn(note, CalibrationNote, stacklevel=2)
        if views_note:
            warnings.warn(views_note, CalibrationViewsWarning, stacklevel=2)
        results: list[ExportResult] = []
        skipped: list[str] = []
        try:
            for fmt in steps:
                reason = fmt.why_not_here()
                if reason:
                    msg = f"{fmt.skipped} skipped: {reason}"
                    warnings.warn(msg, ExportWarning, stacklevel=2)
                    skipped.append(msg)
                    continue
                results.extend(fmt.build(job))
        except ParityError as exc:  # named where the user looks for it, not in the removed staging folder
            shutil.rmtree(job.out_dir, ignore_errors=True)
            raise ParityError(out_dir / Path(exc.path).name, exc.report) from None
        except BaseException:
            shutil.rmtree(job.out_dir, ignore_errors=True)
            raise
        _begin_report(out_dir, checkpoint, sha, metadata)
        results = _commit(job.out_dir, out_dir, results)
        job.out_dir = out_dir

        report = {
            "format": REPORT_FORMAT,
            "checkpoint": str(checkpoint),
            "checkpoint_sha256": sha,
            "epoch": payload.get("epoch"),
            "backbone": payload.get("backbone"),
            "parity_data": source,
            "requested": formats,
            "formats": {name: FORMATS[name].description for name in formats},
            "results": [r.to_dict() for r in results],
            "skipped": skipped,
            "notes": [n for n in (note, views_note) if n],
            "metadata": metadata.to_dict(),
            "training_config": config,
            "versions": _versions(),
        }
        if any(r.format == "int8" for r in results):  # the two counts, and whether parity was held out
            from cryoshift.export.int8 import int8_record

            report["int8_calibration"] = int8_record(job)
        # out_dir may be an earlier export's folder: a link planted at the name is replaced, never
        # written through (runtime/outfiles.py)
        write_text(out_dir / REPORT, json.dumps(report, indent=2, default=str) + "\n")
        return results


def recorded_recipe(checkpoint: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The recipe (training/trainer.training_recipe) of a checkpoint whose metadata lacks it
    (trained before cryoshift recorded it there), from its run's selection.json, which names each
    target-aware part that ran; None where there is no such record (a checkpoint outside a run, a
    run that did not finish): unknown, never guessed from the options, which a dataset source or
    a run without a target ignores. Why: the exported model of such a ``source-only`` run trained
    with template labels read as the method alone."""
    from cryoshift.runtime.jsonfile import read_json_object
    from cryoshift.training.evaluate import run_of_checkpoint
    from cryoshift.training.trainer import RECIPE_PARTS, training_recipe

    run_dir = run_of_checkpoint(checkpoint)
    if run_dir is None or not config or not (run_dir / "selection.json").is_file():
        return None
    try:
        selection = read_json_object(run_dir / "selection.json", "epoch selection (selection.json)")
    except InputError:
        return None
    uses = selection.get("uses_target_labels")
    if not isinstance(uses, bool):  # trained on them only by --oracle-target-labels (as evaluate reads it)
        uses = bool(config.get("oracle_target_labels")) and config.get("method") == "oracle"
    return training_recipe(config, [name for name in RECIPE_PARTS if name in selection], uses)


# what create_backbone is given besides the user's options (training/trainer._build)
_BUILD_ARGUMENTS = ("num_classes", "box_size", "test_views")


def backbone_options(payload: dict[str, Any]) -> dict[str, Any]:
    """The ``--backbone-opt`` settings a checkpoint's network was built with."""
    kwargs = payload.get("backbone_kwargs") or {}
    return {k: v for k, v in kwargs.items() if k not in _BUILD_ARGUMENTS}
