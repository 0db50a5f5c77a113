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


def style_blocks(cfg: RunConfig, *, synthetic: bool = False) -> dict[str, list[str | Conversation]]:
    """Return each style label's samples (of the real corpora; ``synthetic``: of the generated ones): its corpora's
    blocks, chat rows, or dialogue samples (conversations when ``dialogue.mode`` is 'chat', `Name: line` context + response texts when 'text'). The dialogue section applies
    to scripts; chat corpora (messages, prompt/completion) are samples already and join as they are. Corpora with
    the same label are one style, in config order."""
    out: dict[str, list[str | Conversation]] = {}
    mode = cfg.dialogue.mode
    for corpus_cfg in cfg.corpora:
        if corpus_cfg.synthetic != synthetic:
            continue
        corpus = load_corpus(corpus_cfg.source, name=corpus_cfg.label, column=corpus_cfg.column, split=corpus_cfg.split,
                             format=corpus_cfg.format)
        is_chat = any(isinstance(b, Conversation) for b in corpus.blocks)
        if mode and is_chat and len(cfg.corpora) == 1:
            raise HubstyleError(
                f"corpus {corpus_cfg.source!r} is already chat samples; dialogue extraction is for scripts: "
                "remove the dialogue section or give a script"
            )
        d = cfg.dialogue
        if is_chat or not mode:
            samples = corpus.blocks
        elif mode == "chat":
            samples = dialogue_conversations(corpus.text(), d.speaker, d.rounds, d.keep_narration, d.format, d.aliases)
            if d.prompts == "questions":
                samples = question_prompts(samples, cfg.split.seed, min_words=d.min_answer_words or MIN_ANSWER_WORDS)
            elif d.min_answer_words:
                samples = long_answers(samples, d.min_answer_words)
        else:
            samples = [s.text() for s in extract_dialogue(corpus.text(), d.speaker, rounds=d.rounds,
                                                          keep_narration=d.keep_narration, format=d.format,
                                                          aliases=d.aliases)]
        # a real corpus is capped on its training side only (build_style_data); a generated one here
        out.setdefault(corpus_cfg.label, []).extend(evenly_spaced(samples, corpus_cfg.max_samples) if synthetic
                                                    else samples)
    return out


def training_cap(cfg: RunConfig, label: str) -> int | None:
    """Return how many training samples a style's real corpora give at most (their ``max_samples`` added up), or
    None when any of them gives all: held-out splits and the classifier still read the whole corpus."""
    caps = [c.max_samples for c in cfg.corpora if c.label == label and not c.synthetic]
    return None if not caps or None in caps else sum(caps)


def evenly_spaced(items: list, n: int | None) -> list:
    """Return ``n`` items spread evenly over ``items``, in order (all of them when ``n`` is None or no smaller)."""
    if n is None or len(items) <= n:
        return list(items)
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


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
    # generated samples join the training side only: every held-out or judged text stays real
    generated = style_blocks(cfg, synthetic=True) if any(c.synthetic for c in cfg.corpora) else {}
    unknown = sorted(set(generated) - set(splits))
    if unknown:
        raise HubstyleError(f"synthetic corpus labelled {unknown[0]!r} has no real corpus of that style beside it; "
                            "give it the name of a real corpus's style")
    train = {label: evenly_spaced(s.train, training_cap(cfg, label)) + generated.get(label, [])
             for label, s in splits.items()}
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
