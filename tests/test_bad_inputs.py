"""Bad input, one table: every case ends with exactly one line on stderr, a non-zero exit and nothing half-written.

Each row says how to make the bad input (a function that writes it under the case's folder and returns the
command line) and a fragment the message must contain. Most rows run `hubstyle` in-process through ``cli.main``;
rows marked "subprocess" run the console script (real stderr), "space" rows call the Space's generation the way its
Gradio handler does. Before and after each case the case's folder is listed: a failing command may not leave any
new or changed file there (the output folder ``out/`` in particular never appears).

``HUBSTYLE_BAD_INPUTS_TABLE=tests/bad_inputs.md python -m pytest tests/test_bad_inputs.py`` rewrites the table of
cases and their actual messages; ``test_the_table_lists_every_case`` keeps that file in step with the rows here.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

TABLE = Path(__file__).with_name("bad_inputs.md")
RESULTS: dict[str, str] = {}  # case name -> the message it printed (paths made relative for the table)


@dataclass
class Kit:
    """What the rows build their bad inputs from (made once per module, all tiny)."""

    base: Path  # the session's tiny GPT-2 (n_embd 64, context 128)
    adapter: Path  # an untrained LoRA on it
    other_adapter: Path  # a LoRA on a tiny GPT-2 of another width
    classifier: Path  # a tiny sequence classifier with labels other / pirate
    cache: Path  # an HF cache holding 'alice/cached-tiny' with an interrupted download, 'alice/truncated-tiny'


@dataclass
class Env:
    """One case's world: its folder, the kit, and (for Hub rows) the loopback Hub."""

    tmp: Path
    kit: Kit
    monkeypatch: pytest.MonkeyPatch
    request: pytest.FixtureRequest
    hub: object = None

    @property
    def out(self) -> str:
        return str(self.tmp / "out")


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[Env], list[str] | Callable[[], object]]  # -> hubstyle arguments, or a call for "space" rows
    expect: str
    via: str = "cli"  # cli | subprocess | space
    hub: bool = False  # needs the loopback Hub (online, HF_TOKEN set)


# ---- how bad inputs are made ---------------------------------------------------------------------------------------


def write(env: Env, name: str, content: str | bytes) -> str:
    path = env.tmp / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return str(path)


def config(env: Env, corpus: str = "shakespeare", extra: str = "", base: str | None = None) -> list[str]:
    """Return `train RUN.yaml` args for a config writing to OUT (base: the tiny GPT-2 unless given)."""
    text = f"base_model: {base or env.kit.base}\noutput_dir: {env.out}\ncorpora:\n  - source: {corpus}\n{extra}"
    return ["train", write(env, "run.yaml", text)]


def script(env: Env) -> str:
    return write(env, "script.txt", "ALICE: Hello there, friend.\nBOB: Hi Alice, how do you fare?\n" * 40)


def messages(env: Env, role: str) -> str:
    row = {"messages": [{"role": role, "content": "How fares the day?"},
                        {"role": "assistant", "content": "Fair, good sir, and thou?"}]}
    return write(env, "chat.jsonl", "\n".join(json.dumps(row) for _ in range(50)) + "\n")


def generate(env: Env, *args: str, prompt: str = "To be or not") -> list[str]:
    return ["generate", *args, "--max-new-tokens", "4", prompt]


def corrupt_adapter(env: Env) -> str:
    folder = env.tmp / "corrupt-adapter"
    shutil.copytree(env.kit.adapter, folder)
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}" + weights.read_bytes()[100:])
    return str(folder)


def disk_full_in_safetensors(env: Env) -> list[str]:
    """`merge`, where writing the weights fails half way the way safetensors reports a full disk."""
    import transformers.modeling_utils
    from safetensors import SafetensorError

    def save_half(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 1024)  # what got written before the disk filled up
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    env.monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", save_half)
    return ["merge", "--base", str(env.kit.base), "--adapter", str(env.kit.adapter), "--out", env.out]


def disk_full_at_fsync(env: Env) -> list[str]:
    """`merge`, where the disk fills while flushing the written files (ENOSPC from fsync)."""
    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    env.monkeypatch.setattr(os, "fsync", fsync)
    return ["merge", "--base", str(env.kit.base), "--adapter", str(env.kit.adapter), "--out", env.out]


def offline_cache(env: Env, repo_id: str) -> list[str]:
    env.monkeypatch.setenv("HF_HUB_CACHE", str(env.kit.cache))
    from huggingface_hub import constants

    env.monkeypatch.setattr(constants, "HF_HUB_CACHE", str(env.kit.cache))
    env.monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return generate(env, "--base", repo_id)


def long_space_prompt(env: Env) -> Callable[[], object]:
    from hubstyle.space import SideBySide
    from hubstyle.models import load_adapters, load_base, load_tokenizer

    model = load_adapters(load_base(env.kit.base), {"style": env.kit.adapter})
    space = SideBySide(model, load_tokenizer(env.kit.base), ["style"])
    return lambda: list(space.stream("thou art " * 80, "style", max_new_tokens=32))


def flaky(env: Env, kind: str, retry_after: int = 3600) -> None:
    from tests.hubserver import FaultMode

    env.hub.server.fault_mode = FaultMode(rate=1.0, kinds=(kind,), retry_after=retry_after)


def push(env: Env, repo_id: str) -> list[str]:
    """`push` of the session's toy run (tiny_run, shared with test_release), only its adapter repo."""
    return ["push", str(env.request.getfixturevalue("tiny_run")), "--repo-id", repo_id, "--what", "adapter"]


CASES = [
    # corpora
    Case("corpus-empty", lambda e: config(e, write(e, "empty.txt", "  \n\n")), "is empty"),
    Case("corpus-missing", lambda e: config(e, str(e.tmp / "missing.txt")), "not found", via="subprocess"),
    Case("corpus-binary", lambda e: config(e, write(e, "bin.txt", b"\x00\x01\x02binary\x00" * 50)), "binary"),
    Case("corpus-not-utf8", lambda e: config(e, write(e, "latin1.txt", "Caf\xe9 cr\xe8me.\n".encode("latin-1") * 80)),
         "is not valid UTF-8 text"),
    Case("unknown-speaker", lambda e: config(e, script(e), "dialogue:\n  speaker: CAROL\n"), "'CAROL'"),
    Case("messages-bad-role", lambda e: config(e, messages(e, "wizard")), "unknown role 'wizard'"),
    # the config file
    Case("config-missing", lambda e: ["train", str(e.tmp / "nope.yaml")], "not found"),
    Case("bad-yaml", lambda e: ["train", write(e, "bad.yaml", "training: [unclosed\n")], "bad YAML", via="subprocess"),
    Case("config-not-a-mapping", lambda e: ["train", write(e, "list.yaml", "- a\n- b\n")], "must hold a mapping"),
    Case("unknown-key", lambda e: config(e, extra="training:\n  lora_rnak: 8\n"),
         "unknown key 'training.lora_rnak' (did you mean 'training.lora_rank'?)", via="subprocess"),
    Case("wrong-type", lambda e: config(e, extra="training:\n  batch_size: eight\n"),
         "'training.batch_size' must be int, got 'eight'"),
    Case("lora-rank-0", lambda e: config(e, extra="training:\n  lora_rank: 0\n"),
         "'training.lora_rank' must be >= 1, got 0"),
    Case("cutoff-0", lambda e: config(e, extra="training:\n  cutoff_len: 0\n"),
         "'training.cutoff_len' must be >= 8, got 0"),
    Case("cutoff-longer-than-context", lambda e: config(e, extra="training:\n  cutoff_len: 512\n"),
         "longer than the base model's context of 128 tokens"),
    Case("cutoff-longer-than-tiny-block", lambda e: config(e, base="tiny", extra="training:\n  cutoff_len: 512\n"),
         "longer than the tiny base's context"),
    Case("empty-prompt-file", lambda e: config(e, extra="training:\n  cutoff_len: 64\nevaluation:\n  prompts: "
                                                 + write(e, "prompts.txt", "# none\n")),
         "has no prompts"),
    # models
    Case("unknown-base-id-offline", lambda e: config(e, base="nobody/no-such-model"),
         "'nobody/no-such-model' is not a local folder, nor in the local HF cache"),
    Case("base-folder-missing", lambda e: config(e, base=str(e.tmp / "no-model")), "does not exist"),
    Case("target-modules-absent",
         lambda e: config(e, extra="training:\n  cutoff_len: 64\n  target_modules: [q_proj]\n"),
         "names 'q_proj', which this model does not have"),
    Case("adapter-on-wrong-base",
         lambda e: generate(e, "--base", str(e.kit.base), "--adapter", str(e.kit.other_adapter)),
         "does not fit the base model"),
    Case("corrupt-safetensors", lambda e: generate(e, "--base", str(e.kit.base), "--adapter", corrupt_adapter(e)),
         "adapter_model.safetensors' is not a readable safetensors file"),
    Case("interrupted-download", lambda e: offline_cache(e, "alice/cached-tiny"), "did not finish downloading"),
    Case("truncated-cached-weights", lambda e: offline_cache(e, "alice/truncated-tiny"),
         "model.safetensors' is not a readable safetensors file"),
    Case("classifier-labels-mismatch",
         lambda e: ["evaluate", "--base", str(e.kit.base), "--adapter", str(e.kit.adapter), "--out", e.out,
                    "--classifier", str(e.kit.classifier), "--style", "shakespeare"],
         "has labels ['other', 'pirate'] but not ['shakespeare']"),
    Case("generate-prompt-too-long", lambda e: generate(e, "--base", str(e.kit.base), prompt="thou art " * 80),
         "but the model reads at most 128 tokens"),
    Case("space-prompt-too-long", long_space_prompt, "but the model reads at most 128", via="space"),
    # writing
    Case("disk-full-saving-weights", disk_full_in_safetensors, "the disk is full (No space left on device)"),
    Case("disk-full-at-fsync", disk_full_at_fsync, "the disk is full (No space left on device)"),
    # the Hub
    Case("hub-401", lambda e: (e.monkeypatch.setenv("HF_TOKEN", e.hub.server.INVALID_TOKEN), push(e, "alice/bard"))[1],
         "the Hub rejected the token (401)", via="subprocess", hub=True),
    Case("hub-403", lambda e: push(e, "bob/bard"), "no write access to namespace 'bob' on the Hub (403)",
         hub=True),
    Case("hub-404", lambda e: generate(e, "--base", "alice/no-such-model"),
         "model repo 'alice/no-such-model' does not exist on the Hub", hub=True),
    Case("hub-429", lambda e: (flaky(e, "429"), push(e, "alice/bard"))[1],
         "rate-limiting requests (429) and asks to wait 3600s", hub=True),
    # command-line values
    Case("blend-bad-adapter-pair", lambda e: ["blend", "--base", str(e.kit.base), "--adapter", "nonsense",
                                              "--weight", "1", "--out", e.out], "must look like NAME=VALUE"),
]


# ---- the kit -------------------------------------------------------------------------------------------------------


def make_adapter(base: Path, out: Path) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn"], task_type="CAUSAL_LM"))
    model.save_pretrained(out)
    return out


def make_classifier(base: Path, out: Path) -> Path:
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(base)
    labels = {0: "other", 1: "pirate"}
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=128, id2label=labels,
                        label2id={v: k for k, v in labels.items()})
    BertForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def make_cache(base: Path, cache: Path) -> Path:
    """An HF hub cache (blobs, snapshots of symlinks, refs) with two copies of ``base``: 'alice/cached-tiny', whose
    weights download was interrupted (only a ``.incomplete`` blob), and 'alice/truncated-tiny', whose weights blob
    is cut short."""
    import hashlib

    for repo, cut in (("alice/cached-tiny", "interrupted"), ("alice/truncated-tiny", "truncated")):
        root = cache / f"models--{repo.replace('/', '--')}"
        commit = hashlib.sha1(repo.encode()).hexdigest()
        snapshot = root / "snapshots" / commit
        snapshot.mkdir(parents=True)
        (root / "blobs").mkdir()
        (root / "refs").mkdir()
        (root / "refs" / "main").write_text(commit)
        for file in sorted(base.iterdir()):
            content = file.read_bytes()
            blob = root / "blobs" / hashlib.sha256(content).hexdigest()
            if file.name == "model.safetensors":
                content = content[: len(content) // 3]
                if cut == "interrupted":  # the blob was never completed, so the snapshot has no link to it
                    blob.with_name(blob.name + ".incomplete").write_bytes(content)
                    continue
            blob.write_bytes(content)
            (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    return cache


@pytest.fixture(scope="module")
def kit(tiny_base, tmp_path_factory) -> Kit:
    from tests.tiny import make_tiny_base

    root = tmp_path_factory.mktemp("bad_inputs_kit")
    other = make_tiny_base(root / "other-base", n_embd=32)
    return Kit(
        base=tiny_base,
        adapter=make_adapter(tiny_base, root / "adapter"),
        other_adapter=make_adapter(other, root / "other-adapter"),
        classifier=make_classifier(tiny_base, root / "classifier"),
        cache=make_cache(tiny_base, root / "hf-cache"),
    )


# ---- running a case ------------------------------------------------------------------------------------------------


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Return path -> (size, mtime) of everything under ``folder`` (hidden leftovers included)."""
    return {str(p.relative_to(folder)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in folder.rglob("*")}


def run_subprocess(args: list[str]) -> tuple[int, str, str]:
    done = subprocess.run([sys.executable, "-m", "hubstyle.cli", *args], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ))
    return done.returncode, done.stdout, done.stderr


def run_space(call: Callable[[], object]) -> tuple[int, str, str]:
    """Return (1, "", message + newline) for the error the Space's handler turns into its one-line gr.Error."""
    from hubstyle.errors import HubstyleError

    try:
        call()
    except HubstyleError as err:
        return 1, "", f"error: {err}\n"
    return 0, "", ""


def tidy(message: str, env: Env) -> str:
    """Return the message with the case's own paths and the Hub's port replaced, for a table that reads the same."""
    message = message.replace(str(env.tmp), "CASE").replace(str(env.kit.base), "TINY_BASE")
    message = re.sub(r"/tmp/pytest-of-[^/\s']+/pytest-\d+/[^/\s']+", "TMP", message)
    if env.hub is not None:
        message = message.replace(env.hub.url, "HUB")
    return message


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_line_and_writes_nothing(case: Case, kit, tmp_path, monkeypatch, request, run_cli):
    env = Env(tmp_path, kit, monkeypatch, request)
    if case.hub:
        env.hub = request.getfixturevalue("hub_env")
    made = case.make(env)
    before = listing(tmp_path)
    commits_before = {k: len(r.commits) for k, r in env.hub.server._repos.items()} if env.hub else {}

    if case.via == "space":
        code, out, err = run_space(made)
    elif case.via == "subprocess":
        code, out, err = run_subprocess(made)
    else:
        code, out, err = run_cli(*made)

    assert code != 0, out + err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "Traceback" not in out + err
    assert case.expect in err, err
    assert listing(tmp_path) == before, "the failed command wrote files"
    assert not (tmp_path / "out").exists()
    if env.hub is not None:
        assert {k: len(r.commits) for k, r in env.hub.server._repos.items()} == commits_before
    RESULTS[case.name] = tidy(err.strip().removeprefix("error: "), env)


def test_debug_shows_the_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: [unclosed\n")
    for args, env in ((["--debug", "train", str(bad)], {}), (["train", str(bad)], {"HUBSTYLE_DEBUG": "1"})):
        done = subprocess.run([sys.executable, "-m", "hubstyle.cli", *args], capture_output=True, text=True,
                              env={**os.environ, **env}, timeout=120)
        assert done.returncode == 1
        assert "Traceback (most recent call last)" in done.stderr and "HubstyleError: bad YAML" in done.stderr


def render_table() -> str:
    """Return the Markdown table of every case: how it is made, what it must say, and what it said."""
    lines = [
        "# Bad input: cases and their messages",
        "",
        "Written by `HUBSTYLE_BAD_INPUTS_TABLE=tests/bad_inputs.md python -m pytest tests/test_bad_inputs.py`",
        "from the messages the commands printed (CASE: the case's folder, TINY_BASE: the tiny test model, HUB: the",
        "loopback Hub). Every case exits non-zero with this one line on stderr and writes nothing.",
        "",
        "| case | via | expected fragment | message (stderr, after `error: `) |",
        "|---|---|---|---|",
    ]
    for case in CASES:
        said, expect = (text.replace("|", "\\|") for text in (RESULTS.get(case.name, "(not run)"), case.expect))
        lines.append(f"| {case.name} | {case.via} | {expect} | {said} |")
    return "\n".join(lines) + "\n"


def test_the_table_lists_every_case():
    """tests/bad_inputs.md has a row per case, with its expected fragment inside the message it recorded."""
    target = os.environ.get("HUBSTYLE_BAD_INPUTS_TABLE")
    if target and len(RESULTS) == len(CASES):
        Path(target).write_text(render_table(), encoding="utf-8")
    rows = [line.split(" | ") for line in TABLE.read_text(encoding="utf-8").splitlines() if line.startswith("| ")][1:]
    assert [r[0].removeprefix("| ") for r in rows] == [c.name for c in CASES]
    for row, case in zip(rows, CASES):
        assert case.expect.replace("|", "\\|") in row[3], case.name
    assert len(CASES) >= 25
