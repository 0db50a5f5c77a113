"""Peak resident memory of each stage of a run: what a user with an 8 GB laptop needs to know before starting one.

On Linux the kernel keeps the process's high-water mark (VmHWM) and resets it when "5" is written to
/proc/self/clear_refs, so each stage's own peak is measured, not the run's peak so far. Elsewhere only the peak of the
whole process is known (``resource.getrusage``), and a stage reports that. The reset also lowers what the kernel
reports as the process's maxrss at exit (``/usr/bin/time -v``): the run's peak is the largest stage peak.
"""

from __future__ import annotations

import resource
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_mb(field: str) -> float | None:
    """Return a memory field of /proc/self/status (``VmHWM``, ``VmRSS``) in MB, or None where /proc is missing."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """Return the process's peak resident memory in MB since start (or since the last `reset_peak`)."""
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def rss_mb() -> float:
    """Return the process's resident memory now, in MB (0.0 where /proc is missing)."""
    return _status_mb("VmRSS") or 0.0


def reset_peak() -> bool:
    """Return whether the peak was reset to the current resident memory (Linux only)."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def release_freed() -> bool:
    """Return whether freed heap memory went back to the system: a garbage collection, then glibc's
    ``malloc_trim(0)``. Without it, the arenas a finished step (training, a classifier) freed stay resident and the
    next step's peak stands on top of them. Elsewhere than glibc only the collection runs."""
    import ctypes
    import gc

    gc.collect()
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


class StageMeter:
    """Records each stage's wall time and peak resident memory, in order, for the log and the run's metrics."""

    def __init__(self, log: Callable[[str], None] | None = None) -> None:
        self.log = log
        self.stages: dict[str, dict[str, float]] = {}
        self.per_stage = reset_peak()  # False: each figure is the process's peak so far

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Measure the block as stage `name` (a repeated name adds its time and keeps the larger peak)."""
        if self.per_stage:
            reset_peak()
        start = time.perf_counter()
        try:
            yield
        finally:
            release_freed()  # what the stage freed goes back before the next one starts
            seconds, peak = time.perf_counter() - start, peak_rss_mb()
            seen = self.stages.get(name)
            if seen:
                seconds, peak = seen["seconds"] + seconds, max(seen["peak_rss_mb"], peak)
            self.stages[name] = {"seconds": round(seconds, 3), "peak_rss_mb": round(peak)}
            if self.log:
                self.log(f"[{name}] {seconds:.0f} s, peak memory {peak / 1024:.2f} GB")

    def as_dict(self) -> dict:
        """Return the stages and the run's peak (the largest stage peak) as plain data for metrics.json."""
        peak = max((s["peak_rss_mb"] for s in self.stages.values()), default=round(peak_rss_mb()))
        return {"stages": dict(self.stages), "peak_rss_mb": peak, "per_stage": self.per_stage}

    def summary(self) -> str:
        """Return one line: each stage's time and peak, then the total time."""
        parts = [f"{n} {s['seconds']:.0f} s / {s['peak_rss_mb'] / 1024:.1f} GB" for n, s in self.stages.items()]
        total = sum(s["seconds"] for s in self.stages.values())
        return f"{'; '.join(parts)} (total {total:.0f} s)"
