"""Several processes, one model: torchrun + DistributedDataParallel.

``torchrun --nproc_per_node N -m cryoshift.runtime.cli train ...`` sets RANK/WORLD_SIZE/
LOCAL_RANK; :func:`setup` reads them, joins the process group (NCCL on GPUs, gloo on CPU) and
picks this process's device. Every rank draws the same permutation from the same seed and takes
its own slice of each global batch (see :func:`rank_slice`), so no sampler state needs syncing.
Only rank 0 writes files; the method is wrapped so DDP averages the gradients of whatever
modules the adaptation method owns (discriminators, warp net), used or not in a given step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str, local_rank: int = 0) -> str:
    """``auto`` -> cuda when available; ``cuda`` on a machine without one is an input error."""
    from cryoshift.runtime.errors import InputError

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        from cryoshift.runtime.contract import CUDA_DEVICE

        if not CUDA_DEVICE.fullmatch(device):
            raise InputError(None, f"--device must be cpu, cuda, cuda:N or auto, not {device!r}")
        if not torch.cuda.is_available():
            raise InputError(None, "--device cuda requested but no CUDA GPU is visible")
        return f"cuda:{local_rank}" if device == "cuda" else device
    if device != "cpu":
        raise InputError(None, f"--device must be cpu, cuda or auto, not {device!r}")
    return device


def setup(device: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun (or a spawn test); else one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    dev = resolve_device(device, local)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.startswith("cuda") else "gloo"
        if dev.startswith("cuda"):
            torch.cuda.set_device(torch.device(dev))
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistInfo(rank, world, local, dev)


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def rank_slice(order: np.ndarray, step: int, batch_size: int, info: DistInfo) -> np.ndarray:
    """This rank's ``batch_size`` indices of global step ``step`` (wrapping around the epoch)."""
    n = len(order)
    start = step * batch_size * info.world_size + info.rank * batch_size
    return order[(start + np.arange(batch_size)) % n]


def steps_per_epoch(n: int, batch_size: int, info: DistInfo) -> int:
    return max(1, -(-n // (batch_size * info.world_size)))


class LossModule(nn.Module):
    """``forward`` = ``method.losses`` (plus dense supervision's loss when it is on), so DDP can
    hook the backward pass of a method and of the dense decoder."""

    def __init__(self, method: nn.Module, dense: nn.Module | None = None):
        super().__init__()
        self.method = method
        self.dense = dense

    def forward(
        self, *args: Any, source_particles: torch.Tensor | None = None, **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        if self.dense is None or source_particles is None:
            return self.method.losses(*args, **kwargs)
        self.dense.arm()
        out = self.method.losses(*args, **kwargs)
        dense = self.dense.loss(source_particles)
        out["total"] = out["total"] + self.dense.weight * dense
        out["dense"] = dense.detach()
        return out


def wrap(method: nn.Module, info: DistInfo, dense: nn.Module | None = None) -> nn.Module:
    """A callable returning the losses dict; DDP-wrapped when several processes train."""
    module = LossModule(method, dense)
    if not info.enabled:
        return module
    ids = [torch.device(info.device).index] if info.device.startswith("cuda") else None
    # Methods use some modules only in some steps (e.g. oracle without a target batch).
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)


def mean_across(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Average per-rank scalars (epoch loss means) so rank 0 logs the global figure."""
    if not info.enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    t = t.cpu()
    return {k: float(v) / info.world_size for k, v in zip(keys, t.tolist(), strict=True)}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _local_worker(rank: int, world_size: int, port: int, config: dict[str, Any], queue: Any) -> None:
    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world_size),
        }
    )
    from cryoshift.training.trainer import TrainConfig, train

    result = train(TrainConfig.from_dict(config))
    queue.put((rank, result.param_digest))


def launch_local(config: Any, nprocs: int) -> list[str]:
    """Train with ``nprocs`` processes on this machine (gloo on CPU) without torchrun.

    Returns each rank's final parameter digest, in rank order: DDP keeps the replicas identical,
    so they should all be equal. torchrun remains the way to go across nodes.
    """
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.spawn(_local_worker, args=(nprocs, free_port(), config.to_dict(), queue), nprocs=nprocs, join=True)
    digests = dict(queue.get() for _ in range(nprocs))
    return [digests[r] for r in range(nprocs)]


def broadcast_from_main(values: np.ndarray, info: DistInfo) -> np.ndarray:
    """Rank 0's ``values`` on every rank (same shape and dtype everywhere): a choice made from
    floating-point scores must be one choice, or the ranks train on different data."""
    if not info.enabled:
        return values
    t = torch.from_numpy(np.ascontiguousarray(values)).to(info.device)
    dist.broadcast(t, src=0)
    return t.cpu().numpy()
