"""The demo table: a few prompts with the base and the style-tuned continuation, decoded reproducibly.

It is written to the run folder as demo_table.json, shown in the model card as Markdown and cached by the Space.
"""

from __future__ import annotations

import unicodedata
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


def markdown_cell(text: str) -> str:
    """Return ``text`` safe inside a Markdown table cell: pipes escaped, newlines as <br>, never empty.

    Control characters are dropped: a small model's byte-level tokens can decode to NUL and friends, and a
    README holding them is a binary file the Hub refuses as a plain (non-LFS) upload.
    """
    text = "".join(ch for ch in str(text) if ch in "\n\r\t" or unicodedata.category(ch) != "Cc")
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "<br>")
    return text.strip() or "*(empty)*"


def demo_table_markdown(table: dict[str, Any]) -> str:
    """Return the demo table as a Markdown table (Prompt | Base model | Tuned (adapter)) for the model card."""
    adapter = markdown_cell(table.get("adapter", "adapter"))
    lines = [f"| Prompt | Base model | Tuned ({adapter}) |", "| --- | --- | --- |"]
    for row in table["rows"]:
        cells = (markdown_cell(row[key]) for key in ("prompt", "base", "tuned"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
