"""cryoshift.export: trained checkpoint -> ONNX (+ fp16, int8 Q/DQ, TensorRT engines), parity-checked.

Public API: :func:`export_model` (in-memory backbone -> verified ONNX), :func:`export_checkpoint`
(run or checkpoint -> every requested artefact), :class:`ExportResult`, :class:`ParityReport`,
:class:`ParityError` and the :data:`FORMATS` table.
"""

from __future__ import annotations

from cryoshift.export.api import export_checkpoint, export_model
from cryoshift.export.formats import FORMATS
from cryoshift.export.parity import ParityError, ParityReport
from cryoshift.export.result import ExportResult, ExportWarning

__all__ = [
    "FORMATS",
    "ExportResult",
    "ExportWarning",
    "ParityError",
    "ParityReport",
    "export_checkpoint",
    "export_model",
]
