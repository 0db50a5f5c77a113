"""Per-stage peak memory, and scoring that never holds every position's logits at once."""

import numpy as np
import pytest
import torch

from hubstyle import loop
from hubstyle.memory import StageMeter, peak_rss_mb, reset_peak, rss_mb
from hubstyle.packing import Blocks


def test_stage_meter_reports_each_stages_own_peak():
    lines = []
    meter = StageMeter(lines.append)
    with meter.stage("big"):
        block = np.ones(300 * 1024 * 1024 // 8)  # 300 MB, touched
        block[::512] = 2.0
    del block
    with meter.stage("small"):
        np.ones(1000).sum()
    stages = meter.as_dict()["stages"]
    assert stages["big"]["peak_rss_mb"] >= rss_mb() + 250
    if meter.per_stage:  # Linux: the second stage's peak does not include the first one's 300 MB
        assert stages["small"]["peak_rss_mb"] < stages["big"]["peak_rss_mb"] - 250
    assert meter.as_dict()["peak_rss_mb"] == stages["big"]["peak_rss_mb"]
    assert lines[0].startswith("[big] ") and "GB" in lines[0]
    assert "big" in meter.summary() and "total" in meter.summary()


def test_repeated_stage_adds_time_and_keeps_the_larger_peak():
    meter = StageMeter()
    with meter.stage("x"):
        pass
    first = dict(meter.stages["x"])
    with meter.stage("x"):
        pass
    assert meter.stages["x"]["peak_rss_mb"] >= first["peak_rss_mb"] - 1
    assert peak_rss_mb() > 0 and isinstance(reset_peak(), bool)


def test_scoring_in_slices_equals_the_whole_head(tiny_chat_base, monkeypatch):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_chat_base).eval()
    torch.manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (3, 40))
    labels = ids.clone()
    labels[:, :5] = -100
    batch = Blocks(ids, labels)
    with torch.enable_grad():
        whole, n_whole = loop.token_loss_sum(model, batch)
    monkeypatch.setattr(loop, "SCORE_CHUNK", 7)  # many slices, the last one short
    with torch.no_grad():
        sliced, n_sliced = loop.token_loss_sum(model, batch)
    assert n_whole == n_sliced == 3 * 35  # labels[t] targets the logits at t - 1: 39 targets, 4 ignored
    assert sliced.item() == pytest.approx(whole.item(), rel=1e-5)
