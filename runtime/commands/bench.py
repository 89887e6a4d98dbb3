"""``cryoshift bench``: how fast this machine classifies, and how fast the pipeline alone can feed.

Two numbers decide deployment: the engine's inference-only throughput (a batch already in
memory) and the pipeline's feed rate with a null model (read, crop, batch, write rows; no
inference) for a stack, for single files and for a tomogram with picks. End to end can never
beat the smaller of the two. The measuring functions are shared with
``benchmarks/throughput.py``.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import typer

from cryoshift.runtime.commands._options import Backend

NAME = "bench"
NO_ARGS_IS_HELP = True
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
    picks = pd.DataFrame({"tomo_name": "bench_tomo", "x": rng.uniform(0, nx - 1, n).round(1),
                          "y": rng.uniform(0, ny - 1, n).round(1), "z": rng.uniform(0, nz - 1, n).round(1)})
    picks.to_csv(root / "picks.csv", index=False)
    return {"stack": {"inputs": [str(root / "stack.mrcs")], "tomograms": []},
            "files": {"inputs": [str(files)], "tomograms": []},
            "tomogram": {"inputs": [str(root / "picks.csv")], "tomograms": [str(root / "bench_tomo.mrc")]},
            "n": n, "box": box}


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


def pipeline_rate(model: Any, data: dict[str, Any], kind: str, batch_size: int, workers: int,
                  repeats: int = 3, processes: bool = False) -> dict:
    """Median subtomograms/s of the whole pipeline (plan, read, batch, model, fsync'ed rows)."""
    from cryoshift.runtime.ledger import ERROR_COLUMNS, Ledger
    from cryoshift.runtime.pipeline import result_columns, run_pipeline
    from cryoshift.runtime.sources import VolumeCache, plan_inputs

    meta = model.metadata
    rates, stats = [], None
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="cryoshift-bench-") as tmp:
            t0 = time.perf_counter()
            cache = VolumeCache()
            plan = plan_inputs(data[kind]["inputs"], meta.box_size, meta.voxel_size, meta.contrast,
                               tomograms=data[kind]["tomograms"], cache=cache)
            with Ledger(Path(tmp) / "p.csv", result_columns(meta.class_names)) as rows, \
                    Ledger(Path(tmp) / "e.csv", ERROR_COLUMNS) as errs:

                def write(r: list, e: list) -> None:
                    rows.append(r)
                    errs.append(e)

                stats = run_pipeline(model, plan.items, write, batch_size=batch_size, workers=workers,
                                     cache=cache, progress=False, reader_processes=processes)
            rates.append((stats.done + stats.errors) / (time.perf_counter() - t0))
    assert stats is not None
    return {"rate": statistics.median(rates), "repeats": rates, "errors": stats.errors,
            "read_s": stats.read_s, "compute_s": stats.compute_s, "wait_s": stats.wait_s}


def run_bench(model_path: Path, backend: str = "auto", batch_size: int = 64, box: int | None = None,
              n: int = 256, workers: int = 2, repeats: int = 3, threads: int | None = None,
              work_dir: Path | None = None, processes: bool = False) -> dict[str, Any]:
    """Inference-only rate of the model and the null-model feed rate per input kind."""
    import dataclasses

    from cryoshift.runtime.backends import load_model, null_model

    model = load_model(model_path, backend, batch_size=batch_size, threads=threads)
    result: dict[str, Any] = {"model": str(model_path), "backend": model.description,
                              "batch_size": batch_size, "n": n, "workers": workers, "repeats": repeats}
    result["inference"] = inference_rate(model, batch_size, repeats)
    feed_meta = dataclasses.replace(model.metadata, box_size=box or model.metadata.box_size)
    result["feed_box"] = feed_meta.box_size
    result["model_box"] = model.metadata.box_size
    null = null_model(feed_meta, batch_size=batch_size)
    with tempfile.TemporaryDirectory(prefix="cryoshift-bench-data-", dir=work_dir) as tmp:
        data = make_bench_data(Path(tmp), n, feed_meta.box_size, feed_meta.voxel_size)
        result["feed"] = {kind: pipeline_rate(null, data, kind, batch_size, workers, repeats, processes)
                          for kind in KINDS}
    return result


def command(
    model: Path = typer.Argument(..., help="Exported model (model.onnx or model.engine)."),
    backend: Backend = typer.Option(Backend.auto, "--backend", "-b", help="Inference backend to time."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Subtomograms per batch."),
    box: int = typer.Option(None, "--box", min=4, help="Box size of the feed-rate data (default: model's)."),
    n: int = typer.Option(256, "--n", min=1, help="Subtomograms per feed-rate input kind."),
    workers: int = typer.Option(2, "--workers", min=1, help="Readers in the pipeline."),
    reader_processes: bool = typer.Option(False, "--reader-processes", help="Readers are processes."),
    repeats: int = typer.Option(3, "--repeats", min=1, help="Repeats; medians are reported."),
    threads: int = typer.Option(None, "--threads", min=1, help="CPU backend: inference threads."),
    json_out: Path = typer.Option(None, "--json", help="Also write the figures to this JSON file."),
) -> None:
    """Measure inference-only throughput and the pipeline's null-model feed rate on this machine.

    The feed rate (read, crop, batch, write rows; no inference) for a stack, files and a tomogram with picks
    says whether the readers can keep a faster engine busy. Medians of --repeats runs.

    Example: cryoshift bench model.onnx --backend cpu --batch-size 64 --box 32
    """
    import json

    from rich.console import Console
    from rich.table import Table

    result = run_bench(model, backend.value, batch_size, box, n, workers, repeats, threads,
                       processes=reader_processes)
    table = Table(title=f"cryoshift bench: {result['backend']}, batch {batch_size}")
    table.add_column("measure")
    table.add_column("subtomograms/s", justify="right")
    table.add_row(f"inference only (batch in memory, {result['model_box']}^3)",
                  f"{result['inference']['rate']:,.0f}")
    for kind, fig in result["feed"].items():
        readers = f"{workers} reader {'processes' if reader_processes else 'threads'}"
        table.add_row(f"feed rate, null model: {kind} ({result['feed_box']}^3, {readers})",
                      f"{fig['rate']:,.0f}")
    Console().print(table)
    typer.echo(f"medians of {repeats} repeats")
    if json_out:
        json_out.write_text(json.dumps(result, indent=2) + "\n")
