"""``cryoshift simulate``: simulate a labelled dataset of subtomograms."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cryoshift.runtime.commands._options import NO_PROGRESS
from cryoshift.runtime.errors import InputError, check_out_folder, require_extra
from cryoshift.runtime.hostmem import capped_threads, check_threads

NAME = "simulate"
# Names of the built-in structures, for --help (the training wing is not imported here; a test keeps
# this list equal to cryoshift.training.simulate.BUILTIN_NAMES).
BUILTIN_NAMES = (
    "ribosome",
    "proteasome",
    "chaperonin",
    "rubisco",
    "apoferritin",
    "filament",
    "p97",
    "globular",
    "membrane",
)
# Names of the simulation presets, for --help (a test keeps it equal to training.simulate.PRESETS)
PRESET_NAMES = ("paper", "realistic", "broad", "tilt", "wide", "clean")
DEFAULT_BATCH = 256  # --batch-size when not given: lowered to fit the memory available
NO_ARGS_IS_HELP = True

Pair = Optional[tuple[float, float]]  # noqa: UP045 (typer reads the annotation at run time)


def _check_options(device: str, threads: int | None, resolution: float | None) -> None:
    """Refuse options torch or the density code would take badly, before anything is read: an
    unknown --device (``CPU``, ``gpu``) and --threads -1 ended in torch tracebacks, --threads 0 was
    ignored, and --resolution 0 or nan was taken for the default or failed inside gemmi."""
    import math

    from cryoshift.runtime.contract import CUDA_DEVICE

    if not (device == "cpu" or CUDA_DEVICE.fullmatch(device)):
        raise InputError(None, f"--device must be cpu, cuda or cuda:N, not {device!r}")
    check_threads(threads)
    if resolution is not None and not (math.isfinite(resolution) and resolution > 0):
        raise InputError(None, f"--resolution must be a positive number of Angstrom, not {resolution}")


def _check_shift(shift: float, box: int, where: str | None = None) -> None:
    """Refuse a shift (--shift or a --config's shift_voxels) that can move the particle's centre out
    of the box: such volumes hold mostly noise or a neighbour's edge but keep their class label.
    ``where``: the --config file the shift came from."""
    if shift >= box / 2:
        raise InputError(
            where,
            f"a shift of {shift:g} voxels can move particles out of the {box}-voxel box; "
            f"keep --shift under {box / 2:g} (a few voxels is typical)",
        )


def _check_sizes(voxel_size: float, n: int, resolution: float | None) -> None:
    """Refuse a --voxel-size, --n or --resolution outside the accepted ranges (config.BOUNDS, where
    the config fields' ranges are too; --box is checked by load_structures): --voxel-size 1e-6 made
    every built-in the same map, --n 10**12 ended in mrcfile's traceback."""

    from cryoshift.training.simulate.config import check_bound

    # every value, nan, inf and 0 too: load_structures' "voxel size must be a positive number"
    # named neither the option nor the range
    check_bound("voxel_size", voxel_size)
    check_bound("n", n)
    if resolution is not None:
        check_bound("resolution", resolution)


def _check_free_folder(out_dir: Path) -> None:
    """Refuse an OUT_DIR that already holds a dataset: the writer overwrote volumes.mrc and the
    tables of an earlier dataset without a word. Or a training run: the dataset was written in
    among its config.json, checkpoints and model.pt, and the folder then read as either."""
    from cryoshift.training.data import dataset_files, dataset_kind

    found = dataset_files(out_dir)
    if found:
        raise InputError(
            out_dir,
            f"already holds {dataset_kind(found)} ({', '.join(found)}); choose another OUT_DIR, or "
            "remove it to simulate here",
        )
    run_files = _training_run_files(out_dir)
    if run_files:
        raise InputError(
            out_dir,
            f"holds a training run ({', '.join(run_files)}); a dataset written there would mix with "
            "it: choose another OUT_DIR",
        )


def _training_run_files(folder: Path) -> list[str]:
    """What marks ``folder`` as a training run: its config.json beside model.pt or checkpoints/
    (a config.json alone may be anyone's)."""
    from cryoshift.training.checkpoint import RUN_MODEL
    from cryoshift.training.run import CHECKPOINTS

    if not (folder / "config.json").is_file():
        return []
    marks = [name for name in (RUN_MODEL, CHECKPOINTS) if (folder / name).exists()]
    return ["config.json", *marks] if marks else []


def _check_disk_space(out_dir: Path, n: int, box: int) -> None:
    """Refuse a dataset larger than the free space where it goes, before the work: the volumes are
    written into a file made at full size up front, which fails (or fills the disk) only later."""
    import shutil

    from cryoshift.runtime.hostmem import format_bytes

    need = n * box**3 * 4  # float32 volumes; the tables are small next to them
    folder = next((f for f in (out_dir, *out_dir.parents) if f.is_dir()), None)
    if folder is None:
        return
    try:
        free = shutil.disk_usage(folder).free
    except OSError:  # no answer: the writer says what goes wrong
        return
    if need > free:
        raise InputError(
            out_dir,
            f"the dataset needs {format_bytes(need)} ({n} volumes of {box}^3 float32) but only "
            f"{format_bytes(free)} is free there; lower --n or --box, or choose another OUT_DIR",
        )


def _note_untrainable_box(box: int) -> None:
    """Say that ``train`` cannot use a dataset of boxes under the built-in backbones' minimum.

    Why: simulate takes boxes from 8, which have other uses (tests, figures, other tools), but
    train refused such a dataset only after reading it and its target; the user learnt it after
    both runs. (A plugin backbone may take smaller boxes, hence "built-in".)"""
    import sys

    from cryoshift.training.backbones._base import MIN_BOX

    if box < MIN_BOX:
        print(
            f"cryoshift: note: --box {box} is below the {MIN_BOX} voxels the built-in backbones need: "
            "`cryoshift train` cannot train on this dataset",
            file=sys.stderr,
        )


def _check_classes(structs, sources: list[str]) -> None:
    """Refuse a dataset of one class: a classifier needs two, and ``train`` refused it only later."""
    if len(structs) >= 2:
        return
    skipped = f"; {len(structs.skipped)} skipped" if structs.skipped else ""
    raise InputError(
        ", ".join(sources),
        f"gives one class ({structs.names[0]}{skipped}): a classifier needs at least two classes; "
        "add structures to --structures (e.g. builtin:NAME, maps or models)",
    )


def _check_volume_count(n: int, structs) -> None:
    """Refuse an --n below the number of classes: each volume's class is drawn at random, so some
    class surely got no volume, and train refused the dataset ("class X has no volumes") only later.
    (A larger --n can still leave a class empty by chance: simulate_dataset warns then.)"""
    k = len(structs)
    if n >= k:
        return
    shown = ", ".join(structs.names[:4]) + (f" and {k - 4} more" if k > 4 else "")
    raise InputError(
        None,
        f"--n {n} is fewer than the {k} classes ({shown}): some class would get no volume, and train "
        f"refuses such a dataset; use --n {k} or more (hundreds per class to train)",
    )


def _note_positive_defocus(cfg, defocus: Pair, config: Path | None) -> None:
    """One note when the defocus range reaches above 0 (overfocus here): CTFFIND and RELION write
    underfocus as positive, and a range copied from them was simulated as overfocus without a word."""
    import sys

    lo, hi = cfg.defocus_um
    if hi <= 0 or not cfg.ctf:
        return
    if defocus is not None:
        given = f"--defocus {lo:g} {hi:g}"
    elif config is not None:
        given = f"{config}: defocus_um [{lo:g}, {hi:g}]"
    else:
        given = f"defocus {lo:g} to {hi:g} um"
    fix = f"give --defocus {-hi:g} {-lo:g}" if lo >= 0 else "keep both ends at or below 0"
    print(
        f"cryoshift: note: {given} reaches {hi:g} um, overfocus: here negative defocus is underfocus "
        f"(CTFFIND and RELION write underfocus as positive); for underfocus {fix}",
        file=sys.stderr,
        flush=True,
    )


def _fit_batch(
    batch_size: int | None, n: int, box: int, classes: int, cfg, device: str, note: bool = True
) -> int:
    """The batch to simulate with: refuse an explicit --batch-size whose batch cannot fit the
    memory available (host, and the GPU's with --device cuda), lower the default to fit with a
    note (``note``). Why: 256 volumes at --box 512 are 128 GiB before the simulator's working
    buffers, and what does not fit died in the OOM killer ("Killed") after the stack was made."""
    import sys

    from cryoshift.runtime.hostmem import format_bytes
    from cryoshift.training.simulate.memory import batch_memory, largest_batch, memory_available, shortfall

    asked = DEFAULT_BATCH if batch_size is None else batch_size
    k = min(asked, n)  # the largest batch the run makes
    available = memory_available(device)
    short = shortfall(batch_memory(k, box, classes, cfg, device), *available)
    if short is None:
        return asked
    kind, need, have = short
    fit = largest_batch(k, box, classes, cfg, device, available)
    varies = _varies(cfg)
    if fit == 0:
        kind, need, have = shortfall(batch_memory(1, box, classes, cfg, device), *available)
        raise InputError(
            None,
            f"one volume at --box {box} needs {format_bytes(need)} of {kind} memory ({box}^3 float32 "
            f"and the simulator's working buffers{varies}), but {format_bytes(have)} is available; "
            f"lower --box{' (or simulate without structural variability)' if varies else ''}",
        )
    detail = f"{k} volumes of {box}^3 float32 and the simulator's working buffers{varies}"
    if batch_size is not None:
        raise InputError(
            None,
            f"--batch-size {batch_size} at --box {box} needs {format_bytes(need)} of {kind} memory "
            f"({detail}), but {format_bytes(have)} is available; use --batch-size {fit} or less",
        )
    if not note:
        return fit
    print(
        f"cryoshift: note: --batch-size lowered from {asked} to {fit} to fit the memory available "
        f"({k} volumes at --box {box} need {format_bytes(need)} of {kind} memory, "
        f"{format_bytes(have)} is available)",
        file=sys.stderr,
        flush=True,
    )
    return fit


def _varies(cfg) -> str:
    """Words for the bank of structural variants in a memory message, when the config makes one."""
    from cryoshift.training.simulate.memory import varies

    return ", with the structural variability's variants of every class" if varies(cfg) else ""


def command(
    out_dir: Path = typer.Argument(
        ...,
        help="Dataset directory to write (volumes.mrc, particles.csv, dataset.json); one that holds a "
        "dataset already is refused.",
    ),
    structures: list[str] = typer.Option(
        ["builtin"],
        "--structures",
        "-s",
        help="Structure sources, at least two classes "
        "(repeatable or comma-separated; an existing file whose name holds a comma is taken whole): "
        "'builtin', 'builtin:NAME', an MRC/CCP4 "
        "map (gzip or bzip2 ok), a PDB/mmCIF model (gzip ok; of several models the first), or a directory "
        "of those; class names are the file names. Built-ins: "
        f"{', '.join(BUILTIN_NAMES)}.",
    ),
    n: int = typer.Option(
        2000, "--n", help="Number of subtomograms, at least the number of classes (each drawn at random)."
    ),
    box: int = typer.Option(32, "--box", help="Box size in voxels."),
    voxel_size: float = typer.Option(10.0, "--voxel-size", help="Voxel size in Angstrom."),
    preset: str = typer.Option("paper", "--preset", help="Starting ranges: " + ", ".join(PRESET_NAMES) + "."),
    config: Path | None = typer.Option(
        None,
        "--config",
        help="JSON file of SimulationConfig fields; applied on top of --preset, under the options below.",
    ),
    fidelity: str | None = typer.Option(
        None,
        "--fidelity",
        help="fast (Fourier-space model) or tilt (tilt series + weighted back-projection).",
    ),
    snr: Pair = typer.Option(None, "--snr", help="SNR range LO HI, drawn log-uniform (paper 0.03 10)."),
    tilt_max: Pair = typer.Option(
        None, "--tilt-max", help="Tilt range +-LO..HI degrees (wedge = 90 - tilt); paper 40 90."
    ),
    tilt_step: Pair = typer.Option(None, "--tilt-step", help="Tilt step range in degrees."),
    defocus: Pair = typer.Option(
        None, "--defocus", help="Defocus range in um, negative = underfocus (paper -12 0)."
    ),
    cs: Pair = typer.Option(None, "--cs", help="Spherical aberration range in mm (paper 1.5 3.0)."),
    astigmatism: Pair = typer.Option(
        None,
        "--astigmatism",
        help="Astigmatism range in um (difference of the principal defoci; random direction).",
    ),
    amplitude_contrast: Pair = typer.Option(
        None, "--amplitude-contrast", help="Amplitude contrast range (default 0.07 0.07)."
    ),
    voltage: Pair = typer.Option(None, "--voltage", help="Voltage range in kV (default 300 300)."),
    bfactor: Pair = typer.Option(None, "--bfactor", help="B-factor envelope range in A^2."),
    dose: Pair = typer.Option(None, "--dose", help="Total dose range of the tilt series, e-/A^2."),
    dose_weighting: bool | None = typer.Option(
        None, "--dose-weighting/--no-dose-weighting", help="Attenuate each tilt by its accumulated dose."
    ),
    dose_order: str | None = typer.Option(
        None, "--dose-order", help="Acquisition order: dose-symmetric, bidirectional or sequential."
    ),
    shift: float | None = typer.Option(None, "--shift", help="Maximum off-centre shift per axis, voxels."),
    crowding: float | None = typer.Option(
        None, "--crowding", help="Probability of neighbouring particles in the box."
    ),
    neighbours: tuple[int, int] | None = typer.Option(
        None, "--neighbours", help="Number of neighbours LO HI when crowded (default 1 3)."
    ),
    noise_alpha: Pair = typer.Option(
        None, "--noise-alpha", help="Noise colour range: power ~ 1/f^alpha (0 = white)."
    ),
    gradient: Pair = typer.Option(None, "--gradient", help="Background ramp amplitude range (x signal std)."),
    invert: float | None = typer.Option(
        None, "--invert", help="Probability of inverting a subtomogram's contrast."
    ),
    contrast: str | None = typer.Option(
        None, "--contrast", help="Output convention: dark (like tomograms, default) or light."
    ),
    resolution: float | None = typer.Option(
        None,
        "--resolution",
        help="Resolution (A) of densities computed from atomic models (default 2 voxels).",
    ),
    seed: int = typer.Option(
        0,
        "--seed",
        help="Seed of the classes, imaging parameters and noise: the same seed, structures, options and "
        "--n give the same dataset, whatever --batch-size or --threads (byte for byte on the same "
        "CPU and library versions; on a GPU to its float rounding).",
    ),
    structure_seed: int = typer.Option(
        0,
        "--structure-seed",
        help="Seed of the built-in structures' details; keep it fixed so train and test sets share classes.",
    ),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
    batch_size: int | None = typer.Option(
        None,
        "--batch-size",
        help=f"Subtomograms simulated per batch (default {DEFAULT_BATCH}, lowered to fit the memory "
        "available; a given one that cannot fit is refused). Sets the memory used, not the data.",
    ),
    threads: int | None = typer.Option(None, "--threads", help="CPU threads for torch."),
    no_progress: bool = NO_PROGRESS,
) -> None:
    """Simulate a labelled dataset of subtomograms (domain-randomised, Cryo-Shift style).

    Each subtomogram gets a uniformly random rotation, a small shift, a CTF, a missing wedge
    and noise at an SNR drawn from the ranges; every drawn value is written to particles.csv,
    and dataset.json records the full config, seed, structure sources and versions.

    Example:

        cryoshift simulate sim32 --structures builtin --n 2000 --box 32 --voxel-size 10 --snr 0.03 10
    """
    require_extra("train", "cryoshift simulate", "torch")
    import torch

    from cryoshift.training.simulate import PRESETS, SimulationConfig, load_structures, simulate_dataset
    from cryoshift.training.simulate.config import BOUNDS, Origin, check_seed
    from cryoshift.training.simulate.dataset import simulate_lock
    from cryoshift.training.simulate.structures import split_sources

    if preset not in PRESETS:
        raise InputError(None, f"unknown --preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if batch_size is not None and batch_size <= 0:  # --n is checked against its range below
        raise InputError(None, f"--batch-size must be at least 1, not {batch_size}")
    _check_options(device, threads, resolution)
    _check_sizes(voxel_size, n, resolution)
    check_seed("--seed", seed)
    check_seed("--structure-seed", structure_seed)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(None, "--device cuda requested but no CUDA GPU is available")
    threads = capped_threads(threads)
    if threads:
        torch.set_num_threads(threads)
    cfg = PRESETS[preset]
    if config is not None:
        cfg = SimulationConfig.from_json(config, base=cfg)
    options = dict(
        fidelity=fidelity,
        snr=snr,
        tilt_max=tilt_max,
        tilt_step=tilt_step,
        defocus_um=defocus,
        cs_mm=cs,
        voltage_kv=voltage,
        bfactor=bfactor,
        dose=dose,
        dose_weighting=dose_weighting,
        dose_order=dose_order,
        astigmatism_um=astigmatism,
        amplitude_contrast=amplitude_contrast,
        shift_voxels=shift,
        crowding=crowding,
        neighbours=neighbours,
        noise_alpha=noise_alpha,
        gradient=gradient,
        invert_contrast=invert,
        contrast=contrast,
    )
    # errors name the option that set a bad value, or the --config file (not "simulation config")
    origin = Origin.of(options, config)
    cfg = cfg.with_options(options, config)
    check_out_folder(out_dir, "OUT_DIR", "the dataset is written to")  # before large models are read
    # the lock simulate_dataset holds, taken here before the free-folder check (it goes on under it)
    with simulate_lock(out_dir) as held:
        _check_free_folder(out_dir)
        if BOUNDS["box"].lo <= box <= BOUNDS["box"].hi:  # before the structures are made (many files: long)
            _check_disk_space(out_dir, n, box)  # needs only n and box
            _fit_batch(batch_size, n, box, 2, cfg, device, note=False)  # (two classes or more, said later)
            _note_untrainable_box(box)
        sources = split_sources(structures)
        structs = load_structures(sources, box, voxel_size, seed=structure_seed, resolution=resolution)
        _check_classes(structs, sources)
        _check_shift(
            cfg.shift_voxels, box, origin.path("shift_voxels")
        )  # after load_structures: box too small
        _check_volume_count(n, structs)
        batch = _fit_batch(batch_size, n, box, len(structs), cfg, device)
        _note_positive_defocus(cfg, defocus, config)
        held.keep_folder()  # the checks passed: a failure from here leaves the folder, as it always did
        path = simulate_dataset(
            out_dir,
            structs,
            cfg,
            n,
            seed=seed,
            batch_size=batch,
            device=device,
            progress=not no_progress,
            origin=origin,
        )
    from cryoshift.runtime.terminal import visible  # class names come from structure files and configs

    typer.echo(
        visible(f"wrote {n} subtomograms of {len(structs)} classes ({', '.join(structs.names)}) to {path}")
    )
