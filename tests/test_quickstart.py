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
    assert m["quickstart_seconds"] > 0 and m == json.loads(json.dumps(result.metrics))
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
    assert adapter_config["base_model_name_or_path"] == f"{qs.TINY_PLACEHOLDER_REPO_ID}-base"
