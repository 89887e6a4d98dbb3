"""Score a model on labelled data: metrics in numpy, predictions from a checkpoint or ONNX.

This is the ONLY place where target labels are read (training and model selection never do).
Given a run directory it also scores every epoch checkpoint, so the report can say which
epoch the labels would have chosen and how far the label-free choice was from it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cryoshift.runtime.errors import InputError, check_out_folder
from cryoshift.runtime.metadata import ModelMetadata, is_onnx, read_onnx_metadata
from cryoshift.runtime.outfiles import write_text
from cryoshift.runtime.polarity import say, volumes_warning
from cryoshift.runtime.scoring import softmax
from cryoshift.training.calibrate import nll

# --------------------------------------------------------------------------- metrics

# What accuracy and macro-F1 score, said with them (evaluation.json's "scored", evaluate's title):
# ``cryoshift report`` also gives the accuracy after unknown rejection, which is lower wherever a
# rejected volume's best class was right, and the two were read as one number.
SCORED = (
    "the best class (argmax) of every volume, unknown rejection not applied (as the best_class "
    "column of classify's predictions)"
)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts C[i, j] of true class i predicted as j."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)), 1)
    return cm


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-class precision/recall/F1/support from a confusion matrix.

    scikit-learn's convention (``f1_score(average="macro", labels=None)``): macro-F1 averages over
    the classes present in ``y_true`` or ``y_pred``. Averaging over the true classes alone ignored
    the false positives into a class absent from the labels: 35 of 62 predictions into such a class
    left macro-F1 (0.418) above accuracy (0.355). A class the labels lack but the model predicts has
    recall and F1 0 and counts; one never predicted has precision 0 (sklearn's zero_division=0). A
    class absent from both has no precision, recall or F1 (None: "n/a", JSON null, not 0.000) and
    is left out of the average. Accuracy and macro-F1 are 0.0 when there are no samples.
    """
    k = len(class_names)
    y_true = np.asarray(y_true, dtype=int)
    y_pred = np.asarray(y_pred, dtype=int)
    cm = confusion_matrix(y_true, y_pred, k)
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = (support > 0) | (predicted > 0)
    per_class = {
        name: {
            "precision": float(precision[i]) if present[i] else None,
            "recall": float(recall[i]) if present[i] else None,
            "f1": float(f1[i]) if present[i] else None,
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    }
    return {
        "n": len(y_true),
        "accuracy": float(tp.sum() / max(len(y_true), 1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "class_names": list(class_names),
    }


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, bins: int = 10) -> float:
    """ECE with equal-width confidence bins."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(y_true)
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in itertools.pairwise(edges):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


# --------------------------------------------------------------------------- predictions


@dataclass
class Predictions:
    logits: np.ndarray  # (N, K)
    features: np.ndarray  # (N, F)
    metadata: ModelMetadata


def check_box(volumes: np.ndarray, metadata: ModelMetadata, model: str | Path) -> None:
    shape = tuple(volumes.shape[1:])
    if shape != (metadata.box_size,) * 3:
        shown = "x".join(str(s) for s in shape)
        raise InputError(model, f"takes {metadata.box_size}^3 boxes but the data has {shown} boxes")


def predict_checkpoint(
    path: str | Path, volumes: np.ndarray, batch_size: int = 64, device: str = "cpu"
) -> Predictions:
    """Run a weights-only checkpoint (file or run directory) on raw volumes (N, D, D, D)."""
    from cryoshift.training.checkpoint import load_checkpoint
    from cryoshift.training.forward import forward_numpy

    model, metadata, _ = load_checkpoint(path)
    check_box(volumes, metadata, path)
    model.to(device)
    logits, feats = forward_numpy(model, volumes, metadata.normalisation, device, batch_size)
    if not len(logits):
        logits = np.zeros((0, metadata.num_classes))
    check_logit_count(logits, metadata, path)
    return Predictions(logits, feats, metadata)


def check_logit_count(logits: np.ndarray, metadata: ModelMetadata, model: str | Path | None) -> None:
    """Refuse a network whose logits are not one per class its metadata names; export and
    evaluate both call it, so both refuse the same models in the same words.

    Export refused such a checkpoint while evaluate scored it: a name without a logit became a
    row of "n/a", and a name more or less shifts which logit is read as which class."""
    if logits.ndim != 2 or logits.shape[1] != metadata.num_classes:
        shape = (1, *logits.shape[1:])
        raise InputError(
            model,
            f"the network's logits have shape {shape} but the metadata names {metadata.num_classes} "
            f"classes ({', '.join(metadata.class_names)})",
        )


def predict_onnx(
    path: str | Path, volumes: np.ndarray, batch_size: int = 64, device: str = "cpu"
) -> Predictions:
    """Run an exported ONNX model with the runtime's backends (normalisation is inside the graph):
    ``cpu``, or ``cuda[:N]`` through onnxruntime's CUDA provider, which refuses in one line where
    onnxruntime-gpu or the GPU is missing.

    "features" is optional for scoring (classify accepts a model without it): without it the
    report has no feature-based numbers, never an onnxruntime traceback.
    """
    from cryoshift.runtime.backends import available_backends, load_model

    gpu = device.startswith("cuda")
    device_id = int(device.partition(":")[2] or 0) if gpu else 0
    if gpu and "cuda" not in available_backends():  # the backends' own advice names classify's --backend
        raise InputError(
            path,
            f"--device {device} needs onnxruntime with CUDAExecutionProvider, which this install lacks: "
            "pip install 'cryoshift[gpu]' (or use --device cpu)",
        )
    model = load_model(path, backend="cuda" if gpu else "cpu", batch_size=batch_size, device_id=device_id)
    check_box(volumes, model.metadata, path)
    logits, feats = [], []
    for start in range(0, len(volumes), batch_size):
        out = model.predict(np.asarray(volumes[start : start + batch_size], dtype=np.float32)[:, None])
        logits.append(out[0])
        feats.append(out[1])
    if not logits:
        return Predictions(np.zeros((0, model.metadata.num_classes)), np.zeros((0, 0)), model.metadata)
    return Predictions(np.concatenate(logits), np.concatenate(feats), model.metadata)


def predict(model: str | Path, volumes: np.ndarray, batch_size: int = 64, device: str = "cpu") -> Predictions:
    """Dispatch on the model path: ``.onnx`` -> onnxruntime, else a checkpoint or run directory."""
    model = Path(model)
    if is_onnx(model):
        return predict_onnx(model, volumes, batch_size, device)
    return predict_checkpoint(model, volumes, batch_size, device)


# --------------------------------------------------------------------------- evaluation


def names_to_indices(
    label_names: Sequence[str], model_classes: Sequence[str], source: str | Path
) -> np.ndarray:
    """Per-sample class names -> model class indices (a name that is no class is refused:
    :func:`~cryoshift.runtime.labelled_picks.labels_not_classes`)."""
    from cryoshift.runtime.labelled_picks import labels_not_classes

    index = {name: i for i, name in enumerate(model_classes)}
    missing = labels_not_classes(label_names, model_classes)
    if missing:
        raise InputError(source, f"classes {missing} are not classes of the model ({list(model_classes)})")
    return np.array([index[n] for n in label_names], dtype=int)


def score_predictions(pred: Predictions, labels: np.ndarray) -> dict[str, Any]:
    """All metrics of one model on labelled data (labels already in model class order)."""
    meta = pred.metadata
    y_pred = pred.logits.argmax(axis=1)
    out = {"scored": SCORED, **classification_metrics(labels, y_pred, meta.class_names)}
    probs = softmax(pred.logits, meta.temperature)
    out["nll"] = nll(pred.logits, labels, meta.temperature)
    out["ece"] = expected_calibration_error(probs, labels)
    confident = probs.max(axis=1) if len(probs) else np.ones(0)
    out["unknown_fraction"] = float((confident < meta.unknown_threshold).mean()) if len(probs) else 0.0
    return out


def finite_predictions(
    pred: Predictions, labels: np.ndarray, model: str | Path
) -> tuple[Predictions, np.ndarray, int]:
    """The predictions and labels of the volumes whose logits are all finite, and how many were not.

    Why: classify makes such a volume an error row, but evaluate scored NaN logits as predictions
    (argmax of NaN is class 0: "accuracy 0.500", "NLL nan", a bare NaN in evaluation.json). Those
    volumes failed; the metrics are of the others. When every volume failed there is nothing to
    score: refused in one line naming the model."""
    ok = np.isfinite(pred.logits).all(axis=1)
    failed = int(len(ok) - ok.sum())
    if not failed:
        return pred, labels, 0
    if not ok.any():
        raise InputError(
            model,
            f"the model's output is not finite (NaN or infinite logits) for all {len(ok)} volumes: "
            "nothing to score",
        )
    features = pred.features[ok] if len(pred.features) == len(ok) else pred.features
    return Predictions(pred.logits[ok], features, pred.metadata), labels[ok], failed


def failed_note(failed: int, total: int) -> str:
    """The report's one line on volumes left out by :func:`finite_predictions`."""
    return (
        f"{failed} of {total} volumes failed: the model's output is not finite for them (NaN or "
        f"infinite logits); the metrics are of the other {total - failed}"
    )


def json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinite float made None: evaluation.json is strict JSON (a bare
    NaN is not JSON, and other readers refuse it)."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def checkpoint_epochs(run_dir: Path) -> list[tuple[int, Path]]:
    """The epoch checkpoints of a run directory, in epoch order."""
    out = []
    for path in sorted((run_dir / "checkpoints").glob("epoch_*.pt")):
        try:
            out.append((int(path.stem.split("_")[1]), path))
        except (IndexError, ValueError):
            continue
    return out


def evaluate_run(
    run_dir: Path, volumes: np.ndarray, label_names: Sequence[str], batch_size: int = 64, device: str = "cpu"
) -> dict[str, Any]:
    """Accuracy per epoch checkpoint, the epoch the labels would pick, and the label-free gap.

    A checkpoint that cannot be read is skipped and listed under ``skipped_epochs`` (epoch, path,
    reason); a damaged selection.json leaves the label-free choice unknown (``selected_epoch``
    null, its reason under ``selection_error``) rather than failing the evaluation."""
    selected, selection_error = _selected_epoch(run_dir / "selection.json")
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for epoch, path in checkpoint_epochs(run_dir):
        try:  # batch rule: one damaged epoch checkpoint is reported, the others are still scored
            pred = predict_checkpoint(path, volumes, batch_size, device)
            labels = names_to_indices(label_names, pred.metadata.class_names, path)
            pred, labels, failed = finite_predictions(pred, labels, path)
        except InputError as exc:
            skipped.append({"epoch": epoch, "path": str(path), "reason": exc.reason})
            continue
        m = classification_metrics(labels, pred.logits.argmax(axis=1), pred.metadata.class_names)
        row = {"epoch": epoch, "accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}
        rows.append({**row, "failed": failed} if failed else row)
    extra: dict[str, Any] = {"skipped_epochs": skipped}
    if selection_error:
        extra["selection_error"] = selection_error
    if not rows:
        return {"epochs": [], "oracle_epoch": None, "selected_epoch": selected, **extra}
    best = max(rows, key=lambda r: (r["accuracy"], -r["epoch"]))
    chosen = next((r for r in rows if r["epoch"] == selected), None)
    return {
        "epochs": rows,
        "selected_epoch": selected,
        "selected_accuracy": chosen["accuracy"] if chosen else None,
        "oracle_epoch": best["epoch"],
        "oracle_accuracy": best["accuracy"],
        "selection_gap": (best["accuracy"] - chosen["accuracy"]) if chosen else None,
        **extra,
    }


def check_selection_of_run(run_dir: Path) -> None:
    """Refuse a run whose selection.json names another epoch than its model.pt was saved at.

    Training writes both from one choice; when they disagree one was replaced (an epoch
    checkpoint over model.pt) or copied from another run, and evaluate printed selection.json's
    epoch as the label-free choice, beside the accuracy of a model.pt of another epoch, and a
    "gap" between them. A selection.json that cannot be read is left to :func:`evaluate_run`."""
    from cryoshift.training.checkpoint import RUN_MODEL, read_checkpoint

    stored, model = run_dir / "selection.json", run_dir / RUN_MODEL
    selected, _ = _selected_epoch(stored)
    if selected is None or not model.is_file():
        return
    try:
        epoch = read_checkpoint(model).get("epoch")
    except InputError:
        return  # a damaged model.pt of a --run: evaluate_run scores the run's epochs without it
    if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch != selected:
        raise InputError(
            stored,
            f"selected_epoch is {selected}, but {model} was saved at epoch {epoch}: one of them was "
            "replaced or copied from another run; restore the run's own selection.json and model.pt",
        )


def _selected_epoch(path: Path) -> tuple[int | None, str | None]:
    """The epoch training chose (selection.json), or None and why it could not be read."""
    from cryoshift.runtime.jsonfile import read_json_object

    if not path.is_file():
        return None, None
    try:
        value = read_json_object(path, "selection file").get("selected_epoch")
    except InputError as exc:
        return None, str(exc)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        return None, f"{path}: selected_epoch is {value!r}, not an epoch number"
    return value, None


def _model_metadata(model: Path) -> ModelMetadata:
    """A model's metadata, read before any data: labelled picks are cropped at its box, and the
    data's voxel size and contrast are checked against its own, as classify does."""
    if is_onnx(model):
        return read_onnx_metadata(model)
    from cryoshift.training.checkpoint import read_checkpoint, resolve_checkpoint

    return ModelMetadata.from_dict(read_checkpoint(model)["metadata"], resolve_checkpoint(model))


# What a model states about its making, compared with its --run's: every checkpoint and export of
# one run states the same (calibration and precision differ between them, so they are not compared).
_RUN_IDENTITY = ("class_names", "box_size", "voxel_size", "method", "backbone", "normalisation")


def check_model_of_run(model: Path, run_dir: Path, meta: ModelMetadata) -> None:
    """Refuse a --run that did not make ``model`` (``meta``: its metadata).

    Its epochs were scored beside the model and a "label-free choice ... gap" line compared the
    run's choice with a model it never made. The model is the run's when it is one of the run's
    files, or when what it records (classes, box, method, backbone, data fingerprints, and for a
    checkpoint its training config) is what the run's own model or epoch checkpoints record; an
    export of any of them (ONNX) records the same."""
    if _inside(model, run_dir):
        return
    reference, where = _run_reference(run_dir)
    if reference is None:
        return  # a run with no readable checkpoint: check_options / evaluate_run say so
    ours, theirs = meta.to_dict(), reference.to_dict()
    differ = [key for key in _RUN_IDENTITY if ours[key] != theirs[key]]
    shared = set(meta.data_fingerprints) & set(reference.data_fingerprints)
    differ += [
        f"{key} data"
        for key in sorted(shared)
        if meta.data_fingerprints[key] != reference.data_fingerprints[key]
    ]
    if not differ and not is_onnx(model):
        differ = _config_differences(model, run_dir)
    if differ:
        raise InputError(
            model,
            f"was not made by the --run {run_dir}: its {', '.join(differ[:4])} "
            f"{'differs' if len(differ[:4]) == 1 else 'differ'} from the run's "
            f"({where}); give the run's own model (or an export of it) with --run, or leave --run out",
        )


def _inside(model: Path, run_dir: Path) -> bool:
    """Whether ``model`` is the run folder itself or one of its files (model.pt, a checkpoint)."""
    try:
        model, run_dir = model.resolve(), run_dir.resolve()
    except OSError:
        return False
    return model == run_dir or run_dir in model.parents


def _run_reference(run_dir: Path) -> tuple[ModelMetadata | None, str]:
    """The metadata a run's models record, and which file it was read from: model.pt, else the
    newest epoch checkpoint (a run stopped before it selected a model)."""
    from cryoshift.training.checkpoint import RUN_MODEL, read_checkpoint

    candidates = [run_dir / RUN_MODEL] + [path for _, path in reversed(checkpoint_epochs(run_dir))]
    for path in candidates:
        if not path.is_file():
            continue
        try:
            return ModelMetadata.from_dict(read_checkpoint(path)["metadata"], path), str(path)
        except InputError:
            continue  # a damaged one: the next
    return None, ""


def _config_differences(model: Path, run_dir: Path) -> list[str]:
    """The training settings a checkpoint records that differ from its --run's config.json (the
    settings a resume may change, such as --epochs, not counted): two runs on the same data
    differ only there (a seed, a learning rate)."""
    differ = _setting_differences(model, run_dir)
    return [f"training config ({'; '.join(differ[:2])})"] if differ else []


def _setting_differences(model: Path, run_dir: Path) -> list[str]:
    """Each setting of ``run_dir``'s config.json that ``model``'s saved config differs in, as
    'key=saved in it, stored in config.json'; none when either config is missing."""
    from cryoshift.runtime.jsonfile import read_json_object
    from cryoshift.training import run
    from cryoshift.training.checkpoint import read_checkpoint

    saved = read_checkpoint(model).get("config")
    stored = run_dir / "config.json"
    if not isinstance(saved, dict) or not saved or not stored.is_file():
        return []
    return run.resume_state_mismatch(saved, read_json_object(stored, "training config (config.json)"))


# What evaluation.json's "training" records of how the model was made, so two evaluations can be
# compared without opening their runs: the method's hyper-parameters (defaults included), the seed,
# the recipe's target-aware parts (template labels, spectrum matching), whether target labels were
# trained on, and the versions that trained it.
TRAINING_FIELDS = (
    "method_hparams",
    "seed",
    "template_labels",
    "spectrum_match",
    "uses_target_labels",
    "cryoshift_version",
    "torch_version",
)


def _read_run_json(path: Path) -> dict[str, Any]:
    """A run file's JSON object, or {} when it is missing or unreadable (then its facts are
    recorded as unknown, never guessed)."""
    from cryoshift.runtime.jsonfile import read_json_object

    if not path.is_file():
        return {}
    try:
        return read_json_object(path, "training run record")
    except InputError:
        return {}


def uncalibrated_note(model: Path, meta: ModelMetadata) -> str | None:
    """Export's "is not calibrated" note for a checkpoint (an epoch's, resume.pt, a run trained
    with --val-fraction 0) whose ``meta`` lacks training's calibration; None for a calibrated one
    or an ONNX model. Why: evaluate of an epoch checkpoint reported temperature-1 NLL/ECE and
    "unknown 0.0 %" (it has no threshold) as if they were the model's, where export said why."""
    if is_onnx(model):
        return None
    from cryoshift.training.checkpoint import calibration_note, resolve_checkpoint

    return calibration_note(meta, resolve_checkpoint(model), _checkpoint_config(model))


def _checkpoint_config(model: Path) -> dict[str, Any]:
    """The training config a checkpoint (file or run folder) records; {} for ONNX or none."""
    if is_onnx(model):
        return {}
    from cryoshift.training.checkpoint import read_checkpoint, resolve_checkpoint

    try:
        config = read_checkpoint(resolve_checkpoint(model)).get("config")
    except InputError:
        return {}
    return config if isinstance(config, dict) else {}


def training_record(model: Path, meta: ModelMetadata, run_dir: Path | None = None) -> dict[str, Any]:
    """How ``model`` was trained, read from what its run wrote: selection.json (the method's
    hyper-parameters with defaults, whether target labels were used), config.json (seed, template
    labels, spectrum matching) and versions.json (cryoshift, torch, plugins: the first session's, and
    every session's when a --resume ran under others).

    The run is the model's own folder (a run folder, its model.pt or an epoch checkpoint) or
    ``run_dir`` (evaluate's --run, already checked to have made it). A model outside a run records
    what it holds itself (a checkpoint's config: the ``--hparam`` values given, not the defaults
    then in force; an ONNX model: its metadata) and lists the rest under ``unknown``; nothing is
    filled in from today's defaults, which may differ from the ones it was trained with.

    Why: evaluation.json had the method alone, so comparing two evaluations meant opening each
    run's selection.json, and a ``source-only`` model trained with template-labelled target
    volumes read as the method alone."""
    run = run_dir
    if run is None and model.is_dir():
        run = model
    elif run is None and not is_onnx(model):
        run = run_of_checkpoint(model)
    selection = _read_run_json(run / "selection.json") if run is not None else {}
    config = _read_run_json(run / "config.json") if run is not None else {}
    from cryoshift.training.run import VERSIONS

    versions = _read_run_json(run / VERSIONS) if run is not None else {}
    names = ("selection.json", "config.json", VERSIONS)
    read = [str(run / name) for name in names if (run / name).is_file()] if run is not None else []
    if not config:
        config = _checkpoint_config(model)
        if config:
            read.append(f"{model} (its training config)")
    record: dict[str, Any] = {"method": meta.method, "run": str(run) if run is not None else None}
    hparams = selection.get("method_hparams")
    record["method_hparams"] = hparams if isinstance(hparams, dict) else None
    given = config.get("method_kwargs")
    if record["method_hparams"] is None and isinstance(given, dict):
        record["method_hparams_given"] = given  # --hparam values only; the defaults are not recorded
    for key in ("seed", "template_labels", "spectrum_match"):
        record[key] = config.get(key)
    uses = selection.get("uses_target_labels")
    if uses is None and "oracle_target_labels" in config:  # trained on them only by --oracle-target-labels
        uses = bool(config["oracle_target_labels"]) and config.get("method") == "oracle"
    record["uses_target_labels"] = uses
    record["cryoshift_version"] = versions.get("cryoshift") or meta.cryoshift_version or None
    record["torch_version"] = versions.get("torch")
    if versions.get("plugins"):
        record["plugins"] = versions["plugins"]
    sessions = _session_versions(versions)
    if sessions:
        record["sessions"] = sessions
    if versions.get("earlier_sessions"):
        record["earlier_sessions"] = versions["earlier_sessions"]
    record["read_from"] = read
    record["unknown"] = [key for key in TRAINING_FIELDS if record.get(key) is None]
    return record


# What each session of a run is listed with in evaluation.json when the sessions' versions differ.
SESSION_FIELDS = ("started", "first_epoch", "cryoshift", "torch", "plugins")


def _session_versions(versions: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The sessions of a run's versions.json (its start and each --resume, training/run.py
    ``session_versions``), each with :data:`SESSION_FIELDS`, when they ran under different cryoshift,
    torch or plugin versions; None when they all ran under the same ones (or none are listed).

    Why: the top of versions.json is the run's FIRST session, so a run resumed under another
    cryoshift or torch read as trained wholly under the first one's."""
    from cryoshift.training.run import SESSIONS

    listed = versions.get(SESSIONS)
    if not isinstance(listed, list):
        return None
    sessions = [
        {key: entry.get(key) for key in SESSION_FIELDS if key != "plugins" or entry.get(key)}
        for entry in listed
        if isinstance(entry, dict)
    ]
    kinds = {
        json.dumps([s.get(k) for k in ("cryoshift", "torch", "plugins")], sort_keys=True) for s in sessions
    }
    return sessions if len(kinds) > 1 else None


def training_summary(record: dict[str, Any]) -> str:
    """One line of :func:`training_record` for evaluate's output (``unknown`` where not recorded)."""

    def shown(key: str) -> str:
        value = record.get(key)
        return "unknown" if value is None else str(value)

    hparams = record.get("method_hparams")
    if hparams is None and record.get("method_hparams_given") is not None:
        params = ", ".join(f"{k}={v}" for k, v in record["method_hparams_given"].items())
        params = f"given {params or 'none'}; defaults unknown"
    elif hparams is None:
        params = "unknown"
    else:
        params = ", ".join(f"{k}={v}" for k, v in hparams.items()) or "none"
    return (
        f"trained: method {record.get('method')} ({params}), seed {shown('seed')}, template labels "
        f"{shown('template_labels')}, spectrum matching {shown('spectrum_match')}, target labels "
        f"{shown('uses_target_labels')}; cryoshift {shown('cryoshift_version')}, "
        f"torch {shown('torch_version')}{_resumed_under(record)}"
    )


def _resumed_under(record: dict[str, Any]) -> str:
    """', resumed under cryoshift X, torch Y (from epoch N)' for each later session of a run whose
    sessions ran under different versions (:func:`_session_versions`), else ''."""
    later = record.get("sessions") or []
    return "".join(
        f"; resumed from epoch {s.get('first_epoch')} under cryoshift {s.get('cryoshift')}, "
        f"torch {s.get('torch')}"
        for s in later[1:]
    )


def run_of_checkpoint(checkpoint: Path) -> Path | None:
    """The run folder a checkpoint file sits in as one of its own (RUN/model.pt or a file of
    RUN/checkpoints/), or None for a checkpoint anywhere else."""
    from cryoshift.training.checkpoint import RUN_MODEL
    from cryoshift.training.run import CHECKPOINTS

    if checkpoint.name == RUN_MODEL:
        return checkpoint.parent
    if checkpoint.parent.name == CHECKPOINTS:
        return checkpoint.parent.parent
    return None


def check_made_by_its_run(checkpoint: Path) -> None:
    """Refuse a checkpoint in a run folder that the run's config.json did not make.

    A model.pt copied (or linked) from another run was exported and evaluated as this run's: the
    run's target no longer fitted it and export checked parity on random volumes without saying
    why; evaluate printed the run's label-free choice and gap beside another run's model. Export
    and evaluate both call this; a checkpoint outside a run has nothing to be compared with."""
    run_dir = run_of_checkpoint(checkpoint)
    differ = _setting_differences(checkpoint, run_dir) if run_dir is not None else []
    if differ:
        keys = [item.split("=", 1)[0] for item in differ]
        verb = "differs" if len(keys) == 1 else "differ"
        raise InputError(checkpoint, f"was not made by this run ({', '.join(keys)} {verb} from config.json)")


def check_dataset_fits(ds: Any, meta: ModelMetadata, ignore_voxel_size: bool = False) -> list[str]:
    """Refuse a dataset the model was not made for, with classify's words and tolerance: another
    contrast (the model's answers would be meaningless) or a voxel size off by more than
    VOXEL_TOLERANCE (unless ``ignore_voxel_size``). Returns notes: the reader's (the stack
    header's voxel size standing in for dataset.json's), or a voxel size the model lacks."""
    from cryoshift.runtime.contract import VOXEL_TOLERANCE, voxel_mismatch

    where = Path(ds.path) / "dataset.json"
    if ds.contrast != meta.contrast:
        raise InputError(
            where,
            f"data contrast is {ds.contrast!r} but the model expects {meta.contrast!r}; "
            f"evaluate a model made for {ds.contrast!r} data",
        )
    voxel = float(ds.voxel_size)  # dataset.json's, else its stack header's (read_dataset)
    from cryoshift.runtime.sources.planner import CLASSIFY_VOXEL_ADVICE

    notes = list(getattr(ds, "notes", []))
    mismatch = voxel_mismatch(voxel, meta.voxel_size)
    if mismatch is None:
        return [*notes, f"{where}: the model has no voxel size; evaluated without checking it"]
    if mismatch > VOXEL_TOLERANCE and not ignore_voxel_size:
        raise InputError(
            where,
            f"voxel size {voxel:.3g} A differs from the model's {meta.voxel_size:.3g} A by {mismatch:.0%} "
            f"(> {VOXEL_TOLERANCE:.0%}); {CLASSIFY_VOXEL_ADVICE}",
        )
    return notes


def check_conflicting_labels(
    volumes: np.ndarray, label_names: Sequence[str], source: str | Path, picks: bool = False
) -> None:
    """Refuse one subtomogram labelled two ways (a pick listed twice with different classes, a
    volume copied under another label): one of the labels is wrong, and scoring both counted the
    model wrong whatever it said. Identical crops under one label are left to the planner's note.
    Crops of picks are numbered after skipped rows are left out, so picks are not named by index."""
    seen: dict[bytes, int] = {}
    clashes: list[tuple[int, int]] = []
    for i in range(len(volumes)):
        key = hashlib.blake2b(np.ascontiguousarray(volumes[i]).tobytes(), digest_size=16).digest()
        first = seen.setdefault(key, i)
        if first != i and label_names[first] != label_names[i]:
            clashes.append((first, i))
    if clashes:
        i, j = clashes[0]
        which = (
            "two picks crop the same subtomogram (one pick listed twice?)"
            if picks
            else f"volumes {i} and {j} are the same volume"
        )
        more = f" ({len(clashes)} such pairs)" if len(clashes) > 1 else ""
        raise InputError(
            source,
            f"{which}, labelled {label_names[i]!r} and {label_names[j]!r}{more}: one label is "
            "wrong; remove or correct the wrong row",
        )


def default_out_dir(model: Path, data: Path) -> Path:
    """Where a report goes when --out is not given: inside the run, or next to the model file.

    Named by the data: a dataset folder by its name (``exp.v2`` stays whole), a pick table by its
    stem (``particles.star`` -> ``model_eval_particles``: a folder named like the table read as a
    STAR file)."""
    resolved = data.resolve()
    name = (resolved.stem if resolved.is_file() else resolved.name) or "data"
    if model.is_dir():
        return model / "eval" / name
    return model.parent / f"{model.stem}_eval_{name}"


def check_default_out_is_ours(out: Path, data: Path) -> None:
    """Refuse a default report folder that holds the evaluation of other data.

    The default is named by the data's name alone, so ``evaluate run0 sim16`` and then
    ``evaluate run0 other/sim16`` both wrote run0/eval/sim16, and the second report silently
    replaced the first. Evaluating the same data again still replaces its own report."""
    earlier = _evaluated_data(out / "evaluation.json")
    if earlier is None or earlier == data.resolve():
        return
    raise InputError(
        out,
        f"holds the evaluation of {earlier}, other data than {data} of the same name; "
        "give --out to write this report elsewhere",
    )


def _evaluated_data(report: Path) -> Path | None:
    """The data an earlier evaluation.json was of, resolved; None when there is no readable one
    (nothing of value to keep: it is replaced as before). Reports without ``data_path`` recorded
    the data as given, resolved here from the current folder."""
    from cryoshift.runtime.jsonfile import read_json_object

    if not report.is_file():
        return None
    try:
        stored = read_json_object(report, "evaluation report")
    except InputError:
        return None
    recorded = stored.get("data_path", stored.get("data"))
    return Path(recorded).resolve() if isinstance(recorded, str) and recorded else None


def evaluate(
    model: str | Path,
    data: str | Path,
    out_dir: str | Path | None = None,
    run_dir: str | Path | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    tomograms: Sequence[str] = (),
    label_column: str | None = None,
    ignore_voxel_size: bool = False,
) -> dict[str, Any]:
    """Score ``model`` (checkpoint, run directory or ONNX) on the labelled dataset ``data``.

    Writes ``evaluation.json`` and ``confusion.png`` to ``out_dir`` and returns the report. With a
    run directory (``model`` itself or ``run_dir``) every epoch checkpoint is scored too, and the
    report says which epoch the labels would have picked against the label-free choice.
    ``data`` may also be labelled picks (STAR/CSV with a class column) cropped from ``tomograms``.
    Data of another contrast, or of a voxel size off by more than VOXEL_TOLERANCE (unless
    ``ignore_voxel_size``), is refused as classify refuses it.
    """
    from cryoshift.runtime.dataset import read_dataset
    from cryoshift.training import plots

    model, data = Path(model), Path(data)
    if not model.exists():
        raise InputError(model, "no such model (give a .pt checkpoint, a run directory or a .onnx file)")
    out = Path(out_dir) if out_dir is not None else default_out_dir(model, data)
    check_out_folder(out, "--out", "the report is written to")
    if out_dir is None:
        check_default_out_is_ours(out, data)
    from cryoshift.runtime.labelled_picks import is_pick_table, read_labelled_picks

    if data.exists() and not data.is_dir() and not data.is_file():  # reading a FIFO would block
        raise InputError(
            data, "is not a regular file (a FIFO, socket or device); give a dataset directory or a pick table"
        )
    skipped: dict[str, int] = {}
    notes: list[str] = []
    meta = _model_metadata(model)
    if not is_onnx(model):
        from cryoshift.training.checkpoint import resolve_checkpoint

        check_made_by_its_run(resolve_checkpoint(model))
    run = Path(run_dir) if run_dir is not None else (model if model.is_dir() else None)
    if run_dir is not None:  # before the data is read: whose epochs are scored beside the model
        check_model_of_run(model, Path(run_dir), meta)
    if run is not None:
        check_selection_of_run(run)
    if is_pick_table(data):  # labelled picks: crop them from the tomograms with the model's box
        volumes, label_names, skipped, notes = read_labelled_picks(
            data,
            list(tomograms),
            meta.box_size,
            label_column,
            model_voxel_size=meta.voxel_size,
            model_contrast=meta.contrast,
            ignore_voxel_size=ignore_voxel_size,
        )
    else:
        ds = read_dataset(data, with_labels=True)  # evaluation is where target labels belong
        notes += check_dataset_fits(ds, meta, ignore_voxel_size)
        volumes, label_names = ds.volumes, [ds.class_names[i] for i in ds.labels]
    from cryoshift.runtime.dataset import UNUSABLE, unusable_volumes

    bad = unusable_volumes(volumes)
    if len(bad):  # one NaN volume makes NLL/ECE NaN and its prediction arbitrary
        raise InputError(
            data / "volumes.mrc",
            f"{len(bad)} volumes hold {UNUSABLE} (first: index {bad[0]}); evaluation data must be clean",
        )
    polarity = volumes_warning(volumes, meta.contrast)  # the declared contrast agreed; do the voxels?
    if polarity:
        say(polarity)
        notes.append(polarity)
    picks = not data.is_dir()
    check_conflicting_labels(volumes, label_names, data if picks else data / "particles.csv", picks)
    uncalibrated = uncalibrated_note(model, meta)
    if uncalibrated:
        from cryoshift.runtime.terminal import say as say_line

        say_line(f"cryoshift: note: {uncalibrated}")
        notes.append(uncalibrated)
    pred = predict(model, volumes, batch_size, device)
    labels = names_to_indices(label_names, pred.metadata.class_names, data)
    pred, labels, failed = finite_predictions(pred, labels, model)
    if failed:
        notes.append(failed_note(failed, failed + len(labels)))
    report: dict[str, Any] = {
        "model": str(model),
        "data": str(data),  # as given; data_path: where it is, compared by the next default --out
        "data_path": str(data.resolve()),
        "box_size": pred.metadata.box_size,
        "method": pred.metadata.method,
        "training": training_record(model, pred.metadata, Path(run_dir) if run_dir is not None else None),
        **score_predictions(pred, labels),
    }
    if failed:
        report["failed_volumes"] = failed
    if skipped:
        report["skipped_picks"] = skipped
    report["notes"] = notes  # what was scored unchecked (a tomogram or dataset without a voxel size)
    out.mkdir(parents=True, exist_ok=True)
    if run is not None:
        report["checkpoints"] = evaluate_run(run, volumes, label_names, batch_size, device)
    cm = np.asarray(report["confusion_matrix"])
    report["confusion_png"] = str(
        plots.plot_confusion(
            cm, pred.metadata.class_names, out / "confusion.png", f"{model.name} on {data.name}"
        )
    )
    # out (default MODEL_eval_DATA) may be an old or received folder: a link planted at the name is
    # replaced by the file, never written through (runtime/outfiles.py)
    write_text(out / "evaluation.json", json.dumps(json_safe(report), indent=2, allow_nan=False) + "\n")
    report["json"] = str(out / "evaluation.json")
    return report
