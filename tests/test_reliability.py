"""Reliability: folder writes that survive a kill at any point, kill -9 during training and a checked resume, and
training on several processes (gloo on CPUs) that matches one process and writes from one process only."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from hubstyle import fsio
from hubstyle.loop import CHECKPOINT_PREFIX, PROGRESS_FILE, latest_checkpoint, rank_share
from tests.tiny import sample_text

ROOT = Path(__file__).resolve().parents[1]
ADAPTER_WEIGHTS = "adapter_model.safetensors"


# --------------------------------------------------------------------------------------------------- atomic folders

# Writes version 1 or 2 of a two-file folder with fsio.atomic_folder; the N-th file-system step it takes (each
# rename, fsync, exchange, rmtree, and a point between the two files) is replaced by os._exit: a kill -9 there.
CRASH_SCRIPT = r"""
import json, os, shutil, sys
from pathlib import Path
import numpy as np
from safetensors.numpy import save_file
from hubstyle import fsio

target, crash_at, version, exchange = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
calls = [0]

def deadly(real):
    def step(*args, **kwargs):
        calls[0] += 1
        if calls[0] == crash_at:
            os._exit(9)
        return real(*args, **kwargs)
    return step

if not exchange:
    fsio._exchange = lambda a, b: False  # a filesystem without renameat2(RENAME_EXCHANGE)
os.rename, os.fsync, shutil.rmtree = deadly(os.rename), deadly(os.fsync), deadly(shutil.rmtree)
fsio._exchange = deadly(fsio._exchange)
between_files = deadly(lambda: None)
with fsio.atomic_folder(target) as stage:
    save_file({"w": np.full(8, version, dtype=np.float32)}, str(stage / "weights.safetensors"))
    between_files()
    (stage / "meta.json").write_text(json.dumps({"version": version}))
print(calls[0])
"""


def _write_version(target: Path, version: int, crash_at: int, exchange: bool) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", CRASH_SCRIPT, str(target), str(crash_at), str(version),
                           "1" if exchange else "0"], capture_output=True, text=True, env=env, timeout=60)


def _write_in_process(target: Path, version: int) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    with fsio.atomic_folder(target) as stage:
        save_file({"w": np.full(8, version, dtype=np.float32)}, str(stage / "weights.safetensors"))
        (stage / "meta.json").write_text(json.dumps({"version": version}))


def _version(folder: Path) -> int:
    """Return the version a folder holds, checking both of its files agree (a mix would be a torn write)."""
    from safetensors.numpy import load_file as load_numpy

    weights = load_numpy(str(folder / "weights.safetensors"))["w"]
    meta = json.loads((folder / "meta.json").read_text())
    assert set(weights.tolist()) == {meta["version"]}, f"torn folder: {weights} vs {meta}"
    return meta["version"]


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2-exchange", "two-renames"])
def test_a_kill_at_any_step_of_a_folder_swap_leaves_the_old_or_the_new_folder(tmp_path, exchange):
    target = tmp_path / "adapter"
    first = _write_version(target, 1, crash_at=0, exchange=exchange)
    assert first.returncode == 0, first.stderr
    steps = int(first.stdout)  # file-system steps of one write that replaces nothing
    seen = set()
    for crash_at in range(1, steps + 6):  # replacing a folder takes a few more steps than creating one
        killed = _write_version(target, 2, crash_at, exchange)
        assert killed.returncode in (0, 9), killed.stderr
        fsio.recover(target)  # what the next write does first
        seen.add(_version(target))
        assert [p.name for p in tmp_path.iterdir()] == ["adapter"], f"leftovers after a kill at step {crash_at}"
        _write_in_process(target, 1)
    assert seen == {1, 2}, "the kills must land both before and after the swap"


def test_an_error_inside_the_block_keeps_the_old_folder_and_leaves_nothing(tmp_path):
    target = tmp_path / "out"
    with fsio.atomic_folder(target) as stage:
        (stage / "a.txt").write_text("old")
    with pytest.raises(RuntimeError), fsio.atomic_folder(target) as stage:
        (stage / "a.txt").write_text("new")
        raise RuntimeError("disk full")
    assert (target / "a.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    fsio.atomic_write(target / "a.txt", "newer")
    assert (target / "a.txt").read_text() == "newer" and sorted(p.name for p in target.iterdir()) == ["a.txt"]


def test_a_failed_adapter_save_keeps_the_previous_adapter_loadable(tiny_base, tmp_path, monkeypatch):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    import hubstyle.train as train_module
    from hubstyle.config import TrainingConfig

    texts = [b for b in sample_text(30_000).split("\n\n") if b.strip()]
    training = TrainingConfig(cutoff_len=64, batch_size=4, max_steps=2, lora_rank=4, bf16=False)
    out = tmp_path / "adapter"
    train_module.train(str(tiny_base), texts, [], out, training)
    before = load_file(str(out / ADAPTER_WEIGHTS))

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(train_module, "plot_loss", full_disk)  # the last file of the save fails
    with pytest.raises(OSError, match="No space"):
        train_module.train(str(tiny_base), texts, [], out, TrainingConfig(**{**vars(training), "seed": 1}))
    after = load_file(str(out / ADAPTER_WEIGHTS))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), out)  # still a loadable adapter
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]


# --------------------------------------------------------------------------------------------------- kill -9, resume


@pytest.fixture(scope="module")
def corpora(tmp_path_factory, data_dir) -> Path:
    """Small style and generic text files (a run over them takes seconds)."""
    root = tmp_path_factory.mktemp("corpora")
    (root / "style.txt").write_text(sample_text(60_000), encoding="utf-8")
    generic = (data_dir / "wikitext-2" / "valid.txt").read_text(encoding="utf-8")[:40_000]
    (root / "generic.txt").write_text(generic, encoding="utf-8")
    return root


def _config(path: Path, base: Path, corpora: Path, out: Path, style: str = "style.txt", **training) -> Path:
    cfg = {
        "base_model": str(base),
        "output_dir": str(out),
        "corpora": [{"source": str(corpora / style), "name": "bard"}],
        "generic_corpus": str(corpora / "generic.txt"),
        "training": {"max_steps": 16, "cutoff_len": 64, "batch_size": 4, "learning_rate": 3e-3, "warmup_steps": 2,
                     "lora_rank": 4, "checkpoint_every": 4, "eval_every": 12, "bf16": False, "seed": 3,
                     **training},
        "evaluation": {"enabled": False, "heldout_blocks": 4},
    }
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def _assert_same_adapter(a: Path, b: Path, *, atol: float = 1e-6, mean_rtol: float = 1e-6) -> None:
    """Assert two adapters agree: every weight within `atol`, and the LoRA B matrices (zero at the start, so all
    of their value is training) within `mean_rtol` of their mean size on average."""
    x, y = load_file(str(a / ADAPTER_WEIGHTS)), load_file(str(b / ADAPTER_WEIGHTS))
    assert x.keys() == y.keys()
    worst = max((x[k] - y[k]).abs().max().item() for k in x)
    assert worst <= atol, f"largest weight difference {worst:.2e} > {atol:.0e}"
    b_keys = [k for k in x if "lora_B" in k]
    diff = torch.cat([(x[k] - y[k]).abs().flatten() for k in b_keys]).mean()
    size = torch.cat([y[k].abs().flatten() for k in b_keys]).mean()
    assert diff <= mean_rtol * size, f"mean LoRA B difference {diff / size:.2e} of its size > {mean_rtol:.0e}"


def _checkpoint_step(path: Path | None) -> int:
    return int(path.name.removeprefix(CHECKPOINT_PREFIX)) if path else 0


@pytest.fixture(scope="module")
def killed_then_resumed(tmp_path_factory, tiny_base, corpora):
    """A `hubstyle train` subprocess killed with SIGKILL after a seeded random checkpoint, a seeded random share of a
    checkpoint interval later (so somewhere in the next steps, whatever the machine's speed), with half-written
    checkpoints planted beside the real ones, then resumed; and the same run uninterrupted."""
    from hubstyle.config import load_config
    from hubstyle.runner import run

    root = tmp_path_factory.mktemp("killed")
    cfg = _config(root / "run.yaml", tiny_base, corpora, root / "run")
    checkpoints = root / "run" / "checkpoints"
    rng = random.Random(17)
    kill_after, share = rng.choice([4, 8]), rng.random()
    seen: dict[int, float] = {}  # checkpoint step -> when it appeared
    with open(root / "train.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "hubstyle.cli", "train", str(cfg)], stdout=log, stderr=log,
                                env={**os.environ, "HUBSTYLE_QUIET": "1", "PYTHONPATH": str(ROOT)})
        try:
            deadline = time.monotonic() + 300
            while max(seen, default=0) < kill_after:
                assert proc.poll() is None, "the run ended before it was killed: " + (root / "train.log").read_text()
                assert time.monotonic() < deadline, "no checkpoint within 300 s"
                step = _checkpoint_step(latest_checkpoint(checkpoints))
                if step:
                    seen.setdefault(step, time.monotonic())
                time.sleep(0.005)
            (first, since), last = min(seen.items()), max(seen)
            time.sleep(share * (seen[last] - since) / max(1, (last - first) // 4))
        finally:
            proc.kill()  # SIGKILL: no handler, no cleanup, as when the machine's OOM killer or a user ends it
            proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (root / "run" / "adapter").exists(), "killed before it finished"
    killed_at = latest_checkpoint(checkpoints)

    # what a kill in the middle of writing a checkpoint leaves, and the old `.tmp` spelling: never resumed from
    half = checkpoints / f"{CHECKPOINT_PREFIX}0000015"  # a finished-looking name without its completion marker
    half.mkdir()
    (half / "trainable.safetensors").write_bytes(b"\0" * 16)
    for name in (f".{CHECKPOINT_PREFIX}0000014.partial-999999-deadbeef", f"{CHECKPOINT_PREFIX}0000013.tmp"):
        (checkpoints / name).mkdir()
        (checkpoints / name / PROGRESS_FILE).write_text('{"step": 13}')
    assert latest_checkpoint(checkpoints) == killed_at

    resumed = run(load_config(cfg), resume=True, log=lambda *_: None)
    straight_cfg = _config(root / "straight.yaml", tiny_base, corpora, root / "straight")
    straight = run(load_config(straight_cfg), log=lambda *_: None)
    return {"root": root, "cfg": cfg, "killed_at": killed_at, "kill_after": kill_after, "resumed": resumed,
            "straight": straight}


@pytest.mark.slow
def test_kill_9_during_training_then_resume_gives_the_uninterrupted_adapter(killed_then_resumed):
    resumed, straight = killed_then_resumed["resumed"], killed_then_resumed["straight"]
    assert _checkpoint_step(killed_then_resumed["killed_at"]) >= killed_then_resumed["kill_after"]
    assert resumed.training.steps == straight.training.steps == 16
    _assert_same_adapter(resumed.layout.adapter, straight.layout.adapter)
    history = json.loads((resumed.layout.adapter / "loss_history.json").read_text())
    assert [h["step"] for h in history] == list(range(1, 17))
    straight_history = json.loads((straight.layout.adapter / "loss_history.json").read_text())
    assert history[-1]["loss"] == pytest.approx(straight_history[-1]["loss"], abs=1e-6)


def test_half_written_checkpoints_are_never_resumed_from(killed_then_resumed):
    checkpoints = killed_then_resumed["resumed"].layout.checkpoints
    finished = sorted(p.name for p in checkpoints.iterdir() if (p / PROGRESS_FILE).is_file())
    assert f"{CHECKPOINT_PREFIX}0000013.tmp" in finished  # still there, and still ignored
    assert latest_checkpoint(checkpoints).name == f"{CHECKPOINT_PREFIX}0000012"
    progress = json.loads((latest_checkpoint(checkpoints) / PROGRESS_FILE).read_text())
    assert progress["fingerprint"]["max_steps"] == 16 and len(progress["fingerprint"]["data_sha256"]) == 64
    assert progress["fingerprint"]["config"]["training.learning_rate"] == 0.003


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"learning_rate": 2e-3}, "was made with training.learning_rate=0.003, this run has 0.002"),
        ({"max_steps": 30}, "was made with training.max_steps=16, this run has 30"),
        ({"lora_rank": 8}, "was made with training.lora_rank=4, this run has 8"),
        ("other data", "was made on other training data (sha256 "),
    ],
    ids=["learning_rate", "max_steps", "lora_rank", "data"],
)
def test_resume_refuses_a_checkpoint_of_another_config_or_data(killed_then_resumed, corpora, tiny_base, run_cli,
                                                                change, message):
    root = killed_then_resumed["root"]
    run_dir = root / "run"
    if change == "other data":
        (corpora / "other.txt").write_text(sample_text(60_000).replace("Citizen", "Townsman"), encoding="utf-8")
        cfg = _config(root / "changed.yaml", tiny_base, corpora, run_dir, style="other.txt")
    else:
        cfg = _config(root / "changed.yaml", tiny_base, corpora, run_dir, **change)
    config_copy = (run_dir / "config.yaml").read_text()
    adapter = load_file(str(run_dir / "adapter" / ADAPTER_WEIGHTS))
    code, _, err = run_cli("train", str(cfg), "--resume")
    assert code == 1
    line = err.strip()
    assert "\n" not in line and line.startswith(f"error: checkpoint {run_dir / 'checkpoints' / 'step-0000012'} ")
    assert message in line and line.endswith("train without --resume to start over")
    # a refused resume writes nothing: the run's config copy and adapter are the ones the checkpoints came from
    assert (run_dir / "config.yaml").read_text() == config_copy
    assert all(torch.equal(v, load_file(str(run_dir / "adapter" / ADAPTER_WEIGHTS))[k]) for k, v in adapter.items())


def test_resume_ignores_settings_that_do_not_change_the_result(killed_then_resumed, corpora, tiny_base):
    from hubstyle.config import load_config
    from hubstyle.runner import run

    root = killed_then_resumed["root"]
    cfg = _config(root / "memory.yaml", tiny_base, corpora, root / "run", gradient_accumulation=2, eval_every=16)
    again = run(load_config(cfg), resume=True, log=lambda *_: None)
    _assert_same_adapter(again.layout.adapter, killed_then_resumed["straight"].layout.adapter, atol=1e-5,
                         mean_rtol=1e-4)


# --------------------------------------------------------------------------------------------------- several processes


def test_every_rank_gets_part_of_every_batch():
    for batch_size in range(1, 17):
        for world in range(1, batch_size + 1):
            shares = [rank_share(batch_size, rank, world) for rank in range(world)]
            assert all(len(s) > 0 for s in shares), (batch_size, world)
            assert sorted(torch.cat(shares).tolist()) == list(range(batch_size))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_two(cfg: Path, watch: Path, audit: Path) -> subprocess.CompletedProcess:
    """Run `hubstyle train CFG` as 2 processes (gloo, CPU) under tests/rank_audit.py."""
    audit.mkdir(exist_ok=True)
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()),
        str(ROOT / "tests" / "rank_audit.py"), str(watch), str(audit), "train", str(cfg),
    ]
    env = {**os.environ, "HUBSTYLE_QUIET": "1", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=400, cwd=ROOT)


@pytest.mark.slow
def test_two_processes_train_the_adapter_of_one_and_only_rank_0_writes(tmp_path, tiny_base, corpora, run_cli):
    training = {"max_steps": 6, "checkpoint_every": 3, "eval_every": 3}
    one = _config(tmp_path / "one.yaml", tiny_base, corpora, tmp_path / "one", **training)
    code, _, err = run_cli("train", str(one))
    assert code == 0, err
    two = _config(tmp_path / "two.yaml", tiny_base, corpora, tmp_path / "two", **training)
    done = _launch_two(two, tmp_path / "two", tmp_path / "audit")
    assert done.returncode == 0, done.stderr[-3000:]

    # same global batch, split 2 + 2 over the ranks: the same adapter up to float summation order
    _assert_same_adapter(tmp_path / "two" / "adapter", tmp_path / "one" / "adapter", atol=2e-3, mean_rtol=1e-2)
    assert done.stdout.count("metrics in ") == 1 and done.stdout.count("trained 6 steps") == 1
    writes = {rank: json.loads((tmp_path / "audit" / f"rank-{rank}.json").read_text()) for rank in (0, 1)}
    assert writes[1] == [], f"rank 1 wrote {writes[1][:3]}"
    run_dir = tmp_path / "two"
    written = {Path(path).relative_to(run_dir).parts[0] for _, path in writes[0] if path != str(run_dir)}
    assert {"adapter", "checkpoints", "metrics.json", "config.yaml"} <= written
    ckpt = json.loads((tmp_path / "two" / "checkpoints" / "step-0000003" / PROGRESS_FILE).read_text())
    assert ckpt["step"] == 3 and ckpt["history"][-1]["tokens"] == 3 * 4 * 64


@pytest.mark.slow
def test_more_processes_than_sequences_in_a_batch_is_refused(tmp_path, tiny_base, corpora):
    cfg = _config(tmp_path / "tiny-batch.yaml", tiny_base, corpora, tmp_path / "run", batch_size=1, max_steps=2)
    done = _launch_two(cfg, tmp_path / "run", tmp_path / "audit")
    assert done.returncode != 0
    assert ("error: training.batch_size is 1 but 2 processes train: each needs at least one sequence a step; "
            "raise batch_size to 2 or more") in done.stderr
    assert not (tmp_path / "run" / "adapter").exists()
