"""A run folder -> ready-to-push repo folders (base, training set, adapter, merged, classifier, GGUF, Space) -> Hub."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from hubstyle.config import RELEASE_KINDS
from hubstyle.errors import HubstyleError
from hubstyle.layout import RunLayout

if TYPE_CHECKING:
    from hubstyle.card import RepoIds

REPO_TYPES = {"dataset": "dataset", "space": "space"}  # every other part is a model repo
SPACE_EMOJI = "🎭"


@dataclass
class ReleaseFolder:
    """One repo folder of a release: what it is, where it lies, and the repo it goes to."""

    kind: str
    folder: Path
    repo_id: str
    repo_type: str


def prepare_release(
    run_dir: str | Path, repo_id: str, what: Sequence[str] = RELEASE_KINDS, *, log=print
) -> list[ReleaseFolder]:
    """Return the release's repo folders, built under RUN_DIR/publish/ for `repo_id` (OWNER/NAME of the adapter).

    Parts the run has nothing for (a full fine-tune: no adapter, no Space) are skipped, each with one logged line;
    asking only for such parts is an error.
    """
    from hubstyle.card import hub_datasets
    from hubstyle.dataset_repo import build_dataset_folder
    from hubstyle.facts import load_facts
    from hubstyle.publish import build_publish_folders
    from hubstyle.space_folder import build_space_folder

    unknown = [w for w in what if w not in RELEASE_KINDS]
    if unknown:
        raise HubstyleError(f"unknown release part '{unknown[0]}'; choose from {', '.join(RELEASE_KINDS)} or 'all'")
    layout = RunLayout(Path(run_dir))
    facts = load_facts(layout.root)
    skipped = {kind: why for kind, why in _skipped(layout).items() if kind in what}
    if skipped and all(kind in skipped for kind in what):
        raise HubstyleError(f"nothing to build: {'; '.join(f'{k}: {why}' for k, why in skipped.items())}")
    for kind, why in skipped.items():
        log(f"skipping {kind}: {why}")
    what = [kind for kind in what if kind not in skipped]
    ids, base_is_local = _repo_ids(layout, repo_id, what)
    model_kinds = [k for k in what if k not in ("space", "dataset") and (k != "base" or base_is_local)]
    folders = build_publish_folders(layout.root, ids, what=model_kinds)
    if "dataset" in what:
        folders["dataset"] = build_dataset_folder(layout.root, ids)
    out = [
        ReleaseFolder(kind, folders[kind], getattr(ids, kind), REPO_TYPES.get(kind, "model"))
        for kind in RELEASE_KINDS if kind in folders
    ]
    if "space" in what:
        style = facts.run.style
        table = _demo_table(layout)
        decoding = table.get("decoding") or {}
        space = build_space_folder(
            layout.publish / "space",
            base_repo=ids.base or facts.run.base_model,
            adapters={style: ids.adapter},
            demo_rows=table["rows"],
            demo_decoding=decoding,
            title=f"{style.title()} style: base vs tuned",
            emoji=SPACE_EMOJI,
            license=ids.license,
            short_description=f"Base vs {style} style, side by side"[:60],
            examples=[row["prompt"] for row in table["rows"]],
            chat=decoding.get("chat"),
            datasets=hub_datasets(facts, ids) or (),  # the adapter card's `datasets:`, so the Hub links them all
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
    from hubstyle.facts import load_facts

    parts = prepare_release(run_dir, repo_id, what, log=log)
    push_parts(parts, load_facts(run_dir).run.name, private=private, tag=tag, dry_run=dry_run, token=token,
               endpoint=endpoint, log=log)
    return parts


def built_release(run_dir: str | Path, repo_id: str, what: Sequence[str] = RELEASE_KINDS) -> list[ReleaseFolder]:
    """Return the release folders an earlier `prepare_release(run_dir, repo_id, what)` built, without rebuilding."""
    layout = RunLayout(Path(run_dir))
    skipped = _skipped(layout)
    what = [kind for kind in what if kind not in skipped]
    ids, base_is_local = _repo_ids(layout, repo_id, what)
    parts = []
    for kind in RELEASE_KINDS:
        if kind not in what or (kind == "base" and not base_is_local):
            continue
        folder = layout.publish / kind
        if not (folder / "README.md").is_file():
            raise HubstyleError(f"'{folder}' has no README.md card; build the publish folders first (hubstyle card)")
        parts.append(ReleaseFolder(kind, folder, getattr(ids, kind), REPO_TYPES.get(kind, "model")))
    return parts


def _skipped(layout: RunLayout) -> dict[str, str]:
    """Return {part: why} of the release parts this run has nothing for (:func:`skipped_parts`, and the dataset repo
    when the run wrote no training set)."""
    from hubstyle.dataset_repo import missing_training_set
    from hubstyle.facts import load_facts

    training = load_facts(layout.root).training
    skipped = skipped_parts(training.method, training.task_type)
    no_data = missing_training_set(layout.root)
    return skipped | ({"dataset": no_data} if no_data else {})


def _repo_ids(layout: RunLayout, repo_id: str, what: Sequence[str]) -> tuple["RepoIds", bool]:
    """Return (RepoIds, whether the base is local) of a release of ``what`` to adapter repo ``repo_id``: the dataset
    repo is named (and the cards cite it) only when the release holds it."""
    from hubstyle.facts import load_facts
    from hubstyle.publish import default_repo_ids, local_base_folder

    owner, _, name = repo_id.partition("/")
    base_is_local = local_base_folder(layout, load_facts(layout.root).run.base_model) is not None
    return default_repo_ids(owner, name, base_is_local, with_dataset="dataset" in what), base_is_local


def push_parts(
    parts: Sequence[ReleaseFolder],
    run_name: str,
    *,
    private: bool = False,
    tag: str | None = None,
    dry_run: bool = False,
    token: str | None = None,
    endpoint: str | None = None,
    log=print,
) -> None:
    """Return None after pushing each release folder to its repo (or, with `dry_run`, printing what would change)."""
    from hubstyle import hub

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
        state += f" ({result.retries} {'retry' if result.retries == 1 else 'retries'})" if result.retries else ""
        log(f"{part.kind}: {part.repo_id} - {state}")
    if dry_run:  # the headline card: the adapter's, or the merged repo's when a full fine-tune has no adapter
        card = next((p for p in parts if p.kind in ("adapter", "merged")), None)
        if card:
            log(f"\n--- {card.kind} card (README.md) ---\n" + (card.folder / "README.md").read_text(encoding="utf-8"))


def skipped_parts(method: str, task_type: str = "CAUSAL_LM") -> dict[str, str]:
    """Return {part: why} of the release parts a run trained with ``method`` on a ``task_type`` base has nothing for
    (``hubstyle.publish.skipped_kinds``, and the Space, whose runtime serves a causal base model with style adapters,
    when there is no adapter or the base is seq2seq)."""
    from hubstyle.publish import skipped_kinds

    skipped = skipped_kinds(method, task_type)
    if "adapter" in skipped:
        skipped["space"] = ("the Space runtime serves a base model with style adapters, and this run has none "
                            f"(method '{method}'); the model is in the merged repo")
    elif task_type == "SEQ_2_SEQ_LM":
        skipped["space"] = ("the Space runtime generates with causal language models and this run's base is an "
                            "encoder-decoder (seq2seq); the adapter and merged repos load with AutoModelForSeq2SeqLM")
    return skipped


def _demo_table(layout: RunLayout) -> dict:
    """Return the run's demo table (rows and the decoding that made them)."""
    path = layout.demo_table
    if not path.is_file():
        raise HubstyleError(f"'{layout.root}' has no {path.name}, which the Space shows; run `hubstyle evaluate` first")
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HubstyleError(f"{path} is not valid JSON ({err}); re-run evaluate") from None
    if not isinstance(table, dict) or not isinstance(table.get("rows"), list):
        raise HubstyleError(f"{path} has no 'rows' list; re-run evaluate")
    return table
