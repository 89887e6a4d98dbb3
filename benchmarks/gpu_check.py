"""One command that proves the GPU path on a device: parity, throughput, training, simulator.

    .venv/bin/python benchmarks/gpu_check.py            # on a GPU node: ends within ~8 minutes
    .venv/bin/python benchmarks/gpu_check.py --quick    # a smoke run (seconds on a CPU)

Installs nothing: it uses what the README's extras put there (``[gpu]``, ``[tensorrt]``,
``[train]``; CuPy optional). Every row is measured or skipped with its reason, so on a CPU
machine it still runs end to end: the CPU rows are measured, each GPU row says why it was not.
Writes benchmarks/results/gpu_check.json and gpu_check.md (``--out`` elsewhere).

Rows:
* parity against the fp32 model on the CPU (max |dlogit|, argmax agreement): ORT CUDA EP,
  ORT TensorRT EP, the fp16 transfer, native engines fp32 and fp16 (and int8 where an int8 ONNX
  can be made);
* throughput per backend at batch 256/512/1024: engine only (batch in host memory, copy and
  compute), end to end from a stack and from tomogram + picks (the real pipeline: read, crop,
  batch, infer, write rows), each as a ratio to engine-only measured in the same run; crops
  gathered on the GPU from a resident tomogram (CuPy) against host cropping;
* one epoch of AMP training on CUDA, the simulator's rate on CUDA, and a 2-device ``--devices``
  run when 2 GPUs exist.

A time budget (``--budget``, default 420 s) is checked before each row: rows that would start
after it are skipped with that reason, so the script ends in time even when a TensorRT build is
slow.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_model  # benchmarks/ is not a package

RESULTS = Path(__file__).resolve().parent / "results"


class Check:
    """Collects rows; each row is measured, skipped (with a reason) or failed (with the error)."""

    def __init__(self, budget_s: float):
        self.rows: list[dict[str, Any]] = []
        self.t0 = time.perf_counter()
        self.budget = budget_s

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.t0)

    def skip(self, section: str, name: str, reason: str, **extra: Any) -> None:
        self.rows.append({"section": section, "name": name, "status": "skipped", "reason": reason, **extra})
        print(f"  skip  {section}: {name}: {reason}", flush=True)

    def run(
        self,
        section: str,
        name: str,
        fn: Callable[[], dict[str, Any]],
        need: str | None = None,
        min_left: float = 5.0,
        **extra: Any,
    ) -> dict[str, Any] | None:
        if need:
            self.skip(section, name, need, **extra)
            return None
        if self.left() < min_left:
            self.skip(section, name, f"time budget spent ({self.budget:.0f} s)", **extra)
            return None
        t = time.perf_counter()
        try:
            values = fn()
        except Exception as exc:  # a failing row is a finding, not the end of the check
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            self.rows.append(
                {
                    "section": section,
                    "name": name,
                    "status": "failed",
                    "reason": reason,
                    "traceback": traceback.format_exc(limit=4),
                    **extra,
                }
            )
            print(f"  FAIL  {section}: {name}: {reason}", flush=True)
            return None
        row = {
            "section": section,
            "name": name,
            "status": "measured",
            **extra,
            **values,
            "seconds": round(time.perf_counter() - t, 2),
        }
        self.rows.append(row)
        shown = ", ".join(f"{k}={v}" for k, v in values.items() if not isinstance(v, (list, dict)))
        print(f"  ok    {section}: {name}: {shown}", flush=True)
        return values


# ---------------------------------------------------------------------------------------------
# What this machine has


def environment() -> dict[str, Any]:
    from cryoshift.runtime.backends import available_backends, gpu_name
    from cryoshift.runtime.gather import device_crop_unavailable

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0)),
        "gpu": gpu_name(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    for name in ("onnxruntime", "numpy", "torch", "tensorrt", "cupy", "polygraphy"):
        try:
            info[name] = __import__(name).__version__
        except Exception:
            info[name] = None
    info["ort_backends"] = available_backends()
    info["gpu_count"] = _gpu_count()
    info["device_crop"] = device_crop_unavailable() or "available"
    return info


def _gpu_count() -> int:
    import subprocess

    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return len([line for line in out.splitlines() if line.strip()])


def why_not(backend: str, env: dict[str, Any]) -> str | None:
    if backend == "cpu":
        return None
    if not env["gpu"]:
        return "no GPU visible (nvidia-smi finds none)"
    if backend in ("cuda", "tensorrt") and backend not in env["ort_backends"]:
        return f"onnxruntime here has no {backend} execution provider (pip install 'cryoshift[gpu]')"
    if backend.startswith("engine") and not env["tensorrt"]:
        return "TensorRT is not installed (pip install 'cryoshift[tensorrt]')"
    return None


# ---------------------------------------------------------------------------------------------
# Model and data


def make_model(work: Path, args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """The ONNX model under test: --model as given, else the default backbone exported here."""
    if args.model:
        return Path(args.model), {"source": str(args.model)}
    import warnings

    import torch

    from cryoshift.export import export_model
    from cryoshift.runtime.metadata import ModelMetadata
    from cryoshift.training.backbones import count_flops, create_backbone
    from cryoshift.training.trainer import TrainConfig

    # Unless told otherwise, the model `cryoshift train` makes by default (six classes, like its demo)
    defaults = TrainConfig(source="builtin", out="")
    args.backbone = args.backbone or defaults.backbone
    args.test_views = args.test_views or defaults.test_views
    torch.manual_seed(0)
    net = create_backbone(
        args.backbone, num_classes=args.classes, box_size=args.box, test_views=args.test_views
    ).eval()
    meta = ModelMetadata(
        class_names=[f"class_{i}" for i in range(args.classes)],
        box_size=args.box,
        voxel_size=10.0,
        backbone=args.backbone,
        method="gpu_check",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = export_model(net, meta, work / "model.onnx")
    return Path(result.path), {
        "source": f"{args.backbone}, {args.test_views} test views (seeded, untrained), exported here",
        "gflop_per_subtomogram": round(count_flops(net, args.box) / 1e9, 4),
    }


def derived_onnx(onnx_path: Path, work: Path, precision: str) -> tuple[Path | None, str]:
    """fp16 or int8 ONNX made from ``onnx_path`` with the export wing, or (None, why not)."""
    try:
        import onnx

        from cryoshift.runtime.metadata import read_onnx_metadata

        meta = read_onnx_metadata(onnx_path)
        out = work / f"model.{precision}.onnx"
        if precision == "fp16":
            from cryoshift.export.fp16 import to_fp16

            onnx.save(to_fp16(onnx.load(str(onnx_path))), str(out))
        else:
            from cryoshift.export.int8 import quantise

            rng = np.random.default_rng(1)
            box = meta.box_size
            quantise(onnx_path, out, rng.normal(0, 1, (32, box, box, box)).astype(np.float32))
        return out, ""
    except Exception as exc:
        return None, f"cannot make the {precision} ONNX here ({type(exc).__name__}: {exc})"


def build_native_engine(onnx_path: Path, work: Path, name: str, batch_max: int) -> Path:
    """A native engine + sidecar from ``onnx_path`` (precision is the graph's: TensorRT 11)."""
    import tensorrt as trt

    from cryoshift.export.tensorrt import TIMING_CACHE, batch_profile, build_engine
    from cryoshift.runtime.engine_sidecar import query_gpu_name, write_engine_sidecar
    from cryoshift.runtime.metadata import read_onnx_metadata

    meta = read_onnx_metadata(onnx_path)
    engine = work / f"{name}.engine"
    batch = batch_profile(batch_max)
    build_engine(onnx_path, engine, meta.box_size, batch, work / TIMING_CACHE)
    write_engine_sidecar(engine, meta, query_gpu_name() or "unknown", trt.__version__, onnx_path, batch)
    return engine


# ---------------------------------------------------------------------------------------------
# Rows


def parity_rows(
    check: Check,
    env: dict[str, Any],
    onnx_path: Path,
    work: Path,
    volumes: np.ndarray,
    engines: dict[str, Path | str],
) -> None:
    from cryoshift.runtime.backends import load_model
    from cryoshift.runtime.transfer import compare

    batch = min(64, len(volumes))
    ref_model = load_model(onnx_path, "cpu", batch_size=batch)
    reference, _ = ref_model.predict(volumes)

    def against(backend: str, path: Path, transfer: str = "fp32") -> Callable[[], dict[str, Any]]:
        def fn() -> dict[str, Any]:
            model = load_model(path, backend, batch_size=batch, transfer=transfer)
            x = volumes.astype(np.float16) if transfer == "fp16" else volumes
            logits, _ = model.predict(x)
            p = compare(reference, logits, "cpu fp32")
            return {
                "backend": model.description,
                "items": p.items,
                "argmax_agreement": round(p.argmax_agreement, 4),
                "max_abs_dlogit": p.max_abs_dlogit,
            }

        return fn

    check.run("parity", "ORT CPU, fp16 transfer", against("cpu", onnx_path, "fp16"))
    for backend in ("cuda", "tensorrt"):
        check.run(
            "parity",
            f"ORT {backend} EP fp32",
            against(backend, onnx_path),
            why_not(backend, env),
            min_left=60 if backend == "tensorrt" else 5,
        )
        check.run(
            "parity",
            f"ORT {backend} EP, fp16 transfer",
            against(backend, onnx_path, "fp16"),
            why_not(backend, env),
            min_left=60 if backend == "tensorrt" else 5,
        )
    for name in ("engine-fp32", "engine-fp16", "engine-int8"):
        engine = engines.get(name)
        reason = engine if isinstance(engine, str) else why_not("engine", env)
        check.run(
            "parity",
            f"native TensorRT {name[7:]}",
            against("engine", Path(str(engine))),
            reason if not isinstance(engine, Path) else None,
        )


def engine_rate(model: Any, batch: int, repeats: int, loops: int) -> float:
    """Engine only: a batch already in host memory, in the model's input dtype; copy + compute.

    Median over ``repeats`` of ``loops`` calls, after two warm-up calls (cuDNN search, TensorRT
    context). Pinned like the pipeline's buffers, so the copy is the one the pipeline pays.
    """
    import statistics

    from cryoshift.runtime.transfer import HostAllocator

    box = model.metadata.box_size
    host = HostAllocator(model.pinned, model.device_id).empty((batch, 1, box, box, box), model.input_dtype)
    host[...] = np.random.default_rng(0).normal(0, 1, host.shape).astype(host.dtype)
    for _ in range(2):
        model.predict(host)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(loops):
            model.predict(host)
        rates.append(loops * batch / (time.perf_counter() - t0))
    return statistics.median(rates)


def throughput_rows(
    check: Check,
    env: dict[str, Any],
    onnx_path: Path,
    work: Path,
    args: argparse.Namespace,
    engines: dict[str, Path | str],
) -> None:
    from cryoshift.runtime.backends import load_model
    from cryoshift.runtime.bench import make_bench_data, pipeline_rate
    from cryoshift.runtime.metadata import read_onnx_metadata
    from cryoshift.runtime.readers import auto_workers

    meta = read_onnx_metadata(onnx_path)
    datasets: dict[int, dict[str, Any]] = {}

    def data_for(batch: int) -> dict[str, Any]:
        n = batch * args.batches_e2e
        if n not in datasets:
            datasets[n] = make_bench_data(work / f"data_{n}", n, meta.box_size, meta.voxel_size)
        return datasets[n]

    plans: list[tuple[str, str, Path, str, list[int]]] = [("cpu", "cpu", onnx_path, "fp32", args.cpu_batches)]
    gpu_batches = args.batches
    for backend in ("cuda", "tensorrt"):
        plans.append((backend, backend, onnx_path, "fp32", gpu_batches))
        plans.append((f"{backend} fp16-transfer", backend, onnx_path, "fp16", gpu_batches))
    for name in ("engine-fp32", "engine-fp16"):
        engine = engines.get(name)
        plans.append((name, "engine", engine if isinstance(engine, Path) else Path("-"), "fp32", gpu_batches))
    for label, backend, path, transfer, batches in plans:
        engine = engines.get(label)
        reason = engine if isinstance(engine, str) else why_not(backend, env)
        for batch in batches:
            if batch > args.engine_batch_max and backend == "engine":
                check.skip(
                    "throughput",
                    f"{label} batch {batch}",
                    f"engine built for batches up to {args.engine_batch_max}",
                    backend=label,
                    batch=batch,
                )
                continue
            state: dict[str, Any] = {}

            def engine_only(
                backend: str = backend,
                path: Path = path,
                transfer: str = transfer,
                batch: int = batch,
                state: dict[str, Any] = state,
            ) -> dict[str, Any]:
                model = load_model(path, backend, batch_size=batch, transfer=transfer)
                state["model"] = model
                rate = engine_rate(model, batch, args.repeats, args.loops)
                state["engine"] = rate
                return {"rate": round(rate, 1), "backend": model.description}

            got = check.run(
                "throughput",
                f"{label} batch {batch}: engine only",
                engine_only,
                reason,
                min_left=90 if backend == "tensorrt" else 10,
                backend=label,
                batch=batch,
                kind="engine-only",
            )
            for kind in ("stack", "tomogram"):

                def e2e(
                    kind: str = kind, batch: int = batch, state: dict[str, Any] = state
                ) -> dict[str, Any]:
                    model = state["model"]
                    data = data_for(batch)
                    items_kind = "tomogram" if kind == "tomogram" else "stack"
                    from cryoshift.runtime.sources import Item

                    workers = auto_workers(model, [Item("", items_kind, "")])
                    workers = min(workers, args.max_workers) if args.max_workers else workers
                    fig = pipeline_rate(
                        model,
                        data,
                        kind,
                        batch,
                        workers,
                        repeats=args.repeats,
                        processes=args.reader_processes,
                    )
                    return {
                        "rate": round(fig["rate"], 1),
                        "workers": workers,
                        "ratio_to_engine_only": round(fig["rate"] / state["engine"], 3),
                        "model_wait_s": round(fig["wait_s"], 3),
                        "compute_s": round(fig["compute_s"], 3),
                    }

                check.run(
                    "throughput",
                    f"{label} batch {batch}: end to end, {kind}",
                    e2e,
                    reason or (None if got else "engine-only row did not run"),
                    backend=label,
                    batch=batch,
                    kind=f"e2e-{kind}",
                )
            state.clear()


def device_crop_row(check: Check, env: dict[str, Any], args: argparse.Namespace) -> None:
    from cryoshift.runtime.gather import DeviceCropper, crop_reference

    reason = None if env["device_crop"] == "available" else env["device_crop"]

    def fn() -> dict[str, Any]:
        import cupy

        rng = np.random.default_rng(0)
        box = args.box
        tomo = rng.normal(0, 1, (256, 512, 512)).astype(np.float32)
        n = 4096
        centers = np.stack([rng.uniform(0, 511, n), rng.uniform(0, 511, n), rng.uniform(0, 255, n)], 1)
        cropper = DeviceCropper()
        got = cropper.crop("t", tomo, centers[:64], box).get()
        same = bool(np.allclose(got, crop_reference(tomo, centers[:64], box), atol=1e-6))
        cupy.cuda.Device().synchronize()
        t0 = time.perf_counter()
        for start in range(0, n, 512):
            cropper.crop("t", tomo, centers[start : start + 512], box)
        cupy.cuda.Device().synchronize()
        return {
            "rate": round(n / (time.perf_counter() - t0), 1),
            "matches_cpu_reference": same,
            "tomogram_upload_bytes": cropper.uploaded_bytes,
        }

    check.run(
        "throughput",
        "crops gathered on the GPU (resident tomogram, batch 512)",
        fn,
        reason,
        kind="device-crop",
    )


def training_rows(check: Check, env: dict[str, Any], work: Path, args: argparse.Namespace) -> None:
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = None
    reason = (
        "PyTorch is not installed (the [train] extra)"
        if cuda is None
        else None
        if cuda
        else "PyTorch sees no CUDA device"
    )

    def amp_epoch() -> dict[str, Any]:
        from cryoshift.training.trainer import TrainConfig, train

        config = TrainConfig(
            source="builtin",
            out=str(work / "train"),
            method="cryoshift",
            epochs=1,
            device="cuda",
            amp=True,
            box=args.box,
            voxel_size=10.0,
            sim_per_epoch=args.train_n,
            sim_val=256,
            batch_size=64,
            progress=False,
        )
        t0 = time.perf_counter()
        train(config)
        wall = time.perf_counter() - t0
        return {
            "epoch_s": round(wall, 1),
            "subtomograms": args.train_n,
            "rate_incl_simulation_and_eval": round(args.train_n / wall, 1),
        }

    def simulator() -> dict[str, Any]:
        from cryoshift.training.simulate import PRESETS, Simulator, builtin_structures

        sim = Simulator(builtin_structures(args.box, 10.0, seed=0), PRESETS["paper"], device="cuda", seed=0)
        sim.sample(256)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(4):
            sim.sample(256)
        torch.cuda.synchronize()
        return {"rate": round(1024 / (time.perf_counter() - t0), 1), "preset": "paper", "fidelity": "fast"}

    check.run(
        "training",
        "one epoch of AMP training (cryoshift, simulated source) on CUDA",
        amp_epoch,
        reason,
        min_left=60,
    )
    check.run(
        "training", "simulator rate on CUDA (paper preset, fast fidelity, batch 256)", simulator, reason
    )


def devices_row(
    check: Check, env: dict[str, Any], onnx_path: Path, work: Path, args: argparse.Namespace
) -> None:
    from cryoshift.runtime import classify
    from cryoshift.runtime.bench import make_bench_data
    from cryoshift.runtime.metadata import read_onnx_metadata

    reason = why_not("cuda", env) or (
        None if env["gpu_count"] >= 2 else f"needs 2 GPUs, this machine has {env['gpu_count']}"
    )

    def fn() -> dict[str, Any]:
        meta = read_onnx_metadata(onnx_path)
        data = make_bench_data(work / "devices", 8192, meta.box_size, meta.voxel_size)
        t0 = time.perf_counter()
        s = classify(
            onnx_path,
            data["stack"]["inputs"],
            work / "devices_out",
            backend="cuda",
            batch_size=512,
            workers=4,
            devices=[0, 1],
            progress=False,
        )
        return {
            "rate": round((s.classified + s.errors) / (time.perf_counter() - t0), 1),
            "classified": s.classified,
            "errors": s.errors,
        }

    check.run("devices", "--devices 0,1 (cuda, stack, 8192 subtomograms)", fn, reason, min_left=30)


# ---------------------------------------------------------------------------------------------


def write_results(out: Path, result: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    env = result["environment"]
    lines = [
        "# GPU check",
        "",
        f"Created {result['created']} with `{result['command']}` in {result['wall_s']} s.",
        "",
        f"Machine: {env['cpu']}, {env['cores']} usable cores; GPU: {env['gpu'] or 'none'} "
        f"({env['gpu_count']}); onnxruntime {env['onnxruntime']} ({', '.join(env['ort_backends'])}); "
        f"TensorRT {env['tensorrt'] or '-'}; CuPy {env['cupy'] or '-'}; "
        f"torch {env['torch'] or '-'}.",
        "",
        f"Model: {result['model']}.",
        "",
        f"Measured {result['counts']['measured']}, skipped {result['counts']['skipped']}, "
        f"failed {result['counts']['failed']}.",
        "",
    ]
    for section in ("parity", "throughput", "training", "devices"):
        rows = [r for r in result["rows"] if r["section"] == section]
        if not rows:
            continue
        lines += [f"## {section}", "", "| row | status | figures |", "|---|---|---|"]
        for r in rows:
            if r["status"] == "measured":
                hidden = ("section", "name", "status", "seconds", "backend", "traceback", "kind", "batch")
                keep = {k: v for k, v in r.items() if k not in hidden}
                figures = ", ".join(f"{k} {v}" for k, v in keep.items())
            else:
                figures = r["reason"]
            lines.append(f"| {r['name']} | {r['status']} | {figures} |")
        lines.append("")
    (out / "gpu_check.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of every row")
    ap.add_argument("--model", help="an exported ONNX to check (default: export the default backbone here)")
    ap.add_argument("--backbone", help="default: the backbone `cryoshift train` uses by default")
    ap.add_argument("--test-views", type=int, help="default: those `cryoshift train` uses by default")
    ap.add_argument("--box", type=int, default=32)
    ap.add_argument("--classes", type=int, default=6)
    ap.add_argument("--save-model", type=Path, help="keep the ONNX exported here (for --model)")
    ap.add_argument("--budget", type=float, default=420.0, help="seconds after which rows are skipped")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--reader-processes", action="store_true", help="end-to-end rows with reader processes")
    ap.add_argument("--max-workers", type=int, default=0, help="cap on readers (0: sized automatically)")
    args = ap.parse_args(argv)
    args.batches = [256, 512, 1024]
    args.cpu_batches = [16]
    args.engine_batch_max = 1024
    args.repeats, args.loops, args.batches_e2e, args.train_n, args.parity_n = 3, 8, 8, 4096, 256
    if args.quick:
        args.batches, args.cpu_batches, args.engine_batch_max = [32], [8], 32
        args.repeats, args.loops, args.batches_e2e, args.train_n, args.parity_n = 1, 2, 2, 256, 16
    check = Check(args.budget)
    t0 = time.perf_counter()
    env = environment()
    print(
        f"gpu_check: GPU {env['gpu'] or 'none'}, backends {env['ort_backends']}, "
        f"TensorRT {env['tensorrt']}, CuPy {env['cupy']}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="cryoshift-gpu-check-") as tmp:
        work = Path(tmp)
        onnx_path, model_info = make_model(work, args)
        if args.save_model:
            import shutil

            shutil.copyfile(onnx_path, args.save_model)
        from cryoshift.runtime.metadata import read_onnx_metadata

        box = read_onnx_metadata(onnx_path).box_size
        args.box = box
        volumes = np.random.default_rng(0).normal(0, 1, (args.parity_n, 1, box, box, box)).astype(np.float32)
        engines: dict[str, Path | str] = {}
        for precision in ("fp32", "fp16", "int8"):
            name = f"engine-{precision}"
            reason = why_not("engine", env)
            if reason:
                engines[name] = reason
                continue
            source, why = (onnx_path, "") if precision == "fp32" else derived_onnx(onnx_path, work, precision)
            if source is None:
                engines[name] = why
                continue
            got = check.run(
                "build",
                f"native TensorRT engine {precision}",
                lambda s=source, n=name: {
                    "path": str(build_native_engine(s, work, n, args.engine_batch_max))
                },
                min_left=90,
            )
            engines[name] = Path(got["path"]) if got else "engine build did not succeed (see the build row)"
        parity_rows(check, env, onnx_path, work, volumes, engines)
        throughput_rows(check, env, onnx_path, work, args, engines)
        device_crop_row(check, env, args)
        training_rows(check, env, work, args)
        devices_row(check, env, onnx_path, work, args)
    counts = {s: sum(r["status"] == s for r in check.rows) for s in ("measured", "skipped", "failed")}
    result = {
        "benchmark": "gpu_check",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join([Path(sys.executable).name, *sys.argv[:1], *(argv or sys.argv[1:])]),
        "wall_s": round(time.perf_counter() - t0, 1),
        "environment": env,
        "model": model_info,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "counts": counts,
        "rows": check.rows,
    }
    write_results(args.out, result)
    print(f"gpu_check: {counts} in {result['wall_s']} s -> {args.out / 'gpu_check.json'}", flush=True)
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
