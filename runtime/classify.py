"""``classify()``: the public entry point that turns inputs into results on disk.

One call plans the inputs (checking them against the model), skips what a previous run
already finished (``resume``), runs the pipeline on this process's share of the items
(``shard``), and leaves in ``out_dir``:

``predictions.csv``  one row per classified subtomogram (the append-only resume ledger)
``predictions.star`` the same rows for RELION/Warp/ArtiaX, written at the end from the CSV
``errors.csv``       one row per bad item with its reason
``manifest.json``    model hash, inputs, counts, errors, timings, versions
``features.npy``     with ``features=True``: the model's features, one float32 row per CSV row
                     (runtime/features.py; appended and resumed with the CSV)

With ``devices=[0, 1, ...]`` it runs one worker process per GPU (``CUDA_VISIBLE_DEVICES``
set per process; never threads sharing a session), each on a deterministic share, and
merges their ledgers.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import subprocess
import sys
import time
import types
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryoshift.runtime.backends import Model, load_model
from cryoshift.runtime.errors import InputError
from cryoshift.runtime.features import FeatureLedger, features_path, join_features, read_features
from cryoshift.runtime.ledger import ERROR_COLUMNS, Ledger, merge_csv
from cryoshift.runtime.pipeline import RunStats, result_columns, run_pipeline
from cryoshift.runtime.sources import Item, Plan, VolumeCache, parse_shard, plan_inputs

PREDICTIONS = "predictions"
ERRORS = "errors"
MANIFEST = "manifest"


@dataclass
class ClassifySummary:
    """What a classify run did; ``lines()`` is the human summary the CLI prints."""

    out_dir: str
    predictions_csv: str
    predictions_star: str
    errors_csv: str
    manifest: str
    backend: str
    planned: int = 0  # items of this shard
    classified: int = 0  # rows written by this run
    errors: int = 0  # error rows written by this run
    resumed: int = 0  # items skipped because a previous run finished them
    total_rows: int = 0  # rows in the results file now
    total_errors: int = 0
    class_counts: dict[str, int] = field(default_factory=dict)  # over the whole results file
    unknown: int = 0
    wall_s: float = 0.0
    read_s: float = 0.0
    compute_s: float = 0.0
    write_s: float = 0.0
    wait_s: float = 0.0
    rate: float = 0.0  # items/s while the pipeline ran (reading, inference, writing rows)
    pipeline_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.class_counts.items(), key=lambda kv: -kv[1]))
        out = [
            f"backend: {self.backend}",
            f"classified {self.classified} subtomograms, {self.errors} errors"
            + (f", {self.resumed} already done (resumed)" if self.resumed else "")
            + f" in {self.wall_s:.1f} s (model loading and planning included); pipeline "
            f"{self.pipeline_s:.1f} s = {self.rate:,.1f} subtomograms/s",
            f"time: reading {self.read_s:.1f} s (summed over readers), "
            f"computing {self.compute_s:.1f} s, "
            f"writing {self.write_s:.1f} s, model waiting for data {self.wait_s:.1f} s",
            f"classes: {counts or '-'}",
            f"results: {self.predictions_csv} ({self.total_rows} rows), {self.predictions_star}",
        ]
        if self.total_errors:
            out.append(f"errors: {self.errors_csv} ({self.total_errors} rows)")
        out.extend(f"note: {n}" for n in self.notes)
        return out


def _versions() -> dict[str, str]:
    import numpy

    from cryoshift.runtime import __version__

    found = {"cryoshift": __version__, "python": platform.python_version(), "numpy": numpy.__version__,
             "platform": platform.platform()}
    try:
        import onnxruntime

        found["onnxruntime"] = onnxruntime.__version__
    except ImportError:  # pragma: no cover
        pass
    return found


def _names(out_dir: Path, shard: tuple[int, int] | None) -> dict[str, Path]:
    suffix = f".shard-{shard[0]}-of-{shard[1]}" if shard else ""
    return {
        "csv": out_dir / f"{PREDICTIONS}{suffix}.csv",
        "star": out_dir / f"{PREDICTIONS}{suffix}.star",
        "errors": out_dir / f"{ERRORS}{suffix}.csv",
        "manifest": out_dir / f"{MANIFEST}{suffix}.json",
    }


def _per_tomogram(csv_path: Path) -> dict[str, dict[str, int]]:
    """Class counts per tomogram (picks only) of a finished results CSV."""
    import csv

    counts: dict[str, Counter] = {}
    if not csv_path.is_file():
        return {}
    with open(csv_path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header or "tomo_name" not in header or "class_name" not in header:
            return {}
        t, c = header.index("tomo_name"), header.index("class_name")
        for row in reader:
            if row and row[t]:
                counts.setdefault(row[t], Counter())[row[c]] += 1
    return {name: dict(sorted(n.items())) for name, n in sorted(counts.items())}


def _count_rows(csv_path: Path) -> tuple[int, Counter]:
    """Rows and class counts of a finished results CSV (the whole file, resumed parts included)."""
    import csv

    counts: Counter = Counter()
    n = 0
    if not csv_path.is_file():
        return 0, counts
    with open(csv_path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return 0, counts
        col = header.index("class_name") if "class_name" in header else None
        for row in reader:
            if not row:
                continue
            n += 1
            if col is not None:
                counts[row[col]] += 1
    return n, counts


def _dedupe(items: Sequence[Item]) -> tuple[Sequence[Item], int]:
    if hasattr(items, "dedupe"):  # an ItemList: pick tables deduplicated as arrays
        return items.dedupe()
    seen: set[str] = set()
    out = []
    for it in items:
        if it.id not in seen:
            seen.add(it.id)
            out.append(it)
    return out, len(items) - len(out)


def _features_info(csv_path: Path) -> dict[str, Any] | None:
    """File, rows and width of the features next to a results CSV (None when there are none)."""
    path = features_path(csv_path)
    if not path.is_file():
        return None
    try:
        rows, dim = read_features(path).shape
    except (ValueError, OSError):
        return {"file": path.name, "readable": False}
    return {"file": path.name, "rows": int(rows), "dim": int(dim), "dtype": "float32"}


def _model_info(model: Model) -> dict[str, Any]:
    meta = model.metadata
    return {"path": str(model.path), "sha256": model.sha256, "backend": model.backend,
            "description": model.description, "class_names": list(meta.class_names),
            "box_size": meta.box_size, "voxel_size": meta.voxel_size, "contrast": meta.contrast,
            "temperature": meta.temperature, "unknown_threshold": meta.unknown_threshold,
            "method": meta.method, "backbone": meta.backbone, "precision": meta.precision}


def finish_run(names: dict[str, Path], model: Model, plan: Plan, summary: ClassifySummary,
               settings: dict[str, Any]) -> ClassifySummary:
    """Write the STAR file from the CSV and the manifest; fill whole-file counts in ``summary``."""
    summary.total_rows, counts = _count_rows(names["csv"])
    summary.total_errors, _ = _count_rows(names["errors"])
    summary.class_counts = dict(counts)
    from cryoshift.runtime.star_out import write_predictions_star

    for note in plan.notes:
        if note not in summary.notes:
            summary.notes.append(note)
    split = write_predictions_star(names["csv"], names["star"], plan.origins,
                                   split_by_class=bool(settings.get("split_by_class")))
    if split:
        summary.notes.append(f"one STAR per class: {', '.join(p.name for p in split)}")
    if names["csv"].name == f"{PREDICTIONS}.csv" and any(str(t).startswith("copick:") for t in plan.inputs):
        from cryoshift.runtime.copick_io import default_session, write_predictions

        settings["copick_session"] = settings.get("copick_session") or default_session(model.sha256)
        summary.notes.extend(write_predictions(names["csv"], plan.inputs, settings["copick_session"]))
    manifest = {
        "format": "cryoshift.classify/1",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": _model_info(model),
        "inputs": plan.inputs,
        "settings": settings,
        "data": {"box_size": plan.box_size, "contrast": plan.contrast, "voxel_sizes": plan.voxel_sizes},
        "summary": asdict(summary),
        "tomograms": _per_tomogram(names["csv"]),  # class counts per tomogram (picks)
        "features": _features_info(names["csv"]),
        "versions": _versions(),
    }
    tmp = names["manifest"].with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    tmp.replace(names["manifest"])
    return summary


def _one_writer(fn: Any) -> Any:
    """Hold the output folder's lock (per shard) for the whole call: a second run on the same
    folder is refused in one line naming the holder's pid instead of duplicating rows."""

    @functools.wraps(fn)
    def locked(model: Any, inputs: list[str], out_dir: str | Path, *args: Any, **kwargs: Any) -> Any:
        from cryoshift.runtime.lock import FolderLock, lock_name

        shard = kwargs.get("shard")
        if isinstance(shard, str):
            shard = parse_shard(shard)
        out = Path(out_dir)
        created = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        try:
            with FolderLock(out, lock_name(tuple(shard) if shard else None), "classify run"):
                return fn(model, inputs, out_dir, *args, **kwargs)
        except BaseException:
            if created:  # a refused run leaves no empty folder behind (only its lock file was there)
                leftovers = list(out.iterdir())
                if all(p.name.endswith(".lock") for p in leftovers):
                    for p in leftovers:
                        p.unlink(missing_ok=True)
                    out.rmdir()
            raise

    return locked


@_one_writer
def classify(
    model: str | Path | Model,
    inputs: list[str],
    out_dir: str | Path,
    backend: str = "auto",
    batch_size: int = 64,
    workers: int = 2,
    resume: bool = False,
    shard: str | tuple[int, int] | None = None,
    unknown_threshold: float | None = None,
    progress: bool = True,
    tomograms: list[str] | None = None,
    contrast: str | None = None,
    ignore_voxel_size: bool = False,
    threads: int | None = None,
    devices: list[int] | None = None,
    subshard: tuple[int, int] | None = None,
    reader_processes: bool = False,
    transfer: str = "fp32",
    coordinate_pixel_size: float | None = None,
    binning: float | None = None,
    split_by_class: bool = False,
    copick_session: str | None = None,
    features: bool = False,
) -> ClassifySummary:
    """Classify every subtomogram in ``inputs`` and write results into ``out_dir``.

    ``inputs`` mixes MRC files, globs, directories, volume stacks, STAR listings
    (rlnImageName), pick tables (with ``tomograms`` to crop from) and dataset directories.
    A bad item is written to ``errors.csv`` and the run goes on; ``resume=True`` continues a
    killed run without losing or duplicating a row. ``shard="i/n"`` keeps every n-th item.
    ``binning`` (or ``coordinate_pixel_size``, A per pick pixel) scales pixel picks made on
    another sampling (RELION 4 unbinned picks) to the reconstruction's voxels;
    ``split_by_class`` also writes one ``predictions_<class>.star`` per class. ``copick:`` inputs
    (runtime/copick_io.py) get their predictions back as picks of session ``copick_session``
    (default: ``cryoshift-<model sha256[:8]>``). ``features=True`` also writes the model's
    features, one float32 row per results row in the same order, to ``features.npy`` (for the
    report's embedding; a resumed run goes on writing it when the interrupted one did).
    ``workers`` reader threads fill batches (``reader_processes=True``: processes sharing
    memory with this one, for GPUs that consume faster than one Python process reads).

    Example::

        summary = classify("model.onnx", ["particles/", "picks.star"], "out",
                           tomograms=["tomos/*.mrc"], backend="cpu")
        print("\\n".join(summary.lines()))
    """
    if isinstance(shard, str):
        shard = parse_shard(shard)
    if unknown_threshold is not None and not 0.0 <= unknown_threshold <= 1.0:
        raise InputError(None, f"unknown threshold must lie in [0, 1], not {unknown_threshold}")
    if devices and len(devices) > 1:
        return _classify_devices(model, inputs, out_dir, devices, backend=backend, batch_size=batch_size,
                                 workers=workers, resume=resume, shard=shard,
                                 unknown_threshold=unknown_threshold, progress=progress, tomograms=tomograms,
                                 contrast=contrast, ignore_voxel_size=ignore_voxel_size, threads=threads,
                                 transfer=transfer, reader_processes=reader_processes, binning=binning,
                                 coordinate_pixel_size=coordinate_pixel_size, split_by_class=split_by_class,
                                 features=features)
    t0 = time.perf_counter()
    if not isinstance(model, Model):
        # One device: chosen by its number; the caller's environment (CUDA_VISIBLE_DEVICES) is left
        # alone (only the worker processes of several devices get their own).
        device_id = devices[0] if devices else 0
        model = load_model(model, backend, batch_size=batch_size, threads=threads, device_id=device_id,
                           transfer=transfer)
    meta = model.metadata
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # A resumed run goes on writing features when the interrupted one did (the file is there).
    features = features or (resume and features_path(_names(out, shard)["csv"]).is_file())
    if features and getattr(model._runner, "has_features", True) is False:
        raise InputError(model.path, "has no 'features' output, which --features writes; classify without "
                                     "--features (or export the model again with cryoshift export)")
    cache = VolumeCache()
    plan = plan_inputs(inputs, meta.box_size, meta.voxel_size, meta.contrast, contrast, tomograms,
                       ignore_voxel_size, cache, coordinate_pixel_size=coordinate_pixel_size, binning=binning)
    if shard:
        plan = plan.shard(*shard)
    if subshard:
        plan = plan.shard(*subshard)
    items, duplicates = _dedupe(plan.items)
    from cryoshift.runtime.readers import auto_workers
    from cryoshift.runtime.transfer import startup_parity

    workers = workers if workers >= 1 else auto_workers(model, items)  # 0: sized to the backend
    parity = startup_parity(model, items, cache, None if ignore_voxel_size else meta.voxel_size)
    names = _names(out, shard)
    if progress:
        passed = f"; passed over: {'; '.join(model.notes)}" if model.notes else ""
        print(f"cryoshift: backend {model.description}{passed}", file=sys.stderr, flush=True)
    summary = ClassifySummary(str(out), str(names["csv"]), str(names["star"]), str(names["errors"]),
                              str(names["manifest"]), model.description, planned=len(items))
    summary.notes.extend(model.notes)
    if duplicates:
        summary.notes.append(f"{duplicates} inputs were given more than once and are classified once")
    with Ledger(names["csv"], result_columns(meta.class_names), resume) as results, \
            Ledger(names["errors"], ERROR_COLUMNS, resume) as errors, contextlib.ExitStack() as stack:
        if results.repaired_bytes or errors.repaired_bytes:
            summary.notes.append("cut a partial last line left by the interrupted run")
        feats = None
        if features:  # cut back to (or padded to) the rows the CSV holds, then appended with them
            feats = stack.enter_context(FeatureLedger(features_path(names["csv"]), results.rows, resume,
                                                      model.num_features))
            summary.notes.extend(feats.notes)
        done = results.done | errors.done
        todo = items.without(done) if hasattr(items, "without") else [it for it in items if it.id not in done]
        summary.resumed = len(items) - len(todo)

        def write(rows: list[list[Any]], errs: list[tuple[str, str, str]], f: Any = None) -> None:
            if feats is not None and f is not None:
                feats.append(f)  # first: a kill before the CSV append leaves rows the resume cuts off
            results.append(rows)
            errors.append(errs)

        stats: RunStats = run_pipeline(model, todo, write, batch_size=batch_size, workers=workers,
                                       unknown_threshold=unknown_threshold, cache=cache, progress=progress,
                                       check_voxel_size=not ignore_voxel_size,
                                       reader_processes=reader_processes, with_features=feats is not None)
    summary.classified, summary.errors, summary.unknown = stats.done, stats.errors, stats.unknown
    summary.read_s, summary.compute_s = stats.read_s, stats.compute_s
    summary.write_s, summary.wait_s = stats.write_s, stats.wait_s
    summary.wall_s = time.perf_counter() - t0
    summary.pipeline_s = stats.wall_s
    summary.rate = (stats.done + stats.errors) / stats.wall_s if stats.wall_s > 0 else 0.0
    settings = {"backend": model.backend, "batch_size": batch_size, "workers": workers,
                "reader_processes": reader_processes, "transfer": transfer, "transfer_parity": parity,
                "resume": resume,
                "shard": list(shard) if shard else None, "subshard": list(subshard) if subshard else None,
                "unknown_threshold": unknown_threshold, "tomograms": tomograms, "contrast": contrast,
                "ignore_voxel_size": ignore_voxel_size, "coordinate_pixel_size": coordinate_pixel_size,
                "binning": binning, "split_by_class": split_by_class, "copick_session": copick_session,
                "features": features}
    return finish_run(names, model, plan, summary, settings)


# ---------------------------------------------------------------------------------------------
# One worker process per device


def _classify_devices(model: str | Path | Model, inputs: list[str], out_dir: str | Path, devices: list[int],
                      **kw: Any) -> ClassifySummary:
    """Spawn one ``classify`` process per device on a deterministic share; merge their ledgers."""
    if isinstance(model, Model):
        model = model.path
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    progress = kw.pop("progress", True)
    procs = []
    parts = []
    for rank, device in enumerate(devices):
        part = out / "parts" / f"device-{device}"
        parts.append(part)
        job = {"model": str(model), "inputs": list(inputs), "out_dir": str(part),
               "subshard": [rank, len(devices)],
               **{k: (list(v) if isinstance(v, tuple) else v) for k, v in kw.items()}, "progress": False}
        env = dict(os.environ, CUDA_VISIBLE_DEVICES=str(device))
        code = "import sys; from cryoshift.runtime.classify import _worker; _worker(sys.argv[1])"
        cmd = [sys.executable, "-c", code, json.dumps(job)]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      text=True))
    if progress:
        _watch(procs, parts, kw.get("shard"), model, inputs, kw)
    failures = []
    for device, proc in zip(devices, procs, strict=True):
        _stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            last = (stderr.strip().splitlines() or ["no output"])[-1]
            failures.append(f"device {device}: {last}")
    if failures:
        raise InputError(out, "worker failed: " + "; ".join(failures))
    shard = kw.get("shard")
    names = _names(out, shard)
    suffix_names = [_names(p, shard) for p in parts]
    merge_csv([n["csv"] for n in suffix_names], names["csv"])
    merge_csv([n["errors"] for n in suffix_names], names["errors"])
    notes = []
    if kw.get("features"):  # the workers' features in the order merge_csv joined their rows
        part_feats = [features_path(n["csv"]) for n in suffix_names]
        if all(f.is_file() and len(read_features(f)) == _ledger_rows(n["csv"])
               for f, n in zip(part_feats, suffix_names, strict=True)):
            join_features([(f, None) for f in part_feats], features_path(names["csv"]))
        else:
            notes.append("features of the device workers do not match their rows: no features.npy")
    worker_summaries = [json.loads(n["manifest"].read_text())["summary"] for n in suffix_names]
    first = json.loads(suffix_names[0]["manifest"].read_text())
    summary = ClassifySummary(str(out), str(names["csv"]), str(names["star"]), str(names["errors"]),
                              str(names["manifest"]), f"{len(devices)} worker processes: "
                              + first["model"]["description"])
    for ws in worker_summaries:
        for key in ("planned", "classified", "errors", "resumed", "unknown", "read_s", "compute_s", "write_s",
                    "wait_s"):
            setattr(summary, key, getattr(summary, key) + ws[key])
    summary.wall_s = time.perf_counter() - t0
    summary.pipeline_s = summary.wall_s
    summary.rate = (summary.classified + summary.errors) / summary.wall_s if summary.wall_s > 0 else 0.0
    summary.notes.extend(notes)
    model_obj = _ManifestModel.from_manifest(first)
    data = first["data"]
    plan = Plan([], list(inputs), data["box_size"], data["contrast"], data["voxel_sizes"])
    try:  # the input tables' rows, for predictions.star (planning reads headers, not voxels)
        meta = model_obj.metadata
        plan = plan_inputs(inputs, meta.box_size, meta.voxel_size, meta.contrast, kw.get("contrast"),
                           kw.get("tomograms"), True, coordinate_pixel_size=kw.get("coordinate_pixel_size"),
                           binning=kw.get("binning"))
    except InputError:
        pass
    settings = {**{k: v for k, v in kw.items()}, "devices": devices, "progress": progress}
    return finish_run(names, model_obj, plan, summary, settings)


def _ledger_rows(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            return max(0, sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 20), b"")) - 1)
    except OSError:
        return 0


def _watch(procs: list[subprocess.Popen], parts: list[Path], shard: tuple[int, int] | None,
           model: str | Path, inputs: list[str], kw: dict[str, Any]) -> None:
    """Progress bar over all device workers, from the rows their ledgers hold."""
    from cryoshift.runtime.metadata import read_onnx_metadata
    from cryoshift.runtime.pipeline import _Progress

    try:
        meta = read_onnx_metadata(model)
        plan = plan_inputs(inputs, meta.box_size, meta.voxel_size, meta.contrast, kw.get("contrast"),
                           kw.get("tomograms"), True)
        total = len(plan.shard(*shard).items if shard else plan.items)
    except InputError:
        return  # the workers report the problem themselves
    names = [_names(p, shard) for p in parts]
    with _Progress(total, f"classifying on {len(procs)} devices") as bar:
        shown = 0
        while True:
            running = any(p.poll() is None for p in procs)
            now = sum(_ledger_rows(n["csv"]) + _ledger_rows(n["errors"]) for n in names)
            if now > shown:
                bar.advance(now - shown)
                shown = now
            if not running:
                return
            time.sleep(0.5)


class _ManifestModel(Model):
    """Model facts read back from a worker's manifest (the parent never opens a GPU session)."""

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> Model:
        from cryoshift.runtime.metadata import ModelMetadata

        info = manifest["model"]
        meta = ModelMetadata(class_names=info["class_names"], box_size=info["box_size"],
                             voxel_size=info["voxel_size"], contrast=info["contrast"])
        return Model(Path(info["path"]), meta, info["backend"], info["sha256"],
                     description=info["description"])


def _worker(job_json: str) -> None:
    """Entry point of one device worker process (see :func:`_classify_devices`)."""
    job = json.loads(job_json)
    job["subshard"] = tuple(job["subshard"])
    if job.get("shard"):
        job["shard"] = tuple(job["shard"])
    model = job.pop("model")
    inputs = job.pop("inputs")
    out_dir = job.pop("out_dir")
    try:
        classify(model, inputs, out_dir, **job)
    except InputError as exc:
        print(f"cryoshift: error: {exc}", file=sys.stderr)
        sys.exit(2)


class _CallableModule(types.ModuleType):
    """``cryoshift.runtime.classify`` is both this module and the public function: importing the
    submodule makes it the package attribute, so ``from cryoshift.runtime import classify`` must
    stay callable whichever was imported first."""

    def __call__(self, *args: Any, **kwargs: Any) -> ClassifySummary:
        return classify(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
