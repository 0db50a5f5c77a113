"""What machine a figure was measured on: the processor, its cores and whether bf16 is fast there."""

from __future__ import annotations

import os
from pathlib import Path

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
    flags = cpu_flags()
    fast = [f for f in BF16_FLAGS if f in flags]
    bf16 = ", ".join(fast) if fast else f"no {'/'.join(BF16_FLAGS)}"
    return f"{cpu_name()}, {len(os.sched_getaffinity(0))} cores, {bf16}"
