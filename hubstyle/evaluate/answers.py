"""Relevance and fluency next to the style rate: does the tuned model still answer the prompt, and say new things?

A style rate alone rewards an adapter that answers every prompt with the same archaic line. Two cheap checks
catch that: ``relevance`` (cosine similarity of prompt and answer embeddings from the MiniLM-L6 sentence encoder,
mean-pooled and L2-normalised as all-MiniLM-L6-v2 is meant to be used) and corpus-level ``distinct_n`` (a model
that repeats itself has few unique n-grams). A cosine still rewards register: ``prompt_ranks`` asks instead where
each answer's own prompt ranks among all the evaluation prompts, which only the answer's topic decides.
``compare_answers`` gives all of them for the base and the tuned answers, and for random real text of the style in
their place (the reference a tuned model is read against), as plain JSON data for the ``answers`` section of
metrics.json.
"""

from __future__ import annotations

import math
import os
import random
import re
import statistics
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from hubstyle.errors import HubstyleError

MAX_LENGTH = 256  # all-MiniLM-L6-v2 was trained on 256-token inputs; longer answers are truncated
RELEVANCE_FLOOR = 0.2
_TOKEN = re.compile(r"\w+|[^\w\s]")
_DIGITS = 4
ANSWER_SIDES = {"base": "base", "tuned": "tuned", "reference": "random real text"}  # log names of the sides


@dataclass
class Encoder:
    """A loaded sentence encoder: ``model`` (transformers ``AutoModel``), its ``tokenizer`` and where it came from."""

    model: Any
    tokenizer: Any
    name: str


def load_encoder(path: str | os.PathLike | None = None) -> Encoder:
    """Return the sentence encoder at ``path`` in eval mode (default: ``default_backbone()``, the offline MiniLM-L6)."""
    from transformers import AutoModel, AutoTokenizer

    from hubstyle.evaluate.classifier import default_backbone
    from hubstyle.models import _check_exists, device, safe_load_kwargs

    name = _check_exists(path) if path is not None else default_backbone()
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModel.from_pretrained(name, **safe_load_kwargs(False))
    except (OSError, ValueError) as err:
        raise HubstyleError(f"cannot load sentence encoder '{name}': {str(err).splitlines()[0]}") from err
    return Encoder(model=model.to(device()).eval(), tokenizer=tokenizer, name=name)


def _check_texts(texts: Sequence[str], what: str) -> None:
    if isinstance(texts, str):
        raise HubstyleError(f"{what} must be a list of texts, got one string; wrap it in a list")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise HubstyleError(f"{what}[{bad[0]}] is {type(texts[bad[0]]).__name__}, not a string; give texts only")


def _check_pairs(prompts: Sequence[str], answers: Sequence[str]) -> None:
    _check_texts(prompts, "prompts")
    _check_texts(answers, "answers")
    if len(prompts) != len(answers):
        raise HubstyleError(
            f"got {len(prompts)} prompts but {len(answers)} answers; give exactly one answer per prompt"
        )


def embed(encoder: Encoder, texts: list[str], batch_size: int):
    """Return an (n, dim) float32 CPU tensor of L2-normalised, attention-mask mean-pooled embeddings of ``texts``."""
    import torch

    dim = encoder.model.config.hidden_size
    out = torch.empty(len(texts), dim)
    # Batch texts of similar length together (less padding), then restore the caller's order.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    dev = encoder.model.device
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = encoder.tokenizer(
                [texts[i] for i in idx], truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt"
            ).to(dev)
            hidden = encoder.model(**enc).last_hidden_state.float()
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[idx] = torch.nn.functional.normalize(pooled, p=2, dim=1).cpu()
    return out


def relevance(
    prompts: Sequence[str], answers: Sequence[str], *, encoder: Encoder | None = None, batch_size: int = 32
) -> list[float]:
    """Return, for each prompt, the cosine similarity of its embedding and its answer's (in [-1, 1]).

    Embeddings are MiniLM-L6 sentence embeddings (``encoder``; loaded with ``load_encoder()`` when not given),
    mean-pooled over the attention mask and L2-normalised, texts truncated at 256 tokens. An empty (or
    whitespace-only) answer is not embedded and gets similarity 0.0: it answers nothing.
    """
    _check_pairs(prompts, answers)
    if batch_size < 1:
        raise HubstyleError(f"batch_size must be at least 1, got {batch_size}")
    keep = [i for i, a in enumerate(answers) if a.strip()]
    scores = [0.0] * len(answers)
    if not keep:
        return scores
    encoder = encoder or load_encoder()
    vectors = embed(encoder, [prompts[i] for i in keep] + [answers[i] for i in keep], batch_size)
    sims = (vectors[: len(keep)] * vectors[len(keep) :]).sum(1).tolist()
    for i, sim in zip(keep, sims):
        scores[i] = sim
    return scores


def prompt_ranks(
    prompts: Sequence[str], answers: Sequence[str], *, encoder: Encoder | None = None, batch_size: int = 32,
    candidates: Sequence[str] | None = None,
) -> list[int]:
    """Return, for each answer, the 1-based rank of its own prompt among all prompts by MiniLM similarity to it.

    Register cannot game it: an archaic answer is as far from every modern prompt, so only its topic picks its
    prompt out. ``candidates`` (default: ``prompts``) are the texts ranked; answer ``i``'s own is ``candidates[i]``.
    Ties count against the answer (its prompt ranks below every prompt scoring the same); an empty answer ranks
    last.
    """
    _check_pairs(prompts, answers)
    candidates = list(prompts if candidates is None else candidates)
    if len(candidates) < len(answers):
        raise HubstyleError(f"got {len(candidates)} candidate prompts for {len(answers)} answers; give at least one each")
    if not answers:
        return []
    encoder = encoder or load_encoder()
    keep = [i for i, a in enumerate(answers) if a.strip()]
    ranks = [len(candidates)] * len(answers)
    if not keep:
        return ranks
    cand = embed(encoder, candidates, batch_size)
    ans = embed(encoder, [answers[i] for i in keep], batch_size)
    sims = ans @ cand.T
    for row, i in enumerate(keep):
        own = sims[row, i]
        ranks[i] = int((sims[row] >= own).sum())
    return ranks


def rank_stats(ranks: Sequence[int]) -> dict[str, Any]:
    """Return ``{top1, top5, mrr, n}`` of prompt ranks: the share ranked first, in the first five, and the mean
    reciprocal rank (plain JSON, rounded to 4 places)."""
    if not ranks:
        raise HubstyleError("no ranks to summarise; score at least one answer")
    n = len(ranks)
    return {"top1": _round(sum(r == 1 for r in ranks) / n), "top5": _round(sum(r <= 5 for r in ranks) / n),
            "mrr": _round(sum(1.0 / r for r in ranks) / n), "n": n}


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Return the corpus-level distinct-n of ``texts``: unique n-grams / all n-grams (0.0 when there are none).

    Tokens are lower-cased words and single punctuation marks (regex ``\\w+|[^\\w\\s]``); n-grams do not cross
    from one text into the next.
    """
    _check_texts(texts, "texts")
    if not isinstance(n, int) or n < 1:
        raise HubstyleError(f"n must be a positive integer (1 for unigrams, 2 for bigrams), got {n!r}")
    seen: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        tokens = _TOKEN.findall(text.lower())
        grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


def bootstrap_mean_ci(
    values: Sequence[float], *, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Return ``(mean, low, high)``: the mean of ``values`` and its percentile-bootstrap confidence interval.

    Resamples come from ``numpy.random.default_rng(seed)``, so the same inputs and seed give the same interval.
    """
    import numpy as np

    if isinstance(values, str):
        raise HubstyleError("values must be a list of numbers, got a string")
    data = np.asarray(values, dtype=np.float64)
    if data.ndim != 1 or data.size == 0:
        raise HubstyleError(f"values must be a non-empty flat list of numbers, got shape {data.shape}")
    if not np.isfinite(data).all():
        raise HubstyleError(f"values must be finite numbers, got {data[~np.isfinite(data)][0]}")
    if not 0.0 < confidence < 1.0:
        raise HubstyleError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")
    if n_resamples < 1:
        raise HubstyleError(f"n_resamples must be at least 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    n = data.size
    # Resample in chunks so a long answer list never needs an n_resamples x n index matrix at once.
    chunk = max(1, 2_000_000 // n)
    means = np.concatenate([
        data[rng.integers(0, n, size=(min(chunk, n_resamples - start), n))].mean(axis=1)
        for start in range(0, n_resamples, chunk)
    ])
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    mean = float(data.mean())
    # A percentile interval can miss the sample mean by rounding when every resample mean is equal.
    return mean, min(float(low), mean), max(float(high), mean)


def _round(x: float) -> float:
    return round(float(x), _DIGITS)


def answer_stats(
    prompts: Sequence[str], answers: Sequence[str], *, encoder: Encoder, floor: float = RELEVANCE_FLOOR,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Return one side's answer statistics: ``relevance``, ``prompt_rank``, ``length``, ``distinct_1``,
    ``distinct_2`` (plain JSON).

    ``relevance`` is ``{mean, low, high, below_floor, floor, n}``: the mean prompt-answer similarity with its 95%
    bootstrap interval and the share of answers below ``floor`` (empty answers count as 0.0, so below any positive
    floor). ``prompt_rank`` is ``rank_stats`` of ``prompt_ranks`` (each answer's own prompt among all ``prompts``).
    ``length`` is ``{mean_words, median_words, empty}``, words split on whitespace, ``empty`` the share of
    empty answers. Floats are rounded to 4 places.
    """
    _check_pairs(prompts, answers)
    if not answers:
        raise HubstyleError("no answers to score; give at least one prompt and its answer")
    if not isinstance(floor, (int, float)) or not -1.0 <= floor <= 1.0:
        raise HubstyleError(f"floor is a cosine similarity and must be between -1 and 1, got {floor!r}")
    sims = relevance(prompts, answers, encoder=encoder, batch_size=batch_size)
    mean, low, high = bootstrap_mean_ci(sims)
    words = [len(a.split()) for a in answers]
    return {
        "relevance": {
            "mean": _round(mean), "low": _round(low), "high": _round(high),
            "below_floor": _round(sum(s < floor for s in sims) / len(sims)), "floor": float(floor), "n": len(sims),
        },
        "prompt_rank": rank_stats(prompt_ranks(prompts, answers, encoder=encoder, batch_size=batch_size)),
        "length": {
            "mean_words": _round(statistics.fmean(words)),
            "median_words": _round(statistics.median(words)),
            "empty": _round(sum(not a.strip() for a in answers) / len(answers)),
        },
        "distinct_1": _round(distinct_n(answers, 1)),
        "distinct_2": _round(distinct_n(answers, 2)),
    }


def draw_reference(texts: Sequence[str], n: int, *, seed: int) -> list[str] | None:
    """Return ``n`` of the non-empty ``texts`` drawn with ``random.Random(seed)``, or None when none is non-empty.

    Real text of the style in place of the answers: what relevance and prompt rank read for text that has the
    register but was written to no prompt. Drawn without replacement, with replacement only when ``texts`` has
    fewer than ``n``.
    """
    _check_texts(texts, "texts")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise HubstyleError(f"n is how many texts to draw and must be a whole number from 0, got {n!r}")
    pool = [t for t in texts if t.strip()]
    if not pool:
        return None
    rng = random.Random(seed)
    return rng.sample(pool, n) if len(pool) >= n else rng.choices(pool, k=n)


def _ratio(tuned: float, base: float) -> float | None:
    """Return ``tuned / base`` rounded, or None when ``base`` is 0 or below (where a ratio says nothing)."""
    ratio = tuned / base if base > 0 else None
    return None if ratio is None or not math.isfinite(ratio) else _round(ratio)


def compare_answers(
    prompts: Sequence[str], base_answers: Sequence[str], tuned_answers: Sequence[str], *,
    reference_answers: Sequence[str] | None = None, encoder: Encoder | None = None, floor: float = RELEVANCE_FLOOR,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Return ``{"base", "tuned", "reference", "relevance_ratio", "prompt_rank_ratio", "encoder"}`` as plain JSON.

    ``base`` and ``tuned`` are ``answer_stats`` of each side's answers; ``reference`` is the same for
    ``reference_answers`` (real text of the style, one per prompt, e.g. from ``draw_reference``), None when not
    given. ``relevance_ratio`` is tuned mean relevance / base mean relevance, ``prompt_rank_ratio`` tuned prompt-rank
    top-1 / base top-1 (each None when the base figure is 0 or below, where a ratio says nothing); ``encoder`` names
    the sentence encoder (its folder or Hub id). One encoder (``load_encoder()`` when not given) embeds every side.
    """
    _check_pairs(prompts, base_answers)
    _check_pairs(prompts, tuned_answers)
    if reference_answers is not None:
        _check_pairs(prompts, reference_answers)
    given = {"base": base_answers, "tuned": tuned_answers, "reference": reference_answers}
    encoder = encoder or load_encoder()
    sides = {
        side: None if answers is None else answer_stats(prompts, answers, encoder=encoder, floor=floor,
                                                        batch_size=batch_size)
        for side, answers in given.items()
    }
    base, tuned = sides["base"], sides["tuned"]
    return {**sides, "relevance_ratio": _ratio(tuned["relevance"]["mean"], base["relevance"]["mean"]),
            "prompt_rank_ratio": _ratio(tuned["prompt_rank"]["top1"], base["prompt_rank"]["top1"]),
            "encoder": encoder.name}


def answer_lines(answers: Mapping[str, Any]) -> list[str]:
    """Return one log line per side of ``compare_answers``' result: relevance, prompt rank, length, distinct-2."""
    lines = []
    for side, name in ANSWER_SIDES.items():
        a = answers.get(side)
        if a is None:
            continue
        rel, rank = a["relevance"], a.get("prompt_rank")
        ranked = f"; prompt rank top-1 {rank['top1']:.0%}, MRR {rank['mrr']:.3f}" if rank else ""
        lines.append(f"relevance ({name}): {rel['mean']:.3f} (95% CI {rel['low']:.3f}-{rel['high']:.3f}), "
                     f"{rel['below_floor']:.0%} under {rel['floor']}{ranked}; {a['length']['mean_words']:.1f} words "
                     f"an answer, distinct-2 {a['distinct_2']:.2f}")
    return lines
