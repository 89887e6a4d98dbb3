"""Simulation parameters: one JSON-able dataclass of ranges, and named presets.

Every imaging parameter is a ``(lo, hi)`` range; the simulator draws one value per subtomogram
(domain randomization, as in Cryo-Shift). A range with ``lo == hi`` fixes the parameter. The
default instance reproduces the ranges the Cryo-Shift paper randomised, so ``PRESETS["paper"]``
equals ``SimulationConfig()``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
import types
import typing
from dataclasses import InitVar, dataclass
from pathlib import Path
from typing import Any

from cryoshift.runtime.contract import CONTRASTS, MAX_BOX
from cryoshift.runtime.errors import InputError

FIDELITIES = ("fast", "tilt")
# Largest --seed / --structure-seed: torch's generators take at most 64-bit seeds and the runs add
# small offsets to them (seed + 7919, ...); 2**62 leaves room for those and is more than any user needs.
MAX_SEED = 2**62 - 1
DOSE_ORDERS = ("dose-symmetric", "bidirectional", "sequential")
# What an error in a config that comes from no file names (a preset's, train's source's, Python's);
# one about a value a command-line option set names the option instead (Origin)
CONFIG_WHERE = "simulation config"
# The ``cryoshift simulate`` options of the fields that are no number (the numbers' are in BOUNDS)
WORD_OPTIONS = {
    "fidelity": "--fidelity",
    "dose_order": "--dose-order",
    "dose_weighting": "--dose-weighting",
    "contrast": "--contrast",
}
# The accepted words of the fields that are words (str), for the type check of every field
CHOICES: dict[str, tuple[str, ...]] = {
    "fidelity": FIDELITIES,
    "dose_order": DOSE_ORDERS,
    "contrast": CONTRASTS,
}

Range = tuple[float, float]


@dataclass(frozen=True)
class Bound:
    """The accepted values of one numeric setting: ``lo`` to ``hi`` (both included) in ``unit``;
    ``option`` is the ``cryoshift simulate`` option that sets it (None: only ``--config`` does)."""

    lo: float
    hi: float
    unit: str
    option: str | None


# The accepted values of every numeric setting of ``cryoshift simulate``, in one place: the
# SimulationConfig fields (checked by SimulationConfig.validate, so --config files, presets and
# train's on-the-fly source too) and the options that are no config field (voxel_size, box, n,
# resolution; checked by the command). Generous: every real facility's values pass (unbinned 0.5 A
# to heavily binned 50 A voxels, Cs-corrected 0 to 10 mm, defocus to 20 um, tilt to +-90 deg); what
# lies outside is a typo or a value in other units (Cs in um, defocus in A, SNR in dB) that used to
# be simulated without a word: --snr 1e-30 wrote pure noise under class labels, --cs -1 a CTF no
# microscope has, --tilt-step 1000 a "tilt series" of one image.
BOUNDS: dict[str, Bound] = {
    # options that are not config fields
    "voxel_size": Bound(0.5, 50.0, "A", "--voxel-size"),
    "box": Bound(8, MAX_BOX, "voxels", "--box"),  # one 512^3 volume is 0.5 GiB (the runtime's bound too)
    "n": Bound(1, 10_000_000, "subtomograms", "--n"),
    "resolution": Bound(0.5, 500.0, "A", "--resolution"),
    # SimulationConfig fields (ranges: both ends are checked)
    "snr": Bound(1e-4, 1e3, "", "--snr"),
    "tilt_max": Bound(5.0, 90.0, "degrees", "--tilt-max"),
    "tilt_step": Bound(0.1, 30.0, "degrees", "--tilt-step"),  # and at most the lowest tilt_max
    "dose": Bound(0.0, 1000.0, "e-/A^2", "--dose"),
    "defocus_um": Bound(-20.0, 20.0, "um (negative = underfocus)", "--defocus"),
    "astigmatism_um": Bound(-10.0, 10.0, "um", "--astigmatism"),
    "voltage_kv": Bound(10.0, 3000.0, "kV", "--voltage"),
    "cs_mm": Bound(0.0, 10.0, "mm", "--cs"),
    "amplitude_contrast": Bound(0.0, 0.999, "", "--amplitude-contrast"),
    "bfactor": Bound(0.0, 5000.0, "A^2", "--bfactor"),
    "shift_voxels": Bound(0.0, 256.0, "voxels", "--shift"),  # and under half the box (the command)
    "crowding": Bound(0.0, 1.0, "(a probability)", "--crowding"),
    "neighbours": Bound(0, 30, "", "--neighbours"),
    "gradient": Bound(0.0, 100.0, "x the signal's standard deviation", "--gradient"),
    "noise_alpha": Bound(-4.0, 4.0, "", "--noise-alpha"),
    "invert_contrast": Bound(0.0, 1.0, "(a probability)", "--invert"),
    "flex_voxels": Bound(0.0, 10.0, "voxels", None),
    "p_partial": Bound(0.0, 1.0, "(a probability)", None),
    "p_extra": Bound(0.0, 1.0, "(a probability)", None),
    "magnification": Bound(0.5, 2.0, "(a scale factor, 1 = as given)", None),
}


def check_bound(name: str, value: float, where: str | Path | None = None) -> None:
    """Refuse ``value`` of the setting ``name`` outside its :data:`BOUNDS`, in one line naming the
    option (and the config field), the value and the accepted range."""
    bound = BOUNDS[name]
    if bound.lo <= value <= bound.hi:  # False for NaN
        return
    field_names = {f.name for f in dataclasses.fields(SimulationConfig)}
    if name not in field_names:
        label = bound.option
    elif bound.option is None:
        label = f"{name} (a --config field)"
    else:
        label = f"{bound.option} ({name})"
    accepted = f"{_number(bound.lo)} to {_number(bound.hi)}" + (f" {bound.unit}" if bound.unit else "")
    raise InputError(where, f"{label} {_number(value)} is outside the accepted range {accepted}")


def option_of(name: str) -> str | None:
    """The ``cryoshift simulate`` option that sets the config field ``name`` (None: only --config)."""
    return WORD_OPTIONS[name] if name in WORD_OPTIONS else BOUNDS[name].option if name in BOUNDS else None


@dataclass(frozen=True)
class Origin:
    """Where a config's values came from, for its errors to name: the fields in ``options`` were set
    by command-line options, every other one came from ``where`` (a --config file's path; None for
    a preset's values under ``cryoshift simulate``'s options; CONFIG_WHERE for a config from Python).

    Why: errors of the option/config merge named "simulation config" for a bad --snr too, which is
    no file and no option the user gave."""

    where: str | None = CONFIG_WHERE
    options: frozenset[str] = frozenset()

    @classmethod
    def of(cls, options: dict[str, Any], where: str | Path | None = None) -> Origin:
        """The origin of a config that ``options`` (field -> value; None: not given) were put on."""
        given = frozenset(name for name, value in options.items() if value is not None)
        return cls(None if where is None else str(where), given)

    def path(self, *names: str) -> str | None:
        """What an error about the fields ``names`` names before its reason: None when options set
        them all (the reason names them by their options), else ``where``."""
        return None if self.options.issuperset(names) else self.where

    def label(self, name: str) -> str:
        """How a reason names the field ``name``: by its option when an option set it."""
        return (option_of(name) or name) if name in self.options else name


def _number(value: float) -> str:
    """A number as a user would type it: whole ones below 1e8 in full (10000000, not 1e+07)."""
    if math.isfinite(value) and float(value).is_integer() and abs(value) < 1e8:
        return str(int(value))
    return f"{value:g}"


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
    # where the values came from, for the errors of validate() (no field: not kept, not compared)
    origin: InitVar[Origin | None] = None

    def __post_init__(self, origin: Origin | None) -> None:
        self.validate(origin)

    def validate(self, origin: Origin | None = None) -> None:
        """Raise InputError with a one-line reason for values that cannot be simulated, naming where
        the value came from (``origin``; default: CONFIG_WHERE): a --config file, or the option.

        Every field is checked against its declared type first (:func:`_conform`), so a JSON
        ``"ctf": "no"`` is refused instead of being read as true, and ranges become tuples of
        floats (ints for counts)."""
        at = origin or Origin()
        hints = _declared_types()
        for f in dataclasses.fields(self):
            value = _conform(getattr(self, f.name), hints[f.name], f.name, at)
            setattr(self, f.name, value)
        for f in dataclasses.fields(self):  # every numeric field has its BOUNDS entry
            value = getattr(self, f.name)
            if f.name not in BOUNDS or value is None:  # a word or a switch; snr None: no noise
                continue
            for v in value if isinstance(value, tuple) else (value,):
                check_bound(f.name, v, at.path(f.name))
        if self.tilt_step[1] > self.tilt_max[0]:  # fewer than three tilts: -step, 0, +step
            raise InputError(
                at.path("tilt_step", "tilt_max"),
                f"--tilt-step (tilt_step) {self.tilt_step[1]:g} is larger than the tilt range "
                f"(--tilt-max, tilt_max, from {self.tilt_max[0]:g} degrees): the tilt series would "
                "hold fewer than three images; real steps are 1-5 degrees",
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        return {
            f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
            for f in dataclasses.fields(self)
        }

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], where: str | None = CONFIG_WHERE, options: frozenset[str] = frozenset()
    ) -> SimulationConfig:
        """Build from a dict; unknown keys are an error so that typos do not pass silently.

        ``where`` (a --config file's path) is named by every error, validate()'s included, but for
        the fields in ``options``, which command-line options set (see :class:`Origin`)."""
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
            return cls(**kwargs, origin=Origin(where, frozenset(options)))
        except InputError:
            raise
        except (TypeError, ValueError) as exc:
            raise InputError(where, str(exc)) from exc

    def replace(self, **changes: Any) -> SimulationConfig:
        """A copy with some fields changed (None values are ignored, so unset CLI options keep defaults)."""
        data = self.to_dict()
        data.update({k: v for k, v in changes.items() if v is not None})
        return SimulationConfig.from_dict(data)

    def with_options(self, options: dict[str, Any], where: str | Path | None = None) -> SimulationConfig:
        """A copy with the command-line ``options`` (field -> value; None: not given) on top, as
        ``cryoshift simulate`` puts them over --preset and --config. An error about a value an option
        set names the option (and no file); one about a value of this config names ``where``, the
        --config file it came from (None: a preset's, which no file holds)."""
        origin = Origin.of(options, where)
        given = {name: options[name] for name in origin.options}
        return SimulationConfig.from_dict({**self.to_dict(), **given}, origin.where, origin.options)

    def to_json(self, path: str | Path) -> None:
        from cryoshift.runtime.outfiles import write_text

        write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")  # a link at the name is replaced

    @classmethod
    def from_json(cls, path: str | Path, base: SimulationConfig | None = None) -> SimulationConfig:
        """Read a config JSON; with ``base`` the file may name only the fields it changes.

        ``base`` serves ``cryoshift simulate --preset P --config FILE``: the preset, then the file.
        """
        from cryoshift.runtime.jsonfile import JsonContentError, parse_json

        try:  # a key given twice is refused: json keeps the last value without a word
            data = parse_json(Path(path).read_text())
        except JsonContentError as exc:
            raise InputError(path, str(exc)) from exc
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(path, f"cannot read simulation config JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise InputError(path, "simulation config JSON must be an object of SimulationConfig fields")
        if base is not None:
            data = {**base.to_dict(), **data}
        return cls.from_dict(data, where=str(path))


@functools.cache
def _declared_types() -> dict[str, Any]:
    """The declared type of every SimulationConfig field, resolved (the module's annotations are
    strings): the one source of truth for what a --config value must be."""
    return typing.get_type_hints(SimulationConfig)


def _conform(value: Any, declared: Any, name: str, at: Origin) -> Any:
    """``value`` of the field ``name`` checked against its ``declared`` type and normalised (ranges
    to tuples of float, or of int for counts), or InputError naming the field, where it came from,
    the value and the type expected.

    Why one general check: a per-field one let JSON's ``"ctf": "no"`` through as true (any
    non-empty string is truthy), truncated ``"neighbours": [1.7, 2.9]`` to (1, 2) and read
    ``"snr": [true, true]`` as (1, 1); each was simulated without a word."""
    where, label = at.path(name), at.label(name)
    if type(declared) is types.UnionType and type(None) in typing.get_args(declared):
        if value is None:  # snr None: no noise
            return None
        (declared,) = (t for t in typing.get_args(declared) if t is not type(None))
    if declared is bool:
        if not isinstance(value, bool):
            raise InputError(
                where, f"{label} must be true or false (a boolean: not text, not a number), got {value!r}"
            )
        return value
    if declared is str:
        if not isinstance(value, str) or value not in CHOICES[name]:
            raise InputError(where, f"{label} must be one of {CHOICES[name]}, got {value!r}")
        return value
    if declared in (int, float):
        if _number_problem(value, declared):
            raise InputError(where, f"{label} must be a finite number, got {value!r}")
        return declared(value)
    kinds = typing.get_args(declared)  # a (lo, hi) range: tuple[float, float] or tuple[int, int]
    if not isinstance(value, (tuple, list)) or len(value) != len(kinds):
        raise InputError(where, f"{label} must be a (lo, hi) pair, got {value!r}")
    for v, kind in zip(value, kinds, strict=True):
        problem = _number_problem(v, kind)
        if problem:
            raise InputError(where, f"{label} must hold {problem}, got {value!r}")
    lo, hi = (kind(v) for v, kind in zip(value, kinds, strict=True))
    if lo > hi:
        raise InputError(where, f"{label}: lo {lo} is larger than hi {hi}")
    return (lo, hi)


def _number_problem(value: Any, kind: type) -> str | None:
    """What ``value`` lacks to be a number of ``kind`` (float, or int for a count), in words; None
    when it is one. A bool is no number here (JSON's true would be 1), nor is a string, NaN or
    Inf, and a count must be whole (1.7 neighbours was truncated to 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return "numbers (true/false and text are not numbers)"
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        finite = False
    if not finite:
        return "finite numbers"
    if kind is int and not float(value).is_integer():
        return "whole numbers (a count)"
    return None


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
