"""One run end to end, driven by a RunConfig: corpus -> (tiny base) -> train -> measure -> metrics.json."""

from __future__ import annotations

import json
import math
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from hubstyle.bases import ResolvedBase
from hubstyle.chat import IGNORE_INDEX
from hubstyle.config import TINY_BASE, RunConfig
from hubstyle.data import Splits, split_blocks
from hubstyle.dataset import (
    OTHER_SPEAKERS, StyleData, build_style_data, generic_splits, other_speakers, sample_text, style_blocks,
)
from hubstyle.errors import HubstyleError
from hubstyle.facts import PACKAGED_PROMPTS, Dataset, RunFacts, facts_from_metrics, write_facts
from hubstyle.fsio import atomic_folder, atomic_write, is_main_process
from hubstyle.layout import PRETRAIN_REPORT, RunLayout
from hubstyle.models import check_cutoff, is_seq2seq, precision_note, remote_code_allowed
from hubstyle.pretrain import BigramBaseline, pretrain_base
from hubstyle.tracking import check_report_to, evaluation_metrics, open_tracker
from hubstyle.train import TrainReport, train

METRICS_SCHEMA = "hubstyle.metrics/1"
# One character has a few thousand words (PETRUCHIO: 4,300): passages of 12-40 words give each class 2.6x more
# passages than the default 40-100, and with classifier.epochs 4 took speaker-vs-others macro-F1 from 0.37 to 0.73.
SPEAKER_PASSAGES = {"min_words": 12, "max_words": 40}


def ensure_base(cfg: RunConfig, layout: RunLayout, log=print, *, reuse: bool = True) -> tuple[str, dict | None]:
    """Return (base path or id, pretrain facts): pretrains the tiny base into OUT/base unless it is already there
    (or always, without `reuse`)."""
    if cfg.base_model != TINY_BASE:
        return cfg.base_model, None
    report_path = layout.base / PRETRAIN_REPORT
    if reuse and report_path.is_file():
        log(f"reusing the tiny base in {layout.base}")
    else:
        parts = generic_splits(cfg.pretrain.corpus, cfg.pretrain.seed)
        log(f"pretraining a tiny base on {cfg.pretrain.corpus} ({len(parts.train)} blocks) ...")
        pretrain_base(parts.train, parts.validation, layout.base, cfg.pretrain)
    report = json.loads(report_path.read_text(encoding="utf-8"))
    report.pop("history", None)
    return str(layout.base), report


def heldout_losses(
    base: str, trained: Path, texts: dict[str, list], block_size: int, template: str = "auto",
    max_blocks: int | None = None,
) -> dict[str, dict[str, float]]:
    """Return {part: {"base": loss, "tuned": loss}} on held-out texts (conversations: the assistant's tokens) of
    the trained adapter (toggled on one model) or whole model (beside the base)."""
    from hubstyle.evaluate.pair import load_pair

    if is_seq2seq(base):  # scored on (input, target) pairs, not packed blocks
        from hubstyle.evaluate.seq2seq import heldout_losses as pair_losses

        return pair_losses(base, trained, texts, block_size, max_blocks)

    pair = load_pair(base, trained)
    return {
        part: pair.losses(items, what=f"held-out {part} text", block_size=block_size, template=template,
                          max_blocks=max_blocks)
        for part, items in texts.items()
    }


def ensure_classifier(cfg: RunConfig, out_dir: Path, data: StyleData, generic: Splits, log=print) -> tuple[str, dict]:
    """Return (classifier folder or id, its report): the configured one, or one trained on the run's styles."""
    from hubstyle.evaluate.classifier import (
        METRICS_FILE, check_labels, load_classifier, train_classifier,
    )

    if cfg.classifier.path:
        clf = load_classifier(cfg.classifier.path)
        report_path = Path(cfg.classifier.path) / METRICS_FILE
        report = json.loads(report_path.read_text(encoding="utf-8")) if report_path.is_file() else {"labels": clf.labels}
        check_labels(clf, [cfg.style])  # a classifier that cannot judge this style fails before anything is copied
        given = Path(clf.path)
        if given.is_dir() and given.resolve() != Path(out_dir).resolve():  # the run folder holds what judged it
            with atomic_folder(out_dir) as stage:
                shutil.copytree(given, stage, dirs_exist_ok=True)
        return cfg.classifier.path, report
    from hubstyle.data import load_corpus

    other = cfg.classifier.other_label
    if other in data.splits:
        raise HubstyleError(f"a style is named '{other}', which is the generic class; set classifier.other_label")
    # The `other` class: modern registers from corpora (never the judged models' own text), each cut into
    # contiguous segments; the run's generic corpus keeps the split its forgetting is measured on.
    registers: dict[str, Splits] = {
        name: generic if name == cfg.generic_corpus else split_blocks(
            [sample_text(b) for b in load_corpus(name).blocks], validation=cfg.classifier.register_heldout,
            test=0.0, seed=cfg.split.seed, n_segments=cfg.split.segments,
        )
        for name in cfg.classifier.other_corpora
    }
    train_texts = {**{label: [sample_text(t) for t in s.train] for label, s in data.splits.items()},
                   other: {name: s.train for name, s in registers.items()}}
    heldout = {**{label: [sample_text(t) for t in s.test or s.validation] for label, s in data.splits.items()},
               other: {name: s.validation for name, s in registers.items()}}
    if cfg.classifier.pairs:  # the same lines in both classes: only the register tells them apart
        _add_paired_registers(cfg, train_texts, heldout)
    if cfg.dialogue.speaker:  # the character against the other speakers of the same text, not just the play
        if OTHER_SPEAKERS in train_texts:
            raise HubstyleError(f"a style is named '{OTHER_SPEAKERS}', which is the other speakers' class; rename it")
        speeches = split_blocks(other_speakers(cfg), validation=cfg.classifier.register_heldout, test=0.0,
                                seed=cfg.split.seed, n_segments=cfg.split.segments)
        train_texts[OTHER_SPEAKERS], heldout[OTHER_SPEAKERS] = speeches.train, speeches.validation
    log(f"training the style classifier ({', '.join(train_texts)}; {other}: {', '.join(train_texts[other])}) ...")
    report = train_classifier(
        train_texts, heldout, out_dir=out_dir, backbone=cfg.classifier.backbone,
        epochs=cfg.classifier.epochs, max_per_class=cfg.classifier.max_per_class,
        learning_rate=cfg.classifier.learning_rate, augment=cfg.classifier.augment, seed=cfg.split.seed,
        **(dict(SPEAKER_PASSAGES, versus=(cfg.style, OTHER_SPEAKERS)) if cfg.dialogue.speaker else {}),
    )
    per_register = ", ".join(f"{name} {r['accuracy']:.3f} (n={r['n']})" for name, r in report.registers.items())
    log(f"classifier: accuracy {report.accuracy:.3f}, macro-F1 {report.macro_f1:.3f} on held-out passages, "
        f"macro-F1 {report.disfluent['macro_f1']:.3f} on disfluent copies ({report.train_seconds:.0f}s); "
        f"accuracy by register: {per_register}")
    versus = report.speaker_vs_others
    if versus:
        log(f"classifier, '{cfg.style}' vs the other speakers of the text: macro-F1 {versus['macro_f1']:.3f}, "
            f"accuracy {versus['accuracy']:.3f} on {versus['n']} held-out passages")
    pairs = {"pairs": cfg.classifier.pairs, "pairs_held_out_play": cfg.classifier.pairs_held_out_play}
    return str(out_dir), {**report.as_dict(), **(pairs if cfg.classifier.pairs else {})}


def _check_pairs(cfg: RunConfig) -> None:
    """Raise before any work when the classifier's parallel pairs cannot be read or split as configured."""
    from hubstyle.data.parallel import HELD_OUT_PLAYS, PARALLEL_CORPORA

    clf = cfg.classifier
    if clf.pairs not in PARALLEL_CORPORA and Path(clf.pairs).suffix.lower() != ".jsonl":
        raise HubstyleError(f"'classifier.pairs' is {clf.pairs!r}, which holds no pairs: give a named parallel corpus "
                            f"({', '.join(PARALLEL_CORPORA)}) or a .jsonl file of source/target pairs")
    if clf.pairs_held_out_play is not None and clf.pairs_held_out_play not in HELD_OUT_PLAYS:
        raise HubstyleError(f"'classifier.pairs_held_out_play' is {clf.pairs_held_out_play!r}: known plays are "
                            f"{', '.join(sorted(HELD_OUT_PLAYS))}; or set it to null to score on the last pairs")


def _add_paired_registers(cfg: RunConfig, train: dict, heldout: dict) -> None:
    """Add the classifier's parallel pairs to ``train`` and ``heldout`` in place: the styled sides as a register of
    the style's class, the plain sides as one of the `other` class (the held-out play's pairs are scored on)."""
    from hubstyle.data.parallel import PARALLEL_CORPORA, read_pairs, scored_split

    clf = cfg.classifier
    if cfg.style not in train:
        raise HubstyleError(f"classifier.pairs needs the style '{cfg.style}' among the run's corpora; it has "
                            f"{sorted(train)}")
    fit, scored = scored_split(read_pairs(clf.pairs), clf.pairs_held_out_play, clf.register_heldout)
    name = clf.pairs if clf.pairs in PARALLEL_CORPORA else Path(clf.pairs).stem
    for texts, pairs in ((train, fit), (heldout, scored)):
        texts[cfg.style] = {cfg.style: texts[cfg.style], f"{name} (styled)": [p.target for p in pairs]}
        texts[clf.other_label][f"{name} (plain)"] = [p.source for p in pairs]


def bigram_loss(base: str, train_texts: list, test_texts: list, block_size: int, template: str = "auto") -> float:
    """Return the held-out loss of a bigram model counted on the style's training split (same tokenizer, same
    scored positions as the transformer: the assistant's tokens on chat data)."""
    from hubstyle.models import load_tokenizer
    from hubstyle.packing import build_blocks

    tokenizer = load_tokenizer(base)
    train = build_blocks(train_texts, tokenizer, block_size, template=template, what="style training text")
    test = build_blocks(test_texts, tokenizer, block_size, template=template, what="held-out style text")
    model = BigramBaseline(len(tokenizer)).fit(train.input_ids)
    return model.mean_nll(test.input_ids, mask=test.labels[:, 1:] != IGNORE_INDEX)


def check_run(cfg: RunConfig, resolved: ResolvedBase | None, *, chat: bool) -> None:
    """Raise before any work when the run cannot succeed: a context too short, a chat template missing for chat
    samples, a seq2seq base given plain text or decoder-only options, unknown LoRA target modules, a missing prompt
    file (`resolved` is None for the tiny base)."""
    if resolved is not None:
        check_cutoff(resolved.path, cfg.training.cutoff_len)
    elif cfg.training.cutoff_len > cfg.pretrain.block_size:
        raise HubstyleError(f"'training.cutoff_len' is {cfg.training.cutoff_len}, longer than the tiny base's context "
                            f"(pretrain.block_size {cfg.pretrain.block_size}); lower it or raise pretrain.block_size")
    if resolved is not None and is_seq2seq(resolved.path):  # T5 & co: (input, target) pairs, no chat template
        from hubstyle.seq2seq import check_config

        check_config(cfg, resolved.hub_id or resolved.path, chat=chat)
    if chat:
        _check_chat_template(cfg, resolved)
    if resolved is not None and cfg.training.target_modules:
        _check_target_modules(resolved.path, cfg.training.target_modules)
    check_report_to(cfg.training.report_to)  # a tracker whose package is missing fails now, not after the data
    if cfg.classifier.pairs and not cfg.classifier.path:
        _check_pairs(cfg)
    if cfg.evaluation.enabled:  # a missing or empty prompt file fails now, not after training
        _check_prompt_files(cfg)


def train_style(cfg: RunConfig, layout: RunLayout, base: str, data: StyleData, *, resume: bool = False,
                log=print) -> TrainReport:
    """Return the TrainReport of training the adapter (or model) on `data`; writes it and the config copy."""
    import yaml

    for label, counts in data.token_counts.items():
        log(f"style '{label}': {counts['train']:,} train / {counts['validation']:,} validation / {counts['test']:,} test tokens")
    validation = {label: s.validation for label, s in data.splits.items()}  # the validation loss covers each style
    if cfg.training.quantization is None:  # QLoRA's compute dtype is its own (models.quantization_config)
        log(precision_note(cfg.training.bf16))
    out_dir = layout.trained(cfg.training.method)
    with open_tracker(cfg.training.report_to, layout.root, cfg.to_dict(), mode="resume" if resume else "new") as tracker:
        for where in tracker.destinations:
            log(f"tracking: {where}")
        report = train(
            base, data.all_train_texts(), validation, out_dir, cfg.training, chat=cfg.chat,
            checkpoint_dir=layout.checkpoints, resume=resume,
            data_facts={"styles": data.token_counts, "mix": data.mix_report}, tracker=tracker,
        )
    if is_main_process():
        # written once the run trained: a resume refused for another config leaves the config that made the checkpoints
        atomic_write(layout.config, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        log(f"trained {report.steps} steps in {report.seconds:.0f}s ({report.tokens_per_second:,.0f} tokens/s) -> {out_dir}")
    return report


def measure(
    cfg: RunConfig, layout: RunLayout, base: str, resolved: ResolvedBase | None, pretrain_facts: dict | None,
    data: StyleData, report: TrainReport, log=print,
) -> dict:
    """Return the run's metrics after measuring the trained adapter (or whole model); writes metrics.json and
    run_facts.json."""
    from hubstyle import __version__

    metrics = {
        "schema": METRICS_SCHEMA,
        "run": {
            "name": layout.root.resolve().name,
            "style": cfg.style,
            "base_model": resolved.hub_id or resolved.path if resolved else base,
            "base_weights": resolved.as_dict() if resolved else {"source": "tiny", "path": base},
            "hubstyle_version": __version__,
            "created": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        },
        "data": {"styles": data.token_counts, "generic_corpus": cfg.generic_corpus, "mix": data.mix_report},
        "training": report.as_dict(),
    }
    if pretrain_facts:
        metrics["pretrain"] = pretrain_facts
    out_dir = layout.trained(cfg.training.method)  # the adapter, or the whole model of a full / freeze run
    style_test = data.splits[cfg.style].test or data.splits[cfg.style].validation
    generic = generic_splits(cfg.generic_corpus, cfg.split.seed, cfg.split.segments)
    if cfg.evaluation.enabled:
        metrics.update(evaluate(cfg, layout, base, out_dir, data, style_test, generic, log))
    else:
        losses = heldout_losses(base, out_dir, {"style": style_test, "generic": generic.validation},
                                cfg.training.cutoff_len, cfg.chat.template, cfg.evaluation.heldout_blocks)
        metrics["heldout_loss"] = losses
        metrics["perplexity"] = {k: {m: math.exp(v) for m, v in d.items()} for k, d in losses.items()}
    metrics["heldout_loss"]["style"]["bigram"] = bigram_loss(
        base, data.splits[cfg.style].train, style_test, cfg.training.cutoff_len, cfg.chat.template
    )
    write_metrics(layout, metrics)
    style_split = "test" if data.splits[cfg.style].test else "validation"  # what style_test above is cut from
    facts = facts_for_run(metrics, cfg, style_split)
    write_facts(layout, facts)
    with open_tracker(cfg.training.report_to, layout.root, cfg.to_dict(), mode="append") as tracker:
        tracker.log(evaluation_metrics(facts), report.steps)  # the figures at the step the adapter was saved
    return metrics


def corpus_dataset(source: str, label: str | None = None) -> Dataset:
    """Return the Dataset of corpus ``source``: its Hub id from hubstyle's named corpora, or from 'hf:owner/name'."""
    from hubstyle.data.sources import hub_dataset

    hub_id, config = hub_dataset(source)
    return Dataset(source=source, label=label, hub_id=hub_id, hub_config=config)


def facts_for_run(metrics: Mapping[str, Any], cfg: RunConfig, style_split: str) -> RunFacts:
    """Return the facts of a pipeline run of ``cfg`` whose metrics are ``metrics``."""
    prompts = cfg.evaluation.prompts
    return facts_from_metrics(
        metrics,
        corpora=[corpus_dataset(c.source, c.label) for c in cfg.corpora],
        generic=corpus_dataset(cfg.generic_corpus),
        style_split=style_split,
        prompt_set=Path(prompts).name if prompts else PACKAGED_PROMPTS,
        pretrain_corpus=corpus_dataset(cfg.pretrain.corpus) if metrics.get("pretrain") is not None else None,
    )


def _check_target_modules(base: str, names: list[str]) -> None:
    """Raise before any work unless every name in ``names`` is a module of ``base`` (built on the meta device from its
    config: no weights are read)."""
    import torch
    from transformers import AutoConfig

    from hubstyle.models import auto_model_class
    from hubstyle.train import target_modules_for

    config = AutoConfig.from_pretrained(base, trust_remote_code=remote_code_allowed())
    with torch.device("meta"):
        skeleton = auto_model_class(config).from_config(config)
    target_modules_for(skeleton, names)


def _check_prompt_files(cfg: RunConfig) -> None:
    """Raise before any work when an evaluation prompt file is missing or holds no prompt."""
    from hubstyle.evaluate.prompts import load_demo_prompts, load_prompts

    load_prompts(cfg.evaluation.prompts)
    load_demo_prompts(cfg.evaluation.demo_prompts)


def _check_chat_template(cfg: RunConfig, resolved) -> None:
    """Raise before any work when chat samples can't be rendered for this base (template 'model', none there)."""
    from hubstyle.chat import chat_format
    from hubstyle.models import load_tokenizer

    if resolved is not None:
        chat_format(load_tokenizer(resolved.path), cfg.chat.template)
    elif cfg.chat.template == "model":
        raise HubstyleError("the tiny base hubstyle pretrains has no chat template, and chat.template is 'model'; "
                            "set chat.template to 'auto' or 'plain' to use the plain 'Name: line' format")


def evaluate(
    cfg: RunConfig, layout: RunLayout, base: str, adapter: Path, data: StyleData,
    style_test: list[str], generic: Splits, log=print,
) -> dict:
    """Return the classifier, held-out loss, perplexity and style-rate sections; writes the demo table."""
    from hubstyle.evaluate.prompts import load_demo_prompts, load_prompts
    from hubstyle.evaluate.run import evaluate_run

    from hubstyle.memory import release_freed

    classifier, classifier_report = ensure_classifier(cfg, layout.classifier, data, generic, log)
    release_freed()  # the classifier's training freed ~1.5 GB of heap: give it back before loading the LM
    ev = cfg.evaluation
    log("evaluating base vs tuned (style rate, perplexity, demo table) ...")
    if is_seq2seq(base):  # each prompt is the encoder's input; losses on (input, target) pairs
        from hubstyle.evaluate.seq2seq import evaluate_seq2seq

        result = evaluate_seq2seq(
            base, str(adapter), classifier=classifier,
            prompts=load_prompts(ev.prompts), demo_prompts=load_demo_prompts(ev.demo_prompts),
            style_texts=style_test, generic_texts=generic.validation, target_style=cfg.style,
            out_dir=layout.evaluation, max_len=cfg.training.cutoff_len, max_new_tokens=ev.max_new_tokens,
            do_sample=ev.do_sample, temperature=ev.temperature, top_p=ev.top_p, seed=ev.seed,
            batch_size=ev.batch_size, max_pairs=ev.heldout_blocks,
        )
    else:
        result = evaluate_run(
            base, str(adapter), classifier=classifier,
            prompts=load_prompts(ev.prompts), demo_prompts=load_demo_prompts(ev.demo_prompts),
            style_texts=style_test, generic_texts=generic.validation, target_style=cfg.style,
            out_dir=layout.evaluation, max_new_tokens=ev.max_new_tokens, do_sample=ev.do_sample,
            temperature=ev.temperature, top_p=ev.top_p, seed=ev.seed, batch_size=ev.batch_size,
            block_size=cfg.training.cutoff_len, template=cfg.chat.template, chat=data.is_chat(),
            max_heldout_blocks=ev.heldout_blocks,
        )
    atomic_write(layout.demo_table, json.dumps(result.pop("demo_table"), indent=2))
    return {**result, "classifier": classifier_report, "demo_table": layout.demo_table.name}


def count_tokens_with(base: str, template: str = "auto"):
    """Return a function counting a sample's tokens with `base`'s tokenizer (a conversation as rendered)."""
    from hubstyle.chat import encode
    from hubstyle.models import load_tokenizer

    tokenizer = load_tokenizer(base)

    def count(item) -> int:
        if isinstance(item, str):
            return len(tokenizer(item, add_special_tokens=False, verbose=False)["input_ids"])
        return len(encode(item, tokenizer, template).ids)

    return count


def evaluate_adapter(cfg: RunConfig, adapter: str | Path, log=print) -> dict:
    """Return the evaluation metrics of an existing adapter on `cfg.base_model`; writes them under `cfg.output_dir`."""
    if not is_main_process():
        return {}  # evaluation is not distributed: under a multi-process launch one process evaluates and writes
    layout = RunLayout(cfg.out)
    _check_prompt_files(cfg)
    data = build_style_data(cfg, count_tokens_with(cfg.base_model))
    style_test = data.splits[cfg.style].test or data.splits[cfg.style].validation
    metrics = evaluate(cfg, layout, cfg.base_model, Path(adapter), data, style_test, generic_splits(cfg.generic_corpus, cfg.split.seed, cfg.split.segments), log)
    write_metrics(layout, {"schema": METRICS_SCHEMA, "run": {"base_model": cfg.base_model, "style": cfg.style}, **metrics})
    return metrics


def train_style_classifier(cfg: RunConfig, out_dir: str | Path, log=print) -> dict:
    """Return the report of a style classifier over `cfg`'s corpora plus the generic class, saved in `out_dir`."""
    if not is_main_process():
        return {}  # classifier training is not distributed: one process trains and writes it
    blocks = style_blocks(cfg)
    splits = {
        label: split_blocks(b, validation=cfg.split.validation, test=cfg.split.test, seed=cfg.split.seed, n_segments=cfg.split.segments)
        for label, b in blocks.items()
    }
    data = StyleData(splits=splits, train_texts={label: s.train for label, s in splits.items()})
    return ensure_classifier(cfg, Path(out_dir), data, generic_splits(cfg.generic_corpus, cfg.split.seed, cfg.split.segments), log)[1]


def write_metrics(layout: RunLayout, metrics: dict) -> Path:
    """Return the path of metrics.json after writing it atomically."""
    return atomic_write(layout.metrics, json.dumps(metrics, indent=2, default=str))


def side_by_side(base: str, adapter: str | Path, prompts: list[str], max_new_tokens: int = 40) -> list[tuple[str, str]]:
    """Return (base continuation, tuned continuation) per prompt, greedy: one batched mixed-adapter pass for an
    adapter, one pass per model for a whole trained model (``adapter`` is then its folder)."""
    from hubstyle.evaluate.pair import load_pair

    return load_pair(base, adapter).side_by_side(prompts, max_new_tokens=max_new_tokens)
