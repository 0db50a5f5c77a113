"""Test-wide guards: nothing reaches the internet, models are tiny, data comes from HUBSTYLE_DATA_DIR."""

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HUBSTYLE_QUIET", "1")
_default_data = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if "HUBSTYLE_DATA_DIR" not in os.environ and _default_data.is_dir():
    os.environ["HUBSTYLE_DATA_DIR"] = str(_default_data)

import pytest  # noqa: E402

pytest_plugins = ["tests.hubserver"]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The reference corpora folder (laid out like ../shared/data)."""
    path = Path(os.environ.get("HUBSTYLE_DATA_DIR", ""))
    if not (path / "tinyshakespeare" / "input.txt").is_file():
        pytest.fail("HUBSTYLE_DATA_DIR must point at a folder laid out like ../shared/data")
    return path


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory, data_dir) -> Path:
    """A random-init 2-layer GPT-2 folder with its tokenizer (built once per test session)."""
    from tests.tiny import make_tiny_base

    return make_tiny_base(tmp_path_factory.mktemp("tiny_base"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, data_dir) -> Path:
    """A complete run folder made by the real pipeline at toy scale: tiny base, adapter, classifier, metrics."""
    from hubstyle.config import ClassifierConfig, EvaluationConfig, PretrainConfig, RunConfig, TrainingConfig
    from hubstyle.pipeline import run

    root = tmp_path_factory.mktemp("tiny_run")
    prompts = root / "prompts.txt"
    prompts.write_text("Tell me about the weather\nWhat is for dinner tonight\nThe train was late again\n")
    cfg = RunConfig(
        output_dir=str(root / "run"),
        pretrain=PretrainConfig(vocab_size=512, n_layer=2, n_embd=64, n_head=4, block_size=64, batch_size=8,
                                max_steps=20),
        training=TrainingConfig(max_steps=8, cutoff_len=64, batch_size=4, learning_rate=3e-3, lora_rank=4,
                                eval_every=4),
        classifier=ClassifierConfig(max_per_class=24),
        evaluation=EvaluationConfig(prompts=str(prompts), demo_prompts=str(prompts), max_new_tokens=8),
    )
    run(cfg, log=lambda *_: None)
    return root / "run"


@pytest.fixture
def run_cli(monkeypatch, capsys):
    """Run `hubstyle ARGS...` in-process through `cli.main`; return (exit code, stdout, stderr)."""
    import sys

    from hubstyle import cli

    def invoke(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["hubstyle", *args])
        code = 0
        try:
            cli.main()
        except SystemExit as exit_:
            code = exit_.code or 0
        out, err = capsys.readouterr()
        return code, out, err

    return invoke
