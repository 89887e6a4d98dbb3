"""``cryoshift classify``: classify experimental subtomograms with an exported model."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from cryoshift.runtime.commands._options import NO_PROGRESS, Backend, echo_summary

if TYPE_CHECKING:
    from cryoshift.runtime.summary import ClassifySummary

NAME = "classify"
NO_ARGS_IS_HELP = True


class Contrast(str, Enum):
    dark = "dark"
    light = "light"


_MODEL_HELP = "Exported model: model.onnx, or a TensorRT model.engine with its .engine.json sidecar."
_INPUTS_HELP = (
    "What to classify, mixed freely: MRC files, globs ('sub/*.mrc'), directories, MRC volume "
    "stacks, STAR listings (rlnImageName), pick tables (STAR/CSV + -t), dataset folders."
)
_TOMO_HELP = (
    "Tomograms to crop picks from (files, globs, folders, or a RELION 5 tomograms.star; "
    "repeatable), matched to the picks' rlnTomoName/tomo_name."
)
_BACKEND_HELP = "Inference backend; auto picks the fastest that works here and says which."
_SHARD_HELP = (
    "Classify only share i of n (e.g. $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT); output "
    "files get a .shard-i-of-n suffix."
)


def command(
    model: Path = typer.Argument(..., help=_MODEL_HELP),
    inputs: list[str] = typer.Argument(..., help=_INPUTS_HELP),
    out: Path = typer.Option(
        Path("cryoshift_results"),
        "--out",
        "-o",
        help="Output folder: predictions.csv/.star, errors.csv, manifest.json.",
    ),
    tomograms: list[str] = typer.Option(None, "--tomograms", "-t", help=_TOMO_HELP),
    backend: Backend = typer.Option(Backend.auto, "--backend", "-b", help=_BACKEND_HELP),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Subtomograms per batch (GPU: 256-2048)."),
    workers: int = typer.Option(
        2,
        "--workers",
        min=0,
        help="Readers filling batches (threads by default; "
        "0: as many as the backend can consume, up to the cores; at most 4 threads or 1 process per CPU).",
    ),
    transfer: str = typer.Option(
        "fp32",
        "--transfer",
        help="fp32 or fp16. fp16: send half the bytes to the GPU (cast on "
        "the host, checked against fp32 on the first 64 subtomograms; see the manifest).",
    ),
    reader_processes: bool = typer.Option(
        False,
        "--reader-processes",
        help="Read in processes sharing memory with the model (GPU nodes: "
        "faster than one Python process can read).",
    ),
    threads: int = typer.Option(None, "--threads", min=1, help="CPU backend: inference threads."),
    devices: str = typer.Option(
        None, "--devices", help="GPUs of this node, e.g. 0,1,2,3: one worker process per GPU."
    ),
    shard: str = typer.Option(None, "--shard", help=_SHARD_HELP),
    resume: bool = typer.Option(
        False, "--resume", help="Continue an interrupted run in --out: no row is lost or written twice."
    ),
    retry_errors: bool = typer.Option(
        False,
        "--retry-errors",
        help="With --resume: classify again the items that failed before (e.g. after fixing a "
        "missing tomogram); errors.csv keeps those that fail again.",
    ),
    unknown_threshold: float = typer.Option(
        None,
        "--unknown-threshold",
        min=0.0,
        max=1.0,
        help="Confidence under which a subtomogram is 'unknown' (default: the model's calibrated threshold).",
    ),
    contrast: Contrast = typer.Option(
        None,
        "--contrast",
        help="Contrast of the data (default dark, as raw cryo-ET; datasets say their own).",
    ),
    ignore_voxel_size: bool = typer.Option(
        False,
        "--ignore-voxel-size",
        help="Classify even if the data's voxel size differs from the model's by more than 5%.",
    ),
    ray: bool = typer.Option(
        False,
        "--ray",
        help="Run on a Ray cluster (Ray Data actor pool, one model per GPU) instead of this process.",
    ),
    ray_address: str = typer.Option(
        None, "--ray-address", help="Ray cluster address (default: start or join a local one)."
    ),
    ray_workers: int = typer.Option(2, "--ray-workers", min=1, help="Ray actors (one model each)."),
    ray_gpus: float = typer.Option(0.0, "--ray-gpus", min=0.0, help="GPUs per Ray actor (1 on GPU nodes)."),
    coordinate_pixel_size: float = typer.Option(
        None,
        "--coordinate-pixel-size",
        help="A per pixel of pixel picks made on another sampling "
        "(e.g. unbinned tilt-series pixels); they are scaled to "
        "the reconstruction's voxels.",
    ),
    binning: float = typer.Option(
        None,
        "--binning",
        help="Pixel picks are this many times finer than the reconstruction, 1 to 64 "
        "(RELION 4 unbinned picks on a bin-4 tomogram: 4).",
    ),
    split_by_class: bool = typer.Option(
        False,
        "--split-by-class",
        help="Also write predictions_<class>.star per class (for RELION Extract subtomos and ArtiaX).",
    ),
    features: bool = typer.Option(
        False,
        "--features",
        help="Also write the model's features, one float32 row per row of "
        "predictions.csv, to features.npy (the report's embedding).",
    ),
    copick_voxel_spacing: float = typer.Option(
        None,
        "--copick-voxel-spacing",
        min=0.0,
        help="copick:CONFIG.json input: voxel spacing (A) of the tomograms to crop.",
    ),
    copick_tomo_type: str = typer.Option(
        None, "--copick-tomo-type", help="copick input: reconstruction type (wbp, denoised, ...)."
    ),
    copick_picks: list[str] = typer.Option(
        None,
        "--copick-picks",
        help="copick input: picks to classify, OBJECT[:USER[:SESSION]] (* = any; repeatable).",
    ),
    copick_run: list[str] = typer.Option(
        None, "--copick-run", help="copick input: only this run (repeatable; default all)."
    ),
    copick_session: str = typer.Option(
        None,
        "--copick-session",
        help="copick input: session id of the predicted picks written back "
        "(user cryoshift; default cryoshift-<model sha256[:8]>).",
    ),
    no_progress: bool = NO_PROGRESS,
    quiet: bool = typer.Option(
        False,
        "--quiet",
        "-q",
        help="No progress bar and no summary; notes (e.g. a file without a voxel size) and "
        "the error count still go to stderr.",
    ),
) -> None:
    """Classify experimental subtomograms with an exported model.

    One row per subtomogram in CSV and STAR: class, probabilities, confidence, 'unknown', shift score.
    Bad items go to errors.csv and the run goes on; after a crash or kill, rerun with --resume.

    Example: cryoshift classify model.onnx picks.star -t 'tomos/*.mrc' stack.mrcs -o results

    copick: cryoshift classify model.onnx copick:config.json --copick-voxel-spacing 10
    --copick-tomo-type wbp --copick-picks ribosome:alice:1 -o results (needs the copick extra).
    """
    from cryoshift.runtime.copick_io import fold_inputs, is_copick
    from cryoshift.runtime.engine_sidecar import check_engine_model_path
    from cryoshift.runtime.errors import InputError
    from cryoshift.runtime.hostmem import capped_workers
    from cryoshift.runtime.run import check_scale_options

    # before any work; the API, --ray and merge go through the same check (runtime/run.py)
    check_scale_options(binning, coordinate_pixel_size)
    check_engine_model_path(model)  # a pipe or a device was "no such model file"
    workers = capped_workers(workers, reader_processes)  # once, before the manifest records it
    inputs = fold_inputs(list(inputs), copick_voxel_spacing, copick_tomo_type, copick_picks, copick_run)
    from cryoshift.runtime.devices import parse_devices

    device_list = parse_devices(devices, "--devices")
    if retry_errors and not resume:
        raise InputError(None, "--retry-errors goes with --resume (a new run has no earlier errors)")
    common = dict(
        progress=not (quiet or no_progress),
        resume=resume,
        unknown_threshold=unknown_threshold,
        tomograms=list(tomograms or []),
        contrast=contrast.value if contrast else None,
        ignore_voxel_size=ignore_voxel_size,
        coordinate_pixel_size=coordinate_pixel_size,
        binning=binning,
        split_by_class=split_by_class,
        features=features,
    )
    if ray:
        if device_list or shard:
            raise InputError(None, "--ray distributes by itself; drop --devices/--shard")
        if retry_errors:
            raise InputError(None, "--retry-errors is not yet supported with --ray; resume without --ray")
        if workers != 2 or reader_processes or transfer != "fp32":  # silently ignored before
            raise InputError(
                None, "--ray actors read their own batches; drop --workers/--reader-processes/--transfer"
            )
        if any(is_copick(t) for t in inputs):
            raise InputError(None, "copick inputs are not yet supported with --ray")
        from cryoshift.runtime.distributed import classify_ray

        summary = classify_ray(
            model,
            list(inputs),
            out,
            backend=backend.value,
            batch_size=batch_size,
            num_workers=ray_workers,
            num_gpus=ray_gpus,
            address=ray_address,
            threads=threads,
            **common,
        )
    else:
        from cryoshift.runtime.run import classify

        summary = classify(
            model,
            list(inputs),
            out,
            backend=backend.value,
            batch_size=batch_size,
            workers=workers,
            shard=shard,
            threads=threads,
            devices=device_list,
            reader_processes=reader_processes,
            transfer=transfer,
            copick_session=copick_session,
            retry_errors=retry_errors,
            **common,
        )
    echo_summary(summary, quiet)
    _refuse_empty_result(summary)


def _refuse_empty_result(summary: ClassifySummary) -> None:
    """Nothing classified, every item an error: exit 2 (as for bad input) with one line, even
    with -q, so a script or a SLURM array does not take an empty result for success.

    A run that classified some items exits 0: errors.csv lists the rest. So does one that had
    nothing to do (a resumed run already finished, a shard with no items).
    """
    from cryoshift.runtime.errors import InputError

    errors = summary.total_errors
    if summary.total_rows == 0 and errors > 0:
        items = "the only item" if errors == 1 else f"all {errors} items"
        raise InputError(
            None, f"nothing was classified: {items} failed; the reasons are in {summary.errors_csv}"
        )
