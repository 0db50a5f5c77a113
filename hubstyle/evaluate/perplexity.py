"""Held-out loss and perplexity: did the tuned model learn the style, and did it forget English?

The loss is the same one training reports (``hubstyle.loop.mean_nll`` over packed blocks), so numbers in
metrics.json, the loss curves and the card line up. One loaded ``PeftModel`` serves both sides: the base loss
is computed with the adapter disabled, the tuned loss with it active.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, Sequence

import torch

from hubstyle.errors import HubstyleError
from hubstyle.loop import honours_packing, mean_nll
from hubstyle.models import context_length
from hubstyle.packing import Blocks, build_blocks


def heldout_blocks(
    model, tokenizer, texts: Sequence, *, block_size: int = 256, what: str = "held-out text", template: str = "auto",
    max_blocks: int | None = None,
) -> Blocks:
    """Return ``texts`` (or conversations: scored on the assistant's tokens) packed into blocks of ``block_size``
    tokens, shortened to the model's context if longer; at most ``max_blocks`` of them, spread evenly. Conversations
    are one a block where the model does not keep packed samples apart (``hubstyle.loop.honours_packing``)."""
    if not texts:
        raise HubstyleError(f"the {what} is empty; give some texts to score")
    limit = context_length(model)
    size = min(block_size, limit) if limit else block_size
    blocks = build_blocks(texts, tokenizer, size, template=template, what=what)
    if blocks.position_ids is not None and not honours_packing(model):
        blocks = build_blocks(texts, tokenizer, size, template=template, what=what, pack=False)
    if max_blocks is not None and len(blocks) > max_blocks:
        # evenly spaced, not the first ones: packed chat blocks are ordered by sample length
        blocks = blocks[torch.linspace(0, len(blocks) - 1, max_blocks).round().long()]
    return blocks


def perplexity(loss: float) -> float:
    """Return the perplexity ``exp(loss)`` of a mean NLL in nats/token."""
    return math.exp(loss)


def heldout_loss(
    model,
    tokenizer,
    texts: Sequence[str],
    *,
    block_size: int = 256,
    batch_size: int = 8,
    bf16: bool = False,
    blocks: Blocks | torch.Tensor | None = None,
) -> float:
    """Return the mean next-token NLL (nats/token) of ``model`` as it is over ``texts`` packed into blocks.

    For a PeftModel that is the active adapter; :func:`base_and_tuned_loss` gives both sides. Pass ``blocks``
    (from :func:`heldout_blocks`) to skip tokenising again.
    """
    if blocks is None:
        blocks = heldout_blocks(model, tokenizer, texts, block_size=block_size)
    return mean_nll(model, blocks, batch_size=batch_size, bf16=bf16)


def base_and_tuned_loss(
    model,
    tokenizer,
    texts: Sequence[str],
    adapter: str,
    *,
    block_size: int = 256,
    batch_size: int = 8,
    bf16: bool = False,
    what: str = "held-out text",
    template: str = "auto",
    max_blocks: int | None = None,
) -> dict[str, float]:
    """Return {"base": loss, "tuned": loss} of one PeftModel: adapter disabled, then ``adapter`` active."""
    from hubstyle.evaluate.generation import check_adapter

    check_adapter(model, adapter)
    blocks = heldout_blocks(model, tokenizer, texts, block_size=block_size, what=what, template=template,
                            max_blocks=max_blocks)
    with keep_trainable(model):
        with model.disable_adapter():
            base = mean_nll(model, blocks, batch_size=batch_size, bf16=bf16)
        with using_adapter(model, adapter):
            tuned = mean_nll(model, blocks, batch_size=batch_size, bf16=bf16)
    return {"base": base, "tuned": tuned}


@contextlib.contextmanager
def keep_trainable(model) -> Iterator[None]:
    """Run the block, then give every parameter back the ``requires_grad`` it had before."""
    # peft's disable_adapter/set_adapter mark the active adapter trainable on the way out; evaluation must leave
    # a frozen (or half-trained) model as it found it.
    trainable = {name: p.requires_grad for name, p in model.named_parameters()}
    try:
        yield
    finally:
        for name, param in model.named_parameters():
            param.requires_grad_(trainable[name])


@contextlib.contextmanager
def using_adapter(model, adapter: str) -> Iterator[None]:
    """Run the block with ``adapter`` active, then make the previously active adapter active again."""
    previous = model.active_adapter
    if previous == adapter:
        yield
        return
    model.set_adapter(adapter, inference_mode=True)
    try:
        yield
    finally:
        model.set_adapter(previous, inference_mode=True)
