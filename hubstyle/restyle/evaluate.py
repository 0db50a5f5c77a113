"""Scoring a restyler on a held-out play: BLEU and chrF against Shakespeare's lines, next to the copy baseline, the
style rate of its outputs, and how much content survives (each source's rank among all sources by similarity).

The copy baseline (the plain line returned unchanged) is already close to the references, because many lines change
little: a restyler is only useful where it beats it.
"""

from __future__ import annotations

from typing import Any, Sequence

from hubstyle.data.parallel import Pair
from hubstyle.errors import HubstyleError

LINE_PASSAGES = {"min_words": 6, "max_words": 40}  # the line-level judge reads passages of a line's length


def evenly_spaced(pairs: Sequence[Pair], n: int) -> list[Pair]:
    """Return ``n`` pairs spread evenly over ``pairs`` (all of them when there are no more than ``n``)."""
    from hubstyle.dataset import evenly_spaced as spread

    if n <= 0:
        raise HubstyleError(f"eval_lines must be at least 1, got {n}")
    return spread(list(pairs), n)


def translation_scores(outputs: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Return corpus ``bleu`` and ``chrf`` (sacrebleu defaults, 13a tokenisation) of ``outputs`` against one
    reference each."""
    import sacrebleu

    if len(outputs) != len(references) or not outputs:
        raise HubstyleError(f"got {len(outputs)} outputs for {len(references)} references; give one each")
    return {"bleu": round(sacrebleu.corpus_bleu(list(outputs), [list(references)]).score, 2),
            "chrf": round(sacrebleu.corpus_chrf(list(outputs), [list(references)]).score, 2)}


def style_share(classifier, texts: Sequence[str], style: str) -> float:
    """Return the share of ``texts`` the classifier labels ``style``."""
    labels = classifier.predict(list(texts))
    return round(sum(label == style for label in labels) / len(labels), 4)


def evaluate_restyler(restyler, held_out: Sequence[Pair], *, classifier, style: str, lines: int = 200,
                      encoder=None, examples: int = 8) -> dict[str, Any]:
    """Return the restyler's scores on ``lines`` evenly spaced held-out pairs: its outputs, the copy baseline and
    the references (the ceiling) side by side, with the first ``examples`` rows."""
    from hubstyle.evaluate.answers import load_encoder, prompt_ranks, rank_stats

    chosen = evenly_spaced(held_out, lines)
    if not chosen:
        raise HubstyleError("no held-out pairs to evaluate on; set pairs.held_out_play")
    sources = [p.source for p in chosen]
    references = [p.target for p in chosen]
    outputs = restyler.rewrite_sentences(sources)
    encoder = encoder or load_encoder()
    sides = {"restyler": outputs, "copy": sources, "reference": references}
    if restyler.style_bias:  # what the same weights do without the decoding bias
        sides["restyler_unbiased"] = restyler.rewrite_sentences(sources, style_bias=0.0)
    scores: dict[str, Any] = {}
    for name, texts in sides.items():
        ranks = prompt_ranks(sources, texts, encoder=encoder)
        scores[name] = {
            **(translation_scores(texts, references) if name != "reference" else {"bleu": 100.0, "chrf": 100.0}),
            "style_rate": style_share(classifier, texts, style),
            "source_rank": rank_stats(ranks),
            "unchanged": round(sum(t.strip() == s.strip() for t, s in zip(texts, sources)) / len(texts), 4),
        }
    return {
        "lines": len(chosen),
        "style_bias": restyler.style_bias,
        "num_beams": restyler.num_beams,
        "bleu_gain": round(scores["restyler"]["bleu"] - scores["copy"]["bleu"], 2),
        **scores,
        "examples": [{"source": s, "restyled": o, "reference": r}
                     for s, o, r in list(zip(sources, outputs, references))[:examples]],
    }
