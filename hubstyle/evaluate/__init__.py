"""Measuring style: the style classifier, prompt sets and confidence intervals (heavy imports load lazily)."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ClassifierReport": "classifier",
    "StyleClassifier": "classifier",
    "check_labels": "classifier",
    "default_backbone": "classifier",
    "evaluate_classifier": "classifier",
    "load_classifier": "classifier",
    "make_passages": "passages",
    "disfluent": "passages",
    "plot_confusion": "classifier",
    "train_classifier": "classifier",
    "load_demo_prompts": "prompts",
    "load_prompts": "prompts",
    "AdapterPair": "pair",
    "ModelPair": "pair",
    "TwoModels": "pair",
    "load_pair": "pair",
    "RateCI": "stats",
    "wilson_interval": "stats",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hubstyle.evaluate' has no attribute '{name}'")
    value = getattr(importlib.import_module(f"hubstyle.evaluate.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
