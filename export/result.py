"""What each export step hands back: one artefact, its size, its parity, how long it took."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cryoshift.export.parity import ParityReport


class ExportWarning(UserWarning):
    """Something the user should know about an export that still succeeded (random parity data,
    a skipped GPU format)."""


@dataclass
class ExportResult:
    format: str
    path: Path
    size_bytes: int
    parity: ParityReport | None
    seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "format": self.format,
            "path": str(self.path),
            "size_bytes": self.size_bytes,
            "parity": None if self.parity is None else self.parity.to_dict(),
            "seconds": round(self.seconds, 3),
            "notes": list(self.notes),
        }
