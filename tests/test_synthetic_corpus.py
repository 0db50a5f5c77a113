"""A generated chat set beside a script: it trains the adapter, and never judges or measures it."""

from __future__ import annotations

import json

import pytest

from hubstyle.config import CorpusConfig, DialogueConfig, RunConfig
from hubstyle.data.chat import Conversation
from hubstyle.dataset import build_style_data, sample_text, style_blocks
from hubstyle.errors import HubstyleError


def _chat_file(path, n=30):
    rows = [{"messages": [{"role": "user", "content": f"Question {i}?"},
                          {"role": "assistant", "content": f"Marry, answer {i} thou shalt have."}]} for i in range(n)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def _config(chat, **synthetic):
    return RunConfig(corpora=[CorpusConfig(source="shakespeare", max_samples=200),
                              CorpusConfig(source=str(chat), name="shakespeare", **synthetic)],
                     dialogue=DialogueConfig(render="chat", rounds=1, prompts="questions", min_answer_words=16))


def test_synthetic_rows_train_but_stay_out_of_held_out_and_judged_text(tmp_path, data_dir):
    cfg = _config(_chat_file(tmp_path / "d.jsonl"), synthetic=True)
    real = style_blocks(cfg)
    assert len(real["shakespeare"]) > 1000  # max_samples caps the training side only
    data = build_style_data(cfg, lambda item: len(sample_text(item).split()))
    split = data.splits["shakespeare"]
    held = [sample_text(x) for x in split.validation + split.test]
    assert len(held) > 100 and not any("Marry, answer" in t for t in held)  # measured and judged text stays real
    trained = [sample_text(x) for x in data.train_texts["shakespeare"]]
    assert sum("Marry, answer" in t for t in trained) == 30 and len(trained) == 200 + 30


def test_a_chat_corpus_beside_a_script_is_taken_as_it_is(tmp_path, data_dir):
    cfg = RunConfig(corpora=[CorpusConfig(source="shakespeare", max_samples=50),
                             CorpusConfig(source=str(_chat_file(tmp_path / "d.jsonl", 5)), name="chat")],
                    dialogue=DialogueConfig(render="chat", rounds=1))
    blocks = style_blocks(cfg)
    assert len(blocks["shakespeare"]) > 1000 and len(blocks["chat"]) == 5
    assert all(isinstance(b, Conversation) for label in blocks for b in blocks[label])
    with pytest.raises(HubstyleError, match="share the style name"):
        RunConfig(corpora=[CorpusConfig(source="shakespeare"), CorpusConfig(source="x.jsonl", name="shakespeare")])


def test_a_synthetic_corpus_needs_a_real_style_beside_it(tmp_path, data_dir):
    cfg = RunConfig(corpora=[CorpusConfig(source="shakespeare"),
                             CorpusConfig(source=str(_chat_file(tmp_path / "d.jsonl")), name="pirate", synthetic=True)])
    with pytest.raises(HubstyleError, match="no real corpus of that style"):
        build_style_data(cfg, lambda item: 1)
