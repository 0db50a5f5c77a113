"""The classifier's `other` class from several modern registers: the chatterbot corpus, per-register scores, names."""

from __future__ import annotations

import json
import re

import pytest

from hubstyle.config import ClassifierConfig, RunConfig
from hubstyle.data import Splits, load_corpus, split_blocks
from hubstyle.data.clean import MIN_CONVERSATION_WORDS, chatterbot_blocks
from hubstyle.errors import HubstyleError
from hubstyle.evaluate.classifier import _even_shares, train_classifier
from tests.test_classifier import SMALL, shakespeare_speeches, wikitext_paragraphs

REGISTER_KEYS = {"label", "n_train", "n", "accuracy"}


@pytest.fixture(scope="module")
def chatterbot() -> list[str]:
    return load_corpus("chatterbot").blocks


def test_chatterbot_corpus_loads_clean(chatterbot):
    words = sum(len(b.split()) for b in chatterbot)
    print(f"chatterbot: {len(chatterbot)} conversations, {words:,} words")
    assert 700 <= len(chatterbot) <= 1500 and 12_000 <= words <= 40_000
    assert len(set(chatterbot)) == len(chatterbot)  # tech_support.yml's 1,050 copies of 10 conversations: once each
    assert all(len(b.split()) >= MIN_CONVERSATION_WORDS for b in chatterbot)
    assert sum("\n" in b for b in chatterbot) > 0.9 * len(chatterbot)  # turns stay on their own lines
    for block in chatterbot:
        assert not re.search(r"^\s*- ", block, re.MULTILINE), block
        assert "conversations:" not in block and "categories:" not in block, block
    assert "What is AI?\nArtificial Intelligence is the branch of engineering and science" in chatterbot[0]


def test_chatterbot_cleaner_drops_non_strings_tiny_and_repeated_conversations():
    text = (
        "categories:\n- test\nconversations:\n"
        "- - How are you doing today?\n  - I am doing well, thanks.\n  - 42\n  - [a, nested, list]\n"
        "- - Hello\n  - Hi\n"  # tiny
        "- a stray string where a conversation belongs\n"
        "- - How are you doing today?\n  - I am doing well, thanks.\n"  # a repeat once non-strings are gone
        "- - 'What is your favourite colour?'\n  - \"Blue, like   the sky.\"\n"
    )
    assert chatterbot_blocks(text) == [
        "How are you doing today?\nI am doing well, thanks.",
        "What is your favourite colour?\nBlue, like the sky.",
    ]
    assert chatterbot_blocks("just: a mapping\n") == []


def test_even_shares_fill_from_the_larger_registers():
    assert _even_shares({"a": 100, "b": 100}, 31) == {"a": 15, "b": 16}
    assert _even_shares({"wikitext": 500, "chat": 7}, 30) == {"wikitext": 23, "chat": 7}
    assert _even_shares({"x": 4, "y": 9, "z": 50}, 30) == {"x": 4, "y": 9, "z": 17}
    assert _even_shares({None: 80}, 60) == {None: 60}


@pytest.mark.slow
def test_per_register_report(tmp_path, data_dir, chatterbot):
    chat = split_blocks(chatterbot, validation=0.2, test=0.0)
    tiny_chat = ["Do you like music?\nYes, I like jazz.", "What time is it?\nIt is noon."]  # 14 words: 1 passage
    train = {
        "shakespeare": shakespeare_speeches(data_dir, 0, 400),
        "other": {"wikitext": wikitext_paragraphs(data_dir, "valid.txt", 80), "chatterbot": chat.train},
    }
    heldout = {
        "shakespeare": shakespeare_speeches(data_dir, 6000, 300),
        "other": {"wikitext": wikitext_paragraphs(data_dir, "test.txt", 60), "chatterbot": tiny_chat},
    }
    report = train_classifier(train, heldout, out_dir=tmp_path, epochs=1, batch_size=8, learning_rate=2e-4, **SMALL)
    print("registers:", report.registers)
    assert report.labels == ["other", "shakespeare"]
    assert report.n_train == 240 and report.n_heldout == 60  # 60 a class, every passage (chat too) also disfluent
    assert list(report.registers) == ["wikitext", "chatterbot"]
    assert all(set(r) == REGISTER_KEYS and r["label"] == "other" for r in report.registers.values())
    wiki, talk = report.registers["wikitext"], report.registers["chatterbot"]
    assert (wiki["n_train"], talk["n_train"]) == (30, 30)  # balanced between registers
    assert (talk["n"], wiki["n"]) == (1, 29)  # a register short of its half gives all it has
    correct_other = report.confusion_matrix[0][0]
    assert wiki["accuracy"] * wiki["n"] + talk["accuracy"] * talk["n"] == pytest.approx(correct_other)
    assert report.per_class["other"]["recall"] == pytest.approx(correct_other / 30)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["registers"] == report.as_dict()["registers"] == report.registers


def test_register_names_must_be_unique_across_classes(tmp_path):
    texts = {"a": {"x": ["one two three"]}, "b": {"x": ["four five six"]}}
    with pytest.raises(HubstyleError, match=r"register 'x' in both 'a' and 'b'"):
        train_classifier(texts, texts, out_dir=tmp_path)
    with pytest.raises(HubstyleError, match=r"train\['b'\]\['y'\] has no texts"):
        train_classifier({"a": ["one"], "b": {"y": [" "]}}, {"a": ["one"], "b": ["two"]}, out_dir=tmp_path)


def test_other_corpora_config():
    assert ClassifierConfig().other_corpora == ["wikitext", "chatterbot"]
    with pytest.raises(HubstyleError) as err:
        ClassifierConfig(other_corpora=["wikitext", "chatbot"])
    message = str(err.value)
    print(message)
    assert "\n" not in message and "'chatbot'" in message and "did you mean 'chatterbot'" in message
    assert "chatterbot, milton, shakespeare, shakespeare-distilled, shakespeare-modern, wikitext" in message
    with pytest.raises(HubstyleError, match="lists 'wikitext' twice"):
        ClassifierConfig(other_corpora=["wikitext", "wikitext"])
    with pytest.raises(HubstyleError, match="other_corpora' is empty"):
        ClassifierConfig(other_corpora=[])
    assert ClassifierConfig(other_corpora=["hf:someone/chats", "my_chats.jsonl"]).other_corpora[0] == "hf:someone/chats"


def test_ensure_classifier_builds_other_from_registers(tmp_path, data_dir, monkeypatch):
    """The pipeline's classifier: the run's generic split reused as is, chatterbot split by segments."""
    from hubstyle import pipeline

    captured = {}

    def fake_train(train, heldout, **kwargs):
        captured.update(train=train, heldout=heldout)
        raise RuntimeError("stop before training")

    monkeypatch.setattr("hubstyle.evaluate.classifier.train_classifier", fake_train)
    cfg = RunConfig(output_dir=str(tmp_path), classifier=ClassifierConfig(other_corpora=["chatterbot", "wikitext"]))
    generic = Splits(train=["modern train text"], validation=["modern held-out text"], test=[])
    style = Splits(train=["Thou art a train speech."], validation=["A valid speech."], test=["A test speech."])
    data = type("Data", (), {"splits": {"shakespeare": style}})()
    with pytest.raises(RuntimeError, match="stop before training"):
        pipeline.ensure_classifier(cfg, tmp_path, data, generic, log=lambda *_: None)
    train, heldout = captured["train"]["other"], captured["heldout"]["other"]
    assert list(train) == list(heldout) == ["chatterbot", "wikitext"]
    assert train["wikitext"] is generic.train and heldout["wikitext"] is generic.validation
    assert not set(train["chatterbot"]) & set(heldout["chatterbot"])
    assert len(heldout["chatterbot"]) < len(train["chatterbot"])
    assert captured["heldout"]["shakespeare"] == ["A test speech."]


def test_classifier_pairs_config():
    assert ClassifierConfig().pairs is None and ClassifierConfig().sources() == ["wikitext", "chatterbot"]
    cfg = ClassifierConfig(pairs="shakespeare-modern")
    assert cfg.sources() == ["wikitext", "chatterbot", "shakespeare-modern"] and cfg.pairs_held_out_play == "tempest"
    with pytest.raises(HubstyleError, match="'classifier.pairs' is 'shakespeare-modrn': give a named parallel corpus"):
        ClassifierConfig(pairs="shakespeare-modrn")
    from hubstyle.pipeline import _check_pairs

    def check(**classifier):
        _check_pairs(RunConfig(classifier=ClassifierConfig(**classifier)))

    check(pairs="shakespeare-modern")
    with pytest.raises(HubstyleError, match="'classifier.pairs_held_out_play' is 'tempst': known plays are tempest"):
        check(pairs="shakespeare-modern", pairs_held_out_play="tempst")
    with pytest.raises(HubstyleError, match="'classifier.pairs' is 'wikitext', which holds no pairs"):
        check(pairs="wikitext")


def test_ensure_classifier_adds_both_sides_of_the_pairs(tmp_path, data_dir, monkeypatch):
    """Parallel pairs join both classes as registers, the same lines on each side; the last share is scored on when
    no play is named, and shakespeare-modern's Tempest when it is."""
    from hubstyle import pipeline
    from hubstyle.data.parallel import held_out_split, read_pairs

    captured = {}

    def fake_train(train, heldout, **kwargs):
        captured.update(train=train, heldout=heldout)
        raise RuntimeError("stop before training")

    monkeypatch.setattr("hubstyle.evaluate.classifier.train_classifier", fake_train)
    rows = [{"source": f"You are here, friend {i}.", "target": f"Thou art here, friend {i}."} for i in range(10)]
    (tmp_path / "lines.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    generic = Splits(train=["modern train text"], validation=["modern held-out text"], test=[])
    style = Splits(train=["Thou art a train speech."], validation=["A valid speech."], test=["A test speech."])
    data = type("Data", (), {"splits": {"shakespeare": style}})()

    def registers(**classifier):
        cfg = RunConfig(output_dir=str(tmp_path), classifier=ClassifierConfig(other_corpora=["wikitext"], **classifier))
        with pytest.raises(RuntimeError, match="stop before training"):
            pipeline.ensure_classifier(cfg, tmp_path, data, generic, log=lambda *_: None)
        return captured["train"], captured["heldout"]

    train, heldout = registers(pairs=str(tmp_path / "lines.jsonl"), pairs_held_out_play=None)
    assert train["shakespeare"] == {"shakespeare": ["Thou art a train speech."],
                                    "lines (styled)": [r["target"] for r in rows[:8]]}
    assert train["other"]["lines (plain)"] == [r["source"] for r in rows[:8]]
    assert heldout["shakespeare"]["lines (styled)"] == [r["target"] for r in rows[8:]]
    assert heldout["other"]["lines (plain)"] == [r["source"] for r in rows[8:]]
    assert heldout["shakespeare"]["shakespeare"] == ["A test speech."] and list(heldout["other"])[0] == "wikitext"

    train, heldout = registers(pairs="shakespeare-modern")
    fit, tempest = held_out_split(read_pairs("shakespeare-modern"), "tempest")
    assert heldout["other"]["shakespeare-modern (plain)"] == [p.source for p in tempest]
    assert train["shakespeare"]["shakespeare-modern (styled)"] == [p.target for p in fit]
