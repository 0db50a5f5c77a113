"""The log says which precision training runs in, and why: bf16 autocast only where this machine is fast at it."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("fast, requested, expected", [
    (True, True, "precision: bf16 autocast (bf16 is fast here"),
    (False, True, "precision: fp32 (bf16 would be slower than fp32 here"),
    (True, False, "precision: fp32 (training.bf16 is off)"),
])
def test_precision_note_names_the_choice_and_the_reason(monkeypatch, fast, requested, expected):
    from hubstyle import models

    monkeypatch.setattr(models, "bf16_supported", lambda dev=None: fast)
    note = models.precision_note(requested)
    assert note.startswith(expected) and "\n" not in note
    if requested:
        from hubstyle.machine import machine_summary

        assert machine_summary() in note  # the CPU (and its bf16 flags) or the GPU that decided it
