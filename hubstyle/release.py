"""A run folder -> ready-to-push repo folders (base, adapter, merged, classifier, Space) -> the Hub."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from hubstyle.errors import HubstyleError
from hubstyle.layout import RunLayout

RELEASE_KINDS = ("base", "adapter", "merged", "classifier", "space")
SPACE_EMOJI = "🎭"


@dataclass
class ReleaseFolder:
    """One repo folder of a release: what it is, where it lies, and the repo it goes to."""

    kind: str
    folder: Path
    repo_id: str
    repo_type: str


def _metrics(layout: RunLayout) -> dict:
    if not layout.metrics.is_file():
        raise HubstyleError(f"'{layout.root}' has no {layout.metrics.name}; run `hubstyle train` or the quickstart first")
    return json.loads(layout.metrics.read_text(encoding="utf-8"))


def prepare_release(run_dir: str | Path, repo_id: str, what: Sequence[str] = RELEASE_KINDS) -> list[ReleaseFolder]:
    """Return the release's repo folders, built under RUN_DIR/publish/ for `repo_id` (OWNER/NAME of the adapter)."""
    from hubstyle import __version__
    from hubstyle.publish import build_publish_folders, default_repo_ids
    from hubstyle.space import build_space_folder

    unknown = [w for w in what if w not in RELEASE_KINDS]
    if unknown:
        raise HubstyleError(f"unknown release part '{unknown[0]}'; choose from {', '.join(RELEASE_KINDS)} or 'all'")
    owner, _, name = repo_id.partition("/")
    layout = RunLayout(Path(run_dir))
    metrics = _metrics(layout)
    base_is_local = Path(metrics["run"]["base_model"]).exists()
    ids = default_repo_ids(owner, name, base_is_local)
    model_kinds = [k for k in what if k != "space" and (k != "base" or base_is_local)]
    folders = build_publish_folders(layout.root, ids, what=model_kinds)
    out = [
        ReleaseFolder(kind, folders[kind], getattr(ids, kind), "model") for kind in RELEASE_KINDS if kind in folders
    ]
    if "space" in what:
        style = metrics["run"]["style"]
        table = json.loads(layout.demo_table.read_text(encoding="utf-8"))
        space = build_space_folder(
            layout.publish / "space",
            base_repo=ids.base or metrics["run"]["base_model"],
            adapters={style: ids.adapter},
            demo_rows=table["rows"],
            title=f"{style.title()} style: base vs tuned",
            emoji=SPACE_EMOJI,
            license=ids.license,
            short_description=f"Base vs {style} style, side by side"[:60],
            hubstyle_requirement=f"hubstyle>={__version__}",
            examples=[row["prompt"] for row in table["rows"]],
            chat=(table.get("decoding") or {}).get("chat"),
        )
        out.append(ReleaseFolder("space", space, ids.space, "space"))
    return out


def push_release(
    run_dir: str | Path,
    repo_id: str,
    what: Sequence[str] = RELEASE_KINDS,
    *,
    private: bool = False,
    tag: str | None = None,
    dry_run: bool = False,
    token: str | None = None,
    endpoint: str | None = None,
    log=print,
) -> list[ReleaseFolder]:
    """Return the release folders after pushing each to its repo (or, with `dry_run`, printing what would change)."""
    from hubstyle import hub

    parts = prepare_release(run_dir, repo_id, what)
    run_name = _metrics(RunLayout(Path(run_dir)))["run"]["name"]
    for part in parts:
        if dry_run:
            changes = hub.dry_run(part.folder, part.repo_id, repo_type=part.repo_type, token=token, endpoint=endpoint)
            changed = [c for c in changes if c.status != "unchanged"]
            log(f"{part.kind}: {part.repo_id} ({part.repo_type}) - {len(changed)} of {len(changes)} files would change")
            for change in changed:
                log(f"  {change.status:9} {change.path} ({change.size:,} bytes)")
            continue
        result = hub.push_folder(
            part.folder, part.repo_id, repo_type=part.repo_type, private=private, tag=tag, token=token,
            endpoint=endpoint, commit_message=f"hubstyle: {part.kind} of run '{run_name}'",
        )
        state = f"{len(result.changed_files)} files changed" if result.uploaded else "unchanged, no commit"
        log(f"{part.kind}: {part.repo_id} - {state}")
    if dry_run:
        adapter = next((p for p in parts if p.kind == "adapter"), None)
        if adapter:
            log("\n--- adapter card (README.md) ---\n" + (adapter.folder / "README.md").read_text(encoding="utf-8"))
    return parts
