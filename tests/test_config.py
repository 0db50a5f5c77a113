"""Run config: defaults, YAML loading, and one-line errors that name the key and suggest the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from hubstyle.config import RunConfig, TrainingConfig, load_config
from hubstyle.errors import HubstyleError


def write(tmp_path, text: str):
    path = tmp_path / "run.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_full_config_loads_with_types_and_defaults(tmp_path):
    cfg = load_config(write(tmp_path, """
base_model: gpt2
output_dir: runs/x
corpora:
  - source: shakespeare
  - source: data/lines.txt
    name: modern
dialogue: {speaker: ROMEO, rounds: 3}
training:
  method: qlora
  lora_rank: 8
  learning_rate: 2e-4
  epochs: 2
  target_modules: c_attn
"""))
    assert cfg.base_model == "gpt2" and cfg.style == "shakespeare"
    assert [c.label for c in cfg.corpora] == ["shakespeare", "modern"]
    assert cfg.dialogue.speaker == "ROMEO" and cfg.dialogue.rounds == 3 and cfg.dialogue.keep_narration is False
    t = cfg.training
    assert (t.method, t.quantization, t.lora_rank, t.learning_rate, t.epochs) == ("qlora", "4bit", 8, 2e-4, 2.0)
    assert t.target_modules == ["c_attn"] and t.batch_size == TrainingConfig().batch_size
    assert cfg.split.validation == 0.05 and cfg.mix.balance is True


def test_empty_file_gives_defaults(tmp_path):
    assert load_config(write(tmp_path, "")) == RunConfig()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("training:\n  lora_rnak: 8\n", "unknown key 'training.lora_rnak' (did you mean 'training.lora_rank'?)"),
        ("bse_model: gpt2\n", "unknown key 'bse_model' (did you mean 'base_model'?)"),
        ("zzz: 1\n", "unknown key 'zzz'; valid keys: base_model"),
        ("training:\n  lora_rank: eight\n", "'training.lora_rank' must be int, got 'eight'"),
        ("training:\n  lora_rank: 0\n", "'training.lora_rank' must be >= 1, got 0"),
        ("training:\n  method: lorra\n", "did you mean 'lora'?"),
        ("training:\n  method: full\n  quantization: 4bit\n", "needs method 'lora' or 'qlora'"),
        ("split:\n  validation: 0.9\n", "'split.validation' must be between 0.0 and 0.5"),
        ("dialogue:\n  rounds: -1\n", "'dialogue.rounds' must be >= 0"),
        ("corpora: []\n", "corpora is empty"),
        ("corpora:\n  - source: a.txt\n  - source: b/a.txt\n", "share the style name 'a'"),
        ("corpora:\n  - sorce: a.txt\n", "did you mean 'corpora[0].source'?"),
        ("training: [1, 2]\n", "'training' must be a mapping"),
        ("- just\n- a list\n", "must hold a mapping of keys"),
        ("training:\n  lora_rank: [\n", "bad YAML"),
        ("pretrain:\n  n_embd: 100\n  n_head: 3\n", "must be a multiple of"),
    ],
)
def test_bad_configs_give_one_line_errors(tmp_path, text, message):
    with pytest.raises(HubstyleError) as err:
        load_config(write(tmp_path, text))
    assert message in str(err.value)
    assert "\n" not in str(err.value)
    assert str(tmp_path / "run.yaml") in str(err.value)


def test_missing_and_binary_config_files(tmp_path):
    with pytest.raises(HubstyleError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(HubstyleError, match="not UTF-8"):
        load_config(binary)


def test_every_example_config_loads():
    """The configs README and the issues point users at (character, qlora-7b, seq2seq, ...) are valid as shipped."""
    from hubstyle.config import load_config
    from hubstyle.restyle.build import load_restyler_config

    folder = Path(__file__).resolve().parents[1] / "data" / "configs"
    configs = sorted(folder.glob("*.yaml"))
    assert {"character.yaml", "qlora-7b.yaml", "seq2seq.yaml", "restyler.yaml"} <= {p.name for p in configs}
    loaded = {p.stem: load_config(p) for p in configs if p.stem != "restyler"}  # restyler.yaml is a restyler build
    restyler = load_restyler_config(folder / "restyler.yaml")
    assert restyler.pairs.source == "shakespeare-modern" and restyler.pairs.held_out_play == "tempest"
    assert loaded["character"].dialogue.speaker and loaded["character"].dialogue.mode == "chat"
    q = loaded["qlora-7b"].training
    assert (q.method, q.quantization, q.gradient_checkpointing) == ("qlora", "4bit", True)
    assert "/" in loaded["qlora-7b"].base_model  # a real Hub id, never a local path
    assert "t5" in loaded["seq2seq"].base_model and loaded["seq2seq"].dialogue.mode == "chat"
