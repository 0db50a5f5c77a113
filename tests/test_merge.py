"""Merging adapters into the base and blending adapters, checked on a tiny random GPT-2 against peft's own forward."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from hubstyle import merge as merge_mod
from hubstyle.errors import HubstyleError
from hubstyle.layout import TRAINING_FACTS
from hubstyle.merge import (
    blend_adapters,
    blend_for_weight,
    blend_sweep_weights,
    merge_adapter,
)
from hubstyle.models import load_adapters, load_base

TOL = 1e-4


def _make_adapter(base: Path, out: Path, *, seed: int, r: int, targets: list[str], **lora_kwargs) -> Path:
    """Save a LoRA with random A and B (so it changes the output) on the fp32 base and return its folder."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(
        r=r, lora_alpha=2 * r, target_modules=targets, init_lora_weights=False, fan_in_fan_out=True, **lora_kwargs
    )  # fan_in_fan_out: GPT-2's projections are Conv1D
    get_peft_model(load_base(base), config).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapters(tiny_base, tmp_path_factory) -> dict[str, Path]:
    """Adapters alpha, beta (r=4, attention + projections), wide (r=8, attention only), rs (rsLoRA) on ``tiny_base``."""
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("adapters")
    made = {
        "alpha": _make_adapter(tiny_base, root / "alpha", seed=1, r=4, targets=["c_attn", "c_proj"]),
        "beta": _make_adapter(tiny_base, root / "beta", seed=2, r=4, targets=["c_attn", "c_proj"]),
        "wide": _make_adapter(tiny_base, root / "wide", seed=3, r=8, targets=["c_attn"]),
        "rs": _make_adapter(tiny_base, root / "rs", seed=4, r=4, targets=["c_attn"], use_rslora=True),
    }
    # adapter alpha carries its own tokenizer, marked so we can tell it from the base's
    tok = AutoTokenizer.from_pretrained(tiny_base)
    tok.model_max_length = 77
    tok.save_pretrained(made["alpha"])
    return made


@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randint(1, 500, (2, 12))


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits.float()


def _peft_logits(base: Path, adapter: Path, ids: torch.Tensor) -> torch.Tensor:
    from peft import PeftModel

    return _logits(PeftModel.from_pretrained(load_base(base), adapter).eval(), ids)


def _greedy(model, ids: torch.Tensor) -> list[list[int]]:
    with torch.no_grad():
        out = model.generate(ids[:1], max_new_tokens=8, do_sample=False, pad_token_id=0)
    return out.tolist()


def _entries(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


# ------------------------------------------------------------------------------------------------ merge


def test_merge_matches_peft_logits_and_loads_plain(tiny_base, adapters, ids, tmp_path):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "merged"
    report = merge_adapter(tiny_base, adapters["alpha"], out)

    expected = _peft_logits(tiny_base, adapters["alpha"], ids)
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    assert (_logits(merged, ids) - expected).abs().max().item() < TOL
    assert (_logits(load_base(tiny_base), ids) - expected).abs().max().item() > 1e-2  # the adapter does something

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
        dtypes = {f.get_tensor(k).dtype for k in keys}
    assert keys and not [k for k in keys if "lora_" in k or "base_layer" in k]
    assert dtypes == {torch.float32}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= _entries(out)
    assert AutoTokenizer.from_pretrained(out).model_max_length == 77  # the adapter's tokenizer, not the base's
    assert _entries(tmp_path) == {"merged"}  # no staging folder left behind
    assert report.dtype == "float32" and report.out_dir == out and report.quantized_training is None
    assert "tokenizer from the adapter folder" in report.notes
    assert report.as_dict()["out_dir"] == str(out)
    json.dumps(report.as_dict())


def test_merge_adapter_trained_on_4bit_base(tiny_base, ids, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(5)
    quantized = load_base(tiny_base, quantization="4bit")
    assert type(quantized.transformer.h[0].attn.c_attn).__name__ == "Linear4bit"
    peft_model = get_peft_model(quantized, LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_proj"]))
    peft_model.train()
    optim = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=5e-2)
    for _ in range(3):  # a few real QLoRA steps, so B is no longer zero
        loss = peft_model(ids, labels=ids).loss
        loss.backward()
        optim.step()
        optim.zero_grad()
    adapter = tmp_path / "qlora"
    peft_model.save_pretrained(adapter)

    report = merge_adapter(tiny_base, adapter, tmp_path / "merged", quantized_training="4bit")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    assert {p.dtype for p in merged.parameters()} == {torch.float32}
    assert "quantization_config" not in json.loads((tmp_path / "merged" / "config.json").read_text())
    expected = _peft_logits(tiny_base, adapter, ids)
    assert (_logits(merged, ids) - expected).abs().max().item() < TOL
    assert (_logits(load_base(tiny_base), ids) - expected).abs().max().item() > 1e-3  # training moved it
    notes = " ".join(report.notes)
    assert report.quantized_training == "4bit" and report.dtype == "float32"
    assert "full-precision (float32) reload" in notes and "4-bit (nf4)" in notes
    assert "tokenizer from the base" in report.notes

    # the marker a training run leaves beside the adapter is enough
    (adapter / TRAINING_FACTS).write_text(json.dumps({"quantization": "4bit"}))
    again = merge_adapter(tiny_base, adapter, tmp_path / "merged_marker")
    assert again.quantized_training == "4bit"
    assert any(TRAINING_FACTS in n for n in again.notes) and "full-precision" in " ".join(again.notes)


def test_merge_refuses_bad_input_before_work(tiny_base, adapters, tmp_path):
    with pytest.raises(HubstyleError, match="does not exist"):
        merge_adapter(tiny_base, tmp_path / "nope", tmp_path / "out")
    with pytest.raises(HubstyleError, match="unknown quantized_training '3bit'"):
        merge_adapter(tiny_base, adapters["alpha"], tmp_path / "out", quantized_training="3bit")
    with pytest.raises(HubstyleError, match="overlaps the input"):
        merge_adapter(tiny_base, adapters["alpha"], adapters["alpha"], overwrite=True)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(HubstyleError, match="not empty; pass overwrite=True"):
        merge_adapter(tiny_base, adapters["alpha"], tmp_path / "full")
    assert _entries(tmp_path) == {"full"} and _entries(tmp_path / "full") == {"keep.txt"}

    merge_adapter(tiny_base, adapters["beta"], tmp_path / "full", overwrite=True)
    assert "keep.txt" not in _entries(tmp_path / "full") and "model.safetensors" in _entries(tmp_path / "full")


def test_failed_merge_leaves_nothing(tiny_base, adapters, tmp_path, monkeypatch):
    def broken(src, dst):
        (dst / "tokenizer.json").write_text("half")
        raise OSError("disk full")

    monkeypatch.setattr(merge_mod, "_save_tokenizer", broken)
    with pytest.raises(OSError, match="disk full"):
        merge_adapter(tiny_base, adapters["alpha"], tmp_path / "merged")
    assert _entries(tmp_path) == set()


# ------------------------------------------------------------------------------------------------ blends


def test_blend_weight_one_reproduces_adapter(tiny_base, adapters, ids, tmp_path):
    from peft import PeftModel

    out = tmp_path / "blend"
    pair = {"alpha": adapters["alpha"], "beta": adapters["beta"]}
    report = blend_adapters(tiny_base, pair, {"alpha": 1.0, "beta": 0.0}, out)

    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= _entries(out)
    assert not [p for p in out.iterdir() if p.is_dir()]
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 4 and report.rank == 4 and report.weights == {"alpha": 1.0, "beta": 0.0}

    reference = PeftModel.from_pretrained(load_base(tiny_base), adapters["alpha"]).eval()
    blended = PeftModel.from_pretrained(load_base(tiny_base), out).eval()
    assert (_logits(blended, ids) - _logits(reference, ids)).abs().max().item() < TOL
    assert _greedy(blended, ids) == _greedy(reference, ids)
    assert (_logits(blended, ids) - _peft_logits(tiny_base, adapters["beta"], ids)).abs().max().item() > 1e-2
    assert _entries(tmp_path) == {"blend"}


def test_cat_blend_with_different_ranks_adds_both_updates(tiny_base, adapters, ids, tmp_path):
    from peft import PeftModel

    out = tmp_path / "cat"
    report = blend_adapters(
        tiny_base,
        {"alpha": adapters["alpha"], "wide": adapters["wide"]},
        [1.0, 1.0],
        out,
        combination_type="cat",
        name="mix",
    )
    assert report.rank == 4 + 8 and json.loads((out / "adapter_config.json").read_text())["r"] == 12

    both = load_adapters(load_base(tiny_base), {"alpha": adapters["alpha"], "wide": adapters["wide"]})
    both.base_model.set_adapter(["alpha", "wide"])  # both updates at once: what cat with weights 1, 1 must equal
    blended = PeftModel.from_pretrained(load_base(tiny_base), out).eval()
    assert (_logits(blended, ids) - _logits(both, ids)).abs().max().item() < TOL


def test_rslora_blend_keeps_the_adapters_scale(tiny_base, adapters, ids, tmp_path):
    blend_adapters(tiny_base, {"rs": adapters["rs"]}, [1.0], tmp_path / "rs")
    config = json.loads((tmp_path / "rs" / "adapter_config.json").read_text())
    assert config["use_rslora"] is False and config["lora_alpha"] == config["r"]
    expected = _peft_logits(tiny_base, adapters["rs"], ids)
    assert (_peft_logits(tiny_base, tmp_path / "rs", ids) - expected).abs().max().item() < TOL

    # and live, on a loaded model (peft 0.21.2 alone would scale this blend by sqrt(r) = 2)
    model = load_adapters(load_base(tiny_base), {"rs": adapters["rs"], "alpha": adapters["alpha"]})
    blend_for_weight(model, ("rs", "alpha"), 1.0, "cat")
    assert (_logits(model, ids) - expected).abs().max().item() < TOL


def test_sweep_helpers_reuse_blends_on_one_loaded_model(tiny_base, adapters, ids):
    assert blend_sweep_weights() == [(0.0, 1.0), (0.25, 0.75), (0.5, 0.5), (0.75, 0.25), (1.0, 0.0)]
    assert blend_sweep_weights((0.1,)) == [(0.1, 0.9)]

    model = load_adapters(load_base(tiny_base), {"alpha": adapters["alpha"], "beta": adapters["beta"]})
    name = blend_for_weight(model, ("alpha", "beta"), 1.0)
    assert name == "blend_linear_w1p00" and model.active_adapter == name
    assert (_logits(model, ids) - _peft_logits(tiny_base, adapters["alpha"], ids)).abs().max().item() < TOL
    assert blend_for_weight(model, ("alpha", "beta"), 0.0) == "blend_linear_w0p00"
    assert (_logits(model, ids) - _peft_logits(tiny_base, adapters["beta"], ids)).abs().max().item() < TOL

    count = len(model.peft_config)
    assert blend_for_weight(model, ("alpha", "beta"), 1.0) == "blend_linear_w1p00"  # reused, not rebuilt
    assert len(model.peft_config) == count and model.active_adapter == "blend_linear_w1p00"
    with pytest.raises(HubstyleError, match="already exists"):
        blend_for_weight(model, ("beta", "alpha"), 1.0)

    half = blend_for_weight(model, ("alpha", "beta"), 0.5, "cat")
    assert half == "blend_cat_w0p50" and model.active_adapter == half
    with pytest.raises(HubstyleError, match="not loaded"):
        blend_for_weight(model, ("alpha", "zzz"), 0.5)


def test_sweep_helper_rejects_unequal_ranks(tiny_base, adapters):
    model = load_adapters(load_base(tiny_base), {"alpha": adapters["alpha"], "wide": adapters["wide"]})
    with pytest.raises(HubstyleError, match="alpha: r=4, wide: r=8"):
        blend_for_weight(model, ("alpha", "wide"), 0.5, "linear")
    assert set(model.peft_config) == {"alpha", "wide"}


def _other_base_copy(adapter: Path, where: Path) -> Path:
    shutil.copytree(adapter, where)
    config = json.loads((where / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "someone/other-base"
    (where / "adapter_config.json").write_text(json.dumps(config))
    return where


@pytest.mark.parametrize(
    "case, kwargs, message",
    [
        ("ranks", dict(pair=("alpha", "wide")), r"'linear' needs adapters of equal rank, got alpha: r=4, wide: r=8"),
        ("bases", dict(pair=("alpha", "other")), r"different bases \(alpha: .*, other: someone/other-base\)"),
        ("unknown", dict(combination_type="lineer"), r"did you mean 'linear'.*dare_ties_svd"),
        ("count", dict(weights=[1.0]), r"got 1 weights \[1.0\] for 2 adapters \['alpha', 'beta'\]"),
        ("names", dict(weights={"alpha": 1.0, "z": 0.0}), r"missing \['beta'\], unknown \['z'\]"),
        ("missing", dict(pair=("alpha", "missing")), r"adapter 'missing' folder '.*nope' does not exist"),
        ("density", dict(combination_type="ties"), r"'ties' needs a density in \(0, 1\].*got None"),
        ("range", dict(combination_type="dare_linear", density=1.5), r"got 1.5"),
        ("sign", dict(combination_type="ties", density=0.5, majority_sign_method="most"), r"'most'"),
        ("name", dict(name="w0.5"), r"adapter name 'w0.5' is not allowed"),
        ("prefix", dict(name="ra"), r"adapter name 'ra' is not allowed.*inside 'lora_'"),
    ],
)
def test_blend_errors_are_one_line_and_write_nothing(tiny_base, adapters, tmp_path, case, kwargs, message):
    pool = {
        "alpha": adapters["alpha"],
        "beta": adapters["beta"],
        "wide": adapters["wide"],
        "other": _other_base_copy(adapters["beta"], tmp_path / "inputs" / "other"),
        "missing": tmp_path / "inputs" / "nope",
    }
    pair = kwargs.pop("pair", ("alpha", "beta"))
    chosen = {k: pool[k] for k in pair}
    weights = kwargs.pop("weights", [1.0, 0.0])
    out = tmp_path / "blend"
    with pytest.raises(HubstyleError, match=message) as info:
        blend_adapters(tiny_base, chosen, weights, out, **kwargs)
    assert "\n" not in str(info.value)
    assert _entries(tmp_path) == {"inputs"}


def test_dare_and_ties_blends_run(tiny_base, adapters, tmp_path):
    for combination in ("ties", "dare_linear_svd"):
        report = blend_adapters(
            tiny_base,
            {"alpha": adapters["alpha"], "beta": adapters["beta"]},
            [0.5, 0.5],
            tmp_path / combination,
            combination_type=combination,
            density=0.5,
        )
        assert report.rank == 4 and (tmp_path / combination / "adapter_model.safetensors").is_file()
    assert report.majority_sign_method is None and report.density == 0.5
