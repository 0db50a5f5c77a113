"""Ready-to-push repo folders from a run folder: RUN/publish/{base,adapter,merged,classifier,gguf}/, each with a card.

Every folder is rebuilt from scratch and written only from the run's files and facts, so building the same run
twice gives byte-identical folders (and a second push uploads nothing). Nothing local leaks out: the adapter's
``base_model_name_or_path`` names the base's Hub repo id, never a folder, and every JSON file copied is scrubbed of
this machine's paths. Repo naming lives here too (:func:`default_repo_ids`).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

from hubstyle.card import (
    WHOLE_MODEL_METHODS,
    RepoIds,
    adapter_card,
    base_card,
    card_links,
    classifier_card,
    full_card,
    gguf_card,
    merged_card,
)
from hubstyle.errors import HubstyleError
from hubstyle.facts import RunFacts, load_facts
from hubstyle.fsio import atomic_folder
from hubstyle.layout import (
    CONFUSION_FILE,
    LOSS_PLOT,
    MANIFEST,
    PICKLE_SUFFIXES,
    TOKENIZER_CONFIG,
    TOKENIZER_FILES,
    RunLayout,
)
from hubstyle.repo_ids import check_repo_id, is_local_path

PUBLISHABLE = ("base", "adapter", "merged", "classifier", "gguf")  # gguf after merged: it exports that folder
README = "README.md"  # the card, as the Hub names it
# The adapter is the run's headline artifact, so it gets the plain name: owner/shakespeare.
REPO_SUFFIXES = {"adapter": "", "merged": "-merged", "classifier": "-classifier", "base": "-base", "space": "-space",
                 "gguf": "-GGUF", "dataset": "-data"}  # -GGUF: the Hub's convention for llama.cpp files
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
TEXT_SUFFIXES = frozenset({".json", ".md", ".txt", ".yaml", ".yml", ".jinja", ".py", ".csv"})
# Keys that only describe the machine a file was written on (transformers 5 writes the last two into
# tokenizer_config.json: the folder it loaded from was local, and whether it was offline).
MACHINE_KEYS = frozenset({"out_dir", "output_dir", "_name_or_path", "is_local", "local_files_only"})


def default_repo_ids(
    owner: str,
    name: str,
    base_is_local: bool,
    *,
    license: str = "mit",
    language: str = "en",
    datasets: Sequence[str] = (),
    with_dataset: bool = False,
) -> RepoIds:
    """Return the repo ids of run ``name`` under ``owner``: adapter ``owner/name``, then ``-merged``, ``-classifier``,
    ``-space``, ``-GGUF``, when the run pretrained its own base ``-base`` (else ``base`` is None: the run's Hub base)
    and, ``with_dataset`` (its training set is published: the cards cite it), the dataset repo ``-data``."""
    if not owner or "/" in owner or not name or "/" in name:
        raise HubstyleError(f"owner '{owner}' and name '{name}' must be single words like 'alice' and 'shakespeare'")
    ids = {role: check_repo_id(f"{owner}/{name}{suffix}", f"{role} repo id") for role, suffix in REPO_SUFFIXES.items()}
    return RepoIds(
        adapter=ids["adapter"],
        merged=ids["merged"],
        classifier=ids["classifier"],
        space=ids["space"],
        gguf=ids["gguf"],
        base=ids["base"] if base_is_local else None,
        license=license,
        language=language,
        datasets=tuple(datasets),
        dataset=ids["dataset"] if with_dataset else None,
    )


def build_publish_folders(
    run_dir: str | os.PathLike, ids: RepoIds, *, what: Sequence[str] = PUBLISHABLE
) -> dict[str, Path]:
    """Return {kind: folder} of the repo folders built under ``run_dir/publish/`` for each kind in ``what``.

    'base' is built only when the run's base is a local folder (a Hub base is already published); the adapter
    then points at ``ids.base``. When the run's base is a Hub id, ``ids.base`` may be None (it becomes that id)
    but must not name a different repo. Kinds the run has nothing for (:func:`skipped_kinds`: no adapter after a
    full fine-tune) are left out; for such a run 'merged' is the trained model itself.
    """
    layout = RunLayout(Path(run_dir).expanduser())
    kinds = _check_what(what)
    facts = load_facts(layout.root)
    run_base = facts.run.base_model
    local_base = local_base_folder(layout, run_base)
    if local_base is None:
        if ids.base is None:  # any Hub id, 'gpt2' included: hubstyle only points at it
            ids = ids.with_base(check_repo_id(run_base, f"{layout.facts} run.base_model", namespace_required=False))
        elif ids.base != run_base:
            raise HubstyleError(
                f"RepoIds.base is '{ids.base}' but the run was trained on the Hub model '{run_base}'; the adapter must "
                "point at its own base: leave RepoIds.base as None or set it to that id"
            )
    elif ids.base is None:
        raise HubstyleError(
            f"the run's base '{run_base}' is a local folder; set RepoIds.base to the repo id it is published under "
            "(default_repo_ids(owner, name, base_is_local=True) does)"
        )
    elif "base" in kinds:  # hubstyle creates that repo, so it needs its namespace; checked before building any
        check_repo_id(ids.base, "RepoIds.base (the repo the run's local base is published to)")
    leaks = _local_strings(layout, run_base, local_base)
    replacements = _replacements(layout, run_base, local_base, ids.base)
    builders = {
        "base": lambda out: _build_base(layout, facts, ids, local_base, out, replacements),
        "adapter": lambda out: _build_adapter(layout, facts, ids, out, replacements),
        "merged": lambda out: _build_merged(layout, facts, ids, local_base or run_base, out, replacements),
        "classifier": lambda out: _build_classifier(layout, facts, ids, out, replacements),
        # the merged folder built just now, if this call built one (PUBLISHABLE puts merged first)
        "gguf": lambda out: _build_gguf(layout, facts, ids, out, built.get("merged"), local_base or run_base),
    }
    built: dict[str, Path] = {}
    skipped = skipped_kinds(facts.training.method, facts.training.task_type)
    for kind in kinds:
        if (kind == "base" and local_base is None) or kind in skipped:
            continue  # the base is already on the Hub under its own id; a full fine-tune has no adapter
        target = layout.publish / kind
        with atomic_folder(target) as stage:
            card = builders[kind](stage)
            card.save(stage / README)
            _check_links(card, stage, kind)
            _check_no_leaks(stage, leaks, kind)
        built[kind] = target
    return built


def local_base_folder(layout: RunLayout, base_model: str) -> Path | None:
    """Return the local folder of the run's base model, or None when ``base_model`` is a Hub repo id.

    'tiny' (the base hubstyle pretrains) means ``RUN/base``; a path that moved with the run folder is found there too.
    """
    text = str(base_model)
    if text == "tiny":
        candidate = layout.base
    else:
        path = Path(text).expanduser()
        if path.is_dir():
            return path
        if not is_local_path(text):
            return None
        candidate = layout.base if path.name == layout.base.name else path
    if not candidate.is_dir():
        raise HubstyleError(
            f"the run's base model '{text}' is a local folder that does not exist (looked at {candidate}); "
            "put the base back or re-run training"
        )
    return candidate


def skipped_kinds(method: str, task_type: str = "CAUSAL_LM") -> dict[str, str]:
    """Return {kind: why} of the repo kinds a run trained with ``method`` has nothing for: a full or freeze-attention
    fine-tune trained the whole model, so there is no adapter (nor a LoRA GGUF); its model goes to the merged repo.
    An encoder-decoder base (``task_type`` SEQ_2_SEQ_LM) gets no GGUF: the exporter writes decoder-only models."""
    skipped = {}
    if method in WHOLE_MODEL_METHODS:
        skipped["adapter"] = (f"the run trained with method '{method}' ({WHOLE_MODEL_METHODS[method]}), which leaves "
                              "no adapter; the trained model is published as the merged repo")
    if task_type == "SEQ_2_SEQ_LM":
        skipped["gguf"] = ("the base is an encoder-decoder model (seq2seq) and hubstyle's GGUF export writes "
                           "decoder-only ones (Llama family, GPT-2); the merged repo loads with AutoModelForSeq2SeqLM")
    return skipped


# --------------------------------------------------------------------------------------------------- builders


def _build_adapter(layout: RunLayout, facts: RunFacts, ids: RepoIds, out: Path, replacements: dict[str, str]):
    src = layout.adapter
    missing = [name for name in ADAPTER_FILES if not (src / name).is_file()]
    if missing:
        raise HubstyleError(f"adapter folder '{src}' has no {missing[0]}; train the adapter first (hubstyle train)")
    _copy_folder(src, out, replacements)
    config = _read_json(out / "adapter_config.json", "the adapter config")
    config["base_model_name_or_path"] = ids.base  # a Hub id, so peft and AutoPeftModel find the base anywhere
    _write_json(out / "adapter_config.json", config)
    demo = _copy_demo_table(layout, out, replacements)
    _copy_required(layout.classifier / CONFUSION_FILE, out / CONFUSION_FILE, "the classifier's confusion matrix")
    plots = _copy_eval_plots(layout, out)
    return adapter_card(facts, ids, demo, eval_plots=plots, manifest=_copy_manifest(layout, out, replacements),
                        logs=_copy_logs(layout, out))


def _build_merged(layout: RunLayout, facts: RunFacts, ids: RepoIds, base: str | Path, out: Path, replacements):
    from hubstyle.merge import merge_adapter

    if facts.training.method in WHOLE_MODEL_METHODS:
        return _build_full(layout, facts, ids, out, replacements)
    merge_adapter(base, layout.adapter, out, overwrite=True)
    _scrub_folder(out, replacements)
    _copy_required(layout.adapter / LOSS_PLOT, out / LOSS_PLOT, "the training loss plot")
    demo = _copy_demo_table(layout, out, replacements)
    return merged_card(facts, ids, demo, manifest=_copy_manifest(layout, out, replacements))


def _build_full(layout: RunLayout, facts: RunFacts, ids: RepoIds, out: Path, replacements: dict[str, str]):
    """Fill ``out`` with the run's whole trained model (full / freeze-attention fine-tune) and return its card."""
    src = layout.model
    if not (src / "config.json").is_file() or not any(src.glob("*.safetensors")):
        raise HubstyleError(f"model folder '{src}' has no config.json and safetensors weights; train the model first "
                            f"(training.method '{facts.training.method}')")
    _copy_folder(src, out, replacements)  # weights, tokenizer, training facts, loss history and plot
    demo = _copy_demo_table(layout, out, replacements)
    return full_card(facts, ids, demo, eval_plots=_copy_eval_plots(layout, out),
                     manifest=_copy_manifest(layout, out, replacements))


def _build_classifier(layout: RunLayout, facts: RunFacts, ids: RepoIds, out: Path, replacements: dict[str, str]):
    src = layout.classifier
    if not (src / "config.json").is_file():
        raise HubstyleError(f"classifier folder '{src}' has no config.json; train the style classifier first")
    _copy_folder(src, out, replacements)
    return classifier_card(facts, ids)


def _build_gguf(layout: RunLayout, facts: RunFacts, ids: RepoIds, out: Path, merged: Path | None = None,
                base: str | Path | None = None):
    import tempfile

    from hubstyle.export import export_gguf
    from hubstyle.merge import merge_adapter

    name = ids.adapter.split("/")[-1]
    # a full fine-tune has no adapter, so no LoRA GGUF (an adapter folder left from an earlier run is not this run's)
    lora = "adapter" not in skipped_kinds(facts.training.method) and (layout.adapter / ADAPTER_FILES[0]).is_file()
    with tempfile.TemporaryDirectory(prefix=".merged-", dir=layout.root) as tmp:
        if merged is None and lora and base is not None:
            # not built in this call: merge the adapter once, for both files (publish/merged/ may be stale)
            merged = merge_adapter(base, layout.adapter, Path(tmp) / "merged").out_dir
        # each export rewrites the Modelfile: q8_0 goes last, so Ollama runs the smaller file
        exports = [export_gguf(layout.root, q, out, lora=lora and q == "f16", name=name, merged=merged)
                   for q in ("f16", "q8_0")]
    return gguf_card(facts, ids, exports, _read_json(layout.demo_table, "the demo table (hubstyle evaluate writes it)"))


def _build_base(layout: RunLayout, facts: RunFacts, ids: RepoIds, base: Path | None, out: Path, replacements):
    if base is None or not (base / "config.json").is_file():
        raise HubstyleError(f"base folder '{base}' has no config.json; pretrain the base first")
    _copy_folder(base, out, replacements)
    return base_card(facts, ids, _read_json(out / "config.json", "the base model config"))


# --------------------------------------------------------------------------------------------------- files


def _copy_folder(src: Path, out: Path, replacements: Mapping[str, str]) -> None:
    """Copy ``src`` into ``out`` without READMEs, pickles or hidden files, scrubbing every JSON file."""
    for file in sorted(src.rglob("*")):
        rel = file.relative_to(src)
        if not file.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        if rel.as_posix() == README or file.suffix in PICKLE_SUFFIXES:
            continue
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, dest)
    _scrub_folder(out, replacements)


def _copy_manifest(layout: RunLayout, out: Path, replacements: Mapping[str, str]) -> str | None:
    """Return the manifest's file name after writing its public form into ``out``; None when the run has none (made
    by `hubstyle train` or the quickstart rather than `hubstyle run`)."""
    from hubstyle.manifest import public_manifest_text

    text = public_manifest_text(layout)
    if text is None:
        return None
    (out / MANIFEST).write_text(text, encoding="utf-8")
    _scrub_json(out / MANIFEST, replacements)
    return MANIFEST


def _copy_logs(layout: RunLayout, out: Path) -> str | None:
    """Return the repo folder of the run's TensorBoard logs after copying them into ``out``; None when the run logged
    none (training.report_to without tensorboard)."""
    from hubstyle.tracking import PUBLISHED_LOGS, published_event_files

    files = published_event_files(layout.root)
    for source, name in files:
        (out / PUBLISHED_LOGS).mkdir(exist_ok=True)
        shutil.copyfile(source, out / PUBLISHED_LOGS / name)
    return PUBLISHED_LOGS if files else None


def _copy_eval_plots(layout: RunLayout, out: Path) -> list[str]:
    """Return the repo paths of the evaluation plots (RUN/eval/*.png) after copying them into ``out/eval/``."""
    plots = []
    if layout.evaluation.is_dir():
        for png in sorted(layout.evaluation.glob("*.png")):
            (out / "eval").mkdir(exist_ok=True)
            shutil.copyfile(png, out / "eval" / png.name)
            plots.append(f"eval/{png.name}")
    return plots


def _copy_demo_table(layout: RunLayout, out: Path, replacements: Mapping[str, str]) -> dict:
    _copy_required(layout.demo_table, out / layout.demo_table.name, "the demo table (hubstyle evaluate writes it)")
    _scrub_json(out / layout.demo_table.name, replacements)
    return _read_json(out / layout.demo_table.name, "the demo table")


def _copy_required(src: Path, dest: Path, what: str) -> None:
    if not src.is_file():
        raise HubstyleError(f"{what} is missing: expected {src}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)


def _scrub_folder(folder: Path, replacements: Mapping[str, str]) -> None:
    for file in sorted(folder.rglob("*.json")):
        _scrub_json(file, replacements)


def _scrub_json(file: Path, replacements: Mapping[str, str]) -> None:
    """Rewrite ``file`` without machine-specific keys and local paths (left byte-for-byte alone when clean)."""
    data = _read_json(file, file.name)
    vocabulary = file.name in TOKENIZER_FILES and file.name != TOKENIZER_CONFIG  # its keys are tokens, not settings
    clean = _scrub(data, replacements, vocabulary=vocabulary)
    if clean != data:
        _write_json(file, clean)


def _scrub(value: Any, replacements: Mapping[str, str], *, vocabulary: bool) -> Any:
    if isinstance(value, dict):
        return {
            k: _scrub(v, replacements, vocabulary=vocabulary)
            for k, v in value.items()
            if vocabulary or k not in MACHINE_KEYS
        }
    if isinstance(value, list):
        return [_scrub(v, replacements, vocabulary=vocabulary) for v in value]
    if not isinstance(value, str):
        return value
    if value in replacements:
        return replacements[value]
    for local, public in replacements.items():
        if public == "." and value.startswith(local + "/"):
            return value[len(local) + 1 :]  # a path inside the run folder becomes relative to it
    if not vocabulary and _is_machine_path(value):
        return Path(value).name
    return value


_ABSOLUTE = re.compile(r"^(~|/)[^\s]*$")


def _is_machine_path(text: str) -> bool:
    """Return whether ``text`` is an absolute path on this machine (its top folder exists), e.g. '/home/x/y': a
    leaked path to scrub from a published file (not whether a name is a path or a Hub id: see repo_ids)."""
    if not _ABSOLUTE.match(text) or text in ("/", "~"):
        return False
    path = Path(text).expanduser()
    parts = path.parts
    return len(parts) >= 3 and Path(parts[0], parts[1]).exists()


def _local_strings(layout: RunLayout, run_base: str, local_base: Path | None) -> list[str]:
    """Return the strings whose presence in a published text file means a local path leaked."""
    found = {str(layout.root.resolve())}
    if layout.root.is_absolute():
        found.add(str(layout.root))
    if local_base is not None:
        found.add(str(local_base.resolve()))
        if local_base.is_absolute():
            found.add(str(local_base))
        if len(run_base) >= 8 and run_base != "tiny":
            found.add(run_base)
    return sorted(found)


def _replacements(layout: RunLayout, run_base: str, local_base: Path | None, base_id: str) -> dict[str, str]:
    """Return local string -> public string: the base folder -> the base's repo id, the run folder -> '.'."""
    mapping: dict[str, str] = {}
    for root in (layout.root, layout.root.resolve()):
        mapping[str(root)] = "."
    if local_base is not None:
        for text in (run_base, str(local_base), str(local_base.resolve())):
            mapping[text] = base_id
        trained_on = _adapter_base(layout)
        if trained_on:
            path = Path(trained_on).expanduser()
            if trained_on == run_base or (path.exists() and path.resolve() == local_base.resolve()):
                mapping[trained_on] = base_id
    return mapping


def _adapter_base(layout: RunLayout) -> str | None:
    config = layout.adapter / "adapter_config.json"
    if not config.is_file():
        return None
    return _read_json(config, "the adapter config").get("base_model_name_or_path")


def _check_links(card, folder: Path, kind: str) -> None:
    for target in card_links(card):
        if not (folder / target).is_file():
            raise HubstyleError(f"the {kind} card links '{target}', which is not in the {kind} repo folder {folder}")


def _check_no_leaks(folder: Path, leaks: Sequence[str], kind: str) -> None:
    for file in sorted(folder.rglob("*")):
        if file.is_file() and file.suffix in TEXT_SUFFIXES:
            text = file.read_text(encoding="utf-8", errors="replace")
            for local in leaks:
                if local in text:
                    raise HubstyleError(
                        f"{kind} repo file '{file.relative_to(folder)}' still contains the local path '{local}'; "
                        "refusing to publish it"
                    )


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise HubstyleError(f"{what} is missing: expected {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HubstyleError(f"{path} is not valid JSON ({err}); re-create it") from None


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _check_what(what: Sequence[str]) -> list[str]:
    if isinstance(what, str):
        what = (what,)
    for kind in what:
        if kind not in PUBLISHABLE:
            close = difflib.get_close_matches(str(kind), PUBLISHABLE, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            extra = "; the Space folder comes from hubstyle.space_folder.build_space_folder" if kind == "space" else ""
            raise HubstyleError(f"cannot publish '{kind}'{hint}; choose from {', '.join(PUBLISHABLE)}{extra}")
    return [k for k in PUBLISHABLE if k in what]
