"""Mixed precision: which reduced precision a training step may use on this machine.

Why a module of its own: the trainer asks on every step, and the run record (``versions.json``)
states the answer, so the probe lives in one place that both import without a cycle.
"""

from __future__ import annotations

import functools
from contextlib import AbstractContextManager, nullcontext

import torch


@functools.cache  # a fact of the machine, asked on every training step
def cpu_has_native_bf16() -> bool:
    """Whether this CPU runs bf16 convolutions in hardware (AMX or AVX512-BF16).

    Where it does, bf16 autocast trains the 3-D convolutions 2-3x faster (more volumes per CPU-hour,
    the accuracy lever on CPU); where it does not, bf16 is emulated and slower, so it stays off."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def autocast(device: str, enabled: bool) -> AbstractContextManager:
    """bf16 (or fp16 where bf16 is missing) on CUDA, bf16 on CPUs that run it natively, else fp32."""
    if device.startswith("cuda") and enabled:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    if device == "cpu" and enabled and cpu_has_native_bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()
