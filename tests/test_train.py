"""Training: LoRA round trip, full and freeze-attention modes, QLoRA on CPU, checkpoints and exact resume."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file

from hubstyle.config import TrainingConfig
from hubstyle.errors import HubstyleError
from hubstyle.layout import LOSS_HISTORY, LOSS_PLOT, TRAINING_FACTS
from hubstyle.loop import LoopSettings, latest_checkpoint, mean_nll, train_loop
from hubstyle.packing import pack
from hubstyle.train import prepare_model, train
from tests.tiny import sample_text


def _texts() -> tuple[list[str], list[str]]:
    blocks = [b for b in sample_text(60_000).split("\n\n") if b.strip()]
    return blocks[:-40], blocks[-40:]


def _small(**kw) -> TrainingConfig:
    base = dict(cutoff_len=64, batch_size=4, max_steps=12, learning_rate=3e-3, warmup_steps=2,
                checkpoint_every=100, eval_every=6, lora_rank=4, lora_alpha=8, seed=3)
    base.update(kw)
    return TrainingConfig(**base)


def test_lora_adapter_round_trip_gives_identical_logits(tiny_base, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    train_texts, val_texts = _texts()
    report = train(str(tiny_base), train_texts, val_texts, tmp_path / "adapter", _small(), data_facts={"x": 1})
    out = tmp_path / "adapter"
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    facts = json.loads((out / TRAINING_FACTS).read_text())
    assert facts["method"] == "lora" and facts["steps"] == 12 and facts["data"] == {"x": 1}
    history = json.loads((out / LOSS_HISTORY).read_text())
    assert len(history) == 12 and history[-1]["loss"] < history[0]["loss"]
    assert (out / LOSS_PLOT).stat().st_size > 1000
    assert report.trainable_params < report.total_params / 5
    assert json.loads((out / "adapter_config.json").read_text())["target_modules"]

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), out).eval()
    again = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), out).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_base).eval()
    ids = torch.randint(0, 500, (2, 20))
    with torch.no_grad():
        a, b, c = model(ids).logits, again(ids).logits, base(ids).logits
    assert torch.equal(a, b)
    assert not torch.allclose(a, c, atol=1e-4), "the adapter must change the base's predictions"
    blocks = pack(val_texts, AutoTokenizerFor(tiny_base), 64)
    assert mean_nll(model, blocks) < mean_nll(base, blocks)


def AutoTokenizerFor(path):  # noqa: N802 - reads like the class it wraps
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


@pytest.mark.parametrize("method", ["full", "freeze_attention"])
def test_full_and_freeze_attention_modes(tiny_base, tmp_path, method):
    from transformers import AutoModelForCausalLM

    model, _ = prepare_model(str(tiny_base), _small(method=method))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    attention = {n for n, _ in model.named_parameters() if "attn" in n}
    if method == "full":
        assert trainable == {n for n, _ in model.named_parameters()}
    else:
        assert attention and not (trainable & attention) and trainable

    train_texts, val_texts = _texts()
    train(str(tiny_base), train_texts, val_texts, tmp_path / "model", _small(method=method, max_steps=4))
    tuned = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    base = AutoModelForCausalLM.from_pretrained(tiny_base)
    t, b = dict(tuned.named_parameters()), dict(base.named_parameters())
    changed = {n for n in b if not torch.equal(t[n], b[n])}
    if method == "full":
        assert any("attn" in n for n in changed) and any("mlp" in n for n in changed)
    else:
        assert changed and not any("attn" in n for n in changed)


def test_resume_from_checkpoint_matches_uninterrupted_run(tiny_base, tmp_path):
    train_texts, _ = _texts()
    tok = AutoTokenizerFor(tiny_base)
    blocks = pack(train_texts, tok, 64)
    settings = LoopSettings(batch_size=4, learning_rate=3e-3, max_steps=8, warmup_steps=2, checkpoint_every=4, seed=1)
    cfg = _small(lora_dropout=0.1)

    straight, _ = prepare_model(str(tiny_base), cfg)
    train_loop(straight, blocks, settings, checkpoint_dir=tmp_path / "a")

    class Killed(Exception):
        pass

    def kill(path):  # the process dies right after writing its first checkpoint
        raise Killed(path)

    first, _ = prepare_model(str(tiny_base), cfg)
    with pytest.raises(Killed):
        train_loop(first, blocks, settings, checkpoint_dir=tmp_path / "b", on_checkpoint=kill)
    ckpt = latest_checkpoint(tmp_path / "b")
    assert ckpt is not None and ckpt.name.endswith("4")
    assert set(load_file(str(ckpt / "trainable.safetensors"))) == {n for n, p in first.named_parameters() if p.requires_grad}

    resumed, _ = prepare_model(str(tiny_base), cfg)
    result = train_loop(resumed, blocks, settings, checkpoint_dir=tmp_path / "b", resume=True)
    assert result.steps == 8 and [h["step"] for h in result.history] == list(range(1, 9))
    for (name, p), (_, q) in zip(straight.named_parameters(), resumed.named_parameters()):
        if p.requires_grad:
            assert torch.allclose(p, q, atol=1e-6), name


def test_resume_without_checkpoint_is_a_clear_error(tiny_base, tmp_path):
    model, _ = prepare_model(str(tiny_base), _small())
    blocks = torch.randint(0, 100, (8, 16))
    with pytest.raises(HubstyleError, match="nothing to resume"):
        train_loop(model, blocks, LoopSettings(max_steps=2), checkpoint_dir=tmp_path / "none", resume=True)


def test_qlora_4bit_trains_on_cpu(tiny_base, tmp_path):
    pytest.importorskip("bitsandbytes")
    train_texts, val_texts = _texts()
    cfg = _small(method="qlora", max_steps=6, learning_rate=5e-3)
    report = train(str(tiny_base), train_texts, val_texts, tmp_path / "qlora", cfg)
    facts = json.loads((tmp_path / "qlora" / TRAINING_FACTS).read_text())
    assert report.quantization == "4bit" and facts["quantization"] == "4bit"
    history = json.loads((tmp_path / "qlora" / LOSS_HISTORY).read_text())
    assert history[-1]["loss"] < history[0]["loss"]


def test_bad_target_module_names_the_module(tiny_base):
    with pytest.raises(HubstyleError, match="does not have"):
        prepare_model(str(tiny_base), _small(target_modules=["q_proj"]))


def test_tiny_corpus_is_a_clear_error(tiny_base, tmp_path):
    with pytest.raises(HubstyleError, match="fewer than one block"):
        train(str(tiny_base), ["too short"], [], tmp_path / "x", _small())
    assert not (tmp_path / "x").exists()


class Seen(Exception):
    """Raised by the stand-in training loop once it has the validation blocks."""


def _stop_at_the_loop(monkeypatch) -> dict:
    """Replace hubstyle.train's loop with one that keeps the validation blocks it is given (``seen["val"]``) and
    stops by raising ``Seen``."""
    import hubstyle.train

    seen: dict = {}

    def loop(model, blocks, settings, *, val_blocks, **kwargs):
        seen["val"] = val_blocks
        raise Seen

    monkeypatch.setattr(hubstyle.train, "train_loop", loop)
    return seen


def test_the_validation_loss_covers_every_style_evenly(tiny_base, tmp_path, monkeypatch):
    """The validation blocks the loop scores (the card's validation loss) come from each style equally, spread over
    each style's text, not the first 32 blocks of the styles one after another (issue 25)."""
    from hubstyle.models import load_tokenizer

    seen = _stop_at_the_loop(monkeypatch)
    first = [f"Line {i} of the king, my lord, and the queen." for i in range(400)]  # 100+ blocks of 64 tokens
    second = [f"Zebra {i} says quartz." for i in range(60)]
    train_texts, _ = _texts()
    with pytest.raises(Seen):
        train(str(tiny_base), train_texts, {"first": first, "second": second}, tmp_path / "adapter", _small())
    tok = load_tokenizer(tiny_base)
    rows = [tok.decode(row) for row in seen["val"].input_ids]
    assert len(rows) == 32
    assert sum("Zebra" in r for r in rows) == 16 and sum("king" in r for r in rows) == 16
    numbers = [int(n) for r in rows for n in re.findall(r"Line (\d+) ", r)]
    assert min(numbers) < 10 and max(numbers) > 350  # spread over the whole text, not its first blocks


def test_a_style_with_too_little_validation_text_is_pooled_not_refused(tiny_base, tmp_path, monkeypatch):
    seen = _stop_at_the_loop(monkeypatch)
    train_texts, val_texts = _texts()
    with pytest.raises(Seen):
        train(str(tiny_base), train_texts, {"long": val_texts, "short": ["Too short."]}, tmp_path / "a", _small())
    assert len(seen["val"]) == 32
    with pytest.raises(HubstyleError, match="fewer than one block"):
        train(str(tiny_base), train_texts, {"short": ["Too short."]}, tmp_path / "b", _small())


def test_eval_every_zero_trains_without_a_validation_pass(tiny_base, tmp_path):
    train_texts, val_texts = _texts()
    report = train(str(tiny_base), train_texts, val_texts, tmp_path / "adapter", _small(max_steps=4, eval_every=0),
                   data_facts={})
    assert report.final_val_loss is None and report.final_train_loss is not None
    history = json.loads((tmp_path / "adapter" / LOSS_HISTORY).read_text())
    assert len(history) == 4 and not any(row.get("val_loss") is not None for row in history)
    with pytest.raises(HubstyleError, match="eval_every"):
        _small(eval_every=-1)
