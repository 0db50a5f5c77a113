"""Publishing to the Hugging Face Hub: push a folder as one commit, preview what a push would change, pull a repo.

Everything goes through huggingface_hub's ``HfApi``. Re-pushing unchanged files is a no-op because the Hub's
preupload answer carries each remote file's oid and the client drops files whose oid it already has; hubstyle
keeps no record of its own. The token (argument, ``HF_TOKEN`` or the ``hf auth login`` cache) is only ever handed
to ``HfApi``: never printed, logged or written.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

from hubstyle.errors import HubstyleError

REPO_TYPES = ("model", "dataset", "space")
DEFAULT_SPACE_SDK = "gradio"

ChangeStatus = Literal["added", "changed", "unchanged"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PushResult:
    """What a push did: the commit it made (None when nothing changed) and which files it changed."""

    repo_id: str
    repo_type: str
    commit_url: str | None
    changed_files: list[str]
    uploaded: bool


@dataclass(frozen=True)
class FileChange:
    """How one local file compares with the same path on the Hub."""

    path: str
    status: ChangeStatus
    size: int


def resolve_token(token: str | None = None) -> str | None:
    """Return the Hub token to use: ``token``, else ``HF_TOKEN``, else the ``hf auth login`` cache (None if none)."""
    if token:
        return token
    from huggingface_hub import get_token

    return get_token()


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    repo_type: str = "model",
    private: bool = False,
    commit_message: str,
    tag: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    space_sdk: str = DEFAULT_SPACE_SDK,
) -> PushResult:
    """Return what pushing ``folder`` to ``repo_id`` did: creates the repo if needed, then one commit (or none).

    ``tag`` tags the pushed commit; a tag that already points at that commit is fine, one pointing elsewhere is an
    error. ``private`` applies when the repo is created; pushing ``private=True`` to an existing public repo is
    refused rather than publishing what was meant to stay private.
    """
    folder = _check_folder(folder)
    _check_repo(repo_id, repo_type)
    if not commit_message or not commit_message.strip():
        raise HubstyleError("the commit message is empty; say what this push changes")
    token = resolve_token(token)
    if not token:
        raise HubstyleError("no Hub token found: set HF_TOKEN to a token with write access or run `hf auth login`")
    api = _api(endpoint, token)
    with _hub_errors(api.endpoint, repo_id, repo_type):
        api.create_repo(
            repo_id,
            repo_type=repo_type,
            private=private,
            exist_ok=True,
            space_sdk=space_sdk if repo_type == "space" else None,
        )
        head, remote, is_private = _remote_state(api, repo_id, repo_type)
        if private and not is_private:
            raise HubstyleError(
                f"{repo_type} repo '{repo_id}' already exists and is public; make it private on the Hub first "
                "or push with private=False"
            )
        changes = compare_files(_local_files(folder), remote)
        tagged = _tags(api, repo_id, repo_type).get(tag) if tag else None
        if tagged is not None and (tagged != head or any(c.status != "unchanged" for c in changes)):
            raise HubstyleError(_tag_taken(tag, repo_id, tagged))  # refused before uploading anything
        commit = api.upload_folder(
            folder_path=folder, repo_id=repo_id, repo_type=repo_type, commit_message=commit_message
        )
        uploaded = commit.oid != head
        if tag and tagged is None:
            api.create_tag(repo_id, repo_type=repo_type, tag=tag, revision=commit.oid)
        elif tag and tagged != commit.oid:
            raise HubstyleError(_tag_taken(tag, repo_id, tagged))
    changed = [c.path for c in changes if c.status != "unchanged"] if uploaded else []
    logger.info("pushed %s to %s repo %s: %d file(s) changed", folder, repo_type, repo_id, len(changed))
    return PushResult(repo_id, repo_type, commit.commit_url if uploaded else None, changed, uploaded)


def dry_run(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    repo_type: str = "model",
    revision: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
) -> list[FileChange]:
    """Return, for every file a push of ``folder`` would send, whether it is added, changed or unchanged.

    Only reads from the Hub (one repo-info call) and never creates the repo. When the repo does not exist (or this
    token cannot see it) or the Hub cannot be reached, every file is "added".
    """
    from huggingface_hub.errors import OfflineModeIsEnabled, RepositoryNotFoundError

    folder = _check_folder(folder)
    _check_repo(repo_id, repo_type)
    api = _api(endpoint, resolve_token(token))
    remote: dict | None
    with _hub_errors(api.endpoint, repo_id, repo_type, revision):
        try:
            _, remote, _ = _remote_state(api, repo_id, repo_type, revision)
        except RepositoryNotFoundError:
            remote = None  # a push would create it
        except (OfflineModeIsEnabled, _transport_error()):
            logger.warning("cannot reach the Hub at %s; listing every file as added", api.endpoint)
            remote = None
    return compare_files(_local_files(folder), remote)


def pull(
    repo_id: str,
    *,
    repo_type: str = "model",
    revision: str | None = None,
    local_dir: str | os.PathLike | None = None,
    token: str | None = None,
    endpoint: str | None = None,
) -> Path:
    """Return the folder holding a download of ``repo_id`` at ``revision`` (the HF cache unless ``local_dir``)."""
    _check_repo(repo_id, repo_type)
    api = _api(endpoint, resolve_token(token))
    with _hub_errors(api.endpoint, repo_id, repo_type, revision):
        path = api.snapshot_download(repo_id=repo_id, repo_type=repo_type, revision=revision, local_dir=local_dir)
    return Path(path)


def compare_files(local: dict[str, Path], remote: dict | None) -> list[FileChange]:
    """Return the change status of each local file (path in repo -> file) against remote siblings (or None)."""
    changes = []
    for path, file in sorted(local.items()):
        size = file.stat().st_size
        sibling = (remote or {}).get(path)
        if sibling is None:
            status: ChangeStatus = "added"
        elif sibling.size is not None and sibling.size != size:
            status = "changed"
        elif sibling.lfs is not None:  # the Hub knows LFS files by the sha256 of their content
            status = "unchanged" if _sha256(file) == sibling.lfs.sha256 else "changed"
        else:  # and regular files by their git blob sha1
            status = "unchanged" if _git_sha1(file) == sibling.blob_id else "changed"
        changes.append(FileChange(path, status, size))
    return changes


def _api(endpoint: str | None, token: str | None):
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint, token=token)


def _check_folder(folder: str | os.PathLike) -> Path:
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise HubstyleError(f"folder '{folder}' does not exist; give the folder to publish (e.g. RUN/publish/adapter)")
    if not any(p.is_file() for p in path.rglob("*")):
        raise HubstyleError(f"folder '{folder}' has no files to publish")
    return path


def _check_repo(repo_id: str, repo_type: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if repo_type not in REPO_TYPES:
        raise HubstyleError(f"unknown repo type '{repo_type}'; use one of {', '.join(REPO_TYPES)}")
    if repo_id.count("/") != 1:
        raise HubstyleError(f"repo id '{repo_id}' must be 'namespace/name' (your user or an org, then the repo)")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise HubstyleError(f"invalid repo id '{repo_id}': {str(err).splitlines()[0]}") from err


def _local_files(folder: Path) -> dict[str, Path]:
    """Return path in repo -> local file, exactly the files ``upload_folder`` would send."""
    from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

    files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.glob("**/*")) if p.is_file()}
    kept = filter_repo_objects(files, ignore_patterns=list(DEFAULT_IGNORE_PATTERNS))
    return {path: files[path] for path in kept}


def _remote_state(api, repo_id: str, repo_type: str, revision: str | None = None) -> tuple[str, dict, bool]:
    """Return the repo's head commit, its files (path -> sibling with size, blob id, lfs sha256) and privacy."""
    info = api.repo_info(repo_id, repo_type=repo_type, revision=revision, files_metadata=True)
    return info.sha, {s.rfilename: s for s in info.siblings or []}, bool(info.private)


def _tags(api, repo_id: str, repo_type: str) -> dict[str, str]:
    return {ref.name: ref.target_commit for ref in api.list_repo_refs(repo_id, repo_type=repo_type).tags}


def _tag_taken(tag: str, repo_id: str, target: str) -> str:
    return f"tag '{tag}' of '{repo_id}' already points at commit {target[:8]}, not at this push; choose a new tag"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _git_sha1(path: Path) -> str:
    digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _transport_error() -> type[Exception]:
    """Return the HTTP client's base class for "could not talk to the server" (connect, timeout, protocol)."""
    try:
        from huggingface_hub.utils import httpx
    except ImportError:  # pragma: no cover - older huggingface_hub
        import httpx
    return httpx.TransportError


@contextlib.contextmanager
def _hub_errors(endpoint: str, repo_id: str, repo_type: str, revision: str | None = None) -> Iterator[None]:
    """Turn huggingface_hub's exceptions into a one-line ``HubstyleError`` that says what to do."""
    try:
        yield
    except HubstyleError:
        raise
    except Exception as err:
        message = _explain(err, endpoint, repo_id, repo_type, revision)
        if message is None:
            raise
        raise HubstyleError(message) from err


def _explain(err: BaseException, endpoint: str, repo_id: str, repo_type: str, revision: str | None) -> str | None:
    from huggingface_hub.errors import (
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    namespace = repo_id.split("/")[0]
    seen: BaseException | None = err
    while seen is not None:  # uploads wrap the HTTP error in a RuntimeError: look down the chain
        if isinstance(seen, RepositoryNotFoundError):
            return (
                f"{repo_type} repo '{repo_id}' does not exist on the Hub at {endpoint} (or is private to others); "
                "check the repo id"
            )
        if isinstance(seen, RevisionNotFoundError):
            return (
                f"revision '{revision or 'main'}' does not exist in {repo_type} repo '{repo_id}'; "
                "use a branch, tag or commit that does"
            )
        if isinstance(seen, HfHubHTTPError) and seen.response is not None:
            status = seen.response.status_code
            if status == 401:
                return (
                    "the Hub rejected the token (401): set HF_TOKEN to a token with write access "
                    "or run `hf auth login`"
                )
            if status == 403:
                return (
                    f"no write access to namespace '{namespace}' on the Hub (403): use a repo id under your own user "
                    "or an org where you can write"
                )
            detail = " ".join((seen.server_message or str(seen)).split())
            return f"the Hub refused the request for {repo_type} repo '{repo_id}' ({status}): {detail}"
        if isinstance(seen, OfflineModeIsEnabled):
            return (
                f"HF_HUB_OFFLINE is set, so the Hub at {endpoint} is not contacted; "
                "unset HF_HUB_OFFLINE to push or pull"
            )
        if isinstance(seen, _transport_error()):
            return f"cannot reach the Hub at {endpoint}: check the network, or HF_ENDPOINT if you set it"
        seen = seen.__cause__ or seen.__context__
    return None
