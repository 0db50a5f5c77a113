"""Model cards: pure functions from a run's facts (metrics.json, demo table, repo ids) to ``huggingface_hub.ModelCard``.

Metadata is built with ``ModelCardData`` and ``EvalResult`` (never hand-written YAML); the Markdown body comes from
the Jinja templates in the repository's top-level ``model_cards/`` folder, rendered by ``ModelCard.from_template``.
A fact a section needs but the run did not record is a one-line ``HubstyleError`` naming it: a card never drops a
section quietly. Only sections that are optional by nature (the pretraining of a local base, a blend sweep, extra
evaluation plots) are left out when their facts are absent.

Nothing here reads the clock or the file system (except the templates, and whether a repo id is an existing
folder), so the same facts give the same bytes.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from hubstyle.errors import HubstyleError
from hubstyle.layout import DEMO_TABLE, LOSS_HISTORY, LOSS_PLOT, METRICS, TRAINING_FACTS

if TYPE_CHECKING:
    from huggingface_hub import ModelCard

CARD_TEMPLATES = {"adapter": "adapter.md", "merged": "merged.md", "classifier": "classifier.md", "base": "base.md"}
TEMPLATES_PACKAGE = "hubstyle.model_cards"  # where a wheel ships model_cards/ (see card_template)
HUB_URL = "https://huggingface.co"
STYLE_PROMPTS_DATASET = "hubstyle-style-prompts"  # model-index dataset id of the style-rate prompt set
CLASSIFIER_HELDOUT_DATASET = "hubstyle-style-heldout"
DEFAULT_LICENSE = "mit"
DEFAULT_LANGUAGE = "en"
TINY_PARAMS = 100_000_000  # below this the card warns that continuations are imitations, not coherent text

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

    def __post_init__(self) -> None:
        for role in ("adapter", "merged", "classifier", "space"):
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


def check_repo_id(repo_id: str, what: str = "repo id", *, namespace_required: bool = True) -> str:
    """Return ``repo_id`` after checking it is a Hub model id and not a local path.

    Repos hubstyle creates need 'namespace/name'. A base model may be any Hub id, including the legacy ones
    without a namespace ('gpt2', 't5-small'): pass ``namespace_required=False`` for those.
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    text = str(repo_id)
    form = "'namespace/name' (e.g. 'alice/shakespeare')" if namespace_required else "'name' or 'namespace/name'"
    if _is_local_path(text):
        raise HubstyleError(f"{what} '{text}' is not a Hub repo id but a local path; push it, then use its id: {form}")
    if text.count("/") > 1 or (namespace_required and text.count("/") != 1):
        raise HubstyleError(f"{what} '{text}' is not a Hub repo id; use {form}")
    try:
        validate_repo_id(text)
    except HFValidationError as err:
        raise HubstyleError(f"{what} '{text}' is not a valid Hub repo id: {str(err).splitlines()[0]}") from None
    return text


def _is_local_path(text: str) -> bool:
    # 'alice/model' could be both an id and a folder below the working directory; an existing folder wins, as
    # it does for from_pretrained. A bare name is always an id: 'gpt2' must not depend on the working directory.
    seps = tuple(sep for sep in (os.sep, os.altsep) if sep)
    return text.startswith((".", "/", "~")) or (any(sep in text for sep in seps) and Path(text).exists())


# --------------------------------------------------------------------------------------------------- facts


class _Facts:
    """Read access to metrics.json that turns a missing fact into an error naming it (dotted path)."""

    def __init__(self, metrics: Mapping[str, Any], card: str):
        if not isinstance(metrics, Mapping):
            raise HubstyleError(f"{METRICS} must be a JSON object, got {type(metrics).__name__}")
        self.metrics = metrics
        self.card = card

    def has(self, path: str) -> bool:
        try:
            return self._walk(path) is not None
        except KeyError:
            return False

    def need(self, path: str, section: str) -> Any:
        """Return the fact at dotted ``path``; raise a one-line HubstyleError when it is missing or null."""
        try:
            value = self._walk(path)
        except KeyError:
            value = None
        if value is None:
            raise HubstyleError(
                f"{METRICS} has no '{path}', which the {self.card} card's {section} section needs; "
                "re-run the step that records it (train / evaluate) or add it"
            )
        return value

    def number(self, path: str, section: str) -> float:
        """Return the finite number at ``path`` (bools are not numbers here)."""
        value = self.need(path, section)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise HubstyleError(f"{METRICS} '{path}' is {value!r}; the {self.card} card needs a finite number there")
        return value

    def mapping(self, path: str, section: str) -> Mapping[str, Any]:
        value = self.need(path, section)
        if not isinstance(value, Mapping) or not value:
            raise HubstyleError(f"{METRICS} '{path}' is {value!r}; the {self.card} card needs a non-empty object there")
        return value

    def _walk(self, path: str) -> Any:
        node: Any = self.metrics
        for key in path.split("."):
            if not isinstance(node, Mapping) or key not in node:
                raise KeyError(path)
            node = node[key]
        return node


# --------------------------------------------------------------------------------------------------- cards


def adapter_card(
    metrics: Mapping[str, Any],
    ids: RepoIds,
    demo_table: Mapping[str, Any],
    *,
    eval_plots: Sequence[str] = (),
) -> "ModelCard":
    """Return the style adapter's card: metadata, results, demo table, training, classifier, usage, limitations.

    ``eval_plots`` are extra image paths (relative to the repo folder) shown under the results.
    """
    from huggingface_hub import ModelCardData

    f = _Facts(metrics, "adapter")
    base = _base_id(ids)
    style = str(f.need("run.style", "title"))
    model_name = ids.adapter.split("/")[-1]
    method = f.need("training.method", "training")
    if method not in ("lora", "qlora"):
        raise HubstyleError(
            f"{METRICS} 'training.method' is '{method}': that run trained the whole model, not an adapter; "
            "publish it as a merged/full model instead"
        )
    tags = ["hubstyle", "lora", "style-transfer", style, "text-generation"] + (["qlora"] if method == "qlora" else [])
    data = ModelCardData(
        base_model=base,
        base_model_relation="adapter",
        library_name="peft",
        pipeline_tag="text-generation",
        tags=tags,
        datasets=list(ids.datasets) or None,
        license=ids.license,
        language=ids.language,
        model_name=model_name,
        eval_results=_lm_eval_results(f, model_name),
    )
    kwargs = {
        **_common(f, ids, style),
        **_results(f),
        **_demo(demo_table),
        **_training(f),
        **_classifier_summary(f, ids),
        **_pretrain(f, ids, required=False),
        **_blend_sweep(f, style),
        "repo_id": ids.adapter,
        "eval_plots": [{"path": p, "title": _plot_title(p)} for p in eval_plots],
    }
    return _render("adapter", data, kwargs)


def merged_card(metrics: Mapping[str, Any], ids: RepoIds, demo_table: Mapping[str, Any]) -> "ModelCard":
    """Return the card of the adapter merged into its base: a plain transformers model with the same results."""
    from huggingface_hub import ModelCardData

    f = _Facts(metrics, "merged")
    base = _base_id(ids)
    style = str(f.need("run.style", "title"))
    model_name = ids.merged.split("/")[-1]
    quantization = (f.metrics.get("training") or {}).get("quantization")
    data = ModelCardData(
        base_model=base,
        base_model_relation="merge",
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=["hubstyle", "lora", "style-transfer", style, "text-generation", "merged"],
        datasets=list(ids.datasets) or None,
        license=ids.license,
        language=ids.language,
        model_name=model_name,
        eval_results=_lm_eval_results(f, model_name),
    )
    kwargs = {
        **_common(f, ids, style),
        **_results(f),
        **_demo(demo_table),
        **_training(f),
        "repo_id": ids.merged,
        "quantized_training": _QUANT_WORDS.get(quantization, "") if quantization else "",
    }
    return _render("merged", data, kwargs)


def classifier_card(metrics: Mapping[str, Any], ids: RepoIds) -> "ModelCard":
    """Return the style classifier's card: labels, accuracy and macro-F1 (model-index), per-class table, confusion."""
    from huggingface_hub import EvalResult, ModelCardData

    f = _Facts(metrics, "classifier")
    style = str(f.need("run.style", "title"))
    model_name = ids.classifier.split("/")[-1]
    summary = _classifier_summary(f, ids)
    n_heldout = int(f.number("classifier.n_heldout", "evaluation"))
    dataset = dict(
        task_type="text-classification",
        task_name="Style classification",
        dataset_type=CLASSIFIER_HELDOUT_DATASET,
        dataset_name=f"held-out passages of {', '.join(summary['labels'])} ({n_heldout})",
        dataset_split="test",
    )
    results = [
        EvalResult(**dataset, metric_type="accuracy", metric_name="Accuracy",
                   metric_value=_round(f.number("classifier.accuracy", "evaluation"))),
        EvalResult(**dataset, metric_type="f1", metric_name="Macro F1", metric_args={"average": "macro"},
                   metric_value=_round(f.number("classifier.macro_f1", "evaluation"))),
    ]
    backbone = summary["backbone_id"]
    data = ModelCardData(
        base_model=backbone or None,
        base_model_relation="finetune" if backbone else None,
        library_name="transformers",
        pipeline_tag="text-classification",
        tags=["hubstyle", "style-classifier", style, "text-classification"],
        datasets=list(ids.datasets) or None,
        license=ids.license,
        language=ids.language,
        metrics=["accuracy", "f1"],
        model_name=model_name,
        eval_results=results,
    )
    kwargs = {
        **_common(f, ids, style),
        **summary,
        "repo_id": ids.classifier,
        "metrics_file": METRICS,
        "n_train": _int(f.number("classifier.n_train", "training")),
        "train_seconds": f"{f.number('classifier.train_seconds', 'training'):.1f}",
        "example_text": json.dumps("Tell me what news you bring from the city.", ensure_ascii=False),
        "robustness": _classifier_robustness(metrics.get("classifier") or {}),
    }
    return _render("classifier", data, kwargs)


def _classifier_robustness(report: Mapping[str, Any]) -> str:
    """Return the card's sentence on disfluent training copies and the held-out score on disfluent text, or ''."""
    augment = (report.get("settings") or {}).get("augment")
    noisy = report.get("disfluent") or {}
    parts = []
    if augment:
        parts.append(
            f"The count includes disfluent copies of {augment:.0%} of the clean passages (words swapped, dropped, "
            "repeated or spliced, stray punctuation, cut mid-word), with the same label, so that a small model's "
            "word salad is judged by its vocabulary and spelling, not taken for archaic style because it is disfluent."
        )
    if "macro_f1" in noisy:
        parts.append(f"On disfluent copies of the held-out passages: accuracy {noisy['accuracy']:.3f}, "
                     f"macro-F1 {noisy['macro_f1']:.3f}.")
    return " ".join(parts)


def base_card(metrics: Mapping[str, Any], ids: RepoIds, model_config: Mapping[str, Any]) -> "ModelCard":
    """Return the card of the tiny base hubstyle pretrained: size, pretraining, val loss vs the bigram baseline.

    ``model_config`` is the base folder's config.json (for the architecture table).
    """
    from huggingface_hub import EvalResult, ModelCardData

    from hubstyle.pretrain import PRETRAIN_REPORT

    f = _Facts(metrics, "base")
    repo = _base_id(ids, published_here=True)
    model_name = repo.split("/")[-1]
    pre = _pretrain(f, ids, required=True)
    corpus = (f.metrics.get("pretrain") or {}).get("corpus")  # optional in hubstyle.metrics/1
    dataset = dict(
        task_type="text-generation",
        task_name="Language modelling",
        dataset_type=str(corpus or "hubstyle-pretrain-corpus"),
        dataset_name=f"{pre['pretrain_corpus']} (validation split)",
        dataset_split="validation",
    )
    val_loss = f.number("pretrain.val_loss", "pretraining")
    results = [
        EvalResult(**dataset, metric_type="loss", metric_name="Validation loss (nats/token)",
                   metric_value=_round(val_loss)),
        EvalResult(**dataset, metric_type="perplexity", metric_name="Validation perplexity",
                   metric_value=_round(math.exp(val_loss))),
        EvalResult(**dataset, metric_type="bigram_loss", metric_name="Bigram baseline validation loss (nats/token)",
                   metric_value=_round(f.number("pretrain.bigram_val_loss", "pretraining"))),
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
        license=ids.license,
        language=ids.language,
        model_name=model_name,
        eval_results=results,
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
        "hubstyle_version": str(f.need("run.hubstyle_version", "provenance")),
    }
    return _render("base", data, kwargs)


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


def _common(f: _Facts, ids: RepoIds, style: str) -> dict[str, Any]:
    return {
        "style": style,
        "style_title": style.replace("_", " ").replace("-", " ").title(),
        "base_model": _base_id(ids) if ids.base else "",
        "hub_url": HUB_URL,
        "adapter_repo": ids.adapter,
        "merged_repo": ids.merged,
        "classifier_repo": ids.classifier,
        "space_repo": ids.space,
        "hubstyle_version": str(f.need("run.hubstyle_version", "provenance")),
        "run_name": str(f.need("run.name", "provenance")),
        "created": str(f.need("run.created", "provenance")),
        "weights_note": _weights_note(f.metrics.get("run", {}).get("base_weights") or {}),
    }


def _weights_note(weights: Mapping[str, Any]) -> str:
    """Return the sentence saying which base weights were trained and measured on, when they were not the Hub's."""
    if weights.get("source") != "gguf-wheel":
        return ""
    sha = str(weights.get("gguf_sha256") or "")[:12]
    return (
        f"Trained and measured on weights dequantized from a {weights.get('dequantized_from') or 'GGUF'} "
        f"(`{weights.get('gguf_file')}`, sha256 `{sha}…`), not on the original Hub weights: the adapter works on the "
        "original weights the way a QLoRA adapter does, and its numbers there may differ slightly."
    )


def _results(f: _Facts) -> dict[str, Any]:
    section = "results"
    sr = "style_rate"
    rows = []
    for part, label in (("style", "held-out style text"), ("generic", "generic text")):
        rows.append(
            {
                "part": part,
                "label": label,
                "base": f"{f.number(f'perplexity.{part}.base', section):.2f}",
                "tuned": f"{f.number(f'perplexity.{part}.tuned', section):.2f}",
            }
        )
    decoding = f.mapping(f"{sr}.decoding", section)
    return {
        "target": str(f.need(f"{sr}.target", section)),
        "n_prompts": int(f.number(f"{sr}.n_prompts", section)),
        "decoding": _decoding_words(decoding, f"{sr}.decoding"),
        "rate_base": _rate_text(f, "base", section),
        "rate_tuned": _rate_text(f, "tuned", section),
        "ppl_style": rows[0],
        "ppl_generic": rows[1],
        "generic_corpus": str(f.need("data.generic_corpus", section)),
    }


def _rate_text(f: _Facts, side: str, section: str) -> str:
    p = f"style_rate.{side}"
    rate, low, high = (f.number(f"{p}.{k}", section) for k in ("rate", "low", "high"))
    n, successes = int(f.number(f"{p}.n", section)), int(f.number(f"{p}.successes", section))
    return f"{rate:.0%} ({successes}/{n}; 95% CI {low:.0%}–{high:.0%})"


def _lm_eval_results(f: _Facts, model_name: str) -> list:
    """Return the model-index: style rate and held-out perplexities of this model, and the base's for reference."""
    from huggingface_hub import EvalResult

    section = "model-index"
    style = str(f.need("run.style", section))
    target = str(f.need("style_rate.target", section))
    n_prompts = int(f.number("style_rate.n_prompts", section))
    generic = str(f.need("data.generic_corpus", section))
    prompts = dict(
        task_type="text-generation",
        task_name="Style transfer",
        dataset_type=STYLE_PROMPTS_DATASET,
        dataset_name=f"{n_prompts} neutral prompts, continuations classified as '{target}'",
    )
    style_text = dict(task_type="text-generation", task_name="Language modelling", dataset_type=style,
                      dataset_name=f"{style} (held-out split)", dataset_split="test")
    generic_text = dict(task_type="text-generation", task_name="Language modelling", dataset_type=generic,
                        dataset_name=f"{generic} (held-out split)", dataset_split="test")
    results = []
    for side, prefix, who in (("tuned", "", "this model"), ("base", "base_", "base model")):
        low, high = (f.number(f"style_rate.{side}.{k}", section) for k in ("low", "high"))
        results.append(EvalResult(
            **prompts, metric_type=f"{prefix}style_rate",
            metric_name=f"Style rate, {who} (95% CI {low:.2f}-{high:.2f})",
            metric_value=_round(f.number(f"style_rate.{side}.rate", section)),
        ))
    for data, part in ((style_text, "style"), (generic_text, "generic")):
        for side, prefix, who in (("tuned", "", "this model"), ("base", "base_", "base model")):
            results.append(EvalResult(
                **data, metric_type=f"{prefix}perplexity", metric_name=f"Perplexity, {who}",
                metric_value=_round(f.number(f"perplexity.{part}.{side}", section)),
            ))
    return results


def _demo(table: Mapping[str, Any]) -> dict[str, Any]:
    from hubstyle.evaluate.demo_table import demo_table_markdown

    if not isinstance(table, Mapping):
        raise HubstyleError(f"{DEMO_TABLE} must be a JSON object with 'rows'; got {type(table).__name__}")
    rows = table.get("rows")
    if not rows or not isinstance(rows, list):
        raise HubstyleError(f"{DEMO_TABLE} has no 'rows', which the card's demo section needs; re-run evaluate")
    for i, row in enumerate(rows):
        missing = [k for k in ("prompt", "base", "tuned") if not isinstance(row, Mapping) or row.get(k) is None]
        if missing:
            raise HubstyleError(f"{DEMO_TABLE} row {i} has no '{missing[0]}'; each row needs prompt, base and tuned")
    decoding = table.get("decoding")
    if not isinstance(decoding, Mapping):
        raise HubstyleError(f"{DEMO_TABLE} has no 'decoding', which the card's demo section needs; re-run evaluate")
    return {
        "demo_table": demo_table_markdown(table).rstrip("\n"),
        "demo_decoding": _decoding_words(decoding, f"{DEMO_TABLE} 'decoding'"),
        "example_prompt": json.dumps(str(rows[0]["prompt"]), ensure_ascii=False),
        "demo_file": DEMO_TABLE,
    }


def _decoding_words(decoding: Mapping[str, Any], where: str) -> str:
    if "max_new_tokens" not in decoding or "do_sample" not in decoding:
        raise HubstyleError(f"{where} needs 'max_new_tokens' and 'do_sample'")
    tokens = f"up to {int(decoding['max_new_tokens'])} new tokens"
    if not decoding["do_sample"]:
        return f"greedy decoding, {tokens}"
    missing = [k for k in ("temperature", "top_p", "seed") if decoding.get(k) is None]
    if missing:
        raise HubstyleError(f"{where} samples but has no '{missing[0]}'")
    return (
        f"sampling with temperature {decoding['temperature']}, top-p {decoding['top_p']} and seed "
        f"{decoding['seed']}, {tokens}"
    )


def _training(f: _Facts) -> dict[str, Any]:
    section = "training"
    t = "training"
    hyper = f.mapping(f"{t}.hyperparameters", section)
    targets = f.metrics[t].get("target_modules")
    hyperparameters = [{"name": k, "value": _cell(v)} for k, v in hyper.items() if v is not None]
    if targets is not None:
        hyperparameters.append({"name": "target_modules (resolved)", "value": _cell(targets)})
    styles = f.mapping("data.styles", "training data")
    data_rows = []
    for label, splits in styles.items():
        if not isinstance(splits, Mapping):
            raise HubstyleError(f"{METRICS} 'data.styles.{label}' must map split -> tokens, got {splits!r}")
        data_rows.append(
            {"label": _cell(label), **{s: _int(f.number(f"data.styles.{label}.{s}", "training data"))
                                       for s in ("train", "validation", "test")}}
        )
    trainable = int(f.number(f"{t}.trainable_params", section))
    total = int(f.number(f"{t}.total_params", section))
    quantization = f.metrics[t].get("quantization")
    val = f.metrics[t].get("final_val_loss")
    return {
        "method": str(f.need(f"{t}.method", section)),
        "trained_on": (
            f"a {_QUANT_WORDS.get(quantization, str(quantization))} quantized copy of the base"
            if quantization else "the full-precision base"
        ),
        "trainable_params": _int(trainable),
        "total_params": _int(total),
        "trainable_share": f"{trainable / total:.2%}" if total else "n/a",
        "train_tokens": _int(f.number(f"{t}.train_tokens", section)),
        "steps": _int(f.number(f"{t}.steps", section)),
        "seconds": f"{f.number(f'{t}.seconds', section):.1f}",
        "tokens_per_second": _int(round(f.number(f"{t}.tokens_per_second", section))),
        "bf16": "bf16 autocast" if f.need(f"{t}.bf16", section) else "float32",
        "final_train_loss": f"{f.number(f'{t}.final_train_loss', section):.3f}",
        "final_val_loss": f"{val:.3f}" if isinstance(val, (int, float)) else "not measured",
        "hyperparameters": hyperparameters,
        "data_rows": data_rows,
        "loss_plot": LOSS_PLOT,
        "loss_history_file": LOSS_HISTORY,
        "training_facts_file": TRAINING_FACTS,
        "model_size": _size_words(total),
        "tiny_model": total < TINY_PARAMS,
    }


def _classifier_summary(f: _Facts, ids: RepoIds) -> dict[str, Any]:
    from hubstyle.evaluate.classifier import CONFUSION_FILE

    section = "style classifier"
    c = "classifier"
    labels = f.need(f"{c}.labels", section)
    if not isinstance(labels, list) or len(labels) < 2:
        raise HubstyleError(f"{METRICS} '{c}.labels' is {labels!r}; the classifier needs at least two labels")
    labels = [str(x) for x in labels]
    per_class = f.mapping(f"{c}.per_class", section)
    class_rows = [
        {
            "label": _cell(label),
            **{k: f"{f.number(f'{c}.per_class.{label}.{k}', section):.3f}" for k in ("precision", "recall", "f1")},
        }
        for label in labels
    ]
    unknown = sorted(set(per_class) - set(labels))
    if unknown:
        raise HubstyleError(f"{METRICS} '{c}.per_class' has '{unknown[0]}', which is not in '{c}.labels' {labels}")
    matrix = f.need(f"{c}.confusion_matrix", section)
    if (
        not isinstance(matrix, list)
        or len(matrix) != len(labels)
        or any(not isinstance(r, list) or len(r) != len(labels) for r in matrix)
    ):
        raise HubstyleError(
            f"{METRICS} '{c}.confusion_matrix' must be {len(labels)}x{len(labels)} (one row per label), got {matrix!r}"
        )
    backbone = str(f.need(f"{c}.backbone", section))
    backbone_id = _hub_id_or_none(backbone)
    return {
        "labels": labels,
        "labels_text": ", ".join(f"`{x}`" for x in labels),
        "accuracy": f"{f.number(f'{c}.accuracy', section):.3f}",
        "macro_f1": f"{f.number(f'{c}.macro_f1', section):.3f}",
        "n_heldout": _int(f.number(f"{c}.n_heldout", section)),
        "class_rows": class_rows,
        "matrix_header": " | ".join(_cell(x) for x in labels),
        "matrix_rule": " | ".join("---:" for _ in labels),
        "matrix_rows": [
            {"label": _cell(label), "cells": " | ".join(_int(v) for v in row)} for label, row in zip(labels, matrix)
        ],
        "confusion_plot": CONFUSION_FILE,
        "backbone": backbone_id or "/".join(Path(backbone).parts[-2:]),
        "backbone_id": backbone_id or "",
    }


_PRETRAIN_KEYS = (
    "pretrain", "pretrain_corpus", "pretrain_params", "pretrain_size", "pretrain_vocab", "pretrain_tokens",
    "pretrain_steps", "pretrain_seconds", "pretrain_tps", "pretrain_val_loss", "pretrain_val_ppl",
    "pretrain_bigram_loss", "pretrain_bigram_ppl", "pretrain_gain", "pretrain_beats_bigram", "base_repo",
)


def _pretrain(f: _Facts, ids: RepoIds, *, required: bool) -> dict[str, Any]:
    if not required and "pretrain" not in f.metrics:
        return dict.fromkeys(_PRETRAIN_KEYS)  # optional section, absent: the template skips it on `pretrain`
    section = "pretraining"
    p = "pretrain"
    val, bigram = f.number(f"{p}.val_loss", section), f.number(f"{p}.bigram_val_loss", section)
    corpus = (f.metrics.get(p) or {}).get("corpus") or "the pretraining corpus"
    return {
        "pretrain": True,
        "pretrain_corpus": str(corpus),
        "pretrain_params": _int(f.number(f"{p}.n_params", section)),
        "pretrain_size": _size_words(f.number(f"{p}.n_params", section)),
        "pretrain_vocab": _int(f.number(f"{p}.vocab_size", section)),
        "pretrain_tokens": _int(f.number(f"{p}.train_tokens", section)),
        "pretrain_steps": _int(f.number(f"{p}.steps", section)),
        "pretrain_seconds": f"{f.number(f'{p}.seconds', section):.1f}",
        "pretrain_tps": _int(round(f.number(f"{p}.tokens_per_second", section))),
        "pretrain_val_loss": f"{val:.3f}",
        "pretrain_val_ppl": f"{math.exp(val):.1f}",
        "pretrain_bigram_loss": f"{bigram:.3f}",
        "pretrain_bigram_ppl": f"{math.exp(bigram):.1f}",
        "pretrain_gain": f"{bigram - val:+.3f}",
        "pretrain_beats_bigram": val < bigram,
        "base_repo": _base_id(ids),
    }


def _blend_sweep(f: _Facts, style: str) -> dict[str, Any]:
    sweep = f.metrics.get("blend_sweep")
    if not sweep:
        return {"blend_rows": []}
    if not isinstance(sweep, list):
        raise HubstyleError(f"{METRICS} 'blend_sweep' must be a list of points, got {type(sweep).__name__}")
    rows = []
    for i, point in enumerate(sweep):
        where = f"blend_sweep.{i}"
        sub = _Facts({"p": point}, "adapter")
        try:
            share = sub.number(f"p.per_class.{style}", "blend sweep")
            rows.append({
                "weight": f"{sub.number('p.weight', 'blend sweep'):.2f}",
                "share": f"{share:.0%}",
                "style_ppl": f"{sub.number('p.style_perplexity', 'blend sweep'):.2f}",
                "generic_ppl": f"{sub.number('p.generic_perplexity', 'blend sweep'):.2f}",
            })
        except HubstyleError as err:
            raise HubstyleError(str(err).replace("'p.", f"'{where}.")) from None
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


def _round(value: float) -> float:
    return round(float(value), 4)


def _int(value: float) -> str:
    return f"{int(value):,}"


def _cell(value: Any) -> str:
    from hubstyle.evaluate.demo_table import markdown_cell

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
