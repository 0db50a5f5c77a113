"""A pipeline run -> `hubstyle push` -> loading by repo id through the loopback Hub, like a stranger would."""

from __future__ import annotations

import json

import pytest
import torch

from hubstyle.layout import RunLayout


def test_run_metrics_follow_the_schema(tiny_run):
    layout = RunLayout(tiny_run)
    m = json.loads(layout.metrics.read_text())
    assert m["schema"] == "hubstyle.metrics/1" and m["run"]["style"] == "shakespeare"
    for side in ("base", "tuned"):
        rate = m["style_rate"][side]
        assert 0 <= rate["low"] <= rate["rate"] <= rate["high"] <= 1 and rate["n"] == 3
        assert set(rate["per_class"]) == {"shakespeare", "other"}
    assert set(m["heldout_loss"]["style"]) == {"base", "tuned", "bigram"}
    assert abs(m["perplexity"]["generic"]["tuned"] - torch.tensor(m["heldout_loss"]["generic"]["tuned"]).exp()) < 1e-3
    assert m["classifier"]["labels"] == ["other", "shakespeare"] or set(m["classifier"]["labels"]) == {"other", "shakespeare"}
    table = json.loads(layout.demo_table.read_text())
    assert [r["prompt"] for r in table["rows"]][0] == "Tell me about the weather"
    assert (layout.classifier / "config.json").is_file() and (layout.evaluation / "style_rate.png").is_file()


def test_the_run_records_its_facts_once_for_cards_and_space(tiny_run):
    from hubstyle.facts import SCHEMA_VERSION, Dataset, load_facts

    layout = RunLayout(tiny_run)
    facts = load_facts(tiny_run)
    m = json.loads(layout.metrics.read_text())  # the report a person reads says the same
    assert facts.schema_version == SCHEMA_VERSION and facts.run.style == "shakespeare"
    assert facts.data.corpora == [Dataset("shakespeare", "shakespeare", "karpathy/tiny_shakespeare")]
    assert facts.data.generic == Dataset("wikitext", None, "Salesforce/wikitext", "wikitext-2-v1")
    assert (facts.data.style_split, facts.data.generic_split) == ("test", "validation")
    assert facts.pretrain is not None and facts.pretrain.corpus.hub_id == "Salesforce/wikitext"
    assert facts.style_rate.tuned.rate == m["style_rate"]["tuned"]["rate"]
    assert facts.style_rate.prompt_set == "prompts.txt" and facts.style_rate.decoding.max_new_tokens == 8
    assert facts.answers.tuned.relevance.mean == m["answers"]["tuned"]["relevance"]["mean"]
    assert facts.perplexity.generic.base == m["perplexity"]["generic"]["base"]


@pytest.mark.slow
def test_push_then_load_by_repo_id_matches_the_local_run(tiny_run, hub_env, run_cli):
    from peft import AutoPeftModelForCausalLM, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hubstyle import load_shakespearean

    code, out, err = run_cli("push", str(tiny_run), "--repo-id", "alice/bard", "--tag", "v1")
    assert code == 0, err
    for repo in ("alice/bard", "alice/bard-merged", "alice/bard-classifier", "alice/bard-base"):
        assert hub_env.server.commits(repo), repo
    assert hub_env.server.commits("alice/bard-space", "space") and hub_env.server.commits("alice/bard-data", "dataset")

    layout = RunLayout(tiny_run)
    tok = AutoTokenizer.from_pretrained(layout.base)
    local = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(layout.base), layout.adapter).eval()
    prompt = "Tell me about the weather"
    ids = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        want_ids = local.generate(**ids, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
    want = tok.decode(want_ids[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()

    bard = load_shakespearean(repo_id="alice/bard", revision="v1")
    assert bard(prompt, max_new_tokens=12) == want
    base_text, styled = bard.compare(prompt, max_new_tokens=12)
    assert styled == want and base_text != styled

    adapter_config = json.loads((tiny_run / "publish" / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == "alice/bard-base"
    check_model_index(tiny_run)
    check_space_folder(tiny_run)
    peft_model = AutoPeftModelForCausalLM.from_pretrained("alice/bard").eval()
    merged = AutoModelForCausalLM.from_pretrained("alice/bard-merged").eval()
    with torch.no_grad():
        for model in (peft_model, merged):
            got = model.generate(**ids, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
            assert torch.equal(got, want_ids)

    # a second push of the same run uploads nothing and makes no commit
    commits_before = {r: len(hub_env.server.commits(r)) for r in ("alice/bard", "alice/bard-merged")}
    bytes_before = hub_env.server.uploaded_bytes
    code, out, err = run_cli("push", str(tiny_run), "--repo-id", "alice/bard")
    assert code == 0, err
    assert hub_env.server.uploaded_bytes == bytes_before
    assert {r: len(hub_env.server.commits(r)) for r in commits_before} == commits_before
    from hubstyle.config import RELEASE_KINDS

    assert out.count("unchanged, no commit") == len(RELEASE_KINDS) == len(out.strip().splitlines())

    # the token never lands in any written file or in what was printed
    token = hub_env.token
    assert token not in out + err
    for path in list(tiny_run.rglob("*")) + list(hub_env.hf_home.rglob("*")):
        if path.is_file() and path.name != "token":
            assert token.encode() not in path.read_bytes(), path


def test_dry_run_prints_changes_and_card_without_writing(tiny_run, hub_env, run_cli):
    code, out, err = run_cli("push", str(tiny_run), "--repo-id", "alice/fresh", "--dry-run")
    assert code == 0, err
    assert "adapter: alice/fresh (model)" in out
    assert any(line.split()[:2] == ["added", "adapter_model.safetensors"] for line in out.splitlines())
    assert "base_model_relation: adapter" in out  # the rendered card
    assert hub_env.server.repo("alice/fresh") is None
    assert all(entry.method in ("GET", "HEAD") for entry in hub_env.server.log)


def test_push_without_write_access_is_one_line(tiny_run, hub_env, run_cli):
    code, _, err = run_cli("push", str(tiny_run), "--repo-id", "somebody-else/bard", "--what", "adapter")
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1 and "403" in err



def check_model_index(run_dir) -> None:
    """The published cards' model-index parses as the Hub reads it and holds this model's numbers only."""
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    from hubstyle.facts import load_facts

    facts = load_facts(run_dir)
    for kind in ("adapter", "merged"):
        card = ModelCard.load(run_dir / "publish" / kind / "README.md")
        _, results = model_index_to_eval_results(card.data.to_dict()["model-index"])
        values = {(r.metric_type, r.dataset_type, r.dataset_split): r.metric_value for r in results}
        assert values == {
            ("style_rate", "unknown", None): round(facts.style_rate.tuned.rate, 4),
            ("relevance", "unknown", None): round(facts.answers.tuned.relevance.mean, 4),
            ("prompt_rank_top1", "unknown", None): round(facts.answers.tuned.prompt_rank.top1, 4),
            ("prompt_rank_mrr", "unknown", None): round(facts.answers.tuned.prompt_rank.mrr, 4),
            ("perplexity", "karpathy/tiny_shakespeare", "test"): round(facts.perplexity.style.tuned, 4),
            ("perplexity", "Salesforce/wikitext", "validation"): round(facts.perplexity.generic.tuned, 4),
        }, kind
        assert not any("base" in f"{r.metric_type} {r.metric_name}".lower() for r in results), kind
        assert card.data.datasets == ["karpathy/tiny_shakespeare", "alice/bard-data"]  # the corpus, the training set


def check_space_folder(run_dir) -> None:
    """The pushed Space runs with its requirements alone and says how its demo rows were made."""
    from hubstyle.facts import load_decoding
    from hubstyle.space_folder import RUNTIME_PARTS, RUNTIME_SOURCE

    folder = run_dir / "publish" / "space"

    requirements = (folder / "requirements.txt").read_text().splitlines()
    assert [r.split("==")[0] for r in requirements] == ["torch", "transformers", "peft", "gradio"]
    assert (folder / "space_app.py").read_bytes() == RUNTIME_SOURCE.read_bytes()
    assert all((folder / name).read_bytes() == source.read_bytes() for name, source in RUNTIME_PARTS.items())
    config = json.loads((folder / "space_config.json").read_text())
    decoding = json.loads(RunLayout(run_dir).demo_table.read_text())["decoding"]
    words = load_decoding(decoding, "demo_table.json").words()
    assert config["demo_caption"] == f"Continuations made once when the adapters were published ({words}):"
    assert words.startswith("sampling with temperature") == decoding["do_sample"]  # never "greedy" when sampled
