"""Relevance and fluency next to the style rate: does the tuned model still answer the prompt, and say new things?

A style rate alone rewards an adapter that answers every prompt with the same archaic line. Two cheap checks
catch that: ``relevance`` (cosine similarity of prompt and answer embeddings from the MiniLM-L6 sentence encoder,
mean-pooled and L2-normalised as all-MiniLM-L6-v2 is meant to be used) and corpus-level ``distinct_n`` (a model
that repeats itself has few unique n-grams). ``compare_answers`` gives both for the base and the tuned answers,
as plain JSON data for the ``answers`` section of metrics.json.
"""

from __future__ import annotations

import math
import os
import re
import statistics
from dataclasses import dataclass
from typing import Any, Sequence

from hubstyle.errors import HubstyleError

MAX_LENGTH = 256  # all-MiniLM-L6-v2 was trained on 256-token inputs; longer answers are truncated
RELEVANCE_FLOOR = 0.2
_TOKEN = re.compile(r"\w+|[^\w\s]")
_DIGITS = 4


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


def _embed(encoder: Encoder, texts: list[str], batch_size: int):
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
    vectors = _embed(encoder, [prompts[i] for i in keep] + [answers[i] for i in keep], batch_size)
    sims = (vectors[: len(keep)] * vectors[len(keep) :]).sum(1).tolist()
    for i, sim in zip(keep, sims):
        scores[i] = sim
    return scores


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
    """Return one side's answer statistics: ``relevance``, ``length``, ``distinct_1``, ``distinct_2`` (plain JSON).

    ``relevance`` is ``{mean, low, high, below_floor, floor, n}``: the mean prompt-answer similarity with its 95%
    bootstrap interval and the share of answers below ``floor`` (empty answers count as 0.0, so below any positive
    floor). ``length`` is ``{mean_words, median_words, empty}``, words split on whitespace, ``empty`` the share of
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
        "length": {
            "mean_words": _round(statistics.fmean(words)),
            "median_words": _round(statistics.median(words)),
            "empty": _round(sum(not a.strip() for a in answers) / len(answers)),
        },
        "distinct_1": _round(distinct_n(answers, 1)),
        "distinct_2": _round(distinct_n(answers, 2)),
    }


def compare_answers(
    prompts: Sequence[str], base_answers: Sequence[str], tuned_answers: Sequence[str], *,
    encoder: Encoder | None = None, floor: float = RELEVANCE_FLOOR, batch_size: int = 32,
) -> dict[str, Any]:
    """Return ``{"base", "tuned", "relevance_ratio", "encoder"}``: ``answer_stats`` of each side, as plain JSON.

    ``relevance_ratio`` is tuned mean relevance / base mean relevance (None when the base mean is 0 or below,
    where a ratio says nothing); ``encoder`` names the sentence encoder (its folder or Hub id). One encoder
    (``load_encoder()`` when not given) embeds both sides.
    """
    _check_pairs(prompts, base_answers)
    _check_pairs(prompts, tuned_answers)
    encoder = encoder or load_encoder()
    sides = {
        side: answer_stats(prompts, answers, encoder=encoder, floor=floor, batch_size=batch_size)
        for side, answers in (("base", base_answers), ("tuned", tuned_answers))
    }
    base_mean = sides["base"]["relevance"]["mean"]
    ratio = sides["tuned"]["relevance"]["mean"] / base_mean if base_mean > 0 else None
    return {**sides, "relevance_ratio": None if ratio is None or not math.isfinite(ratio) else _round(ratio),
            "encoder": encoder.name}
