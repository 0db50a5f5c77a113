"""Prompt sets for generation: the neutral modern-English prompts the style rate is measured on."""

from __future__ import annotations

import os
from pathlib import Path

from hubstyle.errors import HubstyleError

PROMPTS_FILE = "prompts.txt"
DEMO_PROMPTS_FILE = "demo_prompts.txt"


def prompts_dir() -> Path:
    """Return the folder holding the packaged prompt files.

    Looked for first inside the package (``hubstyle/data_files/``, where a wheel can ship them) and then at the
    repository's top-level ``data/`` (an editable install or a checkout).
    """
    package_root = Path(__file__).resolve().parents[1]
    for candidate in (package_root / "data_files", package_root.parent / "data"):
        if (candidate / PROMPTS_FILE).is_file():
            return candidate
    raise HubstyleError(
        f"packaged prompt files not found (looked in {package_root / 'data_files'} and "
        f"{package_root.parent / 'data'}); reinstall hubstyle or pass a prompts file path"
    )


def load_prompts(path: str | os.PathLike | None = None) -> list[str]:
    """Return the prompts in ``path`` (default: the packaged ``prompts.txt``), deduplicated in file order.

    One prompt per line; blank lines and lines starting with ``#`` are skipped.
    """
    path = Path(path).expanduser() if path is not None else prompts_dir() / PROMPTS_FILE
    if not path.is_file():
        raise HubstyleError(f"prompts file '{path}' does not exist; give a text file with one prompt per line")
    seen: dict[str, None] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        prompt = line.strip()
        if prompt and not prompt.startswith("#"):
            seen.setdefault(prompt, None)
    if not seen:
        raise HubstyleError(f"prompts file '{path}' has no prompts; put one prompt per line ('#' lines are comments)")
    return list(seen)


def load_demo_prompts(path: str | os.PathLike | None = None) -> list[str]:
    """Return the demo prompts (default: the packaged ``demo_prompts.txt``), read like ``load_prompts``."""
    return load_prompts(path if path is not None else prompts_dir() / DEMO_PROMPTS_FILE)
