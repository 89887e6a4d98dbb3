"""Parity: the exported artefact must compute what the PyTorch model computes.

The runtime trusts an exported model blindly, so the exporter proves agreement at export time,
on real subtomograms where it can, and refuses to hand over an artefact that disagrees.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cryoshift.export.formats import TOLERANCES
from cryoshift.runtime.contract import INPUT_NAME, OUTPUT_NAMES


@dataclass
class ParityReport:
    max_abs_logit_diff: float
    argmax_agreement: float  # fraction of volumes with the same predicted class
    n: int
    passed: bool
    tolerance: float  # the absolute logit tolerance applied (relative bar x logit scale)
    min_agreement: float = 1.0
    precision: str = "fp32"
    source: str = ""  # where the parity volumes came from

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def summary(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        return (
            f"{self.precision} parity {verdict}: max |dlogit| {self.max_abs_logit_diff:.2e} "
            f"(tol {self.tolerance:.2e}), argmax agreement {self.argmax_agreement:.1%} "
            f"(min {self.min_agreement:.0%}) on {self.n} volumes from {self.source or 'given data'}"
        )


class ParityError(RuntimeError):
    """An exported artefact disagrees with the PyTorch model beyond the stated tolerance."""

    def __init__(self, path: str | Path, report: ParityReport):
        self.path = str(path)
        self.report = report
        super().__init__(f"{path}: {report.summary()}; the artefact was removed")


def compare_logits(
    reference: np.ndarray, candidate: np.ndarray, precision: str = "fp32", source: str = ""
) -> ParityReport:
    """Compare two (N, K) logit arrays against the bar of ``precision``."""
    rel, min_agreement = TOLERANCES[precision]
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if reference.shape != candidate.shape:
        return ParityReport(
            float("inf"), 0.0, int(reference.shape[0]), False, 0.0, min_agreement, precision, source
        )
    scale = max(1.0, float(np.abs(reference).max(initial=0.0)))
    tolerance = rel * scale
    diff = float(np.abs(reference - candidate).max(initial=0.0))
    same = reference.argmax(axis=1) == candidate.argmax(axis=1)
    agreement = float(np.mean(same)) if len(reference) else 1.0
    passed = bool(np.isfinite(diff) and diff <= tolerance and agreement >= min_agreement)
    return ParityReport(
        diff, agreement, int(reference.shape[0]), passed, tolerance, min_agreement, precision, source
    )


def run_batched(
    fn: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], volumes: np.ndarray, batch: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``fn`` (B,1,D,H,W) -> (logits, features) in batches; the first batch has size 1 so a
    fixed-batch graph is caught too."""
    x = as_model_input(volumes)
    logits, feats = [], []
    start = 0
    sizes = [1] + [batch] * ((len(x) + batch - 1) // batch)
    for size in sizes:
        if start >= len(x):
            break
        lo, fe = fn(x[start : start + size])
        logits.append(np.asarray(lo, dtype=np.float32))
        feats.append(np.asarray(fe, dtype=np.float32))
        start += size
    return np.concatenate(logits), np.concatenate(feats)


def as_model_input(volumes: np.ndarray) -> np.ndarray:
    """(N, D, H, W) or (N, 1, D, H, W) -> contiguous float32 (N, 1, D, H, W)."""
    x = np.asarray(volumes, dtype=np.float32)
    if x.ndim == 4:
        x = x[:, None]
    if x.ndim != 5 or x.shape[1] != 1:
        raise ValueError(f"volumes must be (N, D, H, W) or (N, 1, D, H, W), got shape {x.shape}")
    return np.ascontiguousarray(x)


def onnx_runner(
    path: str | Path, providers: list[str] | None = None
) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """An ONNX Runtime session wrapped as ``fn(batch) -> (logits, features)``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # fatal only: a refusal is reported by our own line
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"])

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, feats = sess.run(list(OUTPUT_NAMES), {INPUT_NAME: batch})
        return logits, feats

    return run


def check_onnx_parity(
    path: str | Path,
    volumes: np.ndarray,
    reference_logits: np.ndarray,
    precision: str = "fp32",
    source: str = "",
    providers: list[str] | None = None,
) -> ParityReport:
    """Run the ONNX file on ``volumes`` with ONNX Runtime (CPU unless ``providers``) and compare."""
    logits, _ = run_batched(onnx_runner(path, providers), volumes)
    return compare_logits(reference_logits, logits, precision, source)
