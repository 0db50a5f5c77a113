"""Pushing through a flaky Hub: seeded 500s, dropped connections and slow answers on ~30% of requests.

A push either completes (retries with backoff, none of them doubled with huggingface_hub's own) or fails with one
line; the Hub never shows part of a push (one commit per repo push), and running it again finishes the job without
re-sending what already got there. Each test prints what it measured (run with ``-s`` to see the figures).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from hubstyle import hub
from hubstyle.errors import HubstyleError
from hubstyle.hub import PushResult, RetryPolicy, push_folder
from tests.hubserver import FaultMode, HubServer

pytestmark = pytest.mark.slow  # seconds each on 2 cores: in CI's full run, not the default suite

FAST = RetryPolicy(attempts=3, base_wait=0.01, max_wait=0.02)


def make_folder(root: Path, n_weights: int = 2) -> Path:
    """An adapter-like folder: LFS weights, a config and a card (regular files)."""
    folder = root / "adapter"
    folder.mkdir(parents=True)
    for i in range(n_weights):
        save_file({"lora_A": torch.full((16, 64), float(i)), "lora_B": torch.zeros(64, 16)},
                  folder / f"adapter_model-{i}.safetensors")
    (folder / "adapter_config.json").write_text('{"r": 16, "peft_type": "LORA"}\n')
    (folder / "README.md").write_text("---\nlibrary_name: peft\n---\n# Flaky test\n")
    return folder


def local_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_whole_commits(server: HubServer, repo_id: str, folders: list[dict[str, bytes]], repo_type: str = "model"):
    """Every commit after the Hub's initial one holds one whole folder, in the order they were pushed."""
    commits = server.commits(repo_id, repo_type)
    assert [c.message for c in commits][:1] == ["initial commit"]
    assert len(commits) == 1 + len(folders)
    for commit, files in zip(commits[1:], folders):
        stored = {p: server._blob(e.sha256) for p, e in commit.files.items() if p != ".gitattributes"}
        assert stored == files


def measured(server: HubServer, result: PushResult | None, seconds: float) -> dict:
    """Return the fault and retry counts of what the server saw (hubstyle's retries vs huggingface_hub's own)."""
    kinds = Counter(f.kind for f in server.faults)
    failed = [f for f in server.faults if f.kind != "slow"]  # each failed request was retried (or the push gave up)
    return {
        "requests": len(server.log),
        "faults": dict(sorted(kinds.items())),
        "hubstyle_retries": result.retries if result else None,
        "client_retries": sum(hub._retried_by_client(f.path) for f in failed),
        "seconds": round(seconds, 2),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_push_completes_through_a_flaky_hub(hub_env, tmp_path, seed):
    server = hub_env.server
    folder = make_folder(tmp_path)
    server.fault_mode = FaultMode(rate=0.3, seed=seed)

    started = time.monotonic()
    first = push_folder(folder, "alice/flaky", commit_message="v1", tag="v1")
    seconds = time.monotonic() - started
    figures = measured(server, first, seconds)
    print(f"\nseed {seed}, first push: {figures}")

    assert first.uploaded and sorted(first.changed_files) == sorted(local_files(folder))
    assert server.faults and sum(figures["faults"].values()) == len(server.faults)
    assert_whole_commits(server, "alice/flaky", [local_files(folder)])
    assert server.repo("alice/flaky").tags == {"v1": server.commits("alice/flaky")[-1].oid}
    assert server.errors == []

    # re-pushing the same folder through the same flaky Hub commits nothing and sends no file again
    sent = server.uploaded_bytes
    again = push_folder(folder, "alice/flaky", commit_message="v1 again", tag="v1")
    assert again.uploaded is False and server.uploaded_bytes == sent
    assert_whole_commits(server, "alice/flaky", [local_files(folder)])


def test_lost_commit_answer_gives_no_second_commit(hub_env, tmp_path):
    server = hub_env.server
    folder = make_folder(tmp_path)
    # the commit is made, then the connection drops before the answer: the retry must find it, not commit twice
    server.fault_mode = FaultMode(rate=1.0, kinds=("drop-after",), paths=r"^POST .*/commit/main$", limit=1)

    result = push_folder(folder, "alice/lost-answer", commit_message="v1", tag="v1", retry=FAST)

    assert [f.kind for f in server.faults] == ["drop-after"] and result.retries == 1
    assert result.uploaded and result.commit_url.endswith(server.commits("alice/lost-answer")[-1].oid)
    assert_whole_commits(server, "alice/lost-answer", [local_files(folder)])
    # the tag's answer lost too: the retry's 409 is fine because the tag already points at this push
    server.fault_mode = FaultMode(rate=1.0, kinds=("drop-after",), paths=r"^POST .*/tag/", limit=1)
    (folder / "adapter_config.json").write_text('{"r": 8}\n')
    second = push_folder(folder, "alice/lost-answer", commit_message="v2", tag="v2", retry=FAST)
    head = server.commits("alice/lost-answer")[-1].oid
    assert second.retries == 1 and server.repo("alice/lost-answer").tags["v2"] == head


def test_retry_after_is_respected_and_a_long_one_ends_the_push(hub_env, tmp_path):
    server = hub_env.server
    folder = make_folder(tmp_path)
    server.fault_mode = FaultMode(rate=1.0, kinds=("503",), retry_after=1, paths=r"^POST /api/repos/create$", limit=2)
    started = time.monotonic()
    result = push_folder(folder, "alice/busy", commit_message="v1", retry=FAST)
    seconds = time.monotonic() - started
    print(f"\ntwo 503s with Retry-After: 1 -> {result.retries} retries, {seconds:.2f}s")
    assert result.uploaded and result.retries == 2 and seconds >= 2.0  # FAST alone would have waited ~0.03s

    server.fault_mode = FaultMode(rate=1.0, kinds=("429",), retry_after=3600)
    started = time.monotonic()
    with pytest.raises(HubstyleError) as err:
        push_folder(folder, "alice/rate-limited", commit_message="v1")
    assert str(err.value) == (
        f"the Hub at {hub_env.url} is rate-limiting requests (429) and asks to wait 3600s before the next one; "
        "run the same command again after that"
    )
    assert time.monotonic() - started < 2 and server.repo("alice/rate-limited") is None


def test_gives_up_with_one_line_then_a_rerun_sends_only_what_is_missing(hub_env, tmp_path):
    server = hub_env.server
    folder = make_folder(tmp_path, n_weights=3)
    server.fault_mode = FaultMode(rate=1.0, kinds=("500",), paths=r"^POST .*/commit/main$")

    with pytest.raises(HubstyleError) as err:
        push_folder(folder, "alice/half", commit_message="v1", retry=FAST)

    message = str(err.value)
    assert message.startswith(
        "could not upload to model repo 'alice/half': the Hub answered 500 Internal Server Error to "
        "POST /api/models/alice/half/commit/main after 3 attempts in "
    )
    assert message.endswith("nothing was half-published: run the same command again to finish "
                            "(files on the Hub are not re-sent)")
    assert "\n" not in message and len(server.faults) == 3
    assert_whole_commits(server, "alice/half", [])  # only the Hub's initial commit: nothing half-published
    lfs_sent = server.uploaded_bytes
    assert lfs_sent == sum(p.stat().st_size for p in folder.glob("*.safetensors"))

    server.fault_mode = None
    done = push_folder(folder, "alice/half", commit_message="v1")
    assert done.uploaded and done.retries == 0
    assert_whole_commits(server, "alice/half", [local_files(folder)])
    regular = sum(len(v) for k, v in local_files(folder).items() if not k.endswith(".safetensors"))
    assert server.uploaded_bytes - lfs_sent == regular  # the weights were not sent a second time


def test_connection_drops_on_uploads_are_left_to_huggingface_hub(hub_env, tmp_path):
    """A dropped LFS upload is retried by huggingface_hub's http_backoff alone: hubstyle does not retry it again."""
    server = hub_env.server
    folder = make_folder(tmp_path, n_weights=1)
    server.fault_mode = FaultMode(rate=1.0, kinds=("drop",), paths=r"^PUT /_lfs/upload/", limit=1)
    started = time.monotonic()
    result = push_folder(folder, "alice/drop-upload", commit_message="v1", retry=FAST)
    print(f"\none dropped LFS upload: huggingface_hub retried it, hubstyle retries {result.retries}, "
          f"{time.monotonic() - started:.2f}s")
    assert result.retries == 0 and [f.kind for f in server.faults] == ["drop"]
    assert [e.method for e in server.log if e.path.startswith("/_lfs/upload/")] == ["PUT", "PUT"]
    assert_whole_commits(server, "alice/drop-upload", [local_files(folder)])


def test_hubstyle_push_cli_through_faults_then_rerun_finishes(tiny_run, hub_env, run_cli, monkeypatch):
    server = hub_env.server
    repos = [("alice/bard-base", "model", "base"), ("alice/bard", "model", "adapter"),
             ("alice/bard-merged", "model", "merged"), ("alice/bard-classifier", "model", "classifier"),
             ("alice/bard-space", "space", "space")]
    # 1) the classifier's commit always fails: the CLI stops there with one line; earlier repos are whole
    monkeypatch.setattr(hub, "DEFAULT_RETRY", FAST)
    server.fault_mode = FaultMode(rate=1.0, kinds=("500",), paths=r"^POST /api/models/alice/bard-classifier/commit/")
    code, out, err = run_cli("push", str(tiny_run), "--repo-id", "alice/bard")
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: could not upload to model repo 'alice/bard-classifier': the Hub answered 500")
    publish = tiny_run / "publish"
    for repo_id, repo_type, kind in repos[:3]:
        assert_whole_commits(server, repo_id, [local_files(publish / kind)], repo_type)
    assert_whole_commits(server, "alice/bard-classifier", [])
    assert server.repo("alice/bard-space", "space") is None

    # 2) re-run through a Hub failing ~30% of requests (default retry policy): it finishes, nothing is re-sent
    monkeypatch.setattr(hub, "DEFAULT_RETRY", RetryPolicy())
    sent, logged, faults = server.uploaded_bytes, len(server.log), len(server.faults)
    server.fault_mode = FaultMode(rate=0.3, seed=7)
    started = time.monotonic()
    code, out, err = run_cli("push", str(tiny_run), "--repo-id", "alice/bard")
    seconds = time.monotonic() - started
    new_faults = Counter(f.kind for f in server.faults[faults:])
    print(f"\n`hubstyle push` re-run: {len(server.log) - logged} requests, faults {dict(new_faults)}, "
          f"{seconds:.2f}s; CLI said: {out.strip()!r}")
    assert code == 0, err
    assert out.count("unchanged, no commit") == 4  # base, dataset, adapter, merged: whole before the fault
    for repo_id, repo_type, kind in repos:
        assert_whole_commits(server, repo_id, [local_files(publish / kind)], repo_type)
    unsent = sum(p.stat().st_size for kind in ("classifier", "space")
                 for p in (publish / kind).rglob("*") if p.is_file() and p.suffix != ".safetensors")
    # the classifier's weights were uploaded by the failed run: only its other files and the Space go now
    assert server.uploaded_bytes - sent <= unsent
    assert server.errors == []
