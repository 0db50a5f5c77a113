"""Confidence intervals for rates such as the style rate (share of generations a classifier calls in-style)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist

from hubstyle.errors import HubstyleError


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Return the Wilson score interval ``(low, high)`` for ``successes`` out of ``n`` trials.

    Unlike the normal ("Wald") interval it stays inside [0, 1] and is sensible for rates near 0 or 1 and
    small ``n``, which is what a style rate over a few dozen prompts looks like. ``n == 0`` carries no
    information, so it gives the whole range ``(0.0, 1.0)`` rather than an error: an empty prompt set is
    caught where prompts are loaded.
    """
    if not 0.0 < confidence < 1.0:
        raise HubstyleError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")
    if n < 0 or successes < 0 or successes > n:
        raise HubstyleError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # Clamp: at p = 0 or 1 the bound is exactly 0 or 1 in exact arithmetic, up to rounding here.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True)
class RateCI:
    """A rate with its Wilson confidence interval: ``successes`` of ``n``, ``rate`` in ``[low, high]``."""

    rate: float
    low: float
    high: float
    n: int
    successes: int
    confidence: float = 0.95

    @classmethod
    def from_counts(cls, successes: int, n: int, confidence: float = 0.95) -> "RateCI":
        """Return the rate ``successes / n`` (0.0 when ``n`` is 0) with its Wilson interval."""
        low, high = wilson_interval(successes, n, confidence)
        return cls(successes / n if n else 0.0, low, high, n, successes, confidence)

    def as_dict(self) -> dict:
        """Return the fields as a plain dict (for JSON and model cards)."""
        return asdict(self)

    def __str__(self) -> str:
        pct = round(self.confidence * 100)
        return f"{self.rate:.1%} ({self.successes}/{self.n}; {pct}% CI {self.low:.1%}-{self.high:.1%})"
