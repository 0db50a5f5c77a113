"""The GPU code paths, run on the CPU under a fake device policy (issue 25, item 4).

``hubstyle.models.device`` is made to say CUDA; ``from_pretrained`` is wrapped so the test sees what a GPU run would
ask for (quantisation, dtype) while the tiny model really loads on the CPU, and ``Tensor.numpy`` is wrapped so a
CUDA tensor reaching it (what a GPU export did) is recorded.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from hubstyle.layout import TRAINING_FACTS

CUDA = torch.device("cuda")


@pytest.fixture
def fake_gpu(monkeypatch):
    """hubstyle's device policy says CUDA; returns the kwargs of every causal-LM from_pretrained call."""
    from transformers import AutoModelForCausalLM

    import hubstyle.models

    monkeypatch.setattr(hubstyle.models, "device", lambda: CUDA)
    calls: list[dict] = []
    real = AutoModelForCausalLM.from_pretrained.__func__

    def recording(cls, where, **kwargs):
        calls.append(dict(kwargs))
        kwargs.pop("quantization_config", None)  # bitsandbytes needs CUDA: the tiny model loads plainly
        return real(cls, where, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(recording))
    return calls


def _adapter(base, out, *, seed: int = 1):
    """Save a LoRA on ``base`` with random (non-zero) B to ``out``."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_proj"], init_lora_weights=False))
    model.save_pretrained(out)
    return out


@pytest.mark.parametrize(("facts", "want"), [
    ({"quantization": "4bit", "base_dtype": "4bit", "compute_dtype": "bfloat16"}, ("4bit", torch.bfloat16)),
    ({"quantization": "4bit", "base_dtype": "4bit", "compute_dtype": "float32"}, ("4bit", torch.float32)),
    ({"quantization": "8bit", "base_dtype": "8bit"}, ("8bit", None)),
])
def test_qlora_evaluation_loads_the_base_as_it_was_trained(fake_gpu, tiny_base, tmp_path, facts, want):
    from hubstyle.evaluate.pair import AdapterPair, load_pair

    adapter = _adapter(tiny_base, tmp_path / "adapter")
    (adapter / TRAINING_FACTS).write_text(json.dumps({"method": "qlora", **facts}), encoding="utf-8")
    pair = load_pair(str(tiny_base), adapter)
    assert isinstance(pair, AdapterPair)
    (base_call,) = [c for c in fake_gpu if "quantization_config" in c]
    config = base_call["quantization_config"]
    quantization, compute = want
    if quantization == "4bit":
        assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4"
        assert config.bnb_4bit_compute_dtype == compute
    else:
        assert config.load_in_8bit and not config.load_in_4bit
    # bitsandbytes places a quantised model itself: nothing moved it (a .to(cuda) would have failed here)
    assert {p.device.type for p in pair.model.parameters()} == {"cpu"}


def test_a_bf16_lora_is_evaluated_in_bf16_and_plain_facts_in_fp32(fake_gpu, tiny_base, tmp_path, monkeypatch):
    import hubstyle.models
    from hubstyle.evaluate.pair import load_pair

    monkeypatch.setattr(hubstyle.models, "device", lambda: torch.device("cpu"))  # an unquantised base is moved
    adapter = _adapter(tiny_base, tmp_path / "adapter")
    (adapter / TRAINING_FACTS).write_text(json.dumps({"quantization": None, "base_dtype": "bfloat16"}))
    fake_gpu.clear()  # the adapter's own making
    load_pair(str(tiny_base), adapter)
    assert fake_gpu[0]["dtype"] == torch.bfloat16 and "quantization_config" not in fake_gpu[0]
    (adapter / TRAINING_FACTS).unlink()  # no facts (e.g. an adapter from elsewhere): full precision, as before
    load_pair(str(tiny_base), adapter)
    assert fake_gpu[-1]["dtype"] == torch.float32


def test_unreadable_training_facts_are_one_line(tiny_base, tmp_path):
    from hubstyle.errors import HubstyleError
    from hubstyle.models import trained_base

    (tmp_path / TRAINING_FACTS).write_text(json.dumps({"quantization": "3bit"}))
    with pytest.raises(HubstyleError, match="has quantization '3bit'; expected '4bit', '8bit' or null"):
        trained_base(tmp_path)


def test_export_merges_on_the_cpu_from_a_fresh_merge(fake_gpu, tiny_base, tmp_path, monkeypatch):
    """Under a CUDA device policy, export merges the adapter on the CPU (fp32, no quantisation), every tensor that
    reaches .numpy() is a CPU tensor, and a stale publish/merged/ is not what gets exported."""
    import gguf
    import numpy as np

    from hubstyle.export import export_gguf
    from hubstyle.merge import merge_adapter

    run = tmp_path / "run"
    _adapter(tiny_base, run / "adapter")
    shutil.copytree(tiny_base, run / "publish" / "merged")  # stale: the base without the adapter
    fake_gpu.clear()  # the adapter's own making
    devices = []
    real_numpy = torch.Tensor.numpy

    def numpy(self, *args, **kwargs):
        devices.append(self.device.type)
        return real_numpy(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "numpy", numpy)
    report = export_gguf(run, "f16", out=tmp_path / "out")
    assert report.source.startswith("adapter merged on the CPU")
    assert devices and set(devices) == {"cpu"}
    assert fake_gpu and all(c["dtype"] == torch.float32 and "quantization_config" not in c for c in fake_gpu)
    assert not list((tmp_path / "out").glob(".merged-*"))  # the fresh merge is removed afterwards

    merge_adapter(str(tiny_base), run / "adapter", tmp_path / "fresh")
    reference = export_gguf(tmp_path / "fresh", "f16", out=tmp_path / "reference")
    stale = export_gguf(run / "publish" / "merged", "f16", out=tmp_path / "stale")
    got, want, old = ({t.name: np.array(t.data) for t in gguf.GGUFReader(r.gguf).tensors}
                      for r in (report, reference, stale))
    assert got.keys() == want.keys() and all(np.array_equal(got[n], want[n]) for n in want)
    assert not all(np.array_equal(got[n], old[n]) for n in old)  # the adapter changed the weights
