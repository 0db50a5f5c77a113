"""What the runner's stage keys cover (issue 25): hubstyle's own code, the Hub base's commit, trust_remote_code,
card templates and export settings. Keys are computed from the plan alone: nothing is trained."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from hubstyle.layout import RunLayout
from hubstyle.runner import STAGES, PushSettings, plan, stage_inputs

PUSH = PushSettings(repo_id="your-username/toy", what=("adapter",), private=False, tag=None, enabled=False,
                    reason="no push.repo_id")


@pytest.fixture
def cfg(tmp_path, data_dir):
    from tests.tiny import toy_run_config

    return toy_run_config(tmp_path / "run", tmp_path / "prompts.txt")


def keys(cfg) -> dict[str, str | None]:
    """Return {stage: key} of the plan for ``cfg`` (no earlier run)."""
    _, inputs = stage_inputs(cfg, PUSH)
    return {s.stage: s.key for s in plan(cfg, RunLayout(cfg.output_dir), None, inputs, PUSH)}


def test_a_change_to_hubstyles_code_changes_every_key(cfg, tmp_path, monkeypatch):
    import hubstyle.runner
    from hubstyle.manifest import code_digest

    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "a.py").write_text("A = 1\n")
    (package / "sub" / "b.py").write_text("B = 2\n")
    before = code_digest(package)
    (package / "sub" / "b.py").write_text("B = 3\n")
    assert code_digest(package) != before
    assert len(code_digest()) == 64  # the installed package itself

    first = keys(cfg)
    monkeypatch.setattr(hubstyle.runner, "code_digest", lambda: "0" * 64)
    second = keys(cfg)
    assert [s for s in STAGES if first[s] is not None and first[s] == second[s]] == []


def _cached_hub_base(cache: Path, repo: str, commit: str) -> None:
    """Lay out a Hub cache entry for ``repo`` at ``commit`` (refs/main and a snapshot's config.json)."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    (folder / "snapshots" / commit).mkdir(parents=True)
    (folder / "snapshots" / commit / "config.json").write_text(json.dumps({"model_type": "gpt2"}))


def test_the_hub_bases_commit_is_in_the_base_key(cfg, tmp_path, monkeypatch):
    from huggingface_hub import constants

    from hubstyle.bases import base_revision

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    cfg = dataclasses.replace(cfg, base_model="alice/base")
    _cached_hub_base(tmp_path / "hub", "alice/base", "a" * 40)
    assert base_revision("alice/base") == "a" * 40
    first = keys(cfg)
    _cached_hub_base(tmp_path / "hub", "alice/base", "b" * 40)  # the repo moved on; the cache now holds it
    assert base_revision("alice/base") == "b" * 40
    second = keys(cfg)
    assert first["data"] == second["data"]
    assert all(first[s] != second[s] for s in ("base", "train", "evaluate", "publish"))
    assert base_revision(str(tmp_path)) is None and base_revision("tiny") is None  # their files are hashed


def test_trust_remote_code_is_in_every_loading_stages_key(cfg):
    first = keys(cfg)
    second = keys(dataclasses.replace(cfg, trust_remote_code=True))
    assert first["data"] == second["data"]
    assert all(first[s] != second[s] for s in ("base", "train", "evaluate", "publish"))


def test_card_templates_and_export_settings_are_in_the_publish_key(cfg, tmp_path, monkeypatch):
    import hubstyle.card
    import hubstyle.export

    first = keys(cfg)
    template = tmp_path / "adapter.md"
    template.write_text(hubstyle.card.card_template("adapter").read_text() + "\nA new line.\n")
    real = hubstyle.card.card_template
    monkeypatch.setattr(hubstyle.card, "card_template", lambda kind: template if kind == "adapter" else real(kind))
    second = keys(cfg)
    assert [s for s in STAGES if first[s] != second[s]] == ["publish"]  # push is off: no key
    monkeypatch.setattr(hubstyle.export, "QUANTS", ("f16",))
    third = keys(cfg)
    assert [s for s in STAGES if second[s] != third[s]] == ["publish"]
