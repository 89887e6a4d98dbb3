"""Throughput benchmark (docs benchmarks.md section 2): how many subtomograms per second does
``cryoshift classify`` sustain end to end, against the loops a user would write?

One process, one model (the default ``cryonet`` backbone, exported with the export wing), one
set of synthetic inputs on disk (a volume stack, a folder of single-volume MRCs, a tomogram with
picks). Measured, as medians of repeats:

* naive PyTorch loop: read one file, one forward, next file (what a user writes first);
* PyTorch batched, inference only (a batch already in memory);
* ONNX Runtime CPU via cryoshift, inference only, against batch size;
* ``cryoshift classify`` end to end for files, stack and tomogram + picks (plan, read, crop,
  infer, fsync'ed rows, STAR file, manifest), against reader threads;
* the null-model feed rate (the pipeline with no inference) per input kind, 1 and 2 readers;
* the compute bound: FLOPs per subtomogram / measured sgemm GFLOP/s, and the fraction reached;
* peak RSS per phase (sampled from /proc/self/statm).

GPU rows (ORT CUDA, ORT TensorRT EP, native TensorRT fp16) run when a GPU exists and are reported
as "skipped: no GPU" otherwise. Writes benchmarks/results/throughput_<cpu|gpu>.{json,md}.

    .venv/bin/python benchmarks/throughput.py            # ~5 min on 2 shared cores
    .venv/bin/python benchmarks/throughput.py --quick    # smoke run, a few seconds
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _machine import cpu_model  # benchmarks/ is on sys.path: scripts run as files

RESULTS = Path(__file__).resolve().parent / "results"


class PeakRss:
    """Peak resident memory of this process while the block runs (sampled every 5 ms)."""

    def __enter__(self) -> PeakRss:
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.peak = self.start = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _rss(self) -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * self.page

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def peak_mb(self) -> float:
        return round(self.peak / 2**20, 1)


def median_rate(fn: Callable[[], int], repeats: int) -> tuple[float, list[float]]:
    """Median items/s of ``fn`` (which returns how many items it did) over ``repeats`` runs."""
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = fn()
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates), [round(r, 1) for r in rates]


def sgemm_gflops(size: int = 1536, repeats: int = 5) -> float:
    """Measured single-precision matrix-multiply rate of this machine (numpy's BLAS, all threads)."""
    rng = np.random.default_rng(0)
    a = rng.random((size, size), dtype=np.float32)
    b = rng.random((size, size), dtype=np.float32)
    a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * size**3 / min(times) / 1e9  # best of repeats: a peak, not a typical value


def machine() -> dict[str, Any]:
    from cryoshift.runtime.backends import gpu_name

    info = {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "gpu": gpu_name(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    for name in ("torch", "onnxruntime", "numpy", "mrcfile"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            info[name] = None
    with contextlib.suppress(OSError):
        info["load_average"] = os.getloadavg()
    return info


def build_model(work: Path, box: int, classes: int, backbone: str) -> tuple[Any, Path, int]:
    """Backbone (seeded) exported to ONNX by the export wing; returns (torch wrapper, path, FLOPs)."""
    import warnings

    import torch

    from cryoshift.export import export_model
    from cryoshift.export.onnx import ExportWrapper
    from cryoshift.runtime.metadata import ModelMetadata
    from cryoshift.training.backbones import count_flops, create_backbone

    torch.manual_seed(0)
    net = create_backbone(backbone, num_classes=classes, box_size=box).eval()
    meta = ModelMetadata(
        class_names=[f"class_{i}" for i in range(classes)],
        box_size=box,
        voxel_size=10.0,
        backbone=backbone,
        method="benchmark",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = export_model(net, meta, work / "model.onnx")
    return ExportWrapper(net).eval(), Path(result.path), count_flops(net, box)


def naive_loop(wrapper: Any, files: list[Path], out_csv: Path) -> int:
    """What a user writes first: for each file, read it, one forward, keep the answer."""
    import pandas as pd
    import torch

    from cryoshift.runtime.mrc import read_volume
    from cryoshift.runtime.results import write_results

    rows = []
    with torch.no_grad():
        for path in files:
            x = torch.from_numpy(read_volume(path))[None, None]
            logits, _features = wrapper(x)
            p = torch.softmax(logits, dim=1)[0]
            rows.append({"path": str(path), "class": int(p.argmax()), "confidence": float(p.max())})
    # cryoshift's CSV rule (results.write_results): pandas' to_csv wrote a path holding a bare \r
    # unquoted, and every reader split its row there
    write_results(pd.DataFrame(rows), out_csv)
    return len(rows)


def torch_batched(wrapper: Any, batch: np.ndarray, loops: int) -> int:
    import torch

    x = torch.from_numpy(batch)
    with torch.no_grad():
        for _ in range(loops):
            wrapper(x)
    return loops * batch.shape[0]


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from cryoshift.runtime import classify
    from cryoshift.runtime.backends import gpu_name, load_model, null_model
    from cryoshift.runtime.bench import inference_rate, make_bench_data, pipeline_rate

    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    work = Path(tempfile.mkdtemp(prefix="cryoshift-throughput-"))
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    res: dict[str, Any] = {
        "benchmark": "throughput",
        "created": created,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "settings": {k: v for k, v in vars(args).items()},
    }
    print(f"machine: {res['machine']['cpu']}, {res['machine']['cores_usable']} usable cores", flush=True)
    res["sgemm_gflops"] = round(sgemm_gflops(), 1)
    wrapper, onnx_path, flops = build_model(work, args.box, args.classes, args.backbone)
    res["model"] = {
        "backbone": args.backbone,
        "box": args.box,
        "classes": args.classes,
        "gflop_per_subtomogram": flops / 1e9,
        "onnx_bytes": onnx_path.stat().st_size,
    }
    data = make_bench_data(work / "data", args.n, args.box, 10.0)
    files = sorted((work / "data" / "files").glob("*.mrc"))
    batch = np.random.default_rng(0).normal(0, 1, (args.batch_size, 1, args.box, args.box, args.box))
    batch = batch.astype(np.float32)
    reps = args.repeats
    rows: dict[str, dict[str, Any]] = {}

    def record(name: str, rate: float, repeats: list[float], peak: PeakRss, **extra: Any) -> None:
        rows[name] = {"rate": round(rate, 1), "repeats": repeats, "peak_rss_mb": peak.peak_mb, **extra}
        print(f"  {name:<44} {rate:10.1f} subtomograms/s  (peak RSS {peak.peak_mb} MB)", flush=True)

    print("PyTorch", flush=True)
    naive_n = min(len(files), args.naive_n)
    with PeakRss() as peak:
        rate, r = median_rate(lambda: naive_loop(wrapper, files[:naive_n], work / "naive.csv"), reps)
    record("pytorch naive loop (files, end to end)", rate, r, peak, items=naive_n)
    with PeakRss() as peak:
        torch_batched(wrapper, batch, 1)
        rate, r = median_rate(lambda: torch_batched(wrapper, batch, args.loops), reps)
    record(f"pytorch batched {args.batch_size} (inference only)", rate, r, peak)

    print("ONNX Runtime CPU (cryoshift)", flush=True)
    model = load_model(onnx_path, "cpu", batch_size=args.batch_size, threads=args.threads)
    with PeakRss() as peak:
        inf = inference_rate(model, args.batch_size, reps, args.loops)
    record(f"ort cpu batched {args.batch_size} (inference only)", inf["rate"], inf["repeats"], peak)
    scaling_batch = {}
    for bs in args.batch_sweep:
        m = load_model(onnx_path, "cpu", batch_size=bs, threads=args.threads)
        scaling_batch[bs] = round(
            inference_rate(m, bs, reps, max(1, args.loops * args.batch_size // bs // 2))["rate"], 1
        )
    res["ort_cpu_rate_vs_batch_size"] = scaling_batch
    print(f"  batch sweep: {scaling_batch}", flush=True)

    e2e: dict[str, Any] = {}
    for kind in ("files", "stack", "tomogram"):
        for workers in args.workers_sweep:

            def once(kind: str = kind, workers: int = workers) -> int:
                with tempfile.TemporaryDirectory(dir=work) as out:
                    s = classify(
                        model,
                        data[kind]["inputs"],
                        out,
                        tomograms=data[kind]["tomograms"],
                        batch_size=args.batch_size,
                        workers=workers,
                        progress=False,
                    )
                    return s.classified + s.errors

            with PeakRss() as peak:
                rate, r = median_rate(once, reps)
            name = f"cryoshift classify ort cpu: {kind}, {workers} readers"
            record(name, rate, r, peak)
            e2e[f"{kind}/{workers}"] = rate
    print("Null-model feed rate (pipeline only)", flush=True)
    null = null_model(model.metadata, batch_size=args.batch_size)
    feed = {}
    for kind in ("files", "stack", "tomogram"):
        for workers in (1, 2):
            with PeakRss() as peak:
                fig = pipeline_rate(null, data, kind, args.batch_size, workers, reps)
            record(
                f"feed rate, null model: {kind}, {workers} readers",
                fig["rate"],
                [round(x, 1) for x in fig["repeats"]],
                peak,
            )
            feed[f"{kind}/{workers}"] = fig["rate"]
        with PeakRss() as peak:
            fig = pipeline_rate(null, data, kind, args.batch_size, 2, reps, processes=True)
        record(
            f"feed rate, null model: {kind}, 2 reader processes",
            fig["rate"],
            [round(x, 1) for x in fig["repeats"]],
            peak,
        )
        feed[f"{kind}/2p"] = fig["rate"]
    res["rows"] = rows
    res["ratios"] = paired_ratios(model, wrapper, batch, files[:naive_n], data, work, args)
    res["ratios"]["ort_over_pytorch_batched_inference"] = round(
        inf["rate"] / rows[f"pytorch batched {args.batch_size} (inference only)"]["rate"], 2
    )
    achieved = inf["rate"] * flops / 1e9
    res["compute_bound"] = {
        "gflop_per_subtomogram": round(flops / 1e9, 4),
        "sgemm_gflops": res["sgemm_gflops"],
        "bound_subtomograms_per_s": round(res["sgemm_gflops"] / (flops / 1e9), 1),
        "achieved_gflops_ort_inference": round(achieved, 1),
        "fraction_of_sgemm": round(achieved / res["sgemm_gflops"], 3),
    }
    res["feed_rate"] = {k: round(v, 1) for k, v in feed.items()}
    res["gpu"] = gpu_part(onnx_path, wrapper, data, args) if gpu_name() else "skipped: no GPU"
    return res


def paired_ratios(
    model: Any,
    wrapper: Any,
    batch: np.ndarray,
    naive_files: list[Path],
    data: dict[str, Any],
    work: Path,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Ratios from interleaved measurements: each repeat times inference only, the naive loop and
    classify end to end back to back, so load from other users of a shared CPU hits all alike;
    the reported ratio is the median of the per-repeat ratios."""
    from cryoshift.runtime import classify

    print(f"Paired repeats for the ratios ({args.paired_repeats})", flush=True)
    loops = max(1, args.n // args.batch_size)
    per: dict[str, list[float]] = {}
    for rep in range(args.paired_repeats):
        t0 = time.perf_counter()
        for _ in range(loops):
            model.predict(batch)
        inf = loops * args.batch_size / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        naive = naive_loop(wrapper, naive_files, work / "naive.csv") / (time.perf_counter() - t0)
        line = [f"inference {inf:.1f}", f"naive {naive:.1f}"]
        for kind in ("files", "stack", "tomogram"):
            with tempfile.TemporaryDirectory(dir=work) as out:
                t0 = time.perf_counter()
                s = classify(
                    model,
                    data[kind]["inputs"],
                    out,
                    tomograms=data[kind]["tomograms"],
                    batch_size=args.batch_size,
                    workers=2,
                    progress=False,
                )
                e2e = (s.classified + s.errors) / (time.perf_counter() - t0)
            per.setdefault(f"end_to_end_over_inference_only[{kind}]", []).append(e2e / inf)
            per.setdefault(f"end_to_end_over_naive_loop[{kind}]", []).append(e2e / naive)
            line.append(f"{kind} {e2e:.1f}")
        print(f"  repeat {rep}: " + ", ".join(line) + " subtomograms/s", flush=True)
    out = {k: round(statistics.median(v), 3) for k, v in per.items()}
    out["per_repeat"] = {k: [round(x, 3) for x in v] for k, v in per.items()}
    return out


def gpu_part(onnx_path: Path, wrapper: Any, data: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """ORT CUDA, ORT TensorRT EP and native TensorRT fp16: inference only and end to end (stack)."""
    from cryoshift.runtime import classify
    from cryoshift.runtime.backends import load_model
    from cryoshift.runtime.bench import inference_rate

    out: dict[str, Any] = {}
    bs = args.gpu_batch_size
    targets: list[tuple[str, Path, str]] = [
        ("ort cuda", onnx_path, "cuda"),
        ("ort tensorrt ep", onnx_path, "tensorrt"),
    ]
    try:
        targets.append(("native tensorrt fp16", build_fp16_engine(onnx_path, wrapper, args, bs), "engine"))
    except Exception as exc:  # report why, keep the other rows
        out["native tensorrt fp16"] = f"failed: {type(exc).__name__}: {exc}"
    for name, path, backend in targets:
        try:
            model = load_model(path, backend, batch_size=bs)
            inf = inference_rate(model, bs, args.repeats, 20)
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                s = classify(model, data["stack"]["inputs"], tmp, batch_size=bs, workers=4, progress=False)
                e2e = (s.classified + s.errors) / (time.perf_counter() - t0)
            out[name] = {
                "inference_only": round(inf["rate"], 1),
                "end_to_end_stack": round(e2e, 1),
                "backend": model.description,
            }
        except Exception as exc:  # one backend failing must not hide the others
            out[name] = f"failed: {type(exc).__name__}: {exc}"
        print(f"  {name}: {out[name]}", flush=True)
    return out


def build_fp16_engine(onnx_path: Path, wrapper: Any, args: argparse.Namespace, batch_max: int) -> Path:
    from cryoshift.export.fp16 import export_fp16
    from cryoshift.export.onnx import torch_reference
    from cryoshift.export.tensorrt import export_tensorrt
    from cryoshift.runtime.metadata import read_onnx_metadata

    meta = read_onnx_metadata(onnx_path)
    vols = np.random.default_rng(1).normal(0, 1, (16, args.box, args.box, args.box)).astype(np.float32)
    ref = torch_reference(wrapper, vols)[0]
    fp16 = onnx_path.with_name("model.fp16.onnx")
    export_fp16(onnx_path, fp16, meta, vols, ref)
    engine = onnx_path.with_name("model.fp16.engine")
    export_tensorrt(fp16, engine, read_onnx_metadata(fp16), batch_max, vols, ref)
    return engine


def write_markdown(res: dict[str, Any], path: Path) -> None:
    m = res["machine"]
    lines = [
        "# Throughput (benchmarks/throughput.py)",
        "",
        f"Machine: {m['cpu']}, {m['cores_usable']} usable of {m['logical_cores']} logical cores, "
        f"{m['memory_gb']} GB; GPU: {m['gpu'] or 'none'}; torch {m['torch']}, "
        f"onnxruntime {m['onnxruntime']}, "
        f"numpy {m['numpy']}. Load average at start: {m.get('load_average')} (the CPU is shared).",
        "",
        f"Model: {res['model']['backbone']}, {res['model']['box']}^3, {res['model']['classes']} classes, "
        f"{res['model']['gflop_per_subtomogram']:.3f} GFLOP per subtomogram. Inputs: "
        f"{res['settings']['n']} subtomograms per kind. Medians of {res['settings']['repeats']} repeats, "
        f"all in one process. Command: `{res['command']}`",
        "",
        "| measure | subtomograms/s | peak RSS (MB) |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {row['rate']:,.1f} | {row['peak_rss_mb']} |" for name, row in res["rows"].items()]
    per = res["ratios"].get("per_repeat", {})
    reps = res["settings"]["paired_repeats"]
    lines += [
        "",
        f"Ratios: medians of per-repeat ratios from {reps} interleaved "
        "repeats (inference only, naive loop and classify timed back to back), with the range.",
        "",
        "| ratio | median | range |",
        "|---|---:|---:|",
    ]
    lines += [
        f"| {k} | {v} | {min(per[k]):.2f}-{max(per[k]):.2f} |" if k in per else f"| {k} | {v} | |"
        for k, v in res["ratios"].items()
        if k != "per_repeat"
    ]
    cb = res["compute_bound"]
    lines += [
        "",
        f"Compute bound: measured sgemm {cb['sgemm_gflops']} GFLOP/s -> at most "
        f"{cb['bound_subtomograms_per_s']:,} subtomograms/s; ORT inference reaches "
        f"{cb['achieved_gflops_ort_inference']} GFLOP/s = {cb['fraction_of_sgemm']:.1%} of sgemm.",
        "",
        f"ORT CPU rate against batch size: {res['ort_cpu_rate_vs_batch_size']}",
        "",
        f"GPU: {res['gpu']}",
        "",
    ]
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--box", type=int, default=32, help="subtomogram box size")
    parser.add_argument("--n", type=int, default=384, help="subtomograms per input kind")
    parser.add_argument("--naive-n", type=int, default=48, help="files the naive loop classifies per repeat")
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--backbone", default="cryonet")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--gpu-batch-size", type=int, default=512)
    parser.add_argument("--batch-sweep", type=int, nargs="*", default=[1, 8, 32, 64, 128])
    parser.add_argument("--workers-sweep", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--paired-repeats", type=int, default=5, help="interleaved repeats for the ratios")
    parser.add_argument("--loops", type=int, default=4, help="batches per inference-only timing")
    parser.add_argument("--threads", type=int, default=2, help="inference threads (torch and ORT)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (not for reporting)")
    parser.add_argument(
        "--out", type=Path, default=None, help="results stem (default results/throughput_cpu)"
    )
    args = parser.parse_args()
    if args.quick:
        args.n, args.naive_n, args.repeats, args.loops = 32, 8, 1, 1
        args.batch_sweep, args.workers_sweep, args.box, args.paired_repeats = [8], [2], 16, 1
    res = run(args)
    stem = args.out or RESULTS / ("throughput_gpu" if res["machine"]["gpu"] else "throughput_cpu")
    stem.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{stem}.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    write_markdown(res, Path(f"{stem}.md"))
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
