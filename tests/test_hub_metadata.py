"""Hub metadata checked offline: chat models' cards carry widget examples, the Space lists its models and datasets,
and everything parses back through huggingface_hub's own card classes (``ModelCard.validate()`` asks the Hub, so
the checks here are the ones huggingface_hub runs locally: ``RepoCard`` parsing, which refuses a model-index it cannot
read unless told to ignore it, and ``repocard_data``'s round trips)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from huggingface_hub import ModelCard, ModelCardData, SpaceCard
from huggingface_hub.repocard_data import eval_results_to_model_index

from hubstyle.card import WIDGET_EXAMPLES, adapter_card, full_card, merged_card
from hubstyle.errors import HubstyleError
from tests.test_card import DEMO, IDS, facts_of, fake_metrics

CHAT_DEMO = {**DEMO, "decoding": {**DEMO["decoding"], "chat": "auto"},
             "rows": [{"prompt": f"Question {i}?", "base": "Plain.", "tuned": "Thus."} for i in range(7)]}


def chat_facts(method: str = "lora", chat_format: str | None = "model"):
    metrics = fake_metrics("alice/shakespeare-base")
    metrics["training"].update(chat_format=chat_format, method=method)
    return facts_of(metrics)


def parsed(card) -> ModelCardData:
    """The card's metadata as the Hub reads it: the saved text parsed by ModelCard (metadata errors raise)."""
    data = ModelCard(str(card), ignore_metadata_errors=False).data
    assert ModelCardData(**data.to_dict()).to_dict() == data.to_dict()  # repocard_data round trip
    assert eval_results_to_model_index(data.model_name, data.eval_results) == data.to_dict()["model-index"]
    return data


@pytest.mark.parametrize("kind", ["adapter", "merged", "full"])
def test_a_chat_models_card_offers_its_demo_prompts_as_widget_messages(kind):
    build = {"adapter": adapter_card, "merged": merged_card, "full": full_card}[kind]
    card = build(chat_facts("full" if kind == "full" else "lora"), IDS, CHAT_DEMO)
    data = parsed(card)
    prompts = [row["prompt"] for row in CHAT_DEMO["rows"]][:WIDGET_EXAMPLES]
    assert data.widget == [{"messages": [{"role": "user", "content": p}]} for p in prompts]
    assert data.pipeline_tag == "text-generation" and data.eval_results  # the model-index still parses next to it
    assert {r.metric_type for r in data.eval_results} >= {"style_rate", "relevance"}


@pytest.mark.parametrize("chat_format", [None, "plain"])
def test_cards_without_a_chat_template_have_no_widget(chat_format):
    data = parsed(adapter_card(chat_facts(chat_format=chat_format), IDS, DEMO))
    assert "widget" not in data.to_dict() and data.eval_results


def test_the_space_lists_its_models_and_datasets_and_says_how_to_run_it_locally(tmp_path):
    from hubstyle.space_folder import build_space_folder

    folder = build_space_folder(
        tmp_path / "space", base_repo="HuggingFaceTB/SmolLM2-135M-Instruct", adapters={"bard": "alice/bard"},
        demo_rows=DEMO["rows"], demo_decoding=DEMO["decoding"], title="Bard", emoji="🎭", license="mit",
        short_description="Base vs bard", datasets=["karpathy/tiny_shakespeare", "alice/bard-data"],
    )
    card = SpaceCard.load(folder / "README.md")
    assert card.data.models == ["HuggingFaceTB/SmolLM2-135M-Instruct", "alice/bard"]
    assert card.data.datasets == ["karpathy/tiny_shakespeare", "alice/bard-data"]
    assert SpaceCard(str(card)).data.to_dict() == card.data.to_dict()
    text = card.text
    assert "## Run it on your own machine" in text and "pip install -r requirements.txt" in text
    assert "python app.py" in text and "HUBSTYLE_BASE=./base HUBSTYLE_ADAPTERS=bard=./adapter python app.py" in text


def test_a_release_links_the_space_to_the_models_and_datasets_its_cards_cite(tmp_path):
    import json

    from hubstyle.card import hub_datasets
    from hubstyle.facts import write_facts
    from hubstyle.layout import RunLayout
    from hubstyle.publish import default_repo_ids
    from hubstyle.release import prepare_release

    layout = RunLayout(tmp_path / "run")
    facts = chat_facts()
    layout.root.mkdir()
    write_facts(layout, facts)
    layout.demo_table.write_text(json.dumps(CHAT_DEMO))
    (part,) = prepare_release(layout.root, "alice/bard", ("space",), log=lambda *_: None)
    space = SpaceCard.load(part.folder / "README.md").data
    ids = default_repo_ids("alice", "bard", base_is_local=False).with_base(facts.run.base_model)
    assert space.datasets == hub_datasets(facts, ids) == ["karpathy/tiny_shakespeare"]  # what the cards cite
    assert space.models == ["alice/shakespeare-base", "alice/bard"]


def test_an_adapter_out_of_reach_is_one_line_naming_the_local_overrides(tiny_base):
    from hubstyle.space import load_model

    with pytest.raises(HubstyleError) as err:
        load_model(str(tiny_base), {"bard": "someone/no-such-adapter"})
    message = str(err.value)
    assert message.startswith("cannot load adapter 'bard' 'someone/no-such-adapter' (")
    assert "set HUBSTYLE_BASE to a local base model folder and HUBSTYLE_ADAPTERS to name=folder pairs" in message
    assert "\n" not in message


def test_a_base_out_of_reach_is_one_line_naming_the_local_overrides():
    from hubstyle.space import load_model

    with pytest.raises(HubstyleError) as err:
        load_model("someone/no-such-base", {"bard": "someone/no-such-adapter"})  # offline (conftest), not cached
    message = str(err.value)
    assert message.startswith("cannot load the base model 'someone/no-such-base' (")
    assert message.endswith("e.g. HUBSTYLE_BASE=./base HUBSTYLE_ADAPTERS=bard=./adapter") and "\n" not in message


@pytest.mark.slow  # a fresh interpreter imports torch, transformers and gradio
def test_the_space_app_offline_fails_in_one_line_naming_hubstyle_base_and_adapters(tmp_path):
    """`python app.py` of a published folder, offline, its Hub ids not cached: one line on stderr, no traceback."""
    from hubstyle.space_folder import build_space_folder

    folder = build_space_folder(
        tmp_path / "space", base_repo="someone/no-such-base", adapters={"bard": "someone/no-such-adapter"},
        demo_rows=DEMO["rows"], demo_decoding=DEMO["decoding"], title="Bard", emoji="🎭", license="mit",
        short_description="Base vs bard",
    )
    env = {k: v for k, v in os.environ.items() if k not in ("HUBSTYLE_BASE", "HUBSTYLE_ADAPTERS")}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"), PYTHONWARNINGS="ignore")
    done = subprocess.run([sys.executable, "app.py"], cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr and len(lines) == 1, done.stderr[-2000:]
    assert lines[0].startswith("error: cannot load the base model 'someone/no-such-base' (")
    assert "HUBSTYLE_BASE" in lines[0] and "HUBSTYLE_ADAPTERS=bard=./adapter" in lines[0]
