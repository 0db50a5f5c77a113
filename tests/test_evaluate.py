"""Evaluation: held-out loss/perplexity, mixed-adapter generation, style rate, demo table, the whole run."""

import json
import math
from pathlib import Path

import pytest
import torch

from hubstyle.card import demo_table_markdown
from hubstyle.errors import HubstyleError
from hubstyle.evaluate.demo_table import demo_table
from hubstyle.evaluate.generation import generate, generate_side_by_side
from hubstyle.evaluate.perplexity import base_and_tuned_loss, heldout_loss, perplexity
from hubstyle.evaluate.run import evaluate_run
from hubstyle.evaluate.style_rate import compare_style_rates, style_rate
from hubstyle.models import load_base, load_tokenizer
from hubstyle.packing import pack
from tests.tiny import sample_text

PROMPTS = [
    "To be",
    "What is the best way to cook rice? I wonder",
    "A",
    "The king said unto the queen that all is well in the realm of",
    "Hello there my friend, how",
]
LORA = dict(r=8, lora_alpha=16, target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True)


class KeywordClassifier:
    """A stand-in style classifier: 'shakespeare' when a text has 'thou', 'milton' for 'heaven', else 'modern'."""

    labels = ["modern", "shakespeare", "milton"]
    path = None

    def predict(self, texts, batch_size=32):
        return [
            "shakespeare" if "thou" in t else "milton" if "heaven" in t else "modern" for t in texts
        ]

    def predict_proba(self, texts):
        return [[1.0 if lab == p else 0.0 for lab in self.labels] for p in self.predict(texts)]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Yield with torch on one thread (restored after): tiny models gain nothing from more, and on a CPU shared
    with other busy jobs two OpenMP threads made this module 5x slower (measured: 120 s vs 21 s wall)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def adapter_dir(tiny_base, tmp_path_factory) -> Path:
    """A LoRA adapter with random (non-zero) B matrices, so it really changes the model's outputs."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    out = tmp_path_factory.mktemp("adapter")
    get_peft_model(load_base(tiny_base), LoraConfig(init_lora_weights=False, **LORA)).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tok(tiny_base):
    return load_tokenizer(tiny_base)


@pytest.fixture(scope="module")
def plain(tiny_base):
    return load_base(tiny_base)


@pytest.fixture(scope="module")
def tuned(tiny_base, adapter_dir):
    from hubstyle.models import load_adapters

    return load_adapters(load_base(tiny_base), {"style": adapter_dir})


@pytest.fixture(scope="module")
def texts():
    text = sample_text(6000)
    return [text[i : i + 500] for i in range(0, len(text), 500)]


# ---------------------------------------------------------------------------------------------------------------
# held-out loss and perplexity


def explicit_mean_nll(model, blocks: torch.Tensor) -> float:
    """Mean NLL by hand: one forward per block, then every position's -log p(next token), summed in a loop."""
    total, count = 0.0, 0
    with torch.no_grad():
        for block in blocks:
            logits = model(input_ids=block[None]).logits[0].double()
            for t in range(len(block) - 1):
                total -= torch.log_softmax(logits[t], dim=-1)[block[t + 1]].item()
                count += 1
    return total / count


def test_perplexity_is_exp_of_token_nll(plain, tok, texts):
    blocks = pack(texts, tok, 64)
    expected = explicit_mean_nll(plain, blocks)
    loss = heldout_loss(plain, tok, texts, block_size=64, batch_size=3)
    assert loss == pytest.approx(expected, rel=1e-5)
    assert perplexity(loss) == pytest.approx(math.exp(expected), rel=1e-5)
    assert 0.5 * math.log(len(tok)) < loss < 2 * math.log(len(tok))  # random init: about uniform over the vocab


def test_block_size_is_capped_at_the_context(plain, tok, texts):
    assert plain.config.n_positions == 128
    capped = heldout_loss(plain, tok, texts, block_size=1024)
    assert capped == pytest.approx(heldout_loss(plain, tok, texts, block_size=128), rel=1e-6)


def test_base_loss_with_adapter_disabled_equals_plain_base(plain, tuned, tok, texts):
    trainable_before = {n: p.requires_grad for n, p in tuned.named_parameters()}
    losses = base_and_tuned_loss(tuned, tok, texts, "style", block_size=64)
    assert losses["base"] == pytest.approx(heldout_loss(plain, tok, texts, block_size=64), rel=1e-6)
    assert losses["tuned"] == pytest.approx(heldout_loss(tuned, tok, texts, block_size=64), rel=1e-6)
    assert abs(losses["tuned"] - losses["base"]) > 1e-3  # the adapter really changes the model
    assert {n: p.requires_grad for n, p in tuned.named_parameters()} == trainable_before


def test_too_little_text_is_an_error(plain, tok):
    with pytest.raises(HubstyleError, match="fewer than one block") as err:
        heldout_loss(plain, tok, ["a few words"], block_size=64)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------------------------
# generation


def reference_continuation(model, tok, prompt: str, new: int) -> str:
    """One prompt, no padding, straight through transformers/peft ``generate``: what batching must reproduce."""
    enc = tok([prompt], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=new, do_sample=False, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def test_mixed_adapter_batch_equals_separate_runs(plain, tuned, tok):
    pairs = generate_side_by_side(tuned, tok, PROMPTS, "style", max_new_tokens=12, batch_size=3)
    assert len(pairs) == len(PROMPTS)
    for prompt, (base_text, tuned_text) in zip(PROMPTS, pairs):
        assert base_text == reference_continuation(plain, tok, prompt, 12)
        assert tuned_text == reference_continuation(tuned, tok, prompt, 12)
    assert sum(b != t for b, t in pairs) >= len(PROMPTS) - 1  # the adapter changes what is written
    assert generate(plain, tok, PROMPTS, max_new_tokens=12, batch_size=2) == [b for b, _ in pairs]
    assert generate(tuned, tok, PROMPTS, max_new_tokens=12) == [t for _, t in pairs]


def test_seeded_sampling_is_reproducible(tuned, tok):
    kwargs = dict(max_new_tokens=10, do_sample=True, temperature=1.0, top_p=0.95, batch_size=2)
    rng_before = torch.get_rng_state()
    first = generate_side_by_side(tuned, tok, PROMPTS, "style", seed=7, **kwargs)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's RNG is left alone
    assert generate_side_by_side(tuned, tok, PROMPTS, "style", seed=7, **kwargs) == first
    assert generate_side_by_side(tuned, tok, PROMPTS, "style", seed=8, **kwargs) != first
    greedy = generate_side_by_side(tuned, tok, PROMPTS, "style", max_new_tokens=10)
    assert first != greedy


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m, t: generate_side_by_side(m, t, [], "style"), "prompt list is empty"),
        (lambda m, t: generate(m, t, []), "prompt list is empty"),
        (lambda m, t: generate_side_by_side(m, t, ["hi"], "milton"), "no adapter 'milton'; it has 'style'"),
        (lambda m, t: generate_side_by_side(m, t, ["hi", "  "], "style"), "prompt 1 is empty"),
        (lambda m, t: generate_side_by_side(m, t, ["hi"], "style", max_new_tokens=500), "reads at most 128"),
    ],
)
def test_generation_errors_are_one_line(tuned, tok, call, message):
    with pytest.raises(HubstyleError, match=message) as err:
        call(tuned, tok)
    assert "\n" not in str(err.value)


def test_plain_model_has_no_adapters(plain, tok):
    with pytest.raises(HubstyleError, match="no adapter 'style'; it has no adapters loaded"):
        generate_side_by_side(plain, tok, ["hi"], "style")


# ---------------------------------------------------------------------------------------------------------------
# style rate


def test_style_rate_counts_and_wilson_interval():
    texts = ["thou art"] * 7 + ["heaven"] * 1 + ["ok then"] * 2
    rate = style_rate(KeywordClassifier(), texts, "shakespeare")
    assert (rate["successes"], rate["n"], rate["rate"]) == (7, 10, 0.7)
    # Wilson 95% interval for 7/10 (textbook value: 0.3968 to 0.8922)
    assert rate["low"] == pytest.approx(0.3968, abs=1e-4)
    assert rate["high"] == pytest.approx(0.8922, abs=1e-4)
    assert rate["per_class"] == {"modern": 0.2, "shakespeare": 0.7, "milton": 0.1}
    none = style_rate(KeywordClassifier(), ["plain words"] * 4, "shakespeare")
    assert (none["rate"], none["low"]) == (0.0, 0.0)
    assert none["high"] == pytest.approx(0.4899, abs=1e-4)  # Wilson upper bound for 0/4


def test_compare_style_rates_section_and_plot(tmp_path):
    decoding = {"max_new_tokens": 8, "do_sample": False, "temperature": 1.0, "top_p": 0.95, "seed": 0}
    section = compare_style_rates(
        KeywordClassifier(), ["fine", "thou", "ok", "sure"], ["thou", "thou", "thou", "heaven"], "shakespeare",
        decoding=decoding, plot_path=tmp_path / "eval" / "style_rate.png",
        prompts=["p1", "p2", "p3", "p4"], generations_path=tmp_path / "eval" / "generations.jsonl",
    )
    assert section["target"] == "shakespeare" and section["n_prompts"] == 4 and section["decoding"] == decoding
    rows = [json.loads(line) for line in (tmp_path / "eval" / "generations.jsonl").read_text().splitlines()]
    assert rows[1] == {"prompt": "p2", "base": "thou", "base_label": "shakespeare", "tuned": "thou",
                       "tuned_label": "shakespeare"}
    assert [r["base_label"] for r in rows].count("shakespeare") == section["base"]["successes"]
    assert (section["base"]["successes"], section["tuned"]["successes"]) == (1, 3)
    assert section["tuned"]["per_class"]["milton"] == 0.25
    assert set(section["base"]) == {"rate", "low", "high", "n", "successes", "per_class"}
    assert (tmp_path / "eval" / "style_rate.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(HubstyleError, match="2 base and 1 tuned"):
        compare_style_rates(KeywordClassifier(), ["a", "b"], ["c"], "shakespeare", decoding=decoding)
    with pytest.raises(HubstyleError, match="got 1 prompts for 2 generations"):
        compare_style_rates(KeywordClassifier(), ["a", "b"], ["c", "d"], "shakespeare", decoding=decoding,
                            prompts=["p1"], generations_path=tmp_path / "bad" / "generations.jsonl")
    assert not (tmp_path / "bad").exists()


def test_unknown_target_style_is_an_error():
    labels = r"has labels \['modern', 'shakespeare', 'milton'\] but not \['pirate'\]"
    with pytest.raises(HubstyleError, match=labels) as err:
        style_rate(KeywordClassifier(), ["arr"], "pirate")
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------------------------
# demo table


def test_demo_table_is_greedy_and_deterministic(tuned, tok):
    table = demo_table(tuned, tok, PROMPTS[:3], "style", max_new_tokens=8)
    assert table["adapter"] == "style"
    assert table["decoding"]["do_sample"] is False and table["decoding"]["max_new_tokens"] == 8
    assert [r["prompt"] for r in table["rows"]] == PROMPTS[:3]
    assert all(set(r) == {"prompt", "base", "tuned"} for r in table["rows"])
    assert demo_table(tuned, tok, PROMPTS[:3], "style", max_new_tokens=8) == table
    json.dumps(table)  # plain data


def test_demo_table_markdown_escapes_pipes_and_newlines():
    table = {
        "adapter": "style",
        "rows": [
            {"prompt": "a | b", "base": "line one\nline two", "tuned": "x\\|y <i>"},
            {"prompt": "p", "base": "", "tuned": "t"},
        ],
    }
    lines = demo_table_markdown(table).strip().split("\n")
    assert lines[0] == "| Prompt | Base model | Tuned (style) |"
    assert lines[2] == "| a \\| b | line one<br>line two | x\\\\\\|y &lt;i&gt; |"
    assert lines[3] == "| p | *(empty)* | t |"
    for line in lines:  # every row has exactly four unescaped pipes: three cells
        backslashes_before = [len(line[:i]) - len(line[:i].rstrip("\\")) for i, c in enumerate(line) if c == "|"]
        assert sum(1 for b in backslashes_before if b % 2 == 0) == 4


# ---------------------------------------------------------------------------------------------------------------
# the whole evaluation of a run


def test_evaluate_run(tiny_base, adapter_dir, plain, tuned, tok, texts, data_dir, tmp_path):
    generic = (data_dir / "wikitext-2" / "valid.txt").read_text(encoding="utf-8")[:6000].split("\n")
    result = evaluate_run(
        str(tiny_base), str(adapter_dir), classifier=KeywordClassifier(), prompts=PROMPTS, demo_prompts=PROMPTS[:2],
        style_texts=texts, generic_texts=generic, target_style="shakespeare", out_dir=tmp_path / "eval",
        max_new_tokens=8, demo_max_new_tokens=6, batch_size=4,
    )
    assert set(result) == {"heldout_loss", "perplexity", "style_rate", "answers", "demo_table"}
    loss = result["heldout_loss"]
    # the base side comes from the adapter-disabled model: equal to the plain base (block size capped at 128)
    assert loss["style"]["base"] == pytest.approx(heldout_loss(plain, tok, texts, block_size=128), rel=1e-6)
    assert loss["generic"]["tuned"] == pytest.approx(heldout_loss(tuned, tok, generic, block_size=128), rel=1e-6)
    for part in ("style", "generic"):
        for side in ("base", "tuned"):
            assert result["perplexity"][part][side] == pytest.approx(math.exp(loss[part][side]))
    rates = result["style_rate"]
    assert rates["target"] == "shakespeare" and rates["n_prompts"] == len(PROMPTS)
    assert rates["decoding"] == {
        "max_new_tokens": 8, "min_new_tokens": 8, "do_sample": False, "temperature": 1.0, "top_p": 0.95, "seed": 0
    }
    pairs = generate_side_by_side(tuned, tok, PROMPTS, "style", max_new_tokens=8, min_new_tokens=8)
    assert rates["base"] == style_rate(KeywordClassifier(), [b for b, _ in pairs], "shakespeare")
    assert rates["tuned"] == style_rate(KeywordClassifier(), [t for _, t in pairs], "shakespeare")
    answers = result["answers"]  # relevance and fluency of the same answers the style rate judged
    assert answers["base"]["relevance"]["n"] == len(PROMPTS) and 0 <= answers["tuned"]["distinct_2"] <= 1
    # prompt rank on every side, and random held-out style texts (drawn with the evaluation seed) as the reference
    assert {side: answers[side]["prompt_rank"]["n"] for side in ("base", "tuned", "reference")} == dict.fromkeys(
        ("base", "tuned", "reference"), len(PROMPTS))
    assert "prompt_rank_ratio" in answers
    assert result["demo_table"] == demo_table(tuned, tok, PROMPTS[:2], "style", 6, min_new_tokens=6, top_p=0.95)
    assert all(row["base"] and row["tuned"] for row in result["demo_table"]["rows"])
    assert (tmp_path / "eval" / "style_rate.png").read_bytes()[:4] == b"\x89PNG"
    json.dumps(result)


def test_evaluate_run_checks_the_classifier_first(tmp_path):
    class ModernOnly(KeywordClassifier):
        labels = ["modern", "milton"]

    with pytest.raises(HubstyleError, match=r"but not \['shakespeare'\]") as err:
        evaluate_run(
            str(tmp_path / "no-such-base"), str(tmp_path / "no-such-adapter"), classifier=ModernOnly(),
            prompts=PROMPTS, demo_prompts=PROMPTS, style_texts=["x"], generic_texts=["y"],
            target_style="shakespeare", out_dir=tmp_path,
        )
    assert "\n" not in str(err.value)


def test_markdown_cell_drops_control_characters():
    from hubstyle.card import markdown_cell

    assert markdown_cell("thou\x00 art\x07\r\nhere\t|") == "thou art<br>here\t\\|"
