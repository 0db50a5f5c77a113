"""Full and freeze-attention fine-tunes: measured like adapters (base vs tuned as two models) and published as the
merged repo -> pushed to the loopback Hub -> loaded by repo id with the same greedy output as the local model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from hubstyle.errors import HubstyleError
from hubstyle.layout import RunLayout

pytestmark = pytest.mark.slow  # seconds each on 2 cores: in CI's full run, not the default suite

PROMPT = "Tell me about the weather"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Yield with torch on one thread (restored after): tiny models gain nothing from more on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _config(root: Path, tiny_base: Path, method: str, *, classifier: Path | None = None, evaluate: bool = True):
    from tests.tiny import toy_run_config

    cfg = toy_run_config(root / "run", root / "prompts.txt")
    cfg.training.method = method
    cfg.training.learning_rate = 1e-3
    cfg.classifier.backbone = str(tiny_base)  # a tiny GPT-2 encoder: seconds instead of MiniLM's half a minute
    if classifier is not None:
        cfg.classifier.path = str(classifier)
    cfg.evaluation.enabled = evaluate
    return cfg


def _run(root: Path, cfg, base_from: Path | None = None) -> Path:
    from hubstyle.runner import run

    if base_from is not None:  # the same tiny base reused, not trained again
        shutil.copytree(base_from / "base", root / "run" / "base")
    run(cfg, log=lambda *_: None)
    return root / "run"


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, tiny_base) -> Path:
    """A toy pipeline run with training.method 'full': tiny pretrained base, whole-model training, evaluation."""
    root = tmp_path_factory.mktemp("full_run")
    return _run(root, _config(root, tiny_base, "full"))


@pytest.fixture(scope="module")
def freeze_run(tmp_path_factory, tiny_base, full_run) -> Path:
    """The same toy run with training.method 'freeze_attention' (the full run's base reused, and its classifier given
    by path: the run copies it into its own folder, so publishing it works)."""
    root = tmp_path_factory.mktemp("freeze_run")
    cfg = _config(root, tiny_base, "freeze_attention", classifier=RunLayout(full_run).classifier)
    return _run(root, cfg, base_from=full_run)


@pytest.fixture(params=["full", "freeze_attention"])
def whole_run(request) -> Path:
    return request.getfixturevalue({"full": "full_run", "freeze_attention": "freeze_run"}[request.param])


def _greedy(model, tok, prompt: str = PROMPT, n: int = 12) -> torch.Tensor:
    ids = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        return model.generate(**ids, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)


def _text(tok, out: torch.Tensor, prompt: str = PROMPT) -> str:
    return tok.decode(out[0, len(tok(prompt).input_ids):], skip_special_tokens=True)


# --------------------------------------------------------------------------------------------------- evaluation


def test_whole_model_runs_are_measured_like_adapters(whole_run):
    from safetensors.torch import load_file

    from hubstyle.facts import load_facts

    layout = RunLayout(whole_run)
    m = json.loads(layout.metrics.read_text())
    method = m["training"]["method"]
    assert not layout.adapter.exists() and (layout.model / "config.json").is_file()
    for side in ("base", "tuned"):
        rate = m["style_rate"][side]
        assert 0 <= rate["low"] <= rate["rate"] <= rate["high"] <= 1 and rate["n"] == 3
        assert m["answers"][side]["relevance"]["n"] == 3
    assert set(m["heldout_loss"]["style"]) == {"base", "tuned", "bigram"}
    assert set(m["heldout_loss"]["generic"]) == {"base", "tuned"}
    # the tuned side is the trained model, not the base again: it fits the style text better after training
    assert m["heldout_loss"]["style"]["tuned"] < m["heldout_loss"]["style"]["base"], method
    table = json.loads(layout.demo_table.read_text())
    assert table["adapter"] == "style" and [r["prompt"] for r in table["rows"]][0] == PROMPT
    assert (layout.evaluation / "style_rate.png").is_file()
    facts = load_facts(whole_run)  # the record cards read says the same
    assert facts.training.method == method and facts.style_rate.tuned.rate == m["style_rate"]["tuned"]["rate"]
    # what the card says was trained: attention weights stay the base's only under freeze_attention
    base, tuned = load_file(layout.base / "model.safetensors"), load_file(layout.model / "model.safetensors")
    attention = [name for name in base if "attn" in name]
    assert attention and all(torch.equal(base[n], tuned[n]) for n in attention) == (method == "freeze_attention")
    assert not torch.equal(base["transformer.h.0.mlp.c_fc.weight"], tuned["transformer.h.0.mlp.c_fc.weight"])


def test_demo_rows_are_what_each_model_writes_alone(full_run):
    """Two models, two batched passes with the same settings: each column is that model's own greedy text."""
    from hubstyle.evaluate.generation import generate
    from hubstyle.models import load_base, load_tokenizer

    layout = RunLayout(full_run)
    table = json.loads(layout.demo_table.read_text())
    settings = {k: v for k, v in table["decoding"].items() if k != "bf16"}
    prompts = [row["prompt"] for row in table["rows"]]
    tok = load_tokenizer(layout.model)
    assert generate(load_base(layout.base), tok, prompts, **settings) == [r["base"] for r in table["rows"]]
    assert generate(load_base(layout.model), tok, prompts, **settings) == [r["tuned"] for r in table["rows"]]


def test_two_models_agree_with_the_adapter_pair_on_a_merged_adapter(tiny_base, tmp_path):
    """The same weights as an adapter (one PeftModel) and merged into a whole model (two models): same numbers."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from hubstyle.evaluate.pair import AdapterPair, TwoModels, load_pair
    from tests.tiny import sample_text

    torch.manual_seed(1)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_fc"], fan_in_fan_out=True, init_lora_weights=False)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_base), lora)
    with torch.no_grad():  # a strong adapter: its base and tuned sides write different text
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(30)
    peft_model.save_pretrained(tmp_path / "adapter")
    peft_model.merge_and_unload().save_pretrained(tmp_path / "merged")
    shutil.copy(tiny_base / "tokenizer.json", tmp_path / "merged")
    shutil.copy(tiny_base / "tokenizer_config.json", tmp_path / "merged")

    adapter, whole = load_pair(str(tiny_base), tmp_path / "adapter"), load_pair(str(tiny_base), tmp_path / "merged")
    assert isinstance(adapter, AdapterPair) and isinstance(whole, TwoModels)
    texts = [sample_text(3000)]
    a, w = adapter.losses(texts, block_size=64), whole.losses(texts, block_size=64)
    assert w["base"] == pytest.approx(a["base"], rel=1e-6) and w["tuned"] == pytest.approx(a["tuned"], rel=1e-4)
    assert abs(a["tuned"] - a["base"]) > 0.005  # the adapter really changes the model
    prompts = ["To be", "The king said unto the queen that", "Hello there my friend, how"]
    rows = adapter.side_by_side(prompts, max_new_tokens=8, batch_size=2)
    assert whole.side_by_side(prompts, max_new_tokens=8, batch_size=2) == rows
    assert any(base != tuned for base, tuned in rows)


def test_evaluation_off_still_scores_held_out_text(tmp_path, tiny_base, full_run):
    root = tmp_path
    cfg = _config(root, tiny_base, "full", evaluate=False)
    m = json.loads(RunLayout(_run(root, cfg, base_from=full_run)).metrics.read_text())
    assert set(m["heldout_loss"]["style"]) == {"base", "tuned", "bigram"}
    assert m["perplexity"]["generic"]["tuned"] == pytest.approx(torch.tensor(m["heldout_loss"]["generic"]["tuned"]).exp().item(), rel=1e-5)
    assert "style_rate" not in m


# --------------------------------------------------------------------------------------------------- publishing


def test_push_all_then_load_by_repo_id_gives_the_local_model_s_greedy_output(whole_run, hub_env, run_cli):
    from huggingface_hub import ModelCard
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hubstyle import load_shakespearean
    from hubstyle.facts import load_facts

    method = load_facts(whole_run).training.method
    name = f"bard-{method.replace('_', '-')}"
    code, out, err = run_cli("push", str(whole_run), "--repo-id", f"alice/{name}", "--what", "all")
    assert code == 0, err
    assert out.count("skipping adapter:") == 1 and out.count("skipping space:") == 1, out
    assert f"method '{method}'" in out
    for suffix in ("-merged", "-classifier", "-base", "-GGUF"):
        assert hub_env.server.commits(f"alice/{name}{suffix}"), suffix
    assert hub_env.server.repo(f"alice/{name}") is None and hub_env.server.repo(f"alice/{name}-space", "space") is None

    layout = RunLayout(whole_run)
    tok = AutoTokenizer.from_pretrained(layout.model)
    want_ids = _greedy(AutoModelForCausalLM.from_pretrained(layout.model).eval(), tok)
    pushed = AutoModelForCausalLM.from_pretrained(f"alice/{name}-merged").eval()
    assert torch.equal(_greedy(pushed, AutoTokenizer.from_pretrained(f"alice/{name}-merged")), want_ids)
    bard = load_shakespearean(repo_id=f"alice/{name}-merged")
    want = _text(tok, want_ids)
    assert bard(PROMPT, max_new_tokens=12) == want
    base_text, styled = bard.compare(PROMPT, max_new_tokens=12)  # the base comes from the pushed base repo
    base_model = AutoModelForCausalLM.from_pretrained(layout.base).eval()
    assert styled == want and base_text == _text(tok, _greedy(base_model, tok))

    card = ModelCard.load(whole_run / "publish" / "merged" / "README.md")
    assert card.data.base_model == f"alice/{name}-base" and card.data.base_model_relation == "finetune"
    assert method.replace("_", "-") in card.data.tags and card.data.library_name == "transformers"
    words = "fine-tuned with its attention frozen" if method == "freeze_attention" else "fully fine-tuned"
    assert words in card.text and f"Method `{method}`" in card.text
    assert f'pipeline("text-generation", model="alice/{name}-merged")' in card.text
    for missing in (f"/alice/{name})", f"/alice/{name}-space)", "AutoPeftModel"):  # no adapter repo, no Space
        assert missing not in card.text, missing
    _check_model_index(whole_run, card)


def _check_model_index(run_dir: Path, card) -> None:
    from huggingface_hub.repocard_data import model_index_to_eval_results

    from hubstyle.facts import load_facts

    facts = load_facts(run_dir)
    _, results = model_index_to_eval_results(card.data.to_dict()["model-index"])
    values = {(r.metric_type, r.dataset_type, r.dataset_split): r.metric_value for r in results}
    assert values == {
        ("style_rate", "unknown", None): round(facts.style_rate.tuned.rate, 4),
        ("relevance", "unknown", None): round(facts.answers.tuned.relevance.mean, 4),
        ("prompt_rank_top1", "unknown", None): round(facts.answers.tuned.prompt_rank.top1, 4),
        ("prompt_rank_mrr", "unknown", None): round(facts.answers.tuned.prompt_rank.mrr, 4),
        ("perplexity", "karpathy/tiny_shakespeare", "test"): round(facts.perplexity.style.tuned, 4),
        ("perplexity", "Salesforce/wikitext", "validation"): round(facts.perplexity.generic.tuned, 4),
    }


def test_gguf_is_exported_from_the_trained_model(full_run, tmp_path):
    from huggingface_hub import ModelCard
    from transformers import AutoModelForCausalLM

    from hubstyle.publish import build_publish_folders, default_repo_ids

    ids = default_repo_ids("alice", "bard", base_is_local=True)
    folders = build_publish_folders(full_run, ids, what=["adapter", "merged", "gguf"])
    assert sorted(folders) == ["gguf", "merged"]  # no adapter to publish, and no LoRA GGUF
    folder = folders["gguf"]
    assert sorted(p.name for p in folder.iterdir()) == ["Modelfile", "README.md", "bard-F16.gguf", "bard-Q8_0.gguf"]
    assert "a full fine-tune of\n[`alice/bard-base`]" in ModelCard.load(folder / "README.md").text
    source = AutoModelForCausalLM.from_pretrained(RunLayout(full_run).model).eval()
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file="bard-F16.gguf", dtype=torch.float32,
                                                  n_positions=source.config.n_positions).eval()
    tokens = torch.tensor([list(range(3, 40))])
    with torch.no_grad():
        assert (source(tokens).logits - loaded(tokens).logits).abs().max().item() < 0.05

    before = {p.name: p.read_bytes() for p in folders["merged"].rglob("*") if p.is_file()}
    build_publish_folders(full_run, ids, what=["merged"])  # rebuilt from the same run: the same bytes
    assert {p.name: p.read_bytes() for p in folders["merged"].rglob("*") if p.is_file()} == before


def test_prepare_release_skips_what_a_full_run_has_not_once(freeze_run):
    from hubstyle.release import prepare_release

    said: list[str] = []
    parts = prepare_release(freeze_run, "alice/frozen", log=said.append)
    assert [p.kind for p in parts] == ["base", "dataset", "merged", "classifier", "gguf"]
    assert [line.split(":")[0] for line in said] == ["skipping adapter", "skipping space"]
    assert all("freeze_attention" in line for line in said)
    with pytest.raises(HubstyleError, match="space: the Space runtime serves a base model with style adapters") as err:
        prepare_release(freeze_run, "alice/frozen", ("space",), log=said.append)
    assert "\n" not in str(err.value)
