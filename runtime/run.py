"""One classify run, whoever runs the model: plan -> read -> infer -> write -> ledger -> summary.

:func:`run` is the engine. It plans the inputs against the model (and this shard's share),
opens the ledgers (``resume`` skips what they already hold), hands the items still to do to an
:class:`Inference`, and finishes: predictions.star, manifest.json, the summary. The launch
modes differ only in the :class:`Inference` they hand it, that is in where items are read and
inferred:

==================  =============================================================================
``LocalInference``  this process: reader threads (or processes) feed one model (runtime/pipeline.py)
``DeviceInference`` one worker process per GPU, each a local run on its share (runtime/devices.py)
``RayInference``    a Ray Data actor pool on a cluster (runtime/distributed.py)
==================  =============================================================================

:func:`classify` is the public entry point (this process, or ``devices=[...]``);
:func:`~cryoshift.runtime.distributed.classify_ray` the one for Ray. Files written in
``out_dir`` (``<name>.shard-i-of-n.<ext>`` for a shard):

``predictions.csv``  one row per classified subtomogram (the append-only resume ledger; ``resume``
                     refuses it, and errors.csv, holding ids the inputs no longer plan, and ends
                     by putting both in the inputs' order, the rows an uninterrupted run writes)
``predictions.star`` the same rows for RELION/Warp/ArtiaX, written at the end from the CSV
``errors.csv``       one row per bad item with its reason
``manifest.json``    model hash, inputs, counts, errors, timings, versions
``run.json``         the model, inputs and settings the run started with and what it planned
                     (:func:`plan_fingerprint`), written before its first row: ``resume`` refuses
                     another model, other inputs or settings, or a tomogram changed since
                     (checked against an older run's manifest.json when there is no run.json),
                     and a shard is refused in a folder whose run has another model or settings,
                     so one table never mixes rows of two meanings
``features.npy``     with ``features=True``: the model's features, one float32 row per CSV row
                     (runtime/features.py; appended and resumed with the CSV; ``features.rowids``
                     records the rows' order, so a CSV re-sorted before a resume is refused)
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryoshift.runtime.backends import Model, load_model
from cryoshift.runtime.contract import MAX_BINNING, VOXEL_SIZE_RANGE
from cryoshift.runtime.errors import InputError, check_out_folder, missing_reason
from cryoshift.runtime.jsonfile import is_number_within, real_number, shown
from cryoshift.runtime.ledger import RESUME_HINT, RunLedgers, escape_text, written_ids
from cryoshift.runtime.merge import (
    PLANNED,
    answer_mismatch,
    changed_files,
    planned,
    same_plan,
    spelled_apart,
    spelling_text,
)
from cryoshift.runtime.metadata import ModelMetadata
from cryoshift.runtime.outfiles import write_text
from cryoshift.runtime.pipeline import RunStats, check_buffer_memory, result_columns, run_pipeline
from cryoshift.runtime.sources import Item, Plan, VolumeCache, parse_shard, plan_inputs
from cryoshift.runtime.sources.items import volume_identity
from cryoshift.runtime.summary import (
    ClassifySummary,
    finish_run,
    model_info,
    output_names,
    same_network,
)
from cryoshift.runtime.terminal import say


def path_list(value: object, name: str) -> list[str]:
    """``value`` (a path, or a list of paths; str or ``os.PathLike``) as a list of str.

    Why: ``classify(model, "particles/", out)`` took the string for a list and classified each of
    its characters, '/' included (the root folder was scanned); one path is one input. ``name``:
    the argument, named when ``value`` is neither (a number, None)."""
    if isinstance(value, (str, os.PathLike)):
        return [os.fspath(value)]  # type: ignore[list-item]
    if isinstance(value, (bytes, Mapping)) or not isinstance(value, Iterable):  # a generator is fine
        raise TypeError(f"{name} must be a path or a list of paths, not {type(value).__name__}: {value!r}")
    items = [os.fspath(v) if isinstance(v, os.PathLike) else v for v in value]
    odd = [v for v in items if not isinstance(v, str)]
    if odd:
        raise TypeError(f"{name} must be a path or a list of paths; {odd[0]!r} is a {type(odd[0]).__name__}")
    return items


def _shown(value: object) -> str:
    """A scale setting as a refusal shows it: numbers as the CLI prints them, anything else as written."""
    number = real_number(value)
    return f"{number:.6g}" if number is not None else shown(value)


def _binning_problem(binning: object) -> str | None:
    """Why ``binning`` scales no picks, or None: typer's bounds and the API let NaN and inf through
    (``inf >= 1``), and a binning of inf scaled every pick to (0, 0, 0) with exit 0."""
    if binning is None or is_number_within(binning, 1.0, MAX_BINNING):
        return None
    return (
        f"--binning must be a number from 1 to {MAX_BINNING:g} (how many times finer the picks' "
        f"pixels are than the reconstruction's voxels), not {_shown(binning)}"
    )


def _pixel_size_problem(coordinate_pixel_size: object) -> str | None:
    """Why ``coordinate_pixel_size`` is no pixel size, or None: 0 read as "not given" (the planner
    tests it for truth), so the picks were cropped unscaled without a word."""
    low, high = VOXEL_SIZE_RANGE
    if coordinate_pixel_size is None or is_number_within(coordinate_pixel_size, low, high):
        return None
    return (
        f"--coordinate-pixel-size must be a pixel size in A from {low:g} to {high:g} (A per "
        f"pixel of the picks' coordinates), not {_shown(coordinate_pixel_size)}"
    )


def scale_problem(binning: object, coordinate_pixel_size: object) -> str | None:
    """Why a ``binning`` / ``coordinate_pixel_size`` pair cannot scale picks, in one line, or None.

    The one check of these settings, whichever way they come: the CLI, :class:`RunOptions` (the
    API, ``--ray``, device workers) and merge's re-read shard settings. Checked in the CLI alone,
    the others cropped every pick at (0, 0, 0) for a binning of inf, or unscaled for 0."""
    problem = _binning_problem(binning) or _pixel_size_problem(coordinate_pixel_size)
    if problem is None and binning is not None and coordinate_pixel_size is not None:
        problem = "give --binning or --coordinate-pixel-size, not both"
    return problem


def check_scale_options(binning: object, coordinate_pixel_size: object) -> None:
    """Raise :class:`InputError` (no path) for a pair :func:`scale_problem` refuses, before any work."""
    problem = scale_problem(binning, coordinate_pixel_size)
    if problem:
        raise InputError(None, problem)


@dataclass
class RunOptions:
    """What a run is asked to do, whoever runs the model (the manifest's common settings)."""

    inputs: list[str]
    out_dir: Path
    resume: bool = False
    shard: tuple[int, int] | None = None  # this run's share of the planned items (SLURM arrays)
    subshard: tuple[int, int] | None = None  # a device worker's share of the shard
    unknown_threshold: float | None = None
    tomograms: list[str] | None = None
    contrast: str | None = None
    ignore_voxel_size: bool = False
    coordinate_pixel_size: float | None = None
    binning: float | None = None
    split_by_class: bool = False
    copick_session: str | None = None
    features: bool = False
    progress: bool = True
    retry_errors: bool = False  # with resume: classify again the items that failed before

    def __post_init__(self) -> None:
        self.inputs = path_list(self.inputs, "inputs")  # one path given alone is one input
        if self.tomograms is not None:
            self.tomograms = path_list(self.tomograms, "tomograms")
        self.out_dir = Path(self.out_dir)
        if isinstance(self.shard, str):
            self.shard = parse_shard(self.shard)
        self.shard = tuple(self.shard) if self.shard else None  # type: ignore[assignment]
        self.subshard = tuple(self.subshard) if self.subshard else None  # type: ignore[assignment]
        if self.unknown_threshold is not None and not 0.0 <= self.unknown_threshold <= 1.0:
            raise InputError(None, f"unknown threshold must lie in [0, 1], not {self.unknown_threshold}")
        check_scale_options(self.binning, self.coordinate_pixel_size)

    def settings(self) -> dict[str, Any]:
        return {
            "resume": self.resume,
            "shard": list(self.shard) if self.shard else None,
            "subshard": list(self.subshard) if self.subshard else None,
            "unknown_threshold": self.unknown_threshold,
            "tomograms": self.tomograms,
            "contrast": self.contrast,
            "ignore_voxel_size": self.ignore_voxel_size,
            "coordinate_pixel_size": self.coordinate_pixel_size,
            "binning": self.binning,
            "split_by_class": self.split_by_class,
            "copick_session": self.copick_session,
            "features": self.features,
            "retry_errors": self.retry_errors,
            # relative inputs and -t folders mean something only from here (merge re-plans them)
            "working_directory": _working_directory(),
        }


def _working_directory() -> str | None:
    """The current directory, recorded for merge's re-planning of relative inputs; None when it was
    deleted under the process (the CLI refuses that at start; a Python caller gets no record)."""
    try:
        return os.getcwd()
    except FileNotFoundError:
        return None


class Inference(Protocol):
    """Where a run's items are read and classified: the one thing the launch modes change."""

    metadata: ModelMetadata  # what planning checks the data against; the results' classes
    description: str  # the summary's "backend" line (may be refined by run())
    notes: list[str]  # for the summary, e.g. backends passed over
    num_features: int  # width of the features output (0: not known before the first batch)

    def prepare(self, items: Sequence[Item], cache: VolumeCache, opts: RunOptions) -> dict[str, Any]:
        """Get ready for the planned ``items``; returns the manifest settings found doing so."""

    def run(self, todo: Sequence[Item], ledgers: RunLedgers, opts: RunOptions) -> RunStats:
        """Classify ``todo``, appending rows and errors to ``ledgers`` as batches finish."""

    def model_info(self) -> dict[str, Any]:
        """The manifest's model block (see :func:`~cryoshift.runtime.summary.model_info`)."""


def run(inference: Inference, opts: RunOptions) -> ClassifySummary:
    """The engine: plan -> read -> infer -> write -> ledger -> summary (see the module docstring)."""
    t0 = time.perf_counter()
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    names = output_names(opts.out_dir, opts.shard)
    model = inference.model_info()
    lineage_note = None
    record = None
    if opts.resume:  # before planning and before the ledgers are opened (and their tails cut)
        lineage_note = check_same_model(names, model)
        record = recorded_run(names)
        check_same_settings(record, model, opts)  # all but those the plan can show to agree
    # A resumed run goes on writing features when the interrupted one did (the file is there).
    if opts.resume and not opts.features:
        from cryoshift.runtime.features import features_path

        opts.features = features_path(names["csv"]).is_file()
    cache = VolumeCache()
    plan, duplicates = distinct(plan_all(inference.metadata, opts, cache))
    fingerprint = plan_fingerprint(plan.items)
    if opts.shard and not opts.subshard:  # merge joins this shard into the folder's run
        check_folder_run(output_names(opts.out_dir, None), model, opts, fingerprint)
    written = written_ledger_ids(names) if opts.resume else None
    if record is not None:
        check_same_spelling(record, fingerprint, opts)
        check_same_settings(record, model, opts, fingerprint)
        check_same_plan(record, fingerprint, opts, written["csv"] if written else None)
    plan, items = split(plan, opts)
    if written is not None:
        check_done_planned(names, items, written)
    settings = inference.prepare(items, cache, opts)
    summary = ClassifySummary.for_files(names, inference.description, planned=len(items))
    summary.notes.extend(inference.notes)
    if lineage_note:
        summary.notes.append(lineage_note)
    if duplicates:
        again = "were given more than once and are classified once"
        summary.notes.append(f"{duplicates} picks or volumes {again}")
    with (
        RunLedgers(
            names,
            result_columns(inference.metadata.class_names),
            opts.resume,
            opts.features,
            inference.num_features,
            written,
        ) as ledgers,
        resumable_writes(opts.out_dir),
    ):
        written = None  # the ledgers hold them now
        if not opts.resume or not names["run"].is_file():  # the ledgers are ours now: no row yet
            record_run(names["run"], {"model": model}, opts, fingerprint)
        elif record is not None and record[0] == names["run"]:
            record_run(names["run"], record[1], opts, fingerprint)  # tomograms found since, if any
        summary.notes.extend(ledgers.notes)
        if opts.resume:
            summary.notes.extend(earlier_errors(ledgers, items, opts))
        todo = ledgers.todo(items)
        summary.resumed = len(items) - len(todo)
        stats = inference.run(todo, ledgers, opts)
        check_all_answered(ledgers, todo, names["csv"])
        if opts.resume:  # rows tried again or left over came last: in the plan's order, as a whole run
            ledgers.put_in_order(items)
        summary.notes.extend(n for n in ledgers.notes if n not in summary.notes)
    summary.record(stats)
    summary.notes.extend(n for n in stats.notes if n not in summary.notes)
    summary.backend = inference.description
    summary.wall_s = time.perf_counter() - t0
    with resumable_writes(opts.out_dir):
        return finish_run(names, model, plan, summary, {**settings, **opts.settings(), PLANNED: fingerprint})


@contextlib.contextmanager
def resumable_writes(out_dir: Path) -> Iterator[None]:
    """Add :data:`RESUME_HINT` to a failure to write a file in ``out_dir`` (a full disk, a file-size
    limit) once the ledgers are open: what was written is kept, and ``--resume`` finishes the run,
    which the bare "predictions.csv: cannot write: File too large" did not say. Other errors (an
    input file) pass as they are."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None or not _inside(exc.filename, out_dir) or RESUME_HINT in str(exc.strerror):
            raise
        raise OSError(exc.errno, f"{exc.strerror}; {RESUME_HINT}", exc.filename) from exc


def _inside(path: object, folder: Path) -> bool:
    """Whether the file ``path`` is in ``folder`` (compared as absolute paths, links unresolved)."""
    try:
        return os.path.dirname(os.path.abspath(os.fsdecode(path))) == os.path.abspath(folder)
    except (TypeError, ValueError, OSError):
        return False


def check_all_answered(ledgers: RunLedgers, todo: Sequence[Item], csv: Path) -> None:
    """Refuse to finish a run (STAR, manifest) when some item it was to do has neither a row nor an
    error row: whatever lost them (a worker thread that died), the manifest would claim a whole
    run. Why: a writer thread killed by a progress line went unseen, and the manifest said 6000
    classified, 0 errors, over a predictions.csv of 1200 rows."""
    if not todo:
        return
    missing = len(ledgers.unanswered(todo))
    if missing:
        raise InputError(
            csv,
            f"{missing} of the {len(todo)} items of this run got no row (their results were not "
            f"written), so the run is not complete; {RESUME_HINT}",
        )


def earlier_errors(ledgers: RunLedgers, items: Sequence[Item], opts: RunOptions) -> list[str]:
    """On resume, the items that failed before: tried again with ``retry_errors`` (their error rows
    replaced by the new outcome), else left as they are and said so. Why: a resume counted them
    as done without a word, so after a missing tomogram was found it said "0 classified, all
    already done" while errors.csv still held its picks."""
    failed = ledgers.failed_before(items)
    if not failed:
        return []
    if opts.retry_errors:
        ledgers.retry(failed)
        kept = ledgers.errors.path.name
        return [f"{len(failed)} items that failed before were tried again ({kept} keeps any that fail again)"]
    return [
        f"{len(failed)} of the items already done failed before and were not tried again (they stay in "
        f"{ledgers.errors.path.name}); resume with --retry-errors to try them again, e.g. after fixing "
        "a missing tomogram"
    ]


def written_ledger_ids(names: dict[str, Path]) -> dict[str, list[str] | None]:
    """The ids of the rows the run's ledgers (``csv``, ``errors``) hold, read once on resume, before
    they are opened (:func:`~cryoshift.runtime.ledger.written_ids`), for :func:`check_done_planned`
    and then :class:`RunLedgers` (None: unreadable, left to the ledger to refuse)."""
    return {key: written_ids(names[key]) for key in ("csv", "errors")}


def check_done_planned(
    names: dict[str, Path], items: Sequence[Item], written: dict[str, list[str] | None] | None = None
) -> None:
    """Refuse to resume when the ledgers hold rows of ids the inputs no longer plan, before any
    work and before the ledgers are opened (so nothing in the output folder changes).

    Why: a pick table edited between two runs (a coordinate corrected) planned a new id for the
    pick and kept the old id's row: a phantom particle in predictions.csv and the class counts,
    and a row of ``<NA>`` without coordinates in predictions.star, with exit 0. Ids planned now
    that the ledgers lack (picks appended to the table) are the work a resume does, and pass."""
    written = written_ledger_ids(names) if written is None else written
    left: dict[str, Path] = {}  # written ids (in file order) not yet met in the plan -> their ledger
    for key in ("csv", "errors"):  # predictions first: the example is a result where one is
        for ident in written[key] or ():
            left.setdefault(ident, names[key])
    if not left:
        return
    escaped = any("\\" in ident for ident in left)  # the ledgers escape what is not UTF-8 text
    for segment in getattr(items, "segments", [items]):
        ids = segment.ids() if hasattr(segment, "ids") else (it.id for it in segment)
        for ident in ids:
            left.pop(escape_text(ident) if escaped else ident, None)
        if not left:
            return
    example = next(iter(left))
    raise InputError(
        left[example],
        f"{len(left)} rows already done are of ids the inputs no longer plan (e.g. {example!r}): the "
        "inputs changed since this run started (a pick moved or removed?); resuming would keep them "
        "as results of inputs that are not there, so classify into a new output directory (-o)",
    )


def record_run(path: Path, record: dict[str, Any], opts: RunOptions, fingerprint: dict[str, Any]) -> None:
    """Write the record of a run (``run.json``), durably and whole, before any row: a run killed
    before its manifest is written still says which model, inputs and settings its rows are of,
    for ``--resume`` to hold a new start against (:func:`check_same_settings`).

    ``record`` is the model block of a new run, or the record of a resumed one: its model, start
    and settings stay; only tomograms the plan reads for the first time (found since) are added."""
    old = record.get("settings") if isinstance(record.get("settings"), dict) else {}
    settings = {**opts.settings(), **old}
    recorded = old.get(PLANNED) if isinstance(old.get(PLANNED), dict) else {}
    stamps = {}
    for key in ("files", VOLUMES):
        was = recorded.get(key) if isinstance(recorded.get(key), dict) else {}
        # checked equal where both name a file, but for a volume without a result row (a failed one
        # fixed since, for --retry-errors): its stamp is now the file its new row will be of
        stamps[key] = {**was, **fingerprint[key]}
    settings[PLANNED] = {**fingerprint, **recorded, **stamps}
    whole = {
        "format": "cryoshift.run/1",
        "started": record.get("started") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": record["model"],
        "inputs": record.get("inputs", list(opts.inputs)),
        "settings": settings,
    }
    write_text(path, json.dumps(whole, indent=2, default=str) + "\n")  # fsync'ed, never through a link


def recorded_run(names: dict[str, Path]) -> tuple[Path, dict[str, Any]] | None:
    """The file recording the run whose rows are in ``names``, and its content: ``run.json``, else
    the manifest of a run from before run.json existed; None when neither is there. A file that
    names no model sha256 is refused: resuming would trust rows of an unknown model."""
    from cryoshift.runtime.jsonfile import read_json_object

    for key, what in (("run", "run record"), ("manifest", "manifest")):
        path = names[key]
        if not path.is_file():
            continue
        record = read_json_object(path, what)
        model = record.get("model")
        if not isinstance(model, dict) or not isinstance(model.get("sha256"), str):
            raise InputError(
                path,
                f"not a readable {what} (no model.sha256), so the model of the rows here is unknown; "
                "move it away to resume anyway, or classify into a new output directory",
            )
        return path, record
    return None


def recorded_model(names: dict[str, Path]) -> tuple[Path, dict[str, Any]] | None:
    """The file naming the model the rows in ``names`` are of, and its model block (see
    :func:`recorded_run`)."""
    found = recorded_run(names)
    return None if found is None else (found[0], found[1]["model"])


def check_same_settings(
    found: tuple[Path, dict[str, Any]] | None,
    model: dict[str, Any],
    opts: RunOptions,
    fingerprint: dict[str, Any] | None = None,
) -> None:
    """Refuse to resume with other inputs or settings than the run (``found``: its record) started
    with, those of merge.ANSWER_SETTINGS, which merge also holds shards to: the rows already
    written were judged at the old threshold, cropped at the old positions, from the old files,
    and the new ones would join them under a manifest naming only the new settings.

    Before planning (no ``fingerprint``) the settings whose effect the plan shows (merge.PLAN_ONLY:
    --binning 2 and the --coordinate-pixel-size of half the voxel size plan the same) wait for it."""
    if found is None:
        return
    path, record = found
    differs = _answer_difference(record, model, opts, fingerprint)
    if differs:
        what, old, new = differs
        raise InputError(
            path,
            f"this run was started with {what} {old}, not {new}; resume with the same {what}, or "
            "classify into a new output directory (-o)",
        )


def _answer_difference(
    record: dict[str, Any], model: dict[str, Any], opts: RunOptions, fingerprint: dict[str, Any] | None
) -> tuple[str, Any, Any] | None:
    """(setting, recorded value, value now) of the first setting that changes an answer
    (merge.ANSWER_SETTINGS) in which ``opts`` differ from a run's ``record``; None when none does,
    or when the record is of an older cryoshift that kept no settings. Without a ``fingerprint``
    (before planning) the settings whose effect only the plan shows count as agreeing."""
    if not isinstance(record.get("settings"), dict) or "inputs" not in record:
        return None
    agreed = fingerprint is None or same_plan(planned(record), fingerprint)
    now = {"model": model, "inputs": opts.inputs, "settings": opts.settings()}
    return answer_mismatch(record, now, agreed)


def check_same_spelling(
    record: tuple[Path, dict[str, Any]], fingerprint: dict[str, Any], opts: RunOptions
) -> None:
    """Refuse to resume with inputs written otherwise than the run started with (``stack.mrcs``,
    then ``$PWD/stack.mrcs``) where that plans other items: the ids are built from the inputs as
    written, so none of the new ids was in the ledger and every item was classified again and
    appended (16 rows for 8, exit 0). A spelling that plans the same ids (``./stack.mrcs``, ``g/``,
    a picks table, whose ids do not name it) is accepted: the plan's fingerprint is the same."""
    path, recorded = record
    pairs = spelled_apart(recorded, {"inputs": opts.inputs})
    if not pairs or same_plan(planned(recorded), fingerprint):
        return
    raise InputError(
        path,
        f"--resume needs the inputs as the run was started with: {spelling_text(pairs, 'given now')}; "
        "the ids of its rows are built from them as written, so another spelling would classify every "
        "item again (or classify into a new output directory, -o)",
    )


def check_same_plan(
    record: tuple[Path, dict[str, Any]],
    fingerprint: dict[str, Any],
    opts: RunOptions,
    done: Sequence[str] | None = None,
) -> None:
    """Refuse to resume on data files that changed since the run started (a tomogram replaced under
    its name: its old rows and new ones would be of different data; a single volume with a result
    row in ``done``, the ids predictions.csv holds, which would keep its stale answer), and a shard
    whose inputs now plan other items or another order (a table re-sorted: its share of the items
    would no longer be the one the other shards left to it, losing or repeating items)."""
    path, recorded = record
    old = planned(recorded)
    if old is None:
        return
    changed = changed_files(old, fingerprint) or _changed_done_volumes(old, fingerprint, done)
    if changed:
        more = f" (and {len(changed) - 1} more input files)" if len(changed) > 1 else ""
        raise InputError(
            changed[0],
            f"changed since this run started{more} (size or modification time, recorded in "
            f"{path.name}); its rows so far are of the old file: put it back, or classify into a new "
            "output directory (-o)",
        )
    if opts.shard and (old.get("items"), old["sha256"]) != (fingerprint["items"], fingerprint["sha256"]):
        raise InputError(
            path,
            f"this shard started on inputs that planned {old.get('items')} items; they now plan "
            f"{fingerprint['items']}{' in another order' if old.get('items') == fingerprint['items'] else ''}"
            " (a picks table rewritten or re-sorted?), so this shard's share would differ from the one "
            "the other shards left to it; restore the inputs, or rerun every shard into a new output "
            "directory (-o)",
        )


def _changed_done_volumes(old: dict[str, Any], new: dict[str, Any], done: Sequence[str] | None) -> list[str]:
    """The single volume files both fingerprints stamp (``volumes``) with another size or
    modification time, and whose row in ``done`` (result ids; None: all count) is a result: one
    that failed before and was fixed since is what --retry-errors is for. A record of an older
    cryoshift stamps no volumes: nothing to compare."""
    a, b = old.get(VOLUMES), new.get(VOLUMES)
    if not isinstance(a, dict) or not isinstance(b, dict):
        return []
    changed = sorted(path for path in a.keys() & b.keys() if a[path] != b[path])
    if not changed or done is None:
        return changed
    results = {escape_text(os.path.abspath(ident)) for ident in done}  # a volume's id is its path
    return [path for path in changed if escape_text(path) in results]


def check_folder_run(
    folder: dict[str, Path], model: dict[str, Any], opts: RunOptions, fingerprint: dict[str, Any]
) -> None:
    """A shard is merged into its folder's predictions.csv: refuse to classify one with another
    model or other settings than the folder's run (``run.json``, or the manifest of a finished
    run or merge), as a plain ``--resume`` refuses them, before any work; merge would otherwise
    join rows of two models or settings, or replace the folder's results with another model's."""
    found = recorded_run(folder)
    if found is None:
        return
    path, record = found
    old = record["model"]
    if same_network(old, model) is None:
        raise InputError(
            path,
            f"this folder holds a run of model {old.get('path', '?')} (sha256 {old['sha256'][:16]}), "
            f"not {model.get('path', '?')} (sha256 {str(model['sha256'])[:16]}), and merge would join "
            "this shard into it; classify the shards into a new output directory (-o)",
        )
    differs = _answer_difference(record, model, opts, fingerprint)
    if differs:
        what, old_value, new = differs
        raise InputError(
            path,
            f"this folder holds a run of {what} {old_value}, not {new}, and merge would join this "
            "shard into it; classify the shards with the same options, or into a new output directory (-o)",
        )


def check_same_model(names: dict[str, Path], model: dict[str, Any]) -> str | None:
    """Refuse to resume with another model than the one the run started with: its rows would join
    the other model's in one table, under a manifest naming only the second.

    One exception, returned as a note for the summary: the same network in another form, an
    ONNX model and a TensorRT engine built from it (its sidecar names the ONNX's sha256), as when
    a run started on CPU nodes goes on on GPU nodes; their outputs agree within export parity.
    """
    found = recorded_model(names)
    if found is None or same_network(found[1], model) == "file":
        return None
    path, old = found
    if same_network(old, model) == "form":
        return (
            f"resumed with {model.get('path', '?')} ({model.get('backend', '?')}), the same network as "
            f"{old.get('path', '?')} ({old.get('backend', '?')}) this run started with (one was built "
            "from the other's ONNX); their rows agree within export parity, not bit for bit"
        )
    raise InputError(
        path,
        f"this run was started with model {old.get('path', '?')} (sha256 {old['sha256'][:16]}), not "
        f"{model.get('path', '?')} (sha256 {str(model['sha256'])[:16]}); resume with that model, or "
        "classify into a new output directory",
    )


def plan_run(
    metadata: ModelMetadata, opts: RunOptions, cache: VolumeCache | None = None
) -> tuple[Plan, Sequence[Item], int]:
    """The plan of ``opts.inputs`` against the model, this run's items (each volume once, its
    shard, its device's share) and how many repeated inputs were dropped."""
    return share(plan_all(metadata, opts, cache), opts)


def plan_all(metadata: ModelMetadata, opts: RunOptions, cache: VolumeCache | None = None) -> Plan:
    """The plan of ``opts.inputs`` against the model, all its items, before repeats are dropped
    and any share is taken (every shard of a split plans the same)."""
    plan = plan_inputs(
        opts.inputs,
        metadata.box_size,
        metadata.voxel_size,
        metadata.contrast,
        opts.contrast,
        opts.tomograms,
        opts.ignore_voxel_size,
        cache,
        coordinate_pixel_size=opts.coordinate_pixel_size,
        binning=opts.binning,
        own_output=opts.out_dir,
    )
    return plan


def distinct(plan: Plan) -> tuple[Plan, int]:
    """``plan`` with each volume once (:func:`_dedupe`), and how many repeats were dropped: what
    :func:`plan_fingerprint` describes and what the shards split.

    Why before the split: a volume planned twice under two spellings of its path (a folder and
    one of its files named with ``$PWD/``) could fall into two shards, each keeping its own
    spelling, and merge (which matches ids as written) then kept both rows; deduplicated first,
    every volume is in exactly one shard, under the id an unsharded run keeps, and shard ``i``
    holds items ``i, i + n, ...`` of the order an unsharded run writes (merge interleaves by it)."""
    items, dropped = _dedupe(plan.items)
    return (dataclasses.replace(plan, items=items) if dropped else plan), dropped


def split(plan: Plan, opts: RunOptions) -> tuple[Plan, Sequence[Item]]:
    """This run's share of a :func:`distinct` plan: its shard, then its device's share (a device's
    share never repeats another's ids: the plan holds each once)."""
    if opts.shard:
        plan = plan.shard(*opts.shard)
    items = plan.items
    if opts.subshard:
        index, count = opts.subshard
        items = items[index::count]
    return plan, items


def share(plan: Plan, opts: RunOptions) -> tuple[Plan, Sequence[Item], int]:
    """This run's share of ``plan``: each volume once, its shard, its device's share; and how many
    repeated inputs were dropped."""
    plan, duplicates = distinct(plan)
    plan, items = split(plan, opts)
    return plan, items, duplicates


FINGERPRINT_BATCH = 1 << 20  # pick rows hashed at a time
# The fingerprint's stamps (size, mtime_ns) of the single volume files planned, beside "files"
# (tomograms, stacks): a volume replaced under its name kept its old row on --resume (exit 0, a
# stale answer). One stat per file (planning has already opened each); merge does not compare them.
VOLUMES = "volumes"


def plan_fingerprint(items: Sequence[Item]) -> dict[str, Any]:
    """What a run planned from its inputs: the number of items, a sha256 of their ids in order, and
    the size and modification time of every tomogram and stack they are read from, and apart
    (:data:`VOLUMES`) of every single volume file. ``items`` is
    the plan with each volume once (:func:`distinct`), the order the shards split: shards that
    split it differently (an older cryoshift's split, before repeats were dropped) differ here only
    where the inputs repeat a volume, and there merge and --resume refuse them as they should.

    Why: a shard is every n-th planned item, so shards (and a shard's resume) that planned other
    items or another order (a picks table re-sorted between SLURM tasks) lose and repeat items;
    and rows read from a tomogram replaced under its name are of other data. merge and --resume
    compare these. Pick tables are hashed from their arrays (tomogram names, coordinates), not
    from formatted ids; a tomogram's file is left out of the hash, so fixing a missing one keeps
    the plan (its picks, error rows before, are classified on --resume)."""
    digest = hashlib.sha256()
    files: set[str] = set()
    volumes: set[str] = set()
    for segment in getattr(items, "segments", [items]):
        digest.update(f"segment {len(segment)}\n".encode())
        source = getattr(segment, "source", None)
        if source is not None:  # a PickRows selection of a pick table
            _hash_pick_rows(digest, source, segment.rows)
            files.update(p for p in source.tomo_paths if p)
            continue
        for item in segment:
            digest.update(escape_text(item.id).encode() + b"\n")
            if item.kind in ("tomogram", "stack"):
                files.add(item.path)
            elif item.kind == "file":
                volumes.add(item.path)
    stamps = {"files": _stamps(files), VOLUMES: _stamps(volumes)}
    return {"items": len(items), "sha256": digest.hexdigest(), **stamps}


def _hash_pick_rows(digest: Any, source: Any, rows: Any) -> None:
    import numpy as np

    digest.update("\n".join(escape_text(n) for n in source.names).encode() + b"\n")
    for start in range(0, len(rows), FINGERPRINT_BATCH):
        chosen = np.asarray(rows[start : start + FINGERPRINT_BATCH], dtype=np.int64)
        digest.update(np.ascontiguousarray(source.tomo[chosen], dtype="<i8").tobytes())
        digest.update(np.ascontiguousarray(source.xyz[chosen], dtype="<f8").tobytes())


def _stamps(paths: set[str]) -> dict[str, list[int]]:
    """[size, mtime_ns] of each file, by absolute path (copick and unreadable paths left out)."""
    out = {}
    for path in sorted(paths):
        if path.startswith("copick:"):
            continue
        try:
            st = os.stat(path)
        except OSError:
            continue
        out[os.path.abspath(path)] = [st.st_size, st.st_mtime_ns]
    return out


def _dedupe(items: Sequence[Item]) -> tuple[Sequence[Item], int]:
    """The first occurrence of every volume, whatever its path's spelling; and how many were dropped.

    Why: ids are paths as written (a listing's are made absolute, a direct input's stay as given),
    and repeats were found by comparing ids, so a RELION listing of a stack given with the stack
    itself, or a folder with ``$PWD/folder/v002.mrc``, classified the same volumes twice (doubled
    class counts, no note) while the same spelling twice was caught. File-backed items (single
    volumes, stack slices) compare the file itself (:class:`_FileKeys`) and the slice; pick items
    are rows of tables, not files: their tables are deduplicated as arrays (``ItemList.dedupe``,
    by the table's real path) and never stat'ed per pick. The first occurrence keeps its id as
    written, so ids stay unique and an unsharded run's rows are unchanged where nothing repeats.

    An id seen again is dropped too: planning never gives two different items one id (a file
    named ``000003@v.mrc`` beside the stack ``v.mrc`` is given ``~2``: sources.items.UniqueIds),
    so it is the same item again, never another volume lost under a note of a repeated input."""
    from cryoshift.runtime.pickrows import PickRows

    files = _FileKeys()
    seen: set[Any] = set()

    def fresh(it: Item) -> bool:
        key = files.of(it)
        if key is None:
            return True
        if key in seen:
            return False
        seen.add(key)
        return True

    if hasattr(items, "dedupe"):  # an ItemList: ids already once (pick tables as arrays), then files
        unique, dropped = items.dedupe()
        kept = type(unique)(
            [s if isinstance(s, PickRows) else [it for it in s if fresh(it)] for s in unique.segments]
        )
        kept = _once_across_tables(kept)
        return kept, dropped + len(unique) - len(kept)
    ids: set[str] = set()
    out = []
    for it in items:
        if it.id not in ids and fresh(it):
            ids.add(it.id)
            out.append(it)
    return out, len(items) - len(out)


def _once_across_tables(items: Any) -> Any:
    """``items`` (an ItemList, each table's rows and each volume once) with a pick whose id an
    earlier item holds dropped, when two or more pick tables are planned.

    Why: ``ItemList.dedupe`` drops a table's rows given twice by table (the same file), so the
    same picks in two files (``particles.star`` and a copy of it) were planned twice: an
    unsharded run wrote every id twice (doubled class counts, under a note saying "classified
    once") while merge, which keeps an id once, gave each pick once. An id is the tomogram and
    the coordinates in its voxels (to 0.1), so the same id in two tables is the same pick; one
    table's own repeats keep their ``~2`` ids (picktables notes them). Only with two tables or
    more: one table's ids are never formatted here."""
    import numpy as np

    from cryoshift.runtime.pickrows import PickRows

    tables = {seg.source.key for seg in items.segments if isinstance(seg, PickRows)}
    if len(tables) < 2:
        return items
    seen: set[str] = set()
    out: list[Any] = []
    for seg in items.segments:
        if isinstance(seg, PickRows):
            fresh = []
            for ident in seg.ids():
                fresh.append(ident not in seen)
                seen.add(ident)
            keep = np.asarray(fresh, dtype=bool)
            out.append(seg if keep.all() else seg.where(keep))
        else:
            kept = [it for it in seg if it.id not in seen]
            seen.update(it.id for it in kept)
            out.append(kept)
    return type(items)(out)


class _FileKeys:
    """What identifies the volume of a file-backed item, however its path was written: the file
    (device and inode: links, ``./``, ``..`` and absolute spellings alike) and the slice index.

    One ``stat`` per file: a stack's (few, many slices each) remembered by path, a single volume's
    not (a folder of a million files is a million paths, each met once; planning already opened
    each). A path that cannot be stat'ed (missing: an error row later) or a file system without
    inode numbers falls back to the real path."""

    def __init__(self) -> None:
        self._stacks: dict[str, Any] = {}

    def of(self, it: Item) -> tuple[Any, int] | None:
        """The key of ``it``; None for items that are not a file's volume (picks, error rows)."""
        if it.kind == "file":
            return self._identify(it.path), it.index
        if it.kind != "stack":
            return None
        found = self._stacks.get(it.path)
        if found is None:
            found = self._stacks[it.path] = self._identify(it.path)
        return found, it.index

    @staticmethod
    def _identify(path: str) -> Any:
        return volume_identity(path)


FEATURELESS = (
    "has no 'features' output, which --features writes; classify without --features "
    "(or export the model again with cryoshift export)"
)


def refuse_featureless(model: Model) -> None:
    """``--features`` on a driver (Ray actors, device workers): refused before any worker starts
    when the ONNX model has no 'features' output, as a local run refuses it, rather than at the
    first batch. A TensorRT engine is checked by its workers (its outputs need TensorRT)."""
    if model.has_features is False:
        raise InputError(model.path, FEATURELESS)


def driver_model(model_path: Path, backend: str, description: str | None = None) -> Model:
    """What a run's driver needs of the model (metadata, sha256) without running it: an ONNX
    model's properties or a TensorRT engine's sidecar, so a GPU-only engine works on a CPU-only
    driver (device workers and Ray actors open the sessions)."""
    from cryoshift.runtime.contract import FEATURES
    from cryoshift.runtime.engine_sidecar import file_sha256, read_engine_sidecar
    from cryoshift.runtime.metadata import read_onnx_model

    has_features = None
    if model_path.suffix.lower() == ".engine":
        meta = read_engine_sidecar(model_path).metadata
        backend = "engine"
    else:
        meta, outputs, _ = read_onnx_model(model_path)
        has_features = FEATURES in outputs
    if not model_path.is_file():
        raise InputError(model_path, missing_reason(model_path))
    return Model(
        model_path,
        meta,
        backend,
        file_sha256(model_path),
        description=description or backend,
        has_features=has_features,
    )


class LocalInference:
    """This process: reader threads (or processes) fill batches for one loaded model."""

    def __init__(
        self,
        model: Model,
        batch_size: int = 64,
        workers: int = 2,
        reader_processes: bool = False,
        transfer: str = "fp32",
    ):
        self.model = model
        self.metadata = model.metadata
        self.description = model.description
        self.notes = list(model.notes)
        self.num_features = model.num_features
        self.batch_size, self.workers = batch_size, workers
        self.reader_processes, self.transfer = reader_processes, transfer
        self.cache = VolumeCache()

    def prepare(self, items: Sequence[Item], cache: VolumeCache, opts: RunOptions) -> dict[str, Any]:
        from cryoshift.runtime.hostmem import capped_workers
        from cryoshift.runtime.readers import auto_workers
        from cryoshift.runtime.transfer import startup_parity

        model = self.model
        if opts.features and getattr(model._runner, "has_features", True) is False:
            raise InputError(model.path, FEATURELESS)
        self.cache = cache
        # 0: sized to the model; capped here too, so a library caller's manifest records the readers
        # that ran (the command line caps first, and this is then a no-op without a second note)
        if self.workers >= 1:
            self.workers = capped_workers(self.workers, self.reader_processes)
        else:
            self.workers = auto_workers(model, items)
        check_buffer_memory(model, self.batch_size, len(items), self.workers)  # before any row
        voxel = None if opts.ignore_voxel_size else self.metadata.voxel_size
        parity = startup_parity(model, items, cache, voxel)
        if opts.progress:
            passed = f"; passed over: {'; '.join(model.notes)}" if model.notes else ""
            say(f"cryoshift: backend {model.description}{passed}")
        return {
            "backend": model.backend,
            "batch_size": self.batch_size,
            "workers": self.workers,
            "reader_processes": self.reader_processes,
            "transfer": self.transfer,
            "transfer_parity": parity,
        }

    def run(self, todo: Sequence[Item], ledgers: RunLedgers, opts: RunOptions) -> RunStats:
        return run_pipeline(
            self.model,
            todo,
            ledgers.append,
            batch_size=self.batch_size,
            workers=self.workers,
            unknown_threshold=opts.unknown_threshold,
            cache=self.cache,
            progress=opts.progress,
            check_voxel_size=not opts.ignore_voxel_size,
            reader_processes=self.reader_processes,
            with_features=ledgers.features is not None,
        )

    def model_info(self) -> dict[str, Any]:
        return model_info(self.model)


def one_writer(fn: Any) -> Any:
    """Hold the output folder's lock (per shard) for the whole call: a second run on the same
    folder is refused in one line naming the holder's pid instead of duplicating rows."""

    @functools.wraps(fn)
    def locked(model: Any, inputs: Any, out_dir: str | Path, *args: Any, **kwargs: Any) -> Any:
        from cryoshift.runtime.lock import holding, lock_name

        shard = kwargs.get("shard")
        if isinstance(shard, str):
            shard = parse_shard(shard)
        out = Path(out_dir)
        check_out_folder(out, "--out", "to write results into")  # first: exists() raises on a name too long
        # a refused or failed run leaves no folder it made and no lock file it made (lock.holding)
        with holding(out, lock_name(tuple(shard) if shard else None), "classify run"):
            return fn(model, inputs, out_dir, *args, **kwargs)

    return locked


@one_writer
def classify(
    model: str | Path | Model,
    inputs: str | Path | Iterable[str | Path],
    out_dir: str | Path,
    backend: str = "auto",
    batch_size: int = 64,
    workers: int = 2,
    resume: bool = False,
    shard: str | tuple[int, int] | None = None,
    unknown_threshold: float | None = None,
    progress: bool = True,
    tomograms: str | Path | Iterable[str | Path] | None = None,
    contrast: str | None = None,
    ignore_voxel_size: bool = False,
    threads: int | None = None,
    devices: int | str | Iterable[int] | None = None,
    subshard: tuple[int, int] | None = None,
    reader_processes: bool = False,
    transfer: str = "fp32",
    coordinate_pixel_size: float | None = None,
    binning: float | None = None,
    split_by_class: bool = False,
    copick_session: str | None = None,
    features: bool = False,
    retry_errors: bool = False,
) -> ClassifySummary:
    """Classify every subtomogram in ``inputs`` and write results into ``out_dir``.

    ``inputs`` (one path, or a list of them) mixes MRC files, globs, directories, volume stacks,
    STAR listings (rlnImageName), pick tables (with ``tomograms`` to crop from) and dataset
    directories.
    A bad item is written to ``errors.csv`` and the run goes on; ``resume=True`` continues a
    killed run without losing or duplicating a row. ``shard="i/n"`` keeps every n-th item.
    ``binning`` (or ``coordinate_pixel_size``, A per pick pixel) scales pixel picks made on
    another sampling (RELION 4 unbinned picks) to the reconstruction's voxels;
    ``split_by_class`` also writes one ``predictions_<class>.star`` per class. ``copick:`` inputs
    (runtime/copick_io.py) get their predictions back as picks of session ``copick_session``
    (default: ``cryoshift-<model sha256[:8]>``). ``features=True`` also writes the model's
    features, one float32 row per results row in the same order, to ``features.npy`` (for the
    report's embedding; a resumed run goes on writing it when the interrupted one did).
    ``retry_errors=True`` (with ``resume``) classifies again the items that failed before, their
    error rows replaced by the new outcome (one device only: workers keep their own errors).
    ``workers`` reader threads fill batches (``reader_processes=True``: processes sharing
    memory with this one, for GPUs that consume faster than one Python process reads).
    ``devices`` (a GPU number, a list of them or ``"0,1"``) runs one worker process per GPU
    (runtime/devices.py).

    Both ``reader_processes=True`` and ``devices`` start processes that re-import the calling
    script (forkserver/spawn): a script calling ``classify`` must do so under
    ``if __name__ == "__main__":``, or each child runs the script's body again (its own classify
    run, an extra output folder) and dies with multiprocessing's "bootstrapping phase" error.

    Example::

        summary = classify("model.onnx", ["particles/", "picks.star"], "out",
                           tomograms=["tomos/*.mrc"], backend="cpu")
        print("\\n".join(summary.lines()))
    """
    from cryoshift.runtime.devices import parse_devices  # here, not at the top: devices imports run

    devices = parse_devices(devices)
    opts = RunOptions(
        inputs,  # type: ignore[arg-type]  # RunOptions makes it a list (one path is one input)
        Path(out_dir),
        resume,
        shard,
        subshard,
        unknown_threshold,  # type: ignore[arg-type]
        tomograms,
        contrast,
        ignore_voxel_size,
        coordinate_pixel_size,
        binning,
        split_by_class,
        copick_session,
        features,
        progress,
        retry_errors,
    )
    inference: Inference
    if devices and len(devices) > 1:
        from cryoshift.runtime.devices import DeviceInference

        if retry_errors:  # each worker resumes its own ledgers, errors counted done there
            raise InputError(None, "--retry-errors works on one device; drop --devices (or give one GPU)")

        inference = DeviceInference(
            model.path if isinstance(model, Model) else Path(model),
            devices,
            backend=backend,
            batch_size=batch_size,
            workers=workers,
            threads=threads,
            reader_processes=reader_processes,
            transfer=transfer,
        )
    else:
        if not isinstance(model, Model):
            # One device: chosen by its number; the caller's environment (CUDA_VISIBLE_DEVICES) is left
            # alone (only the worker processes of several devices get their own).
            model = load_model(
                model,
                backend,
                batch_size=batch_size,
                threads=threads,
                device_id=devices[0] if devices else 0,
                transfer=transfer,
            )
        inference = LocalInference(model, batch_size, workers, reader_processes, transfer)
        if devices and model.backend == "cpu":
            inference.notes.append(cpu_devices_note(devices, backend))
    return run(inference, opts)


def cpu_devices_note(devices: list[int], backend: str) -> str:
    """The note of a run given a GPU (``--devices``) that ran on the CPU.

    Why a note, not a refusal: ``--backend auto`` is documented to fall back to the CPU, and a job
    script shared between GPU and CPU nodes should still run; but the user asked for a GPU and
    believed one was used (exit 0, nothing said)."""
    shown = ",".join(map(str, devices))
    if backend == "cpu":
        return f"--devices {shown}: ran on the CPU, as --backend cpu asks"
    return (
        f"--devices {shown}: no usable CUDA GPU here (or onnxruntime without CUDA: pip install "
        "'cryoshift[gpu]'); ran on the CPU"
    )
