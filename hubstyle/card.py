"""Model cards: pure functions from a run's facts (``hubstyle.facts.RunFacts``), its demo table and repo ids to
``huggingface_hub.ModelCard``.

Metadata is built with ``ModelCardData`` and ``EvalResult`` (never hand-written YAML); the Markdown body comes from
the Jinja templates in the repository's top-level ``model_cards/`` folder, rendered by ``ModelCard.from_template``.
A fact a section needs but the run did not record is a one-line ``HubstyleError`` naming it: a card never drops a
section quietly. Only sections that are optional by nature (the pretraining of a local base, a blend sweep, extra
evaluation plots) are left out when their facts are absent.

The model-index holds this model's numbers only; the base model's figures are in the card's text and tables. A
result's dataset is the Hub dataset the data is (``hubstyle.data.sources.NAMED_CORPORA`` names them); data no Hub
dataset holds, like hubstyle's prompt set, is ``unknown``, as setfit and sentence-transformers write it. A held-out
perplexity on a corpus without a Hub id is left out of the model-index (two ``unknown`` datasets would merge into one
entry there) and stays in the results table.

Nothing here reads the clock or the file system (except the templates, and whether a repo id is an existing
folder), so the same facts give the same bytes.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from hubstyle.errors import HubstyleError
from hubstyle.facts import Dataset, RunFacts, load_decoding
from hubstyle.layout import (
    CONFUSION_FILE,
    DEMO_TABLE,
    LOSS_HISTORY,
    LOSS_PLOT,
    METRICS,
    PRETRAIN_REPORT,
    TRAINING_FACTS,
)
from hubstyle.repo_ids import check_repo_id

if TYPE_CHECKING:
    from huggingface_hub import ModelCard

    from hubstyle.export import ExportReport

CARD_TEMPLATES = {kind: f"{kind}.md" for kind in ("adapter", "merged", "classifier", "base", "gguf", "full", "restyler",
                                                  "distilled", "dataset")}  # dataset: hubstyle.dataset_repo
# Methods that train the whole model: no adapter; the trained model itself is published (in the merged repo).
WHOLE_MODEL_METHODS = {"full": "full fine-tune", "freeze_attention": "freeze-attention fine-tune"}
TEMPLATES_PACKAGE = "hubstyle.model_cards"  # where a wheel ships model_cards/ (see card_template)
HUB_URL = "https://huggingface.co"
# hubstyle is not on PyPI (and its name there is not ours): cards install it from its repository.
REPOSITORY_URL = "https://github.com/OWNER/hubstyle"
INSTALL_COMMAND = f'pip install "hubstyle @ git+{REPOSITORY_URL}"'
UNKNOWN_DATASET = "unknown"  # model-index dataset type of data no Hub dataset holds (setfit's convention)
DEFAULT_LICENSE = "mit"
DEFAULT_LANGUAGE = "en"
NOT_MEASURED = "not measured"  # a figure the run's evaluation did not record (older hubstyle, no style text)
TINY_PARAMS = 100_000_000  # below this the card warns that continuations are imitations, not coherent text
WIDGET_EXAMPLES = 5  # demo prompts a chat model's card offers in the Hub's widget

_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")



@dataclass(frozen=True)
class RepoIds:
    """The Hub repos one run publishes to, and how they are labelled (license, language, training datasets).

    ``base`` is the base model's repo id: the repo hubstyle publishes a locally pretrained base to ('namespace/name'),
    or the Hub id the run started from (any Hub id, e.g. 'gpt2'). ``None`` means "the run's base is already a Hub
    id; use that" (see ``with_base``). The other repos are created by hubstyle, so they need 'namespace/name'.
    """

    adapter: str
    merged: str
    classifier: str
    space: str
    base: str | None = None
    license: str = DEFAULT_LICENSE
    language: str = DEFAULT_LANGUAGE
    datasets: tuple[str, ...] = ()
    gguf: str | None = None  # the GGUF repo (llama.cpp / Ollama files of the merged model)
    dataset: str | None = None  # the run's own training set as a dataset repo; None: not published (cards omit it)

    def __post_init__(self) -> None:
        for role in ("adapter", "merged", "classifier", "space", "gguf", "dataset"):  # the last two may be None
            if getattr(self, role) is not None or role not in ("gguf", "dataset"):
                check_repo_id(getattr(self, role), f"RepoIds.{role}")
        if self.base is not None:  # may name a model hubstyle did not make, e.g. the legacy Hub id 'gpt2'
            check_repo_id(self.base, "RepoIds.base", namespace_required=False)
        for role in ("license", "language"):
            if not getattr(self, role):
                raise HubstyleError(f"RepoIds.{role} is empty; give e.g. license='mit', language='en'")
        if isinstance(self.datasets, str):
            object.__setattr__(self, "datasets", (self.datasets,))

    def with_base(self, base: str) -> "RepoIds":
        """Return a copy whose ``base`` is ``base`` (a Hub repo id)."""
        from dataclasses import replace

        return replace(self, base=base)


# --------------------------------------------------------------------------------------------------- cards


def adapter_card(
    facts: RunFacts,
    ids: RepoIds,
    demo_table: Mapping[str, Any],
    *,
    eval_plots: Sequence[str] = (),
    manifest: str | None = None,
    logs: str | None = None,
) -> "ModelCard":
    """Return the style adapter's card: metadata, results, demo table, training, classifier, usage, limitations.

    ``eval_plots`` are extra image paths (relative to the repo folder) shown under the results; ``manifest`` is the
    run manifest's file in the repo folder (`hubstyle run`'s run.json), cited in the training section; ``logs`` is the
    repo folder of the run's TensorBoard logs (hubstyle.tracking), named there too.
    """
    from huggingface_hub import ModelCardData

    base = _base_id(ids)
    style = facts.run.style
    model_name = ids.adapter.split("/")[-1]
    method = facts.training.method
    if method not in ("lora", "qlora"):
        raise HubstyleError(
            f"the run's training.method is '{method}': that run trained the whole model, not an adapter; "
            "publish it as a merged/full model instead"
        )
    tags = ["hubstyle", "lora", "style-transfer", style, "text-generation"] + (["qlora"] if method == "qlora" else [])
    tags += ["tensorboard"] if logs else []
    data = ModelCardData(
        base_model=base,
        base_model_relation="adapter",
        library_name="peft",
        pipeline_tag="text-generation",
        tags=tags,
        datasets=hub_datasets(facts, ids),
        license=ids.license,
        language=ids.language,
        model_name=model_name,
        eval_results=_lm_eval_results(facts, "adapter"),
        widget=_widget(facts, demo_table),
    )
    kwargs = {
        **_common(facts, ids),
        **_results(facts, "adapter"),
        **_demo(demo_table),
        **_training(facts, "adapter"),
        **_classifier_summary(facts, "adapter"),
        **_pretrain(facts, ids, card="adapter", required=False),
        **_blend_sweep(facts),
        "repo_id": ids.adapter,
        "eval_plots": [{"path": p, "title": _plot_title(p)} for p in eval_plots],
        "manifest_file": manifest,
        "logs_dir": logs,
    }
    return _render("adapter", data, kwargs)


def merged_card(
    facts: RunFacts, ids: RepoIds, demo_table: Mapping[str, Any], *, manifest: str | None = None
) -> "ModelCard":
    """Return the card of the adapter merged into its base: a plain transformers model with the same results
    (``manifest``: the run manifest's file in the repo folder, cited in the training section)."""
    from huggingface_hub import ModelCardData

    base = _base_id(ids)
    style = facts.run.style
    model_name = ids.merged.split("/")[-1]
    quantization = facts.training.quantization
    data = ModelCardData(
        base_model=base,
        base_model_relation="merge",
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=["hubstyle", "lora", "style-transfer", style, "text-generation", "merged"],
        datasets=hub_datasets(facts, ids),
        license=ids.license,
        language=ids.language,
        model_name=model_name,
        eval_results=_lm_eval_results(facts, "merged"),
        widget=_widget(facts, demo_table),
    )
    kwargs = {
        **_common(facts, ids),
        **_results(facts, "merged"),
        **_demo(demo_table),
        **_training(facts, "merged"),
        "repo_id": ids.merged,
        "quantized_training": _QUANT_WORDS.get(quantization, "") if quantization else "",
        "manifest_file": manifest,
    }
    return _render("merged", data, kwargs)


def full_card(
    facts: RunFacts,
    ids: RepoIds,
    demo_table: Mapping[str, Any],
    *,
    eval_plots: Sequence[str] = (),
    manifest: str | None = None,
) -> "ModelCard":
    """Return the card of a whole trained model (methods ``full`` and ``freeze_attention``), published in the merged
    repo: what was trained on which base, results measured against that base, demo table, three-line usage.

    ``eval_plots`` are image paths (relative to the repo folder) shown under the results; ``manifest`` is the run
    manifest's file in the repo folder, cited in the training section.
    """
    from huggingface_hub import ModelCardData

    base = _base_id(ids)
    method = facts.training.method
    if method not in WHOLE_MODEL_METHODS:
        raise HubstyleError(f"the run's training.method is '{method}', which trains an adapter; its merged repo gets "
                            "merged_card, and the adapter repo adapter_card")
    style = facts.run.style
    training = _training(facts, "full")
    # the LoRA settings ride along in every TrainingConfig; this run used none of them
    training["hyperparameters"] = [r for r in training["hyperparameters"] if not r["name"].startswith("lora_")]
    data = ModelCardData(
        base_model=base,
        base_model_relation="finetune",
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=["hubstyle", method.replace("_", "-"), "style-transfer", style, "text-generation"],
        datasets=hub_datasets(facts, ids),
        license=ids.license,
        language=ids.language,
        model_name=ids.merged.split("/")[-1],
        eval_results=_lm_eval_results(facts, "full"),
        widget=_widget(facts, demo_table),
    )
    kwargs = {
        **_common(facts, ids),
        **_results(facts, "full"),
        **_demo(demo_table),
        **training,
        **_classifier_summary(facts, "full"),
        **_pretrain(facts, ids, card="full", required=False),
        "repo_id": ids.merged,
        "method_name": WHOLE_MODEL_METHODS[method],
        "attention_frozen": method == "freeze_attention",
        "eval_plots": [{"path": p, "title": _plot_title(p)} for p in eval_plots],
        "manifest_file": manifest,
    }
    return _render("full", data, kwargs)


def classifier_card(facts: RunFacts, ids: RepoIds) -> "ModelCard":
    """Return the style classifier's card: labels, accuracy and macro-F1 (model-index), per-class table, confusion."""
    from huggingface_hub import EvalResult, ModelCardData

    style = facts.run.style
    model_name = ids.classifier.split("/")[-1]
    summary = _classifier_summary(facts, "classifier")
    clf = facts.need("classifier", "classifier", "evaluation")
    # held-out passages of every class: the styles' test segments and the modern registers' validation segments
    dataset = dict(
        task_type="text-classification",
        task_name="Style classification",
        dataset_type=UNKNOWN_DATASET,
        dataset_name=f"held-out passages of {', '.join(summary['labels'])} ({clf.n_heldout})",
    )
    results = [
        EvalResult(**dataset, metric_type="accuracy", metric_name="Accuracy", metric_value=_round(clf.accuracy)),
        EvalResult(**dataset, metric_type="f1", metric_name="Macro F1", metric_args={"average": "macro"},
                   metric_value=_round(clf.macro_f1)),
    ]
    backbone = summary["backbone_id"]
    data = ModelCardData(
        base_model=backbone or None,
        base_model_relation="finetune" if backbone else None,
        library_name="transformers",
        pipeline_tag="text-classification",
        tags=["hubstyle", "style-classifier", style, "text-classification"],
        datasets=hub_datasets(facts, ids),
        license=ids.license,
        language=ids.language,
        metrics=["accuracy", "f1"],
        model_name=model_name,
        eval_results=results,
    )
    kwargs = {
        **_common(facts, ids),
        **summary,
        "repo_id": ids.classifier,
        "metrics_file": METRICS,
        "n_train": _int(clf.n_train),
        "train_seconds": f"{clf.train_seconds:.1f}",
        "example_text": json.dumps("Tell me what news you bring from the city.", ensure_ascii=False),
        "robustness": _classifier_robustness(clf.augment, clf.disfluent),
    }
    return _render("classifier", data, kwargs)


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


def base_card(facts: RunFacts, ids: RepoIds, model_config: Mapping[str, Any]) -> "ModelCard":
    """Return the card of the tiny base hubstyle pretrained: size, pretraining, val loss vs the bigram baseline.

    ``model_config`` is the base folder's config.json (for the architecture table).
    """
    from huggingface_hub import EvalResult, ModelCardData

    repo = _base_id(ids, published_here=True)
    model_name = repo.split("/")[-1]
    pre = _pretrain(facts, ids, card="base", required=True)
    facts_pre = facts.need("pretrain", "base", "pretraining")
    corpus = facts_pre.corpus
    results = []
    if corpus.hub_id:  # a corpus no Hub dataset holds is named in the text only
        dataset = dict(
            task_type="text-generation",
            task_name="Language modelling",
            dataset_type=corpus.hub_id,
            dataset_config=corpus.hub_config,
            dataset_name=f"{corpus.source}: hubstyle's held-out validation segments",
            dataset_split="validation",
        )
        results = [
            EvalResult(**dataset, metric_type="loss", metric_name="Validation loss (nats/token)",
                       metric_value=_round(facts_pre.val_loss)),
            EvalResult(**dataset, metric_type="perplexity", metric_name="Validation perplexity",
                       metric_value=_round(math.exp(facts_pre.val_loss))),
        ]
    if not isinstance(model_config, Mapping) or not model_config.get("model_type"):
        raise HubstyleError("the base folder's config.json has no 'model_type'; the base card's architecture needs it")
    architecture = [
        {"name": key, "value": _cell(model_config[key])}
        for key in _ARCHITECTURE_KEYS
        if model_config.get(key) is not None
    ]
    data = ModelCardData(
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=["hubstyle", "tiny", "from-scratch", str(model_config["model_type"]), "text-generation"],
        datasets=[corpus.hub_id] if corpus.hub_id else None,
        license=ids.license,
        language=ids.language,
        model_name=model_name,
        eval_results=results or None,
    )
    kwargs = {
        **pre,
        "repo_id": repo,
        "adapter_repo": ids.adapter,
        "hub_url": HUB_URL,
        "model_type": str(model_config["model_type"]),
        "architecture": architecture,
        "loss_plot": LOSS_PLOT,
        "pretrain_report": PRETRAIN_REPORT,
        "hubstyle_version": facts.run.hubstyle_version,
    }
    return _render("base", data, kwargs)


def gguf_card(
    facts: RunFacts, ids: RepoIds, exports: Sequence["ExportReport"], demo_table: Mapping[str, Any]
) -> "ModelCard":
    """Return the GGUF repo's card: its files and how to run them in llama.cpp and Ollama (base_model: the merged repo).

    ``exports`` are ``hubstyle.export.export_gguf`` reports of the files in the repo; the last one is the file the
    Modelfile runs (each export rewrites the Modelfile).
    """
    from huggingface_hub import ModelCardData

    if ids.gguf is None:
        raise HubstyleError("RepoIds.gguf is None; set it to the GGUF repo id (default_repo_ids: OWNER/NAME-GGUF)")
    if not exports:
        raise HubstyleError("the GGUF card needs at least one export (hubstyle.export.export_gguf) to describe")
    files = []
    for report in exports:
        files.append({"name": report.gguf.name, "type": report.quant.upper(), "size": _megabytes(report.size_bytes),
                      "what": _GGUF_WHAT.get(report.quant, "the merged model")})
        if report.lora is not None:
            files.append({"name": report.lora.name, "type": "F16 LoRA", "size": _megabytes(report.lora_size_bytes),
                          "what": "the style adapter alone, for a GGUF of the base model"})
    lora = next((r.lora.name for r in exports if r.lora is not None), "")
    data = ModelCardData(
        base_model=ids.merged,
        base_model_relation="quantized",
        library_name="gguf",
        pipeline_tag="text-generation",
        tags=["hubstyle", "gguf", "llama.cpp", "ollama", facts.run.style, "text-generation"],
        datasets=hub_datasets(facts, ids),
        license=ids.license,
        language=ids.language,
        model_name=ids.gguf.split("/")[-1],
    )
    kwargs = {
        **_common(facts, ids),
        "gguf_repo": ids.gguf,
        "files": files,
        "lora_file": lora,
        "modelfile_from": exports[-1].gguf.name,
        "default_tag": exports[-1].quant.upper(),
        "architecture": exports[-1].architecture,
        "pre_tokenizer": exports[-1].pre_tokenizer,
        "local_name": ids.gguf.split("/")[-1],
        "example_prompt": _demo(demo_table)["example_prompt"],
        "whole_model": WHOLE_MODEL_METHODS.get(facts.training.method, ""),  # no adapter was merged in
    }
    return _render("gguf", data, kwargs)


_GGUF_WHAT = {"f16": "the merged model in 16-bit floats: closest to the original",
              "q8_0": "the merged model in 8-bit blocks: about half the size"}


def _megabytes(n_bytes: int | None) -> str:
    if n_bytes is None:
        raise HubstyleError("a GGUF export report has no file size; export the file again")
    return f"{n_bytes / 1e6:,.1f} MB" if n_bytes >= 1e6 else f"{n_bytes / 1e3:,.1f} kB"


def card_links(card: "ModelCard") -> list[str]:
    """Return the relative link targets (images, files) in the card body, in order, without duplicates."""
    found: dict[str, None] = {}
    for target in _LINK.findall(card.text):
        if "://" in target or target.startswith(("#", "mailto:", "/")):
            continue
        found.setdefault(target.split("#")[0], None)
    return list(found)


def card_template(kind: str) -> Path:
    """Return the template file for card ``kind`` ('adapter', 'merged', 'classifier', 'base').

    Looked up in the repository's ``model_cards/`` (a checkout or editable install), then in the installed
    package data ``hubstyle.model_cards`` (a wheel).
    """
    if kind not in CARD_TEMPLATES:
        raise HubstyleError(f"unknown card kind '{kind}'; use one of {', '.join(CARD_TEMPLATES)}")
    name = CARD_TEMPLATES[kind]
    local = Path(__file__).resolve().parents[1] / "model_cards" / name
    if local.is_file():
        return local
    try:
        from importlib.resources import files

        packaged = files(TEMPLATES_PACKAGE) / name
        if packaged.is_file():
            return Path(str(packaged))
    except (ModuleNotFoundError, TypeError):
        pass
    raise HubstyleError(
        f"card template '{name}' not found in {local.parent} or the package '{TEMPLATES_PACKAGE}'; reinstall hubstyle"
    )


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


# --------------------------------------------------------------------------------------------------- rendering


def _render(kind: str, data, kwargs: dict[str, Any]):
    """Return ``ModelCard.from_template`` of ``kind``, after checking the template gets every variable it uses."""
    import jinja2
    from jinja2 import meta
    from huggingface_hub import ModelCard

    path = card_template(kind)
    source = path.read_text(encoding="utf-8")
    # ModelCard.from_template renders with jinja2's default Undefined, which prints nothing: check up front so a
    # template never loses a fact without a word.
    used = meta.find_undeclared_variables(jinja2.Environment().parse(source))
    given = set(kwargs) | set(data.to_dict()) | {"card_data"}
    missing = sorted(used - given)
    if missing:
        raise HubstyleError(f"card template {path.name} uses '{missing[0]}', which the {kind} card does not provide")
    return ModelCard.from_template(data, template_path=str(path), **kwargs)


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


def _plot_title(path: str) -> str:
    return Path(path).stem.replace("_", " ").capitalize()


def _hub_id_or_none(name: str) -> str | None:
    try:
        return check_repo_id(name, namespace_required=False)  # a backbone may be e.g. 'distilbert-base-uncased'
    except HubstyleError:
        return None
