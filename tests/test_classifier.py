"""Style classifier: a small real training run, the saved folder as a standard HF classifier, and bad input."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from hubstyle.errors import HubstyleError
from hubstyle.evaluate.classifier import (
    check_labels,
    default_backbone,
    evaluate_classifier,
    load_classifier,
    train_classifier,
)
from hubstyle.evaluate.passages import disfluent, make_passages

SMALL = {"max_per_class": 60, "max_heldout_per_class": 30, "min_words": 20, "max_words": 40, "max_length": 64}


def shakespeare_speeches(data_dir: Path, start: int, count: int) -> list[str]:
    """Return ``count`` speeches from ``start`` in tinyshakespeare, speaker lines dropped."""
    speeches = re.split(r"\n\s*\n", (data_dir / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8"))
    return ["\n".join(s.strip().splitlines()[1:]) for s in speeches[start : start + count]]


def wikitext_paragraphs(data_dir: Path, name: str, count: int) -> list[str]:
    """Return ``count`` detokenised paragraphs of wikitext-2 ``name`` (no headings, no <unk>)."""
    out = []
    for line in (data_dir / "wikitext-2" / name).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("="):
            continue
        line = re.sub(r" @(.)@ ", r"\1", line.replace(" <unk>", ""))
        line = re.sub(r" ([.,;:!?)'])", r"\1", line).replace("( ", "(")
        out.append(line)
        if len(out) == count:
            break
    return out


@pytest.fixture(scope="module")
def texts(data_dir) -> dict[str, dict[str, list[str]]]:
    """Train and held-out texts: early vs late plays, wikitext valid vs test."""
    return {
        "train": {
            "shakespeare": shakespeare_speeches(data_dir, 0, 400),
            "modern": wikitext_paragraphs(data_dir, "valid.txt", 80),
        },
        "heldout": {
            "shakespeare": shakespeare_speeches(data_dir, 6000, 300),
            "modern": wikitext_paragraphs(data_dir, "test.txt", 60),
        },
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory, texts):
    """A classifier from a small one-epoch run: (output folder, report)."""
    out = tmp_path_factory.mktemp("classifier")
    report = train_classifier(
        texts["train"], texts["heldout"], out_dir=out, epochs=1, batch_size=8, learning_rate=2e-4, **SMALL
    )
    return out, report


def test_default_backbone_is_the_offline_minilm():
    folder = Path(default_backbone())
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "bert" and config["num_hidden_layers"] == 6
    assert (folder / "model.safetensors").is_file()


def test_make_passages_lengths_and_words():
    lines = [f"Line {i} has exactly seven words here." for i in range(200)]
    passages = make_passages(["\n".join(lines[:50]), "\n".join(lines[50:])], min_words=20, max_words=40, seed=3)
    counts = [len(p.split()) for p in passages]
    assert all(20 <= c <= 40 for c in counts[:-1]) and counts[-1] >= 10
    assert " ".join(passages).split() == " ".join(lines).split()[: sum(counts)]
    assert all("\n" in p for p in passages)  # verse keeps its line breaks
    assert make_passages(lines, min_words=20, max_words=40, seed=3) == passages
    long_paragraph = " ".join(["word"] * 500)
    assert all(len(p.split()) <= 40 for p in make_passages([long_paragraph], min_words=20, max_words=40))


def test_disfluent_copies():
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\nYou are all resolved rather to die than to famish?"
    a, b = disfluent(text, random.Random(1)), disfluent(text, random.Random(1))
    assert a == b and a != text  # seeded, and it changes something
    assert disfluent(text, random.Random(1), strength=0.0) == text
    assert set(a) <= set(text) | set("\"()[],.;:'-")  # made of the text's own words plus stray marks
    noisy = [disfluent(text, random.Random(seed), strength=3.0) for seed in range(20)]
    assert all(0 < len(t) for t in noisy) and len(set(noisy)) == 20


def test_augment_must_be_a_share(tmp_path, texts):
    with pytest.raises(HubstyleError, match="augment must be between 0 and 1"):
        train_classifier(texts["train"], texts["heldout"], out_dir=tmp_path, augment=1.5)
    assert not any(tmp_path.iterdir())


def test_report_and_folder(trained):
    out, report = trained
    assert report.labels == ["modern", "shakespeare"]
    assert report.n_train == 240 and report.n_heldout == 60  # 120 passages + their 120 disfluent copies
    assert set(report.disfluent) == {"accuracy", "macro_f1"} and report.settings["augment"] == 1.0
    matrix = report.confusion_matrix
    assert sum(map(sum, matrix)) == report.n_heldout and [sum(row) for row in matrix] == [30, 30]
    assert report.accuracy == pytest.approx((matrix[0][0] + matrix[1][1]) / 60)
    assert report.macro_f1 == pytest.approx(sum(c["f1"] for c in report.per_class.values()) / 2)
    assert [c["support"] for c in report.per_class.values()] == [30, 30]
    recall = report.per_class["shakespeare"]["recall"]
    assert recall == pytest.approx(matrix[1][1] / 30)
    assert report.macro_f1 >= 0.7  # even 15 steps separate Jacobean verse from encyclopaedia prose
    assert report.train_seconds > 0 and report.backbone == default_backbone()
    assert json.loads((out / "metrics.json").read_text()) == report.as_dict()
    assert (out / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "modern", "1": "shakespeare"}
    assert config["label2id"] == {"modern": 0, "shakespeare": 1}


def test_loaded_classifier_reproduces_training_predictions(trained, texts):
    out, report = trained
    classifier = load_classifier(out)
    assert classifier.labels == ["modern", "shakespeare"]
    again = evaluate_classifier(
        classifier, texts["heldout"], max_per_class=30, min_words=SMALL["min_words"], max_words=SMALL["max_words"]
    )
    assert again.confusion_matrix == report.confusion_matrix
    assert again.backbone == report.backbone and again.n_heldout == report.n_heldout
    sample = make_passages(texts["heldout"]["shakespeare"][:40], min_words=20, max_words=40)[:6]
    assert load_classifier(out).predict(sample, batch_size=4) == classifier.predict(sample, batch_size=32)
    probs = classifier.predict_proba(sample)
    assert all(set(p) == {"modern", "shakespeare"} and sum(p.values()) == pytest.approx(1.0) for p in probs)
    assert [max(p, key=p.get) for p in probs] == classifier.predict(sample)


def test_plain_transformers_agree(trained, texts):
    from transformers import AutoModelForSequenceClassification, pipeline

    out, _ = trained
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.id2label == {0: "modern", 1: "shakespeare"}
    sample = make_passages(texts["heldout"]["shakespeare"][:30], min_words=20, max_words=40)[:4]
    sample += make_passages(texts["heldout"]["modern"][:10], min_words=20, max_words=40)[:4]
    classifier = load_classifier(out)
    ours = classifier.predict_proba(sample)
    theirs = pipeline("text-classification", model=str(out), device="cpu")(sample, top_k=None, truncation=True)
    for mine, row in zip(ours, theirs):
        plain = {item["label"]: item["score"] for item in row}
        assert plain == pytest.approx(mine, abs=0.05)  # ours runs under bf16 autocast, the pipeline in fp32
        if abs(mine["shakespeare"] - 0.5) > 0.1:
            assert max(plain, key=plain.get) == max(mine, key=mine.get)


def test_check_labels(trained):
    classifier = load_classifier(trained[0])
    check_labels(classifier, ["shakespeare"])
    with pytest.raises(HubstyleError, match=r"not \['milton'\]") as err:
        check_labels(classifier, ["shakespeare", "milton"])
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("train", "heldout", "match"),
    [
        ({"shakespeare": ["To be, or not to be"]}, {"shakespeare": ["x"]}, "at least 2 classes"),
        (
            {"shakespeare": ["To be"], "modern": []},
            {"shakespeare": ["a"], "modern": ["b"]},
            r"\['modern'\] has no texts",
        ),
        ({"shakespeare": ["To be"], "modern": ["  "]}, {"shakespeare": ["a"], "modern": ["b"]}, "has no texts"),
        ({"shakespeare": ["To be"], "modern": "a string"}, {"shakespeare": ["a"], "modern": ["b"]}, "one string"),
        ({"shakespeare": ["To be"], "modern": ["Hi"]}, {"shakespeare": ["a"], "milton": ["b"]}, "differ"),
    ],
)
def test_bad_input(tmp_path, train, heldout, match):
    with pytest.raises(HubstyleError, match=match) as err:
        train_classifier(train, heldout, out_dir=tmp_path)
    assert "\n" not in str(err.value)
    assert not any(tmp_path.iterdir())


def test_missing_or_untrained_classifier_folder(tmp_path):
    with pytest.raises(HubstyleError, match="does not exist"):
        load_classifier(tmp_path / "nothing-here")
    with pytest.raises(HubstyleError, match="not a trained sequence classifier"):
        load_classifier(default_backbone())
