"""Scoring a restyler on a held-out play: BLEU and chrF against Shakespeare's lines, next to the copy baseline, the
style rate of its outputs, and how much content survives (each source's rank among all sources by similarity).

The copy baseline (the plain line returned unchanged) is already close to the references, because many lines change
little: a restyler is only useful where it beats it.

Lines are scored in runs of consecutive lines, so the style is judged twice: line by line, and on passages of
consecutive lines read as the play reads them. A line such as "I should know that voice." carries no style a judge
could see (Shakespeare's own lines of The Tempest are judged in style 39.5% of the time line by line): a passage of a
few lines is the unit the style shows in, and the references are scored the same way as the ceiling.
"""

from __future__ import annotations

from typing import Any, Sequence

from hubstyle.data.parallel import Pair
from hubstyle.errors import HubstyleError

LINE_PASSAGES = {"min_words": 6, "max_words": 40}  # the line-level judge reads passages of a line's length
PASSAGE_MIN_WORDS = 25  # a judged passage joins consecutive lines until their plain sides reach this many words


def consecutive_runs(pairs: Sequence[Pair], lines: int, run_length: int) -> list[list[Pair]]:
    """Return ``lines // run_length`` runs of ``run_length`` consecutive pairs whose starts are evenly spaced over
    ``pairs`` (every pair, as one run, when there are no more than ``lines``)."""
    if lines <= 0 or run_length <= 0:
        raise HubstyleError(f"eval_lines and eval_run_lines must be at least 1, got {lines} and {run_length}")
    pairs = list(pairs)
    if len(pairs) <= lines:
        return [pairs] if pairs else []
    n_runs = max(1, lines // run_length)
    run_length = lines // n_runs
    last_start = len(pairs) - run_length
    starts = [round(i * last_start / (n_runs - 1)) if n_runs > 1 else 0 for i in range(n_runs)]
    return [pairs[s : s + run_length] for s in starts]


def passage_groups(runs: Sequence[Sequence[Pair]], min_words: int = PASSAGE_MIN_WORDS) -> list[list[int]]:
    """Return passages as lists of indices into the runs' lines laid end to end: each joins consecutive lines of one
    run until their plain sides reach ``min_words`` words; a run's short remainder joins its last passage."""
    groups: list[list[int]] = []
    index = 0
    for run in runs:
        run_groups: list[list[int]] = []
        current: list[int] = []
        words = 0
        for pair in run:
            current.append(index)
            words += len(pair.source.split())
            index += 1
            if words >= min_words:
                run_groups.append(current)
                current, words = [], 0
        if current:
            if run_groups:
                run_groups[-1].extend(current)
            else:
                run_groups.append(current)
        groups.extend(run_groups)
    return groups


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


def passage_style(classifier, texts: Sequence[str], groups: Sequence[Sequence[int]], style: str) -> dict[str, Any]:
    """Return the share of passages (``texts`` joined by ``groups``) the classifier labels ``style``, with its
    Wilson interval."""
    from hubstyle.evaluate.stats import RateCI

    passages = [" ".join(texts[i].strip() for i in group) for group in groups]
    labels = classifier.predict(passages)
    ci = RateCI.from_counts(sum(label == style for label in labels), len(labels))
    return {"rate": round(ci.rate, 4), "low": round(ci.low, 4), "high": round(ci.high, 4), "n": ci.n}


def side_scores(texts: Sequence[str], sources: Sequence[str], references: Sequence[str], *, classifier, style: str,
                encoder, groups: Sequence[Sequence[int]] | None = None, reference: bool = False) -> dict[str, Any]:
    """Return one side's scores: BLEU and chrF against ``references`` (100 for the references themselves), the
    style rate line by line (and by passage, with ``groups``), each source's rank and the share left unchanged."""
    from hubstyle.evaluate.answers import prompt_ranks, rank_stats

    scores: dict[str, Any] = {
        **({"bleu": 100.0, "chrf": 100.0} if reference else translation_scores(texts, references)),
        "style_rate": style_share(classifier, texts, style),
    }
    if groups:
        scores["passage_style_rate"] = passage_style(classifier, texts, groups, style)
    scores["source_rank"] = rank_stats(prompt_ranks(sources, texts, encoder=encoder))
    scores["unchanged"] = round(sum(t.strip() == s.strip() for t, s in zip(texts, sources)) / len(texts), 4)
    return scores


def evaluate_restyler(restyler, held_out: Sequence[Pair], *, classifier, style: str, lines: int = 200,
                      run_length: int = 10, compare_bias: float = 0.0, encoder=None,
                      examples: int = 8) -> dict[str, Any]:
    """Return the restyler's scores on ``lines`` held-out pairs, taken as evenly spaced runs of ``run_length``
    consecutive lines: its outputs, the copy baseline and the references (the ceiling) side by side, judged line by
    line and by passage, with the first ``examples`` rows. The same weights are also scored without their style
    bias, or, when they decode with none, at ``compare_bias`` (when set)."""
    from hubstyle.evaluate.answers import load_encoder

    runs = consecutive_runs(held_out, lines, run_length)
    if not runs:
        raise HubstyleError("no held-out pairs to evaluate on; set pairs.held_out_play")
    chosen = [pair for run in runs for pair in run]
    groups = passage_groups(runs)
    sources = [p.source for p in chosen]
    references = [p.target for p in chosen]
    outputs = restyler.rewrite_sentences(sources)
    encoder = encoder or load_encoder()
    sides = {"restyler": outputs, "copy": sources, "reference": references}
    if restyler.style_bias:  # what the same weights do without the decoding bias
        sides["restyler_unbiased"] = restyler.rewrite_sentences(sources, style_bias=0.0)
    elif compare_bias and restyler.sequence_bias(compare_bias):  # ... or with one
        sides["restyler_biased"] = restyler.rewrite_sentences(sources, style_bias=compare_bias)
    scores = {name: side_scores(texts, sources, references, classifier=classifier, style=style, encoder=encoder,
                                groups=groups, reference=name == "reference")
              for name, texts in sides.items()}
    return {
        "lines": len(chosen),
        "runs": len(runs),
        "passages": len(groups),
        "passage_min_words": PASSAGE_MIN_WORDS,
        "style_bias": restyler.style_bias,
        **({"compare_style_bias": float(compare_bias)} if "restyler_biased" in sides else {}),
        "num_beams": restyler.num_beams,
        "bleu_gain": round(scores["restyler"]["bleu"] - scores["copy"]["bleu"], 2),
        **scores,
        "examples": [{"source": s, "restyled": o, "reference": r}
                     for s, o, r in list(zip(sources, outputs, references))[:examples]],
    }


def decoding_sweep(restyler, pairs: Sequence[Pair], *, classifier, style: str, biases: Sequence[float],
                   beams: Sequence[int], encoder=None, log=print) -> dict[str, Any]:
    """Return each decoding's scores (every style bias with every beam count) on ``pairs``, next to the copy
    baseline: how a build chooses its decoding on pairs it never trained on, never on the held-out play."""
    from hubstyle.evaluate.answers import load_encoder

    if not pairs:
        raise HubstyleError("no pairs to choose the decoding on; set pairs.validation_pairs above 0")
    if not biases or not beams:
        raise HubstyleError("give at least one style bias and one beam count to compare")
    sources = [p.source for p in pairs]
    references = [p.target for p in pairs]
    encoder = encoder or load_encoder()
    score = dict(classifier=classifier, style=style, encoder=encoder)
    copy = side_scores(sources, sources, references, **score)
    reference = side_scores(references, sources, references, reference=True, **score)
    rows = []
    for bias in biases:
        for n in beams:
            outputs = restyler.rewrite_sentences(sources, style_bias=float(bias), num_beams=int(n))
            row = {"style_bias": float(bias), "num_beams": int(n), **side_scores(outputs, sources, references, **score)}
            row["bleu_gain"] = round(row["bleu"] - copy["bleu"], 2)
            rows.append(row)
            log(f"style bias {bias:g}, {n} beam(s): BLEU {row['bleu']} ({row['bleu_gain']:+.2f} over copy), "
                f"chrF {row['chrf']}, judged in style {row['style_rate']:.1%}, "
                f"source ranked first {row['source_rank']['top1']:.1%}")
    return {"pairs": len(pairs), "copy": copy, "reference": reference, "rows": rows,
            "suggested": suggested_decoding(rows, reference["style_rate"])}


SUGGESTION_RULE = ("the best BLEU among the decodings judged in style at least as often as Shakespeare's own lines "
                   "(else the one judged in style most often)")


def suggested_decoding(rows: Sequence[dict], reference_rate: float) -> dict[str, Any]:
    """Return the decoding a sweep suggests: ``SUGGESTION_RULE``, fixed before any sweep was read."""
    styled = [r for r in rows if r["style_rate"] >= reference_rate]
    best = (max(styled, key=lambda r: (r["bleu"], r["style_rate"])) if styled
            else max(rows, key=lambda r: (r["style_rate"], r["bleu"])))
    return {"style_bias": best["style_bias"], "num_beams": best["num_beams"], "rule": SUGGESTION_RULE}
