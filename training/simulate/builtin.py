"""Procedural macromolecule-like structures that need no download.

Each structure is a cloud of Gaussian "pseudo-domains" laid out the way a real complex is built
(rings with Cn symmetry, dihedral blocks, an octahedral shell, a helix, a bilayer), with sizes
in nanometres taken from the real complexes, so that classes differ in size, shape and symmetry
as in a tomogram. Small random jitter of the domains comes from ``seed``: the same seed always
gives the same maps, a different seed gives a sibling structure of the same family.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

Blobs = np.ndarray  # (M, 5): x, y, z (nm), sigma (nm), weight

_BUILDERS: dict[str, Callable[[np.random.Generator], Blobs]] = {}


def _builder(name: str) -> Callable:
    def register(fn: Callable[[np.random.Generator], Blobs]) -> Callable:
        _BUILDERS[name] = fn
        return fn

    return register


def _rz(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _blobs(points: np.ndarray, sigma: float | np.ndarray, weight: float | np.ndarray = 1.0) -> Blobs:
    points = np.atleast_2d(points)
    n = len(points)
    return np.column_stack([points, np.broadcast_to(sigma, n), np.broadcast_to(weight, n)])


def _cyclic(unit: np.ndarray, n: int, phase: float = 0.0) -> np.ndarray:
    """Copies of the points in ``unit`` (M, 3) under n-fold rotation about z."""
    return np.concatenate([unit @ _rz(phase + 2 * np.pi * k / n).T for k in range(n)])


def _in_ellipsoid(rng: np.random.Generator, n: int, axes: tuple[float, float, float]) -> np.ndarray:
    pts = rng.uniform(-1, 1, size=(8 * n, 3))
    pts = pts[(pts**2).sum(1) <= 1][:n]
    return pts * np.asarray(axes)


@_builder("ribosome")
def _ribosome(rng: np.random.Generator) -> Blobs:
    """Asymmetric two-lobed particle, ~25 nm: large subunit, small subunit, two stalks."""
    large = _in_ellipsoid(rng, 70, (10.5, 9.5, 8.0)) + np.array([0.0, 0.5, 3.0])
    small = _in_ellipsoid(rng, 40, (9.0, 6.0, 4.5)) + np.array([1.5, -1.0, -7.5])
    stalks = np.array([[10.5, 3.0, 7.0], [12.0, 4.0, 9.0], [-9.5, -4.0, 5.0], [-11.0, -5.5, 6.0]])
    return np.concatenate([_blobs(large, 2.0), _blobs(small, 1.8, 0.9), _blobs(stalks, 1.5, 0.7)])


@_builder("proteasome")
def _proteasome(rng: np.random.Generator) -> Blobs:
    """Four stacked C7 rings (alpha-beta-beta-alpha), 11 x 15 nm barrel with a channel."""
    unit = np.array([[4.3, 0.0, 0.0], [5.4, 1.2, 0.0]])
    rings = []
    for z, r_scale, phase in ((-5.4, 0.95, 0.0), (-1.8, 1.0, 0.2), (1.8, 1.0, 0.2), (5.4, 0.95, 0.0)):
        pts = _cyclic(unit * [r_scale, r_scale, 1.0] + [0.0, 0.0, z], 7, phase)
        rings.append(pts + rng.normal(0, 0.1, pts.shape))
    return _blobs(np.concatenate(rings), 1.5)


@_builder("chaperonin")
def _chaperonin(rng: np.random.Generator) -> Blobs:
    """Two back-to-back rings of eight elongated subunits around a large cavity, ~16 x 15 nm."""
    subunit = np.array([[6.3, 0.0, 1.2], [6.8, 0.6, 3.8], [6.0, 0.3, 6.2]])  # equatorial -> apical
    top = _cyclic(subunit, 8)
    bottom = _cyclic(subunit * [1.0, 1.0, -1.0], 8, np.pi / 8)
    pts = np.concatenate([top, bottom])
    return _blobs(pts + rng.normal(0, 0.1, pts.shape), 1.5)


@_builder("rubisco")
def _rubisco(rng: np.random.Generator) -> Blobs:
    """D4 block of eight large and eight small subunits, ~11 x 11 x 10 nm."""
    large = _cyclic(np.array([[3.0, 1.2, 1.9]]), 4)
    large = np.concatenate([large, large @ np.diag([1.0, -1.0, -1.0])])  # 2-fold about x: D4
    small = _cyclic(np.array([[4.6, -2.0, 4.2]]), 4)
    small = np.concatenate([small, small @ np.diag([1.0, -1.0, -1.0])])
    jitter = rng.normal(0, 0.05, (16, 3))
    return np.concatenate([_blobs(large + jitter[:8], 1.9), _blobs(small + jitter[8:], 1.2, 0.7)])


@_builder("apoferritin")
def _apoferritin(rng: np.random.Generator) -> Blobs:
    """Hollow octahedral (O, 24 subunits) shell: 12 nm outside, 8 nm cavity."""
    rotations = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            m = np.zeros((3, 3))
            m[range(3), perm] = signs
            if np.linalg.det(m) > 0:
                rotations.append(m)
    unit = np.array([[4.9, 1.1, 2.1], [4.4, 2.6, 1.0]])
    unit = 5.2 * unit / np.linalg.norm(unit, axis=1, keepdims=True)
    pts = np.concatenate([unit @ r.T for r in rotations])
    return _blobs(pts + rng.normal(0, 0.05, pts.shape), 1.1)


@_builder("filament")
def _filament(rng: np.random.Generator) -> Blobs:
    """Segment of a 7 nm actin-like helical filament along x, longer than any box."""
    k = np.arange(-24, 25)
    angle = np.deg2rad(-166.6) * k + rng.uniform(0, 2 * np.pi)
    pts = np.column_stack([2.75 * k, 2.4 * np.cos(angle), 2.4 * np.sin(angle)])
    return _blobs(pts, 1.9)


@_builder("p97")
def _p97(rng: np.random.Generator) -> Blobs:
    """C6 double ring (D1/D2 ATPase rings) with N-domains on one face, ~13 x 9 nm."""
    d1, d2 = np.array([[4.6, 0.0, 2.3]]), np.array([[4.3, 0.0, -2.3]])
    rings = np.concatenate([_cyclic(d1, 6), _cyclic(d2, 6)])
    n_domains = _cyclic(np.array([[7.0, 1.5, 3.8]]), 6)
    return np.concatenate(
        [_blobs(rings + rng.normal(0, 0.05, rings.shape), 2.0), _blobs(n_domains, 1.3, 0.6)]
    )


@_builder("globular")
def _globular(rng: np.random.Generator) -> Blobs:
    """Small asymmetric globular protein, ~6 nm (an Hsp70-sized, two-lobed chain)."""
    pts = np.array([[0.0, 0.0, 0.0], [1.8, 0.9, -0.5], [-1.2, 1.4, 0.7], [0.5, -1.5, 1.0], [2.6, -0.8, 0.8]])
    return _blobs(pts + rng.normal(0, 0.1, pts.shape), 1.5)


_MEMBRANE = "membrane"


def _membrane_shape(rng: np.random.Generator) -> tuple[np.ndarray, float, np.ndarray]:
    """The random tilt, curvature and protein position of a membrane patch, drawn once per map
    (before rendering, which goes chunk by chunk)."""
    tilt = rng.normal(0, 0.05, 2)
    curvature = 1.0 / rng.uniform(40.0, 80.0)
    protein = np.array([rng.uniform(3, 6), rng.uniform(-3, 3), 0.0])
    return tilt, curvature, protein


def _membrane_density(
    coords: np.ndarray, tilt: np.ndarray, curvature: float, protein: np.ndarray
) -> np.ndarray:
    """Lipid bilayer patch (two head-group sheets 4 nm apart), gently curved, with one embedded protein."""
    x, y, z = coords[..., 0], coords[..., 1], coords[..., 2]
    mid = 0.5 * curvature * (x**2 + y**2) + tilt[0] * x + tilt[1] * y
    density = np.zeros(coords.shape[:-1])
    for leaflet in (-2.0, 2.0):
        density += np.exp(-((z - mid - leaflet) ** 2) / (2 * 0.9**2))
    density += 0.35 * np.exp(-((z - mid) ** 2) / (2 * 1.6**2))
    density += 0.9 * np.exp(-((coords - protein) ** 2).sum(-1) / (2 * 2.2**2))
    return density


def _blob_density(coords: np.ndarray, blobs: Blobs, nm: float) -> np.ndarray:
    """Sum of the Gaussian blobs at ``coords`` (N, 3) in nm, 64 blobs at a time."""
    density = np.zeros(len(coords))
    for start in range(0, len(blobs), 64):
        b = blobs[start : start + 64]
        d2 = ((coords[:, None, :] - b[None, :, :3]) ** 2).sum(-1)
        # Blurring to at least one voxel keeps each domain band-limited at large voxel sizes.
        sigma2 = np.maximum(b[:, 3] ** 2, nm**2)
        density += (b[:, 4] * np.exp(-d2 / (2 * sigma2))).sum(1)
    return density


def _grid_coords(axis: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Coordinates (N, 3), in x, y, z order, of voxels ``start:stop`` of the flattened (Z, Y, X)
    grid whose every axis is ``axis``: the values a full meshgrid holds there, made per chunk."""
    n = len(axis)
    z, rest = np.divmod(np.arange(start, stop), n * n)
    y, x = np.divmod(rest, n)
    return np.stack([axis[x], axis[y], axis[z]], axis=-1)


BUILTIN_NAMES: list[str] = [*_BUILDERS, _MEMBRANE]


# Voxels rendered at once. Each costs ~3 kB at the peak (float64 offsets to 64 blobs, their
# squares, the Gaussians), so a chunk stays near 100 MB whatever the box: rendered whole, a box of
# 192 asked for ~20 GB and one of 256 for ~50 GB (the OOM killer, not a reason).
CHUNK_VOXELS = 1 << 15


def render_builtin(
    name: str,
    box_size: int,
    voxel_size: float,
    seed: int = 0,
    rotation: np.ndarray | None = None,
    *,
    chunk_voxels: int = CHUNK_VOXELS,
) -> np.ndarray:
    """Density (Z, Y, X) of one built-in structure, centre at voxel box_size // 2, unnormalised.

    ``voxel_size`` is in Angstrom; structure sizes are physical, so a smaller voxel size gives a
    bigger particle in voxels (and the box may then cut it, like a real crop). ``rotation`` (3x3,
    acting on x, y, z) renders the structure analytically rotated about its centre of mass: an
    interpolation-free reference for testing rotations (not for the membrane). The grid is
    rendered ``chunk_voxels`` voxels at a time, so memory beyond the float32 result stays bounded;
    every voxel's value is computed the same way whatever the chunk size (bit-identical maps).
    """
    if name not in BUILTIN_NAMES:
        raise KeyError(name)
    if chunk_voxels < 1:
        raise ValueError(f"chunk_voxels must be at least 1, not {chunk_voxels}")
    rng = np.random.default_rng([seed, BUILTIN_NAMES.index(name)])
    nm = voxel_size / 10.0
    axis = (np.arange(box_size) - box_size // 2) * nm
    if name == _MEMBRANE:
        shape = _membrane_shape(rng)

        def density(coords: np.ndarray) -> np.ndarray:
            return _membrane_density(coords, *shape)

    else:
        blobs = _BUILDERS[name](rng).copy()
        mass = blobs[:, 4] * blobs[:, 3] ** 3
        if name != "filament":  # centre of mass on the box centre (a filament is centred by construction)
            blobs[:, :3] -= (blobs[:, :3] * mass[:, None]).sum(0) / mass.sum()
        if rotation is not None:
            blobs[:, :3] = blobs[:, :3] @ np.asarray(rotation, dtype=np.float64).T

        def density(coords: np.ndarray) -> np.ndarray:
            return _blob_density(coords, blobs, nm)

    out = np.empty(box_size**3, dtype=np.float32)
    for start in range(0, len(out), chunk_voxels):
        stop = min(start + chunk_voxels, len(out))
        out[start:stop] = density(_grid_coords(axis, start, stop))
    return out.reshape(box_size, box_size, box_size)
