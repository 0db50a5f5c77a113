"""The demo table: a few prompts with the base and the style-tuned continuation, decoded reproducibly.

It is written to the run folder as demo_table.json, shown in the model card as Markdown (``hubstyle.card``) and cached
by the Space.
"""

from __future__ import annotations

from typing import Any, Sequence

from hubstyle.evaluate.generation import decoding_settings
from hubstyle.evaluate.pair import AdapterPair, ModelPair


def demo_table(
    model,
    tokenizer,
    prompts: Sequence[str],
    adapter: str,
    max_new_tokens: int = 40,
    **settings: Any,
) -> dict[str, Any]:
    """Return the demo table of one PeftModel holding ``adapter`` (base side: the adapter switched off); the
    settings are :func:`pair_demo_table`'s."""
    return pair_demo_table(AdapterPair(model, tokenizer, adapter), prompts, max_new_tokens, **settings)


def pair_demo_table(
    pair: ModelPair,
    prompts: Sequence[str],
    max_new_tokens: int = 40,
    *,
    batch_size: int = 16,
    bf16: bool = False,
    min_new_tokens: int | None = None,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    chat: str | None = None,
) -> dict[str, Any]:
    """Return {"adapter", "decoding", "rows": [{"prompt", "base", "tuned"}]} of ``pair`` (``adapter``: the tuned
    side's name): deterministic (greedy, or seeded); with ``chat`` the rows are answers to the prompts asked as a
    user's turn."""
    decoding = decoding_settings(
        max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature, top_p=top_p, seed=seed,
        min_new_tokens=min_new_tokens, chat=chat,
    )
    pairs = pair.side_by_side(prompts, **decoding, batch_size=batch_size, bf16=bf16)
    decoding["bf16"] = bool(bf16)
    rows = [{"prompt": prompt, "base": base, "tuned": tuned} for prompt, (base, tuned) in zip(prompts, pairs)]
    return {"adapter": pair.name, "decoding": decoding, "rows": rows}
