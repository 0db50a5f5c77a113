"""A run's training set as a Hub dataset repo: the publish folder, its card, the push, and `load_dataset` back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from huggingface_hub import DatasetCard, ModelCard

from hubstyle.config import RELEASE_KINDS, DialogueConfig, PushConfig, load_config
from hubstyle.data import Conversation
from hubstyle.dataset_repo import SIZE_BUCKETS, build_dataset_folder, size_category
from hubstyle.errors import HubstyleError
from hubstyle.layout import SAMPLES, RunLayout
from hubstyle.publish import default_repo_ids
from hubstyle.release import prepare_release, push_parts
from hubstyle.samples import write_samples

IDS = default_repo_ids("alice", "bard", base_is_local=True, with_dataset=True)
QUIET = dict(log=lambda *_: None)


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def facts_only_copy(run: Path, dest: Path) -> Path:
    """Return a copy of what the dataset folder is built from: the config, the facts and the samples."""
    layout = RunLayout(run)
    dest.mkdir(parents=True)
    for path in (layout.config, layout.facts):
        shutil.copyfile(path, dest / path.name)
    shutil.copytree(layout.data, dest / layout.data.name)
    return dest


@pytest.fixture(scope="module")
def run_copy(runner_run, tmp_path_factory) -> Path:
    """A whole copy of the toy `hubstyle run` folder (pushing its adapter needs the adapter and its evaluation)."""
    dest = tmp_path_factory.mktemp("dataset_repo") / "run"
    runner_run.copy(dest)
    return dest


# --------------------------------------------------------------------------------------------------- the folder


def test_the_dataset_folder_holds_the_splits_training_cut(runner_run, tmp_path):
    from datasets import load_dataset

    from hubstyle.dataset import build_style_data
    from hubstyle.samples import read_samples

    run = facts_only_copy(runner_run.folder, tmp_path / "run")
    folder = build_dataset_folder(run, IDS)
    assert folder == run / "publish" / "dataset"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        "README.md", "data/test.jsonl", "data/train.jsonl", "data/validation.jsonl"]

    cfg = load_config(RunLayout(run).config)  # what training saw: the samples split as build_style_data splits them
    splits = build_style_data(cfg, lambda s: len(s.split()), read_samples(RunLayout(run).data, ["shakespeare"])).splits
    for split in ("train", "validation", "test"):
        rows = rows_of(folder / "data" / f"{split}.jsonl")
        assert rows == [{"text": t, "style": "shakespeare"} for t in getattr(splits["shakespeare"], split)], split
    n_rows = sum(len(rows_of(p)) for p in (folder / "data").glob("*.jsonl"))
    assert n_rows == len(rows_of(RunLayout(run).data / SAMPLES)) > 1000

    card = DatasetCard.load(folder / "README.md")
    data = card.data
    assert (data.license, data.language, data.pretty_name) == ("mit", ["en"], "Shakespeare style training set")
    assert data.source_datasets == ["karpathy/tiny_shakespeare"]
    assert data.task_categories == ["text-generation"] and data.size_categories == [size_category(n_rows)]
    assert data.configs == [{"config_name": "default", "data_files": [
        {"split": s, "path": f"data/{s}.jsonl"} for s in ("train", "validation", "test")]}]
    assert 'load_dataset("alice/bard-data", split="train")' in card.text and 'rows[0]["text"]' in card.text
    assert "[`alice/bard`](https://huggingface.co/alice/bard)" in card.text  # the model trained on it
    assert "20 contiguous segments" in card.text and "{{" not in card.text and "None" not in card.text
    assert str(tmp_path) not in card.text

    local = load_dataset(str(folder), split="validation")  # the card's configs: entry is what finds the files
    assert local.num_rows == len(splits["shakespeare"].validation) and local.column_names == ["text", "style"]

    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    build_dataset_folder(run, IDS)
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before  # same run, same bytes


def test_chat_samples_become_messages_rows(runner_run, tmp_path):
    run = facts_only_copy(runner_run.folder, tmp_path / "run")
    layout = RunLayout(run)
    cfg = load_config(layout.config)
    cfg.dialogue = DialogueConfig(speaker="ROMEO", rounds=1, prompts="questions")
    layout.config.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
    talks = [Conversation([{"role": "system", "content": "Speak well."},
                           {"role": "user", "content": f"Question {i}?"},
                           {"role": "assistant", "content": f"Answer {i}, good sir.", "name": "ROMEO"}], "last")
             for i in range(40)]
    write_samples(layout.data, {"shakespeare": talks})
    facts = json.loads(layout.facts.read_text(encoding="utf-8"))  # the corpus was a file on this machine
    facts["data"]["corpora"][0].update(source=str(tmp_path / "plays" / "romeo.txt"), hub_id=None)
    layout.facts.write_text(json.dumps(facts), encoding="utf-8")

    folder = build_dataset_folder(run, IDS)
    rows = [row for split in ("train", "validation", "test") for row in rows_of(folder / "data" / f"{split}.jsonl")]
    assert len(rows) == 40 and {row["style"] for row in rows} == {"shakespeare"}
    assert {row["loss_on"] for row in rows} == {"last"}
    by_answer = {row["messages"][2]["content"]: row["messages"] for row in rows}
    assert by_answer["Answer 7, good sir."] == [  # one Arrow type for every message: a 'name' each, null when none
        {"role": "system", "content": "Speak well.", "name": None},
        {"role": "user", "content": "Question 7?", "name": None},
        {"role": "assistant", "content": "Answer 7, good sir.", "name": "ROMEO"}]

    card = DatasetCard.load(folder / "README.md")
    assert "conversational" in card.data.tags and card.data.size_categories == ["n<1K"]
    assert card.data.source_datasets is None and "- `romeo.txt` (style `shakespeare`)" in card.text
    assert str(tmp_path) not in card.text
    assert 'rows[0]["messages"]' in card.text and "each speech of ROMEO is the assistant's answer" in card.text
    assert "one modern question about the answer's own content words" in card.text


def test_size_categories_follow_the_hub_s_buckets():
    assert [size_category(n) for n in (0, 999, 1000, 9_999, 10_000, 250_000, 3_000_000)] == [
        "n<1K", "n<1K", "1K<n<10K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M"]
    with pytest.raises(HubstyleError, match="past the largest size category"):
        size_category(10 * 10 ** (len(SIZE_BUCKETS) + 2))


def test_the_repo_id_rule_and_the_push_setting():
    assert IDS.dataset == "alice/bard-data"
    assert default_repo_ids("alice", "bard", base_is_local=True).dataset is None  # not released: cards cite none
    assert "dataset" in RELEASE_KINDS and PushConfig(what=["dataset"]).parts() == ("dataset",)


def test_a_run_without_samples_skips_the_dataset_saying_why(runner_run, tmp_path):
    run = facts_only_copy(runner_run.folder, tmp_path / "run")
    shutil.rmtree(RunLayout(run).data)
    with pytest.raises(HubstyleError, match=r"^nothing to build: dataset: the run has no data/samples\.jsonl") as err:
        prepare_release(run, "alice/bard", ("dataset",), **QUIET)
    assert "\n" not in str(err.value)
    other = facts_only_copy(runner_run.folder, tmp_path / "other")
    (other / "config.yaml").unlink()
    with pytest.raises(HubstyleError, match="has no config.yaml"):
        build_dataset_folder(other, IDS)


# --------------------------------------------------------------------------------------------------- the Hub


def test_push_then_load_dataset_by_repo_id_and_cards_cite_it(run_copy, hub_env, run_cli, monkeypatch, tmp_path):
    import datasets
    from datasets import load_dataset

    said: list[str] = []
    parts = prepare_release(run_copy, "alice/bard", ("dataset", "adapter"), log=said.append)
    assert [(p.kind, p.repo_id, p.repo_type) for p in parts] == [
        ("dataset", "alice/bard-data", "dataset"), ("adapter", "alice/bard", "model")]
    push_parts(parts, "toy", tag="v1", log=said.append)
    assert said[0] == "dataset: alice/bard-data - 4 files changed" and said[1].startswith("adapter: alice/bard - ")
    repo = hub_env.server.repo("alice/bard-data", "dataset")
    assert repo is not None and repo.tags["v1"] == repo.branches["main"]

    adapter = ModelCard.load(run_copy / "publish" / "adapter" / "README.md")
    assert adapter.data.datasets == ["karpathy/tiny_shakespeare", "alice/bard-data"]

    for name, value in {"HF_ENDPOINT": hub_env.url, "HF_HUB_OFFLINE": False, "HF_DATASETS_OFFLINE": False,
                        "HF_UPDATE_DOWNLOAD_COUNTS": False, "HF_DATASETS_CACHE": tmp_path / "datasets_cache"}.items():
        monkeypatch.setattr(datasets.config, name, value)
    pushed = load_dataset("alice/bard-data", split="train")  # the card's three lines, through the loopback Hub
    local = rows_of(run_copy / "publish" / "dataset" / "data" / "train.jsonl")
    assert pushed.num_rows == len(local) and pushed[0] == local[0] and pushed[-1] == local[-1]

    # a second push of the same run uploads nothing and makes no commit
    commits, sent = len(hub_env.server.commits("alice/bard-data", "dataset")), hub_env.server.uploaded_bytes
    code, out, err = run_cli("push", str(run_copy), "--repo-id", "alice/bard", "--what", "dataset")
    assert code == 0, err
    assert out.strip() == "dataset: alice/bard-data - unchanged, no commit"
    assert hub_env.server.uploaded_bytes == sent and len(hub_env.server.commits("alice/bard-data", "dataset")) == commits

    # a release without the dataset repo does not cite it
    prepare_release(run_copy, "alice/bard", ("adapter",), **QUIET)
    adapter = ModelCard.load(run_copy / "publish" / "adapter" / "README.md")
    assert adapter.data.datasets == ["karpathy/tiny_shakespeare"]
