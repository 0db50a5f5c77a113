"""Load a published style model and write with it: ``load_style("alice/shakespeare")("To be")``.

A style repo is either an adapter repo (``adapter_config.json``: peft LoRA over the base it names) or a merged repo
(a plain transformers model whose card names its ``base_model``); the base may be a causal LM or a seq2seq LM (T5),
whose generator answers the prompt it reads with its encoder. Either way the result is a ``StyleGenerator``
that continues prompts greedily by default, so the same prompt gives the same text, and that can show the base
model's continuation beside the styled one.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from hubstyle.errors import HubstyleError
from hubstyle.layout import RESTYLER_FACTS, TRAINING_FACTS

DEFAULT_REPO_ID = "hubstyle/shakespeare"  # the published Shakespeare adapter that load_shakespearean() loads
ADAPTER_CONFIG = "adapter_config.json"
README = "README.md"


@dataclass
class StyleGenerator:
    """A loaded style model: call it with a prompt for the styled continuation, ``compare`` for base vs. styled."""

    model: Any
    tokenizer: Any
    repo: str
    kind: str  # "adapter" or "merged"
    base_model: str | None
    device: torch.device
    _base: Any = field(default=None, repr=False)
    chat_format: str | None = None  # 'model': prompts are a user's turn in the chat template; None: continued as text
    restyler: dict | None = None  # a restyler's facts (instruction, style): then ``restyle`` works

    def __call__(
        self,
        prompt: str | list[dict[str, str]],
        max_new_tokens: int = 60,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> str:
        """Return the styled answer to ``prompt`` (a chat model: the prompt is the user's turn, or give ``messages``)
        or, for a model trained on plain text, its continuation (without the prompt); greedy unless ``do_sample``."""
        return _generate(self.model, self.tokenizer, self._render(prompt), self.device, max_new_tokens, do_sample,
                         temperature, top_p, seed, chat=self.chat_format is not None)

    def chat(self, messages: list[dict[str, str]], max_new_tokens: int = 60, do_sample: bool = False,
             temperature: float = 1.0, top_p: float = 1.0, seed: int | None = None) -> str:
        """Return the assistant's next turn after ``messages`` ({"role", "content"} dicts), in the style."""
        if self.chat_format is None:
            raise HubstyleError(f"'{self.repo}' was trained on plain text, not chat: call it with a prompt to continue")
        if not isinstance(messages, list) or not messages:
            raise HubstyleError("messages must be a non-empty list of {'role', 'content'} dicts")
        return self(messages, max_new_tokens, do_sample, temperature, top_p, seed)

    def restyle(self, text: str | list[str], max_new_tokens: int = 96) -> str | list[str]:
        """Return ``text`` rewritten in the style, sentence by sentence (a restyler repo only)."""
        if self.restyler is None:
            raise HubstyleError(f"'{self.repo}' is a style model, not a restyler; load a restyler repo to restyle text")
        from hubstyle.restyle.model import Restyler

        return Restyler(self.model, self.tokenizer, self.restyler["instruction"], self.restyler.get("style", ""),
                        self.repo, self.restyler).restyle(text, max_new_tokens=max_new_tokens)

    def _render(self, prompt: str | list[dict[str, str]]) -> str:
        """Return what the model reads: the chat template's rendering for a chat model, else the prompt itself."""
        if self.chat_format is None:
            if not isinstance(prompt, str):
                raise HubstyleError(f"'{self.repo}' continues plain text: give a prompt string, not messages")
            return prompt
        from hubstyle.chat import render_prompt
        from hubstyle.data.chat import check_messages

        if isinstance(prompt, str):
            if not prompt.strip():
                raise HubstyleError(f"the prompt must be non-empty text, got {prompt!r}")
            messages = [{"role": "user", "content": prompt}]
        else:
            messages = prompt
            check_messages([*messages, {"role": "assistant", "content": ""}], "messages")
        if self.restyler is not None and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": self.restyler["instruction"]}, *messages]
        return render_prompt(messages, self.tokenizer, self.chat_format)

    def compare(
        self,
        prompt: str,
        max_new_tokens: int = 60,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> tuple[str, str]:
        """Return ``(base_text, styled_text)``: the base model's and the styled continuation of ``prompt``.

        For an adapter repo the base is the same model with the adapter disabled; for a merged repo it is the
        card's ``base_model``, loaded on first use.
        """
        settings = (max_new_tokens, do_sample, temperature, top_p, seed)
        rendered, chat = self._render(prompt), self.chat_format is not None
        if self.kind == "adapter":
            with self.model.disable_adapter():
                base_text = _generate(self.model, self.tokenizer, rendered, self.device, *settings, chat=chat)
        else:
            base_text = _generate(self.base, self.tokenizer, rendered, self.device, *settings, chat=chat)
        return base_text, self(prompt, *settings)

    @property
    def base(self):
        """Return the plain base model (for a merged repo, loaded from ``base_model`` on first use)."""
        if self.kind == "adapter":
            return self.model.get_base_model()
        if self._base is None:
            if not self.base_model:
                raise HubstyleError(
                    f"merged repo '{self.repo}' names no base_model in its card; pass base=... to load_style"
                )
            self._base = _load_causal_lm(self.base_model, self.device)
        return self._base


def load_style(
    repo_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    device: str | torch.device | None = None,
    base: str | os.PathLike | None = None,
) -> StyleGenerator:
    """Return a ``StyleGenerator`` for an adapter or merged style repo (Hub id or local folder).

    ``revision`` is the style repo's branch, tag or commit. ``base`` overrides the base model the repo names (a
    local folder or Hub id): the adapter goes on top of it, and a merged repo's ``compare`` uses it.
    """
    from hubstyle.models import check_safe_weights, has_tokenizer, local_copy
    from hubstyle.models import device as default_device

    dev = torch.device(device) if device is not None else default_device()
    folder = local_copy(repo_or_path, revision)
    card_base = _card_base_model(folder)
    if (folder / ADAPTER_CONFIG).is_file():
        from peft import PeftModel

        named = _read_json(folder / ADAPTER_CONFIG).get("base_model_name_or_path") or card_base
        base_id = str(base) if base is not None else named
        if not base_id:
            raise HubstyleError(
                f"adapter '{repo_or_path}' names no base model (adapter_config.json or card); pass base=..."
            )
        check_safe_weights(folder)
        try:
            model = PeftModel.from_pretrained(_load_causal_lm(base_id, dev), str(folder)).eval()
        except (ValueError, RuntimeError) as err:
            raise HubstyleError(
                f"adapter '{repo_or_path}' does not fit the base '{base_id}': {str(err).splitlines()[0]}"
            ) from None
        tokenizer = _load_tokenizer(folder if has_tokenizer(folder) else base_id)
        return StyleGenerator(model, tokenizer, str(repo_or_path), "adapter", base_id, dev,
                              chat_format=_chat_format(folder, tokenizer), restyler=_restyler_facts(folder))
    if (folder / "config.json").is_file():
        model = _load_causal_lm(folder, dev)
        tokenizer = _load_tokenizer(folder)
        return StyleGenerator(model, tokenizer, str(repo_or_path), "merged",
                              str(base) if base is not None else card_base, dev,
                              chat_format=_chat_format(folder, tokenizer))
    raise HubstyleError(
        f"'{repo_or_path}' has neither adapter_config.json nor config.json; point at a style adapter or merged model"
    )


def load_shakespearean(
    repo_id: str | os.PathLike = DEFAULT_REPO_ID,
    *,
    revision: str | None = None,
    device: str | torch.device | None = None,
) -> StyleGenerator:
    """Return the Shakespeare ``StyleGenerator`` (``DEFAULT_REPO_ID`` unless another repo or folder is given)."""
    return load_style(repo_id, revision=revision, device=device)


# --------------------------------------------------------------------------------------------------- helpers


def _chat_format(folder: Path, tokenizer) -> str | None:
    """Return 'model' when the repo is a chat model (trained on chat data, or untagged with a chat template) and
    prompts go through its chat template, else None (plain text, continued)."""
    facts_file = folder / TRAINING_FACTS
    if facts_file.is_file():
        trained_as = _read_json(facts_file).get("chat_format")
        if trained_as != "model":
            return None  # plain text, or the `Name: line` format a template-less base was trained in
    elif (folder / RESTYLER_FACTS).is_file():
        return "model"
    return "model" if getattr(tokenizer, "chat_template", None) else None


def _restyler_facts(folder: Path) -> dict | None:
    path = folder / RESTYLER_FACTS
    return _read_json(path) if path.is_file() else None


def _generate(model, tokenizer, prompt: str, dev: torch.device, max_new_tokens: int, do_sample: bool,
              temperature: float, top_p: float, seed: int | None, *, chat: bool = False) -> str:
    from hubstyle.models import is_seq2seq

    if not isinstance(prompt, str) or not prompt.strip():
        raise HubstyleError(f"the prompt must be non-empty text, got {prompt!r}")
    if int(max_new_tokens) < 1:
        raise HubstyleError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    # a rendered chat prompt holds its special tokens already; the answer ends at the end of the assistant's turn
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=not chat).to(dev)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    kwargs: dict[str, Any] = {"max_new_tokens": int(max_new_tokens), "do_sample": bool(do_sample), "pad_token_id": pad}
    if chat:
        kwargs["eos_token_id"] = tokenizer.eos_token_id
    if do_sample:
        kwargs.update(temperature=float(temperature), top_p=float(top_p))
    with torch.no_grad(), _seeded(seed, dev):
        out = model.generate(**inputs, **kwargs)
    # a seq2seq model (T5) answers the prompt it read with its encoder: its output holds no copy of the prompt
    new = out[0] if is_seq2seq(model) else out[0, inputs["input_ids"].shape[1]:]
    text = tokenizer.decode(new, skip_special_tokens=True)
    return text.strip() if chat else text  # a continuation keeps its leading space; an answer is its own text


@contextlib.contextmanager
def _seeded(seed: int | None, dev: torch.device) -> Iterator[None]:
    """Seed torch for the block (when ``seed`` is given) without disturbing the caller's random state."""
    if seed is None:
        yield
        return
    devices = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield


def _load_causal_lm(path_or_id: str | os.PathLike, dev: torch.device):
    from hubstyle.models import load_base

    return load_base(path_or_id).to(dev).eval()


def _load_tokenizer(path_or_id: str | os.PathLike):
    from hubstyle.models import load_tokenizer

    return load_tokenizer(path_or_id)


def _card_base_model(folder: Path) -> str | None:
    card = folder / README
    if not card.is_file():
        return None
    from huggingface_hub import ModelCard

    base = ModelCard.load(card).data.get("base_model")
    if isinstance(base, list):
        base = base[0] if len(base) == 1 else None
    return base


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HubstyleError(f"{path} is not valid JSON ({err})") from None
