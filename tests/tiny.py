"""Tiny models for tests: random-init GPT-2 with a tokenizer learned in a second from shared data."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from hubstyle.pretrain import tiny_config, train_tokenizer


def sample_text(n_chars: int = 200_000) -> str:
    """Return the first ``n_chars`` of tinyshakespeare from HUBSTYLE_DATA_DIR."""
    path = Path(os.environ["HUBSTYLE_DATA_DIR"]) / "tinyshakespeare" / "input.txt"
    return path.read_text(encoding="utf-8")[:n_chars]


def make_tiny_base(out: Path, *, seed: int = 0, vocab_size: int = 512, n_layer: int = 2, n_embd: int = 64) -> Path:
    """Save a random-init tiny GPT-2 and its tokenizer to ``out`` (a normal HF model folder) and return it."""
    from transformers import GPT2LMHeadModel

    text = sample_text()
    tok = train_tokenizer([text[i : i + 2000] for i in range(0, len(text), 2000)], vocab_size=vocab_size)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(tiny_config(len(tok), n_layer=n_layer, n_embd=n_embd, n_head=4, n_positions=128))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
