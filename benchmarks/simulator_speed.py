"""Simulator speed: subtomograms simulated per second, per fidelity level, at 32^3 and 40^3.

Usage:  .venv/bin/python benchmarks/simulator_speed.py [--threads 2] [--repeats 5] [--quick]

Runs the "paper" preset (fast level) and the same ranges through the tilt-series level on the
built-in structures at 10 A/voxel, on the CPU with --threads torch threads and on a CUDA GPU
when one is present. Each figure is the median over --repeats timed calls of
``Simulator.sample(batch)`` after one warm-up call (parameter drawing, rendering and the
per-volume parameter records included; writing to disk excluded). The machine is shared, so
the load average before and after is recorded next to the figures. Writes
benchmarks/results/simulator_speed.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from _machine import cpu_model  # benchmarks/ is on sys.path: scripts run as files

from cryoshift.training.simulate import PRESETS, Simulator, builtin_structures

RESULTS = Path(__file__).parent / "results"


def measure(fidelity: str, box: int, device: str, batch: int, repeats: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    structures = builtin_structures(box, 10.0, seed=0)
    config = PRESETS["paper"].replace(fidelity=fidelity)
    sim = Simulator(structures, config, device=device, seed=0)
    sim.sample(batch)  # warm-up (allocations, FFT plans)
    rates, cpu_rates = [], []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        sim.sample(batch)
        if device == "cuda":
            torch.cuda.synchronize()
        rates.append(batch / (time.perf_counter() - t0))
        cpu_rates.append(batch / (time.process_time() - c0))
    return {
        "fidelity": fidelity,
        "box": box,
        "device": device,
        "threads": threads,
        "batch": batch,
        "repeats": repeats,
        "median_per_s": statistics.median(rates),
        "min_per_s": min(rates),
        "max_per_s": max(rates),
        # volumes per CPU-second of this process (all its threads): insensitive to other users' load
        "per_cpu_second": statistics.median(cpu_rates),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="smaller batches and 2 repeats (smoke run)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    repeats = 2 if args.quick else args.repeats
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    load_before = os.getloadavg()
    rows = []
    for device in devices:
        for fidelity in ("fast", "tilt"):
            for box in (32, 40):
                if device == "cpu":
                    batch = (64 if args.quick else 512) if fidelity == "fast" else (4 if args.quick else 16)
                else:
                    batch = 2048 if fidelity == "fast" else 256
                # The fast 32^3 case also runs on one thread: the same-run baseline for thread scaling.
                baseline = (device, fidelity, box) == ("cpu", "fast", 32) and args.threads > 1
                thread_counts = [1, args.threads] if baseline else [args.threads]
                for threads in thread_counts:
                    row = measure(fidelity, box, device, batch, repeats, threads)
                    rows.append(row)
                    print(
                        f"{device:5s} {fidelity:5s} {box}^3 {threads} thr {row['median_per_s']:10.1f} /s "
                        f"(min {row['min_per_s']:.1f}, max {row['max_per_s']:.1f}, batch {batch}; "
                        f"{row['per_cpu_second']:.1f} per CPU-second)",
                        flush=True,
                    )
    machine = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": args.threads,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    result = {
        "benchmark": "simulator_speed",
        "preset": "paper",
        "voxel_size": 10.0,
        "structures": "builtin",
        "timed": "Simulator.sample(batch), median of repeats after warm-up",
        "machine": machine,
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "simulator_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Simulator speed",
        "",
        f"Machine: {machine['cpu']}, {machine['cpu_count']} cores visible, torch {machine['torch']} "
        f"with {args.threads} threads; GPU: {machine['gpu'] or 'none'}. Load average before "
        f"{machine['load_average_before'][0]}, after {machine['load_average_after'][0]} "
        "(shared machine).",
        "",
        "Preset `paper`, built-in structures, 10 A/voxel; subtomograms per second, median of "
        f"{repeats} timed `Simulator.sample(batch)` calls after a warm-up.",
        "",
        "| device | fidelity | box | threads | batch | median /s | min /s | max /s | per CPU-second | "
        "x threads (free cores, estimate) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        ideal = f"{r['per_cpu_second'] * r['threads']:.0f}" if r["device"] == "cpu" else "-"
        lines.append(
            f"| {r['device']} | {r['fidelity']} | {r['box']}^3 | {r['threads']} | {r['batch']} | "
            f"{r['median_per_s']:.1f} | {r['min_per_s']:.1f} | {r['max_per_s']:.1f} | "
            f"{r['per_cpu_second']:.1f} | {ideal} |"
        )
    lines += [
        "",
        "Wall-clock rates (/s) depend on what else the shared machine runs; 'per CPU-second' "
        "is volumes per second of CPU time used by this process (all threads), so "
        "threads x that is the rate as many fully available cores would give "
        "if threads scaled perfectly (an estimate, not a measurement; CPU time itself grows on a "
        "busy machine, so the estimate leans low).",
    ]
    lines += ["", "Re-run: `.venv/bin/python benchmarks/simulator_speed.py --threads 2 --repeats 5`", ""]
    (RESULTS / "simulator_speed.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
