"""Run a GitHub workflow job's own `run:` steps locally, in order, the way the runner would (bash -e, the job's and
the step's `env:`), with the `${{ }}` expressions of those `env:` values filled from given contexts.

Only the expression forms the workflows use are understood: context paths and quoted literals joined by `||`. Steps
that only install packages (every line a `pip install`) can be skipped, since the test's environment has them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import yaml

_EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
_TERM = re.compile(r"^(?:'(?P<literal>[^']*)'|(?P<path>[A-Za-z_][A-Za-z0-9_.-]*))$")


@dataclass
class Step:
    """One `run:` step of a job: its name, script and its own env (expressions not yet filled)."""

    name: str
    run: str
    env: dict[str, str]

    def installs_only(self) -> bool:
        """Return whether every line of the script installs packages with pip."""
        lines = [line.strip() for line in self.run.splitlines() if line.strip()]
        return bool(lines) and all(re.match(r"^(python -m )?pip install\b", line) for line in lines)


@dataclass
class StepResult:
    """What one step did: its exit code and everything it printed."""

    name: str
    returncode: int
    output: str


def load_job(workflow: Path, job: str) -> tuple[dict[str, str], list[Step]]:
    """Return (the job's env, its run steps in order) from ``workflow``; `uses:` steps are left out."""
    data = yaml.safe_load(workflow.read_text(encoding="utf-8"))
    spec = data["jobs"][job]
    env = {**(data.get("env") or {}), **(spec.get("env") or {})}
    steps = [
        Step(s.get("name") or s["run"].splitlines()[0], s["run"], dict(s.get("env") or {}))
        for s in spec["steps"] if "run" in s
    ]
    return {k: str(v) for k, v in env.items()}, steps


def fill(value: str, contexts: Mapping[str, str]) -> str:
    """Return ``value`` with each `${{ a || b || 'literal' }}` replaced by its first non-empty term."""
    def evaluate(match: re.Match) -> str:
        for term in match.group(1).split("||"):
            parsed = _TERM.match(term.strip())
            if parsed is None:
                raise ValueError(f"expression {match.group(0)!r} is beyond what this runner understands")
            literal = parsed.group("literal")
            text = literal if literal is not None else contexts.get(parsed.group("path"), "")
            if text:
                return text
        return ""

    return _EXPRESSION.sub(evaluate, value)


def run_job(
    workflow: Path, job: str, contexts: Mapping[str, str], *, cwd: Path, base_env: Mapping[str, str],
    skip_installs: bool = True, timeout: float = 600,
) -> list[StepResult]:
    """Return the results of running ``job``'s run steps in order with bash -e; stops after the first failure."""
    job_env, steps = load_job(workflow, job)
    results = []
    for step in steps:
        if skip_installs and step.installs_only():
            continue
        env = {**base_env, **{k: fill(v, contexts) for k, v in {**job_env, **step.env}.items()}}
        proc = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step.run], cwd=cwd, env=env,
            capture_output=True, text=True, timeout=timeout,
        )
        results.append(StepResult(step.name, proc.returncode, proc.stdout + proc.stderr))
        if proc.returncode != 0:
            break
    return results


def local_env(**extra: str) -> dict[str, str]:
    """Return this process's environment with `extra` on top (PATH keeps this interpreter's scripts first)."""
    scripts = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": scripts + os.pathsep + os.environ.get("PATH", ""), **extra}
