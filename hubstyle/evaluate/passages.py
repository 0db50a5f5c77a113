"""Texts a style classifier learns from and is scored on: passages the length of a generation, and disfluent copies.

A classifier trained only on clean prose and verse reads any disfluent text as the unusual class: a tiny model's
modern-English word salad was judged "shakespeare" 17-25% of the time. ``disfluent`` gives every class the same
kinds of damage a small model's samples have, so the classifier learns to judge the words that are left.
"""

from __future__ import annotations

import random
import re
from typing import Iterator, Sequence

from hubstyle.errors import HubstyleError

_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")


def _units(line: str, max_words: int) -> Iterator[str]:
    """Yield the sentences of one line, each cut to at most ``max_words`` words."""
    for sentence in _SENTENCE_END.split(line.strip()):
        words = sentence.split()
        for start in range(0, len(words), max_words):
            yield " ".join(words[start : start + max_words])


def make_passages(texts: Sequence[str], *, min_words: int = 40, max_words: int = 100, seed: int = 0) -> list[str]:
    """Return ``texts`` re-cut into passages of ``min_words``-``max_words`` words, each ending at a sentence end.

    Texts are read as one stream (short speeches join their neighbours; long paragraphs are split), lines keep
    their line breaks, and each passage's length is drawn uniformly from the range so lengths vary like
    generations do. A last short piece is kept only if it has at least ``min_words // 2`` words (or is all
    there is).
    """
    if not 0 < min_words <= max_words:
        raise HubstyleError(f"need 0 < min_words <= max_words, got min_words={min_words}, max_words={max_words}")
    rng = random.Random(seed)
    passages: list[str] = []
    lines: list[str] = []
    count = 0
    target = rng.randint(min_words, max_words)

    def emit() -> None:
        nonlocal lines, count, target
        passages.append("\n".join(lines))
        lines, count = [], 0
        target = rng.randint(min_words, max_words)

    for text in texts:
        for line in text.splitlines():
            new_line = True
            for unit in _units(line, max_words):
                n = len(unit.split())
                if count and count + n > max_words:
                    emit()
                    new_line = True
                if new_line or not lines:
                    lines.append(unit)
                else:
                    lines[-1] += " " + unit
                new_line = False
                count += n
                if count >= target:
                    emit()
                    new_line = True
    if lines and (count >= min_words // 2 or not passages):
        emit()
    return passages


_STRAY = ['"', '"', "(", ")", "[", "]", ",", ".", ";", ":", "'", "-"]
# Per-word chances at strength 1 (cumulative thresholds below): swap 15%, drop 6%, repeat 3%, splice 12%, mark 6%.
_SWAP, _DROP, _REPEAT, _SPLICE, _MARK = 0.15, 0.06, 0.09, 0.21, 0.27


def disfluent(text: str, rng: random.Random, strength: float = 1.0) -> str:
    """Return ``text`` with the disfluencies a small language model's samples have, drawn from its own words.

    Per word, with probabilities scaled by ``strength``: swapped with its neighbour, dropped, repeated, spliced
    with another word of the same text at a random cut (``"scheduled"`` + ``"various"`` -> ``"schedurious"``),
    or given a stray quote, bracket or punctuation mark; the text may also start mid-sentence and stop mid-word,
    as a continuation cut at ``max_new_tokens`` does. Line breaks are kept. Every class gets the same treatment,
    so a classifier trained on such copies must judge style by what is left (vocabulary, spelling, diction), not
    by fluency. ``strength`` 0 returns the text unchanged.
    """
    lines = [line.split() for line in text.split("\n")]
    pool = [w for words in lines for w in words] or [""]
    out_lines = []
    for words in lines:
        i = 0
        while i + 1 < len(words):  # local word-order noise
            if rng.random() < _SWAP * strength:
                words[i], words[i + 1] = words[i + 1], words[i]
                i += 1
            i += 1
        out: list[str] = []
        for word in words:
            r = rng.random() / strength if strength > 0 else 1.0
            if r < _DROP:
                continue  # dropped
            if r < _REPEAT:
                out.append(word)  # repeated
            elif r < _SPLICE and len(word) > 2:
                other = rng.choice(pool)
                word = word[: rng.randint(1, len(word) - 1)] + other[rng.randint(0, max(0, len(other) - 1)) :]
            elif r < _MARK:
                mark = rng.choice(_STRAY)
                word = mark + word if rng.random() < 0.5 else word + mark
            out.append(word)
        out_lines.append(" ".join(out))
    result = "\n".join(out_lines).strip()
    if len(result) > 20 and rng.random() < 0.5 * min(1.0, strength):
        result = result[: rng.randint(int(len(result) * 0.9), len(result))]
    if len(result) > 20 and rng.random() < 0.5 * min(1.0, strength):
        result = result[rng.randint(1, len(result) // 10) :].lstrip()
    return result or text
