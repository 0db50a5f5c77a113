"""The run manifest (``run.json``): how a run folder was made, stage by stage, and what `hubstyle run` compares.

It records the config, the sha256 of every data file the run read, the package versions, the git commit (when the
run started inside a git work tree), the seeds and, for each stage, the key of its inputs, whether this invocation
ran it or found it cached, and its wall time. A stage's key is the sha256 of its own inputs (config sections, data
file hashes), the keys of the stages it reads, the versions of hubstyle, torch, transformers and peft, and the
sha256 of hubstyle's own source (``code_digest``: a code change re-runs the stages).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

from hubstyle.errors import HubstyleError
from hubstyle.fsio import file_sha256
from hubstyle.layout import RunLayout

SCHEMA = "hubstyle.run_manifest"
SCHEMA_VERSION = 1
KEY_PACKAGES = ("hubstyle", "torch", "transformers", "peft")  # a new version of one re-runs every stage
RECORDED_PACKAGES = (*KEY_PACKAGES, "huggingface_hub", "accelerate", "datasets", "tokenizers", "safetensors", "gguf")
CONTENT_HASH_LIMIT = 256 * 2**20  # bigger files (a large local base's weights) are keyed by size and mtime
RAN, CACHED, OFF = "ran", "cached", "off"


@dataclass
class StageRecord:
    """One stage as the last invocation left it: its key, what happened and why, and how long it took."""

    key: str | None  # None for a stage that is off
    status: str  # ran | cached | off
    reason: str
    seconds: float = 0.0  # wall time in the invocation that wrote this record (0 when cached)
    built_seconds: float | None = None  # wall time of the invocation that made the stage's outputs
    built_at: str | None = None  # when those outputs were made (UTC, ISO 8601)
    built_commit: str | None = None  # the git commit hubstyle ran from then (None outside a git work tree)
    inputs: dict[str, str] = field(default_factory=dict)  # input name -> sha256: says which input changed
    facts: dict[str, Any] = field(default_factory=dict)  # small facts the stage records (sample and token counts)
    peak_rss_mb: float | None = None  # the stage's own peak resident memory (hubstyle.memory), when it ran


@dataclass
class RunManifest:
    """Everything that made one run folder (``run.json``)."""

    config: dict[str, Any]
    config_file: str | None
    packages: dict[str, str | None]
    python: str
    git: dict[str, Any] | None  # {"commit", "dirty"} when the run started inside a git work tree
    seeds: dict[str, int]
    data: dict[str, Any]  # {"files": {source: [{"file", "sha256"}]}, "samples": {...}, "tokens": {...}}
    stages: dict[str, StageRecord]
    started: str
    seconds: float = 0.0  # wall time of the invocation that wrote it
    schema: str = SCHEMA
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """Return the manifest as plain JSON data."""
        return dataclasses.asdict(self)

    def public(self) -> dict[str, Any]:
        """Return what a published repo may show: no machine paths, no output folder, and only what the stages that
        made the weights recorded (not whether the last invocation found them cached), so it changes only with them."""
        config = {k: v for k, v in self.config.items() if k != "output_dir"}
        stages = {
            name: {"key": r.key, "seconds": r.built_seconds, "built_at": r.built_at, "git_commit": r.built_commit}
            for name, r in self.stages.items() if r.status != OFF and name not in ("publish", "push")
        }
        data = {**self.data, "files": {_public_source(s): f for s, f in (self.data.get("files") or {}).items()}}
        return {"schema": self.schema, "schema_version": self.schema_version, "config": config,
                "packages": self.packages, "python": self.python, "seeds": self.seeds, "data": data, "stages": stages}


def _public_source(source: str) -> str:
    """Return ``source`` as a published file may name it: a local file or folder by its name alone."""
    from hubstyle.data.sources import HF_PREFIX, NAMED_CORPORA

    if source in NAMED_CORPORA:
        return source
    if source.startswith(HF_PREFIX):
        local = Path(source[len(HF_PREFIX):].split(":")[0]).expanduser()
        return HF_PREFIX + local.name if local.exists() else source
    return Path(source).name


def read_manifest(layout: RunLayout) -> RunManifest | None:
    """Return the run's manifest, or None when it has none (or one this hubstyle cannot read: every stage reruns)."""
    path = layout.manifest
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("schema") != SCHEMA or raw.get("schema_version") != SCHEMA_VERSION:
            return None
        stages = {name: StageRecord(**record) for name, record in raw.pop("stages").items()}
        return RunManifest(**raw, stages=stages)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def write_manifest(layout: RunLayout, manifest: RunManifest) -> Path:
    """Return the path of ``run.json`` after writing ``manifest`` to it atomically."""
    from hubstyle.fsio import atomic_write

    return atomic_write(layout.manifest, json.dumps(manifest.to_dict(), indent=2, ensure_ascii=False) + "\n")


def public_manifest_text(layout: RunLayout) -> str | None:
    """Return the published form of the run's manifest as JSON text, or None when the run has no ``run.json``."""
    manifest = read_manifest(layout)
    if manifest is None:
        return None
    return json.dumps(manifest.public(), indent=2, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------------------------------- inputs


def digest(value: Any) -> str:
    """Return the sha256 of ``value`` as canonical JSON (sorted keys, dataclasses as dicts)."""
    def plain(v: Any) -> Any:
        return dataclasses.asdict(v) if dataclasses.is_dataclass(v) and not isinstance(v, type) else str(v)

    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=plain)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def code_digest(root: Path | None = None) -> str:
    """Return the sha256 of hubstyle's own source (every ``.py`` file of the package, by relative path and content):
    ``__version__`` is a constant that no code change moves, so stage keys carry this instead."""
    root = root or Path(__file__).resolve().parent
    return digest({p.relative_to(root).as_posix(): file_sha256(p) for p in sorted(root.rglob("*.py"))
                   if "__pycache__" not in p.parts})


def package_versions(names: tuple[str, ...] = RECORDED_PACKAGES) -> dict[str, str | None]:
    """Return {package: installed version, or None when it is not installed} (no package is imported)."""
    from hubstyle import __version__

    versions: dict[str, str | None] = {}
    for name in names:
        if name == "hubstyle":
            versions[name] = __version__
            continue
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def python_version() -> str:
    """Return the running Python's version, e.g. '3.11.7'."""
    return platform.python_version()


def git_state(cwd: str | Path = ".") -> dict[str, Any] | None:
    """Return {"commit", "dirty"} of the git work tree around ``cwd``, or None outside one (or without git)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def source_files(source: str) -> list[dict[str, str | None]]:
    """Return [{"file", "sha256"}] of the files corpus or prompt ``source`` reads, without downloading anything.

    A named corpus file not on this machine yet counts with its pinned sha256 (the download is checked against it);
    a Hub dataset (``hf:owner/name``) has no local file to hash, so it counts by name only (sha256 None).
    """
    from hubstyle.data.sources import HF_PREFIX, NAMED_CORPORA, data_dir, download_cache_dir, package_files

    if source in NAMED_CORPORA:
        spec = NAMED_CORPORA[source]
        if spec.package is not None:
            paths = package_files(spec.package, what=f"named corpus {source!r}")
            return [{"file": f"{spec.package.package}/{p.name}", "sha256": file_key(p)} for p in paths]
        found = []
        for file in spec.files:
            local = [p for p in ((data_dir() or Path("/nonexistent")) / file.path, download_cache_dir() / file.path)
                     if p.is_file()]
            found.append({"file": file.path, "sha256": file_key(local[0]) if local else file.sha256})
        return found
    if source.startswith(HF_PREFIX):
        folder = Path(source[len(HF_PREFIX):].split(":")[0]).expanduser()
        if folder.is_dir():
            return [{"file": p.relative_to(folder).as_posix(), "sha256": file_key(p)}
                    for p in sorted(folder.rglob("*")) if p.is_file()]
        return [{"file": source, "sha256": None}]
    path = Path(source).expanduser()
    if path.is_dir():
        return [{"file": f"{path.name}/{p.relative_to(path).as_posix()}", "sha256": file_key(p)}
                for p in sorted(path.rglob("*")) if p.is_file() and not p.name.startswith(".")]
    if not path.is_file():
        raise HubstyleError(f"'{source}' not found: it is neither a file, a folder, a named corpus nor "
                            "hf:owner/name; check the path")
    return [{"file": path.name, "sha256": file_key(path)}]


def file_key(path: Path) -> str:
    """Return the sha256 of the file at ``path`` (of its size and mtime, for files over CONTENT_HASH_LIMIT)."""
    stat = path.stat()
    if stat.st_size > CONTENT_HASH_LIMIT:
        return digest({"size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    return file_sha256(path)


def now() -> str:
    """Return the current UTC time, ISO 8601, to the second."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def data_section(files: Mapping[str, list], stages: Mapping[str, StageRecord]) -> dict[str, Any]:
    """Return the manifest's data section: file hashes by source, sample counts (data stage), token counts (train)."""
    data = stages.get("data")
    train = stages.get("train")
    return {
        "files": dict(files),
        "samples": (data.facts.get("samples") if data else None),
        "tokens": (train.facts.get("tokens") if train else None),
    }

