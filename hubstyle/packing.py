"""Tokenising texts and packing them into full fixed-length blocks, so no compute is spent on padding."""

from __future__ import annotations

from typing import Sequence

import torch

from hubstyle.errors import HubstyleError


def token_ids(texts: Sequence[str], tokenizer) -> list[list[int]]:
    """Return each text's token ids, with the tokenizer's EOS appended as a document separator."""
    eos = tokenizer.eos_token_id
    # verbose=False: texts longer than model_max_length are fine here, they are packed into blocks afterwards
    encoded = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
    return [ids + [eos] if eos is not None else ids for ids in encoded]


def count_tokens(texts: Sequence[str], tokenizer) -> int:
    """Return the number of tokens in ``texts`` (separators included)."""
    return sum(len(ids) for ids in token_ids(texts, tokenizer))


def pack(texts: Sequence[str], tokenizer, block_size: int, *, what: str = "corpus") -> torch.Tensor:
    """Return a LongTensor [n_blocks, block_size]: the texts' tokens concatenated and cut into full blocks.

    The last partial block is dropped; a corpus shorter than one block is an error, because a loss on it
    would be meaningless.
    """
    flat = [t for ids in token_ids(texts, tokenizer) for t in ids]
    n_blocks = len(flat) // block_size
    if n_blocks == 0:
        raise HubstyleError(
            f"the {what} has {len(flat)} tokens, fewer than one block of {block_size}; give it more text"
        )
    return torch.tensor(flat[: n_blocks * block_size], dtype=torch.long).view(n_blocks, block_size)
