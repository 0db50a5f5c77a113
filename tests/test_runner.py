"""`hubstyle run CONFIG`: stage keys, cache hits and the run manifest, on a toy run made by the stages themselves."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from hubstyle.config import load_config
from hubstyle.errors import HubstyleError
from hubstyle.layout import RunLayout
from hubstyle.manifest import package_versions
from hubstyle.runner import STAGES, run_config

QUIET = dict(log=lambda *_: None)
REPO = Path(__file__).resolve().parents[1]


def manifest(folder: Path) -> dict:
    return json.loads(RunLayout(folder).manifest.read_text(encoding="utf-8"))


def statuses(folder: Path) -> dict[str, str]:
    return {name: record["status"] for name, record in manifest(folder)["stages"].items()}


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Return path -> (size, mtime_ns) of every file under ``folder``."""
    return {p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_first_run_runs_every_stage_and_records_how(runner_run, data_dir):
    m = manifest(runner_run.folder)
    assert list(m["stages"]) == list(STAGES)
    assert statuses(runner_run.folder) == {**{s: "ran" for s in STAGES[:-1]}, "push": "off"}
    for name in STAGES[:-1]:
        record = m["stages"][name]
        assert re.fullmatch(r"[0-9a-f]{64}", record["key"]) and record["seconds"] == record["built_seconds"] > 0
    assert len({m["stages"][s]["key"] for s in STAGES[:-1]}) == 5
    shakespeare = m["data"]["files"]["shakespeare"]
    assert shakespeare == [{"file": "tinyshakespeare/input.txt",
                            "sha256": "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"}]
    tokens = m["data"]["tokens"]["shakespeare"]
    facts = json.loads(RunLayout(runner_run.folder).facts.read_text())
    assert tokens == facts["data"]["styles"]["shakespeare"] and tokens["train"] > tokens["test"] > 0
    assert m["data"]["samples"]["shakespeare"] > 1000
    assert m["seeds"] == {"split": 0, "training": 0, "evaluation": 0, "pretrain": 0}
    assert m["packages"]["torch"] == package_versions()["torch"] and m["packages"]["hubstyle"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
    assert m["git"] is None if head.returncode else m["git"]["commit"] == head.stdout.strip()
    assert m["config"]["training"]["max_steps"] == 8


def test_cards_cite_the_manifest_and_publish_it_without_local_paths(runner_run):
    publish = RunLayout(runner_run.folder).publish
    for kind in ("adapter", "merged"):
        assert "[`run.json`](run.json)" in (publish / kind / "README.md").read_text()
        text = (publish / kind / "run.json").read_text()
        public = json.loads(text)
        assert str(runner_run.folder.parent) not in text and "output_dir" not in public["config"]
        assert set(public["stages"]) == {"data", "base", "train", "evaluate"}
        made = manifest(runner_run.folder)
        assert public["stages"]["train"]["key"] == made["stages"]["train"]["key"]
        assert public["stages"]["train"]["git_commit"] == (made["git"] or {}).get("commit")
        assert "prompts.txt" in public["data"]["files"]


def test_second_run_skips_every_stage_in_seconds(runner_run, tmp_path):
    cfg = runner_run.copy(tmp_path / "run")
    before = snapshot(tmp_path / "run" / "publish")

    result = run_config(cfg, **QUIET)

    m = manifest(tmp_path / "run")
    assert statuses(tmp_path / "run") == {**{s: "cached" for s in STAGES[:-1]}, "push": "off"}
    assert all(m["stages"][s]["seconds"] == 0 and m["stages"][s]["built_seconds"] > 0 for s in STAGES[:-1])
    assert m["seconds"] < 10, m["seconds"]  # hashing the corpora and reading run.json; no model is loaded
    assert [s.action for s in result.steps] == ["skip"] * 5 + ["off"]
    assert snapshot(tmp_path / "run" / "publish") == before


@pytest.mark.slow
def test_one_training_key_reruns_training_and_what_follows_only(runner_run, tmp_path):
    cfg = runner_run.copy(tmp_path / "run")
    layout = RunLayout(tmp_path / "run")
    base, data, weights = snapshot(layout.base), snapshot(layout.data), (layout.adapter / "adapter_model.safetensors")
    old_weights = weights.read_bytes()
    cfg.training.learning_rate = 1e-3

    result = run_config(cfg, **QUIET)

    assert statuses(layout.root) == {"data": "cached", "base": "cached", "train": "ran", "evaluate": "ran",
                                     "publish": "ran", "push": "off"}
    assert manifest(layout.root)["stages"]["train"]["reason"] == "changed: training.learning_rate"
    assert snapshot(layout.base) == base and snapshot(layout.data) == data
    assert weights.read_bytes() != old_weights
    assert result.metrics is not None and json.loads(layout.metrics.read_text())["training"]["hyperparameters"][
        "learning_rate"] == 1e-3
    assert run_config(cfg, **QUIET).steps[2].action == "skip"  # and the new state is cached in turn


@pytest.mark.slow
def test_from_evaluate_forces_evaluate_and_after(runner_run, tmp_path):
    cfg = runner_run.copy(tmp_path / "run")
    layout = RunLayout(tmp_path / "run")
    adapter = snapshot(layout.adapter)

    run_config(cfg, from_stage="evaluate", **QUIET)

    assert statuses(layout.root) == {"data": "cached", "base": "cached", "train": "cached", "evaluate": "ran",
                                     "publish": "ran", "push": "off"}
    assert manifest(layout.root)["stages"]["evaluate"]["reason"] == "forced (--from evaluate)"
    assert snapshot(layout.adapter) == adapter


def test_missing_outputs_rerun_their_stage(runner_run, tmp_path):
    cfg = runner_run.copy(tmp_path / "run")
    layout = RunLayout(tmp_path / "run")
    (layout.publish / "space" / "README.md").unlink()

    run_config(cfg, **QUIET)

    assert statuses(layout.root)["publish"] == "ran" and statuses(layout.root)["evaluate"] == "cached"
    assert manifest(layout.root)["stages"]["publish"]["reason"] == "outputs missing (publish/space/README.md)"
    assert (layout.publish / "space" / "README.md").is_file()


def test_dry_run_prints_the_plan_and_writes_nothing(runner_run, tmp_path, run_cli):
    cfg = runner_run.copy(tmp_path / "run")
    cfg.training.lora_rank = 8
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    before = snapshot(tmp_path)

    code, out, err = run_cli("run", str(config), "--dry-run")

    assert code == 0, err
    plan = dict(re.findall(r"^  (\w+) +(run|skip|off) ", out, flags=re.M))
    assert plan == {"data": "skip", "base": "skip", "train": "run", "evaluate": "run", "publish": "run", "push": "off"}
    assert "changed: training.lora_rank" in out
    assert snapshot(tmp_path) == before

    fresh = runner_run.config(tmp_path / "never")
    steps = run_config(fresh, dry_run=True, **QUIET).steps
    assert [s.action for s in steps] == ["run"] * 5 + ["off"] and not (tmp_path / "never").exists()


def test_bad_stage_and_impossible_push_fail_before_any_work(runner_run, tmp_path, run_cli, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))  # no stored token either
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(runner_run.config(tmp_path / "run").to_dict()))

    code, _, err = run_cli("run", str(config), "--from", "trian")
    assert code == 1 and err.strip() == ("error: --from 'trian' is not a stage; stages are data, base, train, "
                                         "evaluate, publish, push")
    with pytest.raises(HubstyleError, match="--push was given but the push cannot run: no Hub token"):
        run_config(runner_run.config(tmp_path / "run"), repo_id="alice/bard", push=True, **QUIET)
    assert not (tmp_path / "run").exists()


def test_shakespeare_config_is_the_quickstart():
    from hubstyle.quickstart import quickstart_config

    cfg = load_config(REPO / "data" / "configs" / "shakespeare.yaml")
    assert cfg == quickstart_config(cfg.output_dir)
