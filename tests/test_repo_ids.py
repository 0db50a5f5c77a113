"""Hub repo ids: a base model may be any Hub id ('gpt2' has no namespace); repos hubstyle creates need one."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
from huggingface_hub import ModelCard

from hubstyle.card import RepoIds, adapter_card, base_card, classifier_card, merged_card
from hubstyle.errors import HubstyleError
from hubstyle.facts import RunFacts, write_facts
from hubstyle.layout import TRAINING_FACTS, RunLayout
from hubstyle.publish import build_publish_folders, default_repo_ids
from hubstyle.repo_ids import check_repo_id
from tests.test_card import DEMO, IDS, facts_of, fake_facts, fake_metrics, run_dir  # noqa: F401 (run_dir: a fixture)

LEGACY_IDS = ["gpt2", "distilgpt2", "t5-small", "bert-base-uncased"]
HUB_BASE = dict(adapter="a/b", merged="a/b-merged", classifier="a/b-classifier", space="a/b-space")


def hub_base_facts(base: str) -> RunFacts:
    """The facts of a run fine-tuned from the Hub model ``base`` (no pretraining)."""
    metrics = fake_metrics(base)
    del metrics["pretrain"]
    return facts_of(metrics)


def one_line_error(call, match: str) -> str:
    with pytest.raises(HubstyleError, match=match) as err:
        call()
    assert "\n" not in str(err.value)
    return str(err.value)


# --------------------------------------------------------------------------------------------------- the rule


@pytest.mark.parametrize("repo_id", LEGACY_IDS + ["openai-community/gpt2"])
def test_a_base_may_be_any_hub_id(repo_id):
    assert check_repo_id(repo_id, "base model", namespace_required=False) == repo_id


@pytest.mark.parametrize("repo_id", LEGACY_IDS)
def test_a_repo_hubstyle_creates_needs_a_namespace(repo_id):
    message = one_line_error(lambda: check_repo_id(repo_id, "adapter repo id"),
                             rf"^adapter repo id '{repo_id}' is not a Hub repo id; use 'namespace/name'")
    assert "alice/shakespeare" in message  # says what to write instead


@pytest.mark.parametrize("repo_id", ["./gpt2", "/tmp/x", "~/models/gpt2", "../gpt2", "a/b/c", "", "gpt 2", "gpt2/"])
@pytest.mark.parametrize("namespace_required", [True, False])
def test_paths_and_malformed_ids_are_never_repo_ids(repo_id, namespace_required):
    one_line_error(lambda: check_repo_id(repo_id, "base model", namespace_required=namespace_required),
                   rf"^base model '{repo_id}' is not a (valid )?Hub repo id")


def test_an_existing_folder_is_a_path_not_an_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "alice" / "model").mkdir(parents=True)
    (tmp_path / "gpt2").mkdir()
    one_line_error(lambda: check_repo_id("alice/model", "base model", namespace_required=False),
                   r"^base model 'alice/model' is not a Hub repo id but a local path")
    assert check_repo_id("alice/other") == "alice/other"
    # a bare name never depends on the working directory: 'gpt2' stays the Hub model
    assert check_repo_id("gpt2", "base model", namespace_required=False) == "gpt2"


# --------------------------------------------------------------------------------------------------- cards


def test_cards_of_a_run_on_gpt2_name_it_as_their_base():
    ids = RepoIds(**HUB_BASE, base="gpt2")
    facts = hub_base_facts("gpt2")
    for card in (adapter_card(facts, ids, DEMO), merged_card(facts, ids, DEMO)):
        assert card.data.base_model == "gpt2"
        assert "## The base model" not in card.text
        assert "https://huggingface.co/gpt2" in card.text
    assert adapter_card(facts, ids, DEMO).data.base_model_relation == "adapter"
    clf = classifier_card(replace(facts, classifier=replace(facts.classifier, backbone="distilroberta-base")), ids)
    assert clf.data.base_model == "distilroberta-base"  # a backbone without a namespace is a Hub id too


@pytest.mark.parametrize("role", ["adapter", "merged", "classifier", "space"])
def test_repos_hubstyle_creates_refuse_a_bare_name(role):
    one_line_error(lambda: RepoIds(**{**HUB_BASE, role: "gpt2"}, base="gpt2"),
                   rf"^RepoIds.{role} 'gpt2' is not a Hub repo id; use 'namespace/name'")


@pytest.mark.parametrize("base", ["./gpt2", "/tmp/x", "a/b/c"])
def test_local_paths_and_nested_ids_are_not_bases(base):
    one_line_error(lambda: RepoIds(**HUB_BASE, base=base), rf"^RepoIds.base '{base}' is not a Hub repo id")


def test_the_base_hubstyle_publishes_needs_a_namespace():
    """A pretrained base is pushed by hubstyle, so 'gpt2' cannot be where it goes."""
    facts = fake_facts("tiny")
    config = {"model_type": "gpt2", "n_layer": 2, "vocab_size": 512}
    assert base_card(facts, IDS, config).data.model_name == "shakespeare-base"
    one_line_error(lambda: base_card(facts, RepoIds(**HUB_BASE, base="gpt2"), config),
                   r"^base model 'gpt2' is not a Hub repo id; use 'namespace/name'")


# --------------------------------------------------------------------------------------------------- publish


def _run_on_hub_base(run_dir, root, base: str) -> RunLayout:
    """A copy of the test run folder rewritten as if it had fine-tuned the Hub model ``base``."""
    run = RunLayout(root)
    shutil.copytree(run_dir, run.root, ignore=shutil.ignore_patterns("publish", "base"))
    metrics = json.loads(run.metrics.read_text())
    metrics["run"]["base_model"] = metrics["training"]["base_model"] = base
    del metrics["pretrain"]
    run.metrics.write_text(json.dumps(metrics))
    write_facts(run, facts_of(metrics))
    config = json.loads((run.adapter / "adapter_config.json").read_text())
    (run.adapter / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": base}))
    facts = json.loads((run.adapter / TRAINING_FACTS).read_text())
    (run.adapter / TRAINING_FACTS).write_text(json.dumps({**facts, "base_model": base}))
    return run


def test_publish_a_run_on_gpt2(run_dir, tmp_path):
    run = _run_on_hub_base(run_dir, tmp_path / "run", "gpt2")
    ids = default_repo_ids("alice", "bard", base_is_local=False)
    built = build_publish_folders(run.root, ids, what=("base", "adapter", "classifier"))
    assert sorted(built) == ["adapter", "classifier"]  # gpt2 is already on the Hub
    adapter_config = json.loads((built["adapter"] / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == "gpt2"
    assert ModelCard.load(built["adapter"] / "README.md").data.base_model == "gpt2"
    with pytest.raises(HubstyleError, match="trained on the Hub model 'gpt2'"):
        build_publish_folders(run.root, ids.with_base("distilgpt2"), what=("adapter",))


def test_publish_refuses_a_bare_name_for_the_base_it_creates(run_dir):
    ids = RepoIds(**HUB_BASE, base="gpt2")
    one_line_error(lambda: build_publish_folders(run_dir, ids, what=("base", "adapter")),
                   r"^RepoIds.base \(the repo the run's local base is published to\) 'gpt2' is not a Hub repo id")
    assert not RunLayout(run_dir).publish.exists()  # refused before building anything


def test_publish_refuses_a_path_as_the_runs_hub_base(run_dir, tmp_path):
    run = _run_on_hub_base(run_dir, tmp_path / "run", "gpt2")
    metrics = json.loads(run.metrics.read_text())
    metrics["run"]["base_model"] = "gpt 2"
    write_facts(run, facts_of(metrics))
    one_line_error(lambda: build_publish_folders(run.root, default_repo_ids("alice", "bard", False), what=("adapter",)),
                   r"run.base_model 'gpt 2' is not a valid Hub repo id")


# --------------------------------------------------------------------------------------------------- space


def test_a_space_over_gpt2(tmp_path):
    from huggingface_hub import SpaceCard

    from hubstyle.space_folder import build_space_folder

    args = dict(demo_rows=[], title="t", emoji="🎭", license="mit", short_description="s")
    out = build_space_folder(tmp_path / "space", base_repo="gpt2", adapters={"bard": "alice/bard"}, **args)
    assert SpaceCard.load(out / "README.md").data.models == ["gpt2", "alice/bard"]
    assert json.loads((out / "space_config.json").read_text())["base"] == "gpt2"
    one_line_error(lambda: build_space_folder(tmp_path / "bad", base_repo="gpt2", adapters={"bard": "gpt2"}, **args),
                   r"^adapter 'bard' 'gpt2' is not a Hub repo id; use 'namespace/name'")
    for base in ("./gpt2", "/tmp/x", "a/b/c"):
        one_line_error(lambda: build_space_folder(tmp_path / "bad", base_repo=base, adapters={"bard": "a/b"}, **args),
                       rf"^base model '{base}' is not a Hub repo id")
