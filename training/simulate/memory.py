"""How much memory the simulator takes for a batch, so that a batch that cannot fit is made smaller
or refused before the work, not ended by the OOM killer ("Killed", no reason).

Why an estimate from measured counts: a batch holds its volumes (``n x box^3`` float32) and, for
the volumes being rendered at once, the simulator's working buffers (rotated densities, Fourier
filters, spectra, noise, trilinear grids), which depend on the fidelity, the crowding and the
structural variability. Measured as peak RSS over ``Simulator.sample`` at boxes 32-128, one thread
(in box^3 float32 volumes, the batch's own volumes included): fast 4.7-6.5 per volume rendered at
once, tilt 11-15; every neighbour of a crowded volume 2-2.6 (fast) and ~10 (tilt: trilinear
rotation grids); every structural variant 10-13 while the bank of variants is made. The counts
below round these up. On the CPU ``Simulator.render`` renders at most ``Simulator.cpu_chunk``
volumes per thread at once (32 at --box 32, fewer at larger boxes: as many voxels); on a GPU the
whole batch at once (the counts are taken to hold there too: not measured on a GPU).
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

from cryoshift.training.simulate.config import SimulationConfig

# Working buffers per volume rendered at once, besides the volume itself (box^3 float32 volumes)
VOLUME_WORK = {"fast": 7, "tilt": 15}
# ... per neighbour particle of a crowded volume rendered at once
NEIGHBOUR_WORK = {"fast": 3, "tilt": 10}
# ... per structural variant while the bank of variants is made (deformation fields and grids)
VARIANT_WORK = 14


@dataclass(frozen=True)
class BatchMemory:
    """Bytes one batch of ``n`` volumes needs: ``host`` (its volumes, and on the CPU the working
    buffers) and ``device`` (a GPU's share: the working buffers, maps and volumes; 0 on the CPU)."""

    n: int
    host: int
    device: int


def varies(config: SimulationConfig) -> bool:
    """Whether ``config`` asks for structural variability (``Simulator.varies``: a bank of variants)."""
    c = config
    return max(c.flex_voxels) > 0 or c.p_partial > 0 or c.p_extra > 0 or c.magnification != (1.0, 1.0)


def in_flight(n: int, fidelity: str, device: str, threads: int, box: int) -> int:
    """Volumes of ``box``^3 ``Simulator.render`` works on at once in a batch of ``n`` (its chunking)."""
    from cryoshift.training.simulate.simulator import Simulator

    if device.startswith("cuda"):
        return n
    return min(n, Simulator.cpu_chunk(fidelity, box) * max(1, threads))


def batch_memory(
    n: int, box: int, classes: int, config: SimulationConfig, device: str = "cpu", threads: int | None = None
) -> BatchMemory:
    """What a batch of ``n`` volumes of ``box``^3 over ``classes`` structures takes (an upper
    estimate, see the module docstring); ``threads`` defaults to torch's."""
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    volume = box**3 * 4
    fidelity = config.fidelity
    at_once = in_flight(n, fidelity, device, threads, box)
    work = at_once * VOLUME_WORK[fidelity]
    if config.crowding > 0:
        lo, hi = config.neighbours
        # the expected neighbours of the volumes rendered at once, and one volume's most on top
        work += (math.ceil(at_once * config.crowding * (lo + hi) / 2) + hi) * NEIGHBOUR_WORK[fidelity]
    if varies(config):
        from cryoshift.training.simulate.simulator import Simulator

        bank = classes * Simulator.VARIANTS  # kept for the draw; made before the batch is rendered
        work = bank + max(work, bank * VARIANT_WORK)
    if device.startswith("cuda"):  # the maps and Fourier grids go to the GPU too; the volumes come back
        return BatchMemory(n, n * volume, (work + n + classes + 2) * volume)
    return BatchMemory(n, (work + n) * volume, 0)


def memory_available(device: str = "cpu") -> tuple[int | None, int | None]:
    """(host, device) bytes this process can still take; None where unknown (the device's on the CPU)."""
    from cryoshift.runtime import hostmem

    host = hostmem.available_memory()
    if not device.startswith("cuda"):
        return host, None
    try:
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(device))
    except Exception:  # no answer from the driver: the run says what goes wrong
        return host, None
    return host, int(free)


def shortfall(need: BatchMemory, host: int | None, device: int | None) -> tuple[str, int, int] | None:
    """(which memory, bytes needed, bytes available) for the first that ``need`` exceeds; None if it fits."""
    if host is not None and need.host > host:
        return "host", need.host, host
    if device is not None and need.device > device:
        return "GPU", need.device, device
    return None


def largest_batch(
    limit: int,
    box: int,
    classes: int,
    config: SimulationConfig,
    device: str = "cpu",
    available: tuple[int | None, int | None] | None = None,
    threads: int | None = None,
) -> int:
    """The largest batch of at most ``limit`` volumes that fits the memory ``available`` (default:
    :func:`memory_available`); 0 when even one volume does not."""
    host, dev = memory_available(device) if available is None else available

    def fits(k: int) -> bool:
        return shortfall(batch_memory(k, box, classes, config, device, threads), host, dev) is None

    if fits(limit):
        return limit
    lo, hi = 0, limit  # fits(lo) (or lo == 0), not fits(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def sample_within_memory(sim, n: int, particles=None, copies: int = 0, what: str = "") -> tuple:
    """``sim.sample(n)`` as (volumes, labels) numpy arrays, in smaller batches when the whole does
    not fit the memory available (train's on-the-fly source draws an epoch of volumes at once).

    Why: ``sample`` renders a batch in one go on a GPU, so --sim-per-epoch 6144 at --box 64 asked
    the GPU for ~50 GiB of working buffers, and at larger boxes the host too ran out. The batches
    are made smaller to fit, with one note (the volumes drawn then differ from one batch's, as
    with another --batch-size of simulate). The ``n`` volumes themselves (and ``copies`` more, the
    caller's) must fit: if they cannot, an InputError says so, naming ``what`` (the options that
    set ``n``). ``particles`` (n, g, g, g) on the simulator's device is filled as by ``sample``.
    """
    import numpy as np

    from cryoshift.runtime.errors import InputError
    from cryoshift.runtime.hostmem import format_bytes

    device = str(sim.device)
    classes, box, config = len(sim.structures), sim.box, sim.config
    host, dev = memory_available(device)
    result = n * box**3 * 4
    whole = batch_memory(n, box, classes, config, device)
    short = shortfall(BatchMemory(n, whole.host + copies * result, whole.device), host, dev)
    if short is None:
        vol, labels, _rows = sim.sample(n, particles=particles)
        return vol.float().cpu().numpy(), labels.cpu().numpy().astype(np.int64)
    room = None if host is None else host - (1 + copies) * result  # beside the volumes drawn
    step = largest_batch(n, box, classes, config, device, (room, dev))
    if step == 0:
        if room is not None and room < 0:
            kind, need, have = "host", (1 + copies) * result, host
            detail = f"{n} volumes of {box}^3 float32" + (f" and {copies} copies of them" if copies else "")
        else:
            kind, need, have = shortfall(batch_memory(1, box, classes, config, device), room, dev)
            detail = f"the simulator's working buffers for one volume of {box}^3, beside the {n} volumes"
        raise InputError(
            None,
            f"simulating {n} volumes at --box {box} needs {format_bytes(need)} of {kind} memory "
            f"({detail}), but {format_bytes(have)} is available; lower {what or 'the number of volumes'} "
            "or --box",
        )
    if sim not in _NOTED:
        import sys

        _NOTED.add(sim)
        kind, need, have = short
        print(
            f"cryoshift: note: simulating {n} volumes at --box {box} in batches of {step} to fit the "
            f"memory available (at once they need {format_bytes(need)} of {kind} memory, "
            f"{format_bytes(have)} is available)",
            file=sys.stderr,
            flush=True,
        )
    volumes = np.empty((n, box, box, box), np.float32)
    labels = np.empty(n, np.int64)
    for start in range(0, n, step):
        stop = min(n, start + step)
        part = None if particles is None else particles[start:stop]
        vol, lab, _rows = sim.sample(stop - start, particles=part)
        volumes[start:stop] = vol.float().cpu().numpy()
        labels[start:stop] = lab.cpu().numpy()
    return volumes, labels


_NOTED: weakref.WeakSet = weakref.WeakSet()  # simulators whose draws were split (noted once each)
