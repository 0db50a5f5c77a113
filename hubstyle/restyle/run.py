"""One command builds a restyler end to end, and resumes: train -> line-level style classifier -> evaluation on the
held-out play -> repo folder (bf16 weights, card). ``hubstyle restyler build CONFIG [--resume] [--ship DIR]``."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from hubstyle.layout import RESTYLER_FACTS, RunLayout
from hubstyle.loop import RESUME_FREE
from hubstyle.restyle.build import RestylerConfig, RestylerData, restyler_data, train_restyler

RESTYLER_PUBLISH = "restyler"  # DIR/publish/restyler: the restyler's repo folder
DISTILLED_PUBLISH = "distilled"  # DIR/publish/distilled: the distilled chat set's dataset repo folder; DIR/distilled
# holds the rows, the datasheet and the cached answers
PLAIN_REGISTER = "plain sides of the pairs"  # a register of the classifier's modern class
DECODING_SWEEP = "decoding_sweep.json"  # DIR/eval/: each decoding scored on never-trained lines (restyler tune)


TRAINING_KEYS = ("base_model", "style", "instruction", "pairs", "training")  # what the adapter's weights depend on


def trained_adapter(cfg: RestylerConfig) -> Path | None:
    """Return the adapter folder when it was trained with ``cfg``'s training keys (so the build skips training)."""
    facts_path = RunLayout(cfg.out).adapter / RESTYLER_FACTS
    if not facts_path.is_file():
        return None
    made = json.loads(facts_path.read_text(encoding="utf-8")).get("config") or {}
    now = json.loads(json.dumps(asdict(cfg), default=str))

    def weights_keys(config: dict) -> dict:  # settings that leave the weights unchanged (micro-batches, logging) aside
        training = {k: v for k, v in (config.get("training") or {}).items() if k not in RESUME_FREE}
        return {**{k: config.get(k) for k in TRAINING_KEYS}, "training": training}

    return facts_path.parent if weights_keys(made) == weights_keys(now) else None


def line_classifier(cfg: RestylerConfig, data: RestylerData, log: Callable[[str], None] = print) -> Path:
    """Return the folder of a style classifier that judges single lines (passages of 6-40 words), trained once per
    build folder: the styled sides of the training pairs (and the style's named corpus, if there is one) against
    modern English, whose registers include the plain sides of the pairs, so it judges the register, not the topic.
    Neither class sees the held-out play."""
    from hubstyle.data import load_corpus
    from hubstyle.data.sources import NAMED_CORPORA
    from hubstyle.data.splits import split_blocks
    from hubstyle.dataset import generic_splits, sample_text
    from hubstyle.evaluate.classifier import train_classifier
    from hubstyle.restyle.evaluate import LINE_PASSAGES

    if cfg.classifier.path:
        return Path(cfg.classifier.path)
    out = RunLayout(cfg.out).classifier
    if (out / "config.json").is_file():
        return out
    style_train = [p.target for p in data.train]
    style_heldout = [p.target for p in data.validation]
    if cfg.style in NAMED_CORPORA:
        corpus = split_blocks([sample_text(b) for b in load_corpus(cfg.style).blocks], validation=0.05, test=0.05, seed=0)
        style_train, style_heldout = style_train + corpus.train, style_heldout + corpus.test
    registers = {name: generic_splits(name) if name == "wikitext" else
                 split_blocks([sample_text(b) for b in load_corpus(name).blocks], validation=0.2, test=0.0, seed=0)
                 for name in cfg.classifier.other_corpora}
    other = cfg.classifier.other_label
    train = {cfg.style: style_train, other: {**{n: s.train for n, s in registers.items()},
                                             PLAIN_REGISTER: [p.source for p in data.train]}}
    heldout = {cfg.style: style_heldout, other: {**{n: s.validation for n, s in registers.items()},
                                                 PLAIN_REGISTER: [p.source for p in data.validation]}}
    log("training the line-level style classifier ...")
    report = train_classifier(train, heldout, out_dir=out, backbone=cfg.classifier.backbone,
                              epochs=cfg.classifier.epochs, max_per_class=cfg.classifier.max_per_class,
                              learning_rate=cfg.classifier.learning_rate, seed=0, **LINE_PASSAGES)
    log(f"line classifier: macro-F1 {report.macro_f1:.3f} on held-out passages of "
        f"{LINE_PASSAGES['min_words']}-{LINE_PASSAGES['max_words']} words")
    return out


def decoding_facts(cfg: RestylerConfig, data: RestylerData, log: Callable[[str], None] = print) -> dict:
    """Return the decoding a restyler's facts record: its style bias, the words a bias favours (kept with no bias
    too: ``restyle(text, style_bias=B)`` and the tuning sweep use them) and its beams."""
    from hubstyle.data.parallel import bias_words

    words = bias_words(data.train, cfg.bias_words)
    if cfg.style_bias and not words:
        log(f"style_bias {cfg.style_bias:g} is set, but the {len(data.train)} training pairs show no style word "
            "(each needs 15+ uses on the styled sides and none on the plain sides): decoding "
            + ("stays plain greedy" if cfg.num_beams == 1 else f"searches {cfg.num_beams} beams without a bias"))
    return {"style_bias": float(cfg.style_bias) if words else 0.0, "bias_words": words, "num_beams": int(cfg.num_beams)}


def write_decoding(adapter: Path, cfg: RestylerConfig, data: RestylerData,
                   log: Callable[[str], None] = print) -> None:
    """Record the decoding settings (``decoding_facts``) in the adapter's facts: they change the rewrites, not the
    weights, so a build with a new bias reuses the trained adapter."""
    path = adapter / RESTYLER_FACTS
    facts = json.loads(path.read_text(encoding="utf-8"))
    facts["decoding"] = decoding_facts(cfg, data, log)
    path.write_text(json.dumps(facts, indent=2, default=str), encoding="utf-8")


def build_restyler(cfg: RestylerConfig, *, resume: bool = False, ship: Path | None = None,
                   log: Callable[[str], None] = print) -> dict:
    """Return the restyler's evaluation after training (unless already trained with this config), judging and
    publishing it, and distilling the chat set through it, under ``cfg.output_dir``; ``ship`` also copies both repo
    folders there as ``restyler/`` and ``distilled/`` (the packaged copies, hubstyle/shipped)."""
    import shutil

    from hubstyle.evaluate.classifier import load_classifier
    from hubstyle.fsio import atomic_folder
    from hubstyle.restyle.evaluate import evaluate_restyler
    from hubstyle.restyle.model import load_restyler
    from hubstyle.restyle.publish import RESTYLER_EVAL, publish_restyler

    layout = RunLayout(cfg.out)
    adapter = trained_adapter(cfg)
    if adapter is None:
        adapter = train_restyler(cfg, resume=resume, log=log)
    else:
        log(f"restyler already trained with this config: {adapter}")
    data = restyler_data(cfg)
    classifier = load_classifier(line_classifier(cfg, data, log))
    write_decoding(adapter, cfg, data, log)
    restyler = load_restyler(adapter)
    log(f"evaluating on {min(cfg.eval_lines, len(data.held_out))} held-out lines ...")
    evaluation = evaluate_restyler(restyler, data.held_out, classifier=classifier, style=cfg.style,
                                   lines=cfg.eval_lines, run_length=cfg.eval_run_lines,
                                   compare_bias=cfg.compare_style_bias)
    sweep = layout.evaluation / DECODING_SWEEP
    if sweep.is_file():
        chosen_on = json.loads(sweep.read_text(encoding="utf-8"))
        if chosen_on.get("adapter_sha256") == weights_sha256(adapter):  # the same weights' sweep: the card shows it
            evaluation["decoding_sweep"] = chosen_on
    layout.evaluation.mkdir(parents=True, exist_ok=True)
    (layout.evaluation / RESTYLER_EVAL).write_text(json.dumps(evaluation, indent=2), encoding="utf-8")
    r, c = evaluation["restyler"], evaluation["copy"]
    for side, what in (("restyler_unbiased", "without the style bias"),
                       ("restyler_biased", f"with a style bias of {evaluation.get('compare_style_bias', 0):g}")):
        if side in evaluation:
            u = evaluation[side]
            log(f"{what}: BLEU {u['bleu']}, chrF {u['chrf']}, judged in style {u['style_rate']:.1%} (by passage "
                f"{u['passage_style_rate']['rate']:.1%}), source ranked first {u['source_rank']['top1']:.1%}")
    log(f"held-out {evaluation['lines']} lines (style bias {evaluation['style_bias']}): BLEU {r['bleu']} "
        f"(copy {c['bleu']}), chrF {r['chrf']} (copy {c['chrf']}), judged in style {r['style_rate']:.1%} "
        f"(copy {c['style_rate']:.1%}, Shakespeare {evaluation['reference']['style_rate']:.1%}), "
        f"source ranked first {r['source_rank']['top1']:.1%}")
    p, ref = r["passage_style_rate"], evaluation["reference"]["passage_style_rate"]
    log(f"judged in style by passage ({evaluation['passages']} passages of consecutive lines): {p['rate']:.1%} "
        f"(95% CI {p['low']:.1%}-{p['high']:.1%}; copy {c['passage_style_rate']['rate']:.1%}, "
        f"Shakespeare {ref['rate']:.1%})")
    def ship_folder(folder: Path) -> None:
        if ship is not None:
            with atomic_folder(Path(ship) / folder.name) as stage:
                shutil.copytree(folder, stage, dirs_exist_ok=True)
            log(f"shipped {folder.name} to {Path(ship) / folder.name}")

    # the restyler stands on its own: shipped before distilling, which may find nothing to keep
    ship_folder(publish_restyler(adapter, evaluation, layout.root / "publish" / RESTYLER_PUBLISH))
    if cfg.distill.enabled:
        from hubstyle.restyle.distill import distill
        from hubstyle.restyle.publish import publish_distilled

        distill(restyler, classifier, cfg.distill, layout.root / DISTILLED_PUBLISH, style=cfg.style, log=log)
        ship_folder(publish_distilled(layout.root / DISTILLED_PUBLISH, layout.root / "publish" / DISTILLED_PUBLISH,
                                      style=cfg.style, hubstyle_version=restyler.facts.get("hubstyle_version", "")))
    return evaluation


def weights_sha256(adapter: Path) -> str:
    """Return the sha256 of an adapter folder's weights file: which weights a decoding sweep scored."""
    from hubstyle.fsio import file_sha256
    from hubstyle.layout import ADAPTER_WEIGHTS

    return file_sha256(Path(adapter) / ADAPTER_WEIGHTS)


def tune_restyler(cfg: RestylerConfig, *, biases: list[float], beams: list[int],
                  log: Callable[[str], None] = print) -> dict:
    """Return the decoding sweep of ``cfg``'s trained restyler: every style bias with every beam count, scored on
    the tuning pairs (lines of the training plays never trained on), never on the held-out play; written to
    DIR/eval/decoding_sweep.json, which the next build puts in the card."""
    from hubstyle.errors import HubstyleError
    from hubstyle.evaluate.classifier import load_classifier
    from hubstyle.restyle.evaluate import decoding_sweep
    from hubstyle.restyle.model import load_restyler

    adapter = trained_adapter(cfg)
    if adapter is None:
        raise HubstyleError(f"no restyler trained with this config under '{cfg.out}'; run hubstyle restyler build first")
    data = restyler_data(cfg)
    classifier = load_classifier(line_classifier(cfg, data, log))
    restyler = load_restyler(adapter)
    restyler.facts["decoding"] = decoding_facts(cfg, data, log)  # the words each swept bias favours
    words = restyler.facts["decoding"]["bias_words"]
    if any(biases) and not words:
        raise HubstyleError("the training pairs show no style word to bias toward; sweep --bias 0 only")
    extra = len(data.tuning) - len(data.validation)
    on = (f"the {len(data.validation)} validation pairs" + (f" and {extra} lines that bring in no style word" if extra
                                                             else "")
          + ": lines of the training plays, never trained on" + (", in the plays' own mix" if extra else ""))
    log(f"scoring {len(biases) * len(beams)} decodings on {on} ...")
    sweep = decoding_sweep(restyler, data.tuning, classifier=classifier, style=cfg.style, biases=biases,
                           beams=beams, log=log)
    sweep = {"on": on, "adapter_sha256": weights_sha256(adapter), "bias_words": words, **sweep}
    layout = RunLayout(cfg.out)
    layout.evaluation.mkdir(parents=True, exist_ok=True)
    (layout.evaluation / DECODING_SWEEP).write_text(json.dumps(sweep, indent=2), encoding="utf-8")
    return sweep
