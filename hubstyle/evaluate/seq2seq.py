"""Evaluating a seq2seq adapter (T5, FLAN-T5): held-out losses on (input, target) pairs, answers, style rate and
demo table.

Each prompt is the encoder's input (no chat template, and the decoder's output holds no echo of the prompt), asked
through the same mixed-adapter generation, style-rate, relevance and demo-table code as causal runs. The pairs, their
batches and their loss are ``hubstyle.seq2seq``'s, as training uses them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch

from hubstyle.data.chat import Conversation
from hubstyle.errors import HubstyleError
from hubstyle.seq2seq import PairBatch, encode_pairs, pair_loss_sum, scoring_pairs


def pair_batch(
    items: Sequence[str | Conversation], tokenizer, max_len: int, *, what: str, max_pairs: int | None = None
) -> PairBatch:
    """Return the held-out ``items`` as a PairBatch (see :func:`scoring_pairs`); at most ``max_pairs`` of them,
    spread evenly."""
    if not items:
        raise HubstyleError(f"the {what} is empty; give some texts to score")
    batch = encode_pairs(scoring_pairs(items, what=what), tokenizer, max_len, what=what)
    if max_pairs is not None and len(batch) > max_pairs:
        batch = batch[torch.linspace(0, len(batch) - 1, max_pairs).round().long()]
    return batch


def base_and_tuned_pair_loss(
    model, tokenizer, items: Sequence, adapter: str, *, max_len: int, batch_size: int = 8, bf16: bool = False,
    what: str = "held-out text", max_pairs: int | None = None,
) -> dict[str, float]:
    """Return {"base": loss, "tuned": loss} on the targets of ``items``'s pairs: ``adapter`` off, then on."""
    from hubstyle.evaluate.generation import check_adapter
    from hubstyle.evaluate.perplexity import keep_trainable, using_adapter
    from hubstyle.loop import mean_nll

    check_adapter(model, adapter)
    batch = pair_batch(items, tokenizer, max_len, what=what, max_pairs=max_pairs)
    score = dict(batch_size=batch_size, bf16=bf16, loss_fn=pair_loss_sum)
    with keep_trainable(model):
        with model.disable_adapter():
            base = mean_nll(model, batch, **score)
        with using_adapter(model, adapter):
            tuned = mean_nll(model, batch, **score)
    return {"base": base, "tuned": tuned}


def heldout_losses(
    base: str, adapter: str | os.PathLike, texts: dict[str, list], max_len: int, max_pairs: int | None = None
) -> dict[str, dict[str, float]]:
    """Return {part: {"base": loss, "tuned": loss}} of the adapter on each part's held-out pairs."""
    from hubstyle.models import load_adapters, load_base, load_tokenizer

    tokenizer = load_tokenizer(base)
    model = load_adapters(load_base(base), {"style": adapter})
    return {
        part: base_and_tuned_pair_loss(model, tokenizer, items, "style", max_len=max_len, what=f"held-out {part} text",
                                       max_pairs=max_pairs)
        for part, items in texts.items()
    }


def evaluate_seq2seq(
    base: str,
    adapter: str,
    *,
    classifier: str | os.PathLike | Any,
    prompts: Sequence[str],
    demo_prompts: Sequence[str],
    style_texts: Sequence,
    generic_texts: Sequence[str],
    target_style: str,
    out_dir: Path,
    max_len: int,
    adapter_name: str = "style",
    max_new_tokens: int = 48,
    demo_max_new_tokens: int = 40,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 0.95,
    seed: int = 0,
    batch_size: int = 16,
    bf16: bool = False,
    max_pairs: int | None = None,
) -> dict[str, Any]:
    """Return {"heldout_loss", "perplexity", "style_rate", "answers", "demo_table"} of a seq2seq ``adapter`` on
    ``base``, the sections causal runs get from ``hubstyle.evaluate.run.evaluate_run``.

    Held-out losses are on the style's reply targets and on generic passages' second halves. Each prompt is the
    encoder's input and the answer ends at the decoder's EOS (``max_new_tokens`` is only a cap); base and tuned
    answers come from one mixed-adapter batch. ``style_rate.png`` and ``generations.jsonl`` are written to
    ``out_dir``.
    """
    from hubstyle.evaluate.answers import compare_answers
    from hubstyle.evaluate.classifier import check_labels, load_classifier
    from hubstyle.evaluate.demo_table import demo_table
    from hubstyle.evaluate.generation import decoding_settings, generate_side_by_side
    from hubstyle.evaluate.perplexity import perplexity
    from hubstyle.evaluate.run import reference_texts
    from hubstyle.evaluate.style_rate import GENERATIONS_FILE, STYLE_RATE_PLOT, compare_style_rates
    from hubstyle.models import load_adapters, load_base, load_tokenizer

    clf = classifier if hasattr(classifier, "predict") else load_classifier(classifier)
    check_labels(clf, [target_style])  # before loading the model: a wrong classifier fails fast
    tokenizer = load_tokenizer(base)
    model = load_adapters(load_base(base), {adapter_name: adapter})
    losses = {
        part: base_and_tuned_pair_loss(model, tokenizer, texts, adapter_name, max_len=max_len,
                                       batch_size=max(1, batch_size // 2), bf16=bf16, what=f"held-out {part} text",
                                       max_pairs=max_pairs)
        for part, texts in (("style", style_texts), ("generic", generic_texts))
    }
    decoding = decoding_settings(max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature,
                                 top_p=top_p, seed=seed)
    pairs = generate_side_by_side(model, tokenizer, prompts, adapter_name, **decoding, batch_size=batch_size,
                                  bf16=bf16)
    base_answers, tuned_answers = [b for b, _ in pairs], [t for _, t in pairs]
    out_dir = Path(out_dir)
    rates = compare_style_rates(clf, base_answers, tuned_answers, target_style, decoding=decoding,
                                plot_path=out_dir / STYLE_RATE_PLOT, prompts=prompts,
                                generations_path=out_dir / GENERATIONS_FILE)
    table = demo_table(model, tokenizer, demo_prompts, adapter_name, demo_max_new_tokens, batch_size=batch_size,
                       bf16=bf16, do_sample=do_sample, temperature=temperature, top_p=top_p, seed=seed)
    return {
        "heldout_loss": losses,
        "perplexity": {part: {side: perplexity(v) for side, v in sides.items()} for part, sides in losses.items()},
        "style_rate": rates,
        "answers": compare_answers(prompts, base_answers, tuned_answers,
                                   reference_answers=reference_texts(style_texts, len(prompts), seed=seed)),
        "demo_table": table,
    }
