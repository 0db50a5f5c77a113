"""The quickstart's own layer: the run it drives, the summary it prints, the repo folders it leaves."""

from __future__ import annotations

import json
import re

import pytest

import hubstyle.quickstart as qs
from tests.tiny import toy_run_config

pytestmark = pytest.mark.slow  # seconds each on 2 cores: in CI's full run, not the default suite


def test_quickstart_prints_rates_perplexities_and_writes_publish_folders(tmp_path, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setattr(qs, "quickstart_config", lambda o, tiny: toy_run_config(o, tmp_path / "prompts.txt"))
    lines: list[str] = []
    result = qs.quickstart(out, tiny=True, log=lambda *parts: lines.append(" ".join(map(str, parts))))
    text = "\n".join(lines)
    m = json.loads((out / "metrics.json").read_text())
    assert m == json.loads(json.dumps(result.metrics))
    manifest = json.loads((out / "run.json").read_text())
    for stage in ("data", "base", "train", "evaluate", "publish"):  # each stage's own time and peak memory
        assert manifest["stages"][stage]["status"] == "ran" and manifest["stages"][stage]["peak_rss_mb"] > 50
    assert manifest["stages"]["train"]["seconds"] > 0
    assert re.search(r"time and peak memory by stage: data \d+ s / [\d.]+ GB; base .*; total \d+ s", text)
    ppl = m["perplexity"]
    assert f"perplexity base {ppl['style']['base']:.1f}, tuned {ppl['style']['tuned']:.1f}" in text
    assert f"perplexity base {ppl['generic']['base']:.1f}, tuned {ppl['generic']['tuned']:.1f} (forgetting)" in text
    for side in ("base", "tuned"):
        r = m["style_rate"][side]
        shown = re.search(rf"style rate \({side}\): ([\d.]+)% of 3 continuations .* \(95% CI ([\d.]+)%-([\d.]+)%\)", text)
        assert shown and float(shown.group(1)) == round(100 * r["rate"], 1)
        assert (float(shown.group(2)), float(shown.group(3))) == (round(100 * r["low"], 1), round(100 * r["high"], 1))
    rows = [json.loads(line) for line in (out / "eval" / "generations.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and sum(r["tuned_label"] == "shakespeare" for r in rows) == m["style_rate"]["tuned"]["successes"]
    folders = sorted(p.name for p in (out / "publish").iterdir())
    assert folders == ["adapter", "base", "classifier", "dataset", "gguf", "merged", "space"]
    adapter_config = json.loads((out / "publish" / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == "your-username/shakespeare-base"


def test_a_second_run_of_the_quickstart_config_skips_every_stage(tmp_path, monkeypatch):
    from hubstyle.config import load_config
    from hubstyle.runner import run_config

    out = tmp_path / "run"
    monkeypatch.setattr(qs, "quickstart_config", lambda o, tiny: toy_run_config(o, tmp_path / "prompts.txt"))
    qs.quickstart(out, tiny=True, log=lambda *_: None)
    again = run_config(load_config(out / "config.yaml"), log=lambda *_: None)
    assert {s.stage: s.action for s in again.steps} == {
        "data": "skip", "base": "skip", "train": "skip", "evaluate": "skip", "publish": "skip", "push": "off"}
    lines: list[str] = []
    qs.quickstart(out, tiny=True, log=lines.append)  # the quickstart itself: cached, and its summary still prints
    assert any("style rate (tuned)" in line for line in lines)
    assert any(line.startswith("time and peak memory by stage: data cached; base cached") for line in lines)
