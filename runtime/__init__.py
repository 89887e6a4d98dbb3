"""cryoshift.runtime: read subtomograms, classify them with an exported model, write results.

numpy + onnxruntime only; this wing never imports torch.

The readers and writers are loaded on first use (``cryoshift.runtime.read_volume`` imports
``runtime.mrc`` then), so ``cryoshift --help`` does not pay for numpy, pandas and mrcfile.
"""

from __future__ import annotations

import os
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from cryoshift.runtime.errors import InputError, MissingExtraError
from cryoshift.runtime.metadata import ModelMetadata

# onnxruntime (1.2x+ on Linux) starts a usage telemetry when first imported: it writes a session file
# $TMPDIR/.ses (left behind by every run) and an event store under ~/.cache/Microsoft/DeveloperTools/
# (usage events). cryoshift makes no network use and leaves no files it did not write, so every
# wing opts out here, before any of them imports onnxruntime; a user's own setting wins.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

# What a source tree that is not installed reports: a stand-in, not a release, so no recorded
# version is newer or older than it (training/run.is_newer_version).
UNKNOWN_VERSION = "0.0.0"

try:
    __version__ = version("cryoshift")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = UNKNOWN_VERSION

# Public name -> module that defines it (imported lazily by __getattr__).
_LAZY: dict[str, str] = {
    # I/O (runtime issue 2)
    "read_volume": "mrc",
    "open_volume": "mrc",
    "read_header": "mrc",
    "write_volume": "mrc",
    "write_stack": "mrc",
    "MrcVolume": "mrc",
    "crop_box": "crop",
    "crop_boxes": "crop",
    "read_picks": "picks",
    "read_particle_listing": "picks",
    "centered_to_pixels": "picks",
    "read_dataset": "dataset",
    "write_dataset": "dataset",
    "DatasetWriter": "dataset",
    "Dataset": "dataset",
    "is_dataset": "dataset",
    "write_results": "results",
    "read_results": "results",
    "read_predictions": "results",
    "read_prediction_table": "results",
    "describe": "info",
    # classification (runtime classify issue)
    "load_model": "backends",
    "Model": "backends",
    "classify": "run",
    "ClassifySummary": "summary",
}

__all__ = ["InputError", "MissingExtraError", "ModelMetadata", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cryoshift.runtime' has no attribute {name!r}")
    value = getattr(import_module(f"cryoshift.runtime.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
