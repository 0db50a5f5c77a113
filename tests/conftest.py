"""Test-wide guards: nothing reaches the internet, models are tiny, data comes from HUBSTYLE_DATA_DIR."""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HUBSTYLE_QUIET", "1")
if "TRACKIO_DIR" not in os.environ:  # trackio's local store (read when trackio is imported): never the user's own
    os.environ["TRACKIO_DIR"] = tempfile.mkdtemp(prefix="hubstyle-tests-trackio-")
    atexit.register(shutil.rmtree, os.environ["TRACKIO_DIR"], ignore_errors=True)
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
    from hubstyle.runner import run
    from tests.tiny import toy_run_config

    root = tmp_path_factory.mktemp("tiny_run")
    cfg = toy_run_config(root / "run", root / "prompts.txt")
    run(cfg, log=lambda *_: None)
    return root / "run"


@pytest.fixture(scope="session")
def runner_run(tmp_path_factory, tiny_base):
    """A ToyRun (tests.tiny) made by `hubstyle run`'s stages: every stage ran once; copy it before changing it."""
    from hubstyle.runner import run_config
    from tests.tiny import ToyRun

    root = tmp_path_factory.mktemp("runner_run")
    toy = ToyRun(root / "run", root / "prompts.txt", tiny_base)
    run_config(toy.config(), log=lambda *_: None)
    return toy


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


@pytest.fixture(scope="session")
def tiny_chat_base(tmp_path_factory, data_dir) -> Path:
    """A random-init 2-layer Llama with a ChatML template (SmolLM2's shape in miniature), built once per session."""
    from tests.tiny import make_tiny_chat_base

    return make_tiny_chat_base(tmp_path_factory.mktemp("tiny_chat_base"))


def _tiny_restyler_config(out, base):
    from hubstyle.config import ClassifierConfig, TrainingConfig
    from hubstyle.restyle.build import ParallelConfig, RestylerConfig
    from hubstyle.restyle.distill import DistillConfig

    return RestylerConfig(
        base_model=str(base), output_dir=str(out),
        pairs=ParallelConfig(max_pairs=400, validation_pairs=8),  # enough for style words (15+ uses)
        training=TrainingConfig(max_steps=3, cutoff_len=128, batch_size=2, learning_rate=3e-3, lora_rank=4,
                                eval_every=3, checkpoint_every=2),
        classifier=ClassifierConfig(max_per_class=16), eval_lines=6, max_new_tokens=8, style_bias=1.5,
        distill=DistillConfig(enabled=False),
    )


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory, data_dir, tiny_chat_base):
    """(config, evaluation) of a restyler built end to end on the tiny chat base (3 steps, 400 pairs)."""
    from hubstyle.restyle.run import build_restyler

    cfg = _tiny_restyler_config(tmp_path_factory.mktemp("restyler") / "r", tiny_chat_base)
    return cfg, build_restyler(cfg, log=lambda _: None)


@pytest.fixture(scope="session")
def tiny_restyler(tiny_build):
    """The tiny restyler's published folder."""
    return tiny_build[0].out / "publish" / "restyler"
