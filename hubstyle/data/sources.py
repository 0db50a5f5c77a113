"""Corpora from a named reference set, local ``.txt``/``.csv``/``.jsonl`` files, or a Hugging Face dataset."""

from __future__ import annotations

import csv
import difflib
import hashlib
import importlib.util
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hubstyle.data.chat import CHAT_FORMATS, detect_chat_format, read_chat_jsonl
from hubstyle.data.clean import (
    chatterbot_blocks,
    milton_blocks,
    nltk_lines,
    paragraph_blocks,
    shakespeare_blocks,
    wikitext_blocks,
)
from hubstyle.errors import HubstyleError
from hubstyle.fsio import atomic_file, file_sha256
from hubstyle.repo_ids import is_local_path

DATA_DIR_ENV = "HUBSTYLE_DATA_DIR"
HF_PREFIX = "hf:"
DEFAULT_COLUMN = "text"
DOWNLOAD_TIMEOUT_S = 60
LOCAL_EXTENSIONS = (".txt", ".csv", ".jsonl")


@dataclass
class Corpus:
    """A text corpus as contiguous blocks (speeches, paragraphs, verse paragraphs) in source order."""

    name: str
    blocks: list[str]
    source: str

    def text(self) -> str:
        """Return the whole corpus, blocks separated by blank lines."""
        return "\n\n".join(self.blocks)


@dataclass(frozen=True)
class CorpusFile:
    """One file of a named corpus: where it sits under a data dir, where it is published, and its sha256."""

    path: str
    url: str | None
    sha256: str


@dataclass(frozen=True)
class PackageFiles:
    """Files of a named corpus that ship inside an installed Python package, found without importing it."""

    package: str  # import name, e.g. "chatterbot_corpus"
    pattern: str  # glob under the package folder, e.g. "data/english/*.yml"; files are read in sorted order
    requirement: str  # what to pip install when the package is missing, e.g. "chatterbot-corpus"


@dataclass(frozen=True)
class NamedCorpus:
    """A reference corpus hubstyle knows by name: its files and the cleaner that turns each file into blocks.

    The files are ``files`` (under a data dir, or downloaded and checked by sha256) or, for a corpus published as
    a Python package, ``package`` (the version pip installed is the version read).
    """

    name: str
    files: tuple[CorpusFile, ...]
    cleaner: Callable[[str], list[str]] | None  # None: the files are chat rows (JSONL messages)
    description: str
    hint: str = ""  # added to the error when a file can't be found or fetched
    package: PackageFiles | None = None
    hub_dataset: str | None = None  # the same text as a Hugging Face Hub dataset (model cards name it); None: none
    hub_config: str | None = None  # that dataset's config, when it has several


NAMED_CORPORA: dict[str, NamedCorpus] = {
    "shakespeare": NamedCorpus(
        name="shakespeare",
        files=(
            CorpusFile(
                "tinyshakespeare/input.txt",
                "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
                "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
            ),
        ),
        cleaner=shakespeare_blocks,
        description="tinyshakespeare (karpathy/char-rnn): one block per speech",
        hub_dataset="karpathy/tiny_shakespeare",
    ),
    "wikitext": NamedCorpus(
        name="wikitext",
        files=(
            CorpusFile(
                "wikitext-2/valid.txt",
                "https://raw.githubusercontent.com/pytorch/examples/main/word_language_model/data/wikitext-2/valid.txt",
                "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
            ),
            CorpusFile(
                "wikitext-2/test.txt",
                "https://raw.githubusercontent.com/pytorch/examples/main/word_language_model/data/wikitext-2/test.txt",
                "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
            ),
        ),
        cleaner=wikitext_blocks,
        description="wikitext-2 raw valid+test, detokenised: one block per section, one paragraph per line",
        hub_dataset="Salesforce/wikitext",
        hub_config="wikitext-2-v1",  # these files keep <unk>: the tokenised release, not wikitext-2-raw-v1
    ),
    "milton": NamedCorpus(
        name="milton",
        files=(
            CorpusFile(
                "milton/paradise_lost.txt",
                None,
                "017f904a417a3cf3534fde361eb5e9ce001630e9801a734e823ffc20d7b98943",
            ),
        ),
        cleaner=milton_blocks,
        description="Milton's Paradise Lost (Project Gutenberg plboss10): one block per verse paragraph",
        hint="it has no stable plain-text URL, so HUBSTYLE_DATA_DIR must hold milton/paradise_lost.txt",
    ),
    "shakespeare-modern": NamedCorpus(
        name="shakespeare-modern",
        files=tuple(
            CorpusFile(
                f"shakespeare-modern/train.{side}.nltktok",
                "https://raw.githubusercontent.com/harsh19/Shakespearizing-Modern-English/"
                f"e2669eadf12b59573847ac725ce6ce685eff528d/data/train.{side}.nltktok",
                sha,
            )
            for side, sha in (
                ("modern", "ff73ae895942fd2e45115a04365dc3ee85fc45dded4a49377c10a4b71adab7e8"),
                ("original", "50949f40c99e6892fae0965287c24d457588fcf34f677852f3b80ecb9dbdd295"),
            )
        ),
        cleaner=nltk_lines,
        description="modern English / Shakespeare line pairs (Xu et al. 2012; the train split of Jhamtani et al. "
                    "2017, harsh19/Shakespearizing-Modern-English): research data, no licence stated; the modern "
                    "side was written for study guides (SparkNotes, eNotes)",
    ),
    "chatterbot": NamedCorpus(
        name="chatterbot",
        files=(),
        package=PackageFiles("chatterbot_corpus", "data/english/*.yml", "chatterbot-corpus"),
        cleaner=chatterbot_blocks,
        description="chatterbot-corpus (BSD-3) English: modern conversational lines, one block per conversation",
    ),
    "shakespeare-distilled": NamedCorpus(
        name="shakespeare-distilled",
        files=(),
        package=PackageFiles("hubstyle", "shipped/distilled/distilled.jsonl", "hubstyle"),
        cleaner=None,  # chat rows (messages): read as conversations, not cleaned into text blocks
        description="hubstyle's distilled chat set: modern questions, SmolLM2's plain answers rewritten by the "
                    "shipped restyler, kept when judged in style and on topic (synthetic: trains only)",
    ),
}


def data_dir() -> Path | None:
    """Return the reference-corpora folder named by ``HUBSTYLE_DATA_DIR``, or None when it is unset."""
    value = os.environ.get(DATA_DIR_ENV, "").strip()
    return Path(value).expanduser() if value else None


def download_cache_dir() -> Path:
    """Return the folder downloads of named corpora go to: ``<HF_HOME>/hubstyle/corpora``."""
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "hubstyle" / "corpora"


# --- named corpora ------------------------------------------------------------------------------------------------


def named_corpus_files(name: str, *, urls: dict[str, str] | None = None) -> list[Path]:
    """Return local paths of a named corpus's files: from ``data_dir()``, else the cache, else downloaded once;
    a corpus published as a Python package is read from where that package is installed.

    ``urls`` maps a file's relative path to a URL that replaces its canonical one (a mirror; tests use 127.0.0.1).
    """
    spec = _named_spec(name)
    if spec.package is not None:
        return package_files(spec.package, what=f"named corpus {name!r}")
    root = data_dir()
    paths = []
    for file in spec.files:
        found = local_copy(file)
        if found is not None:
            paths.append(found)
            continue
        url = (urls or {}).get(file.path, file.url)
        if url is None:
            where = f"{DATA_DIR_ENV}={root}" if root is not None else f"{DATA_DIR_ENV} is not set"
            raise HubstyleError(f"named corpus {name!r} needs {file.path} and {where}: {spec.hint}")
        cached = download_cache_dir() / file.path
        paths.append(download_file(url, cached, file.sha256, what=f"{name!r} ({file.path})"))
    return paths


def local_copy(file: CorpusFile) -> Path | None:
    """Return where a named corpus's file already is on this machine: under ``data_dir()``, else in the download
    cache (its sha256 checked); None when it would have to be downloaded."""
    root = data_dir()
    if root is not None and (root / file.path).is_file():
        return root / file.path
    cached = download_cache_dir() / file.path
    return cached if cached.is_file() and file_sha256(cached) == file.sha256 else None


def package_files(files: PackageFiles, *, what: str = "corpus") -> list[Path]:
    """Return the sorted paths matching ``files.pattern`` inside the installed package ``files.package``."""
    # find_spec locates the package without running its __init__ (which may import heavy dependencies).
    spec = importlib.util.find_spec(files.package)
    if spec is None or not spec.submodule_search_locations:
        raise HubstyleError(f"{what} needs the Python package {files.package!r}: pip install {files.requirement}")
    folder = Path(next(iter(spec.submodule_search_locations)))
    paths = sorted(folder.glob(files.pattern))
    if not paths:
        raise HubstyleError(
            f"{what}: no files match {files.pattern!r} in {folder}; reinstall it (pip install -U {files.requirement})"
        )
    return paths


def downloads_allowed() -> bool:
    """Return whether named corpora may be downloaded now (HF_HUB_OFFLINE, the Hub's offline switch, is not on)."""
    return not _is_truthy(os.environ.get("HF_HUB_OFFLINE"))


def download_file(url: str, dest: Path, sha256: str, *, what: str = "file") -> Path:
    """Return ``dest`` after downloading ``url`` to it atomically and checking its sha256 (deleting a bad download)."""
    if not downloads_allowed():
        raise HubstyleError(
            f"can't download {what} from {url}: HF_HUB_OFFLINE is set; unset it, "
            f"or set {DATA_DIR_ENV} to a folder that already holds the file"
        )
    dest = Path(dest)
    with atomic_file(dest) as tmp:  # a failed or interrupted download leaves nothing behind
        digest = hashlib.sha256()
        try:
            with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                while chunk := response.read(1 << 16):
                    digest.update(chunk)
                    out.write(chunk)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise HubstyleError(
                f"could not download {what} from {url} ({reason}); check the connection, "
                f"or set {DATA_DIR_ENV} to a folder that holds the file"
            ) from exc
        if digest.hexdigest() != sha256:
            raise HubstyleError(
                f"download of {what} from {url} has sha256 {digest.hexdigest()}, expected {sha256}; the file was "
                f"deleted: check the URL or mirror, or set {DATA_DIR_ENV} to a folder with the right file"
            )
    return dest


def hub_dataset(source: str) -> tuple[str | None, str | None]:
    """Return (Hub dataset id, config) of corpus ``source``: a named corpus's from ``NAMED_CORPORA``, an
    ``hf:owner/name[:config]`` source's own; (None, None) for local files and folders."""
    if source in NAMED_CORPORA:
        spec = NAMED_CORPORA[source]
        return spec.hub_dataset, spec.hub_config
    if source.startswith(HF_PREFIX):
        dataset = source[len(HF_PREFIX) :]
        if is_local_path(dataset) or Path(dataset).expanduser().exists():
            return None, None
        name, _, config = dataset.partition(":")
        return name, config or None
    return None, None


def _named_spec(name: str) -> NamedCorpus:
    if name in NAMED_CORPORA:
        return NAMED_CORPORA[name]
    close = difflib.get_close_matches(name, NAMED_CORPORA, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise HubstyleError(f"unknown named corpus {name!r}: {hint}known corpora are {', '.join(sorted(NAMED_CORPORA))}")


def _is_truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}




# --- loading ------------------------------------------------------------------------------------------------------


def load_corpus(
    source: str, *, name: str | None = None, column: str | None = None, split: str = "train", format: str = "auto"
) -> Corpus:
    """Return the corpus ``source`` names: a named corpus, a ``.txt``/``.csv``/``.jsonl`` file, or ``hf:owner/name``.

    A Hugging Face source may add a config (``hf:owner/name:config``) or be a local dataset folder (``hf:./folder``,
    including one written by ``save_to_disk``). ``column`` picks the text field of a csv, jsonl or HF dataset (default
    ``"text"``); ``split`` the HF split. A ``.jsonl`` file holds chat samples when ``format`` is 'messages' or
    'prompt_completion', or is 'auto' and its first row has that shape: its blocks are then Conversations.
    """
    source = str(source)
    if source.startswith(HF_PREFIX):
        blocks, where = _hf_blocks(source[len(HF_PREFIX) :], column or DEFAULT_COLUMN, split)
        label = name or where.rstrip("/").split("/")[-1].split(":")[0]
    elif source in NAMED_CORPORA:
        spec = NAMED_CORPORA[source]
        paths = named_corpus_files(source)
        blocks = [block for path in paths for block in (
            spec.cleaner(_read_text(path)) if spec.cleaner else read_chat_jsonl(path, _read_text(path), "messages"))]
        where, label = ", ".join(str(p) for p in paths), name or source
    else:
        path = Path(source).expanduser()
        if path.suffix.lower() not in LOCAL_EXTENSIONS:
            if not path.suffix and not path.exists():
                _named_spec(source)  # a bare word is a (misspelt) corpus name: raises with a suggestion
            raise HubstyleError(
                f"unsupported corpus file {source!r}: use a .txt, .csv or .jsonl file, a named corpus "
                f"({', '.join(sorted(NAMED_CORPORA))}) or hf:owner/name"
            )
        if not path.is_file():
            raise HubstyleError(f"corpus file {str(path)!r} not found: check the path")
        if format in CHAT_FORMATS and path.suffix.lower() != ".jsonl":
            raise HubstyleError(f"format {format!r} needs a .jsonl file, got {source!r}")
        chat = _chat_format(path, format) if path.suffix.lower() == ".jsonl" else None
        if chat:
            blocks = read_chat_jsonl(path, _read_text(path), chat)
        else:
            reader = {".txt": _txt_blocks, ".csv": _csv_blocks, ".jsonl": _jsonl_blocks}[path.suffix.lower()]
            blocks = reader(path, column or DEFAULT_COLUMN)
        where, label = str(path), name or path.stem
    blocks = [b for b in blocks if not isinstance(b, str) or b.strip()]
    if not blocks:
        raise HubstyleError(f"corpus {source!r} is empty (no text after cleaning): give it some text")
    return Corpus(name=label, blocks=blocks, source=where)


def _chat_format(path: Path, format: str) -> str | None:
    """Return the chat format of a .jsonl file ('messages', 'prompt_completion') or None for plain text rows."""
    if format != "auto":
        return format if format in CHAT_FORMATS else None
    for line in _read_text(path).split("\n"):
        if line.strip():
            try:
                first = json.loads(line)
            except json.JSONDecodeError:
                return None  # the text reader gives the error with its line number
            return detect_chat_format(first) if isinstance(first, dict) else None
    return None


def _read_text(path: Path) -> str:
    """Return a file's text as UTF-8 (newlines normalised), refusing binary files."""
    data = path.read_bytes()
    if b"\x00" in data:
        raise HubstyleError(f"{str(path)!r} looks like a binary file (it has NUL bytes): give a UTF-8 text file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise HubstyleError(
            f"{str(path)!r} is not valid UTF-8 text (bad byte at offset {exc.start}): "
            "re-save it as UTF-8 or check it is not a binary file"
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _txt_blocks(path: Path, column: str) -> list[str]:
    del column  # plain text has no columns
    return paragraph_blocks(_read_text(path))


def _csv_blocks(path: Path, column: str) -> list[str]:
    text = _read_text(path)
    csv.field_size_limit(1 << 30)
    reader = csv.DictReader(text.splitlines(keepends=True))
    columns = reader.fieldnames or []
    if column not in columns:
        raise HubstyleError(
            f"{str(path)!r} has no column {column!r}: available columns are {columns}; pass column=<name>"
        )
    return [(row.get(column) or "").strip() for row in reader]


def _jsonl_blocks(path: Path, column: str) -> list[str]:
    blocks = []
    for number, line in enumerate(_read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise HubstyleError(
                f"{str(path)!r} line {number} is not valid JSON ({exc.msg}): fix or remove it"
            ) from None
        if not isinstance(record, dict) or column not in record:
            keys = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise HubstyleError(
                f"{str(path)!r} line {number} has no field {column!r} (it has {keys}); pass column=<name>"
            )
        value = record[column]
        if not isinstance(value, str):
            raise HubstyleError(
                f"{str(path)!r} line {number}: field {column!r} is {type(value).__name__}, not a string"
            )
        blocks.append(value.strip())
    return blocks


def _hf_blocks(dataset: str, column: str, split: str) -> tuple[list[str], str]:
    """Return the ``column`` values of a Hugging Face dataset ``owner/name[:config]`` (or a local folder) and its id."""
    import datasets

    path, config = dataset, None
    if not Path(dataset).expanduser().exists() and ":" in dataset:
        path, config = dataset.rsplit(":", 1)
    local = Path(path).expanduser()
    try:
        if (local / "state.json").is_file() or (local / "dataset_dict.json").is_file():
            # A folder written by Dataset.save_to_disk, which load_dataset refuses.
            ds = datasets.load_from_disk(str(local))
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise HubstyleError(f"dataset {dataset!r} has no split {split!r}: splits are {list(ds)}")
                ds = ds[split]
        else:
            ds = datasets.load_dataset(path, config, split=split)
    except HubstyleError:
        raise
    except Exception as exc:  # datasets raises many types (ConnectionError, ValueError, FileNotFoundError...)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HubstyleError(
            f"could not load Hugging Face dataset {dataset!r} (split {split!r}): {reason}; "
            "check the id, config and split, and that it is cached when offline"
        ) from exc
    if column not in ds.column_names:
        raise HubstyleError(
            f"dataset {dataset!r} has no column {column!r}: available columns are {ds.column_names}; pass column=<name>"
        )
    return [str(v).strip() for v in ds[column] if v is not None], dataset
