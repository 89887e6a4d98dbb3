"""``cryoshift evaluate``: score a checkpoint, run directory or ONNX model on a labelled dataset."""

from __future__ import annotations

from pathlib import Path

import typer

NAME = "evaluate"
NO_ARGS_IS_HELP = True


def command(
    model: Path = typer.Argument(..., help="Checkpoint (.pt), training run directory, or exported .onnx."),
    data: Path = typer.Argument(
        ...,
        help="Labelled dataset directory (e.g. target data with held-back "
        "labels; this is the only command that reads them), or labelled picks "
        "(STAR/CSV with a class/label column) with -t.",
    ),
    tomograms: list[str] = typer.Option(
        None,
        "--tomograms",
        "-t",
        help="Tomograms of labelled picks (files, globs, folders or a RELION 5 tomograms.star).",
    ),
    label_column: str = typer.Option(
        None,
        "--label-column",
        help="Column of labelled picks holding the class (default: class, label, class_name or true_class).",
    ),
    out: Path = typer.Option(
        None,
        "--out",
        help="Report directory (default: RUN/eval/DATA for a run, MODEL_eval_DATA next to a file; "
        "DATA is a pick table's name without its suffix; refused when it holds the evaluation of "
        "other data of that name).",
    ),
    run: Path = typer.Option(
        None,
        "--run",
        help="Training run directory whose epoch checkpoints are scored "
        "too (implied when MODEL is a run directory).",
    ),
    batch_size: int = typer.Option(64, "--batch-size", help="Volumes per forward pass."),
    device: str = typer.Option(
        "cpu",
        "--device",
        help="cpu, cuda or cuda:N (an ONNX model on cuda runs on onnxruntime's CUDA provider; "
        "auto is cpu for ONNX).",
    ),
    ignore_voxel_size: bool = typer.Option(
        False,
        "--ignore-voxel-size",
        help="Evaluate even if the data's voxel size differs from the model's by more than 5%.",
    ),
) -> None:
    """Score a model on labelled data: accuracy, macro-F1, per-class precision/recall, confusion matrix.

    Writes evaluation.json and confusion.png and prints a table. For a run directory (or with
    --run) it also scores every epoch checkpoint and reports which epoch the labels would have
    chosen, next to the label-free choice of training and the accuracy it cost.

    Example: cryoshift evaluate runs/a data/exp_labelled
    """
    from rich.console import Console
    from rich.table import Table

    from cryoshift.runtime.errors import require_extra
    from cryoshift.runtime.terminal import markup_safe, plain, visible  # class names, paths: from files

    onnx = check_model(model)
    if not onnx or run is not None:  # --run scores the run's epoch checkpoints with PyTorch
        require_extra("train", "cryoshift evaluate (of a PyTorch checkpoint)", "torch")
    require_extra("plots", "cryoshift evaluate (its report plots)", "matplotlib")
    device = check_options(model, data, run, device, tomograms, label_column, onnx, batch_size)
    from cryoshift.training.evaluate import evaluate

    report = evaluate(
        model,
        data,
        out,
        run,
        batch_size,
        device,
        tomograms=list(tomograms or []),
        label_column=label_column,
        ignore_voxel_size=ignore_voxel_size,
    )
    console = Console()
    table = Table(
        title=plain(
            f"{model} on {data}: accuracy {report['accuracy']:.3f}, macro-F1 "
            f"{report['macro_f1']:.3f} (n={report['n']})"
        ),
        title_justify="left",
    )
    for col in ("class", "precision", "recall", "F1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for name, row in report["per_class"].items():  # None (n/a): a class neither labelled nor predicted
        table.add_row(
            plain(name), _fmt(row["precision"]), _fmt(row["recall"]), _fmt(row["f1"]), str(row["support"])
        )
    console.print(table)
    console.print(f"scored: {report['scored']}")
    if report.get("training"):  # what the model was trained with, to compare evaluations by
        from cryoshift.training.evaluate import training_summary

        console.print(markup_safe(training_summary(report["training"])))
    console.print(
        f"NLL {report['nll']:.3f}  ECE {report['ece']:.3f}  unknown {100 * report['unknown_fraction']:.1f}% "
        "(under the model's threshold; not rejected in the scores above)"
    )
    for note in report.get("notes", []):
        console.print(f"note: {markup_safe(note)}")
    if report.get("skipped_picks"):
        skipped = report["skipped_picks"].items()
        console.print("skipped picks: " + ", ".join(f"{n} {markup_safe(why)}" for why, n in skipped))
    ck = report.get("checkpoints")
    for bad in (ck or {}).get("skipped_epochs", []):
        typer.echo(
            visible(f"cryoshift: skipped epoch {bad['epoch']}: {bad['path']}: {bad['reason']}"), err=True
        )
    if (ck or {}).get("selection_error"):
        typer.echo(f"cryoshift: label-free choice unknown: {visible(ck['selection_error'])}", err=True)
    if ck and ck.get("epochs") and ck.get("selected_epoch") is None:  # no choice: no "epoch None", no gap
        console.print(
            f"label-free choice unknown; labels would choose epoch {ck['oracle_epoch']} "
            f"(accuracy {_fmt(ck['oracle_accuracy'])})"
        )
    elif ck and ck.get("epochs"):
        console.print(
            f"label-free choice: epoch {ck['selected_epoch']} (accuracy {_fmt(ck['selected_accuracy'])}); "
            f"labels would choose epoch {ck['oracle_epoch']} (accuracy {_fmt(ck['oracle_accuracy'])}); "
            f"gap {_fmt(ck['selection_gap'])}"
        )
    console.print(f"report: {markup_safe(report['json'])}  confusion: {markup_safe(report['confusion_png'])}")


def check_model(model: Path) -> bool:
    """Refuse a model evaluate cannot read, in one line and before anything opens it; returns
    whether it is an ONNX model. Refused: nothing there, a named pipe or device (a pipe blocked
    evaluate forever), a TensorRT engine or its sidecar (they were "not a readable weights-only
    checkpoint": evaluate scores with onnxruntime or PyTorch, an engine runs only under classify)."""
    from cryoshift.runtime.backends import ENGINE_SUFFIXES
    from cryoshift.runtime.engine_sidecar import is_sidecar_name
    from cryoshift.runtime.errors import InputError
    from cryoshift.runtime.metadata import check_model_path, is_onnx

    check_model_path(model, folders=True)
    if is_onnx(model):
        return True
    if model.suffix.lower() in ENGINE_SUFFIXES or is_sidecar_name(model):
        what = "the JSON sidecar of a TensorRT engine" if is_sidecar_name(model) else "a TensorRT engine"
        raise InputError(
            model,
            f"is {what}; evaluate takes a checkpoint (.pt), a training run directory or an .onnx model: "
            "evaluate the ONNX model the engine was built from (classify runs the engine itself)",
        )
    return False


def check_options(
    model: Path,
    data: Path,
    run: Path | None,
    device: str,
    tomograms: list[str] | None,
    label_column: str | None,
    onnx: bool,
    batch_size: int,
) -> str:
    """Refuse option values that would fail only after the data is read or the model has run (a
    --batch-size below 1, a --device torch does not know) or that would be silently ignored (--run
    naming no training run, --label-column or --tomograms with a dataset directory). Returns the
    device to use. An --out that cannot be made is evaluate()'s to refuse (errors.check_out_folder,
    before the data is read), for the CLI as for a caller from Python."""
    from cryoshift.runtime.errors import InputError
    from cryoshift.runtime.labelled_picks import is_pick_table

    if batch_size < 1:  # said before labelled picks are cropped, not after
        raise InputError(None, f"--batch-size must be at least 1, got {batch_size}")
    if model.is_dir():  # a run folder without its model, named before the data is read
        from cryoshift.training.checkpoint import resolve_checkpoint

        resolve_checkpoint(model)
    if run is not None:
        if not run.is_dir():
            raise InputError(run, "is not a folder; --run takes a training run directory")
        if not list((run / "checkpoints").glob("epoch_*.pt")):
            raise InputError(
                run,
                "holds no epoch checkpoints (checkpoints/epoch_*.pt); --run takes a training run directory",
            )
    if data.is_dir() and not is_pick_table(data):
        given = [
            flag for flag, value in (("--tomograms", tomograms), ("--label-column", label_column)) if value
        ]
        if given:
            raise InputError(
                data,
                f"is a dataset directory; {' and '.join(given)} only appl{'y' if len(given) > 1 else 'ies'} "
                "to labelled picks (STAR/CSV)",
            )
    if not onnx or run is not None:
        from cryoshift.training.distributed import resolve_device

        return resolve_device(device)
    from cryoshift.runtime.contract import CUDA_DEVICE

    if device == "auto":  # scores are reproducible on the CPU; cuda is asked for by name
        return "cpu"
    if device != "cpu" and not CUDA_DEVICE.fullmatch(device):
        raise InputError(None, f"--device must be cpu, cuda, cuda:N or auto, not {device!r}")
    return device


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
