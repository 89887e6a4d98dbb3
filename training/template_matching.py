"""Wedge-aware constrained cross-correlation: the classical baseline of the accuracy benchmark.

What a biologist without deep learning runs: correlate each subtomogram with every class map
over rotations and small shifts and take the best class. Three things make it a fair, strong
baseline rather than a strawman:

* the missing wedge: both template and subtomogram are multiplied in Fourier space by the
  wedge of the (known) tilt range, so the template is compared with what the tomogram can
  show, and the correlation is normalised by the wedge-filtered energy of both inside a
  spherical mask (the fast local correlation of Roseman 2003, constrained as in
  Forster et al. 2008);
* the same low-pass on both (default 40 A), which also lets the whole rotation search run on
  a Fourier-cropped grid (a 32^3 box becomes 16^3 at 10 A voxels, nothing lost below 40 A);
* coarse-to-fine: all classes x a near-uniform rotation set (a super-Fibonacci spiral on the
  unit quaternions) on the cropped grid, then the best few rotations per class refined with
  small rotation perturbations at full size and every shift within +-max_shift voxels.

Templates are the user's maps at the nominal voxel size (the target's true voxel size is
unknown to a user), with protein flipped dark to match the subtomograms.

Lives in the package (not only in benchmarks/) because the demo shows it next to the network: a
user should see the network beat the method they would otherwise run.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class TMResult:
    """Predictions (n,), best normalised CC per class (n, K), wall seconds, subtomograms per second."""

    predictions: np.ndarray
    scores: np.ndarray
    seconds: float
    rate: float
    rotations: np.ndarray | None = None  # (n, 3, 3) best rotation of the predicted class


def score_margins(scores: np.ndarray) -> np.ndarray:
    """Best minus second-best class score per subtomogram (the best score with one class): how
    clearly template matching tells the classes apart, in the same units for any data."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64), axis=1)
    return ordered[:, -1] - ordered[:, -2] if ordered.shape[1] > 1 else ordered[:, -1]


def fibonacci_rotations(n: int) -> np.ndarray:
    """A near-uniform set of n rotations (n, 3, 3): a super-Fibonacci spiral of unit quaternions.

    Deterministic and far more even than random draws, so fewer rotations reach a given
    worst-case angular gap.
    """
    phi, psi = math.sqrt(2.0), 1.533751168755204288118041
    s = np.arange(n) + 0.5
    r, big_r = np.sqrt(s / n), np.sqrt(1.0 - s / n)
    a, b = 2 * np.pi * s / phi, 2 * np.pi * s / psi
    q = np.stack([r * np.sin(a), r * np.cos(a), big_r * np.sin(b), big_r * np.cos(b)], 1)
    return _quat_to_matrix(q)


def _quat_to_matrix(q: np.ndarray) -> np.ndarray:
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        1,
    )


def _small_rotations(n: int, angle_deg: float, seed: int = 0) -> np.ndarray:
    """Identity plus n-1 rotations of ``angle_deg`` about evenly spread axes (refinement steps)."""
    k = np.arange(n - 1) + 0.5
    z = 1 - 2 * k / max(n - 1, 1)
    t = np.pi * (1 + 5**0.5) * k
    axes = np.stack([np.sqrt(1 - z * z) * np.cos(t), np.sqrt(1 - z * z) * np.sin(t), z], 1)
    half = math.radians(angle_deg) / 2
    q = np.concatenate(
        [[[1.0, 0, 0, 0]], np.concatenate([np.full((n - 1, 1), math.cos(half)), axes * math.sin(half)], 1)]
    )
    return _quat_to_matrix(q)


def _filter(b: int, tilt_max: float, fc: float) -> torch.Tensor:
    """Missing-wedge mask (tilt axis y, beam z) times a raised-cosine low-pass ending at fc,
    on the rfftn grid of a b^3 box (frequencies in cycles/voxel)."""
    f1 = torch.fft.fftfreq(b)
    fz, fy, fx = f1.view(-1, 1, 1), f1.view(1, -1, 1), torch.fft.rfftfreq(b).view(1, 1, -1)
    wedge = (fz.abs() <= fx.abs() * math.tan(math.radians(tilt_max)) + 1e-6).float()
    f = torch.sqrt(fz**2 + fy**2 + fx**2)
    edge = 0.7 * fc
    roll = torch.cos(0.5 * math.pi * ((f - edge) / (fc - edge)).clamp(0, 1)) ** 2
    return wedge * roll * (f < fc)


def _sphere(b: int, radius: float) -> torch.Tensor:
    g = torch.arange(b, dtype=torch.float32) - b // 2
    r = torch.sqrt(g.view(-1, 1, 1) ** 2 + g.view(1, -1, 1) ** 2 + g.view(1, 1, -1) ** 2)
    return torch.clamp(radius + 0.5 - r, 0.0, 1.0)  # one-voxel soft edge


class _Support:
    """The Fourier coefficients both sides can share: inside the low-pass and the wedge, no DC.

    Correlating there directly (a matrix product per shift set) replaces one inverse FFT per
    template and volume: with ~500 coefficients and a few hundred shifts it is a dense matmul.
    """

    def __init__(self, b: int, tilt_max: float, fc: float, radius: float):
        self.b = b
        filt = _filter(b, tilt_max, fc)
        filt[0, 0, 0] = 0.0  # zero-mean correlation
        self.filt_full = filt
        self.index = torch.nonzero(filt.flatten() > 0).flatten()
        f1 = torch.fft.fftfreq(b)
        fz, fy, fx = torch.meshgrid(f1, f1, torch.fft.rfftfreq(b), indexing="ij")
        self.freq = torch.stack([fz, fy, fx], -1).reshape(-1, 3)[self.index].double()  # (S, 3) zyx
        self.filt = filt.flatten()[self.index]
        half = (fx.flatten()[self.index] > 0) & (fx.flatten()[self.index] < 0.5)
        self.mult = torch.where(half, 2.0, 1.0)  # rfft half-space: interior planes count twice
        self.mask = _sphere(b, radius)
        self.mask_f = torch.fft.rfftn(self.mask)
        self.n_mask = float(self.mask.sum())

    def volume_terms(self, vol: torch.Tensor, shifts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(nb, 2S, n_shifts) real matrix Q and (nb, n_shifts) local std of the filtered volume.

        Q holds filt * mult * V(f) * exp(2 pi i f.(c+s)), so that sum_f Re(conj(T) Q) is the
        real-space correlation of template T (centred at the origin) placed at c+s.
        """
        b3 = (-3, -2, -1)
        spec = torch.fft.rfftn(vol, dim=b3)
        v_f = spec.flatten(1)[:, self.index] * self.filt  # (nb, S)
        c = self.b // 2
        pos = torch.as_tensor(shifts, dtype=torch.float64) + c  # (n_s, 3) zyx
        phase = torch.exp(2j * math.pi * (self.freq @ pos.T)).to(torch.complex64)  # (S, n_s)
        q = (v_f * self.mult)[:, :, None] * phase[None]
        q = torch.cat([q.real, q.imag], 1)
        vr = torch.fft.irfftn(spec * self.filt_full, s=(self.b,) * 3, dim=b3)
        loc1 = torch.fft.irfftn(torch.fft.rfftn(vr, dim=b3) * self.mask_f.conj(), s=(self.b,) * 3, dim=b3)
        loc2 = torch.fft.irfftn(
            torch.fft.rfftn(vr * vr, dim=b3) * self.mask_f.conj(), s=(self.b,) * 3, dim=b3
        )
        si = np.floor(np.asarray(shifts) + 0.5).astype(np.int64) % self.b
        flat = torch.as_tensor(si[:, 0] * self.b * self.b + si[:, 1] * self.b + si[:, 2])
        var = loc2.flatten(1)[:, flat] - loc1.flatten(1)[:, flat] ** 2 / self.n_mask
        std = var.clamp_min(1e-20).sqrt() * math.sqrt(self.b**3)  # Parseval: spectra are unnormalised
        return q, std


class _Templates:
    """Rotated, filtered, unit-energy template coefficients sampled straight from Fourier space.

    Each map is centred at the origin, zero-padded 2x (finer Fourier sampling for trilinear
    interpolation) and pre-divided by the interpolation's real-space roll-off (sinc^2 per
    axis) so the sampled spectra match a rotated map's. Rotation: T_R(f) = T(R^T f).
    """

    def __init__(self, maps: np.ndarray, support: _Support):
        k, b = maps.shape[0], maps.shape[-1]
        p = 2 * b
        pad = np.zeros((k, p, p, p), np.float32)
        o = p // 2 - b // 2
        pad[:, o : o + b, o : o + b, o : o + b] = maps
        g = (np.arange(p) - p // 2) / p
        corr = np.sinc(g) ** 2
        pad = pad / (corr[:, None, None] * corr[None, :, None] * corr[None, None, :])
        pad = np.fft.ifftshift(pad, axes=(1, 2, 3))  # particle centre -> origin
        spec = np.fft.fftshift(np.fft.fftn(pad, axes=(1, 2, 3)), axes=(1, 2, 3))  # zero frequency at p//2
        self.spec = torch.from_numpy(
            np.stack([spec.real, spec.imag], 1).astype(np.float32)
        )  # (K, 2, P, P, P)
        self.p = p
        self.support = support

    def coefficients(self, classes: np.ndarray, rot: np.ndarray) -> torch.Tensor:
        """(m, 2S) [Re, Im] of filt * T_R at the support, unit Fourier energy (with multiplicity)."""
        sup = self.support
        f = torch.as_tensor(rot, dtype=torch.float64).transpose(1, 2) @ sup.freq.T[None]  # (m, 3, S) R^T f
        idx = f * self.p + self.p // 2  # zyx index in the centred padded spectrum
        norm = idx / (self.p - 1) * 2 - 1
        grid = norm.flip(1).transpose(1, 2).float()  # (m, S, 3) as x, y, z
        out = torch.empty(len(rot), 2, grid.shape[1])
        for c in np.unique(classes):
            sel = np.flatnonzero(classes == c)
            gs = grid[sel].reshape(1, len(sel), -1, 1, 3)
            val = F.grid_sample(
                self.spec[c : c + 1], gs, mode="bilinear", align_corners=True
            )  # (1, 2, m, S, 1)
            out[sel] = val[0, :, :, :, 0].permute(1, 0, 2)
        out = out * sup.filt
        energy = (out.square().sum(1) * sup.mult).sum(1, keepdim=True)
        out = out / energy.clamp_min(1e-30).sqrt()[:, None]
        return out.flatten(1)


def _shift_grid(max_shift: float, step: float) -> np.ndarray:
    n = math.floor(max_shift / step + 1e-6)
    s = np.arange(-n, n + 1) * step
    return np.stack(np.meshgrid(s, s, s, indexing="ij"), -1).reshape(-1, 3)


def template_match(
    volumes: np.ndarray,
    maps: np.ndarray,
    tilt_max: float,
    *,
    n_rotations: int = 2000,
    max_shift: int = 3,
    lowpass_A: float = 40.0,
    voxel_size: float = 10.0,
    threads: int | None = None,
    batch: int = 8,
    keep: int = 3,
    refine: int = 19,
    refine_deg: float | None = None,
    mask_radius: float | None = None,
) -> TMResult:
    """Classify dark-protein subtomograms (n, B, B, B) by constrained CC against positive maps (K, B, B, B).

    Coarse: all K x ``n_rotations`` templates, shifts on a 1.5-voxel grid within +-max_shift.
    Fine: the ``keep`` best rotations per class, each with ``refine`` perturbations of
    ``refine_deg`` (default half the coarse spacing), every integer shift within +-max_shift.
    Returns the best normalised CC per class and the argmax class.
    """
    if threads:
        torch.set_num_threads(int(threads))
    t0 = time.perf_counter()
    n, b = volumes.shape[0], volumes.shape[-1]
    k = maps.shape[0]
    fc = min(0.5, voxel_size / lowpass_A)  # cycles / voxel
    radius = mask_radius if mask_radius is not None else b / 2 - 2
    sup = _Support(b, tilt_max, fc, radius)
    tem = _Templates(-np.asarray(maps, dtype=np.float32), sup)  # dark protein, like the data
    spacing = math.degrees((8 * math.pi**2 / n_rotations) ** (1 / 3))
    small = _small_rotations(refine, refine_deg if refine_deg is not None else 0.5 * spacing)
    rots = fibonacci_rotations(n_rotations)
    coarse_shifts, fine_shifts = _shift_grid(max_shift, 1.5), _shift_grid(max_shift, 1.0)
    scores = np.zeros((n, k), np.float32)
    best_rot = np.zeros((n, 3, 3))
    with torch.no_grad():
        a_all = tem.coefficients(np.repeat(np.arange(k), n_rotations), np.tile(rots, (k, 1, 1)))  # (K*R, 2S)
        for i in range(0, n, batch):
            vol = torch.from_numpy(np.ascontiguousarray(volumes[i : i + batch], dtype=np.float32))
            nb = len(vol)
            q, std = sup.volume_terms(vol, coarse_shifts)  # (nb, 2S, n_s), (nb, n_s)
            cc = (a_all @ q.permute(1, 0, 2).reshape(q.shape[1], -1)).view(k * n_rotations, nb, -1)
            cc = (cc / std[None]).amax(-1).T.reshape(nb, k, n_rotations)
            top = cc.topk(keep, dim=-1).indices.numpy()  # (nb, K, keep)
            qf, stdf = sup.volume_terms(vol, fine_shifts)
            for j in range(nb):
                cand = (rots[top[j]].reshape(k * keep, 1, 3, 3) @ small[None]).reshape(-1, 3, 3)
                a = tem.coefficients(np.repeat(np.arange(k), keep * refine), cand)
                c = ((a @ qf[j]) / stdf[j][None]).amax(-1).view(k, keep * refine)
                best = c.max(1)
                scores[i + j] = best.values.numpy()
                win = int(best.values.argmax())
                best_rot[i + j] = cand.reshape(k, keep * refine, 3, 3)[win, int(best.indices[win])]
    dt = time.perf_counter() - t0
    return TMResult(scores.argmax(1), scores, dt, n / dt, best_rot)
