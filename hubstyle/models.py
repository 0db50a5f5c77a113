"""Loading base models, tokenizers and style adapters: the one place that knows how."""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import torch

from hubstyle.env import env_flag
from hubstyle.errors import HubstyleError
from hubstyle.layout import PICKLE_SUFFIXES, TOKENIZER_FILES, TRAINING_FACTS
from hubstyle.repo_ids import check_repo_id, is_local_path

BASE_ADAPTER_NAME = "__base__"  # peft's name for "no adapter" in mixed-adapter batches
# What loading needs from a Hub repo: configs, tokenizer, card and safetensors weights (no plots, no pickles).
SNAPSHOT_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "README.md"]
ALLOW_PICKLE_ENV = "HUBSTYLE_ALLOW_PICKLE"  # =1: the user trusts pickle weights (.bin/.pt/.pth); the one opt-in


def device() -> torch.device:
    """Return the device hubstyle computes on: the first CUDA GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def bf16_supported(dev: torch.device | None = None) -> bool:
    """Return whether bf16 autocast is fast on this device (CUDA with bf16, or a CPU with AVX512-BF16/AMX)."""
    dev = dev or device()
    if dev.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def precision_note(requested: bool, dev: torch.device | None = None) -> str:
    """Return the precision training runs in here and why, for the log: bf16 autocast only where it is fast."""
    from hubstyle.machine import machine_summary

    dev = dev or device()
    if not requested:
        return "precision: fp32 (training.bf16 is off)"
    if bf16_supported(dev):
        return f"precision: bf16 autocast (bf16 is fast here: {machine_summary()})"
    return (f"precision: fp32 (bf16 would be slower than fp32 here: {machine_summary()}; "
            "bf16 autocast needs avx512_bf16/AMX or a GPU with bf16)")


@contextlib.contextmanager
def autocast(enabled: bool, dev: torch.device | None = None) -> Iterator[None]:
    """Run the block under bf16 autocast when ``enabled`` and the device supports it (fp32 otherwise)."""
    dev = dev or device()
    if enabled and bf16_supported(dev):
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16):
            yield
    else:
        yield


def context_length(model_or_config) -> int | None:
    """Return how many positions a model (or its config) reads; None when the config does not say."""
    config = getattr(model_or_config, "config", model_or_config)
    for key in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_cutoff(path_or_id: str | os.PathLike, cutoff_len: int, key: str = "training.cutoff_len") -> int | None:
    """Return the base's context length after checking ``cutoff_len`` fits in it (reads config.json only)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(_check_exists(path_or_id), trust_remote_code=remote_code_allowed())
    except OSError as err:
        problem = _download_problem(str(path_or_id), err)
        raise HubstyleError(problem or f"base model '{path_or_id}' could not be found or read: "
                                       f"{str(err).splitlines()[0]}") from None
    limit = context_length(config)
    if limit is not None and cutoff_len > limit:
        raise HubstyleError(
            f"'{key}' is {cutoff_len}, longer than the base model's context of {limit} tokens; set it to {limit} or less"
        )
    return limit


def is_seq2seq(model_or_config, revision: str | None = None) -> bool:
    """Return whether a model, its config, or a model folder / Hub id is an encoder-decoder (T5, FLAN-T5, BART):
    trained on (input, target) pairs with peft's SEQ_2_SEQ_LM task, loaded with ``AutoModelForSeq2SeqLM``. The one
    place hubstyle tells seq2seq bases from causal ones."""
    if isinstance(model_or_config, (str, os.PathLike)):
        from transformers import AutoConfig

        where = _check_exists(model_or_config)
        with _loading(where):
            model_or_config = AutoConfig.from_pretrained(where, revision=revision,
                                                         trust_remote_code=remote_code_allowed())
    config = getattr(model_or_config, "config", model_or_config)
    return bool(getattr(config, "is_encoder_decoder", False))


def auto_model_class(model_or_config, revision: str | None = None):
    """Return the transformers auto class that loads this base: AutoModelForSeq2SeqLM or AutoModelForCausalLM."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    return AutoModelForSeq2SeqLM if is_seq2seq(model_or_config, revision) else AutoModelForCausalLM


def resolve_dtype(base_dtype: str, method: str) -> torch.dtype:
    """Return the dtype frozen base weights are held in: bf16 for adapters where bf16 is fast, else fp32."""
    if base_dtype == "bfloat16" or (base_dtype == "auto" and method == "lora" and bf16_supported()):
        return torch.bfloat16
    return torch.float32


def pickle_allowed() -> bool:
    """Return whether the user opted in to loading pickle weights (HUBSTYLE_ALLOW_PICKLE=1)."""
    return env_flag(ALLOW_PICKLE_ENV)


def _pickle_message(file: str) -> str:
    return (f"'{file}' is a pickle checkpoint, which can run code when loaded; hubstyle loads safetensors only: "
            f"convert it (save_pretrained(..., safe_serialization=True)), or set {ALLOW_PICKLE_ENV}=1 if you trust it")


def check_safe_weights(folder: str | os.PathLike) -> None:
    """Refuse a local model or adapter folder whose weights are pickles only (no .safetensors), unless opted in."""
    root = Path(folder).expanduser()
    if not root.is_dir() or pickle_allowed() or any(root.glob("*.safetensors")):
        return
    pickles = sorted(p for p in root.iterdir() if p.suffix in PICKLE_SUFFIXES and p.is_file())
    if pickles:
        raise HubstyleError(_pickle_message(str(pickles[0])))


# Whether base models and tokenizers may run code from their repo: only where a run's config says
# `trust_remote_code: true` (pipeline.run and `hubstyle run` set it for their length with `remote_code`).
_REMOTE_CODE: contextvars.ContextVar[bool] = contextvars.ContextVar("hubstyle_trust_remote_code", default=False)


@contextlib.contextmanager
def remote_code(allowed: bool) -> Iterator[None]:
    """Within the block, base model, config and tokenizer loads pass ``trust_remote_code=allowed`` (default off)."""
    token = _REMOTE_CODE.set(bool(allowed))
    try:
        yield
    finally:
        _REMOTE_CODE.reset(token)


def remote_code_allowed(trust_remote_code: bool | None = None) -> bool:
    """Return ``trust_remote_code`` when given, else what the enclosing :func:`remote_code` block says (False)."""
    return _REMOTE_CODE.get() if trust_remote_code is None else bool(trust_remote_code)


def safe_load_kwargs(trust_remote_code: bool | None = None) -> dict:
    """Return the from_pretrained arguments every hubstyle load uses: no remote code unless asked (here or by the
    run's config, see :func:`remote_code`), and safetensors only unless pickles are allowed (transformers then
    refuses a Hub repo with only .bin weights)."""
    return {"trust_remote_code": remote_code_allowed(trust_remote_code),
            **({} if pickle_allowed() else {"use_safetensors": True})}


def _check_exists(path_or_id: str | os.PathLike) -> str:
    from hubstyle.bases import loadable_path

    text = loadable_path(str(path_or_id))
    looks_local = is_local_path(text)
    if looks_local and not Path(text).expanduser().exists():
        raise HubstyleError(f"model folder '{text}' does not exist; check the path or give a Hub repo id")
    return str(Path(text).expanduser()) if looks_local else text


def load_tokenizer(path_or_id: str | os.PathLike, revision: str | None = None, *,
                   trust_remote_code: bool | None = None):
    """Return the tokenizer of a model, with a pad token and left padding (what batched generation needs)."""
    from transformers import AutoTokenizer

    with _loading(path_or_id):
        tok = AutoTokenizer.from_pretrained(_check_exists(path_or_id), revision=revision,
                                            trust_remote_code=remote_code_allowed(trust_remote_code))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def has_tokenizer(folder: str | os.PathLike) -> bool:
    """Return whether ``folder`` holds a tokenizer of its own (one of the files a saved tokenizer is made of)."""
    return any((Path(folder) / name).is_file() for name in TOKENIZER_FILES)


def local_copy(repo_or_path: str | os.PathLike, revision: str | None = None) -> Path:
    """Return a local folder with the repo's files: the folder itself, or a snapshot of the Hub repo (configs,
    tokenizer, card and safetensors weights)."""
    path = Path(repo_or_path).expanduser()
    if path.is_dir():
        if revision is not None:
            raise HubstyleError(f"revision='{revision}' only applies to Hub repos; '{repo_or_path}' is a local folder")
        return path
    text = str(repo_or_path)
    try:
        check_repo_id(text)
    except HubstyleError:
        raise HubstyleError(f"'{text}' is neither a local folder nor a Hub repo id like 'alice/shakespeare'") from None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(snapshot_download(text, revision=revision, allow_patterns=SNAPSHOT_PATTERNS))
    except GatedRepoError:
        raise HubstyleError(f"'{text}' is gated on the Hub; accept its terms and log in (hf auth login)") from None
    except RevisionNotFoundError:
        raise HubstyleError(f"revision '{revision}' does not exist in '{text}'; use a branch, tag or commit") from None
    except RepositoryNotFoundError:
        raise HubstyleError(f"model repo '{text}' does not exist on the Hub (or is private); check the id") from None
    except LocalEntryNotFoundError:
        raise HubstyleError(
            f"'{text}' is not in the local cache and the Hub cannot be reached (offline?); connect or give a folder"
        ) from None


def load_base(
    path_or_id: str | os.PathLike,
    *,
    revision: str | None = None,
    dtype: torch.dtype = torch.float32,
    quantization: str | None = None,
    compute: torch.dtype | None = None,
    trust_remote_code: bool | None = None,
    on_device: torch.device | None = None,
):
    """Return a causal LM (or a seq2seq LM for an encoder-decoder base) in eval mode; ``quantization``
    '4bit'/'8bit' loads it through bitsandbytes (4-bit computing in ``compute``, by default :func:`compute_dtype`).
    Pickle weights are refused unless HUBSTYLE_ALLOW_PICKLE=1; the model's own code runs only with
    ``trust_remote_code`` (None: as the enclosing :func:`remote_code` says). An unquantised model goes to
    ``on_device`` (default :func:`device`)."""
    kwargs: dict = {"revision": revision, "dtype": dtype, **safe_load_kwargs(trust_remote_code)}
    if quantization:
        kwargs["quantization_config"] = quantization_config(quantization, compute)
    where = _check_exists(path_or_id)
    check_safe_weights(where)
    with _loading(path_or_id):
        try:
            model = auto_model_class(where, revision).from_pretrained(where, **kwargs)
        except OSError as err:
            pickle = None if Path(where).is_dir() else _hub_pickle_only(where, revision)
            if pickle is None:
                raise
            raise HubstyleError(_pickle_message(f"{where}/{pickle}")) from err
    if not quantization:
        model.to(on_device or device())
    return model.eval()


def compute_dtype() -> torch.dtype:
    """Return the dtype a quantised base computes in here: bf16 where it is fast, else fp32."""
    return torch.bfloat16 if bf16_supported() else torch.float32


def quantization_config(quantization: str, compute: torch.dtype | None = None):
    """Return the ``BitsAndBytesConfig`` for '4bit' (nf4, double quant, computing in ``compute``, by default
    :func:`compute_dtype`) or '8bit'."""
    try:
        from transformers import BitsAndBytesConfig
        import bitsandbytes  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on extras
        raise HubstyleError("quantization needs bitsandbytes: pip install 'hubstyle[gpu]'") from err
    if quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute or compute_dtype(),
        )
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise HubstyleError(f"unknown quantization '{quantization}'; use '4bit' or '8bit'")


@dataclass(frozen=True)
class TrainedBase:
    """How a run held its base while training (from the trained folder's ``hubstyle_training.json``): what an
    evaluation must load again to measure the model that was trained."""

    dtype: torch.dtype = torch.float32
    quantization: str | None = None  # '4bit' / '8bit' through bitsandbytes
    compute: torch.dtype | None = None  # a 4-bit base's compute dtype

    def load(self, path_or_id: str | os.PathLike, **kwargs):
        """Return the base loaded as it was trained (see :func:`load_base`)."""
        return load_base(path_or_id, dtype=self.dtype, quantization=self.quantization, compute=self.compute, **kwargs)


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def trained_base(trained: str | os.PathLike) -> TrainedBase:
    """Return how the base of the adapter or model in ``trained`` was held while training; full precision when the
    folder records nothing (a Hub id, or a folder hubstyle did not train)."""
    file = Path(trained).expanduser() / TRAINING_FACTS
    if not file.is_file():
        return TrainedBase()
    try:
        facts = json.loads(file.read_text(encoding="utf-8"))
        quantization, base_dtype = facts.get("quantization"), facts.get("base_dtype")
        compute = facts.get("compute_dtype")
    except (json.JSONDecodeError, AttributeError) as err:
        raise HubstyleError(f"{file} is not a JSON object ({err}); fix or delete it") from err
    if quantization in (None, "", "none", False):
        quantization = None
    elif quantization not in ("4bit", "8bit"):
        raise HubstyleError(f"{file} has quantization '{quantization}'; expected '4bit', '8bit' or null")
    for key, value in (("base_dtype", None if quantization else base_dtype), ("compute_dtype", compute)):
        if value is not None and value not in _DTYPES:
            raise HubstyleError(f"{file} has {key} '{value}'; expected one of {', '.join(_DTYPES)}")
    if quantization:
        # 4-bit computes in the recorded dtype; older facts did not record it: the dtype training would pick here
        return TrainedBase(quantization=quantization,
                           compute=_DTYPES[compute] if compute else (compute_dtype() if quantization == "4bit" else None))
    return TrainedBase(dtype=_DTYPES.get(base_dtype or "float32", torch.float32))


def load_adapters(base_model, adapters: Mapping[str, str | os.PathLike], revision: str | None = None):
    """Return a ``PeftModel`` over ``base_model`` with every adapter in ``adapters`` (name -> folder or repo) loaded."""
    from peft import PeftModel

    if not adapters:
        raise HubstyleError("no adapter given; pass at least one adapter folder or repo id")
    model = None
    for name, where in adapters.items():
        if name == BASE_ADAPTER_NAME:
            raise HubstyleError(f"'{BASE_ADAPTER_NAME}' is reserved for the base model; rename that adapter")
        where = _check_exists(where)
        check_safe_weights(where)
        try:
            with _loading(where):
                if model is None:
                    model = PeftModel.from_pretrained(base_model, where, adapter_name=name, revision=revision)
                else:
                    model.load_adapter(where, adapter_name=name, revision=revision)
        except (ValueError, RuntimeError) as err:
            if isinstance(err, RuntimeError) and "size mismatch" not in str(err):
                raise
            detail = next((line.strip() for line in str(err).splitlines() if "size mismatch" in line), str(err))
            raise HubstyleError(
                f"adapter '{name}' ({where}) does not fit the base model: {detail[:300].rstrip('.')}; load it on "
                "the base it was trained on (base_model_name_or_path in its adapter_config.json)"
            ) from err
    return model.eval()


@contextlib.contextmanager
def _loading(where: str | os.PathLike) -> Iterator[None]:
    """Turn what loading a model folder or Hub id can fail with (unreadable weights, Hub answers, an unfinished
    download in the cache) into a one-line HubstyleError that says what to do."""
    from safetensors import SafetensorError

    try:
        yield
    except SafetensorError as err:
        raise HubstyleError(_unreadable_weights(str(where), err)) from err
    except OSError as err:
        message = _download_problem(str(where), err)
        if message is None:
            raise
        raise HubstyleError(message) from err


def _cache_folder(repo_id: str) -> Path | None:
    """Return the HF cache folder of model repo ``repo_id`` (None for a local path or when nothing is cached)."""
    if Path(repo_id).expanduser().exists() or is_local_path(repo_id):
        return None
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    folder = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model")
    return folder if folder.is_dir() else None


def _unreadable_weights(where: str, err: Exception) -> str:
    """Return the message for weights safetensors cannot read, naming the first file that does not open."""
    from safetensors import SafetensorError, safe_open

    cache = _cache_folder(where)
    folders = [Path(where).expanduser()] if cache is None else sorted((cache / "snapshots").glob("*"))
    detail = str(err).removeprefix("Error while deserializing header: ")
    for file in (f for folder in folders for f in sorted(folder.glob("*.safetensors"))):
        try:
            with safe_open(str(file), "pt"):
                continue
        except (SafetensorError, OSError) as file_err:
            detail = str(file_err).removeprefix("Error while deserializing header: ")
            fix = ("delete the cached repo (`hf cache delete`) and download it again" if cache is not None
                   else "write it again with the command that made it")
            return f"'{file}' is not a readable safetensors file ({detail}): it is truncated or corrupt; {fix}"
    return f"the weights of '{where}' cannot be read ({detail}); write or download them again"


def _hub_pickle_only(repo_id: str, revision: str | None) -> str | None:
    """Return the pickle weights file of Hub repo ``repo_id`` when it has no .safetensors (None otherwise, or when
    the Hub cannot say): asked only after a load failed, to name the file in the error."""
    from huggingface_hub import HfApi

    try:
        files = HfApi().list_repo_files(repo_id, revision=revision)
    except Exception:  # noqa: BLE001 - the load's own error is then the one to show
        return None
    if any(f.endswith(".safetensors") for f in files):
        return None
    return next((f for f in files if f.endswith(PICKLE_SUFFIXES)), None)


def _download_problem(where: str, err: BaseException) -> str | None:
    """Return what went wrong getting ``where`` from the Hub or its cache, as one line (None: not a Hub problem)."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if Path(where).expanduser().is_dir():
        return None  # a local folder: whatever failed, it was not the Hub
    cache = _cache_folder(where)
    unfinished = sorted((cache / "blobs").glob("*.incomplete")) if cache is not None else []
    if unfinished:
        return (f"'{where}' did not finish downloading: {unfinished[0].name} is still in the HF cache ({cache}); "
                "run again with the Hub reachable to resume it, or delete that folder to start over")
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, GatedRepoError):
            return f"'{where}' is gated on the Hub; accept its terms on its page and log in (hf auth login)"
        if isinstance(seen, RepositoryNotFoundError):
            return (f"model repo '{where}' does not exist on the Hub (or is private to this token); check the id, "
                    "or give a local folder")
        if isinstance(seen, RevisionNotFoundError):
            return f"the revision asked for does not exist in '{where}'; use a branch, tag or commit it has"
        if isinstance(seen, HfHubHTTPError) and seen.response is not None:
            status = seen.response.status_code
            if status == 401:
                return (f"the Hub rejected the token (401) while fetching '{where}': set HF_TOKEN to a valid token "
                        "or run `hf auth login`")
            if status == 403:
                return f"this token may not read '{where}' on the Hub (403); use a token with read access to it"
            if status == 429:
                return f"the Hub is rate-limiting requests (429) while fetching '{where}'; wait a while and run again"
            return f"the Hub answered {status} while fetching '{where}'; try again later"
        if isinstance(seen, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
            return (f"'{where}' is not a local folder, nor in the local HF cache, and the Hub cannot be reached "
                    "(HF_HUB_OFFLINE is set, or no network); connect once to download it, or give a local folder")
        seen = seen.__cause__ or seen.__context__
    return None
