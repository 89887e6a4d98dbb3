"""cryoshift.export: trained checkpoint -> ONNX (+ fp16, int8 Q/DQ, TensorRT engines), parity-checked.

Public API: :func:`export_model` (in-memory backbone -> verified ONNX), :func:`export_checkpoint`
(run or checkpoint -> every requested artefact), :class:`ExportResult`, :class:`ParityReport`,
:class:`ParityError` and the :data:`FORMATS` table. Needs torch and onnx (the ``train`` extra):
without them the import fails with :class:`~cryoshift.runtime.errors.MissingExtraError` (an
ImportError) saying what to install, not with a ModuleNotFoundError from deep inside.
"""

from __future__ import annotations

from cryoshift.runtime.errors import require_extra

try:
    from cryoshift.export.api import export_checkpoint, export_model
except ImportError:  # no torch or onnx: the extra to install in one line, as `cryoshift export` says it
    require_extra("train", "cryoshift.export", "torch", "onnx")
    raise  # they are there: something else is missing
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
