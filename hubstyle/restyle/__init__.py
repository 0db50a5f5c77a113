"""Restylers: adapters that rewrite plain text in a style, trained on parallel pairs (``hubstyle restyler build``)."""

from __future__ import annotations

from typing import Any

__all__ = ["load_restyler", "Restyler"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from hubstyle.restyle import model

        return getattr(model, name)
    raise AttributeError(f"module 'hubstyle.restyle' has no attribute {name!r}")
