"""Training a restyler: a LoRA adapter that rewrites plain text in a style, learnt from (plain -> styled) pairs.

Each pair is one chat sample (system: the instruction, user: the plain line, assistant: the styled line), trained by
the same packed loop as a style adapter with the loss on the styled side only. One command builds it and resumes:
``hubstyle restyler build data/configs/restyler.yaml [--resume]``.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from hubstyle.config import ChatConfig, ClassifierConfig, TrainingConfig, from_dict
from hubstyle.data.chat import Conversation
from hubstyle.data.parallel import Pair, changed, held_out_split, introduces, pairs_sha256, read_pairs, style_words
from hubstyle.errors import HubstyleError
from hubstyle.layout import RESTYLER_FACTS
from hubstyle.restyle.distill import DistillConfig

DEFAULT_INSTRUCTION = "Rewrite the text in Shakespeare's English."


@dataclass
class ParallelConfig:
    """Where the pairs come from: a named parallel corpus or .jsonl (``source`` alone), or two aligned files."""

    source: str = "shakespeare-modern"
    target: str | None = None
    held_out_play: str | None = "tempest"  # never trained or tuned on; the restyler is evaluated on it
    changed_only: bool = True  # drop pairs whose styled side equals the plain side: they teach copying
    style_words_only: bool = False  # keep only pairs whose styled side brings in a style word (learnt from the pairs)
    max_pairs: int | None = None  # a seeded sample of the training pairs; None: all
    validation_pairs: int = 160  # cut from the training side (never from the held-out play) for the loss curve
    seed: int = 0


@dataclass
class RestylerConfig:
    """A restyler build: base, pairs, instruction, training settings and how much of the held-out play to score."""

    base_model: str = "HuggingFaceTB/SmolLM2-135M-Instruct"
    output_dir: str = "runs/restyler"
    style: str = "shakespeare"
    instruction: str = DEFAULT_INSTRUCTION
    pairs: ParallelConfig = field(default_factory=ParallelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)  # the line-level judge (path: use one)
    distill: DistillConfig = field(default_factory=DistillConfig)  # the on-topic chat set distilled through it
    eval_lines: int = 200  # held-out lines scored: evenly spaced runs of consecutive lines over the play
    eval_run_lines: int = 10  # lines a run; the style is also judged on passages of each run's consecutive lines
    style_bias: float = 0.0  # decoding: added to the logits of the style words (0: plain greedy); weights unchanged
    bias_words: int = 20  # how many style words the bias favours (the most marked that no plain side uses)
    num_beams: int = 1  # decoding: beams searched (1: greedy); weights unchanged
    compare_style_bias: float = 2.0  # with no bias of its own, the evaluation also scores this one (0: it does not)
    max_new_tokens: int = 64

    @property
    def out(self) -> Path:
        """Return the output folder as a Path."""
        return Path(self.output_dir)


def load_restyler_config(path: str | Path) -> RestylerConfig:
    """Return the RestylerConfig in a YAML file; an unknown key is named with a suggestion."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise HubstyleError(f"restyler config '{path}' not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise HubstyleError(f"bad YAML in '{path}': {str(err).splitlines()[0]}") from None
    try:
        return from_dict(RestylerConfig, raw)
    except HubstyleError as err:
        raise HubstyleError(f"{path}: {err}") from None


def restyle_messages(instruction: str, text: str) -> list[dict[str, str]]:
    """Return the prompt messages a restyler reads: the instruction as the system turn, the plain text as the user's."""
    return [{"role": "system", "content": instruction}, {"role": "user", "content": text}]


def pair_conversation(pair: Pair, instruction: str) -> Conversation:
    """Return one pair as a chat sample whose loss is on the styled side only."""
    return Conversation([*restyle_messages(instruction, pair.source), {"role": "assistant", "content": pair.target}],
                        source=f"pair line {pair.line}")


@dataclass
class RestylerData:
    """The pairs a build trains, validates and evaluates on, and what was dropped."""

    train: list[Pair]
    validation: list[Pair]
    held_out: list[Pair]
    facts: dict
    tuning: list[Pair] = field(default_factory=list)  # never trained on, in the training plays' own mix of lines


def restyler_data(cfg: RestylerConfig) -> RestylerData:
    """Return the build's pairs: the held-out play cut out whole, unchanged pairs dropped, a seeded sample."""
    p = cfg.pairs
    pairs = read_pairs(p.source, p.target)
    rest, held_out = held_out_split(pairs, p.held_out_play)
    kept = [x for x in rest if changed(x)] if p.changed_only else list(rest)
    marked = style_words(kept)
    n_changed = len(kept)
    unmarked: list[Pair] = []
    if p.style_words_only:
        # Most pairs differ by a word or two, which teaches copying; pairs that bring in a marked word teach the style.
        words = set(marked)
        brings = [introduces(x, words) for x in kept]
        unmarked = [x for x, yes in zip(kept, brings) if not yes]
        kept = [x for x, yes in zip(kept, brings) if yes]
    rng = random.Random(p.seed)
    order = list(range(len(kept)))
    rng.shuffle(order)
    validation = [kept[i] for i in sorted(order[: p.validation_pairs])]
    # Choosing a decoding on the validation pairs alone would favour the style words (each of them brings one in);
    # the lines without one, never trained on, join in the share the plays have them.
    extra = round(len(validation) * len(unmarked) / len(kept)) if kept else 0
    tuning = sorted(validation + random.Random(p.seed + 1).sample(unmarked, min(extra, len(unmarked))),
                    key=lambda x: x.line)
    train_idx = order[p.validation_pairs :]
    if p.max_pairs is not None:
        train_idx = train_idx[: p.max_pairs]
    train = [kept[i] for i in sorted(train_idx)]
    if not train:
        raise HubstyleError("no training pairs left after the held-out play, unchanged pairs and validation were cut")
    facts = {
        "source": p.source if p.target is None else f"{p.source} -> {p.target}",
        "pairs_read": len(pairs),
        "held_out_play": p.held_out_play,
        "held_out_pairs": len(held_out),
        "held_out_sha256": pairs_sha256(held_out) if held_out else None,
        "dropped_unchanged": len(rest) - n_changed,
        "dropped_without_style_word": n_changed - len(kept),
        "style_words": marked[:40],
        "validation_pairs": len(validation),
        "train_pairs": len(train),
        "train_sha256": pairs_sha256(train),
        "seed": p.seed,
    }
    return RestylerData(train, validation, held_out, facts, tuning)


def train_restyler(cfg: RestylerConfig, *, resume: bool = False, log: Callable[[str], None] = print) -> Path:
    """Return the adapter folder after training the restyler of `cfg` (checkpoints let `resume` continue)."""
    from hubstyle.bases import resolve_base
    from hubstyle.layout import RunLayout
    from hubstyle.train import train

    layout = RunLayout(cfg.out)
    data = restyler_data(cfg)
    log(f"restyler pairs: {data.facts['train_pairs']} train, {data.facts['validation_pairs']} validation, "
        f"{data.facts['held_out_pairs']} held out ({data.facts['held_out_play']}), "
        f"{data.facts['dropped_unchanged']} unchanged dropped")
    base = resolve_base(cfg.base_model, log=log)
    train_convs = [pair_conversation(x, cfg.instruction) for x in data.train]
    val_convs = [pair_conversation(x, cfg.instruction) for x in data.validation]
    report = train(base.path, train_convs, val_convs, layout.adapter, cfg.training,
                   chat=ChatConfig(template="model", assistant_only_loss=True),
                   checkpoint_dir=layout.checkpoints, resume=resume, data_facts=data.facts)
    from importlib.metadata import version

    from hubstyle.machine import machine_summary

    facts = {"style": cfg.style, "instruction": cfg.instruction, "base_model": base.hub_id or cfg.base_model,
             "base": base.as_dict(), "data": data.facts, "config": asdict(cfg), "targets": report.target_modules,
             "hubstyle_version": version("hubstyle"), "machine": machine_summary(),
             "training": {"steps": report.steps, "seconds": report.seconds,
                          "tokens_per_second": report.tokens_per_second, "final_val_loss": report.final_val_loss,
                          "base_dtype": report.base_dtype, "bf16": report.bf16}}
    (layout.adapter / RESTYLER_FACTS).write_text(json.dumps(facts, indent=2, default=str), encoding="utf-8")
    log(f"restyler trained: {report.steps} steps in {report.seconds:.0f} s "
        f"({report.tokens_per_second:.0f} tokens/s), validation loss {report.final_val_loss:.3f}")
    return layout.adapter
