"""The restyler's repo folder: the adapter's weights in bf16 (about 10 MB for rank 16 on SmolLM2), its config and
facts, the evaluation, and a model card made with huggingface_hub's ``ModelCard``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from hubstyle.errors import HubstyleError
from hubstyle.fsio import atomic_folder
from hubstyle.restyle.build import RESTYLER_FACTS

ADAPTER_WEIGHTS = "adapter_model.safetensors"
RESTYLER_EVAL = "restyler_eval.json"
SHIPPED_FILES = ("adapter_config.json", RESTYLER_FACTS, RESTYLER_EVAL, "README.md", ADAPTER_WEIGHTS)
DATA_NOTES = {
    "shakespeare-modern": (
        "The pairs are the train split of Jhamtani et al. (2017, \"Shakespearizing Modern Language Using "
        "Copy-Enriched Sequence to Sequence Models\"; repository harsh19/Shakespearizing-Modern-English), itself from "
        "the corpus of Xu et al. (2012, \"Paraphrasing for Style\"). The modern side was written for study guides "
        "(SparkNotes, eNotes). It is research data and its licence is not stated: whoever publishes or uses this "
        "adapter decides whether that use is allowed."
    ),
}
HELD_OUT_NAMES = {"tempest": "The Tempest"}


def bf16_weights(src: Path, dest: Path) -> None:
    """Write the adapter weights of ``src`` to ``dest`` in bfloat16 (LoRA weights load back into fp32 params)."""
    import torch
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(src))
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in tensors.items()}, str(dest),
              metadata={"format": "pt"})


def restyler_card(facts: dict, evaluation: dict, repo_id: str):
    """Return the restyler's ``ModelCard`` (metadata from ``ModelCardData``, body from model_cards/restyler.md)."""
    from huggingface_hub import ModelCardData

    from hubstyle.card import HUB_URL, REPOSITORY_URL, _render

    data_facts, config, training = facts["data"], facts["config"], facts["training"]
    hp = config["training"]
    style = facts["style"]
    rows = []
    for name, label in (("restyler", "restyler"), ("copy", "copy baseline (input unchanged)"),
                        ("reference", "Shakespeare's line (ceiling)")):
        side = evaluation[name]
        rows.append({"name": label, "bleu": f"{side['bleu']:.1f}", "chrf": f"{side['chrf']:.1f}",
                     "style_rate": f"{side['style_rate']:.1%}", "top1": f"{side['source_rank']['top1']:.1%}",
                     "mrr": f"{side['source_rank']['mrr']:.3f}", "unchanged": f"{side['unchanged']:.1%}"})
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
        "data_note": DATA_NOTES.get(source, f"Pairs from {source}; check their licence before publishing."),
        "lines": evaluation["lines"], "held_out_name": HELD_OUT_NAMES.get(data_facts["held_out_play"] or "", "?"),
        "held_out_pairs": data_facts["held_out_pairs"], "held_out_sha256": str(data_facts["held_out_sha256"])[:16],
        "rows": rows, "examples": examples, "instruction": facts["instruction"], "base_weights": weights,
        "lora_rank": hp["lora_rank"], "lora_alpha": hp["lora_alpha"], "target_modules": facts.get("targets", "all linear layers"),
        "steps": training["steps"], "batch_size": hp["batch_size"], "cutoff_len": hp["cutoff_len"],
        "learning_rate": hp["learning_rate"], "train_seconds": f"{training['seconds']:.0f}",
        "tokens_per_second": f"{training['tokens_per_second']:.0f}", "machine": facts.get("machine", "?"),
        "val_loss": f"{training['final_val_loss']:.3f}", "validation_pairs": data_facts["validation_pairs"],
        "weights_dtype": "bfloat16 (trained in float32)" if training.get("base_dtype") == "float32" else "bfloat16",
    }
    return _render("restyler", data, kwargs)


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
