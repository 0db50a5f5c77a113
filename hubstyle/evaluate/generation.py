"""Continuations of prompt sets: base and style-tuned side by side from ONE batched ``generate`` per batch.

One base model sits in memory with its style adapter(s) loaded (a ``PeftModel``). Each batch holds every prompt
twice, and peft's mixed-adapter batches (``adapter_names=["__base__"] * k + [adapter] * k``) run the first half
through the plain base weights and the second half through the adapter, so one forward pass per new token serves
both columns. Prompts are left-padded (what batched decoding needs) and sorted by length so a batch pads little;
results come back in the caller's order.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from hubstyle.env import quiet
from hubstyle.errors import HubstyleError
from hubstyle.models import BASE_ADAPTER_NAME, autocast, context_length, is_seq2seq


def adapter_names_of(model) -> list[str]:
    """Return the names of the adapters loaded in ``model`` (empty for a plain transformers model)."""
    return list(getattr(model, "peft_config", {}) or {})


def check_adapter(model, adapter: str) -> None:
    """Raise a one-line HubstyleError unless ``model`` is a PeftModel holding an adapter called ``adapter``."""
    names = adapter_names_of(model)
    if adapter == BASE_ADAPTER_NAME:
        raise HubstyleError(f"'{BASE_ADAPTER_NAME}' is the base model, not an adapter; name a style adapter")
    if adapter not in names:
        has = f"it has {', '.join(repr(n) for n in names)}" if names else "it has no adapters loaded"
        raise HubstyleError(f"the model has no adapter '{adapter}'; {has}")


def check_prompts(prompts: Sequence[str]) -> list[str]:
    prompts = list(prompts)
    if not prompts:
        raise HubstyleError("the prompt list is empty; give at least one prompt (e.g. data/prompts.txt)")
    bad = [i for i, p in enumerate(prompts) if not isinstance(p, str) or not p.strip()]
    if bad:
        raise HubstyleError(f"prompt {bad[0]} is empty or not text; every prompt needs some words")
    return prompts


def decoding_settings(
    *, max_new_tokens: int, do_sample: bool, temperature: float, top_p: float, seed: int,
    min_new_tokens: int | None = None, chat: str | None = None,
) -> dict[str, Any]:
    """Return the decoding settings as recorded in metrics.json and demo_table.json.

    ``chat`` is the chat template setting ('auto', 'model', 'plain') when prompts are asked as a user's turn and
    answers end at the end-of-turn token; None means plain continuation of the prompt text.
    """
    settings = {
        "max_new_tokens": int(max_new_tokens),
        "min_new_tokens": int(min_new_tokens or 0),
        "do_sample": bool(do_sample),
        "temperature": float(temperature),
        "top_p": float(top_p),
        "seed": int(seed),
    }
    if chat is not None:
        settings["chat"] = chat
    return settings


def as_chat_prompts(prompts: list[str], tokenizer, chat: str | None, system: str | None = None) -> list[str]:
    """Return the prompts as the model reads them: each a user's turn rendered for ``chat`` (after a ``system``
    turn when given), or unchanged (None)."""
    if chat is None:
        return prompts
    from hubstyle.chat import render_prompt

    head = [{"role": "system", "content": system}] if system else []
    return [render_prompt([*head, {"role": "user", "content": p}], tokenizer, chat) for p in prompts]


def _generate_kwargs(
    tokenizer, *, max_new_tokens: int, min_new_tokens: int | None, do_sample: bool, temperature: float, top_p: float
) -> dict[str, Any]:
    if max_new_tokens < 1:
        raise HubstyleError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    # Sampling is hubstyle's NucleusSampler (transformers' temperature + top-p distribution at a fraction of its
    # cost): it draws the token itself, so generate runs greedy over its one-hot row.
    kwargs: dict[str, Any] = {"max_new_tokens": int(max_new_tokens), "do_sample": False}
    kwargs["pad_token_id"] = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if min_new_tokens:
        kwargs["min_new_tokens"] = int(min_new_tokens)
    if do_sample:
        from transformers import LogitsProcessorList

        from hubstyle.evaluate.sampling import NucleusSampler

        kwargs["logits_processor"] = LogitsProcessorList([NucleusSampler(temperature, top_p)])
    # silence "temperature is set but do_sample=False" from generation configs that set them
    kwargs.update(temperature=None, top_p=None, top_k=None)
    return kwargs


def _check_context(model, prompt_tokens: int, max_new_tokens: int) -> None:
    limit = context_length(model)
    if limit and prompt_tokens + max_new_tokens > limit:
        raise HubstyleError(
            f"the longest prompt is {prompt_tokens} tokens and max_new_tokens is {max_new_tokens}, but the model "
            f"reads at most {limit} tokens; shorten the prompts or lower max_new_tokens"
        )


def _batches(tokenizer, prompts: list[str], batch_size: int, special: bool = True) -> tuple[list[list[int]], int]:
    """Return (batches of prompt indices, longest prompt in tokens); prompts sorted by length so batches pad little."""
    if batch_size < 1:
        raise HubstyleError(f"batch_size must be at least 1, got {batch_size}")
    lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=special)["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: (lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)], max(lengths)


@torch.inference_mode()
def _run(
    model,
    tokenizer,
    prompts: list[str],
    *,
    adapter: str | None,
    max_new_tokens: int,
    min_new_tokens: int | None,
    do_sample: bool,
    temperature: float,
    top_p: float,
    seed: int,
    batch_size: int,
    bf16: bool,
    desc: str,
    chat: str | None = None,
    system: str | None = None,
    sequence_bias: dict[tuple[int, ...], float] | None = None,
    num_beams: int = 1,
) -> list[list[str]]:
    """Return, per prompt, its continuations: [text] for one model, [base, tuned] when ``adapter`` is given."""
    from tqdm.auto import tqdm

    kwargs = _generate_kwargs(
        tokenizer, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
        do_sample=do_sample, temperature=temperature, top_p=top_p,
    )
    if chat is not None:  # an answer ends at the end of its turn; the rendered prompt already holds its specials
        kwargs["eos_token_id"] = tokenizer.eos_token_id
    if sequence_bias:  # transformers' SequenceBiasLogitsProcessor: added to the logits of these token sequences
        kwargs["sequence_bias"] = dict(sequence_bias)
    if num_beams != 1:
        if do_sample or num_beams < 1:
            raise HubstyleError(f"num_beams={num_beams}: beam search takes 2 or more beams, and greedy decoding "
                                "(do_sample off)")
        kwargs.update(num_beams=int(num_beams), early_stopping=True)
    prompts = as_chat_prompts(prompts, tokenizer, chat, system)
    special = chat is None
    dev = next(model.parameters()).device
    copies = 2 if adapter is not None else 1
    results: list[list[str]] = [[] for _ in prompts]
    batches, longest = _batches(tokenizer, prompts, batch_size, special)
    _check_context(model, longest, max_new_tokens)
    was_training = model.training
    model.eval()
    # A private RNG stream: the same seed gives the same samples, and the caller's global RNG is left as it was.
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(int(seed))
        for index in tqdm(batches, desc=desc, disable=quiet(), dynamic_ncols=True, leave=False):
            texts = [prompts[i] for i in index] * copies
            enc = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=special)
            enc = {k: v.to(dev) for k, v in enc.items()}
            extra = {}
            if adapter is not None:
                extra["adapter_names"] = [BASE_ADAPTER_NAME] * len(index) + [adapter] * len(index)
            with autocast(bf16, dev):
                out = model.generate(**enc, **kwargs, **extra)
            # a decoder-only model's output starts with the prompt; an encoder-decoder's holds the answer alone
            new = out if is_seq2seq(model) else out[:, enc["input_ids"].shape[1] :]
            decoded = tokenizer.batch_decode(new, skip_special_tokens=True)
            for row, text in enumerate(decoded):
                results[index[row % len(index)]].append(text.strip())  # base rows come first, then tuned
    model.train(was_training)
    return results


def generate_side_by_side(
    model,
    tokenizer,
    prompts: Sequence[str],
    adapter: str,
    *,
    max_new_tokens: int = 48,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 0.95,
    seed: int = 0,
    batch_size: int = 16,
    min_new_tokens: int | None = None,
    bf16: bool = False,
    chat: str | None = None,
) -> list[tuple[str, str]]:
    """Return (base_continuation, tuned_continuation) per prompt, both from one mixed-adapter batch.

    ``model`` is a PeftModel holding ``adapter``; ``batch_size`` counts prompts, so a batch has twice as many
    rows. Continuations exclude the prompt, are decoded without special tokens and stripped. Sampling is seeded
    (``seed``), so the same call gives the same texts. ``bf16`` runs under bf16 autocast where the hardware is
    fast at it; it is off by default because bf16 changes greedy continuations (see tests/test_evaluate.py).
    """
    prompts = check_prompts(prompts)
    check_adapter(model, adapter)
    rows = _run(
        model, tokenizer, prompts, adapter=adapter, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
        do_sample=do_sample, temperature=temperature, top_p=top_p, seed=seed, batch_size=batch_size, bf16=bf16,
        desc=f"generating base | {adapter}", chat=chat,
    )
    return [(base, tuned) for base, tuned in rows]


def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 48,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 0.95,
    seed: int = 0,
    batch_size: int = 16,
    min_new_tokens: int | None = None,
    bf16: bool = False,
    chat: str | None = None,
    system: str | None = None,
    desc: str = "generating",
    sequence_bias: dict[tuple[int, ...], float] | None = None,
    num_beams: int = 1,
) -> list[str]:
    """Return one continuation per prompt from ``model`` as it is (for a PeftModel: its active adapter); with
    ``chat``, each prompt is a user's turn after the ``system`` turn, when given; ``sequence_bias`` adds to the
    logits of token sequences (transformers' ``sequence_bias``); ``num_beams`` > 1 searches that many beams."""
    prompts = check_prompts(prompts)
    rows = _run(
        model, tokenizer, prompts, adapter=None, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
        do_sample=do_sample, temperature=temperature, top_p=top_p, seed=seed, batch_size=batch_size, bf16=bf16,
        desc=desc, chat=chat, system=system, sequence_bias=sequence_bias, num_beams=num_beams,
    )
    return [row[0] for row in rows]
