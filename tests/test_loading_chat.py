"""The loaders chat: a chat model's prompt is a user's turn in its template; `.chat(messages)`; a restyler restyles."""

from __future__ import annotations

import json

import pytest

from hubstyle.errors import HubstyleError
from hubstyle.loading import load_style

pytestmark = pytest.mark.slow  # seconds each on 2 cores: in CI's full run, not the default suite


@pytest.fixture(scope="module")
def chat_adapter(tmp_path_factory, tiny_chat_base):
    """An untrained LoRA on the tiny chat base, tagged as trained on chat data in the chat template."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from hubstyle.layout import TRAINING_FACTS

    folder = tmp_path_factory.mktemp("chat_adapter")
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_chat_base),
                           LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    model.save_pretrained(folder)
    (folder / TRAINING_FACTS).write_text(json.dumps({"chat_format": "model"}), encoding="utf-8")
    return folder


def test_a_chat_model_answers_the_prompt_as_a_users_turn(chat_adapter):
    bard = load_style(chat_adapter)
    assert bard.chat_format == "model"
    rendered = bard._render("How do I ask for a pay rise?")
    assert rendered.endswith("<|im_start|>user\nHow do I ask for a pay rise?<|im_end|>\n<|im_start|>assistant\n")
    answer = bard("How do I ask for a pay rise?", max_new_tokens=5)
    assert isinstance(answer, str) and "<|im_start|>" not in answer and "pay rise" not in answer
    messages = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi."},
                {"role": "user", "content": "And the weather?"}]
    assert bard._render(messages).count("<|im_start|>user") == 2
    assert isinstance(bard.chat(messages, max_new_tokens=4), str)
    base, tuned = bard.compare("Hello there", max_new_tokens=4)
    assert base == tuned  # an untrained LoRA is the base
    with pytest.raises(HubstyleError, match="not a restyler"):
        bard.restyle("Hello")
    with pytest.raises(HubstyleError, match="role"):
        bard.chat([{"role": "narrator", "content": "x"}])


def test_a_plain_text_model_continues_and_refuses_messages(tiny_run):
    model = load_style(tiny_run / "adapter")
    assert model.chat_format is None and model._render("To be") == "To be"
    with pytest.raises(HubstyleError, match="plain text"):
        model.chat([{"role": "user", "content": "hi"}])


def test_a_restyler_repo_restyles_through_load_style(tmp_path, tiny_build):
    folder = tiny_build[0].out / "publish" / "restyler"
    restyler = load_style(folder)
    assert restyler.restyler["instruction"] and restyler.chat_format == "model"
    assert "<|im_start|>system\n" + restyler.restyler["instruction"] in restyler._render("You are late.")
    out = restyler.restyle(["You are late. Come in!", "Hello."], max_new_tokens=4)
    assert isinstance(out, list) and len(out) == 2
