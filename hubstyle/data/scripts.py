"""Script formats: read a play, screenplay, subtitles or chat log into speaker turns, in a given or detected format.

Each format is a small parser giving :class:`Turn` lists (``speaker`` None: narration, stage direction, heading):

* ``colon`` — ``Name: line`` (chat logs, transcripts) and ``NAME:`` alone on a line then the speech, ending at a blank
  line (tinyshakespeare), also mixed in one text. Inside a ``NAME:`` speech a line that looks like a label (``Come:``,
  ``Very well: go``) is still speech, unless its name is a known speaker: one that opens a paragraph somewhere, labels a
  line in a paragraph that opens with a ``Name: line``, or is written in capitals. A plain line right after a
  ``Name: line`` turn continues it; a plain line after a blank line, or a bracketed line (``[Exit]``, ``(laughs)``,
  ``*waves*``) or a heading / stage direction outside a ``NAME:`` speech, is narration.
* ``gutenberg`` — ``NAME.``, ``Name.`` or an abbreviation (``Ham.``, ``First Sen.``) alone on a line, then the speech
  up to a blank line; or at the start of the speech line (``Ham. Whither wilt thou lead me?``), each such line opening
  a turn. A colon never marks a speaker here (verse lines end in colons). Abbreviations become full names through the
  user's ``aliases`` or, by word prefix, the text's character list (``Dramatis Personae`` / ``PERSONS REPRESENTED``:
  ``HAMLET, son to the late King`` maps ``Ham.`` to ``Hamlet``). A name at the start of a speech line counts when it
  is known that way, written in capitals, seen alone on a line, or (in texts laid out that way) opens two or more
  lines and is no common word (``Go.``, ``Peace.``). The line after a heading is the scene's place; a stage
  direction set off to the right of a speech line (``Give you good night.      Exit.``) is narration; speech after a
  stage direction goes on with the same speaker (in the next paragraph too, when it is indented).
* ``screenplay`` — a paragraph opening with an upper-case cue line (``MARA``, ``JON (V.O.)``: extensions stripped),
  then the dialogue to the blank line; parenthetical lines (``(beat)``) are dropped. Scene headings (``INT.``/``EXT.``)
  and action paragraphs are narration, one turn per paragraph.
* ``subtitles`` — SRT/VTT: the ``WEBVTT`` header, ``NOTE``/``STYLE`` blocks, cue numbers and timing lines are dropped;
  a cue line with a speaker (``NAME: text``, ``- NAME: text``, ``<v Name>text``) opens a turn, the cue's next plain
  lines continue it, and the next cue of the same speaker joins it. Cues without a speaker are narration.
* ``messages`` — chat JSONL, one ``{"messages": [{"role", "content"[, "name"]}]}`` per line (ShareGPT
  ``conversations`` with ``from``/``value`` too): the ``name``, else the role, is the speaker; system messages are
  narration.

In every format headings and stage directions (``ACT I``, ``SCENE II. Elsinore.``, ``[Enter ...]``, ``Enter Ghost.``,
``Exit``, ``Exeunt``, ``Re-enter``) are narration, and ``aliases`` (``{"Ham.": "Hamlet"}``) rename speakers. ``auto``
parses the text in every format and keeps the one whose repeated speakers hold the largest share of the text.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field

from hubstyle.config import SCRIPT_FORMATS
from hubstyle.errors import HubstyleError

FORMAT_HINTS = {
    "colon": "'Name: line' or 'NAME:' then the speech",
    "gutenberg": "'NAME.' or 'Ham.' alone or opening the speech",
    "screenplay": "an upper-case cue line, then the dialogue",
    "subtitles": "SRT/VTT cues with 'NAME: text' or '<v Name>'",
    "messages": "chat JSONL with 'messages'",
}
MAX_NAME_WORDS = 4


@dataclass
class Turn:
    """One turn of a script: a speaker's speech, or a narration / stage-direction line when ``speaker`` is None."""

    speaker: str | None
    text: str


@dataclass
class Script:
    """A parsed script: its turns, the format that read it, the formats tried, and its names' full forms."""

    turns: list[Turn]
    format: str
    tried: tuple[str, ...]
    names: dict[str, str] = field(default_factory=dict)  # speaker_key(name as written) -> full name

    def spoken(self) -> list[Turn]:
        """Return the turns that have a speaker."""
        return [t for t in self.turns if t.speaker is not None]

    def key(self, name: str) -> str:
        """Return the key a requested speaker matches turns by, an abbreviation or alias mapped to its full name."""
        return speaker_key(self.names.get(speaker_key(name), name))


def speaker_key(name: str) -> str:
    """Return ``name`` as speakers are matched: case-folded, spaces collapsed, a trailing '.' or ':' dropped."""
    return " ".join(name.split()).rstrip(".:").strip().casefold()


@dataclass
class _Parsed:
    turns: list[Turn]
    markup: int = 0  # characters of format structure (timing lines, JSON) the parser understood
    names: dict[str, str] = field(default_factory=dict)


# --- shared line kinds ----------------------------------------------------------------------------------------------

_HEADING = re.compile(
    r"^\s*(?:(?:ACT|Act|SCENE|Scene|Actus|Scena|Scaena)(?:\s+(?:[IVXLC]+|\d+|[A-Z][a-z]+)\b|\s*[.:])"
    r"|(?:INT|EXT|INT\./EXT|EXT\./INT|I/E)[. ]"
    r"|(?:PROLOGUE|EPILOGUE|INDUCTION|THE END|FINIS)\.?\s*$)"
)
_STAGE = re.compile(r"^\s*(?:Enter|Exit|Exeunt|Re-enter|Re-Enter|Reenter|Manet|Manent|Flourish|Sennet|Alarums?|"
                    r"Retreat|Hautboys)\b")
_BRACKETED = re.compile(r"^\s*(\[.*\]|\(.*\)|\*.*\*|_.*_)\s*$")


def _is_direction(line: str) -> bool:
    """Return whether a line is a heading or stage direction (narration in every format)."""
    return bool(_HEADING.match(line) or _STAGE.match(line) or _BRACKETED.match(line))


def _lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _paragraphs(lines: list[str]) -> list[list[str]]:
    """Return the runs of non-blank lines (right-stripped, indentation kept)."""
    paragraphs: list[list[str]] = [[]]
    for line in lines:
        if line.strip():
            paragraphs[-1].append(line.rstrip())
        elif paragraphs[-1]:
            paragraphs.append([])
    return [p for p in paragraphs if p]


def _chars(text: str) -> int:
    return len(text) - sum(text.count(c) for c in " \t\n")


# --- colon: "Name: line" and "NAME:" then the speech ----------------------------------------------------------------

_LABEL = re.compile(r"^\s*(?P<name>[^\W\d_][\w'.\- ]{0,39}?)\s*:(?:\s*(?P<text>.*?))?\s*$")


def _label(line: str) -> tuple[str, str] | None:
    """Return ``(name, text)`` when ``line`` is a speaker label (``text`` is "" for a bare ``NAME:``), else None."""
    match = _LABEL.match(line)
    if not match:
        return None
    name = " ".join(match.group("name").split())
    text = (match.group("text") or "").strip()
    if len(name.split()) > MAX_NAME_WORDS or text.startswith("//"):  # "http://..." is no speaker
        return None
    return name, text


def _colon(text: str) -> _Parsed:
    paragraphs = _paragraphs(_lines(text))
    known = set()
    for para in paragraphs:
        first = _label(para[0])
        if first:
            known.add(first[0].casefold())
        if first and first[1]:  # a "Name: line" paragraph: its other labels are speakers too
            known.update(label[0].casefold() for label in map(_label, para[1:]) if label and label[1])

    def starts_turn(label: tuple[str, str] | None) -> bool:
        if label is None:
            return False
        name = label[0]
        return name.casefold() in known or (name.isupper() and len(name) > 1)

    turns: list[Turn] = []
    for para in paragraphs:
        current: Turn | None = None
        in_speech = False  # inside a speech opened by a bare "NAME:" line
        for line in para:
            if _is_direction(line) and not (in_speech and current is not None):
                turns.append(Turn(None, line.strip()))
                current = None
                continue
            label = _label(line)
            if label and (not in_speech or starts_turn(label)):
                name, speech = label
                current = Turn(name, speech)
                turns.append(current)
                in_speech = not speech
                continue
            if current is not None:
                current.text = f"{current.text}\n{line.strip()}" if current.text else line.strip()
            else:
                turns.append(Turn(None, line.strip()))
    return _Parsed([t for t in turns if t.speaker is None or t.text])


# --- gutenberg: "NAME." / "Ham." alone on a line or opening the speech ------------------------------------------------

_WORD = r"[^\W\d_][\w'’\-]*"
_ALONE = re.compile(rf"^\s*(?P<name>{_WORD}(?:\.?\s+{_WORD}){{0,3}})\.\s*$")
_INLINE = re.compile(rf"^\s*(?P<name>{_WORD}(?:\s+{_WORD}){{0,2}})\.\s+(?P<text>\S.*)$")
_PERSONAE = re.compile(r"^\s*(?:dramatis\s+person(?:ae|æ)|persons\s+represented|the\s+persons\s+of\s+the\s+play|"
                       r"characters\s+in\s+the\s+play|list\s+of\s+characters)\b", re.IGNORECASE)
_ROMAN = re.compile(r"^[IVXLC]+$")
# words that open verse lines ("Go. I follow.") and so never become speakers by being frequent alone
_COMMON = frozenset(
    "o oh ah ay aye no nay yes yea go come well farewell adieu peace away look hark stay hold good sir madam what why "
    "how now so then here there fie alas hence hush done enough indeed true amen thanks welcome ho ha pardon sweet "
    "lord lady heaven god".split()
)


def _namelike(name: str) -> bool:
    words = name.replace(".", " ").split()
    return (0 < len(words) <= MAX_NAME_WORDS and len(name) <= 30 and all(w[0].isupper() for w in words)
            and len(name) > 1 and not _ROMAN.match(name) and not _STAGE.match(name))


def _upper(name: str) -> bool:
    letters = [c for c in name if c.isalpha()]
    return len(letters) > 1 and all(c.isupper() for c in letters)


def character_list(text: str) -> list[str]:
    """Return the names a play lists under ``Dramatis Personae`` / ``PERSONS REPRESENTED`` (empty without one).

    Each entry's leading capitalised words are a name (``HAMLET, son to ...`` gives ``HAMLET``); comma-separated names
    before the description count too (``Rosencrantz, Guildenstern, courtiers``). The list ends at an ``ACT`` or
    ``SCENE`` line.
    """
    lines = _lines(text)
    start = next((i for i, line in enumerate(lines) if _PERSONAE.match(line)), None)
    if start is None:
        return []
    names: list[str] = []
    for line in lines[start + 1 : start + 120]:
        if _HEADING.match(line) and names:
            break
        parts = re.split(r"[,;]", line.strip())
        for k, part in enumerate(parts):
            words = part.strip().rstrip(".").split()
            taken = []
            for w in words:
                if not w[0].isupper():
                    break
                taken.append(w)
            if k and (taken != words or (_upper(parts[0]) and not _upper(part))):
                break  # after the first name only whole names go on ("Claudius, King of Denmark" stops at "King")
            if taken and taken[0] in ("A", "An", "The") and len(taken) > 1:
                taken = taken[1:]
            if not taken or len(taken) > MAX_NAME_WORDS:
                break
            names.append(" ".join(taken))
            if taken != words:
                break
    return names


class _Names:
    """Full names for the speaker names a text writes: the user's aliases, else a unique prefix match in its list."""

    def __init__(self, aliases: dict[str, str] | None, entries: list[str] = ()) -> None:
        self.aliases = {speaker_key(k): v for k, v in (aliases or {}).items()}
        self.entries = [(e.casefold().split(), " ".join(w.capitalize() for w in e.split()) if _upper(e) else e)
                        for e in entries]
        self.found: dict[str, str] = dict(self.aliases)

    def resolve(self, name: str) -> str | None:
        """Return the full name for ``name`` (as written), or None when neither the aliases nor the list give one."""
        key = speaker_key(name)
        if key in self.aliases:
            return self.aliases[key]
        words = key.replace(".", " ").split()
        if not words or (len(words) == 1 and len(words[0]) < 2):
            return None
        matches: list[tuple[int, str]] = []
        for entry_words, full in self.entries:
            if entry_words == words:
                return full
            for start in range(len(entry_words) - len(words) + 1):
                if all(entry_words[start + j].startswith(w) for j, w in enumerate(words)):
                    matches.append((start, full))
                    break
        front = {full for start, full in matches if start == 0}
        pick = front or {full for _, full in matches}
        return pick.pop() if len(pick) == 1 else None

    def full(self, name: str) -> str:
        """Return the full name for ``name``, else ``name`` without its trailing period; remember the mapping."""
        resolved = self.resolve(name)
        written = " ".join(name.split()).rstrip(".")
        if resolved is not None:
            self.found[speaker_key(name)] = resolved
        return resolved or written


_TRAILING = re.compile(r"\s{3,}(?P<direction>\[[^\]]*\]|(?:Exit|Exeunt|Re-enter|Enter|Dies)\b[^\]]*)$")


def _directions(para: list[str]) -> list[bool]:
    """Return, for each line of a paragraph, whether it is a heading or stage direction.

    Besides the lines :func:`_is_direction` knows, a ``[`` direction runs on until its ``]``, and the line right
    after a heading is the scene's place (``Elsinore. A platform before the Castle.``).
    """
    kinds, depth, after_heading = [], 0, False
    for line in para:
        is_direction = depth > 0 or after_heading or _is_direction(line) or line.lstrip().startswith("[")
        kinds.append(is_direction)
        depth = max(0, depth + line.count("[") - line.count("]")) if is_direction else 0
        after_heading = bool(_HEADING.match(line))
    return kinds


def _gutenberg(text: str, aliases: dict[str, str] | None) -> _Parsed:
    names = _Names(aliases, character_list(text))
    paragraphs = [(para, _directions(para)) for para in _paragraphs(_lines(text))]
    alone: Counter[str] = Counter()  # names alone on a paragraph's first line, speech following
    inline: Counter[str] = Counter()  # names opening a line of speech
    for para, directions in paragraphs:
        for j, line in enumerate(para):
            if directions[j]:
                continue
            if (m := _ALONE.match(line)) and _namelike(m["name"]):
                if j == 0 and len(para) > 1:
                    alone[speaker_key(m["name"])] += 1
            elif (m := _INLINE.match(line)) and _namelike(m["name"]):
                inline[speaker_key(m["name"])] += 1
    inline_layout = sum(inline.values()) > sum(alone.values())

    def known(name: str) -> bool:
        key = speaker_key(name)
        return (names.resolve(name) is not None or key in alone or _upper(name)
                or (inline_layout and inline[key] >= 2 and key not in _COMMON))

    turns: list[Turn] = []
    carry: str | None = None  # the speaker an indented paragraph after a stage direction goes on with
    for para, directions in paragraphs:
        current: Turn | None = None
        last = carry if para[0][:1].isspace() else None  # speech after a stage direction in this paragraph goes on
        spoke = False
        for j, line in enumerate(para):
            stripped = line.strip()
            if directions[j]:
                turns.append(Turn(None, stripped))
                current = None
                continue
            trailing = _TRAILING.search(line)  # "Give you good night.          Exit."
            if trailing:
                stripped = line[: trailing.start()].strip()
            m = _ALONE.match(line)
            if m and _namelike(m["name"]) and j < len(para) - 1 and (j == 0 or known(m["name"])):
                current = Turn(names.full(m["name"]), "")
                turns.append(current)
            elif (m := _INLINE.match(stripped)) and _namelike(m["name"]) and known(m["name"]):
                current = Turn(names.full(m["name"]), m["text"].strip())
                turns.append(current)
            else:
                if current is None and last is not None:
                    current = Turn(last, "")
                    turns.append(current)
                if current is not None:
                    current.text = f"{current.text}\n{stripped}" if current.text else stripped
                else:
                    turns.append(Turn(None, stripped))
            if current is not None:
                last, spoke = current.speaker, True
            if trailing:
                turns.append(Turn(None, trailing["direction"]))
                current = None
        carry = last if spoke or all(directions) else None
    return _Parsed([t for t in turns if t.speaker is None or t.text], names=names.found)


# --- screenplay: upper-case cue, optional parenthetical, dialogue ----------------------------------------------------

_EXTENSION = re.compile(r"\s*\([^)]*\)\s*$")
_TRANSITION = re.compile(r"^(?:FADE|CUT TO|DISSOLVE|SMASH CUT|MATCH CUT|TITLE|SUPER|CONTINUED|THE END|MORE)\b")


def _cue(line: str) -> str | None:
    """Return the speaker of a screenplay cue line (extensions like ``(V.O.)`` stripped), else None."""
    name = line.strip()
    while _EXTENSION.search(name):
        name = _EXTENSION.sub("", name)
    if (not name or not _upper(name) or name.endswith(".") or any(c in name for c in ":;!?,\"[]()")
            or len(name.split()) > MAX_NAME_WORDS or len(name) > 35 or _HEADING.match(name)
            or _TRANSITION.match(name)):
        return None
    return " ".join(name.split())


def _screenplay(text: str) -> _Parsed:
    turns: list[Turn] = []
    for para in _paragraphs(_lines(text)):
        speaker = _cue(para[0]) if len(para) > 1 and not _is_direction(para[0]) else None
        if speaker is None:
            turns.append(Turn(None, "\n".join(line.strip() for line in para)))
            continue
        speech, in_parens = [], False
        for line in para[1:]:
            stripped = line.strip()
            if in_parens or stripped.startswith("("):  # a parenthetical ("(beat)"), maybe over lines: not speech
                in_parens = not stripped.endswith(")")
                continue
            speech.append(stripped)
        if speech:
            turns.append(Turn(speaker, "\n".join(speech)))
    return _Parsed(turns)


# --- subtitles: SRT / VTT cues with a speaker prefix -----------------------------------------------------------------

_TIMING = re.compile(r"^\s*(?:\d+:)?\d{1,2}:\d{2}[,.]\d{3}\s*-->\s*(?:\d+:)?\d{1,2}:\d{2}[,.]\d{3}")
_VOICE = re.compile(r"^<v(?:\.[\w.-]+)?\s+(?P<name>[^>]+)>(?P<text>.*)$")
_TAG = re.compile(r"</?(?:i|b|u|c|v|lang|ruby|rt)(?:[.\s][^>]*)?>|<\d[\d:.]*>|\{\\[^}]*\}")


def _cue_line(line: str) -> tuple[str | None, str, bool]:
    """Return ``(speaker or None, text, dashed)`` for one line of cue text."""
    line = line.strip()
    voice = _VOICE.match(line)
    if voice:
        return " ".join(voice["name"].split()), _TAG.sub("", voice["text"]).strip(), False
    line = _TAG.sub("", line).strip()
    dashed = line[:1] in "-–—" and line != ""
    body = line.lstrip("-–— ")
    label = _label(body)
    if label and label[1]:
        return label[0], label[1], dashed
    return None, body if dashed else line, dashed


def _subtitles(text: str) -> _Parsed:
    turns: list[Turn] = []
    markup = 0
    for k, block in enumerate(_paragraphs(_lines(text))):
        head = block[0].strip()
        if (k == 0 and head.startswith("WEBVTT")) or head.split(" ")[0] in ("NOTE", "STYLE", "REGION"):
            markup += sum(_chars(line) for line in block)
            continue
        timing = next((i for i, line in enumerate(block[:3]) if _TIMING.match(line)), None)
        if timing is None:
            turns.extend(Turn(None, line.strip()) for line in block)
            continue
        markup += sum(_chars(line) for line in block[: timing + 1])
        current: Turn | None = None
        for line in block[timing + 1 :]:
            speaker, speech, dashed = _cue_line(line)
            if not speech:
                continue
            if speaker is not None:
                last = turns[-1] if turns else None
                if current is None and last is not None and last.speaker == speaker:  # same speaker, next cue
                    current = last
                    current.text = f"{current.text}\n{speech}"
                else:
                    current = Turn(speaker, speech)
                    turns.append(current)
            elif current is not None and not dashed and not _BRACKETED.match(speech):
                current.text = f"{current.text}\n{speech}"
            else:
                current = None
                turns.append(Turn(None, speech))
    return _Parsed(turns, markup=markup)


# --- messages: chat JSONL ------------------------------------------------------------------------------------------


def _messages(text: str) -> _Parsed:
    turns: list[Turn] = []
    markup = 0
    for line in _lines(text):
        if not line.lstrip().startswith("{"):
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        messages = record.get("messages", record.get("conversations")) if isinstance(record, dict) else None
        if not isinstance(messages, list):
            continue
        content_chars = 0
        for m in messages:
            if not isinstance(m, dict):
                continue
            content = m.get("content", m.get("value"))
            role = str(m.get("role", m.get("from", "")))
            if not isinstance(content, str) or not content.strip():
                continue
            content_chars += _chars(content)
            speaker = None if role == "system" else (m.get("name") or role or None)
            turns.append(Turn(speaker, content.strip()))
        markup += _chars(line) - content_chars
    return _Parsed(turns, markup=markup)


# --- reading a script ----------------------------------------------------------------------------------------------


def _parse(text: str, fmt: str, aliases: dict[str, str] | None) -> _Parsed:
    if fmt == "gutenberg":
        return _gutenberg(text, aliases)
    parsed = {"colon": _colon, "screenplay": _screenplay, "subtitles": _subtitles, "messages": _messages}[fmt](text)
    names = _Names(aliases)
    for turn in parsed.turns:
        if turn.speaker is not None:
            turn.speaker = names.full(turn.speaker) if names.resolve(turn.speaker) else turn.speaker
    parsed.names = names.found
    return parsed


def _score(parsed: _Parsed, total: int) -> float:
    """Return the share of the text a parse explains: speeches of speakers heard more than once, and format markup."""
    spoken = [t for t in parsed.turns if t.speaker is not None]
    counts = Counter(speaker_key(t.speaker) for t in spoken)
    repeated = sum(_chars(t.text) + _chars(t.speaker) for t in spoken if counts[speaker_key(t.speaker)] > 1)
    return (repeated + parsed.markup) / max(total, 1)


def _detect(text: str, aliases: dict[str, str] | None) -> tuple[str, dict[str, float], dict[str, _Parsed]]:
    total = _chars(text)
    parses = {fmt: _parse(text, fmt, aliases) for fmt in SCRIPT_FORMATS[1:]}
    scores = {fmt: _score(parsed, total) for fmt, parsed in parses.items()}
    spoken = {fmt: sum(_chars(t.text) for t in parsed.turns if t.speaker is not None) for fmt, parsed in parses.items()}
    # ties (no repeated speaker anywhere, say): the most speech, then the earlier format
    best = max(scores, key=lambda fmt: (scores[fmt], spoken[fmt], -SCRIPT_FORMATS.index(fmt)))
    return best, scores, parses


def detect_format(text: str, aliases: dict[str, str] | None = None) -> tuple[str, dict[str, float]]:
    """Return the format that reads ``text`` best and every format's score (the share of the text it explains)."""
    best, scores, _ = _detect(text, aliases)
    return best, scores


def _check_format(format: str) -> None:
    if format not in SCRIPT_FORMATS:
        raise HubstyleError(f"unknown script format {format!r}: valid formats are {', '.join(SCRIPT_FORMATS)}")


def parse_script(text: str, format: str = "auto", aliases: dict[str, str] | None = None) -> Script:
    """Return the script's turns in ``format`` (``auto``: the best-scoring one), speakers as full names."""
    _check_format(format)
    if format != "auto":
        parsed = _parse(text, format, aliases)
        return Script(parsed.turns, format, (format,), parsed.names)
    best, _, parses = _detect(text, aliases)
    return Script(parses[best].turns, best, SCRIPT_FORMATS[1:], parses[best].names)


def parse_turns(text: str, format: str = "auto", aliases: dict[str, str] | None = None) -> list[Turn]:
    """Return the turns of a script in order (format ``auto``: detected); see the module docstring for the formats."""
    return parse_script(text, format, aliases).turns


def read_script(text: str, format: str = "auto", aliases: dict[str, str] | None = None) -> Script:
    """Return the parsed script; raise a one-line HubstyleError naming the formats tried when no turn has a speaker."""
    script = parse_script(text, format, aliases)
    if not script.spoken():
        raise HubstyleError(no_turns_message(text, script.tried, aliases))
    return script


def speaker_like_lines(text: str, limit: int = 3) -> list[str]:
    """Return up to ``limit`` lines that look like a speaker label in some format, as ``line N 'text'``."""
    found = []
    for number, line in enumerate(_lines(text), start=1):
        stripped = line.strip()
        if not stripped or _is_direction(line):
            continue
        alone, inline = _ALONE.match(line), _INLINE.match(line)
        if (_label(stripped) or (alone and _namelike(alone["name"])) or (inline and _upper(inline["name"]))
                or _cue(stripped) or _VOICE.match(stripped)):
            found.append(f"line {number} {stripped[:40]!r}")
            if len(found) == limit:
                break
    return found


def no_turns_message(text: str, tried: tuple[str, ...], aliases: dict[str, str] | None = None) -> str:
    """Return the one-line error for a text with no speaker turns: the formats tried, the lines that looked like labels."""
    formats = "; ".join(f"{fmt} ({FORMAT_HINTS[fmt]})" for fmt in tried)
    lines = speaker_like_lines(text)
    seen = f"lines that looked like speakers: {', '.join(lines)}" if lines else "no line looked like a speaker label"
    hint = "give a script in one of these layouts"
    if len(tried) == 1:
        best, scores = detect_format(text, aliases)
        if scores[best] and best != tried[0]:
            hint = f"the text reads as format {best!r}: set dialogue.format to {best!r} or 'auto'"
        else:
            hint = "set dialogue.format to 'auto' or give a script in this layout"
    return f"found no 'Name: line' or other speaker turns in the text (formats tried: {formats}); {seen}; {hint}"
