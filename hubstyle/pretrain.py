"""The tiny offline base: a byte-level BPE tokenizer and a small GPT-style causal LM trained from scratch."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import torch

from hubstyle.config import PretrainConfig
from hubstyle.errors import HubstyleError
from hubstyle.fsio import atomic_folder, is_main_process, wait_for_everyone
from hubstyle.layout import PRETRAIN_REPORT
from hubstyle.loop import LoopSettings, mean_nll, train_loop
from hubstyle.packing import pack
from hubstyle.plots import plot_loss

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


def tiny_config(
    vocab_size: int, *, n_layer: int = 4, n_embd: int = 256, n_head: int = 4, n_positions: int = 256, dropout: float = 0.0
):
    """Return the ``GPT2Config`` of a tiny GPT-style model (4 layers, 256 wide, no dropout by default)."""
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
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
    )


@dataclass
class PretrainReport:
    """What pretraining produced: sizes, time, and validation losses of the model and the bigram baseline."""

    out_dir: str
    vocab_size: int
    n_params: int
    train_tokens: int
    validation_tokens: int
    steps: int
    seconds: float
    tokens_per_second: float
    val_loss: float
    bigram_val_loss: float
    history: list[dict]

    def as_dict(self) -> dict:
        """Return the report as plain data."""
        return asdict(self)


class BigramBaseline:
    """A count-based bigram LM (interpolated with unigrams): the floor a transformer has to beat.

    Counts are sparse (only the bigrams seen), so memory is O(distinct bigrams + vocabulary) whatever the
    vocabulary: a dense vocab x vocab table would be 19 GiB for GPT-2 and ~123 GiB for Llama-3.
    """

    def __init__(self, vocab_size: int, interpolation: float = 0.9):
        if vocab_size < 1:
            raise HubstyleError(f"vocab_size must be at least 1, got {vocab_size}")
        if not 0.0 <= interpolation <= 1.0:
            raise HubstyleError(f"interpolation must be between 0 and 1 (weight of the bigram), got {interpolation}")
        self.vocab_size = vocab_size
        self.interpolation = interpolation
        self.pair_keys: torch.Tensor | None = None  # sorted prev * vocab_size + next of every bigram seen
        self.pair_counts: torch.Tensor | None = None  # how often each of those bigrams was seen
        self.row_counts: torch.Tensor | None = None  # [vocab] how often each token was followed by another
        self.unigram: torch.Tensor | None = None  # [vocab] add-one smoothed unigram probabilities (float64)

    def fit(self, blocks: torch.Tensor) -> "BigramBaseline":
        """Return self after counting the bigrams inside each packed block."""
        blocks = self._check(blocks, "fit")
        v = self.vocab_size
        prev, nxt = blocks[:, :-1].reshape(-1), blocks[:, 1:].reshape(-1)
        self.pair_keys, self.pair_counts = torch.unique(prev * v + nxt, sorted=True, return_counts=True)
        self.row_counts = torch.bincount(prev, minlength=v)
        unigram = torch.bincount(blocks.reshape(-1), minlength=v).double() + 1.0
        self.unigram = unigram / unigram.sum()
        return self

    def mean_nll(self, blocks: torch.Tensor, mask: torch.Tensor | None = None) -> float:
        """Return the mean next-token NLL (nats/token) over the same positions a causal LM is scored on.

        ``mask`` (bool, shape [n, block - 1]) keeps only the next tokens it marks, e.g. a chat's assistant tokens.
        """
        if self.pair_keys is None:
            raise HubstyleError("the bigram baseline must be fit before it is scored")
        blocks = self._check(blocks, "mean_nll")
        prev, nxt = blocks[:, :-1], blocks[:, 1:]
        if mask is not None:
            mask = torch.as_tensor(mask, device=blocks.device)
            if mask.dtype != torch.bool or tuple(mask.shape) != tuple(prev.shape):
                raise HubstyleError(
                    f"mask must be a bool tensor of shape {tuple(prev.shape)} (one per next token), "
                    f"got {mask.dtype} {tuple(mask.shape)}"
                )
            if not mask.any():
                raise HubstyleError("mask selects no tokens; there is nothing to score")
            prev, nxt = prev[mask], nxt[mask]
        prev, nxt = prev.reshape(-1), nxt.reshape(-1)
        keys = prev * self.vocab_size + nxt
        at = torch.searchsorted(self.pair_keys, keys).clamp(max=self.pair_keys.numel() - 1)
        pair = torch.where(self.pair_keys[at] == keys, self.pair_counts[at], 0).double()
        rows = self.row_counts[prev].double()
        unigram = self.unigram[nxt]
        bigram = torch.where(rows > 0, pair / rows.clamp(min=1), unigram)  # an unseen context backs off fully
        lam = self.interpolation
        return float(-torch.log(lam * bigram + (1 - lam) * unigram).mean())

    def _check(self, blocks: torch.Tensor, what: str) -> torch.Tensor:
        blocks = torch.as_tensor(blocks)
        if blocks.dim() != 2 or blocks.shape[0] < 1 or blocks.shape[1] < 2:
            raise HubstyleError(
                f"BigramBaseline.{what} needs [n, block] token ids, n >= 1 and block >= 2; got {tuple(blocks.shape)}"
            )
        if blocks.dtype.is_floating_point or blocks.dtype == torch.bool:
            raise HubstyleError(f"BigramBaseline.{what} needs integer token ids, got {blocks.dtype}")
        blocks = blocks.long()  # int64 keys: prev * vocab + next fits for vocabularies up to ~3e9
        low, high = int(blocks.min()), int(blocks.max())
        if low < 0 or high >= self.vocab_size:
            raise HubstyleError(
                f"BigramBaseline.{what}: token id {low if low < 0 else high} is outside the vocabulary "
                f"(0..{self.vocab_size - 1}); build the baseline with the tokenizer's full length"
            )
        return blocks


def pretrain_base(
    train_texts: list[str],
    validation_texts: list[str],
    out_dir: str | Path,
    cfg: PretrainConfig | None = None,
) -> PretrainReport:
    """Return the report of training a tokenizer and a tiny GPT from scratch, saved as an HF folder in `out_dir`.

    Under a multi-process launch every process trains its share of each batch and the main process alone saves.
    """
    from transformers import GenerationConfig, GPT2LMHeadModel

    cfg = cfg or PretrainConfig()
    out_dir = Path(out_dir)
    if not train_texts or not validation_texts:
        raise HubstyleError("pretraining needs non-empty train and validation texts")
    tokenizer = train_tokenizer(train_texts, vocab_size=cfg.vocab_size)
    train_blocks = pack(train_texts, tokenizer, cfg.block_size, what="pretraining corpus")
    val_blocks = pack(validation_texts, tokenizer, cfg.block_size, what="pretraining validation split")
    torch.manual_seed(cfg.seed)
    model = GPT2LMHeadModel(
        tiny_config(len(tokenizer), n_layer=cfg.n_layer, n_embd=cfg.n_embd, n_head=cfg.n_head, n_positions=cfg.block_size,
                    dropout=cfg.dropout)
    )
    settings = LoopSettings(
        batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        max_steps=cfg.max_steps,
        warmup_steps=min(30, cfg.max_steps // 10),
        weight_decay=0.1,
        seed=cfg.seed,
        eval_every=min(50, max(1, cfg.max_steps // 10)),
        time_budget_s=cfg.time_budget_s,
        desc="pretraining tiny base",
    )
    result = train_loop(model, train_blocks, settings, val_blocks=val_blocks[:64])
    val_loss = mean_nll(model, val_blocks, batch_size=cfg.batch_size, bf16=True)
    bigram = BigramBaseline(len(tokenizer)).fit(train_blocks).mean_nll(val_blocks)

    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id
    )
    report = PretrainReport(
        out_dir=str(out_dir),
        vocab_size=len(tokenizer),
        n_params=sum(p.numel() for p in model.parameters()),
        train_tokens=train_blocks.numel(),
        validation_tokens=val_blocks.numel(),
        steps=result.steps,
        seconds=result.seconds,
        tokens_per_second=result.tokens_per_second,
        val_loss=val_loss,
        bigram_val_loss=bigram,
        history=result.history,
    )
    if is_main_process():
        with atomic_folder(out_dir) as stage:
            model.save_pretrained(stage)
            tokenizer.save_pretrained(stage)
            (stage / PRETRAIN_REPORT).write_text(json.dumps(report.as_dict(), indent=2), encoding="utf-8")
            plot_loss(result.history, stage / "loss.png", title="Tiny base pretraining")
    wait_for_everyone()  # the other processes read the base from out_dir next
    return report
