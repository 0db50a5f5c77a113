"""Benchmark style-training throughput: hubstyle's packed bf16 LoRA loop vs a tutorial Trainer + peft script.

Both sides train the same rank-16 LoRA adapter (alpha 32, dropout 0.05, hubstyle's per-architecture target
modules) on the same tiny GPT-2 base (4 layers, 256 wide, 4 heads, a ~4096-token BPE learned on the training
speeches; random init, or ``--base PATH``), on the same tinyshakespeare training speeches, with the same batch size,
learning rate, sequence length (256) and seed:

  (a) hubstyle: ``prepare_model`` + ``train_loop`` on packed 256-token blocks under bf16 autocast, exactly the way
      ``hubstyle train`` calls them. Every position it computes on is a real token.
  (b) tutorial: every speech tokenized on its own with ``truncation=True, max_length=256, padding="max_length"``,
      ``DataCollatorForLanguageModeling(mlm=False)``, ``Trainer`` with default fp32 ``TrainingArguments``
      (``report_to=[]``, no eval, no saving). It computes on ``batch_size * 256`` positions a step, most of them pad.

Equal work is counted in REAL tokens: text tokens, neither pad nor (a)'s EOS separators, which (b) never sees.
(a) runs ``--steps`` steps; (b) gets the fewest steps whose batches (in the Trainer's own seeded order, read off its
dataloader before training) hold at least as many real tokens, so its learning-rate schedule spans its whole run.
A forward hook counts what (b) really computed on: real tokens and padded positions.

Timing on a shared machine: the two runs are interleaved step by step. Each runs in its own thread, unchanged, and
a forward pre-hook makes it wait for its turn at the start of every step; turns go to the run furthest behind its
own plan (so about one (a) step, then five (b) steps), and only one computes at a time. Both therefore see the same
load from other processes. A step's time runs from its first forward to the next one, so it covers forward,
backward, optimizer and fetching the next batch; set-up before the first step is left out on both sides. Speeds
come two ways: real tokens over the summed step times, and real tokens per step over the median step time (which
shrugs off bursts of load). The verdict takes the lower of the two. The threads share torch's global RNG, so
dropout masks depend on the interleaving: losses are reproducible for given options, but move by ~0.001 nats
between option sets (e.g. with ``--breakdown``).

Held-out text is the last contiguous 5% of speeches. Both models are scored on it in fp32, two ways:
``hubstyle.loop.mean_nll`` on packed blocks (the format (a) trains on; the headline) and speech by speech, padded,
pad unscored (the format (b) trains on). (b) is also scored, off the clock, after as many positions as (a).

How to read it: ``speed (a)/(b)`` is the ratio of real tokens per second; the verdict needs >= 2.5x with (a)'s
packed held-out loss after the same real tokens at most (b)'s + 0.01 nats. Mind that at equal real tokens and
equal batch size (b) takes about 256 / (mean speech length) ~ 5x as many optimizer steps, and a short LoRA run on a
random-init base gains per step more than per token: the loss half of the verdict is about steps as much as data.
``--a-batch-size 2`` (with ``--steps 40``) gives (a) about (b)'s real tokens per step; ``--equal-time`` adds a run
of (a) as long as (b) took (at the measured speed ratio) and scores it; ``--breakdown`` interleaves a third run,
(a) in fp32, to split the speed-up into packing and bf16. Default: 10 steps of (a), about 3 minutes on 2 idle
cores; ``--quick`` (4 steps) is a smoke run.

    python bench/train_throughput.py [--steps 10 | --quick] [--base PATH] [--a-batch-size N]
                                     [--breakdown] [--equal-time] [--threads 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

REPO = Path(__file__).resolve().parents[1]
HELD_OUT_FRACTION = 0.05  # the last contiguous 5% of speeches
TARGET_SPEEDUP = 2.5
LOSS_TOLERANCE = 0.01  # nats; a smaller gap counts as "equal loss"
DEFAULT_STEPS = 10
QUICK_STEPS = 4
SIDE_A, SIDE_B, SIDE_A32 = "(a) hubstyle packed bf16", "(b) Trainer @ equal real tokens", "(a32) hubstyle packed fp32"


@dataclass
class Measurement:
    """One point of a training run: work done, seconds spent on its steps, and held-out losses (nats/token, fp32)."""

    label: str
    steps: int
    seconds: float
    real_tokens: int
    positions: int
    packed_loss: float = math.nan
    speech_loss: float = math.nan
    step_seconds: list[float] = field(default_factory=list)

    @property
    def real_per_second(self) -> float:
        """Return real (text) tokens trained on per second."""
        return self.real_tokens / self.seconds

    @property
    def positions_per_second(self) -> float:
        """Return positions computed on (pad included) per second."""
        return self.positions / self.seconds

    @property
    def median_real_per_second(self) -> float:
        """Return real tokens per step over the median step time (nan when no step was timed)."""
        if not self.step_seconds:
            return math.nan
        return self.real_tokens / self.steps / statistics.median(self.step_seconds)


# --- data and base ------------------------------------------------------------------------------------------------


def data_root() -> Path:
    """Return the reference-corpora folder: HUBSTYLE_DATA_DIR, else ../shared/data next to the repo."""
    from hubstyle.data import data_dir

    return data_dir() or (REPO.parent / "shared" / "data")


def split_speeches(root: Path) -> tuple[list[str], list[str]]:
    """Return (training, held-out) tinyshakespeare speeches; held-out is the last contiguous 5%."""
    from hubstyle.data import shakespeare_blocks

    path = root / "tinyshakespeare" / "input.txt"
    if not path.is_file():
        raise SystemExit(
            f"no tinyshakespeare at '{path}'; set HUBSTYLE_DATA_DIR to the folder holding tinyshakespeare/"
        )
    speeches = shakespeare_blocks(path.read_text(encoding="utf-8"))
    cut = len(speeches) - max(1, round(HELD_OUT_FRACTION * len(speeches)))
    return speeches[:cut], speeches[cut:]


def random_base(folder: Path, texts: list[str], *, vocab_size: int, block_size: int, seed: int) -> Path:
    """Return `folder` holding a random-init tiny GPT-2 (4x256) and a BPE tokenizer learned on `texts`."""
    from transformers import GPT2LMHeadModel

    from hubstyle.pretrain import tiny_config, train_tokenizer

    tokenizer = train_tokenizer(texts, vocab_size=vocab_size)
    torch.manual_seed(seed)
    GPT2LMHeadModel(tiny_config(len(tokenizer), n_positions=block_size)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# --- scoring ------------------------------------------------------------------------------------------------------


@torch.no_grad()
def speech_nll(model, speeches: list[list[int]], *, batch_size: int = 16) -> float:
    """Return the mean next-token NLL (nats/token, fp32) over speeches scored one each, right-padded, pad unscored."""
    was_training = model.training
    model.eval()
    dev = next(p.device for p in model.parameters())
    total, count = 0.0, 0
    ordered = sorted(speeches, key=len)  # similar lengths together: little padding to compute on
    for start in range(0, len(ordered), batch_size):
        chunk = ordered[start : start + batch_size]
        ids = torch.zeros(len(chunk), max(map(len, chunk)), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, speech in enumerate(chunk):
            ids[row, : len(speech)] = torch.tensor(speech)
            mask[row, : len(speech)] = 1
        ids, mask = ids.to(dev), mask.to(dev)
        logits = model(input_ids=ids, attention_mask=mask).logits
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        nll = -logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
        scored = mask[:, 1:].bool()
        total += nll[scored].sum().item()
        count += int(scored.sum())
    model.train(was_training)
    return total / count


def held_out_losses(model, packed: torch.Tensor, speeches: list[list[int]]) -> tuple[float, float]:
    """Return (packed-block NLL via hubstyle's mean_nll, per-speech NLL), both fp32."""
    from hubstyle.loop import mean_nll

    return mean_nll(model, packed, batch_size=8, bf16=False), speech_nll(model, speeches)


# --- taking turns ---------------------------------------------------------------------------------------------------


class Baton:
    """Lets training runs in threads take turns one step at a time, so they share the machine's load evenly.

    ``hook(name)`` is a forward pre-hook: each training forward starts a step, so there the run hands the turn to
    whichever run is furthest behind its plan (done / planned steps) and waits until the turn comes back.
    """

    def __init__(self, planned: dict[str, int]) -> None:
        self.planned = dict(planned)
        self.done = dict.fromkeys(planned, 0)
        self.step_seconds: dict[str, list[float]] = {name: [] for name in planned}
        self._finished: set[str] = set()
        self._step_began: dict[str, float | None] = dict.fromkeys(planned)
        self._cond = threading.Condition()
        self._turn = self._choose()

    def _choose(self) -> str | None:
        running = [name for name in self.planned if name not in self._finished]
        return min(running, key=lambda name: self.done[name] / self.planned[name]) if running else None

    def _end_step(self, name: str, now: float) -> None:
        began = self._step_began[name]
        if began is not None:
            self.step_seconds[name].append(now - began)
            self.done[name] += 1

    def _pass_and_wait(self, name: str) -> None:
        self._turn = self._choose()
        self._cond.notify_all()
        while self._turn != name:
            self._cond.wait()

    def enter(self, name: str) -> None:
        """Wait for `name`'s first turn (its set-up runs inside that turn, untimed)."""
        with self._cond:
            while self._turn != name:
                self._cond.wait()

    def hook(self, name: str) -> Callable:
        """Return the forward pre-hook that ends `name`'s previous step, passes the turn, and starts the next step."""

        def pre_forward(module, args: tuple, kwargs: dict) -> None:
            if not module.training:  # held-out scoring is not a training step
                return
            now = time.perf_counter()
            with self._cond:
                if self._step_began[name] is not None:
                    self._end_step(name, now)
                    self._pass_and_wait(name)
                self._step_began[name] = time.perf_counter()

        return pre_forward

    def step_time_so_far(self, name: str) -> float:
        """Return the seconds `name` has spent on steps, the current one included."""
        began = self._step_began[name]
        return sum(self.step_seconds[name]) + (time.perf_counter() - began if began is not None else 0.0)

    def leave(self, name: str) -> None:
        """End `name`'s last step and hand the turn on for good."""
        now = time.perf_counter()
        with self._cond:
            self._end_step(name, now)
            self._step_began[name] = None
            self._finished.add(name)
            self._turn = self._choose()
            self._cond.notify_all()


def interleave(baton: Baton, runs: dict[str, Callable[[], object]]) -> dict[str, object]:
    """Return each run's result after running them in threads that take turns on `baton`, step by step."""
    results: dict[str, object] = {}
    errors: list[BaseException] = []

    def work(name: str, run: Callable[[], object]) -> None:
        baton.enter(name)
        try:
            results[name] = run()
        except Exception as err:  # re-raised below, in the main thread
            errors.append(err)
        finally:
            baton.leave(name)

    threads = [threading.Thread(target=work, args=item, name=item[0]) for item in runs.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


# --- (a) hubstyle ---------------------------------------------------------------------------------------------------


def separator_free_tokens(blocks: torch.Tensor, batch_size: int, steps: int, seed: int, separator: int) -> int:
    """Return how many text tokens (EOS separators not counted) `train_loop` trains on in `steps` steps."""
    from hubstyle.loop import batch_order

    return sum(
        int((blocks[batch_order(len(blocks), batch_size, step, seed)] != separator).sum()) for step in range(steps)
    )


def hubstyle_run(base: str, blocks: torch.Tensor, training, label: str, hook: Callable | None = None):
    """Return the LoRA model after hubstyle's training on packed `blocks` (`prepare_model` + `train_loop`)."""
    from hubstyle.loop import train_loop
    from hubstyle.train import loop_settings, prepare_model

    model, _ = prepare_model(base, training)
    handle = model.register_forward_pre_hook(hook, with_kwargs=True) if hook else None
    settings = loop_settings(training, training.max_steps, desc=label)  # what hubstyle.train.train uses
    train_loop(model, blocks, settings)
    if handle:
        handle.remove()
    return model


# --- (b) tutorial Trainer -------------------------------------------------------------------------------------------


def tutorial_dataset(base: str, speeches: list[str], cutoff: int):
    """Return (tokenizer, datasets.Dataset) tokenized the tutorial way: one speech a row, padded to `cutoff`."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"  # GPT-2's default; a base saved with left padding would shift positions

    def tokenize(batch: dict) -> dict:
        return tokenizer(batch["text"], truncation=True, max_length=cutoff, padding="max_length")

    dataset = Dataset.from_dict({"text": speeches}).map(tokenize, batched=True, remove_columns=["text"])
    return tokenizer, dataset


def tutorial_model(base: str, training, targets: list[str] | str):
    """Return the base wrapped in a peft LoRA model, initialised under the same seed as hubstyle's adapter."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from hubstyle.train import lora_config

    model = AutoModelForCausalLM.from_pretrained(base)
    torch.manual_seed(training.seed)
    return get_peft_model(model, lora_config(training, targets))


def tutorial_trainer(model, tokenizer, dataset, training, steps: int, out_dir: Path, callbacks: list):
    """Return a transformers Trainer set up as tutorials do: default fp32 TrainingArguments, no eval, no saving."""
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=str(out_dir),
        per_device_train_batch_size=training.batch_size,
        learning_rate=training.learning_rate,
        max_steps=steps,
        seed=training.seed,
        save_strategy="no",
        report_to=[],
    )
    return Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm=False),
        callbacks=callbacks,
    )


def steps_for_real_tokens(trainer, target: int) -> tuple[int, int]:
    """Return (steps, real tokens) of the fewest Trainer steps whose batches hold >= `target` non-pad tokens."""
    loader = trainer.get_train_dataloader()
    steps, seen, epoch = 0, 0, 0
    while seen < target:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)  # as the Trainer does each epoch, so the order matches its own
        for batch in loader:
            steps += 1
            seen += int(batch["attention_mask"].sum())
            if seen >= target:
                break
        epoch += 1
    return steps, seen


class TokenCounter:
    """Forward pre-hook that counts the real (non-pad) tokens and the positions of every training forward pass."""

    def __init__(self) -> None:
        self.real = 0
        self.positions = 0

    def __call__(self, module, args: tuple, kwargs: dict) -> None:
        if not module.training:  # held-out scoring is not training work
            return
        ids = kwargs["input_ids"]
        mask = kwargs.get("attention_mask")
        self.positions += ids.numel()
        self.real += int(mask.sum()) if mask is not None else ids.numel()


def snapshot_callback(at_step: int, score: Callable[[], Measurement]):
    """Return a TrainerCallback that scores the model once, after step `at_step`, and keeps its scoring time."""
    from transformers import TrainerCallback

    class Snapshot(TrainerCallback):
        def __init__(self) -> None:
            self.point: Measurement | None = None
            self.seconds = 0.0  # spent scoring, inside a step: taken off (b)'s clock

        def on_step_end(self, args, state, control, **kwargs) -> None:
            if state.global_step == at_step:
                began = time.perf_counter()
                self.point = score()
                self.seconds = time.perf_counter() - began

    return Snapshot()


# --- warm-up --------------------------------------------------------------------------------------------------------


def warm_up(base: str, training, targets: list[str] | str, blocks: torch.Tensor, padded: dict) -> None:
    """Run two untimed forward/backward passes per path (bf16 packed, fp32 padded) so one-off kernel set-up is paid."""
    from hubstyle.models import autocast

    model = tutorial_model(base, training, targets)
    model.train()
    for _ in range(2):
        with autocast(training.bf16):
            model(input_ids=blocks, labels=blocks).loss.backward()
        model(**padded).loss.backward()
        with autocast(False):
            model(input_ids=blocks, labels=blocks).loss.backward()


# --- main -------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Return the headline figures (speeds, ratio, losses) after printing the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="steps of (a); (b) gets equal real tokens")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS} steps: a smoke run, not a measurement")
    parser.add_argument("--base", default=None, help="a tiny base model folder (default: random-init GPT-2 4x256)")
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--a-batch-size",
        type=int,
        default=None,
        help="(a)'s batch in 256-token blocks if not --batch-size; 2 gives (a) about (b)'s real tokens per step",
    )
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--cutoff", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--breakdown", action="store_true", help="also interleave (a) in fp32: packing vs bf16")
    parser.add_argument("--equal-time", action="store_true", help="also train (a) as long as (b) took, and score it")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    args = parser.parse_args(argv)
    steps = QUICK_STEPS if args.quick else args.steps

    os.environ.setdefault("HUBSTYLE_QUIET", "1")  # two interleaved progress bars would garble each other
    warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")  # peft's note on GPT-2's Conv1D, both sides
    warnings.filterwarnings("ignore", message=".*pin_memory.*")  # the Trainer's default, meaningless on CPU
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)

    from hubstyle.config import TrainingConfig

    training = TrainingConfig(
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        cutoff_len=args.cutoff,
        max_steps=steps,
        seed=args.seed,
    )
    train_texts, held_out_texts = split_speeches(data_root())
    tmp = Path(tempfile.mkdtemp(prefix="hubstyle-train-bench-"))
    try:
        return compare(args, training, train_texts, held_out_texts, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def compare(
    args: argparse.Namespace, training, train_texts: list[str], held_out_texts: list[str], tmp: Path
) -> dict[str, float]:
    """Return the headline figures after the interleaved runs (and the optional equal-time run), printing the table."""
    from hubstyle.models import bf16_supported, device, load_base, load_tokenizer
    from hubstyle.packing import pack
    from hubstyle.train import target_modules_for

    if args.base:
        base = args.base
    else:
        base = str(
            random_base(tmp / "base", train_texts, vocab_size=args.vocab, block_size=args.cutoff, seed=args.seed)
        )

    # data: (a) packs, as hubstyle.train.train does; (b) pads each speech; both are scored on the same held-out
    prep = time.perf_counter()
    train_blocks = pack(train_texts, load_tokenizer(base), args.cutoff, what="training speeches")
    prep_a = time.perf_counter() - prep
    held_blocks = pack(held_out_texts, load_tokenizer(base), args.cutoff, what="held-out speeches")
    prep = time.perf_counter()
    tokenizer, dataset = tutorial_dataset(base, train_texts, args.cutoff)
    prep_b = time.perf_counter() - prep
    lengths = [sum(mask) for mask in dataset["attention_mask"]]
    truncated = sum(len(ids) > args.cutoff for ids in tokenizer(train_texts)["input_ids"])
    held_speeches = tokenizer(held_out_texts, truncation=True, max_length=args.cutoff)["input_ids"]
    eos = tokenizer.eos_token_id

    # (a) trains with hubstyle's TrainingConfig; only its batch size may differ (--a-batch-size)
    training_a = dataclasses.replace(training, batch_size=args.a_batch_size or args.batch_size)
    steps = training_a.max_steps
    targets = target_modules_for(load_base(base), training.target_modules)  # hubstyle's choice, used by both
    padded = {k: torch.tensor(dataset[: args.batch_size][k]) for k in ("input_ids", "attention_mask")}
    padded["labels"] = padded["input_ids"].masked_fill(padded["attention_mask"] == 0, -100)
    warm_up(base, training, targets, train_blocks[: training_a.batch_size], padded)

    # equal real tokens: what (a) will see is known from its seeded batch order; (b) gets as many, in its own order
    a_real = separator_free_tokens(train_blocks, training_a.batch_size, steps, training_a.seed, eos)
    a_positions = steps * training_a.batch_size * args.cutoff
    model_b = tutorial_model(base, training, targets)
    planner = tutorial_trainer(model_b, tokenizer, dataset, training, 1, tmp / "trainer", [])
    b_steps, planned_real = steps_for_real_tokens(planner, a_real)
    del planner

    planned = {SIDE_A: steps, SIDE_B: b_steps} | ({SIDE_A32: steps} if args.breakdown else {})
    baton = Baton(planned)
    counter = TokenCounter()  # what (b) really computes on, counted where the model sees it

    def score_b_now() -> Measurement:
        return Measurement(
            "(b) Trainer @ equal positions",
            counter.positions // (args.batch_size * args.cutoff),
            baton.step_time_so_far(SIDE_B),
            counter.real,
            counter.positions,
            *held_out_losses(model_b, held_blocks, held_speeches),
        )

    snapshot = snapshot_callback(math.ceil(a_positions / (args.batch_size * args.cutoff)), score_b_now)

    def run_b() -> None:
        model_b.register_forward_pre_hook(counter, with_kwargs=True)
        model_b.register_forward_pre_hook(baton.hook(SIDE_B), with_kwargs=True)
        trainer = tutorial_trainer(model_b, tokenizer, dataset, training, b_steps, tmp / "trainer", [snapshot])
        trainer.train()

    runs: dict[str, Callable[[], object]] = {
        SIDE_A: lambda: hubstyle_run(base, train_blocks, training_a, SIDE_A, baton.hook(SIDE_A)),
        SIDE_B: run_b,
    }
    if args.breakdown:
        fp32 = dataclasses.replace(training_a, bf16=False)
        runs[SIDE_A32] = lambda: hubstyle_run(base, train_blocks, fp32, SIDE_A32, baton.hook(SIDE_A32))
    models = interleave(baton, runs)

    def side(name: str, model, real: int, positions: int, off_clock: float = 0.0) -> Measurement:
        times = baton.step_seconds[name]
        return Measurement(
            name, len(times), sum(times) - off_clock, real, positions,
            *held_out_losses(model, held_blocks, held_speeches), step_seconds=times,
        )  # fmt: skip

    a = side(SIDE_A, models[SIDE_A], a_real, a_positions)
    b = side(SIDE_B, model_b, counter.real, counter.positions, off_clock=snapshot.seconds)
    rows = [a, *([snapshot.point] if snapshot.point else []), b]
    a32 = side(SIDE_A32, models[SIDE_A32], a_real, a_positions) if args.breakdown else None
    if a32:
        rows.append(a32)
    del models

    total_speedup = a.real_per_second / b.real_per_second
    median_speedup = a.median_real_per_second / b.median_real_per_second
    speedup = min(total_speedup, median_speedup)
    loss_gap = a.packed_loss - b.packed_loss

    a_eq = None
    if args.equal_time:  # as many (a) steps as (b)'s time holds at the measured speed ratio; run alone, after
        eq_steps = max(steps, round(b.seconds / a.seconds * steps))
        start = time.perf_counter()
        model = hubstyle_run(base, train_blocks, dataclasses.replace(training_a, max_steps=eq_steps), "equal time")
        seconds = time.perf_counter() - start
        a_eq = Measurement(
            "(a) hubstyle @ (b)'s time, alone",
            eq_steps,
            seconds,
            separator_free_tokens(train_blocks, training_a.batch_size, eq_steps, training_a.seed, eos),
            eq_steps * training_a.batch_size * args.cutoff,
            *held_out_losses(model, held_blocks, held_speeches),
        )
        rows.append(a_eq)

    print()
    print(
        f"device {device().type}, torch threads {torch.get_num_threads()}, bf16 autocast for (a): "
        f"{training.bf16 and bf16_supported()}; base {args.base or 'random-init GPT-2 4x256'}, "
        f"vocab {len(tokenizer)}; LoRA r{training.lora_rank}/alpha {training.lora_alpha} on {targets}; "
        f"cutoff {args.cutoff}, batch {training_a.batch_size} (a) / {args.batch_size} (b), "
        f"lr {args.learning_rate:g}, seed {args.seed}"
    )
    print(
        f"data: {len(train_texts)} training speeches, {sum(lengths) / len(lengths):.1f} real tokens each on average "
        f"({truncated} cut at {args.cutoff} by (b)); held-out {len(held_out_texts)} speeches = {len(held_blocks)} "
        f"packed blocks; prep {prep_a:.1f}s (a) / {prep_b:.1f}s (b), not timed below"
    )
    print(
        f"(b) planned {b_steps} steps for {planned_real} real tokens, counted {counter.real} "
        f"(match: {planned_real == counter.real}); runs interleaved step by step, set-up untimed"
    )
    print()
    print(
        f"{'':34} {'steps':>5} {'step s':>7} {'real tok':>9} {'positions':>9} {'real tok/s':>10} "
        f"{'pos/s':>7} {'med step s':>10} {'held-out packed':>15} {'per speech':>10}"
    )
    for m in rows:
        median = f"{statistics.median(m.step_seconds):10.3f}" if m.step_seconds else f"{'-':>10}"
        print(
            f"{m.label:34} {m.steps:5d} {m.seconds:7.1f} {m.real_tokens:9d} {m.positions:9d} {m.real_per_second:10.0f} "
            f"{m.positions_per_second:7.0f} {median} {m.packed_loss:15.4f} {m.speech_loss:10.4f}"
        )
    print()
    print(
        f"(b) computes {b.positions / b.real_tokens:.2f} positions per real token "
        f"({1 - b.real_tokens / b.positions:.0%} pad)"
    )
    if a32:
        print(
            f"speed-up split (real tokens/s, total | median): packing (a32)/(b) "
            f"{a32.real_per_second / b.real_per_second:.2f}x | "
            f"{a32.median_real_per_second / b.median_real_per_second:.2f}x; bf16 (a)/(a32) "
            f"{a.real_per_second / a32.real_per_second:.2f}x | "
            f"{a.median_real_per_second / a32.median_real_per_second:.2f}x"
        )
    print(
        f"speed (a)/(b), real tokens/s over summed step time: {total_speedup:.2f}x "
        f"({a.real_per_second:.0f} vs {b.real_per_second:.0f})"
    )
    print(
        f"speed (a)/(b), real tokens/s by median step:        {median_speedup:.2f}x "
        f"({a.median_real_per_second:.0f} vs {b.median_real_per_second:.0f})"
    )
    print(
        f"held-out loss after equal real tokens ({a.real_tokens} vs {b.real_tokens}): packed (a) {a.packed_loss:.4f} "
        f"vs (b) {b.packed_loss:.4f}; per speech (a) {a.speech_loss:.4f} vs (b) {b.speech_loss:.4f}"
    )
    if a_eq:
        print(
            f"held-out loss after (b)'s training time ({a_eq.steps} steps of (a)): packed (a) {a_eq.packed_loss:.4f} "
            f"vs (b) {b.packed_loss:.4f}; per speech (a) {a_eq.speech_loss:.4f} vs (b) {b.speech_loss:.4f}"
        )
    met = speedup >= TARGET_SPEEDUP and loss_gap <= LOSS_TOLERANCE
    print(
        f"verdict: {'MET' if met else 'MISSED'} target >= {TARGET_SPEEDUP}x real tokens/s at equal or better held-out "
        f"loss: {speedup:.2f}x (lower estimate), loss (a)-(b) {loss_gap:+.4f} nats at equal real tokens"
    )
    return {
        "a_real_tokens_per_s": a.real_per_second,
        "b_real_tokens_per_s": b.real_per_second,
        "b_positions_per_s": b.positions_per_second,
        "speedup_total": total_speedup,
        "speedup_median": median_speedup,
        "a_held_out_loss": a.packed_loss,
        "b_held_out_loss": b.packed_loss,
    }


if __name__ == "__main__":
    main()
