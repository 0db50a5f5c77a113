"""Merging a style adapter into its base model, and blending several adapters into one (peft does the maths).

Two artifacts come out of here, both loadable without hubstyle:

* ``merge_adapter`` -> a plain model folder (safetensors, tokenizer, generation config) that
  ``AutoModelForCausalLM.from_pretrained`` loads; the base is always reloaded in float32 for this, even for an
  adapter trained on a 4-bit/8-bit base, because LoRA weights cannot be merged faithfully into quantised weights.
* ``blend_adapters`` -> a normal LoRA adapter folder made by peft's ``add_weighted_adapter`` that
  ``PeftModel.from_pretrained(base, out_dir)`` loads like any other.

Both build their output in a hidden folder beside ``out_dir`` that replaces it whole at the end
(``fsio.atomic_folder``), so a failure leaves nothing half-written. Bad input is rejected with a one-line
``HubstyleError`` before any model is loaded.

An adapter folder trained by hubstyle carries ``hubstyle_training.json`` (``layout.TRAINING_FACTS``, written by
``train.save_trained``); ``merge_adapter`` reads its ``"quantization"`` key ('4bit', '8bit' or null) when the caller
does not say how the adapter was trained.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from hubstyle.config import QUANTIZATIONS
from hubstyle.errors import HubstyleError
from hubstyle.fsio import atomic_folder
from hubstyle.layout import TRAINING_FACTS
from hubstyle.models import BASE_ADAPTER_NAME, has_tokenizer, load_adapters, load_base
from hubstyle.repo_ids import is_local_path

# What peft 0.21's LoraModel.add_weighted_adapter accepts (see its _check_add_weighted_adapter).
COMBINATION_TYPES = (
    "linear",
    "cat",
    "svd",
    "ties",
    "ties_svd",
    "dare_linear",
    "dare_ties",
    "dare_linear_svd",
    "dare_ties_svd",
    "magnitude_prune",
    "magnitude_prune_svd",
)
# peft combines the A and B matrices entry by entry for these, so every adapter needs the same rank.
EQUAL_RANK_TYPES = frozenset({"linear", "ties", "dare_linear", "dare_ties", "magnitude_prune"})
# These prune the task tensors and need a density in (0, 1].
DENSITY_TYPES = frozenset(t for t in COMBINATION_TYPES if t.startswith(("ties", "dare", "magnitude_prune")))
# These elect a sign per entry; majority_sign_method picks how.
SIGN_TYPES = frozenset({"ties", "ties_svd", "dare_ties", "dare_ties_svd"})
MAJORITY_SIGN_METHODS = ("total", "frequency")


@dataclass
class MergeReport:
    """What ``merge_adapter`` did: inputs, output folder, dtype of the saved weights and notes for the card."""

    base: str
    adapter: str
    out_dir: Path
    dtype: str
    quantized_training: str | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        """Return the report as JSON-ready plain data."""
        data = dataclasses.asdict(self)
        data["out_dir"] = str(self.out_dir)
        return data


@dataclass
class BlendReport:
    """What ``blend_adapters`` did: the adapters, their weights, the combination and the new adapter's rank."""

    base: str
    adapters: dict[str, str]
    weights: dict[str, float]
    combination_type: str
    out_dir: Path
    name: str
    rank: int
    density: float | None = None
    majority_sign_method: str | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        """Return the report as JSON-ready plain data."""
        data = dataclasses.asdict(self)
        data["out_dir"] = str(self.out_dir)
        return data


# --------------------------------------------------------------------------------------------------- merge


def merge_adapter(
    base: str | os.PathLike,
    adapter: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    quantized_training: str | None = None,
    overwrite: bool = False,
) -> MergeReport:
    """Return a ``MergeReport`` after merging ``adapter`` into a float32 ``base`` and saving a plain model folder.

    ``quantized_training`` ('4bit'/'8bit') says the adapter was trained on a quantised base; when None it is read
    from the adapter folder's ``hubstyle_training.json``. Either way the base is reloaded in full precision.
    """
    out_dir = Path(out_dir).expanduser()
    if quantized_training is not None and quantized_training not in QUANTIZATIONS:
        raise HubstyleError(f"unknown quantized_training '{quantized_training}'; use '4bit', '8bit' or None")
    adapter_dir = _resolve_adapter("adapter", adapter)
    config = _adapter_config("adapter", adapter_dir)
    if _is_prompt_learning(config):
        raise HubstyleError(
            f"adapter '{adapter}' is a {config['peft_type']} adapter, which has no weights to merge; "
            "merge a LoRA (or other weight-based) adapter instead"
        )
    _check_out_dir(out_dir, overwrite, inputs=[adapter_dir, base])

    notes: list[str] = []
    marker = _training_quantization(adapter_dir)
    if quantized_training is None and marker:
        quantized_training = marker
        notes.append(f"{TRAINING_FACTS} says the adapter was trained on a {marker} base")
    elif quantized_training and marker != quantized_training and (adapter_dir / TRAINING_FACTS).is_file():
        notes.append(f"quantized_training='{quantized_training}' given; {TRAINING_FACTS} said '{marker}'")
    if quantized_training:
        notes.append(
            f"adapter trained on a {_describe(quantized_training)} base was merged into a full-precision (float32) "
            "reload of the base, since LoRA weights cannot be merged faithfully into quantised weights; the result "
            f"is base(fp32) + adapter and differs from the {quantized_training} model it was trained with by the "
            "base's quantisation error"
        )
    trained_on = config.get("base_model_name_or_path")
    if trained_on and _normalise_base(trained_on) != _normalise_base(base):
        notes.append(f"adapter config names base '{trained_on}'; merged into '{base}'")

    import torch

    # on the CPU: a float32 base does not fit where its quantised copy trained, and the saved weights must be
    # host tensors for whatever reads them next (safetensors, the GGUF writer's numpy)
    model = load_adapters(load_base(base, dtype=torch.float32, on_device=torch.device("cpu")), {"adapter": adapter_dir})
    try:
        merged = model.merge_and_unload(safe_merge=True)
    except ValueError as err:  # safe_merge found NaNs
        raise HubstyleError(f"merging adapter '{adapter}' failed: {err}; check the adapter's weights") from err
    tok_src = adapter_dir if has_tokenizer(adapter_dir) else base
    notes.append(f"tokenizer from the {'adapter folder' if tok_src == adapter_dir else 'base'}")
    with atomic_folder(out_dir) as stage:
        merged.save_pretrained(stage, safe_serialization=True)
        _save_tokenizer(tok_src, stage)
    return MergeReport(
        base=str(base),
        adapter=str(adapter),
        out_dir=out_dir,
        dtype="float32",
        quantized_training=quantized_training,
        notes=notes,
    )


# --------------------------------------------------------------------------------------------------- blends


def blend_adapters(
    base: str | os.PathLike,
    adapters: Mapping[str, str | os.PathLike],
    weights: Mapping[str, float] | Sequence[float],
    out_dir: str | os.PathLike,
    *,
    combination_type: str = "linear",
    density: float | None = None,
    majority_sign_method: str = "total",
    svd_rank: int | None = None,
    name: str = "blend",
    overwrite: bool = False,
) -> BlendReport:
    """Return a ``BlendReport`` after combining ``adapters`` with ``weights`` into one LoRA adapter in ``out_dir``.

    ``weights`` is a name -> weight mapping or a list in the order of ``adapters``; ``combination_type`` is one of
    peft's (``COMBINATION_TYPES``). The folder holds only the new adapter, at its top level.
    """
    out_dir = Path(out_dir).expanduser()
    if not adapters:
        raise HubstyleError("no adapters to blend; pass a mapping of name -> adapter folder")
    names = list(adapters)
    for n in names:
        _check_adapter_name(n)
    _check_adapter_name(name)
    if name in adapters:
        raise HubstyleError(f"blend name '{name}' is also an adapter's name; pick another name for the blend")
    _check_combination(combination_type, density, majority_sign_method)
    weight_list = _weights_in_order(names, weights)
    _check_out_dir(out_dir, overwrite, inputs=[base, *adapters.values()])

    dirs = {n: _resolve_adapter(n, where) for n, where in adapters.items()}
    configs = {n: _adapter_config(n, d) for n, d in dirs.items()}
    _check_blendable(configs, combination_type)
    notes: list[str] = []
    trained_on = {_normalise_base(c.get("base_model_name_or_path")) for c in configs.values()} - {None}
    if trained_on and _normalise_base(base) not in trained_on:
        notes.append(f"adapters name base '{sorted(trained_on)[0]}'; blended on '{base}'")
    if len(names) == 1 and combination_type != "linear":
        notes.append(f"one adapter only: peft uses 'linear' instead of '{combination_type}'")
    if combination_type == "linear" and sum(w != 0 for w in weight_list) > 1:
        notes.append(
            "'linear' mixes the A and B matrices separately, so the blend's update has cross terms and is only "
            "roughly the weighted sum of the adapters' updates; 'cat' is exact (so is 'svd' with svd_rank >= the "
            "sum of the ranks)"
        )

    import torch

    model = load_adapters(load_base(base, dtype=torch.float32), dirs)
    rank = _add_weighted(model, names, weight_list, name, combination_type, density, majority_sign_method, svd_rank)
    tok_src = next((d for d in dirs.values() if has_tokenizer(d)), None)
    with atomic_folder(out_dir) as stage:
        peft_out = stage / ".peft"
        model.save_pretrained(peft_out, selected_adapters=[name], safe_serialization=True)
        # peft puts any adapter not called "default" in a subfolder; lift it so out_dir is a normal adapter folder
        src = peft_out / name if (peft_out / name / "adapter_config.json").is_file() else peft_out
        for item in src.iterdir():
            if item.is_file():
                os.replace(item, stage / item.name)
        if (peft_out / "README.md").is_file() and not (stage / "README.md").exists():
            os.replace(peft_out / "README.md", stage / "README.md")
        shutil.rmtree(peft_out)
        if tok_src is not None:
            _save_tokenizer(tok_src, stage)
    if tok_src is not None:
        notes.append(f"tokenizer copied from '{tok_src}'")
    return BlendReport(
        base=str(base),
        adapters={n: str(a) for n, a in adapters.items()},
        weights=dict(zip(names, weight_list)),
        combination_type=combination_type,
        out_dir=out_dir,
        name=name,
        rank=rank,
        density=density,
        majority_sign_method=majority_sign_method if combination_type in SIGN_TYPES else None,
        notes=notes,
    )


def blend_sweep_weights(grid: Sequence[float] = (0, 0.25, 0.5, 0.75, 1)) -> list[tuple[float, float]]:
    """Return ``(w, 1 - w)`` weight pairs, one per ``w`` in ``grid``: the first adapter's weight, then the second's."""
    pairs = []
    for w in grid:
        if not math.isfinite(float(w)):
            raise HubstyleError(f"sweep weight {w!r} is not a finite number; use values like 0, 0.5, 1")
        pairs.append((float(w), 1.0 - float(w)))
    return pairs


def blend_for_weight(
    model,
    names: tuple[str, str],
    w: float,
    combination_type: str = "linear",
    *,
    density: float | None = None,
    majority_sign_method: str = "total",
) -> str:
    """Return the name of the now-active adapter blending ``names[0]`` at ``w`` and ``names[1]`` at ``1 - w``.

    ``model`` is a ``PeftModel`` with both adapters loaded (``hubstyle.models.load_adapters``). The blend is added
    once as ``blend_<combination>_w<w>`` (e.g. ``blend_linear_w0p50``: peft adapter names cannot hold a '.') and
    reused on later calls, so a sweep never reloads the base.
    """
    if len(names) != 2:
        raise HubstyleError(f"blend_for_weight blends two adapters, got {len(names)}: {list(names)}")
    loaded = list(model.peft_config)
    missing = [n for n in names if n not in loaded]
    if missing:
        raise HubstyleError(f"adapter(s) {missing} are not loaded on the model (loaded: {loaded}); load them first")
    _check_combination(combination_type, density, majority_sign_method)
    if combination_type in EQUAL_RANK_TYPES:
        _check_equal_ranks({n: _rank(model.peft_config[n].to_dict()) for n in names}, combination_type)
    w = float(w)
    if not math.isfinite(w):
        raise HubstyleError(f"blend weight {w!r} is not a finite number; use values like 0, 0.5, 1")
    blend = f"blend_{combination_type}_w{w:.2f}".replace(".", "p").replace("-", "m")
    made_from = (tuple(names), combination_type, density, majority_sign_method)
    recipes = model.__dict__.setdefault("_hubstyle_blends", {})
    if blend in model.peft_config:
        if recipes.get(blend) != made_from:
            raise HubstyleError(
                f"adapter '{blend}' already exists on the model but was not made from {made_from}; "
                "delete it (model.delete_adapter) or load the adapters on a fresh base"
            )
    else:
        _add_weighted(model, list(names), [w, 1.0 - w], blend, combination_type, density, majority_sign_method, None)
        recipes[blend] = made_from
    model.set_adapter(blend)
    model.eval()
    return blend


def _add_weighted(model, names, weights, blend, combination_type, density, majority_sign_method, svd_rank) -> int:
    """Return the rank of adapter ``blend`` after adding it to ``model`` with peft's ``add_weighted_adapter``."""
    try:
        model.add_weighted_adapter(
            adapters=list(names),
            weights=[float(w) for w in weights],
            adapter_name=blend,
            combination_type=combination_type,
            svd_rank=svd_rank,
            density=density,
            majority_sign_method=majority_sign_method,
        )
    except (ValueError, TypeError) as err:
        # peft registers the config before building the layers; drop it so a retry is not silently skipped
        model.peft_config.pop(blend, None)
        raise HubstyleError(f"peft could not blend {list(names)} with '{combination_type}': {err}") from err
    _fix_rslora_scaling(model, blend)
    return int(model.peft_config[blend].r)


def _fix_rslora_scaling(model, blend: str) -> None:
    """Give a blended adapter scaling 1, as peft intends: peft 0.21.2 copies ``use_rslora`` from the first adapter
    but sets ``lora_alpha = r``, so an rsLoRA blend would be scaled by sqrt(r)."""
    from peft.tuners.lora import LoraLayer

    config = model.peft_config[blend]
    if not getattr(config, "use_rslora", False):
        return
    config.use_rslora = False
    config.lora_alpha = config.r
    for module in model.modules():
        if isinstance(module, LoraLayer) and blend in module.scaling:
            module.scaling[blend] = 1.0


# --------------------------------------------------------------------------------------------------- checks


def _check_combination(combination_type: str, density: float | None, majority_sign_method: str) -> None:
    if combination_type not in COMBINATION_TYPES:
        close = difflib.get_close_matches(str(combination_type), COMBINATION_TYPES, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise HubstyleError(
            f"unknown combination_type '{combination_type}'{hint}; use one of {', '.join(COMBINATION_TYPES)}"
        )
    if combination_type in DENSITY_TYPES:
        if density is None or not (0 < float(density) <= 1):
            raise HubstyleError(
                f"combination_type '{combination_type}' needs a density in (0, 1] (the fraction of entries kept), "
                f"got {density!r}; pass e.g. density=0.5"
            )
    elif density is not None:
        raise HubstyleError(
            f"density={density!r} has no effect with '{combination_type}'; drop it or use one of "
            f"{', '.join(sorted(DENSITY_TYPES))}"
        )
    if majority_sign_method not in MAJORITY_SIGN_METHODS:
        raise HubstyleError(
            f"unknown majority_sign_method '{majority_sign_method}'; use {' or '.join(MAJORITY_SIGN_METHODS)}"
        )


def _check_adapter_name(name: str) -> None:
    # torch module names cannot hold '.', and peft may re-initialise an adapter whose name is inside 'lora_'
    if not name or "." in name or name == BASE_ADAPTER_NAME or name in "lora_":
        raise HubstyleError(
            f"adapter name '{name}' is not allowed (empty, contains '.', is '{BASE_ADAPTER_NAME}' or sits inside "
            "'lora_'); use a word of letters, digits, '_' or '-' such as 'shakespeare'"
        )


def _weights_in_order(names: list[str], weights: Mapping[str, float] | Sequence[float]) -> list[float]:
    if isinstance(weights, Mapping):
        missing = [n for n in names if n not in weights]
        extra = [n for n in weights if n not in names]
        if missing or extra:
            raise HubstyleError(
                f"weights do not match the adapters {names}: missing {missing}, unknown {extra}; "
                "give one weight per adapter name"
            )
        values = [weights[n] for n in names]
    else:
        values = list(weights)
        if len(values) != len(names):
            raise HubstyleError(
                f"got {len(values)} weights {values} for {len(names)} adapters {names}; give one weight per adapter"
            )
    bad = [v for v in values if not isinstance(v, (int, float)) or not math.isfinite(v)]
    if bad:
        raise HubstyleError(f"weights must be finite numbers, got {bad}")
    return [float(v) for v in values]


def _check_blendable(configs: dict[str, dict], combination_type: str) -> None:
    for n, c in configs.items():
        if c.get("peft_type", "LORA") != "LORA":
            raise HubstyleError(f"adapter '{n}' is a {c['peft_type']} adapter; only LoRA adapters can be blended")
        unsupported = [
            key
            for key, bad in (
                ("use_dora", c.get("use_dora")),
                ("lora_bias", c.get("lora_bias")),
                ("modules_to_save", c.get("modules_to_save")),
                ("target_parameters", c.get("target_parameters")),
            )
            if bad
        ]
        if unsupported:
            raise HubstyleError(
                f"adapter '{n}' uses {', '.join(unsupported)}, which peft's add_weighted_adapter does not blend; "
                "merge it on its own (merge_adapter) or retrain it as a plain LoRA"
            )
    bases = {n: _normalise_base(c.get("base_model_name_or_path")) for n, c in configs.items()}
    if len(set(bases.values())) > 1:
        listing = ", ".join(f"{n}: {b}" for n, b in bases.items())
        raise HubstyleError(f"adapters were trained on different bases ({listing}); blend adapters of one base only")
    kinds = {n: "regex" if isinstance(c.get("target_modules"), str) else "list" for n, c in configs.items()}
    if len(set(kinds.values())) > 1:
        listing = ", ".join(f"{n}: {configs[n].get('target_modules')!r}" for n in configs)
        raise HubstyleError(
            f"adapters give target_modules as a mix of regex and list ({listing}); peft cannot blend them, "
            "retrain with the same kind of target_modules"
        )
    if len(configs) > 1 and combination_type in EQUAL_RANK_TYPES:
        _check_equal_ranks({n: _rank(c) for n, c in configs.items()}, combination_type)


def _check_equal_ranks(ranks: dict[str, int], combination_type: str) -> None:
    if len(set(ranks.values())) > 1:
        listing = ", ".join(f"{n}: r={r}" for n, r in ranks.items())
        raise HubstyleError(
            f"combination_type '{combination_type}' needs adapters of equal rank, got {listing}; "
            "use 'cat' or an '*_svd' combination, or adapters trained with one rank"
        )


def _rank(config: dict) -> int:
    # as peft counts it: the largest rank any module of the adapter has
    return max([int(config["r"]), *(int(r) for r in (config.get("rank_pattern") or {}).values())])


def _check_out_dir(out_dir: Path, overwrite: bool, inputs: Sequence[str | os.PathLike]) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise HubstyleError(f"out_dir '{out_dir}' is a file; give a folder path")
    target = out_dir.resolve()
    for src in inputs:
        src_path = Path(src).expanduser()
        if src_path.exists():
            src_path = src_path.resolve()
            if target == src_path or target in src_path.parents or src_path in target.parents:
                raise HubstyleError(f"out_dir '{out_dir}' overlaps the input '{src}'; write to a separate folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise HubstyleError(f"out_dir '{out_dir}' is not empty; pass overwrite=True or choose another folder")


def _is_prompt_learning(config: dict) -> bool:
    from peft.config import PromptLearningConfig
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    config_class = PEFT_TYPE_TO_CONFIG_MAPPING.get(config.get("peft_type"))
    return config_class is not None and issubclass(config_class, PromptLearningConfig)


# --------------------------------------------------------------------------------------------------- files


def _resolve_adapter(name: str, where: str | os.PathLike) -> Path:
    """Return the local folder of an adapter: ``where`` itself, or a snapshot of the Hub repo it names."""
    path = Path(where).expanduser()
    if path.is_dir():
        return path
    text = str(where)
    if path.exists() or is_local_path(text):
        raise HubstyleError(f"adapter '{name}' folder '{where}' does not exist; check the path")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(text))
    except Exception as err:  # offline, unknown repo, no access: all mean the same to the user
        raise HubstyleError(
            f"adapter '{name}': '{where}' is not a local folder and could not be fetched from the Hub "
            f"({type(err).__name__}); check the path or repo id"
        ) from err


def _adapter_config(name: str, folder: Path) -> dict:
    file = folder / "adapter_config.json"
    if not file.is_file():
        raise HubstyleError(
            f"adapter '{name}' folder '{folder}' has no adapter_config.json; point at a folder saved by peft"
        )
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise HubstyleError(f"adapter '{name}': {file} is not valid JSON ({err}); re-save the adapter") from err


def _training_quantization(folder: Path) -> str | None:
    """Return the quantization ('4bit'/'8bit') an adapter's ``hubstyle_training.json`` records, or None."""
    file = folder / TRAINING_FACTS
    if not file.is_file():
        return None
    try:
        value = json.loads(file.read_text(encoding="utf-8")).get("quantization")
    except (json.JSONDecodeError, AttributeError) as err:
        raise HubstyleError(f"{file} is not a JSON object ({err}); fix or delete it") from err
    if value in (None, "", "none", False):
        return None
    if value not in QUANTIZATIONS:
        raise HubstyleError(f"{file} has quantization '{value}'; expected '4bit', '8bit' or null")
    return value


def _normalise_base(base: str | os.PathLike | None) -> str | None:
    """Return a comparable name for a base: the resolved path of a local folder, else the repo id as given."""
    if base is None:
        return None
    path = Path(base).expanduser()
    if path.exists():
        return str(path.resolve())
    text = str(base)
    return os.path.normpath(text) if is_local_path(text) else text.rstrip("/")


def _describe(quantization: str) -> str:
    return "4-bit (nf4)" if quantization == "4bit" else "8-bit"


def _save_tokenizer(src: str | os.PathLike, dst: Path) -> None:
    # loaded and saved as-is (no pad/padding-side changes) so the published tokenizer is the one trained with
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(src)).save_pretrained(dst)

