"""Classification across nodes on an existing engine: Ray Data with an actor pool.

:class:`RayInference` is the :class:`~cryoshift.runtime.run.Inference` of :func:`classify_ray`:
the run itself (plan, ledgers, resume, predictions.star, manifest) is the local one
(runtime/run.py); only the reading and inference happen on the actors. Each actor loads the
model once (``__init__``) and classifies batches of item descriptions (paths, indices,
coordinates; never voxel data, which the actor reads itself from the shared file system, with
the same batch filling as a local run). The driver streams finished rows back (with their
features, for ``features=True``: the exact float32 bytes of each row) and appends them to the
same fsync'ed ledgers as a local run, so the files are identical in form. Planning options
(``binning``, ``coordinate_pixel_size``) act on the driver's plan, and ``split_by_class`` on the
files written at the end, as for a local run.

    ds.map_batches(Classifier, batch_size=N, num_gpus=1 or 0, compute=ActorPoolStrategy(size=n))
"""

from __future__ import annotations

import base64
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cryoshift.runtime.errors import require_extra
from cryoshift.runtime.ledger import RunLedgers
from cryoshift.runtime.pipeline import LABEL, UNKNOWN, Progress, RunStats, rows_without_shift
from cryoshift.runtime.polarity import centre_contrast, say
from cryoshift.runtime.run import RunOptions, driver_model, one_writer, refuse_featureless, run
from cryoshift.runtime.sources import Item, VolumeCache
from cryoshift.runtime.summary import ClassifySummary, model_info

_ITEM_FIELDS = ("id", "kind", "path", "index", "x", "y", "z", "tomo", "error")


class Classifier:
    """Ray Data callable class: one model per actor, one call per batch of item descriptions."""

    def __init__(
        self,
        model_path: str,
        backend: str = "auto",
        batch_size: int = 64,
        unknown_threshold: float | None = None,
        threads: int | None = None,
        ignore_voxel_size: bool = False,
        features: bool = False,
    ):
        from cryoshift.runtime.backends import load_model

        self.model = load_model(model_path, backend, batch_size=batch_size, threads=threads)
        self.threshold = unknown_threshold
        self.voxel_size = None if ignore_voxel_size else self.model.metadata.voxel_size
        self.features = features  # also send each row's features (the run keeps features.npy)
        self.cache = VolumeCache()
        box = self.model.metadata.box_size
        self.buffer = np.zeros((batch_size, 1, box, box, box), np.float32)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from cryoshift.runtime.pipeline import score_batch
        from cryoshift.runtime.readers import fill

        n = len(batch["id"])
        if n > self.buffer.shape[0]:
            self.buffer = np.zeros((n, *self.buffer.shape[1:]), np.float32)
        chunk = [
            Item(
                str(c["id"]),
                str(c["kind"]),
                str(c["path"]),
                int(c["index"]),
                float(c["x"]),
                float(c["y"]),
                float(c["z"]),
                str(c["tomo"]),
                str(c["error"]),
            )
            for c in ({f: batch[f][i] for f in _ITEM_FIELDS} for i in range(n))
        ]
        good, errors = fill(chunk, self.buffer, self.cache, self.voxel_size)
        polarity = centre_contrast(self.buffer[: len(good)])  # of the crops, for the driver's tally
        rows: list[list[Any]] = []
        feats = np.zeros((0, 0), np.float32)
        if good:
            logits, features = self.model.predict(self.buffer, len(good), values_checked=True)
            rows, failed, features = score_batch(
                [chunk[i] for i in good], logits, features, self.model.metadata, self.threshold
            )
            errors = [*errors, *failed]
            feats = np.asarray(features[: len(rows)], dtype=np.float32)
        # JSON has no NaN: send None and turn it back on the driver.
        payloads = [json.dumps(list(e)) for e in errors]
        payloads += [
            json.dumps([None if isinstance(v, float) and math.isnan(v) else v for v in r]) for r in rows
        ]
        kinds = ["error"] * len(errors) + ["row"] * len(rows)
        out = {"kind": np.array(kinds, dtype=object), "payload": np.array(payloads, dtype=object)}
        # one value per entry (the column lengths must agree): the good crops', NaN for unread items
        out["polarity"] = np.concatenate([np.full(n - len(good), np.nan), polarity])
        if self.features:  # each row's float32 bytes as text (exact; error entries have none)
            out["features"] = np.array(
                [""] * len(errors) + [base64.b64encode(f.tobytes()).decode("ascii") for f in feats],
                dtype=object,
            )
        return out


class RayInference:
    """A pool of Ray actors reads and classifies; this process (the driver) writes the ledgers."""

    def __init__(
        self,
        model_path: Path,
        backend: str = "auto",
        batch_size: int = 64,
        num_workers: int = 2,
        num_gpus: float = 0.0,
        address: str | None = None,
        threads: int | None = None,
    ):
        self.model_path = Path(model_path).resolve()
        self.description = f"ray ({num_workers} actors x {num_gpus:g} GPU, {backend})"
        self.model = driver_model(self.model_path, backend, self.description)  # the actors run it
        self.metadata = self.model.metadata
        self.notes: list[str] = []
        self.num_features = self.model.num_features  # as a local run: the features file's width
        self.backend, self.batch_size, self.threads = backend, batch_size, threads
        self.num_workers, self.num_gpus, self.address = num_workers, num_gpus, address

    def prepare(self, items: Sequence[Item], cache: VolumeCache, opts: RunOptions) -> dict[str, Any]:
        import ray

        if opts.features:
            refuse_featureless(self.model)
        if not ray.is_initialized():
            ray.init(
                address=self.address, include_dashboard=False, log_to_driver=False, configure_logging=False
            )
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.execution_options.preserve_order = True  # rows in input order, as a local run writes them
        return {
            "engine": "ray",
            "address": self.address,
            "num_workers": self.num_workers,
            "num_gpus": self.num_gpus,
            "backend": self.backend,
            "batch_size": self.batch_size,
        }

    def run(self, todo: Sequence[Item], ledgers: RunLedgers, opts: RunOptions) -> RunStats:
        t0 = time.perf_counter()
        stats = RunStats(contrast=self.model.metadata.contrast)
        if len(todo):
            with Progress(len(todo), "classifying (ray)", enabled=opts.progress) as bar:
                for rows, errors, feats, polarity in self._batches(todo, opts, ledgers.features is not None):
                    stats.polarity.add_values(polarity)
                    ledgers.append(rows, errors, feats)
                    stats.done += len(rows)
                    stats.errors += len(errors)
                    stats.unknown += sum(r[LABEL] == UNKNOWN for r in rows)
                    stats.shift_missing += rows_without_shift(rows, self.model.metadata)
                    bar.advance(len(rows) + len(errors))
        stats.wall_s = time.perf_counter() - t0
        for line in stats.warnings:
            say(line)
        return stats

    def _batches(self, todo: Sequence[Item], opts: RunOptions, with_features: bool = False) -> Any:
        """(rows, errors, features of the rows, polarity values) of each batch the actor pool
        returns; features (float32 (len(rows), F), in the order of the rows) only
        ``with_features``, else None; polarity: :func:`centre_contrast` of the batch's crops."""
        import ray
        from ray.data import ActorPoolStrategy

        records = [
            {f: (getattr(it, f) if f != "index" else int(it.index)) for f in _ITEM_FIELDS} for it in todo
        ]
        ds = ray.data.from_items(records).map_batches(
            Classifier,
            fn_constructor_kwargs={
                "model_path": str(self.model_path),
                "backend": self.backend,
                "batch_size": self.batch_size,
                "unknown_threshold": opts.unknown_threshold,
                "threads": self.threads,
                "ignore_voxel_size": opts.ignore_voxel_size,
                "features": with_features,
            },
            batch_size=self.batch_size,
            num_gpus=self.num_gpus,
            batch_format="numpy",
            compute=ActorPoolStrategy(size=self.num_workers),
        )
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            rows, errors, feats = [], [], []
            encoded = batch["features"] if with_features else [""] * len(batch["kind"])
            for kind, payload, f in zip(batch["kind"], batch["payload"], encoded, strict=True):
                values = json.loads(payload)
                if kind == "row":
                    rows.append([math.nan if v is None else v for v in values])
                    feats.append(np.frombuffer(base64.b64decode(f), dtype=np.float32))
                else:
                    errors.append(values)
            yield rows, errors, (np.stack(feats) if with_features and rows else None), batch["polarity"]

    def model_info(self) -> dict[str, Any]:
        return model_info(self.model)


@one_writer  # one writer per output folder, as for a local run
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
    coordinate_pixel_size: float | None = None,
    binning: float | None = None,
    split_by_class: bool = False,
    features: bool = False,
) -> ClassifySummary:
    """Classify with a pool of ``num_workers`` Ray actors (``num_gpus`` each); same outputs as
    :func:`cryoshift.runtime.classify` (runtime/run.py), whose options ``binning``,
    ``coordinate_pixel_size``, ``split_by_class`` and ``features`` mean the same here (rows in
    input order, as a local run writes them; ``features.npy`` follows the CSV's order).
    Inputs (one path or a list) must be readable from every node.

    Example::

        classify_ray("model.onnx", ["/shared/picks.star"], "/shared/out", tomograms=["/shared/tomos"],
                     num_workers=8, num_gpus=1, address="auto")
    """
    opts = RunOptions(  # checks the options (binning, ...) first, with or without Ray installed
        inputs,
        Path(out_dir),
        resume=resume,
        unknown_threshold=unknown_threshold,
        tomograms=tomograms,
        contrast=contrast,
        ignore_voxel_size=ignore_voxel_size,
        coordinate_pixel_size=coordinate_pixel_size,
        binning=binning,
        split_by_class=split_by_class,
        features=features,
        progress=progress,
    )
    require_extra("distributed", "cryoshift classify --ray", "ray", "ray.data")
    inference = RayInference(Path(model), backend, batch_size, num_workers, num_gpus, address, threads)
    return run(inference, opts)
