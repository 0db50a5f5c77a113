"""Seq2seq bases (a tiny T5 built from a config): pairs from dialogue and prompt/completion files, their batches,
LoRA training, the whole run (evaluate, merge, card, push to the loopback Hub, load) and what a T5 run refuses."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from hubstyle.chat import IGNORE_INDEX
from hubstyle.config import (
    ChatConfig,
    ClassifierConfig,
    CorpusConfig,
    DialogueConfig,
    EvaluationConfig,
    RunConfig,
    TrainingConfig,
)
from hubstyle.data import load_corpus
from hubstyle.data.chat import Conversation, dialogue_conversations
from hubstyle.errors import HubstyleError
from hubstyle.evaluate.style_rate import GENERATIONS_FILE
from hubstyle.seq2seq import Pair, encode_pairs, pairs_from_samples, text_pairs

HUB_BASE = "stylelab/tiny-t5"
PROMPT = "Tell me about the weather"
NEW_TOKENS = 10
ROWS = [  # modern prompt -> archaic reply, written for these tests
    ("Tell me about the weather", "The heavens weep upon us, good my lord, and the wind doth howl."),
    ("What is for dinner tonight", "A capon, sir, and sack enough to drown a regiment."),
    ("The train was late again", "Time itself doth tarry, and we poor souls with it."),
    ("Can you help me with my homework", "Marry, I shall lend thee my wit, though it be but small."),
    ("I lost my keys this morning", "Alas, thy keys are fled like swallows in the autumn."),
]
# 80 steps of 8 pairs: enough for the tiny T5 to answer the first prompt with words of its reply (~5 s)
TRAINING = TrainingConfig(max_steps=80, batch_size=8, learning_rate=1e-2, lora_rank=8, lora_alpha=16, cutoff_len=64,
                          eval_every=20, warmup_steps=2)
SCRIPT = """ALICE:
Good morrow, is the kettle on?

BOB:
Aye, and the toast doth burn apace.

ALICE:
Then fetch the butter, quick.
"""


def make_tiny_t5(out: Path, *, seed: int = 0) -> Path:
    """Save a random-init 2-layer T5 (d_model 64) and a T5-like tokenizer (BPE learned from the test rows and a
    little Shakespeare, EOS appended to every text) to ``out``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    from tests.tiny import sample_text

    text = sample_text(60_000)
    corpus = [text[i : i + 2000] for i in range(0, len(text), 2000)] + [f"{p} {r}" for p, r in ROWS]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "</s>", "<unk>"],
                                                        show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    config = T5Config(vocab_size=len(fast), d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
                      pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    T5ForConditionalGeneration(config).save_pretrained(out)
    fast.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory) -> Path:
    return make_tiny_t5(tmp_path_factory.mktemp("tiny_t5"))


def write_pairs(path: Path, repeat: int = 8) -> Path:
    """A prompt/completion JSONL file: the test rows, ``repeat`` times."""
    rows = [json.dumps({"prompt": p, "completion": c}) for p, c in ROWS] * repeat
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def conversations(repeat: int = 8) -> list[Conversation]:
    return [Conversation([{"role": "user", "content": p}, {"role": "assistant", "content": c}])
            for p, c in ROWS] * repeat


def greedy(model, tok, prompt: str = PROMPT, new: int = NEW_TOKENS) -> str:
    """The reference: plain transformers greedy decoding of a seq2seq model (its output is the answer alone)."""
    inputs = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=new, do_sample=False)
    return tok.decode(out[0], skip_special_tokens=True)


# --------------------------------------------------------------------------------------------------- pairs


def test_pairs_from_a_script_are_context_then_reply():
    every = pairs_from_samples(dialogue_conversations(SCRIPT, None, rounds=1))
    assert every == [
        Pair("ALICE: Good morrow, is the kettle on?", "Aye, and the toast doth burn apace."),
        Pair("BOB: Aye, and the toast doth burn apace.", "Then fetch the butter, quick."),
    ]
    # one speaker's voice with two turns of context: the other speakers' lines, each with its name
    alice = pairs_from_samples(dialogue_conversations(SCRIPT, "ALICE", rounds=2))
    assert alice == [Pair("ALICE: Good morrow, is the kettle on?\nBOB: Aye, and the toast doth burn apace.",
                          "Then fetch the butter, quick.")]


def test_pairs_from_prompt_completion_and_messages_files(tmp_path):
    corpus = load_corpus(str(write_pairs(tmp_path / "pairs.jsonl", repeat=1)))
    assert pairs_from_samples(corpus.blocks) == [Pair(p, c) for p, c in ROWS]  # the prompt as it is: no "User:"

    chat = tmp_path / "chat.jsonl"
    messages = [{"role": "user", "content": "Hello there"}, {"role": "assistant", "content": "Good den, friend."},
                {"role": "user", "content": "How are you?"}, {"role": "assistant", "content": "Merry, sir."}]
    chat.write_text(json.dumps({"messages": messages}) + "\n", encoding="utf-8")
    # one pair per assistant turn, the earlier turns as its context
    assert pairs_from_samples(load_corpus(str(chat)).blocks) == [
        Pair("Hello there", "Good den, friend."),
        Pair("User: Hello there\nAssistant: Good den, friend.\nUser: How are you?", "Merry, sir."),
    ]


def test_plain_text_gives_no_pairs_and_generic_text_is_scored_by_halves():
    with pytest.raises(HubstyleError, match="plain text, but a seq2seq base trains on") as err:
        pairs_from_samples(["Once upon a time there was a kettle."])
    assert "\n" not in str(err.value)
    assert text_pairs(["one two three four five", "x"]) == [Pair("one two", "three four five")]


def test_encoded_pairs_pad_with_ignored_labels(tiny_t5):
    from hubstyle.models import load_tokenizer

    tok = load_tokenizer(tiny_t5)
    pairs = [Pair("Tell me about the weather", "Rain."), Pair("Hi", "The heavens weep upon us, good my lord.")]
    batch = encode_pairs(pairs, tok, max_len=64)
    eos, pad = tok.eos_token_id, tok.pad_token_id
    for row, pair in enumerate(pairs):
        src = tok(pair.source)["input_ids"]
        tgt = tok(text_target=pair.target)["input_ids"]
        assert src[-1] == eos and tgt[-1] == eos  # both sides end in EOS: the model learns to stop
        assert batch.input_ids[row, : len(src)].tolist() == src
        assert batch.attention_mask[row].tolist() == [1] * len(src) + [0] * (batch.input_ids.shape[1] - len(src))
        assert set(batch.input_ids[row, len(src):].tolist()) <= {pad}
        assert batch.labels[row, : len(tgt)].tolist() == tgt
        assert set(batch.labels[row, len(tgt):].tolist()) <= {IGNORE_INDEX}
    assert batch.trained_tokens() == sum(len(tok(text_target=p.target)["input_ids"]) for p in pairs)
    short = encode_pairs([Pair("one two three four five six seven eight nine ten", "ok")], tok, max_len=4)
    assert short.input_ids.shape[1] == 4 and short.input_ids[0, -1] == eos  # a long input keeps its end


# --------------------------------------------------------------------------------------------------- training


def test_lora_on_tiny_t5_learns_the_pairs(tiny_t5, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSeq2SeqLM

    from hubstyle.merge import merge_adapter
    from hubstyle.models import load_tokenizer
    from hubstyle.pipeline import heldout_losses
    from hubstyle.train import train

    report = train(str(tiny_t5), conversations(), conversations(1), tmp_path / "adapter", TRAINING)
    history = json.loads((tmp_path / "adapter" / "loss_history.json").read_text())
    first, last = history[0]["loss"], history[-1]["loss"]
    assert last < 0.6 * first, (first, last)
    assert report.task_type == "SEQ_2_SEQ_LM" and report.steps == TRAINING.max_steps
    assert report.trained_tokens == sum(len(load_tokenizer(tiny_t5)(text_target=c)["input_ids"]) for _, c in ROWS) * 8
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_2_SEQ_LM" and config["peft_type"] == "LORA"

    # held-out losses (what a run without evaluation records): replies, and generic passages by halves
    losses = heldout_losses(str(tiny_t5), tmp_path / "adapter",
                            {"style": conversations(1), "generic": [SCRIPT, "The kettle is on the stove again."]},
                            64, max_blocks=4)
    assert losses["style"]["tuned"] < 0.6 * losses["style"]["base"] and set(losses["generic"]) == {"base", "tuned"}

    # merged with peft's merge_and_unload: a plain AutoModelForSeq2SeqLM that answers like base + adapter
    merge_adapter(str(tiny_t5), tmp_path / "adapter", tmp_path / "merged")
    tok = load_tokenizer(tiny_t5)
    tuned = PeftModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained(tiny_t5), tmp_path / "adapter").eval()
    answer = greedy(tuned, tok)
    assert "heavens" in answer.split()  # it learned its reply to the prompt ("The heavens weep upon us, ...")
    assert answer == greedy(AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "merged").eval(), tok)


def test_a_killed_seq2seq_run_resumes_to_the_same_adapter(tiny_t5, tmp_path):
    """The loop's checkpoints and resume work on pairs: a run killed after its first checkpoint and resumed ends with
    the weights of an uninterrupted run; other pairs are refused."""
    from hubstyle.loop import LoopSettings, latest_checkpoint, train_loop
    from hubstyle.models import load_tokenizer
    from hubstyle.seq2seq import pair_loss_sum
    from hubstyle.train import prepare_model

    batch = encode_pairs(pairs_from_samples(conversations(2)), load_tokenizer(tiny_t5), 64)
    settings = LoopSettings(batch_size=4, learning_rate=1e-2, max_steps=6, warmup_steps=1, checkpoint_every=3)
    config = replace(TRAINING, lora_rank=4)

    class Killed(Exception):
        pass

    def kill(path):
        raise Killed(path)

    straight, _ = prepare_model(str(tiny_t5), config)
    train_loop(straight, batch, settings, checkpoint_dir=tmp_path / "a", loss_fn=pair_loss_sum)
    first, _ = prepare_model(str(tiny_t5), config)
    with pytest.raises(Killed):
        train_loop(first, batch, settings, checkpoint_dir=tmp_path / "b", on_checkpoint=kill, loss_fn=pair_loss_sum)
    assert latest_checkpoint(tmp_path / "b").name.endswith("3")
    resumed, _ = prepare_model(str(tiny_t5), config)
    result = train_loop(resumed, batch, settings, checkpoint_dir=tmp_path / "b", resume=True, loss_fn=pair_loss_sum)
    assert [h["step"] for h in result.history] == list(range(1, 7))
    trained = [(n, p) for n, p in straight.named_parameters() if p.requires_grad]
    assert trained and all(torch.allclose(p, dict(resumed.named_parameters())[n], atol=1e-6) for n, p in trained)
    other = batch[torch.arange(len(batch) - 1)]
    with pytest.raises(HubstyleError, match="was made on other training data"):
        train_loop(resumed, other, settings, checkpoint_dir=tmp_path / "b", resume=True, loss_fn=pair_loss_sum)


# --------------------------------------------------------------------------------------------------- the whole run


def run_config(out: Path, corpus: Path, prompts: Path, backbone: Path, base: str = HUB_BASE, **changes) -> RunConfig:
    """A toy seq2seq run: the tiny T5, a prompt/completion corpus, 80 LoRA steps, a tiny-GPT-2 classifier."""
    prompts.write_text("\n".join(p for p, _ in ROWS[:3]) + "\n", encoding="utf-8")
    return RunConfig(
        base_model=base,
        output_dir=str(out),
        corpora=[CorpusConfig(source=str(corpus), name="bard")],
        training=replace(TRAINING),
        classifier=ClassifierConfig(max_per_class=24, backbone=str(backbone)),
        evaluation=EvaluationConfig(prompts=str(prompts), demo_prompts=str(prompts), max_new_tokens=NEW_TOKENS,
                                    do_sample=False, heldout_blocks=8),
        **changes,
    )


@pytest.mark.slow
def test_round_trip_train_evaluate_card_push_load(tiny_t5, tiny_base, hub_env, tmp_path):
    """Train on a Hub T5 (the loopback Hub), evaluate, build the adapter / merged / classifier repos, push them, and
    load them back with hubstyle, peft and transformers: the same greedy answer as the trained model here."""
    from huggingface_hub import ModelCard
    from peft import AutoPeftModelForSeq2SeqLM, PeftModel
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from hubstyle.hub import push_folder
    from hubstyle.layout import RunLayout
    from hubstyle.loading import load_shakespearean, load_style
    from hubstyle.runner import run
    from hubstyle.publish import build_publish_folders, default_repo_ids
    from hubstyle.release import prepare_release

    push_folder(tiny_t5, HUB_BASE, commit_message="a tiny T5 on the Hub")
    cfg = run_config(tmp_path / "run", write_pairs(tmp_path / "pairs.jsonl"), tmp_path / "prompts.txt", tiny_base)
    result = run(cfg, log=lambda *_: None)

    metrics = json.loads(result.layout.metrics.read_text())
    assert metrics["training"]["task_type"] == "SEQ_2_SEQ_LM"
    assert metrics["run"]["base_model"] == HUB_BASE
    history = json.loads((result.layout.adapter / "loss_history.json").read_text())
    assert history[-1]["loss"] < 0.6 * history[0]["loss"]
    rate = metrics["style_rate"]
    assert rate["target"] == "bard" and rate["n_prompts"] == 3 and "chat" not in rate["decoding"]
    answers = metrics["answers"]
    assert set(answers) >= {"base", "tuned", "encoder"} and answers["tuned"]["relevance"]["n"] == 3
    assert answers["reference"]["prompt_rank"]["n"] == 3  # the held-out replies, drawn as the reference
    loss = metrics["heldout_loss"]
    assert loss["style"]["tuned"] < loss["style"]["base"]  # the replies it trained on got likelier
    assert set(loss["generic"]) == {"base", "tuned"} and metrics["perplexity"]["style"]["tuned"] > 1
    generations = [json.loads(line) for line in (result.layout.evaluation / GENERATIONS_FILE).read_text().splitlines()]
    assert [g["prompt"] for g in generations] == [p for p, _ in ROWS[:3]]
    assert all(not g["tuned"].startswith(g["prompt"]) for g in generations)  # answers hold no echo of the prompt

    ids = default_repo_ids("alice", "bard", base_is_local=False)
    built = build_publish_folders(result.layout.root, ids, what=("adapter", "merged", "classifier"))
    adapter_config = json.loads((built["adapter"] / "adapter_config.json").read_text())
    assert adapter_config["task_type"] == "SEQ_2_SEQ_LM" and adapter_config["base_model_name_or_path"] == HUB_BASE
    adapter_card = (built["adapter"] / "README.md").read_text()
    assert 'AutoPeftModelForSeq2SeqLM.from_pretrained("alice/bard")' in adapter_card
    assert "loadable with `AutoModelForSeq2SeqLM` alone" in adapter_card and "CausalLM" not in adapter_card
    assert "print(tokenizer.decode(output[0], skip_special_tokens=True))" in adapter_card
    merged_card = (built["merged"] / "README.md").read_text()
    assert 'AutoModelForSeq2SeqLM.from_pretrained("alice/bard-merged")' in merged_card
    assert "CausalLM" not in merged_card
    assert "/spaces/" not in adapter_card  # no Space is made for a seq2seq run
    assert build_publish_folders(result.layout.root, ids, what=("gguf",)) == {}  # the exporter writes decoder-only
    said = []
    parts = prepare_release(result.layout.root, "alice/bard", log=said.append)  # "all", as `hubstyle run` asks
    assert [p.kind for p in parts] == ["dataset", "adapter", "merged", "classifier"]
    assert [line.split(":")[0] for line in said] == ["skipping gguf", "skipping space"]
    for kind, folder in built.items():
        push_folder(folder, getattr(ids, kind), commit_message=f"Add {kind}")
        ModelCard.load(folder / "README.md").validate()

    # the reference: the trained adapter on the base, here
    tok = AutoTokenizer.from_pretrained(result.layout.adapter)
    local = PeftModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained(tiny_t5), result.layout.adapter).eval()
    answer = greedy(local, tok)
    with local.disable_adapter():
        base_answer = greedy(local, tok)
    assert "heavens" in answer.split() and answer != base_answer

    bard = load_style(ids.adapter)
    assert bard.kind == "adapter" and bard.base_model == HUB_BASE
    assert bard.compare(PROMPT, max_new_tokens=NEW_TOKENS) == (base_answer, answer)
    assert load_shakespearean(ids.merged)(PROMPT, max_new_tokens=NEW_TOKENS) == answer
    hub_tok = AutoTokenizer.from_pretrained(ids.adapter)
    assert greedy(AutoPeftModelForSeq2SeqLM.from_pretrained(ids.adapter).eval(), hub_tok) == answer
    assert greedy(AutoModelForSeq2SeqLM.from_pretrained(ids.merged).eval(), hub_tok) == answer
    assert RunLayout(result.layout.root).demo_table.is_file()


# --------------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"chat": ChatConfig(template="model")}, "chat.template is 'model', but base '.*' is a seq2seq model"),
        ({"chat": ChatConfig(assistant_only_loss=False)}, "chat.assistant_only_loss is false"),
        ({"training": TrainingConfig(method="full")}, "training.method 'full' is not supported on the seq2seq base"),
        ({"training": TrainingConfig(target_modules=["c_attn"])}, "training.target_modules names 'c_attn'"),
    ],
)
def test_options_for_decoder_only_models_are_refused(tiny_t5, tmp_path, changes, message):
    from hubstyle.runner import run

    cfg = run_config(tmp_path / "run", write_pairs(tmp_path / "pairs.jsonl"), tmp_path / "prompts.txt", tiny_t5,
                     base=str(tiny_t5))
    for key, value in changes.items():
        setattr(cfg, key, value)
    with pytest.raises(HubstyleError, match=message) as err:
        run(cfg, log=lambda *_: None)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_plain_text_corpus_on_a_seq2seq_base_is_refused(tiny_t5, tmp_path):
    from hubstyle.bases import resolve_base
    from hubstyle.dataset import style_blocks
    from hubstyle.pipeline import check_run
    from hubstyle.runner import run

    script = tmp_path / "play.txt"
    script.write_text(SCRIPT * 20, encoding="utf-8")
    cfg = run_config(tmp_path / "run", script, tmp_path / "prompts.txt", tiny_t5, base=str(tiny_t5))
    with pytest.raises(HubstyleError, match="is a seq2seq model, which trains on .* set dialogue.render: chat") as err:
        run(cfg, log=lambda *_: None)
    assert "\n" not in str(err.value) and not (tmp_path / "run").exists()
    cfg.dialogue = DialogueConfig(render="chat", rounds=1)  # the same script as (context, reply) pairs is fine
    samples = style_blocks(cfg)["bard"]
    check_run(cfg, resolve_base(str(tiny_t5), log=lambda *_: None), chat=True)
    assert pairs_from_samples(samples)[0] == Pair("ALICE: Good morrow, is the kettle on?",
                                                  "Aye, and the toast doth burn apace.")
