"""What machine a figure was measured on: the processor, its cores and whether bf16 is fast there."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags() -> set[str]:
    """Return the CPU feature flags from /proc/cpuinfo (empty where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_name() -> str:
    """Return the processor's model name (or the platform's word for it)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def machine_summary() -> str:
    """Return e.g. 'AMD EPYC, 2 cores, no avx512_bf16/amx_bf16' or '... , 2 cores, avx512_bf16' (or the GPU)."""
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA)"
    return cpu_summary()


def cpu_summary() -> str:
    """Return the processor, its cores and its bf16 instructions, e.g. 'AMD EPYC, 2 cores, no avx512_bf16/amx_bf16'."""
    flags = cpu_flags()
    fast = [f for f in BF16_FLAGS if f in flags]
    bf16 = ", ".join(fast) if fast else f"no {'/'.join(BF16_FLAGS)}"
    return f"{cpu_name()}, {len(os.sched_getaffinity(0))} cores, {bf16}"


def matmul_peak_gflops(dtype: torch.dtype, size: int = 1024, budget_s: float = 3.0) -> float:
    """Return the best `dtype` matmul rate (GFLOP/s) of `size`^2 matmuls with torch's current threads, measured for
    about `budget_s` seconds (at least one matmul): the precision the runs train in, probed in seconds even where it
    is slow (bf16 without avx512_bf16 took minutes a matmul at 2048^2)."""
    import torch

    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    a @ b
    best, began = 0.0, time.perf_counter()
    while True:
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * size**3 / (time.perf_counter() - start) / 1e9)
        if time.perf_counter() - began > budget_s:
            return best


def load_average() -> float:
    """Return the 1-minute load average (0 where the OS does not say)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0
