"""copick projects as classify/train input and as the place predictions go back to.

An input ``copick:CONFIG.json`` names a copick project (a filesystem project, or the CZ cryoET data
portal through copick's ``cryoet_data_portal`` config). What to read is said in a query, which the
CLI builds from its ``--copick-*`` options::

    copick:/data/project.json?voxel_spacing=10&tomo_type=wbp&picks=ribosome:alice:1&picks=proteasome
    copick:/data/project.json?voxel_spacing=10&tomo_type=wbp&picks=*&runs=TS_01,TS_02

- ``voxel_spacing`` (A) and ``tomo_type`` (``wbp``, ``denoised`` ...): the tomogram cropped in each
  run. Both required; a run without that tomogram is one error row naming what it has.
- ``picks=OBJECT[:USER[:SESSION]]`` (repeatable; ``*`` or an empty USER or SESSION matches any;
  OBJECT must be given, ``*`` for any): the pick sets read. Picks made by ``cryoshift`` itself
  are never read back unless asked for by that user. A point in several selected sets (two users
  picked it) is one particle, classified once. Names are matched in copick's spelling (see
  :func:`copick_name`).
- ``runs``: only these runs (default: every run).

Coordinates: copick stores Angstrom; a pick's centre is its location plus the translation of its
transformation (copick's ``full_positions``), and voxel = Angstrom / voxel_spacing (copick's centre
``shape / 2 * voxel_spacing`` is RELION's, so this is cryoshift's pixel convention).

Tomogram items carry a path ``copick:CONFIG#RUN@VOXEL_SPACING/TOMO_TYPE`` that any process can open
again (:func:`open_volume`): level ``0`` of the OME-Zarr array, read lazily per crop.

Write-back (:func:`write_predictions`): each predicted class (not ``unknown``) becomes a pick set
of the object of the same name, user ``cryoshift``, one session id, location in Angstrom, the
confidence as the point's ``score``. A class the config has no pickable object for is not written
(a note says so; the config file is never changed). A prediction belongs to its particle, so writing
again to the same session replaces only the earlier predictions at the positions this job classified
(in whatever class they were): a job over other picks (another object, user, run) keeps the session's
earlier predictions, and a rerun over the same picks leaves no stale or duplicate point. Session ids
are written in copick's spelling (copick turns ``_``, ``/``, spaces ... into ``-``). Two jobs
writing one session at once take turns per run (:func:`_writer_lock`), so neither loses the other's
points. Only particle objects (``is_particle: true``) get picks: a class whose object is a
segmentation object is not written (one note names it).

copick resolves a relative ``overlay_root``/``static_root`` against the current folder, not the
config's; such a config is refused unless cryoshift runs in the config's folder, where both readings
are the same folder (:func:`_check_roots`). Importing copick reconfigures Python's root logger to
print on stdout; cryoshift undoes that (:func:`require_copick`): stdout is for results.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from cryoshift.runtime.errors import InputError, require_extra
from cryoshift.runtime.lock import FolderLock

PREFIX = "copick:"
USER = "cryoshift"


def require_copick(what: str) -> None:
    """Import copick (or raise the one line naming the extra) without letting it take over logging.

    Why: every copick module calls ``copick.util.log.get_logger`` on import, which runs
    ``logging.basicConfig(force=True)`` with a rich handler printing on stdout at INFO level: from
    then on copick's messages and any library's log records (urllib3's retries ...) were printed
    among the results on stdout, and the root logger's own handlers were dropped. The root logger
    is put back as it was, and copick's modules imported later get a plain logger (their warnings
    reach stderr through Python's default handling)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        require_extra("copick", what, "copick")
        try:
            import copick.util.log as copick_log
        except ImportError:  # another copick layout: only the root logger is put back
            copick_log = None
        if copick_log is not None and hasattr(copick_log, "get_logger"):
            copick_log.get_logger = _plain_logger
    finally:
        if root.handlers != handlers or root.level != level:
            root.handlers[:] = handlers
            root.setLevel(level)


def _plain_logger(name: str, debug: bool = False) -> logging.Logger:
    """copick's ``get_logger`` without its ``basicConfig`` (see :func:`require_copick`)."""
    return logging.getLogger(name)


def is_copick(text: str | Path) -> bool:
    return str(text).startswith(PREFIX)


def copick_name(text: str) -> str:
    """``text`` as copick stores a user, session or object name: copick silently turns ``_``, ``/``,
    spaces ... into ``-`` (``my_session`` is stored as ``my-session``), so a name is compared and
    reported in that form, never in the one typed."""
    require_copick("naming copick picks")
    from copick.util.escape import sanitize_name

    try:
        return sanitize_name(str(text), suppress_warnings=True)
    except ValueError as exc:
        raise InputError(None, f"copick name {text!r} has no usable character (letters, digits, -)") from exc


@dataclass(frozen=True)
class PickSelector:
    object: str
    user: str | None = None
    session: str | None = None

    @classmethod
    def parse(cls, text: str) -> PickSelector:
        parts = [p.strip() for p in text.split(":")]
        if len(parts) > 3 or not parts[0]:
            raise InputError(None, f"copick picks {text!r}: give OBJECT[:USER[:SESSION]] (* for any)")
        parts += [""] * (3 - len(parts))
        obj, user, session = (None if p in ("", "*") else p for p in parts)
        return cls(obj or "*", user, session)

    def text(self) -> str:
        return ":".join([self.object, self.user or "*", self.session or "*"])

    def matches(self, picks: Any) -> bool:
        if self.object != "*" and picks.pickable_object_name != copick_name(self.object):
            return False
        if self.user is None:
            if picks.user_id == USER:  # our own predictions are output, not input, unless named
                return False
        elif picks.user_id != copick_name(self.user):
            return False
        return self.session is None or picks.session_id == copick_name(self.session)


@dataclass(frozen=True)
class CopickSpec:
    config: str
    voxel_spacing: float
    tomo_type: str
    picks: tuple[PickSelector, ...]
    runs: tuple[str, ...] = ()

    def text(self) -> str:
        query = [("voxel_spacing", f"{self.voxel_spacing:g}"), ("tomo_type", self.tomo_type)]
        query += [("picks", p.text()) for p in self.picks]
        if self.runs:
            query.append(("runs", ",".join(self.runs)))
        return f"{PREFIX}{self.config}?{urlencode(query, safe=':*,/')}"


def parse_spec(text: str) -> CopickSpec:
    """``copick:CONFIG?query`` (see the module docstring) -> :class:`CopickSpec`."""
    if not is_copick(text):
        raise InputError(text, "not a copick input (copick:CONFIG.json)")
    config, _, query = text[len(PREFIX) :].partition("?")
    fields = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(fields) - {"voxel_spacing", "tomo_type", "picks", "runs"})
    if unknown:
        raise InputError(
            text,
            f"unknown copick settings {', '.join(unknown)} (have: voxel_spacing, tomo_type, picks, runs)",
        )
    if not config:
        raise InputError(text, "no copick config file: copick:CONFIG.json")
    if "voxel_spacing" not in fields or "tomo_type" not in fields:
        raise InputError(
            text,
            "copick input needs a voxel spacing and a tomogram type: "
            "--copick-voxel-spacing 10 --copick-tomo-type wbp",
        )
    try:
        spacing = float(fields["voxel_spacing"][-1])
    except ValueError:
        spacing = math.nan
    if not (math.isfinite(spacing) and spacing > 0):
        shown = fields["voxel_spacing"][-1]
        raise InputError(text, f"copick voxel spacing {shown!r} is not a positive number")
    picks = tuple(PickSelector.parse(p) for p in fields.get("picks", []))
    if not picks:
        raise InputError(text, "copick input needs picks to classify: --copick-picks OBJECT[:USER[:SESSION]]")
    runs = tuple(r for part in fields.get("runs", []) for r in part.split(",") if r)
    return CopickSpec(config, spacing, fields["tomo_type"][-1], picks, runs)


def with_options(
    text: str,
    voxel_spacing: float | None = None,
    tomo_type: str | None = None,
    picks: list[str] | None = None,
    runs: list[str] | None = None,
) -> str:
    """The CLI's ``--copick-*`` options folded into a ``copick:`` input (options win over the query);
    the config path becomes absolute, so the spec means the same from any folder or process."""
    config, _, query = text[len(PREFIX) :].partition("?")
    fields = parse_qs(query, keep_blank_values=True)
    if voxel_spacing is not None:
        fields["voxel_spacing"] = [f"{voxel_spacing:g}"]
    if tomo_type:
        fields["tomo_type"] = [tomo_type]
    if picks:
        fields["picks"] = list(picks)
    if runs:
        fields["runs"] = [",".join(runs)]
    if config and "://" not in config:
        config = str(Path(config).expanduser().resolve())
    pairs = [(k, v) for k, values in fields.items() for v in values]
    return f"{PREFIX}{config}" + (f"?{urlencode(pairs, safe=':*,/')}" if pairs else "")


def fold_inputs(
    inputs: list[str],
    voxel_spacing: float | None,
    tomo_type: str | None,
    picks: list[str] | None,
    runs: list[str] | None,
) -> list[str]:
    """Every ``copick:`` input with the options folded in; options without one are refused."""
    given = voxel_spacing is not None or tomo_type or picks or runs
    if given and not any(is_copick(t) for t in inputs):
        raise InputError(None, "--copick-* options need a copick:CONFIG.json input")
    return [with_options(t, voxel_spacing, tomo_type, picks, runs) if is_copick(t) else t for t in inputs]


# ---------------------------------------------------------------------------------------------
# Reading


_ROOTS: dict[str, Any] = {}


def open_root(config: str) -> Any:
    """The copick root of a config file (cached per process)."""
    require_copick("reading copick projects")
    if config not in _ROOTS:
        import copick

        if not Path(config).is_file():
            raise InputError(config, "copick config: no such file")
        try:
            root = copick.from_file(config)
        except (ValueError, KeyError, TypeError, OSError) as exc:
            raise InputError(config, _config_problem(exc)) from exc
        _check_roots(config, root)
        _ROOTS[config] = root
    return _ROOTS[config]


def _check_roots(config: str, root: Any) -> None:
    """Refuse a relative root unless the current folder is the config's folder.

    Why: copick reads a relative ``overlay_root``/``static_root`` from the current folder, not
    the config's (``from_file`` never learns where the config is). Started elsewhere (another
    shell, a shard, ``merge`` later), the same command read and wrote another folder's project,
    or found none. Following copick (current folder) is only safe where it is also the config's
    folder: there both readings are the same folder. Elsewhere the config is refused, naming
    the root, rather than guessing which folder was meant."""
    relative = _relative_roots(root)
    if not relative or Path.cwd().resolve() == Path(config).expanduser().resolve().parent:
        return
    raise InputError(
        config,
        f"relative copick root ({', '.join(relative)}): copick reads it from the current folder "
        f"({Path.cwd()}), not the config's folder; make it absolute in the config "
        "(local:///full/path) or run cryoshift in the config's folder",
    )


def _config_problem(exc: Exception) -> str:
    """One line for a config copick cannot load: pydantic's report (``ValidationError``, hundreds
    of characters over several lines) cut to the fields that are missing or wrong."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            found = errors()
        except Exception:  # any other error type: its own text below
            found = None
        if found:
            missing = sorted({".".join(map(str, e["loc"])) for e in found if e.get("type") == "missing"})
            wrong = sorted({str(e["loc"][0]) for e in found if e.get("type") != "missing" and e["loc"]})
            parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
                [f"invalid {', '.join(wrong)}"] if wrong else []
            )
            return f"not a copick config: {'; '.join(parts)}"
    text = " ".join(str(exc).split())
    return f"not a usable copick config ({type(exc).__name__}: {text[:200]})"


def _roots(root: Any) -> str:
    """The config's roots as written (``overlay_root ..., static_root ...``), for messages."""
    shown = [
        f"{key} {getattr(root.config, key)}"
        for key in ("overlay_root", "static_root")
        if getattr(root.config, key, None)
    ]
    return ", ".join(shown) or "no local roots"


def _local_path(url: str | None) -> Path | None:
    """The local folder of a root (``local:///a/b``, ``file:///a/b``, ``/a/b``, ``a/b``), or
    ``None`` for a remote one (``s3://``, ``ssh://`` ...)."""
    if not url:
        return None
    for scheme in ("local://", "file://"):
        if url.startswith(scheme):
            url = url[len(scheme) :]
    return None if "://" in url else Path(url)


def _relative_roots(root: Any) -> list[str]:
    """The config's roots that are relative local paths (``overlay_root local://proj/overlay``):
    copick reads them from the current folder, not the config's."""
    found = []
    for key in ("overlay_root", "static_root"):
        value = getattr(root.config, key, None)
        path = _local_path(value)
        if path is not None and not path.is_absolute():
            found.append(f"{key} {value}")
    return found


def tomogram_path(config: str, run: str, voxel_spacing: float, tomo_type: str) -> str:
    return f"{PREFIX}{config}#{quote(run, safe='')}@{voxel_spacing:g}/{quote(tomo_type, safe='')}"


def _parse_tomogram_path(path: str) -> tuple[str, str, float, str]:
    from urllib.parse import unquote

    config, _, rest = path[len(PREFIX) :].rpartition("#")
    run, _, rest = rest.rpartition("@")
    spacing, _, tomo_type = rest.partition("/")
    return config, unquote(run), float(spacing), unquote(tomo_type)


class CopickVolume:
    """A copick tomogram opened like an MRC volume (``data`` (Z, Y, X), sliced lazily)."""

    is_stack = False
    anisotropic = False
    voxel_size_known = True

    def __init__(self, path: str, data: Any, voxel_size: float):
        self.path, self.data, self.voxel_size = path, data, voxel_size
        self.header = {"shape": tuple(data.shape), "voxel_size": voxel_size, "is_stack": False}

    def __enter__(self) -> CopickVolume:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _find_tomogram(config: str, run_name: str, voxel_spacing: float, tomo_type: str) -> Any:
    run = open_root(config).get_run(run_name)
    if run is None:
        raise InputError(config, f"copick run {run_name!r} not found")
    vs = run.get_voxel_spacing(voxel_spacing)
    if vs is None:
        have = ", ".join(f"{v.voxel_size:g}" for v in run.voxel_spacings) or "none"
        raise InputError(config, f"run {run_name!r} has no voxel spacing {voxel_spacing:g} A (has: {have})")
    found = list(vs.get_tomograms(tomo_type))
    if not found:
        have = ", ".join(t.tomo_type for t in vs.tomograms) or "none"
        raise InputError(
            config, f"run {run_name!r} at {voxel_spacing:g} A has no {tomo_type!r} tomogram (has: {have})"
        )
    if len(found) > 1:
        # copick lists every tomogram of a type (a static and an overlay copy, several portal
        # depositions): the first was cropped, which may be another reconstruction than meant
        raise InputError(
            config,
            f"run {run_name!r} at {voxel_spacing:g} A has {len(found)} {tomo_type!r} tomograms; which "
            "one to crop is a guess: keep one of that type in the project (remove or rename the "
            "others' tomo_type) and pass it with --copick-tomo-type",
        )
    return found[0]


def open_volume(path: str) -> CopickVolume:
    """Open a tomogram item path (``copick:CONFIG#RUN@SPACING/TYPE``): level 0 of its OME-Zarr."""
    import zarr

    config, run, spacing, tomo_type = _parse_tomogram_path(path)
    tomo = _find_tomogram(config, run, spacing, tomo_type)
    try:
        data = zarr.open(tomo.zarr(), mode="r")["0"]
    except (KeyError, ValueError, OSError) as exc:
        raise InputError(path, f"cannot read the tomogram's zarr ({type(exc).__name__}: {exc})") from exc
    if len(data.shape) != 3:
        raise InputError(path, f"expected a 3-D tomogram, found shape {tuple(data.shape)}")
    return CopickVolume(path, data, spacing)


def plan(planner: Any, text: str) -> None:
    """Add the picks of a ``copick:`` input to ``planner`` (a sources.planner.Planner): one tomogram item
    per pick, ids ``RUN:x,y,z`` in voxels; a run whose tomogram is missing gives error items."""
    import numpy as np

    from cryoshift.runtime.sources import Item

    spec = parse_spec(text)
    root = open_root(spec.config)
    runs = list(root.runs)
    if not runs:
        hint = (
            ": a relative root is read from the current folder, not the config's; make it absolute"
            if _relative_roots(root)
            else ""
        )
        raise InputError(spec.config, f"the copick project has no runs ({_roots(root)}){hint}")
    if spec.runs:
        known = {r.name for r in runs}
        missing = [r for r in spec.runs if r not in known]
        if missing:
            raise InputError(text, f"copick runs not in the project: {', '.join(missing)}")
        runs = [r for r in runs if r.name in set(spec.runs)]
    n_picks, first_problem, n_ok = 0, None, 0
    for run in runs:
        sets = [p for p in run.picks if any(s.matches(p) for s in spec.picks)]
        if not sets:
            continue
        centres = [np.asarray(p.full_positions(), dtype=np.float64).reshape(-1, 3) for p in sets]
        xyz = np.concatenate(centres) / spec.voxel_spacing
        n_picks += len(xyz)
        path = tomogram_path(spec.config, run.name, spec.voxel_spacing, spec.tomo_type)
        try:
            vol = planner.cache.get(path)
        except InputError as exc:
            first_problem = first_problem or exc
            planner.items.extend(
                Item(f"{run.name}:{x:.1f},{y:.1f},{z:.1f}", "error", path, -1, x, y, z, run.name, exc.reason)
                for x, y, z in xyz.tolist()
            )
            continue
        planner.check_voxel(path, vol)
        n_ok += 1
        # The same point in two pick sets (two users) is one particle: one id, classified once.
        planner.items.extend(
            Item(f"{run.name}:{x:.1f},{y:.1f},{z:.1f}", "tomogram", path, -1, x, y, z, run.name)
            for x, y, z in xyz.tolist()
        )
    if not n_picks:
        raise InputError(spec.config, _no_picks(root, runs, spec.picks))
    if not n_ok and first_problem is not None:  # no run has the tomogram asked for: say why, once
        raise first_problem


def _no_picks(root: Any, runs: list[Any], selectors: tuple[PickSelector, ...]) -> str:
    """Why no pick set matched: an object the config lacks, or the pick sets the runs have
    (OBJECT:USER:SESSION, what ``--copick-picks`` takes)."""
    wanted = ", ".join(s.text() for s in selectors)
    where = f"in {len(runs)} run{'' if len(runs) == 1 else 's'}"
    objects = sorted(o.name for o in root.config.pickable_objects)
    unknown = sorted(
        {s.object for s in selectors if s.object != "*" and copick_name(s.object) not in objects}
    )
    if unknown:
        return (
            f"no copick picks match {wanted}: object {', '.join(unknown)} not in the config "
            f"(has: {', '.join(objects) or 'none'})"
        )
    have = sorted({f"{p.pickable_object_name}:{p.user_id}:{p.session_id}" for r in runs for p in r.picks})
    shown = ", ".join(have[:12]) + (f" and {len(have) - 12} more" if len(have) > 12 else "")
    return f"no copick picks match {wanted} {where} (pick sets there: {shown or 'none'})"


# ---------------------------------------------------------------------------------------------
# Writing predictions back


def default_session(model_sha256: str) -> str:
    """One session per model: rerunning a model replaces its predictions, another model adds a session."""
    digest = str(model_sha256).split(":")[-1]
    return f"cryoshift-{digest[:8]}" if digest else "cryoshift"


# Two points closer than this (in voxels) are one particle: ids and the CSV keep 0.1 voxel.
SAME_PARTICLE_VOXELS = 0.05


def _write_run(
    run: Any, group: Any, spacing: float, session: str, objects: set[str]
) -> tuple[int, int, dict]:
    """This job's predictions for one run into the session's pick sets. Points of the session at a
    position this job classified (``group``, every row including ``unknown``) are this job's to
    replace, whatever class they were; every other point of the session is another job's and kept.
    Returns (written, replaced, skipped classes)."""
    import numpy as np

    job = group[["x", "y", "z"]].to_numpy(dtype=np.float64) * spacing  # Angstrom
    tolerance = SAME_PARTICLE_VOXELS * spacing

    def kept(picks: Any) -> tuple[np.ndarray, np.ndarray]:
        pos = np.asarray(picks.full_positions(), dtype=np.float64).reshape(-1, 3)
        scores = np.asarray(picks.scores(), dtype=np.float64).reshape(-1)
        # sorted by x, each point checks only the few job points within the tolerance in x
        # (an all-pairs distance matrix is gigabytes for runs of tens of thousands of picks)
        order = np.argsort(job[:, 0])
        lo = np.searchsorted(job[order, 0], pos[:, 0] - tolerance, side="left")
        hi = np.searchsorted(job[order, 0], pos[:, 0] + tolerance, side="right")
        same = np.zeros(len(pos), dtype=bool)
        for i in np.nonzero(hi > lo)[0]:
            near = job[order[lo[i] : hi[i]]]
            same[i] = bool((np.abs(near - pos[i]).max(axis=1) <= tolerance).any())
        return pos[~same], scores[~same]

    new: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    skipped: dict[str, int] = {}
    for name, picks in group[group["class_index"] >= 0].groupby("class_name", sort=True):
        obj = copick_name(str(name))  # "unknown" rows (class_index < 0) are replaced, not placed
        if obj not in objects:
            skipped[str(name)] = skipped.get(str(name), 0) + len(picks)
            continue
        xyz = picks[["x", "y", "z"]].to_numpy(dtype=np.float64) * spacing
        new[obj] = (xyz, picks["confidence"].to_numpy(dtype=np.float64))
    written = replaced = 0
    for old in run.get_picks(user_id=USER, session_id=session):
        pos, scores = kept(old)
        replaced += len(old.points) - len(pos)
        add_pos, add_scores = new.pop(old.pickable_object_name, (np.zeros((0, 3)), np.zeros(0)))
        if len(pos) == len(old.points) and not len(add_pos):
            continue  # nothing of this job's in this set: left as it is
        _store(old, np.concatenate([pos, add_pos]), np.concatenate([scores, add_scores]), spacing)
        written += len(add_pos)
    for obj, (add_pos, add_scores) in new.items():
        _store(run.new_picks(obj, session, user_id=USER, exist_ok=True), add_pos, add_scores, spacing)
        written += len(add_pos)
    return written, replaced, skipped


def _store(target: Any, positions: Any, scores: Any, spacing: float) -> None:
    target.from_numpy(positions, scores=scores)
    target.meta.voxel_spacing = spacing
    # identity transforms: cryoshift predicts no orientation, so none is claimed
    target.meta.trust_orientation = False
    target.store()


# How long a write-back waits for another job writing the same run and session (its own write
# takes seconds): far longer means that job hangs, and this one stops with the lock's one line.
WRITER_WAIT_S = 600.0


@contextmanager
def _writer_lock(root: Any, run_name: str, session: str) -> Iterator[None]:
    """Hold the write-back lock of ``session`` in run ``run_name`` (waiting for another holder).

    Why: writing is read-modify-write of the session's pick files (points of other jobs are kept,
    this job's replaced); two classify jobs writing one session at once both read the files
    before either stored, and the later store dropped the other's points. The lock covers every
    object of the session in that run, since a rerun moves a particle's point between objects.
    It is a ``FolderLock`` file ``.cryoshift-copick-SESSION.lock`` in the run's overlay folder
    (copick reads only ``VoxelSpacing*`` and its own subfolders there), so it holds across
    processes (and hosts, where the shared file system supports ``flock``). A remote overlay
    (``s3://`` ...) cannot be locked: writers of one session there are not serialised."""
    overlay = _local_path(getattr(root.config, "overlay_root", None))
    if overlay is None:
        yield
        return
    folder = overlay / "ExperimentRuns" / run_name  # as copick reads it (no ``~`` expansion)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FolderLock(folder, f".cryoshift-copick-{session}.lock", "cryoshift copick write-back")
    deadline = time.monotonic() + WRITER_WAIT_S
    while True:
        try:
            lock.acquire()
            break
        except InputError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    try:
        yield
    finally:
        lock.release()


def write_predictions(csv_path: Path, inputs: list[str], session: str) -> list[str]:
    """Predicted picks of the copick inputs back into their projects (see the module docstring).
    Returns notes for the run summary. A project that cannot be written (overlay unwritable) is one
    line saying predictions.csv is complete and ``--resume`` retries the write (replacing by
    position makes the retry exact)."""
    from cryoshift.runtime.results import read_results

    configs = {parse_spec(t).config for t in inputs if is_copick(t)}
    if not configs:
        return []
    # before copick's own modules are imported below: a ModuleNotFoundError traceback otherwise
    require_copick("writing predictions into copick projects")
    stored = copick_name(session)
    shown_session = stored if stored == session else f"{stored} (copick's spelling of {session!r})"
    rows = read_results(csv_path)
    notes = []
    for config in sorted(configs):
        _ROOTS.pop(config, None)  # the project as it is now, not as planning listed it
        root = open_root(config)
        # picks belong to particle objects; a segmentation object (is_particle false) gets none
        particles = {o.name for o in root.config.pickable_objects if o.is_particle}
        others = {o.name for o in root.config.pickable_objects if not o.is_particle}
        mine = rows[rows["path"].astype(str).str.startswith(f"{PREFIX}{config}#")]
        if mine.empty:
            continue
        written, replaced, skipped = 0, 0, {}
        try:
            for path, group in mine.groupby("path", sort=True):
                _, run_name, spacing, _ = _parse_tomogram_path(str(path))
                with _writer_lock(root, run_name, stored):
                    run = root.get_run(run_name)
                    run.refresh_picks()  # the files as they are now: another job may just have written
                    done, gone, left = _write_run(run, group, spacing, stored, particles)
                written, replaced = written + done, replaced + gone
                for name, n in left.items():
                    skipped[name] = skipped.get(name, 0) + n
        except OSError as exc:
            raise InputError(
                config,
                f"could not write the predictions into the copick overlay_root "
                f"{getattr(root.config, 'overlay_root', None)} ({exc.strerror or exc}); "
                f"{csv_path.name} is complete: fix that and rerun the same command with --resume "
                "to write them",
            ) from exc
        note = f"copick: {written} picks written to {config} as user {USER}, session {shown_session}"
        if replaced:
            note += f" (replacing {replaced} earlier predictions of that session at the same picks)"
        notes.append(note)
        segmented = {k: v for k, v in skipped.items() if copick_name(k) in others}
        if segmented:
            listed = ", ".join(f"{k} ({v})" for k, v in sorted(segmented.items()))
            notes.append(
                f"copick: predictions not written under objects that are not particles "
                f"(is_particle false) in {config}: {listed}"
            )
        missing = {k: v for k, v in skipped.items() if k not in segmented}
        if missing:
            listed = ", ".join(f"{k} ({v})" for k, v in sorted(missing.items()))
            notes.append(f"copick: classes without a pickable object in {config}, not written: {listed}")
    return notes
