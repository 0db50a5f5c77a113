"""Seq2seq bases (T5, FLAN-T5; peft's ``SEQ_2_SEQ_LM``): (input, target) pairs, their batches and loss.

A decoder-only model reads one packed stream; an encoder-decoder reads the context with its encoder and writes the
reply with its decoder. So a conversation becomes one pair per trained assistant turn: the turns before it are the
encoder's input (a lone user turn as its own text, as a prompt is asked; several as `Name: line` lines, the plain
chat format of ``hubstyle.chat``) and the turn itself is the decoder's target. The loss is on the target's tokens
only, its closing EOS included so the model learns to stop; padding carries ``IGNORE_INDEX``. Plain text gives no
pairs to train on; held-out generic text is scored as pairs of each passage's first half (input) and second half
(target), since a seq2seq model has no next-token loss over one stream.

Training is ``hubstyle.loop.train_loop`` with a :class:`PairBatch` for blocks and :func:`pair_loss_sum` for the loss
(optimizer, schedule, checkpoints and resume are the causal runs'). Evaluation is ``hubstyle.evaluate.seq2seq``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch

from hubstyle.chat import IGNORE_INDEX
from hubstyle.data.chat import Conversation
from hubstyle.errors import HubstyleError

if TYPE_CHECKING:
    from hubstyle.config import RunConfig

TASK_TYPE = "SEQ_2_SEQ_LM"  # peft's TaskType for encoder-decoder LMs (causal runs: "CAUSAL_LM")
METHODS = ("lora", "qlora")  # seq2seq runs are evaluated and published as adapters


@dataclass(frozen=True)
class Pair:
    """One training or scoring example: the encoder's input and the decoder's target."""

    source: str
    target: str


def source_text(messages: Sequence[dict[str, str]]) -> str:
    """Return what the encoder reads for these context messages: a lone unnamed user turn as its own text (how
    evaluation and ``load_style`` ask a prompt), otherwise one `Name: line` line per message."""
    from hubstyle.chat import _plain_line  # the plain chat rendering, one place for it

    if len(messages) == 1 and messages[0]["role"] == "user" and not messages[0].get("name"):
        return messages[0]["content"]
    return "".join(_plain_line(m) for m in messages).rstrip("\n")


def pairs_from_samples(samples: Sequence[str | Conversation], *, what: str = "training text") -> list[Pair]:
    """Return one (context, reply) pair per trained assistant turn of each conversation (dialogue samples, chat
    rows or prompt/completion rows); a reply with no turn before it gives the encoder nothing to read and is left
    out. Plain text is a one-line error: it has no pairs."""
    pairs = []
    for item in samples:
        if isinstance(item, str):
            raise HubstyleError(
                f"the {what} is plain text, but a seq2seq base trains on (input, target) pairs; set dialogue.render: "
                "chat for a script, or give a prompt/completion or messages .jsonl file"
            )
        for turn in item.trained_turns():
            source = source_text(item.messages[:turn]) if turn else ""
            if source.strip():
                pairs.append(Pair(source, item.messages[turn]["content"]))
    if not pairs:
        raise HubstyleError(f"the {what} gives no (input, target) pair: no reply has a turn before it to answer")
    return pairs


def text_pairs(texts: Sequence[str], *, what: str = "held-out text") -> list[Pair]:
    """Return plain passages as (first half of the words, second half) pairs: how generic text is scored."""
    pairs = []
    for text in texts:
        words = text.split()
        if len(words) >= 2:
            half = len(words) // 2
            pairs.append(Pair(" ".join(words[:half]), " ".join(words[half:])))
    if not pairs:
        raise HubstyleError(f"the {what} has no passage of two words or more to score")
    return pairs


def scoring_pairs(items: Sequence[str | Conversation], *, what: str) -> list[Pair]:
    """Return the pairs held-out ``items`` are scored on: conversations' replies, or plain passages' second halves."""
    if items and all(isinstance(i, str) for i in items):
        return text_pairs(items, what=what)
    return pairs_from_samples(items, what=what)


@dataclass
class PairBatch:
    """Encoded pairs, right-padded: encoder ids and mask ``[n, source_len]``, decoder labels ``[n, target_len]``
    (``IGNORE_INDEX`` on padding). Indexes and moves like ``hubstyle.packing.Blocks``, so ``train_loop`` draws
    batches of it the same way."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index) -> "PairBatch":
        return PairBatch(self.input_ids[index], self.attention_mask[index], self.labels[index])

    def trained_tokens(self) -> int:
        """Return how many target tokens carry the loss."""
        return int((self.labels != IGNORE_INDEX).sum())

    def real_tokens(self) -> int:
        """Return how many tokens are text, input and target, not padding."""
        return int(self.attention_mask.sum()) + self.trained_tokens()

    def to(self, device) -> "PairBatch":
        """Return the batch on ``device``."""
        return PairBatch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device))


def encode_pairs(pairs: Sequence[Pair], tokenizer, max_len: int, *, what: str = "training text") -> PairBatch:
    """Return ``pairs`` tokenised (special tokens as the tokenizer adds them: T5 closes both sides with EOS) and
    padded to the longest of each side; an input over ``max_len`` tokens keeps its end (the latest context and the
    EOS), a target keeps its start."""
    if not pairs:
        raise HubstyleError(f"the {what} has no (input, target) pairs to encode")
    sources = tokenizer([p.source for p in pairs], verbose=False)["input_ids"]
    targets = tokenizer(text_target=[p.target for p in pairs], verbose=False)["input_ids"]
    sources = [ids[-max_len:] for ids in sources]
    targets = [ids[:max_len] for ids in targets]
    if not all(targets):
        raise HubstyleError(f"a target of the {what} has no tokens after tokenising; drop empty replies")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    n = len(pairs)
    input_ids = torch.full((n, max(map(len, sources))), pad, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    labels = torch.full((n, max(map(len, targets))), IGNORE_INDEX, dtype=torch.long)
    for row, (src, tgt) in enumerate(zip(sources, targets)):
        input_ids[row, : len(src)] = torch.tensor(src)
        attention_mask[row, : len(src)] = 1
        labels[row, : len(tgt)] = torch.tensor(tgt)
    return PairBatch(input_ids, attention_mask, labels)


def pair_loss_sum(model, batch: PairBatch) -> tuple[torch.Tensor, int]:
    """Return (summed NLL of the target tokens, their count) of one batch, by teacher forcing: the decoder reads
    the target shifted right (the model's own ``prepare_decoder_input_ids_from_labels``)."""
    from hubstyle.loop import _unwrap

    # padding columns shared by every row cost compute only: cut them (the batch is right-padded)
    width = max(1, int(batch.attention_mask.sum(1).max()))
    labels = batch.labels[:, : max(1, int((batch.labels != IGNORE_INDEX).sum(1).max()))]
    decoder_input_ids = _unwrap(model).prepare_decoder_input_ids_from_labels(labels=labels)
    logits = model(
        input_ids=batch.input_ids[:, :width], attention_mask=batch.attention_mask[:, :width],
        decoder_input_ids=decoder_input_ids, use_cache=False,
    ).logits
    keep = labels != IGNORE_INDEX
    loss = torch.nn.functional.cross_entropy(logits[keep].float(), labels[keep], reduction="sum")
    return loss, int(keep.sum())


def check_config(cfg: "RunConfig", base: str, *, chat: bool) -> None:
    """Raise before any work when a run on the seq2seq base ``base`` asks for what only a decoder-only model does."""
    if not chat:
        raise HubstyleError(
            f"base '{base}' is a seq2seq model, which trains on (input, target) pairs, but the corpora give plain "
            "text; set dialogue.render: chat for a script, or give a prompt/completion or messages .jsonl file"
        )
    if cfg.chat.template == "model":
        raise HubstyleError(
            f"chat.template is 'model', but base '{base}' is a seq2seq model: its encoder reads the context as plain "
            "`Name: line` text, not through a chat template; set chat.template to 'auto' or 'plain'"
        )
    if not cfg.chat.assistant_only_loss:
        raise HubstyleError(
            f"chat.assistant_only_loss is false, which trains a decoder-only model on the context too; the seq2seq "
            f"base '{base}' reads the context with its encoder and learns the reply only: set it to true"
        )
    if cfg.training.method not in METHODS:
        raise HubstyleError(
            f"training.method '{cfg.training.method}' is not supported on the seq2seq base '{base}': seq2seq runs "
            f"train, evaluate and publish adapters; use {' or '.join(METHODS)}"
        )
