"""The sections of a model card: run facts -> the variables a card template renders (common facts, results and
model-index entries, training, the classifier, pretraining, the blend sweep, the demo table), and the Markdown cell
helpers they write with. ``hubstyle.card`` assembles them into whole cards."""

from __future__ import annotations

import json
import math
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from hubstyle.errors import HubstyleError
from hubstyle.facts import Dataset, RunFacts, load_decoding
from hubstyle.layout import (
    CONFUSION_FILE,
    DEMO_TABLE,
    LOSS_HISTORY,
    LOSS_PLOT,
    TRAINING_FACTS,
)
from hubstyle.repo_ids import check_repo_id

if TYPE_CHECKING:
    from hubstyle.card import RepoIds

HUB_URL = "https://huggingface.co"
# hubstyle is not on PyPI (and its name there is not ours): cards install it from its repository.
REPOSITORY_URL = "https://github.com/OWNER/hubstyle"
INSTALL_COMMAND = f'pip install "hubstyle @ git+{REPOSITORY_URL}"'
UNKNOWN_DATASET = "unknown"  # model-index dataset type of data no Hub dataset holds (setfit's convention)
NOT_MEASURED = "not measured"  # a figure the run's evaluation did not record (older hubstyle, no style text)
TINY_PARAMS = 100_000_000  # below this the card warns that continuations are imitations, not coherent text
WIDGET_EXAMPLES = 5  # demo prompts a chat model's card offers in the Hub's widget


# --------------------------------------------------------------------------------------------------- sections


_QUANT_WORDS = {"4bit": "4-bit (nf4)", "8bit": "8-bit"}
_ARCHITECTURE_KEYS = (
    "model_type", "n_layer", "num_hidden_layers", "n_embd", "hidden_size", "n_head", "num_attention_heads",
    "n_positions", "max_position_embeddings", "vocab_size", "tie_word_embeddings",
)


def _base_id(ids: RepoIds, *, published_here: bool = False) -> str:
    """Return the base model's Hub id; one hubstyle publishes itself (the pretrained base) needs a namespace."""
    if ids.base is None:
        raise HubstyleError(
            "RepoIds.base is None; set it to the base model's Hub repo id (build_publish_folders fills it from the "
            "run when the base is already on the Hub)"
        )
    return check_repo_id(ids.base, "base model", namespace_required=published_here)


def _common(facts: RunFacts, ids: RepoIds) -> dict[str, Any]:
    style = facts.run.style
    chat = facts.training.chat_format == "model"  # answers in the base's chat template: usage goes through it
    seq2seq = facts.training.task_type == "SEQ_2_SEQ_LM"  # T5 & co: the prompt is the encoder's input
    answers = chat or seq2seq
    return {
        "style": style,
        "style_title": style.replace("_", " ").replace("-", " ").title(),
        "base_model": _base_id(ids) if ids.base else "",
        "hub_url": HUB_URL,
        "adapter_repo": ids.adapter,
        "merged_repo": ids.merged,
        "classifier_repo": ids.classifier,
        "space_repo": ids.space,
        "has_space": not seq2seq,  # the Space runtime serves causal LMs (hubstyle.release.skipped_parts)
        "hubstyle_version": facts.run.hubstyle_version,
        "run_name": facts.run.name,
        "created": facts.run.created,
        "weights_note": _weights_note(facts),
        "install_command": INSTALL_COMMAND,
        "chat": chat,
        "seq2seq": seq2seq,
        "answers": answers,
        "auto_class": "AutoModelForSeq2SeqLM" if seq2seq else "AutoModelForCausalLM",
        "generations": "answers" if answers else "continuations",
        "generation": "answer" if answers else "continuation",
    }


def _weights_note(facts: RunFacts) -> str:
    """Return the sentence saying which base weights were trained and measured on, when they were not the Hub's."""
    weights = facts.run.base_weights
    if weights.source != "gguf-wheel":
        return ""
    missing = [k for k in ("gguf_file", "gguf_sha256") if not getattr(weights, k)]
    if missing:
        raise HubstyleError(f"the run's facts have no 'run.base_weights.{missing[0]}', which the card's note on the "
                            "dequantized base weights needs; re-run training to record it")
    return (
        f"Trained and measured on weights dequantized from a {weights.dequantized_from or 'GGUF'} "
        f"(`{weights.gguf_file}`, sha256 `{weights.gguf_sha256[:12]}…`), not on the original Hub weights: the "
        "adapter works on the original weights the way a QLoRA adapter does, and its numbers there may differ "
        "slightly."
    )


def _widget(facts: RunFacts, table: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """Return the metadata's widget examples: a chat model's demo prompts, each as a user's turn (``messages``, which
    the Hub renders through the model's chat template); None for a model that continues text or chats in the plain
    `Name: line` format, which has no template to render them."""
    if facts.training.chat_format != "model":
        return None
    rows = table.get("rows") if isinstance(table, Mapping) else None
    prompts = [str(row["prompt"]) for row in rows or [] if isinstance(row, Mapping) and row.get("prompt")]
    return [{"messages": [{"role": "user", "content": prompt}]} for prompt in prompts[:WIDGET_EXAMPLES]] or None


def hub_datasets(facts: RunFacts, ids: RepoIds) -> list[str] | None:
    """Return the Hub datasets the run trained on: RepoIds.datasets (else the corpora's), then RepoIds.dataset."""
    found = (list(ids.datasets) or [d.hub_id for d in facts.data.corpora if d.hub_id]) + [ids.dataset]
    return list(dict.fromkeys(filter(None, found))) or None


def _results(facts: RunFacts, card: str) -> dict[str, Any]:
    rate = facts.need("style_rate", card, "results")
    ppl = facts.need("perplexity", card, "results")
    answers = facts.need("answers", card, "results")
    rows = []
    for part, label in (("style", "held-out style text"), ("generic", "generic text")):
        pair = getattr(ppl, part)
        rows.append({"part": part, "label": label, "base": f"{pair.base:.2f}", "tuned": f"{pair.tuned:.2f}"})
    floor = answers.tuned.relevance.floor
    return {
        "target": rate.target,
        "n_prompts": rate.n_prompts,
        "prompt_set": rate.prompt_set,
        "decoding": rate.decoding.words(),
        "rate_base": _rate_text(rate.base),
        "rate_tuned": _rate_text(rate.tuned),
        "relevance_base": _relevance_text(answers.base),
        "relevance_tuned": _relevance_text(answers.tuned),
        "relevance_floor": f"{floor:g}",
        "relevance_reference": _or_not_measured(_relevance_text, answers.reference),
        "rank_base": _rank_text(answers.base),
        "rank_tuned": _rank_text(answers.tuned),
        "rank_reference": _or_not_measured(_rank_text, answers.reference),
        "fluency_base": _fluency_text(answers.base),
        "fluency_tuned": _fluency_text(answers.tuned),
        "fluency_reference": _or_not_measured(_fluency_text, answers.reference),
        "ppl_style": rows[0],
        "ppl_generic": rows[1],
        "generic_corpus": facts.data.generic.source,
    }


def _rate_text(rate) -> str:
    return f"{rate.rate:.0%} ({rate.successes}/{rate.n}; 95% CI {rate.low:.0%}–{rate.high:.0%})"


def _relevance_text(stats) -> str:
    r = stats.relevance
    return f"{r.mean:.3f} (95% CI {r.low:.3f}–{r.high:.3f}); {r.below_floor:.0%} under {r.floor:g}"


def _fluency_text(stats) -> str:
    return f"{stats.length.mean_words:.1f}; {stats.distinct_2:.2f}"


def _rank_text(stats) -> str:
    r = stats.prompt_rank
    return NOT_MEASURED if r is None else f"{r.top1:.0%}; {r.mrr:.3f}"


def _or_not_measured(text, stats) -> str:
    """Return ``text(stats)``, or the words for a figure the run did not measure (evaluated by an older hubstyle)."""
    return NOT_MEASURED if stats is None else text(stats)


def _lm_eval_results(facts: RunFacts, card: str) -> list:
    """Return the model-index: this model's style rate, relevance and prompt rank on the prompt set, and its held-out
    perplexities on corpora that are Hub datasets (the base model's figures stay in the card's text)."""
    from huggingface_hub import EvalResult

    section = "model-index"
    rate = facts.need("style_rate", card, section)
    answers = facts.need("answers", card, section)
    ppl = facts.need("perplexity", card, section)
    prompts = dict(
        task_type="text-generation",
        task_name="Style transfer",
        dataset_type=UNKNOWN_DATASET,  # hubstyle's own prompt set is no Hub dataset
        dataset_name=f"{rate.n_prompts} modern prompts ({rate.prompt_set})",
    )
    tuned, relevance, rank = rate.tuned, answers.tuned.relevance, answers.tuned.prompt_rank
    results = [
        EvalResult(**prompts, metric_type="style_rate",
                   metric_name=f"Style rate: share judged '{rate.target}' (95% CI {tuned.low:.2f}-{tuned.high:.2f})",
                   metric_value=_round(tuned.rate)),
        EvalResult(**prompts, metric_type="relevance",
                   metric_name=f"Relevance: mean prompt-answer cosine, MiniLM-L6 (95% CI {relevance.low:.2f}-"
                               f"{relevance.high:.2f})",
                   metric_value=_round(relevance.mean)),
    ]
    if rank is not None:  # runs evaluated before hubstyle measured prompt rank have none to list
        n = rate.n_prompts
        results += [
            EvalResult(**prompts, metric_type="prompt_rank_top1",
                       metric_name=f"Prompt rank top-1: share of answers whose own prompt ranks first of {n} "
                                   "(MiniLM-L6)",
                       metric_value=_round(rank.top1)),
            EvalResult(**prompts, metric_type="prompt_rank_mrr",
                       metric_name=f"Prompt rank MRR: mean reciprocal rank of each answer's own prompt of {n} "
                                   "(MiniLM-L6)",
                       metric_value=_round(rank.mrr)),
        ]
    for corpora, split, value in (
        (facts.style_corpora(), facts.data.style_split, ppl.style.tuned),
        ([facts.data.generic], facts.data.generic_split, ppl.generic.tuned),
    ):
        dataset = _hub_dataset(corpora, split)
        if dataset is not None:
            results.append(EvalResult(**dataset, metric_type="perplexity", metric_name="Perplexity",
                                      metric_value=_round(value)))
    return results


def _hub_dataset(corpora: Sequence[Dataset], split: str) -> dict[str, Any] | None:
    """Return the model-index dataset fields of held-out text from ``corpora``, or None unless it is one Hub dataset."""
    if len(corpora) != 1 or not corpora[0].hub_id:
        return None
    corpus = corpora[0]
    return dict(
        task_type="text-generation",
        task_name="Language modelling",
        dataset_type=corpus.hub_id,
        dataset_config=corpus.hub_config,
        dataset_name=f"{corpus.source}: hubstyle's held-out {split} segments",
        dataset_split=split,
    )


def _demo(table: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(table, Mapping):
        raise HubstyleError(f"{DEMO_TABLE} must be a JSON object with 'rows'; got {type(table).__name__}")
    rows = table.get("rows")
    if not rows or not isinstance(rows, list):
        raise HubstyleError(f"{DEMO_TABLE} has no 'rows', which the card's demo section needs; re-run evaluate")
    for i, row in enumerate(rows):
        missing = [k for k in ("prompt", "base", "tuned") if not isinstance(row, Mapping) or row.get(k) is None]
        if missing:
            raise HubstyleError(f"{DEMO_TABLE} row {i} has no '{missing[0]}'; each row needs prompt, base and tuned")
    if not isinstance(table.get("decoding"), Mapping):
        raise HubstyleError(f"{DEMO_TABLE} has no 'decoding', which the card's demo section needs; re-run evaluate")
    return {
        "demo_table": demo_table_markdown(table).rstrip("\n"),
        "demo_decoding": load_decoding(table["decoding"], DEMO_TABLE).words(),
        "example_prompt": json.dumps(str(rows[0]["prompt"]), ensure_ascii=False),
        "demo_file": DEMO_TABLE,
    }


def _training(facts: RunFacts, card: str) -> dict[str, Any]:
    t = facts.training
    if t.final_train_loss is None:
        raise HubstyleError(f"the run's facts have no 'training.final_train_loss', which the {card} card's training "
                            "section needs; re-run training")
    hyperparameters = [{"name": k, "value": _cell(v)} for k, v in t.hyperparameters.items() if v is not None]
    if not hyperparameters:
        raise HubstyleError(f"the run's facts have no 'training.hyperparameters', which the {card} card's training "
                            "section needs; re-run training")
    if t.target_modules is not None:
        hyperparameters.append({"name": "target_modules (resolved)", "value": _cell(t.target_modules)})
    if not facts.data.styles:
        raise HubstyleError(f"the run's facts have no 'data.styles', which the {card} card's training data table "
                            "needs; re-run training")
    data_rows = [
        {"label": _cell(label), "train": _int(s.train), "validation": _int(s.validation), "test": _int(s.test)}
        for label, s in facts.data.styles.items()
    ]
    return {
        "method": t.method,
        "trained_on": (
            f"a {_QUANT_WORDS.get(t.quantization, t.quantization)} quantized copy of the base"
            if t.quantization else "the full-precision base"
        ),
        "trainable_params": _int(t.trainable_params),
        "total_params": _int(t.total_params),
        "trainable_share": f"{t.trainable_params / t.total_params:.2%}" if t.total_params else "n/a",
        "train_tokens": _int(t.train_tokens),
        "steps": _int(t.steps),
        "seconds": f"{t.seconds:.1f}",
        "tokens_per_second": _int(round(t.tokens_per_second)),
        "bf16": "bf16 autocast" if t.bf16 else "float32",
        "final_train_loss": f"{t.final_train_loss:.3f}",
        "final_val_loss": f"{t.final_val_loss:.3f}" if t.final_val_loss is not None else "not measured",
        "hyperparameters": hyperparameters,
        "data_rows": data_rows,
        "loss_plot": LOSS_PLOT,
        "loss_history_file": LOSS_HISTORY,
        "training_facts_file": TRAINING_FACTS,
        "model_size": _size_words(t.total_params),
        "tiny_model": t.total_params < TINY_PARAMS,
    }


def _classifier_summary(facts: RunFacts, card: str) -> dict[str, Any]:
    c = facts.need("classifier", card, "style classifier")
    labels = c.labels
    if len(labels) < 2:
        raise HubstyleError(f"the run's 'classifier.labels' is {labels!r}; the classifier needs at least two labels")
    unknown = sorted(set(c.per_class) - set(labels))
    if unknown:
        raise HubstyleError(f"the run's 'classifier.per_class' has '{unknown[0]}', which is not in 'classifier.labels' "
                            f"{labels}")
    missing = [label for label in labels if label not in c.per_class]
    if missing:
        raise HubstyleError(f"the run's facts have no 'classifier.per_class.{missing[0]}', which the {card} card's "
                            "style classifier table needs; re-train the classifier")
    class_rows = [
        {"label": _cell(label), **{k: f"{getattr(c.per_class[label], k):.3f}" for k in ("precision", "recall", "f1")}}
        for label in labels
    ]
    matrix = c.confusion_matrix
    if len(matrix) != len(labels) or any(len(row) != len(labels) for row in matrix):
        raise HubstyleError(
            f"the run's 'classifier.confusion_matrix' must be {len(labels)}x{len(labels)} (one row per label), "
            f"got {matrix!r}"
        )
    backbone_id = _hub_id_or_none(c.backbone)
    return {
        "labels": labels,
        "labels_text": ", ".join(f"`{x}`" for x in labels),
        "accuracy": f"{c.accuracy:.3f}",
        "macro_f1": f"{c.macro_f1:.3f}",
        "n_heldout": _int(c.n_heldout),
        "class_rows": class_rows,
        "matrix_header": " | ".join(_cell(x) for x in labels),
        "matrix_rule": " | ".join("---:" for _ in labels),
        "matrix_rows": [
            {"label": _cell(label), "cells": " | ".join(_int(v) for v in row)} for label, row in zip(labels, matrix)
        ],
        "confusion_plot": CONFUSION_FILE,
        "backbone": backbone_id or "/".join(Path(c.backbone).parts[-2:]),
        "backbone_id": backbone_id or "",
        "speaker_vs_others": _speaker_vs_others(c.speaker_vs_others),
        "registers_text": _classifier_registers(c.registers),
        "pairs_note": _pairs_note(c.pairs, c.pairs_held_out_play),
    }


def _speaker_vs_others(v) -> str:
    """Return the sentence on a speaker run's classifier told against the text's other speakers ("" otherwise)."""
    if v is None:
        return ""
    trusted = ("high enough for the style rate to mean this character" if v.macro_f1 >= 0.8 else
               "too low to read the style rate as this character's voice: it mostly says 'this text', not 'this speaker'")
    return (f"This is a speaker run: the style is one character, so the classifier also learned the other speakers "
            f"of the same text (`{v.against}`). Told apart from them alone, `{v.target}` gets macro-F1 "
            f"**{v.macro_f1:.3f}** (accuracy {v.accuracy:.3f}, F1 {v.f1_target:.3f} for `{v.target}` and "
            f"{v.f1_against:.3f} for the others, on {v.n} held-out passages): {trusted}.")


_PRETRAIN_KEYS = (
    "pretrain", "pretrain_corpus", "pretrain_params", "pretrain_size", "pretrain_vocab", "pretrain_tokens",
    "pretrain_steps", "pretrain_seconds", "pretrain_tps", "pretrain_val_loss", "pretrain_val_ppl",
    "pretrain_bigram_loss", "pretrain_bigram_ppl", "pretrain_gain", "pretrain_beats_bigram", "base_repo",
)


def _pretrain(facts: RunFacts, ids: RepoIds, *, card: str, required: bool) -> dict[str, Any]:
    if not required and facts.pretrain is None:
        return dict.fromkeys(_PRETRAIN_KEYS)  # optional section, absent: the template skips it on `pretrain`
    p = facts.need("pretrain", card, "pretraining")
    val, bigram = p.val_loss, p.bigram_val_loss
    return {
        "pretrain": True,
        "pretrain_corpus": p.corpus.source,
        "pretrain_params": _int(p.n_params),
        "pretrain_size": _size_words(p.n_params),
        "pretrain_vocab": _int(p.vocab_size),
        "pretrain_tokens": _int(p.train_tokens),
        "pretrain_steps": _int(p.steps),
        "pretrain_seconds": f"{p.seconds:.1f}",
        "pretrain_tps": _int(round(p.tokens_per_second)),
        "pretrain_val_loss": f"{val:.3f}",
        "pretrain_val_ppl": f"{math.exp(val):.1f}",
        "pretrain_bigram_loss": f"{bigram:.3f}",
        "pretrain_bigram_ppl": f"{math.exp(bigram):.1f}",
        "pretrain_gain": f"{bigram - val:+.3f}",
        "pretrain_beats_bigram": val < bigram,
        "base_repo": _base_id(ids),
    }


def _blend_sweep(facts: RunFacts) -> dict[str, Any]:
    style = facts.run.style
    rows = []
    for i, point in enumerate(facts.blend_sweep):
        if style not in point.per_class:
            raise HubstyleError(f"the run's facts have no 'blend_sweep.{i}.per_class.{style}', which the adapter "
                                "card's blend table needs; record the sweep with card_points(sweep, style)")
        rows.append({
            "weight": f"{point.weight:.2f}",
            "share": f"{point.per_class[style]:.0%}",
            "style_ppl": f"{point.style_perplexity:.2f}",
            "generic_ppl": f"{point.generic_perplexity:.2f}",
        })
    return {"blend_rows": rows}


# --------------------------------------------------------------------------------------------------- cells


def markdown_cell(text: str) -> str:
    """Return ``text`` safe inside a Markdown table cell: pipes escaped, newlines as <br>, never empty.

    Control characters are dropped: a small model's byte-level tokens can decode to NUL and friends, and a
    README holding them is a binary file the Hub refuses as a plain (non-LFS) upload.
    """
    text = "".join(ch for ch in str(text) if ch in "\n\r\t" or unicodedata.category(ch) != "Cc")
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "<br>")
    return text.strip() or "*(empty)*"


def demo_table_markdown(table: dict[str, Any]) -> str:
    """Return the demo table (``demo_table.json``) as a Markdown table (Prompt | Base model | Tuned (adapter))."""
    adapter = markdown_cell(table.get("adapter", "adapter"))
    lines = [f"| Prompt | Base model | Tuned ({adapter}) |", "| --- | --- | --- |"]
    for row in table["rows"]:
        cells = (markdown_cell(row[key]) for key in ("prompt", "base", "tuned"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _round(value: float) -> float:
    return round(float(value), 4)


def _int(value: float) -> str:
    return f"{int(value):,}"


def _cell(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        value = ", ".join(str(v) for v in value)
    elif isinstance(value, dict):
        value = json.dumps(value, sort_keys=True)
    return markdown_cell(str(value))


def _size_words(n_params: float) -> str:
    n = float(n_params)
    if n >= 1e9:
        return f"{n / 1e9:.1f}B"
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    return f"{n / 1e3:.0f}K"


def _hub_id_or_none(name: str) -> str | None:
    try:
        return check_repo_id(name, namespace_required=False)  # a backbone may be e.g. 'distilbert-base-uncased'
    except HubstyleError:
        return None


def _classifier_registers(registers) -> str:
    """Return the card's paragraph and table of held-out accuracy by register (a corpus, or one side of parallel
    pairs), or ''."""
    if not registers:
        return ""
    rows = [f"| {_cell(name)} | {_cell(r.label)} | {_int(r.n_train)} | {_int(r.n)} | {r.accuracy:.3f} |"
            for name, r in registers.items()]
    return "\n".join([
        "By register: the passages each source gave to training and to the held-out set, and the share of its "
        "held-out passages given its class's label. A register marked (styled) or (plain) is one side of parallel "
        "line pairs, the same lines in both classes: its score says whether the classifier judges the register "
        "rather than the topic.", "",
        "| register | class | trained on | held out | accuracy |", "| --- | --- | ---: | ---: | ---: |", *rows,
    ])


def _pairs_note(pairs: str | None, play: str | None) -> str:
    """Return the card's sentences on the parallel pairs the classifier learned from, where its pair registers were
    scored, and the pairs' licence; or ''."""
    if not pairs:
        return ""
    from hubstyle.data.parallel import DATA_NOTES, HELD_OUT_PLAYS

    name = pairs if pairs in DATA_NOTES else Path(pairs).name
    scored = (f"{HELD_OUT_PLAYS[play].name}, a play it never saw" if play in HELD_OUT_PLAYS
              else "the last pairs of the file, which it never saw")
    return (f"It also learned from the line pairs of `{name}`: each styled line in the style's class, its plain "
            "paraphrase in the other, so that the same content sits in both classes and only the register tells them "
            f"apart. Its (styled) and (plain) registers are scored on {scored}. "
            + DATA_NOTES.get(pairs, "Check the pairs' licence before publishing."))


def _classifier_robustness(augment: float | None, disfluent) -> str:
    """Return the card's sentence on disfluent training copies and the held-out score on disfluent text, or ''."""
    parts = []
    if augment:
        parts.append(
            f"The count includes disfluent copies of {augment:.0%} of the clean passages (words swapped, dropped, "
            "repeated or spliced, stray punctuation, cut mid-word), with the same label, so that a small model's "
            "word salad is judged by its vocabulary and spelling, not taken for archaic style because it is disfluent."
        )
    if disfluent is not None:
        parts.append(f"On disfluent copies of the held-out passages: accuracy {disfluent.accuracy:.3f}, "
                     f"macro-F1 {disfluent.macro_f1:.3f}.")
    return " ".join(parts)


_GGUF_WHAT = {"f16": "the merged model in 16-bit floats: closest to the original",
              "q8_0": "the merged model in 8-bit blocks: about half the size"}


def _megabytes(n_bytes: int | None) -> str:
    if n_bytes is None:
        raise HubstyleError("a GGUF export report has no file size; export the file again")
    return f"{n_bytes / 1e6:,.1f} MB" if n_bytes >= 1e6 else f"{n_bytes / 1e3:,.1f} kB"


def _plot_title(path: str) -> str:
    return Path(path).stem.replace("_", " ").capitalize()
