"""From a RunConfig to the texts a run trains and measures on: corpora -> dialogue -> splits -> balanced mix."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from hubstyle.config import RunConfig, SplitConfig
from hubstyle.data import (
    Conversation,
    Splits,
    balance_by_tokens,
    dialogue_conversations,
    extract_dialogue,
    load_corpus,
    split_blocks,
)
from hubstyle.data.chat import MIN_ANSWER_WORDS, long_answers, question_prompts
from hubstyle.data.scripts import read_script, speaker_key
from hubstyle.errors import HubstyleError


@dataclass
class StyleData:
    """Each style's leak-free splits, the balanced training texts, and the token counts behind them."""

    splits: dict[str, Splits]
    train_texts: dict[str, list[str]]  # after balancing
    token_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    mix_report: dict | None = None

    def all_train_texts(self) -> list[str | Conversation]:
        """Return every style's (balanced) training samples in one list."""
        return [t for texts in self.train_texts.values() for t in texts]

    def is_chat(self) -> bool:
        """Return whether the samples are conversations (trained on the assistant's tokens)."""
        return any(isinstance(t, Conversation) for texts in self.train_texts.values() for t in texts)

    def heldout(self, split: str = "test") -> dict[str, list[str]]:
        """Return each style's held-out blocks of `split` ('validation' or 'test')."""
        return {label: getattr(s, split) for label, s in self.splits.items()}


GENERIC_VALIDATION = 0.05  # share of the generic corpus held out: the base's validation, the forgetting measure


def generic_splits(source: str, seed: int = 0, n_segments: int = SplitConfig().segments) -> Splits:
    """Return the generic corpus's contiguous splits: 5% validation (held-out modern English), no test part.

    Pretraining, a run's forgetting measure, the classifier's "other" class and blend sweeps all cut the generic
    corpus this one way, so the base never trains on the text its forgetting is measured on.
    """
    return split_blocks(load_corpus(source).blocks, validation=GENERIC_VALIDATION, test=0.0, seed=seed,
                        n_segments=n_segments)


def style_blocks(cfg: RunConfig) -> dict[str, list[str | Conversation]]:
    """Return each configured corpus's samples, keyed by style label: its blocks, chat rows, or dialogue samples
    (conversations when ``dialogue.mode`` is 'chat', `Name: line` context + response texts when 'text')."""
    out: dict[str, list[str | Conversation]] = {}
    mode = cfg.dialogue.mode
    for corpus_cfg in cfg.corpora:
        corpus = load_corpus(corpus_cfg.source, name=corpus_cfg.label, column=corpus_cfg.column, split=corpus_cfg.split,
                             format=corpus_cfg.format)
        is_chat = any(isinstance(b, Conversation) for b in corpus.blocks)
        if mode and is_chat:
            raise HubstyleError(
                f"corpus {corpus_cfg.source!r} is already chat samples; dialogue extraction is for scripts: "
                "remove the dialogue section or give a script"
            )
        d = cfg.dialogue
        if mode == "chat":
            samples = dialogue_conversations(corpus.text(), d.speaker, d.rounds, d.keep_narration, d.format, d.aliases)
            if d.prompts == "questions":
                samples = question_prompts(samples, cfg.split.seed, min_words=d.min_answer_words or MIN_ANSWER_WORDS)
            elif d.min_answer_words:
                samples = long_answers(samples, d.min_answer_words)
            out[corpus_cfg.label] = samples
        elif mode == "text":
            samples = extract_dialogue(corpus.text(), d.speaker, rounds=d.rounds, keep_narration=d.keep_narration,
                                       format=d.format, aliases=d.aliases)
            out[corpus_cfg.label] = [s.text() for s in samples]
        else:
            out[corpus_cfg.label] = corpus.blocks
    return out


def sample_text(item: str | Conversation) -> str:
    """Return the text a sample shows of its style: plain text, or a conversation's trained assistant turns."""
    return item.assistant_text() if isinstance(item, Conversation) else item


def build_style_data(
    cfg: RunConfig, count_tokens: Callable[[str | Conversation], int],
    blocks: dict[str, list[str | Conversation]] | None = None,
) -> StyleData:
    """Return the run's StyleData: split every style by contiguous segments, then balance train splits by tokens.

    `blocks` are `style_blocks(cfg)` when the caller already loaded them (to fail early, before writing anything).
    """
    splits = {
        label: split_blocks(
            blocks, validation=cfg.split.validation, test=cfg.split.test, seed=cfg.split.seed, n_segments=cfg.split.segments
        )
        for label, blocks in (blocks or style_blocks(cfg)).items()
    }
    train = {label: s.train for label, s in splits.items()}
    mix_report = None
    if len(train) > 1 and cfg.mix.balance:
        train, report = balance_by_tokens(train, count_tokens, target_tokens=cfg.mix.target_tokens)
        mix_report = report.as_dict()
    counts = {
        label: {
            "train": sum(count_tokens(t) for t in train[label]),
            "validation": sum(count_tokens(t) for t in s.validation),
            "test": sum(count_tokens(t) for t in s.test),
        }
        for label, s in splits.items()
    }
    if not any(train.values()):
        raise HubstyleError("no training text left after splitting; give the corpora more text")
    return StyleData(splits=splits, train_texts=train, token_counts=counts, mix_report=mix_report)


OTHER_SPEAKERS = "other speakers"  # a speaker run's classifier class: the rest of the cast of the same texts


def other_speakers(cfg: RunConfig) -> list[str]:
    """Return the speeches of every speaker but ``cfg.dialogue.speaker`` in the run's style corpora, in text order."""
    d = cfg.dialogue
    speeches = []
    for corpus_cfg in cfg.corpora:
        corpus = load_corpus(corpus_cfg.source, name=corpus_cfg.label, column=corpus_cfg.column, split=corpus_cfg.split,
                             format=corpus_cfg.format)
        script = read_script(corpus.text(), d.format, d.aliases)  # the names as the speaker's samples read them
        target = script.key(d.speaker or "")
        speeches += [" ".join(t.text.split()) for t in script.turns
                     if t.speaker is not None and speaker_key(t.speaker) != target]
    if not speeches:
        raise HubstyleError(f"the corpora have no speaker other than {cfg.dialogue.speaker!r}; a speaker run's classifier "
                            "needs the rest of the cast to tell the character from")
    return speeches
