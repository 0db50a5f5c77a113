"""Tiny models for tests: random-init GPT-2 with a tokenizer learned in a second from shared data."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from hubstyle.pretrain import tiny_config, train_tokenizer


def sample_text(n_chars: int = 200_000) -> str:
    """Return the first ``n_chars`` of tinyshakespeare from HUBSTYLE_DATA_DIR."""
    path = Path(os.environ["HUBSTYLE_DATA_DIR"]) / "tinyshakespeare" / "input.txt"
    return path.read_text(encoding="utf-8")[:n_chars]


def make_tiny_base(out: Path, *, seed: int = 0, vocab_size: int = 512, n_layer: int = 2, n_embd: int = 64) -> Path:
    """Save a random-init tiny GPT-2 and its tokenizer to ``out`` (a normal HF model folder) and return it."""
    from transformers import GPT2LMHeadModel

    text = sample_text()
    tok = train_tokenizer([text[i : i + 2000] for i in range(0, len(text), 2000)], vocab_size=vocab_size)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(tiny_config(len(tok), n_layer=n_layer, n_embd=n_embd, n_head=4, n_positions=128))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def toy_run_config(out: Path, prompts: Path):
    """Return a RunConfig of the whole pipeline at toy scale (tiny base, 8 LoRA steps, 24 passages a class).

    Writes its three evaluation prompts to ``prompts`` (the config names that file).
    """
    from hubstyle.config import ClassifierConfig, EvaluationConfig, PretrainConfig, RunConfig, TrainingConfig

    prompts.write_text("Tell me about the weather\nWhat is for dinner tonight\nThe train was late again\n")
    return RunConfig(
        output_dir=str(out),
        pretrain=PretrainConfig(vocab_size=512, n_layer=2, n_embd=64, n_head=4, block_size=64, batch_size=8,
                                max_steps=20),
        training=TrainingConfig(max_steps=8, cutoff_len=64, batch_size=4, learning_rate=3e-3, lora_rank=4,
                                eval_every=4),
        classifier=ClassifierConfig(max_per_class=24),
        evaluation=EvaluationConfig(prompts=str(prompts), demo_prompts=str(prompts), max_new_tokens=8),
    )


@dataclass
class ToyRun:
    """A toy run folder made by `hubstyle run`'s stages, and what its config names (the same prompts file and
    classifier backbone make a copy's stage keys equal, so a copy starts fully cached)."""

    folder: Path
    prompts: Path
    backbone: Path  # a tiny GPT-2 as the style classifier's encoder: seconds instead of MiniLM's half a minute

    def config(self, out: Path | None = None):
        """Return the RunConfig that made the run, writing to ``out`` (default: the run's own folder)."""
        cfg = toy_run_config(out or self.folder, self.prompts)
        cfg.classifier.backbone = str(self.backbone)
        return cfg

    def copy(self, dest: Path):
        """Return the config of a copy of the run folder at ``dest``."""
        shutil.copytree(self.folder, dest)
        return self.config(dest)


CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def make_tiny_chat_base(out: Path, *, seed: int = 0, vocab_size: int = 512, n_layer: int = 2, hidden: int = 64) -> Path:
    """Save a random-init tiny Llama with a ChatML template (SmolLM2's shape, in miniature) to ``out``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    text = sample_text()
    tok = train_tokenizer([text[i : i + 2000] for i in range(0, len(text), 2000)], vocab_size=vocab_size)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.bos_token, tok.eos_token, tok.pad_token = "<|im_start|>", "<|im_end|>", "<|im_end|>"
    tok.chat_template = CHATML_TEMPLATE
    tok.model_max_length = 256
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=n_layer,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    out.mkdir(parents=True, exist_ok=True)
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out
