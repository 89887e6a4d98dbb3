"""The batched simulator: draw imaging parameters per subtomogram, then render a batch.

``Simulator.sample(n)`` returns volumes, labels and one dict of drawn parameters per volume;
``Simulator.batches(batch_size)`` is an endless source for on-the-fly training. Parameters are
drawn on the CPU from the simulator's own ``torch.Generator`` (``generator``), so a seed gives
the same parameters on any device. Noise comes from ``noise_generator``: on the CPU as one seed
per volume, on a GPU from the device generator. ``sample`` is a stream: what it draws depends on
the calls before it and on ``n`` (the same seed and the same sequence of calls give the same
parameters); its volumes are identical for the same thread count on the same device, and across
thread counts equal within a few 1e-7 of their scale, not bit for bit, because the thread count
sets how a batch is split into chunks and a batched FFT rounds each volume a little differently
for another batch size (the FFT itself runs on one thread either way).

A dataset (``dataset_cells`` and ``sample_cells``, used by ``simulate_dataset``) is instead a
function of the structures, config, seed and its size: its classes, parameters, neighbours, noise
seeds and variants are drawn in fixed blocks of 256 volumes, block after block from a generator
of its own, and the volumes are rendered in fixed groups of indices, each on one torch thread, so
the batch size, the memory free and the thread count change nothing: on the CPU (the same kind
and library versions) not a byte; on a GPU the parameters are the same, and the volumes up to
its float rounding (crowding adds neighbours with atomic adds, in no fixed order).

Recorded angles: rot, tilt, psi are ZYZ Euler angles in degrees of the rotation
R = Rz(rot) Ry(tilt) Rz(psi) applied to the structure (uniform on SO(3): rot, psi uniform,
cos(tilt) uniform), then the shift (voxels) is applied. Tilt axis Y, beam along Z.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cryoshift.runtime.errors import InputError
from cryoshift.training.simulate.config import SimulationConfig
from cryoshift.training.simulate.fast import render_fast
from cryoshift.training.simulate.physics import euler_matrices, rfft_grid, rotate_passes, rotate_trilinear
from cryoshift.training.simulate.structures import Structures
from cryoshift.training.simulate.tilt import render_tilt

_CHUNK_POOLS: dict[int, ThreadPoolExecutor] = {}


def _chunk_pool(workers: int) -> ThreadPoolExecutor:
    if workers not in _CHUNK_POOLS:
        _CHUNK_POOLS[workers] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cryoshift-sim")
    return _CHUNK_POOLS[workers]


# Order of the per-subtomogram parameter columns (the dataset's particles.csv follows it).
PARAM_COLUMNS = [
    "rot",
    "tilt",
    "psi",
    "shift_x",
    "shift_y",
    "shift_z",
    "snr",
    "tilt_max",
    "wedge_angle",
    "tilt_step",
    "dose",
    "defocus_um",
    "astigmatism_um",
    "astigmatism_angle",
    "voltage_kv",
    "cs_mm",
    "amplitude_contrast",
    "bfactor",
    "noise_alpha",
    "gradient",
    "gradient_x",
    "gradient_y",
    "gradient_z",
    "inverted",
    "n_neighbours",
    "neighbour_classes",
    "neighbour_poses",
    "variant",
]


class Simulator:
    """Domain-randomised subtomogram simulator over a fixed set of structures."""

    # On the CPU a batch is rendered in chunks that keep the working set in cache: 32 volumes of
    # 32^3 render ~2x faster per volume than 256 at once. These are the chunks at --box CHUNK_BOX and
    # below; larger boxes get fewer volumes per chunk (cpu_chunk), so that a chunk's working buffers
    # stay as small: 32 volumes per thread at --box 256 were 32 x 7 working volumes of 64 MiB
    # (14 GiB, memory.py) per thread.
    CPU_CHUNK = 32
    CPU_CHUNK_TILT = 8
    CHUNK_BOX = 32
    VARIANTS = 16  # structural variants per class and draw, when the config asks for variability
    # A dataset (sample_cells) is drawn in blocks of DATASET_BLOCK volumes, one after the other
    # from its own generator, with a bank of variants per block (as a draw of simulate's default
    # 256 volumes had): fixed blocks, not the batches, so that the batch size changes nothing.
    DATASET_BLOCK = 256

    def __init__(
        self,
        structures: Structures,
        config: SimulationConfig | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
    ):
        if len(structures) == 0:
            raise InputError(None, "no structures to simulate")
        self.structures = structures
        self.config = config or SimulationConfig()
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise InputError(None, "device 'cuda' requested but no CUDA GPU is available")
        self.seed = int(seed)
        self.maps = torch.as_tensor(
            np.ascontiguousarray(structures.maps), dtype=torch.float32, device=self.device
        )
        self.box = int(self.maps.shape[-1])
        self.voxel_size = float(structures.voxel_size)
        self.grid = rfft_grid(self.box, self.voxel_size, self.device)
        self.radii = self._radii(structures.maps)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.noise_generator = torch.Generator(device=self.device).manual_seed(self.seed + 7919)
        self._variant_bank: int | None = None  # the dataset block whose variants self._variants holds
        self._dataset: _DatasetBlock | None = None  # the dataset block drawn last (sample_cells)

    @classmethod
    def cpu_chunk(cls, fidelity: str, box: int) -> int:
        """Volumes of ``box``^3 one thread renders at once on the CPU: CPU_CHUNK (tilt: CPU_CHUNK_TILT)
        up to --box CHUNK_BOX, then as many as hold the voxels of those (at least one volume).

        The volumes do not depend on the chunks but for float rounding: a batched FFT rounds a
        little differently from one volume's (a few 1e-7 of the values)."""
        most = cls.CPU_CHUNK if fidelity == "fast" else cls.CPU_CHUNK_TILT
        return max(1, min(most, most * cls.CHUNK_BOX**3 // box**3))

    @staticmethod
    def _radii(maps: np.ndarray) -> torch.Tensor:
        """Radius (voxels) of each structure: farthest voxel above 10% of its peak, from the centre."""
        box = maps.shape[-1]
        axis = np.arange(box) - box // 2
        r = np.sqrt(axis[:, None, None] ** 2 + axis[None, :, None] ** 2 + axis[None, None, :] ** 2)
        return torch.tensor(
            [float(r[m > 0.1 * m.max()].max()) if m.max() > 0 else 1.0 for m in maps], dtype=torch.float64
        )

    @property
    def class_names(self) -> list[str]:
        return list(self.structures.names)

    # -- parameters -------------------------------------------------------------------------
    def _uniform(
        self, n: int, bounds: tuple[float, float], generator: torch.Generator | None = None
    ) -> torch.Tensor:
        lo, hi = float(bounds[0]), float(bounds[1])
        gen = self.generator if generator is None else generator
        return lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)

    def draw(
        self,
        n: int,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        variants: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Draw every parameter for ``n`` subtomograms (CPU float64 tensors; angles in degrees).

        ``generator`` (default: the simulator's) is what is drawn from; ``variants=False`` draws
        no new bank of structural variants (a dataset draws its block's bank after the block's
        neighbours and noise seeds, from its own generator: sample_cells).
        """
        c = self.config
        gen = self.generator if generator is None else generator
        k = len(self.structures)
        p: dict[str, torch.Tensor] = {}
        p["label"] = (
            torch.randint(0, k, (n,), generator=gen)
            if labels is None
            else torch.as_tensor(labels, dtype=torch.long)
        )
        u = torch.rand(n, 3, generator=gen, dtype=torch.float64)
        p["rot"] = 360.0 * u[:, 0]
        p["tilt"] = torch.rad2deg(torch.arccos(1.0 - 2.0 * u[:, 1]))  # uniform on SO(3) with rot, psi
        p["psi"] = 360.0 * u[:, 2]
        s = c.shift_voxels * (2.0 * torch.rand(n, 3, generator=gen, dtype=torch.float64) - 1.0)
        p["shift_x"], p["shift_y"], p["shift_z"] = s[:, 0], s[:, 1], s[:, 2]
        if c.snr is None:
            p["snr"] = torch.full((n,), math.inf, dtype=torch.float64)
        else:
            lo, hi = math.log(c.snr[0]), math.log(c.snr[1])
            p["snr"] = torch.exp(lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64))
        p["tilt_max"] = self._uniform(n, c.tilt_max, gen)
        p["wedge_angle"] = 90.0 - p["tilt_max"]
        p["tilt_step"] = self._uniform(n, c.tilt_step, gen)
        p["dose"] = self._uniform(n, c.dose, gen)
        p["defocus_um"] = self._uniform(n, c.defocus_um, gen)
        p["astigmatism_um"] = self._uniform(n, c.astigmatism_um, gen)
        p["astigmatism_angle"] = self._uniform(n, (0.0, 180.0), gen)
        p["voltage_kv"] = self._uniform(n, c.voltage_kv, gen)
        p["cs_mm"] = self._uniform(n, c.cs_mm, gen)
        p["amplitude_contrast"] = self._uniform(n, c.amplitude_contrast, gen)
        p["bfactor"] = self._uniform(n, c.bfactor, gen)
        p["noise_alpha"] = self._uniform(n, c.noise_alpha, gen)
        p["gradient"] = self._uniform(n, c.gradient, gen)
        direction = torch.randn(n, 3, generator=gen, dtype=torch.float64)
        direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
        g = direction * p["gradient"].unsqueeze(1)
        p["gradient_x"], p["gradient_y"], p["gradient_z"] = g[:, 0], g[:, 1], g[:, 2]
        p["inverted"] = (torch.rand(n, generator=gen, dtype=torch.float64) < c.invert_contrast).double()
        crowded = torch.rand(n, generator=gen, dtype=torch.float64) < c.crowding
        lo_n, hi_n = c.neighbours
        count = torch.randint(lo_n, hi_n + 1, (n,), generator=gen)
        p["n_neighbours"] = (count * crowded).double()
        if self.varies:
            if variants:
                self._new_variants()  # a fresh set of structural variants for every draw
                self._variant_bank = None
            p["variant"] = torch.randint(0, self.VARIANTS, (n,), generator=gen).double()
        else:
            p["variant"] = torch.full((n,), -1.0, dtype=torch.float64)
        return p

    @property
    def varies(self) -> bool:
        from cryoshift.training.simulate.memory import varies

        return varies(self.config)

    def _new_variants(self, generator: torch.Generator | None = None, by_class: bool = False) -> None:
        """VARIANTS structurally varied copies of every map (variability.py), drawn from
        ``generator`` (default: the simulator's).

        Deforming each of thousands of volumes would cost more than simulating them; a fresh bank
        of variants per draw, each seen under many rotations, costs a few percent. ``by_class``
        (datasets) makes each class's variants on one torch thread, in parallel over classes, so
        that no reduction is split differently for another thread count; train's draws
        (``by_class=False``) keep making the whole bank at once, as before.
        """
        from cryoshift.training.simulate import variability

        c, gen, k = self.config, self.generator if generator is None else generator, len(self.structures)
        m = k * self.VARIANTS
        label = torch.arange(k).repeat_interleave(self.VARIANTS)
        rms = self._uniform(m, c.flex_voxels, gen)
        missing = torch.rand(m, generator=gen, dtype=torch.float64) < c.p_partial
        extra = torch.rand(m, generator=gen, dtype=torch.float64) < c.p_extra
        numbers = variability.random_numbers(torch.randint(0, 2**62, (m,), generator=gen).tolist())
        scale = self._uniform(m, c.magnification, gen)
        if not by_class:
            dens = self._vary(label, rms, missing, extra, numbers, scale)
            self._variants = dens.view(k, self.VARIANTS, *dens.shape[1:])
            return
        # One class per task, each on one torch thread: the bank does not depend on the thread count.
        parts: list[torch.Tensor] = [torch.empty(0)] * k

        def work(cls: int) -> None:
            sel = slice(cls * self.VARIANTS, (cls + 1) * self.VARIANTS)
            mine = {key: value[sel] for key, value in numbers.items()}
            parts[cls] = self._vary(label[sel], rms[sel], missing[sel], extra[sel], mine, scale[sel])

        self._one_thread_each(work, list(range(k)))
        self._variants = torch.stack(parts)

    def _vary(
        self,
        label: torch.Tensor,
        rms: torch.Tensor,
        missing: torch.Tensor,
        extra: torch.Tensor,
        numbers: dict[str, torch.Tensor],
        scale: torch.Tensor,
    ) -> torch.Tensor:
        """The varied maps (m, D, D, D) for drawn variant parameters (``_new_variants``)."""
        from cryoshift.training.simulate import variability

        dens = self.maps.index_select(0, label.to(self.device))
        fields = None  # one resampling pass for flex and magnification together
        if bool((rms > 0).any()):
            fields = variability.flex_fields(numbers["coarse"], self.box, rms, self.device)
        if bool((scale != 1.0).any()):
            zoom = variability.magnification_field(scale, self.box, self.device)
            fields = zoom if fields is None else fields + zoom
        if fields is not None:
            dens = variability.deform(dens, fields)
        return variability.vary_composition(dens, self.radii[label], missing, extra, numbers)

    def _neighbours(
        self, p: dict[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, list[str], list[str]]:
        """Draw neighbour particles (from ``generator``, default the simulator's).

        Returns rows (owner index, class, rot, tilt, psi in radians, x, y, z shift in voxels, 0) for
        every neighbour, and per subtomogram the neighbours' class names and poses as text
        ("rot,tilt,psi,x,y,z" in degrees and voxels, ";"-separated) for the parameter record.
        """
        counts = p["n_neighbours"].long()
        total = int(counts.sum())
        names = [""] * len(counts)
        poses = [""] * len(counts)
        if total == 0:
            return torch.empty(0, 9, dtype=torch.float64), names, poses
        gen = self.generator if generator is None else generator
        owner = torch.repeat_interleave(torch.arange(len(counts)), counts)
        cls = torch.randint(0, len(self.structures), (total,), generator=gen)
        u = torch.rand(total, 3, generator=gen, dtype=torch.float64)
        angles = torch.stack([2 * math.pi * u[:, 0], torch.arccos(1 - 2 * u[:, 1]), 2 * math.pi * u[:, 2]], 1)
        direction = torch.randn(total, 3, generator=gen, dtype=torch.float64)
        direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
        # Touching or a little apart, never interpenetrating: centre distance 1-1.25 x the sum of radii.
        contact = self.radii[p["label"][owner]] + self.radii[cls]
        distance = contact * (1.0 + 0.25 * torch.rand(total, generator=gen, dtype=torch.float64))
        shift = direction * distance.unsqueeze(1)
        pose = torch.cat([torch.rad2deg(angles), shift], 1).tolist()
        for i in range(len(counts)):
            sel = (owner == i).nonzero().flatten().tolist()
            names[i] = ";".join(self.structures.names[int(cls[j])] for j in sel)
            poses[i] = ";".join(",".join(f"{v:.1f}" for v in pose[j]) for j in sel)
        return (
            torch.cat(
                [
                    owner[:, None].double(),
                    cls[:, None].double(),
                    angles,
                    shift,
                    torch.zeros(total, 1, dtype=torch.float64),
                ],
                1,
            ),
            names,
            poses,
        )

    # -- rendering ---------------------------------------------------------------------------
    def _tensors(self, p: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The float parameters as float32 on the device, moved in one transfer."""
        keys = [k for k, v in p.items() if isinstance(v, torch.Tensor) and k != "label"]
        packed = torch.stack([p[k] for k in keys], 1).to(device=self.device, dtype=torch.float32)
        return dict(zip(keys, packed.T.contiguous().unbind(0), strict=True))

    def _density(
        self, p: dict[str, torch.Tensor], neighbours: torch.Tensor, particles: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Rotated, shifted particles plus their neighbours: (n, D, D, D) density, protein positive.

        ``particles`` (n, g, g, g), when given, receives the particle alone (no neighbours, no
        CTF, wedge or noise) averaged down to a g^3 grid: the clean answer for dense supervision.
        """
        accurate = self.config.fidelity == "tilt"
        labels = p["label"].to(self.device)
        if self.varies:
            dens = self._variants[labels, p["variant"].to(self.device).long()]
        else:
            dens = self.maps.index_select(0, labels)
        rad = {k: torch.deg2rad(p[k]).to(self.device, torch.float32) for k in ("rot", "tilt", "psi")}
        shift = torch.stack([p["shift_x"], p["shift_y"], p["shift_z"]], 1).to(self.device, torch.float32)
        out = self._rotate(dens, rad["rot"], rad["tilt"], rad["psi"], shift, accurate)
        if particles is not None:
            particles.copy_(F.adaptive_avg_pool3d(out.unsqueeze(1), particles.shape[-1]).squeeze(1))
        if len(neighbours):
            nb = neighbours.to(self.device, torch.float32)
            extra = self._rotate(
                self.maps.index_select(0, nb[:, 1].long()), nb[:, 2], nb[:, 3], nb[:, 4], nb[:, 5:8], accurate
            )
            out.index_add_(0, nb[:, 0].long(), extra)
        return out

    @staticmethod
    def _rotate(
        dens: torch.Tensor,
        rot: torch.Tensor,
        tilt: torch.Tensor,
        psi: torch.Tensor,
        shift: torch.Tensor,
        accurate: bool,
    ) -> torch.Tensor:
        if accurate:
            return rotate_trilinear(dens, euler_matrices(rot, tilt, psi), shift)
        return rotate_passes(dens, rot, tilt, psi, shift)

    def render(
        self,
        p: dict[str, torch.Tensor],
        generator: torch.Generator | None = None,
        neighbours: torch.Tensor | None = None,
        noise: bool = True,
        particles: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Render volumes (n, D, D, D) float32 for drawn parameters ``p``.

        Rendering the same ``p`` twice with different generators gives two noise realisations of
        the same signal (how the tests measure SNR). ``noise=False`` gives the clean signal.
        ``particles`` (n, g, g, g), when given, is filled as in ``_density``.
        """
        n = len(p["label"])
        if neighbours is None:
            neighbours = torch.empty(0, 9, dtype=torch.float64)
        noise = noise and self.config.snr is not None
        gen = self.noise_generator if generator is None else generator
        on_cpu = self.device.type == "cpu"
        # Per-volume noise seeds on the CPU make the data independent of chunking and threads (up to
        # float rounding of batched kernels, the FFTs': every other step works on each volume alone).
        seeds = torch.randint(0, 2**62, (n,), generator=gen).tolist() if (noise and on_cpu) else None
        threads = torch.get_num_threads() if on_cpu else 1
        chunk = self.cpu_chunk(self.config.fidelity, self.box) if on_cpu else n
        if threads > 1:
            chunk = min(chunk, -(-n // threads))  # at least one chunk per thread
        elif n <= chunk:
            return self._render_chunk(p, neighbours, noise, seeds if seeds is not None else gen, particles)
        out = torch.empty((n, self.box, self.box, self.box), device=self.device)
        owner = neighbours[:, 0].long() if len(neighbours) else torch.empty(0, dtype=torch.long)

        def work(start: int) -> None:
            stop = min(n, start + chunk)
            part = {k: v[start:stop] for k, v in p.items()}
            nb = neighbours[(owner >= start) & (owner < stop)].clone()
            nb[:, 0] -= start
            noise_source = seeds[start:stop] if seeds is not None else gen
            part_out = particles[start:stop] if particles is not None else None
            out[start:stop] = self._render_chunk(part, nb, noise, noise_source, part_out)

        starts = list(range(0, n, chunk))
        if threads < 2:
            for start in starts:
                work(start)
            return out
        # Chunks on parallel threads, each op single-threaded: no OpenMP barriers per small op,
        # which matters on a loaded machine. torch's thread setting is restored afterwards.
        torch.set_num_threads(1)
        try:
            list(_chunk_pool(threads).map(work, starts))
        finally:
            torch.set_num_threads(threads)
        return out

    def _render_chunk(
        self,
        p: dict[str, torch.Tensor],
        neighbours: torch.Tensor,
        noise: bool,
        gen: torch.Generator | list[int],
        particles: torch.Tensor | None = None,
    ) -> torch.Tensor:
        c = self.config
        t = self._tensors(p)
        dens = self._density(p, neighbours, particles)
        if c.fidelity == "fast":
            vol, signal_var = render_fast(
                dens, t, self.grid, c.ctf, c.dose_weighting, c.dose_order, noise, gen
            )
        else:
            vol, signal_var = render_tilt(
                dens, t, self.voxel_size, c.ctf, c.dose_weighting, c.dose_order, noise, gen
            )
        if bool((t["gradient"] != 0).any()):
            a = torch.arange(self.box, device=self.device, dtype=torch.float32) - self.box // 2
            ramp = (
                t["gradient_x"].view(-1, 1, 1, 1) * a.view(1, 1, 1, -1)
                + t["gradient_y"].view(-1, 1, 1, 1) * a.view(1, 1, -1, 1)
                + t["gradient_z"].view(-1, 1, 1, 1) * a.view(1, -1, 1, 1)
            ) / (self.box / 2)
            vol = vol + ramp * torch.sqrt(signal_var).view(-1, 1, 1, 1)
        sign = 1.0 - 2.0 * t["inverted"]
        if c.contrast == "light":
            sign = -sign
        if bool((sign != 1).any()):
            vol = vol * sign.view(-1, 1, 1, 1)
        return vol

    def sample(
        self,
        n: int,
        labels: torch.Tensor | None = None,
        particles: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, list[dict[str, Any]]]:
        """Simulate ``n`` subtomograms with classes drawn uniformly (or the given ``labels``).

        Returns volumes (n, D, D, D) float32 on the simulator's device, labels (n,) long and one
        dict per volume with every drawn parameter (angles in degrees, shifts in voxels).
        ``particles``, an (n, g, g, g) tensor on the device, receives each particle's clean density
        on a g^3 grid (``_density``); the volumes are the same with or without it.
        """
        if int(n) <= 0:
            raise InputError(None, f"number of subtomograms to simulate must be positive, got {n}")
        if labels is not None and (
            len(labels) != n
            or int(torch.as_tensor(labels).min()) < 0
            or int(torch.as_tensor(labels).max()) >= len(self.structures)
        ):
            raise InputError(None, f"labels must be {n} class indices in 0..{len(self.structures) - 1}")
        p = self.draw(n, labels)
        neighbours, names, poses = self._neighbours(p)
        vol = self.render(p, neighbours=neighbours, particles=particles)
        return vol, p["label"].to(self.device), self.rows(p, names, poses)

    def rows(
        self,
        p: dict[str, torch.Tensor],
        neighbour_names: list[str] | None = None,
        neighbour_poses: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        """One plain dict per subtomogram: label, class_name and the PARAM_COLUMNS values."""
        n = len(p["label"])
        cols = {k: p[k].tolist() for k in PARAM_COLUMNS if k in p}
        cols["n_neighbours"] = [int(v) for v in cols["n_neighbours"]]
        cols["inverted"] = [int(v) for v in cols["inverted"]]
        cols["variant"] = [int(v) for v in cols["variant"]]
        cols["neighbour_classes"] = neighbour_names or [""] * n
        cols["neighbour_poses"] = neighbour_poses or [""] * n
        labels = p["label"].tolist()
        out = []
        for i in range(n):
            row: dict[str, Any] = {"label": labels[i], "class_name": self.structures.names[labels[i]]}
            row.update({k: cols[k][i] for k in PARAM_COLUMNS})
            out.append(row)
        return out

    def batches(self, batch_size: int, with_params: bool = False) -> Iterator[tuple]:
        """Endless (volumes (B, 1, D, D, D), labels) batches for on-the-fly training (+ rows if asked)."""
        while True:
            vol, labels, rows = self.sample(batch_size)
            yield (vol.unsqueeze(1), labels, rows) if with_params else (vol.unsqueeze(1), labels)

    # -- datasets: a function of (structures, config, seed, n), not of batches or threads ------
    def dataset_cells(self, n: int) -> list[tuple[int, int]]:
        """The fixed groups (start, stop) in which volumes 0..n-1 of a dataset are rendered: runs of
        ``cpu_chunk`` indices from the start of every DATASET_BLOCK block, on any device and for
        any thread count. Why fixed: a batched FFT rounds each volume a little differently for
        another batch size (a few 1e-7), so groups that followed --batch-size, the memory free or
        --threads made the bytes follow them too. ``sample_cells`` renders runs of these."""
        if int(n) <= 0:
            raise InputError(None, f"number of subtomograms to simulate must be positive, got {n}")
        size = self.cpu_chunk(self.config.fidelity, self.box)
        cells: list[tuple[int, int]] = []
        for block in range(0, int(n), self.DATASET_BLOCK):
            end = min(int(n), block + self.DATASET_BLOCK)
            cells.extend((start, min(end, start + size)) for start in range(block, end, size))
        return cells

    def sample_cells(
        self, cells: Sequence[tuple[int, int]]
    ) -> tuple[torch.Tensor, torch.Tensor, list[dict[str, Any]]]:
        """Volumes, labels and parameter rows of a run of consecutive ``dataset_cells(n)``, in order
        (as ``sample`` returns them).

        The dataset's parameters are drawn in whole blocks of DATASET_BLOCK volumes (classes,
        parameters, neighbours, noise seeds, then the block's bank of structural variants), block
        after block from a generator of the seed's own; each cell is rendered on its own, on one
        torch thread (cells in parallel over torch's thread count). So a dataset cut into any runs
        of cells is the same, byte for byte on the CPU (a GPU: to its rounding), and a
        smaller one of the same seed has the same classes and parameters as the start of a larger
        one. Runs in order are cheapest: an earlier block is drawn again from the start. Unlike
        ``sample``, this leaves the simulator's generators alone: train's draws are not touched.
        """
        cells = [(int(a), int(b)) for a, b in cells]
        size = self.DATASET_BLOCK
        for i, (a, b) in enumerate(cells):
            if not 0 <= a < b or a // size != (b - 1) // size or (i and a != cells[i - 1][1]):
                raise InputError(None, f"cells must be consecutive runs within {size}-volume blocks: {cells}")
        if not cells:
            raise InputError(None, "no cells to simulate")
        first = cells[0][0]
        out = torch.empty((cells[-1][1] - first, self.box, self.box, self.box), device=self.device)
        params: list[dict[str, torch.Tensor]] = []
        names: list[str] = []
        poses: list[str] = []
        for block, group in itertools.groupby(cells, key=lambda cell: cell[0] // size):
            drawn = self._dataset_block(block)
            group = list(group)
            self._render_cells(drawn, group, out[group[0][0] - first : group[-1][1] - first])
            lo, hi = group[0][0] - block * size, group[-1][1] - block * size
            params.append({k: v[lo:hi] for k, v in drawn.params.items()})
            names += drawn.names[lo:hi]
            poses += drawn.poses[lo:hi]
        p = {k: torch.cat([q[k] for q in params]) for k in params[0]}
        return out, p["label"].to(self.device), self.rows(p, names, poses)

    def _render_cells(self, drawn: _DatasetBlock, cells: list[tuple[int, int]], out: torch.Tensor) -> None:
        """Render ``cells`` (a run within block ``drawn``) into ``out``, each cell on its own."""
        base, first = drawn.index * self.DATASET_BLOCK, cells[0][0]
        owner = drawn.neighbours[:, 0].long()
        noise = self.config.snr is not None

        def work(cell: tuple[int, int]) -> None:
            a, b = cell[0] - base, cell[1] - base
            part = {k: v[a:b] for k, v in drawn.params.items()}
            nb = drawn.neighbours[(owner >= a) & (owner < b)].clone()
            nb[:, 0] -= a
            # CPU: one noise seed per volume; a GPU draws a cell's noise at once, from its first seed
            source: torch.Generator | list[int] = drawn.seeds[a:b]
            if self.device.type != "cpu":
                source = torch.Generator(device=self.device).manual_seed(drawn.seeds[a])
            out[cell[0] - first : cell[1] - first] = self._render_chunk(part, nb, noise, source)

        self._one_thread_each(work, cells)

    def _dataset_block(self, block: int) -> _DatasetBlock:
        """Block ``block`` of the dataset's draws, with its variants in ``self._variants``: the one
        drawn last, the next one, or (out of order) the blocks from the first on drawn again."""
        drawn = self._dataset
        if drawn is None or block < drawn.index:
            drawn = None
            generator = torch.Generator().manual_seed(self.seed)  # the dataset's own stream
        else:
            generator = drawn.generator
        while drawn is None or drawn.index < block:
            drawn = self._draw_block(generator, 0 if drawn is None else drawn.index + 1)
        self._dataset = drawn
        if self.varies and self._variant_bank != block:  # train's sample() made its own since
            bank = torch.Generator()
            bank.set_state(drawn.bank_state)
            self._new_variants(bank, by_class=True)
            self._variant_bank = block
        return drawn

    def _draw_block(self, generator: torch.Generator, index: int) -> _DatasetBlock:
        """Draw dataset block ``index`` (the next from ``generator``) and make its bank of variants.

        A whole block is drawn even where the dataset ends inside it: the volumes a dataset has
        do not depend on how many come after them."""
        n = self.DATASET_BLOCK
        p = self.draw(n, generator=generator, variants=False)
        neighbours, names, poses = self._neighbours(p, generator)
        seeds = torch.randint(0, 2**62, (n,), generator=generator).tolist()
        bank_state = generator.get_state()
        if self.varies:
            self._new_variants(generator, by_class=True)
            self._variant_bank = index
        return _DatasetBlock(index, generator, p, neighbours, names, poses, seeds, bank_state)

    def _one_thread_each(self, work: Callable[[Any], None], items: list[Any]) -> None:
        """Run ``work`` on every item with torch on one thread, the items in parallel over torch's
        thread count on the CPU. One thread per task makes the result the same for any --threads:
        torch may split a multi-threaded reduction differently for another thread count."""
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            if self.device.type == "cpu" and threads > 1 and len(items) > 1:
                list(_chunk_pool(threads).map(work, items))
            else:
                for item in items:
                    work(item)
        finally:
            torch.set_num_threads(threads)


@dataclass
class _DatasetBlock:
    """One block of a dataset's draws (``Simulator.sample_cells``): the generator goes on to the next."""

    index: int
    generator: torch.Generator
    params: dict[str, torch.Tensor]
    neighbours: torch.Tensor  # rows as Simulator._neighbours gives them, owners within the block
    names: list[str]
    poses: list[str]
    seeds: list[int]  # noise seeds, one per volume
    bank_state: torch.Tensor  # the generator's state where the block's variants are drawn
