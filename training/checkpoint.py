"""Checkpoints: weights and plain config only, loadable with ``weights_only=True``.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts:

``format``          "cryoshift.checkpoint/1"
``backbone``        registry name, ``backbone_kwargs`` the keyword arguments it was built with
``state_dict``      the backbone's weights
``metadata``        :class:`cryoshift.runtime.metadata.ModelMetadata` as a dict
``epoch``, ``config`` what produced it (plain JSON-like values)
``extra``           optional dict (e.g. optimiser state for ``--resume``, only in run checkpoints)
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cryoshift.runtime.errors import InputError
from cryoshift.runtime.ledger import RESUME_HINT
from cryoshift.runtime.metadata import ModelMetadata, is_onnx
from cryoshift.runtime.mrc import content_kind
from cryoshift.runtime.outfiles import replacing

FORMAT_NAME = "cryoshift.checkpoint"
FORMAT = f"{FORMAT_NAME}/1"
RUN_MODEL = "model.pt"  # the label-free selected checkpoint inside a run directory


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    backbone: str,
    backbone_kwargs: dict[str, Any],
    metadata: ModelMetadata,
    epoch: int = 0,
    config: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": FORMAT,
        "backbone": backbone,
        "backbone_kwargs": dict(backbone_kwargs),
        "state_dict": state,
        "metadata": metadata.to_dict(),
        "epoch": int(epoch),
        "config": dict(config or {}),
        "extra": dict(extra or {}),
    }
    # a new temporary file, then renamed (runtime/outfiles.py): a killed run never leaves half a
    # checkpoint, and a link planted at the name (or at a fixed model.pt.tmp) is never written through
    try:
        with replacing(path, "wb") as fh:
            try:
                torch.save(payload, fh)
            except RuntimeError as exc:
                cause = _os_error(exc)
                if cause is None:
                    raise
                # as the OSError it is: replacing() drops the temporary file and names ``path``
                raise OSError(cause.errno, cause.strerror, cause.filename) from exc
    except OSError as exc:  # every epoch up to the last checkpoint written is kept: train --resume goes on
        raise OSError(exc.errno, f"{exc.strerror}; {RESUME_HINT}", exc.filename) from exc
    return path


def _os_error(exc: BaseException) -> OSError | None:
    """The OSError under a RuntimeError of torch.save (its zip writer, inline_container.cc, turns a
    failed write into "[enforce fail at inline_container.cc] unexpected pos ..." and chains the
    OSError); None when there is none (a real bug, kept as it is).

    Why: a full disk or file-size limit during ``train`` ended in a 40-line traceback."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        if isinstance(link, OSError):
            return link
        seen.add(id(link))
        link = link.__cause__ or link.__context__
    return None


def _refuse_run_in_training(run: Path) -> None:
    """A run folder that a ``train`` is writing now has no final model yet (or an older one that is
    about to be replaced): reading it would export or evaluate a model that is not the run's.
    Refused, naming the pid; a checkpoint file given by its path is read as it is."""
    from cryoshift.runtime.lock import TRAIN_LOCK, holder

    pid = holder(run, TRAIN_LOCK)
    if pid is not None:
        raise InputError(
            run,
            f"a train run (pid {pid}) is writing this folder; its {RUN_MODEL} is (re)written when "
            f"that run ends: wait for it, or give a checkpoint file by its path",
        )


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or the selected model of a run directory.

    A folder without ``model.pt`` (a run that stopped before selecting its model, or no run at
    all) is named as such, with its newest epoch checkpoint as the way on, and a ``model.pt`` that
    is a folder or a link to nothing as what it is: "RUN/model.pt: no such checkpoint" read as if
    the user had typed that path (export, evaluate, the Python API alike). A folder that a ``train``
    run is writing now is refused (:func:`_refuse_run_in_training`)."""
    from cryoshift.runtime.errors import not_a_file

    path = Path(path)
    if path.is_dir():
        _refuse_run_in_training(path)
        run, path = path, path / RUN_MODEL
        odd = not_a_file(path)
        if odd:
            raise InputError(path, f"{odd}, not a checkpoint file")
        if not path.exists():
            folder = run / "checkpoints"
            epochs = sorted(folder.glob("epoch_*.pt")) if folder.is_dir() else []
            if epochs:
                raise InputError(
                    run,
                    f"holds no {RUN_MODEL} (training stopped before it selected a model); "
                    f"give one of its epoch checkpoints instead, e.g. {epochs[-1]}",
                )
            raise InputError(
                run, f"is a folder without {RUN_MODEL}; give a training run directory or a .pt checkpoint"
            )
    if not path.is_file():
        raise InputError(path, "no such checkpoint (give a .pt file or a training run directory)")
    return path


def _load_failure(exc: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in one short line.

    torch's own message is a page of advice ending in the line that matters (which global the
    pickle asked for); only that line is kept, since the advice (load without weights_only)
    is exactly what must not be done with a file from elsewhere.
    """
    import re

    text = str(exc)
    key = re.search(r"unsupported GLOBAL (\S+)", text, re.IGNORECASE) or re.search(
        r"Unsupported global: GLOBAL (\S+)", text
    )
    if key:
        detail = f"unsupported GLOBAL {key.group(1)}"
    elif "weights only load failed" in text.lower() or "WeightsUnpickler error:" in text:
        # Keep the line that says what was refused; drop torch's advice around it.
        advice = (
            "weights only load failed",
            "re-running",
            "please file an issue",
            "check the documentation",
            "weightsunpickler error:",
            "weights_only",
        )
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        marker = "WeightsUnpickler error:"
        after = text.split(marker, 1)[-1].strip() if marker in text else ""
        candidates = after.splitlines()[:1] if after else lines
        kept = [ln for ln in candidates if not any(a in ln.lower() for a in advice)]
        detail = kept[0].split(". Please use", 1)[0].strip() if kept else "unsafe pickle"
    else:
        first = text.strip().splitlines()[0] if text.strip() else ""
        return f"not a readable weights-only checkpoint ({exc.__class__.__name__}: {first[:300]})"
    return (
        f"not a readable weights-only checkpoint: it holds Python objects other than tensors "
        f"({detail}); refused, cryoshift never runs code from a checkpoint"
    )


def _is_torch_archive(path: Path) -> bool:
    """A torch.save zip: every entry under one folder, a ``data.pkl`` among them."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return True  # damaged: torch.load's own refusal says more
    return any(n.count("/") == 1 and n.endswith("/data.pkl") for n in names)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = resolve_checkpoint(path)
    if is_onnx(path):  # torch.load would call it "Python objects other than tensors"
        raise InputError(
            path,
            "is an ONNX model (already exported), not a training checkpoint; export needs a "
            "training run directory or a checkpoint .pt",
        )
    with open(path, "rb") as fh:
        head = fh.read(4)
    # torch.save writes a zip archive (or, in its legacy format, a pickle: protocol byte 0x80); say
    # what anything else is rather than pass torch's unpickler error about an "operand"
    if not zipfile.is_zipfile(path) and not head.startswith(b"\x80"):
        if not head:
            kind = "the file is empty"
        elif head == b"PK\x03\x04":  # a zip's first entry without the directory at its end
            raise InputError(
                path,
                "not a readable weights-only checkpoint: a torch.save archive that is truncated or "
                "damaged (no zip directory at its end: an interrupted save or an incomplete copy)",
            )
        else:
            kind = "the file is an MRC volume" if content_kind(path) == "mrc" else f"it starts with {head!r}"
        raise InputError(path, f"not a readable weights-only checkpoint: {kind}, not a torch.save archive")
    if head.startswith(b"PK") and not _is_torch_archive(path):
        raise InputError(
            path,
            "not a readable weights-only checkpoint: a zip archive without torch.save's data.pkl "
            "(another kind of zip, e.g. a NumPy .npz), not a torch.save archive",
        )
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols before refusing
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise InputError(path, _load_failure(exc)) from exc
    found = payload.get("format") if isinstance(payload, dict) else None
    if isinstance(found, str) and found.startswith(FORMAT_NAME + "/") and found != FORMAT:
        raise InputError(
            path,
            f"checkpoint format {found!r} is not one this cryoshift reads ({FORMAT}); a checkpoint "
            "from a newer cryoshift needs that version",
        )
    if found != FORMAT:
        raise InputError(path, f"not a cryoshift checkpoint (expected format {FORMAT})")
    for key, kind in (("backbone", str), ("backbone_kwargs", dict), ("state_dict", dict), ("metadata", dict)):
        if not isinstance(payload.get(key), kind):
            found = "missing" if key not in payload else type(payload[key]).__name__
            raise InputError(
                path, f"corrupt cryoshift checkpoint: {key!r} should be a {kind.__name__}, found {found}"
            )
    check_checkpoint(payload, path)
    return payload


CORRUPT = "corrupt cryoshift checkpoint"


def check_checkpoint(payload: dict[str, Any], path: Path) -> ModelMetadata:
    """Refuse a checkpoint whose parts disagree, returning its metadata.

    Run by :func:`read_checkpoint`, so export, evaluate and ``--resume`` all refuse the same files:
    export alone refused some (a config that is not a dict, a box its network was not built for),
    while evaluate scored them, and nothing compared the metadata with the training config saved
    beside it, so an edited class order or normalisation was exported and scored as the model's."""
    config = checkpoint_config(payload, path)
    check_epoch(payload, config, path)
    check_finite_weights(payload["state_dict"], path)
    metadata = ModelMetadata.from_dict(payload["metadata"], path)
    check_built_box(payload, metadata, path)
    check_metadata_matches_config(metadata, config, path)
    return metadata


def checkpoint_config(payload: dict[str, Any], checkpoint: Path) -> dict[str, Any]:
    """The training config a checkpoint records (it names the datasets parity and calibration data
    are taken from, and a picks target's tomograms). Another type was a traceback (a list) or read
    wrongly (``tomograms`` as one string: each of its characters taken for a tomogram)."""
    config = payload.get("config")
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise InputError(checkpoint, f"{CORRUPT}: 'config' should be a dict, found {type(config).__name__}")
    tomograms = config.get("tomograms")
    if tomograms is not None and not (
        isinstance(tomograms, list) and all(isinstance(t, str) for t in tomograms)
    ):
        shown = repr(tomograms)[:60]
        raise InputError(
            checkpoint, f"{CORRUPT}: config 'tomograms' should be a list of paths, found {shown}"
        )
    return config


def check_epoch(payload: dict[str, Any], config: dict[str, Any], checkpoint: Path) -> None:
    """Refuse an ``epoch`` that is no epoch of its run (negative, not an integer, beyond the
    ``epochs`` its saved training config ran): export wrote it into export.json as the model's
    provenance, and evaluate and report compared it with selection.json. 0 is kept: it is
    :func:`save_checkpoint`'s default, for a model saved outside a run; a checkpoint without
    ``epoch`` states none and is left alone."""
    epoch = payload.get("epoch")
    if epoch is None:
        return
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        shown = repr(epoch)[:60]
        raise InputError(
            checkpoint, f"{CORRUPT}: 'epoch' should be an epoch number (0 or more), found {shown}"
        )
    epochs = config.get("epochs")
    if isinstance(epochs, int) and not isinstance(epochs, bool) and epoch > epochs > 0:
        raise InputError(
            checkpoint, f"{CORRUPT}: 'epoch' is {epoch}, but its training config ran {epochs} epochs"
        )


def check_finite_weights(state_dict: dict[str, Any], checkpoint: Path) -> None:
    """Refuse weights holding NaN/Inf: such a model answers NaN, and the parity check compares NaN
    with NaN (it reported "max |dlogit| nan ... agreement 100%") instead of naming the cause."""
    bad = [
        name
        for name, tensor in state_dict.items()
        if isinstance(tensor, torch.Tensor)
        and tensor.is_floating_point()
        and not bool(torch.isfinite(tensor).all())
    ]
    if bad:
        from cryoshift.training.run import RESUME

        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        # a run's resume state has no other copy: it is restored, or the run started afresh
        advice = (
            "restore it or start a new run"
            if checkpoint.name == RESUME
            else "use another checkpoint of the run"
        )
        raise InputError(
            checkpoint,
            f"checkpoint holds NaN/Inf weights ({bad[0]}{more}): the training run diverged, or the file "
            f"was damaged; {advice}",
        )


def check_built_box(payload: dict[str, Any], metadata: ModelMetadata, checkpoint: Path) -> None:
    """Refuse a checkpoint whose network was built for another box than its metadata states: a
    network of global pooling takes the metadata's box too, so the export went through and wrote a
    model that classified every subtomogram at a box it was not trained on, without a word."""
    built = payload["backbone_kwargs"].get("box_size")
    if built is not None and built != metadata.box_size:
        raise InputError(
            checkpoint,
            f"{CORRUPT}: its network was built for {built!r}^3 boxes but its metadata says "
            f"{metadata.box_size}^3",
        )


def check_metadata_matches_config(metadata: ModelMetadata, config: dict[str, Any], checkpoint: Path) -> None:
    """Refuse metadata that the training config saved in the same checkpoint contradicts.

    Export and evaluate read the metadata alone: a class order, normalisation or contrast edited
    there was exported (parity passes, both sides read the same edit) and scored with every class
    renamed. The config decides what it can: normalisation, method, backbone, a --box or
    --voxel-size given, and for a source of built-in structures the class names and contrast; the
    classes of a dataset source are in that dataset, not in the config, and are not compared."""
    for field, found, expected in _config_expectations(metadata, config):
        if found != expected:
            raise InputError(
                checkpoint,
                f"{CORRUPT}: its metadata's {field} ({_plain(found)}) contradicts the training config "
                f"saved with it ({_plain(expected)}): the file was edited or damaged; use the run's own "
                "checkpoint",
            )


def _config_expectations(metadata: ModelMetadata, config: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(field, metadata's value, value the config implies) for every field the config decides."""
    pairs: list[tuple[str, Any, Any]] = []
    for key, found in (("normalisation", metadata.normalisation), ("method", metadata.method)):
        if isinstance(config.get(key), str) and found:
            pairs.append((key, found, config[key]))
    if isinstance(config.get("backbone"), str) and metadata.backbone:
        pairs.append(("backbone", metadata.backbone, config["backbone"]))
    box = config.get("box")
    if isinstance(box, int) and not isinstance(box, bool):
        pairs.append(("box_size", metadata.box_size, box))
    pairs += _voxel_expectation(metadata, config)
    pairs += _builtin_source_expectations(metadata, config)
    return pairs


def _voxel_expectation(metadata: ModelMetadata, config: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """The voxel size a --voxel-size implies; a dataset source's own may differ from it within the
    tolerance training accepts, so only a larger difference counts."""
    from cryoshift.runtime.contract import VOXEL_TOLERANCE, voxel_mismatch

    given = config.get("voxel_size")
    if isinstance(given, bool) or not isinstance(given, int | float):
        return []
    mismatch = voxel_mismatch(float(given), metadata.voxel_size)
    if mismatch is None or mismatch <= VOXEL_TOLERANCE:
        return []
    return [("voxel_size", metadata.voxel_size, float(given))]


def _builtin_source_expectations(
    metadata: ModelMetadata, config: dict[str, Any]
) -> list[tuple[str, Any, Any]]:
    """Class names, contrast and voxel size of a source of built-in structures only: they follow
    from its names and the simulation preset, with no file to read."""
    from cryoshift.training.data import DEFAULT_VOXEL_SIZE
    from cryoshift.training.simulate.builtin import BUILTIN_NAMES
    from cryoshift.training.simulate.config import PRESETS

    source = config.get("source")
    if not isinstance(source, str) or not source:
        return []
    names: list[str] = []
    for item in source.split(","):
        if item == "builtin":
            names += BUILTIN_NAMES
        elif item.startswith("builtin:"):
            names.append(item.split(":", 1)[1])
        else:
            return []  # files or a dataset: their names are not in the config
    pairs: list[tuple[str, Any, Any]] = [("class_names", list(metadata.class_names), names)]
    preset = PRESETS.get(str(config.get("sim_preset")))
    if preset is not None:
        pairs.append(("contrast", metadata.contrast, preset.contrast))
    if config.get("voxel_size") is None:
        pairs.append(("voxel_size", metadata.voxel_size, DEFAULT_VOXEL_SIZE))
    return pairs


def _plain(value: Any) -> str:
    """A value as a refusal shows it: a list of names joined, anything else as repr."""
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return repr(value)


SHOWN_KEYS = 3  # weight names a mismatch names per kind; the rest are counted


def state_dict_mismatch(model: nn.Module, state: dict[str, Any]) -> str | None:
    """How ``state`` (weights by name) does not fit ``model``, in one short line; None if it fits.

    torch's own message lists every missing and unexpected key and every shape on one line that
    ran to pages for a backbone of another family; here each kind is counted, a few named. Integer
    weights where the network has floating-point ones are refused too: torch casts them back
    silently, and a model of truncated weights (mostly 0) was exported and scored."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    reshaped = [
        f"{k} {_shape(state[k])} saved, {_shape(own[k])} built"
        for k in own
        if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    retyped = [
        f"{k} {_dtype(state[k])} saved, {_dtype(own[k])} built"
        for k in own
        if isinstance(state.get(k), torch.Tensor)
        and own[k].is_floating_point()
        and not state[k].is_floating_point()
    ]
    kinds = (
        (missing, "missing"),
        (unexpected, "unexpected"),
        (reshaped, "of another shape"),
        (retyped, "not floating point"),
    )
    parts = [_listed(keys, what) for keys, what in kinds if keys]
    return "; ".join(parts) or None


def _shape(tensor: Any) -> str:
    return "x".join(str(n) for n in tensor.shape) or "scalar"


def _listed(items: list[str], what: str) -> str:
    """'3 weights missing (a, b, c)' or '40 weights unexpected (a, b, c and 37 more)'."""
    more = f" and {len(items) - SHOWN_KEYS} more" if len(items) > SHOWN_KEYS else ""
    noun = "weight" if len(items) == 1 else "weights"
    return f"{len(items)} {noun} {what} ({', '.join(items[:SHOWN_KEYS])}{more})"


def load_weights(model: nn.Module, state: dict[str, Any]) -> None:
    """``model.load_state_dict(state)``, refusing weights that do not fit with a short
    ValueError (:func:`state_dict_mismatch`) rather than torch's list of every key."""
    problem = state_dict_mismatch(model, state)
    if problem:
        raise ValueError(problem)
    model.load_state_dict(state)


def load_checkpoint(path: str | Path) -> tuple[nn.Module, ModelMetadata, dict[str, Any]]:
    """Rebuild the backbone from a checkpoint; returns (model in eval mode, metadata, payload)."""
    from cryoshift.training.backbones import create_backbone

    payload = read_checkpoint(path)
    metadata = ModelMetadata.from_dict(payload["metadata"], path)
    try:
        model = create_backbone(payload["backbone"], **payload["backbone_kwargs"])
    except (TypeError, ValueError, KeyError) as exc:
        if isinstance(exc, InputError):
            raise InputError(path, exc.reason) from exc
        raise InputError(path, f"cannot rebuild backbone {payload['backbone']!r}: {exc}") from exc
    try:
        load_weights(model, payload["state_dict"])
    except (RuntimeError, TypeError, ValueError) as exc:
        raise InputError(path, f"weights do not fit backbone {payload['backbone']!r}: {exc}") from exc
    model.eval()
    return model, metadata, payload


def _dtype(tensor: torch.Tensor) -> str:
    """'int32' for torch.int32: the name a refusal shows."""
    return str(tensor.dtype).removeprefix("torch.")


# --------------------------------------------------------------------------- calibration


def calibration_note(
    metadata: ModelMetadata, checkpoint: Path, config: dict[str, Any] | None = None
) -> str | None:
    """What ``checkpoint``'s metadata lacks of what training's calibration gives a model, what
    that means for classify, and which model has it; None when it lacks nothing. ``config`` is
    the training config the checkpoint records (it tells why a model.pt lacks calibration).

    Training calibrates only the selected model (model.pt): the temperature and the unknown
    threshold are fitted on held-out source volumes (none with --val-fraction 0: threshold 0),
    the shift-score reference is the adapted target's features; epoch checkpoints have neither."""
    lacking = []
    if metadata.unknown_threshold == 0.0:
        temperature = "temperature 1, " if metadata.temperature == 1.0 else ""
        lacking.append(f"no calibration ({temperature}unknown threshold 0: classify marks nothing unknown)")
    if not metadata.feature_mean:
        lacking.append("no shift-score reference (classify writes NaN shift scores)")
    if not lacking:
        return None
    where = _calibrated_model(checkpoint, config or {})
    return f"{checkpoint} is not calibrated: it has {' and '.join(lacking)}; {where}"


VAL_FRACTION_WAY = "train with --val-fraction above 0 (held-out source volumes) to calibrate"


def _calibrated_model(checkpoint: Path, config: dict[str, Any]) -> str:
    """Where the calibrated model of an uncalibrated ``checkpoint`` is, in words: its run's
    model.pt (for an epoch checkpoint or resume.pt), unless that lacks calibration too (a run
    trained with --val-fraction 0, whose model.pt is ``checkpoint`` itself or beside it)."""
    from cryoshift.training.run import CHECKPOINTS

    run_model = checkpoint.parent.parent / RUN_MODEL
    if checkpoint.name == RUN_MODEL:
        return _why_run_model_uncalibrated(config)
    if checkpoint.parent.name != CHECKPOINTS or not run_model.is_file():
        return f"a training run's {RUN_MODEL} is its calibrated model"
    try:
        calibrated = ModelMetadata.from_dict(read_checkpoint(run_model)["metadata"]).unknown_threshold > 0
    except InputError:
        calibrated = False
    if calibrated:
        return f"the run's {run_model} is the calibrated model: use that"
    return f"the run's {run_model} is not calibrated either (--val-fraction 0?); {VAL_FRACTION_WAY}"


def _why_run_model_uncalibrated(config: dict[str, Any]) -> str:
    """Why a model.pt lacks calibration, by the training config it records: a run that held
    source volumes out calibrates its model.pt, so one without calibration is most likely an
    epoch checkpoint copied over it (it was blamed on --val-fraction 0 all the same)."""
    held_out = config.get("val_fraction")
    if isinstance(held_out, int | float) and not isinstance(held_out, bool) and held_out > 0:
        return (
            f"its run held source volumes out (--val-fraction {held_out:g}), so this is likely an "
            f"epoch checkpoint (not the run's calibrated {RUN_MODEL}?); restore that to export it"
        )
    return f"its run held no source volumes out (--val-fraction 0?); {VAL_FRACTION_WAY}"
