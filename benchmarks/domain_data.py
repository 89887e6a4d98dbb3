"""Data and training plumbing of the domain-shift benchmark.

Builds the fixed data of one profile (source train + source test, and per target an
unlabelled adaptation split plus a held-out labelled test split), trains one method on it
with the project's trainer, and predicts with a checkpoint. Data are cached in the work
directory, so re-running the benchmark re-uses them, each split only under the settings that made
it (``_cache``). Every method of a profile sees exactly the same files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from _cache import content_digest, reuse_or_record
from domains import SOURCE, TARGETS, Profile, structure_paths

if TYPE_CHECKING:
    from cryoshift.training.trainer import TrainConfig


@dataclass
class Split:
    """Volumes in memory with labels kept aside for scoring."""

    path: Path
    volumes: np.ndarray  # (N, D, D, D) raw float32
    labels: np.ndarray  # (N,) class indices in the benchmark's class order


@dataclass
class TargetData:
    name: str
    spec: dict[str, Any]
    adapt: Path  # dataset directory the trainer sees (its labels are never read, oracle excepted)
    test: Split  # held-out, labels for scoring only


@dataclass
class BenchData:
    class_names: list[str]
    structures: dict[str, str]
    source_spec: dict[str, Any]
    source_train: Path
    source_val: Split  # held-out labelled source (source accuracy, embeddings)
    targets: dict[str, TargetData] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def load_split(path: Path, class_names: list[str]) -> Split:
    """Read a labelled dataset into memory, labels mapped onto the benchmark's class order."""
    from cryoshift.runtime.dataset import read_dataset
    from cryoshift.runtime.errors import InputError

    with read_dataset(path, with_labels=True) as ds:
        index = {n: i for i, n in enumerate(class_names)}
        names = [ds.class_names[i] for i in np.asarray(ds.labels)]
        unknown = sorted(set(names) - set(index))
        if unknown:
            raise InputError(path, f"classes {unknown} are not benchmark classes {class_names}")
        labels = np.array([index[n] for n in names], dtype=np.int64)
        volumes = np.array(ds.volumes, dtype=np.float32)
    return Split(path, volumes, labels)


def _structures(profile: Profile, voxel_size: float) -> Any:
    """Structures on the profile's grid at ``voxel_size`` with readable class names."""
    from cryoshift.training.simulate.structures import load_structures

    if profile.structures == "builtin":
        structs = load_structures(["builtin"], box_size=profile.box_size, voxel_size=voxel_size)
        return structs, {n: f"builtin:{n}" for n in structs.names}
    paths = structure_paths(extra=profile.structures == "maps10A+")
    structs = load_structures(
        [str(p) for p in paths.values()], box_size=profile.box_size, voxel_size=voxel_size
    )
    structs.names = list(paths)  # "4v4r" -> "ribosome70S": same order as given
    return structs, {cls: p.stem for cls, p in paths.items()}


def split_settings(profile: Profile, spec: dict[str, Any], n: int, seed: int) -> dict[str, Any]:
    """What one simulated split depends on: the domain, its size and seed, and the profile's grid and
    structures. The seed of a target follows its place in ``--targets``, so the same target of
    another ``--targets`` list is other data."""
    return {
        "spec": spec,
        "n": n,
        "seed": seed,
        "structures": profile.structures,
        "box_size": profile.box_size,
        "voxel_size": profile.voxel_size,
    }


def simulate_split(profile: Profile, spec: dict[str, Any], n: int, seed: int, out: Path) -> Path:
    """Simulate ``n`` labelled volumes of one domain into a dataset directory (cached, and reused
    only under the same :func:`split_settings`: it was reused by name alone, so a split of another
    seed or size passed for this one)."""
    if reuse_or_record(out, split_settings(profile, spec, n, seed), (out / "dataset.json").is_file()):
        return out
    from cryoshift.training.demo import simulate_to_dataset
    from cryoshift.training.simulate.config import SimulationConfig

    spec = dict(spec)
    voxel = profile.voxel_size * float(spec.pop("voxel_scale", 1.0))
    structs, _ = _structures(profile, voxel)
    out = simulate_to_dataset(structs, SimulationConfig.from_dict(spec), n, out, seed)
    if voxel != profile.voxel_size:
        _claim_voxel_size(out, profile.voxel_size)
    return out


def _claim_voxel_size(dataset: Path, claimed: float) -> None:
    """Make a dataset simulated at another voxel size claim ``claimed`` (dataset.json and the
    stack header): the ``optics`` domain's particles are at 1.25x the source's voxel size while its
    files say the source's, the unnoticed scale error it stands for (as target_sim's
    ``voxel_scale``). Recording the true size made the trainer refuse the target as another scale,
    and the benchmark stopped with a traceback."""
    import json

    import mrcfile

    meta_path = dataset / "dataset.json"
    meta = json.loads(meta_path.read_text())
    meta["voxel_size"] = claimed
    with mrcfile.open(dataset / "volumes.mrc", mode="r+") as mrc:
        mrc.voxel_size = claimed
    meta_path.write_text(json.dumps(meta, indent=2))


def build_data(
    profile: Profile,
    work: Path,
    targets: list[str],
    user_targets: list[Path],
    tomograms: list[Path] | None = None,
) -> BenchData:
    """Simulate (or re-use) every split the profile needs."""
    work.mkdir(parents=True, exist_ok=True)
    source = {**SOURCE, **profile.source_overrides}
    src = simulate_split(profile, source, profile.n_source, 1, work / "source_train")
    src_val = simulate_split(profile, source, profile.n_source_val, 2, work / "source_test")
    from cryoshift.runtime.dataset import read_dataset

    with read_dataset(src) as ds:
        class_names = list(ds.class_names)
    _, provenance = (
        _structures(profile, profile.voxel_size)
        if profile.structures == "builtin"
        else (None, {cls: p.stem for cls, p in structure_paths(profile.structures == "maps10A+").items()})
    )
    data = BenchData(class_names, provenance, source, src, load_split(src_val, class_names))
    for i, name in enumerate(targets):
        spec = TARGETS[name]
        adapt = simulate_split(profile, spec, profile.n_target, 10 + 2 * i, work / f"target_{name}_adapt")
        test = simulate_split(profile, spec, profile.n_target_test, 11 + 2 * i, work / f"target_{name}_test")
        data.targets[name] = TargetData(name, dict(spec), adapt, load_split(test, class_names))
    for path in user_targets:
        name = f"user_{path.stem or path.name}"
        adapt, test = split_user_target(path, class_names, work / name, profile.box_size, tomograms)
        data.targets[name] = TargetData(name, {"dataset": str(path)}, adapt, load_split(test, class_names))
    (work / "data.json").write_text(json.dumps({"class_names": class_names, "targets": list(data.targets)}))
    return data


def split_user_target(
    path: Path,
    class_names: list[str],
    out: Path,
    box_size: int,
    tomograms: list[Path] | None = None,
    seed: int = 0,
) -> tuple[Path, Path]:
    """A user's labelled experimental set -> half for (unlabelled) adaptation, half held out for scoring.

    Accepts a labelled dataset directory, or a picks table (STAR/CSV) with a class column
    plus the tomograms it names (see :func:`picks_to_dataset`).
    """
    from cryoshift.runtime.dataset import is_dataset, read_dataset, write_dataset
    from cryoshift.runtime.errors import InputError

    adapt, test = out / "adapt", out / "test"
    if not path.exists():
        raise InputError(path, "no such labelled dataset folder or picks file")
    settings = user_split_settings(path, class_names, box_size, tomograms, seed)
    made = (adapt / "dataset.json").is_file() and (test / "dataset.json").is_file()
    if reuse_or_record(out, settings, made):
        return adapt, test
    if not is_dataset(path):
        path = picks_to_dataset(path, class_names, out / "full", box_size, tomograms or [])
    with read_dataset(path, with_labels=True) as ds:
        missing = sorted(set(ds.class_names) - set(class_names))
        if missing:
            raise InputError(path, f"classes {missing} are not among the benchmark's classes {class_names}")
        if ds.box_size != box_size:
            raise InputError(path, f"boxes are {ds.box_size}^3, the profile's are {box_size}^3")
        order = np.random.default_rng(seed).permutation(len(ds))
        half = len(order) // 2
        if half < 2:
            raise InputError(path, f"only {len(ds)} labelled volumes; need at least 4 to split")
        for part, idx in ((adapt, np.sort(order[:half])), (test, np.sort(order[half:]))):
            write_dataset(
                part,
                np.asarray(ds.volumes[idx], dtype=np.float32),
                ds.labels[idx],
                class_names=list(ds.class_names),
                voxel_size=ds.voxel_size,
                contrast=ds.contrast,
                meta={"generator": f"domain_shift split of {path}"},
            )
    return adapt, test


def user_split_settings(
    path: Path, class_names: list[str], box_size: int, tomograms: list[Path] | None, seed: int
) -> dict[str, Any]:
    """What the split of a user's labelled set depends on: the set itself (path and content, and the
    tomograms a picks table is cropped from), the classes, box and seed. It was reused by folder
    name alone, so another ``--target-dataset`` of the same name reused the first one's split."""
    from cryoshift.runtime.dataset import is_dataset

    picks = not is_dataset(path)
    return {
        "dataset": str(path.resolve()),
        "dataset_content": content_digest(path),
        "tomograms": {str(t.resolve()): content_digest(t) for t in tomograms or []} if picks else {},
        "class_names": class_names,
        "box_size": box_size,
        "seed": seed,
    }


CLASS_COLUMNS = ("rlnClassName", "class_name", "class", "label")


def picks_to_dataset(
    picks: Path, class_names: list[str], out: Path, box_size: int, tomograms: list[Path]
) -> Path:
    """Crop labelled picks (class column: rlnClassName / class_name / class / label) into a dataset.

    Tomograms are matched to the picks' tomogram names by file stem (one tomogram needs no name).
    """
    from cryoshift.runtime.crop import crop_box
    from cryoshift.runtime.dataset import write_dataset
    from cryoshift.runtime.errors import InputError
    from cryoshift.runtime.mrc import open_volume
    from cryoshift.runtime.picks import read_picks

    table = read_picks(picks)
    column = next((c for c in CLASS_COLUMNS if c in table.columns), None)
    if column is None:
        raise InputError(picks, f"no class column; expected one of {', '.join(CLASS_COLUMNS)}")
    if not tomograms:
        raise InputError(picks, "picks need the tomograms they were picked in (--tomograms)")
    by_stem = {Path(t).stem: Path(t) for t in tomograms}
    names = [str(c) for c in table[column]]
    unknown = sorted(set(names) - set(class_names))
    if unknown:
        raise InputError(picks, f"classes {unknown} are not among the benchmark's classes {class_names}")
    volumes = np.zeros((len(table), box_size, box_size, box_size), dtype=np.float32)
    opened: dict[Path, Any] = {}
    voxel = None
    for i, row in enumerate(table.itertuples(index=False)):
        only = next(iter(by_stem.values())) if len(by_stem) == 1 else None
        tomo = by_stem.get(str(row.tomo_name)) or only
        if tomo is None:
            raise InputError(picks, f"row {i}: no tomogram named {row.tomo_name!r} among --tomograms")
        if tomo not in opened:
            opened[tomo] = open_volume(tomo)
        voxel = opened[tomo].voxel_size
        crop_box(opened[tomo], (row.x, row.y, row.z), box_size, out=volumes[i], path=str(tomo))
    for vol in opened.values():
        vol.close()
    labels = np.array([class_names.index(n) for n in names], dtype=np.int64)
    return write_dataset(
        out,
        volumes,
        labels,
        class_names=class_names,
        voxel_size=voxel or 1.0,
        meta={"generator": f"domain_shift crop of {picks}"},
    )


def train_config(
    profile: Profile, method: str, data: BenchData, target: str, seed: int, run_dir: Path
) -> TrainConfig:
    """The training config of one (target, method, seed) job with the profile's budget: the one
    place that builds it, so the run cache is keyed by what :func:`train_method` trains with
    (domain_shift.run_settings), every default of TrainConfig included."""
    from cryoshift.training.trainer import TrainConfig

    return TrainConfig(
        source=str(data.source_train),
        target=str(data.targets[target].adapt),
        out=str(run_dir),
        method=method,
        backbone=profile.backbone,
        epochs=profile.epochs,
        batch_size=profile.batch_size,
        lr=profile.lr,
        seed=seed,
        device="auto",
        threads=profile.threads,
        progress=False,
        oracle_target_labels=method == "oracle",
        method_kwargs=dict(profile.method_hparams.get(method, {})),
    )


def train_method(
    profile: Profile, method: str, data: BenchData, target: str, seed: int, run_dir: Path
) -> Path:
    """Train ``method`` with the profile's budget (:func:`train_config`); a finished run directory
    is re-used."""
    from cryoshift.training.checkpoint import RUN_MODEL
    from cryoshift.training.trainer import train

    if (run_dir / RUN_MODEL).is_file():
        return run_dir
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)  # unfinished (killed) run: start it again from scratch
    train(train_config(profile, method, data, target, seed, run_dir))
    return run_dir


def predict(model: Path, volumes: np.ndarray) -> Any:
    """Predicted class indices (``.pred``) and pooled features of a checkpoint (evaluate's torch path)."""
    from cryoshift.training.evaluate import predict as _predict

    out = _predict(model, volumes, batch_size=128)
    out.pred = out.logits.argmax(axis=1)
    return out
