"""The demo Space's settings: ``space_config.json`` beside the app, the environment's overrides, and the limits a
request is held to. Part of the Space's runtime (see ``hubstyle.space``): it travels into every Space folder and
imports nothing from hubstyle that it cannot do without."""

import difflib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

try:
    from hubstyle.errors import HubstyleError
except ImportError:  # in a published Space folder, without hubstyle: bad input is still one clear line

    class HubstyleError(Exception):
        """A user-facing error: the message says what was wrong, with the value, and what to do."""



SPACE_CONFIG_FILE = "space_config.json"
# the environment's overrides of space_config.json: local folders in place of Hub ids, e.g. on a machine without the Hub
BASE_ENV, ADAPTERS_ENV = "HUBSTYLE_BASE", "HUBSTYLE_ADAPTERS"
DEMO_TABLE_FILE = "demo_table.json"
DEMO_COLUMNS = ("prompt", "base", "tuned")
CONFIG_KEYS = (
    "base", "adapters", "demo_table", "demo_caption", "examples", "limits", "title", "description", "bf16", "chat",
)
LIMIT_KEYS = ("max_new_tokens", "max_prompt_chars", "max_queue")
BASE_ADAPTER_NAME = "__base__"  # peft's name for "no adapter" in mixed-adapter batches
PLAIN_USER, PLAIN_ASSISTANT = "User", "Assistant"  # hubstyle.chat's `Name: line` format, for bases without a template
DEMO_CAPTION = "Rows made once when the adapters were published:"
# The demo table at 1280 px: fixed column widths and wrapped cells, so a long base answer can't push the tuned
# column off screen.
DEMO_COLUMN_WIDTHS = ["20%", "40%", "40%"]
DEMO_TABLE_CSS = (
    "#demo-table table { table-layout: fixed; width: 100%; }\n"
    "#demo-table th, #demo-table td { white-space: normal; overflow-wrap: anywhere; }\n"
)


# ---------------------------------------------------------------------------------------------------------------
# Settings


@dataclass
class SpaceSettings:
    """What a Space shows: which base and adapters, the cached demo table, example prompts and request limits."""

    base: str
    adapters: dict[str, str]
    demo_rows: list[dict[str, str]] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)
    max_new_tokens: int = 128
    max_prompt_chars: int = 500
    # requests waiting for the one generating slot; past this a visitor is told "Queue is full" (memory stays bounded)
    max_queue: int = 16
    title: str = "hubstyle: base vs style adapter"
    description: str = (
        "Type the start of a text. The left column continues it with the base model, the right column with the "
        "same model wearing a style adapter; both come from one batched generation."
    )
    bf16: bool = True  # bf16 weights where the hardware is fast at it (outputs then differ slightly from fp32)
    chat: str | None = None  # chat template setting (auto/model/plain): prompts asked as a user's turn; None: continue
    demo_caption: str = DEMO_CAPTION  # how the demo rows were made (hubstyle writes their decoding settings here)

    def __post_init__(self) -> None:
        if self.chat is not None and self.description == SpaceSettings.description:
            self.description = (
                "Ask something. The left column answers with the base model, the right column with the same model "
                "wearing a style adapter; both come from one batched generation."
            )
        if not self.adapters:
            raise HubstyleError("a Space needs at least one adapter; set 'adapters' or HUBSTYLE_ADAPTERS=name=repo")
        if min(self.max_new_tokens, self.max_prompt_chars, self.max_queue) < 1:
            raise HubstyleError(
                f"limits must be positive, got max_new_tokens={self.max_new_tokens}, "
                f"max_prompt_chars={self.max_prompt_chars}, max_queue={self.max_queue}"
            )
        self.demo_rows = [demo_row(row, i) for i, row in enumerate(self.demo_rows)]

    def cache_key(self) -> tuple:
        """Return what identifies the loaded model: the base, the adapters and the precision."""
        return (self.base, tuple(sorted(self.adapters.items())), self.bf16)


def demo_row(row: Mapping[str, Any], index: int) -> dict[str, str]:
    """Return one demo table row as {prompt, base, tuned} strings; a row lacking one is an error naming it."""
    missing = [c for c in DEMO_COLUMNS if c not in row]
    if missing:
        raise HubstyleError(f"demo table row {index} lacks {missing}; each row needs keys {list(DEMO_COLUMNS)}")
    return {c: str(row[c]) for c in DEMO_COLUMNS}


def _check_keys(found: Iterable[str], allowed: Sequence[str], where: str) -> None:
    for key in found:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f"; known keys: {', '.join(allowed)}"
            raise HubstyleError(f"unknown key '{key}' in {where}{hint}")


def parse_adapters(text: str) -> dict[str, str]:
    """Return ``{name: repo}`` from ``name=repo,name2=repo2`` (the HUBSTYLE_ADAPTERS format)."""
    adapters: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, where = part.partition("=")
        if not sep or not name.strip() or not where.strip():
            raise HubstyleError(f"bad adapter entry '{part}' in HUBSTYLE_ADAPTERS; write name=repo,name2=repo2")
        adapters[name.strip()] = where.strip()
    return adapters


def _resolve(value: str, folder: Path | None) -> str:
    # "./x" and "../x" in space_config.json mean "next to this file"; anything else is a path or a Hub repo id.
    if folder is not None and value.startswith(("./", "../")):
        return str((folder / value).resolve())
    return value


def load_settings(folder: str | os.PathLike | None = None, *, env: Mapping[str, str] | None = None) -> SpaceSettings:
    """Return the settings from ``folder/space_config.json`` with HUBSTYLE_BASE / HUBSTYLE_ADAPTERS env overrides."""
    env = os.environ if env is None else env
    config: dict[str, Any] = {}
    root = Path(folder) if folder is not None else None
    if root is not None:
        path = root / SPACE_CONFIG_FILE
        if path.is_file():
            try:
                config = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise HubstyleError(f"{path} is not valid JSON: {err}") from err
            _check_keys(config, CONFIG_KEYS, str(path))
            _check_keys(config.get("limits", {}), LIMIT_KEYS, f"{path} 'limits'")
    base = env.get(BASE_ENV) or config.get("base")
    if not base:
        where = f"{root / SPACE_CONFIG_FILE}" if root is not None else "the environment"
        raise HubstyleError(f"no base model: set 'base' in {where} or {BASE_ENV}")
    adapters = parse_adapters(env[ADAPTERS_ENV]) if env.get(ADAPTERS_ENV) else config.get("adapters", {})
    demo_rows: list = []
    if config.get("demo_table") and root is not None:
        table = root / config["demo_table"]
        if not table.is_file():
            raise HubstyleError(f"demo table '{table}' named in {SPACE_CONFIG_FILE} does not exist")
        demo = json.loads(table.read_text(encoding="utf-8"))
        demo_rows = demo["rows"] if isinstance(demo, dict) else demo  # a run's demo_table.json, or its rows
    limits = config.get("limits", {})
    extra = {k: config[k] for k in ("title", "description", "bf16", "chat", "demo_caption") if k in config}
    return SpaceSettings(
        base=_resolve(str(base), root),
        adapters={name: _resolve(str(where), root) for name, where in adapters.items()},
        demo_rows=demo_rows,
        examples=[str(e) for e in config.get("examples", [])],
        **{k: int(v) for k, v in limits.items()},
        **extra,
    )
