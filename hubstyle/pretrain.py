"""The tiny offline base: a byte-level BPE tokenizer and a small GPT-style causal LM trained from scratch."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from hubstyle.errors import HubstyleError

SPECIAL_TOKENS = ["<|endoftext|>"]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096):
    """Return a ``PreTrainedTokenizerFast`` with a byte-level BPE vocabulary learned from ``texts``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    eos = SPECIAL_TOKENS[0]
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=eos, eos_token=eos, unk_token=eos, pad_token=eos)
    fast.model_max_length = 1024
    return fast


def tiny_config(vocab_size: int, *, n_layer: int = 4, n_embd: int = 256, n_head: int = 4, n_positions: int = 256):
    """Return the ``GPT2Config`` of a tiny GPT-style model (4 layers, 256 wide by default)."""
    from transformers import GPT2Config

    if n_embd % n_head:
        raise HubstyleError(f"n_embd={n_embd} must be a multiple of n_head={n_head}")
    return GPT2Config(
        vocab_size=vocab_size,
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        tie_word_embeddings=True,
    )
