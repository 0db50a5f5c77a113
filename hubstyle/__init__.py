"""hubstyle: give language models a writing style, measure it, and publish it the Hugging Face way.

Heavy imports (torch, transformers) happen only when a public function is first used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_style": "hubstyle.loading",
    "load_shakespearean": "hubstyle.loading",
    "load_restyler": "hubstyle.restyle.model",
    "run": "hubstyle.pipeline",
    "quickstart": "hubstyle.quickstart",
    "load_config": "hubstyle.config",
    "RunConfig": "hubstyle.config",
    "HubstyleError": "hubstyle.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hubstyle' has no attribute {name!r}")
