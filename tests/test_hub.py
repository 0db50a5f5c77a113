"""hubstyle.hub against the loopback Hub: pushes, no-op re-pushes, dry runs, privacy, errors, and no token leaks."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi
from huggingface_hub.errors import RepositoryNotFoundError
from safetensors.torch import save_file

from hubstyle.errors import HubstyleError
from hubstyle.hub import FileChange, dry_run, pull, push_folder
from tests.hubserver import INVALID_TOKEN, OTHER_TOKEN, READ_ONLY_TOKEN

TOKEN_401 = "the Hub rejected the token (401): set HF_TOKEN to a token with write access or run `hf auth login`"


def make_adapter(root: Path) -> Path:
    """A small adapter folder: safetensors weights (LFS on the Hub), config and card (regular files)."""
    folder = root / "adapter"
    folder.mkdir(parents=True)
    save_file({"lora_A": torch.ones(4, 8), "lora_B": torch.zeros(8, 4)}, folder / "adapter_model.safetensors")
    (folder / "adapter_config.json").write_text('{"r": 4, "lora_alpha": 8, "peft_type": "LORA"}\n')
    (folder / "README.md").write_text("---\nlibrary_name: peft\ntags: [style]\n---\n# Shakespearean style\n")
    return folder


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_push_creates_the_repo_and_commits_the_folder(hub_env, tmp_path):
    server = hub_env.server
    folder = make_adapter(tmp_path)

    result = push_folder(folder, "alice/shakespeare-lora", commit_message="Add style adapter")

    last = server.commits("alice/shakespeare-lora")[-1]
    assert result.uploaded and result.repo_id == "alice/shakespeare-lora" and result.repo_type == "model"
    assert result.commit_url == f"{server.url}/alice/shakespeare-lora/commit/{last.oid}"
    assert last.message == "Add style adapter"
    assert result.changed_files == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    stored = server.files("alice/shakespeare-lora")
    assert {k: v for k, v in stored.items() if k != ".gitattributes"} == files_of(folder)
    assert last.files["adapter_model.safetensors"].lfs and not last.files["adapter_config.json"].lfs
    assert server.repo("alice/shakespeare-lora").private is False


def test_second_push_of_the_same_folder_uploads_nothing(hub_env, tmp_path):
    server = hub_env.server
    folder = make_adapter(tmp_path)
    push_folder(folder, "alice/shakespeare-lora", commit_message="v1")
    commits, uploaded, logged = len(server.commits("alice/shakespeare-lora")), server.uploaded_bytes, len(server.log)

    again = push_folder(folder, "alice/shakespeare-lora", commit_message="v1 again")

    assert again.uploaded is False and again.commit_url is None and again.changed_files == []
    assert len(server.commits("alice/shakespeare-lora")) == commits
    assert server.uploaded_bytes == uploaded
    assert not [e for e in server.log[logged:] if e.method == "PUT" or "/commit/" in e.path]

    (folder / "adapter_config.json").write_text('{"r": 8, "lora_alpha": 16, "peft_type": "LORA"}\n')
    third = push_folder(folder, "alice/shakespeare-lora", commit_message="rank 8")
    assert third.uploaded and third.changed_files == ["adapter_config.json"]
    assert server.uploaded_bytes - uploaded == (folder / "adapter_config.json").stat().st_size


def test_dry_run_compares_with_the_hub_and_writes_nothing(hub_env, tmp_path):
    server = hub_env.server
    folder = make_adapter(tmp_path)
    logged = len(server.log)
    assert dry_run(folder, "alice/new-style") == [
        FileChange("README.md", "added", (folder / "README.md").stat().st_size),
        FileChange("adapter_config.json", "added", (folder / "adapter_config.json").stat().st_size),
        FileChange("adapter_model.safetensors", "added", (folder / "adapter_model.safetensors").stat().st_size),
    ]
    assert server.repo("alice/new-style") is None  # a dry run never creates the repo
    assert {e.method for e in server.log[logged:]} == {"GET"}

    push_folder(folder, "alice/new-style", commit_message="v1")
    save_file({"lora_A": torch.full((4, 8), 2.0), "lora_B": torch.zeros(8, 4)}, folder / "adapter_model.safetensors")
    (folder / "loss.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    commits, logged = len(server.commits("alice/new-style")), len(server.log)

    changes = {c.path: c.status for c in dry_run(folder, "alice/new-style")}

    assert changes == {
        "README.md": "unchanged",
        "adapter_config.json": "unchanged",
        "adapter_model.safetensors": "changed",
        "loss.png": "added",
    }
    assert {e.method for e in server.log[logged:]} == {"GET"}
    assert len(server.commits("alice/new-style")) == commits
    # the dry run agrees with what the client then actually uploads
    result = push_folder(folder, "alice/new-style", commit_message="v2")
    assert result.changed_files == ["adapter_model.safetensors", "loss.png"]


def test_files_removed_locally_are_deleted_on_the_hub_and_the_dry_run_says_so(hub_env, tmp_path):
    server = hub_env.server
    folder = make_adapter(tmp_path)
    (folder / "plots").mkdir()
    (folder / "plots" / "loss.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    push_folder(folder, "alice/pruned", commit_message="v1")
    (folder / "plots" / "loss.png").unlink()
    (folder / "adapter_config.json").unlink()
    logged = len(server.log)

    changes = dry_run(folder, "alice/pruned")

    assert {c.path: c.status for c in changes} == {
        "README.md": "unchanged", "adapter_model.safetensors": "unchanged",
        "adapter_config.json": "deleted", "plots/loss.png": "deleted",  # .gitattributes is the Hub's: kept
    }
    assert next(c for c in changes if c.path == "plots/loss.png").size == 72
    assert {e.method for e in server.log[logged:]} == {"GET"}
    result = push_folder(folder, "alice/pruned", commit_message="v2")
    assert result.uploaded and result.changed_files == ["adapter_config.json", "plots/loss.png"]
    assert set(server.files("alice/pruned")) == {".gitattributes", "README.md", "adapter_model.safetensors"}
    assert dry_run(folder, "alice/pruned") == [c for c in changes if c.status == "unchanged"]


def test_tag_marks_the_pushed_commit(hub_env, tmp_path):
    server = hub_env.server
    folder = make_adapter(tmp_path)
    first = push_folder(folder, "alice/shakespeare-lora", commit_message="v1", tag="v1")
    head = server.commits("alice/shakespeare-lora")[-1].oid
    assert server.repo("alice/shakespeare-lora").tags == {"v1": head}
    assert first.commit_url.endswith(head)

    push_folder(folder, "alice/shakespeare-lora", commit_message="v1 again", tag="v1")  # same commit: fine
    (folder / "adapter_config.json").write_text('{"r": 16}\n')
    with pytest.raises(HubstyleError, match="tag 'v1' of 'alice/shakespeare-lora' already points at commit"):
        push_folder(folder, "alice/shakespeare-lora", commit_message="v2", tag="v1")
    assert server.commits("alice/shakespeare-lora")[-1].oid == head  # refused before uploading
    assert pull("alice/shakespeare-lora", revision="v1", local_dir=tmp_path / "v1").joinpath(
        "adapter_config.json").read_text() == '{"r": 4, "lora_alpha": 8, "peft_type": "LORA"}\n'


def test_private_repo_is_hidden_from_anonymous_readers(hub_env, tmp_path, monkeypatch):
    folder = make_adapter(tmp_path)
    push_folder(folder, "alice/secret-style", private=True, commit_message="private adapter")
    assert hub_env.server.repo("alice/secret-style").private is True
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=hub_env.url, token=False).repo_info("alice/secret-style")
    owner_copy = pull("alice/secret-style", local_dir=tmp_path / "owner")
    assert files_of(owner_copy)["adapter_model.safetensors"] == (folder / "adapter_model.safetensors").read_bytes()

    with pytest.raises(HubstyleError, match="does not exist"):
        pull("alice/secret-style", token=OTHER_TOKEN)
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubstyleError, match="model repo 'alice/secret-style' does not exist"):
        pull("alice/secret-style")
    # and hubstyle will not push "private" content into a repo that is public
    push_folder(folder, "alice/public-style", commit_message="v1", token=hub_env.token)
    with pytest.raises(HubstyleError, match="already exists and is public"):
        push_folder(folder, "alice/public-style", private=True, commit_message="v2", token=hub_env.token)


def test_hub_errors_become_one_line_hubstyle_errors(hub_env, tmp_path, monkeypatch):
    folder = make_adapter(tmp_path)
    push_folder(folder, "alice/public-style", commit_message="v1")
    no_write = "no write access to namespace '{}' on the Hub (403): use a repo id under your own user or an org " \
        "where you can write"
    cases = [
        (TOKEN_401, lambda: push_folder(folder, "alice/public-style", commit_message="x", token=INVALID_TOKEN)),
        (no_write.format("bob"), lambda: push_folder(folder, "bob/style", commit_message="x")),
        (no_write.format("alice"),
         lambda: push_folder(folder, "alice/public-style", commit_message="x", token=OTHER_TOKEN)),
        (no_write.format("alice"),
         lambda: push_folder(folder, "alice/other", commit_message="x", token=READ_ONLY_TOKEN)),
        (f"model repo 'alice/missing' does not exist on the Hub at {hub_env.url} (or is private to others); "
         "check the repo id", lambda: pull("alice/missing")),
        ("revision 'v9' does not exist in model repo 'alice/public-style'; use a branch, tag or commit that does",
         lambda: pull("alice/public-style", revision="v9")),
    ]
    for expected, call in cases:
        with pytest.raises(HubstyleError) as err:
            call()
        assert str(err.value) == expected
        assert "\n" not in str(err.value) and hub_env.token not in str(err.value)
    assert hub_env.server.repo("bob/style") is None and hub_env.server.repo("alice/other") is None
    assert len(hub_env.server.commits("alice/public-style")) == 2  # initial commit + v1: nothing else got in

    nowhere = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(HubstyleError) as err:
        push_folder(folder, "alice/public-style", commit_message="x", endpoint=nowhere)
    assert str(err.value) == f"cannot reach the Hub at {nowhere}: check the network, or HF_ENDPOINT if you set it"
    assert {c.status for c in dry_run(folder, "alice/public-style", endpoint=nowhere)} == {"added"}

    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubstyleError, match=r"^no Hub token found: set HF_TOKEN"):
        push_folder(folder, "alice/public-style", commit_message="x")
    with pytest.raises(HubstyleError, match="is not a Hub repo id; use 'namespace/name'"):
        push_folder(folder, "just-a-name", commit_message="x", token=hub_env.token)


def test_token_never_leaves_the_client(hub_env, tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    work = tmp_path / "work"
    folder = make_adapter(work)
    push_folder(folder, "alice/leak-check", commit_message="v1", tag="v1")
    dry_run(folder, "alice/leak-check")
    pull("alice/leak-check", local_dir=work / "pulled")
    with pytest.raises(HubstyleError):
        push_folder(folder, "bob/leak-check", commit_message="v1")

    token = hub_env.token.encode()
    scanned = 0
    for root in (work, hub_env.hf_home, hub_env.server.root):
        for path in root.rglob("*"):
            if path.is_file():
                scanned += 1
                assert token not in path.read_bytes(), path
    assert scanned > 10
    out, err = capsys.readouterr()
    assert hub_env.token not in out and hub_env.token not in err
    assert caplog.records and not [r for r in caplog.records if hub_env.token in r.getMessage()]
    assert hub_env.token not in caplog.text
