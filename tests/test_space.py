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
        call = {k: v for k, v in kwargs.items() if k in ("adapter_names", "max_new_tokens", "do_sample")}
        if "adapter_names" not in call:  # the row-scaled path: the tuned row's adapter is the active one
            call["rows"] = ["__base__", model.active_adapter]
        calls.append(call)
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
    assert generate_calls == [{"rows": ["__base__", "bard"], "max_new_tokens": NEW_TOKENS, "do_sample": False}]
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
    assert [c["rows"] for c in generate_calls] == [["__base__", "bard"], ["__base__", "pirate"]]


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
    from hubstyle.space import DEMO_CAPTION

    demo, _ = app
    config = json.loads(urllib.request.urlopen(demo.local_url + "config", timeout=10).read())
    by_id = {c["props"].get("elem_id"): c for c in config["components"] if c.get("props", {}).get("elem_id")}
    table = by_id["demo-table"]["props"]
    assert table["value"]["headers"] == ["prompt", "base", "tuned"]
    assert table["value"]["data"] == [[r["prompt"], r["base"], r["tuned"]] for r in DEMO_ROWS]
    # at 1280 px the tuned column must stay on screen: wrapped cells in fixed-width columns
    assert table["wrap"] is True and table["column_widths"] == ["20%", "40%", "40%"]
    assert "table-layout: fixed" in config["css"] and "white-space: normal" in config["css"]
    assert by_id["demo-caption"]["props"]["value"] == DEMO_CAPTION  # says nothing about decoding it wasn't told
    datasets = [c for c in config["components"] if c["type"] == "dataset"]
    assert [s[0] for s in datasets[0]["props"]["samples"]] == EXAMPLES
    assert config["stylesheets"] == []
    theme_css = urllib.request.urlopen(demo.local_url + "theme.css", timeout=10).read().decode()
    assert "googleapis" not in theme_css and "system-ui" in theme_css
    model_fns = [f for f in demo.fns.values() if f.fn is not None and f.fn.__name__ == "generate"]
    assert [(f.api_name, f.concurrency_limit) for f in model_fns] == [("generate", 1)]


SAMPLED = {"max_new_tokens": 48, "min_new_tokens": 0, "do_sample": True, "temperature": 0.7, "top_p": 0.95, "seed": 0}


def build_folder(out: Path, **kwargs) -> Path:
    from hubstyle.space_folder import build_space_folder

    args = dict(
        base_repo="someone/tiny-base",
        adapters={"bard": "someone/bard-lora", "pirate": "someone/pirate-lora"},
        demo_rows=DEMO_ROWS,
        demo_decoding=SAMPLED,
        title="Bard vs base",
        emoji="🎭",
        license="mit",
        short_description="A tiny model and its Shakespeare adapter",
        examples=EXAMPLES,
        python_version="3.11",
    )
    return build_space_folder(out, **{**args, **kwargs})


def test_space_folder_round_trips(tmp_path, settings):
    import gradio
    from huggingface_hub import SpaceCard

    from hubstyle.space import load_settings
    from hubstyle.space_folder import RUNTIME_PARTS, RUNTIME_SOURCE

    out = build_folder(tmp_path / "space")
    card = SpaceCard.load(out / "README.md")
    assert card.data.models == ["someone/tiny-base", "someone/bard-lora", "someone/pirate-lora"]
    assert card.data.sdk == "gradio" and card.data.sdk_version == gradio.__version__
    assert card.data.python_version == "3.11" and isinstance(card.data.python_version, str)
    assert card.data.app_file == "app.py" and card.data.license == "mit"
    assert card.data.short_description == "A tiny model and its Shakespeare adapter"
    assert "python_version: '3.11'" in (out / "README.md").read_text(encoding="utf-8")
    assert "someone/bard-lora" in card.text and "runs with\n`requirements.txt` alone" in card.text
    requirements = (out / "requirements.txt").read_text().splitlines()
    assert f"gradio=={gradio.__version__}" in requirements
    assert [r.split("==")[0] for r in requirements] == ["torch", "transformers", "peft", "gradio"]  # no hubstyle
    assert "+" not in "".join(requirements)  # no local version tags such as +cpu
    # the app travels in the folder: hubstyle's own runtime module, byte for byte, and an app.py that launches it
    assert (out / "space_app.py").read_bytes() == RUNTIME_SOURCE.read_bytes()
    assert all((out / name).read_bytes() == source.read_bytes() for name, source in RUNTIME_PARTS.items())
    app = (out / "app.py").read_text()
    assert app == (Path(__file__).resolve().parents[1] / "space" / "app.py").read_text()
    assert "from space_app import HubstyleError, launch, load_settings" in app  # bad settings: one line, no traceback
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "app.py", "demo_table.json", "requirements.txt", "space_app.py", "space_config.json",
        "space_models.py", "space_settings.py"]
    loaded = load_settings(out, env={})
    assert loaded.base == "someone/tiny-base" and loaded.adapters["pirate"] == "someone/pirate-lora"
    assert loaded.demo_rows == DEMO_ROWS and loaded.examples == EXAMPLES and loaded.title == "Bard vs base"
    # the caption says how the rows were made: here sampled, so never "greedy"
    assert loaded.demo_caption == ("Continuations made once when the adapters were published (sampling with "
                                   "temperature 0.7, top-p 0.95 and seed 0, up to 48 new tokens):")
    greedy = build_folder(tmp_path / "greedy", demo_decoding={**SAMPLED, "do_sample": False, "chat": "auto"})
    assert load_settings(greedy, env={}).demo_caption == (
        "Answers made once when the adapters were published (greedy decoding, up to 48 new tokens):")

    with pytest.raises(HubstyleError, match="short_description is 61 characters"):
        build_folder(tmp_path / "bad", short_description="x" * 61)
    with pytest.raises(HubstyleError, match="not a Hub repo id"):
        build_folder(tmp_path / "bad", adapters={"x": "/tmp/local//adapter"})
    with pytest.raises(HubstyleError, match=r"^the demo table records no 'decoding'"):
        build_folder(tmp_path / "bad", demo_decoding=None)
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("gradio >== 6", r"^Space requirement 'gradio >== 6' is not a valid requirement \("),
        ("hubstyle>=0.1.0", r"^Space requirement 'hubstyle>=0.1.0': hubstyle is not on PyPI"),
        ("no-such-package-hubstyle-test==1.0", r"names 'no-such-package-hubstyle-test', which is not installed here"),
        ("gradio==0.0.1", r"^Space requirement 'gradio==0.0.1' does not match the installed gradio \d"),
    ],
)
def test_space_requirements_that_would_not_resolve_are_one_line_and_write_nothing(tmp_path, line, message):
    with pytest.raises(HubstyleError, match=message) as err:
        build_folder(tmp_path / "space", extra_requirements=[line])
    assert "\n" not in str(err.value) and not (tmp_path / "space").exists()


def test_the_runtime_imports_only_what_the_space_installs():
    """space_app.py and the modules beside it need torch, transformers, peft and gradio (pinned), ZeroGPU's optional
    spaces, and hubstyle only where they can do without (a fallback on ImportError: the copies beside them)."""
    import ast
    import sys

    from hubstyle.space_folder import PINNED_PACKAGES, RUNTIME_PARTS, RUNTIME_SOURCE

    siblings = {name.removesuffix(".py") for name in RUNTIME_PARTS}
    third_party = {}
    for source in (RUNTIME_SOURCE, *RUNTIME_PARTS.values()):
        tree = ast.parse(source.read_text(encoding="utf-8"))
        tries = [t for t in ast.walk(tree) if isinstance(t, ast.Try)
                 and any(getattr(h.type, "id", "") == "ImportError" for h in t.handlers)]
        guarded = {id(node) for t in tries for stmt in t.body for node in ast.walk(stmt)}
        fallbacks = {id(node) for t in tries for h in t.handlers for node in ast.walk(h)}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for name in names:
                    top = name.split(".")[0]
                    if top in siblings:  # the copy beside it, only where hubstyle is missing
                        assert id(node) in fallbacks, f"{source.name} imports {top} outside an ImportError fallback"
                    elif top not in sys.stdlib_module_names:
                        third_party.setdefault(top, set()).add(id(node) in guarded)
    assert set(third_party) == {*PINNED_PACKAGES, "spaces", "hubstyle"}
    assert third_party["spaces"] == {True} and third_party["hubstyle"] == {True}


def test_the_runtime_asks_and_loads_as_hubstyle_does(tiny_base, adapters):
    """The Space's own helpers (it can't import hubstyle) agree with hubstyle's: prompts, context, bf16, loading."""
    from hubstyle import chat, models, space

    assert space.BASE_ADAPTER_NAME == models.BASE_ADAPTER_NAME
    assert (space.PLAIN_USER, space.PLAIN_ASSISTANT) == (chat.PLAIN_USER, chat.PLAIN_ASSISTANT)
    assert space.bf16_supported(torch.device("cpu")) == models.bf16_supported(torch.device("cpu"))
    plain = models.load_tokenizer(tiny_base)
    for template in ("auto", "plain"):
        want = chat.render_prompt([{"role": "user", "content": "Hello there"}], plain, template)
        assert space.chat_prompt("Hello there", plain, template) == want
    model, tokenizer = space.load_model(str(tiny_base), {"bard": adapters["bard"]})
    assert space.context_length(model) == models.context_length(model) == 128
    assert (tokenizer.padding_side, tokenizer.pad_token) == ("left", plain.pad_token)
    assert list(model.peft_config) == ["bard"]


def test_chat_prompts_render_with_the_template(tmp_path):
    from hubstyle import chat, models, space
    from tests.tiny import make_tiny_chat_base

    tokenizer = models.load_tokenizer(make_tiny_chat_base(tmp_path / "chat"))
    for template in ("auto", "model", "plain"):
        want = chat.render_prompt([{"role": "user", "content": "Hello there"}], tokenizer, template)
        assert space.chat_prompt("Hello there", tokenizer, template) == want


# Run a published Space folder as the Space runtime does (python app.py), with every hubstyle import refused.
WITHOUT_HUBSTYLE = """
import importlib.abc, runpy, sys

class NoHubstyle(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "hubstyle" or name.startswith("hubstyle."):
            raise ModuleNotFoundError(f"No module named {name!r} (a Space has no hubstyle)", name=name)
        return None

sys.meta_path.insert(0, NoHubstyle())
sys.path.insert(0, sys.argv[1])
runpy.run_path(sys.argv[1] + "/app.py", run_name="__main__")
"""


@pytest.mark.slow
def test_a_published_space_folder_runs_without_hubstyle(tmp_path, tiny_base, adapters):
    import subprocess
    import sys

    from gradio_client import Client

    folder = build_folder(tmp_path / "space")
    port = free_port()
    env = {**os.environ, "HUBSTYLE_BASE": str(tiny_base), "HUBSTYLE_ADAPTERS": f"bard={adapters['bard']}",
           "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port)}
    url = f"http://127.0.0.1:{port}/"
    proc = subprocess.Popen([sys.executable, "-c", WITHOUT_HUBSTYLE, str(folder)], cwd=folder, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the Space app exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
            try:
                config = json.loads(urllib.request.urlopen(url + "config", timeout=2).read())
                break
            except OSError:
                assert time.monotonic() < deadline, "the Space app did not start within 180 s"
                time.sleep(0.5)
        assert any(c.get("props", {}).get("elem_id") == "demo-table" for c in config["components"])
        client = Client(url, verbose=False, analytics_enabled=False, download_files=False)
        try:
            base_text, tuned_text = client.predict(PROMPT, "bard", NEW_TOKENS, 0.0, 1.0, 0, api_name="/generate")
        finally:
            client.close()
        assert base_text == reference(tiny_base, None, PROMPT, NEW_TOKENS)
        assert tuned_text == reference(tiny_base, adapters["bard"], PROMPT, NEW_TOKENS) != base_text
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr.close()


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


def test_nothing_leaves_the_machine(app, connections):
    """Launch, config, theme and every request above only ever connected to this machine (no analytics, fonts)."""
    urllib.request.urlopen(app[0].local_url, timeout=10).read()  # the page itself, as a browser loads it first
    hosts = {address[0] for address in connections if isinstance(address, tuple)}
    assert hosts and hosts <= {"127.0.0.1", "localhost", "::1"}


@pytest.mark.parametrize("embedding", [False, True])
def test_row_scaled_lora_gives_peft_mixed_batch_tokens_and_leaves_the_model_as_it_was(tiny_base, tmp_path, embedding):
    """LoRA on Linear layers runs as one delta scaled per row; an adapter with an embedding LoRA falls back to peft's
    mixed batches."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    from hubstyle.models import load_tokenizer
    from hubstyle.space import RowScaledLora, SideBySide

    torch.manual_seed(5)
    targets = ["c_attn", "c_fc"] + (["wte"] if embedding else [])
    config = LoraConfig(r=4, lora_alpha=16, target_modules=targets, init_lora_weights=False, fan_in_fan_out=True)
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_base), config).save_pretrained(tmp_path / "a")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), tmp_path / "a",
                                      adapter_name="a").eval()
    tokenizer = load_tokenizer(tiny_base)
    batch = dict(tokenizer([PROMPT, PROMPT], return_tensors="pt"))
    gen = dict(max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert RowScaledLora(model, "a", [False, True]).usable is not embedding
    with torch.inference_mode():
        mixed = model.generate(**batch, adapter_names=["__base__", "a"], **gen)
    out = SideBySide(model, tokenizer, ["a"]).generate(batch, "a", **gen)
    assert torch.equal(out, mixed)
    assert not torch.equal(out[0], out[1])
    assert all("forward" not in vars(m) for m in model.modules())  # the per-row forwards were taken off again
