"""A loopback Hugging Face Hub for tests: the real huggingface_hub client pushes to and pulls from it on 127.0.0.1.

It speaks the part of the Hub protocol that huggingface_hub 2.x (with ``HF_HUB_DISABLE_XET=1``) uses to create
repos, upload (preupload -> LFS batch -> PUT -> verify -> ndjson commit), list, tag and download (``/resolve``),
and it answers errors with the same status codes and ``X-Error-Code``/``X-Error-Message`` headers as the Hub, so
the client raises its own exception classes. Blobs are stored by sha256 under a folder, and every repo keeps its
commit history (each commit holds the full file tree), so tests can check exactly what a push did. Setting
``server.fault_mode = FaultMode(...)`` makes it flaky (seeded 5xx/429 answers, dropped connections, slow answers);
``server.faults`` lists what was injected.

Fixtures: ``hub_server`` (a fresh server per test) and ``hub_env`` (the same server, with huggingface_hub,
transformers and peft pointed at it, online, with a fresh HF_HOME and ``HF_TOKEN`` set).
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import random
import re
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator, Mapping
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest

WRITE_TOKEN = "hf_loopbackWriteAliceToken0123456789abcdef"
READ_ONLY_TOKEN = "hf_loopbackReadAliceToken0123456789abcdef"
OTHER_TOKEN = "hf_loopbackWriteBobToken0123456789abcdef"
INVALID_TOKEN = "hf_loopbackNotAValidToken0123456789abcdef"
USERNAME = "alice"
ORG = "stylelab"
OTHER_USERNAME = "bob"

# token -> (username, namespaces it can write to)
DEFAULT_TOKENS: dict[str, tuple[str, frozenset[str]]] = {
    WRITE_TOKEN: (USERNAME, frozenset({USERNAME, ORG})),
    READ_ONLY_TOKEN: (USERNAME, frozenset()),
    OTHER_TOKEN: (OTHER_USERNAME, frozenset({OTHER_USERNAME})),
}
# org -> members (members can read the org's private repos; writing needs a token that lists the org)
DEFAULT_ORGS: dict[str, frozenset[str]] = {ORG: frozenset({USERNAME})}

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
DEFAULT_BRANCH = "main"
LFS_THRESHOLD = 10_000  # bytes; the Hub's is 10 MB, kept small so tests exercise the LFS path with tiny files

# The .gitattributes the Hub puts in the initial commit of a new model/space repo (datasets add media types).
_LFS_PATTERNS = [
    "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*", "*.mlmodel",
    "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb", "*.pickle", "*.pkl", "*.pt",
    "*.pth", "*.rar", "*.safetensors", "saved_model/**/*", "*.tar.*", "*.tar", "*.tflite", "*.tgz", "*.wasm",
    "*.xz", "*.zip", "*.zst", "*tfevents*",
]
_DATASET_LFS_PATTERNS = ["*.mp3", "*.ogg", "*.wav", "*.jpg", "*.jpeg", "*.png", "*.webp", "*.gif"]
_REPO_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?$")


def default_gitattributes(repo_type: str) -> bytes:
    """Return the .gitattributes of a fresh repo of ``repo_type``, as the Hub writes it."""
    patterns = _LFS_PATTERNS + (_DATASET_LFS_PATTERNS if repo_type == "dataset" else [])
    return "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in patterns).encode()


def git_blob_oid(content: bytes) -> str:
    """Return git's sha1 of a blob (what the Hub reports as a regular file's oid)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """Return the git-lfs pointer file that git stores in place of an LFS file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class FileEntry:
    """One file of a commit's tree: content address (sha256), size, whether it is LFS, and its git oid."""

    sha256: str
    size: int
    lfs: bool
    oid: str  # git blob sha1 of the content (regular) or of the LFS pointer (lfs), like the Hub's "oid"

    @classmethod
    def make(cls, sha256: str, size: int, lfs: bool, content: bytes | None = None) -> "FileEntry":
        oid = git_blob_oid(lfs_pointer(sha256, size)) if lfs else git_blob_oid(content or b"")
        return cls(sha256=sha256, size=size, lfs=lfs, oid=oid)


@dataclass(frozen=True)
class Commit:
    """A commit: its oid, parent, message, author, date and the full file tree after it."""

    oid: str
    parent: str | None
    message: str
    description: str
    author: str
    date: str
    files: Mapping[str, FileEntry]


@dataclass
class Repo:
    """A repo's state: visibility, refs and every commit (the order they were made in)."""

    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    sdk: str | None = None
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)
    lfs_objects: set[str] = field(default_factory=set)
    uploaded_bytes: int = 0

    @property
    def namespace(self) -> str:
        return self.repo_id.split("/")[0]


@dataclass(frozen=True)
class LogEntry:
    """One request the server answered: method, path (no query), status and body bytes received."""

    method: str
    path: str
    query: str
    status: int
    received: int
    authenticated: bool


@dataclass(frozen=True)
class Identity:
    username: str
    writable: frozenset[str]
    readable: frozenset[str]


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> dict:
        try:
            return json.loads(self.body or b"{}")
        except json.JSONDecodeError as err:
            raise HubError(400, f"Invalid JSON body: {err}") from err

    def flag(self, name: str) -> bool:
        return self.query.get(name, ["false"])[-1].lower() in ("1", "true")


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of_json(cls, data, status: int = 200, headers: dict[str, str] | None = None) -> "Response":
        return cls(status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})})


FAULT_KINDS = ("500", "drop", "drop-after", "slow")


@dataclass
class FaultMode:
    """Seeded faults on a share of requests, like a flaky network in front of the Hub.

    Each request matching ``paths`` (a regex on the URL path; None: every request) draws from one seeded generator:
    with probability ``rate`` it gets one of ``kinds``: "500" (answered 500 before anything is done), "429" and
    "503" (answered with ``Retry-After: retry_after``), "drop" (the connection is closed before anything is done),
    "drop-after" (the request is carried out, then the connection is closed: the answer is lost) and "slow" (answered
    normally after ``slow_s`` seconds). ``limit`` caps how many faults this mode injects (None: no cap).
    """

    rate: float = 0.3
    seed: int = 0
    kinds: tuple[str, ...] = FAULT_KINDS
    slow_s: float = 0.3
    retry_after: int = 1
    paths: str | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._injected = 0

    def draw(self, method: str, path: str) -> str | None:
        """Return the fault this request gets, or None (called under the server's lock, in arrival order)."""
        if self.paths is not None and not re.search(self.paths, f"{method} {path}"):
            return None
        if self.limit is not None and self._injected >= self.limit:
            return None
        kind = self._rng.choice(self.kinds) if self._rng.random() < self.rate else None
        self._injected += kind is not None
        return kind


@dataclass(frozen=True)
class Fault:
    """One injected fault: its kind and the request it hit."""

    kind: str
    method: str
    path: str


class HubError(Exception):
    """An error answered the way the Hub answers it: status, message (JSON + X-Error-Message), optional code."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None,
                 extra: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, dict(headers or {})
        self.extra = dict(extra or {})  # more JSON fields (the Hub's 409 on create carries the repo url)

    def response(self) -> Response:
        headers = {"X-Error-Message": self.message.encode("latin-1", "replace").decode("latin-1"), **self.headers}
        if self.code:
            headers["X-Error-Code"] = self.code
        return Response.of_json({"error": self.message, **self.extra}, self.status, headers)


class HubServer:
    """A Hub-protocol HTTP server on 127.0.0.1 that keeps repos under ``root``; start() before use."""

    WRITE_TOKEN = WRITE_TOKEN
    READ_ONLY_TOKEN = READ_ONLY_TOKEN
    OTHER_TOKEN = OTHER_TOKEN
    INVALID_TOKEN = INVALID_TOKEN
    username = USERNAME
    org = ORG
    other_username = OTHER_USERNAME

    def __init__(
        self,
        root: Path,
        tokens: Mapping[str, tuple[str, frozenset[str] | set[str]]] | None = None,
        orgs: Mapping[str, frozenset[str] | set[str]] | None = None,
        lfs_threshold: int = LFS_THRESHOLD,
    ):
        self.root = Path(root)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        self.tokens = {t: (u, frozenset(w)) for t, (u, w) in (tokens or DEFAULT_TOKENS).items()}
        self.orgs = {o: frozenset(m) for o, m in (orgs or DEFAULT_ORGS).items()}
        self.lfs_threshold = lfs_threshold
        self.log: list[LogEntry] = []
        self.errors: list[str] = []  # 5xx answers and requests to routes this server does not know
        self.fault_mode: FaultMode | None = None  # set it to make the server flaky (see FaultMode)
        self.faults: list[Fault] = []  # every fault injected so far, in order
        self._repos: dict[tuple[str, str], Repo] = {}
        self._tickets: dict[str, tuple[tuple[str, str], str, int]] = {}  # LFS upload ticket -> (repo key, oid, size)
        self._lock = threading.RLock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""
        self._routes = self._make_routes()

    # ---- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> "HubServer":
        """Start serving on a free port of 127.0.0.1 and return self (``url`` is set)."""
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        httpd.daemon_threads = True
        httpd.hub = self  # type: ignore[attr-defined]
        self._httpd = httpd
        self.url = f"http://127.0.0.1:{httpd.server_address[1]}"
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- what tests read -------------------------------------------------------------------------------------

    def commits(self, repo_id: str, repo_type: str = "model") -> list[Commit]:
        """Return every commit of the repo in the order it was made (the first is the Hub's initial commit)."""
        with self._lock:
            repo = self._repos.get((repo_type, repo_id))
            return list(repo.commits.values()) if repo else []

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo | None:
        """Return the repo's state, or None when it does not exist."""
        with self._lock:
            return self._repos.get((repo_type, repo_id))

    def files(self, repo_id: str, repo_type: str = "model", revision: str = DEFAULT_BRANCH) -> dict[str, bytes]:
        """Return path -> content of every file of the repo at ``revision``."""
        with self._lock:
            repo = self._repos[(repo_type, repo_id)]
            commit = repo.commits[self._resolve(repo, revision)]
            return {path: self._blob(entry.sha256) for path, entry in sorted(commit.files.items())}

    @property
    def uploaded_bytes(self) -> int:
        """Bytes of file content received so far (LFS PUT bodies plus regular files inside commits), all repos."""
        with self._lock:
            return sum(repo.uploaded_bytes for repo in self._repos.values())

    # ---- storage ---------------------------------------------------------------------------------------------

    def _blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256[:2] / sha256

    def _store(self, content: bytes) -> str:
        sha = hashlib.sha256(content).hexdigest()
        path = self._blob_path(sha)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(content)
            tmp.replace(path)
        return sha

    def _blob(self, sha256: str) -> bytes:
        return self._blob_path(sha256).read_bytes()

    def _persist(self, repo: Repo) -> None:
        path = self.root / "repos" / f"{repo.repo_type}s" / f"{repo.repo_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        state = asdict(repo)
        state["lfs_objects"] = sorted(repo.lfs_objects)
        path.write_text(json.dumps(state, indent=1))

    def _add_commit(self, repo: Repo, branch: str, files: dict[str, FileEntry], message: str, description: str,
                    author: str) -> Commit:
        parent = repo.branches.get(branch)
        date = _now()
        tree = hashlib.sha1("".join(f"{p}\0{e.oid}\0{int(e.lfs)}\n" for p, e in sorted(files.items())).encode())
        raw = f"tree {tree.hexdigest()}\nparent {parent}\nauthor {author} {date} {time.perf_counter_ns()}\n\n{message}"
        commit = Commit(hashlib.sha1(raw.encode()).hexdigest(), parent, message, description, author, date,
                        dict(files))
        repo.commits[commit.oid] = commit
        repo.branches[branch] = commit.oid
        self._persist(repo)
        return commit

    # ---- auth and lookups ------------------------------------------------------------------------------------

    def _identity(self, req: Request) -> Identity | None:
        auth = req.headers.get("authorization") or ""
        if not auth:
            return None
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or token.strip() not in self.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        token = token.strip()
        username, writable = self.tokens[token]
        member_of = {org for org, members in self.orgs.items() if username in members}
        return Identity(username, writable, frozenset({username} | member_of | writable))

    def _readable(self, ident: Identity | None, repo_type: str, repo_id: str) -> Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None or (repo.private and (ident is None or repo.namespace not in ident.readable)):
            # Like the Hub: 401 when anonymous, 404 when authenticated, for missing and hidden repos alike.
            raise HubError(401 if ident is None else 404, "Repository not found", "RepoNotFound")
        return repo

    def _writable(self, ident: Identity | None, repo_type: str, repo_id: str) -> Repo:
        repo = self._readable(ident, repo_type, repo_id)
        if ident is None:
            raise HubError(401, "You must be authenticated to write to this repo")
        if repo.namespace not in ident.writable:
            raise HubError(403, f"You don't have write access to {repo_type} {repo_id} with this token")
        return repo

    def _resolve(self, repo: Repo, revision: str) -> str:
        rev = revision
        for prefix, refs in (("refs/heads/", repo.branches), ("refs/tags/", repo.tags)):
            if rev.startswith(prefix) and rev[len(prefix):] in refs:
                return refs[rev[len(prefix):]]
        if rev in repo.branches:
            return repo.branches[rev]
        if rev in repo.tags:
            return repo.tags[rev]
        if re.fullmatch(r"[0-9a-f]{7,40}", rev):
            found = [oid for oid in repo.commits if oid.startswith(rev)]
            if len(found) == 1:
                return found[0]
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _lfs_patterns(self, commit: Commit) -> list[str]:
        entry = commit.files.get(".gitattributes")
        if entry is None:
            return []
        patterns = []
        for line in self._blob(entry.sha256).decode(errors="replace").splitlines():
            parts = line.split()
            if len(parts) > 1 and not parts[0].startswith("#") and "filter=lfs" in parts[1:]:
                patterns.append(parts[0])
        return patterns

    def _upload_mode(self, path: str, size: int, sample: bytes, lfs_patterns: list[str]) -> str:
        if _matches(path, lfs_patterns) or size > self.lfs_threshold or b"\0" in sample:
            return "lfs"
        return "regular"

    # ---- routing ---------------------------------------------------------------------------------------------

    def _make_routes(self) -> list[tuple[tuple[str, ...], re.Pattern, Callable[..., Response]]]:
        api = r"^/api/(?P<kind>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)"
        hub = r"^/(?:(?P<kind>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+)"  # model repos have no prefix
        table = [
            ("GET", r"^/api/whoami-v2$", self._whoami),
            ("POST", r"^/api/repos/create$", self._create_repo),
            ("DELETE", r"^/api/repos/delete$", self._delete_repo),
            ("POST", r"^/api/validate-yaml$", self._validate_yaml),
            ("GET", api + r"(?:/revision/(?P<rev>[^/]+))?$", self._repo_info),
            ("GET", api + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$", self._tree),
            ("POST", api + r"/paths-info/(?P<rev>[^/]+)$", self._paths_info),
            ("GET", api + r"/refs$", self._refs),
            ("GET", api + r"/commits/(?P<rev>[^/]+)$", self._list_commits),
            ("POST", api + r"/preupload/(?P<rev>[^/]+)$", self._preupload),
            ("POST", api + r"/commit/(?P<rev>[^/]+)$", self._commit),
            ("POST", api + r"/tag/(?P<rev>[^/]+)$", self._create_tag),
            ("DELETE", api + r"/tag/(?P<tag>[^/]+)$", self._delete_tag),
            ("POST", api + r"/branch/(?P<branch>[^/]+)$", self._create_branch),
            ("DELETE", api + r"/branch/(?P<branch>[^/]+)$", self._delete_branch),
            ("POST", hub + r"\.git/info/lfs/objects/batch$", self._lfs_batch),
            ("PUT", r"^/_lfs/upload/(?P<ticket>[0-9a-f]+)$", self._lfs_put),
            ("POST", r"^/_lfs/verify/(?P<ticket>[0-9a-f]+)$", self._lfs_verify),
            (("GET", "HEAD"), hub + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)$", self._resolve_file),
        ]
        return [((m,) if isinstance(m, str) else m, re.compile(p), f) for m, p, f in table]

    def dispatch(self, req: Request) -> Response:
        """Answer one request (called by the HTTP handler; errors become Hub-style error responses)."""
        for methods, pattern, handler in self._routes:
            match = pattern.match(req.path)
            if match and req.method in methods:
                groups = match.groupdict()
                args = {k: unquote(v) for k, v in groups.items() if v is not None and k not in ("kind", "repo")}
                if "repo" in groups:
                    args["repo_type"] = REPO_TYPES[groups["kind"] or "models"]
                    args["repo_id"] = unquote(groups["repo"])
                with self._lock:
                    return handler(req, **args)
        self.errors.append(f"no route for {req.method} {req.path}")
        raise HubError(404, "Sorry, we can't find the page you are looking for.")

    def _draw_fault(self, req: Request) -> str | None:
        with self._lock:
            kind = self.fault_mode.draw(req.method, req.path) if self.fault_mode else None
            if kind is not None:
                self.faults.append(Fault(kind, req.method, req.path))
            return kind

    def _fault_response(self, kind: str) -> Response | None:
        """Return the answer a status fault gives instead of the real one (None for the other kinds)."""
        if kind in ("429", "503"):
            retry_after = str(self.fault_mode.retry_after if self.fault_mode else 1)
            return HubError(int(kind), "injected fault: try again later", headers={"Retry-After": retry_after}).response()
        if kind == "500":
            return HubError(500, "injected fault: internal error").response()
        return None

    def _record(self, req: Request, query: str, status: int, fault: str | None = None) -> None:
        with self._lock:
            authed = bool(req.headers.get("authorization"))
            self.log.append(LogEntry(req.method, req.path, query, status, len(req.body), authed))
            if status >= 500 and fault is None:  # injected faults are not server bugs
                self.errors.append(f"{status} for {req.method} {req.path}")

    # ---- account and repo management -------------------------------------------------------------------------

    def _whoami(self, req: Request) -> Response:
        ident = self._identity(req)
        if ident is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        orgs = sorted(ident.readable - {ident.username})
        role = "write" if ident.writable else "read"
        return Response.of_json({
            "type": "user", "id": hashlib.md5(ident.username.encode()).hexdigest()[:24], "name": ident.username,
            "fullname": ident.username.title(), "email": f"{ident.username}@example.invalid", "emailVerified": True,
            "canPay": False, "isPro": False, "periodEnd": None, "avatarUrl": "",
            "orgs": [{"type": "org", "name": o, "fullname": o, "roleInOrg": "write" if o in ident.writable else "read"}
                     for o in orgs],
            "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": role,
                                                              "createdAt": "2024-01-01T00:00:00.000Z"}},
        })

    def _create_repo(self, req: Request) -> Response:
        ident = self._identity(req)
        body = req.json()
        if ident is None:
            raise HubError(401, "You must be authenticated to create a repo")
        repo_type = body.get("type") or "model"
        if repo_type not in URL_PREFIX:
            raise HubError(400, f"Invalid repo type: {repo_type}")
        name = str(body.get("name") or "")
        namespace = body.get("organization") or ident.username
        if not _REPO_NAME.match(name) or "--" in name or ".." in name:
            raise HubError(400, f"Invalid repo name: {name!r}")
        if namespace not in ident.writable:
            raise HubError(403, f'You don\'t have the rights to create a {repo_type} under the namespace "{namespace}"')
        repo_id = f"{namespace}/{name}"
        url = f"{self.url}/{URL_PREFIX[repo_type]}{repo_id}"
        if (repo_type, repo_id) in self._repos:
            raise HubError(409, f"You already created this {repo_type} repo", extra={"url": url})
        sdk = body.get("sdk")
        if repo_type == "space" and sdk not in ("gradio", "streamlit", "docker", "static"):
            raise HubError(400, "Space sdk must be one of gradio, streamlit, docker, static")
        private = body.get("visibility", "private" if body.get("private") else "public") != "public"
        repo = Repo(repo_type, repo_id, private, _now(), sdk)
        self._repos[(repo_type, repo_id)] = repo
        content = default_gitattributes(repo_type)
        entry = FileEntry.make(self._store(content), len(content), False, content)
        self._add_commit(repo, DEFAULT_BRANCH, {".gitattributes": entry}, "initial commit", "", ident.username)
        return Response.of_json({"url": url, "name": repo_id, "id": hashlib.md5(repo_id.encode()).hexdigest()[:24]})

    def _delete_repo(self, req: Request) -> Response:
        ident = self._identity(req)
        body = req.json()
        repo_type = body.get("type") or "model"
        repo_id = f"{body.get('organization') or (ident.username if ident else '')}/{body.get('name')}"
        self._writable(ident, repo_type, repo_id)
        del self._repos[(repo_type, repo_id)]
        (self.root / "repos" / f"{repo_type}s" / f"{repo_id}.json").unlink(missing_ok=True)
        return Response.of_json({})

    def _validate_yaml(self, req: Request) -> Response:
        import yaml

        self._identity(req)
        content = str(req.json().get("content", ""))
        errors = []
        if content.startswith("---"):
            end = content.find("\n---", 3)
            if end == -1:
                errors.append({"message": "metadata block is not closed by a '---' line"})
            else:
                try:
                    meta = yaml.safe_load(content[3:end])
                    if meta is not None and not isinstance(meta, dict):
                        errors.append({"message": "metadata must be a YAML mapping"})
                except yaml.YAMLError as err:
                    errors.append({"message": f"invalid YAML: {err}".splitlines()[0]})
        status = 400 if errors else 200
        return Response.of_json({"errors": errors, "warnings": []}, status)

    # ---- reading -----------------------------------------------------------------------------------------------

    def _entry_json(self, path: str, entry: FileEntry) -> dict:
        data = {"type": "file", "oid": entry.oid, "size": entry.size, "path": path}
        if entry.lfs:
            data["lfs"] = {"oid": entry.sha256, "size": entry.size,
                           "pointerSize": len(lfs_pointer(entry.sha256, entry.size))}
        return data

    def _folder_json(self, path: str, files: Mapping[str, FileEntry]) -> dict:
        inside = sorted((p, e.oid) for p, e in files.items() if p.startswith(path + "/"))
        return {"type": "directory", "oid": hashlib.sha1(repr(inside).encode()).hexdigest(), "size": 0, "path": path}

    def _last_commit(self, repo: Repo, head: str, path: str) -> dict:
        # Walk back to the newest commit where the path (file or folder) changed.
        def state(commit: Commit):
            return sorted((p, e.oid) for p, e in commit.files.items() if p == path or p.startswith(path + "/"))

        commit = repo.commits[head]
        while commit.parent is not None and state(repo.commits[commit.parent]) == state(commit):
            commit = repo.commits[commit.parent]
        return {"id": commit.oid, "title": commit.message, "date": commit.date}

    def _repo_info(self, req: Request, repo_type: str, repo_id: str, rev: str = DEFAULT_BRANCH) -> Response:
        ident = self._identity(req)
        repo = self._readable(ident, repo_type, repo_id)
        commit = repo.commits[self._resolve(repo, rev)]
        blobs = req.flag("blobs")
        siblings = []
        for path, entry in sorted(commit.files.items()):
            sibling: dict = {"rfilename": path}
            if blobs:
                sibling.update(size=entry.size, blobId=entry.oid)
                if entry.lfs:
                    sibling["lfs"] = {"sha256": entry.sha256, "size": entry.size,
                                      "pointerSize": len(lfs_pointer(entry.sha256, entry.size))}
            siblings.append(sibling)
        data = {
            "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24], "id": repo_id, "author": repo.namespace,
            "sha": commit.oid, "lastModified": commit.date, "createdAt": repo.created_at, "private": repo.private,
            "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [], "siblings": siblings,
            "usedStorage": sum(e.size for e in commit.files.values()),
        }
        if repo_type == "space":
            data["sdk"] = repo.sdk
        return Response.of_json(data)

    def _tree(self, req: Request, repo_type: str, repo_id: str, rev: str, path: str = "") -> Response:
        ident = self._identity(req)
        repo = self._readable(ident, repo_type, repo_id)
        head = self._resolve(repo, rev)
        files = repo.commits[head].files
        path = path.strip("/")
        folders = _folders(files)
        if path and path not in folders:
            raise HubError(404, f"{path} does not exist on revision {rev}", "EntryNotFound",
                           {"X-Repo-Commit": head})
        recursive, expand = req.flag("recursive"), req.flag("expand")
        base = path + "/" if path else ""
        out = []
        for folder in sorted(folders):
            rest = folder[len(base):] if folder.startswith(base) else None
            if rest and (recursive or "/" not in rest):
                out.append(self._folder_json(folder, files))
        for file_path, entry in sorted(files.items()):
            rest = file_path[len(base):] if file_path.startswith(base) else None
            if rest and (recursive or "/" not in rest):
                out.append(self._entry_json(file_path, entry))
        if expand:
            for item in out:
                item["lastCommit"] = self._last_commit(repo, head, item["path"])
        return Response.of_json(out)

    def _paths_info(self, req: Request, repo_type: str, repo_id: str, rev: str) -> Response:
        ident = self._identity(req)
        repo = self._readable(ident, repo_type, repo_id)
        head = self._resolve(repo, rev)
        files = repo.commits[head].files
        form = parse_qs(req.body.decode(), keep_blank_values=True)
        if "application/json" in (req.headers.get("content-type") or ""):
            payload = req.json()
            paths, expand = list(payload.get("paths", [])), bool(payload.get("expand"))
        else:
            paths, expand = form.get("paths", []), form.get("expand", ["false"])[-1].lower() in ("1", "true")
        folders = _folders(files)
        out = []
        for path in paths:
            path = path.strip("/")
            if path in files:
                out.append(self._entry_json(path, files[path]))
            elif path in folders:
                out.append(self._folder_json(path, files))
            else:
                continue
            if expand:
                out[-1]["lastCommit"] = self._last_commit(repo, head, path)
        return Response.of_json(out)

    def _refs(self, req: Request, repo_type: str, repo_id: str) -> Response:
        ident = self._identity(req)
        repo = self._readable(ident, repo_type, repo_id)
        data = {
            "branches": [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": c} for b, c in repo.branches.items()],
            "tags": [{"name": t, "ref": f"refs/tags/{t}", "targetCommit": c} for t, c in repo.tags.items()],
            "converts": [],
        }
        if req.flag("include_prs"):
            data["pullRequests"] = []
        return Response.of_json(data)

    def _list_commits(self, req: Request, repo_type: str, repo_id: str, rev: str) -> Response:
        ident = self._identity(req)
        repo = self._readable(ident, repo_type, repo_id)
        oid: str | None = self._resolve(repo, rev)
        out = []
        while oid is not None:
            c = repo.commits[oid]
            out.append({"id": c.oid, "title": c.message, "message": c.description, "date": c.date,
                        "authors": [{"user": c.author, "avatar": None}]})
            oid = c.parent
        return Response.of_json(out)

    def _resolve_file(self, req: Request, repo_type: str, repo_id: str, rev: str, path: str) -> Response:
        ident = self._identity(req)
        repo = self._readable(ident, repo_type, repo_id)
        head = self._resolve(repo, rev)
        entry = repo.commits[head].files.get(path)
        if entry is None:
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": head})
        content = self._blob(entry.sha256)
        headers = {
            "X-Repo-Commit": head,
            "ETag": f'"{entry.oid}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(path.rsplit('/', 1)[-1])}",
        }
        if entry.lfs:
            headers["X-Linked-Etag"] = f'"{entry.sha256}"'
            headers["X-Linked-Size"] = str(entry.size)
        status = 200
        wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", req.headers.get("range") or "")
        if wanted and req.method == "GET":
            start = int(wanted.group(1))
            end = int(wanted.group(2)) if wanted.group(2) else len(content) - 1
            if start >= len(content) and len(content) > 0:
                raise HubError(416, "Requested range not satisfiable",
                               headers={"Content-Range": f"bytes */{len(content)}"})
            headers["Content-Range"] = f"bytes {start}-{min(end, len(content) - 1)}/{len(content)}"
            content, status = content[start:end + 1], 206
        return Response(status, content, headers)

    # ---- writing ---------------------------------------------------------------------------------------------

    def _preupload(self, req: Request, repo_type: str, repo_id: str, rev: str) -> Response:
        ident = self._identity(req)
        repo = self._writable(ident, repo_type, repo_id)
        commit = repo.commits[self._resolve(repo, rev)]
        body = req.json()
        patterns = self._lfs_patterns(commit)
        gitignore = body.get("gitIgnore")
        if gitignore is None and ".gitignore" in commit.files:
            gitignore = self._blob(commit.files[".gitignore"].sha256).decode(errors="replace")
        ignored = [line.strip() for line in (gitignore or "").splitlines() if line.strip() and line[0] != "#"]
        out = []
        for item in body.get("files", []):
            path, size = item["path"], int(item["size"])
            mode = self._upload_mode(path, size, base64.b64decode(item.get("sample", "")), patterns)
            info = {"path": path, "uploadMode": mode, "shouldIgnore": _matches(path, ignored)}
            remote = commit.files.get(path)
            if remote is not None:
                # What the client compares with its local oid to drop unchanged files.
                info["oid"] = remote.sha256 if remote.lfs else remote.oid
            out.append(info)
        return Response.of_json({"files": out, "commitOid": commit.oid})

    def _lfs_batch(self, req: Request, repo_type: str, repo_id: str) -> Response:
        ident = self._identity(req)
        body = req.json()
        if body.get("operation") != "upload":
            raise HubError(422, "this server only serves LFS uploads (downloads go through /resolve)")
        repo = self._writable(ident, repo_type, repo_id)
        ref = (body.get("ref") or {}).get("name")
        if ref is not None:
            self._resolve(repo, ref)
        objects = []
        for obj in body.get("objects", []):
            oid, size = str(obj["oid"]), int(obj["size"])
            item: dict = {"oid": oid, "size": size, "authenticated": True}
            if oid not in repo.lfs_objects or not self._blob_path(oid).exists():
                ticket = secrets.token_hex(16)
                self._tickets[ticket] = ((repo_type, repo_id), oid, size)
                item["actions"] = {
                    "upload": {"href": f"{self.url}/_lfs/upload/{ticket}", "header": {}},
                    "verify": {"href": f"{self.url}/_lfs/verify/{ticket}", "header": {}},
                }
            objects.append(item)
        return Response.of_json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                                headers={"Content-Type": "application/vnd.git-lfs+json"})

    def _ticket(self, ticket: str) -> tuple[Repo, str, int]:
        if ticket not in self._tickets:
            raise HubError(403, "unknown or expired upload URL")
        key, oid, size = self._tickets[ticket]
        if key not in self._repos:
            raise HubError(404, "Repository not found", "RepoNotFound")
        return self._repos[key], oid, size

    def _lfs_put(self, req: Request, ticket: str) -> Response:
        repo, oid, size = self._ticket(ticket)
        sha = hashlib.sha256(req.body).hexdigest()
        if sha != oid or len(req.body) != size:
            raise HubError(400, f"uploaded content does not match oid {oid} and size {size}")
        self._store(req.body)
        repo.lfs_objects.add(oid)
        repo.uploaded_bytes += len(req.body)
        self._persist(repo)
        return Response(200, b"", {"ETag": f'"{hashlib.md5(req.body).hexdigest()}"'})

    def _lfs_verify(self, req: Request, ticket: str) -> Response:
        self._identity(req)
        repo, oid, size = self._ticket(ticket)
        body = req.json()
        if body.get("oid") != oid or int(body.get("size", -1)) != size or oid not in repo.lfs_objects:
            raise HubError(404, f"LFS object {body.get('oid')} was not uploaded")
        return Response.of_json({"success": True})  # the ticket stays valid: a retried verify succeeds too

    def _commit(self, req: Request, repo_type: str, repo_id: str, rev: str) -> Response:
        ident = self._identity(req)
        repo = self._writable(ident, repo_type, repo_id)
        assert ident is not None
        if req.flag("create_pr"):
            raise HubError(400, "this test Hub does not implement pull requests (create_pr)")
        if rev not in repo.branches:
            raise HubError(404, f"Invalid rev id: {rev} (commits go to a branch)", "RevisionNotFound")
        lines = [json.loads(line) for line in req.body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "the first ndjson line of a commit must be its header")
        header = lines[0]["value"]
        head = repo.branches[rev]
        parent = header.get("parentCommit")
        if parent and not head.startswith(parent):
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        files = dict(repo.commits[head].files)
        received = 0
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            path = str(value.get("path", "")).strip("/")
            if not path or ".." in path.split("/") or path.split("/")[0] == ".git":
                raise HubError(400, f"Invalid path in commit: {path!r}")
            if key == "file":
                content = base64.b64decode(value["content"]) if value.get("encoding") == "base64" \
                    else str(value["content"]).encode()
                if content and (b"\0" in content[:8000] or len(content) > self.lfs_threshold):
                    raise HubError(400, f"Your push was rejected because it contains binary files: {path}. "
                                        "Please use LFS (the preupload answer says which files must be LFS).")
                files[path] = FileEntry.make(self._store(content), len(content), False, content)
                received += len(content)
            elif key == "lfsFile":
                oid = str(value.get("oid"))
                if oid not in repo.lfs_objects or not self._blob_path(oid).exists():
                    raise HubError(400, f"Your push was rejected because an LFS pointer pointed to a file that "
                                        f"does not exist: {path} (oid {oid})")
                size = self._blob_path(oid).stat().st_size
                if value.get("size") is not None and int(value["size"]) != size:
                    raise HubError(400, f"LFS file {path}: size {value['size']} does not match the upload ({size})")
                files[path] = FileEntry.make(oid, size, True)
            elif key == "deletedFile":
                if path not in files:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                del files[path]
            elif key == "deletedFolder":
                inside = [p for p in files if p.startswith(path + "/")]
                if not inside:
                    raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                for p in inside:
                    del files[p]
            else:
                raise HubError(400, f"Unknown commit operation {key!r}")
        repo.uploaded_bytes += received
        commit = self._add_commit(repo, rev, files, str(header.get("summary") or ""),
                                  str(header.get("description") or ""), ident.username)
        return Response.of_json({
            "success": True, "commitOid": commit.oid,
            "commitUrl": f"{self.url}/{URL_PREFIX[repo_type]}{repo_id}/commit/{commit.oid}",
            "commitMessage": commit.message, "hookOutput": "", "pullRequestUrl": None,
        })

    def _create_tag(self, req: Request, repo_type: str, repo_id: str, rev: str) -> Response:
        ident = self._identity(req)
        repo = self._writable(ident, repo_type, repo_id)
        target = self._resolve(repo, rev)
        tag = str(req.json().get("tag") or "")
        if not tag or tag in repo.tags:
            raise HubError(409, f"Tag {tag!r} already exists" if tag else "A tag name is required")
        repo.tags[tag] = target
        self._persist(repo)
        return Response.of_json({"name": tag, "ref": f"refs/tags/{tag}", "targetCommit": target})

    def _delete_tag(self, req: Request, repo_type: str, repo_id: str, tag: str) -> Response:
        repo = self._writable(self._identity(req), repo_type, repo_id)
        if tag not in repo.tags:
            raise HubError(404, f"Invalid rev id: {tag}", "RevisionNotFound")
        del repo.tags[tag]
        self._persist(repo)
        return Response.of_json({})

    def _create_branch(self, req: Request, repo_type: str, repo_id: str, branch: str) -> Response:
        repo = self._writable(self._identity(req), repo_type, repo_id)
        target = self._resolve(repo, str(req.json().get("startingPoint") or DEFAULT_BRANCH))
        if branch in repo.branches:
            raise HubError(409, f"Reference already exists: refs/heads/{branch}")
        repo.branches[branch] = target
        self._persist(repo)
        return Response.of_json({"name": branch, "ref": f"refs/heads/{branch}", "targetCommit": target})

    def _delete_branch(self, req: Request, repo_type: str, repo_id: str, branch: str) -> Response:
        repo = self._writable(self._identity(req), repo_type, repo_id)
        if branch not in repo.branches or branch == DEFAULT_BRANCH:
            raise HubError(404 if branch not in repo.branches else 403, f"Cannot delete branch {branch}",
                           "RevisionNotFound" if branch not in repo.branches else None)
        del repo.branches[branch]
        self._persist(repo)
        return Response.of_json({})


def _folders(files: Mapping[str, FileEntry]) -> set[str]:
    out = set()
    for path in files:
        parts = path.split("/")[:-1]
        out.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return out


def _matches(path: str, patterns: list[str]) -> bool:
    """Return whether ``path`` matches a .gitattributes/.gitignore-style pattern (basename unless it has a '/')."""
    name = path.rsplit("/", 1)[-1]
    for pattern in patterns:
        pattern = pattern.lstrip("/")
        if pattern.endswith("/"):
            if path.startswith(pattern) or f"/{pattern}" in f"/{path}":
                return True
        elif "/" in pattern:
            if fnmatch.fnmatchcase(path, pattern):
                return True
        elif fnmatch.fnmatchcase(name, pattern):
            return True
    return False


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    timeout = 60  # idle keep-alive connections end instead of lingering forever
    server_version = "loopback-hub/1.0"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._handle("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._handle("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - keep test output clean
        pass

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self, method: str) -> None:
        hub: HubServer = self.server.hub  # type: ignore[attr-defined]
        url = urlsplit(self.path)
        req = Request(method, url.path, parse_qs(url.query, keep_blank_values=True),
                      {k.lower(): v for k, v in self.headers.items()}, self._read_body())
        fault = hub._draw_fault(req)
        if fault == "slow":
            time.sleep(hub.fault_mode.slow_s if hub.fault_mode else 0)
        if fault == "drop":
            hub._record(req, url.query, 0, fault)
            self.close_connection = True  # nothing answered: the client sees the server disconnect
            return
        resp = hub._fault_response(fault) if fault else None
        if resp is None:
            try:
                resp = hub.dispatch(req)
            except HubError as err:
                resp = err.response()
            except Exception as err:  # a bug in this server: answer 500 and keep the reason for the test to show
                hub.errors.append(f"{type(err).__name__}: {err} for {method} {url.path}")
                resp = HubError(500, f"test Hub crashed: {type(err).__name__}: {err}").response()
        if fault == "drop-after":  # carried out, but the answer is lost on the way back
            hub._record(req, url.query, 0, fault)
            self.close_connection = True
            return
        hub._record(req, url.query, resp.status, fault)
        self.send_response(resp.status)
        for key, value in resp.headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(resp.body)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(resp.body)


# ---- pytest fixtures ---------------------------------------------------------------------------------------------


@dataclass
class HubEnv:
    """What ``hub_env`` gives a test: the server, its url, the fresh HF_HOME and the token in HF_TOKEN."""

    server: HubServer
    url: str
    hf_home: Path
    token: str


@pytest.fixture
def hub_server(tmp_path_factory) -> Iterator[HubServer]:
    """A fresh loopback Hub (tokens WRITE_TOKEN/READ_ONLY_TOKEN for 'alice', OTHER_TOKEN for 'bob')."""
    server = HubServer(tmp_path_factory.mktemp("hub_server")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def hub_env(hub_server: HubServer, monkeypatch, tmp_path_factory) -> Iterator[HubEnv]:
    """Point huggingface_hub, transformers and peft at ``hub_server``: online, fresh HF_HOME, HF_TOKEN=WRITE_TOKEN."""
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    hf_home = tmp_path_factory.mktemp("hf_home")
    env = {
        "HF_ENDPOINT": hub_server.url,
        "HF_HUB_OFFLINE": "0",
        "TRANSFORMERS_OFFLINE": "0",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        "HF_HUB_ETAG_TIMEOUT": "5",
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hf_home / "hub"),
        "HF_XET_CACHE": str(hf_home / "xet"),
        "HF_TOKEN": hub_server.WRITE_TOKEN,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HUGGINGFACE_HUB_CACHE", "HF_ASSETS_CACHE",
                "HUGGINGFACE_ASSETS_CACHE", "TRANSFORMERS_CACHE", "HUGGINGFACE_CO_STAGING"):
        monkeypatch.delenv(key, raising=False)

    # huggingface_hub reads its environment once, at import: rebase every path under the old HF_HOME, then set
    # the endpoint and switches it copied.
    old_home = constants.HF_HOME
    for name in dir(constants):
        value = getattr(constants, name)
        if name.isupper() and isinstance(value, str) and value.startswith(old_home):
            monkeypatch.setattr(constants, name, str(hf_home) + value[len(old_home):])
    for name, value in {
        "ENDPOINT": hub_server.url,
        "HUGGINGFACE_CO_URL_TEMPLATE": hub_server.url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_URL_HOSTS": constants.HF_URL_HOSTS | {"127.0.0.1"},
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_DISABLE_UPDATE_CHECK": True,
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hf_home / "hub"),
        "HUGGINGFACE_HUB_CACHE": str(hf_home / "hub"),
        "HF_ASSETS_CACHE": str(hf_home / "assets"),
        "HUGGINGFACE_ASSETS_CACHE": str(hf_home / "assets"),
        "HF_TOKEN_PATH": str(hf_home / "token"),
        "HF_STORED_TOKENS_PATH": str(hf_home / "stored_tokens"),
        "HF_XET_CACHE": str(hf_home / "xet"),
    }.items():
        if hasattr(constants, name):
            monkeypatch.setattr(constants, name, value)
    # The module-level HfApi behind huggingface_hub.list_repo_files & co. kept the import-time endpoint.
    import huggingface_hub.hf_api  # lazily imported by huggingface_hub: make sure the attribute exists

    monkeypatch.setattr(huggingface_hub.hf_api.api, "endpoint", hub_server.url)
    for module, name, value in (
        ("huggingface_hub.utils._cache_manager", "HF_HUB_CACHE", str(hf_home / "hub")),
        ("huggingface_hub.utils._cache_assets", "HF_ASSETS_CACHE", str(hf_home / "assets")),
        ("huggingface_hub.utils._git_credential", "ENDPOINT", hub_server.url),
    ):
        monkeypatch.setattr(f"{module}.{name}", value, raising=False)
    _forget_transformers_hf_api()
    previous_factory = _http._GLOBAL_CLIENT_FACTORY
    huggingface_hub.set_client_factory(_loopback_only_client)
    try:
        yield HubEnv(hub_server, hub_server.url, hf_home, hub_server.WRITE_TOKEN)
    finally:
        huggingface_hub.set_client_factory(previous_factory)
        _forget_transformers_hf_api()  # one made during the test would keep this server's url


def _loopback_only_client():
    """Return huggingface_hub's usual HTTP client, made to refuse any host but 127.0.0.1."""
    from huggingface_hub.utils import _http

    def refuse_other_hosts(request) -> None:
        if request.url.host != "127.0.0.1":
            raise RuntimeError(f"a test tried to reach {request.url.host}; only the loopback Hub is allowed")

    client = _http.default_client_factory()
    client.event_hooks["request"].insert(0, refuse_other_hosts)
    return client


def _forget_transformers_hf_api() -> None:
    """Drop transformers' cached HfApi: it keeps the endpoint of when it was made (made again lazily)."""
    import sys

    hub = sys.modules.get("transformers.utils.hub")
    if hub is not None and hasattr(hub, "_hf_api"):
        hub._hf_api = None
