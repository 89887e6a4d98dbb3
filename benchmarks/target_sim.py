"""An independent "experimental" target generator for the domain-shift benchmark (issue 12).

Why a second simulator: a benchmark whose target comes from the same code as the training
source measures how well a method fits its own simulator, not how it copes with a shift.
This module shares no code with ``cryoshift.training.simulate``; it models the tilt series
the way a real acquisition makes it, so the shift between source and target is the kind a
user meets (see ``shared/docs/benchmarks.md``, section 1):

* a scene per particle in a working box larger than the output (context for neighbours,
  membranes and back-projection): the pick's map under a uniform random rotation, rendered at
  the tomogram's TRUE voxel size (``voxel_scale`` x the claimed one), an off-centre pick,
  touching neighbours of any class, an optional vesicle membrane (two leaflets ~40 A apart),
  and small crowding blobs;
* a tilt series per "tomogram" (``particles_per_tomogram`` picks share its base defocus, dose
  and tilt-angle errors): dose-symmetric order, each tilt a real-space projection of the
  specimen rotated about Y by the (slightly wrong) true angle;
* per tilt and particle: weak-phase image with a CTF whose defocus is base + astigmatism +
  the particle's height + the defocus gradient across the tilted specimen; B-factor
  envelope; Grant & Grigorieff (2015) exposure filter from the cumulative dose; detector
  MTF; in-plane alignment jitter; Poisson shot noise from the electrons per pixel, after
  inelastic loss in ice growing as 1/cos(tilt); a little Gaussian read noise;
* R-weighted back-projection (ramp with a low-pass roll-off) at the NOMINAL angles into the
  output box; an ice gradient across the box.

The result has dark protein (negative density) and is not normalised per volume (the
trainer does that). Geometry: volumes are (z, y, x), the beam is along z, the tilt axis is y.

CLI (writes a cryoshift dataset directory and a PNG of central slices per class)::

    python benchmarks/target_sim.py --target lamella-60 --n 200 --seed 0 --out /tmp/t
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

MAPS_10A = Path(__file__).resolve().parents[2] / "shared" / "data" / "maps" / "10A"

# Six complexes with three hard pairs (same family, differing by size or by a cap / domain).
CLASSES: dict[str, str] = {
    "ribosome70S": "4v4r",
    "ribosome80S": "4v7r",
    "proteasome20S": "3j9i",
    "proteasome20S_capped": "6utj",
    "p97": "3cf3",
    "ClpB": "1qvr",
}
HARD_PAIRS = [("ribosome70S", "ribosome80S"), ("proteasome20S", "proteasome20S_capped"), ("p97", "ClpB")]

SIGMA_300KV = 6.526e-4  # interaction constant at 300 kV, rad / (V * A)
Range = tuple[float, float]


@dataclass(frozen=True)
class TargetPhysics:
    """Every knob of the target's acquisition; a (lo, hi) pair is drawn uniformly per draw.

    Per tomogram: base defocus, astigmatism, total dose, ice thickness, tilt-angle errors.
    Per particle: rotation, pick error, height, position across the tilt axis, neighbours,
    membrane, B-factor, alignment shifts. Units: A, um, nm, degrees, e/A^2 as named.
    """

    description: str = ""
    voxel_scale: float = 1.0  # true voxel size / claimed voxel size (the files lie by this much)
    tilt_max: float = 60.0  # degrees, symmetric scheme
    tilt_step: float = 3.0
    group: int = 2  # dose-symmetric group size (Hagen scheme)
    dose_total: Range = (100.0, 140.0)  # e/A^2 over the whole tilt series
    defocus_um: Range = (-3.0, -5.0)  # base defocus, negative = underfocus
    astig_um: Range = (0.0, 0.3)
    height_nm: Range = (-60.0, 60.0)  # particle height in the lamella / ice (adds to defocus)
    x_um: Range = (-1.5, 1.5)  # distance from the tilt axis (defocus gradient x * sin(tilt))
    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amp_contrast: float = 0.07
    bfactor: Range = (60.0, 140.0)  # A^2, per particle (drift, radiation damage, flexibility)
    potential_v: Range = (1.5, 2.5)  # protein minus ice mean inner potential (sets contrast)
    ice_nm: Range = (150.0, 220.0)  # specimen thickness (inelastic loss, 1/cos(tilt) path)
    inelastic_mfp_nm: float = 350.0  # inelastic mean free path (energy filter removes them)
    dqe: float = 0.7  # detective quantum efficiency: fraction of electrons that count as signal
    mtf_cutoff: float = 0.55  # detector MTF: sinc(binning) * 1/(1 + (f/cutoff)^2), f cycles/px
    read_noise: float = 0.01  # extra Gaussian noise per tilt, relative to the mean intensity
    p_neighbours: float = 0.5  # probability of 1-3 touching neighbours
    p_membrane: float = 0.2  # probability of a vesicle membrane 1-2 radii from the pick
    clutter: float = 6.0  # crowding blobs (sigma 1.3 voxels) per 1000 voxels of free scene space
    pick_sigma: float = 1.0  # voxels, normal per axis, clipped at pick_max
    pick_max: float = 3.0
    shift_jitter_px: Range = (0.3, 0.6)  # per-tilt in-plane alignment error (sigma, pixels)
    angle_jitter_deg: float = 0.3  # per-tilt angle error (sigma), shared by a tomogram
    lowpass: float = 0.5  # WBP roll-off: Gaussian low-pass, sigma as a fraction of Nyquist
    ice_gradient: Range = (0.0, 0.3)  # linear background ramp across the box, x volume std
    particles_per_tomogram: int = 24
    # Structural variability: real complexes are never exactly the deposited map (conformations,
    # partial occupancy, bound factors). Neither the user's templates nor the user's training
    # maps have it; this is what keeps exact-map template matching from being perfect.
    flex_voxels: Range = (0.0, 0.0)  # RMS of a smooth random displacement of the particle, voxels
    p_partial: float = 0.0  # probability that a lobe of the particle is missing (sub-stoichiometric)
    p_extra: float = 0.0  # probability of an extra bound density on the particle's surface

    def tilts(self) -> tuple[np.ndarray, np.ndarray]:
        """Tilt angles (ascending) and each one's acquisition index (dose-symmetric order)."""
        half = math.floor(self.tilt_max / self.tilt_step + 1e-6)
        angles = np.arange(-half, half + 1) * self.tilt_step
        order = [0]
        for k in range(1, half + 1, self.group):  # 0, +1..+g, -1..-g, +(g+1).., -(g+1).., ...
            block = [j for j in range(k, k + self.group) if j <= half]
            order += block + [-j for j in block]
        index = np.empty(len(angles), np.int64)
        for i, a in enumerate(order):
            index[a + half] = i
        return angles.astype(np.float64), index


TARGETS: dict[str, TargetPhysics] = {
    "lamella-60": TargetPhysics(
        description="FIB lamella, +-60 step 3, good dose, thin specimen, voxel 3 % larger than claimed",
        voxel_scale=1.03,
        tilt_max=60.0,
        tilt_step=3.0,
        dose_total=(120.0, 160.0),
        defocus_um=(-3.0, -4.5),
        ice_nm=(120.0, 180.0),
        potential_v=(1.8, 2.6),
        p_neighbours=0.5,
        p_membrane=0.2,
        clutter=6.0,
        shift_jitter_px=(0.3, 0.5),
        angle_jitter_deg=0.2,
        flex_voxels=(0.5, 1.5),
        p_partial=0.3,
        p_extra=0.3,
    ),
    "thick-ice-50": TargetPhysics(
        description="thick ice, +-50 step 2, high defocus, crowded with membranes, voxel 4 % smaller",
        voxel_scale=0.96,
        tilt_max=50.0,
        tilt_step=2.0,
        dose_total=(90.0, 130.0),
        defocus_um=(-4.0, -6.0),
        ice_nm=(250.0, 350.0),
        potential_v=(1.5, 2.3),
        bfactor=(80.0, 180.0),
        p_neighbours=0.75,
        p_membrane=0.35,
        clutter=10.0,
        dqe=0.5,
        shift_jitter_px=(0.4, 0.8),
        angle_jitter_deg=0.35,
        ice_gradient=(0.1, 0.5),
        flex_voxels=(0.5, 1.5),
        p_partial=0.3,
        p_extra=0.3,
    ),
    "low-dose-45": TargetPhysics(
        description="low dose, narrow +-45 step 3, low defocus, poor alignment, voxel 5 % larger",
        voxel_scale=1.05,
        tilt_max=45.0,
        tilt_step=3.0,
        dose_total=(60.0, 90.0),
        defocus_um=(-2.0, -3.5),
        ice_nm=(150.0, 250.0),
        potential_v=(1.6, 2.4),
        p_neighbours=0.35,
        p_membrane=0.1,
        clutter=8.0,
        dqe=0.6,
        shift_jitter_px=(0.6, 1.0),
        angle_jitter_deg=0.5,
        group=3,
        flex_voxels=(1.0, 2.0),
        p_partial=0.4,
        p_extra=0.4,
    ),
}

# Held out from every choice of defaults: physics outside the ranges the development targets span
# (a 200 kV microscope, high defocus, a narrow tilt range, a softer detector, thin and sparse ice;
# a phase plate near focus), each set before any model was scored on it. Not in the reported
# table's default list; select one with ``--targets`` to see how the defaults carry to a
# microscope they were not chosen on.
HOLDOUT_TARGETS: dict[str, TargetPhysics] = {
    "holdout-200kv": TargetPhysics(
        description="200 kV, Cs 2.0, +-40 step 2, defocus 6.5-8.5 um, thin sparse ice, soft detector, "
        "voxel 2 % smaller",
        voxel_scale=0.98,
        tilt_max=40.0,
        tilt_step=2.0,
        dose_total=(130.0, 170.0),
        defocus_um=(-6.5, -8.5),
        voltage_kv=200.0,
        cs_mm=2.0,
        amp_contrast=0.1,
        ice_nm=(80.0, 140.0),
        potential_v=(1.6, 2.4),
        p_neighbours=0.3,
        p_membrane=0.05,
        clutter=3.0,
        dqe=0.8,
        mtf_cutoff=0.35,
        shift_jitter_px=(0.3, 0.6),
        angle_jitter_deg=0.3,
        flex_voxels=(0.5, 1.0),
        p_partial=0.2,
        p_extra=0.2,
    ),
    # A Volta phase plate near focus: the phase shift gives the CTF a large constant term (an
    # "amplitude contrast" of sin(shift), ~45 degrees here) and the low defocus moves the first zero
    # to ~20 A, so low frequencies carry strong, unflipped contrast, the opposite of every other
    # target and of the default simulation (amplitude contrast 0.07, defocus 1.5-6 um). Set before
    # any model was scored on it (2026-12-06), not to be changed after.
    "holdout-phaseplate": TargetPhysics(
        description="Volta phase plate (~45 degree shift), defocus 0.5-1.0 um, +-60 step 2, voxel 2 % larger",
        voxel_scale=1.02,
        tilt_max=60.0,
        tilt_step=2.0,
        dose_total=(80.0, 120.0),
        defocus_um=(-0.5, -1.0),
        amp_contrast=0.7,
        ice_nm=(100.0, 200.0),
        potential_v=(1.6, 2.4),
        p_neighbours=0.4,
        p_membrane=0.15,
        clutter=5.0,
        dqe=0.75,
        mtf_cutoff=0.5,
        shift_jitter_px=(0.4, 0.7),
        angle_jitter_deg=0.3,
        flex_voxels=(0.5, 1.5),
        p_partial=0.3,
        p_extra=0.3,
    ),
}
# Held out like the microscopes above, but in the structures: six other complexes of the shared 10 A
# maps, imaged as lamella-60. Chosen before any model was scored on them (2026-12-06) by one rule: every
# shared map that is 100-320 A across (so it fits the 32^3 box at 10 A and is more than a few voxels);
# 1s3x and 3qm1 (50-70 A) and 4v94 and 5mrc (330 A) fall outside it. Two of each size: ~130 A
# (RuBisCO, Hsp90), 170-210 A and elongated (1u6g, 3d2f), 270-280 A (26S proteasome, fatty acid
# synthase).
HOLDOUT_STRUCTURES: dict[str, str] = {
    "RuBisCO": "1bxn",
    "Hsp90": "2cg9",
    "Cand1_Cul1": "1u6g",
    "Sse1_Hsp70": "3d2f",
    "proteasome26S": "4cr2",
    "FAS": "2uv8",
}
HOLDOUT_TARGETS["holdout-structures"] = TARGETS["lamella-60"]
ALL_TARGETS: dict[str, TargetPhysics] = {**TARGETS, **HOLDOUT_TARGETS}
TARGET_CLASSES: dict[str, dict[str, str]] = {"holdout-structures": HOLDOUT_STRUCTURES}


def classes_of(target: str) -> dict[str, str]:
    """A target's classes (name -> map code): its own set where it has one, else :data:`CLASSES`."""
    return TARGET_CLASSES.get(target, CLASSES)


# ----------------------------------------------------------------------------- maps


def _read_map(path: Path) -> tuple[np.ndarray, float]:
    import mrcfile

    with mrcfile.open(path, permissive=True) as mrc:
        data = np.asarray(mrc.data, dtype=np.float64).copy()
        vs = float(mrc.voxel_size.x) or 1.0
    return data, vs


def _prepare(data: np.ndarray, map_voxel: float, voxel_size: float, size: int) -> tuple[np.ndarray, float]:
    """Resample, remove the solvent level, scale protein to ~1, centre the centre of mass at size//2.

    Returns the map (size^3) and the particle radius in voxels (95th percentile of the
    distance of protein voxels from the centre of mass): neighbours are placed by it.
    """
    from scipy import ndimage

    if abs(map_voxel - voxel_size) > 1e-3 * voxel_size:
        data = ndimage.zoom(data, map_voxel / voxel_size, order=1)
    edge = np.concatenate(
        [
            data[0].ravel(),
            data[-1].ravel(),
            data[:, 0].ravel(),
            data[:, -1].ravel(),
            data[:, :, 0].ravel(),
            data[:, :, -1].ravel(),
        ]
    )
    data = np.clip(data - np.median(edge), 0.0, None)
    protein = data > 0.1 * np.quantile(data, 0.999)
    data = data / data[protein].mean()  # mean protein density 1 (maps from files differ in scale)
    com = np.array(ndimage.center_of_mass(data))
    pad = size
    big = np.pad(data, pad)
    centre = size // 2
    start = np.round(com + pad).astype(int) - centre
    frac = com + pad - np.round(com + pad)
    big = ndimage.shift(big, -frac, order=1)
    out = big[start[0] : start[0] + size, start[1] : start[1] + size, start[2] : start[2] + size]
    idx = np.argwhere(out > 0.1 * out.max()) - centre
    radius = float(np.quantile(np.sqrt((idx**2).sum(1)), 0.95))
    return np.ascontiguousarray(out, dtype=np.float32), radius


@lru_cache(maxsize=16)
def _map_set(
    items: tuple[tuple[str, str], ...], size: int, voxel_size: float, maps_dir: str
) -> tuple[np.ndarray, tuple[float, ...]]:
    maps, radii = [], []
    for _, code in items:
        path = Path(maps_dir) / f"{code}.mrc"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: map not found (the benchmark maps live in ../shared)")
        data, vs = _read_map(path)
        m, r = _prepare(data, vs, voxel_size, size)
        maps.append(m)
        radii.append(r)
    return np.stack(maps), tuple(radii)


def load_maps(
    classes: dict[str, str] = CLASSES,
    box: int = 32,
    voxel_size: float = 10.0,
    maps_dir: str | Path = MAPS_10A,
) -> tuple[np.ndarray, list[str]]:
    """The class maps as the user has them: (K, box, box, box), protein positive, mean protein 1,
    centre of mass at voxel box//2, at the nominal voxel size. Used as templates and for scenes."""
    maps, _ = _map_set(tuple(classes.items()), int(box), float(voxel_size), str(maps_dir))
    return maps.copy(), list(classes)


# ----------------------------------------------------------------------------- geometry


def _random_rotations(rng: np.random.Generator, n: int) -> np.ndarray:
    """Uniform rotations on SO(3) from normalised Gaussian quaternions; (n, 3, 3)."""
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        1,
    )


def _unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _render(
    maps: torch.Tensor,
    labels: np.ndarray,
    rot: np.ndarray,
    offset_xyz: np.ndarray,
    scale: float,
    flex: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sample maps[labels] rotated by ``rot`` and moved by ``offset_xyz`` (output voxels) into
    the working box; ``scale`` = true / claimed voxel size, so a larger true voxel shows the
    particle smaller. ``flex`` (n, W, W, W, 3) adds a displacement (voxels) to the sampling grid.
    Trilinear; (n, W, W, W)."""
    w = maps.shape[-1]
    a, b, c = w / 2.0, (w - 1) / 2.0, float(w // 2)
    r = torch.as_tensor(rot * scale, dtype=torch.float32)
    o = torch.as_tensor(offset_xyz, dtype=torch.float32)
    t = (torch.einsum("nij,nj->ni", r, (b - c) - o) + (c - b)) / a
    theta = torch.cat([r, t[:, :, None]], 2)
    grid = F.affine_grid(theta, (len(labels), 1, w, w, w), align_corners=False)
    if flex is not None:
        grid = grid + flex / a
    src = maps[torch.as_tensor(labels)].unsqueeze(1)
    return F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]


def _projector(w: int, angles_deg: np.ndarray) -> torch.Tensor:
    """Dense ray-driven projector (T*W, W*W): a (z, x) plane -> per-tilt 1-D projections.

    The specimen rotated by angle a about y is summed along z: detector u = (x-c)cos a +
    (z-c) sin a + c. Each ray is sampled every half voxel with bilinear weights.
    """
    c = float(w // 2)
    u = np.arange(w, dtype=np.float64)[:, None]
    t = np.arange(-0.75 * w, 0.75 * w, 0.5)[None, :]
    rows, cols, vals = [], [], []
    for i, a in enumerate(np.deg2rad(angles_deg)):
        x = c + (u - c) * np.cos(a) - t * np.sin(a)
        z = c + (u - c) * np.sin(a) + t * np.cos(a)
        x0, z0 = np.floor(x), np.floor(z)
        fx, fz = x - x0, z - z0
        for dz, dx, wt in (
            (0, 0, (1 - fz) * (1 - fx)),
            (0, 1, (1 - fz) * fx),
            (1, 0, fz * (1 - fx)),
            (1, 1, fz * fx),
        ):
            zz, xx = z0 + dz, x0 + dx
            ok = (zz >= 0) & (zz < w) & (xx >= 0) & (xx < w)
            rr = np.broadcast_to(i * w + u, x.shape)
            rows.append(rr[ok])
            cols.append((zz * w + xx)[ok])
            vals.append(0.5 * wt[ok])
    rows_i = np.concatenate(rows).astype(np.int64)
    cols_i = np.concatenate(cols).astype(np.int64)
    flat = np.bincount(
        rows_i * (w * w) + cols_i, weights=np.concatenate(vals), minlength=len(angles_deg) * w**3
    )
    return torch.from_numpy(flat.reshape(len(angles_deg) * w, w * w).astype(np.float32))


def _backprojector(w: int, box: int, angles_deg: np.ndarray) -> torch.Tensor:
    """Dense back-projector (box*box, T*W): per-tilt 1-D filtered projections -> a (z, x) plane
    of the central box^3 crop, linear interpolation along the detector, nominal angles."""
    c = float(w // 2)
    off = (w - box) // 2
    zz, xx = np.meshgrid(np.arange(box) + off, np.arange(box) + off, indexing="ij")
    out = np.zeros((box * box, len(angles_deg) * w))
    rows = np.arange(box * box)
    for i, a in enumerate(np.deg2rad(angles_deg)):
        u = ((xx - c) * np.cos(a) + (zz - c) * np.sin(a) + c).ravel()
        u0 = np.floor(u).astype(np.int64)
        f = u - u0
        for du, wt in ((0, 1 - f), (1, f)):
            uu = u0 + du
            ok = (uu >= 0) & (uu < w)
            np.add.at(out, (rows[ok], i * w + uu[ok]), wt[ok])
    return torch.from_numpy((out / len(angles_deg)).astype(np.float32))


@lru_cache(maxsize=8)
def _backprojector_cached(w: int, box: int, angles: tuple[float, ...]) -> torch.Tensor:
    return _backprojector(w, box, np.array(angles))


def _electron_wavelength(kv: float) -> float:
    v = kv * 1e3
    return 12.2643 / math.sqrt(v * (1 + 0.97848e-6 * v))  # A


def _critical_exposure(k: torch.Tensor) -> torch.Tensor:
    """Grant & Grigorieff (2015) critical exposure (e/A^2) at spatial frequency k (1/A), 300 kV."""
    return 0.245 * k.clamp_min(1e-6).pow(-1.665) + 2.81


# ----------------------------------------------------------------------------- one tomogram


def _draw(r: Range, rng: np.random.Generator, size: int | None = None) -> Any:
    return rng.uniform(min(r), max(r), size)


def _flex_field(phys: TargetPhysics, rng: np.random.Generator, n: int, w: int) -> torch.Tensor | None:
    """A smooth random displacement per particle (n, W, W, W, 3): coarse 5^3 noise, upsampled."""
    if max(phys.flex_voxels) <= 0:
        return None
    coarse = torch.from_numpy(rng.normal(size=(n, 3, 5, 5, 5)).astype(np.float32))
    field = F.interpolate(coarse, size=(w, w, w), mode="trilinear", align_corners=True)
    rms = field.square().mean(dim=(1, 2, 3, 4), keepdim=True).sqrt().clamp_min(1e-6)
    amp = torch.from_numpy(_draw(phys.flex_voxels, rng, n).astype(np.float32)).view(-1, 1, 1, 1, 1)
    return (field / rms * amp).permute(0, 2, 3, 4, 1).contiguous()


def _vary_composition(
    phys: TargetPhysics, rng: np.random.Generator, scene: torch.Tensor, pick: np.ndarray, radius: np.ndarray
) -> None:
    """In place: remove a lobe (partial occupancy) or add a bound blob at the particle's surface."""
    w = scene.shape[-1]
    g = torch.arange(w, dtype=torch.float32) - w // 2
    gz, gy, gx = torch.meshgrid(g, g, g, indexing="ij")
    for i in range(len(scene)):
        missing, extra = rng.random() < phys.p_partial, rng.random() < phys.p_extra
        if not (missing or extra):
            continue
        level = float(scene[i][scene[i] > 0.1 * scene[i].max()].mean()) if scene[i].max() > 0 else 0.0
        for kind, on in (("missing", missing), ("extra", extra)):
            if not on:
                continue
            u = _unit_vectors(rng, 1)[0]
            frac = rng.uniform(0.3, 0.45)
            cx, cy, cz = pick[i] + u * radius[i] * (0.6 if kind == "missing" else 1.0)
            d2 = (gx - cx) ** 2 + (gy - cy) ** 2 + (gz - cz) ** 2
            r = max(1.5, frac * radius[i])
            if kind == "missing":
                scene[i] *= torch.sigmoid((torch.sqrt(d2) - r) / 0.7)
            else:
                scene[i] += level * torch.exp(-0.5 * d2 / (0.6 * r) ** 2)


def _tomogram(
    phys: TargetPhysics,
    labels: np.ndarray,
    seed: np.random.SeedSequence,
    box: int,
    voxel_size: float,
    scene_maps: torch.Tensor,
    radii: np.ndarray,
) -> tuple[np.ndarray, list[dict]]:
    """Simulate the picks of one tilt series; returns (n, box, box, box) and parameter rows."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    n, w, k_cls = len(labels), scene_maps.shape[-1], scene_maps.shape[0]
    s = phys.voxel_scale
    pix = voxel_size * s  # the true pixel, A
    angles, order = phys.tilts()
    t_n = len(angles)

    # --- per tomogram
    defocus0 = _draw(phys.defocus_um, rng)
    astig, astig_ang = _draw(phys.astig_um, rng), rng.uniform(0, np.pi)
    dose_total = _draw(phys.dose_total, rng)
    ice = _draw(phys.ice_nm, rng)
    true_angles = angles + rng.normal(0, phys.angle_jitter_deg, t_n)

    # --- per particle scene
    rot = _random_rotations(rng, n)
    pick = np.clip(rng.normal(0, phys.pick_sigma, (n, 3)), -phys.pick_max, phys.pick_max)
    r_true = radii / s  # radii in true voxels
    scene = _render(scene_maps, labels, rot, pick, s, _flex_field(phys, rng, n, w))
    _vary_composition(phys, rng, scene, pick, r_true[labels])
    n_nb = np.where(rng.random(n) < phys.p_neighbours, rng.integers(1, 4, n), 0)
    for slot in range(3):
        idx = np.flatnonzero(n_nb > slot)
        if idx.size == 0:
            continue
        nb_lab = rng.integers(0, k_cls, idx.size)
        dist = (r_true[labels[idx]] + r_true[nb_lab]) * rng.uniform(0.85, 1.05, idx.size)
        pos = pick[idx] + _unit_vectors(rng, idx.size) * dist[:, None]
        scene[idx] += _render(scene_maps, nb_lab, _random_rotations(rng, idx.size), pos, s)
    grid = torch.arange(w, dtype=torch.float32) - w // 2
    gz, gy, gx = torch.meshgrid(grid, grid, grid, indexing="ij")
    has_mem = rng.random(n) < phys.p_membrane
    mem_rows = np.zeros((n, 2))
    for i in np.flatnonzero(has_mem):
        normal = _unit_vectors(rng, 1)[0]
        dist = r_true[labels[i]] * rng.uniform(1.0, 2.0)
        radius = rng.uniform(25.0, 80.0)  # vesicle radius, voxels
        cx, cy, cz = pick[i] + normal * (dist + radius)
        d = torch.sqrt((gx - cx) ** 2 + (gy - cy) ** 2 + (gz - cz) ** 2) - radius
        half = 20.0 / pix  # leaflets ~40 A apart
        sig = 6.0 / pix + 0.35
        scene[i] += 1.1 * (
            torch.exp(-0.5 * ((d - half) / sig) ** 2) + torch.exp(-0.5 * ((d + half) / sig) ** 2)
        )
        mem_rows[i] = (dist, radius)
    if phys.clutter > 0:
        lam = phys.clutter * w**3 / 1000.0
        pts = torch.zeros(n, w, w, w)
        for i in range(n):
            m = int(rng.poisson(lam))
            p = rng.integers(0, w, (m, 3))
            pts[i, p[:, 0], p[:, 1], p[:, 2]] += torch.as_tensor(
                rng.uniform(0.4, 1.0, m), dtype=torch.float32
            )
        f = torch.fft.fftfreq(w)
        f2 = f.view(-1, 1, 1) ** 2 + f.view(1, -1, 1) ** 2 + torch.fft.rfftfreq(w).view(1, 1, -1) ** 2
        sig = 1.3
        blobs = (
            torch.fft.irfftn(
                torch.fft.rfftn(pts, dim=(1, 2, 3)) * torch.exp(-2 * (math.pi * sig) ** 2 * f2),
                s=(w, w, w),
                dim=(1, 2, 3),
            )
            * (2 * math.pi * sig**2) ** 1.5
            / 2.5
        )
        scene += blobs * (scene < 0.05)  # crowding fills the space left free, never inside particles

    # --- project every tilt (true angles): (n, T, Y, U)
    proj_m = _projector(w, true_angles)
    vol = scene.permute(0, 2, 1, 3).reshape(n * w, w * w)  # (n*Y, Z*X)
    proj = (vol @ proj_m.T).reshape(n, w, t_n, w).permute(0, 2, 1, 3)

    # --- per tilt optics and detector, in Fourier space
    potential = _draw(phys.potential_v, rng, n)
    phase = proj * torch.as_tensor(SIGMA_300KV * potential * pix, dtype=torch.float32).view(n, 1, 1, 1)
    fy = torch.fft.fftfreq(w).view(-1, 1)  # cycles / pixel
    fu = torch.fft.rfftfreq(w).view(1, -1)
    k2 = (fy**2 + fu**2) / pix**2  # 1/A^2
    kk = torch.sqrt(k2)
    az = torch.atan2(fy, fu).expand(w, w // 2 + 1)
    rad = np.deg2rad(angles)
    height = _draw(phys.height_nm, rng, n) * 10.0  # A
    xpos = _draw(phys.x_um, rng, n) * 1e4  # A
    df = (
        -defocus0 * 1e4 + height[:, None] * np.cos(rad)[None] + xpos[:, None] * np.sin(rad)[None]
    )  # underfocus>0
    df_t = torch.as_tensor(df, dtype=torch.float32).view(n, t_n, 1, 1)
    df_t = df_t + 0.5e4 * astig * torch.cos(2 * (az - astig_ang))
    lam = _electron_wavelength(phys.voltage_kv)
    chi = math.pi * lam * df_t * k2 - 0.5 * math.pi * phys.cs_mm * 1e7 * lam**3 * k2**2
    a = phys.amp_contrast
    ctf = -(math.sqrt(1 - a * a) * torch.sin(chi) + a * torch.cos(chi))
    bfac = torch.as_tensor(_draw(phys.bfactor, rng, n), dtype=torch.float32).view(n, 1, 1, 1)
    per_tilt = dose_total / t_n
    cum = torch.as_tensor((order + 0.5) * per_tilt, dtype=torch.float32).view(1, t_n, 1, 1)
    dose_filter = torch.exp(-cum / (2 * _critical_exposure(kk)))
    mtf = torch.sinc(fy) * torch.sinc(fu) / (1 + (fy**2 + fu**2) / phys.mtf_cutoff**2)
    jitter = _draw(phys.shift_jitter_px, rng, n)
    shifts = torch.as_tensor(rng.normal(size=(n, t_n, 2)) * jitter[:, None, None], dtype=torch.float32)
    ramp_phase = torch.exp(
        -2j * math.pi * (fy * shifts[..., 0, None, None] + fu * shifts[..., 1, None, None])
    )
    transfer = ctf * torch.exp(-bfac * k2 / 4) * dose_filter * mtf
    image = 1 + 2 * torch.fft.irfft2(torch.fft.rfft2(phase) * transfer * ramp_phase, s=(w, w))

    # --- counting: electrons per pixel per tilt after inelastic loss in ice
    path = ice / np.cos(rad)
    electrons = phys.dqe * per_tilt * pix**2 * np.exp(-path / phys.inelastic_mfp_nm)
    e_t = torch.as_tensor(electrons, dtype=torch.float32).view(1, t_n, 1, 1)
    counts = torch.poisson((image * e_t).clamp_min(0), generator=gen)
    norm = counts / e_t - 1
    norm = norm + phys.read_noise * torch.randn(norm.shape, generator=gen)

    # --- R-weighted back-projection at the nominal angles into the box^3 crop
    ramp = fu.abs().clamp_min(0.25 / w) * torch.exp(-0.5 * ((fy**2 + fu**2) / (phys.lowpass * 0.5) ** 2))
    filt = torch.fft.irfft2(torch.fft.rfft2(norm) * ramp, s=(w, w))
    off = (w - box) // 2
    filt = filt[:, :, off : off + box, :]  # the y rows of the crop: (n, T, box, W)
    bp = _backprojector_cached(w, box, tuple(float(x) for x in angles))
    rec = (filt.permute(0, 2, 1, 3).reshape(n * box, t_n * w) @ bp.T).reshape(n, box, box, box)
    rec = rec.permute(0, 2, 1, 3)  # (n, Y, Z, X) -> (n, Z, Y, X)

    # --- ice gradient across the box
    g_amp = _draw(phys.ice_gradient, rng, n) * float(rec.std())
    g_dir = torch.as_tensor(_unit_vectors(rng, n), dtype=torch.float32)
    c = (torch.arange(box, dtype=torch.float32) - box // 2) / box
    cz, cy, cx = torch.meshgrid(c, c, c, indexing="ij")
    ramp3 = (
        g_dir[:, 0, None, None, None] * cx
        + g_dir[:, 1, None, None, None] * cy
        + g_dir[:, 2, None, None, None] * cz
    )
    rec = rec + torch.as_tensor(g_amp, dtype=torch.float32).view(n, 1, 1, 1) * 2 * ramp3

    rows = []
    for i in range(n):
        rows.append(
            {
                "defocus_um": round(float(defocus0), 4),
                "astig_um": round(float(astig), 4),
                "dose_total": round(float(dose_total), 2),
                "ice_nm": round(float(ice), 1),
                "height_nm": round(float(height[i] / 10), 2),
                "x_um": round(float(xpos[i] / 1e4), 4),
                "potential_v": round(float(potential[i]), 3),
                "bfactor": round(float(bfac[i]), 1),
                "pick_dx": round(float(pick[i, 0]), 3),
                "pick_dy": round(float(pick[i, 1]), 3),
                "pick_dz": round(float(pick[i, 2]), 3),
                "neighbours": int(n_nb[i]),
                "membrane": bool(has_mem[i]),
                "membrane_dist": round(float(mem_rows[i, 0]), 2),
                "jitter_px": round(float(jitter[i]), 3),
                "electrons_per_px_0deg": round(
                    float(per_tilt * pix**2 * np.exp(-ice / phys.inelastic_mfp_nm)), 1
                ),
            }
        )
    return rec.numpy().astype(np.float32), rows


def make_target(
    physics: TargetPhysics,
    n: int,
    seed: int,
    box: int = 32,
    voxel_size: float = 10.0,
    classes: dict[str, str] = CLASSES,
    maps_dir: str | Path = MAPS_10A,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Labelled "experimental" subtomograms: (n, box, box, box) float32 with DARK protein,
    labels (n,) int64 into ``list(classes)`` (balanced), one dict of drawn parameters each.

    Seeded: the same seed gives the same data (tomogram i draws from its own child seed, so
    the drawn scenes do not depend on ``threads``; float sums may round differently with another
    thread count). ``threads`` applies to this call only."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        return _make_target(physics, n, seed, box, voxel_size, classes, maps_dir)
    finally:
        torch.set_num_threads(previous)


def _make_target(
    physics: TargetPhysics,
    n: int,
    seed: int,
    box: int,
    voxel_size: float,
    classes: dict[str, str],
    maps_dir: str | Path,
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    w = box + 16 + (box % 2)
    maps_np, radii = _map_set(tuple(classes.items()), w, float(voxel_size), str(maps_dir))
    scene_maps = torch.from_numpy(maps_np)
    k = len(classes)
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % k).astype(np.int64)
    per = max(1, int(physics.particles_per_tomogram))
    n_tomo = -(-n // per)
    seeds = np.random.SeedSequence(seed).spawn(n_tomo)
    vols = np.empty((n, box, box, box), np.float32)
    rows: list[dict] = []
    with torch.no_grad():
        for t in range(n_tomo):
            sl = slice(t * per, min(n, (t + 1) * per))
            v, r = _tomogram(physics, labels[sl], seeds[t], box, voxel_size, scene_maps, np.array(radii))
            vols[sl] = v
            for row in r:
                row["tomogram"] = t  # no class column: labels travel apart (kept out of the unlabelled table)
                rows.append(row)
    return vols, labels, rows


# ----------------------------------------------------------------------------- CLI


def save_preview(
    volumes: np.ndarray, labels: np.ndarray, names: list[str], path: Path, per_class: int = 3
) -> Path:
    """Central XY (top) and XZ (wedge) slices of a few volumes per class, each z-scored."""
    from cryoshift.training.plots import pyplot, save

    plt = pyplot()
    k = len(names)
    fig, axes = plt.subplots(2 * per_class, k, figsize=(1.8 * k, 3.4 * per_class))
    c = volumes.shape[-1] // 2
    for j, name in enumerate(names):
        idx = np.flatnonzero(labels == j)[:per_class]
        for r in range(per_class):
            for s in range(2):
                ax = axes[2 * r + s, j]
                ax.axis("off")
                if r >= len(idx):
                    continue
                v = volumes[idx[r]]
                v = (v - v.mean()) / (v.std() + 1e-9)
                img = v[c] if s == 0 else v[:, c, :]
                ax.imshow(img, cmap="gray", vmin=-3, vmax=3)
                if r == 0 and s == 0:
                    ax.set_title(name, fontsize=9)
    fig.suptitle("rows: XY (z centre) / XZ (y centre, beam vertical)")
    fig.tight_layout()
    return save(fig, path)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", required=True, choices=sorted(ALL_TARGETS))
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--box", type=int, default=32)
    ap.add_argument("--voxel-size", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    from cryoshift.runtime.dataset import DatasetWriter

    phys = ALL_TARGETS[args.target]
    t0 = time.perf_counter()
    vols, labels, rows = make_target(phys, args.n, args.seed, args.box, args.voxel_size, threads=args.threads)
    dt = time.perf_counter() - t0
    meta = {
        "generator": "benchmarks/target_sim.py",
        "target": args.target,
        "seed": args.seed,
        "physics": asdict(phys),
        "maps": dict(CLASSES),
    }
    with DatasetWriter(args.out, args.n, args.box, args.voxel_size, list(CLASSES), "dark", meta) as writer:
        writer.write(vols, labels, rows)
    png = save_preview(vols, labels, list(CLASSES), args.out / "preview.png")
    print(f"{args.target}: {args.n} volumes in {dt:.1f} s ({args.n / dt:.1f}/s) -> {args.out} ({png.name})")


if __name__ == "__main__":
    main()
