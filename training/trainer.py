"""The trainer: one loop for every adaptation method, on CPU, one GPU or several (DDP).

The trainer touches a model only through the method API (``losses``, ``param_groups``,
``finalize``) and the backbone contract (``forward_features``/``forward_head``). Per epoch it
trains, makes the deployable model (a copy of the method with ``finalize`` applied, which
for AdaBN re-estimates BatchNorm on the target), scores it without target labels, and saves
a weights-only checkpoint plus a resume state. At the end it picks an epoch label-free
(select.py), calibrates it on held-out source data (calibrate.py) and writes ``model.pt``.

Python API (used by the benchmarks)::

    from cryoshift.training.trainer import TrainConfig, train
    result = train(TrainConfig(source="data/sim", target="data/exp", method="cryoshift",
                               epochs=10, out="runs/a"))
    result.model_path, result.selected_epoch, result.history
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import math
import os
import random
import time
import types
import typing
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cryoshift.runtime.contract import CONTRASTS
from cryoshift.runtime.errors import InputError, check_out_folder, not_a_file
from cryoshift.runtime.hostmem import capped_threads, check_threads
from cryoshift.runtime.jsonfile import read_json_object
from cryoshift.runtime.metadata import NORMALISATIONS, ModelMetadata
from cryoshift.runtime.outfiles import write_text
from cryoshift.training import augment, calibrate, distributed, log, run
from cryoshift.training.backbones import one_pose
from cryoshift.training.checkpoint import (
    RUN_MODEL,
    load_checkpoint,
    load_weights,
    read_checkpoint,
    save_checkpoint,
)
from cryoshift.training.data import (
    SKIPPED_ITEMS,
    Domain,
    SimulatedSource,
    dataset_files,
    dataset_kind,
    dataset_source_settings,
    is_dataset,
    load_source_dataset,
    load_target,
    no_target_settings,
    refuse_unfinished_dataset,
    skipped_table,
    structures_fingerprint,
)
from cryoshift.training.forward import forward_numpy
from cryoshift.training.normalise import normalise
from cryoshift.training.precision import autocast, cpu_has_native_bf16
from cryoshift.training.select import (
    SMALL_TARGET,
    class_shares,
    select_epoch,
    small_target_warning,
    target_scores,
    training_warnings,
)

MAX_TARGET_EVAL = 2000  # target volumes scored per epoch for label-free selection
SKIPPED_SHOWN = 10  # skipped target items named on the terminal; all are in data.SKIPPED_ITEMS
LR_SCHEDULES = ("cosine", "constant")
LR_FLOOR = 0.05  # the cosine schedule's last learning rate, as a share of --lr


def lr_factor(schedule: str, progress: float) -> float:
    """Share of the base learning rate at ``progress`` (0 = first step, 1 = end of training).

    Why cosine: with noisy simulated volumes and pseudo-labels, a constant rate keeps the weights
    wandering between epochs (the per-epoch target accuracy swings by 5-10 points), so the
    label-free selection picks among noisy models; a decaying rate settles them.
    """
    if schedule == "constant":
        return 1.0
    return LR_FLOOR + (1.0 - LR_FLOOR) * 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def _required(f: dataclasses.Field) -> bool:
    """Whether a dataclass field has no default (a config without it cannot be built)."""
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value has the type a TrainConfig field declares (str, int, float, bool,
    None, list[str], dict[str, Any] and their unions): booleans are not numbers, ints are floats."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_fits(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    return True  # a type this check does not know: the constructor and check() decide


def _type_name(hint: Any) -> str:
    """A TrainConfig field's type as an error says it: ``int or None``, ``a list of str``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    if hint is type(None):
        return "None"
    if origin is list:
        return f"a list of {_type_name(typing.get_args(hint)[0])}"
    if origin is dict:
        return "a dict with str keys"
    return getattr(hint, "__name__", str(hint))


# The TrainConfig fields that name files or folders: a pathlib.Path given from Python is their str
_PATH_FIELDS = ("source", "out", "target")


def _whose(written_by: str | None) -> str:
    """Why a config may hold keys this cryoshift does not know: a newer one wrote it (upgrade), or
    some other version did (a key since renamed or removed) or a hand edit."""
    from cryoshift.runtime import __version__

    if written_by is not None and run.is_newer_version(written_by, __version__):
        return f"(written by cryoshift {written_by}, this is {__version__}: upgrade cryoshift)"
    return "(written by another cryoshift version?)"


# Backbone keywords the trainer sets itself: from the data (a --backbone-opt value was overridden
# without a word) or from their own option (a --backbone-opt test_views silently beat --test-views).
_BACKBONE_KEYS_SET_BY_TRAIN = {
    "num_classes": "it comes from the source's classes",
    "box_size": "it comes from the source's box size",
    "test_views": "use --test-views",
}


def _check_method_kwargs(method: str, kwargs: dict[str, Any]) -> None:
    """Refuse ``--hparam`` values of the wrong kind before any data is read.

    A hyper-parameter's kind is its default's in ``method`` itself (adapt/base.kind_problems):
    not in a dictionary merged over every registered method, where a plugin's key of another kind
    changed what a built-in method accepted. Keys the method does not take, and the method's own
    rules on the values (``hparam_problems``), are checked next, by :func:`check_method_hparams`;
    an unknown method is left to the registry, which names the methods.
    """
    from cryoshift.training.adapt import METHODS
    from cryoshift.training.adapt.base import kind_problems, methods_taking

    if not kwargs:
        return
    try:
        factory = METHODS.get(method)
    except ValueError:  # refused by name when the run starts, with the list of methods
        return
    defaults = dict(factory.defaults())  # type: ignore[attr-defined]
    # another method's key is refused next, by name; a value of the wrong kind for every method
    # that takes it is said first, as it always was (methods that disagree on its kind: not)
    for key in [key for key in kwargs if key not in defaults]:
        theirs = [METHODS.get(name).defaults()[key] for name in methods_taking(key)]  # type: ignore[attr-defined]
        if theirs and len({type(value) for value in theirs}) == 1:
            defaults[key] = theirs[0]
    problems = kind_problems(defaults, kwargs)
    if problems:
        quoted = [  # "mode=1" reads as a number: a string that looks like one needs JSON quotes
            f"--hparam '{key}=\"{value}\"'"
            for key, value in kwargs.items()
            if isinstance(defaults.get(key), str) and isinstance(value, (int, float))
        ]
        hint = f" (a string that reads as a number is quoted: {', '.join(quoted)})" if quoted else ""
        raise InputError(None, "; ".join(f"--hparam {problem}" for problem in problems) + hint)


def check_method_hparams(method: str, kwargs: dict[str, Any]) -> None:
    """Refuse ``--hparam`` keys ``method`` does not take, and values its rules refuse, before any
    data is read.

    The method refuses both too when it is built (adapt/base.check_hparams and the constructor's
    call of ``hparam_problems``), but only after the source and the target were read (and
    template-matched), minutes in; here the refusal says ``--hparam``, the methods that take the
    key (if any) and the keys ``method`` takes, or the method's own words on the value
    (``--hparam teacher_decay=1.5``). Runs after ``TrainConfig.check`` (a value of the wrong kind
    is said first); an unknown method is left to the registry, which names the methods."""
    from cryoshift.training.adapt import METHODS
    from cryoshift.training.adapt.base import hparam_refusal

    try:
        factory = METHODS.get(method)
    except ValueError:  # an unknown method is refused by name later, with the list of methods
        return
    defaults = factory.defaults()  # type: ignore[attr-defined]
    own = sorted(defaults)
    refused = [key for key in kwargs if key not in own]
    if refused:
        raise InputError(None, hparam_refusal(method, refused, own, prefix="--hparam "))
    merged = {key: default if kwargs.get(key) is None else kwargs[key] for key, default in defaults.items()}
    problems = factory.hparam_problems(merged)  # type: ignore[attr-defined]
    if problems:
        raise InputError(None, "; ".join(f"--hparam {problem}" for problem in problems))


def _check_backbone_kwargs(backbone: str, kwargs: dict[str, Any]) -> None:
    """Refuse ``--backbone-opt`` keys the trainer sets itself (see _BACKBONE_KEYS_SET_BY_TRAIN),
    keys the backbone does not take, and values of another type (or range) than its default's."""
    from cryoshift.training.backbones import check_backbone_kwarg_names, check_backbone_kwarg_types

    for key, why in _BACKBONE_KEYS_SET_BY_TRAIN.items():
        if key in kwargs:
            raise InputError(None, f"--backbone-opt {key} cannot be set: {why}")
    check_backbone_kwarg_names(backbone, kwargs)
    check_backbone_kwarg_types(backbone, kwargs)


@dataclass
class TrainConfig:
    """Everything that decides a training run; saved as config.json and in every checkpoint."""

    source: str  # labelled dataset directory, or structures to simulate ("builtin", map/model paths)
    out: str  # run directory
    target: str | None = None  # dataset dir | MRC file/dir/glob | picks STAR/CSV (with tomograms)
    # The defaults are the recipe measured best without target labels (benchmarks/results/accuracy_*.md):
    # self-training on a broadly randomised simulation matched to the target's spectrum, plus
    # template-matching pseudo-labels, on a backbone whose head keeps where features sit in the box.
    # runtime/commands/train.py repeats them as CLI defaults (tested).
    method: str = "selftrain"
    backbone: str = "cryonet-deep-centred"
    # eval-mode forwards (and the exported model) average the 4 wedge-preserving poses of each
    # volume: +2 points on average when adopted, 0-0.7 with today's default, for 4x the inference cost
    test_views: int = 4
    # None: the default budget for this machine, default_epochs() (60 where training runs in bf16/fp16,
    # 20 in fp32), so the default run fits an hour on 2 CPU cores; config.json records the number used
    epochs: int | None = None
    batch_size: int = 32
    lr: float = 1e-3
    # cosine: the learning rate falls from lr to LR_FLOOR x lr over the run (per step); constant: lr
    lr_schedule: str = "cosine"
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    val_fraction: float = 0.1
    normalisation: str = "zscore"
    # simulated source (when ``source`` is not a dataset directory)
    box: int | None = None
    voxel_size: float | None = None
    # run.SIMULATION_ONLY: config.json records them null for a dataset source (none is simulated);
    # None given with a simulated source means the default here
    sim_preset: str | None = "broad"
    # 3x the earlier 2048: bf16 made it affordable, +2 points on both dev targets
    sim_per_epoch: int | None = 6144
    sim_val: int | None = 256
    # target-aware simulation: simulated volumes get the target's average power spectrum (spectrum.py)
    spectrum_match: bool = True
    # target-aware simulation: tilt ranges drawn around the target's, estimated from its spectrum
    # (spectrum.tilt_match_range), instead of the preset's whole range
    tilt_match: bool = False
    # target-aware simulation: SNR drawn around the level at which simulated volumes are as hard to
    # tell apart by template matching as the target's (snr_match.py); needs template_labels
    snr_match: bool = False
    # target subtomograms labelled by template matching against the source maps (pseudo_labels.py);
    # 0 = off. Only when the source is simulated from structures (the maps are needed).
    template_labels: int = 600
    template_keep: float = 0.6  # share of each class's matches kept as labels, by score margin
    # which matches label the target (pseudo_labels.TEMPLATE_RULES): "margin" keeps template_keep of
    # each class by score margin throughout; "agree" does so until self-training starts, then keeps
    # the matches whose class the network trained so far predicts too (agreement_labels); "agree-only"
    # trains on no target labels before that
    template_rule: str = "margin"
    # labelled target volumes (pseudo-labels, the oracle's labels) are shown in wedge-preserving
    # views: 180-degree rotations and 1-voxel shifts (augment.py)
    target_views: bool = True
    # dense supervision (training/dense.py): weight of a second loss in which an intermediate feature
    # map predicts each simulated particle's clean density; 0 = off. None: dense.DEFAULT_WEIGHT where
    # it applies (simulated source, cryonet family), else off; config.json records the weight used
    dense_weight: float | None = None
    # target
    tomograms: list[str] = field(default_factory=list)
    max_target: int | None = None
    oracle_target_labels: bool = False  # only the oracle baseline may read target labels
    # model / method
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    method_kwargs: dict[str, Any] = field(default_factory=dict)
    # selection / calibration
    selection_tolerance: float = 0.05
    selection_criterion: str = "im"  # im | snd | entropy (see select.py)
    unknown_quantile: float = calibrate.UNKNOWN_QUANTILE
    # execution
    amp: bool = True  # mixed precision: fp16/bf16 on CUDA, bf16 on CPUs with native bf16 (AMX)
    eval_batch_size: int = 64
    threads: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        """Take what a config built in Python may hold for what it stands for: a ``pathlib.Path``
        (any ``os.PathLike``) as its str (config.json records str, and ``source`` is split on ','),
        a numpy scalar as the Python number or bool it holds (a checkpoint, loaded weights-only,
        refuses numpy objects: ``epochs=np.int64(2)`` trained, then failed reading epoch 1's
        checkpoint), tomograms given as a tuple as a list. Types are checked by :meth:`check`."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.generic):
                setattr(self, f.name, value.item())
            elif f.name in _PATH_FIELDS and isinstance(value, os.PathLike):
                setattr(self, f.name, os.fspath(value))
        if isinstance(self.tomograms, (list, tuple)):
            self.tomograms = [os.fspath(t) if isinstance(t, os.PathLike) else t for t in self.tomograms]

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data: what config.json and every checkpoint store."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], path: str | Path | None = None, written_by: str | None = None
    ) -> TrainConfig:
        """The config in ``data`` (a config.json, a checkpoint's copy); ``path`` names it in errors.

        A damaged or foreign file must be one error line, not a TypeError from the constructor
        or a wrong-typed setting that fails epochs later. ``written_by``: the cryoshift version
        that wrote it, where known (a run's versions.json): keys this version does not know, from
        a newer one, then say to upgrade."""
        if not isinstance(data, dict):
            raise InputError(path, f"not a training config (a JSON {type(data).__name__}, not an object)")
        fields = dataclasses.fields(cls)
        unknown = sorted(set(data) - {f.name for f in fields})
        if unknown:
            raise InputError(path, f"unknown training config keys: {', '.join(unknown)} {_whose(written_by)}")
        missing = [f.name for f in fields if f.name not in data and _required(f)]
        if missing:
            raise InputError(path, f"not a training config (missing {', '.join(missing)})")
        hints = typing.get_type_hints(cls)
        wrong = [f"{k}={v!r}" for k, v in data.items() if not _fits(v, hints[k])]
        if wrong:
            raise InputError(path, f"not a training config (wrong type: {', '.join(wrong)[:200]})")
        return cls(**data)

    def check(self) -> None:
        """Refuse impossible settings before any data is read."""
        self._check_types()
        if self.epochs is not None and self.epochs < 1:
            raise InputError(None, f"--epochs must be at least 1, not {self.epochs}")
        if self.snr_match and self.template_labels < 1:
            raise InputError(
                None, "--snr-match compares template-matching margins: it needs --template-labels > 0"
            )
        from cryoshift.training.pseudo_labels import TEMPLATE_RULES

        if self.template_rule not in TEMPLATE_RULES:
            raise InputError(
                None,
                f"--template-rule must be one of {', '.join(TEMPLATE_RULES)}, not {self.template_rule!r}",
            )
        if self.template_rule != "margin" and self.template_labels < 1:
            raise InputError(
                None,
                f"--template-rule {self.template_rule} chooses among template matches: "
                "it needs --template-labels > 0",
            )
        if not 0 < self.template_keep <= 1:
            raise InputError(None, f"--template-keep must be in (0, 1], not {self.template_keep}")
        if self.dense_weight is not None and not (
            math.isfinite(self.dense_weight) and self.dense_weight >= 0
        ):
            raise InputError(None, f"--dense-weight must be a finite number >= 0, not {self.dense_weight}")
        if self.dense_weight:
            from cryoshift.training.dense import check_backbone

            check_backbone(self.backbone, self.backbone_kwargs, self.box)
        from cryoshift.training.backbones import check_test_views_option

        check_test_views_option(self.test_views)
        if self.batch_size < 1:
            raise InputError(None, f"--batch-size must be at least 1, not {self.batch_size}")
        # NaN passes "<= 0" (Adam then raised a traceback); inf trained a NaN model without a word
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise InputError(None, f"--lr must be a finite number above 0, not {self.lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise InputError(None, f"--weight-decay must be a finite number >= 0, not {self.weight_decay}")
        check_threads(self.threads)
        from cryoshift.training.simulate.config import PRESETS, check_seed

        check_seed("--seed", self.seed)
        # checked with a dataset source too, where it is unused: a typo should not pass silently
        if self.sim_preset is not None and self.sim_preset not in PRESETS:
            raise InputError(
                None, f"unknown --sim-preset {self.sim_preset!r}; choose one of {', '.join(PRESETS)}"
            )
        if self.sim_per_epoch is not None and self.sim_per_epoch < 1:
            raise InputError(None, f"--sim-per-epoch must be at least 1, not {self.sim_per_epoch}")
        if self.voxel_size is not None and not (math.isfinite(self.voxel_size) and self.voxel_size > 0):
            raise InputError(None, f"--voxel-size must be a positive number, not {self.voxel_size}")
        if self.max_target is not None and self.max_target < 1:  # 0 and -1 ended in tracebacks
            raise InputError(None, f"--max-target must be at least 1, not {self.max_target}")
        if self.template_labels < 0:  # was taken for 0 (off) without a word
            raise InputError(
                None, f"--template-labels must be 0 (off) or a positive count, not {self.template_labels}"
            )
        _check_method_kwargs(self.method, self.method_kwargs)
        _check_backbone_kwargs(self.backbone, self.backbone_kwargs)
        if self.box is not None:  # after the name and options: a typo is not "box too small"
            check_backbone_box(self.backbone, self.backbone_kwargs, self.box)
        if self.lr_schedule not in LR_SCHEDULES:
            raise InputError(
                None, f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}, not {self.lr_schedule!r}"
            )
        if self.normalisation not in NORMALISATIONS:
            raise InputError(None, f"--normalisation must be one of {', '.join(NORMALISATIONS)}")
        from cryoshift.training.select import CRITERIA

        if self.selection_criterion not in CRITERIA:
            raise InputError(None, f"--selection must be one of {', '.join(CRITERIA)}")
        if not 0 <= self.val_fraction < 1:
            raise InputError(None, f"--val-fraction must be in [0, 1), not {self.val_fraction}")

    def _check_types(self) -> None:
        """Refuse a field of another type than declared, in one line naming the field, its value
        and the type expected. Why: a config built in Python (``epochs="2"``) failed with a raw
        TypeError inside the range checks below, or later in training; the CLI types its options
        and :meth:`from_dict` checks a config file the same way."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not _fits(value, hints[f.name]):
                shown = repr(value) if len(repr(value)) <= 100 else repr(value)[:97] + "..."
                raise InputError(
                    None,
                    f"TrainConfig {f.name}={shown} has the wrong type ({type(value).__name__}): "
                    f"expected {_type_name(hints[f.name])}",
                )


@dataclass
class TrainResult:
    run_dir: Path
    model_path: Path | None  # None when the run stopped before its last epoch
    selected_epoch: int | None
    history: list[dict[str, Any]]
    selection: dict[str, Any] | None = None
    metadata: ModelMetadata | None = None
    state_digest: str = ""  # sha256 of the final training state (method weights + buffers): resume checks
    param_digest: str = ""  # sha256 of the parameters only: DDP replicas agree on it


# --------------------------------------------------------------------------- helpers


# One step's host arrays: source volumes, source labels, target volumes, target labels (the oracle's)
# and the source's clean particle densities (dense supervision); the optional ones may be None.
HostBatch = tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None]


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def state_digest(module: nn.Module, buffers: bool = True) -> str:
    """Hash of every parameter (and buffer), to compare runs bit for bit.

    DDP keeps parameters identical across ranks but each rank keeps its own BatchNorm running
    statistics, so replicas are compared with ``buffers=False``.
    """
    h = hashlib.sha256()
    items = module.state_dict().items() if buffers else module.named_parameters()
    for key, value in sorted(items):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _batch(domain: Domain, index: np.ndarray, mode: str, device: str) -> torch.Tensor:
    x = torch.from_numpy(domain.take(index)).unsqueeze(1).to(device, non_blocking=True)
    return normalise(x, mode)


@torch.no_grad()
def _target_batches(target: Domain, mode: str, device: str, batch_size: int) -> list[torch.Tensor]:
    return [
        _batch(target, np.arange(s, min(s + batch_size, len(target))), mode, device)
        for s in range(0, len(target), batch_size)
    ]


def deployable_backbone(
    method: nn.Module, target: Domain | None, mode: str, device: str, batch_size: int
) -> nn.Module:
    """The backbone as it would be exported now: ``finalize`` applied to a copy of the method.

    Training continues from the un-finalized weights, so AdaBN's per-epoch checkpoints all get
    target BatchNorm statistics without disturbing training.
    """
    if target is None or len(target) == 0:
        return method.backbone
    clone = copy.deepcopy(method)
    clone.finalize(_target_batches(target, mode, device, batch_size))
    return clone.backbone


def _progress(enabled: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.1f} vol/s" if speed else "- vol/s")

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )


def _build(
    config: TrainConfig, class_names: list[str], box: int, method_hparams: dict[str, Any] | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """The method around its backbone; ``method_hparams`` (a resumed run's, defaults included)
    replace ``config.method_kwargs`` (the ones given) when not None."""
    from cryoshift.training.adapt import create_method
    from cryoshift.training.backbones import create_backbone

    backbone_kwargs = {
        "test_views": config.test_views,
        **config.backbone_kwargs,
        "num_classes": len(class_names),
        "box_size": box,
    }
    try:
        backbone = create_backbone(config.backbone, **backbone_kwargs)
        method = create_method(
            config.method,
            backbone=backbone,
            num_classes=len(class_names),
            box_size=box,
            **(config.method_kwargs if method_hparams is None else method_hparams),
        )
    except (ValueError, TypeError) as exc:
        raise InputError(None, str(exc)) from exc
    return method, backbone_kwargs


def check_backbone_box(backbone: str, kwargs: dict[str, Any], box: int, where: str | None = None) -> None:
    """Refuse a box the backbone cannot take before any data is read (or, for a dataset source,
    before the target is read and template-matched).

    Why: ``--box 15`` read the target, template-matched it and only then stopped with "backbone
    'cryonet' needs ... >= 16", naming the family and not the registry name in use (the default
    when no --backbone was given). A box of MIN_BOX or more every built-in family takes, so only a
    smaller one is tried on the backbone itself: a plugin backbone may take it."""
    from cryoshift.training.backbones import create_backbone
    from cryoshift.training.backbones._base import MIN_BOX

    if box >= MIN_BOX:
        return
    try:
        create_backbone(backbone, num_classes=2, box_size=box, **kwargs)
    except (ValueError, TypeError) as exc:
        default = next(f.default for f in dataclasses.fields(TrainConfig) if f.name == "backbone")
        who = f"the default backbone {backbone}" if backbone == default else f"backbone {backbone}"
        what = "a box of" if where else "--box"
        raise InputError(
            where, f"{what} {box} is too small for {who} ({exc}); use a box of at least {MIN_BOX} voxels"
        ) from exc


def _check_source_voxel(source: str, data_voxel: float, option: float | None) -> None:
    """Refuse a ``--voxel-size`` that contradicts the source dataset's: it was ignored without a
    word (the dataset's wins), so a user who meant to train at that scale got another one."""
    from cryoshift.runtime.contract import VOXEL_TOLERANCE, voxel_mismatch

    if option is None:
        return
    off = voxel_mismatch(option, data_voxel)
    if off is not None and off > VOXEL_TOLERANCE:
        raise InputError(
            source,
            f"source voxel size is {data_voxel:g} A but --voxel-size is {option:g}; leave --voxel-size "
            "out with a dataset source (it is for simulating one)",
        )


def _check_split(source: str, full: Domain, train_src: Domain, fraction: float) -> None:
    """Refuse a --val-fraction that holds out every volume of a class: with every class the model
    never trained on it, and with all of them training ended in an IndexError traceback."""
    if full.labels is None or train_src.labels is None:
        return
    present = np.unique(full.labels)
    lost = np.setdiff1d(present, np.unique(train_src.labels))
    if len(lost):
        names = ", ".join(str(full.class_names[int(k)]) for k in lost[:5])
        more = f" and {len(lost) - 5} more" if len(lost) > 5 else ""
        raise InputError(
            source,
            f"--val-fraction {fraction:g} holds out every volume of class {names}{more}, leaving none "
            f"to train on ({len(full)} source volumes); lower --val-fraction",
        )


_TARGET_ADVICE = (
    "the target is the other domain's unlabelled data (the experimental subtomograms); give those "
    "as --target, or leave --target out with --method source-only"
)


def _refuse_source_as_target(source: str, target: str) -> None:
    """Refuse a --target that is the --source dataset (its folder or its volumes.mrc), or a copy
    of it: the run "adapted" to its own labelled data, and selected and calibrated on it, and
    ended like any other run, so a copy-paste slip gave a source-only model that looked adapted.
    Checked after the target is read, so the target's own refusals (--tomograms with a dataset)
    come first."""
    import os

    if not is_dataset(source):
        return
    src = Path(source)
    for candidate in (src, src / "volumes.mrc"):
        try:
            same = os.path.samefile(target, candidate)
        except (OSError, ValueError):
            same = False
        if same:
            raise InputError(target, f"is the --source dataset {source} itself: {_TARGET_ADVICE}")
    if _same_volumes(src / "volumes.mrc", Path(target)):
        raise InputError(
            target,
            f"is a copy of the --source dataset {source} (the same volumes, byte for byte): {_TARGET_ADVICE}",
        )


def _same_volumes(source_volumes: Path, target: Path) -> bool:
    """Whether ``target`` (a dataset folder or a volume stack) holds the very bytes of
    ``source_volumes``: a copied dataset has the same fingerprint (dataset.json and the stack's
    size), but an unlabelled copy or a copied stack does not, so the stacks are compared. Files of
    another size are told apart without reading them; equal ones are read until they differ."""
    import filecmp

    stack = target / "volumes.mrc" if target.is_dir() else target
    try:
        if not (stack.is_file() and source_volumes.is_file()):
            return False
        if stack.stat().st_size != source_volumes.stat().st_size:
            return False
        return filecmp.cmp(source_volumes, stack, shallow=False)
    except OSError:  # unreadable: the target's reader has said what it could not read
        return False


def _refuse_dataset_as_out(out: Path) -> None:
    """Refuse an --out that holds a dataset (or an unfinished one's files): the run was written
    in among its volumes, and the folder then read as either a dataset or a run."""
    found = dataset_files(out) if out.is_dir() else []
    if found:
        raise InputError(
            out,
            f"holds {dataset_kind(found)} ({', '.join(found)}); --out names the folder the run is "
            "written to: choose another --out",
        )


UNCALIBRATED = (
    "the model is not calibrated: temperature 1 (its probabilities as trained) and no unknown "
    "threshold (classify marks no subtomogram unknown)"
)


def _no_validation_note(fraction: float, n_source: int) -> str:
    """The note for a dataset source of which no volume is held out: what the model then lacks
    (calibration, unknown rejection) and what the epoch selection cannot see, said when the run
    starts rather than found in model.pt's metadata after it."""
    if fraction > 0:
        why = (
            f"--val-fraction {fraction:g} of {n_source} source volumes holds none out (a class "
            "needs 2 volumes to give one)"
        )
    else:
        why = "--val-fraction 0 holds no source volumes out"
    return f"{why}: {UNCALIBRATED}, and the epoch is selected without source validation accuracy"


def _method_flags(name: str) -> tuple[bool, bool]:
    from cryoshift.training.adapt import METHODS

    try:
        factory = METHODS.get(name)
    except ValueError as exc:
        raise InputError(None, str(exc)) from exc
    return bool(getattr(factory, "needs_target", False)), bool(getattr(factory, "needs_target_labels", False))


# --------------------------------------------------------------------------- the run


# 20 -> 40 epochs: +5.6 / -1.0 points on the dev targets; 40 -> 60: +0.3 / +4.4 (accuracy_levers.md)
EPOCHS_REDUCED_PRECISION = 60
EPOCHS_FP32 = 20  # fp32 steps are ~2.8x slower on CPU: 40 epochs would pass an hour on 2 cores


RECIPE_METHOD = "selftrain"  # the method the default recipe's target-aware parts were chosen for
RECIPE = "recipe"  # the model metadata's extra entry naming what the method trained with (_Run._recipe)


def recipe_note(config: TrainConfig) -> str | None:
    """What a method other than the default's gets from the default recipe with a simulated source
    and a target: template-labelled target subtomograms in its batches and a source shaped to the
    target's spectrum. Said once at the start, with the options that leave the method alone: a
    methods developer comparing ``--method source-only`` with ``dann`` through the CLI compared
    each plus template labels ("the target is never seen" was not so)."""
    if config.method in (RECIPE_METHOD, "oracle"):
        return None
    parts = []
    if config.template_labels > 0:
        parts.append(f"{config.template_labels} template-labelled target subtomograms in its batches")
    if config.spectrum_match:
        parts.append(RECIPE_WORDS["spectrum_match"])
    if not parts:
        return None
    return (
        f"--method {config.method} trains with the default recipe's {' and '.join(parts)}; for the "
        "method alone (to compare methods) add --template-labels 0 --no-spectrum-match"
    )


def default_dense_weight(config: TrainConfig) -> float:
    """``dense.DEFAULT_WEIGHT`` where dense supervision applies (a simulated source, a backbone with
    a dense feature map), else 0: like spectrum matching, it is skipped where it cannot work."""
    from cryoshift.training import dense

    if is_dataset(config.source) or not dense.has_dense_layer(
        config.backbone, config.backbone_kwargs, config.box
    ):
        return 0.0
    return dense.DEFAULT_WEIGHT


# The target-aware parts of the recipe a run records as run or not, by the name selection.json
# gives each one's summary when it ran (_Run._finish).
RECIPE_PARTS = ("template_labels", "spectrum_match", "tilt_match", "snr_match")
# What each target-aware part other than the template labels gave the method, in words (the
# start-of-run note, the exported model's description)
RECIPE_WORDS = {
    "spectrum_match": "a source filtered to the target's spectrum",
    "tilt_match": "a source tilt range matched to the target's",
    "snr_match": "a source noise level matched to the target's",
    "target_labels": "target labels",
}


def training_recipe(config: dict[str, Any], ran: list[str], target_labels: bool) -> dict[str, Any]:
    """What a model's method trained with besides its own losses, for the model's metadata
    (``extra.recipe``, carried into every exported artefact): of :data:`RECIPE_PARTS`, those that
    ``ran`` (not the options given: a dataset source, or no target, runs none of them), the dense
    supervision weight used and whether target labels were trained on. ``template_labels``: the
    target subtomograms asked of template matching (0: none), as config.json and evaluation.json
    count them. ``config``: the run's config as a dict (a config.json).

    Why: the metadata's ``method`` alone called a model ``source-only`` that trained on
    template-labelled target subtomograms and a source filtered to the target's spectrum;
    evaluation.json's training record said so, the model a facility receives did not."""
    matched = "template_labels" in ran
    dense = config.get("dense_weight")  # the weight used (a dataset source refuses one above 0)
    return {
        "template_labels": int(config.get("template_labels") or 0) if matched else 0,
        "template_rule": config.get("template_rule") if matched else None,
        **{name: name in ran for name in RECIPE_PARTS if name != "template_labels"},
        "dense_weight": float(dense) if isinstance(dense, (int, float)) else 0.0,
        "target_labels": target_labels,
    }


def _simulation_settings(config: TrainConfig) -> dict[str, Any]:
    """The changes that make ``config``'s :data:`run.SIMULATION_ONLY` settings say what the run
    uses: None for a dataset source (it simulates nothing), the field's default where a simulated
    source has None. Why: config.json recorded ``sim_preset: broad, sim_per_epoch: 6144`` for a
    run on a dataset folder, as if it had drawn 6144 simulated volumes an epoch."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    dataset = is_dataset(config.source)
    changes = {}
    for name in run.SIMULATION_ONLY:
        value = getattr(config, name)
        if dataset and value is not None:
            changes[name] = None
        elif not dataset and value is None:
            changes[name] = defaults[name]
    return changes


def default_epochs(device: str, amp: bool = True) -> int:
    """The default budget: 60 epochs where steps run in bf16/fp16 (a GPU, a CPU with native bf16),
    20 where they run in fp32, so that ``cryoshift train`` with no options fits an hour on 2 cores."""
    fast = amp and (device.startswith("cuda") or (device == "cpu" and cpu_has_native_bf16()))
    return EPOCHS_REDUCED_PRECISION if fast else EPOCHS_FP32


def train(
    config: TrainConfig,
    resume: bool = False,
    stop_after_epoch: int | None = None,
    *,
    log_lines: bool | None = None,
) -> TrainResult:
    """Train, select label-free, calibrate and write a run directory.

    ``resume`` continues the run in ``config.out`` from its last finished epoch (its stored
    config wins, except ``epochs``, ``device``, ``progress`` and ``threads``).
    ``stop_after_epoch`` stops after that epoch and returns, leaving the run folder as a kill
    would (resumable with ``resume=True``; tests, wall limits): the result's ``model_path`` is
    None, as no model was selected. The process goes on.
    ``log_lines``: whether the plain lines (one per epoch, the target count) are printed when
    stdout is not a terminal; None follows ``config.progress``, so ``progress=False`` prints no
    progress at all (a notebook's stdout is no terminal). The CLI passes True: a SLURM log keeps
    its epoch lines under ``--no-progress``, which drops only the bar.

    The process is left as it was found (:func:`_process_state_kept`): the global random
    generators (which the run seeds from ``config.seed``), torch's thread count and matplotlib's
    backend and settings. The global generators are shared, so two ``train`` calls in threads of
    one process are not reproducible; run them in separate processes.
    """
    config.check()
    if not resume:  # on --resume the run's stored method and hyper-parameters win (checked there)
        check_method_hparams(config.method, config.method_kwargs)
    with _process_state_kept():
        info = distributed.setup(config.device)
        try:
            out = Path(config.out)
            # an --out that is a file, under a file or a dangling link was "File exists" at the
            # first write, after the target was read (and template-matched); both before the lock
            check_out_folder(out, "--out", "the run is written to")
            _refuse_dataset_as_out(out)
            with _one_trainer(out, info):
                lines = config.progress if log_lines is None else log_lines
                return _Run(config, info, resume, lines).execute(stop_after_epoch)
        finally:
            distributed.cleanup(info)


@contextlib.contextmanager
def _process_state_kept() -> typing.Iterator[None]:
    """Give back, on return or exception, what training sets for the whole process: the global
    ``random``, numpy and torch (CPU, and CUDA where already initialised) generators, torch's
    thread count and cuDNN autotuning.

    Why: ``train()`` from a notebook or a script left them changed. The caller's next draws were
    those of ``config.seed`` whatever it had seeded (a later "random" split fixed without a word),
    and its later torch work ran on ``--threads``. The run itself still seeds and draws from the
    global generators (its weights' initialisation, dropout and every method's own draws), so its
    results stay bit-identical for a seed and its resume state keeps recording them."""
    py_state, np_state = random.getstate(), np.random.get_state()
    torch_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    threads, benchmark = torch.get_num_threads(), torch.backends.cudnn.benchmark
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        torch.backends.cudnn.benchmark = benchmark


@contextlib.contextmanager
def _one_trainer(out: Path, info: distributed.DistInfo) -> typing.Iterator[None]:
    """Hold the run folder's lock (rank 0, the one writer) for the whole training.

    Why: two runs on one --out (fresh, or --resume) both trained to the end, each overwriting the
    other's epoch checkpoints, metrics.csv and model.pt, and the first reported a model.pt that
    was the second's. The second is now refused in one line naming the first's pid, before it
    reads anything; under torchrun every rank is told rank 0's answer, so none waits for it."""
    from cryoshift.runtime.lock import TRAIN_LOCK, holding

    with contextlib.ExitStack() as stack:
        refusal: Exception | None = None
        if info.is_main:
            try:
                stack.enter_context(holding(out, TRAIN_LOCK, "train run"))
            except Exception as exc:  # said on rank 0 once every rank knows (a mkdir error too)
                refusal = exc
        held = distributed.broadcast_from_main(np.array([refusal is None], np.int64), info)
        if refusal is not None:
            raise refusal
        if not held[0]:
            raise InputError(  # the rank that ends first is the one torch reports: say the same
                out,
                "another train run is writing to this folder (rank 0 could not lock it; its line "
                "names the pid)",
            )
        yield


class TrainingDiverged(InputError):
    """The loss or the gradients became NaN/Inf while training. An InputError (a setting to change,
    not a bug) so that the CLI says it in one line, exit 2; it was a RuntimeError traceback.

    ``method``: the method whose loss was not finite at the run's very first step (no optimiser
    step yet, so the learning rate cannot be the cause): it is named instead of "lower --lr"."""

    def __init__(self, where: str, method: str | None = None):
        if method is None:
            super().__init__(None, f"training diverged at {where}; lower --lr")
        else:
            super().__init__(
                None,
                f"method {method!r}: losses() returned a non-finite 'total' at {where}, before any "
                "optimiser step, so not because of the learning rate: check the method's loss",
            )


def _require_stored_config(run_dir: Path, stored: Path) -> None:
    """Refuse --resume of a folder whose config.json is absent, saying what is there instead (a
    folder, a symbolic link loop, a special file). Why: each was "no config.json in this run
    directory", as if the name were free."""
    problem = not_a_file(stored)
    if problem:
        raise InputError(stored, f"{problem}, not the run's training config; nothing to resume: restore it")
    if not stored.is_file():
        raise InputError(run_dir, "nothing to resume: no config.json in this run directory")


def _refuse_lost_resume_state(run_dir: Path, path: Path) -> None:
    """Refuse --resume without resume.pt (``path``) when the run shows finished epochs.
    Why: it trained from epoch 1 again, overwriting the epoch checkpoints and model.pt of the
    finished run; starting afresh is right only when nothing had finished (the run stopped in its
    first epoch, or while saving it: epoch_0001.pt comes before resume.pt): the caller then says so
    in a note."""
    finished = run.finished_epochs(run_dir)
    if finished is None or run.first_epoch_unsaved(run_dir):
        return
    count, evidence = finished
    epochs = "epochs" if count is None else f"{count} epoch{'s' if count != 1 else ''}"
    raise InputError(
        path,
        f"missing, but the run has finished {epochs} ({evidence}); restore it, or start a new run in "
        "another --out",
    )


def _finite_gradients(optimiser: torch.optim.Optimizer) -> bool:
    """Whether every gradient the optimiser is about to apply is finite (one reduction per step)."""
    grads = [q.grad for group in optimiser.param_groups for q in group["params"] if q.grad is not None]
    if not grads:
        return True
    # Not torch._foreach_norm: on the same CPU it returned non-finite norms of finite gradients.
    return bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())


class _Run:
    def __init__(self, config: TrainConfig, info: distributed.DistInfo, resume: bool, log_lines: bool):
        self.info = info
        self.log_lines = log_lines  # the plain lines in a log (train's ``log_lines``)
        self.dir = Path(config.out)
        self.resume = resume
        self.given_source = config.source  # the --source given (on --resume the stored one wins)
        self.resume_note: str | None = None  # the options --resume ignores, said once it trains
        self.early_warning: str | None = None  # a warning said when the data is read (and at the end)
        self.source_note: str | None = None  # the defaults a dataset source cannot use, said when read
        self.config = self._resolve_config(config)
        run.check_run_paths(self.dir)
        if self.config.threads:
            self.config = dataclasses.replace(self.config, threads=capped_threads(self.config.threads))
            torch.set_num_threads(self.config.threads)
        self.device = info.device
        if self.device.startswith("cuda"):
            torch.backends.cudnn.benchmark = True  # one box size throughout: autotune once
        _seed_all(self.config.seed)

    def _resolve_config(self, config: TrainConfig) -> TrainConfig:
        stored = self.dir / "config.json"
        if self.resume:
            _require_stored_config(self.dir, stored)
            data = read_json_object(stored, "training config (config.json)")
            old = TrainConfig.from_dict(data, stored, written_by=run.recorded_version(self.dir))
            unused = run.drop_unused_hparams(old)  # another method's keys it never used
            ignored = run.ignored_on_resume(config, old)
            notes = ([run.resume_note(ignored)] if ignored else []) + ([unused] if unused else [])
            if notes:  # they were dropped without a word; said once the run trains (execute):
                # before a refusal, "ignored: --source B (run: A)" preceded an error about A
                self.resume_note = "; ".join(notes)
            epochs = old.epochs if config.epochs is None else config.epochs
            if epochs is None:  # "epochs": null (an edited file) was a TypeError traceback after loading
                raise InputError(stored, 'holds no epoch count ("epochs": null); pass --epochs with --resume')
            resolved = dataclasses.replace(
                old,
                out=os.path.abspath(self.dir),
                epochs=epochs,
                device=config.device,
                progress=config.progress,
                threads=config.threads,
            )
            # an older run's config.json recorded the simulation defaults for a dataset source too
            resolved = dataclasses.replace(resolved, **_simulation_settings(resolved))
            try:  # train() checked the options given; the stored ones win, so check them too
                resolved.check()
                check_method_hparams(resolved.method, resolved.method_kwargs)
            except InputError as exc:  # an edited --batch-size 0 or --lr -1 was a torch traceback
                raise InputError(stored, f"a stored setting is refused: {exc.reason}") from exc
            return resolved
        if stored.is_file():
            raise InputError(
                self.dir, "already holds a training run; pass --resume to continue it or choose another --out"
            )
        config = dataclasses.replace(config, **run.absolute_data_paths(config))
        # config.json is read from other folders (export, evaluate --run, a methods developer's
        # notes): a relative --out said nowhere where the run was. abspath, not resolve: a link
        # keeps the name the user gave
        config = dataclasses.replace(config, out=os.path.abspath(config.out))
        config = dataclasses.replace(config, **_simulation_settings(config))
        config = dataclasses.replace(config, **no_target_settings(config))  # off without a target
        if config.epochs is None:
            config = dataclasses.replace(config, epochs=default_epochs(self.info.device, config.amp))
        if config.dense_weight is None:
            config = dataclasses.replace(config, dense_weight=default_dense_weight(config))
        if is_dataset(config.source):  # what a dataset source cannot use: recorded off, said once
            changes, self.source_note = dataset_source_settings(config)
            config = dataclasses.replace(config, **changes)
        return config

    # -- data ------------------------------------------------------------------------------
    def _load_data(self) -> None:
        c = self.config
        self.needs_target, self.needs_target_labels = _method_flags(c.method)
        if c.oracle_target_labels and not self.needs_target_labels:
            raise InputError(
                None,
                f"--oracle-target-labels is only for the 'oracle' benchmark method; "
                f"{c.method!r} never sees target labels",
            )
        if self.needs_target_labels and not c.oracle_target_labels:
            raise InputError(
                None,
                f"method {c.method!r} trains on target labels: pass "
                "--oracle-target-labels to confirm (benchmarks only)",
            )
        self.sim: SimulatedSource | None = None
        refuse_unfinished_dataset(c.source, "--source")
        if is_dataset(c.source):
            from cryoshift.training.data import split_validation

            if c.dense_weight:
                raise InputError(
                    c.source, "--dense-weight needs a simulated source (the clean particle densities)"
                )
            full = load_source_dataset(c.source)
            if c.box is not None and c.box != full.box_size:
                raise InputError(c.source, f"source boxes are {full.box_size}^3 but --box is {c.box}")
            check_backbone_box(c.backbone, c.backbone_kwargs, full.box_size, where=c.source)
            _check_source_voxel(c.source, full.voxel_size, c.voxel_size)
            self.train_src, self.val_src = split_validation(full, c.val_fraction, c.seed)
            _check_split(c.source, full, self.train_src, c.val_fraction)
            if len(self.val_src) == 0 and self.info.is_main:
                import sys

                print(f"cryoshift: note: {_no_validation_note(c.val_fraction, len(full))}", file=sys.stderr)
            ref = full
        else:
            if c.box is None and self.resume:  # --box (or --source) given now would be ignored
                raise InputError(c.source, self._stored_source_gone())
            if c.box is None:
                raise InputError(c.source, "not a dataset directory; to simulate from structures give --box")
            dev = self.device
            self.sim = SimulatedSource(c.source, c.box, c.voxel_size, c.sim_preset, c.seed, dev)
            val_sim = SimulatedSource(
                c.source, c.box, c.voxel_size, c.sim_preset, c.seed + 7919, dev, loaded=self.sim.structures
            )
            self.val_src = val_sim.draw(max(c.sim_val, 1))
            self._val_sim = val_sim
            self.train_src = None
            ref = self.val_src
        self.class_names = list(ref.class_names)
        if len(self.class_names) < 2:  # a classifier of one class answers it for every volume
            raise InputError(
                c.source,
                f"only one class ({', '.join(self.class_names) or 'none'}): a classifier needs at "
                "least two; add structures or classes (e.g. builtin:NAME, or a decoy class)",
            )
        self.box, self.voxel_size, self.contrast = ref.box_size, ref.voxel_size, ref.contrast
        self.fingerprints = {"source": ref.fingerprint}
        if self.sim is not None:
            self.fingerprints["source_maps"] = structures_fingerprint(self.sim.structures)
        if c.target is None and (self.needs_target or self.needs_target_labels):
            raise InputError(None, f"method {c.method!r} needs unlabelled target data: give --target")
        self.target = None
        if c.target is not None:
            self.target = load_target(
                c.target,
                self.box,
                self.voxel_size,
                self.contrast,
                self.class_names,
                tomograms=c.tomograms,
                oracle_labels=c.oracle_target_labels,
                max_items=c.max_target,
            )
            _refuse_source_as_target(c.source, c.target)
            self.fingerprints["target"] = self.target.fingerprint
        self._check_same_data()  # before the target is template-matched: a refusal comes fast
        if self.target is not None and self.info.is_main and self._plain():
            print(log.target_line(self.target), flush=True)
        if self.target is not None and self.target.skipped and self.info.is_main:
            import sys

            for line in self.target.skipped[:SKIPPED_SHOWN]:
                print(f"cryoshift: skipped target item {line}", file=sys.stderr)
            more = len(self.target.skipped) - SKIPPED_SHOWN
            if more > 0:  # all of them are in the run folder (written when training starts: fit)
                print(
                    f"cryoshift: ... and {more} more unreadable target items (all "
                    f"{len(self.target.skipped)}, with reasons: {self.dir / SKIPPED_ITEMS})",
                    file=sys.stderr,
                )
        if self.target is not None and self.target.notes and self.info.is_main:
            import sys

            for note in self.target.notes:
                print(f"cryoshift: note: {note}", file=sys.stderr)
        if self.source_note and self.info.is_main:  # once source and target are read and accepted
            import sys

            print(f"cryoshift: note: {self.source_note}", file=sys.stderr)
        small = small_target_warning(self._adapted_target_size() or SMALL_TARGET)
        self.early_warning = small  # said now, while the run can still be stopped; and at the end
        if small and self.info.is_main:
            import sys

            print(f"cryoshift: warning: {small}", file=sys.stderr)
        simulated_target = self.sim is not None and self.target is not None
        if simulated_target and self.info.is_main:
            note = recipe_note(c)
            if note:
                import sys

                print(f"cryoshift: note: {note}", file=sys.stderr)
        self.tilt_summary: dict[str, Any] | None = None
        if c.tilt_match and simulated_target:
            self._match_tilt()
        self.pseudo: Domain | None = None
        self.pseudo_summary: dict[str, object] | None = None
        self.matches = None  # template matching's PseudoLabels, when it ran
        if c.template_labels > 0 and simulated_target:
            self._template_labels()
        self.snr_summary: dict[str, Any] | None = None
        if c.snr_match and simulated_target:
            self._match_snr()
        if self.tilt_summary is not None or self.snr_summary is not None:
            self.val_src = self._val_sim.draw(max(c.sim_val, 1))  # validation sees what training sees
        self.spectrum_summary: dict[str, float] | None = None
        if c.spectrum_match and simulated_target:
            self._match_spectrum()
        eval_rng = np.random.default_rng(c.seed + 1)
        if self.target is not None and len(self.target) > MAX_TARGET_EVAL:
            idx = np.sort(eval_rng.choice(len(self.target), MAX_TARGET_EVAL, replace=False))
            self.target_eval = self.target.subset(idx)
        else:
            self.target_eval = self.target

    def _target_sample(self, seed_offset: int) -> np.ndarray:
        """Up to 2,000 target volumes (a seeded subset) for the target-aware estimates."""
        rng = np.random.default_rng(self.config.seed + seed_offset)
        n = min(len(self.target), 2000)
        return self.target.take(np.sort(rng.choice(len(self.target), n, replace=False)))

    def _match_tilt(self) -> None:
        """Simulate tilt ranges around the target's, estimated from its spectrum."""
        from cryoshift.training.spectrum import estimate_tilt_max, tilt_match_range

        estimate = estimate_tilt_max(self._target_sample(8))
        preset = self.sim.config.tilt_max
        span = tilt_match_range(estimate)
        for source in (self.sim, self._val_sim):
            source.match_target(tilt_max=span)
        self.tilt_summary = {"estimate": estimate, "simulated": list(span), "preset": list(preset)}
        if self.info.is_main:
            import sys

            print(
                f"cryoshift: target tilt range estimated +-{estimate:.0f} deg; simulating "
                f"+-{span[0]:.0f} to +-{span[1]:.0f} deg",
                file=sys.stderr,
            )

    def _match_spectrum(self) -> None:
        """Fit the target-aware spectrum filter (target vs a fresh simulated draw) and apply it to the
        simulated source from now on, validation data included (selection and calibration then see
        what training sees)."""
        from cryoshift.training.spectrum import SpectrumMatch

        target = self._target_sample(3)
        reference = self._val_sim.draw(max(256, min(len(target), 1024)))
        match = SpectrumMatch.fit(target, reference.volumes, seed=self.config.seed + 4)
        self.sim.match_spectrum(match)
        self.val_src.volumes = match.apply(self.val_src.volumes)
        self.spectrum_summary = match.summary()

    def _match_snr(self) -> None:
        """Simulate SNRs around the level at which simulated volumes are as hard to tell apart by
        template matching as the target's (snr_match.py), before the spectrum filter is fitted (the
        filter depends on the noise it is fitted to)."""
        from cryoshift.training.simulate.simulator import Simulator
        from cryoshift.training.snr_match import match_snr
        from cryoshift.training.spectrum import tilt_match_range

        c = self.config
        tilt_range = tilt_match_range(self.matches.tilt_max)  # the probe mimics the target's geometry
        probe_config = self.sim.config.replace(tilt_max=tilt_range)
        probe = Simulator(self.sim.structures, probe_config, device=self.device, seed=c.seed + 9)
        preset = self.sim.config.snr
        found = match_snr(
            self.matches.margins,
            probe,
            self.sim.structures.maps,
            self.matches.tilt_max,
            self.voxel_size,
            spectrum_target=self._target_sample(3) if c.spectrum_match else None,
            seed=c.seed + 10,
            threads=c.threads,
        )
        for source in (self.sim, self._val_sim):
            source.match_target(snr=found.simulated)
        self.snr_summary = found.summary(preset)
        if self.info.is_main:
            import sys

            print(
                f"cryoshift: target as separable as simulated SNR {found.estimate:.3g}; simulating SNR "
                f"{found.simulated[0]:.3g} to {found.simulated[1]:.3g} ({found.seconds:.0f} s)",
                file=sys.stderr,
            )

    def _template_labels(self) -> None:
        """Label part of the target by template matching against the source maps (pseudo_labels.py)."""
        from cryoshift.training.pseudo_labels import template_pseudo_labels

        c = self.config
        found = template_pseudo_labels(
            self.target.volumes,
            self.sim.structures.maps,
            self.voxel_size,
            count=c.template_labels,
            keep=c.template_keep,
            # with --tilt-match the range was estimated already, on as many or more target volumes
            tilt_max=self.tilt_summary["estimate"] if self.tilt_summary is not None else None,
            seed=c.seed + 5,
            threads=c.threads,
        )
        # agree-only: no target labels until the network can vote on them (_agree)
        if c.template_rule != "agree-only":
            self._set_pseudo(found.index, found.labels, "labelled by template matching")
        self.pseudo_summary = {**found.summary(), "rule": c.template_rule}
        self.matches = found
        if self.info.is_main:
            import sys

            print(
                f"cryoshift: template matching labelled {len(found.index)} of {found.matched} target "
                f"subtomograms (tilt range +-{found.tilt_max:.0f} deg, {found.seconds:.0f} s)",
                file=sys.stderr,
            )

    def _set_pseudo(self, rows: Any, labels: Any, how: str) -> None:
        """Train on target rows ``rows`` with ``labels`` beside the source from now on."""
        rows = np.asarray(rows, dtype=np.int64)
        self.pseudo = Domain(
            self.target.take(rows),
            np.asarray(labels, dtype=np.int64),
            self.class_names,
            self.box,
            self.voxel_size,
            self.contrast,
            self.target.fingerprint,
            f"{len(rows)} target subtomograms {how}",
        )
        self.pseudo_rows = rows

    def _agreement_epoch(self, method: nn.Module) -> int | None:
        """The epoch after which the template labels become those the network agrees with
        (template_rule agree/agree-only): the last before the method's target terms start."""
        if self.config.template_rule == "margin" or self.matches is None:
            return None
        from cryoshift.training.pseudo_labels import AGREE_AT

        start = float(getattr(method, "hparams", {}).get("adapt_start", AGREE_AT))
        return max(1, min(self.config.epochs, math.floor(start * self.config.epochs)))

    def _agree(self, deployable: nn.Module | None, epoch: int) -> None:
        """Relabel: the matched target volumes whose template-matching class the network, as it
        would be exported now (``deployable``: this epoch's AdaBN copy, with its test views; given
        on rank 0 only), predicts too (pseudo_labels.agreement_labels)."""
        from cryoshift.training.pseudo_labels import agreement_labels

        c, found = self.config, self.matches
        network = np.zeros(found.matched, dtype=np.int64)
        if self.info.is_main:  # one vote for every rank: a near tie must not split the ranks' data
            assert deployable is not None
            with self._evaluation_rng():
                logits, _ = forward_numpy(
                    deployable,
                    self.target.take(found.matched_index),
                    c.normalisation,
                    self.device,
                    c.eval_batch_size,
                )
            network = logits.argmax(1).astype(np.int64)
        network = distributed.broadcast_from_main(network, self.info)
        rows, labels = agreement_labels(found, network)
        before = 0 if self.pseudo is None else len(self.pseudo)
        self._set_pseudo(rows, labels, "on whose class template matching and the network agree")
        self.pseudo_summary.update(
            agreed=len(rows),
            agree_epoch=epoch,
            agreed_class_counts=np.bincount(labels, minlength=len(self.class_names)).tolist(),
        )
        if self.info.is_main:
            import sys

            print(
                f"cryoshift: after epoch {epoch}, training on the {len(rows)} of {found.matched} matched "
                f"target subtomograms whose class the network predicts too (was {before})",
                file=sys.stderr,
            )

    def _plain(self) -> bool:
        """Whether to print a plain progress line now: asked for, and stdout not a terminal."""
        return self.log_lines and log.plain()

    def _evaluation_rng(self) -> Any:
        """A block whose random draws (evaluation, AdaBN passes) never shift the training RNG."""
        cuda_devices = [torch.device(self.device).index or 0] if self.device.startswith("cuda") else []
        return torch.random.fork_rng(devices=cuda_devices)

    def _adapted_target_size(self) -> int | None:
        """How many target volumes the method adapts to (None: it does not adapt to a target)."""
        if self.target is None or not self.needs_target:
            return None
        return len(self.target.volumes)

    def _stored_source_gone(self) -> str:
        """Why a resumed run's stored source dataset cannot be read: the run trains on it whatever
        --source says (its resume state and selection were made on it)."""
        stored = self.config.source
        why = (
            f"not a dataset directory (any more?): the run's source, from {self.dir / 'config.json'}; "
            "--resume trains on the source the run started with"
        )
        if not run.same_setting("source", self.given_source, stored):
            why += f", not on --source {self.given_source}"
        return why + ": put the dataset back there, or start a new run without --resume"

    def _views(self, domain: Domain, rng: np.random.Generator) -> Domain:
        """``domain`` with each volume in a fresh wedge-preserving view (when ``target_views``)."""
        if not self.config.target_views:
            return domain
        views = augment.apply_views(domain.volumes, augment.draw_views(rng, len(domain)))
        return dataclasses.replace(domain, volumes=views)

    def _metadata(self) -> ModelMetadata:
        from cryoshift.runtime import __version__

        return ModelMetadata(
            class_names=self.class_names,
            box_size=self.box,
            voxel_size=self.voxel_size,
            contrast=self.contrast if self.contrast in CONTRASTS else "dark",
            normalisation=self.config.normalisation,
            method=self.config.method,
            backbone=self.config.backbone,
            data_fingerprints=dict(self.fingerprints),
            cryoshift_version=__version__,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            extra={RECIPE: self._recipe()},
        )

    def _recipe(self) -> dict[str, Any]:
        """The model metadata's ``extra.recipe`` (:func:`training_recipe`) of this run."""
        summaries = {
            "template_labels": self.pseudo_summary,
            "spectrum_match": self.spectrum_summary,
            "tilt_match": self.tilt_summary,
            "snr_match": self.snr_summary,
        }
        ran = [name for name, summary in summaries.items() if summary is not None]
        target_labels = bool(self.needs_target_labels and self.config.oracle_target_labels)
        return training_recipe(self.config.to_dict(), ran, target_labels)

    def _resume_state(self, path: Path) -> dict[str, Any] | None:
        """resume.pt of the run being resumed, read before any data (None: not resuming, or no
        resume.pt: the run starts from epoch 1).

        A resume.pt written under another config (copied from another run, or config.json edited
        since) is refused by name: its weights would not fit this network (a torch traceback) or,
        when they happen to, would continue another training silently."""
        if not self.resume:
            return None
        if not path.is_file():
            if path.exists():
                raise InputError(path, "is not a file; restore the run's resume state or start a new run")
            _refuse_lost_resume_state(self.dir, path)
            return None
        payload = read_checkpoint(path)
        saved = payload.get("config")
        differ = run.resume_state_mismatch(saved, self.config.to_dict()) if isinstance(saved, dict) else []
        if differ:
            raise InputError(
                path,
                f"was written under another training config than {self.dir / 'config.json'} "
                f"({'; '.join(differ[:3])}{'; ...' if len(differ) > 3 else ''}): copied from another "
                "run, or config.json edited since? Restore the run's own config.json, or start a new "
                "run without --resume",
            )
        # read_checkpoint scanned the weights; the rest (optimiser moments, method state) is scanned here
        bad = run.nonfinite_tensors({key: value for key, value in payload.items() if key != "state_dict"})
        if bad:
            advice = "restore it or start a new run"
            raise InputError(path, f"damaged resume state (NaN/Inf in {bad[0]}); {advice}")
        return payload

    def _resumed_hparams(self) -> dict[str, Any] | None:
        """The hyper-parameters the resumed run started with (its resume state's, defaults
        included), for the keys the method takes now; None when not resuming (or a resume state
        from before they were kept): the config's then apply.

        Why: config.json keeps only the ``--hparam`` values given, so a resumed run took the
        defaults current then: a plugin's default changed between the two calls trained the rest
        of the run with the new value, and selection.json recorded it for the whole run. A
        difference from today's defaults is said in one note line."""
        state = self.resume_state
        stored = state.get("extra", {}).get("method_hparams") if isinstance(state, dict) else None
        if not isinstance(stored, dict):
            return None
        from cryoshift.training.adapt import METHODS

        defaults = METHODS.get(self.config.method).defaults()  # type: ignore[attr-defined]
        now = {
            k: v if self.config.method_kwargs.get(k) is None else self.config.method_kwargs[k]
            for k, v in defaults.items()
        }
        kept = {key: stored[key] if key in stored else now[key] for key in defaults}
        changes = [
            f"{key}={run.shown_setting(kept[key])} (default now {run.shown_setting(now[key])})"
            for key in defaults
            if key in stored and stored[key] != now[key]
        ]
        changes += [
            f"{key}={run.shown_setting(now[key])} (new: the run did not have it)"
            for key in defaults
            if key not in stored
        ]
        changes += [f"{key} (no longer taken; dropped)" for key in stored if key not in defaults]
        if changes and self.info.is_main:
            import sys

            print(
                "cryoshift: note: the run resumes with the hyper-parameters it started with, where "
                f"today's defaults differ: {', '.join(changes)}",
                file=sys.stderr,
            )
        return kept

    def _note_unreached_start(self, method: nn.Module, steps: int) -> None:
        """Say when the method's target terms never start in this run: its ``adapt_start`` (a
        fraction of training, < 1) lies after the run's last step (few epochs, few steps).
        Why a note, not a refusal: the step count is known only once the data is read, and a
        short trial run may mean it; it trained as its source-only part without a word."""
        start = getattr(method, "hparams", {}).get("adapt_start")
        if not isinstance(start, (int, float)) or not self.info.is_main:
            return
        total = max(1, self.config.epochs * steps)
        last = (total - 1) / total  # the last step's progress (see _step)
        if start > last:
            import sys

            print(
                f"cryoshift: note: adapt_start {start:g}: the target terms of {self.config.method!r} "
                f"never start in this run (its last step is at {last:.3f} of training, "
                f"{self.config.epochs} epochs of {steps} steps): give more --epochs or a lower adapt_start",
                file=sys.stderr,
            )

    def _check_same_data(self) -> None:
        """Refuse to resume on data other than the run's: the classes and data fingerprints that
        resume.pt's metadata records against those of the source and target read now.

        The stored config names the same paths, but what is there may have changed: a source
        dataset simulated again with its classes in another order resumed without a word, trained
        the last epochs on re-indexed labels and calibrated model.pt on them (with another number
        of classes, a torch error about the state_dict). A simulated source is drawn afresh each
        epoch: its fingerprints are of its settings and its structure files, compared alike. A key
        the stored metadata lacks (a run of an older cryoshift) is not compared."""
        state = self.resume_state
        meta = state.get("metadata") if state is not None else None
        if not isinstance(meta, dict):
            return
        c, epoch = self.config, state.get("epoch")
        trained = f"epoch {epoch}" if epoch == 1 else f"epochs 1-{epoch}"
        names = meta.get("class_names")
        if isinstance(names, list) and [str(n) for n in names] != self.class_names:
            self._refuse_changed(
                c.source,
                "the source",
                f"its classes are {', '.join(self.class_names)}, the run's were {', '.join(map(str, names))}",
                trained,
            )
        stored = meta.get("data_fingerprints")
        if not isinstance(stored, dict):
            return
        inputs = (
            ("source", c.source, "the source"),
            ("source_maps", c.source, "the source's structure files"),
            ("target", c.target, "the target"),
        )
        for key, where, what in inputs:
            old, new = stored.get(key), self.fingerprints.get(key)
            if old is not None and new is not None and old != new:
                detail = f"fingerprint {new}, the run's was {old}: re-created or edited since"
                self._refuse_changed(where, what, detail, trained)

    def _refuse_changed(self, where: str | None, what: str, detail: str, trained: str) -> typing.NoReturn:
        """The refusal of a resume whose ``what`` (at ``where``) is no longer the run's data."""
        raise InputError(
            where,
            f"{what} changed since the run in {self.dir} trained {trained} on it ({detail}); "
            "--resume would train the remaining epochs, select and calibrate on other data: start a "
            "new run with another --out (or put the run's data back)",
        )

    def _restore(
        self,
        path: Path,
        payload: dict[str, Any],
        method: nn.Module,
        dense: nn.Module | None,
        optimiser: torch.optim.Optimizer,
        scaler: Any,
        rngs: dict[str, Any],
    ) -> tuple[list[dict[str, Any]], int]:
        """Load resume.pt (``payload``, read and checked by :meth:`_resume_state`) into the freshly
        built run; returns (history, last finished epoch). A damaged one (keys missing, wrong
        types) is one line, not a KeyError or TypeError."""
        try:
            extra = payload["extra"]
            history = [dict(row) for row in extra["history"]]
            start = payload["epoch"]
            if isinstance(start, bool) or not isinstance(start, int) or start != len(history):
                raise ValueError(f"epoch {start!r} with {len(history)} epochs of history")
            load_weights(method, extra["method_state"])
            if dense is not None:
                dense.load_state_dict(extra["dense_state"])
            optimiser.load_state_dict(extra["optimizer_state"])
            if scaler is not None and extra.get("scaler_state"):
                scaler.load_state_dict(extra["scaler_state"])
            run.restore_rng(extra["rng"], rngs)
            if extra.get("pseudo_rows") is not None:  # labels chosen by agreement before the stop
                self._set_pseudo(extra["pseudo_rows"], extra["pseudo_labels"], "kept at the stop")
                self.pseudo_summary = dict(extra["pseudo_summary"])
        except InputError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
            what = f"missing {exc}" if isinstance(exc, KeyError) else (str(exc).splitlines() or [""])[0]
            raise InputError(
                path,
                f"damaged resume state ({what[:200] or type(exc).__name__}); start a new run without "
                "--resume, or restore the file",
            ) from exc
        return history, start

    # -- main ------------------------------------------------------------------------------
    def execute(self, stop_after_epoch: int | None) -> TrainResult:
        c, info = self.config, self.info
        resume_path = self.dir / run.CHECKPOINTS / run.RESUME
        self.resume_state = self._resume_state(resume_path)
        self._load_data()
        method, self.backbone_kwargs = _build(c, self.class_names, self.box, self._resumed_hparams())
        # every hyper-parameter the method ran with, defaults included (config.json keeps only those
        # given): a default changed in a later version cannot then be mistaken for this run's; the
        # resume state keeps them too, and --resume trains with them (_resumed_hparams)
        self.method_hparams = dict(getattr(method, "hparams", {}))
        # channels-last 3-D is what oneDNN/cuDNN convolve fastest (+20 % per step on CPU, measured)
        method.to(self.device, memory_format=torch.channels_last_3d)
        dense = None
        if c.dense_weight and self.sim is not None:
            from cryoshift.training.dense import DenseSupervision

            dense = DenseSupervision(method.backbone, c.dense_weight)
            dense.to(self.device, memory_format=torch.channels_last_3d)
            self.sim.particle_grid = dense.grid
        groups = method.param_groups(c.lr)
        if dense is not None:
            groups.append({"name": "dense", "params": list(dense.parameters()), "lr": c.lr})
        optimiser = torch.optim.Adam(groups, lr=c.lr, weight_decay=c.weight_decay)
        use_scaler = self.device.startswith("cuda") and c.amp and not torch.cuda.is_bf16_supported()
        scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        order_rng = np.random.default_rng(c.seed + 2)
        view_rng = np.random.default_rng(c.seed + 6)
        rngs = {"order": order_rng, "views": view_rng}
        if self.sim is not None:
            rngs.update(self.sim.generators)
        history: list[dict[str, Any]] = []
        start = 0
        if self.resume_state is not None:
            history, start = self._restore(
                resume_path, self.resume_state, method, dense, optimiser, scaler, rngs
            )
            self.resume_state = None  # the weights are loaded: not kept for the whole run
            if info.is_main:  # killed after resume.pt, before the metrics row: the row is written now
                run.write_metrics(self.dir / run.METRICS, history)
        elif self.resume and info.is_main:  # it started again from scratch without a word
            import sys

            when = (
                f"it stopped while saving its first epoch: only {run.FIRST_EPOCH} was written"
                if run.first_epoch_unsaved(self.dir)
                else "it stopped before its first epoch ended"
            )
            print(
                f"cryoshift: note: {resume_path} is missing and the run shows no finished epoch "
                f"({when}): training from epoch 1",
                file=sys.stderr,
            )
        if self.resume and info.is_main:
            run.remove_stale_temporaries(self.dir)
        if self.resume_note is not None and info.is_main:  # nothing refused the run: it trains
            import sys

            print(f"cryoshift: note: {self.resume_note}", file=sys.stderr)
        if info.is_main:
            self.dir.mkdir(parents=True, exist_ok=True)
            run.write_json(self.dir / "config.json", c.to_dict())
            current = run.versions(
                self.device, info.world_size, plugins=run.plugin_versions(c.method, c.backbone)
            )
            # the run's first session stays on record; this one is added (run.session_versions)
            record = run.session_versions(self.dir, current, start + 1, resumed=self.resume)
            run.write_json(self.dir / run.VERSIONS, record)
            self._write_skipped()
        loss_fn = distributed.wrap(method, info, dense)
        metadata = self._metadata()
        last = c.epochs if stop_after_epoch is None else min(c.epochs, stop_after_epoch)
        agree_epoch = self._agreement_epoch(method)
        with _progress(c.progress and info.is_main) as bar:
            task = None
            for epoch in range(start + 1, last + 1):
                source = self.sim.draw(c.sim_per_epoch) if self.sim is not None else self.train_src
                if self.pseudo is not None:
                    source = source.concat(self._views(self.pseudo, view_rng))
                steps = distributed.steps_per_epoch(len(source), c.batch_size, info)
                if task is None:
                    self._note_unreached_start(method, steps)
                    per_epoch = steps * c.batch_size * info.world_size
                    task = bar.add_task("train", total=per_epoch * (c.epochs - start))
                t0 = time.perf_counter()
                means = self._train_epoch(
                    method, loss_fn, optimiser, scaler, source, order_rng, view_rng, epoch, steps, bar, task
                )
                train_s = time.perf_counter() - t0
                rate = steps * c.batch_size * info.world_size / train_s
                row = {"epoch": epoch, **means, "train_vol_per_s": rate}
                deployable = None
                if info.is_main:
                    scores, deployable = self._end_epoch(method, epoch, metadata)
                    row.update(scores)
                if epoch == agree_epoch:
                    self._agree(deployable, epoch)
                row["seconds"] = time.perf_counter() - t0
                history.append(row)
                if info.is_main and self._plain():
                    print(log.epoch_line(row, c.epochs), flush=True)
                if info.is_main:
                    extra = {
                        "method_state": {k: v.detach().cpu() for k, v in method.state_dict().items()},
                        "dense_state": {}
                        if dense is None
                        else {k: v.detach().cpu() for k, v in dense.state_dict().items()},
                        "optimizer_state": optimiser.state_dict(),
                        "scaler_state": scaler.state_dict() if scaler is not None else {},
                        "rng": run.capture_rng(rngs),
                        "history": history,
                        "method_hparams": self.method_hparams,
                    }
                    if agree_epoch is not None and epoch >= agree_epoch:
                        extra.update(  # lists: a weights-only checkpoint holds no numpy arrays
                            pseudo_rows=self.pseudo_rows.tolist(),
                            pseudo_labels=self.pseudo.labels.tolist(),
                            pseudo_summary=self.pseudo_summary,
                        )
                    save_checkpoint(
                        resume_path,
                        method.backbone,
                        c.backbone,
                        self.backbone_kwargs,
                        metadata,
                        epoch=epoch,
                        config=c.to_dict(),
                        extra=extra,
                    )
                    # last: a metrics row shows an epoch whose resume.pt was written
                    # (_refuse_lost_resume_state), and epoch_NNNN.pt came before both (_end_epoch)
                    run.write_metrics(self.dir / run.METRICS, history)
                distributed.barrier(info)
        if dense is not None:
            dense.close()
        digest = state_digest(method)
        result = TrainResult(
            self.dir,
            None,
            None,
            history,
            state_digest=digest,
            param_digest=state_digest(method, buffers=False),
        )
        if last < c.epochs:
            return result
        if info.is_main:
            result = self._finish(history, result)
        distributed.barrier(info)
        return result

    def _train_epoch(
        self,
        method: nn.Module,
        loss_fn: nn.Module,
        optimiser: torch.optim.Optimizer,
        scaler: Any,
        source: Domain,
        order_rng: np.random.Generator,
        view_rng: np.random.Generator,
        epoch: int,
        steps: int,
        bar: Any,
        task: Any,
    ) -> dict[str, float]:
        c, info = self.config, self.info
        order = order_rng.permutation(len(source))
        use_target = self.target is not None and (self.needs_target or self.needs_target_labels)
        torder = order_rng.permutation(len(self.target)) if use_target else None
        # methods whose target terms run every k-th step only (selftrain's target_every)
        target_every = max(1, int(getattr(method, "hparams", {}).get("target_every", 1)))
        # the oracle's labelled target volumes get views too (the pseudo-labelled ones get theirs above)
        tviews = None
        if use_target and self.needs_target_labels and c.target_views:
            tviews = augment.draw_views(view_rng, len(self.target))
        method.train()
        sums: dict[str, float] = defaultdict(float)

        def load(step: int) -> HostBatch:
            """Host-side batch of one step (no randomness here: the orders are drawn above)."""
            idx = distributed.rank_slice(order, step, c.batch_size, info)
            if source.labels is None:
                raise RuntimeError(f"{source.description} has no labels")
            tx = ty = None
            if use_target and step % target_every == 0:
                tidx = distributed.rank_slice(torder, step, c.batch_size, info)
                tx = self.target.take(tidx)
                if tviews is not None:
                    tx = augment.apply_views(tx, tviews[tidx])
                ty = self.target.labels[tidx] if self.needs_target_labels else None
            particles = None if source.particles is None else source.particles[idx]
            return source.take(idx), source.labels[idx], tx, ty, particles

        # One reader thread prepares step k+1 while step k runs, so the device never waits on reads.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cryoshift-batches") as pool:
            pending = pool.submit(load, 0)
            for step in range(steps):
                batch = pending.result()
                if step + 1 < steps:
                    pending = pool.submit(load, step + 1)
                self._step(method, loss_fn, optimiser, scaler, batch, epoch, step, steps, sums)
                bar.update(
                    task,
                    advance=c.batch_size * info.world_size,
                    description=f"epoch {epoch}/{c.epochs} loss {sums['_last']:.3f}",
                )
        sums.pop("_last", None)
        means = {f"loss_{k}": v / steps for k, v in sums.items()}
        return distributed.mean_across(means, info)

    def _step(
        self,
        method: nn.Module,
        loss_fn: nn.Module,
        optimiser: torch.optim.Optimizer,
        scaler: Any,
        batch: HostBatch,
        epoch: int,
        step: int,
        steps: int,
        sums: dict[str, float],
    ) -> None:
        """One optimiser step on a host batch; adds each scalar loss to ``sums``."""
        c = self.config
        sx_np, sy_np, tx_np, ty_np, particles_np = batch
        sx = self._to_device(sx_np)
        sy = torch.from_numpy(sy_np).to(self.device)
        tx = None if tx_np is None else self._to_device(tx_np)
        ty = None if ty_np is None else torch.from_numpy(ty_np).to(self.device)
        progress = ((epoch - 1) * steps + step) / max(1, c.epochs * steps)
        factor = lr_factor(c.lr_schedule, progress)
        for group in optimiser.param_groups:
            group["lr"] = group.setdefault("base_lr", group["lr"]) * factor
        particles = None if particles_np is None else torch.from_numpy(particles_np).to(self.device)

        def forward(amp: bool) -> dict[str, Any]:
            try:
                with autocast(self.device, amp):
                    out = loss_fn(
                        sx, sy, target_x=tx, progress=progress, target_y=ty, source_particles=particles
                    )
            except KeyError as exc:  # dense supervision adds its loss to a 'total' that is not there
                if exc.args != ("total",):
                    raise
                out = {}
            if not isinstance(out, dict) or not torch.is_tensor(out.get("total")):
                got = (
                    (", ".join(map(repr, out)) or "nothing") if isinstance(out, dict) else type(out).__name__
                )
                raise InputError(
                    None,
                    f"method {c.method!r}: losses() returned no 'total' tensor (got {got}); the "
                    "contract (adapt/base.py): a dict of scalar losses whose 'total' is backpropagated",
                )
            if not torch.isfinite(out["total"]):
                first = epoch == 1 and step == 0  # no optimiser step yet: not the learning rate
                raise TrainingDiverged(
                    f"epoch {epoch} step {step} (loss {float(out['total'].detach())})",
                    c.method if first else None,
                )
            return out

        out = forward(c.amp)
        total = out["total"]
        optimiser.zero_grad(set_to_none=True)
        if scaler is not None:  # fp16: the scaler skips steps of non-finite gradients itself
            scaler.scale(total).backward()
            scaler.step(optimiser)
            scaler.update()
        else:
            total.backward()
            if c.amp and not _finite_gradients(optimiser):
                # A bf16 step with a finite loss but a non-finite gradient: seen on a 2-core CPU in
                # one conv weight's gradient, at random and only after other work in the process
                # (a reduced-precision kernel fault, not the data); the Adam step then made every
                # weight NaN. The step is redone in fp32. After DDP's all-reduce every rank sees the
                # same gradients, so every rank redoes it alike.
                import sys

                print(
                    f"cryoshift: note: epoch {epoch} step {step}: non-finite gradients in reduced "
                    "precision with a finite loss; step redone in fp32",
                    file=sys.stderr,
                )
                optimiser.zero_grad(set_to_none=True)
                out = forward(False)
                total = out["total"]
                total.backward()
                if not _finite_gradients(optimiser):
                    raise TrainingDiverged(f"epoch {epoch} step {step} (non-finite gradients)")
            optimiser.step()
        for key, value in out.items():
            if torch.is_tensor(value) and value.numel() == 1:
                sums[key] += float(value.detach())
        sums["_last"] = float(total.detach())

    def _to_device(self, volumes: np.ndarray) -> torch.Tensor:
        return normalise(
            torch.from_numpy(volumes).unsqueeze(1).to(self.device, non_blocking=True),
            self.config.normalisation,
        ).contiguous(memory_format=torch.channels_last_3d)

    def _end_epoch(
        self, method: nn.Module, epoch: int, metadata: ModelMetadata
    ) -> tuple[dict[str, float], nn.Module]:
        """Deployable model of this epoch: label-free scores and its checkpoint (rank 0); returns the
        scores and the deployable model (the agreement vote uses it rather than building another)."""
        c = self.config
        # in fp32: in bf16 these passes (AdaBN over the target's test views, the scores) took 7 s of
        # a 1-thread epoch's 81 s instead of 13, but the twentieth round's rule rejected it
        # (low-dose-45 70.7 % against >= 71.0; benchmarks/results/accuracy_levers.md)
        with self._evaluation_rng():
            backbone = deployable_backbone(
                method, self.target, c.normalisation, self.device, c.eval_batch_size
            )
            row: dict[str, float] = {}
            logits = None
            # per-epoch scores see one pose (4x cheaper; on short budgets the views cost more than the
            # steps); the selected model is calibrated and exported with its test views
            with one_pose(backbone):
                if len(self.val_src):
                    logits, _ = forward_numpy(
                        backbone, self.val_src.volumes, c.normalisation, self.device, c.eval_batch_size
                    )
                    row["src_val_acc"] = float((logits.argmax(1) == self.val_src.labels).mean())
                    row["src_val_nll"] = calibrate.nll(logits, self.val_src.labels)
                if self.target_eval is not None:
                    tlogits, _ = forward_numpy(
                        backbone, self.target_eval.volumes, c.normalisation, self.device, c.eval_batch_size
                    )
                    row.update(target_scores(tlogits, logits))
            save_checkpoint(
                run.epoch_checkpoint(self.dir, epoch),
                backbone,
                c.backbone,
                self.backbone_kwargs,
                metadata,
                epoch=epoch,
                config=c.to_dict(),
            )
        return row, backbone

    def _finish(self, history: list[dict[str, Any]], partial: TrainResult) -> TrainResult:
        """Select label-free, calibrate on held-out source, store target feature statistics."""
        c = self.config
        selection = select_epoch(
            history,
            c.selection_tolerance,
            c.selection_criterion,
            trained_on_target_labels=self.needs_target_labels and c.oracle_target_labels,
        )
        epoch = selection["selected_epoch"]
        if len(self.val_src) == 0:  # select_epoch counts a missing accuracy as 0.0: none was measured
            for row in selection["epochs"]:
                row["src_val_acc"] = None
            selection["rule"] += "; no source validation data, so the target criterion alone"
        model, metadata, _ = load_checkpoint(run.epoch_checkpoint(self.dir, epoch))
        model.to(self.device)
        outputs: dict[int, tuple[np.ndarray, np.ndarray]] = {}

        def forward(domain: Domain) -> tuple[np.ndarray, np.ndarray]:
            """The selected model's (logits, features) of ``domain``, computed once per domain
            (the feature reference and the target histogram often read the same one)."""
            if id(domain) not in outputs:
                outputs[id(domain)] = forward_numpy(
                    model, domain.volumes, c.normalisation, self.device, c.eval_batch_size
                )
            return outputs[id(domain)]

        val_logits, _ = forward(self.val_src)
        temperature = 1.0
        if len(val_logits):
            temperature = calibrate.fit_temperature(val_logits, self.val_src.labels)
        metadata.temperature = temperature
        metadata.unknown_threshold = calibrate.unknown_threshold(val_logits, temperature, c.unknown_quantile)
        ref_domain, ref_name = self.target, "target"
        if ref_domain is None:
            if len(self.val_src) > 0 or self.train_src is None:
                ref_domain, ref_name = self.val_src, "source validation"
            else:
                ref_domain, ref_name = self.train_src, "source"
        _, ref_feats = forward(ref_domain)
        ref = calibrate.feature_reference(ref_feats)
        metadata.feature_mean = [float(v) for v in ref.mean]
        metadata.feature_var = [float(v) for v in ref.var]
        metadata.shift_reference = float(ref.shift_reference)
        metadata.extra = {
            RECIPE: self._recipe(),
            "selected_epoch": epoch,
            "selection_rule": selection["rule"],
            "unknown_quantile": c.unknown_quantile,
            "feature_reference": ref_name,
        }
        selection.update(
            {
                "temperature": temperature,
                "unknown_threshold": metadata.unknown_threshold,
                "val_nll_before": calibrate.nll(val_logits, self.val_src.labels) if len(val_logits) else None,
                "val_nll_after": (
                    calibrate.nll(val_logits, self.val_src.labels, temperature) if len(val_logits) else None
                ),
            }
        )
        selection["warnings"] = self._warnings(history, epoch)
        selection["method_hparams"] = self.method_hparams
        if self.tilt_summary is not None:
            selection["tilt_match"] = self.tilt_summary
        if self.snr_summary is not None:
            selection["snr_match"] = self.snr_summary
        if self.spectrum_summary is not None:
            selection["spectrum_match"] = self.spectrum_summary
        if self.pseudo_summary is not None:
            selection["template_labels"] = self.pseudo_summary
        if self.sim is not None:  # the classes made and the structure files skipped (and why)
            selection["source_structures"] = self.sim.structures_record()
        if self.target_eval is not None:
            self._target_histogram(forward(self.target_eval)[0])
        run.write_json(self.dir / "selection.json", selection)
        for line in selection["warnings"]:
            import sys

            again = " (as said at the start)" if line == self.early_warning else ""  # not a second finding
            print(f"cryoshift: warning: {line}{again}", file=sys.stderr)
        model_path = save_checkpoint(
            self.dir / RUN_MODEL,
            model,
            c.backbone,
            self.backbone_kwargs,
            metadata,
            epoch=epoch,
            config=c.to_dict(),
        )
        self._plots(history, model, val_logits)
        return dataclasses.replace(
            partial, model_path=model_path, selected_epoch=epoch, selection=selection, metadata=metadata
        )

    def _write_skipped(self) -> None:
        """skipped_items.csv: every target item this session left out, with its reason (the
        terminal names the first SKIPPED_SHOWN only), or no such file when none was. Why: the
        rest were recorded nowhere, and a target of many bad files could not be repaired."""
        path = self.dir / SKIPPED_ITEMS
        skipped = self.target.skipped if self.target is not None else []
        if skipped:
            write_text(path, skipped_table(skipped))
        elif path.is_symlink() or path.is_file():  # an earlier session's list is not this one's
            path.unlink()

    def _warnings(self, history: list[dict[str, Any]], epoch: int) -> list[str]:
        """selection.json's warnings (select.training_warnings); without source validation data
        the collapse warning claims nothing about the source classes."""
        return training_warnings(
            history, epoch, self._adapted_target_size(), len(self.val_src) > 0, len(self.class_names)
        )

    def _target_histogram(self, logits: np.ndarray) -> None:
        """target_classes.csv: how the selected model (its ``logits`` on ``target_eval``) splits the
        target among the classes."""
        shares = class_shares(logits, len(self.class_names))
        lines = ["class,count,share"] + [
            f"{name},{round(share * len(logits))},{share:.4f}"
            for name, share in zip(self.class_names, shares, strict=True)
        ]
        # the run folder may be received (train --resume): a link at the name is replaced, not followed
        write_text(self.dir / "target_classes.csv", "\n".join(lines) + "\n")

    def _plots(self, history: list[dict[str, Any]], model: nn.Module, val_logits: np.ndarray) -> None:
        from cryoshift.training import plots
        from cryoshift.training.evaluate import confusion_matrix

        c, out = self.config, self.dir / "plots"
        plots.plot_history(history, out / "losses.png")
        if len(val_logits):
            cm = confusion_matrix(self.val_src.labels, val_logits.argmax(1), len(self.class_names))
            plots.plot_confusion(
                cm,
                self.class_names,
                out / "confusion_source_val.png",
                "source validation (the only labels training sees)",
            )
        if self.target_eval is None or len(self.val_src) == 0:
            return
        first, _, _ = load_checkpoint(run.epoch_checkpoint(self.dir, int(history[0]["epoch"])))
        panels = []
        for title, net in (
            (f"epoch {int(history[0]['epoch'])}", first.to(self.device)),
            ("selected model", model),
        ):
            # one pose: a diagnostic picture, not worth four times the forwards (a quarter of a short
            # run's wall time went here)
            with one_pose(net):
                _, fs = forward_numpy(
                    net, self.val_src.volumes, c.normalisation, self.device, c.eval_batch_size
                )
                tl, ft = forward_numpy(
                    net, self.target_eval.volumes, c.normalisation, self.device, c.eval_batch_size
                )
            panels.append((title, fs, ft))
        # The view that shows a collapse: the selected model's target features by predicted class.
        plots.plot_embedding(panels, out / "embedding.png", target_classes=(tl.argmax(1), self.class_names))
