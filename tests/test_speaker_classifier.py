"""A speaker run's classifier knows the character, not just the play: speaker vs the other speakers of the text."""

import json

import pytest

from hubstyle.errors import HubstyleError
from hubstyle.evaluate.classifier import one_vs_group


def test_one_vs_group_scores_the_speaker_against_the_rest_of_the_cast_only():
    labels = ["hamlet", "other", "other speakers"]
    confusion = [[8, 1, 1],   # hamlet: 8 right, 2 wrong (one called modern, one called another speaker)
                 [0, 50, 0],  # modern passages never count here
                 [3, 0, 7]]   # other speakers: 3 called hamlet
    v = one_vs_group(labels, confusion, "hamlet", "other speakers")
    # hamlet vs not: TP 8, FN 2, FP 3, TN 7
    assert v["n"] == 20 and v["accuracy"] == pytest.approx(15 / 20)
    assert v["f1_target"] == pytest.approx(16 / 21) and v["f1_against"] == pytest.approx(14 / 19)
    assert v["macro_f1"] == pytest.approx((16 / 21 + 14 / 19) / 2)
    with pytest.raises(HubstyleError, match="no label 'ophelia'"):
        one_vs_group(labels, confusion, "ophelia", "other speakers")
    with pytest.raises(HubstyleError, match="no held-out passages of 'other speakers'"):
        one_vs_group(labels, [[8, 1, 1], [0, 50, 0], [0, 0, 0]], "hamlet", "other speakers")


def test_a_speaker_run_reports_speaker_vs_others_in_metrics_and_cards(tmp_path, tiny_base):
    from hubstyle.runner import run
    from hubstyle.release import prepare_release
    from tests.tiny import toy_run_config

    cfg = toy_run_config(tmp_path / "run", tmp_path / "prompts.txt")
    cfg.base_model = str(tiny_base)
    cfg.classifier.backbone = str(tiny_base)  # seconds instead of MiniLM's half a minute
    cfg.dialogue.speaker = "MENENIUS"
    cfg.dialogue.render = "text"
    cfg.dialogue.rounds = 1
    result = run(cfg, log=lambda *_: None)

    clf = result.metrics["classifier"]
    assert "other speakers" in clf["labels"] and cfg.style in clf["labels"]
    versus = clf["speaker_vs_others"]
    assert versus["target"] == cfg.style and versus["against"] == "other speakers"
    assert versus["n"] > 0 and 0.0 <= versus["macro_f1"] <= 1.0
    # the classifier's own record says it too, so a classifier reused by path keeps the figure
    saved = json.loads((result.layout.classifier / "metrics.json").read_text())
    assert saved["speaker_vs_others"] == versus
    assert result.metrics["style_rate"]["target"] == cfg.style

    folders = {f.kind: f.folder for f in prepare_release(result.layout.root, "someone/menenius",
                                                         what=("adapter", "classifier"))}
    for kind in ("adapter", "classifier"):
        card = (folders[kind] / "README.md").read_text()
        assert f"gets macro-F1 **{versus['macro_f1']:.3f}**" in card
        assert "other speakers of the same text" in card
