"""Accuracy benchmark: does a label-free trained model beat template matching on realistic targets?

The question a biologist asks (benchmarks.md, section 1): trained on the maps I already have plus
my unlabelled subtomograms, is cryoshift more accurate than template matching against the same
maps? Everything here is fixed a priori; no setting is chosen by looking at test accuracy.

- Classes: the six 10 A maps of ``target_sim.CLASSES`` (three hard pairs: 70S/80S ribosome,
  open/capped 20S proteasome, p97/ClpB), 32^3 boxes at 10 A.
- Targets: ``target_sim.TARGETS``, made by a tilt-series generator that shares no code with the
  project's simulator (per-tilt projection, CTF with defocus gradient, dose, MTF, shot noise,
  alignment jitter, weighted back-projection, neighbours, membranes, off-centre picks, a slightly
  wrong voxel size). Each data draw makes a fresh adaptation split (unlabelled for every method,
  labelled only for the oracle) and a disjoint labelled test split, used only for scoring.
- Source: what ``cryoshift train --source MAPS --box 32 --voxel-size 10`` simulates on the fly.
- Methods: template matching (wedge-aware constrained cross-correlation), source-only, AdaBN,
  DANN, MADA, warp, Cryo-Shift, the oracle, and ``default`` = ``cryoshift train`` with no option
  beyond source/target/box/voxel size (plus seed/threads/out). Source-only is trained once per
  draw and scored on every target; AdaBN is that model with BatchNorm re-estimated per target.
  ``--methods`` also takes any other registered method (a plugin: README, "Your own method or
  backbone"), trained by the baselines' recipe (:func:`train`).
- Spread: ``draws`` data draws, training seed = draw index; mean +- sample s.d. over draws.

Run (2 single-threaded shards share 2 busy cores better than one 2-thread process)::

    for i in 0 1; do python benchmarks/accuracy.py --profile cpu --work W --shard $i/2 --threads 1 &
    done; wait
    python benchmarks/accuracy.py --profile cpu --work W        # collects, writes results/accuracy_cpu.*

Every cached item of ``--work`` (a target's data, a trained run, a job's record) keeps the settings
that made it (``*.settings.json`` beside it; inside a record: ``_cache.py``); another profile, budget,
method default (the trainer's default epoch count included) or plugin version on the same ``--work``
is refused, naming what differs. A run whose table would drop cells of the results file it replaces
(a subset: ``--methods``, ``--targets``, ``--draw-ids``) is refused unless ``--merge`` or
``--replace`` is given; ``--out DIR`` writes elsewhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import domain_metrics as dm
import target_sim
from _cache import check_cached, method_settings, plain, read_settings, settings_differ, write_settings
from _cache import settings_file as settings_file  # re-exported: tests and older scripts use it
from _machine import cpu_model

if TYPE_CHECKING:
    from cryoshift.training.trainer import TrainConfig

RESULTS = Path(__file__).resolve().parent / "results"
BASELINES = ("source-only", "adabn", "dann", "mada", "warp", "cryoshift", "oracle")
ALL_METHODS = ("template_matching", *BASELINES, "default")


def known_methods() -> tuple[str, ...]:
    """What ``--methods`` takes: :data:`ALL_METHODS`, then every other registered method (the
    installed plugins), which :func:`train` trains like :data:`BASELINES`. Only these names were
    taken, so a method of one's own could not be benchmarked beside the baselines."""
    from cryoshift.training.adapt import METHODS

    return (*ALL_METHODS, *(m for m in METHODS.names() if m not in ALL_METHODS))


def unknown_methods(methods: tuple[str, ...]) -> str | None:
    """Why ``--methods`` refuses some of ``methods`` (they were left out without a word, and
    ``--collect`` then wrote an empty table), with the names it knows; None when it takes all."""
    known = known_methods()
    unknown = [m for m in methods if m not in known]
    if not unknown:
        return None
    return f"unknown method(s) {', '.join(unknown)}; known: {', '.join(known)}"


@dataclass(frozen=True)
class Profile:
    """Budgets of one benchmark run. ``baseline_*`` is the training budget of every baseline method;
    ``default`` always runs ``cryoshift train`` at its own defaults."""

    name: str
    draws: int = 3
    n_adapt: int = 600  # unlabelled target volumes given to training (labelled for the oracle only)
    n_test: int = 300  # held-out labelled target volumes, scoring only
    box: int = 32
    voxel_size: float = 10.0
    baseline_epochs: int = 10
    baseline_sim_per_epoch: int = 1024
    baseline_backbone: str = "cryonet"
    baseline_preset: str = "paper"  # the published methods on the paper's randomisation, as before
    tm_rotations: int = 1000
    tm_max_shift: int = 3
    threads: int = 2
    methods: tuple[str, ...] = ALL_METHODS
    targets: tuple[str, ...] = ()  # empty = every target of target_sim.TARGETS
    default_overrides: dict[str, Any] = field(default_factory=dict)  # only for smoke profiles


PROFILES: dict[str, Profile] = {
    "cpu": Profile("cpu"),
    # Paper scale on a device: more data, more draws, the same methods.
    "gpu": Profile(
        "gpu",
        draws=5,
        n_adapt=2000,
        n_test=1000,
        baseline_epochs=30,
        baseline_sim_per_epoch=4096,
        tm_rotations=4000,
        threads=8,
    ),
    # A few minutes: checks the harness end to end, measures nothing.
    "smoke": Profile(
        "smoke",
        draws=1,
        n_adapt=64,
        n_test=48,
        baseline_epochs=1,
        baseline_sim_per_epoch=64,
        baseline_backbone="cryonet-small",
        tm_rotations=50,
        methods=("template_matching", "source-only", "adabn", "oracle", "default"),
        default_overrides={"epochs": 2, "sim_per_epoch": 64},
    ),
}


def maps_source(target: str | None = None) -> str:
    """The user's maps, as ``cryoshift train --source`` takes them (comma-separated paths): the
    benchmark's six, or the held-out target's own (``target_sim.classes_of``)."""
    codes = target_sim.classes_of(target or "").values()
    return ",".join(str(target_sim.MAPS_10A / f"{code}.mrc") for code in codes)


def class_names(target: str | None = None) -> list[str]:
    """Class names as the trainer derives them from the map files (their stems)."""
    return list(target_sim.classes_of(target or "").values())


# --------------------------------------------------------------------------- data


def draw_seed(target: str, draw: int) -> int:
    return 1000 * (draw + 1) + sum(ord(c) for c in target)


def build_target(profile: Profile, target: str, draw: int, work: Path) -> tuple[Path, Path]:
    """Adaptation split (dataset dir) and test split (npz) of one target and draw; cached."""

    import fcntl

    out = work / "data" / f"{target}__d{draw}"
    adapt, test = out / "adapt", out / "test.npz"
    out.mkdir(parents=True, exist_ok=True)
    settings = data_settings(profile, target, draw)
    with open(out / ".lock", "w") as lock:  # shards share the cache: one of them makes the data
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (adapt / "dataset.json").is_file() and test.is_file():
            check_cached(out, settings, read_settings(out))
        else:
            write_settings(out, settings)
            _make_target(profile, target, draw, out)
    return adapt, test


def data_settings(profile: Profile, target: str, draw: int) -> dict[str, Any]:
    """What one target's data draw depends on: its physics, split sizes, box, voxel size and seed
    (and its classes, where it has its own)."""
    settings = {
        "target": target,
        "physics": dataclasses.asdict(target_sim.ALL_TARGETS[target]),
        "n_adapt": profile.n_adapt,
        "n_test": profile.n_test,
        "box": profile.box,
        "voxel_size": profile.voxel_size,
        "seed": draw_seed(target, draw),
    }
    if target in target_sim.TARGET_CLASSES:  # the six benchmark classes stay unkeyed: caches carry on
        settings["classes"] = target_sim.classes_of(target)
    return settings


def _make_target(profile: Profile, target: str, draw: int, out: Path) -> None:
    from cryoshift.runtime.dataset import write_dataset

    adapt, test = out / "adapt", out / "test.npz"
    if adapt.exists():  # a half-written split from a killed run
        import shutil

        shutil.rmtree(adapt)
    physics = target_sim.ALL_TARGETS[target]
    n = profile.n_adapt + profile.n_test
    volumes, labels, _ = target_sim.make_target(
        physics,
        n,
        seed=draw_seed(target, draw),
        box=profile.box,
        voxel_size=profile.voxel_size,
        classes=target_sim.classes_of(target),
    )
    names = class_names(target)
    out.mkdir(parents=True, exist_ok=True)
    write_dataset(
        adapt,
        volumes[: profile.n_adapt],
        labels[: profile.n_adapt],
        class_names=names,
        voxel_size=profile.voxel_size,
    )
    tmp = out / "test.tmp.npz"
    np.savez(tmp, volumes=volumes[profile.n_adapt :], labels=labels[profile.n_adapt :])
    tmp.replace(test)


def target_screen_parser(doc: str, log: str) -> argparse.ArgumentParser:
    """The arguments of the screens that score development targets: TARGET..., --draw, --threads,
    --work (data cache), --log (JSON lines)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("targets", nargs="+", choices=sorted(target_sim.ALL_TARGETS))
    ap.add_argument("--draw", type=int, default=9)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", type=Path, default=Path("screen_work"))
    ap.add_argument("--log", type=Path, default=Path(log))
    return ap


def labelled_adaptation(
    target: str, draw: int, work: Path, class_names: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """A target's adaptation split (cpu profile) and its labels as indices into ``class_names``;
    screens read them only to score, on development draws."""
    from cryoshift.runtime.dataset import read_dataset

    adapt, _ = build_target(PROFILES["cpu"], target, draw, work)
    ds = read_dataset(adapt, with_labels=True)
    truth = np.array([class_names.index(str(ds.class_names[i])) for i in ds.labels])
    return np.array(ds.volumes, dtype=np.float32), truth


def log_record(record: dict[str, Any], path: Path | None) -> None:
    """Print one screen record and append it as a JSON line to ``path`` (the screens' raw records;
    None: print only)."""
    print(json.dumps(record), flush=True)
    if path is not None:
        with path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")


def run_test_split(run: Path) -> Path:
    """The held-out labelled split of the target a training run adapted to: ``test.npz`` beside
    the adaptation split its config names (accuracy.py and accuracy_screen.py runs). ``run`` may
    be a checkpoint file inside the run directory too (``checkpoints/epoch_0040.pt``)."""
    folder = next(d for d in (run, *run.parents) if (d / "config.json").is_file())
    return Path(json.loads((folder / "config.json").read_text())["target"]).parent / "test.npz"


def load_test(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as z:
        return z["volumes"], z["labels"]


# --------------------------------------------------------------------------- methods


def default_settings() -> dict[str, Any]:
    """The settings ``cryoshift train`` uses when given only --source/--target/--box/--voxel-size."""
    from cryoshift.training.trainer import TrainConfig, default_epochs

    cfg = TrainConfig(source="MAPS", out="RUN", target="TARGET", box=32, voxel_size=10.0).to_dict()
    if cfg["epochs"] is None:  # the machine's default budget, as the trainer resolves it on this CPU
        cfg["epochs"] = default_epochs("cpu", cfg["amp"])
    for key in ("source", "out", "target", "box", "voxel_size", "tomograms", "progress", "threads"):
        cfg.pop(key, None)
    return cfg


def default_config(
    profile: Profile,
    run_dir: Path,
    target_dir: Path,
    seed: int,
    threads: int | None,
    target: str | None = None,
    **overrides: Any,
) -> TrainConfig:
    """What ``cryoshift train --source MAPS --target TARGET --box --voxel-size`` runs for a benchmark
    target, plus ``overrides`` (TrainConfig fields): the one place the benchmark and its screens
    build the default recipe, so a screen's baseline is the benchmark's."""
    from cryoshift.training.trainer import TrainConfig

    cfg = TrainConfig(
        source=maps_source(target),
        out=str(run_dir),
        target=str(target_dir),
        box=profile.box,
        voxel_size=profile.voxel_size,
        seed=seed,
        threads=threads,
        progress=False,
    )
    return dataclasses.replace(cfg, **overrides)


def train_config(
    profile: Profile,
    method: str,
    draw: int,
    target_dir: Path | None,
    run_dir: Path,
    target: str | None = None,
) -> TrainConfig:
    """The training config of one method's job (:func:`train`); ``target`` names its classes."""
    from cryoshift.training.trainer import TrainConfig

    if method in ("default", "oracle"):
        # The oracle is the ceiling of the default recipe: the same simulation, spectrum matching and
        # budget, with the adaptation split's true labels in place of template-matching pseudo-labels.
        assert target_dir is not None
        cfg = default_config(
            profile, run_dir, target_dir, draw, profile.threads, target, **profile.default_overrides
        )
        if method == "oracle":
            cfg = dataclasses.replace(cfg, method="oracle", template_labels=0, oracle_target_labels=True)
    else:
        cfg = TrainConfig(
            source=maps_source(target),
            out=str(run_dir),
            target=None if target_dir is None else str(target_dir),
            method=method,
            backbone=profile.baseline_backbone,
            epochs=profile.baseline_epochs,
            sim_per_epoch=profile.baseline_sim_per_epoch,
            sim_preset=profile.baseline_preset,
            spectrum_match=False,
            template_labels=0,
            box=profile.box,
            voxel_size=profile.voxel_size,
            seed=draw,
            threads=profile.threads,
            progress=False,
        )
    return cfg


# TrainConfig fields whose None the trainer resolves when a run starts (config.json records the value
# used). They were keyed as None, so a change of the default epoch count reused the old runs.
RESOLVED_AT_START = ("epochs", "dense_weight")


def resolved_defaults(cfg: TrainConfig) -> dict[str, Any]:
    """The values the trainer gives the :data:`RESOLVED_AT_START` fields that ``cfg`` leaves None,
    resolved as it does in this process: epochs by the precision its device trains in (60 in
    bf16/fp16, 20 in fp32), the dense-supervision weight by the backbone and source."""
    from cryoshift.training.distributed import resolve_device
    from cryoshift.training.trainer import default_dense_weight, default_epochs

    out: dict[str, Any] = {}
    if cfg.epochs is None:
        out["epochs"] = default_epochs(resolve_device(cfg.device), cfg.amp)
    if cfg.dense_weight is None:
        out["dense_weight"] = default_dense_weight(cfg)
    return out


def with_values_used(cached: dict[str, Any] | None, run_dir: Path) -> dict[str, Any] | None:
    """``cached`` (a trained run's settings) with the :data:`RESOLVED_AT_START` fields that it
    recorded as None (before they were keyed resolved) read from what the run used, its config.json:
    such runs are checked, not refused for the None alone."""
    config = run_dir / "config.json"
    if cached is None or not config.is_file():
        return cached
    unresolved = [key for key in RESOLVED_AT_START if key in cached and cached[key] is None]
    if not unresolved:
        return cached
    used = json.loads(config.read_text())
    return cached | {key: used.get(key) for key in unresolved}


def run_settings(cfg: TrainConfig) -> dict[str, Any]:
    """What a trained run depends on: its whole config but where files lie and how many threads
    ran it (shards run single-threaded, the collecting run not), with the defaults the trainer
    resolves at start (:func:`resolved_defaults`) and the method's merged hyper-parameters and
    origin (:func:`method_settings`)."""
    settings = cfg.to_dict() | resolved_defaults(cfg)
    for key in ("out", "source", "target", "threads", "progress"):
        settings.pop(key, None)
    return settings | method_settings(cfg.method, cfg.method_kwargs)


def train(cfg: TrainConfig) -> Path:
    """Train one job's config (:func:`train_config`) with the project's trainer; returns model.pt.
    A finished or killed run in its folder is reused or resumed only when made with the same
    settings (:func:`check_cached`)."""
    from cryoshift.training.trainer import train as run_train

    run_dir = Path(cfg.out)
    settings = run_settings(cfg)
    resumable = (run_dir / "checkpoints" / "resume.pt").is_file() and (run_dir / "config.json").is_file()
    if (run_dir / "model.pt").is_file() or resumable:
        check_cached(run_dir, settings, with_values_used(read_settings(run_dir), run_dir))
    if (run_dir / "model.pt").is_file():
        return run_dir / "model.pt"
    if resumable:
        # a killed run: continue from its last finished epoch (bit-identical in fp32)
        return run_train(cfg, resume=True).model_path
    if run_dir.exists():  # killed before its first epoch ended: start again from scratch
        import shutil

        shutil.rmtree(run_dir)
    write_settings(run_dir, settings)
    return run_train(cfg).model_path


def predict(
    model: Path, volumes: np.ndarray, bn_target: np.ndarray | None = None, test_views: int | None = None
) -> np.ndarray:
    """Predicted classes; with ``bn_target`` BatchNorm is first re-estimated on it (AdaBN);
    ``test_views`` overrides the poses the model averages (default: as trained)."""
    return predict_logits(model, volumes, bn_target, test_views).argmax(1)


def predict_logits(
    model: Path, volumes: np.ndarray, bn_target: np.ndarray | None = None, test_views: int | None = None
) -> np.ndarray:
    """Class logits (n, classes) of :func:`predict`, for screens that combine models."""
    import torch

    from cryoshift.training.adapt import create_method
    from cryoshift.training.checkpoint import load_checkpoint
    from cryoshift.training.forward import forward_numpy
    from cryoshift.training.normalise import normalise

    net, meta, _ = load_checkpoint(model)
    if test_views is not None:
        net.test_views = test_views
    if bn_target is not None:
        method = create_method(
            "adabn", backbone=net, num_classes=len(meta.class_names), box_size=meta.box_size
        )
        batches = (
            normalise(
                torch.from_numpy(np.ascontiguousarray(bn_target[s : s + 64])).unsqueeze(1), meta.normalisation
            )
            for s in range(0, len(bn_target), 64)
        )
        method.finalize(batches)
        net = method.backbone
    logits, _ = forward_numpy(net, volumes, meta.normalisation, "cpu", 64)
    return logits


def template_matching(profile: Profile, target: str, test: Path) -> dict[str, Any]:
    from cryoshift.training import template_matching as tm

    volumes, _ = load_test(test)
    maps, _ = target_sim.load_maps(
        target_sim.classes_of(target), box=profile.box, voxel_size=profile.voxel_size
    )
    physics = target_sim.ALL_TARGETS[target]
    res = tm.template_match(
        volumes,
        maps,
        tilt_max=physics.tilt_max,
        n_rotations=profile.tm_rotations,
        max_shift=profile.tm_max_shift,
        voxel_size=profile.voxel_size,
        threads=profile.threads,
    )
    return {
        "pred": np.asarray(res.predictions).tolist(),
        "seconds": float(res.seconds),
        "rate": float(res.rate),
    }


# --------------------------------------------------------------------------- jobs


def jobs(profile: Profile) -> list[tuple[str, str, int]]:
    """(target, method, draw); source-only runs once per draw (target "*")."""
    targets = profile.targets or tuple(target_sim.TARGETS)
    out: list[tuple[str, str, int]] = []
    for draw in range(profile.draws):
        if "source-only" in profile.methods or "adabn" in profile.methods:
            out.append(("*", "source-only", draw))
        for target in targets:
            out += [(target, m, draw) for m in profile.methods if m not in ("source-only", "adabn")]
    return out


def record_path(work: Path, target: str, method: str, draw: int) -> Path:
    return work / "records" / f"{target.replace('*', 'all')}__{method}__d{draw}.json"


def job_settings(profile: Profile, work: Path, target: str, method: str, draw: int) -> dict[str, Any]:
    """What one job's record depends on: its target's data and the template-matching budget or the
    trained run's settings."""
    settings: dict[str, Any] = {} if target == "*" else {"data": data_settings(profile, target, draw)}
    if method == "template_matching":
        return settings | {"tm_rotations": profile.tm_rotations, "tm_max_shift": profile.tm_max_shift}
    key = record_path(work, target, method, draw).stem
    target_dir = None if method == "source-only" else work / "data" / f"{target}__d{draw}" / "adapt"
    return settings | {
        "train": run_settings(train_config(profile, method, draw, target_dir, work / "runs" / key, target))
    }


def run_job(profile: Profile, work: Path, target: str, method: str, draw: int) -> dict[str, Any]:
    done = record_path(work, target, method, draw)
    key = done.stem
    settings = job_settings(profile, work, target, method, draw)
    if done.is_file():
        cached = json.loads(done.read_text())
        then = cached.get("settings")
        if then is not None and "train" in then:  # a record of a run: None defaults as the run used them
            then = then | {"train": with_values_used(then["train"], work / "runs" / key)}
        check_cached(done, settings, then)
        return cached
    t0 = time.perf_counter()
    record: dict[str, Any] = {"target": target, "method": method, "draw": draw, "settings": plain(settings)}
    if method == "template_matching":
        _, test = build_target(profile, target, draw, work)
        record.update(template_matching(profile, target, test))
    elif method == "source-only":
        model = train(train_config(profile, method, draw, None, work / "runs" / key))
        record["model"] = str(model)
    else:
        adapt, _ = build_target(profile, target, draw, work)
        model = train(train_config(profile, method, draw, adapt, work / "runs" / key, target))
        record["model"] = str(model)
    record["seconds"] = round(time.perf_counter() - t0, 1)
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(record))
    return record


def score(profile: Profile, work: Path, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (target, method, draw) with accuracy and macro-F1 on the test split."""
    from cryoshift.runtime.dataset import read_dataset

    rows = []
    targets = profile.targets or tuple(target_sim.TARGETS)
    # every network is scored as `cryoshift export` deploys the default: with its test-time views
    # (checkpoints trained before views existed included), so methods differ only in training
    views = default_settings()["test_views"]
    for target in targets:
        for draw in range(profile.draws):
            if not any(r["draw"] == draw and r["target"] == target for r in records):
                continue  # --collect: this target's draw has no finished job yet
            adapt, test = build_target(profile, target, draw, work)
            volumes, labels = load_test(test)
            k = len(target_sim.classes_of(target))
            for rec in records:
                if rec["draw"] != draw or rec["target"] not in (target, "*"):
                    continue
                variants = [rec["method"]]
                if rec["method"] == "source-only":
                    variants = [m for m in ("source-only", "adabn") if m in profile.methods]
                for method in variants:
                    if method == "template_matching":
                        pred = np.asarray(rec["pred"])
                    elif method == "adabn":
                        with read_dataset(adapt) as ds:
                            bn = np.array(ds.volumes, dtype=np.float32)
                        pred = predict(Path(rec["model"]), volumes, bn_target=bn, test_views=views)
                    else:
                        pred = predict(Path(rec["model"]), volumes, test_views=views)
                    row = {
                        "target": target,
                        "method": method,
                        "draw": draw,
                        "accuracy": dm.accuracy(labels, pred),
                        "macro_f1": dm.macro_f1(labels, pred, k),
                        "confusion": dm.confusion(labels, pred, k).tolist(),
                        "seconds": rec["seconds"],
                    }
                    if method == "template_matching":
                        row["rate"] = rec["rate"]
                    rows.append(row)
    return rows


def read_extra_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of ``--extra-rows``: the accuracy of a model trained by the same recipe on a reported
    draw's split by another script (accuracy_screen.py), whose run folder is gone (no confusion)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for row in rows:
        missing = {"target", "method", "draw", "accuracy", "seconds"} - set(row)
        if missing:
            raise SystemExit(f"{path}: a row lacks {', '.join(sorted(missing))}: {row}")
    return rows


def results_path(out: Path, profile: Profile) -> Path:
    """The results file (JSON; the table is its ``.md``) of ``profile`` in the results folder ``out``."""
    return out / f"accuracy_{profile.name}.json"


def cells(rows: list[dict[str, Any]]) -> set[tuple[str, str, int]]:
    """The (target, method, draw) cells that ``rows`` hold."""
    return {(r["target"], r["method"], r["draw"]) for r in rows}


def replace_refusal(
    path: Path, new_cells: set[tuple[Any, ...]], keep: str, rows_key: str = "rows", index: str = "draw"
) -> str | None:
    """Why a table of ``new_cells`` must not replace the results file ``path`` (a subset run, as the
    README shows one, silently overwrote the published table): the (target, method, ``index``) cells
    of its ``rows_key`` rows that it would drop. None when it drops none, or there is no file.
    ``keep`` names the option that would keep them (``--merge``), if the script has one."""
    if not path.is_file():
        return None
    rows = json.loads(path.read_text()).get(rows_key, [])
    lost = sorted({(r["target"], r["method"], r[index]) for r in rows} - new_cells, key=str)
    if not lost:
        return None
    shown = ", ".join("/".join(map(str, c)) for c in lost[:3]) + (", ..." if len(lost) > 3 else "")
    return (
        f"{path} holds {len(lost)} (target, method, {index}) cell(s) that this run lacks ({shown}): "
        f"give {keep}--replace to drop them, or --out DIR to write elsewhere"
    )


# The profile settings that make rows of two runs one table; --merge refuses a file made with others.
MERGE_FIELDS = (
    "n_adapt",
    "n_test",
    "box",
    "voxel_size",
    "baseline_epochs",
    "baseline_sim_per_epoch",
    "baseline_backbone",
    "baseline_preset",
    "tm_rotations",
    "tm_max_shift",
    "default_overrides",
)


def merged_rows(profile: Profile, rows: list[dict[str, Any]], out: Path = RESULTS) -> list[dict[str, Any]]:
    """``rows`` plus the on-record rows of ``<out>/accuracy_<profile>.json`` that they do not rescore."""
    path = results_path(out, profile)
    if not path.is_file():
        return rows
    scored = {(r["target"], r["method"], r["draw"]) for r in rows}
    record = json.loads(path.read_text())
    fields = [f for f in MERGE_FIELDS if f in record.get("profile", {})]  # older files: the fields they have
    then = {f: record["profile"][f] for f in fields}
    diff = settings_differ(then, {f: getattr(profile, f) for f in fields})
    if diff:
        raise SystemExit(f"--merge: {path} was scored with other settings ({diff}); give --out DIR instead")
    on_record = record["rows"]
    kept = [r for r in on_record if (r["target"], r["method"], r["draw"]) not in scored]
    order = list(target_sim.ALL_TARGETS)
    return sorted(kept + rows, key=lambda r: (order.index(r["target"]), r["draw"]))


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """{"targets": {T: {method: {mean, sd, n, values, macro_f1, gap_closed}}}} over draws."""
    out: dict[str, Any] = {}
    for target in dict.fromkeys(r["target"] for r in rows):
        per: dict[str, Any] = {}
        by_method: dict[str, dict[int, dict[str, Any]]] = {}
        for r in rows:
            if r["target"] == target:
                by_method.setdefault(r["method"], {})[r["draw"]] = r
        for method, draws in by_method.items():
            accs = [draws[d]["accuracy"] for d in sorted(draws)]
            entry = dm._mean_sd(accs)
            # rows of a screen of the same protocol (--extra-rows) may hold the accuracy alone
            f1 = [draws[d]["macro_f1"] for d in sorted(draws) if draws[d].get("macro_f1") is not None]
            entry["macro_f1"] = dm._mean_sd(f1)["mean"] if f1 else None
            gaps = []
            for d in sorted(draws):
                so = by_method.get("source-only", {}).get(d)
                orc = by_method.get("oracle", {}).get(d)
                if so and orc:
                    gaps.append(dm.gap_closed(draws[d]["accuracy"], so["accuracy"], orc["accuracy"]))
            entry["gap_closed"] = dm._mean_sd(gaps)["mean"] if gaps else None
            if method == "template_matching":
                entry["rate_per_s"] = float(np.median([draws[d]["rate"] for d in draws]))
            else:
                entry["train_minutes"] = round(float(np.mean([draws[d]["seconds"] for d in draws])) / 60, 1)
            per[method] = entry
        out[target] = per
    return out


def write_results(
    profile: Profile, summary: dict[str, Any], rows: list[dict[str, Any]], wall: float, out: Path = RESULTS
) -> Path:
    """Write ``<out>/accuracy_<profile>.json`` and its ``.md`` table."""
    import platform

    import torch

    result = {
        "benchmark": "accuracy",
        "profile": dataclasses.asdict(profile),
        "classes": target_sim.CLASSES,
        "targets": summary,
        "target_physics": {t: dataclasses.asdict(target_sim.ALL_TARGETS[t]) for t in summary},
        "default": default_settings(),
        "rows": [
            {k: v for k, v in r.items() if k != "confusion"} | {"confusion": r.get("confusion")} for r in rows
        ],
        "machine": {"cpu": cpu_model(), "python": platform.python_version(), "torch": torch.__version__},
        "wall_minutes": round(wall / 60, 1),
    }
    out.mkdir(parents=True, exist_ok=True)
    path = results_path(out, profile)
    path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    path.with_suffix(".md").write_text(markdown(profile, summary))
    return path


def markdown(profile: Profile, summary: dict[str, Any]) -> str:
    present = {m for per in summary.values() for m in per}
    methods = [m for m in ALL_METHODS if m in present] + sorted(present - set(ALL_METHODS))  # plugins last
    lines = [
        f"# Accuracy benchmark, profile `{profile.name}`",
        "",
        f"Target accuracy % (mean ± s.d. over data draws x seeds, n = draws per cell; test split of "
        f"{profile.n_test} per draw; chance {100 / len(target_sim.CLASSES):.1f} %). Generated by "
        f"`benchmarks/accuracy.py --profile {profile.name}`.",
        "",
        "| method | " + " | ".join(summary) + " |",
        "|---|" + "---|" * len(summary),
    ]
    for m in methods:
        cells = []
        for per in summary.values():
            e = per.get(m)
            if not e or e["mean"] is None:
                cells.append("-")
                continue
            gap = f", gap {100 * e['gap_closed']:.0f} %" if e.get("gap_closed") is not None else ""
            cells.append(f"{100 * e['mean']:.1f} ± {100 * e['sd']:.1f} (n={e['n']}){gap}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    rates = [per["template_matching"]["rate_per_s"] for per in summary.values() if "template_matching" in per]
    if rates:
        lines += [
            "",
            f"Template matching speed: {np.median(rates):.2f} subtomograms/s (median, "
            f"{profile.threads} thread{'s' if profile.threads != 1 else ''} per job, "
            f"{profile.tm_rotations} rotations, shifts ±{profile.tm_max_shift}).",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="cpu", choices=sorted(PROFILES))
    ap.add_argument("--work", type=Path, required=True, help="cache of data, runs and per-job records")
    ap.add_argument("--shard", default="0/1", help="i/n: run only every n-th job (fill the cache)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument(
        "--methods",
        default=None,
        help="comma-separated subset of " + ",".join(ALL_METHODS) + ", or any other registered method "
        "(an installed plugin, trained like the baselines)",
    )
    ap.add_argument(
        "--targets", default=None, help="comma-separated targets of target_sim.ALL_TARGETS (default: TARGETS)"
    )
    ap.add_argument("--draws", type=int, default=None)
    ap.add_argument("--draw-ids", default=None, help="comma-separated draw indices to run (1,2 adds draws)")
    ap.add_argument(
        "--merge",
        action="store_true",
        help="keep the rows of the results file on record for every (target, method, draw) not scored now "
        "(adds draws to a table whose earlier work dir is gone)",
    )
    ap.add_argument(
        "--replace",
        action="store_true",
        help="let this run's table replace a results file holding (target, method, draw) cells it lacks "
        "(refused otherwise: a subset run overwrote the published table)",
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=RESULTS,
        help="results folder for accuracy_<profile>.json/.md (default: benchmarks/results, the published "
        "tables)",
    )
    ap.add_argument(
        "--extra-rows",
        type=Path,
        default=None,
        help="JSON lines of rows scored by a screen of the same protocol (accuracy_screen.py on a "
        "reported draw: target, method, draw, accuracy, seconds, source): they count as scored now",
    )
    ap.add_argument(
        "--collect",
        action="store_true",
        help="only score the jobs already finished in --work "
        "(the table then says how many draws each cell has)",
    )
    args = ap.parse_args(argv)
    profile = PROFILES[args.profile]
    changes: dict[str, Any] = {}
    if args.threads:
        changes["threads"] = args.threads
    if args.methods:
        changes["methods"] = tuple(m.strip() for m in args.methods.split(",") if m.strip())
        if not changes["methods"]:
            ap.error(f"--methods {args.methods!r} names no method")
        refusal = unknown_methods(changes["methods"])
        if refusal:
            ap.error(refusal)
    if args.targets:
        changes["targets"] = tuple(t.strip() for t in args.targets.split(",") if t.strip())
        if not changes["targets"]:  # () means every target
            ap.error(f"--targets {args.targets!r} names no target")
        unknown = [t for t in changes["targets"] if t not in target_sim.ALL_TARGETS]
        if unknown:
            ap.error(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(target_sim.ALL_TARGETS)}")
        own = [t for t in changes["targets"] if t in target_sim.TARGET_CLASSES]
        shared = {"source-only", "adabn"} & set(changes.get("methods", profile.methods))
        if own and shared:  # source-only trains once per draw on the six benchmark classes
            ap.error(f"{', '.join(sorted(shared))} cannot score {', '.join(own)} (its own classes)")
    if args.draws:
        changes["draws"] = args.draws
    profile = dataclasses.replace(profile, **changes)
    import torch

    torch.set_num_threads(profile.threads)
    i, n = (int(v) for v in args.shard.split("/"))
    draw_ids = None if args.draw_ids is None else {int(v) for v in args.draw_ids.split(",")}
    keep = "" if args.merge or args.replace or n > 1 else "--merge to keep them, "
    if keep:  # refuse before hours of work; the cells scored are checked again before writing
        targets = profile.targets or tuple(target_sim.TARGETS)
        draws = [d for d in range(profile.draws) if draw_ids is None or d in draw_ids]
        planned = {(t, m, d) for t in targets for m in profile.methods for d in draws}
        refusal = replace_refusal(results_path(args.out, profile), planned, keep)
        if refusal:
            ap.error(refusal)
    t0 = time.perf_counter()
    records = []
    for j, (target, method, draw) in enumerate(jobs(profile)):
        if j % n != i or (draw_ids is not None and draw not in draw_ids):
            continue
        if args.collect and not record_path(args.work, target, method, draw).is_file():
            continue
        rec = run_job(profile, args.work, target, method, draw)
        records.append(rec)
        print(
            f"[{time.perf_counter() - t0:7.0f}s] {target} {method} d{draw}: {rec['seconds']:.0f}s", flush=True
        )
    if n > 1:
        return 0
    rows = score(profile, args.work, records)
    if args.extra_rows:
        rows += read_extra_rows(args.extra_rows)
    if args.merge:
        rows = merged_rows(profile, rows, args.out)
    refusal = replace_refusal(results_path(args.out, profile), cells(rows), keep) if keep else None
    if refusal:
        raise SystemExit(f"not written: {refusal} (the scored jobs stay in {args.work})")
    summary = summarise(rows)
    path = write_results(profile, summary, rows, time.perf_counter() - t0, args.out)
    print(path.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
