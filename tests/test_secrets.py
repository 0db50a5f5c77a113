"""Secrets: with HF_TOKEN set, no byte any hubstyle command writes (run folder, cards, Space, GGUF, manifest, logs,
what the Hub stored) holds the token, and the Space shows no environment value."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import pytest
import yaml

from tests.hubserver import ORG, USERNAME

PROBE_VAR = "HUBSTYLE_SECRET_PROBE"


def leaks(roots: list[Path], secrets: list[str]) -> tuple[list[str], int]:
    """Return (files under ``roots`` holding any of ``secrets``, how many files were read)."""
    found, scanned = [], 0
    needles = [s.encode() for s in secrets]
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.is_symlink():
                scanned += 1
                data = path.read_bytes()
                found += [f"{path}: {s[:12]}..." for s, n in zip(secrets, needles) if n in data]
    return found, scanned


@pytest.fixture
def secret_env(hub_env, monkeypatch):
    """A unique HF_TOKEN the loopback Hub accepts as alice's write token, and an unrelated env value to look for."""
    token = f"hf_test_{uuid.uuid4().hex}"
    probe = f"probe-{uuid.uuid4().hex}"
    hub_env.server.tokens[token] = (USERNAME, frozenset({USERNAME, ORG}))
    monkeypatch.setenv("HF_TOKEN", token)
    monkeypatch.setenv(PROBE_VAR, probe)
    return token, probe


@pytest.mark.slow
def test_no_command_writes_the_token(secret_env, hub_env, runner_run, run_cli, tmp_path, caplog):
    token, probe = secret_env
    caplog.set_level(logging.DEBUG)
    cfg = runner_run.copy(tmp_path / "run")
    cfg.push.repo_id = "alice/secret-style"
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    run_dir, outs = tmp_path / "run", []

    commands = [
        ("run", str(config), "--from", "train", "--push"),
        ("card", str(run_dir), "--repo-id", "alice/secret-card"),
        ("space", "build", str(run_dir), "--out", str(tmp_path / "space"), "--repo-id", "alice/secret-style"),
        ("export", "gguf", str(run_dir), "--out", str(tmp_path / "gguf"), "--lora"),
        ("push", str(run_dir), "--repo-id", "alice/secret-again", "--what", "adapter,space"),
    ]
    for args in commands:
        code, out, err = run_cli(*args)
        assert code == 0, f"{args}: {err}"
        outs.append(out + err)

    stored = hub_env.server.files("alice/secret-style")
    assert "adapter_model.safetensors" in stored and hub_env.server.files("alice/secret-again")
    assert list((tmp_path / "gguf").glob("*.gguf")) and (run_dir / "run.json").is_file()
    roots = [tmp_path, hub_env.hf_home, hub_env.server.root]  # the server keeps no Authorization header on disk
    found, scanned = leaks(roots, [token, probe])
    assert not found and scanned > 50
    manifest = (run_dir / "run.json").read_text()
    assert "HF_TOKEN" not in manifest and PROBE_VAR not in manifest
    for text in [*outs, caplog.text]:
        assert token not in text and probe not in text
    assert all(token not in json.dumps(vars(entry)) for entry in hub_env.server.log)


def test_space_shows_no_environment_value(secret_env, runner_run, tmp_path, monkeypatch):
    from hubstyle.release import prepare_release
    from hubstyle.space import build_demo, load_settings

    token, probe = secret_env
    run_dir = tmp_path / "run"
    runner_run.copy(run_dir)
    (space,) = prepare_release(run_dir, "alice/secret-style", ("space",))
    monkeypatch.setenv("HUBSTYLE_BASE", str(runner_run.backbone))  # the base the Space loads, set by env as on a Space
    monkeypatch.setenv("HUBSTYLE_ADAPTERS", f"shakespeare={run_dir / 'adapter'}")
    demo = build_demo(load_settings(space.folder))

    shown = json.dumps(demo.config, default=str)
    assert token not in shown and probe not in shown and PROBE_VAR not in shown
    assert "HF_TOKEN" not in shown
    found, scanned = leaks([space.folder], [token, probe])
    assert not found and scanned >= 4
