"""Using a restyler: load the adapter over its base and rewrite text in the style, sentence by sentence.

``load_restyler()`` loads the restyler shipped with hubstyle (plain English -> Shakespeare's English);
``load_restyler(path_or_repo)`` any restyler folder or Hub repo hubstyle built. Decoding is greedy, so the same text
always gives the same rewrite. A restyler's decoding may add ``style_bias`` to the logits of its style words
(``facts["decoding"]``, transformers' ``sequence_bias``): more of them, at some cost in fidelity to the references.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from hubstyle.errors import HubstyleError
from hubstyle.layout import RESTYLER_FACTS
from hubstyle.restyle.build import DEFAULT_INSTRUCTION

SHIPPED_RESTYLER = Path(__file__).resolve().parent.parent / "shipped" / "restyler"
ADAPTER_NAME = "restyler"
# A sentence ends at . ! ? (closing quotes kept) before a space and a capital or a quote; the restyler was trained
# on single lines, so long texts are rewritten one sentence at a time.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z])")
_ABBREVIATION = re.compile(r"\b(?:Mr|Mrs|Ms|Dr|St|Prof|Sr|Jr|vs|etc|e\.g|i\.e)\.$")


def split_sentences(text: str) -> list[str]:
    """Return the sentences of one line of text (a text without an end mark is one sentence)."""
    parts, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        piece = text[start : match.start()].strip()
        if _ABBREVIATION.search(piece):
            continue  # "Mr. Smith": not a sentence end
        parts.append(text[start : match.end()].strip())
        start = match.end()
    parts.append(text[start:].strip())
    return [p for p in parts if p]


@dataclass
class Restyler:
    """A loaded restyler: ``restyle(text)`` rewrites text in ``style``; ``model`` is a PeftModel over the base."""

    model: Any
    tokenizer: Any
    instruction: str
    style: str
    path: str
    facts: dict

    @property
    def style_bias(self) -> float:
        """Return the logit bias its decoding adds to the style words (0: plain greedy)."""
        return float((self.facts.get("decoding") or {}).get("style_bias", 0.0))

    @property
    def num_beams(self) -> int:
        """Return the beams its decoding searches (1: greedy)."""
        return int((self.facts.get("decoding") or {}).get("num_beams", 1))

    def sequence_bias(self, style_bias: float | None = None) -> dict[tuple[int, ...], float] | None:
        """Return transformers' ``sequence_bias`` for ``style_bias`` (default: the restyler's own), None for 0."""
        bias = self.style_bias if style_bias is None else float(style_bias)
        words = (self.facts.get("decoding") or {}).get("bias_words") or []
        return style_bias_sequences(self.tokenizer, words, bias) if bias and words else None

    def restyle(self, text: str | Sequence[str], *, max_new_tokens: int = 96, batch_size: int = 16,
                style_bias: float | None = None, num_beams: int | None = None) -> str | list[str]:
        """Return ``text`` rewritten in the style (a list for a list): each line kept, each sentence rewritten;
        ``style_bias`` and ``num_beams`` override the restyler's decoding (its bias toward its style words, its
        beams)."""
        single = isinstance(text, str)
        texts = [text] if single else list(text)
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise HubstyleError(f"restyle takes text; item {bad[0]} is a {type(texts[bad[0]]).__name__}")
        out = restyle_texts(self.model, self.tokenizer, texts, self.instruction, max_new_tokens=max_new_tokens,
                            batch_size=batch_size, sequence_bias=self.sequence_bias(style_bias),
                            num_beams=self.num_beams if num_beams is None else num_beams)
        return out[0] if single else out

    def rewrite_sentences(self, sentences: Sequence[str], *, max_new_tokens: int = 96, batch_size: int = 16,
                          style_bias: float | None = None, num_beams: int | None = None) -> list[str]:
        """Return one rewrite per sentence (no splitting): what evaluation scores line by line."""
        return rewrite_lines(self.model, self.tokenizer, list(sentences), self.instruction,
                             max_new_tokens=max_new_tokens, batch_size=batch_size,
                             sequence_bias=self.sequence_bias(style_bias),
                             num_beams=self.num_beams if num_beams is None else num_beams)


def style_bias_sequences(tokenizer, words: Sequence[str], bias: float) -> dict[tuple[int, ...], float]:
    """Return ``bias`` for each word's token sequence as it opens a sentence or follows a space, in lower and
    capital case (transformers' ``sequence_bias``: the last token is pushed when the ones before it match)."""
    sequences: dict[tuple[int, ...], float] = {}
    for word in words:
        for form in {f" {word}", f" {word.capitalize()}", word.capitalize()}:
            ids = tuple(tokenizer(form, add_special_tokens=False)["input_ids"])
            if ids:
                sequences[ids] = float(bias)
    return sequences


def rewrite_lines(model, tokenizer, lines: list[str], instruction: str, *, max_new_tokens: int = 96,
                  batch_size: int = 16, sequence_bias: dict | None = None, num_beams: int = 1) -> list[str]:
    """Return each line rewritten by the restyler ``model`` (greedy, or a beam search); an empty rewrite keeps the
    line as it was."""
    from hubstyle.evaluate.generation import generate

    todo = [i for i, line in enumerate(lines) if line.strip()]
    out = list(lines)
    if not todo:
        return out
    rewrites = generate(model, tokenizer, [lines[i] for i in todo], max_new_tokens=max_new_tokens, do_sample=False,
                        batch_size=batch_size, chat="model", system=instruction, desc="restyling",
                        sequence_bias=sequence_bias, num_beams=num_beams)
    for i, new in zip(todo, rewrites):
        out[i] = new.strip() or lines[i]
    return out


def restyle_texts(model, tokenizer, texts: list[str], instruction: str, *, max_new_tokens: int = 96,
                  batch_size: int = 16, sequence_bias: dict | None = None, num_beams: int = 1) -> list[str]:
    """Return each text rewritten sentence by sentence, its line breaks kept."""
    pieces: list[tuple[int, int, int]] = []  # (text, line, sentence) of every sentence
    sentences: list[str] = []
    structure: list[list[list[str]]] = []
    for t, text in enumerate(texts):
        lines = text.split("\n")
        structure.append([split_sentences(line) for line in lines])
        for li, line_sentences in enumerate(structure[-1]):
            for si, sentence in enumerate(line_sentences):
                pieces.append((t, li, si))
                sentences.append(sentence)
    rewritten = rewrite_lines(model, tokenizer, sentences, instruction, max_new_tokens=max_new_tokens,
                              batch_size=batch_size, sequence_bias=sequence_bias,
                              num_beams=num_beams) if sentences else []
    for (t, li, si), new in zip(pieces, rewritten):
        structure[t][li][si] = new
    return ["\n".join(" ".join(line) for line in lines) for lines in structure]


def restyler_facts(folder: str | os.PathLike) -> dict:
    """Return the restyler facts of an adapter folder (instruction, style, data); a folder without them is refused."""
    path = Path(folder) / RESTYLER_FACTS
    if not path.is_file():
        raise HubstyleError(f"'{folder}' is not a restyler (no {RESTYLER_FACTS}); build one with "
                            "'hubstyle restyler build CONFIG' or omit --adapter for the shipped one")
    return json.loads(path.read_text(encoding="utf-8"))


def load_restyler(path_or_repo: str | os.PathLike | None = None, *, revision: str | None = None) -> Restyler:
    """Return the restyler at a folder or Hub repo (default: the one shipped with hubstyle), on its base."""
    from hubstyle.bases import loadable_path
    from hubstyle.models import load_adapters, load_base, load_tokenizer

    where = Path(path_or_repo) if path_or_repo is not None else SHIPPED_RESTYLER
    if path_or_repo is not None and not where.is_dir():
        from hubstyle.models import local_copy as _local_copy

        where = _local_copy(str(path_or_repo), revision)
    if path_or_repo is None and not (where / "adapter_config.json").is_file():
        raise HubstyleError(f"the shipped restyler is missing from {where}; reinstall hubstyle or pass --adapter")
    facts = restyler_facts(where)
    config = json.loads((where / "adapter_config.json").read_text(encoding="utf-8"))
    base_id = config.get("base_model_name_or_path") or facts.get("base_model")
    base_path = loadable_path(base_id)
    tokenizer = load_tokenizer(where if (where / "tokenizer_config.json").is_file() else base_path)
    model = load_adapters(load_base(base_path), {ADAPTER_NAME: where})
    return Restyler(model=model, tokenizer=tokenizer, instruction=facts.get("instruction", DEFAULT_INSTRUCTION),
                    style=facts.get("style", "style"), path=str(where), facts=facts)
