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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from hubstyle.card_sections import (  # noqa: F401 - the constants and cell helpers are imported from here too
    _ARCHITECTURE_KEYS,
    _QUANT_WORDS,
    HUB_URL,
    INSTALL_COMMAND,
    NOT_MEASURED,
    REPOSITORY_URL,
    TINY_PARAMS,
    UNKNOWN_DATASET,
    WIDGET_EXAMPLES,
    _base_id,
    _GGUF_WHAT,
    _blend_sweep,
    _cell,
    _classifier_robustness,
    _classifier_summary,
    _common,
    _demo,
    _int,
    _lm_eval_results,
    _megabytes,
    _plot_title,
    _pretrain,
    _results,
    _round,
    _training,
    _widget,
    demo_table_markdown,
    hub_datasets,
    markdown_cell,
)
from hubstyle.errors import HubstyleError
from hubstyle.facts import RunFacts
from hubstyle.layout import (
    LOSS_PLOT,
    METRICS,
    PRETRAIN_REPORT,
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
DEFAULT_LICENSE = "mit"
DEFAULT_LANGUAGE = "en"

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


