"""Is a particle's canonical pose stable at the targets' SNR? (a go/no-go screen for pose
normalisation before the network).

Why: the ninth round (results/accuracy_levers.md) found the network short of template matching
even on clean simulated volumes, its errors on small complexes in arbitrary orientations, which
template matching gets from an explicit rotation search. Rotating every subtomogram into a frame
of its own (principal axes of its low-passed density) would leave the network a far smaller
invariance to learn, but only if that frame can be read from a noisy, wedged subtomogram.

How, without ground-truth poses: template matching's best rotation R of the true class (on the
volumes it classifies right) gives the particle's pose. The reference frame is the principal axes
of that class map rotated by R and passed through the same missing wedge and low-pass, with no
noise, so that only what the noise, crowding and flexing do to the frame is measured (a network
would learn the wedge's systematic distortion from simulation). Reported per axis: the angle
between the subtomogram's axis and the reference (mod sign; a random axis gives a median of 60
degrees) and the share within 20 degrees, and the same for the axis whose moment stands apart
(the one a symmetric top such as the proteasome still defines).

    python benchmarks/canonical_pose_screen.py lamella-60 low-dose-45 --draw 9 --work W \
        --log results/canonical_pose_screen.jsonl
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import accuracy as A
import target_sim

LOWPASS_A = 40.0  # the template matcher's low-pass: what is left of a small complex at target SNR
MASK_RADIUS = 10.0  # voxels: the larger complexes fit, most of a neighbour does not


def _lowpass(vol: np.ndarray, voxel_size: float, wedge_tilt: float | None = None) -> np.ndarray:
    """Gaussian low-pass to ``LOWPASS_A`` (and the missing wedge of +-``wedge_tilt``, beam z)."""
    b = vol.shape[-1]
    f1 = np.fft.fftfreq(b)
    fz, fy, fx = np.meshgrid(f1, f1, np.fft.rfftfreq(b), indexing="ij")
    sigma = voxel_size / LOWPASS_A / 2.0
    filt = np.exp(-(fz**2 + fy**2 + fx**2) / (2 * sigma**2))
    if wedge_tilt is not None:
        filt = filt * (np.abs(fz) <= np.abs(fx) * math.tan(math.radians(wedge_tilt)) + 1e-6)
    return np.fft.irfftn(np.fft.rfftn(vol) * filt, s=vol.shape)


def principal_axes(density: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and unit eigenvectors (columns, zyx) of the second moments of the
    positive part of ``density`` inside a sphere, about its weighted centre."""
    b = density.shape[-1]
    g = np.arange(b) - b // 2
    z, y, x = np.meshgrid(g, g, g, indexing="ij")
    inside = z**2 + y**2 + x**2 <= MASK_RADIUS**2
    w = np.where(inside, density, 0.0)
    w = np.clip(w - np.median(density[inside]), 0.0, None)
    pos = np.stack([z, y, x], -1).reshape(-1, 3).astype(np.float64)
    w = w.reshape(-1)
    centre = (w[:, None] * pos).sum(0) / max(w.sum(), 1e-12)
    d = pos - centre
    cov = (w[:, None, None] * d[:, :, None] * d[:, None, :]).sum(0) / max(w.sum(), 1e-12)
    vals, vecs = np.linalg.eigh(cov)
    return vals, vecs


def rotate(vol: np.ndarray, rot: np.ndarray) -> np.ndarray:
    """``vol`` rotated by ``rot`` (zyx) about voxel b//2: out(x) = vol(R^T x), as template matching."""
    from scipy.ndimage import affine_transform

    c = np.full(3, vol.shape[-1] // 2, dtype=np.float64)
    return affine_transform(vol, rot.T, offset=c - rot.T @ c, order=1, mode="constant")


def axis_angles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per column, the angle in degrees between two sets of axes, ignoring sign."""
    cos = np.abs((a * b).sum(0)).clip(0.0, 1.0)
    return np.degrees(np.arccos(cos))


def screen(target: str, draw: int, work: Path, threads: int) -> dict:
    from cryoshift.training import template_matching as tm

    profile = A.PROFILES["cpu"]
    _, test = A.build_target(profile, target, draw, work)
    volumes, labels = A.load_test(test)
    maps, names = target_sim.load_maps(box=profile.box, voxel_size=profile.voxel_size)
    tilt = target_sim.TARGETS[target].tilt_max
    t0 = time.perf_counter()
    res = tm.template_match(
        volumes, maps, tilt_max=tilt, n_rotations=profile.tm_rotations, max_shift=3, threads=threads
    )
    right = np.flatnonzero(res.predictions == labels)
    errors = []  # (n, 3): smallest, middle, largest axis
    spread = []  # eigenvalue gaps of the reference (is the axis defined at all?)
    unique = []  # error of the reference's most distinct axis
    per_class: dict[str, list[float]] = {n: [] for n in names}
    for i in right:
        ref = _lowpass(rotate(maps[labels[i]], res.rotations[i]), profile.voxel_size, tilt)
        rvals, raxes = principal_axes(ref)
        _, vaxes = principal_axes(_lowpass(-volumes[i].astype(np.float64), profile.voxel_size))
        err = axis_angles(vaxes, raxes)
        errors.append(err)
        gaps = np.diff(rvals) / rvals[-1]
        spread.append(gaps)
        # the axis a symmetric top still defines: the one whose moment stands apart
        unique.append(float(err[0] if gaps[0] > gaps[1] else err[2]))
        per_class[names[labels[i]]].append(unique[-1])
    errors = np.array(errors)
    spread = np.array(spread)
    return {
        "target": target,
        "draw": draw,
        "n": len(volumes),
        "tm_accuracy": float((res.predictions == labels).mean()),
        "n_scored": len(right),
        "median_deg": [round(float(v), 1) for v in np.median(errors, 0)],
        "within_20deg": [round(float(v), 3) for v in (errors < 20).mean(0)],
        "all_axes_within_20deg": round(float((errors.max(1) < 20).mean()), 3),
        "median_distinct_axis_deg": round(float(np.median(unique)), 1),
        "distinct_axis_within_20deg": round(float((np.array(unique) < 20).mean()), 3),
        "median_distinct_axis_deg_per_class": {
            k: round(float(np.median(v)), 1) for k, v in per_class.items() if v
        },
        "median_eigen_gaps": [round(float(v), 3) for v in np.median(spread, 0)],
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("targets", nargs="+", choices=sorted(target_sim.TARGETS))
    ap.add_argument("--draw", type=int, default=9)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--log", type=Path, default=None)
    args = ap.parse_args(argv)
    for target in args.targets:
        record = screen(target, args.draw, args.work, args.threads)
        A.log_record(record, args.log)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
