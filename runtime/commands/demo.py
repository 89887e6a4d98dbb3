"""``cryoshift demo``: the whole pipeline end to end on built-in structures, in a few minutes.

simulate -> train -> match -> export -> classify -> score, as one Python function,
:func:`run_demo`. On the built-in structures (no download) it simulates a labelled "experimental"
target (tilt-series reconstruction, crowding, off-centre picks, low SNR, coloured noise, flexible
and partly occupied particles: what separates real tomograms from simple simulation; its physics
is ``cryoshift.training.demo.target_config``) whose labels are held back, then compares the three
things a biologist could do:

* source-only: a network trained on simulation alone;
* template matching against the same structures (wedge-aware constrained cross-correlation);
* ``cryoshift train`` at its defaults (simulation matched to the target, template-matching
  pseudo-labels, self-training), exported to ONNX and run by the PyTorch-free runtime.

Everything it makes is left in ``out_dir`` so a user can look at each stage's files.

The demo crosses every wing (training, export, runtime), so it lives with its command: like every
command module, this one imports only light modules at the top and the wings inside the functions
that need them (docs/design.md, the import rule).

    from cryoshift.runtime.commands.demo import run_demo
    result = run_demo("demo_out", quick=True)
    print(result.table())
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import typer

from cryoshift.runtime.commands._options import NO_PROGRESS

NAME = "demo"
NO_ARGS_IS_HELP = False


# Six built-in classes: a range of sizes and shapes (ribosome/chaperonin/proteasome are
# all large barrels or blobs; rubisco and p97 are compact; the membrane is a slab).
DEMO_STRUCTURES = ["ribosome", "proteasome", "chaperonin", "rubisco", "p97", "membrane"]


@dataclass
class DemoConfig:
    """Sizes and budget of the demo; ``quick`` shrinks everything for tests and smoke runs.

    Training uses ``cryoshift train``'s defaults except the budget (epochs, volumes per epoch,
    pseudo-labels), which is cut so the demo runs in minutes.
    """

    out_dir: str = "demo_out"
    quick: bool = False
    seed: int = 0
    # 32^3 at 10 A, the benchmark's regime: at 16^3 and 20 A the classes are too coarse for any
    # method to convince (README), and bf16 training on CPU made 32^3 fit in minutes
    box_size: int = 32
    voxel_size: float = 10.0
    n_target: int = 600
    epochs: int = 8
    sim_per_epoch: int = 768
    template_labels: int = 300  # target subtomograms the default's template matching labels
    tm_count: int = 150  # target subtomograms the template-matching baseline classifies (it is slow)
    structures: list[str] = field(default_factory=lambda: list(DEMO_STRUCTURES))
    threads: int | None = None
    progress: bool = True


# ``--quick``: a smoke test of every stage in about a minute; accuracies are not meaningful.
QUICK = {
    "n_target": 96,
    "epochs": 2,
    "sim_per_epoch": 128,
    "template_labels": 24,
    "tm_count": 24,
    "box_size": 16,
    "voxel_size": 20.0,  # a 16^3 box is 32 nm: a ribosome still fits
}


TARGET_SEED = 1000  # the target is simulated with --seed + this (the training runs use --seed)


@dataclass
class DemoResult:
    out_dir: str
    class_names: list[str]
    rows: list[dict[str, Any]]  # one per model: model, method, accuracy, macro_f1, n, where
    runtime: dict[str, Any]  # classify throughput (subtomograms/s), backend, outputs
    # wall time per stage; None for a stage re-used from an earlier demo in the folder (``reused``)
    seconds: dict[str, float | None]
    paths: dict[str, str]
    # the stages (keys of ``seconds``) taken from an earlier run in --out, not run: their time was
    # the check that they can be re-used (0.1 s for a training), once recorded as if it were theirs
    reused: list[str] = field(default_factory=list)

    def table(self) -> str:
        """Plain-text summary (the CLI renders the same numbers with rich)."""
        lines = [f"{'model':<34} {'target accuracy':>16} {'macro-F1':>9} {'scored':>7}"]
        for r in self.rows:
            lines.append(
                f"{r['model']:<34} {r['accuracy'] * 100:>15.1f}% {r['macro_f1'] * 100:>8.1f}% {r['n']:>7}"
            )
        lines.append(
            f"runtime ({self.runtime['backend']}): {self.runtime['rate']:,.0f} subtomograms/s "
            f"end to end on {self.runtime['n']} target subtomograms; template matching "
            f"{self.runtime['template_matching_rate']:.1f}/s"
        )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def stage_times(self) -> str:
        """``stages (s): simulate re-used, train source-only 64, ...``: a re-used stage says so
        rather than giving the seconds spent finding it finished."""
        return "stages (s): " + ", ".join(
            f"{k} re-used (earlier run)" if v is None else f"{k} {v:.0f}" for k, v in self.seconds.items()
        )


def _score(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> tuple[float, float]:
    from cryoshift.training.evaluate import classification_metrics

    m = classification_metrics(y_true, y_pred, [str(i) for i in range(k)])
    return m["accuracy"], m["macro_f1"]


def _remove(path: Path) -> None:
    """Remove a stage's output (a folder, a file or a link) before the stage is made again."""
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.is_symlink() or path.exists():
        path.unlink()


def _stale_target(cfg: DemoConfig, tgt_dir: Path) -> str | None:
    """Why the target dataset in ``tgt_dir`` cannot be re-used, or None when it can.

    Re-used only when it opens as a labelled dataset (every file there, of the size dataset.json
    says) made by the demo with this run's sizes, classes and seed: a dataset.json alone was once
    enough, so a folder with volumes.mrc removed failed stages later, and a re-run with another
    --seed or without --quick silently scored the earlier run's target.
    """
    from cryoshift.runtime.dataset import read_dataset
    from cryoshift.runtime.errors import InputError
    from cryoshift.runtime.jsonfile import read_json_object

    try:
        read_dataset(tgt_dir, with_labels=True).close()
        info = read_json_object(tgt_dir / "dataset.json", "dataset description")
    except InputError as exc:
        return str(exc)
    wanted = {
        "generator": "cryoshift.training.demo",
        "n": cfg.n_target,
        "box_size": cfg.box_size,
        "voxel_size": cfg.voxel_size,
        "class_names": list(cfg.structures),
        "seed": cfg.seed + TARGET_SEED,
    }
    return _differences(tgt_dir / "dataset.json", info, wanted)


def _stale_run(run_dir: Path, wanted: dict[str, Any]) -> str | None:
    """Why the training run in ``run_dir`` cannot be re-used, or None when it can: its model.pt must
    load (a truncated or foreign one failed export, or the last stage, after minutes) and must
    have been trained with ``wanted`` (the settings in the checkpoint's own copy of its config),
    and agree with the run's config.json, as export requires."""
    from cryoshift.runtime.errors import InputError
    from cryoshift.training.checkpoint import RUN_MODEL, load_checkpoint
    from cryoshift.training.evaluate import check_made_by_its_run

    model = run_dir / RUN_MODEL
    if not model.is_file():
        return f"{model}: missing (an unfinished run)"
    try:
        _, _, payload = load_checkpoint(model)
        check_made_by_its_run(model)  # export refuses a model.pt its run's config.json contradicts
    except InputError as exc:
        return str(exc)
    config = payload.get("config")
    return _differences(model, config if isinstance(config, dict) else {}, wanted)


def _differences(path: Path, found: dict[str, Any], wanted: dict[str, Any]) -> str | None:
    """``path: made with other settings (key found, not wanted; ...)``, or None when all agree."""
    differ = [f"{k} {found.get(k)!r}, not {v!r}" for k, v in wanted.items() if found.get(k) != v]
    return f"{path}: made with other settings ({'; '.join(differ)})" if differ else None


def _train(
    cfg: DemoConfig, run_dir: Path, target: Path, say: Callable[[str], None], **settings: Any
) -> tuple[Path, bool]:
    """Train (or re-use a finished run in ``run_dir``) on the built-in structures simulated on the
    fly; the run and whether it was re-used (its time is then not a training time)."""
    from cryoshift.training.trainer import TrainConfig, train

    source = ",".join(f"builtin:{s}" for s in cfg.structures)
    # what decides the model (not where it is: a demo folder moved or named another way is re-used)
    wanted = {
        "source": source,
        "box": cfg.box_size,
        "voxel_size": cfg.voxel_size,
        "epochs": cfg.epochs,
        "sim_per_epoch": cfg.sim_per_epoch,
        "seed": cfg.seed,
        **settings,
    }
    if run_dir.exists() or run_dir.is_symlink():
        why = _stale_run(run_dir, wanted)
        if why is None:
            say(f"    re-used: the finished run in {run_dir} (made by an earlier demo)")
            return run_dir, True
        say(f"    not re-used: {why}; training again")
        _remove(run_dir)  # an unfinished, damaged or other run from an earlier demo
    train(
        TrainConfig(
            source=source,
            target=str(target),
            out=str(run_dir),
            box=cfg.box_size,
            voxel_size=cfg.voxel_size,
            epochs=cfg.epochs,
            sim_per_epoch=cfg.sim_per_epoch,
            seed=cfg.seed,
            device="cpu",
            threads=cfg.threads,
            progress=cfg.progress,
            **settings,
        )
    )
    return run_dir, False


def run_demo(
    out_dir: str | Path = "demo_out",
    quick: bool = False,
    seed: int = 0,
    say: Callable[[str], None] | None = None,
    **overrides: Any,
) -> DemoResult:
    """Run the demo into ``out_dir``; ``say`` receives one line per stage (the CLI prints them)."""
    import torch

    from cryoshift.export import export_checkpoint
    from cryoshift.runtime import classify
    from cryoshift.runtime.dataset import read_dataset
    from cryoshift.runtime.hostmem import capped_threads
    from cryoshift.training.demo import simulate_to_dataset, target_config
    from cryoshift.training.evaluate import predict_checkpoint
    from cryoshift.training.simulate.structures import load_structures
    from cryoshift.training.template_matching import template_match

    sizes = {**(QUICK if quick else {}), **overrides}
    cfg = DemoConfig(out_dir=str(out_dir), quick=quick, seed=seed, **sizes)
    _check_options(cfg)
    say = say or (lambda _m: None)
    if cfg.threads:
        cfg.threads = capped_threads(cfg.threads)
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    paths: dict[str, str] = {}
    reused: list[str] = []  # stages found finished in --out (their seconds are not theirs)

    t0 = time.perf_counter()
    tgt_dir = out / "data" / "target"
    say(
        f"1/6 simulating {cfg.n_target} 'experimental' target subtomograms, labels held back "
        f"({len(cfg.structures)} built-in classes, {cfg.box_size}^3 at {cfg.voxel_size:g} A)"
    )
    structures = load_structures(
        [f"builtin:{s}" for s in cfg.structures],
        box_size=cfg.box_size,
        voxel_size=cfg.voxel_size,
        seed=cfg.seed,
    )
    if tgt_dir.exists() or tgt_dir.is_symlink():
        why = _stale_target(cfg, tgt_dir)
        if why is not None:
            # the runs were trained on the target being replaced: they go with it
            say(f"    not re-used: {why}; simulating it again (and training again)")
            _remove(tgt_dir)
            _remove(out / "runs")
    if tgt_dir.exists():
        say(f"    re-used: the target in {tgt_dir} (made by an earlier demo)")
        reused.append("simulate")
    else:
        simulate_to_dataset(structures, target_config(), cfg.n_target, tgt_dir, cfg.seed + TARGET_SEED)
    seconds["simulate"] = time.perf_counter() - t0
    paths["target"] = str(tgt_dir)

    t0 = time.perf_counter()
    say(f"2/6 training source-only: simulation alone ({cfg.epochs} epochs x {cfg.sim_per_epoch})")
    so_run, again = _train(
        cfg,
        out / "runs" / "source-only",
        tgt_dir,
        say,
        method="source-only",
        template_labels=0,
        spectrum_match=False,
    )
    seconds["train source-only"] = time.perf_counter() - t0
    reused += ["train source-only"] if again else []
    t0 = time.perf_counter()
    say(
        f"3/6 training with cryoshift train's defaults, same budget, {cfg.template_labels} target "
        "subtomograms template-matched for pseudo-labels"
    )
    default_run, again = _train(
        cfg, out / "runs" / "default", tgt_dir, say, template_labels=cfg.template_labels
    )
    seconds["train default"] = time.perf_counter() - t0
    reused += ["train default"] if again else []
    paths.update({"run source-only": str(so_run), "run default": str(default_run)})

    # Scoring and the template-matching baseline: the only places target labels are read.
    target = read_dataset(tgt_dir, with_labels=True)
    class_names = list(target.class_names)
    labels = np.asarray(target.labels, dtype=np.int64)
    volumes = np.asarray(target.volumes, dtype=np.float32)
    target.close()
    k = len(class_names)

    t0 = time.perf_counter()
    tm_index = np.sort(
        np.random.default_rng(cfg.seed).choice(len(labels), min(cfg.tm_count, len(labels)), replace=False)
    )
    config = target_config()
    tilt_max = 0.5 * (config.tilt_max[0] + config.tilt_max[1])  # the biologist knows their tilt range
    say(
        f"4/6 template matching {len(tm_index)} target subtomograms against the same structures "
        f"(+-{tilt_max:g} deg wedge)"
    )
    tm = template_match(
        volumes[tm_index], structures.maps, tilt_max, voxel_size=cfg.voxel_size, threads=cfg.threads
    )
    seconds["template matching"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say("5/6 exporting the default model to ONNX")
    # exported every time, so the demo's own earlier export (of a model since retrained: another
    # checkpoint, which export refuses to write beside) is removed first
    _remove(out / "export")
    exported = export_checkpoint(default_run, out / "export")
    onnx_path = next(r.path for r in exported if str(r.path).endswith(".onnx"))
    seconds["export"] = time.perf_counter() - t0
    paths["onnx"] = str(onnx_path)

    t0 = time.perf_counter()
    say("6/6 classifying the whole target with the runtime (onnxruntime, no PyTorch)")
    classify_dir = out / "classify"
    _remove(classify_dir)  # results of an earlier demo: start over so the throughput is this run's
    summary = classify(
        onnx_path, [str(tgt_dir)], classify_dir, backend="cpu", progress=cfg.progress, threads=cfg.threads
    )
    seconds["classify"] = time.perf_counter() - t0
    paths.update(predictions_csv=summary.predictions_csv, predictions_star=summary.predictions_star)

    rows = []
    so = predict_checkpoint(so_run, volumes).logits.argmax(1)
    acc, f1 = _score(labels, so, k)
    rows.append(
        {
            "model": "source-only (PyTorch)",
            "method": "source-only",
            "accuracy": acc,
            "macro_f1": f1,
            "n": len(labels),
            "where": str(so_run / "model.pt"),
        }
    )
    acc, f1 = _score(labels[tm_index], np.asarray(tm.predictions), k)
    rows.append(
        {
            "model": "template matching",
            "method": "template-matching",
            "accuracy": acc,
            "macro_f1": f1,
            "n": len(tm_index),
            "where": "cryoshift.training.template_matching",
        }
    )
    pred = _runtime_predictions(Path(summary.predictions_csv), class_names, len(labels))
    acc, f1 = _score(labels, pred, k)
    rows.append(
        {
            "model": "cryoshift train defaults (ONNX runtime)",
            "method": "default",
            "accuracy": acc,
            "macro_f1": f1,
            "n": len(labels),
            "where": str(onnx_path),
        }
    )
    runtime = {
        "backend": summary.backend,
        "rate": summary.rate,
        "n": summary.classified or summary.total_rows,
        "wall_s": summary.wall_s,
        "template_matching_rate": float(tm.rate),
    }
    timed = {k_: None if k_ in reused else round(v, 1) for k_, v in seconds.items()}
    result = DemoResult(str(out), class_names, rows, runtime, timed, paths, reused)
    from cryoshift.runtime.outfiles import write_text  # never through a link planted in the folder

    write_text(out / "demo.json", json.dumps({**result.to_dict(), "config": asdict(cfg)}, indent=1) + "\n")
    paths["summary"] = str(out / "demo.json")
    return result


def _check_options(cfg: DemoConfig) -> None:
    """Refuse, before any stage runs, what would fail (or be silently ignored) minutes in."""
    from cryoshift.runtime.errors import InputError, missing_reason
    from cryoshift.runtime.hostmem import check_threads
    from cryoshift.training.simulate.config import check_seed

    out = Path(cfg.out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a directory; choose another --out")
    if out.is_symlink() and not out.exists():  # mkdir said "File exists" for a loop or a dangling link
        raise InputError(out, f"{missing_reason(out)}; choose another --out")
    if (out / "demo.json").is_dir():  # written last: it failed after every stage had run
        raise InputError(out / "demo.json", "is a directory; the demo writes its summary there")
    # a negative seed was numpy's "expected non-negative integer", --threads -1 torch's
    # set_num_threads error (tracebacks), and --threads 0 failed at training, after the simulation
    check_seed("--seed", cfg.seed)
    check_threads(cfg.threads)
    if min(cfg.n_target, cfg.epochs, cfg.sim_per_epoch, cfg.tm_count) < 1:
        raise InputError(None, "demo sizes and epochs must be positive")


def _runtime_predictions(csv_path: Path, class_names: list[str], n: int) -> np.ndarray:
    """Predicted class index per dataset row from the runtime's results table (argmax, not "unknown")."""
    import pandas as pd

    from cryoshift.runtime.literal_paths import for_pandas

    table = pd.read_csv(for_pandas(csv_path))
    index = {name: i for i, name in enumerate(class_names)}
    pred = np.full(n, -1, dtype=np.int64)
    rows = table["index"].to_numpy(dtype=np.int64)
    pred[rows] = [index[str(c)] for c in table["best_class"]]
    return pred


def command(
    out: Path = typer.Option(
        Path("demo_out"),
        "--out",
        help="Directory for everything the demo makes (data, runs, ONNX model, predictions, demo.json).",
    ),
    quick: bool = typer.Option(
        False,
        "--quick",
        help="Tiny sizes and 2 epochs: a smoke test in about a minute (numbers are not meaningful).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for simulation and training."),
    threads: int = typer.Option(
        None, "--threads", help="CPU threads for PyTorch and onnxruntime (default: all cores)."
    ),
    no_progress: bool = NO_PROGRESS,
) -> None:
    """Simulate -> train -> template-match -> export -> classify on built-in structures, and score.

    Simulates an 'experimental' target (tilt series, crowding, low SNR, 1/f noise, flexible and
    partly occupied particles) whose labels are held back.

    Trains source-only and `cryoshift train` at its defaults for the same short budget, and runs
    template matching against the same structures; target labels are never read by any of them.

    Exports the default model to ONNX and classifies the target with the PyTorch-free runtime.

    Prints each model's target accuracy (held-back labels) and both throughputs.

    A re-run re-uses finished stages in --out. Several minutes on 2 CPU cores. Needs the 'train' extra.

    Example: cryoshift demo --out demo_out
    """
    from cryoshift.runtime.errors import require_extra

    require_extra("train", "cryoshift demo", "torch", "onnx")
    from rich.console import Console
    from rich.table import Table

    from cryoshift.runtime.terminal import markup_safe

    console = Console(stderr=False)
    result = run_demo(
        out,
        quick=quick,
        seed=seed,
        threads=threads,
        progress=not no_progress,
        say=lambda line: console.print(f"[bold]demo[/bold] {markup_safe(line)}"),  # lines name paths
    )
    table = Table(
        title=f"Target accuracy ({len(result.class_names)} classes, labels held back from training)"
    )
    table.add_column("model")
    table.add_column("target accuracy", justify="right")
    table.add_column("macro-F1", justify="right")
    table.add_column("scored", justify="right")
    for row in result.rows:
        table.add_row(
            row["model"], f"{row['accuracy'] * 100:.1f}%", f"{row['macro_f1'] * 100:.1f}%", str(row["n"])
        )
    console.print(table)
    console.print(
        "(one seed, a short budget: a demonstration, not a measurement; the benchmark over data "
        "draws, with every baseline, is benchmarks/accuracy.py in the source repository)"
    )
    rt = result.runtime
    console.print(
        f"runtime ({rt['backend']}): {rt['rate']:,.0f} subtomograms/s end to end "
        f"({rt['n']} subtomograms in {rt['wall_s']:.2f} s); template matching "
        f"{rt['template_matching_rate']:.1f} subtomograms/s "
        f"({rt['rate'] / max(rt['template_matching_rate'], 1e-9):,.0f}x slower)"
    )
    console.print(result.stage_times())
    paths = {k: markup_safe(v) for k, v in result.paths.items()}
    console.print(
        f"outputs in {markup_safe(result.out_dir)}: model {paths['onnx']}, "
        f"predictions {paths['predictions_csv']}, summary {paths['summary']}"
    )
