"""Style rate: the share of generations a style classifier assigns to the target style, with a Wilson 95% CI.

A "success" is a continuation whose predicted label is the target style. Base and tuned continuations of the
same prompts are classified in one call, and the two rates go into metrics.json's ``style_rate`` section and a
bar chart (``style_rate.png``) with the confidence intervals as error bars.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from hubstyle.errors import HubstyleError
from hubstyle.evaluate.classifier import check_labels
from hubstyle.evaluate.stats import RateCI

STYLE_RATE_PLOT = "style_rate.png"
GENERATIONS_FILE = "generations.jsonl"  # every judged continuation with its label, to audit the classifier


def rate_of_labels(labels: Sequence[str], target: str, all_labels: Sequence[str]) -> dict[str, Any]:
    """Return {rate, low, high, n, successes, per_class} for predicted ``labels`` and the ``target`` label.

    ``per_class`` gives each of ``all_labels`` (and any other label predicted) its share of the ``n`` texts.
    """
    n = len(labels)
    if n == 0:
        raise HubstyleError("no texts to classify; the style rate needs at least one generation")
    counts = Counter(labels)
    ci = RateCI.from_counts(counts[target], n)
    per_class = {label: counts[label] / n for label in [*all_labels, *sorted(set(counts) - set(all_labels))]}
    return {
        "rate": ci.rate, "low": ci.low, "high": ci.high, "n": ci.n, "successes": ci.successes, "per_class": per_class,
    }


def style_rate(classifier, texts: Sequence[str], target: str, *, batch_size: int = 32) -> dict[str, Any]:
    """Return {rate, low, high, n, successes, per_class} of ``texts`` classified as ``target`` (Wilson 95% CI)."""
    check_labels(classifier, [target])
    texts = list(texts)
    if not texts:
        raise HubstyleError("no texts to classify; the style rate needs at least one generation")
    return rate_of_labels(classifier.predict(texts, batch_size=batch_size), target, classifier.labels)


def compare_style_rates(
    classifier,
    base_texts: Sequence[str],
    tuned_texts: Sequence[str],
    target: str,
    *,
    decoding: dict[str, Any],
    batch_size: int = 32,
    plot_path: Path | None = None,
    prompts: Sequence[str] | None = None,
    generations_path: Path | None = None,
) -> dict[str, Any]:
    """Return metrics.json's ``style_rate`` section: target, n_prompts, decoding, and the base and tuned rates.

    Both sides are classified in one call (one padded batch stream for the classifier). With ``plot_path`` the
    bar chart is drawn there too; with ``generations_path`` every continuation is written there as JSON lines
    (``prompt``, ``base``, ``base_label``, ``tuned``, ``tuned_label``) so each judgement can be read.
    """
    check_labels(classifier, [target])
    base_texts, tuned_texts = list(base_texts), list(tuned_texts)
    if len(base_texts) != len(tuned_texts):
        raise HubstyleError(
            f"got {len(base_texts)} base and {len(tuned_texts)} tuned generations; they must come from the same prompts"
        )
    if not base_texts:
        raise HubstyleError("no generations to classify; the style rate needs at least one prompt")
    n = len(base_texts)
    prompts = list(prompts) if prompts is not None else [None] * n
    if len(prompts) != n:  # checked before any work is done
        raise HubstyleError(f"got {len(prompts)} prompts for {n} generations; give one prompt per generation")
    labels = classifier.predict(base_texts + tuned_texts, batch_size=batch_size)
    section = {
        "target": target,
        "n_prompts": n,
        "decoding": dict(decoding),
        "base": rate_of_labels(labels[:n], target, classifier.labels),
        "tuned": rate_of_labels(labels[n:], target, classifier.labels),
    }
    if plot_path is not None:
        plot_style_rate(section, Path(plot_path))
    if generations_path is not None:
        rows = [
            {"prompt": p, "base": b, "base_label": bl, "tuned": t, "tuned_label": tl}
            for p, b, bl, t, tl in zip(prompts, base_texts, labels[:n], tuned_texts, labels[n:])
        ]
        path = Path(generations_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return section


def plot_style_rate(section: dict[str, Any], path: Path) -> Path:
    """Return ``path`` after drawing the base and tuned style rates as bars with their 95% CI as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sides = [s for s in ("base", "tuned") if s in section]
    rates = [section[s]["rate"] for s in sides]
    below = [section[s]["rate"] - section[s]["low"] for s in sides]
    above = [section[s]["high"] - section[s]["rate"] for s in sides]
    fig, ax = plt.subplots(figsize=(4.2, 3.6), dpi=120)
    bars = ax.bar(sides, rates, color=["#9e9e9e", "#7b1fa2"][: len(sides)], width=0.55)
    ax.errorbar(sides, rates, yerr=[below, above], fmt="none", ecolor="black", capsize=6, linewidth=1.2)
    for bar, side in zip(bars, sides):
        r = section[side]
        ax.annotate(
            f"{r['rate']:.0%}\n({r['successes']}/{r['n']})",
            (bar.get_x() + bar.get_width() / 2, r["high"]),
            xytext=(0, 4), textcoords="offset points", ha="center", va="bottom", fontsize=8,
        )
    ax.set_ylim(0, 1.18)
    ax.set_ylabel(f"share classified '{section['target']}'")
    ax.set_title(f"Style rate over {section['n_prompts']} prompts (95% Wilson CI)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
