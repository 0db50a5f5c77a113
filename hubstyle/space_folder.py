"""The Space repository folder: README front matter, pinned requirements, the app and its config and demo table.

The folder runs with its ``requirements.txt`` alone: the app code travels inside it. ``space_app.py`` is a
byte-for-byte copy of hubstyle's own runtime module (``hubstyle/space.py``, which imports nothing from hubstyle that
it cannot do without), beside byte-for-byte copies of the two modules it imports (``space_settings.py``,
``space_models.py``); ``app.py`` (a copy of the repository's ``space/app.py``) only launches it. Requirements are
pinned to the versions installed here, the ones the run used; ``hubstyle`` is never one of them (it is not on PyPI).
A requirement that would not resolve is refused here, before anything is written.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Mapping, Sequence

from hubstyle.card import HUB_URL
from hubstyle.errors import HubstyleError
from hubstyle.fsio import atomic_folder
from hubstyle.repo_ids import check_repo_id

# found without importing it (it imports torch): the builder only copies it
RUNTIME_SOURCE = Path(importlib.util.find_spec("hubstyle.space").origin)
RUNTIME_MODULE = "space_app"  # the runtime's name inside the Space folder (app.py imports it)
# the modules space_app.py imports, copied beside it under their own names (it imports them so without hubstyle)
RUNTIME_PARTS = {f"{name}.py": Path(importlib.util.find_spec(f"hubstyle.{name}").origin)
                 for name in ("space_settings", "space_models")}
APP_FILE = "app.py"
REQUIREMENTS_FILE = "requirements.txt"
PINNED_PACKAGES = ("torch", "transformers", "peft", "gradio")  # what space_app.py imports (spaces: ZeroGPU's own)
SPACE_COLORS = ("red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray")
SHORT_DESCRIPTION_MAX = 60
APP_TEMPLATE = "app.py"  # space/app.py in a checkout; hubstyle.space_files in a wheel


def app_source() -> bytes:
    """Return the Space entry point (``space/app.py``): the one hand-kept launcher every Space folder gets."""
    local = Path(__file__).resolve().parents[1] / "space" / APP_TEMPLATE
    if local.is_file():
        return local.read_bytes()
    from importlib.resources import files

    packaged = files("hubstyle.space_files") / APP_TEMPLATE
    if not packaged.is_file():
        raise HubstyleError(f"the Space entry point '{APP_TEMPLATE}' is missing from {local.parent} and the "
                            "package 'hubstyle.space_files'; reinstall hubstyle")
    return packaged.read_bytes()


def pinned_requirements(packages: Sequence[str] = PINNED_PACKAGES) -> list[str]:
    """Return ``name==version`` lines for the installed ``packages`` (local tags such as +cpu dropped)."""
    from packaging.version import Version

    lines = []
    for name in packages:
        try:
            lines.append(f"{name}=={Version(version(name)).public}")
        except PackageNotFoundError as err:
            raise HubstyleError(f"'{name}' is not installed; pip install 'hubstyle[space]' to pin it") from err
    return lines


def check_requirements(lines: Sequence[str]) -> list[str]:
    """Return ``lines`` after checking each is a requirement that resolves to what is installed here.

    A Space installs its requirements from PyPI; a line pip can't parse, the unpublished ``hubstyle``, a package
    not installed here or a version other than the installed one would give a Space that does not build, or runs
    code this run never did.
    """
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    for line in lines:
        try:
            req = Requirement(line)
        except InvalidRequirement as err:
            reason = str(err).splitlines()[0]  # packaging adds a caret diagram below
            raise HubstyleError(f"Space requirement '{line}' is not a valid requirement ({reason}); "
                                "write it as pip does, e.g. 'numpy==2.1.0'") from None
        if canonicalize_name(req.name) == "hubstyle":
            raise HubstyleError(f"Space requirement '{line}': hubstyle is not on PyPI, and the Space does not need it "
                                f"(its app travels in {RUNTIME_MODULE}.py); drop that line")
        try:
            installed = version(req.name)
        except PackageNotFoundError:
            raise HubstyleError(f"Space requirement '{line}' names '{req.name}', which is not installed here, so the "
                                "Space would run code this run never did; pip install it or drop the line") from None
        if req.specifier and not req.specifier.contains(installed, prereleases=True):
            raise HubstyleError(f"Space requirement '{line}' does not match the installed {req.name} {installed}; "
                                f"pin {req.name}=={installed}")
    return list(lines)


def demo_caption(decoding: Mapping[str, Any] | None) -> str:
    """Return the line above the Space's demo table: how its rows were made, from their recorded decoding."""
    from hubstyle.facts import load_decoding

    if not decoding:
        raise HubstyleError("the demo table records no 'decoding', which the Space's demo caption needs; re-run "
                            "evaluate")
    settings = load_decoding(decoding, "the demo table")
    rows = "Answers" if settings.chat else "Continuations"
    return f"{rows} made once when the adapters were published ({settings.words()}):"


def _readme_body(title: str, base_repo: str, adapters: Mapping[str, str], n_rows: int, chat: bool) -> str:
    from hubstyle.space import ADAPTERS_ENV, BASE_ENV, DEMO_TABLE_FILE

    ask = "Ask something" if chat else "Type the beginning of a text"
    lines = [
        f"# {title}",
        "",
        "Base model and style adapters side by side: each request runs one batched generation in which the first",
        f"row is the base model [{base_repo}]({HUB_URL}/{base_repo}) and the second the same model",
        "with a LoRA style adapter (peft mixed-adapter batches).",
        "",
        "## Adapters",
        "",
        *[f"- **{name}**: [{repo}]({HUB_URL}/{repo})" for name, repo in adapters.items()],
        "",
        "## How to use",
        "",
        f"{ask}, pick an adapter and press **Generate**; both columns fill as tokens arrive.",
        "**Stop** ends the generation. Temperature 0 decodes greedily; with a temperature above 0 the seed makes",
        "samples repeatable. The demo table below the columns was generated when the adapters were published.",
        "",
        "To load an adapter yourself:",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "from peft import PeftModel",
        "",
        f'base = AutoModelForCausalLM.from_pretrained("{base_repo}")',
        f'model = PeftModel.from_pretrained(base, "{next(iter(adapters.values()))}")',
        "```",
        "",
        f"Built with hubstyle; the app is `{RUNTIME_MODULE}.py` (launched by `{APP_FILE}`), and this folder runs with",
        f"`{REQUIREMENTS_FILE}` alone. The {n_rows} demo rows are in `{DEMO_TABLE_FILE}`.",
        "",
        "## Run it on your own machine",
        "",
        "```bash",
        f"pip install -r {REQUIREMENTS_FILE}",
        f"python {APP_FILE}    # then open http://127.0.0.1:7860",
        "```",
        "",
        "The app downloads the models above from the Hub. Offline, point it at local copies instead (made once",
        f"online with `hf download REPO --local-dir FOLDER`): a base model folder in `{BASE_ENV}` and `name=folder`",
        f"pairs (comma-separated) in `{ADAPTERS_ENV}`, e.g.",
        f"`{BASE_ENV}=./base {ADAPTERS_ENV}={next(iter(adapters))}=./adapter python {APP_FILE}`.",
    ]
    return "\n".join(lines) + "\n"


def build_space_folder(
    out_dir: str | os.PathLike,
    *,
    base_repo: str,
    adapters: Mapping[str, str],
    demo_rows: Sequence[Mapping[str, str]],
    title: str,
    emoji: str,
    license: str,
    short_description: str,
    demo_decoding: Mapping[str, Any] | None = None,
    examples: Sequence[str] = (),
    extra_requirements: Sequence[str] = (),
    color_from: str = "indigo",
    color_to: str = "purple",
    python_version: str | None = None,
    max_new_tokens: int = 128,
    max_prompt_chars: int = 500,
    chat: str | None = None,
    datasets: Sequence[str] = (),
) -> Path:
    """Return ``out_dir`` after writing a Gradio Space repo there (replacing it atomically): README.md,
    requirements.txt, app.py, space_app.py (with space_settings.py and space_models.py), space_config.json and the
    demo table.

    ``demo_decoding`` is how the demo rows were generated (demo_table.json's 'decoding'); the Space says so above the
    table. ``extra_requirements`` are lines added to the pinned torch, transformers, peft and gradio. ``datasets``
    are the Hub datasets the adapters were trained on; the metadata lists them next to the models (``models:``), so
    the Hub links the Space, its models and their data both ways.
    """
    from huggingface_hub import SpaceCard, SpaceCardData

    from hubstyle import space

    if not adapters:
        raise HubstyleError("a Space needs at least one adapter repo")
    check_repo_id(base_repo, "base model", namespace_required=False)  # any Hub id, 'gpt2' included
    for name, repo in adapters.items():
        check_repo_id(repo, f"adapter '{name}'")
    if len(short_description) > SHORT_DESCRIPTION_MAX:
        raise HubstyleError(
            f"short_description is {len(short_description)} characters; the Hub takes at most {SHORT_DESCRIPTION_MAX}"
        )
    for name, color in (("color_from", color_from), ("color_to", color_to)):
        if color not in SPACE_COLORS:
            raise HubstyleError(f"{name} '{color}' is not a Space colour; use one of {', '.join(SPACE_COLORS)}")
    rows = [space.demo_row(row, i) for i, row in enumerate(demo_rows)]
    python_version = python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
    requirements = check_requirements([*pinned_requirements(), *extra_requirements])
    gradio_version = requirements[PINNED_PACKAGES.index("gradio")].split("==")[1]

    data = SpaceCardData(
        title=title,
        sdk="gradio",
        sdk_version=gradio_version,
        python_version=str(python_version),
        app_file=APP_FILE,
        license=license,
        models=[base_repo, *adapters.values()],
        datasets=list(datasets) or None,
        emoji=emoji,
        colorFrom=color_from,
        colorTo=color_to,
        short_description=short_description,
        pinned=False,
    )
    body = _readme_body(title, base_repo, adapters, len(rows), chat is not None)
    card = SpaceCard(f"---\n{data.to_yaml()}\n---\n\n{body}")
    config: dict[str, Any] = {
        "base": base_repo,
        "adapters": dict(adapters),
        "demo_table": space.DEMO_TABLE_FILE,
        "examples": list(examples),
        "limits": {"max_new_tokens": max_new_tokens, "max_prompt_chars": max_prompt_chars},
        "title": title,
    }
    if rows:
        config["demo_caption"] = demo_caption(demo_decoding)
    if chat is not None:
        config["chat"] = chat
    out = Path(out_dir)
    with atomic_folder(out) as stage:
        card.save(stage / "README.md")
        (stage / REQUIREMENTS_FILE).write_text("\n".join(requirements) + "\n", encoding="utf-8")
        (stage / APP_FILE).write_bytes(app_source())
        (stage / f"{RUNTIME_MODULE}.py").write_bytes(RUNTIME_SOURCE.read_bytes())
        for name, source in RUNTIME_PARTS.items():
            (stage / name).write_bytes(source.read_bytes())
        for name, content in ((space.SPACE_CONFIG_FILE, config), (space.DEMO_TABLE_FILE, rows)):
            (stage / name).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return out
