"""Blend sweep: walk from one style adapter to another and measure style shares and perplexity at each weight.

The base is loaded once with both adapters; each grid weight ``w`` adds (once) the peft blend with ``w`` on the
first adapter and ``1 - w`` on the second (``merge.blend_for_weight``). At every point the blend continues the
same prompts greedily, the style classifier labels the continuations (each class's share with a Wilson 95% CI),
and held-out perplexity is taken on each style's texts and on generic text. ``cat`` is the default combination
because it is exact: the blend's update is ``w * dA + (1 - w) * dB``, so weight 1 *is* adapter A and weight 0
*is* adapter B; ``linear`` mixes the A and B matrices separately and adds cross terms.

Outputs: the returned dict (also ``blend_sweep.json``) and ``blend_sweep.png``. ``card_points`` turns the dict
into the ``blend_sweep`` list of metrics.json that the adapter card's "Blending with another style" table reads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from hubstyle.env import quiet
from hubstyle.errors import HubstyleError
from hubstyle.fsio import atomic_write

SWEEP_JSON = "blend_sweep.json"
SWEEP_PLOT = "blend_sweep.png"
DEFAULT_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
GENERIC = "generic"  # the perplexity key of the generic (plain English) text


def blend_sweep(
    base: str | os.PathLike,
    adapters: Mapping[str, str | os.PathLike],
    *,
    classifier: str | os.PathLike | Any,
    prompts: Sequence[str],
    heldout: Mapping[str, Sequence[str]],
    generic_texts: Sequence[str],
    out_dir: str | os.PathLike,
    grid: Sequence[float] = DEFAULT_GRID,
    combination_type: str = "cat",
    density: float | None = None,
    max_new_tokens: int = 48,
    min_new_tokens: int | None = None,
    do_sample: bool = True,
    temperature: float = 0.8,
    top_p: float = 0.95,
    batch_size: int = 16,
    block_size: int = 256,
    seed: int = 0,
    bf16: bool = False,
) -> dict[str, Any]:
    """Return {"combination_type", "adapters", "rows", ...} of a blend sweep between two style adapters.

    ``adapters`` maps exactly two style labels to adapter folders (or Hub ids), A first; each row's ``weight`` is
    A's weight (B gets ``1 - weight``). ``classifier`` is a classifier folder or a loaded classifier that knows
    both labels; ``heldout`` maps style labels (at least A's and B's) to held-out texts. Rows come in ``grid``
    order: ``{"weight", "per_class": {label: {"rate", "low", "high"}}, "perplexity": {label: ppl, "generic": ppl},
    "generations", "n_empty"}`` (``n_empty`` counts continuations that are empty text: the model ended at once,
    which ``min_new_tokens`` prevents). Decoding defaults to the style evaluation's seeded sampling (T 0.8,
    top-p 0.95): greedy continuations of small models loop on one phrase ("And thee, and thee, ..."), which says
    little about style. ``blend_sweep.json`` and ``blend_sweep.png`` are written into ``out_dir``.
    """
    from tqdm.auto import tqdm

    from hubstyle.evaluate.classifier import check_labels
    from hubstyle.evaluate.generation import check_prompts, decoding_settings, generate
    from hubstyle.evaluate.perplexity import heldout_blocks, heldout_loss, perplexity
    from hubstyle.evaluate.run import _classifier
    from hubstyle.evaluate.style_rate import rate_of_labels
    from hubstyle.merge import _check_combination, blend_for_weight, blend_sweep_weights
    from hubstyle.models import load_adapters, load_base, load_tokenizer

    # every check that needs no language model runs before one is loaded
    names = _check_adapters(adapters)
    prompts = check_prompts(prompts)
    texts = _check_heldout(heldout, names, generic_texts)
    _check_combination(combination_type, density, "total")
    weights = [w for w, _ in blend_sweep_weights(grid)]
    if not weights:
        raise HubstyleError("the sweep grid is empty; give weights such as 0, 0.25, 0.5, 0.75, 1")
    clf = _classifier(classifier)
    check_labels(clf, names)
    decoding = decoding_settings(
        max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, do_sample=do_sample, temperature=temperature,
        top_p=top_p, seed=seed,
    )

    tokenizer = load_tokenizer(base)
    model = load_adapters(load_base(base), dict(adapters))
    blocks = {
        label: heldout_blocks(model, tokenizer, items, block_size=block_size, what=f"held-out {label} text")
        for label, items in texts.items()
    }
    rows = []
    for w in tqdm(weights, desc=f"blend sweep {names[0]} | {names[1]}", disable=quiet(), dynamic_ncols=True):
        blend_for_weight(model, (names[0], names[1]), w, combination_type, density=density)
        generations = generate(model, tokenizer, prompts, **decoding, batch_size=batch_size, bf16=bf16)
        predicted = clf.predict(generations, batch_size=32)
        per_class = {}
        for label in clf.labels:
            r = rate_of_labels(predicted, label, clf.labels)
            per_class[label] = {"rate": r["rate"], "low": r["low"], "high": r["high"]}
        with torch.inference_mode():  # mean_nll does not switch autograd off, and the blend is marked trainable
            ppl = {
                label: perplexity(heldout_loss(model, tokenizer, [], blocks=b, batch_size=max(1, batch_size // 2),
                                               bf16=bf16))
                for label, b in blocks.items()
            }
        rows.append({
            "weight": w, "per_class": per_class, "perplexity": ppl, "generations": generations,
            "n_empty": sum(not g for g in generations),
        })

    result = {
        "combination_type": combination_type,
        "adapters": list(names),
        "adapter_paths": {n: str(adapters[n]) for n in names},
        "base": str(base),
        "classifier_labels": list(clf.labels),
        "n_prompts": len(prompts),
        "decoding": decoding,
        "rows": rows,
    }
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    plot_blend_sweep(result, out / SWEEP_PLOT)
    atomic_write(out / SWEEP_JSON, json.dumps(result, indent=2) + "\n")
    return result


def card_points(sweep: Mapping[str, Any], style: str) -> list[dict[str, Any]]:
    """Return metrics.json's ``blend_sweep`` list for the card of adapter ``style`` (one of the sweep's two).

    Each point is ``{"weight", "per_class": {label: share}, "style_perplexity", "generic_perplexity"}`` with
    ``weight`` the weight of ``style`` itself (so it runs from the other style, 0, to this one, 1), sorted by it.
    """
    adapters = list(sweep.get("adapters") or [])
    if style not in adapters:
        raise HubstyleError(f"style '{style}' is not one of the sweep's adapters {adapters}; pick one of them")
    flip = adapters.index(style) == 1
    points = []
    for row in sweep["rows"]:
        ppl = row["perplexity"]
        if style not in ppl:
            raise HubstyleError(f"the sweep has no held-out perplexity for '{style}'; re-run it with its held-out text")
        points.append({
            "weight": 1.0 - row["weight"] if flip else row["weight"],
            "per_class": {label: c["rate"] for label, c in row["per_class"].items()},
            "per_class_ci": {label: [c["low"], c["high"]] for label, c in row["per_class"].items()},
            "style_perplexity": ppl[style],
            "generic_perplexity": ppl[GENERIC],
        })
    return sorted(points, key=lambda p: p["weight"])


def sweep_table(sweep: Mapping[str, Any]) -> str:
    """Return the sweep as a plain-text table: A's weight, class shares (95% CI), perplexities, empty generations."""
    a, b = sweep["adapters"]
    labels = list(sweep["rows"][0]["per_class"]) if sweep["rows"] else []
    ppl_keys = list(sweep["rows"][0]["perplexity"]) if sweep["rows"] else []
    head = [f"w({a})", *[f"{label} share" for label in labels], *[f"ppl {k}" for k in ppl_keys], "empty"]
    lines = []
    for row in sweep["rows"]:
        cells = [f"{row['weight']:.2f}"]
        for label in labels:
            c = row["per_class"][label]
            cells.append(f"{c['rate']:.0%} [{c['low']:.0%}-{c['high']:.0%}]")
        cells += [f"{row['perplexity'][k]:.1f}" for k in ppl_keys]
        cells.append(str(row.get("n_empty", 0)))
        lines.append(cells)
    widths = [max(len(r[i]) for r in [head, *lines]) for i in range(len(head))]
    fmt = lambda cells: "  ".join(c.rjust(wd) for c, wd in zip(cells, widths))  # noqa: E731
    title = (f"blend sweep ({sweep['combination_type']}): weight w on '{a}', 1 - w on '{b}'; "
             f"{sweep.get('n_prompts', '?')} prompts, 95% Wilson CIs")
    return "\n".join([title, fmt(head), *(fmt(r) for r in lines)])


def plot_blend_sweep(sweep: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Return ``path`` after drawing per-class shares (95% CI bands) and perplexities against A's weight."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import ScalarFormatter

    a, b = sweep["adapters"]
    rows = sorted(sweep["rows"], key=lambda r: r["weight"])
    x = [r["weight"] for r in rows]
    keys = list(dict.fromkeys([*(rows[0]["per_class"] if rows else []), *(rows[0]["perplexity"] if rows else [])]))
    color = {key: f"C{i}" for i, key in enumerate(keys)}  # one colour per style in both panels
    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    share_ax, ppl_ax = fig.subplots(1, 2)
    for label in rows[0]["per_class"] if rows else []:
        rates = [r["per_class"][label]["rate"] for r in rows]
        share_ax.plot(x, rates, marker="o", label=label, color=color[label])
        share_ax.fill_between(
            x, [r["per_class"][label]["low"] for r in rows], [r["per_class"][label]["high"] for r in rows],
            color=color[label], alpha=0.18, linewidth=0,
        )
    share_ax.set_ylim(-0.02, 1.02)
    share_ax.set_xlabel(f"weight of '{a}' (1 - weight of '{b}')")
    share_ax.set_ylabel("share of continuations classified as")
    share_ax.set_title(f"Style shares over {sweep.get('n_prompts', '?')} prompts (95% Wilson CI)", fontsize=9)
    share_ax.grid(alpha=0.3)
    share_ax.legend(fontsize=8)
    for key in rows[0]["perplexity"] if rows else []:
        ppl_ax.plot(x, [r["perplexity"][key] for r in rows], marker="s", label=f"held-out {key}", color=color[key])
    ppl_ax.set_yscale("log")
    ppl_ax.yaxis.set_major_formatter(ScalarFormatter())
    ppl_ax.yaxis.set_minor_formatter(ScalarFormatter())
    ppl_ax.set_xlabel(f"weight of '{a}' (1 - weight of '{b}')")
    ppl_ax.set_ylabel("perplexity")
    ppl_ax.set_title(f"Held-out perplexity ({sweep['combination_type']} blend)", fontsize=9)
    ppl_ax.grid(alpha=0.3, which="both")
    ppl_ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def sweep_texts(
    styles: Mapping[str, str], *, generic: str = "wikitext", split=None
) -> tuple[dict[str, list[str]], list[str]]:
    """Return (held-out texts per style label, held-out generic texts), split the way a hubstyle run splits them.

    ``styles`` maps a style label to its corpus source (a named corpus, a file, ``hf:owner/name``). A style's
    held-out text is its test split (validation when there is none) under ``split`` (a ``SplitConfig``, default
    the run default); the generic text is the validation part of a 5% / 0% split, as a run measures forgetting
    on it. Adapters a run trained on the same corpus with the same split never saw these texts.
    """
    from hubstyle.config import SplitConfig
    from hubstyle.data import load_corpus, split_blocks
    from hubstyle.dataset import generic_splits

    split = split or SplitConfig()
    heldout = {}
    for label, source in styles.items():
        parts = split_blocks(load_corpus(source, name=label).blocks, validation=split.validation, test=split.test,
                             seed=split.seed, n_segments=split.segments)
        heldout[label] = parts.test or parts.validation
    return heldout, generic_splits(generic, split.seed, split.segments).validation


# --------------------------------------------------------------------------------------------------- checks


def _check_adapters(adapters: Mapping[str, str | os.PathLike]) -> list[str]:
    if not isinstance(adapters, Mapping) or len(adapters) != 2:
        got = list(adapters) if isinstance(adapters, Mapping) else type(adapters).__name__
        raise HubstyleError(
            f"a blend sweep needs exactly two adapters (style label -> folder), got {got}; pass e.g. "
            "{'shakespeare': 'runs/a/adapter', 'milton': 'runs/b/adapter'}"
        )
    names = list(adapters)
    if GENERIC in names:
        raise HubstyleError(f"an adapter is named '{GENERIC}', which is the generic text's key; rename it")
    return names


def _check_heldout(
    heldout: Mapping[str, Sequence[str]], names: list[str], generic_texts: Sequence[str]
) -> dict[str, list[str]]:
    """Return the texts to score, label -> texts with the generic text last under ``GENERIC``."""
    if not isinstance(heldout, Mapping):
        raise HubstyleError(f"heldout must be a dict style label -> texts, got {type(heldout).__name__}")
    missing = [n for n in names if n not in heldout]
    if missing:
        raise HubstyleError(
            f"heldout has no texts for {missing} (it has {sorted(heldout)}); give held-out texts for both styles"
        )
    if GENERIC in heldout:
        raise HubstyleError(f"heldout has a style named '{GENERIC}'; pass generic text as generic_texts instead")
    texts = {}
    for label, items in [*heldout.items(), (GENERIC, generic_texts)]:
        if isinstance(items, str):
            raise HubstyleError(f"held-out '{label}' text is one string; give a list of texts")
        items = [t for t in items if isinstance(t, str) and t.strip()]
        if not items:
            raise HubstyleError(f"held-out '{label}' text is empty; give at least one non-empty text")
        texts[label] = items
    return texts
