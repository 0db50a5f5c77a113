"""The blend sweep on a tiny random GPT-2: its ends are the two adapters, its numbers are what they claim to be."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from hubstyle.errors import HubstyleError
from hubstyle.evaluate.generation import generate
from hubstyle.evaluate.perplexity import heldout_loss
from hubstyle.evaluate.stats import wilson_interval
from hubstyle.evaluate.sweep import SWEEP_JSON, SWEEP_PLOT, blend_sweep, card_points, sweep_table
from hubstyle.models import load_adapters, load_base, load_tokenizer
from tests.tiny import sample_text

PROMPTS = ["The weather today is", "My friend told me that", "At the station the train", "We went home and"]
GRID = (1.0, 0.5, 0.0)  # not sorted: rows must follow the grid


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Run torch on one thread: these cores are shared, and two threads are several times slower here."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class FakeClassifier:
    """A StyleClassifier stand-in whose label depends only on the text (its length and its vowels)."""

    def __init__(self, labels=("a", "b", "other")) -> None:
        self.labels = list(labels)
        self.path = None

    def _index(self, text: str) -> int:
        return (len(text) + sum(text.count(v) for v in "aeiou")) % len(self.labels)

    def predict(self, texts, batch_size: int = 32) -> list[str]:
        return [self.labels[self._index(t)] for t in texts]

    def predict_proba(self, texts, batch_size: int = 32) -> list[dict[str, float]]:
        return [{label: float(i == self._index(t)) for i, label in enumerate(self.labels)} for t in texts]


def _make_adapter(base: Path, out: Path, *, seed: int) -> Path:
    """Save a LoRA with random A and B (so it changes greedy output) and return its folder."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(  # alpha = 2r: a scaling of exactly 2, so the cat blend at weight 1 is bit-for-bit adapter A
        r=4, lora_alpha=8, target_modules=["c_attn", "c_proj"], init_lora_weights=False, fan_in_fan_out=True
    )
    get_peft_model(load_base(base), config).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapters(tiny_base, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sweep_adapters")
    return {"a": _make_adapter(tiny_base, root / "a", seed=1), "b": _make_adapter(tiny_base, root / "b", seed=2)}


@pytest.fixture(scope="module")
def texts() -> dict[str, list[str]]:
    text = sample_text(12_000)
    return {"a": [text[:4000]], "b": [text[4000:8000]], "generic": [text[8000:]]}


@pytest.fixture(scope="module")
def swept(tiny_base, adapters, texts, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("sweep_out") / "sweep"
    result = blend_sweep(
        tiny_base, adapters, classifier=FakeClassifier(), prompts=PROMPTS,
        heldout={"a": texts["a"], "b": texts["b"]}, generic_texts=texts["generic"], grid=GRID,
        max_new_tokens=8, batch_size=2, out_dir=out,
    )
    return result, out


def _one_adapter(base: Path, folder: Path):
    return load_adapters(load_base(base), {"only": folder})


def test_sweep_ends_are_the_adapters_themselves(tiny_base, adapters, texts, swept):
    result, _ = swept
    tok = load_tokenizer(tiny_base)
    assert result["combination_type"] == "cat" and result["adapters"] == ["a", "b"]
    assert [row["weight"] for row in result["rows"]] == list(GRID)
    by_weight = {row["weight"]: row for row in result["rows"]}
    for w, name in ((1.0, "a"), (0.0, "b")):
        model = _one_adapter(tiny_base, adapters[name])
        direct = generate(model, tok, PROMPTS, max_new_tokens=8, batch_size=2, do_sample=True, temperature=0.8,
                          top_p=0.95, seed=0)  # the sweep's default decoding: seeded sampling
        assert by_weight[w]["generations"] == direct, name
        with torch.inference_mode():
            ppl = math.exp(heldout_loss(model, tok, texts[name], batch_size=1))
            generic = math.exp(heldout_loss(model, tok, texts["generic"], batch_size=1))
        assert by_weight[w]["perplexity"][name] == pytest.approx(ppl, rel=1e-5)
        assert by_weight[w]["perplexity"]["generic"] == pytest.approx(generic, rel=1e-5)
    # the two ends really differ (otherwise the checks above prove nothing), and the midpoint is a third model
    assert by_weight[1.0]["generations"] != by_weight[0.0]["generations"]
    ends = (by_weight[1.0]["perplexity"]["a"], by_weight[0.0]["perplexity"]["a"])
    assert by_weight[0.5]["perplexity"]["a"] not in ends


def test_sweep_shares_are_the_classifier_counts_with_wilson_cis(swept):
    result, _ = swept
    fake = FakeClassifier()
    n = len(PROMPTS)
    assert result["n_prompts"] == n
    for row in result["rows"]:
        predicted = fake.predict(row["generations"])
        assert list(row["per_class"]) == fake.labels
        for label, share in row["per_class"].items():
            k = predicted.count(label)
            low, high = wilson_interval(k, n)
            assert share == pytest.approx({"rate": k / n, "low": low, "high": high})
            assert 0 <= share["low"] <= share["rate"] <= share["high"] <= 1
        assert sum(s["rate"] for s in row["per_class"].values()) == pytest.approx(1.0)
        assert row["n_empty"] == sum(g == "" for g in row["generations"])
        assert set(row["perplexity"]) == {"a", "b", "generic"}
        assert all(math.isfinite(v) and v > 1 for v in row["perplexity"].values())


def test_sweep_writes_json_plot_table_and_card_points(swept):
    result, out = swept
    assert json.loads((out / SWEEP_JSON).read_text(encoding="utf-8")) == result
    assert (out / SWEEP_PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    table = sweep_table(result).splitlines()
    assert table[0].startswith("blend sweep (cat): weight w on 'a', 1 - w on 'b'; 4 prompts")
    assert table[1].split()[:4] == ["w(a)", "a", "share", "b"]
    assert [line.split()[0] for line in table[2:]] == ["1.00", "0.50", "0.00"]
    first = result["rows"][0]
    assert table[2].split()[-2:] == [f"{first['perplexity']['generic']:.1f}", str(first["n_empty"])]

    # metrics.json's blend_sweep for the card of adapter b: weight of b itself, sorted, the numbers card.py reads
    points = card_points(result, "b")
    assert [p["weight"] for p in points] == [0.0, 0.5, 1.0]
    assert points[2]["style_perplexity"] == result["rows"][2]["perplexity"]["b"]  # b at weight 1 = grid point 0
    assert points[2]["per_class"]["b"] == result["rows"][2]["per_class"]["b"]["rate"]
    assert points[0]["generic_perplexity"] == result["rows"][0]["perplexity"]["generic"]
    assert [p["weight"] for p in card_points(result, "a")] == [0.0, 0.5, 1.0]
    with pytest.raises(HubstyleError, match="not one of the sweep's adapters"):
        card_points(result, "zzz")


def test_sweep_points_render_in_the_adapter_card(swept):
    from hubstyle.card import _blend_sweep
    from tests.test_card import facts_of, fake_metrics

    metrics = fake_metrics("alice/base")
    metrics["run"]["style"], metrics["blend_sweep"] = "a", card_points(swept[0], "a")
    rows = _blend_sweep(facts_of(metrics))["blend_rows"]  # the points as the run's facts record them
    assert [r["weight"] for r in rows] == ["0.00", "0.50", "1.00"]
    assert rows[2]["style_ppl"] == f"{swept[0]['rows'][0]['perplexity']['a']:.2f}"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"adapters": "one"}, "exactly two adapters"),
        ({"adapters": "three"}, "exactly two adapters"),
        ({"classifier": FakeClassifier(("a", "other"))}, "not \\['b'\\]"),
        ({"prompts": []}, "prompt list is empty"),
        ({"heldout": {"a": ["some text here"]}}, "no texts for \\['b'\\]"),
        ({"generic_texts": []}, "held-out 'generic' text is empty"),
        ({"grid": []}, "grid is empty"),
        ({"combination_type": "lineer"}, "did you mean 'linear'"),
    ],
)
def test_bad_input_is_one_line_before_any_model_loads(tiny_base, adapters, tmp_path, change, message):
    kwargs = dict(
        classifier=FakeClassifier(), prompts=PROMPTS, heldout={"a": ["x y z"], "b": ["x y z"]},
        generic_texts=["x y z"], out_dir=tmp_path / "out",
    )
    chosen = dict(adapters)
    if change.get("adapters") == "one":
        chosen = {"a": adapters["a"]}
    elif change.get("adapters") == "three":
        chosen = {**adapters, "c": adapters["a"]}
    kwargs.update({k: v for k, v in change.items() if k != "adapters"})
    with pytest.raises(HubstyleError, match=message) as err:
        blend_sweep(tiny_base, chosen, **kwargs)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def _tiny_classifier(base: Path, out: Path, labels: list[str]) -> Path:
    """Save a random tiny GPT-2 sequence classifier over ``labels`` (a real folder load_classifier accepts)."""
    from transformers import AutoTokenizer, GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(0)
    config = GPT2Config.from_pretrained(base)
    config.update({"num_labels": len(labels), "id2label": dict(enumerate(labels)),
                   "label2id": {label: i for i, label in enumerate(labels)}, "pad_token_id": 0})
    GPT2ForSequenceClassification(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


def test_cli_blend_sweep_prints_the_table_and_writes_the_files(tiny_base, adapters, tmp_path, run_cli):
    clf = _tiny_classifier(tiny_base, tmp_path / "clf", ["shakespeare", "milton", "other"])
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS[:2]) + "\n", encoding="utf-8")
    code, out, err = run_cli(
        "blend", "--base", str(tiny_base),
        "--adapter", f"shakespeare={adapters['a']}", "--adapter", f"milton={adapters['b']}",
        "--sweep", "--classifier", str(clf), "--prompts", str(prompts), "--grid", "0,1", "--max-new-tokens", "4",
        "--out", str(tmp_path / "sweep"),
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("blend sweep (cat): weight w on 'shakespeare', 1 - w on 'milton'; 2 prompts")
    assert [line.split()[0] for line in lines[2:4]] == ["0.00", "1.00"]
    saved = json.loads((tmp_path / "sweep" / SWEEP_JSON).read_text(encoding="utf-8"))
    assert [r["weight"] for r in saved["rows"]] == [0.0, 1.0]
    assert set(saved["rows"][0]["perplexity"]) == {"shakespeare", "milton", "generic"}
    assert (tmp_path / "sweep" / SWEEP_PLOT).is_file()

    code, _, err = run_cli(
        "blend", "--base", str(tiny_base), "--adapter", f"shakespeare={adapters['a']}",
        "--sweep", "--classifier", str(clf), "--out", str(tmp_path / "one"),
    )
    assert code == 1 and err.count("\n") == 1 and "exactly two adapters" in err
    code, _, err = run_cli(
        "blend", "--base", str(tiny_base), "--adapter", f"a={adapters['a']}",
        "--adapter", f"b={adapters['b']}", "--sweep", "--out", str(tmp_path / "none"),
    )
    assert code == 1 and "--sweep needs --classifier" in err
    code, _, err = run_cli(  # the plain blend still needs its weights
        "blend", "--base", str(tiny_base), "--adapter", f"a={adapters['a']}",
        "--adapter", f"b={adapters['b']}", "--out", str(tmp_path / "plain"),
    )
    assert code == 1 and err.count("\n") == 1 and "one --weight per adapter" in err
    assert not (tmp_path / "plain").exists()
