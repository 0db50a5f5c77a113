"""Parallel pairs, the held-out play, and a restyler built end to end on a tiny chat model."""

from __future__ import annotations

import json

import pytest

from hubstyle.data.clean import detokenize
from hubstyle.data.parallel import Pair, changed, held_out_split, read_pairs
from hubstyle.errors import HubstyleError
from hubstyle.restyle.model import split_sentences


@pytest.mark.parametrize("raw, clean", [
    ("I 'll go , sir .", "I'll go, sir."),
    ("Thou ca n't ; I wo n't !", "Thou can't; I won't!"),
    ("What 's this ( a dagger ) ?", "What's this (a dagger)?"),
    ("He said `` go '' .", 'He said " go ".'),
    ("Madam , he's well .", "Madam, he's well."),
])
def test_detokenize_undoes_nltk_spacing(raw, clean):
    assert detokenize(raw) == clean


def test_pairs_from_two_aligned_files_and_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("You are here.\nGo away.\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("Thou art here.\nBegone.\n", encoding="utf-8")
    pairs = read_pairs(tmp_path / "a.txt", tmp_path / "b.txt")
    assert pairs == [Pair("You are here.", "Thou art here.", 1), Pair("Go away.", "Begone.", 2)]
    rows = [{"source": "You are here.", "target": "Thou art here."}, {"prompt": "Go away.", "completion": "Begone."}]
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    assert [(p.source, p.target) for p in read_pairs(tmp_path / "p.jsonl")] == [(p.source, p.target) for p in pairs]


@pytest.mark.parametrize("files, message", [
    ({"a.txt": "one\ntwo\n", "b.txt": "one\n"}, "same number of lines"),
    ({"p.jsonl": '{"source": "x"}\n'}, "needs 'source' and 'target'"),
    ({"p.jsonl": "{not json\n"}, "not valid JSON"),
    ({"p.txt": "x\n"}, "give a .jsonl file"),
])
def test_bad_parallel_data_is_one_line(tmp_path, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    names = [tmp_path / n for n in files]
    with pytest.raises(HubstyleError, match=message) as err:
        read_pairs(*names)
    assert "\n" not in str(err.value)


def test_shakespeare_modern_holds_out_the_tempest_whole(data_dir):
    pairs = read_pairs("shakespeare-modern")
    assert len(pairs) == 14_294
    assert pairs[0] == Pair("I have half a mind to hit you before you speak again.",
                            "I have a mind to strike thee ere thou speak'st.", 1)
    train, tempest = held_out_split(pairs, "tempest")
    assert len(tempest) == 958 and len(train) == 14_294 - 958
    assert tempest[0].target == "I should know that voice." and tempest[0].line == 13_337
    assert not {p.target for p in tempest if len(p.target) > 40} & {p.target for p in train}  # long lines don't leak
    assert sum(not changed(p) for p in pairs) > 800  # the pairs a build drops as teaching copying


def test_held_out_play_found_in_the_canonical_order_too():
    """In the 18,395-line files the play sits between others: it is found by its first and last lines."""
    from hubstyle.data.parallel import HELD_OUT_PLAYS

    play = HELD_OUT_PLAYS["tempest"]
    block = [Pair("a", detokenize(play.first)), Pair("b", "middle"), Pair("c", detokenize(play.last))]
    pairs = [Pair("x", "before")] + block + [Pair("y", "after")]
    train, held = held_out_split(pairs, "tempest")
    assert held == block and [p.target for p in train] == ["before", "after"]
    with pytest.raises(HubstyleError, match="not in these pairs"):
        held_out_split(pairs[:2], "tempest")


def test_evaluation_lines_are_runs_of_consecutive_lines_judged_as_passages():
    from hubstyle.restyle.evaluate import consecutive_runs, passage_groups

    pairs = [Pair(f"w{i} " * (3 + i % 4), "t", i) for i in range(100)]
    runs = consecutive_runs(pairs, 20, 5)
    assert [run[0].line for run in runs] == [0, 32, 63, 95] and all(len(run) == 5 for run in runs)
    assert all([p.line for p in run] == list(range(run[0].line, run[0].line + 5)) for run in runs)
    assert consecutive_runs(pairs[:7], 20, 5) == [pairs[:7]]
    groups = passage_groups(runs, min_words=10)
    assert sorted(i for g in groups for i in g) == list(range(20))  # every line once, in order
    flat = [p for run in runs for p in run]
    run_of = {i: r for r, run in enumerate(runs) for i in range(r * 5, r * 5 + 5)}
    for group in groups:
        assert len({run_of[i] for i in group}) == 1 and group == list(range(group[0], group[-1] + 1))
        assert sum(len(flat[i].source.split()) for i in group) >= 10 or len(group) == 5
    with pytest.raises(HubstyleError, match="at least 1"):
        consecutive_runs(pairs, 0, 5)


def test_decodings_are_tuned_on_never_trained_lines_in_the_plays_own_mix(data_dir):
    from hubstyle.data.parallel import introduces, style_words
    from hubstyle.restyle.build import ParallelConfig, RestylerConfig, restyler_data

    data = restyler_data(RestylerConfig(pairs=ParallelConfig(style_words_only=True, validation_pairs=160)))
    rest, _ = held_out_split(read_pairs("shakespeare-modern"), "tempest")
    marked = set(style_words([p for p in rest if changed(p)]))
    assert all(introduces(p, marked) for p in data.train + data.validation)
    plain = [p for p in data.tuning if p not in data.validation]
    assert set(data.validation) <= set(data.tuning) and not any(introduces(p, marked) for p in plain)
    assert not {p.line for p in data.tuning} & {p.line for p in data.train + data.held_out}
    share = data.facts["dropped_without_style_word"] / (data.facts["dropped_without_style_word"] + 5303)
    assert abs(len(plain) / len(data.tuning) - share) < 0.01  # the plays' own share of lines without a style word


def test_the_suggested_decoding_is_the_best_bleu_among_those_styled_as_often_as_shakespeare():
    from hubstyle.restyle.evaluate import suggested_decoding

    rows = [{"style_bias": b, "num_beams": n, "bleu": bleu, "style_rate": rate}
            for b, n, bleu, rate in [(0, 1, 14.0, 0.3), (2, 1, 12.0, 0.6), (2, 4, 13.0, 0.55), (3, 4, 11.0, 0.8)]]
    pick = suggested_decoding(rows, 0.5)
    assert (pick["style_bias"], pick["num_beams"]) == (2, 4)  # 13.0 beats 12.0; 14.0 is not styled enough
    assert suggested_decoding(rows, 0.7)["style_bias"] == 3
    assert suggested_decoding(rows, 0.9)["style_bias"] == 3  # none as styled as Shakespeare: the most styled


def test_restyler_tune_refuses_bad_numbers_in_one_line(run_cli):
    code, _, stderr = run_cli("restyler", "tune", "missing.yaml", "--bias", "a,b")
    assert code != 0 and "--bias takes comma-separated numbers" in stderr
    code, _, stderr = run_cli("restyler", "tune", "missing.yaml", "--beams", "0")
    assert code != 0 and "--beams takes counts of 1 or more" in stderr


def test_split_sentences_keeps_abbreviations_and_quotes():
    assert split_sentences('Hello there. How are you? I said "fine." Then Mr. Smith left!') == [
        "Hello there.", "How are you?", 'I said "fine."', "Then Mr. Smith left!"]
    assert split_sentences("no end mark") == ["no end mark"]


@pytest.mark.slow
def test_restyler_builds_evaluates_publishes_and_rewrites(tiny_build, tiny_chat_base, run_cli, tmp_path):
    from hubstyle.restyle.model import load_restyler
    from hubstyle.restyle.run import build_restyler

    cfg, evaluation = tiny_build
    assert evaluation["lines"] == 6
    for side in ("restyler", "restyler_unbiased", "copy", "reference"):
        assert 0.0 <= evaluation[side]["style_rate"] <= 1.0 and 0 < evaluation[side]["source_rank"]["mrr"] <= 1
    assert evaluation["style_bias"] == 1.5
    assert evaluation["copy"]["unchanged"] == 1.0 and evaluation["reference"]["bleu"] == 100.0
    folder = cfg.out / "publish" / "restyler"
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert "The Tempest" in card and "licence is not stated" in card and "copy baseline" in card
    assert "restyler (style bias 1.5)" in card and "restyler, no bias (greedy)" in card and "*thou*" in card
    config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    assert config["base_model_name_or_path"] == str(tiny_chat_base)
    from safetensors import safe_open

    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.bfloat16"}
    for side in ("restyler", "copy", "reference"):  # one run of the 6 lines, judged as passages of 25+ words
        passage = evaluation[side]["passage_style_rate"]
        assert passage["n"] == evaluation["passages"] >= 1 and passage["low"] <= passage["rate"] <= passage["high"]
    # the decoding is chosen on the validation pairs; a second build reuses the trained adapter (same training keys),
    # gives the same scores and shows that sweep in the card
    from hubstyle.restyle.run import tune_restyler

    sweep = tune_restyler(cfg, biases=[0.0, 1.5], beams=[1], log=lambda _: None)
    assert sweep["pairs"] == 8 and [(r["style_bias"], r["num_beams"]) for r in sweep["rows"]] == [(0.0, 1), (1.5, 1)]
    assert all(r["bleu_gain"] == round(r["bleu"] - sweep["copy"]["bleu"], 2) for r in sweep["rows"])
    assert sweep["reference"]["bleu"] == 100.0 and "Shakespeare's own lines" in sweep["suggested"]["rule"]
    again = build_restyler(cfg, log=lambda _: None)
    assert again["restyler"]["bleu"] == evaluation["restyler"]["bleu"]
    assert again["decoding_sweep"]["rows"] == sweep["rows"]
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert "on the 8 validation pairs: lines of the training plays" in card and "| 1.5 | 1 |" in card
    assert "**shipped**" in card and "rule fixed before the sweep" in card
    # a restyler that decodes without a bias is scored with the comparison bias beside it
    import dataclasses

    plain = build_restyler(dataclasses.replace(cfg, output_dir=str(tmp_path / "plain"), style_bias=0.0,
                                               compare_style_bias=1.5), log=lambda _: None)
    assert "restyler_unbiased" not in plain and plain["compare_style_bias"] == 1.5 and plain["style_bias"] == 0.0
    assert plain["restyler_biased"]["passage_style_rate"]["n"] == plain["passages"]
    card = (tmp_path / "plain" / "publish" / "restyler" / "README.md").read_text(encoding="utf-8")
    assert "restyler, style bias 1.5 (greedy)" in card and "`restyle(text, style_bias=1.5)`" in card
    restyler = load_restyler(folder)
    out = restyler.restyle("You are here. Go away now!\nHello.", max_new_tokens=6)
    assert isinstance(out, str) and out.count("\n") == 1
    code, stdout, _ = run_cli("restyle", "--adapter", str(folder), "Where are you going?")
    assert code == 0 and stdout.strip()
    code, _, stderr = run_cli("restyle", "--adapter", str(tmp_path), "hi")
    assert code != 0 and "not a restyler" in stderr


class _AllInStyle:
    """A stand-in judge: every text is in the style (the filter under test is the topic one)."""

    def predict(self, texts):
        return ["shakespeare"] * len(texts)


class _WordRestyler:
    """A stand-in restyler with a real model (for the base's answers) that swaps a few words, deterministically."""

    def __init__(self, restyler):
        self.model, self.tokenizer, self.facts, self.path = restyler.model, restyler.tokenizer, restyler.facts, "stub"
        self.style_bias, self.num_beams, self.biases, self.rewritten = 0.0, 1, [], []

    def restyle(self, texts, batch_size=16, style_bias=None, num_beams=None):
        self.biases.append(style_bias)
        self.rewritten.append(list(texts))
        return [t.replace("you", "thou").replace("You", "Thou") + " Forsooth." for t in texts]


def _stub_answers(monkeypatch):
    """The tiny random base answers nothing; give each question a plain answer that repeats its words."""
    from hubstyle.restyle import distill as module

    monkeypatch.setattr(module, "plain_answers",
                        lambda model, tok, prompts, cfg: [f"{p} Yes, you can, and here is how." for p in prompts])


@pytest.mark.slow
def test_distilled_rows_pass_both_filters_and_a_slice_reproduces_them(tmp_path, tiny_restyler, monkeypatch):
    from huggingface_hub import DatasetCard

    from hubstyle.restyle import distill as module
    from hubstyle.restyle.distill import DATASHEET_FILE, DISTILLED_FILE, DistillConfig, distill
    from hubstyle.restyle.pool import evaluation_prompts, prompt_pool
    from hubstyle.restyle.model import load_restyler
    from hubstyle.restyle.publish import publish_distilled

    _stub_answers(monkeypatch)
    restyler = _WordRestyler(load_restyler(tiny_restyler))
    cfg = DistillConfig(max_prompts=12, max_rank=3, batch_size=4)
    pool, leaks = prompt_pool(cfg)
    evaluation = {p.lower() for p in evaluation_prompts(cfg.eval_prompt_files)}
    assert not {p.lower() for _, p in pool} & evaluation and leaks["equal_to_evaluation_prompt"] >= 1
    sheet = distill(restyler, _AllInStyle(), cfg, tmp_path / "d", style="shakespeare", log=lambda _: None)
    rows = [json.loads(x) for x in (tmp_path / "d" / DISTILLED_FILE).read_text(encoding="utf-8").splitlines()]
    assert sheet["counts"]["kept"] == len(rows) > 0 and all(r["prompt_rank"] <= 3 for r in rows)
    assert sum(v for k, v in sheet["counts"].items() if k.startswith("dropped_")) + len(rows) == 12
    assert all("Forsooth." in r["messages"][1]["content"] and r["messages"][0]["role"] == "user" for r in rows)
    assert {r["origin"] for r in rows} == {"template", "chatterbot"}
    # a slice of the pool from a fresh folder keeps the same rows for the same questions
    distill(restyler, _AllInStyle(), DistillConfig(max_prompts=6, max_rank=3, batch_size=4), tmp_path / "e",
            style="shakespeare", log=lambda _: None)
    sliced = [json.loads(x) for x in (tmp_path / "e" / DISTILLED_FILE).read_text(encoding="utf-8").splitlines()]
    whole = {r["messages"][0]["content"]: r["messages"][1]["content"] for r in rows}
    assert sliced and all(whole.get(r["messages"][0]["content"], r["messages"][1]["content"]) ==
                          r["messages"][1]["content"] for r in sliced)
    # a larger pool in the same folder answers and rewrites only the questions it adds
    asked = []
    monkeypatch.setattr(module, "plain_answers", lambda model, tok, prompts, cfg: asked.extend(prompts) or
                        [f"{p} Yes, you can, and here is how." for p in prompts])
    distill(restyler, _AllInStyle(), DistillConfig(max_prompts=9, max_rank=3, batch_size=4), tmp_path / "e",
            style="shakespeare", log=lambda _: None)
    assert asked == [p for _, p in prompt_pool(DistillConfig(max_prompts=9))[0][6:]]
    answers = [f"{p} Yes, you can, and here is how." for p in asked]
    assert restyler.rewritten[-1] == [a for a in answers if len(a.split()) >= DistillConfig().min_words]
    # distilling with its own style bias rewrites again (the cached rewrites were made without it)
    assert restyler.biases == [0.0, 0.0, 0.0]
    pushed = distill(restyler, _AllInStyle(), DistillConfig(max_prompts=6, max_rank=3, batch_size=4, style_bias=3.0),
                     tmp_path / "e", style="shakespeare", log=lambda _: None)
    assert restyler.biases[-1] == 3.0 and pushed["restyler"]["style_bias"] == 3.0
    card = publish_distilled(tmp_path / "d", tmp_path / "pub", style="shakespeare")
    text = (card / "README.md").read_text(encoding="utf-8")
    assert "load_dataset" in text and "licence is not stated" in text and (card / DATASHEET_FILE).is_file()
    loaded = DatasetCard.load(card / "README.md")
    assert loaded.data.task_categories == ["text-generation"] and loaded.data.license == "other"


def test_bias_words_are_whole_words_no_plain_side_uses():
    from hubstyle.data.parallel import bias_words

    pairs = [Pair(f"you are here {i}", f"thou art here {i}, th' sun") for i in range(20)]
    pairs += [Pair(f"is it yours {i}", f"is't thine {i}") for i in range(20)]
    pairs += [Pair("the sun", "the sun")] * 10
    words = bias_words(pairs)
    assert {"thou", "art", "thine"} <= set(words)
    assert not {"th'", "th", "t", "sun", "here"} & set(words)  # fragments, and words both sides use
    assert bias_words(pairs, 2) == words[:2]


def test_style_bias_reaches_generation(tiny_chat_base):
    """A large bias on one word makes greedy decoding say it; bias 0 leaves decoding as it was."""
    from hubstyle.models import load_base, load_tokenizer
    from hubstyle.restyle.model import Restyler, style_bias_sequences

    tokenizer, model = load_tokenizer(tiny_chat_base), load_base(tiny_chat_base)
    sequences = style_bias_sequences(tokenizer, ["thou"], 3.0)
    assert len(sequences) == 3 and set(sequences.values()) == {3.0}  # " thou", " Thou", "Thou"
    facts = {"decoding": {"style_bias": 0.0, "bias_words": ["thou"]}}
    restyler = Restyler(model, tokenizer, "Rewrite.", "shakespeare", "here", facts)
    assert restyler.sequence_bias() is None
    plain = restyler.restyle("Where are you going?", max_new_tokens=6)
    pushed = restyler.restyle("Where are you going?", max_new_tokens=6, style_bias=100.0)
    assert pushed.lower().count("thou") >= 5 and plain != pushed
    assert restyler.restyle("Where are you going?", max_new_tokens=6) == plain


def test_num_beams_reaches_generation(tiny_chat_base):
    """A restyler whose facts say 2 beams searches 2 (early stopping); num_beams=1 overrides it to greedy; beams
    with sampling, or fewer than 1, are refused in one line."""
    from hubstyle.evaluate.generation import generate
    from hubstyle.models import load_base, load_tokenizer
    from hubstyle.restyle.model import Restyler

    tokenizer, model = load_tokenizer(tiny_chat_base), load_base(tiny_chat_base)
    seen, real = [], model.generate
    model.generate = lambda *a, **k: seen.append(k) or real(*a, **k)
    restyler = Restyler(model, tokenizer, "Rewrite.", "shakespeare", "here", {"decoding": {"num_beams": 2}})
    assert restyler.num_beams == 2
    beamed = restyler.restyle("Where are you going?", max_new_tokens=6)
    assert isinstance(beamed, str) and seen[-1]["num_beams"] == 2 and seen[-1]["early_stopping"] is True
    restyler.restyle("Where are you going?", max_new_tokens=6, num_beams=1)
    assert "num_beams" not in seen[-1]
    for bad in (dict(do_sample=True, num_beams=2), dict(num_beams=0)):
        with pytest.raises(HubstyleError, match="beam search takes 2 or more beams"):
            generate(model, tokenizer, ["Hello"], max_new_tokens=2, **bad)


def test_restyle_refuses_empty_and_double_input(run_cli, tmp_path):
    code, _, err = run_cli("restyle", "--file", str(tmp_path / "missing.txt"))
    assert code != 0 and "not found" in err
    (tmp_path / "t.txt").write_text("hi", encoding="utf-8")
    code, _, err = run_cli("restyle", "x", "--file", str(tmp_path / "t.txt"))
    assert code != 0 and "not both" in err
    code, _, err = run_cli("restyle", "x", "--beams", "0")
    assert code != 0 and "--beams is 0" in err


@pytest.mark.parametrize("plain, refuses", [
    ("I'm sorry for any misunderstanding, but as a chatbot designed to assist with animal care, I don't have the "
     "capability to advise.", True),
    ("I'm sorry for your loss, but as a helpful AI, I'm not equipped to provide assistance with that.", True),
    ("As an AI language model, I cannot browse the internet.", True),
    ("I'm sorry to hear that. Start with ten minutes of walking a day and add five each week.", False),
    ("Chatbots such as ELIZA answered by matching patterns; an assistant today predicts words.", False),
])
def test_distillation_drops_plain_answers_that_refuse(plain, refuses):
    """SmolLM2 declines about one answer in ten ("as a chatbot designed to ..."); restyled, it would teach refusing."""
    from hubstyle.restyle.distill import _REFUSAL

    assert bool(_REFUSAL.search(plain)) is refuses


def test_a_bias_without_style_words_is_said_and_decoding_stays_greedy(tmp_path):
    """Too few pairs show no style word: the build says so and records no bias, instead of claiming one on the card."""
    from hubstyle.restyle.build import RestylerConfig, RestylerData
    from hubstyle.restyle.run import write_decoding

    (tmp_path / "restyler.json").write_text("{}", encoding="utf-8")
    data = RestylerData(train=[Pair("you are here", "thou art here")] * 3, validation=[], held_out=[], facts={})
    said: list[str] = []
    write_decoding(tmp_path, RestylerConfig(style_bias=2.0), data, said.append)
    decoding = json.loads((tmp_path / "restyler.json").read_text(encoding="utf-8"))["decoding"]
    assert decoding == {"style_bias": 0.0, "bias_words": [], "num_beams": 1}
    assert len(said) == 1 and "decoding stays plain greedy" in said[0]
