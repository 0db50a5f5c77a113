"""The two sides of an evaluation, base and tuned, behind one interface, whatever the run trained.

``AdapterPair``: one base model with the style adapter on top (a ``PeftModel``). The base side is the same weights
with the adapter switched off (``disable_adapter`` for losses, the ``__base__`` rows of mixed-adapter batches for
generation), so one forward pass per new token serves both columns.

``TwoModels``: a base model and a separately trained whole model (methods ``full`` and ``freeze_attention``), loaded
side by side with one tokenizer (the trained folder's: training saves the base's tokenizer there). Held-out losses
score the same packed blocks with each model. Generation is two batched passes, one per model, with identical
decoding settings and the same seed (each pass seeds a private RNG stream with it), so greedy rows equal what each
model gives alone and sampled rows of both sides start from the same random state; unlike a mixed-adapter batch,
base and tuned rows then never share a batch, which changes nothing for greedy decoding.

``load_pair(base, trained)`` picks the kind from the trained folder: a local folder with a whole model (config.json,
no adapter_config.json) makes ``TwoModels``, anything else (an adapter folder or Hub id) an ``AdapterPair``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

from hubstyle.evaluate.generation import check_adapter, check_prompts, generate, generate_side_by_side
from hubstyle.evaluate.perplexity import base_and_tuned_loss, heldout_blocks
from hubstyle.loop import mean_nll

ADAPTER_CONFIG = "adapter_config.json"


class ModelPair(Protocol):
    """A base and a tuned model to compare: their losses on held-out text and their continuations of prompts."""

    tokenizer: Any
    name: str  # what the tuned side is called in the demo table (the adapter's name for adapter runs)

    def losses(self, texts: Sequence, *, what: str, block_size: int, batch_size: int, bf16: bool, template: str,
               max_blocks: int | None) -> dict[str, float]:
        """Return {"base": loss, "tuned": loss} on ``texts`` packed into the same blocks for both sides."""

    def side_by_side(self, prompts: Sequence[str], **decoding: Any) -> list[tuple[str, str]]:
        """Return (base, tuned) continuations per prompt, both decoded with the same settings ``decoding``."""


@dataclass
class AdapterPair:
    """One PeftModel: the base is the model with adapter ``name`` switched off."""

    model: Any
    tokenizer: Any
    name: str = "style"

    def __post_init__(self) -> None:
        check_adapter(self.model, self.name)

    def losses(self, texts: Sequence, *, what: str = "held-out text", block_size: int = 256, batch_size: int = 8,
               bf16: bool = False, template: str = "auto", max_blocks: int | None = None) -> dict[str, float]:
        return base_and_tuned_loss(self.model, self.tokenizer, texts, self.name, block_size=block_size,
                                   batch_size=batch_size, bf16=bf16, what=what, template=template,
                                   max_blocks=max_blocks)

    def side_by_side(self, prompts: Sequence[str], **decoding: Any) -> list[tuple[str, str]]:
        return generate_side_by_side(self.model, self.tokenizer, prompts, self.name, **decoding)


@dataclass
class TwoModels:
    """A base model and a whole trained model (full or freeze-attention fine-tune) sharing one tokenizer."""

    base: Any
    tuned: Any
    tokenizer: Any
    name: str = "style"

    def losses(self, texts: Sequence, *, what: str = "held-out text", block_size: int = 256, batch_size: int = 8,
               bf16: bool = False, template: str = "auto", max_blocks: int | None = None) -> dict[str, float]:
        blocks = heldout_blocks(self.tuned, self.tokenizer, texts, block_size=block_size, what=what,
                                template=template, max_blocks=max_blocks)
        return {side: mean_nll(model, blocks, batch_size=batch_size, bf16=bf16)
                for side, model in (("base", self.base), ("tuned", self.tuned))}

    def side_by_side(self, prompts: Sequence[str], **decoding: Any) -> list[tuple[str, str]]:
        prompts = check_prompts(prompts)
        base = generate(self.base, self.tokenizer, prompts, **decoding)
        tuned = generate(self.tuned, self.tokenizer, prompts, **decoding)
        return list(zip(base, tuned))


def is_whole_model(trained: str | os.PathLike) -> bool:
    """Return whether ``trained`` is a local folder holding a whole model (config.json, no adapter_config.json): what
    methods ``full`` and ``freeze_attention`` write. Anything else, a Hub id included, is taken for an adapter."""
    folder = Path(trained).expanduser()
    return (folder / "config.json").is_file() and not (folder / ADAPTER_CONFIG).is_file()


def load_pair(base: str, trained: str | os.PathLike, name: str = "style") -> ModelPair:
    """Return the pair of ``base`` and the run's trained folder: TwoModels for a whole model, else an AdapterPair."""
    from hubstyle.models import load_adapters, load_base, load_tokenizer, trained_base

    if is_whole_model(trained):
        # the trained folder holds the tokenizer training used (the base's, saved beside the weights)
        return TwoModels(load_base(base), load_base(trained), load_tokenizer(trained), name)
    # the base as training held it (4-bit nf4 / 8-bit, same compute dtype, or bf16): the model measured is the model
    # trained, and a QLoRA run fits at evaluation where it fitted in training
    return AdapterPair(load_adapters(trained_base(trained).load(base), {name: trained}), load_tokenizer(base), name)
