"""The packed causal-LM training loop shared by pretraining and style training.

One loop, read top to bottom: packed blocks in, AdamW with warmup + cosine, bf16 autocast, gradient
clipping, periodic evaluation, checkpoints (safetensors + JSON, no pickles) and exact resume. Accelerate
places the model and wraps it for multi-process runs (`accelerate launch -m hubstyle.cli train ...`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from hubstyle.chat import IGNORE_INDEX
from hubstyle.env import quiet
from hubstyle.errors import HubstyleError
from hubstyle.fsio import atomic_folder, distributed_state
from hubstyle.models import autocast, bf16_supported
from hubstyle.packing import Blocks, as_blocks
from hubstyle.tracking import Tracker, step_metrics

CHECKPOINT_PREFIX = "step-"
CHECKPOINT_NAME = re.compile(r"step-\d{7}")  # a finished checkpoint's folder; anything else there is ignored
PROGRESS_FILE = "progress.json"  # written last into a checkpoint: its completion marker
SCORE_CHUNK = 1024  # positions per slice of the output head when scoring: 1024 x 49,152 fp32 logits = 200 MB
# Settings a resumed run may change: they move memory, time or logging, never the weights it ends with.
RESUME_FREE = frozenset({"checkpoint_every", "eval_every", "gradient_accumulation", "gradient_checkpointing", "desc",
                         "time_budget_s", "report_to"})


@dataclass
class LoopSettings:
    """Optimisation settings for one call of `train_loop`."""

    batch_size: int = 8
    learning_rate: float = 2e-4
    max_steps: int = 100
    warmup_steps: int = 10
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    bf16: bool = True
    seed: int = 0
    checkpoint_every: int | None = None
    eval_every: int | None = None  # validation every N steps and at the end; None: at the end only; 0: never
    time_budget_s: float | None = None
    gradient_accumulation: int = 1  # micro-batches per step: same update, less activation memory
    desc: str = "training"


@dataclass
class LoopResult:
    """What a training run did: steps, tokens, time, and the loss history."""

    steps: int
    tokens: int
    seconds: float
    tokens_per_second: float
    bf16: bool
    history: list[dict] = field(default_factory=list)
    final_train_loss: float | None = None
    final_val_loss: float | None = None

    def as_dict(self) -> dict:
        """Return the result as plain data."""
        return asdict(self)


def lr_at(step: int, settings: LoopSettings, elapsed_fraction: float | None = None) -> float:
    """Return the learning rate at `step`: linear warmup, then cosine decay to 10% of the peak.

    With a time budget the decay follows the elapsed share of the budget (`elapsed_fraction`), so a run stopped
    by the clock still ends at the low learning rate that gives its best loss.
    """
    if step < settings.warmup_steps:
        return settings.learning_rate * (step + 1) / settings.warmup_steps
    span = max(1, settings.max_steps - settings.warmup_steps)
    progress = min(1.0, (step - settings.warmup_steps) / span)
    if elapsed_fraction is not None:
        progress = max(progress, min(1.0, elapsed_fraction))
    return settings.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def batch_order(n_blocks: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """Return the block indices of batch `step`: a seeded permutation per epoch, so resume replays it."""
    per_epoch = max(1, n_blocks // batch_size)
    epoch, index = divmod(step, per_epoch)
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(n_blocks, generator=gen)
    chosen = perm[index * batch_size : (index + 1) * batch_size]
    if len(chosen) < batch_size:  # fewer blocks than one batch: wrap around
        chosen = perm.repeat(math.ceil(batch_size / n_blocks))[:batch_size]
    return chosen


def rank_share(batch_size: int, rank: int, world: int) -> torch.Tensor:
    """Return the positions in a batch of `batch_size` that process `rank` of `world` trains on (never none while
    world <= batch_size, which train_loop checks)."""
    return torch.arange(batch_size)[rank::world]


def _unwrap(model):
    """Return the transformers model inside a peft / accelerate wrapper."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _head_and_backbone(model):
    """Return (backbone, output head) when logits can be taken on chosen positions only, else None."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return None  # DDP averages gradients only after a forward through itself: calling inside trains ranks apart
    inner = _unwrap(model)
    config = inner.config
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        return None  # the head does more than a matmul: use the model's own forward
    backbone = getattr(inner, getattr(inner, "base_model_prefix", ""), None)
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if backbone is None or head is None or backbone is inner:
        return None
    return backbone, head


def token_loss_sum(model, batch: Blocks) -> tuple[torch.Tensor, int]:
    """Return (summed next-token NLL over the trained positions, their count) of one batch.

    Logits are computed only where a label is kept: on chat data most positions are context, and the vocabulary
    projection and its softmax are the largest single cost of a small model's step.
    """
    targets = batch.labels[:, 1:]
    keep = targets != IGNORE_INDEX
    count = int(keep.sum())
    kwargs = {"input_ids": batch.input_ids, "use_cache": False}
    if batch.position_ids is not None:
        kwargs["position_ids"] = batch.position_ids  # no attention mask: transformers reads sample boundaries here
    else:
        kwargs["attention_mask"] = torch.ones_like(batch.input_ids)
    parts = _head_and_backbone(model)
    if parts is None:
        logits = model(**kwargs).logits[:, :-1][keep]
    else:
        backbone, head = parts
        hidden = backbone(**kwargs).last_hidden_state[:, :-1][keep]
        if not torch.is_grad_enabled():  # scoring: the head in slices, never all positions' logits at once
            labels = targets[keep]
            loss = sum(torch.nn.functional.cross_entropy(head(hidden[i : i + SCORE_CHUNK]).float(),
                                                         labels[i : i + SCORE_CHUNK], reduction="sum")
                       for i in range(0, len(labels), SCORE_CHUNK))
            return torch.as_tensor(loss, dtype=torch.float32), count
        logits = head(hidden)
    loss = torch.nn.functional.cross_entropy(logits.float(), targets[keep], reduction="sum")
    return loss, count


LossFn = Callable[..., tuple[torch.Tensor, int]]  # (model, batch) -> (summed NLL of the trained tokens, their count)


_PACKING_HONOURED: dict[tuple, bool] = {}  # (base, model class, attention implementation, dtype) -> the answer


def honours_packing(model) -> bool:
    """Return whether ``model`` keeps packed samples apart: two samples packed in one row (positions restarting, no
    attention mask, as :func:`token_loss_sum` feeds them) get the logits each gets alone. transformers infers the
    boundaries from the position ids for the architectures built on its mask utilities; one that does not would let
    a sample attend to the one before it. Checked once per base on two short random samples."""
    config = getattr(_unwrap(model), "config", None)
    param = next(model.parameters())
    key = (getattr(config, "_name_or_path", None), type(_unwrap(model)).__name__,
           getattr(config, "_attn_implementation", None), param.dtype)
    if key in _PACKING_HONOURED:
        return _PACKING_HONOURED[key]
    vocab = model.get_input_embeddings().num_embeddings
    ids = torch.randint(min(4, vocab - 1), vocab, (12,), generator=torch.Generator().manual_seed(0)).to(param.device)
    samples = (ids[:5], ids[5:])

    def logits(*parts: torch.Tensor) -> torch.Tensor:
        positions = torch.cat([torch.arange(len(p), device=param.device) for p in parts])
        return model(input_ids=torch.cat(parts)[None], position_ids=positions[None], use_cache=False).logits[0].float()

    was_training = model.training
    model.eval()  # no dropout: the forwards must differ only by what the samples attend to
    try:
        with torch.no_grad():
            packed, alone = logits(*samples), torch.cat([logits(s) for s in samples])
    finally:
        model.train(was_training)
    # fp32 agrees to rounding; 16-bit weights (and 4-bit compute) to a few of their ulps; attending across the
    # boundary moves logits by a sizeable fraction of their scale
    tolerance = 1e-4 if param.dtype == torch.float32 else 2e-2
    _PACKING_HONOURED[key] = bool((packed - alone).abs().max() <= tolerance * max(1.0, alone.abs().max().item()))
    return _PACKING_HONOURED[key]


@torch.no_grad()
def mean_nll(model, blocks: Blocks | torch.Tensor, *, batch_size: int = 8, bf16: bool = False,
             loss_fn: LossFn = token_loss_sum) -> float:
    """Return the mean negative log-likelihood (nats/token) of `model` over the trained positions (`loss_fn`: how a
    batch is scored; next-token loss on packed blocks by default, `hubstyle.seq2seq.pair_loss_sum` for pairs)."""
    blocks = as_blocks(blocks)
    was_training = model.training
    model.eval()
    dev = next(p.device for p in model.parameters())
    total, count = 0.0, 0
    for start in range(0, len(blocks), batch_size):
        batch = blocks[start : start + batch_size].to(dev)
        with autocast(bf16, dev):
            loss, n = loss_fn(model, batch)
        total += loss.item()
        count += n
    model.train(was_training)
    if count == 0:
        raise HubstyleError("no position carries a label in these blocks; nothing to score")
    return total / count


def train_loop(
    model,
    train_blocks: Blocks | torch.Tensor,
    settings: LoopSettings,
    *,
    val_blocks: Blocks | torch.Tensor | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    on_checkpoint: Callable[[Path], None] | None = None,
    run_config: dict | None = None,
    loss_fn: LossFn = token_loss_sum,
    tracker: Tracker | None = None,
) -> LoopResult:
    """Return the LoopResult of training `model`'s trainable parameters on `train_blocks` in place.

    `loss_fn` scores one batch (default: next-token loss on packed causal blocks); a seq2seq run passes
    `hubstyle.seq2seq.pair_loss_sum` with its encoder/decoder `PairBatch` as the blocks. `tracker` (hubstyle.tracking)
    gets each step's loss, learning rate, tokens/s and validation loss.

    Checkpoints record `run_config` (default: `settings`), a hash of the training blocks and `max_steps`; `resume`
    refuses a checkpoint whose record differs from this run's. A run that does not resume starts its checkpoint
    folder over.
    """
    from accelerate import Accelerator
    from accelerate.utils import broadcast
    from tqdm.auto import tqdm

    world = distributed_state().num_processes  # gloo on CPUs: set up before Accelerator() settles on one process
    if world > settings.batch_size:
        raise HubstyleError(f"training.batch_size is {settings.batch_size} but {world} processes train: each needs at "
                            f"least one sequence a step; raise batch_size to {world} or more")
    accelerator = Accelerator()
    torch.manual_seed(settings.seed)
    train_blocks = as_blocks(train_blocks)
    val_blocks = as_blocks(val_blocks) if val_blocks is not None else None
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise HubstyleError("the model has no trainable parameters; check the training method")
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.learning_rate,
        betas=(0.9, 0.95),
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    use_bf16 = settings.bf16 and bf16_supported(accelerator.device)

    fingerprint = run_fingerprint(settings, train_blocks, run_config)
    start_step, history, seconds_before = 0, [], 0.0
    if resume:
        ckpt = latest_checkpoint(checkpoint_dir) if checkpoint_dir else None
        if ckpt is None:
            raise HubstyleError(f"nothing to resume: no checkpoint under '{checkpoint_dir}'")
        check_resumable(ckpt, fingerprint)
        start_step, history, seconds_before = load_checkpoint(ckpt, accelerator.unwrap_model(model), optimizer)
    elif checkpoint_dir and accelerator.is_main_process:
        clear_checkpoints(checkpoint_dir)  # a fresh run: its predecessor's checkpoints would resume the wrong run

    rank = accelerator.process_index
    tokens_before = history[-1]["tokens"] if history else 0
    tokens_seen = tokens_before
    model.train()
    t0 = time.perf_counter()
    bar = tqdm(
        total=settings.max_steps, initial=start_step, desc=settings.desc,
        disable=quiet() or not accelerator.is_local_main_process, dynamic_ncols=True,
    )
    loss_value = None
    for step in range(start_step, settings.max_steps):
        step_began = time.perf_counter()
        elapsed = seconds_before + time.perf_counter() - t0
        if settings.time_budget_s and world > 1:  # one clock for all ranks: same stop step, same learning rate
            elapsed = broadcast(torch.tensor([elapsed], dtype=torch.float64, device=accelerator.device)).item()
        if settings.time_budget_s and elapsed > settings.time_budget_s:
            break
        budget_share = elapsed / settings.time_budget_s if settings.time_budget_s else None
        lr = lr_at(step, settings, budget_share)
        for group in optimizer.param_groups:
            group["lr"] = lr
        idx = batch_order(len(train_blocks), settings.batch_size, step, settings.seed)
        step_batch = train_blocks[idx]
        # Every rank sees the same global batch, so each knows the step's trained-token count without talking: the
        # loss is summed over tokens and divided by it once, which makes micro-batches and ranks add up to exactly
        # one large batch (DDP averages gradients over ranks, hence the factor `world`).
        scale = world / max(1, step_batch.trained_tokens())
        mine = rank_share(len(idx), rank, world)
        loss_sum = torch.zeros((), device=accelerator.device)
        for micro in mine.tensor_split(min(settings.gradient_accumulation, max(1, len(mine)))):
            batch = step_batch[micro].to(accelerator.device)
            with accelerator.no_sync(model) if micro[-1] != mine[-1] else contextlib.nullcontext():
                with autocast(use_bf16, accelerator.device):
                    part, _ = loss_fn(model, batch)
                accelerator.backward(part * scale)
            loss_sum += part.detach()
        loss = loss_sum * scale / world
        tokens_seen += step_batch.real_tokens()
        if settings.grad_clip:
            accelerator.clip_grad_norm_(params, settings.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = accelerator.reduce(loss.float(), reduction="sum").item()
        record = {"step": step + 1, "loss": loss_value, "lr": lr, "tokens": tokens_seen}
        step_tokens_per_second = step_batch.real_tokens() / max(1e-9, time.perf_counter() - step_began)
        done = step + 1
        if val_blocks is not None and settings.eval_every and (done % settings.eval_every == 0 or done == settings.max_steps):
            record["val_loss"] = mean_nll(model, val_blocks, batch_size=settings.batch_size, bf16=use_bf16,
                                          loss_fn=loss_fn)
        history.append(record)
        if tracker is not None:
            tracker.log(step_metrics(record, step_tokens_per_second), done)
        if settings.time_budget_s:  # the clock, not max_steps, ends this run: show the steps it will reach
            per_step = (time.perf_counter() - t0) / (done - start_step)
            left = max(0.0, settings.time_budget_s - seconds_before - (time.perf_counter() - t0))
            bar.total = min(settings.max_steps, done + int(left / per_step) + 1)
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.3f}")
        if checkpoint_dir and settings.checkpoint_every and done % settings.checkpoint_every == 0 and done < settings.max_steps:
            if accelerator.is_main_process:
                path = save_checkpoint(
                    checkpoint_dir, done, accelerator.unwrap_model(model), optimizer, history,
                    seconds_before + time.perf_counter() - t0, fingerprint,
                )
                if on_checkpoint:
                    on_checkpoint(path)
            accelerator.wait_for_everyone()
    bar.close()
    steps_done = len(history)
    seconds = seconds_before + time.perf_counter() - t0
    if history and "val_loss" in history[-1] and history[-1]["step"] == settings.max_steps:
        val = history[-1]["val_loss"]  # measured after the last step already: same weights, same number
    else:
        val = (mean_nll(model, val_blocks, batch_size=settings.batch_size, bf16=use_bf16, loss_fn=loss_fn)
               if val_blocks is not None and settings.eval_every != 0 else None)  # 0: no validation at all
    return LoopResult(
        steps=steps_done,
        tokens=tokens_seen,
        seconds=seconds,
        tokens_per_second=(tokens_seen - tokens_before) / max(1e-9, time.perf_counter() - t0),
        bf16=use_bf16,
        history=history,
        final_train_loss=loss_value,
        final_val_loss=val,
    )


def _trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}


def blocks_sha256(blocks: Blocks) -> str:
    """Return the sha256 of the training blocks: token ids, labels and position ids, in order."""
    digest = hashlib.sha256()
    for tensor in (blocks.input_ids, blocks.labels, getattr(blocks, "position_ids", None)):
        if tensor is not None:
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(tensor.detach().cpu().to(torch.int64).contiguous().numpy().tobytes())
    return digest.hexdigest()


def run_fingerprint(settings: LoopSettings, train_blocks: Blocks, run_config: dict | None = None) -> dict:
    """Return what a checkpoint must share with a run that resumes it: the config, the data's hash and max_steps."""
    config = run_config if run_config is not None else asdict(settings)
    return {
        "config": json.loads(json.dumps(config, default=str)),  # as it reads back from progress.json
        "data_sha256": blocks_sha256(train_blocks),
        "max_steps": settings.max_steps,
    }


def check_resumable(path: Path, fingerprint: dict) -> None:
    """Return None if checkpoint `path` was made by this run (config, data, max_steps); raise HubstyleError naming
    the first difference otherwise."""
    made = json.loads((path / PROGRESS_FILE).read_text(encoding="utf-8")).get("fingerprint")
    fix = f"delete {path.parent} or train without --resume to start over"
    if made is None:
        raise HubstyleError(f"checkpoint {path} records no config or data hash (an older hubstyle wrote it); {fix}")
    old, new = made.get("config", {}), fingerprint["config"]
    for key in sorted(set(old) | set(new)):
        if key.rsplit(".", 1)[-1] not in RESUME_FREE and old.get(key) != new.get(key):
            raise HubstyleError(f"checkpoint {path} was made with {key}={old.get(key)!r}, this run has "
                                f"{new.get(key)!r}; {fix}")
    if made.get("max_steps") != fingerprint["max_steps"]:
        raise HubstyleError(f"checkpoint {path} was made with max_steps={made.get('max_steps')}, this run has "
                            f"{fingerprint['max_steps']}; {fix}")
    if made.get("data_sha256") != fingerprint["data_sha256"]:
        made_on, this_run = str(made.get("data_sha256"))[:12], fingerprint["data_sha256"][:12]
        raise HubstyleError(f"checkpoint {path} was made on other training data (sha256 {made_on}, this run's is "
                            f"{this_run}); {fix}")


def save_checkpoint(
    root: Path, step: int, model, optimizer, history: list[dict], seconds: float, fingerprint: dict | None = None
) -> Path:
    """Return the folder of a new checkpoint: trainable weights, optimizer state (safetensors) and progress (JSON,
    with the run's fingerprint), swapped in whole so a crash never leaves half of one."""
    from safetensors.torch import save_file

    final = Path(root) / f"{CHECKPOINT_PREFIX}{step:07d}"
    with atomic_folder(final) as stage:
        save_file(_trainable_state(model), str(stage / "trainable.safetensors"))
        opt = optimizer.state_dict()
        tensors = {"rng.torch": torch.get_rng_state()}
        for idx, state in opt["state"].items():
            for key, value in state.items():
                tensors[f"state.{idx}.{key}"] = torch.as_tensor(value).contiguous().cpu()
        save_file(tensors, str(stage / "optimizer.safetensors"))
        meta = {"step": step, "seconds": seconds, "param_groups": opt["param_groups"], "history": history,
                "fingerprint": fingerprint}
        (stage / PROGRESS_FILE).write_text(json.dumps(meta), encoding="utf-8")
    return final


def latest_checkpoint(root: Path | None) -> Path | None:
    """Return the newest complete checkpoint folder under `root` (named step-NNNNNNN, with its progress file), or
    None; hidden folders a killed writer left are never candidates."""
    if root is None or not Path(root).is_dir():
        return None
    done = sorted(p for p in Path(root).iterdir()
                  if CHECKPOINT_NAME.fullmatch(p.name) and (p / PROGRESS_FILE).is_file())
    return done[-1] if done else None


def clear_checkpoints(root: Path) -> None:
    """Return None after removing every checkpoint under `root`, finished or left half-written."""
    root = Path(root)
    if not root.is_dir():
        return
    for path in [*root.glob(f"{CHECKPOINT_PREFIX}*"), *root.glob(f".{CHECKPOINT_PREFIX}*")]:
        shutil.rmtree(path, ignore_errors=True)


def load_checkpoint(path: Path, model, optimizer) -> tuple[int, list[dict], float]:
    """Return (step, history, seconds) after restoring weights, optimizer and RNG from checkpoint `path`."""
    from safetensors.torch import load_file

    weights = load_file(str(path / "trainable.safetensors"))
    named = dict(model.named_parameters())
    missing = [n for n in weights if n not in named]
    if missing:
        raise HubstyleError(f"checkpoint '{path}' does not fit this model (unknown weight '{missing[0]}')")
    with torch.no_grad():
        for name, value in weights.items():
            named[name].copy_(value.to(named[name].device))
    meta = json.loads((path / PROGRESS_FILE).read_text(encoding="utf-8"))
    tensors = load_file(str(path / "optimizer.safetensors"))
    torch.set_rng_state(tensors.pop("rng.torch"))
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return meta["step"], meta["history"], meta["seconds"]
