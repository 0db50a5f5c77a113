"""The demo Space: base and style-tuned answers side by side, streamed from one batched generate call.

One base model sits in memory with every style adapter loaded. A request runs ONE ``generate`` on a batch of the
same prompt twice: row 0 is the base model, row 1 the tuned one (each LoRA delta computed once for the batch and
scaled per row, or peft's mixed-adapter batches, ``adapter_names=["__base__", style]``, for other adapter kinds). A streamer that understands batches feeds both columns as tokens arrive.

This module is the Space's runtime and travels inside every published Space folder (as ``space_app.py``, see
``hubstyle.space_folder``), where hubstyle is not installed: it imports only torch, transformers, peft, gradio and
ZeroGPU's optional ``spaces``, and loads models the way the cards tell a stranger to (``AutoModelForCausalLM``,
``PeftModel``). ``app.py`` only calls :func:`load_settings` and :func:`launch`.
"""

import difflib
import json
import os
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

# Gradio reads this at import and at Blocks() time (a version check and telemetry go out otherwise).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

try:  # ZeroGPU: the decorated function gets a GPU for the length of one call; imported before torch, as it asks
    import spaces

    gpu: Callable = spaces.GPU
except ImportError:

    def gpu(fn: Callable) -> Callable:
        """Return ``fn`` unchanged (the stand-in for ``spaces.GPU`` off Hugging Face Spaces)."""
        return fn


import torch  # noqa: E402
from transformers import StoppingCriteria  # noqa: E402
from transformers.generation.streamers import BaseStreamer  # noqa: E402

try:
    from hubstyle.errors import HubstyleError
except ImportError:  # in a published Space folder, without hubstyle: bad input is still one clear line

    class HubstyleError(Exception):
        """A user-facing error: the message says what was wrong, with the value, and what to do."""


SPACE_CONFIG_FILE = "space_config.json"
# the environment's overrides of space_config.json: local folders in place of Hub ids, e.g. on a machine without the Hub
BASE_ENV, ADAPTERS_ENV = "HUBSTYLE_BASE", "HUBSTYLE_ADAPTERS"
DEMO_TABLE_FILE = "demo_table.json"
DEMO_COLUMNS = ("prompt", "base", "tuned")
CONFIG_KEYS = (
    "base", "adapters", "demo_table", "demo_caption", "examples", "limits", "title", "description", "bf16", "chat",
)
LIMIT_KEYS = ("max_new_tokens", "max_prompt_chars", "max_queue")
BASE_ADAPTER_NAME = "__base__"  # peft's name for "no adapter" in mixed-adapter batches
PLAIN_USER, PLAIN_ASSISTANT = "User", "Assistant"  # hubstyle.chat's `Name: line` format, for bases without a template
DEMO_CAPTION = "Rows made once when the adapters were published:"
# The demo table at 1280 px: fixed column widths and wrapped cells, so a long base answer can't push the tuned
# column off screen.
DEMO_COLUMN_WIDTHS = ["20%", "40%", "40%"]
DEMO_TABLE_CSS = (
    "#demo-table table { table-layout: fixed; width: 100%; }\n"
    "#demo-table th, #demo-table td { white-space: normal; overflow-wrap: anywhere; }\n"
)


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
    # requests waiting for the one generating slot; past this a visitor is told "Queue is full" (memory stays bounded)
    max_queue: int = 16
    title: str = "hubstyle: base vs style adapter"
    description: str = (
        "Type the start of a text. The left column continues it with the base model, the right column with the "
        "same model wearing a style adapter; both come from one batched generation."
    )
    bf16: bool = True  # bf16 weights where the hardware is fast at it (outputs then differ slightly from fp32)
    chat: str | None = None  # chat template setting (auto/model/plain): prompts asked as a user's turn; None: continue
    demo_caption: str = DEMO_CAPTION  # how the demo rows were made (hubstyle writes their decoding settings here)

    def __post_init__(self) -> None:
        if self.chat is not None and self.description == SpaceSettings.description:
            self.description = (
                "Ask something. The left column answers with the base model, the right column with the same model "
                "wearing a style adapter; both come from one batched generation."
            )
        if not self.adapters:
            raise HubstyleError("a Space needs at least one adapter; set 'adapters' or HUBSTYLE_ADAPTERS=name=repo")
        if min(self.max_new_tokens, self.max_prompt_chars, self.max_queue) < 1:
            raise HubstyleError(
                f"limits must be positive, got max_new_tokens={self.max_new_tokens}, "
                f"max_prompt_chars={self.max_prompt_chars}, max_queue={self.max_queue}"
            )
        self.demo_rows = [demo_row(row, i) for i, row in enumerate(self.demo_rows)]

    def cache_key(self) -> tuple:
        """Return what identifies the loaded model: the base, the adapters and the precision."""
        return (self.base, tuple(sorted(self.adapters.items())), self.bf16)


def demo_row(row: Mapping[str, Any], index: int) -> dict[str, str]:
    """Return one demo table row as {prompt, base, tuned} strings; a row lacking one is an error naming it."""
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
    base = env.get(BASE_ENV) or config.get("base")
    if not base:
        where = f"{root / SPACE_CONFIG_FILE}" if root is not None else "the environment"
        raise HubstyleError(f"no base model: set 'base' in {where} or {BASE_ENV}")
    adapters = parse_adapters(env[ADAPTERS_ENV]) if env.get(ADAPTERS_ENV) else config.get("adapters", {})
    demo_rows: list = []
    if config.get("demo_table") and root is not None:
        table = root / config["demo_table"]
        if not table.is_file():
            raise HubstyleError(f"demo table '{table}' named in {SPACE_CONFIG_FILE} does not exist")
        demo = json.loads(table.read_text(encoding="utf-8"))
        demo_rows = demo["rows"] if isinstance(demo, dict) else demo  # a run's demo_table.json, or its rows
    limits = config.get("limits", {})
    extra = {k: config[k] for k in ("title", "description", "bf16", "chat", "demo_caption") if k in config}
    return SpaceSettings(
        base=_resolve(str(base), root),
        adapters={name: _resolve(str(where), root) for name, where in adapters.items()},
        demo_rows=demo_rows,
        examples=[str(e) for e in config.get("examples", [])],
        **{k: int(v) for k, v in limits.items()},
        **extra,
    )


# ---------------------------------------------------------------------------------------------------------------
# Loading: as a stranger would, with transformers and peft. device, bf16_supported and context_length are copies of
# hubstyle.models' (this file cannot import hubstyle); tests/test_architecture.py checks they stay the same code.


def device() -> torch.device:
    """Return the device the Space computes on: the first CUDA GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def bf16_supported(dev: torch.device | None = None) -> bool:
    """Return whether bf16 autocast is fast on ``dev`` (CUDA with bf16, or a CPU with AVX512-BF16/AMX)."""
    dev = dev or device()
    if dev.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def context_length(model_or_config) -> int | None:
    """Return how many positions the model reads; None when its config does not say."""
    config = getattr(model_or_config, "config", model_or_config)
    for key in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def load_model(base: str, adapters: Mapping[str, str], *, bf16: bool = False):
    """Return (PeftModel with every adapter of ``adapters`` loaded over ``base``, its tokenizer), in eval mode.

    ``bf16``: base and adapters in bfloat16 where the device is fast at it (half the memory; on a CPU about twice
    the speed of float32 weights under autocast, which casts every weight at every step); else float32.
    """
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not adapters:
        raise HubstyleError("no adapter given; a Space needs at least one")
    if BASE_ADAPTER_NAME in adapters:
        raise HubstyleError(f"'{BASE_ADAPTER_NAME}' is reserved for the base model; rename that adapter")
    dtype = torch.bfloat16 if bf16 and bf16_supported(device()) else torch.float32
    try:
        tokenizer = AutoTokenizer.from_pretrained(base)
        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype).to(device())
    except OSError as err:  # a Hub id out of reach (offline, not cached), or a folder that is no model
        raise HubstyleError(_out_of_reach("the base model", base, err, next(iter(adapters)))) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # batched generation continues every row from its end
    same_dtype = dict(autocast_adapter_dtype=False)  # peft would keep adapters in float32 over a bf16 base
    for name, where in adapters.items():
        try:
            PeftConfig.from_pretrained(where)  # out of reach is told apart from "does not fit" below
        except (OSError, ValueError) as err:
            raise HubstyleError(_out_of_reach(f"adapter '{name}'", where, err, name)) from None
        try:
            if isinstance(model, PeftModel):
                model.load_adapter(where, adapter_name=name, **same_dtype)
            else:
                model = PeftModel.from_pretrained(model, where, adapter_name=name, **same_dtype)
        except ValueError as err:
            raise HubstyleError(f"adapter '{name}' ({where}) does not fit the base model: {err}") from err
    return model.eval(), tokenizer


def _out_of_reach(what: str, where: str, err: Exception, adapter: str) -> str:
    """Return the one line said when ``what`` cannot be loaded from ``where``: why, and how to run from local folders."""
    reason = str(err).strip().splitlines()[0].split(". ")[0] if str(err).strip() else type(err).__name__
    return (f"cannot load {what} '{where}' ({reason}); without the Hub, set {BASE_ENV} to a local base model folder "
            f"and {ADAPTERS_ENV} to name=folder pairs, e.g. {BASE_ENV}=./base {ADAPTERS_ENV}={adapter}=./adapter")


def _row_lora_layers(model, adapter: str) -> list | None:
    """Return the LoRA layers that carry ``adapter``, or None when one of them is not plain LoRA on a Linear-like
    layer (DoRA and other variants, embeddings, convolutions, dropout in training): peft's own path handles those."""
    try:
        from peft.tuners.lora.layer import Linear as LoraLinear
        from peft.tuners.lora.layer import LoraLayer
    except ImportError:
        return None
    layers = []
    for module in model.modules():
        if not isinstance(module, LoraLayer) or adapter not in getattr(module, "scaling", {}):
            continue
        if type(module) is not LoraLinear or adapter in getattr(module, "lora_variant", {}) or module.merged:
            return None
        layers.append(module)
    return layers or None


class RowScaledLora:
    """For the length of a ``with``: every LoRA layer of ``adapter`` adds its delta to the whole batch, scaled per
    row (``row_on[i]`` False: row i sees the base model), instead of peft's mixed-adapter sub-batches.

    The same arithmetic as peft's forward for the tuned rows up to rounding (the base layer, then ``B(A(x) * scaling)``
    in the adapter's dtype, added to the base layer's output in its dtype; exact when ``scaling`` is a power of two, as
    hubstyle's alpha = 2 x rank gives), with no per-layer indexing or Python bookkeeping: what makes two columns cost about
    one on a CPU. On a CPU the delta is computed in float32 (the adapter's weights copied for the length of the
    ``with`` when stored in bf16: ~9 MiB for rank 16 on SmolLM2-135M). Raises nothing; :meth:`usable` says whether
    the model qualifies.
    """

    def __init__(self, model, adapter: str, row_on: Sequence[bool]):
        self.layers = _row_lora_layers(model, adapter) or []
        self.adapter = adapter
        self.row_on = list(row_on)

    @property
    def usable(self) -> bool:
        return bool(self.layers)

    def __enter__(self) -> "RowScaledLora":
        import torch.nn.functional as F

        for layer in self.layers:
            weight_a = layer.lora_A[self.adapter].weight
            weight_b = layer.lora_B[self.adapter].weight
            kind = weight_a.device.type
            if kind == "cpu":  # rank-16 matmuls: float32 takes ~21 us a layer here, bf16 ~47 (oneDNN's small-GEMM cost)
                dtype = torch.float32
            elif torch.is_autocast_enabled(kind):  # cast once here, not in every step (autocast would per call)
                dtype = torch.get_autocast_dtype(kind)
            else:
                dtype = layer.base_layer.weight.dtype
            weight_a, weight_b = weight_a.to(dtype), weight_b.to(dtype)  # copies only when the dtype differs
            scale = torch.tensor([layer.scaling[self.adapter] if on else 0.0 for on in self.row_on],
                                 dtype=weight_a.dtype, device=weight_a.device).view(-1, 1, 1)

            def forward(x, *args, _base=layer.base_layer, _a=weight_a, _b=weight_b, _scale=scale, **kwargs):
                result = _base(x, *args, **kwargs)
                scale = _scale if x.dim() == 3 else _scale.view(-1, *([1] * (x.dim() - 1)))
                # the row scale on the rank-r hidden, not the wide output; added in place (result is a fresh tensor)
                hidden = F.linear(x if x.dtype == _a.dtype else x.to(_a.dtype), _a).mul_(scale)
                return result.add_(F.linear(hidden, _b))

            layer.forward = forward  # an instance attribute: shadows the class's forward until __exit__
        return self

    def __exit__(self, *exc) -> None:
        for layer in self.layers:
            layer.__dict__.pop("forward", None)


def chat_prompt(prompt: str, tokenizer, chat: str) -> str:
    """Return ``prompt`` as a user's turn and the opening of the assistant's: the tokenizer's chat template, or
    `User: ...` / `Assistant:` lines when it has none or ``chat`` is 'plain' (as hubstyle.chat renders it)."""
    if getattr(tokenizer, "chat_template", None) and chat != "plain":
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    return f"{PLAIN_USER}: {prompt}\n{PLAIN_ASSISTANT}:"


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

    def __init__(self, model, tokenizer, adapter_names: Sequence[str], *, chat: str | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.adapter_names = list(adapter_names)
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
        model, tokenizer = load_model(settings.base, settings.adapters, bf16=settings.bf16)
        return cls(model, tokenizer, list(settings.adapters), chat=settings.chat)

    def generate(self, batch: Mapping[str, torch.Tensor], adapter: str, **kwargs: Any) -> torch.Tensor:
        """Return ``generate``'s output for a batch of two rows: row 0 from the base model, row 1 with ``adapter``.

        Plain LoRA adapters run as one row-scaled delta over the batch (:class:`RowScaledLora`); anything else through
        peft's mixed-adapter batches (``adapter_names``). Both give the tokens of two separate calls.
        """
        rows = RowScaledLora(self.model, adapter, [False, True])
        with torch.inference_mode():
            if rows.usable:
                self.model.set_adapter(adapter)
                with rows:
                    return self.model.generate(**batch, **kwargs)
            return self.model.generate(**batch, adapter_names=[BASE_ADAPTER_NAME, adapter], **kwargs)

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
            prompt = chat_prompt(prompt, self.tokenizer, self.chat)
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
                self.generate(batch, adapter, **kwargs)
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
        gr.Markdown(settings.demo_caption, elem_id="demo-caption")
        gr.Dataframe(
            value={"headers": list(DEMO_COLUMNS), "data": [[r[c] for c in DEMO_COLUMNS] for r in settings.demo_rows]},
            headers=list(DEMO_COLUMNS),
            interactive=False,
            wrap=True,
            column_widths=DEMO_COLUMN_WIDTHS,
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
    kwargs.setdefault("css", DEMO_TABLE_CSS)
    kwargs.setdefault("share", False)
    demo.queue(max_size=settings.max_queue, default_concurrency_limit=1)  # bounded: a burst can't grow it forever
    demo.launch(server_name=host or os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), server_port=port, **kwargs)
    return demo
