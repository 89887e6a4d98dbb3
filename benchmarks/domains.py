"""Structures, source simulation, target domains and budgets of the domain-shift benchmark.

Everything that decides *what* is measured lives here, chosen a priori and never by
looking at target accuracy (see docs in benchmarks/results/domain_shift_<profile>.md).

The source is the simple simulation a user would train on; the targets differ from it the
way experimental tomograms do (benchmarks.md, section 1). Each target is generated with
held-back labels, used ONLY for scoring (and for the oracle ceiling).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAPS_10A = Path(__file__).resolve().parents[2] / "shared" / "data" / "maps" / "10A"

# Six complexes from the 10 A maps: two hard pairs plus two distinct shapes.
#  - 4v4r 70S vs 4v7r 80S ribosome: same shape family, 80S is larger (hard pair)
#  - 3j9i 20S proteasome (open barrel, D7) vs 6utj singly-capped 20S (C7): differ by one cap (hard pair)
#  - 4v94 TRiC (large double ring) and 1bxn RuBisCO (compact, mid-size)
# (p97 3cf3 vs ClpB 1qvr, a third hard pair, is in STRUCTURES_10A_EXTRA for the gpu profile.)
STRUCTURES_10A: dict[str, str] = {
    "ribosome70S": "4v4r",
    "ribosome80S": "4v7r",
    "proteasome20S": "3j9i",
    "proteasome20S_capped": "6utj",
    "TRiC": "4v94",
    "RuBisCO": "1bxn",
}
STRUCTURES_10A_EXTRA: dict[str, str] = {"p97": "3cf3", "ClpB": "1qvr"}
HARD_PAIRS = [("ribosome70S", "ribosome80S"), ("proteasome20S", "proteasome20S_capped"), ("p97", "ClpB")]


def structure_paths(extra: bool = False) -> dict[str, Path]:
    """Class name -> map file under ../shared (benchmarks may read it; the package may not)."""
    names = {**STRUCTURES_10A, **(STRUCTURES_10A_EXTRA if extra else {})}
    return {cls: MAPS_10A / f"{code}.mrc" for cls, code in names.items()}


# Source: the randomised "simple" simulation a user would train on: the fast fidelity level
# (CTF + missing wedge in Fourier space), the Cryo-Shift paper's randomised ranges for SNR,
# wedge and Cs, defocus -1..-5 um, near-centred isolated particles, white noise, dark contrast.
# Keys are SimulationConfig fields, plus "voxel_scale" (x the profile's voxel size).
SOURCE: dict[str, Any] = {
    "fidelity": "fast",
    "snr": (0.03, 10.0),
    "tilt_max": (40.0, 90.0),
    "defocus_um": (-5.0, -1.0),
    "cs_mm": (1.5, 3.0),
    "shift_voxels": 1.0,
    "crowding": 0.0,
    "voxel_scale": 1.0,
}

# Target domains: each differs from SOURCE in several ways at once, like real data, and is
# made with the tilt-series fidelity level (projections, CTF per tilt, back-projection).
TARGETS: dict[str, dict[str, Any]] = {
    # (a) A crowded cytosol: neighbours in most boxes, picks off centre, low SNR, a narrow
    # tilt range (+-42..48 deg) collected dose-symmetrically with dose weighting, ice ramps.
    "crowded": {
        "fidelity": "tilt",
        "snr": (0.05, 0.5),
        "tilt_max": (42.0, 48.0),
        "dose_weighting": True,
        "dose": (120.0, 160.0),
        "defocus_um": (-5.0, -3.0),
        "shift_voxels": 2.5,
        "crowding": 0.8,
        "neighbours": (1, 3),
        "gradient": (0.0, 0.3),
        "voxel_scale": 1.0,
    },
    # (b) Another microscope and pipeline: 1.25x the voxel size (particles look smaller),
    # coloured 1/f noise, strong underfocus with astigmatism and B-factor, inverted contrast
    # (every subtomogram's sign flipped, as when a pipeline writes light-on-dark).
    "optics": {
        "fidelity": "tilt",
        "snr": (0.05, 0.5),
        "tilt_max": (55.0, 60.0),
        "dose_weighting": True,
        "defocus_um": (-10.0, -8.0),
        "astigmatism_um": (0.3, 0.8),
        "bfactor": (100.0, 300.0),
        "shift_voxels": 1.0,
        "noise_alpha": (1.0, 1.5),
        "invert_contrast": 1.0,
        "voxel_scale": 1.25,
    },
}

TARGET_NOTES: dict[str, str] = {
    "crowded": "Tilt-series reconstruction; 80% of boxes crowded by 1-3 neighbours; picks up to 2.5 voxels "
    "off centre; SNR 0.05-0.5; tilt range +-42..48 deg, dose-symmetric with dose weighting; ice ramps.",
    "optics": "Tilt-series reconstruction; voxel size 1.25x the source; coloured 1/f^1-1.5 noise; defocus "
    "-8..-10 um with astigmatism and B-factor 100-300; contrast inverted.",
}

METHODS = ["source-only", "adabn", "dann", "mada", "warp", "cryoshift", "oracle"]


@dataclass
class Profile:
    """A budget: every method gets exactly the same data, backbone, epochs and batch size."""

    name: str
    structures: str  # "maps10A" (6 classes), "maps10A+" (8 classes) or "builtin"
    box_size: int
    voxel_size: float  # Angstrom, source domain
    n_source: int  # labelled source volumes for training (+ a source validation split)
    n_source_val: int
    n_target: int  # unlabelled target volumes seen in training (adaptation split)
    n_target_test: int  # held-out labelled target volumes used ONLY for scoring
    backbone: str
    epochs: int
    batch_size: int
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    lr: float = 1e-3
    threads: int = 2
    method_hparams: dict[str, dict[str, Any]] = field(default_factory=dict)
    source_overrides: dict[str, Any] = field(default_factory=dict)  # changes to SOURCE (ablations)
    notes: str = ""


# Compute, not accuracy: a 4-channel warp and image discriminator and 64-unit domain discriminators keep
# the adversarial methods affordable on 2 cores (chosen before any run). From round 2 on, discriminator lr
# is 0.1x the network's (the release's ratio) for every adversarial method alike.
_SMALL_ADVERSARIES = {
    "dann": {"disc_hidden": 64},
    "mada": {"disc_hidden": 64},
    "warp": {"warp_channels": 4, "img_disc_channels": 4},
    "cryoshift": {"warp_channels": 4, "img_disc_channels": 4, "disc_hidden": 64},
}
_SLOW_DISCRIMINATORS = {name: {**hp, "disc_lr_mult": 0.1} for name, hp in _SMALL_ADVERSARIES.items()}

# < 30 min on 2 CPU cores for 7 methods x 2 targets x 3 seeds (two single-threaded workers).
# Changed from round 1 (cpu-r1) on label-free evidence only: source val accuracy was still rising
# (so more data and epochs), and the image/domain discriminators won outright (BCE -> 0, so the
# reversed gradient carried nothing): discriminator lr 0.1x the network's.
_CPU = Profile(
    name="cpu",
    structures="maps10A",
    box_size=16,
    voxel_size=20.0,
    n_source=1024,
    n_source_val=192,
    n_target=384,
    n_target_test=288,
    backbone="cryonet-small",
    epochs=8,
    batch_size=32,
    method_hparams=_SLOW_DISCRIMINATORS,
    notes="16^3 boxes at 20 A, 6 classes from the 10 A maps, cryonet-small, 1024 source volumes, 8 epochs.",
)

PROFILES: dict[str, Profile] = {
    "cpu": _CPU,
    # Round 1, kept for the record: undertrained (source val accuracy still rising at epoch 5) and
    # the image discriminator saturated (BCE ~5e-4 from epoch 3). See domain_shift_cpu.md.
    "cpu-r1": dataclasses.replace(
        _CPU,
        name="cpu-r1",
        n_source=768,
        epochs=5,
        method_hparams=_SMALL_ADVERSARIES,
        notes="Round 1 (the a priori budget): 16^3 boxes at 20 A, 6 classes from the 10 A maps, "
        "cryonet-small, 768 source volumes, 5 epochs.",
    ),
    # Investigation (not tuning: reported whatever it gives): randomise the contrast sign in the
    # SOURCE simulator (half the volumes inverted), i.e. domain randomization at the simulator
    # level for the one shift (contrast convention) that the warp's bounded intensity change cannot make.
    "cpu-randsign": dataclasses.replace(
        _CPU,
        name="cpu-randsign",
        source_overrides={"invert_contrast": 0.5},
        notes="As `cpu`, but the source simulation inverts the contrast of half its volumes.",
    ),
    # The paper's scale; written for a GPU node (not run in CI).
    "gpu": Profile(
        name="gpu",
        structures="maps10A+",
        box_size=40,
        voxel_size=10.0,
        n_source=24000,
        n_source_val=2000,
        n_target=12000,
        n_target_test=4000,
        backbone="cryonet",
        epochs=30,
        batch_size=64,
        seeds=[0, 1, 2, 3, 4],
        lr=5e-4,
        threads=8,
        notes="40^3 boxes at 10 A, 8 classes (with p97/ClpB), cryonet, tens of thousands of volumes.",
    ),
    # Built-in structures (no external maps): the second, smaller profile.
    "builtin": dataclasses.replace(
        _CPU,
        name="builtin",
        structures="builtin",
        n_source=768,
        epochs=6,
        notes="16^3 boxes at 20 A, the package's 9 built-in synthetic structures, cryonet-small, 768 source "
        "volumes, 6 epochs (method settings as `cpu`).",
    ),
    # For developing the harness: seconds, not minutes; numbers mean nothing.
    "tiny": Profile(
        name="tiny",
        structures="builtin",
        box_size=16,
        voxel_size=10.0,
        n_source=96,
        n_source_val=32,
        n_target=64,
        n_target_test=64,
        backbone="cryonet-small",
        epochs=1,
        batch_size=16,
        seeds=[0],
    ),
}


def _grl_variant(gain: float) -> Profile:
    """Sensitivity of Cryo-Shift to the reversal weight's maximum (reported in full, never used to choose)."""
    base = PROFILES["cpu-randsign"]
    hp = {**base.method_hparams, "cryoshift": {**base.method_hparams["cryoshift"], "grl_max": gain}}
    return dataclasses.replace(
        base,
        name=f"cpu-randsign-grl{gain:g}",
        method_hparams=hp,
        notes=f"As `cpu-randsign`, Cryo-Shift with grl_max = {gain:g} (default 1).",
    )


for _gain in (0.3, 3.0):
    PROFILES[f"cpu-randsign-grl{_gain:g}"] = _grl_variant(_gain)
