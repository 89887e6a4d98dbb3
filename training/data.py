"""Training data: labelled source (a dataset or the simulator on the fly) and unlabelled target.

The rule that makes this unsupervised domain adaptation lives here: target data is read
through :func:`load_target`, which reads a dataset with ``with_labels=False`` and never opens
a label column, unless the caller passes ``oracle_labels=True`` (only the oracle baseline,
behind the explicit ``--oracle-target-labels`` flag). Targets can be a dataset directory, a
directory/glob of MRC subtomograms or stacks, or picks (STAR/CSV) plus tomograms, read with
the runtime's planner so training and classification see the same voxels.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cryoshift.runtime.dataset import UNUSABLE, unusable_volumes
from cryoshift.runtime.errors import InputError

SKIPPED_ITEMS = "skipped_items.csv"  # in the run folder: every target item train left out, and why


class Skipped(str):
    """One skipped item as the run says it ("item: reason"), its two parts kept for
    :data:`SKIPPED_ITEMS`: an item id (a path, ``N@stack``, a pick) may itself hold ": ", so the
    line is not split back.

    Not one type with :class:`~cryoshift.training.simulate.structures.SkippedSource` (a source
    structure file and why, a dataclass): these are target items, used as their ``"item: reason"``
    string by the run's messages and its callers (compared, split, formatted), which a dataclass
    would change."""

    item: str
    reason: str

    def __new__(cls, item: str, reason: str) -> Skipped:
        line = super().__new__(cls, f"{item}: {reason}")
        line.item, line.reason = item, reason
        return line

    def __getnewargs__(self) -> tuple[str, str]:  # pickle and copy (spawned workers) rebuild it
        return self.item, self.reason


def skipped_table(skipped: list[str]) -> str:
    """:data:`SKIPPED_ITEMS`'s text: a CSV of ``item,reason``, one row per skipped item (a plain
    string, of no known parts, is all reason)."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["item", "reason"])
    for line in skipped:
        writer.writerow([line.item, line.reason] if isinstance(line, Skipped) else ["", line])
    return out.getvalue()


@dataclass
class Domain:
    """Volumes of one domain, in memory or memory-mapped, with what is known about them."""

    volumes: np.ndarray  # (N, D, D, D)
    labels: np.ndarray | None  # (N,) int indices into class_names, or None (unlabelled)
    class_names: list[str]
    box_size: int
    voxel_size: float
    contrast: str
    fingerprint: str
    description: str
    # "item: reason" for unreadable items (:class:`Skipped`), all written to SKIPPED_ITEMS by train
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # things used but not checked (unknown voxel size)
    # (N, g, g, g) clean particle densities for dense supervision (training/dense.py); simulated
    # volumes only, NaN rows for volumes that have none
    particles: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.volumes)

    def take(self, index: np.ndarray) -> np.ndarray:
        """float32 copy of the volumes at ``index`` (sorted reads are kinder to memory maps)."""
        index = np.asarray(index)
        order = np.argsort(index, kind="stable")
        out = np.empty((len(index), *self.volumes.shape[1:]), dtype=np.float32)
        out[order] = self.volumes[index[order]]
        return out

    def concat(self, other: Domain) -> Domain:
        """Both domains' volumes and labels in one (the first's description and provenance)."""
        labels = None
        if self.labels is not None and other.labels is not None:
            labels = np.concatenate([self.labels, other.labels])
        volumes = np.concatenate([np.asarray(v, np.float32) for v in (self.volumes, other.volumes)])
        particles = None
        if self.particles is not None or other.particles is not None:
            grid = (self.particles if self.particles is not None else other.particles).shape[1:]
            particles = np.concatenate([_particles_or_nan(d, grid) for d in (self, other)])
        return Domain(
            volumes,
            labels,
            self.class_names,
            self.box_size,
            self.voxel_size,
            self.contrast,
            self.fingerprint,
            f"{self.description} + {other.description}",
            particles=particles,
        )

    def subset(self, index: np.ndarray) -> Domain:
        labels = None if self.labels is None else self.labels[index]
        return Domain(
            self.take(index),
            labels,
            self.class_names,
            self.box_size,
            self.voxel_size,
            self.contrast,
            self.fingerprint,
            self.description,
            particles=None if self.particles is None else self.particles[index],
        )


def _particles_or_nan(domain: Domain, grid: tuple[int, ...]) -> np.ndarray:
    if domain.particles is not None:
        return domain.particles
    return np.full((len(domain), *grid), np.nan, dtype=np.float32)


def is_dataset(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "dataset.json").is_file()


def dataset_files(path: str | Path) -> list[str]:
    """The names of a dataset's files (volumes.mrc, particles.csv, dataset.json) found in folder
    ``path`` (a link to nothing counts: something is there under the name)."""
    import os

    from cryoshift.runtime.dataset import META, TABLE, VOLUMES

    return [name for name in (VOLUMES, TABLE, META) if os.path.lexists(Path(path) / name)]


def dataset_kind(found: list[str]) -> str:
    """What a folder holding the dataset files ``found`` (:func:`dataset_files`) holds, in words:
    without dataset.json it is an unfinished dataset, which no reader can use (simulate writes
    dataset.json last; train and simulate say it alike)."""
    from cryoshift.runtime.dataset import META

    if META in found:
        return "a dataset"
    return f"an unfinished dataset (no {META}: a simulate run that was stopped?)"


UNFINISHED = "an unfinished dataset (a simulate run that was stopped?)"


def refuse_unfinished_dataset(path: str | Path, option: str) -> None:
    """Refuse a folder given as ``option`` that holds a dataset's volumes or table but no
    dataset.json: it was taken for structures to simulate from ("not a dataset directory; to
    simulate from structures give --box"), which named neither the missing file nor the cause."""
    folder = Path(path)
    if not folder.is_dir():
        return
    found = dataset_files(folder)
    if not found or is_dataset(folder):
        return
    raise InputError(
        folder,
        f"holds {' and '.join(found)} but no dataset.json: {UNFINISHED}; {option} needs its "
        "dataset.json (the classes, box and voxel size): simulate the dataset again, or give a "
        "complete one",
    )


def dataset_fingerprint(path: Path) -> str:
    """Cheap identity of a dataset: hash of its description and the volume file's size/mtime."""
    h = hashlib.sha256()
    for name in ("dataset.json", "particles.csv"):
        p = path / name
        if p.is_file() and name == "dataset.json":
            h.update(p.read_bytes())
    vols = path / "volumes.mrc"
    if vols.is_file():
        h.update(str(vols.stat().st_size).encode())
    return "sha256:" + h.hexdigest()[:16]


def structures_fingerprint(structures: Any) -> str:
    """Identity of the structures a simulated source draws from: each class name with its origin,
    and for a map or model file its bytes (a built-in is its name and seed; the code makes it).

    Why: a simulated source's own fingerprint hashes the --source text, preset, box and voxel
    size, so a map file edited (or swapped under the same name) between a run's start and its
    --resume left it unchanged. Hashed files, not the resampled maps: resampling may differ in
    the last bits between machines, and a run resumed on another node must not be refused."""
    h = hashlib.sha256()
    for name, origin in zip(structures.names, structures.sources, strict=False):
        path = Path(origin)
        if origin.startswith("builtin:") or not path.is_file():
            h.update(f"{name}|{origin}|".encode())
            continue
        h.update(f"{name}|file|".encode())  # not its absolute path: the run may resume from elsewhere
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return "sha256:" + h.hexdigest()[:16]


def _labels_by_name(names: Any, class_names: list[str], path: Path) -> np.ndarray:
    index = {n: i for i, n in enumerate(class_names)}
    names = [str(n) for n in names]
    missing = sorted(set(names) - set(index))
    if missing:
        raise InputError(path, f"classes {missing} are not among the source classes {class_names}")
    return np.array([index[n] for n in names], dtype=np.int64)


def load_source_dataset(path: str | Path) -> Domain:
    """A labelled dataset directory as the source domain."""
    from cryoshift.runtime.dataset import read_dataset

    path = Path(path)
    ds = read_dataset(path, with_labels=True)
    class_names = [str(c) for c in ds.class_names]
    if not class_names:
        raise InputError(path, "the source dataset has no class names; is it labelled?")
    labels = np.asarray(ds.labels, dtype=np.int64)
    present = np.unique(labels)
    if len(class_names) >= 2 and len(present) < 2:  # names alone would let a one-class classifier train
        held = ", ".join(class_names[i] for i in present if 0 <= i < len(class_names)) or "none"
        raise InputError(
            path,
            f"the labels hold one class ({held}) of the {len(class_names)} named: a classifier needs "
            "volumes of at least two classes",
        )
    empty = [name for i, name in enumerate(class_names) if i not in set(present.tolist())]
    if empty:  # the model would have an output it never saw an example of, without a word
        shown = ", ".join(empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        raise InputError(
            path,
            f"class {shown} has no volumes among the {len(labels)} labelled ({len(empty)} of "
            f"{len(class_names)} named classes); simulate more volumes (--n) or drop the class",
        )
    volumes = ds.volumes
    bad = unusable_volumes(volumes)
    if len(bad):
        raise InputError(
            path / "volumes.mrc",
            f"{len(bad)} volumes hold {UNUSABLE} (first: index {bad[0]}); labelled source data must be clean",
        )
    return Domain(
        volumes,
        labels,
        class_names,
        int(volumes.shape[1]),
        float(ds.voxel_size),
        str(ds.contrast),
        dataset_fingerprint(path),
        f"dataset {path}",
    )


# Training settings that act on a simulated source only: each simulates from, or template-matches
# against, the source's structure maps, which a dataset source does not have; each also measures
# or labels the target, so none runs without one either. Per setting: its value when off, and how
# a note names it when it was on (None: part of the one above it).
SIMULATED_SOURCE_ONLY: tuple[tuple[str, Any, str | None], ...] = (
    ("spectrum_match", False, "spectrum matching (--spectrum-match)"),
    ("tilt_match", False, "tilt matching (--tilt-match)"),
    ("snr_match", False, "SNR matching (--snr-match)"),
    ("template_labels", 0, "template-matching labels (--template-labels {})"),
    ("template_rule", "margin", None),  # which template matches label the target: none are made
)


def dataset_source_settings(config: Any) -> tuple[dict[str, Any], str | None]:
    """For a training run whose source is a dataset folder: the settings of
    :data:`SIMULATED_SOURCE_ONLY` that were on, at the values that say what runs (off), and one
    note naming them and why they do not apply (None when none was on, or no --target is given:
    without one none of them runs for any source). ``({}, None)`` for a simulated source.

    Why: with a dataset source the trainer skips them without a word (they need the maps), while
    config.json recorded the defaults (``spectrum_match: true``, ``template_labels: 600``) as if
    they had run. The trainer replaces the config's values with these (config.json then records
    what ran) and says the note once, when the run starts."""
    if not is_dataset(config.source):
        return {}, None
    changes = _settings_on(config)
    named = [
        what.format(getattr(config, name))
        for name, _, what in SIMULATED_SOURCE_ONLY
        if what and name in changes
    ]
    if not named or getattr(config, "target", None) is None:
        return changes, None
    shown = named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]
    one = len(named) == 1
    note = (
        f"--source {config.source} is a dataset: {shown} {'does' if one else 'do'} not apply to it "
        f"({'it needs' if one else 'they need'} the structure maps of a simulated source, which a "
        f"dataset does not have); the run trains without {'it' if one else 'them'}, and config.json "
        f"records {'it' if one else 'them'} off"
    )
    return changes, note


def _settings_on(config: Any) -> dict[str, Any]:
    """The settings of :data:`SIMULATED_SOURCE_ONLY` that ``config`` has on, at their off values."""
    return {
        name: off for name, off, _ in SIMULATED_SOURCE_ONLY if getattr(config, name, off) not in (off, None)
    }


def no_target_settings(config: Any) -> dict[str, Any]:
    """For a training run without a target (``--target`` not given), of any source: the settings
    of :data:`SIMULATED_SOURCE_ONLY` that were on, at the values that say what runs (off), as
    :func:`dataset_source_settings` records them for a dataset source; ``{}`` with a target.

    Why: each measures or labels the target, so without one the trainer skips them, while
    config.json of a simulated-source run recorded the defaults (``template_labels: 600``,
    ``spectrum_match: true``) as if they had run. No note, as for a dataset source without a
    target: nothing target-aware runs without a target, for any source."""
    if getattr(config, "target", None) is not None:
        return {}
    return _settings_on(config)


def load_target(
    spec: str | Path,
    box_size: int,
    voxel_size: float,
    contrast: str,
    class_names: list[str],
    tomograms: list[str] | None = None,
    oracle_labels: bool = False,
    max_items: int | None = None,
) -> Domain:
    """Unlabelled target volumes (labels only when ``oracle_labels``: the oracle baseline).

    A box size that differs from the source's is refused: the network would see another
    physical scale and the exported model could not take both.
    """
    path = Path(spec)
    _refuse_unused_tomograms(str(spec), tomograms)
    if is_dataset(path):
        from cryoshift.runtime.dataset import read_dataset

        ds = read_dataset(path, with_labels=oracle_labels)
        volumes = ds.volumes
        bad = unusable_volumes(volumes)
        stack = path / "volumes.mrc"
        skipped: list[str] = [Skipped(f"{int(i) + 1:06d}@{stack}", f"holds {UNUSABLE}") for i in bad]
        if volumes.shape[1:] != (box_size,) * 3:
            shown = "x".join(str(s) for s in volumes.shape[1:])
            raise InputError(
                path,
                f"target boxes are {shown} but the source boxes are {box_size}^3; "
                "re-extract the target at the source box size",
            )
        _check_dataset_contrast(path, str(ds.contrast), contrast)
        _check_dataset_voxel(path, ds.voxel_size, voxel_size)
        labels = None
        if oracle_labels:
            names = [ds.class_names[i] for i in np.asarray(ds.labels, dtype=np.int64)]
            labels = _labels_by_name(names, class_names, path)
        if len(bad):  # batch work: bad volumes are reported and skipped (a copy, only in this case)
            if len(bad) == len(volumes):
                raise InputError(path, f"no usable target volumes ({skipped[0]})")
            keep = np.setdiff1d(np.arange(len(volumes)), bad)
            volumes = volumes[keep]
            labels = None if labels is None else labels[keep]
        if max_items is not None and len(volumes) > max_items:
            keep = np.sort(np.random.default_rng(0).choice(len(volumes), max_items, replace=False))
            volumes = volumes[keep]
            labels = None if labels is None else labels[keep]
        return Domain(
            volumes,
            labels,
            class_names,
            box_size,
            float(ds.voxel_size),
            str(ds.contrast),
            dataset_fingerprint(path),
            f"dataset {path}",
            skipped,
            _repeated_volume_note(str(spec), volumes),
        )
    if oracle_labels:
        raise InputError(path, "--oracle-target-labels needs a labelled target dataset directory")
    return _load_planned(str(spec), box_size, voxel_size, contrast, tomograms, max_items)


def _refuse_unused_tomograms(spec: str, tomograms: list[str] | None) -> None:
    """``--tomograms`` with a target that is no picks table (a dataset, a folder or glob of
    subtomograms, a copick project): only picks are cropped from tomograms, so the option was
    dropped without a word, and a run meant to adapt to picks in those tomograms adapted to
    whatever the target held instead."""
    if not tomograms:
        return
    from cryoshift.runtime.labelled_picks import PICK_SUFFIXES
    from cryoshift.runtime.sources.paths import expand

    path = Path(spec)
    if spec.startswith("copick:"):
        kind = "a copick project (the --copick-* options choose its tomograms)"
    elif is_dataset(path):
        kind = "a dataset directory"
    elif path.is_dir():
        kind = "a folder of subtomograms"
    elif any(p.suffix.lower() in PICK_SUFFIXES for p in expand(spec)):
        return  # a table (or a glob of tables); a missing one is said by the planner
    else:
        kind = "not a STAR/CSV table"
    raise InputError(
        spec,
        f"--tomograms only applies to a picks STAR/CSV target, and this target is {kind}; "
        "drop --tomograms or give the picks table as --target",
    )


def _check_dataset_contrast(path: Path, target: str, source: str) -> None:
    """A target dataset of the other contrast convention (protein bright where the source has it
    dark) is refused as one of another voxel size is: adapting to it would teach the model
    inverted densities, and the exported model states one contrast (all its volumes share
    dataset.json's, so none would be usable)."""
    if target != source:
        raise InputError(
            path / "dataset.json",
            f"target contrast is {target!r} but the source's is {source!r}; give data of one "
            f"convention (a simulated source: cryoshift simulate --contrast {target})",
        )


def _check_dataset_voxel(path: Path, voxel: float, voxel_size: float) -> None:
    """A target dataset at another scale than the source cannot adapt the model: refused (all its
    volumes share the one voxel size of the dataset, so none would be usable). ``voxel`` is the
    dataset's (dataset.json's, or its stack header's where dataset.json has none)."""
    from cryoshift.runtime.contract import VOXEL_TOLERANCE, voxel_mismatch

    if not voxel_size:
        return
    mismatch = voxel_mismatch(voxel, voxel_size)
    if mismatch is not None and mismatch > VOXEL_TOLERANCE:
        raise InputError(
            path / "dataset.json",
            f"target voxel size {voxel:.3g} A differs from the training voxel size {voxel_size:.3g} A "
            f"by {mismatch:.0%} (> {VOXEL_TOLERANCE:.0%}); rescale the target",
        )


TRAINING_RUN = "training run"  # what target items are checked against, as their refusals say


def _load_planned(
    spec: str,
    box_size: int,
    voxel_size: float,
    contrast: str,
    tomograms: list[str] | None,
    max_items: int | None,
) -> Domain:
    """MRC files/stacks or picks + tomograms via the runtime's planner; bad items are skipped."""
    from cryoshift.runtime.sources import VolumeCache, load_item, plan_inputs

    if contrast != "dark":  # the planner would say "pass --contrast", an option train does not have
        raise InputError(
            spec,
            f"MRC files and picks are read as reconstructed, protein dark, but the source is "
            f"{contrast!r}; train on a dark source (cryoshift simulate --contrast dark) or give the "
            "target as a dataset that records its contrast",
        )
    cache = VolumeCache()
    plan = plan_inputs(
        [spec],
        box_size,
        voxel_size,
        model_contrast=contrast,
        tomograms=tomograms,
        cache=cache,
        # train has no --ignore-voxel-size: a target of another scale would adapt to the wrong one
        voxel_advice="rescale the target to the training voxel size",
        # the planner's refusals named "the model's" box and voxel size: there is none yet, the
        # target is checked against the source's (the scale the run trains at)
        against=TRAINING_RUN,
    )
    items = plan.items
    if max_items is not None and len(items) > max_items:
        keep = np.sort(np.random.default_rng(0).choice(len(items), max_items, replace=False))
        items = [items[i] for i in keep]
    volumes = np.empty((len(items), box_size, box_size, box_size), dtype=np.float32)
    ok: list[int] = []
    skipped: list[str] = []
    for i, item in enumerate(items):
        try:
            # the training voxel size: a file of another scale is skipped like any bad item
            load_item(item, volumes[i], cache, voxel_size, against=TRAINING_RUN)
            ok.append(i)
        except InputError as exc:
            skipped.append(Skipped(item.id, exc.reason))
    if not ok:
        reason = "no readable target subtomograms" + (f" (first problem: {skipped[0]})" if skipped else "")
        raise InputError(spec, reason)
    h = hashlib.sha256(json.dumps([it.id for it in items]).encode()).hexdigest()[:16]
    used = {items[i].path for i in ok}  # the planner noted every file without a voxel size
    voxel = next(iter(plan.voxel_sizes.values()), voxel_size)
    return Domain(
        volumes[ok],
        None,
        [],
        box_size,
        float(voxel),
        plan.contrast,
        f"sha256:{h}",
        f"{len(ok)} subtomograms from {spec}",
        skipped,
        # the planner's other notes (an unreadable --tomograms folder, picks' shifts) were dropped
        [note for note in plan.notes if note not in plan.voxel_notes]
        + _unknown_voxel_note(sorted(used & set(plan.unknown_voxel)), voxel_size)
        + _repeated_volume_note(spec, volumes[ok]),
    )


REPEAT_CHECK = 256  # target volumes compared with the first for the repeated-volume note


def _repeated_volume_note(spec: str, volumes: np.ndarray) -> list[str]:
    """A note when every target volume (of up to REPEAT_CHECK, evenly spread) is the same one: a
    stack or picks table that repeats one entry trained, spectrum-matched and template-matched on
    one subtomogram as if on many, without a word."""
    n = len(volumes)
    if n < 2:
        return []
    rows = np.unique(np.linspace(0, n - 1, min(n, REPEAT_CHECK)).astype(np.int64))
    first = np.asarray(volumes[0])
    if not all(np.array_equal(np.asarray(volumes[i]), first) for i in rows[1:]):
        return []
    which = f"all {n}" if len(rows) == n else f"the {len(rows)} of {n} checked"
    return [
        f"{spec}: {which} target volumes are one and the same volume: the model adapts to that one "
        "subtomogram (a stack or picks table that repeats one entry?)"
    ]


def _unknown_voxel_note(paths: list[str], voxel_size: float) -> list[str]:
    """One note for all target files whose voxel size could not be checked (used as they are)."""
    if not paths:
        return []
    more = f" and {len(paths) - 1} more" if len(paths) > 1 else ""
    return [
        f"{paths[0]}{more}: no usable voxel size in the header; used as target data without checking "
        f"it against the training voxel size {voxel_size:.3g} A"
    ]


def split_validation(domain: Domain, fraction: float, seed: int) -> tuple[Domain, Domain]:
    """Seeded, stratified train/validation split of a labelled domain (every class in both)."""
    if not 0 <= fraction < 1:
        raise InputError(None, f"--val-fraction must be in [0, 1), not {fraction}")
    rng = np.random.default_rng(seed)
    train_idx, val_idx = [], []
    if domain.labels is None:
        raise ValueError("only a labelled domain can be split")
    for k in np.unique(domain.labels):
        idx = rng.permutation(np.flatnonzero(domain.labels == k))
        n_val = round(len(idx) * fraction)
        if fraction > 0 and len(idx) > 1:
            n_val = max(1, n_val)
        val_idx.append(idx[:n_val])
        train_idx.append(idx[n_val:])
    tr = np.sort(np.concatenate(train_idx))
    va = np.sort(np.concatenate(val_idx))
    return domain.subset(tr), domain.subset(va)


DEFAULT_VOXEL_SIZE = 10.0  # Angstrom, when simulating without --voxel-size


def structures_summary(record: dict[str, Any]) -> str | None:
    """train's closing line for a --source folder with skipped files (``7 of 8 structures used;
    skipped: g.mrc (voxel size missing ...)``), or None when every file was used."""
    skipped = record.get("skipped") or []
    if not skipped:
        return None
    used = len(record.get("used") or [])
    shown = [f"{Path(s['file']).name or '?'} ({s['reason']})" for s in skipped[:3]]
    more = f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""
    return (
        f"{used} of {used + len(skipped)} structures used; skipped: {'; '.join(shown)}{more} "
        "(selection.json source_structures)"
    )


class SimulatedSource:
    """Labelled source drawn from the simulator on the fly, fresh volumes every epoch.

    The simulator's generators (parameters on the CPU, noise on the device) are part of the
    resume state, so a resumed run draws exactly the volumes an uninterrupted one would have.
    """

    def __init__(
        self,
        structures: str,
        box_size: int,
        voxel_size: float | None,
        preset: str,
        seed: int,
        device: str = "cpu",
        loaded: Any = None,
    ):
        """``loaded``: the :class:`Structures` of another source of the same ``structures`` (the
        validation source of a run): not read, resampled and noted a second time."""
        from cryoshift.training.simulate.config import PRESETS
        from cryoshift.training.simulate.simulator import Simulator
        from cryoshift.training.simulate.structures import load_structures, split_sources

        if preset not in PRESETS:
            raise InputError(None, f"unknown --sim-preset {preset!r}; choose one of {', '.join(PRESETS)}")
        voxel = float(voxel_size) if voxel_size is not None else DEFAULT_VOXEL_SIZE
        sources = split_sources([str(structures)])
        self.structures = loaded if loaded is not None else load_structures(sources, box_size, voxel, seed=0)
        self.config = PRESETS[preset]
        self.simulator = Simulator(self.structures, self.config, device=device, seed=seed)
        sim = self.simulator
        self.generators = {"sim_params": sim.generator, "sim_noise": sim.noise_generator}
        self.class_names = [str(n) for n in self.simulator.class_names]
        self.box_size = int(box_size)
        self.voxel_size = voxel
        self.contrast = str(getattr(self.config, "contrast", "dark"))
        digest = hashlib.sha256(f"{structures}|{preset}|{box_size}|{voxel}".encode()).hexdigest()[:16]
        self.fingerprint = f"sha256:{digest}"
        self.description = f"simulated {structures!r} ({preset})"
        self.spectrum: Any = None  # a training.spectrum.SpectrumMatch once matched to a target
        # > 0: every draw also carries each particle's clean density on this grid (training/dense.py)
        self.particle_grid = 0

    def structures_record(self) -> dict[str, Any]:
        """What became of each structure file: the classes made (and from what) and the files of a
        folder that could not be read, with why.

        Why: load_structures skips an unreadable file inside a --source folder with one line on
        stderr among the resampling notes; the run then trained without that class and nothing in
        it said so (simulate records the same in dataset.json ``structures_skipped``). The trainer
        writes this to selection.json as ``source_structures`` and train's summary says it."""
        names = self.structures.names
        sources = self.structures.sources or [""] * len(names)  # Structures made without provenance
        return {
            "used": [{"class": name, "source": source} for name, source in zip(names, sources, strict=True)],
            "skipped": [skip.record() for skip in self.structures.skipped],
        }

    def match_spectrum(self, spectrum: Any) -> None:
        """Filter every volume drawn from now on with ``spectrum`` (target-aware simulation)."""
        self.spectrum = spectrum
        self.generators["spectrum"] = spectrum.generator

    def match_target(self, **ranges: tuple[float, float]) -> None:
        """Draw these simulation parameters (``tilt_max=(lo, hi)``, ``snr=...``) from the given
        ranges from now on (target-aware simulation)."""
        self.config = self.config.replace(**ranges)
        self.simulator.config = self.config

    def draw(self, n: int) -> Domain:
        """Simulate ``n`` labelled volumes with the source generators (and their clean particle
        densities, standardised, when ``particle_grid`` is set)."""
        import torch

        from cryoshift.training.dense import standardise
        from cryoshift.training.simulate.memory import sample_within_memory

        particles = None
        if self.particle_grid:
            g = self.particle_grid
            particles = torch.empty((n, g, g, g), device=self.simulator.device)
        # in batches that fit the memory; the spectrum filter makes ~3 copies of the volumes
        copies = 3 if self.spectrum is not None else 0
        volumes, labels = sample_within_memory(
            self.simulator, n, particles, copies, "--sim-per-epoch (or --sim-val)"
        )
        if self.spectrum is not None:
            volumes = self.spectrum.apply(volumes)
        return Domain(
            volumes,
            labels,
            self.class_names,
            self.box_size,
            self.voxel_size,
            self.contrast,
            self.fingerprint,
            self.description,
            particles=None if particles is None else standardise(particles.cpu().numpy()),
        )
