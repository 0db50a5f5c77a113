"""The Space under load: 20 concurrent gradio_client users against a Space process on 127.0.0.1 (tiny model).

Every user finishes with two answers, or is told the queue is full (or, asking for too many new tokens, that the cap
holds); the queue is bounded by the Space settings' ``limits.max_queue``; the server's memory stays flat.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.test_space import PROMPT, free_port, make_adapter

pytestmark = pytest.mark.slow  # seconds each on 2 cores: in CI's full run, not the default suite

USERS = 20
MAX_QUEUE = 4
MAX_NEW_TOKENS = 16
OVER_CAP = 10_000  # what two of the users ask for; the Space refuses it instead of generating that long
QUEUE_FULL = "Queue is full"
CAP_REFUSED = f"Value {OVER_CAP} is greater than maximum value {MAX_NEW_TOKENS}"
RSS_SLACK = 50 * 2**20  # bytes the server may grow between the warm-up burst and the last one
LAUNCH = "import sys; from hubstyle.space import launch, load_settings; launch(load_settings(sys.argv[1]))"


def rss(pid: int) -> int:
    """Return the resident memory of process ``pid`` in bytes (VmRSS from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS line")


@pytest.fixture(scope="module")
def space(tiny_base, tmp_path_factory):
    """A Space process on 127.0.0.1 with a 4-slot queue, launched from its space_config.json; yields (url, pid)."""
    root = tmp_path_factory.mktemp("space_load")
    adapter = make_adapter(tiny_base, root / "bard", seed=1)
    folder = root / "space"
    folder.mkdir()
    config = {"base": str(tiny_base), "adapters": {"bard": str(adapter)}, "bf16": False,
              "limits": {"max_new_tokens": MAX_NEW_TOKENS, "max_queue": MAX_QUEUE}}
    (folder / "space_config.json").write_text(json.dumps(config))
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "OMP_NUM_THREADS": "1"}
    url = f"http://127.0.0.1:{port}/"
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, str(folder)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the Space exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
            try:
                urllib.request.urlopen(url + "config", timeout=2).read()
                break
            except OSError:
                assert time.monotonic() < deadline, "the Space did not start within 120 s"
                time.sleep(0.3)
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def burst(clients: list, new_tokens: list[int]) -> list[tuple[str, object, float]]:
    """Return (outcome, value, seconds) for each user: all submit at once, each one prompt; outcome is 'ok' with the
    two answers, or 'error' with the error's text."""
    results: list = [None] * len(clients)
    start = threading.Barrier(len(clients))

    def user(i: int) -> None:
        start.wait()
        began = time.monotonic()
        try:
            answer = clients[i].predict(PROMPT, "bard", new_tokens[i], 0.0, 1.0, 0, api_name="/generate")
            results[i] = ("ok", answer, time.monotonic() - began)
        except Exception as err:  # noqa: BLE001 - every error is checked by the test
            results[i] = ("error", f"{type(err).__name__}: {err}", time.monotonic() - began)

    threads = [threading.Thread(target=user, args=(i,)) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert all(r is not None for r in results), "a user never got an answer within 120 s"
    return results


def percentile(values: list[float], q: float) -> float:
    """Return the ``q`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def test_twenty_users_finish_or_hear_the_queue_is_full_and_memory_stays_flat(space):
    from gradio_client import Client

    url, pid = space
    clients = [None] * USERS

    def connect(i: int) -> None:
        clients[i] = Client(url, verbose=False, analytics_enabled=False, download_files=False)

    connecting = [threading.Thread(target=connect, args=(i,)) for i in range(USERS)]
    for thread in connecting:
        thread.start()
    for thread in connecting:
        thread.join()
    new_tokens = [OVER_CAP if i in (3, 11) else MAX_NEW_TOKENS for i in range(USERS)]
    try:
        burst(clients, new_tokens)  # warm-up: first requests allocate what the server keeps
        rss_warm = rss(pid)
        results = [r for _ in range(2) for r in burst(clients, new_tokens)]
        rss_after = rss(pid)
    finally:
        for client in clients:
            if client is not None:
                client.close()

    done = [(value, seconds) for outcome, value, seconds in results if outcome == "ok"]
    errors = [value for outcome, value, _ in results if outcome == "error"]
    for base_text, tuned_text in (value for value, _ in done):
        assert base_text and tuned_text and base_text != tuned_text
    unexplained = [e for e in errors if QUEUE_FULL not in e and CAP_REFUSED not in e]
    assert unexplained == []
    assert len(done) >= 2, f"only {len(done)} of {len(results)} requests completed"
    assert any(QUEUE_FULL in e for e in errors), "a 20-user burst never filled a 4-slot queue"
    # past the queue bound a user is told at once, not after waiting behind everyone
    full_seconds = [s for outcome, value, s in results if outcome == "error" and QUEUE_FULL in value]
    assert max(full_seconds) < max(s for _, s in done)
    # the two over-cap users never generate: refused by the cap, or by the full queue first
    over_cap = [results[b * USERS + i] for b in range(2) for i in (3, 11)]
    assert all(outcome == "error" for outcome, _, _ in over_cap)
    assert rss_after <= rss_warm + RSS_SLACK, f"server RSS grew {(rss_after - rss_warm) / 2**20:.1f} MiB"
    latencies = [s for _, s in done]
    print(f"\n{len(done)}/{len(results)} completed, {len(full_seconds)} queue-full; latency p50 "
          f"{percentile(latencies, 0.5):.2f} s, p95 {percentile(latencies, 0.95):.2f} s; server RSS "
          f"{rss_warm / 2**20:.0f} -> {rss_after / 2**20:.0f} MiB; errors seen: {sorted(set(errors))}")


def test_queue_bound_is_a_setting_with_a_default(tmp_path):
    from hubstyle.errors import HubstyleError
    from hubstyle.space import SpaceSettings, load_settings

    assert SpaceSettings(base="a/b", adapters={"x": "a/c"}).max_queue == 16
    (tmp_path / "space_config.json").write_text(
        json.dumps({"base": "a/b", "adapters": {"x": "a/c"}, "limits": {"max_queue": 3}}))
    assert load_settings(tmp_path, env={}).max_queue == 3
    with pytest.raises(HubstyleError, match="limits must be positive, got .*max_queue=0"):
        SpaceSettings(base="a/b", adapters={"x": "a/c"}, max_queue=0)
