"""The CLI: bad input ends with one line on stderr and exit code 1, nothing half-written; train runs end to end."""

from __future__ import annotations

import json
import subprocess

import pytest


def config(tmp_path, corpus: str, extra: str = "", base: str = "tiny") -> str:
    path = tmp_path / "run.yaml"
    path.write_text(
        f"base_model: {base}\noutput_dir: {tmp_path / 'out'}\ncorpora:\n  - source: {corpus}\n{extra}", encoding="utf-8"
    )
    return str(path)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: str(p / "missing.txt"), "not found"),
        (lambda p: (p / "empty.txt").write_text("  \n\n") and str(p / "empty.txt"), "empty"),
        (lambda p: (p / "bin.txt").write_bytes(b"\x00\x01\x02binary\x00") and str(p / "bin.txt"), "binary"),
    ],
    ids=["missing-file", "empty-corpus", "binary-file"],
)
def test_bad_corpus_is_one_line_and_writes_nothing(tmp_path, run_cli, make, message):
    code, out, err = run_cli("train", config(tmp_path, make(tmp_path)))
    assert code == 1
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert "Traceback" not in err + out
    assert not (tmp_path / "out").exists()


def test_unknown_speaker_is_one_line(tmp_path, run_cli):
    script = tmp_path / "script.txt"
    script.write_text("ALICE: Hello there.\nBOB: Hi Alice.\nALICE: How are you?\n", encoding="utf-8")
    code, _, err = run_cli("train", config(tmp_path, str(script), "dialogue:\n  speaker: CAROL\n"))
    assert code == 1 and err.count("\n") == 1 and "CAROL" in err and "ALICE" in err
    assert not (tmp_path / "out").exists()


def test_bad_yaml_is_one_line(tmp_path, run_cli):
    path = tmp_path / "bad.yaml"
    path.write_text("training: [unclosed\n", encoding="utf-8")
    code, _, err = run_cli("train", str(path))
    assert code == 1 and err.startswith("error: ") and "bad YAML" in err and err.count("\n") == 1


@pytest.mark.slow
def test_train_command_end_to_end(tiny_base, tmp_path, run_cli):
    extra = (
        "training:\n  max_steps: 6\n  cutoff_len: 64\n  batch_size: 4\n  learning_rate: 0.003\n  lora_rank: 4\n"
        "  eval_every: 3\nevaluation:\n  enabled: false\n"
    )
    code, out, err = run_cli("train", config(tmp_path, "shakespeare", extra, base=str(tiny_base)))
    assert code == 0, err
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["schema"] == "hubstyle.metrics/1" and metrics["training"]["steps"] == 6
    style = metrics["heldout_loss"]["style"]
    assert style["tuned"] < style["base"] and style["bigram"] > 0
    assert metrics["data"]["styles"]["shakespeare"]["train"] > 10 * metrics["data"]["styles"]["shakespeare"]["test"]
    assert (tmp_path / "out" / "adapter" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "out" / "config.yaml").is_file()
    assert "held-out style loss" in out

    code, out, err = run_cli(
        "generate", "--base", str(tiny_base), "--adapter", str(tmp_path / "out" / "adapter"),
        "--max-new-tokens", "5", "To be",
    )
    assert code == 0 and out.startswith("base : ") and "tuned: " in out


def test_console_script_help():
    done = subprocess.run(["hubstyle", "--help"], capture_output=True, text=True, check=True)
    for command in ("quickstart", "pretrain", "train", "generate", "merge", "blend"):
        assert command in done.stdout


def test_missing_base_model_is_one_line_and_writes_nothing(tmp_path, run_cli):
    code, _, err = run_cli("train", config(tmp_path, "shakespeare", base=str(tmp_path / "no-model")))
    assert code == 1 and err.count("\n") == 1 and "does not exist" in err
    assert not (tmp_path / "out").exists()
