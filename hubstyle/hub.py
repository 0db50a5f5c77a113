"""Publishing to the Hugging Face Hub: push a folder as one commit, preview what a push would change, pull a repo.

Everything goes through huggingface_hub's ``HfApi``. Re-pushing unchanged files is a no-op because the Hub's
preupload answer carries each remote file's oid and the client drops files whose oid it already has; hubstyle
keeps no record of its own, so re-running a push that failed half way sends only what is missing. A push is one
commit per repo, so the Hub never shows part of one, and it leaves the repo holding exactly the folder: files
removed locally are deleted there too (``.gitattributes`` excepted), as the dry run lists. Calls that fail on a flaky network are retried with
exponential backoff and jitter (see ``RetryPolicy``), but only those huggingface_hub does not retry itself. The
token (argument, ``HF_TOKEN`` or the ``hf auth login`` cache) is only ever handed to ``HfApi``: never printed,
logged or written.
"""

from __future__ import annotations

import contextlib
import hashlib
import http
import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal, TypeVar

from hubstyle.errors import HubstyleError
from hubstyle.fsio import file_sha256
from hubstyle.repo_ids import check_repo_id

REPO_TYPES = ("model", "dataset", "space")
DEFAULT_SPACE_SDK = "gradio"

ChangeStatus = Literal["added", "changed", "unchanged", "deleted"]
# A push makes the repo hold exactly the folder: every remote file the folder lacks is deleted (huggingface_hub
# keeps .gitattributes, which the Hub needs, whatever the pattern).
DELETE_PATTERNS = ["*"]
KEPT_REMOTE_FILES = (".gitattributes",)

logger = logging.getLogger(__name__)
T = TypeVar("T")

# The statuses huggingface_hub's http_backoff retries; hubstyle retries the same ones on the calls it does not cover.
RETRY_STATUSES = (408, 429, 500, 502, 503, 504)


@dataclass(frozen=True)
class RetryPolicy:
    """How hubstyle retries a Hub call that failed on the way (5xx, 429, a dropped connection, a timeout).

    The n-th retry waits between half and all of ``min(max_wait, base_wait * 2**(n-1))`` seconds (exponential
    backoff, equal jitter), or the server's ``Retry-After`` when it sends one (429/503). A ``Retry-After`` over
    ``max_retry_after`` ends the push at once with a one-line error instead of sleeping.
    """

    attempts: int = 5
    base_wait: float = 1.0
    max_wait: float = 16.0
    max_retry_after: float = 60.0

    def wait(self, retry: int) -> float:
        """Return the seconds to wait before retry number ``retry`` (1-based)."""
        cap = min(self.max_wait, self.base_wait * 2 ** (retry - 1))
        return cap / 2 + random.uniform(0, cap / 2)


DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True)
class PushResult:
    """What a push did: the commit it made (None when nothing changed) and which files it changed."""

    repo_id: str
    repo_type: str
    commit_url: str | None
    changed_files: list[str]
    uploaded: bool
    retries: int = 0  # calls hubstyle retried (huggingface_hub's own retries of uploads are not counted)


@dataclass(frozen=True)
class FileChange:
    """How one local file compares with the same path on the Hub, or a Hub file the folder no longer has."""

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
    retry: RetryPolicy | None = None,
) -> PushResult:
    """Return what pushing ``folder`` to ``repo_id`` did: creates the repo if needed, then one commit (or none).

    ``tag`` tags the pushed commit; a tag that already points at that commit is fine, one pointing elsewhere is an
    error. ``private`` applies when the repo is created; pushing ``private=True`` to an existing public repo is
    refused rather than publishing what was meant to stay private. ``retry`` defaults to ``DEFAULT_RETRY``.
    """
    folder = _check_folder(folder)
    _check_repo(repo_id, repo_type)
    if not commit_message or not commit_message.strip():
        raise HubstyleError("the commit message is empty; say what this push changes")
    token = resolve_token(token)
    if not token:
        raise HubstyleError("no Hub token found: set HF_TOKEN to a token with write access or run `hf auth login`")
    api = _api(endpoint, token)
    step = _Retrier(retry or DEFAULT_RETRY, api.endpoint, f"{repo_type} repo '{repo_id}'")
    with _hub_errors(api.endpoint, repo_id, repo_type):
        step("create", lambda: api.create_repo(
            repo_id,
            repo_type=repo_type,
            private=private,
            exist_ok=True,
            space_sdk=space_sdk if repo_type == "space" else None,
        ))
        head, remote, is_private = step("read", lambda: _remote_state(api, repo_id, repo_type))
        if private and not is_private:
            raise HubstyleError(
                f"{repo_type} repo '{repo_id}' already exists and is public; make it private on the Hub first "
                "or push with private=False"
            )
        changes = compare_files(_local_files(folder), remote)
        tagged = step("read the tags of", lambda: _tags(api, repo_id, repo_type)).get(tag) if tag else None
        if tagged is not None and (tagged != head or any(c.status != "unchanged" for c in changes)):
            raise HubstyleError(_tag_taken(tag, repo_id, tagged))  # refused before uploading anything
        # One commit: a retry after a lost answer finds the files already there and commits nothing more.
        commit = step("upload to", lambda: api.upload_folder(
            folder_path=folder, repo_id=repo_id, repo_type=repo_type, commit_message=commit_message,
            delete_patterns=DELETE_PATTERNS,
        ))
        uploaded = commit.oid != head
        if tag and tagged is None:
            step("tag", lambda: _create_tag(api, repo_id, repo_type, tag, commit.oid))
        elif tag and tagged != commit.oid:
            raise HubstyleError(_tag_taken(tag, repo_id, tagged))
    changed = [c.path for c in changes if c.status != "unchanged"] if uploaded else []
    logger.info("pushed %s to %s repo %s: %d file(s) changed, %d retries", folder, repo_type, repo_id, len(changed),
                step.retries)
    return PushResult(repo_id, repo_type, commit.commit_url if uploaded else None, changed, uploaded, step.retries)


def dry_run(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    repo_type: str = "model",
    revision: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    retry: RetryPolicy | None = None,
) -> list[FileChange]:
    """Return, for every file a push of ``folder`` would send, whether it is added, changed or unchanged, and each
    file of the repo the push would delete (no longer in ``folder``).

    Only reads from the Hub (one repo-info call) and never creates the repo. When the repo does not exist (or this
    token cannot see it) or the Hub cannot be reached, every file is "added".
    """
    from huggingface_hub.errors import OfflineModeIsEnabled, RepositoryNotFoundError

    folder = _check_folder(folder)
    _check_repo(repo_id, repo_type)
    api = _api(endpoint, resolve_token(token))
    step = _Retrier(retry or DEFAULT_RETRY, api.endpoint, f"{repo_type} repo '{repo_id}'", _READ_HINT)
    remote: dict | None
    with _hub_errors(api.endpoint, repo_id, repo_type, revision):
        try:
            _, remote, _ = step("read", lambda: _remote_state(api, repo_id, repo_type, revision))
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
    retry: RetryPolicy | None = None,
) -> Path:
    """Return the folder holding a download of ``repo_id`` at ``revision`` (the HF cache unless ``local_dir``)."""
    _check_repo(repo_id, repo_type)
    api = _api(endpoint, resolve_token(token))
    step = _Retrier(retry or DEFAULT_RETRY, api.endpoint, f"{repo_type} repo '{repo_id}'", _READ_HINT)
    with _hub_errors(api.endpoint, repo_id, repo_type, revision):
        path = step("download", lambda: api.snapshot_download(
            repo_id=repo_id, repo_type=repo_type, revision=revision, local_dir=local_dir
        ))
    return Path(path)


def compare_files(local: dict[str, Path], remote: dict | None) -> list[FileChange]:
    """Return the change status of each local file (path in repo -> file) against remote siblings (or None), then
    the remote files a push deletes (at their size on the Hub)."""
    changes = []
    for path, file in sorted(local.items()):
        size = file.stat().st_size
        sibling = (remote or {}).get(path)
        if sibling is None:
            status: ChangeStatus = "added"
        elif sibling.size is not None and sibling.size != size:
            status = "changed"
        elif sibling.lfs is not None:  # the Hub knows LFS files by the sha256 of their content
            status = "unchanged" if file_sha256(file) == sibling.lfs.sha256 else "changed"
        else:  # and regular files by their git blob sha1
            status = "unchanged" if _git_sha1(file) == sibling.blob_id else "changed"
        changes.append(FileChange(path, status, size))
    for path, sibling in sorted((remote or {}).items()):
        if path not in local and path.rsplit("/", 1)[-1] not in KEPT_REMOTE_FILES:
            changes.append(FileChange(path, "deleted", sibling.size or 0))
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
    if repo_type not in REPO_TYPES:
        raise HubstyleError(f"unknown repo type '{repo_type}'; use one of {', '.join(REPO_TYPES)}")
    check_repo_id(repo_id, f"{repo_type} repo id")  # 'namespace/name': your user or an org, then the repo


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


def _create_tag(api, repo_id: str, repo_type: str, tag: str, oid: str) -> None:
    """Tag ``oid``; a 409 is fine when the tag already points there (a retry after the first answer was lost)."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        api.create_tag(repo_id, repo_type=repo_type, tag=tag, revision=oid)
    except HfHubHTTPError as err:
        if err.response is None or err.response.status_code != 409:
            raise
        target = _tags(api, repo_id, repo_type).get(tag)
        if target != oid:
            raise HubstyleError(_tag_taken(tag, repo_id, target or "?")) from err


def _tag_taken(tag: str, repo_id: str, target: str) -> str:
    return f"tag '{tag}' of '{repo_id}' already points at commit {target[:8]}, not at this push; choose a new tag"


def _git_sha1(path: Path) -> str:
    digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _http_module():
    """Return the HTTP client module huggingface_hub uses (httpx2 in 2.x, as ``huggingface_hub.utils.httpx``)."""
    try:
        from huggingface_hub.utils import httpx
    except ImportError:  # pragma: no cover - older huggingface_hub
        import httpx
    return httpx


def _transport_error() -> type[Exception]:
    """Return the HTTP client's base class for "could not talk to the server" (connect, timeout, protocol)."""
    return _http_module().TransportError


@dataclass(frozen=True)
class _Transient:
    """A failure worth retrying: the request it hit, its HTTP status (None: no answer) and any Retry-After."""

    method: str
    path: str
    status: int | None
    retry_after: float | None
    problem: str


def _transient(err: BaseException) -> _Transient | None:
    """Return what went wrong when ``err`` (or an exception it wraps) is a failure worth retrying, else None."""
    from huggingface_hub.errors import HfHubHTTPError

    httpx = _http_module()
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, HfHubHTTPError) and seen.response is not None:
            status = seen.response.status_code
            if status not in RETRY_STATUSES:
                return None
            request = seen.response.request
            retry_after = seen.response.headers.get("Retry-After", "")
            wait = float(retry_after) if retry_after.strip().isdigit() else None
            phrase = http.HTTPStatus(status).phrase if status in http.HTTPStatus._value2member_map_ else "error"
            return _Transient(request.method, request.url.path, status, wait, f"the Hub answered {status} {phrase}")
        if isinstance(seen, httpx.TransportError) and not isinstance(seen, httpx.ConnectError):
            # a refused connection means a wrong endpoint far more often than a blip: not retried (so it fails fast)
            try:
                request = seen.request
            except RuntimeError:
                return None
            if isinstance(seen, httpx.TimeoutException):
                problem = "the Hub did not answer in time"
            elif isinstance(seen, httpx.RemoteProtocolError):
                problem = "the Hub dropped the connection"
            else:
                problem = f"the network failed ({type(seen).__name__})"
            return _Transient(request.method, request.url.path, None, None, problem)
        seen = seen.__cause__ or seen.__context__
    return None


def _retried_by_client(path: str) -> bool:
    """Return whether huggingface_hub's http_backoff already retried a request to ``path`` (so hubstyle does not).

    huggingface_hub 2.4 retries preupload, the LFS batch/upload/verify calls, file downloads and paginated listings,
    all with up to 5 retries; it does not retry create_repo, repo_info, list_repo_refs, create_tag, the README
    check (validate-yaml) or the commit itself. Those all live under /api/.
    """
    return "/api/" not in path or any(part in path for part in ("/preupload/", "/tree/", "/commits/"))


_PUSH_HINT = "nothing was half-published: run the same command again to finish (files on the Hub are not re-sent)"
_READ_HINT = "run the same command again later"


class _Retrier:
    """Runs one step of a Hub operation, retrying transient failures per a ``RetryPolicy``; counts its retries."""

    def __init__(self, policy: RetryPolicy, endpoint: str, target: str, hint: str = _PUSH_HINT):
        self.policy, self.endpoint, self.target, self.hint = policy, endpoint, target, hint
        self.retries = 0

    def __call__(self, step: str, call: Callable[[], T]) -> T:
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                return call()
            except Exception as err:
                failure = _transient(err)
                if failure is None:
                    raise
                by_client = _retried_by_client(failure.path)
                if failure.retry_after is not None and failure.retry_after > self.policy.max_retry_after:
                    raise HubstyleError(
                        f"the Hub at {self.endpoint} is rate-limiting requests ({failure.status}) and asks to wait "
                        f"{failure.retry_after:.0f}s before the next one; run the same command again after that"
                    ) from err
                if by_client or attempt >= self.policy.attempts:
                    tries = "huggingface_hub's own retries" if by_client else f"{attempt} attempts"
                    raise HubstyleError(
                        f"could not {step} {self.target}: {failure.problem} to {failure.method} {failure.path} "
                        f"after {tries} in {time.monotonic() - started:.1f}s; {self.hint}"
                    ) from err
                wait = max(failure.retry_after or 0.0, self.policy.wait(attempt))
                self.retries += 1
                logger.info("%s to %s %s; retry %d of %d in %.1fs", failure.problem, failure.method, failure.path,
                            attempt, self.policy.attempts - 1, wait)
                time.sleep(wait)


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
