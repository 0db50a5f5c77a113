"""hubstyle.data: corpora sources (named, local files, HF, download), cleaning, dialogue, balancing, splits."""

from __future__ import annotations

import dataclasses
import http.server
import json
import os
import re
import shutil
import socket
import threading
from pathlib import Path

import pytest

from hubstyle.data import (
    NAMED_CORPORA,
    Corpus,
    DialogueSample,
    balance_by_tokens,
    data_dir,
    detokenize_wikitext,
    download_file,
    extract_dialogue,
    load_corpus,
    milton_blocks,
    named_corpus_files,
    parse_turns,
    split_blocks,
)
from hubstyle.errors import HubstyleError

SHAKESPEARE_SHA = NAMED_CORPORA["shakespeare"].files[0].sha256


def one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    """Return the error's message after checking it is the one-line kind the CLI prints."""
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# --- named corpora from the data dir --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wikitext() -> Corpus:
    return load_corpus("wikitext")


def test_data_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("HUBSTYLE_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path
    monkeypatch.delenv("HUBSTYLE_DATA_DIR")
    assert data_dir() is None


def test_shakespeare_blocks_are_speeches(data_dir):
    corpus = load_corpus("shakespeare")
    assert corpus.name == "shakespeare"
    assert corpus.source == str(data_dir / "tinyshakespeare" / "input.txt")
    assert corpus.blocks[:2] == ["First Citizen:\nBefore we proceed any further, hear me speak.", "All:\nSpeak, speak."]
    assert len(corpus.blocks) == 7097  # 7,222 speeches less 125 speaker lines with no speech under them
    assert all(re.match(r"^[^\n]+:\n", block) for block in corpus.blocks[:500])
    assert corpus.text().startswith("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\n")


def test_wikitext_is_detokenised(wikitext, data_dir):
    assert wikitext.source == f"{data_dir / 'wikitext-2' / 'valid.txt'}, {data_dir / 'wikitext-2' / 'test.txt'}"
    assert len(wikitext.blocks) > 1000  # one block per section
    paragraphs = [line for block in wikitext.blocks for line in block.split("\n")]
    assert len(paragraphs) > 3900 and all(p.strip() for p in paragraphs)  # each paragraph on its own line
    assert sum("\n" in block for block in wikitext.blocks) > 500  # the newline token is in the generic corpus
    text = wikitext.text()
    for artefact in ("<unk>", " @-@ ", " @,@ ", " @.@ ", " , ", " . ", " ; ", " : ", "( ", " )"):
        assert artefact not in text, artefact
    assert not re.search(r" 's\b", text)
    assert not any(re.match(r"^\s*=.*=\s*$", p) for p in paragraphs)
    assert wikitext.blocks[0].startswith("Homarus gammarus, known as the European lobster or common lobster, is a")
    assert "0.7 – 2.2 kg (1.5 – 4.9 lb)" in text


def test_detokenize_wikitext_line():
    line = " The \" <unk> \" claw , so @-@ called ' cutter ' , weighs 1 @,@ 200 g ( 2 @.@ 5 lb ) ; it isn 't <unk> . "
    assert detokenize_wikitext(line) == "The claw, so-called 'cutter', weighs 1,200 g (2.5 lb); it isn't."
    assert detokenize_wikitext(' The Boys \' song was " great " . ') == 'The Boys\' song was "great".'


def test_milton_cleaning(data_dir):
    corpus = load_corpus("milton")
    assert len(corpus.blocks) == 358
    assert corpus.blocks[0].startswith("Of Mans First Disobedience, and the Fruit\nOf that Forbidden Tree, whose")
    assert corpus.blocks[-1].endswith(
        "They hand in hand with wandring steps and slow,\nThrough EDEN took thir solitarie way."
    )
    lines = corpus.text().split("\n")
    assert not any(line != line.strip() for line in lines)
    assert not any(re.match(r"^(BOOK [IVX]+|PARADISE LOST|THE END)", line) for line in lines)


def test_milton_gutenberg_header_and_indented_paragraphs():
    raw = (
        "The Project Gutenberg Etext of Paradise Lost\nLicence blah\n*** START OF THE PROJECT GUTENBERG EBOOK ***\n"
        "PARADISE LOST \nBOOK I. \n \n  Of Mans First Disobedience, and the Fruit \nOf that Forbidden Tree \n"
        "  Say first, for Heav'n hides nothing \nNor the deep Tract of Hell \n    THE END OF THE FIRST BOOK.\n"
        "*** END OF THE PROJECT GUTENBERG EBOOK ***\nMore licence\n"
    )
    assert milton_blocks(raw) == [
        "Of Mans First Disobedience, and the Fruit\nOf that Forbidden Tree",
        "Say first, for Heav'n hides nothing\nNor the deep Tract of Hell",
    ]


def test_unknown_named_corpus_suggests_closest():
    with pytest.raises(HubstyleError) as excinfo:
        load_corpus("shakespear")
    assert "did you mean 'shakespeare'?" in one_line_error(excinfo)


# --- local files ----------------------------------------------------------------------------------------------------


def test_txt_paragraphs_and_line_groups(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("First para\nstill first.\n\n\n  \nSecond para.\r\n\r\nThird.\n", encoding="utf-8")
    corpus = load_corpus(str(path))
    assert (corpus.name, corpus.source) == ("notes", str(path))
    assert corpus.blocks == ["First para\nstill first.", "Second para.", "Third."]

    lines = [f"line {i:03d} " + "x" * 40 for i in range(100)]  # 49 chars each, no blank line anywhere
    path.write_text("\n".join(lines), encoding="utf-8")
    corpus = load_corpus(path, name="lines")
    assert corpus.name == "lines"
    assert corpus.text().replace("\n\n", "\n").split("\n") == lines  # nothing lost, order kept
    assert len(corpus.blocks) > 5
    assert all(300 <= len(block) <= 500 for block in corpus.blocks[:-1])


def test_csv_column(tmp_path):
    path = tmp_path / "quotes.csv"
    path.write_text('id,quote\n1,"Hello, world"\n2,"two\nlines"\n3,\n', encoding="utf-8")
    assert load_corpus(str(path), column="quote").blocks == ["Hello, world", "two\nlines"]
    with pytest.raises(HubstyleError) as excinfo:
        load_corpus(str(path))
    assert "no column 'text'" in one_line_error(excinfo)
    assert "['id', 'quote']" in str(excinfo.value)


def test_jsonl_field_and_bad_line(tmp_path):
    path = tmp_path / "chat.jsonl"
    path.write_text('{"text": "one"}\n\n{"text": "two", "n": 2}\n', encoding="utf-8")
    assert load_corpus(str(path)).blocks == ["one", "two"]
    path.write_text('{"body": "one"}\n{"body": "two"\n', encoding="utf-8")
    with pytest.raises(HubstyleError) as excinfo:
        load_corpus(str(path), column="body")
    assert "line 2 is not valid JSON" in one_line_error(excinfo)
    with pytest.raises(HubstyleError) as excinfo:
        load_corpus(str(path))
    assert "line 1 has no field 'text'" in one_line_error(excinfo)


@pytest.mark.parametrize(
    ("filename", "content", "expected"),
    [
        ("missing.txt", None, "not found"),
        ("empty.txt", b"  \n\n \n", "is empty"),
        ("empty.jsonl", b'{"text": "   "}\n', "is empty"),
        ("nul.txt", b"abc\x00def", "binary file"),
        ("latin1.txt", "caf\u00e9 cr\u00e8me".encode("latin-1"), "not valid UTF-8"),
        ("book.pdf", b"%PDF-1.4", "unsupported corpus file"),
    ],
)
def test_bad_local_inputs(tmp_path, filename, content, expected):
    path = tmp_path / filename
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(HubstyleError) as excinfo:
        load_corpus(str(path))
    assert expected in one_line_error(excinfo)


# --- Hugging Face datasets (local, offline) ---------------------------------------------------------------------------


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    import datasets

    cache = tmp_path / "hf_datasets_cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    return cache


def test_hf_dataset_saved_to_disk(tmp_path, hf_cache):
    from datasets import Dataset, DatasetDict

    rows = {"line": ["To be, or not to be.", "  ", "That is the question."], "n": [1, 2, 3]}
    Dataset.from_dict(rows).save_to_disk(str(tmp_path / "single"))
    corpus = load_corpus(f"hf:{tmp_path / 'single'}", column="line")
    assert corpus.blocks == ["To be, or not to be.", "That is the question."]
    assert corpus.name == "single"

    DatasetDict({"train": Dataset.from_dict(rows), "test": Dataset.from_dict({"line": ["held out"]})}).save_to_disk(
        str(tmp_path / "dict")
    )
    assert load_corpus(f"hf:{tmp_path / 'dict'}", column="line", split="test").blocks == ["held out"]
    with pytest.raises(HubstyleError) as excinfo:
        load_corpus(f"hf:{tmp_path / 'single'}")
    assert "no column 'text'" in one_line_error(excinfo) and "['line', 'n']" in str(excinfo.value)


def test_hf_dataset_data_files_folder(tmp_path, hf_cache):
    folder = tmp_path / "owner_name"
    folder.mkdir()
    (folder / "train.jsonl").write_text('{"text": "alpha"}\n{"text": "beta"}\n', encoding="utf-8")
    (folder / "validation.jsonl").write_text('{"text": "gamma"}\n', encoding="utf-8")
    assert load_corpus(f"hf:{folder}").blocks == ["alpha", "beta"]
    assert load_corpus(f"hf:{folder}", split="validation", name="mine").name == "mine"


@pytest.mark.skipif(os.environ.get("HF_DATASETS_OFFLINE") != "1", reason="needs offline mode not to touch the Hub")
def test_hf_dataset_unreachable_is_one_line_error(hf_cache):
    with pytest.raises(HubstyleError) as excinfo:
        load_corpus("hf:hubstyle-nobody/no-such-dataset:cfg")
    assert "could not load Hugging Face dataset 'hubstyle-nobody/no-such-dataset:cfg'" in one_line_error(excinfo)


# --- downloads through a loopback server ------------------------------------------------------------------------------


class _Server:
    """A static file server on 127.0.0.1 that counts requests."""

    def __init__(self, root: Path):
        hits = self.hits = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self):  # noqa: N802 (http.server's naming)
                hits.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()


@pytest.fixture
def mirror(tmp_path, monkeypatch, data_dir):
    """A loopback server with a copy of tinyshakespeare; no data dir, no offline flag, an empty HF cache."""
    from huggingface_hub import constants

    served = tmp_path / "served"
    (served / "ts").mkdir(parents=True)
    shutil.copy(data_dir / "tinyshakespeare" / "input.txt", served / "ts" / "input.txt")
    (served / "ts" / "tampered.txt").write_bytes(b"not the real thing\n")
    monkeypatch.delenv("HUBSTYLE_DATA_DIR")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "hf_home"))
    server = _Server(served)
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def test_named_corpus_downloads_once(mirror, tmp_path, monkeypatch):
    spec = NAMED_CORPORA["shakespeare"]
    local = dataclasses.replace(spec.files[0], url=f"{mirror.url}/ts/input.txt")
    monkeypatch.setitem(NAMED_CORPORA, "shakespeare", dataclasses.replace(spec, files=(local,)))

    corpus = load_corpus("shakespeare")
    cached = tmp_path / "hf_home" / "hubstyle" / "corpora" / "tinyshakespeare" / "input.txt"
    assert corpus.source == str(cached)
    assert len(corpus.blocks) == 7097
    assert mirror.hits == ["/ts/input.txt"]
    assert sorted(p.name for p in cached.parent.iterdir()) == ["input.txt"]  # no temp file left behind

    assert load_corpus("shakespeare").blocks == corpus.blocks
    assert named_corpus_files("shakespeare") == [cached]
    assert len(mirror.hits) == 1  # served from the cache, not downloaded again

    cached.write_text("corrupted", encoding="utf-8")
    assert named_corpus_files("shakespeare") == [cached]
    assert len(mirror.hits) == 2 and len(load_corpus("shakespeare").blocks) == 7097


def test_download_sha_mismatch_deletes_file(mirror, tmp_path):
    dest = tmp_path / "dl" / "input.txt"
    with pytest.raises(HubstyleError) as excinfo:
        download_file(f"{mirror.url}/ts/tampered.txt", dest, SHAKESPEARE_SHA, what="tinyshakespeare")
    message = one_line_error(excinfo)
    assert "sha256" in message and SHAKESPEARE_SHA in message and "deleted" in message
    assert list(dest.parent.iterdir()) == []

    with pytest.raises(HubstyleError, match="sha256"):
        named_corpus_files("shakespeare", urls={"tinyshakespeare/input.txt": f"{mirror.url}/ts/tampered.txt"})
    cache_folder = tmp_path / "hf_home" / "hubstyle" / "corpora" / "tinyshakespeare"
    assert list(cache_folder.iterdir()) == []

    assert download_file(f"{mirror.url}/ts/input.txt", dest, SHAKESPEARE_SHA).read_bytes()[:14] == b"First Citizen:"


def test_download_offline_and_unreachable(mirror, tmp_path, monkeypatch):
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    with pytest.raises(HubstyleError) as excinfo:
        named_corpus_files("shakespeare", urls={"tinyshakespeare/input.txt": f"http://127.0.0.1:{closed_port}/x.txt"})
    assert "could not download 'shakespeare'" in one_line_error(excinfo) and "HUBSTYLE_DATA_DIR" in str(excinfo.value)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubstyleError) as excinfo:
        named_corpus_files("shakespeare", urls={"tinyshakespeare/input.txt": f"{mirror.url}/ts/input.txt"})
    assert "HF_HUB_OFFLINE is set" in one_line_error(excinfo)
    assert mirror.hits == []


def test_milton_needs_data_dir(mirror):
    with pytest.raises(HubstyleError) as excinfo:
        load_corpus("milton")
    message = one_line_error(excinfo)
    assert "milton/paradise_lost.txt" in message and "HUBSTYLE_DATA_DIR" in message


# --- dialogue -----------------------------------------------------------------------------------------------------

CHAT_SCRIPT = """[A kitchen. Morning.]
Alice: Good morning.
Bob: Morning. Coffee?
(Bob pours coffee)
alice: Yes, please.
Carol: Save some
for me!
Alice: Always.
"""

PLAY_SCRIPT = """First Citizen:
Before we proceed any further, hear me speak.

All:
Speak, speak.

First Citizen:
You are all resolved rather to die than to famish?
Very well:
go on.

All:
Resolved. resolved.
"""


def test_parse_turns_both_formats():
    assert [(t.speaker, t.text) for t in parse_turns(CHAT_SCRIPT)] == [
        (None, "[A kitchen. Morning.]"),
        ("Alice", "Good morning."),
        ("Bob", "Morning. Coffee?"),
        (None, "(Bob pours coffee)"),
        ("alice", "Yes, please."),
        ("Carol", "Save some\nfor me!"),
        ("Alice", "Always."),
    ]
    assert [(t.speaker, t.text) for t in parse_turns(PLAY_SCRIPT)] == [
        ("First Citizen", "Before we proceed any further, hear me speak."),
        ("All", "Speak, speak."),
        ("First Citizen", "You are all resolved rather to die than to famish?\nVery well:\ngo on."),
        ("All", "Resolved. resolved."),
    ]
    mixed = "Alice: Hi.\nBob:\nHello, Alice.\nHow are you?\nAlice: Fine.\n"
    assert [(t.speaker, t.text) for t in parse_turns(mixed)] == [
        ("Alice", "Hi."),
        ("Bob", "Hello, Alice.\nHow are you?"),
        ("Alice", "Fine."),
    ]


def test_dialogue_rounds_name_line_script():
    samples = extract_dialogue(CHAT_SCRIPT, "ALICE", rounds=2)
    assert samples == [
        DialogueSample("", "Alice: Good morning."),
        DialogueSample("Alice: Good morning.\nBob: Morning. Coffee?", "alice: Yes, please."),
        DialogueSample("alice: Yes, please.\nCarol: Save some for me!", "Alice: Always."),
    ]
    assert samples[1].text() == "Alice: Good morning.\nBob: Morning. Coffee?\nalice: Yes, please."
    assert samples[0].text() == "Alice: Good morning."

    with_narration = extract_dialogue(CHAT_SCRIPT, "alice", rounds=2, keep_narration=True)
    assert [s.context for s in with_narration] == [
        "[A kitchen. Morning.]",
        "Alice: Good morning.\nBob: Morning. Coffee?\n(Bob pours coffee)",
        "alice: Yes, please.\nCarol: Save some for me!",
    ]
    assert [s.context for s in extract_dialogue(CHAT_SCRIPT, "alice", rounds=0, keep_narration=True)] == ["", "", ""]
    assert extract_dialogue(CHAT_SCRIPT, "bob", rounds=10)[0].context == "Alice: Good morning."


def test_dialogue_rounds_play_script():
    samples = extract_dialogue(PLAY_SCRIPT, "first citizen", rounds=3)
    assert samples[1] == DialogueSample(
        "First Citizen: Before we proceed any further, hear me speak.\nAll: Speak, speak.",
        "First Citizen: You are all resolved rather to die than to famish?\nVery well:\ngo on.",
    )
    assert extract_dialogue(PLAY_SCRIPT, "All", rounds=1)[1] == DialogueSample(
        "First Citizen: You are all resolved rather to die than to famish? Very well: go on.",
        "All: Resolved. resolved.",
    )


def test_dialogue_on_tinyshakespeare(data_dir):
    text = (data_dir / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    samples = extract_dialogue(text, "Romeo", rounds=2)
    assert len(samples) == 160
    assert all(s.response.startswith("ROMEO: ") for s in samples)
    assert all(len(s.context.split("\n")) <= 2 for s in samples)
    assert samples[3] == DialogueSample(
        "ROMEO: Not having that, which, having, makes them short.\nBENVOLIO: In love?", "ROMEO: Out--"
    )


def test_dialogue_errors():
    with pytest.raises(HubstyleError) as excinfo:
        extract_dialogue(CHAT_SCRIPT, "Alicia")
    message = one_line_error(excinfo)
    assert "did you mean 'Alice'?" in message and "'Alice' (3)" in message and "'Carol' (1)" in message
    with pytest.raises(HubstyleError, match="rounds"):
        extract_dialogue(CHAT_SCRIPT, "Alice", rounds=-1)
    with pytest.raises(HubstyleError, match="no 'Name: line'"):
        extract_dialogue("Just some prose.\nNo speakers here.", "Alice")


# --- balancing ----------------------------------------------------------------------------------------------------


def _words(n_blocks: int, words: int, tag: str) -> list[str]:
    return [" ".join(f"{tag}{i}w{j}" for j in range(words + i % 3)) for i in range(n_blocks)]


def test_balance_by_tokens_cuts_to_smallest():
    styles = {"big": _words(200, 10, "b"), "small": _words(50, 7, "s"), "huge": _words(1000, 4, "h")}
    count = lambda text: len(text.split())  # noqa: E731
    balanced, report = balance_by_tokens(styles, count)
    totals = {name: sum(map(count, blocks)) for name, blocks in balanced.items()}
    assert report.target_tokens == totals["small"] == sum(map(count, styles["small"]))
    assert max(totals.values()) <= 1.03 * min(totals.values())
    for name, blocks in balanced.items():
        assert blocks == styles[name][: len(blocks)]  # a contiguous prefix, in order
        assert report.styles[name].tokens_after == totals[name]
        assert report.styles[name].blocks_after == len(blocks)
        assert report.styles[name].blocks_before == len(styles[name])
    assert report.upsampled == []
    assert report.as_dict()["styles"]["big"]["tokens_before"] == sum(map(count, styles["big"]))
    assert json.loads(json.dumps(report.as_dict())) == report.as_dict()


def test_balance_by_tokens_upsamples_to_target():
    styles = {"big": _words(200, 10, "b"), "small": _words(50, 7, "s")}
    count = lambda text: len(text.split())  # noqa: E731
    balanced, report = balance_by_tokens(styles, count, target_tokens=1500)
    for blocks in balanced.values():
        assert abs(sum(map(count, blocks)) - 1500) <= 0.03 * 1500
    assert report.upsampled == ["small"] and not report.styles["big"].upsampled
    n = len(styles["small"])
    assert balanced["small"][:n] == styles["small"] and balanced["small"][n : 2 * n] == styles["small"]
    table = str(report)
    assert "small" in table and "yes (x" in table and "1,500" in table


def test_balance_by_tokens_errors():
    with pytest.raises(HubstyleError, match="no tokens"):
        balance_by_tokens({"a": ["x y"], "b": []}, lambda t: len(t.split()))
    with pytest.raises(HubstyleError, match="target_tokens"):
        balance_by_tokens({"a": ["x y"]}, lambda t: len(t.split()), target_tokens=0)


# --- splits -------------------------------------------------------------------------------------------------------


def test_split_blocks_leak_free_and_deterministic():
    blocks = [f"block {i}" for i in range(1000)]
    splits = split_blocks(blocks, validation=0.05, test=0.1, seed=0)
    index = {b: i for i, b in enumerate(blocks)}
    ids = {name: [index[b] for b in getattr(splits, name)] for name in ("train", "validation", "test")}
    assert sorted(ids["train"] + ids["validation"] + ids["test"]) == list(range(1000))  # each block exactly once
    for name, found in ids.items():
        assert found == sorted(found), name  # source order kept
    assert (len(ids["validation"]), len(ids["test"])) == (50, 100)
    assert ids["validation"] == list(range(ids["validation"][0], ids["validation"][0] + 50))  # one whole segment
    assert len(splits.segments["test"]) == 2 and len(splits.segments["train"]) == 17

    assert split_blocks(blocks, validation=0.05, test=0.1, seed=0) == splits
    assert split_blocks(blocks, validation=0.05, test=0.1, seed=1) != splits


def test_split_blocks_small_and_zero_fractions():
    splits = split_blocks(["a", "b", "c", "d", "e"], validation=0.01, test=0.0, seed=3)
    assert len(splits.validation) == 1 and splits.test == [] and len(splits.train) == 4


@pytest.mark.parametrize(
    ("blocks", "kwargs", "expected"),
    [
        (["a"] * 100, {"validation": 1.0}, "validation fraction"),
        (["a"] * 100, {"test": -0.1}, "test fraction"),
        (["a"] * 100, {"validation": 0.5, "test": 0.5}, "must be < 1"),
        (["a", "b"], {}, "too few blocks"),
        (["a"] * 100, {"n_segments": 0}, "n_segments"),
    ],
)
def test_split_blocks_errors(blocks, kwargs, expected):
    with pytest.raises(HubstyleError) as excinfo:
        split_blocks(blocks, **kwargs)
    assert expected in one_line_error(excinfo)
