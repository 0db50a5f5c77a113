"""The loopback Hub answers the real huggingface_hub client the way the Hub does (uploads, no-op pushes, errors)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors.torch import load_file, save_file

from tests.hubserver import (
    INVALID_TOKEN,
    OTHER_TOKEN,
    READ_ONLY_TOKEN,
    WRITE_TOKEN,
    git_blob_oid,

)


def make_folder(root: Path) -> Path:
    """A small adapter-like folder: safetensors weights, a JSON config, a README and a nested text file."""
    folder = root / "adapter"
    (folder / "notes").mkdir(parents=True)
    save_file({"lora_A": torch.arange(12, dtype=torch.float32).reshape(3, 4)}, folder / "adapter_model.safetensors")
    (folder / "adapter_config.json").write_text('{"r": 4, "lora_alpha": 8}\n')
    (folder / "README.md").write_text("---\nlicense: mit\ntags: [style]\n---\n# A style adapter\n")
    (folder / "notes" / "train.txt").write_text("step 1 loss 3.2\n")
    return folder


def local_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def api(hub_env) -> HfApi:
    """A client for alice on the loopback Hub (``hub_env`` turns the test session's offline mode off)."""
    return HfApi(endpoint=hub_env.url, token=WRITE_TOKEN)


def test_create_repo_like_the_hub(hub_server, api):
    url = api.create_repo("alice/style-a")
    assert url.repo_id == "alice/style-a" and url.startswith(hub_server.url)
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo("alice/style-a")
    assert err.value.response.status_code == 409
    assert api.create_repo("alice/style-a", exist_ok=True).repo_id == "alice/style-a"

    initial = hub_server.commits("alice/style-a")
    assert [c.message for c in initial] == ["initial commit"]
    assert api.repo_info("alice/style-a").sha == initial[0].oid
    gitattributes = hub_server.files("alice/style-a")[".gitattributes"].decode()
    assert "*.safetensors filter=lfs" in gitattributes

    api.create_repo("stylelab/corpus", repo_type="dataset", private=True)
    api.create_repo("alice/demo", repo_type="space", space_sdk="gradio")
    assert api.repo_info("stylelab/corpus", repo_type="dataset").private is True
    assert api.space_info("alice/demo").sdk == "gradio"
    assert hub_server.repo("stylelab/corpus", "dataset").private
    assert hub_server.repo("stylelab/corpus") is None  # types are separate namespaces, as on the Hub
    assert api.whoami()["name"] == "alice"


def test_upload_and_download_round_trip(hub_server, api, tmp_path):
    folder = make_folder(tmp_path)
    api.create_repo("alice/style-a")
    info = api.upload_folder(folder_path=folder, repo_id="alice/style-a", commit_message="Add adapter")

    commits = hub_server.commits("alice/style-a")
    assert info.oid == commits[-1].oid and len(info.oid) == 40
    assert info.commit_url == f"{hub_server.url}/alice/style-a/commit/{info.oid}"
    assert commits[-1].message == "Add adapter" and commits[-1].parent == commits[0].oid
    expected = local_files(folder)
    assert sorted(api.list_repo_files("alice/style-a")) == sorted([".gitattributes", *expected])
    stored = hub_server.files("alice/style-a")
    assert all(stored[path] == content for path, content in expected.items())

    tree = {f.path: f for f in api.list_repo_tree("alice/style-a", recursive=True) if hasattr(f, "size")}
    weights = tree["adapter_model.safetensors"]
    assert weights.lfs is not None and weights.lfs.sha256 == hashlib.sha256(expected[weights.path]).hexdigest()
    assert tree["adapter_config.json"].lfs is None
    assert tree["adapter_config.json"].blob_id == git_blob_oid(expected["adapter_config.json"])

    cache = tmp_path / "cache"
    path = hf_hub_download("alice/style-a", "adapter_model.safetensors", endpoint=hub_server.url, token=WRITE_TOKEN,
                           cache_dir=cache)
    assert Path(path).read_bytes() == expected["adapter_model.safetensors"]
    assert torch.equal(load_file(path)["lora_A"], torch.arange(12, dtype=torch.float32).reshape(3, 4))
    snapshot = Path(snapshot_download("alice/style-a", endpoint=hub_server.url, token=WRITE_TOKEN,
                                      cache_dir=tmp_path / "cache2"))
    assert snapshot.name == info.oid
    downloaded = local_files(snapshot)
    assert {k: v for k, v in downloaded.items() if k != ".gitattributes"} == expected
    assert hub_server.errors == []


def test_identical_second_push_uploads_nothing(hub_server, api, tmp_path):
    folder = make_folder(tmp_path)
    api.create_repo("alice/style-a")
    first = api.upload_folder(folder_path=folder, repo_id="alice/style-a", commit_message="v1")
    assert hub_server.uploaded_bytes == sum(len(b) for b in local_files(folder).values())
    commits, uploaded, logged = len(hub_server.commits("alice/style-a")), hub_server.uploaded_bytes, len(hub_server.log)

    again = api.upload_folder(folder_path=folder, repo_id="alice/style-a", commit_message="v1 again")

    assert again.oid == first.oid
    assert len(hub_server.commits("alice/style-a")) == commits
    assert hub_server.uploaded_bytes == uploaded
    later = hub_server.log[logged:]
    assert not [e for e in later if e.method == "PUT" or "/commit/" in e.path]
    assert any("/preupload/" in e.path for e in later)  # the client asked, and dropped the files itself

    (folder / "adapter_config.json").write_text('{"r": 8, "lora_alpha": 16}\n')
    third = api.upload_folder(folder_path=folder, repo_id="alice/style-a", commit_message="r=8")
    assert third.oid != first.oid
    assert hub_server.uploaded_bytes - uploaded == len((folder / "adapter_config.json").read_bytes())
    assert hub_server.commits("alice/style-a")[-1].parent == first.oid


def test_tags_branches_and_deletes(hub_server, api, tmp_path):
    folder = make_folder(tmp_path)
    api.create_repo("alice/style-a")
    v1 = api.upload_folder(folder_path=folder, repo_id="alice/style-a", commit_message="v1")
    api.create_tag("alice/style-a", tag="v1", revision=v1.oid)
    with pytest.raises(HfHubHTTPError) as err:
        api.create_tag("alice/style-a", tag="v1")
    assert err.value.response.status_code == 409
    api.create_tag("alice/style-a", tag="v1", exist_ok=True)
    api.create_branch("alice/style-a", branch="dev")

    (folder / "adapter_config.json").write_text('{"r": 8}\n')
    api.create_commit("alice/style-a", commit_message="v2", operations=[
        CommitOperationAdd("adapter_config.json", folder / "adapter_config.json"),
        CommitOperationDelete("notes/"),
    ])
    refs = api.list_repo_refs("alice/style-a")
    assert {t.name: t.target_commit for t in refs.tags} == {"v1": v1.oid}
    assert {b.name for b in refs.branches} == {"main", "dev"}
    assert "notes/train.txt" not in api.list_repo_files("alice/style-a")
    assert "notes/train.txt" in api.list_repo_files("alice/style-a", revision="v1")

    for revision in ("v1", v1.oid, "dev"):
        path = hf_hub_download("alice/style-a", "adapter_config.json", revision=revision, endpoint=hub_server.url,
                               token=WRITE_TOKEN, cache_dir=tmp_path / "cache")
        assert Path(path).read_text() == '{"r": 4, "lora_alpha": 8}\n'
    path = hf_hub_download("alice/style-a", "adapter_config.json", endpoint=hub_server.url, token=WRITE_TOKEN,
                           cache_dir=tmp_path / "cache")
    assert Path(path).read_text() == '{"r": 8}\n'
    assert [c.title for c in api.list_repo_commits("alice/style-a")] == ["v2", "v1", "initial commit"]


def test_dataset_repos_use_their_url_prefix(hub_server, api, tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "train.jsonl").write_text('{"text": "To be, or not to be"}\n' * 600)  # > 10 kB -> LFS
    api.create_repo("stylelab/corpus", repo_type="dataset", private=True)
    api.upload_folder(folder_path=folder, repo_id="stylelab/corpus", repo_type="dataset", commit_message="data")
    assert any(e.path == "/datasets/stylelab/corpus.git/info/lfs/objects/batch" for e in hub_server.log)
    path = hf_hub_download("stylelab/corpus", "train.jsonl", repo_type="dataset", endpoint=hub_server.url,
                           token=WRITE_TOKEN, cache_dir=tmp_path / "cache")
    assert Path(path).read_bytes() == (folder / "train.jsonl").read_bytes()
    assert any(e.path == "/datasets/stylelab/corpus/resolve/main/train.jsonl" for e in hub_server.log)


def test_errors_raise_the_clients_exception_classes(hub_server, api, tmp_path):
    folder = make_folder(tmp_path)
    api.create_repo("alice/public")
    api.create_repo("alice/secret", private=True)
    anonymous = HfApi(endpoint=hub_server.url, token=False)

    with pytest.raises(HfHubHTTPError) as err:  # a bad token is a plain 401, not "repo not found"
        HfApi(endpoint=hub_server.url, token=INVALID_TOKEN).create_repo("alice/x")
    assert err.value.response.status_code == 401 and not isinstance(err.value, RepositoryNotFoundError)

    with pytest.raises(RepositoryNotFoundError) as err:  # anonymous: 401 for missing and private alike
        anonymous.repo_info("alice/missing")
    assert err.value.response.status_code == 401
    with pytest.raises(RepositoryNotFoundError):
        anonymous.repo_info("alice/secret")
    with pytest.raises(RepositoryNotFoundError) as err:  # authenticated: 404
        api.repo_info("alice/missing")
    assert err.value.response.status_code == 404
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=hub_server.url, token=OTHER_TOKEN).repo_info("alice/secret")
    assert HfApi(endpoint=hub_server.url, token=READ_ONLY_TOKEN).repo_info("alice/secret").private is True

    with pytest.raises(HfHubHTTPError) as err:  # bob cannot write to alice's repo
        HfApi(endpoint=hub_server.url, token=OTHER_TOKEN).upload_folder(
            folder_path=folder, repo_id="alice/public", commit_message="hijack")
    assert err.value.response.status_code == 403 and not isinstance(err.value, RepositoryNotFoundError)
    for token, repo_id in ((READ_ONLY_TOKEN, "alice/new"), (WRITE_TOKEN, "bob/new")):
        with pytest.raises(HfHubHTTPError) as err:
            HfApi(endpoint=hub_server.url, token=token).create_repo(repo_id)
        assert err.value.response.status_code == 403
        assert hub_server.repo(repo_id) is None

    with pytest.raises(EntryNotFoundError):
        hf_hub_download("alice/public", "nope.txt", endpoint=hub_server.url, token=WRITE_TOKEN,
                        cache_dir=tmp_path / "cache")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("alice/public", ".gitattributes", revision="v9", endpoint=hub_server.url,
                        token=WRITE_TOKEN, cache_dir=tmp_path / "cache")
    assert len(hub_server.commits("alice/public")) == 1  # nothing got through
    assert hub_server.errors == []


def test_hub_env_points_transformers_at_the_server(hub_env, tiny_base):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    server = hub_env.server
    api = HfApi()  # no endpoint, no token: both come from the patched environment
    api.create_repo("alice/tiny-base")
    api.upload_folder(folder_path=tiny_base, repo_id="alice/tiny-base", commit_message="tiny base")
    import huggingface_hub

    assert "model.safetensors" in huggingface_hub.list_repo_files("alice/tiny-base")

    model = AutoModelForCausalLM.from_pretrained("alice/tiny-base")
    tokenizer = AutoTokenizer.from_pretrained("alice/tiny-base")
    local = AutoModelForCausalLM.from_pretrained(tiny_base)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), local.state_dict().values()))
    assert tokenizer("To be, or not to be").input_ids == AutoTokenizer.from_pretrained(tiny_base)(
        "To be, or not to be").input_ids
    downloads = [e for e in server.log if e.method == "GET" and "/resolve/" in e.path]
    assert any(e.path.endswith("/model.safetensors") for e in downloads)
    assert list((hub_env.hf_home / "hub").glob("models--alice--tiny-base/snapshots/*/config.json"))
    assert server.errors == []


def test_hub_env_refuses_every_host_but_the_loopback_hub(hub_env, tmp_path):
    with pytest.raises(RuntimeError, match="only the loopback Hub is allowed"):
        hf_hub_download("openai-community/gpt2", "config.json", endpoint="https://huggingface.co",
                        cache_dir=tmp_path / "cache")
    assert HfApi().whoami()["name"] == "alice"  # while the loopback Hub answers as usual
