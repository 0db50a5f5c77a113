"""Benchmark hubstyle's evaluation: batched mixed-adapter generation + batched classification vs a per-prompt loop.

Builds a tiny-but-real setup: a random-init GPT-2 (4 layers, 256 wide, a BPE tokenizer learned from the shared
corpora) or the model folder given with ``--base``, a rank-16 LoRA adapter with random weights, and the style
classifier (``--classifier DIR``, else hubstyle's StyleClassifier over the packaged MiniLM backbone with an untrained
two-label head: its labels mean nothing, its cost is the real one; without the MiniLM package classification is
skipped with a note).

Then times, once each, the same work: N prompts continued by the base and by the tuned model
(``min_new_tokens == max_new_tokens``, so every continuation has the same length) and the 2N texts classified:

  (batched) hubstyle's way: ``generate_side_by_side`` (one mixed-adapter ``generate`` per batch of prompts,
            base rows ``__base__``, tuned rows the adapter) and one ``predict`` call over all 2N texts;
  (loop)    one prompt at a time: ``generate`` with the adapter disabled, then with it active, then each text
            classified on its own.

Target: loop / batched >= 5.

    python bench/eval_batching.py [--quick] [--threads 1] [--base DIR] [--classifier DIR] [--prompts 150]

On a CPU shared with other busy jobs, pass ``--threads 1``: two OpenMP threads fighting other processes for two
cores ran a 32-row generate step 10-40x slower than one thread (measured), which swamps the comparison.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HUBSTYLE_QUIET", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TOPICS = ["the weather", "my new phone", "the train to work", "dinner tonight", "the football match", "my manager",
          "the price of coffee", "our holiday plans", "the broken printer", "learning to code"]
OPENINGS = ["I think that {}", "Tell me about {}.", "Yesterday {} was", "What do you know about {}?",
            "Honestly, {} is", "My friend keeps talking about {}", "Nobody warned me that {}", "Let me explain {}:"]


def neutral_prompts(n: int) -> list[str]:
    """Return ``n`` prompts: data/prompts.txt when present (cycled if short), else generated modern-English ones."""
    path = REPO / "data" / "prompts.txt"
    if path.is_file():
        from hubstyle.evaluate.prompts import load_prompts

        pool = load_prompts(path)
    else:
        pool = [o.format(t) for t in TOPICS for o in OPENINGS]
    return [pool[i % len(pool)] for i in range(n)]


def corpus_texts() -> list[str]:
    """Return texts to learn a tokenizer from: the shared corpora when found, else the generated prompts."""
    data = Path(os.environ.get("HUBSTYLE_DATA_DIR", REPO.parent / "shared" / "data"))
    texts = []
    for name in ("tinyshakespeare/input.txt", "wikitext-2/valid.txt"):
        if (data / name).is_file():
            text = (data / name).read_text(encoding="utf-8")[:300_000]
            texts += [text[i : i + 2000] for i in range(0, len(text), 2000)]
    return texts or [o.format(t) for t in TOPICS for o in OPENINGS] * 20


def build_setup(tmp: Path, base: str | None, rank: int) -> tuple[str, Path]:
    """Return (base folder, adapter folder): a random-init 4x256 GPT-2 unless ``base`` is given, plus a LoRA."""
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2LMHeadModel

    from hubstyle.models import load_base
    from hubstyle.pretrain import tiny_config, train_tokenizer

    if base is None:
        tok = train_tokenizer(corpus_texts(), vocab_size=4096)
        torch.manual_seed(0)
        GPT2LMHeadModel(tiny_config(len(tok), n_layer=4, n_embd=256, n_head=4, n_positions=256)).save_pretrained(
            tmp / "base"
        )
        tok.save_pretrained(tmp / "base")
        base = str(tmp / "base")
    model = load_base(base)
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    targets = [n for n in ("c_attn", "c_proj", "c_fc", "q_proj", "k_proj", "v_proj", "o_proj") if n in names]
    torch.manual_seed(1)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets, init_lora_weights=False,
                        fan_in_fan_out="c_attn" in targets)
    get_peft_model(model, config).save_pretrained(tmp / "adapter")
    return base, tmp / "adapter"


def untrained_backbone_classifier():
    """Return a StyleClassifier over the packaged MiniLM with an untrained 2-label head (real cost, random labels)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hubstyle.evaluate.classifier import StyleClassifier, default_backbone
    from hubstyle.models import device

    folder = default_backbone()
    model = AutoModelForSequenceClassification.from_pretrained(
        folder, num_labels=2, id2label={0: "modern", 1: "shakespeare"}, label2id={"modern": 0, "shakespeare": 1}
    )
    return StyleClassifier(model.to(device()), AutoTokenizer.from_pretrained(folder))


def load_style_classifier(path: str | None):
    """Return (classifier or None, a note saying which one)."""
    if path:
        from hubstyle.evaluate.classifier import load_classifier

        return load_classifier(path), f"classifier {path}"
    from hubstyle.errors import HubstyleError

    try:
        return untrained_backbone_classifier(), "packaged MiniLM backbone, untrained 2-label head (timing only)"
    except HubstyleError as err:
        return None, f"NOTE: no classifier ({err}); classification skipped in both paths"


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Return the measured seconds and ratio after printing them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="model folder to use instead of a random-init 4x256 GPT-2")
    parser.add_argument("--classifier", help="trained style classifier folder (default: MiniLM backbone)")
    parser.add_argument("--prompts", type=int, default=150)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per generate call (x2 rows)")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for generation in both paths")
    parser.add_argument("--quick", action="store_true", help="24 prompts instead of 150")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    args = parser.parse_args(argv)
    n = 24 if args.quick else args.prompts
    if args.threads:
        # On a CPU shared with other busy processes, more OpenMP threads than free cores can be many times slower.
        torch.set_num_threads(args.threads)

    from hubstyle.evaluate.generation import generate_side_by_side
    from hubstyle.models import autocast, load_adapters, load_base, load_tokenizer

    tmp = Path(tempfile.mkdtemp(prefix="hubstyle-eval-bench-"))
    base, adapter = build_setup(tmp, args.base, args.rank)
    tokenizer = load_tokenizer(base)
    model = load_adapters(load_base(base), {"style": adapter})
    classifier, note = load_style_classifier(args.classifier)
    prompts = neutral_prompts(n)
    new = args.new_tokens
    dev = next(model.parameters()).device

    def batched() -> tuple[list[str], float]:
        pairs = generate_side_by_side(model, tokenizer, prompts, "style", max_new_tokens=new, min_new_tokens=new,
                                      batch_size=args.batch_size, bf16=args.bf16)
        texts = [b for b, _ in pairs] + [t for _, t in pairs]
        t0 = time.perf_counter()
        if classifier is not None:
            classifier.predict(texts, batch_size=32)
        return texts, time.perf_counter() - t0

    @torch.inference_mode()
    def one_at_a_time() -> tuple[list[str], float]:
        gen = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        base_texts, tuned_texts = [], []
        for prompt in prompts:
            enc = tokenizer([prompt], return_tensors="pt").to(dev)
            with autocast(args.bf16, dev):
                with model.disable_adapter():
                    out_base = model.generate(**enc, **gen)
                out_tuned = model.generate(**enc, **gen)
            cut = enc["input_ids"].shape[1]
            base_texts.append(tokenizer.decode(out_base[0, cut:], skip_special_tokens=True).strip())
            tuned_texts.append(tokenizer.decode(out_tuned[0, cut:], skip_special_tokens=True).strip())
        texts = base_texts + tuned_texts
        t0 = time.perf_counter()
        if classifier is not None:
            for text in texts:
                classifier.predict([text], batch_size=1)
        return texts, time.perf_counter() - t0

    # a short warm-up so neither path pays for first-call allocation
    generate_side_by_side(model, tokenizer, prompts[:2], "style", max_new_tokens=4, bf16=args.bf16)
    t0 = time.perf_counter()
    texts_batched, c_batched = batched()
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    texts_loop, c_loop = one_at_a_time()
    t_loop = time.perf_counter() - t0

    same = sum(a == b for a, b in zip(texts_batched, texts_loop))
    cfg = model.config
    print(
        f"device {dev.type}, torch threads {torch.get_num_threads()}, base {'random-init' if not args.base else base} "
        f"({cfg.n_layer if hasattr(cfg, 'n_layer') else cfg.num_hidden_layers} layers, vocab {len(tokenizer)}), "
        f"LoRA rank {args.rank}, {n} prompts x (base + tuned), {new} new tokens each, bf16 {args.bf16}"
    )
    print(note)
    print(
        f"batched (mixed-adapter generate, {args.batch_size} prompts a call; one predict call): {t_batched:8.2f} s "
        f"(generation {t_batched - c_batched:.2f} s, classification {c_batched:.2f} s)"
    )
    print(
        f"one prompt at a time (base, then tuned; each text classified alone):           {t_loop:8.2f} s "
        f"(generation {t_loop - c_loop:.2f} s, classification {c_loop:.2f} s)"
    )
    print(
        f"speed-up loop / batched: {t_loop / t_batched:.2f}x in all (target >= 5x); generation "
        f"{(t_loop - c_loop) / (t_batched - c_batched):.2f}x, classification {c_loop / max(c_batched, 1e-9):.2f}x"
    )
    print(f"identical texts in both paths: {same}/{len(texts_loop)} (greedy)")
    return {
        "batched_s": t_batched, "loop_s": t_loop, "ratio": t_loop / t_batched,
        "batched_classify_s": c_batched, "loop_classify_s": c_loop, "identical": same,
    }


if __name__ == "__main__":
    main()
