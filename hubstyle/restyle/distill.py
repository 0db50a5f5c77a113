"""On-topic chat data in a style, distilled: a base model answers modern questions in plain English, a restyler
rewrites each answer, and only the pairs whose rewrite is judged in the style AND still picks out its own question
are kept. A style model trained on them learns to answer the question, in the style.

The pool of user turns (``hubstyle.restyle.pool``) never holds the evaluation prompts: chatterbot-corpus's questions
and hubstyle's templates, minus anything equal or close (MiniLM cosine >= ``leak_cosine``) to a prompt in
``data/prompts.txt`` or ``data/demo_prompts.txt``. Every stage is greedy and cached by question in the build folder,
so a re-run, or a run over a larger pool, answers and rewrites only what it has not seen.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from hubstyle.data.parallel import DATA_NOTES
from hubstyle.errors import HubstyleError

DISTILLED_FILE = "distilled.jsonl"  # the kept rows: {"messages": [user, assistant], "plain", "origin", ...}
DATASHEET_FILE = "datasheet.json"  # base, restyler, filters, counts, what was dropped and why
ANSWERS_CACHE = "answers.jsonl"
MIN_DISTINCT_2 = 0.6  # a plain answer whose word pairs repeat more than this is a loop, not an answer
# A plain answer that declines or talks about being a program ("as a chatbot designed to ..., I don't have the
# ability"): restyled, it would teach the style model to refuse in the style.
_REFUSAL = re.compile(r"\bas an? (?:[\w-]+ )?(?:ai|chatbot|assistant|language model)\b|\b(?:ai|chatbot) designed\b|"
                      r"\bi (?:do not|don't) have the (?:ability|capability|capacity|power)\b|"
                      r"\b(?:not|n't) (?:equipped|capable|able) to (?:assist|help|provide)\b", re.I)
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
    num_beams: int | None = None  # beams searched while rewriting (None: the restyler's own decoding; 1: greedy)
    eval_prompt_files: list[str] = field(default_factory=lambda: ["prompts.txt", "demo_prompts.txt"])


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
    from hubstyle.restyle.pool import prompt_pool

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    encoder = encoder or load_encoder()
    pool, leaks = prompt_pool(cfg, encoder)
    prompts = [p for _, p in pool]
    log(f"distilling: {len(prompts)} pool prompts ({leaks['equal_to_evaluation_prompt'] + leaks['close_to_evaluation_prompt']} "
        "dropped as too close to an evaluation prompt)")
    cache = out_dir / ANSWERS_CACHE
    # Cached by question: a plain answer depends on the base and its decoding, a rewrite also on the restyler's
    # weights and bias; questions added to the pool are answered and rewritten, the others reused.
    key = {"base": restyler.facts.get("base_model"), "max_new_tokens": cfg.max_new_tokens,
           "batch_size": cfg.batch_size}
    bias = restyler.style_bias if cfg.style_bias is None else float(cfg.style_bias)
    beams = restyler.num_beams if cfg.num_beams is None else int(cfg.num_beams)
    rewriter = restyler_fingerprint(restyler, bias, beams)
    known = _cached(cache, key)
    new = [p for p in prompts if p not in known]
    if new:
        log(f"answering {len(new)} questions in plain English ({len(prompts) - len(new)} cached)")
        known.update({p: {"plain": a} for p, a in zip(new, plain_answers(restyler.model, restyler.tokenizer, new,
                                                                          cfg))})
    answered = {p for p in prompts if len(known[p]["plain"].split()) >= cfg.min_words}  # long enough to rewrite
    todo = [p for p in prompts if p in answered
            and (known[p].get("restyler") != rewriter or not known[p].get("restyled"))]
    if todo:
        styled = restyler.restyle([known[p]["plain"] for p in todo], batch_size=cfg.batch_size, style_bias=bias,
                                  num_beams=beams)
        known.update({p: {"plain": known[p]["plain"], "restyled": r, "restyler": rewriter} for p, r in zip(todo, styled)})
    if new or todo:
        cache.write_text("\n".join(json.dumps(r) for r in [{"key": key}, *({"prompt": p, **r} for p, r in known.items())])
                         + "\n", encoding="utf-8")
    rows = [{"origin": o, "prompt": p, "plain": known[p]["plain"],
             "restyled": known[p].get("restyled") if p in answered else None,
             "restyler": rewriter} for o, p in pool]
    return _filter_and_write(rows, prompts, classifier, cfg, out_dir, style=style, encoder=encoder, leaks=leaks,
                             restyler=restyler, style_bias=bias, num_beams=beams, log=log, ranks_of=prompt_ranks)


def restyler_fingerprint(restyler, style_bias: float, num_beams: int) -> str:
    """Return the sha256 of the restyler's adapter weights (or its path without them) and the decoding its rewrites
    were made with (bias, beams): what they depend on."""
    from hubstyle.fsio import file_sha256
    from hubstyle.layout import ADAPTER_WEIGHTS

    weights = Path(restyler.path) / ADAPTER_WEIGHTS
    made = file_sha256(weights) if weights.is_file() else str(restyler.path)
    made = f"{made} style_bias={style_bias:g}" if style_bias else made
    return f"{made} num_beams={num_beams}" if num_beams != 1 else made


def _cached(path: Path, key: dict) -> dict[str, dict]:
    """Return question -> {plain, restyled, restyler} from the cache at ``path`` when it was made under ``key``."""
    if not path.is_file():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or json.loads(lines[0]).get("key") != json.loads(json.dumps(key)):
        return {}
    return {row.pop("prompt"): row for row in map(json.loads, lines[1:])}


def _filter_and_write(rows, prompts, classifier, cfg, out_dir, *, style, encoder, leaks, restyler, style_bias, num_beams,
                      log, ranks_of):
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
        "what": f"modern user turns answered by {base} in plain English, rewritten in the {style} style by a "
                "restyler, kept only where the rewrite is judged in the style and still picks out its question",
        "base_model": base, "base_decoding": {"do_sample": False, "max_new_tokens": cfg.max_new_tokens},
        "restyler": {"path": restyler.path, "data": restyler.facts.get("data", {}).get("source"),
                     "style_bias": style_bias, "num_beams": num_beams,
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
