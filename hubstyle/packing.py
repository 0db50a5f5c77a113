"""Tokenising texts and packing them (or encoded chat samples) into fixed-length blocks, with little padding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from hubstyle.chat import IGNORE_INDEX, Encoded
from hubstyle.data.chat import Conversation
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


@dataclass
class Blocks:
    """Packed training blocks: ids, labels (``IGNORE_INDEX`` where no loss is taken) and per-sample position ids.

    ``position_ids`` restart at 0 at each sample's first token, which is how transformers' attention masks learn
    where one packed sample ends (no token attends across a boundary); None means one running text per block.
    Labels follow transformers' convention: ``labels[t]`` is the target of the logits at ``t - 1``.
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    position_ids: torch.Tensor | None = None
    lengths: torch.Tensor | None = None  # real (non-padding) tokens per block; None: every block is full

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index) -> "Blocks":
        return Blocks(*(None if t is None else t[index] for t in self._tensors()))

    def _tensors(self) -> tuple:
        return self.input_ids, self.labels, self.position_ids, self.lengths

    def real_tokens(self) -> int:
        """Return how many tokens are text, not padding."""
        return int(self.lengths.sum()) if self.lengths is not None else self.input_ids.numel()

    def trained_tokens(self) -> int:
        """Return how many (shifted) target positions carry the loss."""
        return int((self.labels[:, 1:] != IGNORE_INDEX).sum())

    def to(self, device) -> "Blocks":
        """Return the blocks on ``device``."""
        return Blocks(*(None if t is None else t.to(device) for t in self._tensors()))


def as_blocks(blocks: "Blocks | torch.Tensor") -> Blocks:
    """Return ``blocks`` as Blocks: a plain [n, size] id tensor is trained on every token (Blocks, and batches of
    another shape such as seq2seq pairs, are returned as they are)."""
    return Blocks(blocks, blocks.clone()) if isinstance(blocks, torch.Tensor) else blocks


def text_blocks(texts: Sequence[str], tokenizer, block_size: int, *, what: str = "corpus") -> Blocks:
    """Return plain texts packed as one running stream (see :func:`pack`), every token trained on."""
    return as_blocks(pack(texts, tokenizer, block_size, what=what))


def pack_samples(samples: Sequence[Encoded], block_size: int, pad_id: int, *, what: str = "corpus",
                 pack: bool = True) -> Blocks:
    """Return encoded samples packed whole into blocks of ``block_size`` (best fit, longest first); with ``pack``
    False, one sample a block (for an architecture that does not keep packed samples apart).

    No sample is split across blocks, so none loses its context; one longer than a block keeps its last
    ``block_size`` tokens (a conversation's trained answer is at its end). Each sample's first label is ignored
    and its positions restart at 0, so no loss reads across a boundary. A block's unfilled tail is padding
    with no loss (its own segment).
    """
    import bisect

    if not samples:
        raise HubstyleError(f"the {what} has no samples to pack")
    order = sorted(range(len(samples)), key=lambda i: -min(len(samples[i].ids), block_size))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, bin index), sorted
    for i in order:
        size = min(len(samples[i].ids), block_size)
        at = bisect.bisect_left(free, (size, -1))
        if pack and at < len(free):
            room, b = free.pop(at)
        else:
            room, b = block_size, len(bins)
            bins.append([])
        bins[b].append(i)
        if pack and room - size > 0:
            bisect.insort(free, (room - size, b))
    ids = torch.full((len(bins), block_size), pad_id, dtype=torch.long)
    labels = torch.full((len(bins), block_size), IGNORE_INDEX, dtype=torch.long)
    positions = torch.zeros((len(bins), block_size), dtype=torch.long)
    lengths = torch.zeros(len(bins), dtype=torch.long)
    for b, members in enumerate(bins):
        at = 0
        for i in sorted(members):  # source order inside a block: the same packing every time
            s_ids, s_labels = samples[i].ids[-block_size:], list(samples[i].labels[-block_size:])
            s_labels[0] = IGNORE_INDEX
            n = len(s_ids)
            ids[b, at : at + n] = torch.tensor(s_ids)
            labels[b, at : at + n] = torch.tensor(s_labels)
            positions[b, at : at + n] = torch.arange(n)
            at += n
        positions[b, at:] = torch.arange(block_size - at)
        lengths[b] = at
    out = Blocks(ids, labels, positions, lengths)
    if out.trained_tokens() == 0:
        raise HubstyleError(f"the {what} has no tokens to train on after packing (every label is masked)")
    return out


def build_blocks(
    samples: Sequence[str | Conversation], tokenizer, block_size: int, *, template: str = "auto",
    assistant_only_loss: bool = True, what: str = "corpus", pack: bool = True,
) -> Blocks:
    """Return the blocks a run trains or scores on: plain texts as one running stream (every token trained), or,
    when any sample is a conversation, every sample packed whole with the loss on the assistant's tokens (one a
    block when ``pack`` is False)."""
    if all(isinstance(s, str) for s in samples):
        return text_blocks(samples, tokenizer, block_size, what=what)
    from hubstyle.chat import encode

    encoded = [encode(s, tokenizer, template) for s in samples]
    if not assistant_only_loss:
        encoded = [Encoded(e.ids, list(e.ids)) for e in encoded]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return pack_samples(encoded, block_size, pad if pad is not None else 0, what=what, pack=pack)
