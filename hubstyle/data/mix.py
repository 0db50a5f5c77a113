"""Balance several style corpora to about the same number of tokens, keeping each one's blocks in order."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from hubstyle.errors import HubstyleError


@dataclass
class StyleMix:
    """What balancing did to one style: tokens and blocks before and after, and whether it was repeated."""

    tokens_before: int
    tokens_after: int
    blocks_before: int
    blocks_after: int
    upsampled: bool

    @property
    def ratio(self) -> float:
        """Return tokens after / tokens before (above 1 when upsampled)."""
        return self.tokens_after / self.tokens_before


@dataclass
class MixReport:
    """Per-style token and block counts before and after ``balance_by_tokens``."""

    target_tokens: int
    styles: dict[str, StyleMix] = field(default_factory=dict)

    @property
    def upsampled(self) -> list[str]:
        """Return the names of the styles that were repeated to reach the target."""
        return [name for name, mix in self.styles.items() if mix.upsampled]

    def as_dict(self) -> dict:
        """Return the report as plain data (for a model card or a JSON log)."""
        return {"target_tokens": self.target_tokens, "styles": {n: asdict(m) for n, m in self.styles.items()}}

    def __str__(self) -> str:
        header = ("style", "tokens before", "tokens after", "blocks before", "blocks after", "upsampled")
        rows = [header] + [
            (
                name,
                f"{m.tokens_before:,}",
                f"{m.tokens_after:,}",
                f"{m.blocks_before:,}",
                f"{m.blocks_after:,}",
                f"yes (x{m.ratio:.2f})" if m.upsampled else "no",
            )
            for name, m in self.styles.items()
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]

        def render(row: tuple[str, ...]) -> str:
            # The style name reads left-aligned, the numbers right-aligned.
            cells = [row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True)]
            return "  ".join(cells)

        lines = [render(row) for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return f"target: {self.target_tokens:,} tokens per style\n" + "\n".join(lines)


def balance_by_tokens(
    styles: dict[str, list[str]],
    count_tokens: Callable[[str], int],
    *,
    target_tokens: int | None = None,
) -> tuple[dict[str, list[str]], MixReport]:
    """Return each style's blocks cut or repeated to about ``target_tokens`` (default: the smallest style's count).

    A style larger than the target keeps the prefix of its blocks whose token count is closest to the target; a smaller
    one is repeated whole as often as fits, then continued with such a prefix (and marked upsampled). Block order is
    kept; nothing is shuffled. Counts can only be as close as one block allows.
    """
    if not styles:
        raise HubstyleError("balance_by_tokens needs at least one style; got none")
    if target_tokens is not None and target_tokens <= 0:
        raise HubstyleError(f"target_tokens must be > 0, got {target_tokens}")
    counts = {name: [int(count_tokens(block)) for block in blocks] for name, blocks in styles.items()}
    totals = {name: sum(c) for name, c in counts.items()}
    empty = [name for name, total in totals.items() if total <= 0]
    if empty:
        raise HubstyleError(f"style(s) {empty} have no tokens: give each style some text")
    target = target_tokens if target_tokens is not None else min(totals.values())

    balanced: dict[str, list[str]] = {}
    report = MixReport(target_tokens=target)
    for name, blocks in styles.items():
        block_counts, total = counts[name], totals[name]
        repeats, remainder = divmod(target, total)
        n = _closest_prefix(block_counts, remainder)
        if repeats == 0 and n == 0:
            n = 1  # never leave a style empty, even when its first block alone overshoots the target
        out = list(blocks) * repeats + list(blocks[:n])
        tokens = total * repeats + sum(block_counts[:n])
        balanced[name] = out
        report.styles[name] = StyleMix(
            tokens_before=total,
            tokens_after=tokens,
            blocks_before=len(blocks),
            blocks_after=len(out),
            upsampled=target > total,
        )
    return balanced, report


def _closest_prefix(counts: list[int], target: int) -> int:
    """Return how many leading blocks have a token sum closest to ``target`` (the shorter prefix on a tie)."""
    running = 0
    for i, count in enumerate(counts):
        if running + count >= target:
            over, under = running + count - target, target - running
            return i + 1 if over < under else i
        running += count
    return len(counts)
