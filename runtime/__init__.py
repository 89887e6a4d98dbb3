"""cryoshift.runtime: read subtomograms, classify them with an exported model, write results.

numpy + onnxruntime only; this wing never imports torch.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from cryoshift.runtime.errors import InputError, MissingExtraError
from cryoshift.runtime.metadata import ModelMetadata

try:
    __version__ = version("cryoshift")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["InputError", "MissingExtraError", "ModelMetadata", "__version__"]
