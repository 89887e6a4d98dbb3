"""Simulation parameters: one JSON-able dataclass of ranges, and named presets.

Every imaging parameter is a ``(lo, hi)`` range; the simulator draws one value per subtomogram
(domain randomization, as in Cryo-Shift). A range with ``lo == hi`` fixes the parameter. The
default instance reproduces the ranges the Cryo-Shift paper randomised, so ``PRESETS["paper"]``
equals ``SimulationConfig()``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryoshift.runtime.contract import CONTRASTS
from cryoshift.runtime.errors import InputError

FIDELITIES = ("fast", "tilt")
# Largest --seed / --structure-seed: torch's generators take at most 64-bit seeds and the runs add
# small offsets to them (seed + 7919, ...); 2**62 leaves room for those and is more than any user needs.
MAX_SEED = 2**62 - 1
DOSE_ORDERS = ("dose-symmetric", "bidirectional", "sequential")

Range = tuple[float, float]


@dataclass
class SimulationConfig:
    """Ranges for every parameter drawn per subtomogram.

    Conventions: angles in degrees, defocus in micrometres with NEGATIVE = underfocus (the sign
    the paper uses: "0 to -12 um"), Cs in mm, B-factor in A^2, dose in e-/A^2 for the whole tilt
    series, shifts in voxels. ``snr=None`` switches noise off (clean projections of the CTF'd
    density, useful for debugging and tests).
    """

    fidelity: str = "fast"
    snr: Range | None = (0.03, 10.0)  # log-uniform; var(signal) / var(noise) over the box
    tilt_max: Range = (40.0, 90.0)  # tilt range +-tilt_max; missing-wedge angle = 90 - tilt_max
    tilt_step: Range = (3.0, 3.0)
    dose_order: str = "dose-symmetric"
    dose: Range = (100.0, 100.0)
    dose_weighting: bool = False
    ctf: bool = True
    defocus_um: Range = (-12.0, 0.0)
    astigmatism_um: Range = (0.0, 0.0)  # difference between the two principal defoci
    voltage_kv: Range = (300.0, 300.0)
    cs_mm: Range = (1.5, 3.0)
    amplitude_contrast: Range = (0.07, 0.07)
    bfactor: Range = (0.0, 0.0)
    shift_voxels: float = 1.0  # each axis uniform in [-shift, +shift]
    crowding: float = 0.0  # probability that a subtomogram has neighbours
    neighbours: tuple[int, int] = (1, 3)
    gradient: Range = (0.0, 0.0)  # background ramp amplitude, in units of the signal std
    noise_alpha: Range = (0.0, 0.0)  # noise power ~ 1/f^alpha; 0 = white
    invert_contrast: float = 0.0  # probability of flipping the sign of a subtomogram
    # structural variability (variability.py): smooth random deformation RMS in voxels, and the
    # probabilities of a missing lobe and of an extra bound blob per particle
    flex_voxels: Range = (0.0, 0.0)
    p_partial: float = 0.0
    p_extra: float = 0.0
    # isotropic scale of each structural variant (1.05: the particle spans 5 % more voxels): real
    # voxel sizes are often a few percent off the header's, and homologous complexes differ in size
    magnification: Range = (1.0, 1.0)
    contrast: str = "dark"  # output convention; "dark" like real tomograms

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise InputError with a one-line reason for values that cannot be simulated."""
        where = "simulation config"
        if self.fidelity not in FIDELITIES:
            raise InputError(where, f"fidelity must be one of {FIDELITIES}, got {self.fidelity!r}")
        if self.dose_order not in DOSE_ORDERS:
            raise InputError(where, f"dose_order must be one of {DOSE_ORDERS}, got {self.dose_order!r}")
        if self.contrast not in CONTRASTS:
            raise InputError(where, f"contrast must be one of {CONTRASTS}, got {self.contrast!r}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            default = f.default
            if isinstance(default, (bool, str)):
                continue
            if isinstance(default, (int, float)):  # a number; NaN would pass every range check below
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise InputError(where, f"{f.name} must be a finite number, got {value!r}")
                continue
            if value is None and f.name == "snr":  # no noise
                continue
            if not isinstance(value, (tuple, list)) or len(value) != 2:
                raise InputError(where, f"{f.name} must be a (lo, hi) pair, got {value!r}")
            cast = int if f.name == "neighbours" else float
            try:
                lo, hi = (cast(v) for v in value)
            except (TypeError, ValueError) as exc:
                raise InputError(where, f"{f.name} must hold numbers, got {value!r}") from exc
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise InputError(where, f"{f.name} must hold finite numbers, got {value!r}")
            if lo > hi:
                raise InputError(where, f"{f.name}: lo {lo} is larger than hi {hi}")
            setattr(self, f.name, (lo, hi))
        if self.snr is not None and self.snr[0] <= 0:
            raise InputError(where, "snr must be positive (log-uniform range)")
        if not 0 < self.tilt_max[0] <= 90 or self.tilt_max[1] > 90:
            raise InputError(where, "tilt_max must lie in (0, 90] degrees")
        if self.tilt_step[0] <= 0:
            raise InputError(where, "tilt_step must be positive")
        if self.voltage_kv[0] <= 0:
            raise InputError(where, "voltage_kv must be positive")
        if not (self.amplitude_contrast[0] >= 0 and self.amplitude_contrast[1] < 1):
            raise InputError(where, "amplitude_contrast must lie in [0, 1)")
        if not (self.magnification[0] >= 0.5 and self.magnification[1] <= 2.0):
            raise InputError(where, "magnification must lie in [0.5, 2] (a scale factor, 1 = as given)")
        for name in ("crowding", "invert_contrast", "p_partial", "p_extra"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InputError(where, f"{name} is a probability in [0, 1]")
        if (
            self.shift_voxels < 0
            or self.neighbours[0] < 0
            or min(self.dose) < 0
            or min(self.bfactor) < 0
            or min(self.flex_voxels) < 0
        ):
            raise InputError(
                where, "shift_voxels, neighbours, dose, bfactor and flex_voxels must not be negative"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        return {
            f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
            for f in dataclasses.fields(self)
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "simulation config") -> SimulationConfig:
        """Build from a dict; unknown keys are an error so that typos do not pass silently."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            import difflib

            parts = []
            for u in unknown:
                close = difflib.get_close_matches(u, names, n=1)
                parts.append(f"{u} (did you mean {close[0]}?)" if close else u)
            hint = "; ".join(parts)
            raise InputError(where, f"unknown simulation parameter(s): {hint}")
        kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(where, str(exc)) from exc

    def replace(self, **changes: Any) -> SimulationConfig:
        """A copy with some fields changed (None values are ignored, so unset CLI options keep defaults)."""
        data = self.to_dict()
        data.update({k: v for k, v in changes.items() if v is not None})
        return SimulationConfig.from_dict(data)

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_json(cls, path: str | Path, base: SimulationConfig | None = None) -> SimulationConfig:
        """Read a config JSON; with ``base`` the file may name only the fields it changes.

        ``base`` serves ``cryoshift simulate --preset P --config FILE``: the preset, then the file.
        """
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(path, f"cannot read simulation config JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise InputError(path, "simulation config JSON must be an object of SimulationConfig fields")
        if base is not None:
            data = {**base.to_dict(), **data}
        return cls.from_dict(data, where=str(path))


def check_seed(option: str, seed: int) -> None:
    """Refuse a seed the random generators cannot take, before any work: a negative one ended in
    numpy's "expected non-negative integer", one over 2**63 in torch's "Overflow when unpacking
    long long", both as tracebacks."""
    if not 0 <= seed <= MAX_SEED:
        raise InputError(None, f"{option} must be a whole number from 0 to 2**62 - 1, not {seed}")


def _presets() -> dict[str, SimulationConfig]:
    paper = SimulationConfig()
    return {
        # The ranges of the Cryo-Shift paper: SNR 0.03-10, wedge 0-50 deg, defocus 0..-12 um, Cs 1.5-3 mm.
        "paper": paper,
        # Everything the paper left out switched on: what real tomograms add on top.
        "realistic": paper.replace(
            dose_weighting=True,
            dose=(80.0, 160.0),
            astigmatism_um=(0.0, 0.5),
            bfactor=(0.0, 300.0),
            shift_voxels=2.0,
            crowding=0.5,
            neighbours=(1, 3),
            gradient=(0.0, 0.5),
            noise_alpha=(0.0, 1.0),
            tilt_max=(50.0, 70.0),
            defocus_um=(-6.0, -2.0),
        ),
        # Realistic physics, randomised more broadly, with structural variability (variability.py):
        # for data whose physics is not known; with --spectrum-match the target's own average
        # spectrum is imposed on top.
        "broad": paper.replace(
            snr=(0.02, 3.0),
            dose_weighting=True,
            dose=(60.0, 180.0),
            astigmatism_um=(0.0, 0.5),
            bfactor=(0.0, 300.0),
            shift_voxels=3.0,
            crowding=0.5,
            neighbours=(1, 3),
            gradient=(0.0, 0.5),
            noise_alpha=(-1.0, 1.0),
            tilt_max=(40.0, 70.0),
            defocus_um=(-6.0, -1.5),
            flex_voxels=(0.0, 1.5),
            p_partial=0.25,
            p_extra=0.25,
        ),
        # Same physics through the slower tilt-series model.
        "tilt": paper.replace(fidelity="tilt", dose_weighting=True, tilt_max=(50.0, 70.0)),
        # Very broad ranges for domain randomization. Half the volumes get inverted contrast: in the
        # domain-shift benchmark an inverted target left every adaptation method at chance, while a
        # contrast-randomised source lifted source-only from chance to ~32 % (benchmarks/results).
        "wide": paper.replace(
            snr=(0.01, 20.0),
            tilt_max=(30.0, 90.0),
            astigmatism_um=(0.0, 1.0),
            bfactor=(0.0, 500.0),
            shift_voxels=3.0,
            crowding=0.5,
            gradient=(0.0, 1.0),
            noise_alpha=(0.0, 1.5),
            invert_contrast=0.5,
            voltage_kv=(200.0, 300.0),
            amplitude_contrast=(0.05, 0.15),
        ),
        # No noise, no wedge, no shift: to look at structures.
        "clean": SimulationConfig(snr=None, tilt_max=(90.0, 90.0), shift_voxels=0.0, defocus_um=(-3.0, -3.0)),
    }


PRESETS: dict[str, SimulationConfig] = _presets()
