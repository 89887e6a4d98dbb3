"""``cryoshift train``: train a domain-adapted classifier (labelled source + unlabelled target)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperCommand

from cryoshift.runtime.commands._options import NO_PROGRESS
from cryoshift.runtime.commands.simulate import PRESET_NAMES

NAME = "train"
NO_ARGS_IS_HELP = True
# Without the training wing the methods cannot be listed (the list comes from its registry).
METHOD_HELP = (
    "Adaptation method, a name from the training wing's registry (listed here once the 'train' "
    "extra is installed)."
)


class TrainCommand(TyperCommand):
    """``cryoshift train``'s command: its help lists the adaptation methods from the registry.

    Generated when the help is shown, not when the CLI starts, so ``cryoshift --help`` and every
    other command stay free of torch; a new method file appears here without touching the CLI.
    """

    def format_help(self, ctx: typer.Context, formatter: object) -> None:
        try:
            from cryoshift.training.adapt import methods_help
            from cryoshift.training.backbones import list_backbones
        except ImportError:  # no torch: keep METHOD_HELP and the backbone examples
            pass
        else:
            for param in self.params:
                if param.name == "method":
                    param.help = f"Adaptation method: {methods_help(default=param.default)}."
                if param.name == "backbone":
                    param.help = f"Backbone registry name: {', '.join(list_backbones())}."
        super().format_help(ctx, formatter)


COMMAND_CLASS = TrainCommand


# Booleans as a user types them besides JSON's true/false (``--hparam use_extra=True``)
_BOOLEANS = {"true": True, "false": False}


def _parse_value(key: str, value: str, option: str) -> object:
    """One ``key=value``'s value: a number as a user writes it (``5``, ``0.5``, ``.5``, ``5.``,
    ``1e-3``), a boolean (``true``, ``True``, ``FALSE``), JSON (a list, a quoted string
    ``'"1"'``), else the text. Why not JSON alone: ``.5``, ``5.`` and ``True`` stayed strings and
    were refused as "must be a number, not '.5'"; ``null`` is refused, not taken for the
    default: config.json recorded ``null`` and the run trained with whatever the default was."""
    import json

    from cryoshift.runtime.errors import InputError

    text = value.strip()
    if text == "null":
        raise InputError(None, f"{option} {key}={value} is not a value: leave the key out to use its default")
    if text.lower() in _BOOLEANS:
        return _BOOLEANS[text.lower()]
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    if "_" in text:  # float() reads 1_000; a user's "1_000" is more likely a word
        return value
    try:  # the numbers JSON does not write: .5, 5., +1 (nan and inf too: refused as not finite)
        number = float(text)
    except ValueError:
        return value
    return int(text) if text.lstrip("+").isdigit() else number


def _parse_kv(items: list[str], option: str) -> dict[str, object]:
    """``key=value`` pairs; values parsed by :func:`_parse_value` (numbers, booleans, JSON)."""
    from cryoshift.runtime.errors import InputError

    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(None, f"{option} expects key=value, got {item!r}")
        if key in out:  # the last one won without a word: which was meant is the user's call
            raise InputError(None, f"{option} {key} is given twice; give each key once")
        out[key] = _parse_value(key, value, option)
    return out


def _check_target_options(
    target: str | None,
    tomograms: list[str],
    copick_voxel_spacing: float | None,
    copick_tomo_type: str | None,
    copick_picks: list[str],
    copick_run: list[str],
) -> None:
    """Refuse options that only describe a --target when there is none: they were ignored without
    a word, so a forgotten --target trained a source-only model the user did not ask for."""
    from cryoshift.runtime.errors import InputError

    if target is not None:
        return
    given = [
        name
        for name, value in (
            ("--tomograms", tomograms),
            ("--copick-voxel-spacing", copick_voxel_spacing),
            ("--copick-tomo-type", copick_tomo_type),
            ("--copick-picks", copick_picks),
            ("--copick-run", copick_run),
        )
        if value is not None and value != []
    ]
    if given:
        verb = "describes" if len(given) == 1 else "describe"
        raise InputError(None, f"{', '.join(given)} {verb} the --target, but no --target is given")


def command(
    source: str = typer.Option(
        ...,
        "--source",
        help="Labelled source: a dataset directory (cryoshift "
        "simulate), or structures to simulate on the fly ('builtin', map/model paths; "
        "then --box is required).",
    ),
    out: Path = typer.Option(..., "--out", help="Run directory to create (or continue with --resume)."),
    target: str = typer.Option(
        None,
        "--target",
        help="Unlabelled target: dataset directory, MRC file/"
        "directory/glob, picks STAR/CSV (with --tomograms), or copick:CONFIG.json "
        "(with --copick-*). Labels are never read.",
    ),
    method: str = typer.Option("selftrain", "--method", help=METHOD_HELP),
    backbone: str = typer.Option(
        "cryonet-deep-centred",
        "--backbone",
        help="Backbone registry name (e.g. cryonet-deep-centred, cryonet-centred, cryonet; all are "
        "listed here once the 'train' extra is installed).",
    ),
    test_views: int = typer.Option(
        4,
        "--test-views",
        help="Poses each prediction averages (1-4: the identity and the 180-degree rotations that keep the "
        "missing wedge). 4 is 0-0.7 points more accurate on the benchmark and 4x the inference cost; "
        "export can lower it.",
    ),
    epochs: int = typer.Option(
        None,
        "--epochs",
        help="Training epochs (passes over the source). Default: 60 where training runs in bf16/fp16 "
        "(a GPU, a CPU with AMX or AVX512-BF16), 20 in fp32 (about an hour on 2 cores either way).",
    ),
    batch_size: int = typer.Option(
        32, "--batch-size", help="Source (and target) volumes per step and process."
    ),
    lr: float = typer.Option(1e-3, "--lr", help="Base learning rate (methods scale it per module)."),
    weight_decay: float = typer.Option(0.0, "--weight-decay", help="Adam weight decay."),
    seed: int = typer.Option(0, "--seed", help="Seed for every random generator."),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue the killed run in --out from its last "
        "finished epoch (its stored config wins, except --epochs/--device/--threads/--no-progress; "
        "a note names the options given otherwise).",
    ),
    device: str = typer.Option(
        "auto",
        "--device",
        help="cpu, cuda, cuda:N or auto. Under torchrun each process takes its LOCAL_RANK GPU.",
    ),
    val_fraction: float = typer.Option(
        0.1, "--val-fraction", help="Held-out share of a source dataset, used for selection and calibration."
    ),
    normalisation: str = typer.Option(
        "zscore",
        "--normalisation",
        help="Per-subtomogram normalisation (zscore or minmax); travels into the exported graph.",
    ),
    box: int = typer.Option(None, "--box", help="Box size in voxels when simulating the source."),
    voxel_size: float = typer.Option(
        None, "--voxel-size", help="Voxel size (A) when simulating the source (default 10)."
    ),
    sim_preset: str = typer.Option(
        "broad",
        "--sim-preset",
        help=f"Simulation preset when simulating ({', '.join(PRESET_NAMES)}).",
    ),
    sim_per_epoch: int = typer.Option(6144, "--sim-per-epoch", help="Fresh simulated volumes per epoch."),
    spectrum_match: bool = typer.Option(
        True,
        "--spectrum-match/--no-spectrum-match",
        help="Target-aware "
        "simulation: filter the simulated source to the target's average "
        "power spectrum (wedge, CTF envelope, noise colour), measured on the "
        "unlabelled target.",
    ),
    tilt_match: bool = typer.Option(
        False,
        "--tilt-match/--no-tilt-match",
        help="Target-aware simulation: simulate tilt ranges close to the target's, "
        "estimated from its spectrum, instead of the preset's whole range.",
    ),
    snr_match: bool = typer.Option(
        False,
        "--snr-match/--no-snr-match",
        help="Target-aware simulation: simulate SNRs at which the maps' template matching tells the "
        "classes apart about as clearly as on the target (needs --template-labels).",
    ),
    template_labels: int = typer.Option(
        600,
        "--template-labels",
        help="Label this many target "
        "subtomograms by template matching against the source maps and train "
        "on the confident ones too (0 = off; needs a simulated source).",
    ),
    template_keep: float = typer.Option(
        0.6,
        "--template-keep",
        help="Share of each class's template matches kept as labels, the largest score margins first.",
    ),
    template_rule: str = typer.Option(
        "margin",
        "--template-rule",
        help="Which template matches label the target: margin (the --template-keep share throughout), "
        "agree (that share until self-training starts, then the matches whose class the network "
        "predicts too) or agree-only (no target labels before then).",
    ),
    target_views: bool = typer.Option(
        True,
        "--target-views/--no-target-views",
        help="Show labelled target volumes in wedge-preserving views (180-degree rotations, 1-voxel shifts).",
    ),
    dense_weight: float = typer.Option(
        None,
        "--dense-weight",
        help="Dense supervision: weight of a second loss in which the network also predicts each "
        "simulated particle's clean density on a coarse grid (0 = off, the current default; a weight "
        "needs a simulated source and the cryonet family).",
    ),
    lr_schedule: str = typer.Option(
        "cosine", "--lr-schedule", help="cosine (from --lr down to 5 % of it) or constant."
    ),
    tomograms: list[str] = typer.Option(
        [],
        "--tomograms",
        help="Tomogram MRCs (files, dirs or globs) that "
        "a picks --target refers to by rlnTomoName or file name.",
    ),
    copick_voxel_spacing: float = typer.Option(
        None,
        "--copick-voxel-spacing",
        help="--target copick:CONFIG.json: voxel spacing (A) of the tomograms to crop.",
    ),
    copick_tomo_type: str = typer.Option(
        None, "--copick-tomo-type", help="copick target: reconstruction type (wbp, denoised, ...)."
    ),
    copick_picks: list[str] = typer.Option(
        [], "--copick-picks", help="copick target: picks, OBJECT[:USER[:SESSION]] (* = any; repeatable)."
    ),
    copick_run: list[str] = typer.Option(
        [], "--copick-run", help="copick target: only this run (repeatable; default all)."
    ),
    max_target: int = typer.Option(
        None, "--max-target", help="Use at most this many target volumes (seeded subset)."
    ),
    oracle_target_labels: bool = typer.Option(
        False,
        "--oracle-target-labels",
        help="Let the 'oracle' method read target labels (benchmark ceiling only).",
    ),
    hparam: list[str] = typer.Option(
        [], "--hparam", help="Method hyper-parameter key=value (repeatable), e.g. --hparam mada_weight=0.5."
    ),
    backbone_opt: list[str] = typer.Option(
        [],
        "--backbone-opt",
        help="Backbone keyword key=value (repeatable), e.g. --backbone-opt drop_rate=0.2.",
    ),
    selection: str = typer.Option(
        "im",
        "--selection",
        help="Label-free target criterion for picking "
        "the epoch: im (information maximisation), snd, entropy.",
    ),
    amp: bool = typer.Option(
        True,
        "--amp/--no-amp",
        help="Mixed precision: fp16/bf16 on CUDA; bf16 on CPUs that run it natively (AMX, AVX512-BF16: "
        "2-3x faster). Other CPUs always train in fp32.",
    ),
    threads: int = typer.Option(None, "--threads", help="CPU threads for torch (default: torch's)."),
    no_progress: bool = NO_PROGRESS,
) -> None:
    """Train a domain-adapted classifier on labelled source + unlabelled target data.

    Writes a run directory: config.json, versions.json, metrics.csv (per epoch),
    checkpoints/ (weights only), selection.json (label-free epoch choice), model.pt (the
    selected, calibrated model that `cryoshift export` reads) and plots/. No target label is
    read, except by --method oracle with --oracle-target-labels. Several GPUs: launch with
    `torchrun --nproc_per_node N -m cryoshift.runtime.cli train ...`.

    Example: cryoshift train --source data/sim --target data/exp --method cryoshift --epochs 20 --out runs/a
    """
    from cryoshift.runtime.copick_io import fold_inputs
    from cryoshift.runtime.errors import require_extra

    require_extra("train", "cryoshift train", "torch")
    _check_target_options(target, tomograms, copick_voxel_spacing, copick_tomo_type, copick_picks, copick_run)
    if target is not None:
        (target,) = fold_inputs([target], copick_voxel_spacing, copick_tomo_type, copick_picks, copick_run)
    from cryoshift.training.trainer import TrainConfig, train

    method_kwargs = _parse_kv(hparam, "--hparam")

    config = TrainConfig(
        source=source,
        out=str(out),
        target=target,
        method=method,
        backbone=backbone,
        test_views=test_views,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        seed=seed,
        device=device,
        val_fraction=val_fraction,
        normalisation=normalisation,
        box=box,
        voxel_size=voxel_size,
        sim_preset=sim_preset,
        sim_per_epoch=sim_per_epoch,
        spectrum_match=spectrum_match,
        tilt_match=tilt_match,
        snr_match=snr_match,
        template_labels=template_labels,
        template_keep=template_keep,
        template_rule=template_rule,
        target_views=target_views,
        dense_weight=dense_weight,
        lr_schedule=lr_schedule,
        tomograms=list(tomograms),
        max_target=max_target,
        oracle_target_labels=oracle_target_labels,
        method_kwargs=method_kwargs,
        backbone_kwargs=_parse_kv(backbone_opt, "--backbone-opt"),
        selection_criterion=selection,
        amp=amp,
        threads=threads,
        progress=not no_progress,
    )
    from cryoshift.training.log import progress_on_stderr

    # train() refuses a value of the wrong kind first, then an --hparam key the method does not take
    # (not on --resume: the run's stored method and hyper-parameters win), before any data is read.
    # Its progress (bar, epoch lines) goes to stderr: stdout holds only the results printed below
    with progress_on_stderr():
        result = train(config, resume=resume, log_lines=True)
    if result.model_path is None:  # a non-zero rank under torchrun
        return
    meta = result.metadata
    # the oracle trained on target labels: "without target labels" read as a label-free run
    labels = (result.selection or {}).get("uses_target_labels")
    how = "the run trained on target labels" if labels else "chosen without target labels"
    typer.echo(f"model: {result.model_path}  (epoch {result.selected_epoch} of {len(result.history)}, {how})")
    if meta is not None:
        typer.echo(
            selected_model_line(
                meta.temperature, meta.unknown_threshold, result.history, result.selected_epoch
            )
        )
    # a --source folder's unreadable structure files: said at the start among the notes, and the
    # run then trained without those classes; said again here (and kept in selection.json)
    record = (result.selection or {}).get("source_structures")
    if record:
        from cryoshift.training.data import structures_summary

        line = structures_summary(record)
        if line:
            typer.echo(f"source: {line}")
    # quoted for a shell: a run folder with a space in its name broke the pasted command
    typer.echo(f"next: cryoshift export {shlex.quote(str(result.run_dir))}")


def selected_model_line(
    temperature: float, unknown_threshold: float, history: list[dict[str, Any]], selected_epoch: int | None
) -> str:
    """train's summary line of the selected model: its temperature, unknown threshold and the
    source validation accuracy of the SELECTED epoch (``history``'s row of that epoch).

    Why: the line printed the last epoch's accuracy next to the selected epoch's temperature and
    threshold, so an earlier selected epoch was shown with another epoch's accuracy."""
    row = next((r for r in history if r.get("epoch") == selected_epoch), None)
    accuracy = None if row is None else row.get("src_val_acc")  # absent: no source volume held out
    if row is None:
        shown = "n/a (the selected epoch is not in the history)"
    elif accuracy is None:
        shown = "n/a (no source validation data)"
    else:
        shown = f"{accuracy:.3f}"
    return (
        f"temperature {temperature:.3f}  unknown_threshold {unknown_threshold:.3f}  "
        f"source val accuracy {shown} (selected epoch {selected_epoch})"
    )
