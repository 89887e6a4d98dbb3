"""The run directory: what a training run leaves behind, and the state it resumes from.

```
RUN_DIR/config.json        the TrainConfig (re-runnable: TrainConfig.from_dict)
RUN_DIR/versions.json      python, torch, numpy, cryoshift, platform, device of the first session;
                           "sessions": the same, with start time and first epoch, of each session
RUN_DIR/metrics.csv        one row per epoch (losses, source val accuracy, label-free scores)
RUN_DIR/selection.json     label-free per-epoch scores, the selected epoch and warnings (collapse, saturation)
RUN_DIR/target_classes.csv the selected model's predicted-class histogram of the target
RUN_DIR/skipped_items.csv  every target item left out (unreadable or unfit), with why: item,reason
RUN_DIR/checkpoints/epoch_NNNN.pt   backbone weights + metadata of each epoch
RUN_DIR/checkpoints/resume.pt       everything --resume needs (weights only, RNG as tensors/lists)
RUN_DIR/model.pt           the selected, calibrated model (what export reads)
RUN_DIR/plots/             loss curves, confusion matrix, feature embedding
RUN_DIR/.cryoshift-train.lock  held by the run writing the folder (runtime/lock.py)
```

Each epoch writes epoch_NNNN.pt, then resume.pt, then its metrics.csv row: a kill between any two
leaves a state --resume either continues (resume.pt of this or the epoch before) or restarts from
epoch 1 with a note (only epoch_0001.pt written: :func:`first_epoch_unsaved`).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import platform
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cryoshift.runtime.outfiles import TEMPORARY_PREFIX, TEMPORARY_SUFFIX, replacing, write_text

CHECKPOINTS = "checkpoints"
RESUME = "resume.pt"
METRICS = "metrics.csv"


def epoch_checkpoint(run_dir: Path, epoch: int) -> Path:
    return run_dir / CHECKPOINTS / f"epoch_{epoch:04d}.pt"


def plugin_versions(method: str, backbone: str) -> dict[str, dict[str, str]]:
    """The installed distributions (name, version) that provide the run's ``method`` and
    ``backbone`` when plugins do (registry.Registry.provenance), under "method" and "backbone";
    empty for built-ins. Why: two runs of one plugin method, before and after its package changed,
    were otherwise recorded alike."""
    from cryoshift.training.adapt import METHODS
    from cryoshift.training.backbones import BACKBONES

    found: dict[str, dict[str, str]] = {}
    for role, registry, name in (("method", METHODS, method), ("backbone", BACKBONES, backbone)):
        provided = registry.provenance(name)
        if provided is not None:
            found[role] = {"name": name, **provided}
    return found


def versions(
    device: str = "cpu", world_size: int = 1, plugins: dict[str, dict[str, str]] | None = None
) -> dict[str, Any]:
    """Library and machine versions recorded next to every output; ``plugins``: the distributions
    of the plugin method and backbone in use (:func:`plugin_versions`), recorded when any."""
    from cryoshift.runtime import __version__
    from cryoshift.training.precision import cpu_has_native_bf16

    info: dict[str, Any] = {
        "cryoshift": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "device": device,
        "world_size": world_size,
        "torch_threads": torch.get_num_threads(),
        "cpu_native_bf16": cpu_has_native_bf16(),  # decides whether --amp trains in bf16 on CPU
    }
    if torch.cuda.is_available():
        info["cuda"] = torch.version.cuda
        info["gpu"] = torch.cuda.get_device_name(0)
    if plugins:
        info["plugins"] = plugins
    return info


VERSIONS = "versions.json"
SESSIONS = "sessions"  # versions.json's list of the run's sessions: its start and each --resume


def _read_versions(run_dir: Path) -> dict[str, Any] | None:
    """A run's versions.json as an object (None: no such file, or not a readable JSON object)."""
    try:
        data = json.loads((run_dir / VERSIONS).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def session_versions(
    run_dir: Path, current: dict[str, Any], first_epoch: int, resumed: bool
) -> dict[str, Any]:
    """The versions.json a session that trains from ``first_epoch`` writes: the run's first
    session's versions at the top (as before: what started the run), and under ``sessions`` one
    entry per session (``started``, ``first_epoch`` and its :func:`versions`), this one last.

    Why: versions.json was rewritten by every --resume, so a run trained across two cryoshift or
    torch versions recorded only its last session's, and said nothing of the first. A versions.json
    of an older cryoshift (no ``sessions``) is kept as the first session, its start unknown (None);
    an unreadable one is not guessed at: the sessions it held are lost, and ``earlier_sessions``
    says so."""
    from datetime import datetime, timezone

    session = {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "first_epoch": first_epoch,
        **current,
    }
    earlier = _read_versions(run_dir) if resumed else None
    if earlier is None:
        record: dict[str, Any] = {**current, SESSIONS: [session]}
        if resumed:
            record["earlier_sessions"] = f"unknown: {VERSIONS} was missing or unreadable when resumed"
        return record
    first = {key: value for key, value in earlier.items() if key != SESSIONS}
    sessions = earlier.get(SESSIONS)
    if not isinstance(sessions, list):  # written before sessions were kept: its one session
        sessions = [{"started": None, "first_epoch": None, **first}]
    return {**first, SESSIONS: [*sessions, session]}


def recorded_version(run_dir: Path) -> str | None:
    """The cryoshift version that last wrote the run's config.json, from its versions.json: the last
    session's (None: no such file, or none readable).

    config.json records no version; versions.json, written next to it whenever the run starts or
    resumes, does, so a config a newer cryoshift wrote can be told apart from a damaged one. Its
    top holds the first session's versions, so the last entry of ``sessions`` is read first."""
    data = _read_versions(run_dir)
    if data is None:
        return None
    sessions = data.get(SESSIONS)
    last = sessions[-1] if isinstance(sessions, list) and sessions else None
    version = last.get("cryoshift") if isinstance(last, dict) else None
    if not (isinstance(version, str) and version.strip()):
        version = data.get("cryoshift")
    return version if isinstance(version, str) and version.strip() else None


def is_newer_version(recorded: str, installed: str) -> bool:
    """Whether version ``recorded`` is later than ``installed``, by their release numbers (1.10 >
    1.9; a suffix such as .dev1 or +local is not compared); False where either has none, and
    where ``installed`` is UNKNOWN_VERSION: a source tree that is not installed reports 0.0.0,
    and every recorded version was then said to be newer ("upgrade cryoshift")."""
    import re

    from cryoshift.runtime import UNKNOWN_VERSION

    if installed.strip() == UNKNOWN_VERSION:
        return False

    def release(version: str) -> tuple[int, ...] | None:
        found = re.match(r"\s*v?(\d+(?:\.\d+)*)", version)
        return tuple(int(part) for part in found.group(1).split(".")) if found else None

    a, b = release(recorded), release(installed)
    if a is None or b is None:
        return False
    width = max(len(a), len(b))
    return a + (0,) * (width - len(a)) > b + (0,) * (width - len(b))


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as the whole JSON file ``path`` through a new temporary file put in its place
    (runtime/outfiles.py): never half a file, never written through a link planted in the run
    folder (a fixed ``config.json.tmp`` was)."""
    write_text(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, (np.ndarray,)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite metrics.csv from the full history (so a resumed run never duplicates rows)."""
    if not rows:
        return
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    with replacing(path, "w", newline="") as fh:  # a new temporary file, then renamed (not through a link)
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(row.get(k, "")) for k in fields})


def _fmt(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for row in rows:
        parsed: dict[str, Any] = {}
        for k, v in row.items():
            try:
                parsed[k] = int(v) if k == "epoch" else float(v)
            except (TypeError, ValueError):
                parsed[k] = v
        out.append(parsed)
    return out


# --------------------------------------------------------------------------- RNG state
# Stored as tensors / lists / ints so the resume checkpoint loads with weights_only=True.


def capture_rng(numpy_rngs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Snapshot of every random generator that decides what training does next.

    ``numpy_rngs`` holds named extra generators: numpy ``Generator`` or ``torch.Generator``
    (the simulator's), stored as plain dicts / uint8 tensors.
    """
    version, state, gauss = random.getstate()
    out: dict[str, Any] = {
        "python": [int(version), [int(s) for s in state], gauss],
        "torch": torch.get_rng_state(),
        "numpy_global": _np_global_state(),
        "numpy": {name: _gen_state(rng) for name, rng in (numpy_rngs or {}).items()},
    }
    if torch.cuda.is_available():
        out["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return out


def _gen_state(rng: Any) -> Any:
    return rng.get_state() if isinstance(rng, torch.Generator) else rng.bit_generator.state


def restore_rng(state: dict[str, Any], numpy_rngs: dict[str, Any] | None = None) -> None:
    version, py_state, gauss = state["python"]
    random.setstate((int(version), tuple(int(s) for s in py_state), gauss))
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy_global"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    for name, rng in (numpy_rngs or {}).items():
        if name not in state["numpy"]:
            continue
        if isinstance(rng, torch.Generator):
            rng.set_state(state["numpy"][name])
        else:
            rng.bit_generator.state = state["numpy"][name]
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _np_global_state() -> list[Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return [str(kind), torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]


# The TrainConfig fields only a source simulated on the fly uses: recorded as None (null in
# config.json) for a dataset source, which draws no simulated volumes. A resume state written
# before that (an older cryoshift recorded the defaults) holds the values: not a difference.
SIMULATION_ONLY = ("sim_preset", "sim_per_epoch", "sim_val")
# What resume takes from the command line; every other setting comes from the run's config.json.
_RESUME_TAKES = ("out", "epochs", "device", "progress", "threads")
# The `cryoshift train` option of a config field, where it is not the field's name with dashes.
_RESUME_OPTIONS = {
    "method_kwargs": "--hparam",
    "backbone_kwargs": "--backbone-opt",
    "selection_criterion": "--selection",
}
_NEGATABLE = ("spectrum_match", "tilt_match", "snr_match", "target_views", "amp")  # --x/--no-x flags
_NO_OPTION = ("selection_tolerance", "unknown_quantile", "eval_batch_size", "sim_val")  # Python API only
MAX_RESUME_NOTES = 6  # ignored options named in the note; the rest are counted


def shown_setting(value: Any) -> str:
    """A config value the way it is typed on the command line, cut to a readable length: how the
    resume notes and refusals here and the trainer's hyper-parameter notes show a setting."""
    import json

    if value is None:
        text = "none"
    elif isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, dict):
        pairs = (f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in value.items())
        text = ",".join(pairs) or "none"
    elif isinstance(value, list):
        text = ",".join(str(v) for v in value) or "none"
    else:
        text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


# The config fields that name data files or folders (``source`` a comma list, ``tomograms`` a list).
PATH_FIELDS = ("source", "target", "tomograms")
GLOB_CHARS = frozenset("*?[")


def _absolute(item: str) -> str:
    """``item`` as an absolute path when it names a path (one that exists, or a glob pattern);
    anything else (``builtin:NAME``, a typo the reader will name) as given. A ``copick:CONFIG?query``
    spec is no path (its ``?`` is no glob): only its config file is made absolute."""
    import os

    from cryoshift.runtime.copick_io import PREFIX as COPICK

    if item.startswith(COPICK):
        config, sep, query = item[len(COPICK) :].partition("?")
        if config and "://" not in config and not os.path.isabs(config):
            config = os.path.abspath(os.path.expanduser(config))
        return f"{COPICK}{config}{sep}{query}"
    if os.path.isabs(item) or item.startswith("builtin"):
        return item
    if os.path.lexists(item) or GLOB_CHARS & set(item):
        return os.path.abspath(item)  # not resolve(): a link keeps the name the user gave
    return item


def absolute_data_paths(config: Any) -> dict[str, Any]:
    """The data paths of a new run's ``config`` (a TrainConfig) made absolute, as the changes to
    apply: config.json is read later from other folders (``export`` takes parity and int8
    calibration data from it; ``--resume``, ``evaluate --run``), where a relative ``../data/target``
    named nothing (random parity volumes, with a warning) or another folder's data."""
    from cryoshift.training.simulate.structures import split_sources

    changes: dict[str, Any] = {}
    source = ",".join(_absolute(item) for item in split_sources([config.source]))
    if source != config.source:
        changes["source"] = source
    if config.target is not None and _absolute(config.target) != config.target:
        changes["target"] = _absolute(config.target)
    tomograms = [_absolute(item) for item in config.tomograms]
    if tomograms != list(config.tomograms):
        changes["tomograms"] = tomograms
    return changes


def _same_path(given: str, stored: str) -> bool:
    import os

    try:
        return given == stored or os.path.samefile(given, stored)
    except (OSError, ValueError):
        return False


def same_setting(name: str, given: Any, stored: Any) -> bool:
    """Whether a given setting equals the stored one; a data path spelled another way (relative,
    a trailing slash: config.json records absolute paths) that names the same file or folder
    counts as the same, item by item for a comma list of sources or a list of tomograms."""
    if given == stored:
        return True
    if name not in PATH_FIELDS:
        return False
    if name == "source" and isinstance(given, str) and isinstance(stored, str):
        from cryoshift.training.simulate.structures import split_sources

        given, stored = split_sources([given]), split_sources([stored])
    if isinstance(given, str) and isinstance(stored, str):
        return _same_path(given, stored)
    if isinstance(given, list) and isinstance(stored, list) and len(given) == len(stored):
        pairs = zip(given, stored, strict=True)
        return all(isinstance(a, str) and isinstance(b, str) and _same_path(a, b) for a, b in pairs)
    return False


def train_option(field: str) -> str | None:
    """The `cryoshift train` option that sets TrainConfig ``field`` (None: Python API only).
    tests/training/test_run_options.py checks every answer against the command's declared options,
    so a new option with an unusual name cannot be shown under a guessed flag."""
    if field in _NO_OPTION:
        return None
    return _RESUME_OPTIONS.get(field, "--" + field.replace("_", "-"))


def _without_unused_hparams(config: dict[str, Any]) -> tuple[Any, list[str]]:
    """A config dict's ``method_kwargs`` without the keys its method never used, and those keys."""
    from cryoshift.training.adapt.base import unused_hparams

    kwargs, method = config.get("method_kwargs"), config.get("method")
    if not isinstance(kwargs, dict) or not isinstance(method, str):
        return kwargs, []  # a damaged config: what reads it refuses it
    unused = unused_hparams(method, kwargs)
    return {k: v for k, v in kwargs.items() if k not in unused}, unused


def drop_unused_hparams(stored: Any) -> str | None:
    """Drop from a resumed run's ``stored`` config (a TrainConfig, changed in place) the
    hyper-parameters of other methods its method never used; the note naming them, or None.

    Why: the Python API once took another method's key and trained without it
    (``create_method("selftrain", dann_weight=0.5)``), and config.json recorded it; since the
    method refuses such keys, ``--resume`` of the run was refused, and taking the key out of
    config.json was refused too (the resume state, written under the old config, no longer
    matched). The run trained without them, so it resumes without them: the resume state is
    compared without them too (:func:`resume_state_mismatch`), and the config.json the resumed
    run writes no longer holds them. A new run still refuses them (check_method_hparams)."""
    kwargs, unused = _without_unused_hparams({"method": stored.method, "method_kwargs": stored.method_kwargs})
    if not unused:
        return None
    old = stored.method_kwargs
    stored.method_kwargs = kwargs
    listed = ", ".join(f"{key}={shown_setting(old[key])}" for key in unused)
    noun, verb = ("hyper-parameter", "was") if len(unused) == 1 else ("hyper-parameters", "were")
    method = stored.method
    return f"the run's stored {noun} {listed} {verb} never used by {method}; ignored"


def ignored_on_resume(given: Any, stored: Any) -> list[str]:
    """The settings in ``given`` (a TrainConfig) that differ from the resumed run's ``stored``
    config and so are ignored, as '--lr 0.01 (run: 0.001)'.

    Why only settings away from their defaults: the CLI passes every option, given or not, so a
    default value is taken for "not given" (resuming with just --source/--out/--resume must not
    list every setting the run was started with). The fields the trainer fills in (``epochs`` and
    ``dense_weight`` None, recorded as numbers) are at their None default unless given, so they
    make no false notes; an option given explicitly at its default cannot be told from an absent
    one and goes unmentioned. ``_RESUME_TAKES`` are used, not ignored."""
    notes = []
    for f in dataclasses.fields(given):
        if f.name in _RESUME_TAKES:
            continue
        value, old = getattr(given, f.name), getattr(stored, f.name)
        default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if (not required and value == default) or same_setting(f.name, value, old):
            continue
        flag = train_option(f.name)
        if flag is None:
            notes.append(f"{f.name}={shown_setting(value)} (run: {shown_setting(old)})")
        elif f.name in _NEGATABLE:
            on, off = flag, "--no-" + flag[2:]
            notes.append(f"{on if value else off} (run: {on if old else off})")
        elif isinstance(value, bool):  # a flag that is only ever switched on
            notes.append(f"{flag} (run: {'on' if old else 'off'})")
        else:
            notes.append(f"{flag} {shown_setting(value)} (run: {shown_setting(old)})")
    return notes


def resume_state_mismatch(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The settings of ``current`` (the resumed run's config, as a dict) that differ from ``saved``
    (the config resume.pt was written under), as 'key=saved here, current in config.json'.

    A resume.pt copied from another run, or a config.json edited since, would otherwise load into a
    network of another shape (a torch traceback) or, if the shapes agree, silently continue a
    different training. The settings resume takes from the command line may differ; a setting
    the saved config lacks (one written by an older cryoshift) is not compared, nor are the
    hyper-parameters its method never used (dropped from config.json too: drop_unused_hparams),
    nor a :data:`SIMULATION_ONLY` setting either records as unused (None: a dataset source, whose
    older resume states hold the defaults)."""

    def plain(value: Any) -> Any:  # tuples and lists alike, as config.json holds them
        return json.loads(json.dumps(value, default=str))

    saved, current = dict(saved), dict(current)
    for config in (saved, current):
        if isinstance(config.get("method_kwargs"), dict):
            config["method_kwargs"] = _without_unused_hparams(config)[0]

    def unused(key: str) -> bool:  # a simulation setting recorded as not used (a dataset source)
        return key in SIMULATION_ONLY and (saved[key] is None or current[key] is None)

    return [
        f"{key}={shown_setting(saved[key])} in it, {shown_setting(value)} in config.json"
        for key, value in current.items()
        if key not in _RESUME_TAKES and key in saved and not unused(key) and plain(saved[key]) != plain(value)
    ]


def resume_note(ignored: list[str]) -> str:
    """One line naming the ignored settings (the first MAX_RESUME_NOTES, then a count)."""
    more = len(ignored) - MAX_RESUME_NOTES
    listed = ", ".join(ignored[:MAX_RESUME_NOTES]) + (f" and {more} more" if more > 0 else "")
    return f"resuming with the run's stored settings; ignored: {listed}"


# What a run writes into its folder, by the name a refusal gives it.
_RUN_FILES = {
    "config.json": "training config",
    VERSIONS: "versions record",
    METRICS: "metrics",
    "selection.json": "epoch selection",
    "target_classes.csv": "target class histogram",
    "model.pt": "selected model",
    f"{CHECKPOINTS}/{RESUME}": "resume state",
}
_RUN_FOLDERS = {CHECKPOINTS: "checkpoints", "plots": "plots"}


def check_run_paths(run_dir: Path) -> None:
    """Refuse a run folder where a file the run writes is a folder (or a folder it writes into is a
    file), before any data is read: each was found only when the run came to write it, as
    "model.pt.tmp: Is a directory" or "plots: File exists", after every epoch had trained. (The
    temporary files now have new random names: runtime/outfiles.py.)"""
    from cryoshift.runtime.errors import InputError

    for name in _RUN_FOLDERS:
        _refuse_unfollowable_link(run_dir / name)
    for name, what in _RUN_FOLDERS.items():
        folder = run_dir / name
        if folder.exists() and not folder.is_dir():
            raise InputError(
                folder,
                f"is not a folder, and the run keeps its {what} there; move it away or choose another --out",
            )
    for name, what in _RUN_FILES.items():
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():  # a link is replaced when the file is written
            raise InputError(
                path,
                f"is not a file but a folder, where the run writes its {what}; move it away or "
                "choose another --out",
            )


def _refuse_unfollowable_link(folder: Path) -> None:
    """Refuse a folder name the run writes into that is a symbolic link loop or a dangling link.
    Why: ``exists`` calls it absent, so --resume said resume.pt "is missing" and then mkdir failed
    with a bare "File exists" that named neither the link nor what was wrong with it."""
    from cryoshift.runtime.errors import InputError, missing_reason

    if folder.is_symlink() and not folder.exists():
        raise InputError(
            folder, f"is a {missing_reason(folder)}, not a folder; remove the link or choose another --out"
        )


# --------------------------------------------------------------------------- resume safety


def _metrics_row_count(path: Path) -> int:
    """Epoch rows in metrics.csv; 0 when there is none or it cannot be read (other evidence decides)."""
    try:
        return len(read_metrics(path))
    except (OSError, ValueError, csv.Error):
        return 0


def _epoch_checkpoint_count(run_dir: Path) -> int:
    """Epoch checkpoints (``epoch_NNNN.pt`` files) in the run's checkpoints folder."""
    folder = run_dir / CHECKPOINTS
    try:
        names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
    except OSError:
        return 0
    return sum(1 for n in names if n.startswith("epoch_") and n.endswith(".pt") and n[6:-3].isdigit())


FIRST_EPOCH = f"{CHECKPOINTS}/epoch_0001.pt"


def first_epoch_unsaved(run_dir: Path) -> bool:
    """Whether the run was stopped while saving its first epoch: epoch_0001.pt is its only trace
    (no resume.pt, no metrics row, no other epoch, no model.pt). Why: that checkpoint is written
    before resume.pt, and a kill between the two (SIGTERM of a SLURM time limit) made every later
    --resume refuse the run as one whose resume state was lost, with nothing to restore."""
    if (run_dir / CHECKPOINTS / RESUME).exists() or _metrics_row_count(run_dir / METRICS):
        return False
    model = run_dir / "model.pt"
    if model.exists() or model.is_symlink():
        return False
    return _epoch_checkpoint_count(run_dir) == 1 and (run_dir / FIRST_EPOCH).is_file()


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Remove the temporary files (runtime/outfiles.py's ``.cs-*.tmp``) a killed run left in the run
    folder and its checkpoints folder; returns them. Only regular files of that pattern: nothing
    else is touched. Called under the run's lock, so no live writer owns them."""
    removed = []
    for folder in (run_dir, run_dir / CHECKPOINTS):
        try:
            entries = list(folder.iterdir()) if folder.is_dir() and not folder.is_symlink() else []
        except OSError:
            continue
        for path in entries:
            name = path.name
            if not (name.startswith(TEMPORARY_PREFIX) and name.endswith(TEMPORARY_SUFFIX)):
                continue
            if path.is_symlink() or not path.is_file():
                continue
            try:
                path.unlink()
            except OSError:
                continue
            removed.append(path)
    return removed


def finished_epochs(run_dir: Path) -> tuple[int | None, str] | None:
    """How many epochs the run in ``run_dir`` shows as finished, and the file that shows it
    (None: nothing finished). Why: --resume without resume.pt trained from epoch 1 over a finished
    run, overwriting its epoch checkpoints and model.pt; it may do so only when nothing is lost.
    model.pt alone shows finished work but not how much (the count is then None)."""
    rows = _metrics_row_count(run_dir / METRICS)
    if rows:
        return rows, METRICS
    checkpoints = _epoch_checkpoint_count(run_dir)
    if checkpoints:
        return checkpoints, f"{CHECKPOINTS}/epoch_*.pt"
    model = run_dir / "model.pt"
    if model.exists() or model.is_symlink():
        return None, "model.pt"
    return None


def nonfinite_tensors(state: Any, name: str = "") -> list[str]:
    """Names (dotted paths) of the floating-point tensors holding NaN/Inf anywhere in ``state``
    (nested dicts, lists and tuples: weights, optimiser moments). Why: resume.pt with NaN weights
    resumed and failed at the first step as "training diverged ...; lower --lr", blaming the
    learning rate for a damaged file."""
    if isinstance(state, torch.Tensor):
        finite = not state.is_floating_point() or bool(torch.isfinite(state).all())
        return [] if finite else [name or "tensor"]
    if isinstance(state, dict):
        items = [(f"{name}.{k}" if name else str(k), v) for k, v in state.items()]
    elif isinstance(state, (list, tuple)):
        items = [(f"{name}[{i}]", v) for i, v in enumerate(state)]
    else:
        return []
    return [bad for key, value in items for bad in nonfinite_tensors(value, key)]
