"""The Space on 127.0.0.1, driven by gradio_client: columns equal plain transformers/peft generations, one call."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from hubstyle.errors import HubstyleError

PROMPT = "ROMEO:\nBut soft, what light"
NEW_TOKENS = 24
DEMO_ROWS = [
    {"prompt": "To be, or not", "base": "to be the the", "tuned": "to be, thou knave"},
    {"prompt": "Good morrow", "base": "and and and", "tuned": "good sir, good morrow"},
]
EXAMPLES = ["Shall I compare thee", "Now is the winter"]


def make_adapter(base: Path, out: Path, seed: int) -> Path:
    """Save a rank-4 LoRA with random (not zero) B matrices, so it changes the base model's outputs."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=16, target_modules=["c_attn", "c_proj", "c_fc"], init_lora_weights=False,
                        fan_in_fan_out=True)  # GPT-2 uses Conv1D
    get_peft_model(AutoModelForCausalLM.from_pretrained(base), config).save_pretrained(out)
    return out


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def adapters(tiny_base, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("adapters")
    return {name: str(make_adapter(tiny_base, root / name, seed)) for name, seed in (("bard", 1), ("pirate", 2))}


@pytest.fixture(scope="module")
def settings(tiny_base, adapters):
    from hubstyle.space import SpaceSettings

    # fp32 so the columns can be compared bit for bit with plain fp32 generations
    return SpaceSettings(
        base=str(tiny_base),
        adapters=adapters,
        demo_rows=DEMO_ROWS,
        examples=EXAMPLES,
        max_new_tokens=32,
        max_prompt_chars=80,
        bf16=False,
    )


@pytest.fixture(scope="module")
def connections():
    """Every address a socket of this process connects to while the module's Space runs."""
    seen: list = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):  # name lookups too: offline, a lookup fails before any connect
        seen.append((host, "lookup"))
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(self, address):
        seen.append(address)
        return real_connect(self, address)

    def connect_ex(self, address):
        seen.append(address)
        return real_connect_ex(self, address)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", connect)
        patch.setattr(socket.socket, "connect_ex", connect_ex)
        patch.setattr(socket, "getaddrinfo", getaddrinfo)
        yield seen


@pytest.fixture(scope="module")
def app(settings, connections):
    """The launched Space (in this process, so tests can watch its model) and a gradio_client.Client on it."""
    from gradio_client import Client

    from hubstyle.space import launch

    demo = launch(settings, host="127.0.0.1", port=free_port(), prevent_thread_lock=True, quiet=True)
    client = Client(demo.local_url, verbose=False, analytics_enabled=False, download_files=False)
    yield demo, client
    client.close()
    demo.close()


@pytest.fixture
def generate_calls(app, monkeypatch) -> list[dict]:
    """Record the keyword arguments of every ``generate`` call on the Space's model."""
    model = app[0].hubstyle_model.model
    calls: list[dict] = []
    original = model.generate

    def counting_generate(*args, **kwargs):
        calls.append({k: v for k, v in kwargs.items() if k in ("adapter_names", "max_new_tokens", "do_sample")})
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "generate", counting_generate)
    return calls


def reference(base: Path, adapter: str | None, prompt: str, new_tokens: int) -> str:
    """Return the greedy continuation from a plain transformers model, or a PeftModel with ``adapter``."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from hubstyle.models import load_tokenizer

    tokenizer = load_tokenizer(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    batch = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, batch["input_ids"].shape[1] :], skip_special_tokens=True)


def run(client, prompt=PROMPT, adapter="bard", new_tokens=NEW_TOKENS, temperature=0.0, top_p=1.0, seed=0):
    """Return every (base, tuned) update of one streamed request, last one last."""
    job = client.submit(prompt, adapter, new_tokens, temperature, top_p, seed, api_name="/generate")
    job.result(timeout=60)
    return [tuple(out) for out in job.outputs()]


def test_columns_equal_plain_generations_from_one_batched_call(app, tiny_base, adapters, generate_calls):
    updates = run(app[1])
    base_text, tuned_text = updates[-1]
    assert base_text == reference(tiny_base, None, PROMPT, NEW_TOKENS)
    assert tuned_text == reference(tiny_base, adapters["bard"], PROMPT, NEW_TOKENS)
    assert base_text != tuned_text
    assert generate_calls == [{"adapter_names": ["__base__", "bard"], "max_new_tokens": NEW_TOKENS, "do_sample": False}]
    # streamed: the columns grew over many updates, not in one final message
    assert len(updates) >= 5
    assert updates[0] == ("", "")
    assert any(0 < len(b) < len(base_text) for b, _ in updates)
    assert any(0 < len(t) < len(tuned_text) for _, t in updates)


def test_switching_adapter_changes_only_the_tuned_column(app, tiny_base, adapters, generate_calls):
    bard = run(app[1], adapter="bard")[-1]
    pirate = run(app[1], adapter="pirate")[-1]
    assert pirate[0] == bard[0]
    assert pirate[1] != bard[1]
    assert pirate[1] == reference(tiny_base, adapters["pirate"], PROMPT, NEW_TOKENS)
    assert [c["adapter_names"] for c in generate_calls] == [["__base__", "bard"], ["__base__", "pirate"]]


def test_seeded_sampling_repeats_and_new_tokens_are_capped(app, generate_calls):
    from gradio_client.exceptions import AppError

    first = run(app[1], temperature=1.0, top_p=0.9, seed=7)[-1]
    again = run(app[1], temperature=1.0, top_p=0.9, seed=7)[-1]
    other = run(app[1], temperature=1.0, top_p=0.9, seed=8)[-1]
    assert first == again
    assert first != other
    run(app[1], new_tokens=32)
    with pytest.raises(AppError, match="Value 1000 is greater than maximum value 32"):
        run(app[1], new_tokens=1000)  # the API can send more than the slider shows; the slider's range holds
    assert [c["do_sample"] for c in generate_calls] == [True, True, True, False]
    assert generate_calls[-1]["max_new_tokens"] == 32


@pytest.mark.parametrize(
    ("prompt", "message"),
    [("x" * 81, "the prompt is 81 characters long; this Space takes at most 80"), ("   ", "the prompt is empty")],
)
def test_bad_prompts_get_a_clear_error(app, generate_calls, prompt, message):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=message):
        run(app[1], prompt=prompt)
    assert generate_calls == []


def test_stop_button_stops_the_model(app):
    """With a slowed-down model, Stop ends generation early: the forward passes stop, not only the stream."""
    demo, client = app
    model = demo.hubstyle_model.model
    forwards: list[float] = []

    def slow(module, args):
        forwards.append(time.monotonic())
        time.sleep(0.1)

    handle = model.base_model.model.register_forward_pre_hook(slow)
    try:
        job = client.submit(PROMPT, "bard", 32, 0.0, 1.0, 0, api_name="/generate")
        deadline = time.monotonic() + 30
        while len(job.outputs()) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        client.predict(api_name="/stop")
        deadline = time.monotonic() + 30
        while not job.done() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert job.done()
        time.sleep(0.3)
        seen = len(forwards)
        time.sleep(0.3)
        assert len(forwards) == seen  # nothing runs in the background any more
        assert 3 <= seen < 32
        assert not any(t.name == "hubstyle-generate" for t in threading.enumerate())
    finally:
        handle.remove()


def test_stream_stops_when_the_event_is_set(settings):
    from hubstyle.space import side_by_side

    stop = threading.Event()
    stop.set()
    updates = list(side_by_side(settings).stream(PROMPT, "pirate", max_new_tokens=20, stop=stop))
    assert len(updates) == 1  # the first token is made, then the criteria sees the event


def test_demo_table_examples_and_no_remote_fonts(app):
    demo, _ = app
    config = json.loads(urllib.request.urlopen(demo.local_url + "config", timeout=10).read())
    by_id = {c["props"].get("elem_id"): c for c in config["components"] if c.get("props", {}).get("elem_id")}
    table = by_id["demo-table"]["props"]["value"]
    assert table["headers"] == ["prompt", "base", "tuned"]
    assert table["data"] == [[r["prompt"], r["base"], r["tuned"]] for r in DEMO_ROWS]
    datasets = [c for c in config["components"] if c["type"] == "dataset"]
    assert [s[0] for s in datasets[0]["props"]["samples"]] == EXAMPLES
    assert config["stylesheets"] == []
    theme_css = urllib.request.urlopen(demo.local_url + "theme.css", timeout=10).read().decode()
    assert "googleapis" not in theme_css and "system-ui" in theme_css
    model_fns = [f for f in demo.fns.values() if f.fn is not None and f.fn.__name__ == "generate"]
    assert [(f.api_name, f.concurrency_limit) for f in model_fns] == [("generate", 1)]


def test_space_folder_round_trips(tmp_path, settings):
    import gradio
    from huggingface_hub import SpaceCard

    from hubstyle.space import APP_SOURCE, build_space_folder, load_settings

    out = build_space_folder(
        tmp_path / "space",
        base_repo="someone/tiny-base",
        adapters={"bard": "someone/bard-lora", "pirate": "someone/pirate-lora"},
        demo_rows=DEMO_ROWS,
        title="Bard vs base",
        emoji="🎭",
        license="mit",
        short_description="A tiny model and its Shakespeare adapter",
        hubstyle_requirement="hubstyle==0.1.0",
        examples=EXAMPLES,
        python_version="3.11",
    )
    card = SpaceCard.load(out / "README.md")
    assert card.data.models == ["someone/tiny-base", "someone/bard-lora", "someone/pirate-lora"]
    assert card.data.sdk == "gradio" and card.data.sdk_version == gradio.__version__
    assert card.data.python_version == "3.11" and isinstance(card.data.python_version, str)
    assert card.data.app_file == "app.py" and card.data.license == "mit"
    assert card.data.short_description == "A tiny model and its Shakespeare adapter"
    assert "python_version: '3.11'" in (out / "README.md").read_text(encoding="utf-8")
    assert "someone/bard-lora" in card.text
    requirements = (out / "requirements.txt").read_text().splitlines()
    assert f"gradio=={gradio.__version__}" in requirements and requirements[-1] == "hubstyle==0.1.0"
    assert {r.split("==")[0] for r in requirements} == {"torch", "transformers", "peft", "gradio", "hubstyle"}
    assert "+" not in "".join(requirements)  # no local version tags such as +cpu
    assert (out / "app.py").read_text() == APP_SOURCE.read_text()
    loaded = load_settings(out, env={})
    assert loaded.base == "someone/tiny-base" and loaded.adapters["pirate"] == "someone/pirate-lora"
    assert loaded.demo_rows == DEMO_ROWS and loaded.examples == EXAMPLES and loaded.title == "Bard vs base"

    card_args = dict(demo_rows=[], title="t", emoji="🎭", license="mit", hubstyle_requirement="hubstyle")
    with pytest.raises(HubstyleError, match="short_description is 61 characters"):
        build_space_folder(tmp_path / "bad", base_repo="a/b", adapters={"x": "a/c"}, short_description="x" * 61,
                           **card_args)
    with pytest.raises(HubstyleError, match="not a Hub repo id"):
        build_space_folder(tmp_path / "bad", base_repo="a/b", adapters={"x": "/tmp/local//adapter"},
                           short_description="s", **card_args)


def test_load_settings_env_overrides_and_errors(tmp_path):
    from hubstyle.space import load_settings

    (tmp_path / "space_config.json").write_text(
        json.dumps({"base": "./base", "adapters": {"bard": "someone/bard"}, "limits": {"max_new_tokens": 40}})
    )
    settings = load_settings(tmp_path, env={})
    assert settings.base == str((tmp_path / "base").resolve()) and settings.max_new_tokens == 40
    env = {"HUBSTYLE_BASE": "org/base", "HUBSTYLE_ADAPTERS": "bard=org/bard-lora, pirate=org/pirate-lora"}
    settings = load_settings(tmp_path, env=env)
    assert settings.base == "org/base"
    assert settings.adapters == {"bard": "org/bard-lora", "pirate": "org/pirate-lora"}
    assert settings.demo_rows == [] and settings.max_prompt_chars == 500

    (tmp_path / "space_config.json").write_text(json.dumps({"base": "a/b", "adapters": {"x": "a/c"}, "exampels": []}))
    with pytest.raises(HubstyleError, match="unknown key 'exampels'.*did you mean 'examples'"):
        load_settings(tmp_path, env={})
    with pytest.raises(HubstyleError, match="bad adapter entry 'bard'"):
        load_settings(None, env={"HUBSTYLE_BASE": "a/b", "HUBSTYLE_ADAPTERS": "bard"})
    with pytest.raises(HubstyleError, match="at least one adapter"):
        load_settings(None, env={"HUBSTYLE_BASE": "a/b"})


def test_app_py_launches_from_its_folder_config(tmp_path, monkeypatch, tiny_base, adapters):
    """space/app.py only reads its folder's config: run it as a script with launch() intercepted."""
    import runpy

    from hubstyle import space

    folder = tmp_path / "space"
    folder.mkdir()
    (folder / "app.py").write_text(space.APP_SOURCE.read_text())
    (folder / "space_config.json").write_text(json.dumps({"base": str(tiny_base), "adapters": adapters}))
    seen = []
    monkeypatch.setattr(space, "launch", lambda settings, **kw: seen.append(settings))
    monkeypatch.delenv("HUBSTYLE_BASE", raising=False)
    monkeypatch.delenv("HUBSTYLE_ADAPTERS", raising=False)
    runpy.run_path(str(folder / "app.py"), run_name="__main__")
    assert [s.base for s in seen] == [str(tiny_base)] and seen[0].adapters == adapters
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"


def test_nothing_leaves_the_machine(app, connections):
    """Launch, config, theme and every request above only ever connected to this machine (no analytics, fonts)."""
    urllib.request.urlopen(app[0].local_url, timeout=10).read()  # the page itself, as a browser loads it first
    hosts = {address[0] for address in connections if isinstance(address, tuple)}
    assert hosts and hosts <= {"127.0.0.1", "localhost", "::1"}
