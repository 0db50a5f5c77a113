"""A run's training set -> a Hub dataset repo folder (RUN/publish/dataset/): one JSONL file a split and a dataset card.

The rows are the style samples the run built (RUN/data/samples.jsonl, :mod:`hubstyle.samples`), cut again by
``hubstyle.dataset.build_style_data`` with the run's own config: the cut is deterministic, so ``train`` is what
training drew from (before several styles were balanced by tokens) and ``validation`` and ``test`` what the run was
measured on. Plain text rows are ``{"text", "style"}``; conversations ``{"messages", "style", "loss_on"}`` in the
OpenAI ``messages`` shape. The card's metadata is ``DatasetCardData`` (its ``configs:`` entry lets
``datasets.load_dataset`` find the files), its body ``model_cards/dataset.md``. The same run gives the same bytes,
so a second push uploads nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hubstyle.card import HUB_URL, WHOLE_MODEL_METHODS, RepoIds, card_template
from hubstyle.config import RunConfig, load_config
from hubstyle.errors import HubstyleError
from hubstyle.facts import RunFacts, load_facts
from hubstyle.fsio import atomic_folder, file_sha256
from hubstyle.layout import SAMPLES, RunLayout

if TYPE_CHECKING:
    from huggingface_hub import DatasetCard, DatasetCardData

SPLITS = ("train", "validation", "test")
DATA_FOLDER = "data"  # the split files: data/train.jsonl, data/validation.jsonl, data/test.jsonl
README = "README.md"
# How training rendered conversations (TrainingFacts.chat_format); the rows keep the plain messages either way.
CHAT_FORMATS = {"model": "with the base model's chat template", "plain": "as `Name: line` lines",
                None: "with the base model's chat template, or as `Name: line` lines"}
# The Hub's size_categories buckets, by row count (the Hub's own spelling).
SIZE_BUCKETS = ("n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M", "100M<n<1B", "1B<n<10B")


@dataclass(frozen=True)
class TrainingSet:
    """A run's style samples as rows, cut the way the run cut them (a split with no rows is left out)."""

    splits: dict[str, list[dict[str, Any]]]
    chat: bool
    samples_sha256: str

    @property
    def n_rows(self) -> int:
        """Return the number of rows over all splits."""
        return sum(len(rows) for rows in self.splits.values())


def missing_training_set(run_dir: str | Path) -> str | None:
    """Return why the run has no training set to publish (no RUN/data/samples.jsonl), or None when it has one."""
    path = RunLayout(Path(run_dir)).data / SAMPLES
    if path.is_file():
        return None
    return (f"the run has no {path.parent.name}/{SAMPLES} (its training set); runs made by hubstyle before the "
            "dataset repo existed lack it: train again, or `hubstyle run CONFIG --from data`")


def training_set(run_dir: str | Path, cfg: RunConfig) -> TrainingSet:
    """Return the run's training set: its samples.jsonl, each style cut by ``cfg`` as training cut it."""
    from dataclasses import replace

    from hubstyle.dataset import build_style_data, sample_text
    from hubstyle.samples import read_samples

    layout = RunLayout(Path(run_dir))
    why = missing_training_set(layout.root)
    if why:
        raise HubstyleError(why)
    blocks = read_samples(layout.data, [c.label for c in cfg.corpora])
    # build_style_data is the one place a run's samples are split and its training side drawn; balancing the styles
    # by tokens is left out: it needs the base's tokenizer, and the files hold the training side before it
    unbalanced = replace(cfg, mix=replace(cfg.mix, balance=False))
    cut = build_style_data(unbalanced, lambda sample: len(sample_text(sample).split()), blocks)
    rows: dict[str, list[dict[str, Any]]] = {split: [] for split in SPLITS}
    for style in cut.splits:
        for split, samples in (("train", cut.train_texts[style]), ("validation", cut.splits[style].validation),
                               ("test", cut.splits[style].test)):
            rows[split] += [sample_row(sample, style) for sample in samples]
    chat = any("messages" in row for split in rows.values() for row in split)
    if chat:
        _same_message_keys(rows)
    sha = file_sha256(layout.data / SAMPLES)
    return TrainingSet({k: v for k, v in rows.items() if v}, chat, sha)


def sample_row(sample, style: str) -> dict[str, Any]:
    """Return the dataset row of one sample: ``{"text", "style"}``, or ``{"messages", "style", "loss_on"}``."""
    if isinstance(sample, str):
        return {"text": sample, "style": style}
    return {"messages": [dict(m) for m in sample.messages], "style": style, "loss_on": sample.loss_on}


def _same_message_keys(rows: dict[str, list[dict[str, Any]]]) -> None:
    """Give every message a 'name' (None when it has none) when any message has one: one Arrow type for all rows."""
    messages = [m for split in rows.values() for row in split for m in row.get("messages", ())]
    if any("name" in m for m in messages):
        for m in messages:
            m.setdefault("name", None)


def size_category(n_rows: int) -> str:
    """Return the Hub's size_categories bucket of ``n_rows`` rows, e.g. 'n<1K' or '1K<n<10K'."""
    if n_rows < 0:
        raise HubstyleError(f"a dataset cannot have {n_rows} rows")
    index = max(len(str(n_rows)) - 3, 0)  # 4 digits (1,000-9,999): the second bucket
    if index >= len(SIZE_BUCKETS):
        raise HubstyleError(f"{n_rows:,} rows is past the largest size category hubstyle knows ({SIZE_BUCKETS[-1]})")
    return SIZE_BUCKETS[index]


def data_files(data: TrainingSet) -> dict[str, str]:
    """Return {split: repo path} of the split files, e.g. {'train': 'data/train.jsonl'}."""
    return {split: f"{DATA_FOLDER}/{split}.jsonl" for split in SPLITS if split in data.splits}


# --------------------------------------------------------------------------------------------------- the card


def dataset_card(facts: RunFacts, cfg: RunConfig, ids: RepoIds, data: TrainingSet) -> "DatasetCard":
    """Return the dataset repo's card: ``DatasetCardData`` metadata and the body of ``model_cards/dataset.md``."""
    if ids.dataset is None:
        raise HubstyleError("RepoIds.dataset is None; set it to the dataset repo id "
                            "(default_repo_ids(..., with_dataset=True): OWNER/NAME-data)")
    style = facts.run.style
    files = data_files(data)
    whole_model = facts.training.method in WHOLE_MODEL_METHODS  # no adapter: the merged repo holds the model
    values = {
        "pretty_name": _pretty_name(style), "run_name": facts.run.name, "n_rows": f"{data.n_rows:,}",
        "row_kind": "conversations" if data.chat else "text passages", "style": style,
        "model_repo": ids.merged if whole_model else ids.adapter, "hub_url": HUB_URL,
        "corpora": [{"source": public_source(c.source, c.hub_id), "label": c.label, "hub_id": c.hub_id}
                    for c in facts.data.corpora],
        "rendering": rendering_text(cfg, data.chat, facts.training.chat_format), "split_text": split_text(cfg),
        "split_rows": [{"split": s, "file": p, "n": f"{len(data.splits[s]):,}"} for s, p in files.items()],
        "columns": _columns(data.chat), "repo_id": ids.dataset, "field": "messages" if data.chat else "text",
        "hubstyle_version": facts.run.hubstyle_version, "samples_sha256": data.samples_sha256,
    }
    return _render(dataset_card_data(facts, ids, data), values)


def dataset_card_data(facts: RunFacts, ids: RepoIds, data: TrainingSet) -> "DatasetCardData":
    """Return the card's metadata: licence, language, source datasets, task, size, and the ``configs:`` entry
    (one config, a data file a split) through which ``datasets.load_dataset`` finds the rows."""
    from huggingface_hub import DatasetCardData

    style = facts.run.style
    hub_ids = list(dict.fromkeys(c.hub_id for c in facts.data.corpora if c.hub_id))
    files = [{"split": split, "path": path} for split, path in data_files(data).items()]
    return DatasetCardData(
        language=[ids.language], license=ids.license, source_datasets=hub_ids or None,
        task_categories=["text-generation"], size_categories=[size_category(data.n_rows)],
        pretty_name=_pretty_name(style), tags=["hubstyle", style] + (["conversational"] if data.chat else []),
        configs=[{"config_name": "default", "data_files": files}],
    )


def rendering_text(cfg: RunConfig, chat: bool, chat_format: str | None = None) -> str:
    """Return the card's sentences on how the corpora became samples (blocks, dialogue text or conversations);
    ``chat_format`` is how training rendered conversations (``TrainingFacts.chat_format``)."""
    d = cfg.dialogue
    rendered = f" Training rendered them {CHAT_FORMATS.get(chat_format, CHAT_FORMATS[None])}."
    if d.mode is None and chat:
        return "The corpora are chat rows (`messages`, ShareGPT or prompt/completion files), as they are." + rendered
    if d.mode is None:
        return "Each block of a corpus (in a play: one speech) is one row, as the corpus gives it."
    if d.mode == "text":
        return (f"Each speech of {d.speaker} is one row, after the {d.rounds} spoken turns before it as context, "
                "one `Name: line` line each.")
    if d.speaker:
        text = (f"Scripts became conversations: each speech of {d.speaker} is the assistant's answer, the {d.rounds} "
                "spoken turns before it the context (other speakers as the user, several in a row as one turn of "
                "`Name: line` lines).")
    else:
        text = ("Scripts became conversations: every speech answers the one before it "
                f"({max(d.rounds, 1)} spoken turns of context).")
    if d.prompts == "questions":
        text += (" Each sample was then made one modern question about the answer's own content words and the "
                 "answer (the context turns dropped).")
    if d.min_answer_words:
        text += f" Answers under {d.min_answer_words} words were dropped."
    return text + rendered


def split_text(cfg: RunConfig) -> str:
    """Return the card's sentences on how each style's samples were split."""
    s = cfg.split
    balance = (" Training then balanced the styles' train splits to about the same token count; the files hold the "
               "splits before that." if len({c.label for c in cfg.corpora}) > 1 and cfg.mix.balance else "")
    return (f"Each style's samples, in corpus order, were cut into {s.segments} contiguous segments; "
            f"{s.validation:.0%} of them went to validation and {s.test:.0%} to test (at least one each when "
            f"non-zero, picked with seed {s.seed}), the rest to train (the `train` file holds what training drew "
            f"from it). Whole segments, never random rows: held-out "
            f"rows are whole stretches of text that training never saw, not lines scattered among its own.{balance}")


def public_source(source: str, hub_id: str | None) -> str:
    """Return how the card names corpus ``source``: a named corpus or Hub dataset as it is, a local file or folder by
    its name only (its path means nothing on the Hub and tells where the author keeps files)."""
    if hub_id or ("/" not in source and "\\" not in source):
        return source
    return Path(source.removeprefix("hf:").replace("\\", "/")).name


def _columns(chat: bool) -> list[dict[str, str]]:
    style = {"name": "style", "what": "the style the row teaches (the corpus's name in the run's config)"}
    if not chat:
        return [{"name": "text", "what": "the passage"}, style]
    return [
        {"name": "messages", "what": "the conversation: `role` (system, user or assistant), `content`, and `name` "
                                     "(the speaker, when the script named one)"},
        style,
        {"name": "loss_on", "what": "which assistant turns training took the loss on: `all` or `last`"},
    ]


def _pretty_name(style: str) -> str:
    return f"{style.replace('_', ' ').replace('-', ' ').title()} style training set"


def _render(metadata, values: dict[str, Any]) -> "DatasetCard":
    """Return ``DatasetCard.from_template`` of model_cards/dataset.md, after checking it gets every variable it uses."""
    import jinja2
    from jinja2 import meta
    from huggingface_hub import DatasetCard

    path = card_template("dataset")
    source = path.read_text(encoding="utf-8")
    used = meta.find_undeclared_variables(jinja2.Environment().parse(source))
    missing = sorted(used - set(values) - set(metadata.to_dict()) - {"card_data"})
    if missing:
        raise HubstyleError(f"card template {path.name} uses '{missing[0]}', which the dataset card does not provide")
    return DatasetCard.from_template(metadata, template_path=str(path), **values)


# --------------------------------------------------------------------------------------------------- the folder


def build_dataset_folder(run_dir: str | Path, ids: RepoIds) -> Path:
    """Return RUN/publish/dataset/ after (re)building it: the split files and the README.md dataset card."""
    layout = RunLayout(Path(run_dir))
    if not layout.config.is_file():
        raise HubstyleError(f"'{layout.root}' has no {layout.config.name}, which says how the run split its samples; "
                            "train the run first")
    cfg = load_config(layout.config)
    data = training_set(layout.root, cfg)
    card = dataset_card(load_facts(layout.root), cfg, ids, data)
    target = layout.publish / "dataset"
    with atomic_folder(target) as stage:
        (stage / DATA_FOLDER).mkdir()
        for split, path in data_files(data).items():
            lines = (json.dumps(row, ensure_ascii=False) + "\n" for row in data.splits[split])
            (stage / path).write_text("".join(lines), encoding="utf-8")
        card.save(stage / README)
    return target
