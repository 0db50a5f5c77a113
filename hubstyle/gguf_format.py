"""llama.cpp's side of a GGUF export: which transformers architectures map to which llama.cpp one (hyper-parameters,
the checks that they match, Llama's q/k row order), the vocabulary and its pre-tokenizer, tensor encoding, the LoRA
GGUF, and the ChatML template Ollama is given. ``hubstyle.export`` finds the model and drives the writing."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from hubstyle.errors import HubstyleError
from hubstyle.fsio import atomic_file
from hubstyle.layout import ADAPTER_CONFIG, ADAPTER_WEIGHTS

ADAPTER_FILES = (ADAPTER_CONFIG, ADAPTER_WEIGHTS)


# --------------------------------------------------------------------------------------------------- architectures


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


def _block_count(config: dict) -> int:
    return config.get("num_hidden_layers") or config["n_layer"]


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


def _drop_keys(value, keys: set[str]):
    """Return ``value`` (JSON data) without ``keys`` in any object."""
    if isinstance(value, dict):
        return {k: _drop_keys(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [_drop_keys(v, keys) for v in value]
    return value
