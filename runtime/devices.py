"""Inference on several GPUs of one node: one worker process per device.

:class:`DeviceInference` is the :class:`~cryoshift.runtime.run.Inference` of
``classify(..., devices=[0, 1, ...])``. Each worker is a process of its own with
``CUDA_VISIBLE_DEVICES`` set to its device (never threads sharing a session) and runs a local
classify (runtime/run.py) on a deterministic share of the run's items, into
``out_dir/parts/device-N/``: its own fsync'ed ledgers, so a killed run resumes per device. When
the workers are done, their rows (and features) are appended to the run's own ledgers, each id
once, and the run finishes as any other.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np

from cryoshift.runtime.errors import InputError
from cryoshift.runtime.jsonfile import read_json_object
from cryoshift.runtime.ledger import RunLedgers
from cryoshift.runtime.metadata import ModelMetadata
from cryoshift.runtime.pipeline import LABEL, UNKNOWN, RunStats, rows_without_shift
from cryoshift.runtime.polarity import say
from cryoshift.runtime.run import RunOptions, cpu_devices_note, driver_model, refuse_featureless
from cryoshift.runtime.sources import Item, VolumeCache
from cryoshift.runtime.summary import output_names

CHUNK = 65536  # rows appended to the run's ledgers at a time
WORKER_STOP_S = 10.0  # seconds a device worker gets to end after SIGTERM before SIGKILL

# What parse_devices accepts, for the messages that refuse the rest.
DEVICE_FORMS = "a GPU number (0), a list of them ([0, 1]) or a comma-separated string ('0,1')"


def parse_devices(value: str | int | Iterable[int] | None, name: str = "devices") -> list[int] | None:
    """The GPU numbers of ``classify(devices=...)`` and ``--devices`` (``name``, for the
    messages): None or empty for no choice (device 0), else a list of distinct numbers >= 0.

    Accepted: ``0``, ``[0, 1]`` (any iterable of integers) and ``"0,1"`` (the CLI's text, spaces
    and a trailing comma allowed). Anything else is refused in one line naming ``name``, the value
    and these forms. Why one parser for both: the API took ``devices=1`` as a bare TypeError
    (``len()`` of an int), ``devices="0,1"`` as the three devices '0', ',' and '1' (one worker
    process each, CUDA_VISIBLE_DEVICES=','), ``devices="cpu"`` as devices 'c', 'p', 'u', and
    ``[0, 1.5]`` as is, while the CLI refused each of these in one line.
    """
    if value is None:
        return None
    if isinstance(value, str):
        try:
            devices = [int(part) for part in value.split(",") if part.strip()]
        except ValueError:
            hint = (
                "; the CPU is chosen by the backend (backend='cpu', --backend cpu)"
                if value.strip().lower() == "cpu"
                else ""
            )
            raise InputError(None, f"{name} {value!r}: give {DEVICE_FORMS}{hint}") from None
    elif isinstance(value, Integral) and not isinstance(value, bool):
        devices = [int(value)]
    elif isinstance(value, (bytes, dict, bool)) or not isinstance(value, Iterable):
        raise InputError(None, f"{name} {value!r} is a {type(value).__name__}: give {DEVICE_FORMS}")
    else:
        devices = []
        for device in value:
            if isinstance(device, bool) or not isinstance(device, Integral):
                raise InputError(
                    None,
                    f"{name}: {device!r} is a {type(device).__name__}, not a GPU number: give {DEVICE_FORMS}",
                )
            devices.append(int(device))
    shown = ",".join(map(str, devices))
    if len(set(devices)) != len(devices):
        raise InputError(None, f"{name} {shown} lists a GPU twice")
    negative = [d for d in devices if d < 0]
    if negative:  # was run on the CPU without a word (exit 0)
        raise InputError(None, f"{name} {shown}: GPU numbers start at 0, not {negative[0]}")
    return devices or None


class DeviceInference:
    """One worker process per device, each classifying its share into ``parts/device-N``."""

    def __init__(
        self,
        model_path: Path,
        devices: list[int],
        backend: str = "auto",
        batch_size: int = 64,
        workers: int = 2,
        threads: int | None = None,
        reader_processes: bool = False,
        transfer: str = "fp32",
    ):
        self.model_path = Path(model_path)
        self.devices = parse_devices(devices) or []
        self.model = driver_model(self.model_path, backend)  # metadata and hash: the workers run it
        self.metadata = self.model.metadata
        self.description = f"{len(devices)} worker processes: {backend}"
        self.notes: list[str] = []
        self.num_features = 0
        self.options = {
            "backend": backend,
            "batch_size": batch_size,
            "workers": workers,
            "threads": threads,
            "transfer": transfer,
            "reader_processes": reader_processes,
        }
        self._worker_model: dict[str, Any] | None = None

    def prepare(self, items: Sequence[Item], cache: VolumeCache, opts: RunOptions) -> dict[str, Any]:
        if opts.features:
            refuse_featureless(self.model)
        return {**self.options, "devices": self.devices}

    def parts(self, opts: RunOptions) -> list[dict[str, Path]]:
        """The output files of each device worker."""
        return [output_names(opts.out_dir / "parts" / f"device-{d}", opts.shard) for d in self.devices]

    def run(self, todo: Sequence[Item], ledgers: RunLedgers, opts: RunOptions) -> RunStats:
        t0 = time.perf_counter()
        parts = self.parts(opts)
        procs = [self._spawn(rank, device, opts) for rank, device in enumerate(self.devices)]
        failures = []
        try:
            if opts.progress:
                _watch(procs, parts, len(todo))
            for device, proc in zip(self.devices, procs, strict=True):
                _stdout, stderr = proc.communicate()
                if proc.returncode != 0:
                    last = (stderr.strip().splitlines() or ["no output"])[-1]
                    failures.append(f"device {device}: {last}")
        except BaseException:
            _stop(procs)
            raise
        if failures:
            raise InputError(opts.out_dir, "worker failed: " + "; ".join(failures))
        stats = RunStats()
        if ledgers.features is not None and not all(_features_match(p) for p in parts):
            ledgers.drop_features("features of the device workers do not match their rows: no features.npy")
        for names in parts:
            _collect(names, ledgers, stats, self.metadata)
        manifests = [read_json_object(p["manifest"], "worker manifest") for p in parts]
        for m in manifests:
            for key in ("read_s", "compute_s", "write_s", "wait_s"):
                setattr(stats, key, getattr(stats, key) + m["summary"][key])
        # each worker judged its own crops' polarity (runtime/polarity.py): its warning is the run's
        for m in manifests:
            for line in m["summary"].get("warned", []):
                if isinstance(line, str) and line not in stats.worker_warnings:
                    stats.worker_warnings.append(line)
                    say(line)
        self._worker_model = manifests[0]["model"]
        self.description = f"{len(self.devices)} worker processes: {self._worker_model['description']}"
        if self._worker_model.get("backend") == "cpu":  # GPUs asked for, none used: said, not silent
            stats.worker_warnings.append(cpu_devices_note(self.devices, self.options["backend"]))
        stats.wall_s = time.perf_counter() - t0
        return stats

    def model_info(self) -> dict[str, Any]:
        """The first worker's model block (the backend it resolved), else the driver's facts."""
        if self._worker_model is not None:
            return self._worker_model
        from cryoshift.runtime.summary import model_info

        return model_info(self.model)

    def _spawn(self, rank: int, device: int, opts: RunOptions) -> subprocess.Popen:
        settings = opts.settings()
        job = {
            "model": str(self.model_path),
            "inputs": list(opts.inputs),
            "out_dir": str(opts.out_dir / "parts" / f"device-{device}"),
            **{k: v for k, v in self.options.items()},
            **{
                k: settings[k]
                for k in (
                    "resume",
                    "shard",
                    "unknown_threshold",
                    "tomograms",
                    "contrast",
                    "ignore_voxel_size",
                    "coordinate_pixel_size",
                    "binning",
                    "split_by_class",
                    "features",
                )
            },
            "subshard": [rank, len(self.devices)],
            "progress": False,
        }
        env = dict(os.environ, CUDA_VISIBLE_DEVICES=str(device))
        code = "import sys; from cryoshift.runtime.devices import worker_main; worker_main(sys.argv[1])"
        return subprocess.Popen(
            [sys.executable, "-c", code, json.dumps(job)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )


def worker_main(job_json: str) -> None:
    """Entry point of one device worker process (see :class:`DeviceInference`)."""
    from cryoshift.runtime.run import classify

    job = json.loads(job_json)
    model = job.pop("model")
    inputs = job.pop("inputs")
    out_dir = job.pop("out_dir")
    job["subshard"] = tuple(job["subshard"])
    if job.get("shard"):
        job["shard"] = tuple(job["shard"])
    try:
        classify(model, inputs, out_dir, **job)
    except InputError as exc:
        print(f"cryoshift: error: {exc}", file=sys.stderr)
        sys.exit(2)


def _stop(procs: list[subprocess.Popen]) -> None:
    """End the device workers when the parent stops early (Ctrl-C, SIGTERM, an error): they ran on
    after their parent's SIGTERM, holding the GPUs. Their rows so far stay in their ledgers, which
    ``--resume`` reads."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=WORKER_STOP_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _data_rows(path: Path) -> Iterator[list[str]]:
    if not path.is_file():
        return
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        next(reader, None)
        yield from (row for row in reader if row)


def _features_match(names: dict[str, Path]) -> bool:
    from cryoshift.runtime.features import features_path, read_features

    path = features_path(names["csv"])
    return path.is_file() and len(read_features(path)) == _ledger_rows(names["csv"])


def _collect(names: dict[str, Path], ledgers: RunLedgers, stats: RunStats, metadata: ModelMetadata) -> None:
    """Append a worker's rows (with their features) and errors that ``ledgers`` do not hold yet;
    ``metadata``: the model's, for the count of rows without a shift score."""
    feats = None
    if ledgers.features is not None:
        from cryoshift.runtime.features import features_path, read_features

        feats = read_features(features_path(names["csv"]))
    rows: list[list[str]] = []
    keep: list[int] = []

    def flush() -> None:
        stats.shift_missing += rows_without_shift(rows, metadata)
        ledgers.append(rows, [], None if feats is None else np.asarray(feats[keep]))
        rows.clear()
        keep.clear()

    for position, row in enumerate(_data_rows(names["csv"])):
        if ledgers.has(row[0]):
            continue
        rows.append(row)
        keep.append(position)
        stats.done += 1
        stats.unknown += row[LABEL] == UNKNOWN
        if len(rows) >= CHUNK:
            flush()
    flush()
    errors = [row for row in _data_rows(names["errors"]) if not ledgers.has(row[0])]
    for start in range(0, len(errors), CHUNK):
        ledgers.append([], errors[start : start + CHUNK])
    stats.errors += len(errors)


def _ledger_rows(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            return max(0, sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 20), b"")) - 1)
    except OSError:
        return 0


def _watch(procs: list[subprocess.Popen], parts: list[dict[str, Path]], total: int) -> None:
    """Progress bar over all device workers, from the rows their ledgers gain."""
    from cryoshift.runtime.pipeline import Progress

    def rows() -> int:
        return sum(_ledger_rows(n["csv"]) + _ledger_rows(n["errors"]) for n in parts)

    start = rows()
    with Progress(total, f"classifying on {len(procs)} devices") as bar:
        shown = 0
        while True:
            running = any(p.poll() is None for p in procs)
            now = min(total, rows() - start)
            if now > shown:
                bar.advance(now - shown)
                shown = now
            if not running:
                return
            time.sleep(0.5)
