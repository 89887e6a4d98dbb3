"""The last step of a classify run: what it did, and the files that say so.

:func:`finish_run` takes a run's finished ledgers and writes, in ``out_dir``:

``predictions.star`` the rows of ``predictions.csv`` for RELION/Warp/ArtiaX (runtime/star_out.py)
``manifest.json``    model, inputs, settings, counts, errors, timings, versions
copick picks         for ``copick:`` inputs, the predictions as picks of one session

and fills the whole-file counts of :class:`ClassifySummary`, whose ``lines()`` the CLI prints.
Shard runs name their files ``<name>.shard-i-of-n.<ext>`` (:func:`output_names`); ``merge``
(runtime/merge.py) finishes joined shards the same way.
"""

from __future__ import annotations

import json
import platform
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryoshift.runtime.ledger import checked_rows, escape_text
from cryoshift.runtime.outfiles import write_text

PREDICTIONS = "predictions"
ERRORS = "errors"
MANIFEST = "manifest"
RUN = "run"  # the model a run started with, written before its first row (runtime/run.py)
REPORT_HTML = "report.html"  # `cryoshift report RESULTS` writes it into the results folder


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
    unknown: int = 0  # rows flagged unknown in the whole results file (resumed parts included)
    unknown_this_session: int = 0  # of them, the rows this run wrote (alongside ``classified``)
    padded: int = 0  # planned crops that reach past their tomogram's edge (filled with the box's mean)
    wall_s: float = 0.0
    read_s: float = 0.0
    compute_s: float = 0.0
    write_s: float = 0.0
    wait_s: float = 0.0
    rate: float = 0.0  # items/s while the pipeline ran (reading, inference, writing rows)
    pipeline_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    warned: list[str] = field(default_factory=list)  # notes the run said on stderr already (see record)

    @classmethod
    def for_files(cls, names: dict[str, Path], backend: str, **counts: Any) -> ClassifySummary:
        """An empty summary of the run writing ``names`` (see :func:`output_names`)."""
        return cls(
            str(names["csv"].parent),
            str(names["csv"]),
            str(names["star"]),
            str(names["errors"]),
            str(names["manifest"]),
            backend,
            **counts,
        )

    def record(self, stats: Any) -> None:
        """Counts and times of a :class:`~cryoshift.runtime.pipeline.RunStats`."""
        self.classified, self.errors = stats.done, stats.errors
        # the session's count; finish_run sets ``unknown`` to the whole file's, as class_counts
        self.unknown_this_session = self.unknown = stats.unknown
        self.read_s, self.compute_s = stats.read_s, stats.compute_s
        self.write_s, self.wait_s = stats.write_s, stats.wait_s
        self.pipeline_s, self.rate = stats.wall_s, stats.rate
        # the pipeline printed these on stderr as the run ended (a data polarity that contradicts
        # the model's contrast): they stay notes here (printed, manifest) but ``-q`` repeats none
        self.warned = list(getattr(stats, "warnings", []))

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
        return [escape_text(line) for line in out] + self._said_lines(self.notes)

    def warning_lines(self) -> list[str]:
        """The lines ``classify -q`` still prints: failed items and notes about the inputs, less
        those the run said on stderr already (:attr:`warned`)."""
        return self._said_lines([n for n in self.notes if n not in self.warned])

    def _said_lines(self, notes: list[str]) -> list[str]:
        """The error count and ``notes``. Paths in them are escaped as the ledgers write them: a
        non-UTF-8 name would make ``print`` fail after the run had finished."""
        out = [f"errors: {self.errors_csv} ({self.total_errors} rows)"] if self.total_errors else []
        return [escape_text(line) for line in out + [f"note: {n}" for n in notes]]


def output_names(out_dir: Path, shard: tuple[int, int] | None) -> dict[str, Path]:
    """The files of a run in ``out_dir``: ``csv``, ``star``, ``errors``, ``manifest`` and ``run``
    (the model the run started with, so ``--resume`` can refuse another one)."""
    suffix = f".shard-{shard[0]}-of-{shard[1]}" if shard else ""
    return {
        "csv": out_dir / f"{PREDICTIONS}{suffix}.csv",
        "star": out_dir / f"{PREDICTIONS}{suffix}.star",
        "errors": out_dir / f"{ERRORS}{suffix}.csv",
        "manifest": out_dir / f"{MANIFEST}{suffix}.json",
        "run": out_dir / f"{RUN}{suffix}.json",
    }


def onnx_lineage(model: Any) -> str:
    """The sha256 of the ONNX model ``model`` computes: its own, or for a TensorRT engine the one
    its sidecar says it was built from (so a run can be resumed on the engine of its ONNX)."""
    if model.backend != "engine":
        return str(model.sha256)
    from cryoshift.runtime.engine_sidecar import read_engine_sidecar

    return read_engine_sidecar(model.path).onnx_sha256


def recorded_onnx_lineage(model: dict[str, Any]) -> str | None:
    """A recorded model block's ONNX sha256 (run records from before ``onnx_sha256``: an ONNX
    model's own sha256; an engine's is unknown)."""
    if "onnx_sha256" in model:
        return None if model["onnx_sha256"] is None else str(model["onnx_sha256"])
    return None if model.get("backend") == "engine" else str(model.get("sha256"))


def same_network(recorded: Any, model: dict[str, Any]) -> str | None:
    """Whether model block ``recorded`` (a run record's, a manifest's) and ``model`` are one
    network: "file" for the same file (sha256), "form" for the same network in another form (an
    ONNX model and the TensorRT engine built from it, or two engines of one ONNX: their outputs
    agree within export parity, not bit for bit), None otherwise. The one rule --resume, a shard
    classified into a run's folder and merge follow."""
    if not isinstance(recorded, dict) or not isinstance(recorded.get("sha256"), str):
        return None  # a damaged or foreign block is no evidence of anything
    if recorded["sha256"] == model.get("sha256"):
        return "file"
    lineage = recorded_onnx_lineage(recorded)
    return "form" if lineage is not None and lineage == recorded_onnx_lineage(model) else None


def model_info(model: Any) -> dict[str, Any]:
    """The manifest's ``model`` block for a :class:`~cryoshift.runtime.backends.Model`."""
    meta = model.metadata
    return {
        "path": str(model.path),
        "sha256": model.sha256,
        "onnx_sha256": onnx_lineage(model),
        "backend": model.backend,
        "description": model.description,
        "class_names": list(meta.class_names),
        "box_size": meta.box_size,
        "voxel_size": meta.voxel_size,
        "contrast": meta.contrast,
        "temperature": meta.temperature,
        "unknown_threshold": meta.unknown_threshold,
        "method": meta.method,
        "backbone": meta.backbone,
        "precision": meta.precision,
    }


def finish_run(
    names: dict[str, Path],
    model: dict[str, Any],
    plan: Any,
    summary: ClassifySummary,
    settings: dict[str, Any],
) -> ClassifySummary:
    """Write the STAR file from the CSV and the manifest; fill whole-file counts in ``summary``.

    ``model`` is the manifest's model block (:func:`model_info`), ``plan`` the run's
    :class:`~cryoshift.runtime.sources.Plan` (its input tables go into predictions.star).
    """
    summary.total_rows, counts, summary.unknown = _count_rows(names["csv"])
    summary.total_errors, _, _ = _count_rows(names["errors"])
    summary.class_counts = dict(counts)
    from cryoshift.runtime.star_out import remove_earlier_class_stars, write_predictions_star

    for note in plan.notes:
        if note not in summary.notes:
            summary.notes.append(note)
    padded_note = _count_padded(plan, summary)
    if padded_note:
        summary.notes.append(padded_note)
    earlier = _recorded_class_stars(names["manifest"])
    split = write_predictions_star(
        names["csv"],
        names["star"],
        plan.origins,
        split_by_class=bool(settings.get("split_by_class")),
        placement=plan.placement,
        notes=summary.notes,
    )
    if split:
        shown = [
            p.name if p.name == f"{names['star'].stem}_{name}.star" else f"{p.name} ({name})"
            for p, name in split.items()
        ]
        summary.notes.append(f"one STAR per class: {', '.join(shown)}")
    removed = remove_earlier_class_stars(names["star"], earlier, split)
    if removed and not split:
        gone = ", ".join(p.name for p in removed)
        summary.notes.append(
            f"removed the per-class STARs of an earlier run, now out of date ({gone}); "
            "--split-by-class writes them"
        )
    # a --devices worker (subshard) leaves the copick write to its parent, which writes the whole
    # result once under the session asked for (the workers wrote their shares under the default one)
    to_copick = not settings.get("subshard") and any(str(t).startswith("copick:") for t in plan.inputs)
    if names["csv"].name == f"{PREDICTIONS}.csv" and to_copick:
        from cryoshift.runtime.copick_io import copick_name, default_session, write_predictions

        # the id copick stores (it spells my_session as my-session): the manifest names what is there
        asked = settings.get("copick_session") or default_session(model["sha256"])
        summary.notes.extend(write_predictions(names["csv"], plan.inputs, asked))
        settings["copick_session"] = copick_name(asked)
    manifest = {
        "format": "cryoshift.classify/1",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": model,
        "inputs": plan.inputs,
        "settings": settings,
        "data": {"box_size": plan.box_size, "contrast": plan.contrast, "voxel_sizes": _voxel_sizes(plan)},
        "summary": asdict(summary),
        "tomograms": _per_tomogram(names["csv"]),  # class counts per tomogram (picks)
        "features": _features_info(names["csv"]),
        # the per-class STARs this run wrote (file -> class): the only files a rerun removes
        "class_stars": {p.name: name for p, name in split.items()},
        "versions": _versions(),
    }
    # a new random temporary file, never the fixed manifest.json.tmp a link could be planted at
    write_text(names["manifest"], json.dumps(manifest, indent=2, default=str) + "\n")
    return summary


def _recorded_class_stars(manifest: Path) -> list[str]:
    """The per-class STAR files an earlier run into this folder recorded (its manifest's
    ``class_stars``); none when there is no readable manifest or it has no such record (an older
    cryoshift's: its files are left where they are, as any file cryoshift did not record is)."""
    if not manifest.is_file():  # none yet; a pipe planted there would block the read
        return []
    try:
        record = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    files = record.get("class_stars") if isinstance(record, dict) else None
    return [name for name in files if isinstance(name, str)] if isinstance(files, dict) else []


def _count_padded(plan: Any, summary: ClassifySummary) -> str | None:
    """Count the plan's picks whose crop reaches past the tomogram's edge into ``summary.padded``
    and say it in one note (None when there are none). Why: crop_box fills the part outside with
    the mean of the part inside, and that was done without a word; predictions.csv keeps its
    columns, so the count and the note are where it is said. A plan without pick rows (merge's,
    when the inputs cannot be read here) leaves the count as it is."""
    count = getattr(plan.items, "padded", None)
    if count is None:
        return None
    summary.padded = int(count())
    if not summary.padded:
        return None
    box = int(plan.box_size)
    return (
        f"{summary.padded} picks lie within {box // 2} voxels (half the {box}^3 box) of their tomogram's "
        "edge: the part of their crop outside the tomogram is filled with the mean of the part inside "
        "(manifest: summary.padded)"
    )


def _voxel_sizes(plan: Any) -> dict[str, float | None]:
    """The manifest's voxel sizes: null for a file whose header has none (not a made-up 1.0)."""
    sizes: dict[str, float | None] = dict(plan.voxel_sizes)
    for path in getattr(plan, "unknown_voxel", ()):
        sizes.setdefault(path, None)
    return sizes


def _versions() -> dict[str, str]:
    import numpy

    from cryoshift.runtime import __version__

    found = {
        "cryoshift": __version__,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "platform": platform.platform(),
    }
    try:
        import onnxruntime

        found["onnxruntime"] = onnxruntime.__version__
    except ImportError:  # pragma: no cover
        pass
    return found


def _per_tomogram(csv_path: Path) -> dict[str, dict[str, int]]:
    """Class counts per tomogram (picks only) of a finished results CSV."""
    counts: dict[str, Counter] = {}
    if not csv_path.is_file():
        return {}
    rows = checked_rows(csv_path)  # a damaged row is named, not read as another tomogram's
    _, header = next(rows, (0, []))
    if "tomo_name" not in header or "class_name" not in header:
        rows.close()  # not picks: the rest is not read (and the file is closed now)
        return {}
    t, c = header.index("tomo_name"), header.index("class_name")
    for _, row in rows:
        if row[t]:
            counts.setdefault(row[t], Counter())[row[c]] += 1
    return {name: dict(sorted(n.items())) for name, n in sorted(counts.items())}


def _count_rows(csv_path: Path) -> tuple[int, Counter, int]:
    """Rows, class counts and rows flagged unknown of a finished results CSV (the whole file,
    resumed parts included). Why the unknown count is the file's: a resumed run's manifest said
    only its own session's (3190 of 4109 after a requeued task) beside whole-file class counts.

    Read by :func:`~cryoshift.runtime.ledger.checked_rows`, each row checked to have the header's
    width: a row cut in two (a name holding a bare ``\\r``, which the ledgers now quote) ended the
    run with an IndexError traceback after its last batch, and is now one line naming the file."""
    counts: Counter = Counter()
    n = unknown = 0
    if not csv_path.is_file():
        return 0, counts, 0
    rows = checked_rows(csv_path)
    _, header = next(rows, (0, None))
    if header is None:
        return 0, counts, 0
    col = header.index("class_name") if "class_name" in header else None
    flag = header.index("unknown") if "unknown" in header else None  # pipeline.result_columns
    for _, row in rows:
        n += 1
        if col is not None:
            counts[row[col]] += 1
        if flag is not None and row[flag] == "1":
            unknown += 1
    return n, counts, unknown


def _features_info(csv_path: Path) -> dict[str, Any] | None:
    """File, rows and width of the features next to a results CSV (None when there are none)."""
    from cryoshift.runtime.features import features_path, read_features

    path = features_path(csv_path)
    if not path.is_file():
        return None
    try:
        rows, dim = read_features(path).shape
    except (ValueError, OSError):
        return {"file": path.name, "readable": False}
    return {"file": path.name, "rows": int(rows), "dim": int(dim), "dtype": "float32"}
