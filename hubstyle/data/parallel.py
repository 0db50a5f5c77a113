"""Parallel style data: (plain -> styled) pairs from two line-aligned files, a JSONL file, or a named corpus.

The named corpus ``shakespeare-modern`` is the train split of Jhamtani et al. (2017) (modern/original line pairs of
Xu et al. 2012), NLTK-tokenised; pairs come back detokenised (``I 'll`` -> ``I'll``, `` ,`` -> ``,``). A held-out
play is a contiguous block of pairs, found by its first and last original lines, so it is the same block in the
shared copy (three plays withheld) and in the canonical 18,395-line files.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from hubstyle.data.chat import jsonl_rows
from hubstyle.data.clean import detokenize
from hubstyle.errors import HubstyleError

PARALLEL_CORPORA = ("shakespeare-modern",)
JSONL_KEYS = (("source", "target"), ("prompt", "completion"))
# What the cards of models trained on parallel pairs (a restyler, a classifier) say about them, by their source: where
# they come from and their licence.
DATA_NOTES = {
    "shakespeare-modern": (
        "The pairs are the train split of Jhamtani et al. (2017, \"Shakespearizing Modern Language Using "
        "Copy-Enriched Sequence to Sequence Models\"; repository harsh19/Shakespearizing-Modern-English), itself from "
        "the corpus of Xu et al. (2012, \"Paraphrasing for Style\"). The modern side was written for study guides "
        "(SparkNotes, eNotes). It is research data and its licence is not stated: whoever publishes or uses a "
        "model trained on it decides whether that use is allowed."
    ),
}


@dataclass(frozen=True)
class Pair:
    """One parallel pair: the plain ``source`` and its styled ``target``; ``line`` is its 1-based line or row."""

    source: str
    target: str
    line: int = 0


@dataclass(frozen=True)
class HeldOutPlay:
    """A play kept out of training: the contiguous block of pairs from ``first`` to ``last`` (original lines)."""

    name: str
    first: str
    last: str


# The Tempest closes the shared copy of shakespeare-modern (958 pairs); never trained or tuned on.
HELD_OUT_PLAYS = {
    "tempest": HeldOutPlay(
        "The Tempest",
        first="I should know that voice .",
        last="He shall pay for him that hath him , and that soundly .",
    ),
}

def read_pairs(source: str | Path, target: str | Path | None = None, *, detok: bool | None = None) -> list[Pair]:
    """Return the pairs of ``source``: the named corpus 'shakespeare-modern', a JSONL file (``source``/``target``
    or ``prompt``/``completion``), or two line-aligned text files (``source`` plain, ``target`` styled).

    ``detok`` undoes NLTK spacing; None: on for the named corpus and ``.nltktok`` files, off otherwise.
    """
    source_text = str(source)
    if target is None and source_text in PARALLEL_CORPORA:
        return read_named_pairs(source_text)
    path = Path(source).expanduser()
    if target is None:
        if path.suffix.lower() != ".jsonl":
            raise HubstyleError(
                f"parallel data {source_text!r}: give a .jsonl file with source/target (or prompt/completion), two "
                f"line-aligned text files, or a named parallel corpus ({', '.join(PARALLEL_CORPORA)})"
            )
        pairs = _jsonl_pairs(path)
    else:
        pairs = _aligned_pairs(path, Path(target).expanduser())
    if detok or (detok is None and path.suffix == ".nltktok"):
        pairs = [Pair(detokenize(p.source), detokenize(p.target), p.line) for p in pairs]
    return pairs


def read_named_pairs(name: str) -> list[Pair]:
    """Return the detokenised pairs of the named parallel corpus ``name`` (read offline from HUBSTYLE_DATA_DIR,
    else downloaded once and checked by sha256)."""
    from hubstyle.data.sources import named_corpus_files

    modern, original = named_corpus_files(name)
    pairs = _aligned_pairs(modern, original)
    return [Pair(detokenize(p.source), detokenize(p.target), p.line) for p in pairs]


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise HubstyleError(f"parallel data file {str(path)!r} not found: check the path")
    try:
        return path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as exc:
        raise HubstyleError(f"{str(path)!r} is not UTF-8 text (byte {exc.start}): convert it to UTF-8") from None


def _aligned_pairs(source: Path, target: Path) -> list[Pair]:
    src, tgt = _read_lines(source), _read_lines(target)
    for lines in (src, tgt):
        if lines and lines[-1] == "":
            lines.pop()
    if len(src) != len(tgt):
        raise HubstyleError(f"{str(source)!r} has {len(src)} lines and {str(target)!r} has {len(tgt)}: line-aligned "
                            "parallel files need the same number of lines")
    pairs = [Pair(s.strip(), t.strip(), n) for n, (s, t) in enumerate(zip(src, tgt), start=1) if s.strip() and t.strip()]
    if not pairs:
        raise HubstyleError(f"{str(source)!r} and {str(target)!r} hold no pair with text on both sides")
    return pairs


def _jsonl_pairs(path: Path) -> list[Pair]:
    pairs = []
    for number, row in jsonl_rows(path, "\n".join(_read_lines(path))):
        keys = next((k for k in JSONL_KEYS if k[0] in row and k[1] in row), None)
        if keys is None:
            raise HubstyleError(f"{str(path)!r} line {number} needs 'source' and 'target' (or 'prompt' and "
                                f"'completion') string fields")
        src, tgt = row[keys[0]], row[keys[1]]
        if not isinstance(src, str) or not isinstance(tgt, str):
            raise HubstyleError(f"{str(path)!r} line {number}: '{keys[0]}' and '{keys[1]}' must be strings")
        if src.strip() and tgt.strip():
            pairs.append(Pair(src.strip(), tgt.strip(), number))
    if not pairs:
        raise HubstyleError(f"{str(path)!r} holds no pair with text on both sides")
    return pairs


def held_out_split(pairs: list[Pair], play: str | None) -> tuple[list[Pair], list[Pair]]:
    """Return (training pairs, held-out play's pairs): the play's contiguous block is cut out whole.

    The block is found by its first and last original lines (compared NLTK-detokenised, as pairs are read).
    """
    if not play:
        return list(pairs), []
    if play not in HELD_OUT_PLAYS:
        raise HubstyleError(f"unknown held-out play {play!r}; known: {', '.join(sorted(HELD_OUT_PLAYS))}")
    spec = HELD_OUT_PLAYS[play]
    targets = [p.target for p in pairs]
    first, last = detokenize(spec.first), detokenize(spec.last)
    try:
        start = targets.index(first)
        end = len(targets) - 1 - targets[::-1].index(last)
    except ValueError:
        raise HubstyleError(f"the held-out play {spec.name} is not in these pairs (its first or last line is "
                            "missing): hold out no play, or use shakespeare-modern") from None
    if end < start:
        raise HubstyleError(f"the held-out play {spec.name}'s last line comes before its first in these pairs")
    return pairs[:start] + pairs[end + 1 :], pairs[start : end + 1]


def scored_split(pairs: list[Pair], play: str | None, share: float) -> tuple[list[Pair], list[Pair]]:
    """Return (pairs to fit, pairs to score on): the named play's block is scored on; without one, the last
    ``share`` of the pairs (contiguous, so no scene is on both sides)."""
    if play:
        return held_out_split(pairs, play)
    cut = len(pairs) - max(1, round(len(pairs) * share))
    if cut < 1:
        raise HubstyleError(f"{len(pairs)} pair(s) cannot be split into pairs to fit and pairs to score on; give more")
    return pairs[:cut], pairs[cut:]


def changed(pair: Pair) -> bool:
    """Return whether the styled side differs from the plain side (beyond case and spacing)."""
    norm = lambda s: " ".join(s.lower().split())  # noqa: E731
    return norm(pair.source) != norm(pair.target)


_WORD = re.compile(r"[a-z']+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def style_words(pairs: list[Pair], *, min_ratio: float = 4.0, min_count: int = 15) -> list[str]:
    """Return the words the styled sides use at least `min_ratio` times as often as the plain sides, most marked first.

    Learnt from the pairs themselves (add-one smoothed frequency ratio), so any parallel corpus has its own: for
    shakespeare-modern they open with thou, thee, thy, hath, art, doth.
    """
    plain, styled = Counter(), Counter()
    for pair in pairs:
        plain.update(_words(pair.source))
        styled.update(_words(pair.target))
    n_plain, n_styled = max(1, sum(plain.values())), max(1, sum(styled.values()))
    ratio = {w: ((c + 1) / n_styled) / ((plain[w] + 1) / n_plain) for w, c in styled.items() if c >= min_count}
    return sorted((w for w, r in ratio.items() if r >= min_ratio), key=lambda w: (-ratio[w], w))


def bias_words(pairs: list[Pair], n: int = 20) -> list[str]:
    """Return the `n` most marked style words that no plain side uses, whole words of three letters or more (a
    fragment such as "th" would also push every word that starts with it): what a restyler's decoding bias favours."""
    plain: Counter = Counter()
    for pair in pairs:
        plain.update(_words(pair.source))
    whole = re.compile(r"^'?[a-z][a-z']*[a-z]$")
    return [w for w in style_words(pairs) if not plain[w] and whole.match(w) and len(w.strip("'")) >= 3][:n]


def introduces(pair: Pair, words: set[str]) -> bool:
    """Return whether the styled side uses one of `words` that the plain side does not."""
    return bool((set(_words(pair.target)) - set(_words(pair.source))) & words)


def pairs_sha256(pairs: list[Pair]) -> str:
    """Return the sha256 of the pairs' text, in order (what a card cites for the held-out block)."""
    digest = hashlib.sha256()
    for p in pairs:
        digest.update(f"{p.source}\t{p.target}\n".encode())
    return digest.hexdigest()
