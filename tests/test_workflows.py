"""The GitHub workflows: actionlint and zizmor report nothing, no expression is expanded inside a shell script, CI
runs .ci/run, and the publish workflow's own steps, run here in order, publish and tag a run on the loopback Hub."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.hubserver import WRITE_TOKEN
from tests.workflow_steps import load_job, local_env, run_job

pytestmark = pytest.mark.slow  # seconds each on 2 cores: in CI's full run, not the default suite

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / ".github" / "workflows"
CI, PUBLISH = WORKFLOWS / "ci.yml", WORKFLOWS / "publish.yml"


def tool(name: str) -> str:
    """Return the path of a linter from the test extra (installed beside this interpreter)."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"'{name}' is missing; install the test extra: pip install -e '.[test]'")
    return found


def test_actionlint_reports_nothing_on_either_workflow():
    # with shellcheck, so every `run:` script is checked as the shell script it is
    proc = subprocess.run([tool("actionlint"), "-no-color", "-shellcheck", tool("shellcheck"), str(CI), str(PUBLISH)],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_zizmor_reports_nothing_on_either_workflow():
    proc = subprocess.run([tool("zizmor"), "--offline", "--no-progress", "--format", "plain", str(CI), str(PUBLISH)],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0 and "No findings to report" in proc.stdout, proc.stdout + proc.stderr
    # the one finding silenced by a comment is the documented cache of the publish workflow, nothing else
    ignores = re.findall(r"zizmor: ignore\[([^\]]+)\]", CI.read_text() + PUBLISH.read_text())
    assert ignores == ["cache-poisoning"]


def test_no_expression_inside_a_shell_script_and_actions_pinned_by_commit():
    for workflow in (CI, PUBLISH):
        for job in yaml.safe_load(workflow.read_text())["jobs"].values():
            for step in job["steps"]:
                assert "${{" not in step.get("run", ""), (workflow.name, step.get("name"))
                if "uses" in step:  # actions pinned by commit
                    assert re.search(r"@[0-9a-f]{40}$", step["uses"]), (workflow.name, step["uses"])


def test_ci_workflow_runs_the_ci_script():
    _, steps = load_job(CI, "test")
    assert steps[-1].run.strip() == "bash .ci/run"


def test_publish_workflow_steps_publish_and_tag_the_run_on_the_loopback_hub(runner_run, hub_server, tmp_path):
    cfg = runner_run.copy(tmp_path / "run")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    contexts = {  # what GitHub would put in the expressions of the workflow's env: values
        "inputs.config": str(config), "inputs.repo_id": "alice/bard", "github.event.release.tag_name": "v0.1.0",
        "secrets.HF_TOKEN": WRITE_TOKEN, "github.workspace": str(REPO),
    }
    env = local_env(HF_ENDPOINT=hub_server.url, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="0",
                    HF_HUB_DISABLE_XET="1", HUBSTYLE_DEBUG="0")
    env.pop("HF_TOKEN", None)  # the token comes from the workflow's secret, nowhere else

    results = run_job(PUBLISH, "publish", contexts, cwd=REPO, base_env=env)

    log = "\n".join(f"## {r.name} (exit {r.returncode})\n{r.output}" for r in results)
    assert [r.name for r in results] == ["Preview (which stages run, and why)",
                                         "Run and push (each repo tagged with the release)"], log
    assert all(r.returncode == 0 for r in results), log
    assert WRITE_TOKEN not in log and "hf_loopback" not in log
    preview, push = results
    assert re.search(r"^  publish +run +changed: push\.repo_id", preview.output, flags=re.M), preview.output
    assert re.search(r"^  push +run +to alice/bard, tagged v0\.1\.0", preview.output, flags=re.M), preview.output
    repos = [("alice/bard", "model"), ("alice/bard-merged", "model"), ("alice/bard-classifier", "model"),
             ("alice/bard-base", "model"), ("alice/bard-GGUF", "model"), ("alice/bard-space", "space"),
             ("alice/bard-data", "dataset")]
    for repo_id, repo_type in repos:
        repo = hub_server.repo(repo_id, repo_type)
        assert repo is not None, (repo_id, log)
        assert repo.tags.get("v0.1.0") == repo.branches["main"], repo_id
        assert "README.md" in hub_server.files(repo_id, repo_type)
    assert b"run.json" in hub_server.files("alice/bard")["README.md"]
    assert "run.json" in hub_server.files("alice/bard")
