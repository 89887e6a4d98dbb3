"""What every format's builder gets: one export in progress.

:func:`cryoshift.export.api.export_checkpoint` fills an :class:`ExportJob` and hands it to the
builder that the formats table names for each requested format, in build order. Builders read
what they need and leave what later formats build on: the fp32 ONNX step sets ``onnx_path`` and
``reference`` (PyTorch logits every artefact is held to), every ONNX step appends to
``onnx_variants`` (the TensorRT step builds one engine per variant).

Builders write into ``out_dir``, which during :func:`export_checkpoint` is a staging folder inside
``--out`` (:func:`cryoshift.export.api.staging_folder`): the artefacts reach ``--out``, and the
earlier export's files there are replaced, only once every format has passed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cryoshift.runtime.metadata import ModelMetadata


@dataclass
class ExportJob:
    checkpoint: Path
    config: dict[str, Any]  # the training run's config (names its datasets)
    metadata: ModelMetadata
    out_dir: Path  # where builders write artefacts: the staging folder while export_checkpoint builds
    wrapper: Any  # ExportWrapper: normalise -> backbone -> (logits, features), in eval mode
    volumes: np.ndarray  # parity volumes (N, D, D, D)
    source: str  # where the parity volumes came from
    say: Callable[[str], None]
    opset: int | None = None
    batch_max: int = 256
    calibration: str | Path | None = None  # int8: the data the user gave, if any
    # Filled in while building:
    calibration_volumes: np.ndarray | None = None
    calibration_source: str = ""
    onnx_path: Path | None = None
    reference: np.ndarray | None = None
    onnx_variants: list[tuple[Path, str]] = field(default_factory=list)  # (path, precision)

    def fp32(self) -> tuple[Path, np.ndarray]:
        """(fp32 ONNX path, PyTorch reference logits) for a derived format; the ONNX step runs first."""
        if self.onnx_path is None or self.reference is None:
            raise RuntimeError("derived formats are built from the fp32 ONNX, which is not built yet")
        return self.onnx_path, self.reference
