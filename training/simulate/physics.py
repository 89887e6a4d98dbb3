"""Imaging physics shared by both fidelity levels, batched in torch (CPU or GPU).

Conventions: arrays (n, Z, Y, X); the tilt axis is Y and the beam is along Z at zero tilt; a
voxel's Fourier coordinates are in 1/Angstrom. Defocus ``df`` here is in Angstrom with
POSITIVE = underfocus (the internal sign of CTFFIND/RELION); the config's negative
"defocus_um" is converted by the caller. The CTF is applied to density with protein positive,
so underfocus makes protein dark, as in raw tomograms.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F


def wavelength(voltage_kv: torch.Tensor) -> torch.Tensor:
    """Relativistic electron wavelength in Angstrom for an accelerating voltage in kV."""
    v = voltage_kv * 1e3
    return 12.2643 / torch.sqrt(v * (1.0 + 0.978466e-6 * v))


def rfft_grid(box: int, voxel_size: float, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Fourier coordinates of an rfftn of a (box, box, box) volume, broadcastable to (box, box, box//2+1).

    Returns kz, ky, kx (1/A), k2 = |k|^2, the azimuth phi of (kx, ky) in the image plane, the
    tilt angle (degrees, signed) whose central slice holds each voxel, and the weight of each
    rfft voxel in a full-spectrum sum (1 on the x = 0 and Nyquist planes, 2 elsewhere).
    """
    fz = torch.fft.fftfreq(box, d=voxel_size, device=device).view(-1, 1, 1)
    fy = torch.fft.fftfreq(box, d=voxel_size, device=device).view(1, -1, 1)
    fx = torch.fft.rfftfreq(box, d=voxel_size, device=device).view(1, 1, -1)
    k2 = fz**2 + fy**2 + fx**2
    phi = torch.atan2(fy, fx).expand(box, box, box // 2 + 1)
    tilt = torch.rad2deg(torch.atan2(fz, fx.abs().clamp_min(1e-12))).expand_as(phi).clone()
    on_axis = fz[:, :, 0]
    tilt[:, :, 0] = torch.where(on_axis == 0, torch.zeros_like(on_axis), 90.0 * torch.sign(on_axis))
    weight = torch.full((1, 1, box // 2 + 1), 2.0, device=device)
    weight[..., 0] = 1.0
    if box % 2 == 0:
        weight[..., -1] = 1.0
    return {
        "kz": fz,
        "ky": fy,
        "kx": fx,
        "k2": k2,
        "phi": phi,
        "tilt": tilt,
        "weight": weight,
        "noise_gain": noise_plane_gain(box, device),
    }


def ctf(
    k2: torch.Tensor,
    phi: torch.Tensor | None,
    df: torch.Tensor,
    astig: torch.Tensor,
    astig_angle: torch.Tensor,
    voltage_kv: torch.Tensor,
    cs_mm: torch.Tensor,
    amplitude: torch.Tensor,
) -> torch.Tensor:
    """Contrast transfer function, CTF = -sin(chi + asin(A)), one row per sample.

    chi = pi lambda df k^2 - pi/2 Cs lambda^3 k^4. Per-sample parameters have shape (n,) and are
    broadcast against the grid; ``astig`` is the difference of the principal defoci (A) along
    ``astig_angle`` (radians) in the image plane; ``phi`` may be None when astig is all zero.
    """
    extra = (1,) * k2.dim()
    lam = wavelength(voltage_kv).view(-1, *extra)
    phase = torch.asin(amplitude.clamp(0, 0.999))
    if phi is None:  # isotropic: chi + phase = [a, b, phase] @ [k2, k2^2, 1], one small GEMM
        a = math.pi * lam.flatten() * df
        b = -0.5 * math.pi * cs_mm * 1e7 * lam.flatten() ** 3
        basis = torch.stack([k2.flatten(), k2.flatten() ** 2, torch.ones_like(k2.flatten())])
        chi = torch.stack([a, b, phase], 1) @ basis
        return chi.sin_().neg_().view(-1, *k2.shape)
    defocus = df.view(-1, *extra)
    if phi is not None:
        azimuth = 2.0 * (phi - astig_angle.view(-1, *extra))
        defocus = defocus + 0.5 * astig.view(-1, *extra) * torch.cos(azimuth)
    cs = (cs_mm * 1e7).view(-1, *extra)
    chi = math.pi * lam * defocus * k2 - 0.5 * math.pi * cs * lam**3 * k2**2
    return -torch.sin(chi + phase.view(-1, *extra))


def critical_exposure(k: torch.Tensor, voltage_kv: torch.Tensor) -> torch.Tensor:
    """Grant & Grigorieff (2015) critical exposure (e-/A^2) at spatial frequency k (1/A); x0.8 at 200 kV."""
    scale = torch.where(voltage_kv < 250, 0.8, 1.0).view(-1, *(1,) * k.dim())
    return scale * (0.245 * k.clamp_min(1e-6) ** -1.665 + 2.81)


def dose_position(tilt_index: torch.Tensor, n_half: torch.Tensor, order: str) -> torch.Tensor:
    """Position in the acquisition order of signed tilt index j (0 = untilted) in a +-n_half scheme."""
    j = tilt_index
    if order == "dose-symmetric":  # 0, +1, -1, +2, -2, ...
        return torch.where(j > 0, 2 * j - 1, -2 * j)
    if order == "bidirectional":  # 0 .. +n, then -1 .. -n
        return torch.where(j >= 0, j, n_half - j)
    if order == "sequential":  # -n .. +n
        return j + n_half
    raise ValueError(f"unknown dose order {order!r}")


def wedge_and_dose(
    grid: dict[str, torch.Tensor],
    tilt_max: torch.Tensor,
    tilt_step: torch.Tensor,
    dose: torch.Tensor | None,
    order: str,
    voltage_kv: torch.Tensor,
) -> torch.Tensor:
    """(n, D, D, D//2+1) weights: 0 in the missing wedge, else 1 or the dose filter of the nearest tilt.

    A voxel is measured when its tilt angle lies within +-tilt_max (continuous wedge). With dose
    weighting, it is attenuated by exp(-N / 2 Ne(k)) with N the accumulated exposure at the
    middle of the nearest tilt of the scheme (equal dose per tilt, order as given).
    """
    extra = (1, 1, 1)
    tilt = grid["tilt"]
    inside = (tilt.abs() <= tilt_max.view(-1, *extra) + 1e-4).to(tilt.dtype)
    if dose is None:
        return inside
    step = tilt_step.view(-1, *extra)
    n_half = torch.floor(tilt_max / tilt_step + 1e-6).view(-1, *extra)
    j = torch.clamp(torch.round(tilt / step), -n_half, n_half)
    position = dose_position(j, n_half, order)
    per_tilt = (dose / (2 * torch.floor(tilt_max / tilt_step + 1e-6) + 1)).view(-1, *extra)
    exposure = (position + 0.5) * per_tilt
    k = torch.sqrt(grid["k2"])
    return inside * torch.exp(-exposure / (2.0 * critical_exposure(k, voltage_kv)))


_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        workers = max(2, torch.get_num_threads())
        _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cryoshift")
    return _POOL


def complex_white_noise(
    shape: tuple[int, ...], generator: torch.Generator | list[int] | None, device: torch.device | str
) -> torch.Tensor:
    """rfft-domain complex Gaussian noise, E|z|^2 = 2 (real and imaginary parts of unit variance).

    irfftn (norm="ortho") keeps only the Hermitian part of the x = 0 and Nyquist planes, which
    halves their power: multiplied by ``noise_plane_gain`` this is white noise of unit variance.
    On the CPU torch draws normals on one thread; there each volume gets its own generator,
    seeded from ``generator`` (or given as a list of per-volume seeds), and the volumes are filled
    in parallel threads (the noise does not depend on the number of threads).
    """
    device = torch.device(device)
    out = torch.empty((*shape, 2), device=device)
    if device.type != "cpu":
        out.normal_(generator=generator if isinstance(generator, torch.Generator) else None)
        return torch.view_as_complex(out)
    if isinstance(generator, list):
        seeds = generator
    else:
        seeds = torch.randint(0, 2**62, (shape[0],), generator=generator).tolist()

    def fill(i: int) -> None:
        out[i].normal_(generator=torch.Generator().manual_seed(seeds[i]))

    if torch.get_num_threads() < 2 or shape[0] < 2:
        for i in range(shape[0]):
            fill(i)
    else:
        list(_pool().map(fill, range(shape[0])))
    return torch.view_as_complex(out)


def irfftn3(spec: torch.Tensor, box: int) -> torch.Tensor:
    """Inverse real 3-D FFT over the last three axes (norm="ortho").

    On the CPU scipy's pocketfft does the complex-to-real transform ~2x faster than torch here.
    """
    if spec.device.type == "cpu" and spec.dtype == torch.complex64:
        import scipy.fft

        out = scipy.fft.irfftn(
            spec.numpy(), s=(box, box, box), axes=(-3, -2, -1), norm="ortho", workers=torch.get_num_threads()
        )
        return torch.from_numpy(out)
    return torch.fft.irfftn(spec, s=(box, box, box), dim=(-3, -2, -1), norm="ortho")


def noise_plane_gain(box: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(1, 1, box//2+1) gains that make ``complex_white_noise`` exactly white after irfftn."""
    gain = torch.full((1, 1, box // 2 + 1), math.sqrt(0.5), device=device)
    gain[..., 0] = 1.0
    if box % 2 == 0:
        gain[..., -1] = 1.0
    return gain


def spectrum_variance(spec: torch.Tensor, weight: torch.Tensor, n_voxels: int) -> torch.Tensor:
    """Real-space variance of irfftn(spec) (norm="ortho"), by Parseval, per sample."""
    x = torch.view_as_real(spec).reshape(spec.shape[0], -1)
    w2 = weight.expand(spec.shape[1:]).reshape(-1, 1).expand(-1, 2).reshape(-1)
    total = x.square() @ w2
    dc = spec[:, 0, 0, 0]
    return (total - (dc.real**2 + dc.imag**2)) / n_voxels


def euler_matrices(rot: torch.Tensor, tilt: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
    """(n, 3, 3) matrices R = Rz(rot) Ry(tilt) Rz(psi) acting on (x, y, z) column vectors (radians)."""

    def rz(a: torch.Tensor) -> torch.Tensor:
        c, s, o, z = torch.cos(a), torch.sin(a), torch.ones_like(a), torch.zeros_like(a)
        return torch.stack([c, -s, z, s, c, z, z, z, o], -1).view(-1, 3, 3)

    def ry(a: torch.Tensor) -> torch.Tensor:
        c, s, o, z = torch.cos(a), torch.sin(a), torch.ones_like(a), torch.zeros_like(a)
        return torch.stack([c, z, s, z, o, z, -s, z, c], -1).view(-1, 3, 3)

    return rz(rot) @ ry(tilt) @ rz(psi)


def _norm_axis(box: int, device: torch.device | str) -> torch.Tensor:
    """Voxel offsets from the centre voxel box // 2."""
    return torch.arange(box, device=device, dtype=torch.float32) - box // 2


def _to_grid(coord: torch.Tensor, box: int) -> torch.Tensor:
    """Voxel offset from the centre -> grid_sample coordinate (align_corners=False)."""
    return (2.0 * (coord + box // 2) + 1.0) / box - 1.0


def sample_planes(
    x: torch.Tensor,
    m: torch.Tensor,
    t: torch.Tensor,
    out_hw: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Resample every channel of (n, C, H, W): out(u, v) = in(m @ (u, v) + t), bilinear, zeros outside.

    (u, v) are offsets (W, H) from the centre pixel; m is (n, 2, 2), t is (n, 2). All channels share
    one 2-D grid: rotating the planes of a volume this way uses torch's vectorised 2-D kernel.
    """
    h, w = x.shape[-2:]
    oh, ow = out_hw or (h, w)
    u = _norm_axis(ow, x.device).view(1, 1, -1)
    v = _norm_axis(oh, x.device).view(1, -1, 1)
    # grid coordinate = (2 * (offset + centre) + 1) / size - 1, folded into the affine map.
    sw, sh = 2.0 / w, 2.0 / h
    cu = (t[:, 0] + w // 2) * sw + (1.0 / w - 1.0)
    cv = (t[:, 1] + h // 2) * sh + (1.0 / h - 1.0)
    gu = (m[:, 0, 0] * sw).view(-1, 1, 1) * u + ((m[:, 0, 1] * sw).view(-1, 1, 1) * v + cu.view(-1, 1, 1))
    gv = (m[:, 1, 0] * sh).view(-1, 1, 1) * u + ((m[:, 1, 1] * sh).view(-1, 1, 1) * v + cv.view(-1, 1, 1))
    grid = torch.stack([gu, gv], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _rot2(c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return torch.stack([c, -s, s, c], -1).view(-1, 2, 2)


def rotate_passes(
    vol: torch.Tensor, rot: torch.Tensor, tilt: torch.Tensor, psi: torch.Tensor, shift: torch.Tensor
) -> torch.Tensor:
    """Rotate (n, D, D, D) volumes by R = Rz(rot) Ry(tilt) Rz(psi) then shift (n, 3: x, y, z voxels).

    Three 2-D bilinear passes (about z, y, z), each a batched ``grid_sample`` over all planes at
    once: about 3x faster than one trilinear 3-D pass on CPU, at the price of slightly more
    interpolation blur. Used by the fast fidelity level.
    """
    zeros = torch.zeros_like(shift[:, :2])
    # 1) about z by psi: out(x, y) = in(Rz(-psi) (x, y)).
    out = sample_planes(vol, _rot2(torch.cos(psi), torch.sin(psi)).transpose(1, 2), zeros)
    # 2) about y by tilt, in (x, z) planes, plus the z shift (pass 3 does not touch z).
    out = out.transpose(1, 2)  # (n, Y, Z, X): planes (z, x)
    m = _rot2(torch.cos(tilt), -torch.sin(tilt)).transpose(1, 2)  # inverse of x'=xc+zs, z'=-xs+zc
    t = -(m @ torch.stack([torch.zeros_like(shift[:, 2]), shift[:, 2]], -1).unsqueeze(-1)).squeeze(-1)
    out = sample_planes(out, m, t).transpose(1, 2)
    # 3) about z by rot plus the x, y shift.
    m = _rot2(torch.cos(rot), torch.sin(rot)).transpose(1, 2)
    t = -(m @ shift[:, :2].unsqueeze(-1)).squeeze(-1)
    return sample_planes(out, m, t)


def rotate_trilinear(vol: torch.Tensor, matrices: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate (n, D, D, D) volumes by (n, 3, 3) matrices about voxel D//2, then shift: one trilinear pass."""
    n, box = vol.shape[0], vol.shape[-1]
    a = _norm_axis(box, vol.device)
    z, y, x = torch.meshgrid(a, a, a, indexing="ij")
    p = torch.stack([x, y, z], -1).view(1, -1, 3) - shift.view(n, 1, 3)
    src = p @ matrices  # R^T p for row vectors: inverse rotation
    grid = _to_grid(src, box).view(n, box, box, box, 3)
    return F.grid_sample(
        vol.unsqueeze(1), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    ).squeeze(1)
