"""The demo Space's models: the base with every style adapter loaded (as a stranger would, with transformers and
peft) and one batched ``generate`` per request that streams the base's and the tuned answers side by side. Part of
the Space's runtime (see ``hubstyle.space``): it travels into every Space folder and imports nothing from hubstyle
that it cannot do without."""

import queue
import threading
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

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
    from hubstyle.space_settings import (
        ADAPTERS_ENV,
        BASE_ADAPTER_NAME,
        BASE_ENV,
        PLAIN_ASSISTANT,
        PLAIN_USER,
        HubstyleError,
        SpaceSettings,
    )
except ImportError:  # in a published Space folder, without hubstyle: the copy beside this file
    from space_settings import (
        ADAPTERS_ENV,
        BASE_ADAPTER_NAME,
        BASE_ENV,
        PLAIN_ASSISTANT,
        PLAIN_USER,
        HubstyleError,
        SpaceSettings,
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
