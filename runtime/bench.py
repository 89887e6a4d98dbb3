"""How fast this machine classifies, and how fast the pipeline alone can feed a model.

Two numbers decide deployment: the engine's inference-only throughput (a batch already in
memory, :func:`inference_rate`) and the pipeline's feed rate with a null model (read, crop,
batch, write rows; no inference, :func:`pipeline_rate`) for a stack, for single files and for a
tomogram with picks (:func:`make_bench_data`). End to end can never beat the smaller of the two.
``cryoshift bench`` (runtime/commands/bench.py) prints :func:`run_bench`; ``benchmarks/``
scripts use the same functions.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

KINDS = ("stack", "files", "tomogram")


def make_bench_data(root: Path, n: int, box: int, voxel_size: float, seed: int = 0) -> dict[str, Any]:
    """Synthetic inputs of every kind with ``n`` subtomograms each (noise; speed does not care)."""
    import numpy as np
    import pandas as pd

    from cryoshift.runtime.mrc import write_stack, write_volume

    rng = np.random.default_rng(seed)
    vols = rng.normal(0, 1, (n, box, box, box)).astype(np.float32)
    root.mkdir(parents=True, exist_ok=True)
    write_stack(root / "stack.mrcs", vols, voxel_size=voxel_size)
    files = root / "files"
    files.mkdir(exist_ok=True)
    for i in range(n):
        write_volume(files / f"sub_{i:06d}.mrc", vols[i], voxel_size=voxel_size)
    side = max(4 * box, round((n * box**3 / 2) ** (1 / 3)) + box)  # picks overlap, as in real data
    tomo = rng.normal(0, 1, (max(2 * box, side // 2), side, side)).astype(np.float32)
    write_volume(root / "bench_tomo.mrc", tomo, voxel_size=voxel_size)
    nz, ny, nx = tomo.shape
    picks = pd.DataFrame(
        {
            "tomo_name": "bench_tomo",
            "x": rng.uniform(0, nx - 1, n).round(1),
            "y": rng.uniform(0, ny - 1, n).round(1),
            "z": rng.uniform(0, nz - 1, n).round(1),
        }
    )
    picks.to_csv(root / "picks.csv", index=False)
    return {
        "stack": {"inputs": [str(root / "stack.mrcs")], "tomograms": []},
        "files": {"inputs": [str(files)], "tomograms": []},
        "tomogram": {"inputs": [str(root / "picks.csv")], "tomograms": [str(root / "bench_tomo.mrc")]},
        "n": n,
        "box": box,
    }


def inference_rate(model: Any, batch_size: int, repeats: int = 3, batches: int = 4, seed: int = 0) -> dict:
    """Median subtomograms/s of ``model.predict`` on an in-memory batch (after two warm-up calls)."""
    import numpy as np

    box = model.metadata.box_size
    batch = np.random.default_rng(seed).normal(0, 1, (batch_size, 1, box, box, box)).astype(np.float32)
    for _ in range(2):
        model.predict(batch)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(batches):
            model.predict(batch)
        rates.append(batches * batch_size / (time.perf_counter() - t0))
    return {"rate": statistics.median(rates), "repeats": rates}


def pipeline_rate(
    model: Any,
    data: dict[str, Any],
    kind: str,
    batch_size: int,
    workers: int,
    repeats: int = 3,
    processes: bool = False,
) -> dict:
    """Median subtomograms/s of a local run's plan, read, infer and write steps (runtime/run.py;
    fsync'ed ledgers, no predictions.star or manifest), from planning to the last row."""
    import dataclasses

    from cryoshift.runtime.ledger import RunLedgers
    from cryoshift.runtime.pipeline import result_columns
    from cryoshift.runtime.run import LocalInference, RunOptions, plan_run
    from cryoshift.runtime.sources import VolumeCache
    from cryoshift.runtime.summary import output_names

    rates, stats = [], None
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="cryoshift-bench-") as tmp:
            t0 = time.perf_counter()
            opts = RunOptions(
                data[kind]["inputs"], Path(tmp), tomograms=data[kind]["tomograms"], progress=False
            )
            inference = LocalInference(model, batch_size, workers, reader_processes=processes)
            cache = VolumeCache()
            _, items, _ = plan_run(model.metadata, opts, cache)
            inference.prepare(items, cache, opts)
            columns = result_columns(model.metadata.class_names)
            with RunLedgers(output_names(opts.out_dir, None), columns) as ledgers:
                stats = inference.run(items, ledgers, opts)
            rates.append(dataclasses.replace(stats, wall_s=time.perf_counter() - t0).rate)
    assert stats is not None
    return {
        "rate": statistics.median(rates),
        "repeats": rates,
        "errors": stats.errors,
        "read_s": stats.read_s,
        "compute_s": stats.compute_s,
        "wait_s": stats.wait_s,
    }


def run_bench(
    model_path: Path,
    backend: str = "auto",
    batch_size: int = 64,
    box: int | None = None,
    n: int = 256,
    workers: int = 2,
    repeats: int = 3,
    threads: int | None = None,
    work_dir: Path | None = None,
    processes: bool = False,
) -> dict[str, Any]:
    """Inference-only rate of the model and the null-model feed rate per input kind."""
    import dataclasses

    from cryoshift.runtime.backends import load_model, null_model

    model = load_model(model_path, backend, batch_size=batch_size, threads=threads)
    result: dict[str, Any] = {
        "model": str(model_path),
        "backend": model.description,
        "batch_size": batch_size,
        "n": n,
        "workers": workers,
        "repeats": repeats,
    }
    result["inference"] = inference_rate(model, batch_size, repeats)
    feed_meta = dataclasses.replace(model.metadata, box_size=box or model.metadata.box_size)
    result["feed_box"] = feed_meta.box_size
    result["model_box"] = model.metadata.box_size
    null = null_model(feed_meta, batch_size=batch_size)
    with tempfile.TemporaryDirectory(prefix="cryoshift-bench-data-", dir=work_dir) as tmp:
        data = make_bench_data(Path(tmp), n, feed_meta.box_size, feed_meta.voxel_size)
        result["feed"] = {
            kind: pipeline_rate(null, data, kind, batch_size, workers, repeats, processes) for kind in KINDS
        }
    return result
