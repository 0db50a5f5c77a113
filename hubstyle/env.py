"""Switches hubstyle reads from the environment, and what their values mean: the one place that says so."""

from __future__ import annotations

import os

QUIET_ENV = "HUBSTYLE_QUIET"  # =1: no progress bars (the tests set it)


def env_flag(name: str) -> bool:
    """Return whether the switch ``name`` is on: set to anything but '' or '0' (so HUBSTYLE_QUIET=0 means not quiet)."""
    return os.environ.get(name, "") not in ("", "0")


def quiet() -> bool:
    """Return whether progress bars are off (HUBSTYLE_QUIET=1, as in tests)."""
    return env_flag(QUIET_ENV)
