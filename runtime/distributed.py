"""Classification across nodes on an existing engine: Ray Data with an actor pool.

Each actor loads the model once (``__init__``) and classifies batches of item descriptions
(paths, indices, coordinates; never voxel data, which the actor reads itself from the shared
file system). The driver plans the inputs, skips what the ledgers already hold (``resume``),
streams finished rows back and appends them to the same fsync'ed ledgers as a local run, so
results, errors table, STAR file and manifest are identical in form.

    ds.map_batches(Classifier, batch_size=N, num_gpus=1 or 0, compute=ActorPoolStrategy(size=n))
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from cryoshift.runtime.classify import _one_writer
from cryoshift.runtime.errors import InputError, require_extra

_ITEM_FIELDS = ("id", "kind", "path", "index", "x", "y", "z", "tomo", "error")


class Classifier:
    """Ray Data callable class: one model per actor, one call per batch of item descriptions."""

    def __init__(self, model_path: str, backend: str = "auto", batch_size: int = 64,
                 unknown_threshold: float | None = None, threads: int | None = None,
                 ignore_voxel_size: bool = False):
        from cryoshift.runtime.backends import load_model
        from cryoshift.runtime.sources import VolumeCache

        self.model = load_model(model_path, backend, batch_size=batch_size, threads=threads)
        self.threshold = unknown_threshold
        self.voxel_size = None if ignore_voxel_size else self.model.metadata.voxel_size
        self.cache = VolumeCache()
        box = self.model.metadata.box_size
        self.buffer = np.zeros((batch_size, 1, box, box, box), np.float32)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from cryoshift.runtime.pipeline import finite_outputs, score_rows
        from cryoshift.runtime.readers import error_reason
        from cryoshift.runtime.sources import Item, load_item

        n = len(batch["id"])
        if n > self.buffer.shape[0]:
            self.buffer = np.zeros((n, *self.buffer.shape[1:]), np.float32)
        good: list[Item] = []
        kinds: list[str] = []
        payloads: list[str] = []
        for i in range(n):
            col = {f: batch[f][i] for f in _ITEM_FIELDS}
            item = Item(str(col["id"]), str(col["kind"]), str(col["path"]), int(col["index"]),
                        float(col["x"]), float(col["y"]), float(col["z"]), str(col["tomo"]),
                        str(col["error"]))
            try:
                load_item(item, self.buffer[len(good), 0], self.cache, self.voxel_size)
            except (InputError, OSError, ValueError, IndexError, EOFError) as exc:
                kinds.append("error")
                payloads.append(json.dumps([item.id, item.path, error_reason(exc)]))
                continue
            good.append(item)
        if good:
            logits, features = self.model.predict(self.buffer, len(good))
            good, logits, features, failed = finite_outputs(good, logits, features)
            for failure in failed:
                kinds.append("error")
                payloads.append(json.dumps(list(failure)))
            for row in score_rows(good, logits, features, self.model.metadata, self.threshold):
                kinds.append("row")
                # JSON has no NaN: send None and turn it back on the driver.
                clean = [None if isinstance(v, float) and math.isnan(v) else v for v in row]
                payloads.append(json.dumps(clean))
        return {"kind": np.array(kinds, dtype=object), "payload": np.array(payloads, dtype=object)}


def driver_model(model_path: Path, backend: str) -> Any:
    """What the driver needs of the model (metadata, sha256) without running it: an ONNX model's
    properties or a TensorRT engine's sidecar, so a GPU-only engine works on a CPU-only driver."""
    from cryoshift.runtime.backends import Model
    from cryoshift.runtime.engine_sidecar import file_sha256, read_engine_sidecar
    from cryoshift.runtime.metadata import read_onnx_metadata

    if model_path.suffix.lower() == ".engine":
        meta = read_engine_sidecar(model_path).metadata
        backend = "engine"
    else:
        meta = read_onnx_metadata(model_path)
    if not model_path.is_file():
        raise InputError(model_path, "no such file")
    return Model(model_path, meta, backend, file_sha256(model_path), description=f"ray ({backend})")


@_one_writer  # one writer per output folder, as for a local run
def classify_ray(
    model: str | Path,
    inputs: list[str],
    out_dir: str | Path,
    backend: str = "auto",
    batch_size: int = 64,
    num_workers: int = 2,
    num_gpus: float = 0.0,
    address: str | None = None,
    resume: bool = False,
    unknown_threshold: float | None = None,
    tomograms: list[str] | None = None,
    contrast: str | None = None,
    ignore_voxel_size: bool = False,
    threads: int | None = None,
    progress: bool = True,
) -> Any:
    """Classify with a pool of ``num_workers`` Ray actors (``num_gpus`` each); same outputs as
    :func:`cryoshift.runtime.classify.classify`. Inputs must be readable from every node.

    Example::

        classify_ray("model.onnx", ["/shared/picks.star"], "/shared/out", tomograms=["/shared/tomos"],
                     num_workers=8, num_gpus=1, address="auto")
    """
    require_extra("distributed", "cryoshift classify --ray", "ray", "ray.data")
    import ray
    from ray.data import ActorPoolStrategy

    from cryoshift.runtime.classify import ClassifySummary, _dedupe, _names, finish_run
    from cryoshift.runtime.ledger import ERROR_COLUMNS, Ledger
    from cryoshift.runtime.pipeline import _LABEL, UNKNOWN, _Progress, result_columns
    from cryoshift.runtime.sources import plan_inputs

    t0 = time.perf_counter()
    model_path = Path(model).resolve()
    local = driver_model(model_path, backend)  # metadata and hash only: the actors run the backend
    meta = local.metadata
    plan = plan_inputs(inputs, meta.box_size, meta.voxel_size, meta.contrast, contrast, tomograms,
                       ignore_voxel_size)
    items, _dups = _dedupe(plan.items)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = _names(out, None)
    summary = ClassifySummary(str(out), str(names["csv"]), str(names["star"]), str(names["errors"]),
                              str(names["manifest"]),
                              f"ray ({num_workers} actors x {num_gpus:g} GPU, {backend})",
                              planned=len(items))
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    with Ledger(names["csv"], result_columns(meta.class_names), resume) as results, \
            Ledger(names["errors"], ERROR_COLUMNS, resume) as errors:
        done = results.done | errors.done
        todo = [it for it in items if it.id not in done]
        summary.resumed = len(items) - len(todo)
        if todo:
            records = [{f: (getattr(it, f) if f != "index" else int(it.index)) for f in _ITEM_FIELDS}
                       for it in todo]
            ds = ray.data.from_items(records)
            ds = ds.map_batches(
                Classifier,
                fn_constructor_kwargs={"model_path": str(model_path), "backend": backend,
                                       "batch_size": batch_size, "unknown_threshold": unknown_threshold,
                                       "threads": threads, "ignore_voxel_size": ignore_voxel_size},
                batch_size=batch_size, num_gpus=num_gpus, batch_format="numpy",
                compute=ActorPoolStrategy(size=num_workers),
            )
            with _Progress(len(todo), "classifying (ray)", enabled=progress) as bar:
                for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                    rows, errs = [], []
                    for kind, payload in zip(batch["kind"], batch["payload"], strict=True):
                        values = json.loads(payload)
                        if kind == "row":
                            rows.append([math.nan if v is None else v for v in values])
                        else:
                            errs.append(values)
                    results.append(rows)
                    errors.append(errs)
                    summary.classified += len(rows)
                    summary.errors += len(errs)
                    summary.unknown += sum(r[_LABEL] == UNKNOWN for r in rows)
                    bar.advance(len(rows) + len(errs))
    summary.wall_s = time.perf_counter() - t0
    summary.pipeline_s = summary.wall_s
    summary.rate = (summary.classified + summary.errors) / summary.wall_s if summary.wall_s > 0 else 0.0
    settings = {"engine": "ray", "address": address, "num_workers": num_workers, "num_gpus": num_gpus,
                "backend": backend, "batch_size": batch_size, "resume": resume,
                "unknown_threshold": unknown_threshold, "tomograms": tomograms, "contrast": contrast,
                "ignore_voxel_size": ignore_voxel_size}
    local.description = summary.backend
    return finish_run(names, local, plan, summary, settings)
