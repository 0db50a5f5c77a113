"""The offline quickstart: SmolLM2-135M-Instruct (or, with --tiny, a base pretrained here) -> Shakespeare LoRA ->
classifier + evaluation -> cards -> (push) -> Space."""

from __future__ import annotations

import json
from pathlib import Path

from hubstyle.bases import SMOLLM2_ID
from hubstyle.config import (
    TINY_BASE, ClassifierConfig, CorpusConfig, DialogueConfig, EvaluationConfig, PretrainConfig, RunConfig,
    TrainingConfig,
)
from hubstyle.runner import RunResult, run_config



QUICKSTART_SPEECHES = 100  # tinyshakespeare speeches beside the distilled set's rows
QUICKSTART_STEPS = 40  # optimizer steps of QUICKSTART_BATCH packed 256-token blocks (at lr 4e-3: measured on 2 cores,
# the style rate and prompt rank of 48 steps at 2e-3, in 60 s less; 40 steps at 2e-3 answered in style less often)
QUICKSTART_BATCH = 4


def quickstart_config(out: str | Path, *, tiny: bool = False) -> RunConfig:
    """Return the quickstart's RunConfig, sized for ~10 min on 2 cores and bounded by steps (same adapter each run).

    Default: a Shakespeare chat adapter on SmolLM2-135M-Instruct, trained on the shipped distilled set (modern
    questions, SmolLM2's plain answers rewritten by the shipped restyler) mixed with tinyshakespeare speeches as
    answers to modern questions about them. ``tiny``: the from-scratch path (a tiny GPT pretrained on wikitext, plain-text LoRA).
    """
    if tiny:
        return RunConfig(
            base_model=TINY_BASE,
            output_dir=str(out),
            pretrain=PretrainConfig(max_steps=500, batch_size=16, learning_rate=2e-3),  # steps, not a clock: same base each run
            training=TrainingConfig(
                method="lora", lora_rank=16, lora_alpha=32, cutoff_len=256, batch_size=8,
                max_steps=320, learning_rate=3e-3, warmup_steps=10, eval_every=80, checkpoint_every=160,
            ),
        )
    return RunConfig(
        base_model=SMOLLM2_ID,
        output_dir=str(out),
        # on-topic answers (distilled: they answer the question) next to real speeches (they carry the style)
        corpora=[CorpusConfig(source="shakespeare", max_samples=QUICKSTART_SPEECHES),
                 CorpusConfig(source="shakespeare-distilled", name="shakespeare", synthetic=True)],
        # Speeches of 16+ words: on real held-out speeches the quickstart's classifier calls 43% of those under 8 words
        # Shakespeare, 81% at 8-15 and 99% from 16 on; trained on short lines, the adapter answers in short lines.
        dialogue=DialogueConfig(render="chat", rounds=1, prompts="questions", min_answer_words=16),
        training=TrainingConfig(
            method="lora", lora_rank=16, lora_alpha=32, cutoff_len=256, batch_size=QUICKSTART_BATCH,
            max_steps=QUICKSTART_STEPS, learning_rate=4e-3, warmup_steps=5,
            # no validation pass (18 s here): the evaluation stage scores held-out answers with and without the adapter
            eval_every=0,
            checkpoint_every=QUICKSTART_STEPS // 2,
            # one 256-token sequence per micro-batch (same update): 8 at once held 10.6 GB of activations
            gradient_accumulation=QUICKSTART_BATCH,
        ),
        # 57 prompts a batch (114 rows, base and tuned side by side; the 170 prompts in three batches): 95 s against
        # 108 s at 32 and 98 s at 85 on 2 cores, 0.3 GB more than 32
        # 16 held-out blocks a part, 20 s less than 24: the base's perplexities moved 4-6% (modern 37.0 -> 39.1)
        evaluation=EvaluationConfig(heldout_blocks=16, batch_size=57),
        # the judge also sees shakespeare-modern's line pairs, original vs modern paraphrase (The Tempest scored on, never
        # trained on): without them it called 91% of modern paraphrases of The Tempest "shakespeare", with them 4%
        classifier=ClassifierConfig(pairs="shakespeare-modern"),
    )


def quickstart(
    out: str | Path, *, repo_id: str | None = None, push: bool = False, private: bool = False, tiny: bool = False,
    log=print,
) -> RunResult:
    """Return the RunResult of the offline quickstart: the runner's stages on ``quickstart_config`` (run.json records
    each stage's time and peak memory; a second run, or ``hubstyle run OUT/config.yaml``, skips what is cached).
    Writes OUT/publish/ and pushes it when `push` is set."""
    cfg = quickstart_config(out, tiny=tiny)
    cfg.push.private = private
    ran = run_config(cfg, repo_id=repo_id, push=push, log=log)
    m = ran.metrics if ran.metrics is not None else json.loads(ran.layout.metrics.read_text(encoding="utf-8"))
    result = RunResult(layout=ran.layout, training=ran.training, metrics=m, manifest=ran.manifest)

    loss, ppl = m["heldout_loss"], m["perplexity"]
    log("")
    what = "answers" if m["training"].get("chat_format") else "text"
    log(f"held-out Shakespeare {what}: loss base {loss['style']['base']:.3f}, tuned {loss['style']['tuned']:.3f}, "
        f"bigram {loss['style']['bigram']:.3f} nats/token; perplexity base {ppl['style']['base']:.1f}, "
        f"tuned {ppl['style']['tuned']:.1f}")
    log(f"held-out modern English: loss base {loss['generic']['base']:.3f}, tuned {loss['generic']['tuned']:.3f}; "
        f"perplexity base {ppl['generic']['base']:.1f}, tuned {ppl['generic']['tuned']:.1f} (forgetting)")
    rate = m["style_rate"]
    what_gen = "answers" if rate["decoding"].get("chat") else "continuations"
    for side in ("base", "tuned"):
        r = rate[side]
        log(f"style rate ({side}): {r['rate']:.1%} of {r['n']} {what_gen} judged '{rate['target']}' "
            f"(95% CI {r['low']:.1%}-{r['high']:.1%})")
    if m.get("answers"):
        from hubstyle.evaluate.answers import answer_lines

        for line in answer_lines(m["answers"]):  # base, tuned and random real text: cosine and prompt rank
            log(line)
    log(f"time and peak memory by stage: {stage_summary(ran.manifest)}")
    return result


def stage_summary(manifest) -> str:
    """Return one line: each stage's wall time and peak memory as run.json recorded them (cached ones say so)."""
    parts = []
    for name, record in manifest.stages.items():
        if record.status == "ran":
            parts.append(f"{name} {record.seconds:.0f} s / {(record.peak_rss_mb or 0) / 1024:.1f} GB")
        elif record.status == "cached":
            parts.append(f"{name} cached")
    return f"{'; '.join(parts)}; total {manifest.seconds:.0f} s"
