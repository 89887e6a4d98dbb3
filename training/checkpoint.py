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
    with replacing(path, "wb") as fh:
        torch.save(payload, fh)
    return path


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or the selected model of a run directory.

    A folder without ``model.pt`` (a run that stopped before selecting its model, or no run at
    all) is named as such, with its newest epoch checkpoint as the way on, and a ``model.pt`` that
    is a folder or a link to nothing as what it is: "RUN/model.pt: no such checkpoint" read as if
    the user had typed that path (export, evaluate, the Python API alike)."""
    from cryoshift.runtime.errors import not_a_file

    path = Path(path)
    if path.is_dir():
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
    return payload


SHOWN_KEYS = 3  # weight names a mismatch names per kind; the rest are counted


def state_dict_mismatch(model: nn.Module, state: dict[str, Any]) -> str | None:
    """How ``state`` (weights by name) does not fit ``model``, in one short line; None if it fits.

    torch's own message lists every missing and unexpected key and every shape on one line that
    ran to pages for a backbone of another family; here each kind is counted, a few named."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    reshaped = [
        f"{k} {_shape(state[k])} saved, {_shape(own[k])} built"
        for k in own
        if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    parts = [
        _listed(keys, what)
        for keys, what in ((missing, "missing"), (unexpected, "unexpected"), (reshaped, "of another shape"))
        if keys
    ]
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
