"""Evaluate a style-tuned model against its base: held-out loss, perplexity, style rate and the demo table.

Both sides come from a ``hubstyle.evaluate.pair.ModelPair``. For an adapter the base model is loaded once with the
adapter on top, and every base-side number comes from the same weights with the adapter switched off
(``disable_adapter`` for losses, the ``__base__`` rows of mixed-adapter batches for generation). For a whole trained
model (methods ``full`` and ``freeze_attention``) the base and the tuned model are loaded side by side and each
scores the same blocks and decodes the same prompts with the same settings and seed. The result is the
``heldout_loss``, ``perplexity``, ``style_rate`` and ``answers`` sections of metrics.json plus the demo table;
``style_rate.png`` and ``generations.jsonl`` are written here, the caller writes the rest. The ``answers``
section also reads random held-out style texts (drawn with the evaluation seed) in place of the answers: the
reference the tuned model's relevance and prompt rank are read against.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from hubstyle.env import quiet
from hubstyle.evaluate.answers import compare_answers, draw_reference
from hubstyle.evaluate.demo_table import pair_demo_table
from hubstyle.evaluate.generation import decoding_settings
from hubstyle.evaluate.pair import load_pair
from hubstyle.evaluate.perplexity import perplexity
from hubstyle.evaluate.style_rate import GENERATIONS_FILE, STYLE_RATE_PLOT, compare_style_rates


def _classifier(classifier):
    """Return a loaded style classifier: ``classifier`` itself when it already predicts, else loaded from its folder."""
    if hasattr(classifier, "predict") and hasattr(classifier, "labels"):
        return classifier
    from hubstyle.evaluate.classifier import load_classifier

    return load_classifier(classifier)


def reference_texts(style_texts: Sequence, n: int, *, seed: int) -> list[str] | None:
    """Return ``n`` held-out texts of the style drawn with ``seed`` (a conversation's trained assistant turns), or
    None when there is no style text."""
    from hubstyle.dataset import sample_text

    return draw_reference([sample_text(t) for t in style_texts], n, seed=seed)


def evaluate_run(
    base: str,
    trained: str,
    *,
    classifier: str | os.PathLike | Any,
    prompts: Sequence[str],
    demo_prompts: Sequence[str],
    style_texts: Sequence,
    generic_texts: Sequence[str],
    target_style: str,
    out_dir: Path,
    adapter_name: str = "style",
    max_new_tokens: int = 48,
    demo_max_new_tokens: int = 40,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 0.95,
    seed: int = 0,
    batch_size: int = 16,
    block_size: int = 256,
    bf16: bool = False,
    template: str = "auto",
    chat: bool = False,
    max_heldout_blocks: int | None = None,
) -> dict[str, Any]:
    """Return {"heldout_loss", "perplexity", "style_rate", "answers", "demo_table"} for ``trained`` against ``base``.

    ``trained`` is the run's adapter (folder or Hub id, loaded as ``adapter_name``) or the folder of a whole trained
    model (full / freeze-attention fine-tune); the sections have the same shape either way.

    ``classifier`` is a classifier folder (or an already loaded classifier); it must know ``target_style``.
    ``style_texts`` / ``generic_texts`` are held-out texts in the style (or conversations, scored on the assistant's
    tokens) and in plain English (e.g. wikitext);
    ``prompts`` are the neutral prompts the style rate is measured on, ``demo_prompts`` the demo table's.
    ``style_rate.png`` and ``generations.jsonl`` (each judged continuation and its label) are written into
    ``out_dir``. ``heldout_loss.style`` has no ``bigram`` entry: that baseline
    belongs to pretraining and is added by the caller when the run pretrained its base.
    """
    from tqdm.auto import tqdm

    from hubstyle.evaluate.classifier import check_labels

    clf = _classifier(classifier)
    check_labels(clf, [target_style])  # before loading the LM: a wrong classifier fails fast
    out_dir = Path(out_dir)
    stages = tqdm(total=6, desc="evaluating", disable=quiet(), dynamic_ncols=True)

    stages.set_postfix_str("loading model")
    pair = load_pair(base, trained, adapter_name)
    stages.update(1)

    stages.set_postfix_str("held-out loss")
    loss_args = dict(block_size=block_size, batch_size=max(1, batch_size // 2), bf16=bf16, template=template,
                     max_blocks=max_heldout_blocks)
    losses = {
        part: pair.losses(texts, what=f"held-out {part} text", **loss_args)
        for part, texts in (("style", style_texts), ("generic", generic_texts))
    }
    stages.update(1)

    stages.set_postfix_str("generating")
    # A continuation runs its full length (EOS suppressed): the classifier judges text, never an empty string. A
    # chat model's answer ends at its end-of-turn token, as it would for a user (max_new_tokens is only a cap).
    chat_mode = template if chat else None
    min_new = None if chat else max_new_tokens
    decoding = decoding_settings(
        max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature, top_p=top_p, seed=seed,
        min_new_tokens=min_new, chat=chat_mode,
    )
    pairs = pair.side_by_side(prompts, **decoding, batch_size=batch_size, bf16=bf16)
    stages.update(1)

    stages.set_postfix_str("classifying")
    rates = compare_style_rates(
        clf, [b for b, _ in pairs], [t for _, t in pairs], target_style,
        decoding=decoding, plot_path=out_dir / STYLE_RATE_PLOT,
        prompts=prompts, generations_path=out_dir / GENERATIONS_FILE,
    )
    stages.update(1)

    stages.set_postfix_str("relevance")
    # style alone rewards one archaic line for every prompt: relevance, length and repetition sit next to it, and
    # the same figures for random held-out text of the style, which has the register but answers no prompt
    answers = compare_answers(prompts, [b for b, _ in pairs], [t for _, t in pairs],
                              reference_answers=reference_texts(style_texts, len(prompts), seed=seed))
    stages.update(1)

    stages.set_postfix_str("demo table")
    table = pair_demo_table(
        pair, demo_prompts, demo_max_new_tokens, batch_size=batch_size, bf16=bf16,
        min_new_tokens=None if chat else demo_max_new_tokens, do_sample=do_sample, temperature=temperature,
        top_p=top_p, seed=seed, chat=chat_mode,
    )
    stages.update(1)
    stages.close()

    return {
        "heldout_loss": losses,
        "perplexity": {part: {side: perplexity(v) for side, v in sides.items()} for part, sides in losses.items()},
        "style_rate": rates,
        "answers": answers,
        "demo_table": table,
    }
