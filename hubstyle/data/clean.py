"""Cleaners that turn raw corpus text into blocks: wikitext detokenisation, Milton, tinyshakespeare, chatterbot
conversations, paragraphs."""

from __future__ import annotations

import re

# A file without blank lines is grouped into blocks of consecutive lines of about this many characters.
LINE_GROUP_CHARS = 400

_BLANK_LINE = re.compile(r"\n[ \t]*\n")

# --- plain text ---------------------------------------------------------------------------------------------------


def paragraph_blocks(text: str, *, line_group_chars: int = LINE_GROUP_CHARS) -> list[str]:
    """Return the paragraphs of ``text`` (split at blank lines), or groups of lines when it has no blank line."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").strip("\n").split("\n")]
    if any(not line.strip() for line in lines):
        paragraphs = _BLANK_LINE.split("\n".join(lines))
        return [p.strip("\n") for p in paragraphs if p.strip()]
    return group_lines([line for line in lines if line.strip()], line_group_chars)


def group_lines(lines: list[str], target_chars: int = LINE_GROUP_CHARS) -> list[str]:
    """Return consecutive ``lines`` joined into blocks that each reach about ``target_chars`` characters."""
    blocks: list[str] = []
    current: list[str] = []
    size = 0
    for line in lines:
        current.append(line)
        size += len(line) + 1
        if size >= target_chars:
            blocks.append("\n".join(current))
            current, size = [], 0
    if current:
        blocks.append("\n".join(current))
    return blocks


# --- tinyshakespeare ----------------------------------------------------------------------------------------------


def shakespeare_blocks(text: str) -> list[str]:
    """Return tinyshakespeare's speeches, one block each (``"NAME:\\nline\\nline"``), in source order.

    A speaker line with no speech under it (``TITUS:`` alone, 125 times in the file) is dropped.
    """
    blocks = []
    for speech in _BLANK_LINE.split(text.replace("\r\n", "\n")):
        lines = [line.rstrip() for line in speech.strip("\n").split("\n") if line.strip()]
        if len(lines) > 1 or (lines and not lines[0].endswith(":")):
            blocks.append("\n".join(lines))
    return blocks


# --- wikitext -----------------------------------------------------------------------------------------------------

_HEADING = re.compile(r"^\s*(=\s+)+.*?(\s+=)+\s*$")
_AT_JOINS = ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."))
_CONTRACTION = re.compile(r" (n't|'s|'t|'m|'ve|'re|'ll|'d)\b", re.IGNORECASE)
_SPACE_BEFORE = re.compile(r" +([,.;:!?%)\]}])")
_SPACE_AFTER = re.compile(r"([(\[{$£€]) +")
_EMPTY_BRACKETS = re.compile(r"\(\s*[,;:]?\s*\)|\[\s*\]|\{\s*\}")
_PUNCT_ONLY = re.compile(r"^[\W_]*$")


def is_wikitext_heading(line: str) -> bool:
    """Return True for a wikitext ``= Title =`` / ``= = Section = =`` heading line."""
    return bool(_HEADING.match(line))


def detokenize_wikitext(line: str) -> str:
    """Return one wikitext line as ordinary prose: ``@-@`` joins undone, ``<unk>`` dropped, punctuation re-attached."""
    s = " " + line.strip() + " "
    for token, char in _AT_JOINS:
        s = s.replace(token, char)
    s = " ".join(_drop_unk(s.split()))
    # Quotes or brackets left around nothing once their <unk> is gone.
    s = re.sub(r'(?:^| )(["\'])(?: \1)(?= |$)', "", s)
    s = _pair_quotes(s, '"')
    s = re.sub(r"(\ws) '(?= )", r"\1'", s)  # plural possessive: "Boys ' song" -> "Boys' song"
    s = _pair_quotes(s, "'")
    s = _CONTRACTION.sub(r"\1", s)
    s = _SPACE_BEFORE.sub(r"\1", s)
    s = _SPACE_AFTER.sub(r"\1", s)
    s = _EMPTY_BRACKETS.sub("", s)
    s = re.sub(r" {2,}", " ", s)
    s = _SPACE_BEFORE.sub(r"\1", s)
    # A dropped <unk> can leave doubled punctuation ("a , , b") or a clause starting with a comma.
    s = re.sub(r"([,;:])(?:[,;:])+", r"\1", s)
    s = re.sub(r"^[,;:.] *", "", s)
    return s.strip()


def _drop_unk(tokens: list[str]) -> list[str]:
    """Return ``tokens`` without words containing ``<unk>`` (also ``<unk>-tipped``) or the ``'s`` after one."""
    kept: list[str] = []
    dropped = False
    for tok in tokens:
        if "<unk>" in tok or (dropped and tok in ("'s", "'")):
            dropped = True
            continue
        dropped = False
        kept.append(tok)
    return kept


def _pair_quotes(s: str, quote: str) -> str:
    """Return ``s`` with standalone ``quote`` tokens glued to the text they enclose (``" a b "`` -> ``"a b"``)."""
    tokens = s.split(" ")
    count = tokens.count(quote)
    if not count:
        return s
    if quote == "'" and count % 2:
        # An odd single quote is most likely a plural possessive ("Linnaeus ' concept"): glue it to the left.
        return re.sub(r"(\w) ' ", r"\1' ", s)
    out: list[str] = []
    opening = True
    pending = False
    for tok in tokens:
        if tok == quote:
            if opening:
                pending = True
            elif out:
                out[-1] += quote
            else:
                out.append(quote)
            opening = not opening
            continue
        if pending:
            tok, pending = quote + tok, False
        out.append(tok)
    if pending:
        out.append(quote)
    return " ".join(out)


def wikitext_blocks(text: str) -> list[str]:
    """Return wikitext raw's sections: the paragraphs under one heading, detokenised, one line each.

    Headings and ``<unk>`` are dropped. Paragraphs stay on their own lines (joined by ``"\\n"``), so a model
    pretrained on these blocks learns the newline token that verse and scripts are made of.
    """
    blocks: list[str] = []
    section: list[str] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if is_wikitext_heading(line):
            if section:
                blocks.append("\n".join(section))
            section = []
            continue
        if not line.strip():
            continue
        clean = detokenize_wikitext(line)
        if clean and not _PUNCT_ONLY.match(clean):
            section.append(clean)
    if section:
        blocks.append("\n".join(section))
    return blocks


# --- NLTK-tokenised text (parallel corpora) -------------------------------------------------------------------------

_NLTK_CONTRACTION = re.compile(r" (n't|'s|'ll|'re|'ve|'d|'m|'S|'LL|'RE|'VE|'D|'M|N'T)\b")
_NLTK_SPACE_BEFORE = re.compile(r" ([,.;:!?%)\]}]|\.\.\.)")
_NLTK_SPACE_AFTER = re.compile(r"([(\[{]) ")


def detokenize(text: str) -> str:
    """Return NLTK-tokenised ``text`` with ordinary spacing: ``I 'll go , sir .`` -> ``I'll go, sir.``"""
    text = text.strip()
    text = text.replace("``", '"').replace("''", '"')
    text = _NLTK_CONTRACTION.sub(r"\1", text)
    text = _NLTK_SPACE_BEFORE.sub(r"\1", text)
    text = _NLTK_SPACE_AFTER.sub(r"\1", text)
    text = re.sub(r" {2,}", " ", text)
    return text


def nltk_lines(text: str) -> list[str]:
    """Return each non-empty line of an NLTK-tokenised file, detokenised (a parallel corpus read as plain text)."""
    return [detokenize(line) for line in text.split("\n") if line.strip()]


# --- Milton -------------------------------------------------------------------------------------------------------

_GUTENBERG_START = re.compile(r"^\*{3}\s*START OF|^\*END\*THE SMALL PRINT", re.IGNORECASE)
_GUTENBERG_END = re.compile(r"^\*{3}\s*END OF|^End of (the )?Project Gutenberg", re.IGNORECASE)
_MILTON_HEADING = re.compile(
    r"^(PARADISE LOST\.?|BOOK [IVXLC]+\.?|THE END( OF THE [A-Z]+ BOOK)?\.?|THE ARGUMENT\.?)$", re.IGNORECASE
)


def strip_gutenberg(text: str) -> str:
    """Return ``text`` without a Project Gutenberg header and footer (unchanged when it has none)."""
    lines = text.split("\n")
    start = next((i + 1 for i, line in enumerate(lines) if _GUTENBERG_START.match(line.strip())), 0)
    end = next((i for i in range(len(lines) - 1, start - 1, -1) if _GUTENBERG_END.match(lines[i].strip())), len(lines))
    return "\n".join(lines[start:end])


def milton_blocks(text: str) -> list[str]:
    """Return Paradise Lost's verse paragraphs (an indented or post-blank line starts one), headings dropped."""
    # \x1a is a DOS end-of-file mark some Gutenberg files still carry.
    text = strip_gutenberg(text.replace("\r\n", "\n").replace("\x1a", ""))
    blocks: list[str] = []
    current: list[str] = []

    def close() -> None:
        if current:
            blocks.append("\n".join(current))
            current.clear()

    for raw in text.split("\n"):
        line = raw.rstrip()
        stripped = line.strip()
        if not stripped or _MILTON_HEADING.match(stripped):
            close()
            continue
        if line[0].isspace():
            close()
        current.append(stripped)
    close()
    return blocks


# --- chatterbot-corpus --------------------------------------------------------------------------------------------

# A conversation shorter than this ("Hello / Hi") says nothing about a register; it is skipped.
MIN_CONVERSATION_WORDS = 4


def chatterbot_blocks(text: str) -> list[str]:
    """Return the conversations of one chatterbot-corpus YAML file, one block each (its lines joined by newlines).

    Lines that are not plain strings and conversations under ``MIN_CONVERSATION_WORDS`` words are dropped, and so
    are repeats: ``tech_support.yml`` holds 10 conversations 1,050 times, which would put the same text on both
    sides of a train/held-out split.
    """
    import yaml

    data = yaml.safe_load(text)
    conversations = data.get("conversations") if isinstance(data, dict) else None
    blocks: list[str] = []
    seen: set[str] = set()
    for conversation in conversations if isinstance(conversations, list) else []:
        if not isinstance(conversation, list):
            continue  # a stray string where a list of lines belongs (one in trivia.yml)
        lines = [" ".join(line.split()) for line in conversation if isinstance(line, str) and line.strip()]
        block = "\n".join(lines)
        if len(block.split()) >= MIN_CONVERSATION_WORDS and block not in seen:
            seen.add(block)
            blocks.append(block)
    return blocks
