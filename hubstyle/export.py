"""GGUF files for llama.cpp and Ollama: a run's merged model (f16 or q8_0), an Ollama Modelfile, and the adapter alone.

Written with PyPI ``gguf`` (``GGUFWriter``, ``SpecialVocab``, ``get_tensor_name_map`` and its numpy quantizers) in the
layout llama.cpp's own converters produce: Llama q/k rows permuted from transformers' rotate-half order to
llama.cpp's interleaved one, GPT-2 Conv1D weights transposed, 1-D tensors and norms in F32, a byte-level BPE
vocabulary with its pre-tokenizer named, special tokens and the chat template. A LoRA GGUF holds ``<tensor>.lora_a``
(A, rank x in) and ``<tensor>.lora_b`` (B, out x rank) per adapted weight, with ``adapter.lora.alpha``; llama.cpp
scales each pair by alpha / rank, as peft does.

Nothing is written until the inputs are checked (model found, architecture and tokenizer supported, quant known);
each file is written beside its final name and renamed into place.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from hubstyle.errors import HubstyleError
from hubstyle.fsio import atomic_file, atomic_write
from hubstyle.layout import RunLayout

QUANTS = ("f16", "q8_0")
MODELFILE = "Modelfile"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
# llama.cpp chooses its pre-tokenizer regex by name; transformers keeps it in tokenizer.json. Each entry is the
# pre_tokenizer of a family whose split llama.cpp reproduces under that name (trim_offsets left out: ids don't use it).
PRE_TOKENIZERS = {
    "smollm": {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
    ]},
    "gpt-2": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
}
CHATML_TURN_END = "<|im_end|>"


@dataclass
class ExportReport:
    """What ``export_gguf`` wrote: files, sizes, seconds, and what the model was made from."""

    gguf: Path
    quant: str
    size_bytes: int
    seconds: float
    source: str  # e.g. "publish/merged" or "adapter merged in memory into <base>"
    architecture: str
    pre_tokenizer: str
    modelfile: Path
    lora: Path | None = None
    lora_size_bytes: int | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        """Return the report as JSON-ready plain data."""
        data = asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in data.items()}


@dataclass(frozen=True)
class _Arch:
    """How one transformers architecture becomes a llama.cpp one."""

    gguf_arch: str  # a gguf.MODEL_ARCH member name
    hparams: Callable  # (writer, config) -> None
    row_permutation: Callable  # (hf_name, config) -> (tensor -> tensor) | None: Llama's q/k reorder
    transposed: tuple[str, ...] = ()  # weights stored (in, out) by transformers (GPT-2's Conv1D)
    skipped: tuple[str, ...] = (".rotary_emb.inv_freq",)


def _llama_hparams(writer, config: dict) -> None:
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads") or heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope.get("rope_theta", config.get("rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    writer.add_vocab_size(config["vocab_size"])


def _llama_check(config: dict) -> str | None:
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        return f"rope_type '{rope_type}'"
    if config.get("hidden_act", "silu") != "silu":
        return f"hidden_act '{config['hidden_act']}'"
    if config.get("attention_bias") or config.get("mlp_bias"):
        return "attention or MLP biases"
    return None


def _llama_rows(hf_name: str, config: dict):
    heads = config["num_attention_heads"]
    if ".q_proj." in hf_name:
        groups = heads
    elif ".k_proj." in hf_name:
        groups = config.get("num_key_value_heads") or heads
    else:
        return None
    # transformers rotates (first half, second half) of each head; llama.cpp rotates neighbouring pairs
    return lambda w: w.reshape(groups, 2, w.shape[0] // groups // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _gpt2_hparams(writer, config: dict) -> None:
    writer.add_context_length(config["n_positions"])
    writer.add_embedding_length(config["n_embd"])
    writer.add_block_count(config["n_layer"])
    writer.add_feed_forward_length(config.get("n_inner") or 4 * config["n_embd"])
    writer.add_head_count(config["n_head"])
    writer.add_layer_norm_eps(float(config["layer_norm_epsilon"]))
    writer.add_vocab_size(config["vocab_size"])


def _gpt2_check(config: dict) -> str | None:
    act = config.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):  # llama.cpp's GELU is the tanh approximation
        return f"activation_function '{act}'"
    if config.get("scale_attn_by_inverse_layer_idx") or config.get("reorder_and_upcast_attn"):
        return "scale_attn_by_inverse_layer_idx / reorder_and_upcast_attn"
    if config.get("scale_attn_weights") is False:
        return "scale_attn_weights=False"
    return None


ARCHITECTURES = {
    "LlamaForCausalLM": (_Arch("LLAMA", _llama_hparams, _llama_rows), _llama_check),
    "GPT2LMHeadModel": (
        _Arch("GPT2", _gpt2_hparams, lambda name, config: None,
              transposed=(".c_attn.weight", ".c_proj.weight", ".c_fc.weight"),
              skipped=(".attn.bias", ".attn.masked_bias")),
        _gpt2_check,
    ),
}


# --------------------------------------------------------------------------------------------------- public


def export_gguf(
    run_dir: str | os.PathLike,
    quant: str = "f16",
    out: str | os.PathLike | None = None,
    lora: bool = False,
    *,
    name: str | None = None,
) -> ExportReport:
    """Return an ``ExportReport`` after writing the run's merged model as ``<name>-<QUANT>.gguf`` and a Modelfile.

    ``run_dir`` is a run folder (its ``publish/merged/`` or ``model/`` is used, else ``adapter/`` merged into its
    base in memory) or a plain model folder. ``out`` defaults to ``RUN_DIR/gguf`` (``<folder>-gguf`` beside a model
    folder). ``lora=True`` also writes the run's adapter alone as ``<name>-lora-F16.gguf``.
    """
    import gguf

    run_dir = Path(run_dir).expanduser()
    if quant not in QUANTS:
        raise HubstyleError(f"unknown quant type '{quant}'; choose one of: {', '.join(QUANTS)}")
    started = time.perf_counter()
    plan = _plan(run_dir, lora)
    arch = _check_architecture(plan.config, plan.described)
    pre = _pre_tokenizer_name(plan.tokenizer_dir)
    if lora:
        _check_lora(plan.adapter_dir, plan.config)
    out_dir = Path(out).expanduser() if out is not None else plan.default_out
    if out_dir.exists() and not out_dir.is_dir():
        raise HubstyleError(f"--out '{out_dir}' is a file; give a folder path")
    name = name or plan.name
    qtype = {"f16": gguf.GGMLQuantizationType.F16, "q8_0": gguf.GGMLQuantizationType.Q8_0}[quant]
    file_type = {"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[quant]

    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name}-{quant.upper()}.gguf"
    with atomic_file(target) as stage:
        writer = gguf.GGUFWriter(stage, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH[arch.gguf_arch]])
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_name(name)
        writer.add_file_type(file_type)
        if quant != "f16":
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        arch.hparams(writer, plan.config)
        _add_vocabulary(writer, plan.tokenizer_dir, plan.config, pre)
        for gguf_name, data in _model_tensors(plan, arch):
            array, raw_dtype = _encode(gguf_name, data, qtype)
            writer.add_tensor(gguf_name, array, raw_dtype=raw_dtype)
        _finish(writer)
    modelfile = out_dir / MODELFILE
    atomic_write(modelfile, modelfile_text(target.name, plan.tokenizer_dir))
    report = ExportReport(
        gguf=target, quant=quant, size_bytes=target.stat().st_size, seconds=0.0, source=plan.described,
        architecture=plan.config["architectures"][0], pre_tokenizer=pre, modelfile=modelfile,
    )
    if lora:
        report.lora = out_dir / f"{name}-lora-F16.gguf"
        report.notes += _write_lora(report.lora, plan.adapter_dir, plan.config, arch, name)
        report.lora_size_bytes = report.lora.stat().st_size
    report.seconds = time.perf_counter() - started
    return report


def modelfile_text(gguf_file: str, tokenizer_dir: str | os.PathLike) -> str:
    """Return an Ollama Modelfile for ``gguf_file`` (beside it): FROM, the chat template in Go-template form when
    it is ChatML, its default system prompt, and the stop tokens."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    lines = [f"FROM ./{gguf_file}", ""]
    eos = tokenizer.eos_token
    if not tokenizer.chat_template:
        lines += ['TEMPLATE """{{ .Prompt }}"""']
        stops = [eos] if eos else []
    else:
        system = _chatml_default_system(tokenizer)
        if system is None:
            lines += ["# not ChatML: Ollama takes the template from the GGUF's tokenizer.chat_template when it knows it;",
                      "# otherwise add a TEMPLATE in Go-template form here"]
            stops = [eos] if eos else []
        else:
            lines += [f'TEMPLATE """{_CHATML_GO_TEMPLATE}"""']
            if system:
                lines += [f'SYSTEM """{system}"""']
            stops = [CHATML_TURN_END] + ([eos] if eos and eos != CHATML_TURN_END else [])
    lines += [f'PARAMETER stop "{stop}"' for stop in stops]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------- sources


@dataclass
class _Plan:
    """What will be exported, found without loading any weights."""

    config: dict
    tokenizer_dir: Path
    described: str
    name: str
    default_out: Path
    model_dir: Path | None = None  # a folder of safetensors weights, or None: merge adapter into base
    adapter_dir: Path | None = None
    base: str | None = None  # what load_base gets when merging in memory


def _plan(run_dir: Path, lora: bool) -> _Plan:
    """Return where the model comes from: ``run_dir`` as a model folder, its merged or full model, or its adapter."""
    if not run_dir.is_dir():
        raise HubstyleError(f"'{run_dir}' is not a folder; give a run folder or a model folder")
    layout = RunLayout(run_dir)
    adapter = layout.adapter if _is_adapter(layout.adapter) else None
    if lora and adapter is None:
        raise HubstyleError(f"--lora needs the run's adapter, and '{layout.adapter}' has no {ADAPTER_FILES[0]}; "
                            "give a run folder trained with LoRA")
    if _is_model(run_dir):
        return _Plan(_read_config(run_dir), run_dir, run_dir.name, run_dir.name,
                     run_dir.parent / f"{run_dir.name}-gguf", model_dir=run_dir, adapter_dir=adapter)
    for folder in (layout.publish / "merged", layout.model):
        if _is_model(folder):
            return _Plan(_read_config(folder), folder, str(folder.relative_to(run_dir)), run_dir.resolve().name,
                         layout.gguf, model_dir=folder, adapter_dir=adapter)
    if adapter is None:
        raise HubstyleError(
            f"'{run_dir}' has no merged model (publish/merged/ or model/ with config.json and safetensors) and no "
            "adapter (adapter/adapter_config.json); train the run first (hubstyle train) or give a model folder"
        )
    base, base_dir = _adapter_base(layout)
    tokenizer_dir = adapter if (adapter / "tokenizer.json").is_file() else base_dir
    return _Plan(_read_config(base_dir), tokenizer_dir, f"adapter merged in memory into {base}",
                 run_dir.resolve().name, layout.gguf, adapter_dir=adapter, base=base)


def _adapter_base(layout: RunLayout) -> tuple[str, Path]:
    """Return (what load_base gets, a local folder with its config and tokenizer) for the run's adapter."""
    from hubstyle.bases import loadable_path

    named = json.loads((layout.adapter / ADAPTER_FILES[0]).read_text(encoding="utf-8")).get("base_model_name_or_path")
    if named and Path(named).expanduser().is_dir():
        return named, Path(named).expanduser()
    if (layout.base / "config.json").is_file():  # the run's own pretrained base, moved with the run folder
        return str(layout.base), layout.base
    if not named:
        raise HubstyleError(f"{layout.adapter / ADAPTER_FILES[0]} names no base_model_name_or_path; "
                            "merge the adapter first (hubstyle merge) and export that folder")
    path = loadable_path(named)
    if Path(path).is_dir():
        return named, Path(path)
    from huggingface_hub import snapshot_download

    try:  # config and tokenizer files only; the weights come through from_pretrained when merging
        return named, Path(snapshot_download(named, allow_patterns=["*.json", "*.jinja", "*.txt"]))
    except Exception as err:  # offline, unknown repo, no access: all mean the same here
        raise HubstyleError(f"the adapter's base '{named}' is not a local folder and could not be fetched "
                            f"({type(err).__name__}); merge the adapter first and export that folder") from err


def _model_tensors(plan: _Plan, arch: _Arch) -> Iterator[tuple[str, "object"]]:
    """Yield (GGUF tensor name, float32 numpy array) for every weight llama.cpp reads, in the source's order."""
    import gguf

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.gguf_arch], _block_count(plan.config))
    tied = plan.config.get("tie_word_embeddings", True)
    for hf_name, tensor in _hf_tensors(plan):
        if hf_name.endswith(arch.skipped) or (tied and hf_name == "lm_head.weight"):
            continue
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise HubstyleError(f"tensor '{hf_name}' has no llama.cpp name; this checkpoint is not a plain "
                                f"{plan.config['architectures'][0]}")
        tensor = tensor.float()
        if hf_name.endswith(arch.transposed):
            tensor = tensor.T
        permute = arch.row_permutation(hf_name, plan.config)
        if permute is not None:
            tensor = permute(tensor)
        yield gguf_name, tensor.contiguous().numpy()


def _hf_tensors(plan: _Plan) -> Iterator[tuple[str, "object"]]:
    """Yield (transformers name, torch tensor) of the model: read from safetensors, or merged in memory."""
    if plan.model_dir is not None:
        from safetensors import safe_open

        for file in sorted(plan.model_dir.glob("*.safetensors")):
            with safe_open(str(file), framework="pt") as f:
                for key in f.keys():
                    yield key, f.get_tensor(key)
        return
    import torch

    from hubstyle.models import load_adapters, load_base

    model = load_adapters(load_base(plan.base, dtype=torch.float32), {"adapter": plan.adapter_dir})
    merged = model.merge_and_unload(safe_merge=True)
    yield from merged.state_dict().items()


# --------------------------------------------------------------------------------------------------- checks


def _check_architecture(config: dict, where: str) -> _Arch:
    names = config.get("architectures") or [config.get("model_type", "?")]
    entry = ARCHITECTURES.get(names[0])
    if entry is None:
        raise HubstyleError(f"{where}: architecture '{names[0]}' cannot be exported to GGUF; supported: "
                            f"{', '.join(ARCHITECTURES)}")
    arch, check = entry
    problem = check(config)
    if problem:
        raise HubstyleError(f"{where}: {names[0]} with {problem} is not supported by the GGUF exporter; "
                            "export a plain checkpoint of one of: " + ", ".join(ARCHITECTURES))
    return arch


def _pre_tokenizer_name(tokenizer_dir: Path) -> str:
    """Return llama.cpp's name for the tokenizer's pre-tokenizer, after checking it is byte-level BPE."""
    file = tokenizer_dir / "tokenizer.json"
    if not file.is_file():
        raise HubstyleError(f"'{tokenizer_dir}' has no tokenizer.json; the GGUF exporter needs a fast tokenizer "
                            "(save it with AutoTokenizer.save_pretrained)")
    data = json.loads(file.read_text(encoding="utf-8"))
    model = data.get("model") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback") or data.get("normalizer"):
        raise HubstyleError(f"{file}: the GGUF exporter writes byte-level BPE tokenizers (GPT-2 style) only; this one "
                            f"is {model.get('type')} (byte_fallback={model.get('byte_fallback')}, normalizer "
                            f"{(data.get('normalizer') or {}).get('type')})")
    found = _drop_keys(data.get("pre_tokenizer"), {"trim_offsets"})
    for name, known in PRE_TOKENIZERS.items():
        if found == known:
            return name
    raise HubstyleError(f"{file}: pre-tokenizer {json.dumps(found)} has no llama.cpp name hubstyle knows; known: "
                        + "; ".join(f"{n} = {json.dumps(p)}" for n, p in PRE_TOKENIZERS.items()))


def _check_lora(adapter_dir: Path, config: dict) -> None:
    """Raise HubstyleError unless the adapter is a plain LoRA that llama.cpp can apply as it is."""
    lcfg = json.loads((adapter_dir / ADAPTER_FILES[0]).read_text(encoding="utf-8"))
    where = adapter_dir / ADAPTER_FILES[0]
    if lcfg.get("peft_type") != "LORA":
        raise HubstyleError(f"{where}: peft_type '{lcfg.get('peft_type')}' is not LORA; llama.cpp applies LoRA only")
    for key in ("use_dora", "modules_to_save", "rank_pattern", "alpha_pattern", "trainable_token_indices"):
        if lcfg.get(key):
            raise HubstyleError(f"{where}: '{key}' is set; the LoRA GGUF holds plain A/B pairs only: export the "
                                "merged model without --lora instead")
    if not (adapter_dir / ADAPTER_FILES[1]).is_file():
        raise HubstyleError(f"'{adapter_dir}' has no {ADAPTER_FILES[1]}; save the adapter with safetensors")
    if config.get("tie_word_embeddings", True) and any("lm_head" in k for k in _lora_keys(adapter_dir)):
        raise HubstyleError(f"{where}: the adapter trains lm_head, which this base ties to its embeddings; "
                            "llama.cpp cannot apply that: export the merged model without --lora")


# --------------------------------------------------------------------------------------------------- writing


def _add_vocabulary(writer, tokenizer_dir: Path, config: dict, pre: str) -> None:
    """Add the BPE vocabulary, merges, special tokens and chat template (as llama.cpp's converter does)."""
    import gguf

    data = json.loads((tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8"))
    vocab_size = config["vocab_size"]
    by_id = {i: t for t, i in data["model"]["vocab"].items()}
    added = {t["id"]: t for t in data.get("added_tokens", [])}
    by_id.update({i: t["content"] for i, t in added.items()})
    if by_id and max(by_id) >= vocab_size:
        raise HubstyleError(f"{tokenizer_dir}: the tokenizer has id {max(by_id)} but the model's vocab_size is "
                            f"{vocab_size}; resize the embeddings (model.resize_token_embeddings) and save again")
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:  # embedding rows no token uses (vocab padded for speed)
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if added[i].get("special") else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(tokenizer_dir, load_merges=True, n_vocab=vocab_size)
    # transformers adds no BOS/EOS unless the tokenizer says so; llama.cpp's default for a missing key differs
    special.add_special_token.setdefault("bos", False)
    special.add_special_token.setdefault("eos", False)
    special.add_to_gguf(writer, quiet=True)


def _encode(gguf_name: str, data, qtype) -> tuple:
    """Return (array, raw_dtype) for add_tensor: F32 for 1-D tensors, norms, biases and position embeddings (as
    llama.cpp's converter keeps them), F16 for rows Q8_0 cannot block, else ``qtype``."""
    import gguf
    import numpy as np

    keep_f32 = (data.ndim <= 1 or gguf_name.endswith("_norm.weight") or not gguf_name.endswith(".weight")
                or gguf_name.startswith("position_embd"))
    if keep_f32:
        return data.astype(np.float32), None
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if qtype == gguf.GGMLQuantizationType.F16 or data.shape[-1] % block:
        return data.astype(np.float16), None
    return gguf.quants.quantize(data, qtype), qtype


def _write_lora(path: Path, adapter_dir: Path, config: dict, arch: _Arch, name: str) -> list[str]:
    """Write the adapter as a LoRA GGUF at ``path``; return notes for the report."""
    import gguf
    import numpy as np
    import torch
    from safetensors.torch import load_file

    lcfg = json.loads((adapter_dir / ADAPTER_FILES[0]).read_text(encoding="utf-8"))
    alpha = float(lcfg["lora_alpha"])
    weights = load_file(str(adapter_dir / ADAPTER_FILES[1]))
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in weights.items():
        match = re.fullmatch(r"(?:base_model\.model\.)?(.+)\.lora_([AB])\.weight", key)
        if match is None:
            raise HubstyleError(f"{adapter_dir / ADAPTER_FILES[1]}: tensor '{key}' is not a LoRA A/B weight; "
                                "export the merged model without --lora")
        pairs.setdefault(match.group(1) + ".weight", {})[match.group(2)] = tensor.float()
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.gguf_arch], _block_count(config))
    notes = []
    with atomic_file(path) as stage:
        writer = gguf.GGUFWriter(stage, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH[arch.gguf_arch]])
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        writer.add_name(f"{name} LoRA")
        for hf_name, pair in sorted(pairs.items()):
            gguf_name = names.get_name(hf_name, try_suffixes=(".weight",))
            if gguf_name is None or set(pair) != {"A", "B"}:
                raise HubstyleError(f"adapter tensor '{hf_name}' has no llama.cpp name or lacks its A/B pair")
            a, b = pair["A"], pair["B"]
            permute = arch.row_permutation(hf_name, config)
            if permute is not None:
                b = permute(b)  # the q/k reorder moves output rows: B's rows
            if lcfg.get("use_rslora"):  # peft scales by alpha/sqrt(r), llama.cpp by alpha/r: fold the rest into B
                b = b * math.sqrt(a.shape[0])
            writer.add_tensor(gguf_name + ".lora_a", a.numpy().astype(np.float16))
            writer.add_tensor(gguf_name + ".lora_b", b.contiguous().numpy().astype(np.float16))
        _finish(writer)
    if lcfg.get("use_rslora"):
        notes.append("rsLoRA: sqrt(rank) folded into lora_b so llama.cpp's alpha/rank scaling matches peft's")
    return notes


def _finish(writer) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=False)  # under a second for SmolLM2; an unlabelled "Writing:" bar says nothing
    writer.close()


# --------------------------------------------------------------------------------------------------- chat template

# Ollama's Go-template form of ChatML; system messages reach it as .System, the other turns as .Messages.
_CHATML_GO_TEMPLATE = (
    "{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    "{{- range .Messages }}{{- if ne .Role \"system\" }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
    "{{ end }}{{- end }}<|im_start|>assistant\n"
)
_PROBE = [("system", "S"), ("user", "U"), ("assistant", "A"), ("user", "V")]


def _chatml_default_system(tokenizer) -> str | None:
    """Return the system prompt the template adds when none is given ("" for none), or None if it is not ChatML.

    Decided by rendering the Jinja template on probe conversations, not by parsing it.
    """
    import jinja2

    def render(turns) -> str:
        messages = [{"role": r, "content": c} for r, c in turns]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def chatml(turns) -> str:
        return "".join(f"<|im_start|>{r}\n{c}<|im_end|>\n" for r, c in turns) + "<|im_start|>assistant\n"

    try:
        if render(_PROBE) != chatml(_PROBE):
            return None
        rest = chatml(_PROBE[1:])
        no_system = render(_PROBE[1:])
    except (jinja2.TemplateError, ValueError, TypeError, KeyError):  # one that refuses the probe is not plain ChatML
        return None
    if no_system == rest:
        return ""
    match = re.fullmatch(r"<\|im_start\|>system\n(.*)<\|im_end\|>\n", no_system.removesuffix(rest), re.S)
    return match.group(1) if match and no_system.endswith(rest) else None


# --------------------------------------------------------------------------------------------------- helpers


def _is_model(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def _is_adapter(folder: Path) -> bool:
    return (folder / ADAPTER_FILES[0]).is_file()


def _read_config(folder: Path) -> dict:
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise HubstyleError(f"{folder / 'config.json'} cannot be read ({err}); re-save the model") from err


def _block_count(config: dict) -> int:
    return config.get("num_hidden_layers") or config["n_layer"]


def _lora_keys(adapter_dir: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(adapter_dir / ADAPTER_FILES[1]), framework="pt") as f:
        return list(f.keys())


def _drop_keys(value, keys: set[str]):
    """Return ``value`` (JSON data) without ``keys`` in any object."""
    if isinstance(value, dict):
        return {k: _drop_keys(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [_drop_keys(v, keys) for v in value]
    return value
