"""Packed chat samples are kept apart only if the architecture reads sample boundaries from the position ids
(issue 25): hubstyle checks that once per base and trains one conversation a block when it does not."""

from __future__ import annotations

import pytest
import torch

from hubstyle.data.chat import Conversation
from hubstyle.loop import _PACKING_HONOURED, honours_packing


@pytest.fixture(autouse=True)
def fresh_answers():
    _PACKING_HONOURED.clear()
    yield
    _PACKING_HONOURED.clear()


@pytest.fixture(scope="module")
def tiny_chat_base(tmp_path_factory):
    from tests.tiny import make_tiny_chat_base

    return make_tiny_chat_base(tmp_path_factory.mktemp("chat_base"))


class IgnoresPositions(torch.nn.Module):
    """A causal LM that drops the position ids it is given: packed samples then attend across the boundary."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.config = inner.config

    def forward(self, input_ids, position_ids=None, **kwargs):
        return self.inner(input_ids=input_ids, **kwargs)

    def get_input_embeddings(self):
        return self.inner.get_input_embeddings()


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_gpt2_and_llama_keep_packed_samples_apart(tiny_base, tiny_chat_base, attention):
    from transformers import AutoModelForCausalLM

    for base in (tiny_base, tiny_chat_base):
        model = AutoModelForCausalLM.from_pretrained(base, attn_implementation=attention)
        model.config.use_cache = False
        model.train()
        assert honours_packing(model) is True
        assert model.training  # the check leaves the model as it found it


def test_a_model_that_ignores_position_ids_is_caught(tiny_chat_base):
    from transformers import AutoModelForCausalLM

    model = IgnoresPositions(AutoModelForCausalLM.from_pretrained(tiny_chat_base))
    assert honours_packing(model) is False


def _talks(n: int) -> list[Conversation]:
    return [Conversation([{"role": "user", "content": f"Question {i}?"},
                          {"role": "assistant", "content": f"Answer {i}, good sir."}]) for i in range(n)]


@pytest.mark.parametrize("honoured", [True, False])
def test_training_packs_only_where_the_base_keeps_samples_apart(tiny_chat_base, tmp_path, monkeypatch, honoured):
    import hubstyle.train
    from hubstyle.config import TrainingConfig
    from hubstyle.train import train

    seen = {}

    class Seen(Exception):
        pass

    def loop(model, blocks, settings, *, val_blocks, **kwargs):
        seen.update(train=blocks, val=val_blocks)
        raise Seen

    calls = []
    monkeypatch.setattr(hubstyle.train, "honours_packing", lambda model: calls.append(model) or honoured)
    monkeypatch.setattr(hubstyle.train, "train_loop", loop)
    with pytest.raises(Seen), pytest.warns(UserWarning) if not honoured else _nothing():
        train(str(tiny_chat_base), _talks(24), _talks(4), tmp_path / "adapter",
              TrainingConfig(cutoff_len=128, batch_size=4, max_steps=2, lora_rank=4))
    assert len(calls) == 1
    blocks = seen["train"]
    samples_per_row = [int((row[:n] == 0).sum()) for row, n in zip(blocks.position_ids, blocks.lengths)]
    if honoured:
        assert len(blocks) < 24 and max(samples_per_row) > 1
    else:
        assert len(blocks) == 24 and samples_per_row == [1] * 24 and len(seen["val"]) == 4


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
