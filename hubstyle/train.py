"""Style training: LoRA / QLoRA adapters with peft, or full and freeze-attention fine-tunes, on packed text."""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch

from hubstyle.bases import base_facts
from hubstyle.config import ChatConfig, TrainingConfig
from hubstyle.data.chat import Conversation
from hubstyle.errors import HubstyleError
from hubstyle.fsio import atomic_folder, is_main_process
from hubstyle.layout import LOSS_HISTORY, LOSS_PLOT, TRAINING_FACTS
from hubstyle.loop import LoopSettings, honours_packing, token_loss_sum, train_loop
from hubstyle.models import (
    check_cutoff,
    compute_dtype,
    device,
    is_seq2seq,
    load_base,
    load_tokenizer,
    resolve_dtype,
)
from hubstyle.packing import Blocks, build_blocks
from hubstyle.plots import plot_loss
from hubstyle.seq2seq import TASK_TYPE as SEQ2SEQ_TASK
from hubstyle.seq2seq import PairBatch, encode_pairs, pair_loss_sum, pairs_from_samples
from hubstyle.tracking import Tracker

# LoRA targets per architecture: attention and MLP projections (style lives in both); others fall back to
# peft's "all-linear".
TARGET_MODULES = {
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "gptj": ["q_proj", "k_proj", "v_proj", "out_proj", "fc_in", "fc_out"],
    "opt": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
    "bloom": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "falcon": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    **{
        name: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        for name in ("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "smollm3", "olmo2")
    },
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
}
ATTENTION_MARKERS = ("attn", "attention")
VALIDATION_BLOCKS = 32  # held-out blocks scored every eval_every steps and at the end (the card's validation loss)


@dataclass
class TrainReport:
    """Facts about one training run, recorded for metrics and the model card."""

    method: str
    base_model: str
    out_dir: str
    quantization: str | None
    target_modules: list[str] | str | None
    trainable_params: int
    total_params: int
    train_tokens: int
    steps: int
    seconds: float
    tokens_per_second: float
    bf16: bool
    base_dtype: str
    trained_tokens: int  # tokens of the training set that carry the loss (the assistant's, on chat data)
    chat_format: str | None  # 'model' (the base's chat template), 'plain' (`Name: line`), None: plain text
    final_train_loss: float | None
    final_val_loss: float | None
    hyperparameters: dict
    task_type: str = "CAUSAL_LM"  # peft's task: CAUSAL_LM, or SEQ_2_SEQ_LM for an encoder-decoder base (T5)

    def as_dict(self) -> dict:
        """Return the report as plain data."""
        return asdict(self)


def target_modules_for(model, override: list[str] | None = None) -> list[str] | str:
    """Return the LoRA target modules: `override`, the per-architecture list, or peft's 'all-linear'."""
    if override:
        names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
        unknown = [m for m in override if m not in names]
        if unknown:
            raise HubstyleError(
                f"training.target_modules names '{unknown[0]}', which this model does not have; "
                f"linear layers here include: {', '.join(sorted(linear_module_names(model))[:12])}"
            )
        return list(override)
    return TARGET_MODULES.get(getattr(model.config, "model_type", ""), "all-linear")


def linear_module_names(model) -> set[str]:
    """Return the short names of the model's linear-like layers (what LoRA can target)."""
    from transformers.pytorch_utils import Conv1D

    return {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, Conv1D))}


def lora_config(training: TrainingConfig, targets: list[str] | str, task_type: str = "CAUSAL_LM"):
    """Return the peft LoraConfig of `training` on `targets` for peft task `task_type`."""
    from peft import LoraConfig

    return LoraConfig(
        r=training.lora_rank,
        lora_alpha=training.lora_alpha,
        lora_dropout=training.lora_dropout,
        target_modules=targets,
        task_type=task_type,
    )


def prepare_model(base_model: str, training: TrainingConfig):
    """Return (model, target_modules) ready to train with `training.method`."""
    dtype = resolve_dtype(training.base_dtype, training.method)
    model = load_base(base_model, quantization=training.quantization, dtype=dtype)
    model.config.use_cache = False
    if device().type == "cpu" and model.config._attn_implementation == "sdpa":
        # measured on SmolLM2-135M, 8 x 256 packed tokens, 2 cores: eager attention trains ~8% faster than
        # PyTorch's CPU flash kernel with a packed-sequence mask (GPUs keep sdpa)
        model.set_attn_implementation("eager")
    if training.gradient_checkpointing:
        # non-reentrant: works with frozen embeddings (LoRA) without forcing input grads
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    torch.manual_seed(training.seed)  # adapter initialisation is part of what the seed reproduces
    method = training.method
    if method in ("lora", "qlora"):
        from peft import get_peft_model, prepare_model_for_kbit_training

        targets = target_modules_for(model, training.target_modules)
        if training.quantization:
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=training.gradient_checkpointing,
                                                    gradient_checkpointing_kwargs={"use_reentrant": False})
        # peft keeps the LoRA weights in fp32 over bf16 frozen weights (autocast_adapter_dtype)
        task_type = SEQ2SEQ_TASK if is_seq2seq(model) else "CAUSAL_LM"
        return get_peft_model(model, lora_config(training, targets, task_type)), targets
    if method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model, None
    # freeze_attention: the style is learned by embeddings, MLPs and norms; attention patterns stay the base's
    frozen = 0
    for name, p in model.named_parameters():
        is_attention = any(marker in name for marker in ATTENTION_MARKERS)
        p.requires_grad_(not is_attention)
        frozen += is_attention
    if not frozen:
        raise HubstyleError("freeze_attention found no attention weights (no parameter name contains 'attn')")
    return model, None


def loop_settings(training: TrainingConfig, steps: int, desc: str | None = None) -> LoopSettings:
    """Return the LoopSettings `train` uses for `training` over `steps` optimisation steps."""
    return LoopSettings(
        batch_size=training.batch_size,
        learning_rate=training.learning_rate,
        max_steps=steps,
        warmup_steps=min(training.warmup_steps, steps // 2),
        weight_decay=training.weight_decay,
        grad_clip=training.grad_clip,
        bf16=training.bf16,
        seed=training.seed,
        checkpoint_every=training.checkpoint_every,
        eval_every=training.eval_every,
        gradient_accumulation=training.gradient_accumulation,
        desc=desc or f"{training.method} training",
    )


def training_blocks(
    texts: list[str | Conversation], tokenizer, training: TrainingConfig, chat: ChatConfig, *, seq2seq: bool, what: str,
    pack: bool = True,
) -> Blocks | PairBatch:
    """Return what the loop trains (or validates) on: packed blocks (conversations one a block unless ``pack``), or
    (context, reply) pairs for a seq2seq base."""
    if seq2seq:
        return encode_pairs(pairs_from_samples(texts, what=what), tokenizer, training.cutoff_len, what=what)
    return build_blocks(texts, tokenizer, training.cutoff_len, template=chat.template,
                        assistant_only_loss=chat.assistant_only_loss, what=what, pack=pack)


def validation_sample(per_style: Sequence[Blocks | PairBatch], n: int = VALIDATION_BLOCKS) -> Blocks | PairBatch:
    """Return ``n`` held-out blocks (or pairs) taken evenly from every style: an equal share of each (the remainder
    to the first), spread evenly over each style's blocks rather than its first ones."""
    parts = [p for p in per_style if len(p)]
    if not parts:
        raise HubstyleError("the validation text has no blocks to score")
    shares = [n // len(parts) + (i < n % len(parts)) for i in range(len(parts))]
    picked = []
    for part, share in zip(parts, shares):
        if share:
            index = torch.linspace(0, len(part) - 1, min(share, len(part))).round().long().unique()
            picked.append(part[index])
    return _concat(picked)


def _concat(parts: list):
    """Return one Blocks (or PairBatch) of ``parts``, right-padding 2-D tensors to the widest (labels with the
    ignore index, anything else with 0: padding is neither attended nor scored)."""
    from hubstyle.chat import IGNORE_INDEX

    fields = [f.name for f in dataclasses.fields(parts[0])]
    merged = {}
    for name in fields:
        tensors = [getattr(p, name) for p in parts]
        if any(t is None for t in tensors):
            merged[name] = None
            continue
        if tensors[0].dim() == 2:
            width = max(t.shape[1] for t in tensors)
            fill = IGNORE_INDEX if name == "labels" else 0
            tensors = [torch.nn.functional.pad(t, (0, width - t.shape[1]), value=fill) for t in tensors]
        merged[name] = torch.cat(tensors)
    return type(parts[0])(**merged)


def train(
    base_model: str,
    train_texts: list[str | Conversation],
    validation_texts: list[str | Conversation] | Mapping[str, list[str | Conversation]],
    out_dir: str | Path,
    training: TrainingConfig | None = None,
    *,
    chat: ChatConfig | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    data_facts: dict | None = None,
    tracker: Tracker | None = None,
) -> TrainReport:
    """Return the TrainReport of training on `train_texts` (plain texts or conversations); the adapter (or model)
    folder lands in `out_dir`; `tracker` (hubstyle.tracking) gets every step's loss, learning rate and tokens/s.
    `validation_texts` is one list, or {style: texts}: the validation loss then covers every style equally."""
    from hubstyle.chat import chat_format

    training = training or TrainingConfig()
    chat = chat or ChatConfig()
    out_dir = Path(out_dir)
    check_cutoff(base_model, training.cutoff_len)
    tokenizer = load_tokenizer(base_model)
    is_chat = any(isinstance(t, Conversation) for t in train_texts)
    fmt = chat_format(tokenizer, chat.template) if is_chat else None
    seq2seq = is_seq2seq(base_model)
    per_style = validation_texts if isinstance(validation_texts, Mapping) else {"validation": validation_texts}

    def blocks(pack: bool = True):
        train_blocks = training_blocks(train_texts, tokenizer, training, chat, seq2seq=seq2seq, what="training text",
                                       pack=pack)
        built, short = [], []
        for style, texts in per_style.items():
            try:
                if texts:
                    built.append(training_blocks(texts, tokenizer, training, chat, seq2seq=seq2seq, pack=pack,
                                                 what=f"validation text of '{style}'"))
            except HubstyleError:
                short += texts  # less than a block of its own: scored with the other short ones
        if short:
            try:
                built.append(training_blocks(short, tokenizer, training, chat, seq2seq=seq2seq, pack=pack,
                                             what="validation text"))
            except HubstyleError:
                if not built:
                    raise
        return train_blocks, validation_sample(built) if built else None

    train_blocks, val_blocks = blocks()
    model, targets = prepare_model(base_model, training)
    if getattr(train_blocks, "position_ids", None) is not None and not honours_packing(model):
        # the architecture would let a packed sample attend to the one before it: one sample a block instead
        warnings.warn(f"{type(model).__name__} does not keep packed samples apart (their position ids); training on "
                      "one conversation a block, padded", stacklevel=2)
        train_blocks, val_blocks = blocks(pack=False)
    hub_id = (base_facts(base_model) or {}).get("hub_id")  # a folder dequantized from a GGUF stands for a Hub model
    if hub_id and hasattr(model, "peft_config"):
        for adapter_config in model.peft_config.values():  # the adapter names the Hub base, never a cache folder
            adapter_config.base_model_name_or_path = hub_id
    steps = training.max_steps or max(1, round(training.epochs * len(train_blocks) / training.batch_size))
    settings = loop_settings(training, steps)
    # what a checkpoint must share with the run resuming it, besides the data (chat rendering included, as token ids
    # and labels) and max_steps, which the loop adds
    run_config = {"base_model": hub_id or str(base_model), **{f"training.{k}": v for k, v in asdict(training).items()}}
    result = train_loop(
        model,
        train_blocks,
        settings,
        val_blocks=val_blocks,
        checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir else None,
        resume=resume,
        run_config=run_config,
        loss_fn=pair_loss_sum if seq2seq else token_loss_sum,
        tracker=tracker,
    )
    report = TrainReport(
        method=training.method,
        base_model=hub_id or str(base_model),
        out_dir=str(out_dir),
        quantization=training.quantization,
        target_modules=targets,
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        total_params=sum(p.numel() for p in model.parameters()),
        train_tokens=result.tokens,
        steps=result.steps,
        seconds=result.seconds,
        tokens_per_second=result.tokens_per_second,
        bf16=result.bf16,
        base_dtype=training.quantization or str(resolve_dtype(training.base_dtype, training.method)).removeprefix("torch."),
        trained_tokens=train_blocks.trained_tokens(),
        chat_format=fmt,
        final_train_loss=result.final_train_loss,
        final_val_loss=result.final_val_loss,
        # where the logs go is no hyper-parameter (and cards would list it)
        hyperparameters={k: v for k, v in asdict(training).items() if k != "report_to"},
        task_type=SEQ2SEQ_TASK if seq2seq else "CAUSAL_LM",
    )
    if is_main_process():
        save_trained(model, tokenizer, out_dir, report, result.history, data_facts or {})
    return report


def save_trained(model, tokenizer, out_dir: Path, report: TrainReport, history: list[dict], data_facts: dict) -> Path:
    """Return `out_dir` after writing the adapter/model, tokenizer, facts, loss history and plot (atomically)."""
    model.config.use_cache = True
    with atomic_folder(out_dir) as stage:
        model.save_pretrained(stage)
        tokenizer.save_pretrained(stage)
        facts = {**report.as_dict(), "data": data_facts}
        if report.quantization == "4bit":  # what evaluation must compute in to measure the model that was trained
            facts["compute_dtype"] = str(compute_dtype()).removeprefix("torch.")
        (stage / TRAINING_FACTS).write_text(json.dumps(facts, indent=2, default=str), encoding="utf-8")
        (stage / LOSS_HISTORY).write_text(json.dumps(history), encoding="utf-8")
        plot_loss(history, stage / LOSS_PLOT, title=f"{report.method} training loss")
    return out_dir
