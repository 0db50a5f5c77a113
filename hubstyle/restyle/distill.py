"""On-topic chat data in a style, distilled: a base model answers modern questions in plain English, a restyler
rewrites each answer, and only the pairs whose rewrite is judged in the style AND still picks out its own question
are kept. A style model trained on them learns to answer the question, in the style.

The pool of user turns never holds the evaluation prompts: chatterbot-corpus's questions and hubstyle's templates,
minus anything equal or close (MiniLM cosine >= ``leak_cosine``) to a prompt in ``data/prompts.txt`` or
``data/demo_prompts.txt``. Every stage is greedy, batched in a fixed order, and cached in the build folder, so a
re-run reuses what was done and a slice of the pool gives the same rows.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from hubstyle.errors import HubstyleError

DISTILLED_FILE = "distilled.jsonl"  # the kept rows: {"messages": [user, assistant], "plain", "origin", ...}
DATASHEET_FILE = "datasheet.json"  # base, restyler, filters, counts, what was dropped and why
ANSWERS_CACHE = "answers.jsonl"
MIN_DISTINCT_2 = 0.6  # a plain answer whose word pairs repeat more than this is a loop, not an answer
# What the cards say about a restyler's training data, by its source (its licence, where it comes from).
DATA_NOTES = {
    "shakespeare-modern": (
        "The pairs are the train split of Jhamtani et al. (2017, \"Shakespearizing Modern Language Using "
        "Copy-Enriched Sequence to Sequence Models\"; repository harsh19/Shakespearizing-Modern-English), itself from "
        "the corpus of Xu et al. (2012, \"Paraphrasing for Style\"). The modern side was written for study guides "
        "(SparkNotes, eNotes). It is research data and its licence is not stated: whoever publishes or uses this "
        "adapter decides whether that use is allowed."
    ),
}
_QUESTION_START = re.compile(r"^(what|how|why|who|where|when|which|can|could|should|is|are|do|does|tell|give|"
                             r"describe|explain|any)\b", re.I)
# A plain answer that declines or talks about being a program ("as a chatbot designed to ..., I don't have the
# ability"): restyled, it would teach the style model to refuse in the style.
_REFUSAL = re.compile(r"\bas an? (?:[\w-]+ )?(?:ai|chatbot|assistant|language model)\b|\b(?:ai|chatbot) designed\b|"
                      r"\bi (?:do not|don't) have the (?:ability|capability|capacity|power)\b|"
                      r"\b(?:not|n't) (?:equipped|capable|able) to (?:assist|help|provide)\b", re.I)
_CODE_WORDS = re.compile(r"\b(python|javascript|typescript|java|c\+\+|sql|helm|docker|kubernetes|regex|code|"
                         r"function|class|interface|sort|algorithm|program)\b", re.I)

TASKS = [
    "fix a leaking tap", "start running in the morning", "save money on groceries", "learn to play the guitar",
    "write a good cover letter", "keep my houseplants alive", "fall asleep faster", "choose a second-hand bike",
    "make friends after moving to a new city", "prepare for a job interview", "clean a very dirty oven",
    "teach my dog to come back when called", "plan a cheap holiday", "stop putting things off",
    "get better at speaking in public", "pick a good watermelon", "study for an exam in one week",
    "tell my landlord the heating is broken", "remember people's names", "start a vegetable garden",
    "say no to extra work politely", "calm down before a big meeting", "keep my inbox under control",
    "choose a present for my grandmother", "get my children to eat vegetables", "learn a new language as an adult",
    "paint a small room", "apologise to a friend I let down", "keep warm in a cold flat", "bake bread at home",
    "organise a surprise party", "find a hobby I will stick with", "write a short speech for a wedding",
    "get rid of ants in the kitchen", "keep a conversation going on a first date", "look after a sick cat",
    "walk further without getting tired", "cut down on sugar", "sell my old furniture", "keep my bike from rusting",
]
TOPICS = [
    "working from home", "electric cars", "social media", "online shopping", "city parks", "night trains",
    "video games", "modern art museums", "fast food", "long summer holidays", "learning to swim", "public libraries",
    "growing old", "moving to the countryside", "keeping bees", "winter in the mountains", "board games",
    "living with flatmates", "the first day at a new job", "getting a puppy", "camping in the rain",
    "a crowded underground train", "a long-distance friendship", "reading before bed", "the smell of the sea",
    "a broken umbrella", "a noisy neighbour", "learning to drive", "a lost wallet", "a very old bookshop",
]
TASK_TEMPLATES = ["How do I {x}?", "What is the best way to {x}?", "Can you help me {x}?"]
TOPIC_TEMPLATES = ["What do you think about {x}?", "Tell me something about {x}.", "Is there anything good about {x}?"]


@dataclass
class DistillConfig:
    """How the chat set is distilled: pool, base decoding, and the two filters a row must pass."""

    enabled: bool = True
    max_prompts: int | None = None  # the first N of the pool (its order is fixed); None: all
    min_words: int = 12  # plain answers shorter than this are dropped (they carry little of a style once rewritten)
    max_new_tokens: int = 72  # the base's plain answer; a cut-off last sentence is dropped
    max_rank: int = 3  # keep a rewrite only if its own question ranks within the first max_rank of the pool
    leak_cosine: float = 0.85  # pool prompts this close to an evaluation prompt are dropped
    batch_size: int = 16
    # the logit bias toward the style words while rewriting (None: the restyler's own decoding); the rewrites only
    # need to keep the answer, not to match a reference, so distilling may push harder than the shipped decoding
    style_bias: float | None = None
    eval_prompt_files: list[str] = field(default_factory=lambda: ["prompts.txt", "demo_prompts.txt"])


def chatterbot_questions() -> list[str]:
    """Return chatterbot-corpus's first lines that are plain questions of 4+ words (no code requests), deduplicated."""
    from hubstyle.data import load_corpus

    seen, out = set(), []
    for block in load_corpus("chatterbot").blocks:
        line = " ".join(block.split("\n")[0].split())
        key = line.lower().rstrip("?.! ")
        if len(line.split()) < 4 or key in seen or _CODE_WORDS.search(line) or not _QUESTION_START.match(line):
            continue
        seen.add(key)
        out.append(line[0].upper() + line[1:])
    return out


def template_prompts() -> list[str]:
    """Return hubstyle's templated everyday questions (tasks and topics, each under every template)."""
    return [t.format(x=x) for x in TASKS for t in TASK_TEMPLATES] + [t.format(x=x) for x in TOPICS for t in TOPIC_TEMPLATES]


def evaluation_prompts(files: list[str]) -> list[str]:
    """Return the prompts of hubstyle's evaluation prompt files (what the pool must never hold)."""
    from hubstyle.evaluate.prompts import load_prompts, prompts_dir

    return [p for name in files for p in load_prompts(prompts_dir() / name)]


def prompt_pool(cfg: DistillConfig, encoder=None) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """Return ((origin, prompt) pairs in a fixed order, counts of what was dropped as too close to an evaluation
    prompt) for the pool: template questions interleaved with chatterbot's."""
    from hubstyle.evaluate.answers import embed, load_encoder

    templates, chatterbot = template_prompts(), chatterbot_questions()
    pool = []
    for i in range(max(len(templates), len(chatterbot))):  # interleaved, so the first N holds both kinds
        pool += [("template", templates[i])] if i < len(templates) else []
        pool += [("chatterbot", chatterbot[i])] if i < len(chatterbot) else []
    evals = evaluation_prompts(cfg.eval_prompt_files)
    exact = {e.lower().strip() for e in evals}
    encoder = encoder or load_encoder()
    sims = embed(encoder, [p for _, p in pool], 64) @ embed(encoder, evals, 64).T
    nearest = sims.max(dim=1).values.tolist()
    kept, dropped = [], {"equal_to_evaluation_prompt": 0, "close_to_evaluation_prompt": 0}
    for (origin, prompt), near in zip(pool, nearest):
        if prompt.lower().strip() in exact:
            dropped["equal_to_evaluation_prompt"] += 1
        elif near >= cfg.leak_cosine:
            dropped["close_to_evaluation_prompt"] += 1
        else:
            kept.append((origin, prompt))
    return (kept[: cfg.max_prompts] if cfg.max_prompts else kept), dropped


def whole_sentences(text: str) -> str:
    """Return ``text`` up to its last sentence end (an answer cut by max_new_tokens loses its unfinished sentence;
    one with no sentence end at all is kept whole)."""
    text = " ".join(text.split())
    ends = [m.end() for m in re.finditer(r"[.!?][\"')\]]*(?=\s|$)", text)]
    return text[: ends[-1]] if ends else text


def plain_answers(model, tokenizer, prompts: list[str], cfg: DistillConfig) -> list[str]:
    """Return the base's greedy answer to each prompt as a user's turn (the restyler adapter switched off)."""
    from hubstyle.evaluate.generation import generate

    with model.disable_adapter():
        raw = generate(model, tokenizer, prompts, max_new_tokens=cfg.max_new_tokens, do_sample=False,
                       batch_size=cfg.batch_size, chat="model", desc="plain answers")
    return [whole_sentences(a) for a in raw]


def distill(restyler, classifier, cfg: DistillConfig, out_dir: Path, *, style: str, encoder=None,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Return the datasheet after writing the distilled set and its datasheet to ``out_dir`` (answers cached)."""
    from hubstyle.evaluate.answers import load_encoder, prompt_ranks

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    encoder = encoder or load_encoder()
    pool, leaks = prompt_pool(cfg, encoder)
    prompts = [p for _, p in pool]
    log(f"distilling: {len(prompts)} pool prompts ({leaks['equal_to_evaluation_prompt'] + leaks['close_to_evaluation_prompt']} "
        "dropped as too close to an evaluation prompt)")
    cache = out_dir / ANSWERS_CACHE
    # the plain answers depend on the base, the prompts and the decoding; the rewrites also on the restyler's weights
    plain_config = {k: v for k, v in asdict(cfg).items() if k != "style_bias"}  # style_bias changes the rewrites only
    key = {"prompts": prompts, "config": plain_config, "base": restyler.facts.get("base_model")}
    bias = restyler.style_bias if cfg.style_bias is None else float(cfg.style_bias)
    rewriter = restyler_fingerprint(restyler, bias)
    cached = _cached(cache, key)
    if cached is not None and all(r.get("restyler") == rewriter for r in cached):
        rows = cached
    else:
        plain = [r["plain"] for r in cached] if cached is not None else plain_answers(
            restyler.model, restyler.tokenizer, prompts, cfg)
        todo = [i for i, a in enumerate(plain) if len(a.split()) >= cfg.min_words]
        styled = restyler.restyle([plain[i] for i in todo], batch_size=cfg.batch_size, style_bias=bias)
        restyled = dict(zip(todo, styled))
        rows = [{"origin": o, "prompt": p, "plain": plain[i], "restyled": restyled.get(i), "restyler": rewriter}
                for i, (o, p) in enumerate(pool)]
        cache.write_text("\n".join(json.dumps(r) for r in [{"key": key}, *rows]) + "\n", encoding="utf-8")
    return _filter_and_write(rows, prompts, classifier, cfg, out_dir, style=style, encoder=encoder, leaks=leaks,
                             restyler=restyler, style_bias=bias, log=log, ranks_of=prompt_ranks)


def restyler_fingerprint(restyler, style_bias: float) -> str:
    """Return the sha256 of the restyler's adapter weights (or its path without them) and the decoding bias its
    rewrites were made with: what they depend on."""
    from hubstyle.fsio import file_sha256
    from hubstyle.layout import ADAPTER_WEIGHTS

    weights = Path(restyler.path) / ADAPTER_WEIGHTS
    made = file_sha256(weights) if weights.is_file() else str(restyler.path)
    return f"{made} style_bias={style_bias:g}" if style_bias else made


def _cached(path: Path, key: dict) -> list[dict] | None:
    if not path.is_file():
        return None
    lines = path.read_text(encoding="utf-8").splitlines()
    head = json.loads(lines[0]) if lines else {}
    return [json.loads(x) for x in lines[1:]] if head.get("key") == json.loads(json.dumps(key)) else None


def _filter_and_write(rows, prompts, classifier, cfg, out_dir, *, style, encoder, leaks, restyler, style_bias, log,
                      ranks_of):
    from hubstyle.evaluate.answers import distinct_n

    dropped = {"plain_answer_too_short": 0, "plain_answer_repeats_itself": 0, "plain_answer_refuses": 0,
               "rewrite_unchanged": 0, "rewrite_repeats_itself": 0, "not_judged_in_style": 0, "off_topic": 0}
    answered = [r for r in rows if r["restyled"]]
    dropped["plain_answer_too_short"] = len(rows) - len(answered)
    # a small base loops ("It's a cruel mistress, ain't she? It's a cruel mistress, ..."): such text teaches looping
    fluent = [r for r in answered if distinct_n([r["plain"]], 2) >= MIN_DISTINCT_2]
    dropped["plain_answer_repeats_itself"] = len(answered) - len(fluent)
    candidates = [r for r in fluent if not _REFUSAL.search(r["plain"])]
    dropped["plain_answer_refuses"] = len(fluent) - len(candidates)
    labels = classifier.predict([r["restyled"] for r in candidates]) if candidates else []
    ranks = ranks_of(prompts, [r["restyled"] or "" for r in rows], encoder=encoder)
    by_prompt = dict(zip(prompts, ranks))
    kept = []
    for row, label in zip(candidates, labels):
        rank = by_prompt[row["prompt"]]
        if row["restyled"].strip() == row["plain"].strip():
            dropped["rewrite_unchanged"] += 1
        elif distinct_n([row["restyled"]], 2) < MIN_DISTINCT_2:  # a biased rewrite can loop ("thy mother thy mother")
            dropped["rewrite_repeats_itself"] += 1
        elif label != style:
            dropped["not_judged_in_style"] += 1
        elif rank > cfg.max_rank:
            dropped["off_topic"] += 1
        else:
            kept.append({"messages": [{"role": "user", "content": row["prompt"]},
                                      {"role": "assistant", "content": row["restyled"]}],
                         "plain": row["plain"], "origin": row["origin"], "prompt_rank": rank})
    (out_dir / DISTILLED_FILE).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept),
                                          encoding="utf-8")
    base = restyler.facts.get("base_model")
    sheet = {
        "what": f"modern questions answered by {base} in plain English, rewritten in the {style} style by a "
                "restyler, kept only where the rewrite is judged in the style and still picks out its question",
        "base_model": base, "base_decoding": {"do_sample": False, "max_new_tokens": cfg.max_new_tokens},
        "restyler": {"path": restyler.path, "data": restyler.facts.get("data", {}).get("source"),
                     "style_bias": style_bias,
                     "data_note": DATA_NOTES.get(restyler.facts.get("data", {}).get("source", ""), "")},
        "pool": {"sources": ["chatterbot-corpus questions (BSD-3)", "hubstyle templates"], "prompts": len(prompts),
                 "dropped_as_evaluation_leaks": leaks, "leak_cosine": cfg.leak_cosine},
        "filters": {"min_words": cfg.min_words, "refusals": _REFUSAL.pattern, "style": f"classifier label == {style!r}",
                    "on_topic": f"own question ranked <= {cfg.max_rank} among the {len(prompts)} pool prompts "
                                "(MiniLM-L6 similarity)"},
        "counts": {"pool": len(rows), "kept": len(kept), **{f"dropped_{k}": v for k, v in dropped.items()},
                   "kept_by_origin": {o: sum(r["origin"] == o for r in kept) for o in ("template", "chatterbot")}},
        "config": asdict(cfg),
    }
    (out_dir / DATASHEET_FILE).write_text(json.dumps(sheet, indent=2), encoding="utf-8")
    summary = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in dropped.items())
    if not kept:
        raise HubstyleError(f"no distilled row passed the filters (dropped: {summary}); the restyler is not good "
                            f"enough yet: train it longer (the datasheet is in {out_dir})")
    log(f"distilled {len(kept)} of {len(rows)} rows; dropped: {summary}")
    return sheet
