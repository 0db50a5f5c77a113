"""One run end to end, driven by a RunConfig: corpus -> (tiny base) -> train -> measure -> metrics.json."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from hubstyle.config import PretrainConfig, RunConfig, TrainingConfig
from hubstyle.data import load_corpus, split_blocks
from hubstyle.dataset import StyleData, build_style_data, style_blocks
from hubstyle.layout import RunLayout
from hubstyle.pretrain import PRETRAIN_REPORT, BigramBaseline, pretrain_base
from hubstyle.train import TrainReport, train

TINY_BASE = "tiny"
METRICS_SCHEMA = "hubstyle.metrics/1"


def quickstart_config(out: str | Path) -> RunConfig:
    """Return the quickstart's RunConfig: tiny base on wikitext, Shakespeare LoRA, sized for ~10 min on 2 cores."""
    return RunConfig(
        base_model=TINY_BASE,
        output_dir=str(out),
        pretrain=PretrainConfig(max_steps=2000, time_budget_s=200, batch_size=16, learning_rate=2e-3),
        training=TrainingConfig(
            method="lora", lora_rank=16, lora_alpha=32, lora_dropout=0.05, cutoff_len=256, batch_size=8,
            max_steps=160, learning_rate=2e-3, warmup_steps=10, eval_every=40, checkpoint_every=80,
        ),
    )


def ensure_base(cfg: RunConfig, layout: RunLayout, log=print) -> tuple[str, dict | None]:
    """Return (base path or id, pretrain facts): pretrains the tiny base into OUT/base unless it is already there."""
    if cfg.base_model != TINY_BASE:
        return cfg.base_model, None
    report_path = layout.base / PRETRAIN_REPORT
    if report_path.is_file():
        log(f"reusing the tiny base in {layout.base}")
    else:
        generic = load_corpus(cfg.pretrain.corpus)
        parts = split_blocks(generic.blocks, validation=0.05, test=0.0, seed=cfg.pretrain.seed)
        log(f"pretraining a tiny base on {cfg.pretrain.corpus} ({len(parts.train)} blocks) ...")
        pretrain_base(parts.train, parts.validation, layout.base, cfg.pretrain)
    report = json.loads(report_path.read_text(encoding="utf-8"))
    report.pop("history", None)
    return str(layout.base), report


def heldout_losses(base: str, adapter: Path, texts: dict[str, list[str]], block_size: int) -> dict[str, dict[str, float]]:
    """Return {corpus: {"base": loss, "tuned": loss}} on held-out texts, one model with the adapter toggled."""
    from hubstyle.loop import mean_nll
    from hubstyle.models import load_adapters, load_base, load_tokenizer
    from hubstyle.packing import pack

    tokenizer = load_tokenizer(base)
    model = load_adapters(load_base(base), {"style": adapter})
    out = {}
    for name, items in texts.items():
        blocks = pack(items, tokenizer, block_size, what=f"held-out {name} text")
        with model.disable_adapter():
            base_loss = mean_nll(model, blocks)
        out[name] = {"base": base_loss, "tuned": mean_nll(model, blocks)}
    return out


def bigram_loss(base: str, train_texts: list[str], test_texts: list[str], block_size: int) -> float:
    """Return the held-out loss of a bigram model counted on the style's training split (same tokenizer)."""
    from hubstyle.models import load_tokenizer
    from hubstyle.packing import pack

    tokenizer = load_tokenizer(base)
    model = BigramBaseline(len(tokenizer)).fit(pack(train_texts, tokenizer, block_size))
    return model.mean_nll(pack(test_texts, tokenizer, block_size))


@dataclass
class RunResult:
    """What `run` produced: the layout, the training report and the metrics written to metrics.json."""

    layout: RunLayout
    training: TrainReport
    metrics: dict = field(default_factory=dict)


def run(cfg: RunConfig, *, resume: bool = False, log=print) -> RunResult:
    """Return the RunResult of training `cfg`'s style adapter (pretraining the tiny base first if asked)."""
    import yaml

    from hubstyle import __version__
    from hubstyle.models import load_tokenizer

    blocks = style_blocks(cfg)  # bad corpora fail here, before anything is written
    layout = RunLayout(cfg.out)
    layout.root.mkdir(parents=True, exist_ok=True)
    layout.config.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
    base, pretrain_facts = ensure_base(cfg, layout, log)
    tokenizer = load_tokenizer(base)
    data: StyleData = build_style_data(
        cfg, lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]), blocks
    )
    for label, counts in data.token_counts.items():
        log(f"style '{label}': {counts['train']:,} train / {counts['validation']:,} validation / {counts['test']:,} test tokens")
    validation = [t for s in data.splits.values() for t in s.validation]
    out_dir = layout.adapter if cfg.training.method in ("lora", "qlora") else layout.model
    report = train(
        base, data.all_train_texts(), validation, out_dir, cfg.training,
        checkpoint_dir=layout.checkpoints, resume=resume,
        data_facts={"styles": data.token_counts, "mix": data.mix_report},
    )
    log(f"trained {report.steps} steps in {report.seconds:.0f}s ({report.tokens_per_second:,.0f} tokens/s) -> {out_dir}")

    metrics = {
        "schema": METRICS_SCHEMA,
        "run": {
            "name": layout.root.resolve().name,
            "style": cfg.style,
            "base_model": base,
            "hubstyle_version": __version__,
            "created": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        },
        "data": {"styles": data.token_counts, "generic_corpus": cfg.generic_corpus, "mix": data.mix_report},
        "training": report.as_dict(),
    }
    if pretrain_facts:
        metrics["pretrain"] = pretrain_facts
    if out_dir == layout.adapter:
        style_test = data.splits[cfg.style].test
        generic = load_corpus(cfg.generic_corpus)
        generic_test = split_blocks(generic.blocks, validation=0.05, test=0.0, seed=cfg.split.seed).validation
        losses = heldout_losses(base, out_dir, {"style": style_test, "generic": generic_test}, cfg.training.cutoff_len)
        losses["style"]["bigram"] = bigram_loss(base, data.splits[cfg.style].train, style_test, cfg.training.cutoff_len)
        metrics["heldout_loss"] = losses
        metrics["perplexity"] = {
            k: {m: math.exp(v) for m, v in d.items() if m != "bigram"} for k, d in losses.items()
        }
    write_metrics(layout, metrics)
    return RunResult(layout=layout, training=report, metrics=metrics)


def write_metrics(layout: RunLayout, metrics: dict) -> Path:
    """Return the path of metrics.json after writing it atomically."""
    tmp = layout.metrics.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(metrics, indent=2, default=str), encoding="utf-8")
    tmp.replace(layout.metrics)
    return layout.metrics


def side_by_side(base: str, adapter: Path, prompts: list[str], max_new_tokens: int = 40) -> list[tuple[str, str, str]]:
    """Return (prompt, base continuation, tuned continuation) triples, greedy, one model with the adapter toggled."""
    import torch

    from hubstyle.models import load_adapters, load_base, load_tokenizer

    tokenizer = load_tokenizer(base)
    model = load_adapters(load_base(base), {"style": adapter})
    rows = []
    for prompt in prompts:
        batch = tokenizer(prompt, return_tensors="pt").to(model.device)
        kwargs = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        with torch.no_grad():
            with model.disable_adapter():
                plain = model.generate(**batch, **kwargs)
            tuned = model.generate(**batch, **kwargs)
        n = batch["input_ids"].shape[1]
        rows.append((prompt, tokenizer.decode(plain[0, n:], skip_special_tokens=True).strip(),
                     tokenizer.decode(tuned[0, n:], skip_special_tokens=True).strip()))
    return rows


def quickstart(out: str | Path, *, log=print) -> RunResult:
    """Return the RunResult of the offline quickstart: tiny base, Shakespeare LoRA, held-out losses, side by side."""
    start = time.perf_counter()
    cfg = quickstart_config(out)
    result = run(cfg, log=log)
    m = result.metrics
    result.metrics["quickstart_seconds"] = time.perf_counter() - start
    write_metrics(result.layout, result.metrics)
    log("")
    log(f"held-out Shakespeare loss: base {m['heldout_loss']['style']['base']:.3f}, "
        f"tuned {m['heldout_loss']['style']['tuned']:.3f}, bigram {m['heldout_loss']['style']['bigram']:.3f} (nats/token)")
    log(f"held-out modern English loss: base {m['heldout_loss']['generic']['base']:.3f}, "
        f"tuned {m['heldout_loss']['generic']['tuned']:.3f}")
    return result
