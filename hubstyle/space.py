"""The demo Space: base and style-tuned continuations side by side, streamed from one batched generate call.

One base model sits in memory with every style adapter loaded. A request runs ONE ``generate`` on a batch of the
same prompt twice, with peft's mixed-adapter batches (``adapter_names=["__base__", style]``): row 0 is the base
model, row 1 the tuned one. A streamer that understands batches feeds both columns as tokens arrive.

``space/app.py`` only calls :func:`load_settings` and :func:`launch`; :func:`build_space_folder` writes the
Space repository (README front matter, requirements, app, config, demo table).
"""

import difflib
import json
import os
import queue
import shutil
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

# Gradio reads this at import and at Blocks() time (a version check and telemetry go out otherwise).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import torch  # noqa: E402
from transformers import StoppingCriteria  # noqa: E402
from transformers.generation.streamers import BaseStreamer  # noqa: E402

from hubstyle.card import check_repo_id  # noqa: E402
from hubstyle.errors import HubstyleError  # noqa: E402
from hubstyle.models import BASE_ADAPTER_NAME, autocast, context_length, load_adapters, load_base, load_tokenizer  # noqa: E402

SPACE_CONFIG_FILE = "space_config.json"
DEMO_TABLE_FILE = "demo_table.json"
DEMO_COLUMNS = ("prompt", "base", "tuned")
CONFIG_KEYS = ("base", "adapters", "demo_table", "examples", "limits", "title", "description", "bf16", "chat")
LIMIT_KEYS = ("max_new_tokens", "max_prompt_chars")
SPACE_COLORS = ("red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray")
SHORT_DESCRIPTION_MAX = 60
PINNED_PACKAGES = ("torch", "transformers", "peft", "gradio")
APP_SOURCE = Path(__file__).resolve().parents[1] / "space" / "app.py"

try:  # ZeroGPU: the decorated function gets a GPU for the length of one call
    import spaces

    gpu: Callable = spaces.GPU
except ImportError:

    def gpu(fn: Callable) -> Callable:
        """Return ``fn`` unchanged (the stand-in for ``spaces.GPU`` off Hugging Face Spaces)."""
        return fn


# ---------------------------------------------------------------------------------------------------------------
# Settings


@dataclass
class SpaceSettings:
    """What a Space shows: which base and adapters, the cached demo table, example prompts and request limits."""

    base: str
    adapters: dict[str, str]
    demo_rows: list[dict[str, str]] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)
    max_new_tokens: int = 128
    max_prompt_chars: int = 500
    title: str = "hubstyle: base vs style adapter"
    description: str = (
        "Type the start of a text. The left column continues it with the base model, the right column with the "
        "same model wearing a style adapter; both come from one batched generation."
    )
    bf16: bool = True  # bf16 autocast where the hardware is fast at it (outputs then differ slightly from fp32)
    chat: str | None = None  # chat template setting (auto/model/plain): prompts asked as a user's turn; None: continue

    def __post_init__(self) -> None:
        if self.chat is not None and self.description == SpaceSettings.description:
            self.description = (
                "Ask something. The left column answers with the base model, the right column with the same model "
                "wearing a style adapter; both come from one batched generation."
            )
        if not self.adapters:
            raise HubstyleError("a Space needs at least one adapter; set 'adapters' or HUBSTYLE_ADAPTERS=name=repo")
        if self.max_new_tokens < 1 or self.max_prompt_chars < 1:
            raise HubstyleError(
                f"limits must be positive, got max_new_tokens={self.max_new_tokens}, "
                f"max_prompt_chars={self.max_prompt_chars}"
            )
        self.demo_rows = [_demo_row(row, i) for i, row in enumerate(self.demo_rows)]

    def cache_key(self) -> tuple:
        """Return what identifies the loaded model: the base, the adapters and the precision."""
        return (self.base, tuple(sorted(self.adapters.items())), self.bf16)


def _demo_row(row: Mapping[str, Any], index: int) -> dict[str, str]:
    missing = [c for c in DEMO_COLUMNS if c not in row]
    if missing:
        raise HubstyleError(f"demo table row {index} lacks {missing}; each row needs keys {list(DEMO_COLUMNS)}")
    return {c: str(row[c]) for c in DEMO_COLUMNS}


def _check_keys(found: Iterable[str], allowed: Sequence[str], where: str) -> None:
    for key in found:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f"; known keys: {', '.join(allowed)}"
            raise HubstyleError(f"unknown key '{key}' in {where}{hint}")


def parse_adapters(text: str) -> dict[str, str]:
    """Return ``{name: repo}`` from ``name=repo,name2=repo2`` (the HUBSTYLE_ADAPTERS format)."""
    adapters: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, where = part.partition("=")
        if not sep or not name.strip() or not where.strip():
            raise HubstyleError(f"bad adapter entry '{part}' in HUBSTYLE_ADAPTERS; write name=repo,name2=repo2")
        adapters[name.strip()] = where.strip()
    return adapters


def _resolve(value: str, folder: Path | None) -> str:
    # "./x" and "../x" in space_config.json mean "next to this file"; anything else is a path or a Hub repo id.
    if folder is not None and value.startswith(("./", "../")):
        return str((folder / value).resolve())
    return value


def load_settings(folder: str | os.PathLike | None = None, *, env: Mapping[str, str] | None = None) -> SpaceSettings:
    """Return the settings from ``folder/space_config.json`` with HUBSTYLE_BASE / HUBSTYLE_ADAPTERS env overrides."""
    env = os.environ if env is None else env
    config: dict[str, Any] = {}
    root = Path(folder) if folder is not None else None
    if root is not None:
        path = root / SPACE_CONFIG_FILE
        if path.is_file():
            try:
                config = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise HubstyleError(f"{path} is not valid JSON: {err}") from err
            _check_keys(config, CONFIG_KEYS, str(path))
            _check_keys(config.get("limits", {}), LIMIT_KEYS, f"{path} 'limits'")
    base = env.get("HUBSTYLE_BASE") or config.get("base")
    if not base:
        where = f"{root / SPACE_CONFIG_FILE}" if root is not None else "the environment"
        raise HubstyleError(f"no base model: set 'base' in {where} or HUBSTYLE_BASE")
    adapters = parse_adapters(env["HUBSTYLE_ADAPTERS"]) if env.get("HUBSTYLE_ADAPTERS") else config.get("adapters", {})
    demo_rows: list = []
    if config.get("demo_table") and root is not None:
        table = root / config["demo_table"]
        if not table.is_file():
            raise HubstyleError(f"demo table '{table}' named in {SPACE_CONFIG_FILE} does not exist")
        demo = json.loads(table.read_text(encoding="utf-8"))
        demo_rows = demo["rows"] if isinstance(demo, dict) else demo  # a run's demo_table.json, or its rows
    limits = config.get("limits", {})
    extra = {k: config[k] for k in ("title", "description", "bf16", "chat") if k in config}
    return SpaceSettings(
        base=_resolve(str(base), root),
        adapters={name: _resolve(str(where), root) for name, where in adapters.items()},
        demo_rows=demo_rows,
        examples=[str(e) for e in config.get("examples", [])],
        **{k: int(v) for k, v in limits.items()},
        **extra,
    )


# ---------------------------------------------------------------------------------------------------------------
# Generation: one model, one batched call, a streamer for batches, a stop switch


class BatchTextStreamer(BaseStreamer):
    """Iterates over ``tuple[str, ...]`` snapshots (one decoded text per batch row) as ``generate`` makes tokens.

    transformers' ``TextIteratorStreamer`` refuses batches; this one keeps each row's new tokens, ignores what a
    row gets after its end-of-sequence token (``generate`` pads finished rows), and re-decodes a row whole each
    step so multi-byte characters come out right once complete.
    """

    def __init__(self, tokenizer, batch_size: int, eos_token_ids: Iterable[int], timeout: float | None = None):
        self.tokenizer = tokenizer
        self.ids: list[list[int]] = [[] for _ in range(batch_size)]
        self.done = [False] * batch_size
        self.eos = set(eos_token_ids)
        self.timeout = timeout
        self.steps = 0
        self.error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue()
        self._prompt_seen = False
        self._ended = False

    def put(self, value: torch.Tensor) -> None:
        """Take the prompt (first call, skipped) or one new token per row, and queue the decoded texts."""
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        for row, token in enumerate(value.reshape(-1).tolist()):
            if self.done[row]:
                continue
            if token in self.eos:
                self.done[row] = True
            else:
                self.ids[row].append(token)
        self.steps += 1
        self._queue.put(self.texts())

    def end(self) -> None:
        """Mark the end of generation (safe to call twice)."""
        if not self._ended:
            self._ended = True
            self._queue.put(None)

    def fail(self, error: BaseException) -> None:
        """Record an error from the generating thread; iteration re-raises it."""
        self.error = error
        self.end()

    def texts(self) -> tuple[str, ...]:
        """Return the decoded text of every row so far."""
        return tuple(self.tokenizer.decode(ids, skip_special_tokens=True) for ids in self.ids)

    def __iter__(self) -> Iterator[tuple[str, ...]]:
        while True:
            item = self._queue.get(timeout=self.timeout)
            if item is None:
                if self.error is not None:
                    raise self.error
                return
            yield item


class StopOnEvent(StoppingCriteria):
    """A ``StoppingCriteria`` that returns all-True (stop every row) once ``event`` is set."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor | None, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def check_prompt(prompt: str | None, max_chars: int) -> str:
    """Return the prompt when it is non-empty and at most ``max_chars`` characters; raise HubstyleError otherwise."""
    text = prompt or ""
    if not text.strip():
        raise HubstyleError("the prompt is empty; type the beginning of a text to continue")
    if len(text) > max_chars:
        raise HubstyleError(f"the prompt is {len(text)} characters long; this Space takes at most {max_chars}")
    return text


class SideBySide:
    """One base model with every style adapter loaded; yields (base, tuned) continuations of a prompt."""

    def __init__(self, model, tokenizer, adapter_names: Sequence[str], *, bf16: bool = True, chat: str | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.adapter_names = list(adapter_names)
        self.bf16 = bf16
        self.chat = chat
        eos = model.generation_config.eos_token_id
        if eos is None:
            eos = tokenizer.eos_token_id
        self.eos_token_ids = [eos] if isinstance(eos, int) else list(eos or [])
        if chat is not None and tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in self.eos_token_ids:
            self.eos_token_ids.append(tokenizer.eos_token_id)  # the end of the assistant's turn
        self.context_length = context_length(model)

    @classmethod
    def load(cls, settings: SpaceSettings) -> "SideBySide":
        """Return the base model of ``settings`` with all its adapters loaded, ready to generate."""
        tokenizer = load_tokenizer(settings.base)
        model = load_adapters(load_base(settings.base), settings.adapters)
        return cls(model, tokenizer, list(settings.adapters), bf16=settings.bf16, chat=settings.chat)

    def stream(
        self,
        prompt: str,
        adapter: str,
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
        stop: threading.Event | None = None,
        min_new_tokens: int | None = None,
    ) -> Iterator[tuple[str, str]]:
        """Yield (base_text, tuned_text) after every new token, from ONE ``generate`` on a batch of the prompt twice."""
        if adapter not in self.adapter_names:
            raise HubstyleError(f"unknown adapter '{adapter}'; this Space has {', '.join(self.adapter_names)}")
        if max_new_tokens < 1:
            raise HubstyleError(f"max new tokens must be at least 1, got {max_new_tokens}")
        if self.chat is not None:  # asked as a user's turn, answered as the assistant's
            from hubstyle.chat import render_prompt

            prompt = render_prompt([{"role": "user", "content": prompt}], self.tokenizer, self.chat)
        batch = self.tokenizer([prompt, prompt], return_tensors="pt", padding=True,
                               add_special_tokens=self.chat is None)
        prompt_tokens = batch["input_ids"].shape[1]
        if self.context_length and prompt_tokens + max_new_tokens > self.context_length:
            raise HubstyleError(
                f"the prompt is {prompt_tokens} tokens and {max_new_tokens} new tokens were asked for, but the model "
                f"reads at most {self.context_length}; shorten the prompt or lower max new tokens"
            )
        device = next(self.model.parameters()).device
        batch = {k: v.to(device) for k, v in batch.items()}
        stop = stop or threading.Event()
        streamer = BatchTextStreamer(self.tokenizer, 2, self.eos_token_ids)
        sampling = temperature > 0
        kwargs: dict[str, Any] = dict(
            adapter_names=[BASE_ADAPTER_NAME, adapter],
            max_new_tokens=max_new_tokens,
            do_sample=sampling,
            pad_token_id=self.tokenizer.pad_token_id,
            streamer=streamer,
            stopping_criteria=[StopOnEvent(stop)],
            eos_token_id=self.eos_token_ids,
        )
        if min_new_tokens:
            kwargs["min_new_tokens"] = min_new_tokens
        if sampling:
            kwargs.update(temperature=float(temperature), top_p=float(top_p))
        else:  # silence "temperature is set but do_sample=False" from generation configs that set them
            kwargs.update(temperature=None, top_p=None, top_k=None)

        def run() -> None:
            try:
                if sampling:
                    torch.manual_seed(int(seed))  # one process-wide RNG: the concurrency limit of 1 keeps it ours
                with torch.inference_mode(), autocast(self.bf16, device):
                    self.model.generate(**batch, **kwargs)
            except BaseException as err:  # noqa: BLE001 - handed to the consuming thread, which re-raises it
                streamer.fail(err)
            finally:
                streamer.end()

        thread = threading.Thread(target=run, name="hubstyle-generate", daemon=True)
        thread.start()
        try:
            for base_text, tuned_text in streamer:
                yield base_text, tuned_text
        finally:  # the consumer left (Stop, disconnect, error): stop the model too, not only the stream
            stop.set()
            thread.join()


_LOADED: dict[tuple, SideBySide] = {}
_STOP_EVENTS: dict[str, threading.Event] = {}
_LOAD_LOCK = threading.Lock()


def side_by_side(settings: SpaceSettings) -> SideBySide:
    """Return the loaded model for ``settings`` (loaded once per process, shared by every request)."""
    key = settings.cache_key()
    with _LOAD_LOCK:
        if key not in _LOADED:
            _LOADED[key] = SideBySide.load(settings)
        return _LOADED[key]


def stop_event(session: str) -> threading.Event:
    """Return the stop switch of one browser session (created on first use)."""
    return _STOP_EVENTS.setdefault(session, threading.Event())


@gpu
def stream_side_by_side(
    key: tuple,
    prompt: str,
    adapter: str,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    seed: int,
    session: str,
) -> Iterator[tuple[str, str]]:
    """Yield (base_text, tuned_text) updates for one request (plain arguments only, so ZeroGPU can ship them)."""
    stop = stop_event(session)
    stop.clear()
    try:
        yield from _LOADED[key].stream(
            prompt, adapter, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed, stop=stop
        )
    finally:
        _STOP_EVENTS.pop(session, None)


# ---------------------------------------------------------------------------------------------------------------
# The Blocks


def local_theme():
    """Return the Space's theme: Gradio's default colours with system fonts (no font is fetched from anywhere)."""
    import gradio as gr

    return gr.themes.Default(
        font=[gr.themes.Font("system-ui"), gr.themes.Font("Segoe UI"), gr.themes.Font("Roboto"), "sans-serif"],
        font_mono=[gr.themes.Font("ui-monospace"), gr.themes.Font("DejaVu Sans Mono"), "monospace"],
    )


def build_demo(settings: SpaceSettings):
    """Return the Gradio Blocks of the Space (the model is loaded now; nothing is generated at start-up)."""
    import gradio as gr

    key = settings.cache_key()
    model = side_by_side(settings)
    names = list(settings.adapters)
    default_new = min(64, settings.max_new_tokens)

    def generate(prompt, adapter, max_new_tokens, temperature, top_p, seed, request: gr.Request):
        try:
            prompt = check_prompt(prompt, settings.max_prompt_chars)
            if adapter not in names:
                raise HubstyleError(f"unknown adapter '{adapter}'; choose one of {', '.join(names)}")
            new = max(1, min(int(max_new_tokens or default_new), settings.max_new_tokens))
            session = getattr(request, "session_hash", None) or "anonymous"
            yield "", ""
            yield from stream_side_by_side(
                key, prompt, adapter, new, float(temperature or 0), float(top_p or 1), int(seed or 0), session
            )
        except HubstyleError as err:
            raise gr.Error(str(err)) from err

    def stop(request: gr.Request) -> None:
        event = _STOP_EVENTS.get(getattr(request, "session_hash", None) or "anonymous")
        if event is not None:
            event.set()

    def tuned_label(adapter: str):
        return gr.update(label=f"With the '{adapter}' adapter")

    with gr.Blocks(title=settings.title, analytics_enabled=False) as demo:
        gr.Markdown(f"# {settings.title}\n\n{settings.description}")
        with gr.Row():
            prompt = gr.Textbox(
                label="Prompt",
                lines=3,
                placeholder="To be, or not to be,",
                info=f"At most {settings.max_prompt_chars} characters.",
                elem_id="prompt",
                scale=3,
            )
            adapter = gr.Dropdown(choices=names, value=names[0], label="Style adapter", elem_id="adapter", scale=1)
        with gr.Accordion("Generation settings", open=False):
            with gr.Row():
                max_new = gr.Slider(
                    1, settings.max_new_tokens, value=default_new, step=1, label="Max new tokens", elem_id="max-new"
                )
                temperature = gr.Slider(
                    0.0, 2.0, value=0.7, step=0.05, label="Temperature (0 = greedy)", elem_id="temperature"
                )
                top_p = gr.Slider(0.05, 1.0, value=0.95, step=0.05, label="Top-p", elem_id="top-p")
                seed = gr.Number(value=0, precision=0, label="Seed (same seed, same sample)", elem_id="seed")
        with gr.Row():
            run_btn = gr.Button("Generate", variant="primary", elem_id="generate")
            stop_btn = gr.Button("Stop", variant="stop", elem_id="stop")
        with gr.Row(equal_height=True):
            base_out = gr.Textbox(label="Base model", lines=8, interactive=False, elem_id="base-output")
            tuned_out = gr.Textbox(
                label=f"With the '{names[0]}' adapter", lines=8, interactive=False, elem_id="tuned-output"
            )
        if settings.examples:
            gr.Examples(examples=[[e] for e in settings.examples], inputs=[prompt], cache_examples=False)
        gr.Markdown("Prompts run once when the adapters were published (greedy decoding):")
        gr.Dataframe(
            value={"headers": list(DEMO_COLUMNS), "data": [[r[c] for c in DEMO_COLUMNS] for r in settings.demo_rows]},
            headers=list(DEMO_COLUMNS),
            interactive=False,
            wrap=True,
            label="Demo table",
            elem_id="demo-table",
        )

        inputs = [prompt, adapter, max_new, temperature, top_p, seed]
        # one event for button and Enter: one queue slot drives the model, one Stop cancels it
        event = gr.on(
            [run_btn.click, prompt.submit],
            generate,
            inputs,
            [base_out, tuned_out],
            api_name="generate",
            concurrency_limit=1,
            concurrency_id="generate",
        )
        stop_btn.click(stop, None, None, api_name="stop", cancels=[event], concurrency_limit=None)
        adapter.change(tuned_label, adapter, tuned_out, api_visibility="private", queue=False)
    demo.hubstyle_model = model  # the loaded SideBySide, for tests and benchmarks
    return demo


def launch(settings: SpaceSettings, host: str | None = None, port: int | None = None, **kwargs):
    """Return the launched Blocks of ``settings`` (local only: no share link, no analytics, no remote fonts).

    ``host`` defaults to GRADIO_SERVER_NAME (the Spaces runtime sets 0.0.0.0) or 127.0.0.1; ``port`` to
    GRADIO_SERVER_PORT or the first free one from 7860.
    """
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    demo = build_demo(settings)
    kwargs.setdefault("theme", local_theme())
    kwargs.setdefault("share", False)
    demo.queue(default_concurrency_limit=1)
    demo.launch(server_name=host or os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), server_port=port, **kwargs)
    return demo


# ---------------------------------------------------------------------------------------------------------------
# The Space repository folder


def pinned_requirements(packages: Sequence[str] = PINNED_PACKAGES) -> list[str]:
    """Return ``name==version`` lines for the installed ``packages`` (local tags such as +cpu dropped)."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.version import Version

    lines = []
    for name in packages:
        try:
            lines.append(f"{name}=={Version(version(name)).public}")
        except PackageNotFoundError as err:
            raise HubstyleError(f"'{name}' is not installed; pip install 'hubstyle[space]' to pin it") from err
    return lines


def _readme_body(title: str, base_repo: str, adapters: Mapping[str, str], demo_rows: Sequence[Mapping]) -> str:
    lines = [
        f"# {title}",
        "",
        "Base model and style adapters side by side: each request runs one batched generation in which the first",
        f"row is the base model [{base_repo}](https://huggingface.co/{base_repo}) and the second the same model",
        "with a LoRA style adapter (peft mixed-adapter batches).",
        "",
        "## Adapters",
        "",
        *[f"- **{name}**: [{repo}](https://huggingface.co/{repo})" for name, repo in adapters.items()],
        "",
        "## How to use",
        "",
        "Type the beginning of a text, pick an adapter and press **Generate**; both columns fill as tokens arrive.",
        "**Stop** ends the generation. Temperature 0 decodes greedily; with a temperature above 0 the seed makes",
        "samples repeatable. The demo table below the columns was generated when the adapters were published.",
        "",
        "To load an adapter yourself:",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "from peft import PeftModel",
        "",
        f'base = AutoModelForCausalLM.from_pretrained("{base_repo}")',
        f'model = PeftModel.from_pretrained(base, "{next(iter(adapters.values()))}")',
        "```",
        "",
        f"Built with hubstyle; the {len(demo_rows)} demo rows are in `{DEMO_TABLE_FILE}`.",
    ]
    return "\n".join(lines) + "\n"


def build_space_folder(
    out_dir: str | os.PathLike,
    *,
    base_repo: str,
    adapters: Mapping[str, str],
    demo_rows: Sequence[Mapping[str, str]],
    title: str,
    emoji: str,
    license: str,
    short_description: str,
    hubstyle_requirement: str,
    examples: Sequence[str] = (),
    color_from: str = "indigo",
    color_to: str = "purple",
    python_version: str | None = None,
    max_new_tokens: int = 128,
    max_prompt_chars: int = 500,
    chat: str | None = None,
) -> Path:
    """Return ``out_dir`` after writing a Gradio Space repo: README.md, requirements.txt, app.py, config, demo table."""
    from huggingface_hub import SpaceCard, SpaceCardData

    if not adapters:
        raise HubstyleError("a Space needs at least one adapter repo")
    check_repo_id(base_repo, "base model", namespace_required=False)  # any Hub id, 'gpt2' included
    for name, repo in adapters.items():
        check_repo_id(repo, f"adapter '{name}'")
    if len(short_description) > SHORT_DESCRIPTION_MAX:
        raise HubstyleError(
            f"short_description is {len(short_description)} characters; the Hub takes at most {SHORT_DESCRIPTION_MAX}"
        )
    for name, color in (("color_from", color_from), ("color_to", color_to)):
        if color not in SPACE_COLORS:
            raise HubstyleError(f"{name} '{color}' is not a Space colour; use one of {', '.join(SPACE_COLORS)}")
    if not APP_SOURCE.is_file():
        raise HubstyleError(f"the Space app template {APP_SOURCE} is missing; reinstall hubstyle from source")
    rows = [_demo_row(row, i) for i, row in enumerate(demo_rows)]
    python_version = python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
    requirements = pinned_requirements()
    gradio_version = requirements[PINNED_PACKAGES.index("gradio")].split("==")[1]

    data = SpaceCardData(
        title=title,
        sdk="gradio",
        sdk_version=gradio_version,
        python_version=str(python_version),
        app_file="app.py",
        license=license,
        models=[base_repo, *adapters.values()],
        emoji=emoji,
        colorFrom=color_from,
        colorTo=color_to,
        short_description=short_description,
        pinned=False,
    )
    card = SpaceCard(f"---\n{data.to_yaml()}\n---\n\n{_readme_body(title, base_repo, adapters, rows)}")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    card.save(out / "README.md")
    (out / "requirements.txt").write_text("\n".join([*requirements, hubstyle_requirement]) + "\n", encoding="utf-8")
    shutil.copyfile(APP_SOURCE, out / "app.py")
    config = {
        "base": base_repo,
        "adapters": dict(adapters),
        "demo_table": DEMO_TABLE_FILE,
        "examples": list(examples),
        "limits": {"max_new_tokens": max_new_tokens, "max_prompt_chars": max_prompt_chars},
        "title": title,
    }
    if chat is not None:
        config["chat"] = chat
    (out / SPACE_CONFIG_FILE).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / DEMO_TABLE_FILE).write_text(json.dumps(rows, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return out
