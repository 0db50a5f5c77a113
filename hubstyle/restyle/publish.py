"""The restyler's repo folder: the adapter's weights in bf16 (about 10 MB for rank 16 on SmolLM2), its config and
facts, the evaluation, and a model card made with huggingface_hub's ``ModelCard``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from hubstyle.errors import HubstyleError
from hubstyle.fsio import atomic_folder
from hubstyle.layout import ADAPTER_WEIGHTS, RESTYLER_FACTS
from hubstyle.data.parallel import DATA_NOTES

RESTYLER_EVAL = "restyler_eval.json"
SHIPPED_FILES = ("adapter_config.json", RESTYLER_FACTS, RESTYLER_EVAL, "README.md", ADAPTER_WEIGHTS)
HELD_OUT_NAMES = {"tempest": "The Tempest"}


def bf16_weights(src: Path, dest: Path) -> None:
    """Write the adapter weights of ``src`` to ``dest`` in bfloat16 (LoRA weights load back into fp32 params)."""
    import torch
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(src))
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in tensors.items()}, str(dest),
              metadata={"format": "pt"})


def _targets_text(targets) -> str:
    if not targets:
        return "all linear layers"
    return ", ".join(f"`{t}`" for t in targets) if isinstance(targets, list) else f"`{targets}`"


def restyler_card(facts: dict, evaluation: dict, repo_id: str):
    """Return the restyler's ``ModelCard`` (metadata from ``ModelCardData``, body from model_cards/restyler.md)."""
    from huggingface_hub import ModelCardData

    from hubstyle.card import HUB_URL, REPOSITORY_URL, _render

    data_facts, config, training = facts["data"], facts["config"], facts["training"]
    hp = config["training"]
    style = facts["style"]
    rows = []
    bias = float(evaluation.get("style_bias") or 0.0)
    beams = int(evaluation.get("num_beams") or 1)
    decoding = f"a {beams}-beam search" if beams > 1 else "greedy"
    compare = float(evaluation.get("compare_style_bias") or 0.0)
    sides = (("restyler", f"restyler (style bias {bias:g})" if bias else f"restyler ({decoding})"),
             ("restyler_unbiased", f"restyler, no bias ({decoding})"),
             ("restyler_biased", f"restyler, style bias {compare:g} ({decoding})"),
             ("copy", "copy baseline (input unchanged)"),
             ("reference", "Shakespeare's line (ceiling)"))
    for name, label in sides:
        if name not in evaluation:
            continue
        side = evaluation[name]
        passage = side.get("passage_style_rate")
        rows.append({"name": label, "bleu": f"{side['bleu']:.1f}", "chrf": f"{side['chrf']:.1f}",
                     "style_rate": f"{side['style_rate']:.1%}", "top1": f"{side['source_rank']['top1']:.1%}",
                     "passage": f"{passage['rate']:.1%} ({passage['low']:.0%}-{passage['high']:.0%})" if passage else "-",
                     "mrr": f"{side['source_rank']['mrr']:.3f}", "unchanged": f"{side['unchanged']:.1%}"})
    sweep = evaluation.get("decoding_sweep")
    sweep_rows = [{"bias": f"{row['style_bias']:g}", "beams": row["num_beams"], "bleu": f"{row['bleu']:.1f}",
                   "gain": f"{row['bleu_gain']:+.2f}", "chrf": f"{row['chrf']:.1f}",
                   "style_rate": f"{row['style_rate']:.1%}", "top1": f"{row['source_rank']['top1']:.1%}",
                   "chosen": "**shipped**" if (row["style_bias"], row["num_beams"]) == (bias, beams) else ""}
                  for row in (sweep or {}).get("rows", [])]
    examples = [{k: v.replace("|", "\\|") for k, v in ex.items()} for ex in evaluation["examples"]]
    base = facts["base"]
    weights = (f" ({base['dequantized_from']}, sha256 `{base['gguf_sha256'][:12]}…`: trained and measured on "
               "dequantized weights)") if base.get("dequantized_from") else ""
    data = ModelCardData(
        base_model=facts["base_model"], library_name="peft", pipeline_tag="text-generation", license="other",
        license_name="unstated-research-data", language=["en"],
        tags=["hubstyle", "restyler", "style-transfer", style, "lora"], model_name=repo_id.split("/")[-1],
    )
    source = data_facts["source"]
    kwargs: dict[str, Any] = {
        "style": style, "style_title": "Shakespeare's English" if style == "shakespeare" else f"the {style} style",
        "base_model": facts["base_model"], "hub_url": HUB_URL, "repository_url": REPOSITORY_URL,
        "hubstyle_version": facts.get("hubstyle_version", ""), "repo_id": repo_id,
        "train_pairs": f"{data_facts['train_pairs']:,}", "data_source": source,
        "dropped_unchanged": f"{data_facts['dropped_unchanged']:,}",
        "style_word_note": _style_word_note(data_facts),
        "data_note": DATA_NOTES.get(source, f"Pairs from {source}; check their licence before publishing."),
        "lines": evaluation["lines"], "held_out_name": HELD_OUT_NAMES.get(data_facts["held_out_play"] or "", "?"),
        "held_out_pairs": data_facts["held_out_pairs"], "held_out_sha256": str(data_facts["held_out_sha256"])[:16],
        "rows": rows, "examples": examples, "runs": evaluation.get("runs"), "passages": evaluation.get("passages"),
        "passage_min_words": evaluation.get("passage_min_words"), "sweep_rows": sweep_rows,
        "sweep_on": (sweep or {}).get("on", ""), "sweep_rule": ((sweep or {}).get("suggested") or {}).get("rule", ""),
        "sweep_copy_bleu": f"{sweep['copy']['bleu']:.1f}" if sweep else "",
        "instruction": facts["instruction"], "base_weights": weights,
        "lora_rank": hp["lora_rank"], "lora_alpha": hp["lora_alpha"], "target_modules": _targets_text(facts.get("targets")),
        "steps": training["steps"], "batch_size": hp["batch_size"], "cutoff_len": hp["cutoff_len"],
        "learning_rate": hp["learning_rate"], "train_seconds": f"{training['seconds']:.0f}",
        "tokens_per_second": f"{training['tokens_per_second']:.0f}", "machine": facts.get("machine", "?"),
        "val_loss": f"{training['final_val_loss']:.3f}", "validation_pairs": data_facts["validation_pairs"],
        "weights_dtype": "bfloat16 (trained in float32)" if training.get("base_dtype") == "float32" else "bfloat16",
        "style_bias": f"{bias:g}" if bias else "", "compare_bias": f"{compare:g}" if compare else "",
        "decoding": decoding, "beams": beams if beams > 1 else "",
        "bias_words": ", ".join(f"*{w}*" for w in (facts.get("decoding") or {}).get("bias_words", [])),
    }
    return _render("restyler", data, kwargs)


def _style_word_note(data_facts: dict) -> str:
    """Return the card's clause on pairs kept for bringing in a style word ('' when the build kept every change)."""
    dropped = data_facts.get("dropped_without_style_word") or 0
    if not dropped:
        return ""
    words = ", ".join(f"*{w}*" for w in data_facts.get("style_words", [])[:12])
    return (f", and {dropped:,} more that bring in none of the style words the styled sides use at least four times as "
            f"often as the plain sides ({words}, ...), since a one-word change teaches copying too")


def publish_restyler(adapter: Path, evaluation: dict, dest: Path, repo_id: str = "OWNER/shakespeare-restyler") -> Path:
    """Return ``dest`` after writing the restyler's repo folder there (weights in bf16, card, facts, evaluation)."""
    adapter = Path(adapter)
    if not (adapter / ADAPTER_WEIGHTS).is_file():
        raise HubstyleError(f"'{adapter}' holds no {ADAPTER_WEIGHTS}; train the restyler first")
    facts = json.loads((adapter / RESTYLER_FACTS).read_text(encoding="utf-8"))
    facts["evaluation"] = {k: v for k, v in evaluation.items() if k != "examples"}
    with atomic_folder(Path(dest)) as stage:
        shutil.copy2(adapter / "adapter_config.json", stage / "adapter_config.json")
        bf16_weights(adapter / ADAPTER_WEIGHTS, stage / ADAPTER_WEIGHTS)
        (stage / RESTYLER_FACTS).write_text(json.dumps(facts, indent=2, default=str), encoding="utf-8")
        (stage / RESTYLER_EVAL).write_text(json.dumps(evaluation, indent=2), encoding="utf-8")
        restyler_card(facts, evaluation, repo_id).save(stage / "README.md")
    return Path(dest)


def distilled_card(sheet: dict, rows: list[dict], repo_id: str, *, style: str, hubstyle_version: str = ""):
    """Return the distilled set's ``DatasetCard`` (``DatasetCardData`` metadata, body from model_cards/distilled.md)."""
    import jinja2
    import jinja2.meta
    from huggingface_hub import DatasetCard, DatasetCardData

    from hubstyle.card import HUB_URL, card_template
    from hubstyle.restyle.distill import DATASHEET_FILE, DISTILLED_FILE

    counts = sheet["counts"]
    count_rows = [{"what": "user turns in the pool", "n": counts["pool"]}]
    count_rows += [{"what": k.removeprefix("dropped_").replace("_", " ") + " (dropped)", "n": v}
                   for k, v in counts.items() if k.startswith("dropped_")]
    count_rows += [{"what": f"kept ({o})", "n": n} for o, n in counts["kept_by_origin"].items()]
    count_rows.append({"what": "**kept**", "n": f"**{counts['kept']}**"})
    leaks = sheet["pool"]["dropped_as_evaluation_leaks"]
    examples = [{"question": r["messages"][0]["content"], "plain": r["plain"], "restyled": r["messages"][1]["content"]}
                for r in rows[:6]]
    n = counts["kept"]
    distill_bias = sheet["restyler"].get("style_bias")
    data = DatasetCardData(
        language=["en"], license="other", license_name="unstated-research-data", pretty_name=f"{style} chat, distilled",
        task_categories=["text-generation"], size_categories=["n<1K" if n < 1000 else "1K<n<10K"],
        tags=["hubstyle", "synthetic", "style-transfer", style], configs=[{"config_name": "default",
                                                                         "data_files": DISTILLED_FILE}],
    )
    template = card_template("distilled").read_text(encoding="utf-8")
    missing = jinja2.meta.find_undeclared_variables(jinja2.Environment().parse(template))
    kwargs = {
        "pretty_name": f"{style.capitalize()} chat, distilled", "count": n, "style": style,
        "style_title": "Shakespeare's English" if style == "shakespeare" else f"the {style} style",
        "base_model": sheet["base_model"], "hub_url": HUB_URL, "max_new_tokens": sheet["base_decoding"]["max_new_tokens"],
        "restyler": "hubstyle's shipped restyler, a LoRA trained on modern/Shakespeare line pairs"
                    + (f", decoding with +{distill_bias:g} on the logits of its style words" if distill_bias else ""),
        "max_rank": sheet["config"]["max_rank"], "pool": sheet["pool"]["prompts"],
        "data_note": sheet["restyler"]["data_note"] or "Check the restyler's training data licence.",
        "count_rows": count_rows, "leak_cosine": sheet["pool"]["leak_cosine"],
        "leaks": ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in leaks.items()), "data_file": DISTILLED_FILE,
        "examples": examples, "repo_id": repo_id, "hubstyle_version": hubstyle_version,
        "datasheet_file": DATASHEET_FILE,
    }
    absent = sorted(missing - set(kwargs) - {"card_data"})
    if absent:
        raise HubstyleError(f"card template distilled.md uses '{absent[0]}', which the distilled card does not provide")
    return DatasetCard.from_template(data, template_str=template, **kwargs)


def publish_distilled(folder: Path, dest: Path, repo_id: str = "OWNER/shakespeare-chat-distilled", *,
                      style: str, hubstyle_version: str = "") -> Path:
    """Return ``dest`` after writing the distilled set's dataset repo folder: rows, datasheet and dataset card."""
    from hubstyle.restyle.distill import DATASHEET_FILE, DISTILLED_FILE

    folder = Path(folder)
    if not (folder / DISTILLED_FILE).is_file():
        raise HubstyleError(f"'{folder}' holds no {DISTILLED_FILE}; distil the set first")
    sheet = json.loads((folder / DATASHEET_FILE).read_text(encoding="utf-8"))
    rows = [json.loads(x) for x in (folder / DISTILLED_FILE).read_text(encoding="utf-8").splitlines() if x.strip()]
    with atomic_folder(Path(dest)) as stage:
        for name in (DISTILLED_FILE, DATASHEET_FILE):
            shutil.copy2(folder / name, stage / name)
        distilled_card(sheet, rows, repo_id, style=style, hubstyle_version=hubstyle_version).save(stage / "README.md")
    return Path(dest)
