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
