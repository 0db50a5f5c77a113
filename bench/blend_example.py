"""Blend sweep example on the quickstart data: Shakespeare and Milton adapters on a tiny base, swept 0 -> 1.

    python bench/blend_example.py                      # pretrains a tiny base into OUT/base first
    python bench/blend_example.py --base runs/quickstart/base

Steps: (1) a tiny base: the folder given by --base, else OUT/base when a previous run left one there, else one
pretrained on wikitext for --pretrain-seconds; (2) two LoRA adapters with ``hubstyle.train.train``, on
Shakespeare and on Milton (``load_corpus("milton")``), a shorter version of the quickstart's training; (3) a
3-class style classifier (shakespeare / milton / other = wikitext) with ``train_classifier``, on passages about
the length of a generation; (4) ``blend_sweep`` with ``cat`` (exact) blends, printed as a table, with a check
of whether each style's share moves monotonically (within the 95% CIs) from one style to the other.
Everything lands in OUT (default runs/blend_example); reruns reuse the base, adapters and classifier found
there. Torch runs on one thread: on a shared 2-core machine two threads are several times slower.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

STYLES = ("shakespeare", "milton")
OTHER = "other"


def parse_args() -> argparse.Namespace:
    """Return the command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default=None, help="Existing tiny base folder (e.g. a quickstart run's base/).")
    p.add_argument("--out", default="runs/blend_example", help="Folder for the base, adapters, classifier, sweep.")
    p.add_argument("--pretrain-seconds", type=float, default=300.0, help="Time budget for pretraining the base.")
    p.add_argument("--steps", type=int, default=300, help="LoRA training steps per style.")
    p.add_argument("--n-embd", type=int, default=128, help="Width of a pretrained base (4 layers).")
    p.add_argument("--vocab-size", type=int, default=2048, help="Tokenizer size of a pretrained base.")
    p.add_argument("--classifier-per-class", type=int, default=160, help="Training passages per classifier class.")
    p.add_argument("--prompts", type=int, default=48, help="How many of the packaged prompts to continue.")
    p.add_argument("--max-new-tokens", type=int, default=40, help="Tokens generated per prompt.")
    p.add_argument("--min-new-tokens", type=int, default=20,
                   help="At least this many tokens: a Shakespeare adapter often ends a modern question at once.")
    p.add_argument("--grid", default="0,0.25,0.5,0.75,1", help="Weights of the Shakespeare adapter.")
    p.add_argument("--greedy", action="store_true", help="Greedy decoding instead of seeded sampling (T 0.8, top-p 0.95).")
    p.add_argument("--combination", default="cat", help="peft combination type of the blends.")
    p.add_argument("--threads", type=int, default=1, help="torch threads.")
    return p.parse_args()


def ensure_base(args: argparse.Namespace, out: Path, log) -> Path:
    """Return the tiny base folder: --base, a base left in OUT/base, or one pretrained now."""
    from hubstyle.config import PretrainConfig
    from hubstyle.dataset import generic_splits
    from hubstyle.pretrain import PRETRAIN_REPORT, pretrain_base

    if args.base:
        return Path(args.base)
    base = out / "base"
    if (base / PRETRAIN_REPORT).is_file():
        log(f"reusing the tiny base in {base}")
        return base
    # smaller than the quickstart's 4 x 256 / 4,096 base: in a few CPU minutes it sees several times more tokens
    cfg = PretrainConfig(max_steps=20_000, time_budget_s=args.pretrain_seconds, batch_size=16, learning_rate=3e-3,
                         block_size=128, n_embd=args.n_embd, vocab_size=args.vocab_size)
    parts = generic_splits(cfg.corpus, cfg.seed)
    log(f"pretraining a tiny base on {cfg.corpus} for up to {args.pretrain_seconds:.0f}s ...")
    report = pretrain_base(parts.train, parts.validation, base, cfg)
    log(f"  base: {report.steps} steps, val loss {report.val_loss:.3f} vs bigram {report.bigram_val_loss:.3f} "
        f"({report.seconds:.0f}s)")
    return base


def style_splits() -> dict:
    """Return each style's contiguous splits, the same ones ``sweep_texts`` takes its held-out text from."""
    from hubstyle.config import SplitConfig
    from hubstyle.data import load_corpus, split_blocks

    s = SplitConfig()
    return {
        label: split_blocks(load_corpus(label).blocks, validation=s.validation, test=s.test, seed=s.seed,
                            n_segments=s.segments)
        for label in STYLES
    }


def ensure_adapters(base: Path, splits: dict, args: argparse.Namespace, out: Path, log) -> dict[str, Path]:
    """Return {style: adapter folder}, training (quickstart settings, fewer steps) each adapter not already there."""
    from hubstyle.config import TrainingConfig
    from hubstyle.train import train

    training = TrainingConfig(
        method="lora", lora_rank=16, lora_alpha=32, lora_dropout=0.05, cutoff_len=128, batch_size=8,
        max_steps=args.steps, learning_rate=2e-3, warmup_steps=5, eval_every=args.steps,
        checkpoint_every=args.steps,
    )
    adapters = {}
    for label in STYLES:
        folder = out / f"adapter-{label}"
        if not (folder / "adapter_config.json").is_file():
            log(f"training the {label} adapter ({args.steps} steps) ...")
            report = train(str(base), splits[label].train, splits[label].validation[:40], folder, training)
            log(f"  {label}: train loss {report.final_train_loss:.3f}, val loss {report.final_val_loss:.3f} "
                f"({report.seconds:.0f}s, {report.tokens_per_second:,.0f} tokens/s)")
        else:
            log(f"reusing the {label} adapter in {folder}")
        adapters[label] = folder
    return adapters


def ensure_classifier(splits: dict, generic_train: list[str], generic_heldout: list[str],
                      args: argparse.Namespace, out: Path, log) -> Path:
    """Return the 3-class classifier folder (shakespeare / milton / other), training it if it is not there."""
    from hubstyle.evaluate.classifier import train_classifier

    folder = out / "classifier"
    if (folder / "config.json").is_file():
        log(f"reusing the classifier in {folder}")
        return folder
    log("training the 3-class style classifier ...")
    train = {**{label: splits[label].train for label in STYLES}, OTHER: generic_train}
    heldout = {**{label: splits[label].test for label in STYLES}, OTHER: generic_heldout}
    # passages of 15-50 words: about what a 40-token continuation is, so it is judged on what it learnt
    report = train_classifier(
        train, heldout, out_dir=folder, max_per_class=args.classifier_per_class, max_heldout_per_class=60,
        min_words=15, max_words=50, max_length=96, freeze_layers=2,
    )
    log(f"  classifier: accuracy {report.accuracy:.3f}, macro-F1 {report.macro_f1:.3f} on "
        f"{report.n_heldout} held-out passages ({report.train_seconds:.0f}s)")
    return folder


def monotonic_within_ci(sweep: dict, label: str, increasing: bool) -> bool:
    """Return whether ``label``'s share never moves against the trend by more than the two 95% CIs allow."""
    rows = sorted(sweep["rows"], key=lambda r: r["weight"])
    for before, after in zip(rows, rows[1:]):
        b, a = before["per_class"][label], after["per_class"][label]
        if increasing and a["high"] < b["low"]:
            return False
        if not increasing and a["low"] > b["high"]:
            return False
    return True


def main() -> None:
    """Run the example end to end and print the sweep table."""
    args = parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from hubstyle.config import SplitConfig
    from hubstyle.dataset import generic_splits
    from hubstyle.evaluate.prompts import load_prompts
    from hubstyle.evaluate.sweep import blend_sweep, sweep_table, sweep_texts

    start = time.perf_counter()
    stamp = lambda msg: print(f"[{time.perf_counter() - start:6.0f}s] {msg}", flush=True)  # noqa: E731
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    base = ensure_base(args, out, stamp)
    splits = style_splits()
    heldout, generic_heldout = sweep_texts({label: label for label in STYLES})
    generic = generic_splits("wikitext", SplitConfig().seed, SplitConfig().segments)
    adapters = ensure_adapters(base, splits, args, out, stamp)
    classifier = ensure_classifier(splits, generic.train, generic_heldout, args, out, stamp)

    stamp("sweeping ...")
    sweep_start = time.perf_counter()
    sweep = blend_sweep(
        base, adapters, classifier=classifier, prompts=load_prompts()[: args.prompts], heldout=heldout,
        generic_texts=generic_heldout, grid=[float(w) for w in args.grid.split(",")],
        combination_type=args.combination, max_new_tokens=args.max_new_tokens, min_new_tokens=args.min_new_tokens,
        do_sample=not args.greedy, out_dir=out / "sweep",
    )
    sweep_seconds = time.perf_counter() - sweep_start
    print()
    print(sweep_table(sweep))
    print()
    for label, increasing in (("shakespeare", True), ("milton", False)):
        verdict = "monotonic" if monotonic_within_ci(sweep, label, increasing) else "NOT monotonic"
        print(f"{label} share {'rising' if increasing else 'falling'} with w(shakespeare): {verdict} within 95% CIs")
    ends = {r["weight"]: r for r in sweep["rows"]}
    if 0.0 in ends and 1.0 in ends:
        for label in STYLES:
            print(f"  {label}: share {ends[0.0]['per_class'][label]['rate']:.0%} at w=0 -> "
                  f"{ends[1.0]['per_class'][label]['rate']:.0%} at w=1")
    print(f"\nsweep {sweep_seconds:.0f}s, total {time.perf_counter() - start:.0f}s; "
          f"files in {out / 'sweep'}")
    (out / "sweep" / "timing.json").write_text(
        json.dumps({"sweep_seconds": sweep_seconds, "total_seconds": time.perf_counter() - start}) + "\n",
        encoding="utf-8",
    )


if __name__ == "__main__":
    main()
