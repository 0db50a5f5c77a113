"""GGUF files for llama.cpp and Ollama: a run's merged model (f16 or q8_0), an Ollama Modelfile, and the adapter alone.

Written with PyPI ``gguf`` (``GGUFWriter``, ``SpecialVocab``, ``get_tensor_name_map`` and its numpy quantizers) in the
layout llama.cpp's own converters produce: Llama q/k rows permuted from transformers' rotate-half order to
llama.cpp's interleaved one, GPT-2 Conv1D weights transposed, 1-D tensors and norms in F32, a byte-level BPE
vocabulary with its pre-tokenizer named, special tokens and the chat template. A LoRA GGUF holds ``<tensor>.lora_a``
(A, rank x in) and ``<tensor>.lora_b`` (B, out x rank) per adapted weight, with ``adapter.lora.alpha``; llama.cpp
scales each pair by alpha / rank, as peft does.

This module finds the model (a run's whole model, or its adapter merged afresh on the CPU) and drives the writing;
llama.cpp's side (architectures, vocabulary, tensor encoding, the LoRA GGUF, the chat template) is
``hubstyle.gguf_format``. Nothing is written until the inputs are checked (model found, architecture and tokenizer supported, quant known);
each file is written beside its final name and renamed into place.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from hubstyle.errors import HubstyleError
from hubstyle.fsio import atomic_file, atomic_write
from hubstyle.gguf_format import (
    _CHATML_GO_TEMPLATE,
    ADAPTER_FILES,
    CHATML_TURN_END,
    _add_vocabulary,
    _Arch,
    _block_count,
    _chatml_default_system,
    _check_architecture,
    _encode,
    _finish,
    _pre_tokenizer_name,
    _write_lora,
)
from hubstyle.layout import RunLayout

QUANTS = ("f16", "q8_0")
MODELFILE = "Modelfile"


@dataclass
class ExportReport:
    """What ``export_gguf`` wrote: files, sizes, seconds, and what the model was made from."""

    gguf: Path
    quant: str
    size_bytes: int
    seconds: float
    source: str  # e.g. "model" or "adapter merged on the CPU into <base>"
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


# --------------------------------------------------------------------------------------------------- public


def export_gguf(
    run_dir: str | os.PathLike,
    quant: str = "f16",
    out: str | os.PathLike | None = None,
    lora: bool = False,
    *,
    name: str | None = None,
    merged: str | os.PathLike | None = None,
) -> ExportReport:
    """Return an ``ExportReport`` after writing the run's merged model as ``<name>-<QUANT>.gguf`` and a Modelfile.

    ``run_dir`` is a run folder or a plain model folder. A run's whole model (``model/``, full fine-tunes) is read
    as it is; a run's ``adapter/`` is merged into its base on the CPU into a fresh folder beside the output (never
    ``publish/merged/``, which may be older than the adapter), unless ``merged`` names a folder merged from it just
    now (what publishing passes). ``out`` defaults to ``RUN_DIR/gguf`` (``<folder>-gguf`` beside a model folder).
    ``lora=True`` also writes the run's adapter alone as ``<name>-lora-F16.gguf``.
    """
    import gguf

    run_dir = Path(run_dir).expanduser()
    if quant not in QUANTS:
        raise HubstyleError(f"unknown quant type '{quant}'; choose one of: {', '.join(QUANTS)}")
    started = time.perf_counter()
    plan = _plan(run_dir, lora, Path(merged).expanduser() if merged is not None else None)
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
    with _merged_folder(plan, out_dir), atomic_file(target) as stage:
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
    model_dir: Path | None = None  # a folder of safetensors weights, or None: merge adapter into base first
    adapter_dir: Path | None = None
    base: str | None = None  # what merge_adapter gets as the base when merging


def _plan(run_dir: Path, lora: bool, merged: Path | None = None) -> _Plan:
    """Return where the model comes from: ``run_dir`` as a model folder, ``merged`` (merged from the run's adapter
    just now), the run's whole model, or its adapter (merged fresh when exporting)."""
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
    if merged is not None:
        if not _is_model(merged):
            raise HubstyleError(f"merged folder '{merged}' has no config.json and safetensors; merge the adapter first")
        return _Plan(_read_config(merged), merged, _described(merged, run_dir), run_dir.resolve().name, layout.gguf,
                     model_dir=merged, adapter_dir=adapter)
    # a whole model is the run's own output; publish/merged/ is not read: it may predate the adapter
    if _is_model(layout.model):
        return _Plan(_read_config(layout.model), layout.model, str(layout.model.relative_to(run_dir)),
                     run_dir.resolve().name, layout.gguf, model_dir=layout.model, adapter_dir=adapter)
    if adapter is None:
        raise HubstyleError(
            f"'{run_dir}' has no merged model (publish/merged/ or model/ with config.json and safetensors) and no "
            "adapter (adapter/adapter_config.json); train the run first (hubstyle train) or give a model folder"
        )
    base, base_dir = _adapter_base(layout)
    tokenizer_dir = adapter if (adapter / "tokenizer.json").is_file() else base_dir
    return _Plan(_read_config(base_dir), tokenizer_dir, f"adapter merged on the CPU into {base}",
                 run_dir.resolve().name, layout.gguf, adapter_dir=adapter, base=base)


def _described(folder: Path, run_dir: Path) -> str:
    try:
        return str(folder.resolve().relative_to(run_dir.resolve()))
    except ValueError:
        return str(folder)


@contextlib.contextmanager
def _merged_folder(plan: _Plan, out_dir: Path) -> Iterator[None]:
    """Within the block, ``plan.model_dir`` holds the model: the adapter merged into its base on the CPU, in a
    folder beside the output that is removed afterwards, when the plan has no model folder yet."""
    if plan.model_dir is not None:
        yield
        return
    from hubstyle.merge import merge_adapter

    with tempfile.TemporaryDirectory(prefix=".merged-", dir=out_dir) as tmp:
        merge_adapter(plan.base, plan.adapter_dir, Path(tmp) / "merged")
        plan.model_dir = Path(tmp) / "merged"
        try:
            yield
        finally:
            plan.model_dir = None


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
    """Yield (transformers name, CPU torch tensor) of the model, read from its safetensors."""
    from safetensors import safe_open

    for file in sorted(plan.model_dir.glob("*.safetensors")):
        with safe_open(str(file), framework="pt", device="cpu") as f:
            for key in f.keys():
                yield key, f.get_tensor(key)


# --------------------------------------------------------------------------------------------------- checks


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


def _lora_keys(adapter_dir: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(adapter_dir / ADAPTER_FILES[1]), framework="pt") as f:
        return list(f.keys())
