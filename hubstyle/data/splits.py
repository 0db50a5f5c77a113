"""Leak-free train/validation/test splits by contiguous segments of blocks (never by random lines)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hubstyle.errors import HubstyleError


@dataclass
class Splits:
    """Train, validation and test blocks, each in source order, and which segments each split got."""

    train: list[str]
    validation: list[str]
    test: list[str]
    segments: dict[str, list[int]] = field(default_factory=dict)


def split_blocks(
    blocks: list[str],
    *,
    validation: float = 0.05,
    test: float = 0.05,
    seed: int = 0,
    n_segments: int = 20,
) -> Splits:
    """Return ``blocks`` split by whole contiguous segments, the held-out segments picked from ``seed``.

    The blocks are cut into ``n_segments`` contiguous segments of near-equal block counts (fewer when there are fewer
    blocks); ``round(fraction * segments)`` of them, at least one for a non-zero fraction, go to validation and to
    test, picked by ``random.Random(seed)``; the rest is train. Same input and seed give the same splits.
    """
    for label, value in (("validation", validation), ("test", test)):
        if not 0 <= value < 1:
            raise HubstyleError(f"{label} fraction must be in [0, 1), got {value}")
    if validation + test >= 1:
        raise HubstyleError(f"validation + test must be < 1 so train keeps some blocks, got {validation + test}")
    if n_segments < 1:
        raise HubstyleError(f"n_segments must be >= 1, got {n_segments}")
    n_seg = min(n_segments, len(blocks))
    n_val = _segment_count(validation, n_seg)
    n_test = _segment_count(test, n_seg)
    if n_val + n_test + 1 > n_seg:
        raise HubstyleError(
            f"too few blocks to split: {len(blocks)} block(s) make {n_seg} segment(s), but train, validation and "
            f"test need {n_val + n_test + 1}; give more text, raise n_segments, or lower the fractions"
        )

    bounds = _segment_bounds(len(blocks), n_seg)
    held_out = random.Random(seed).sample(range(n_seg), n_val + n_test)
    chosen = {
        "train": sorted(set(range(n_seg)) - set(held_out)),
        "validation": sorted(held_out[:n_val]),
        "test": sorted(held_out[n_val:]),
    }

    def gather(segments: list[int]) -> list[str]:
        return [block for s in segments for block in blocks[bounds[s] : bounds[s + 1]]]

    return Splits(
        train=gather(chosen["train"]),
        validation=gather(chosen["validation"]),
        test=gather(chosen["test"]),
        segments=chosen,
    )


def _segment_count(fraction: float, n_segments: int) -> int:
    return max(1, round(fraction * n_segments)) if fraction > 0 else 0


def _segment_bounds(n_blocks: int, n_segments: int) -> list[int]:
    """Return the ``n_segments + 1`` cut points of ``n_blocks`` blocks into near-equal contiguous segments."""
    return [round(i * n_blocks / n_segments) for i in range(n_segments + 1)]
