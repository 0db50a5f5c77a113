"""Benchmark style training on a real base: hubstyle's engine vs TRL's SFTTrainer, measured side by side in one run.

Base: SmolLM2-135M-Instruct (the offline wheel's Q4_1 GGUF dequantized to an fp32 folder by ``hubstyle.bases``).
Data: tinyshakespeare as chat, ``dialogue_conversations(text, None, rounds=1)``: every speech answers the one before,
one user turn + one assistant turn, the loss on the assistant turn only (the bench checks, and prints, whether TRL's
completion mask and hubstyle's labels cover the same tokens). The last 5% of the text (cut at a speech boundary) is
held out; conversations longer than the sequence length are dropped on both sides, so no side truncates.

Four configurations, each in a fresh subprocess with the same thread count, interleaved A B C D (A B C D ...):

  (A) TRL ``SFTTrainer`` as its LoRA docs show it: ``SFTConfig`` defaults plus ``peft_config=LoraConfig(...)``, the
      conversations as a conversational prompt/completion dataset (SmolLM2's ChatML template has no
      ``{% generation %}`` markers, so completion-only loss is TRL's way to train the assistant turn only). Defaults
      that matter for speed: each conversation padded to the longest in its batch, fp32 weights (TRL loads a model
      path in float32), bf16 autocast (``SFTConfig.bf16`` defaults to True, on CPU too), gradient checkpointing on.
  (B) TRL tuned as far as its config goes: ``packing=True`` (best-fit decreasing, which turns on ``padding_free``),
      ``bf16=True`` with frozen weights loaded in bf16 (``model_init_kwargs={"dtype": "bfloat16"}``, as hubstyle holds
      them) where bf16 is fast, fp32 where it is not (a CPU without avx512_bf16/AMX, as hubstyle trains there), and
      gradient checkpointing off (it only saves memory, which a 135M model does not need here).
  (C) hubstyle: ``build_blocks`` (samples packed whole into 256-token blocks, labels on the assistant tokens,
      positions restarting per sample) + ``prepare_model`` + ``train_loop``, as ``hubstyle train`` calls them.
  (D) hubstyle again, with A's number of optimizer steps (so about 2.5x A's tokens): the equal-steps comparison.

All: LoRA r16 / alpha 32 / dropout 0 (hubstyle's default) on q,k,v,o,gate,up,down; batch 8 sequences of at most
256 tokens; the same learning rate, AdamW betas (0.9, 0.95), no weight decay, gradient clip 1.0, and hubstyle's
schedule (linear warmup, then cosine to 10% of the peak) given to TRL as ``cosine_warmup_with_min_lr``. B and C run
``--steps`` steps of 8 packed blocks; A's 8 sequences are single conversations (~100 tokens, not 256), so A gets as
many more steps as make the same real-token budget; D takes A's step count. Warmup follows hubstyle's rule for each
step count (``loop_settings``), so A and D share a schedule, and B and C another. Real tokens are non-padding tokens:
for TRL counted where the model sees them (attention mask, or every position when padding-free), for hubstyle
``LoopResult.tokens``. Time runs from the first step to the last: set-up (model load, TRL's dataset tokenization,
hubstyle's packing) is left out on every side.

Held-out loss: each saved adapter is loaded with ``peft.PeftModel.from_pretrained`` on the same fp32 base and
scored by ``hubstyle.loop.mean_nll`` (fp32) over ``build_blocks`` of the same held-out conversations: the mean
NLL of the assistant tokens.

    python bench/train_throughput.py [--steps N] [--repeats R] [--out FILE.json] [--profile auto|yes|no]

``--profile auto`` (the default) profiles one hubstyle step with torch.profiler when hubstyle trains under
500 tokens/s, and prints where its CPU time goes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from hubstyle.machine import load_average, machine_summary, matmul_peak_gflops  # noqa: E402

CONFIGS = ("A", "B", "C", "D")
LABELS = {
    "A": "(A) TRL SFTTrainer, defaults",
    "B": "(B) TRL packing+bf16 tuned",
    "C": "(C) hubstyle engine",
    "D": "(D) hubstyle, A's step count",
}
TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0}  # hubstyle's default; the same on every side
BATCH = 8
MAX_LENGTH = 256
LEARNING_RATE = 2e-4  # TRL's LoRA docs use 2e-4; hubstyle's default too
SEED = 0
HELD_OUT_SHARE = 0.05
HELD_OUT_CONVERSATIONS = 150  # the first ones of the held-out text: ~5k scored assistant tokens per model
DEFAULT_STEPS = 10  # about 12 minutes on 2 idle cores, TRL's two runs taking most of it
# targets
SPEEDUP_VS_A = 3.0
SPEEDUP_VS_B = 2.0
MIN_TOKENS_PER_S = 500.0
LOSS_TOLERANCE = 0.02  # nats: run-to-run noise of a 10-step LoRA run is about this size


# --- data -----------------------------------------------------------------------------------------------------------


def split_text(text: str, held_out_share: float) -> tuple[str, str]:
    """Return (training text, held-out text): the held-out part is the last share, cut at a speech boundary."""
    cut = text.find("\n\n", int(len(text) * (1 - held_out_share)))
    return text[:cut], text[cut + 2 :]


def conversations(text: str, tokenizer, max_length: int) -> tuple[list, int]:
    """Return (one-user-turn, one-assistant-turn conversations of `text` that fit `max_length`, how many were cut)."""
    from hubstyle.chat import encode
    from hubstyle.data.chat import dialogue_conversations

    kept, dropped = [], 0
    for conv in dialogue_conversations(text, None, rounds=1):
        roles = [m["role"] for m in conv.messages]
        assert roles == ["user", "assistant"], roles  # rounds=1 without a speaker: the speech and its answer
        if len(encode(conv, tokenizer).ids) <= max_length:
            kept.append(conv)
        else:
            dropped += 1
    return kept, dropped


def write_pairs(convs: list, path: Path) -> None:
    """Write conversations as JSONL {"user", "assistant"} (what the workers read back)."""
    with path.open("w", encoding="utf-8") as f:
        for conv in convs:
            user, assistant = (m["content"] for m in conv.messages)
            f.write(json.dumps({"user": user, "assistant": assistant}) + "\n")


def read_pairs(path: Path) -> list[dict]:
    """Return the {"user", "assistant"} rows of a JSONL file written by `write_pairs`."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def as_conversations(pairs: list[dict]) -> list:
    """Return hubstyle Conversations (loss on the assistant turn) of {"user", "assistant"} rows."""
    from hubstyle.data.chat import Conversation

    return [
        Conversation([{"role": "user", "content": p["user"]}, {"role": "assistant", "content": p["assistant"]}],
                     loss_on="last")
        for p in pairs
    ]


# --- workers (each configuration runs in its own process) -----------------------------------------------------------


def quiet_libraries() -> None:
    """Silence the libraries' per-step chatter so the bench's own output stays readable."""
    os.environ.setdefault("HUBSTYLE_QUIET", "1")
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    import datasets

    datasets.disable_progress_bars()


def run_trl(config: str, plan: dict, out: Path) -> dict:
    """Return the figures of one TRL SFTTrainer run (config 'A' or 'B'); the adapter is saved under `out`."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    pairs = read_pairs(Path(plan["train_file"]))
    dataset = Dataset.from_list([
        {"prompt": [{"role": "user", "content": p["user"]}],
         "completion": [{"role": "assistant", "content": p["assistant"]}]}
        for p in pairs
    ])
    steps = plan["steps"][config]
    kwargs = dict(
        output_dir=str(out / "trainer"),
        per_device_train_batch_size=BATCH,
        max_steps=steps,
        max_length=MAX_LENGTH,
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="cosine_warmup_with_min_lr",  # warmup (step+1)/W like hubstyle's, not from lr 0
        lr_scheduler_kwargs={"min_lr_rate": 0.1},
        warmup_steps=plan["warmup"][config],
        adam_beta2=0.95,
        weight_decay=0.0,
        max_grad_norm=1.0,
        seed=SEED,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),  # SFTConfig's default bf16=True is refused on a CPU without it
    )
    if config == "B":  # bf16 only where it is fast (hubstyle's own probe): elsewhere it runs ~100x slower than fp32
        from hubstyle.models import bf16_supported

        fast = bf16_supported()
        kwargs.update(packing=True, bf16=fast, gradient_checkpointing=False,
                      model_init_kwargs={"dtype": "bfloat16" if fast else "float32"})
    began = time.perf_counter()
    trainer = SFTTrainer(
        model=plan["base"],
        args=SFTConfig(**kwargs),
        train_dataset=dataset,
        peft_config=LoraConfig(**LORA, target_modules=TARGET_MODULES, task_type="CAUSAL_LM"),
    )
    setup = time.perf_counter() - began
    mask_check = trl_mask_check(trainer, pairs, plan["base"]) if config == "A" else None

    seen = {"real": 0, "positions": 0, "forwards": 0}

    def count(module, args, kw) -> None:
        if not module.training:
            return
        ids = kw["input_ids"]
        mask = kw.get("attention_mask")
        seen["positions"] += ids.numel()
        seen["real"] += int(mask.sum()) if mask is not None else ids.numel()  # padding-free: no padding at all
        seen["forwards"] += 1

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.first = self.last = None
            self.steps = 0

        def on_step_begin(self, args, state, control, **_) -> None:
            if self.first is None:
                self.first = time.perf_counter()

        def on_step_end(self, args, state, control, **_) -> None:
            self.last = time.perf_counter()
            self.steps += 1

    clock = Clock()
    trainer.add_callback(clock)
    trainer.model.register_forward_pre_hook(count, with_kwargs=True)
    trainer.train()
    trainer.model.save_pretrained(str(out / "adapter"))
    base_weight = next(p for n, p in trainer.model.named_parameters() if "q_proj.base_layer" in n)
    lora_weight = next(p for n, p in trainer.model.named_parameters() if "lora_A" in n)
    seconds = clock.last - clock.first
    return {
        "config": config,
        "steps": clock.steps,
        "real_tokens": seen["real"],
        "positions": seen["positions"],
        "forwards": seen["forwards"],
        "seconds": seconds,
        "tokens_per_s": seen["real"] / seconds,
        "setup_s": setup,
        "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
        "engine": {
            "mixed_precision": str(trainer.accelerator.mixed_precision),
            "frozen_weight_dtype": str(base_weight.dtype),
            "lora_weight_dtype": str(lora_weight.dtype),
            "gradient_checkpointing": bool(trainer.args.gradient_checkpointing),
            "packing": bool(trainer.args.packing),
            "padding_free": bool(trainer.padding_free),
            "completion_only_loss": bool(trainer.completion_only_loss),
            "attn_implementation": str(trainer.model.config._attn_implementation),
            "warmup_steps": plan["warmup"][config],
        },
        "mask_check": mask_check,
    }


def trl_mask_check(trainer, pairs: list[dict], base: str, n: int = 50) -> dict:
    """Return how TRL's tokenization of the first `n` conversations compares with hubstyle's: same ids, same loss
    mask, and the tokens only one side trains (decoded, with counts)."""
    from collections import Counter

    from hubstyle.chat import IGNORE_INDEX, encode
    from hubstyle.models import load_tokenizer

    tokenizer = load_tokenizer(base)
    rows = trainer.train_dataset.select(range(n))
    same_ids = same_mask = trl_trained = hub_trained = 0
    only_trl: Counter = Counter()
    only_hubstyle: Counter = Counter()
    for row, conv in zip(rows, as_conversations(pairs[:n])):
        mine = encode(conv, tokenizer)
        theirs = list(row["labels"])  # TRL's labels: the id where the loss is taken, -100 elsewhere
        trl_trained += sum(t != IGNORE_INDEX for t in theirs)
        hub_trained += sum(t != IGNORE_INDEX for t in mine.labels)
        if list(row["input_ids"]) != mine.ids:
            continue
        same_ids += 1
        same_mask += theirs == mine.labels
        for tid, t, h in zip(mine.ids, theirs, mine.labels):
            if (t != IGNORE_INDEX) != (h != IGNORE_INDEX):
                (only_trl if t != IGNORE_INDEX else only_hubstyle)[tokenizer.decode([tid])] += 1
    return {"checked": n, "same_ids": same_ids, "same_ids_and_mask": same_mask, "trl_trained_tokens": trl_trained,
            "hubstyle_trained_tokens": hub_trained, "only_trl_trains": dict(only_trl),
            "only_hubstyle_trains": dict(only_hubstyle)}


def run_hubstyle(config: str, plan: dict, out: Path) -> dict:
    """Return the figures of one hubstyle run (build_blocks + prepare_model + train_loop); the adapter lands in `out`."""
    from hubstyle.loop import train_loop
    from hubstyle.models import load_tokenizer
    from hubstyle.packing import build_blocks
    from hubstyle.train import loop_settings, prepare_model

    began = time.perf_counter()
    training = hubstyle_training(plan["steps"][config])
    blocks = build_blocks(as_conversations(read_pairs(Path(plan["train_file"]))), load_tokenizer(plan["base"]),
                          MAX_LENGTH, what="training conversations")
    model, targets = prepare_model(plan["base"], training)
    settings = loop_settings(training, training.max_steps, desc="hubstyle")
    setup = time.perf_counter() - began
    result = train_loop(model, blocks, settings)
    inner = getattr(model, "module", model)
    inner.save_pretrained(str(out / "adapter"))
    base_weight = next(p for n, p in inner.named_parameters() if "q_proj.base_layer" in n)
    lora_weight = next(p for n, p in inner.named_parameters() if "lora_A" in n)
    return {
        "config": config,
        "steps": result.steps,
        "real_tokens": result.tokens,
        "positions": result.steps * BATCH * MAX_LENGTH,
        "forwards": result.steps,
        "seconds": result.seconds,
        "tokens_per_s": result.tokens / result.seconds,
        "setup_s": setup,
        "losses": [h["loss"] for h in result.history],
        "engine": {
            "mixed_precision": "bf16" if result.bf16 else "no",
            "frozen_weight_dtype": str(base_weight.dtype),
            "lora_weight_dtype": str(lora_weight.dtype),
            "gradient_checkpointing": training.gradient_checkpointing,
            "packing": True,
            "padding_free": False,
            "completion_only_loss": True,
            "attn_implementation": str(inner.config._attn_implementation),
            "warmup_steps": settings.warmup_steps,
            "target_modules": targets,
        },
    }


def hubstyle_training(steps: int):
    """Return the TrainingConfig hubstyle trains C with (its defaults, with this bench's shared settings)."""
    from hubstyle.config import TrainingConfig

    return TrainingConfig(
        lora_rank=LORA["r"], lora_alpha=LORA["lora_alpha"], lora_dropout=LORA["lora_dropout"],
        target_modules=TARGET_MODULES, batch_size=BATCH, cutoff_len=MAX_LENGTH, learning_rate=LEARNING_RATE,
        max_steps=steps, seed=SEED,
    )


def profile_hubstyle(plan: dict, steps: int = 1) -> dict:
    """Return where one hubstyle training run's CPU time goes (torch.profiler, after an untimed 1-step warm-up)."""
    from torch.profiler import ProfilerActivity, profile

    from hubstyle.loop import train_loop
    from hubstyle.models import load_tokenizer
    from hubstyle.packing import build_blocks
    from hubstyle.train import loop_settings, prepare_model

    training = hubstyle_training(steps)
    blocks = build_blocks(as_conversations(read_pairs(Path(plan["train_file"]))), load_tokenizer(plan["base"]),
                          MAX_LENGTH, what="training conversations")
    model, _ = prepare_model(plan["base"], training)
    train_loop(model, blocks, loop_settings(training, 1))  # kernel set-up, not profiled
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        result = train_loop(model, blocks, loop_settings(training, steps))
    vocab = model.get_base_model().config.vocab_size
    categories: dict[str, float] = {}
    top = []
    for event in prof.key_averages(group_by_input_shape=True):
        seconds = event.self_cpu_time_total / 1e6
        category = op_category(event.key, event.input_shapes, vocab, LORA["r"])
        categories[category] = categories.get(category, 0.0) + seconds
        top.append((seconds, event.key, str(event.input_shapes)[:90], event.count, category))
    top.sort(reverse=True)
    total = sum(categories.values())
    return {
        "steps": steps,
        "seconds": result.seconds,
        "tokens_per_s": result.tokens / result.seconds,
        "self_cpu_s_total": total,
        "categories": dict(sorted(categories.items(), key=lambda kv: -kv[1])),
        "top_ops": [{"self_s": s, "op": k, "shapes": sh, "calls": c, "category": cat} for s, k, sh, c, cat in top[:25]],
    }


def op_category(name: str, shapes: list, vocab: int, rank: int) -> str:
    """Return the part of the model an aten op's time belongs to, judged by its name and input shapes."""
    dims = {d for shape in shapes if isinstance(shape, (list, tuple)) for d in shape}
    if any(k in name for k in ("mm", "addmm", "linear", "matmul", "bmm")) and "bmm" not in name:
        if vocab in dims:
            return "vocab projection (matmul)"
        if rank in dims:
            return "LoRA matmuls"
        return "frozen linear matmuls"
    if "attention" in name or "bmm" in name or "softmax" in name and vocab not in dims:
        return "attention"
    if "bernoulli" in name or "dropout" in name or name == "aten::div_":
        return "LoRA dropout (mask, scale)"
    if "silu" in name:
        return "SiLU"
    if any(k in name for k in ("rsqrt", "pow", "mean")):
        return "RMSNorm (pow, mean, rsqrt)"
    if vocab in dims or "cross_entropy" in name or "nll_loss" in name or "log_softmax" in name:
        return "vocab: softmax / loss"
    if any(k in name for k in ("copy_", "_to_copy", "aten::to", "clone", "contiguous")):
        return "casts and copies"
    if "_foreach" in name or "adam" in name.lower() or "addcdiv" in name or "lerp" in name:
        return "optimizer"
    if "mask" in name or "where" in name or "arange" in name or "eq" == name.split("::")[-1]:
        return "masks and indices"
    return "other elementwise (mul/add: norms, SiLU*up, LoRA scale and sum, residuals)"


def worker(config: str, plan_file: Path) -> None:
    """Run one configuration (or the profile) in this process and write its figures as JSON beside the plan."""
    quiet_libraries()
    plan = json.loads(plan_file.read_text(encoding="utf-8"))
    torch.set_num_threads(plan["threads"])
    torch.manual_seed(SEED)
    out = Path(plan["work"]) / f"{config}-{plan['repeat']}"
    out.mkdir(parents=True, exist_ok=True)
    if config == "P":
        figures = profile_hubstyle(plan)
    elif config in ("C", "D"):
        figures = run_hubstyle(config, plan, out)
    else:
        figures = run_trl(config, plan, out)
    figures["threads"] = torch.get_num_threads()
    figures["adapter"] = str(out / "adapter")
    from hubstyle.memory import peak_rss_mb

    figures["peak_rss_mb"] = peak_rss_mb()  # the whole worker: model load, data, training (a fresh process each)
    (out / "figures.json").write_text(json.dumps(figures, indent=2), encoding="utf-8")


def launch(config: str, plan: dict, work: Path) -> dict:
    """Return the figures of `config` run in a fresh Python process (same threads for all), after printing a line."""
    plan_file = work / f"plan-{config}-{plan['repeat']}.json"
    plan_file.write_text(json.dumps(plan), encoding="utf-8")
    env = dict(os.environ, OMP_NUM_THREADS=str(plan["threads"]), MKL_NUM_THREADS=str(plan["threads"]),
               TOKENIZERS_PARALLELISM="false", HUBSTYLE_QUIET="1")
    log = work / f"log-{config}-{plan['repeat']}.txt"
    load = load_average()
    began = time.perf_counter()
    with log.open("w") as f:
        done = subprocess.run([sys.executable, __file__, "--worker", config, "--plan", str(plan_file)],
                              stdout=f, stderr=subprocess.STDOUT, env=env)
    if done.returncode:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise SystemExit(f"worker {config} failed (exit {done.returncode}); last lines of {log}:\n{tail}")
    figures = json.loads((work / f"{config}-{plan['repeat']}" / "figures.json").read_text(encoding="utf-8"))
    figures["load_before"] = load
    figures["process_s"] = time.perf_counter() - began
    if config != "P":
        print(f"  {LABELS[config]:30} repeat {plan['repeat'] + 1}: {figures['steps']} steps, "
              f"{figures['real_tokens']} real tokens in {figures['seconds']:.1f}s = {figures['tokens_per_s']:.0f} "
              f"tokens/s, peak memory {figures['peak_rss_mb'] / 1024:.2f} GB (process {figures['process_s']:.0f}s, load "
              f"before {load:.2f})", flush=True)
    return figures


# --- scoring and FLOPs ----------------------------------------------------------------------------------------------


def held_out_loss(base: str, adapter: str | None, blocks) -> float:
    """Return the mean assistant-token NLL (fp32) of the base with `adapter` loaded (None: the base alone)."""
    from peft import PeftModel

    from hubstyle.loop import mean_nll
    from hubstyle.models import load_base

    model = load_base(base, dtype=torch.float32)
    if adapter:
        model = PeftModel.from_pretrained(model, adapter)
    return mean_nll(model, blocks, batch_size=BATCH, bf16=False)


def flop_model(base: str) -> dict:
    """Return the sizes the FLOP count needs: frozen linear params in the blocks, LoRA params, width, layers, vocab."""
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(base)
    d, ff, layers = c.hidden_size, c.intermediate_size, c.num_hidden_layers
    head_dim = getattr(c, "head_dim", None) or d // c.num_attention_heads
    q_out, kv_out = c.num_attention_heads * head_dim, c.num_key_value_heads * head_dim
    shapes = {"q_proj": (d, q_out), "k_proj": (d, kv_out), "v_proj": (d, kv_out), "o_proj": (q_out, d),
              "gate_proj": (d, ff), "up_proj": (d, ff), "down_proj": (ff, d)}
    linear = layers * sum(i * o for i, o in shapes.values())
    lora = layers * sum(LORA["r"] * (i + o) for name, (i, o) in shapes.items() if name in TARGET_MODULES)
    return {"linear": linear, "lora": lora, "attn_width": q_out, "layers": layers, "vocab": c.vocab_size, "d": d}


def hubstyle_flops(blocks, steps: int, sizes: dict) -> dict:
    """Return the FLOPs of hubstyle's planned run (the exact batches of `batch_order`), split by part.

    Per real token: frozen linears 2N forward + 2N backward (activation gradients only: the weights are frozen);
    LoRA 2L forward + 4L backward (activation and weight gradients); causal attention within the sample,
    QK^T and AV, 4 * width * (position + 1) per layer forward and twice that backward. Per trained (assistant) token,
    the vocabulary projection 2 * V * d forward + 2 * V * d backward (hubstyle computes logits only there; the tied
    embedding is frozen). Padding positions count nothing: they are not useful work.
    """
    from hubstyle.chat import IGNORE_INDEX
    from hubstyle.loop import batch_order

    real = trained = attended = 0
    for step in range(steps):
        batch = blocks[batch_order(len(blocks), BATCH, step, SEED)]
        lengths = batch.lengths
        for row in range(len(batch)):
            n = int(lengths[row])
            real += n
            attended += int((batch.position_ids[row, :n] + 1).sum())
        trained += int((batch.labels[:, 1:] != IGNORE_INDEX).sum())
    linear = real * 4 * sizes["linear"]
    lora = real * 6 * sizes["lora"]
    attention = attended * 12 * sizes["attn_width"] * sizes["layers"]
    head = trained * 4 * sizes["vocab"] * sizes["d"]
    return {"real_tokens": real, "trained_tokens": trained, "linear": linear, "lora": lora, "attention": attention,
            "vocab_head": head, "total": linear + lora + attention + head, "total_without_attention": linear + lora + head}


# --- main -----------------------------------------------------------------------------------------------------------


def prepare(work: Path, threads: int) -> dict:
    """Return the run's plan (base, data files, steps per config) after writing the shared data under `work`."""
    from hubstyle.bases import SMOLLM2_ID, dequantized_folder
    from hubstyle.data.sources import data_dir
    from hubstyle.models import load_tokenizer

    base = str(dequantized_folder(SMOLLM2_ID))
    tokenizer = load_tokenizer(base)
    root = data_dir()
    if root is None or not (root / "tinyshakespeare" / "input.txt").is_file():
        raise SystemExit("set HUBSTYLE_DATA_DIR to the folder that holds tinyshakespeare/input.txt")
    text_path = root / "tinyshakespeare" / "input.txt"
    train_text, held_text = split_text(text_path.read_text(encoding="utf-8"), HELD_OUT_SHARE)
    train, dropped = conversations(train_text, tokenizer, MAX_LENGTH)
    held, held_dropped = conversations(held_text, tokenizer, MAX_LENGTH)
    held = held[:HELD_OUT_CONVERSATIONS]
    write_pairs(train, work / "train.jsonl")
    write_pairs(held, work / "held_out.jsonl")
    return {"base": base, "train_file": str(work / "train.jsonl"), "held_file": str(work / "held_out.jsonl"),
            "work": str(work), "threads": threads, "text": str(text_path),
            "n_train": len(train), "n_train_dropped": dropped, "n_held": len(held), "n_held_dropped": held_dropped}


def plan_steps(plan: dict, steps: int) -> tuple[dict, dict, object]:
    """Return (steps per config, warmup per config, hubstyle's training blocks): A gets C's real-token budget, D A's
    step count; warmup is hubstyle's rule for each step count."""
    from hubstyle.chat import encode
    from hubstyle.loop import batch_order
    from hubstyle.models import load_tokenizer
    from hubstyle.packing import build_blocks
    from hubstyle.train import loop_settings

    tokenizer = load_tokenizer(plan["base"])
    convs = as_conversations(read_pairs(Path(plan["train_file"])))
    blocks = build_blocks(convs, tokenizer, MAX_LENGTH, what="training conversations")
    c_tokens = sum(int(blocks[batch_order(len(blocks), BATCH, s, SEED)].lengths.sum()) for s in range(steps))
    mean_conversation = statistics.mean(len(encode(c, tokenizer).ids) for c in convs)
    a_steps = max(steps, round(c_tokens / (BATCH * mean_conversation)))
    def warmup(n: int) -> int:
        return loop_settings(hubstyle_training(n), n).warmup_steps

    plan["planned_c_tokens"] = c_tokens
    plan["mean_conversation_tokens"] = mean_conversation
    plan["n_blocks"] = len(blocks)
    return ({"A": a_steps, "B": steps, "C": steps, "D": a_steps},
            {"A": warmup(a_steps), "B": warmup(steps), "C": warmup(steps), "D": warmup(a_steps)}, blocks)


def main(argv: list[str] | None = None) -> dict:
    """Return all figures after running the configurations interleaved and printing the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="optimizer steps of B and C (A: equal tokens)")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of A B C D, interleaved")
    parser.add_argument("--out", type=Path, default=None, help="write every figure to this JSON file")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch/OMP threads, all configs")
    parser.add_argument("--profile", choices=("auto", "yes", "no"), default="auto",
                        help="profile one hubstyle step (auto: when it trains under 500 tokens/s)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (data, adapters, worker logs)")
    parser.add_argument("--only", default="ABCD", help="run a subset of the configurations (development)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--plan", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.plan)
        return {}

    quiet_libraries()
    torch.set_num_threads(args.threads)
    from hubstyle.models import bf16_supported

    dtype = torch.bfloat16 if bf16_supported() else torch.float32  # what hubstyle's runs train in here
    print(f"CPU: {machine_summary()}; {args.threads} threads per run; probing the {str(dtype)[6:]} matmul peak ...",
          flush=True)
    peak = matmul_peak_gflops(dtype)
    print(f"{str(dtype)[6:]} matmul peak (1024^2, best over 3 s): {peak:.0f} GFLOP/s; load average "
          f"{load_average():.2f}", flush=True)

    work = Path(tempfile.mkdtemp(prefix="hubstyle-train-bench-"))
    plan = prepare(work, args.threads)
    steps, warmup, blocks = plan_steps(plan, args.steps)
    plan.update(steps=steps, warmup=warmup)
    print(f"base {plan['base']}\ndata: {plan['n_train']} training conversations ({plan['n_train_dropped']} longer "
          f"than {MAX_LENGTH} tokens dropped), {plan['mean_conversation_tokens']:.1f} tokens each on average = "
          f"{plan['n_blocks']} packed blocks; held-out: {plan['n_held']} conversations from the last "
          f"{HELD_OUT_SHARE:.0%} of the text", flush=True)
    print(f"plan: {steps['B']} steps of B and C (C's batches hold {plan['planned_c_tokens']} real tokens); "
          f"{steps['A']} steps of A for about as many, and of D; warmup {warmup}", flush=True)

    runs: dict[str, list[dict]] = {c: [] for c in args.only}
    for repeat in range(args.repeats):
        for config in args.only:
            runs[config].append(launch(config, {**plan, "repeat": repeat}, work))
    slow = "C" in runs and statistics.median(f["tokens_per_s"] for f in runs["C"]) < MIN_TOKENS_PER_S
    profile = launch("P", {**plan, "repeat": 0}, work) if args.profile == "yes" or args.profile == "auto" and slow else None

    print("scoring held-out conversations (fp32, hubstyle.loop.mean_nll) ...", flush=True)
    from hubstyle.models import load_tokenizer
    from hubstyle.packing import build_blocks

    held_blocks = build_blocks(as_conversations(read_pairs(Path(plan["held_file"]))), load_tokenizer(plan["base"]),
                               MAX_LENGTH, what="held-out conversations")
    losses = {"base": held_out_loss(plan["base"], None, held_blocks)}
    for config, figures in runs.items():
        losses[config] = held_out_loss(plan["base"], figures[0]["adapter"], held_blocks)

    sizes = flop_model(plan["base"])
    report = summarize(args, peak, plan, runs, losses, sizes, blocks, held_blocks, profile)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
        print(f"figures written to {args.out}")
    if args.keep:
        print(f"data, adapters and worker logs kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return report


def summarize(args, peak: float, plan: dict, runs: dict, losses: dict, sizes: dict, blocks, held_blocks,
              profile: dict | None) -> dict:
    """Return the report (and print it): per-config speed and loss, ratios, hubstyle's MFU, targets."""
    speed = {c: statistics.median(f["tokens_per_s"] for f in figs) for c, figs in runs.items()}
    print()
    print(f"{'':31} {'steps':>5} {'real tok':>9} {'positions':>9} {'seconds':>8} {'tok/s':>7} {'peak GB':>7} "
          f"{'held-out':>9}  precision / masking")
    for config, figs in runs.items():
        f = figs[0]
        e = f["engine"]
        seconds = statistics.median(x["seconds"] for x in figs)
        how = (f"weights {e['frozen_weight_dtype'].replace('torch.', '')}, autocast {e['mixed_precision']}, "
               f"grad ckpt {'on' if e['gradient_checkpointing'] else 'off'}, attention {e['attn_implementation']}, "
               + ("packed" + (" padding-free" if e["padding_free"] else "") if e["packing"] else "padded"))
        peak_gb = max(x["peak_rss_mb"] for x in figs) / 1024
        print(f"{LABELS[config]:31} {f['steps']:5d} {f['real_tokens']:9d} {f['positions']:9d} {seconds:8.1f} "
              f"{speed[config]:7.0f} {peak_gb:7.2f} {losses[config]:9.4f}  {how}")
    print(f"{'base model, no adapter':31} {'':5} {'':9} {'':9} {'':8} {'':7} {'':7} {losses['base']:9.4f}")
    print(f"held-out: {held_blocks.trained_tokens()} assistant tokens in {len(held_blocks)} blocks; "
          f"speeds are the median of {args.repeats} run(s) each")
    print("masking: A and B = TRL completion-only loss on a conversational prompt/completion dataset (everything "
          "after the prompt's generation prompt); C = hubstyle's assistant-only labels; held-out loss: hubstyle's "
          "labels for all")
    if "A" in runs and runs["A"][0].get("mask_check"):
        m = runs["A"][0]["mask_check"]
        print(f"mask check on {m['checked']} conversations: same ids {m['same_ids']}/{m['checked']}, same loss mask "
              f"{m['same_ids_and_mask']}/{m['checked']}; trained tokens TRL {m['trl_trained_tokens']} vs hubstyle "
              f"{m['hubstyle_trained_tokens']}; only TRL trains {m['only_trl_trains'] or '-'}, only hubstyle trains "
              f"{m['only_hubstyle_trains'] or '-'}")

    report: dict = {"peak_gflops": peak, "plan": plan, "runs": runs, "held_out_loss": losses,
                    "tokens_per_s": speed, "targets": {},
                    "peak_rss_mb": {c: max(x["peak_rss_mb"] for x in figs) for c, figs in runs.items()}}
    checks = []
    if "C" in runs:
        flops = hubstyle_flops(blocks, runs["C"][0]["steps"], sizes)
        seconds = statistics.median(f["seconds"] for f in runs["C"])
        achieved = flops["total"] / seconds / 1e9
        achieved_no_attn = flops["total_without_attention"] / seconds / 1e9
        report["hubstyle_flops"] = {**flops, "sizes": sizes, "gflops_per_s": achieved, "mfu": achieved / peak,
                                    "mfu_without_attention": achieved_no_attn / peak}
        print()
        print(f"hubstyle FLOPs (useful work, padding excluded): per real token 4N + 6L + attention, N = "
              f"{sizes['linear'] / 1e6:.1f}M frozen linear params in the blocks (fwd 2N + activation-grad bwd 2N), "
              f"L = {sizes['lora'] / 1e6:.2f}M LoRA params (fwd 2L + bwd 4L), causal attention within each sample "
              f"12 * {sizes['attn_width']} * (pos+1) per layer (fwd 4, bwd 8); per trained token the vocab head "
              f"4 * {sizes['vocab']} * {sizes['d']}")
        print(f"  {flops['total'] / 1e12:.2f} TFLOP in {seconds:.1f}s = {achieved:.0f} GFLOP/s = "
              f"{achieved / peak:.1%} of the {peak:.0f} GFLOP/s matmul peak ({achieved_no_attn / peak:.1%} without "
              f"attention); split: linear {flops['linear'] / flops['total']:.0%}, LoRA {flops['lora'] / flops['total']:.0%}, "
              f"attention {flops['attention'] / flops['total']:.0%}, vocab head {flops['vocab_head'] / flops['total']:.0%}")
        if flops["real_tokens"] != runs["C"][0]["real_tokens"]:
            print(f"  note: planned {flops['real_tokens']} real tokens, the run reported {runs['C'][0]['real_tokens']}")
        checks.append(("C >= 500 tokens/s", speed["C"] >= MIN_TOKENS_PER_S, f"{speed['C']:.0f} tokens/s"))
        for other, target in (("A", SPEEDUP_VS_A), ("B", SPEEDUP_VS_B)):
            if other in runs:
                ratio = speed["C"] / speed[other]
                report[f"ratio_C_over_{other}"] = ratio
                checks.insert(0 if other == "A" else 1,
                              (f"C >= {target:g}x {other}", ratio >= target, f"{ratio:.2f}x"))
                gap = losses["C"] - losses[other]
                checks.append((f"C held-out loss <= {other}'s + {LOSS_TOLERANCE}", gap <= LOSS_TOLERANCE,
                               f"{losses['C']:.4f} vs {losses[other]:.4f} ({gap:+.4f})"))
    if "D" in runs and "A" in runs:
        d_seconds = statistics.median(f["seconds"] for f in runs["D"])
        a_seconds = statistics.median(f["seconds"] for f in runs["A"])
        gap = losses["D"] - losses["A"]
        report["equal_steps"] = {"steps": runs["D"][0]["steps"], "loss_D": losses["D"], "loss_A": losses["A"],
                                 "seconds_D": d_seconds, "seconds_A": a_seconds}
        print()
        print(f"equal optimizer steps ({runs['D'][0]['steps']}): hubstyle (D) {losses['D']:.4f} in {d_seconds:.0f}s "
              f"on {runs['D'][0]['real_tokens']} tokens vs TRL defaults (A) {losses['A']:.4f} in {a_seconds:.0f}s on "
              f"{runs['A'][0]['real_tokens']} tokens")
        checks.append((f"D (A's steps) held-out loss <= A's + {LOSS_TOLERANCE}, in less time",
                       gap <= LOSS_TOLERANCE and d_seconds < a_seconds,
                       f"{losses['D']:.4f} vs {losses['A']:.4f} ({gap:+.4f}), {d_seconds:.0f}s vs {a_seconds:.0f}s"))
    if checks:
        print()
        for name, ok, value in checks:
            print(f"  {'PASS' if ok else 'FAIL'}  {name}: {value}")
            report["targets"][name] = {"pass": ok, "value": value}
    if profile:
        report["profile"] = profile
        print()
        print(f"profile of {profile['steps']} hubstyle step(s) ({profile['tokens_per_s']:.0f} tokens/s under the "
              f"profiler), self CPU time by part ({profile['self_cpu_s_total']:.1f}s in all):")
        for name, seconds in profile["categories"].items():
            print(f"  {name:75} {seconds:7.2f}s {seconds / profile['self_cpu_s_total']:6.1%}")
        print("  top ops:")
        for op in profile["top_ops"][:15]:
            print(f"    {op['self_s']:6.2f}s x{op['calls']:<5} {op['op']:42} {op['category'][:26]:26} {op['shapes']}")
    return report


if __name__ == "__main__":
    main()
