"""Safe loading: safetensors only, pickle weights (.bin) refused with one line unless HUBSTYLE_ALLOW_PICKLE=1,
no remote code unless asked."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi

from hubstyle.errors import HubstyleError
from hubstyle.models import ALLOW_PICKLE_ENV, load_adapters, load_base

REFUSED = r"pickle checkpoint, which can run code when loaded; .*set HUBSTYLE_ALLOW_PICKLE=1 if you trust it"


def pickle_copy(folder: Path, dest: Path, weights: str) -> Path:
    """Copy a model or adapter ``folder`` to ``dest`` with its safetensors replaced by a torch.save pickle."""
    from safetensors.torch import load_file

    shutil.copytree(folder, dest)
    for file in dest.glob("*.safetensors"):
        torch.save(load_file(file), dest / weights)
        file.unlink()
    return dest


@pytest.fixture
def pickle_base(tiny_base, tmp_path) -> Path:
    return pickle_copy(tiny_base, tmp_path / "pickle_base", "pytorch_model.bin")


def test_a_pickle_only_model_folder_is_refused_unless_opted_in(pickle_base, tiny_base, monkeypatch):
    monkeypatch.delenv(ALLOW_PICKLE_ENV, raising=False)
    with pytest.raises(HubstyleError, match=REFUSED) as err:
        load_base(pickle_base)
    assert str(pickle_base / "pytorch_model.bin") in str(err.value) and "\n" not in str(err.value)

    monkeypatch.setenv(ALLOW_PICKLE_ENV, "1")
    loaded = load_base(pickle_base)
    reference = load_base(tiny_base)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), reference.state_dict().values()))


def test_a_pickle_adapter_is_refused(runner_run, tiny_base, tmp_path, monkeypatch):
    monkeypatch.delenv(ALLOW_PICKLE_ENV, raising=False)
    adapter = pickle_copy(runner_run.folder / "adapter", tmp_path / "adapter", "adapter_model.bin")
    with pytest.raises(HubstyleError, match=REFUSED) as err:
        load_adapters(load_base(tiny_base), {"style": adapter})
    assert "adapter_model.bin" in str(err.value)


def test_a_hub_repo_with_only_bin_weights_is_refused(pickle_base, hub_env, monkeypatch):
    monkeypatch.delenv(ALLOW_PICKLE_ENV, raising=False)
    api = HfApi()
    api.create_repo("alice/pickled")
    api.upload_folder(folder_path=str(pickle_base), repo_id="alice/pickled")

    with pytest.raises(HubstyleError, match=REFUSED) as err:
        load_base("alice/pickled")
    assert "alice/pickled" in str(err.value)


def test_remote_code_is_never_trusted_by_default(tiny_base, monkeypatch):
    import transformers

    seen: list = []
    original = transformers.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    monkeypatch.delenv(ALLOW_PICKLE_ENV, raising=False)
    load_base(tiny_base)
    load_base(tiny_base, trust_remote_code=True)
    assert [(k["trust_remote_code"], k["use_safetensors"]) for k in seen] == [(False, True), (True, True)]


def test_trust_remote_code_only_where_the_run_config_asks(tmp_path, tiny_base, monkeypatch):
    """`trust_remote_code: true` in a run's config reaches the base's loads for that run, and nothing else."""
    import transformers

    from hubstyle.config import RunConfig, load_config
    from hubstyle.models import load_tokenizer, remote_code, safe_load_kwargs
    from hubstyle.runner import run_config

    assert safe_load_kwargs()["trust_remote_code"] is False
    with remote_code(True):
        assert safe_load_kwargs()["trust_remote_code"] is True
        assert safe_load_kwargs(False)["trust_remote_code"] is False  # an explicit answer wins
    assert safe_load_kwargs()["trust_remote_code"] is False

    seen = []
    real = transformers.AutoModelForCausalLM.from_pretrained.__func__

    def recording(cls, *args, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", classmethod(recording))
    load_base(tiny_base)
    with remote_code(True):
        load_base(tiny_base)
        load_tokenizer(tiny_base)
    assert seen == [False, True]

    config = tmp_path / "run.yaml"
    config.write_text(f"base_model: {tiny_base}\ntrust_remote_code: true\ncorpora: [{{source: shakespeare}}]\n")
    cfg = load_config(config)
    assert cfg.trust_remote_code is True and RunConfig().trust_remote_code is False
    config.write_text("trust_remote_code: maybe\n")
    with pytest.raises(HubstyleError, match="'trust_remote_code' must be bool, got 'maybe'"):
        load_config(config)

    seen.clear()
    cfg.output_dir = str(tmp_path / "run")
    monkeypatch.setattr("hubstyle.runner._Stages.validate", lambda self, **_: None)
    monkeypatch.setattr("hubstyle.runner._Stages.stage_data", lambda self: load_base(tiny_base) and {})
    run_config(cfg, until="data", push=False, log=lambda *_: None)  # the runner sets it for each stage's length
    load_base(tiny_base)
    assert seen == [True, False]
