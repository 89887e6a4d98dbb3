"""The run directory: what a training run leaves behind, and the state it resumes from.

```
RUN_DIR/config.json        the TrainConfig (re-runnable: TrainConfig.from_dict)
RUN_DIR/versions.json      python, torch, numpy, cryoshift, platform, device
RUN_DIR/metrics.csv        one row per epoch (losses, source val accuracy, label-free scores)
RUN_DIR/selection.json     label-free per-epoch scores, the selected epoch and warnings (collapse, saturation)
RUN_DIR/target_classes.csv the selected model's predicted-class histogram of the target
RUN_DIR/checkpoints/epoch_NNNN.pt   backbone weights + metadata of each epoch
RUN_DIR/checkpoints/resume.pt       everything --resume needs (weights only, RNG as tensors/lists)
RUN_DIR/model.pt           the selected, calibrated model (what export reads)
RUN_DIR/plots/             loss curves, confusion matrix, feature embedding
```
"""

from __future__ import annotations

import csv
import json
import platform
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINTS = "checkpoints"
RESUME = "resume.pt"
METRICS = "metrics.csv"


def epoch_checkpoint(run_dir: Path, epoch: int) -> Path:
    return run_dir / CHECKPOINTS / f"epoch_{epoch:04d}.pt"


def versions(device: str = "cpu", world_size: int = 1) -> dict[str, Any]:
    """Library and machine versions recorded next to every output."""
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
    return info


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    tmp.replace(path)


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
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(row.get(k, "")) for k in fields})
    tmp.replace(path)


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
