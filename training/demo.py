"""The demo pipeline as one Python function: simulate -> train -> export -> classify -> score.

``cryoshift demo`` calls :func:`run_demo`. On the built-in structures (no download) it
simulates a labelled source and a *shifted* target (tilt-series reconstruction, crowding,
off-centre picks, low SNR, coloured noise: what separates real tomograms from simple
simulation), trains a source-only baseline and Cryo-Shift for the same short budget, exports
the Cryo-Shift model to ONNX, classifies the target with the PyTorch-free runtime, and scores
both models with the target labels that were held back from training. Everything it makes is
left in ``out_dir`` so a user can look at each stage's files.

    from cryoshift.training.demo import run_demo
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

# Six built-in classes: a range of sizes and shapes (ribosome/chaperonin/proteasome are
# all large barrels or blobs; rubisco and p97 are compact; the membrane is a slab).
DEMO_STRUCTURES = ["ribosome", "proteasome", "chaperonin", "rubisco", "p97", "membrane"]


@dataclass
class DemoConfig:
    """Sizes and budget of the demo; ``quick`` shrinks everything for tests and smoke runs."""

    out_dir: str = "demo_out"
    quick: bool = False
    seed: int = 0
    box_size: int = 16
    voxel_size: float = 20.0  # Angstrom: a 16^3 box is 32 nm, a ribosome fits
    n_source: int = 1200
    n_target: int = 600
    epochs: int = 6
    batch_size: int = 32
    lr: float = 1e-3
    backbone: str = "cryonet-small"
    structures: list[str] = field(default_factory=lambda: list(DEMO_STRUCTURES))
    threads: int | None = None
    progress: bool = True


# ``--quick``: a smoke test of every stage in about a minute; accuracies are not meaningful.
QUICK = {"n_source": 240, "n_target": 120, "epochs": 2}


def source_config() -> Any:
    """The simple simulation a user trains on: fast model, centred isolated particles, white noise."""
    from cryoshift.training.simulate.config import SimulationConfig

    return SimulationConfig(fidelity="fast", snr=(0.1, 2.0), tilt_max=(55.0, 65.0), defocus_um=(-4.0, -2.0),
                            shift_voxels=0.5, crowding=0.0)


def target_config() -> Any:
    """The "experimental" target: what the simple source simulation leaves out."""
    from cryoshift.training.simulate.config import SimulationConfig

    return SimulationConfig(fidelity="tilt", snr=(0.05, 0.3), tilt_max=(45.0, 50.0), dose_weighting=True,
                            defocus_um=(-5.0, -3.0), shift_voxels=1.5, crowding=0.5, neighbours=(1, 2),
                            noise_alpha=(0.5, 1.0), gradient=(0.0, 0.3))


def simulate_to_dataset(structures: Any, config: Any, n: int, out: Path, seed: int,
                        chunk: int = 64) -> Path:
    """Simulate ``n`` labelled volumes of ``structures`` into a dataset directory, chunk by chunk.

    Labels go into the table as usual; training reads a target's labels only for the oracle,
    and the demo reads them only to score.
    """
    import torch

    from cryoshift.runtime.dataset import DatasetWriter
    from cryoshift.training.simulate.simulator import Simulator

    # Same seed, same device -> same data; a GPU (benchmark gpu profile) simulates much faster.
    sim = Simulator(structures, config, device="cuda" if torch.cuda.is_available() else "cpu", seed=seed)
    meta = {"generator": "cryoshift.training.demo", "seed": seed, "simulation": config.to_dict(),
            "structures": list(structures.sources)}
    with DatasetWriter(out, n, structures.box_size, structures.voxel_size, sim.class_names,
                       contrast=config.contrast, meta=meta) as writer:
        for start in range(0, n, chunk):
            vol, labels, rows = sim.sample(min(chunk, n - start))
            writer.write(vol.cpu().numpy(), labels.cpu().numpy(), rows)
    return out


@dataclass
class DemoResult:
    out_dir: str
    class_names: list[str]
    rows: list[dict[str, Any]]  # one per model: name, method, accuracy, macro_f1, where
    runtime: dict[str, Any]  # classify throughput (subtomograms/s), backend, outputs
    seconds: dict[str, float]  # wall time per stage
    paths: dict[str, str]

    def table(self) -> str:
        """Plain-text summary (the CLI renders the same numbers with rich)."""
        lines = [f"{'model':<28} {'target accuracy':>16} {'macro-F1':>9}"]
        for r in self.rows:
            lines.append(f"{r['model']:<28} {r['accuracy'] * 100:>15.1f}% {r['macro_f1'] * 100:>8.1f}%")
        lines.append(f"runtime ({self.runtime['backend']}): {self.runtime['rate']:,.0f} subtomograms/s "
                     f"end to end on {self.runtime['n']} target subtomograms")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _score(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> tuple[float, float]:
    from cryoshift.training.evaluate import classification_metrics

    m = classification_metrics(y_true, y_pred, [str(i) for i in range(k)])
    return m["accuracy"], m["macro_f1"]


def run_demo(out_dir: str | Path = "demo_out", quick: bool = False, seed: int = 0,
             say: Callable[[str], None] | None = None, **overrides: Any) -> DemoResult:
    """Run the demo into ``out_dir``; ``say`` receives one line per stage (the CLI prints them)."""
    import torch

    from cryoshift.export import export_checkpoint
    from cryoshift.runtime.classify import classify
    from cryoshift.runtime.dataset import read_dataset
    from cryoshift.runtime.errors import InputError
    from cryoshift.training.evaluate import predict_checkpoint
    from cryoshift.training.simulate.structures import load_structures
    from cryoshift.training.trainer import TrainConfig, train

    sizes = {**(QUICK if quick else {}), **overrides}
    cfg = DemoConfig(out_dir=str(out_dir), quick=quick, seed=seed, **sizes)
    if Path(cfg.out_dir).exists() and not Path(cfg.out_dir).is_dir():
        raise InputError(cfg.out_dir, "exists and is not a directory; choose another --out")
    if min(cfg.n_source, cfg.n_target, cfg.epochs) < 1:
        raise InputError(None, "demo sizes and epochs must be positive")
    say = say or (lambda _m: None)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    paths: dict[str, str] = {}

    t0 = time.perf_counter()
    src_dir, tgt_dir = out / "data" / "source", out / "data" / "target"
    say(f"1/5 simulating {cfg.n_source} labelled source and {cfg.n_target} shifted target subtomograms "
        f"({len(cfg.structures)} built-in classes, {cfg.box_size}^3)")
    structures = load_structures([f"builtin:{s}" for s in cfg.structures], box_size=cfg.box_size,
                                 voxel_size=cfg.voxel_size, seed=cfg.seed)
    if not (src_dir / "dataset.json").is_file():
        simulate_to_dataset(structures, source_config(), cfg.n_source, src_dir, cfg.seed)
    if not (tgt_dir / "dataset.json").is_file():
        simulate_to_dataset(structures, target_config(), cfg.n_target, tgt_dir, cfg.seed + 1000)
    seconds["simulate"] = time.perf_counter() - t0
    paths.update(source=str(src_dir), target=str(tgt_dir))

    runs: dict[str, Path] = {}
    for method in ("source-only", "cryoshift"):
        t0 = time.perf_counter()
        run_dir = out / "runs" / method
        step = 2 if method == "source-only" else 3
        say(f"{step}/5 training {method} ({cfg.epochs} epochs, {cfg.backbone})")
        if not (run_dir / "model.pt").is_file():
            if run_dir.exists():
                import shutil

                shutil.rmtree(run_dir)  # an unfinished run from an interrupted demo
            train(TrainConfig(source=str(src_dir), target=str(tgt_dir), out=str(run_dir), method=method,
                              backbone=cfg.backbone, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                              seed=cfg.seed, device="cpu", threads=cfg.threads, progress=cfg.progress))
        runs[method] = run_dir
        seconds[f"train {method}"] = time.perf_counter() - t0
        paths[f"run {method}"] = str(run_dir)

    t0 = time.perf_counter()
    say("4/5 exporting the Cryo-Shift model to ONNX")
    exported = export_checkpoint(runs["cryoshift"], out / "export")
    onnx_path = next(r.path for r in exported if str(r.path).endswith(".onnx"))
    seconds["export"] = time.perf_counter() - t0
    paths["onnx"] = str(onnx_path)

    t0 = time.perf_counter()
    say("5/5 classifying the target with the runtime (onnxruntime, no PyTorch)")
    classify_dir = out / "classify"
    if classify_dir.exists():  # results of an earlier demo: start over so the throughput is this run's
        import shutil

        shutil.rmtree(classify_dir)
    summary = classify(onnx_path, [str(tgt_dir)], classify_dir, backend="cpu", progress=cfg.progress,
                       threads=cfg.threads)
    seconds["classify"] = time.perf_counter() - t0
    paths.update(predictions_csv=summary.predictions_csv, predictions_star=summary.predictions_star)

    # Scoring: the only place target labels are read.
    target = read_dataset(tgt_dir, with_labels=True)
    class_names = list(target.class_names)
    labels = np.asarray(target.labels, dtype=np.int64)
    k = len(class_names)
    rows = []
    so = predict_checkpoint(runs["source-only"], np.asarray(target.volumes, dtype=np.float32))
    acc, f1 = _score(labels, so.logits.argmax(1), k)
    rows.append({"model": "source-only (PyTorch)", "method": "source-only", "accuracy": acc, "macro_f1": f1,
                 "where": str(runs["source-only"] / "model.pt")})
    pred = _runtime_predictions(Path(summary.predictions_csv), class_names, len(labels))
    acc, f1 = _score(labels, pred, k)
    rows.append({"model": "cryoshift (ONNX runtime)", "method": "cryoshift", "accuracy": acc, "macro_f1": f1,
                 "where": str(onnx_path)})
    target.close()
    runtime = {"backend": summary.backend, "rate": summary.rate,
               "n": summary.classified or summary.total_rows, "wall_s": summary.wall_s}
    result = DemoResult(str(out), class_names, rows, runtime, {k_: round(v, 1) for k_, v in seconds.items()},
                        paths)
    (out / "demo.json").write_text(json.dumps({**result.to_dict(), "config": asdict(cfg)}, indent=1) + "\n")
    paths["summary"] = str(out / "demo.json")
    return result


def _runtime_predictions(csv_path: Path, class_names: list[str], n: int) -> np.ndarray:
    """Predicted class index per dataset row from the runtime's results table (argmax, not "unknown")."""
    import pandas as pd

    table = pd.read_csv(csv_path)
    index = {name: i for i, name in enumerate(class_names)}
    pred = np.full(n, -1, dtype=np.int64)
    rows = table["index"].to_numpy(dtype=np.int64)
    pred[rows] = [index[str(c)] for c in table["best_class"]]
    return pred
