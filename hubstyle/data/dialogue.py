"""Dialogue from scripts: parse speaker turns and build (context, response) samples for one speaker.

Two script layouts are read, also mixed in one text:

* ``Name: line`` — the speaker and the line on one line (chat logs, transcripts);
* ``NAME:`` alone on a line, then the speech lines (tinyshakespeare), the speech ending at a blank line.

Inside a ``NAME:`` speech a line that looks like a label (``Come:``, ``Very well: go``) is still speech, unless its
name is a known speaker: one that opens a paragraph somewhere in the text, labels a line in a paragraph that opens
with a ``Name: line``, or is written in capitals. A plain line right after a ``Name: line`` turn (no blank line
between) continues that turn; a plain line after a blank line, or a line wrapped in brackets (``[Exit]``,
``(laughs)``, ``*waves*``) outside a ``NAME:`` speech, is narration (``Turn.speaker is None``).
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from dataclasses import dataclass

from hubstyle.errors import HubstyleError

MAX_NAME_WORDS = 4
_LABEL = re.compile(r"^\s*(?P<name>[^\W\d_][\w'.\- ]{0,39}?)\s*:(?:\s*(?P<text>.*?))?\s*$")
_BRACKETED = re.compile(r"^\s*(\[.*\]|\(.*\)|\*.*\*|_.*_)\s*$")


@dataclass
class Turn:
    """One turn of a script: a speaker's speech, or a narration / stage-direction line when ``speaker`` is None."""

    speaker: str | None
    text: str


@dataclass
class DialogueSample:
    """A training sample: the turns before a speaker's turn (``context``) and that turn (``response``)."""

    context: str
    response: str

    def text(self) -> str:
        """Return context and response on consecutive lines (just the response when the context is empty)."""
        return f"{self.context}\n{self.response}" if self.context else self.response


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


def _paragraphs(text: str) -> list[list[str]]:
    paragraphs: list[list[str]] = [[]]
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.strip():
            paragraphs[-1].append(line.rstrip())
        elif paragraphs[-1]:
            paragraphs.append([])
    return [p for p in paragraphs if p]


def parse_turns(text: str) -> list[Turn]:
    """Return the turns of a script in order; see the module docstring for how lines are attributed."""
    paragraphs = _paragraphs(text)
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
            label = _label(line)
            if _BRACKETED.match(line) and not (in_speech and current is not None):
                turns.append(Turn(None, line.strip()))
                current = None
                continue
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
    return [t for t in turns if t.speaker is None or t.text]


def _one_line(turn: Turn) -> str:
    text = " ".join(turn.text.split("\n"))
    return f"{turn.speaker}: {text}" if turn.speaker is not None else text


def extract_dialogue(text: str, speaker: str, rounds: int = 5, keep_narration: bool = False) -> list[DialogueSample]:
    """Return one sample per turn of ``speaker`` (case-insensitive), with the previous ``rounds`` turns as context.

    A round is one spoken turn, by any speaker (the target's own earlier turns included), so the context holds the
    ``rounds`` spoken turns just before the target's turn, oldest first, formatted ``Name: line`` one per line (a
    multi-line speech joined with spaces). Fewer are given at the start of the text; ``rounds=0`` gives empty contexts.
    Narration lines never count as rounds: with ``keep_narration`` the ones that fall between the first context turn
    and the response are kept in place (those before the first spoken turn, too, when the text has fewer than
    ``rounds`` turns before it); without it they are dropped. The response is ``SPEAKER: line(s)``, newlines kept.
    """
    if not isinstance(rounds, int) or rounds < 0:
        raise HubstyleError(f"rounds must be a whole number >= 0, got {rounds!r}")
    turns = parse_turns(text)
    target = " ".join(speaker.split()).casefold()
    spoken: list[int] = []  # indices of spoken turns seen so far
    samples = []
    for i, turn in enumerate(turns):
        if turn.speaker is None:
            continue
        if turn.speaker.casefold() == target:
            previous = spoken[-rounds:] if rounds else []
            if not keep_narration:
                window = [turns[j] for j in previous]
            else:
                start = i if rounds == 0 else (previous[0] if len(previous) == rounds else 0)
                window = turns[start:i]
            context = "\n".join(_one_line(t) for t in window)
            samples.append(DialogueSample(context=context, response=f"{turn.speaker}: {turn.text}"))
        spoken.append(i)
    if not samples:
        raise HubstyleError(_no_lines_message(speaker, turns))
    return samples


def _no_lines_message(speaker: str, turns: list[Turn]) -> str:
    names = [t.speaker for t in turns if t.speaker is not None]
    if not names:
        return f"speaker {speaker!r} has no lines: no 'Name: line' or 'NAME:' turns were found in the text"
    counts = Counter(name.casefold() for name in names)  # matching is case-insensitive, so count that way
    spelling = {folded: Counter(n for n in names if n.casefold() == folded).most_common(1)[0][0] for folded in counts}
    top = ", ".join(f"{spelling[folded]!r} ({n})" for folded, n in counts.most_common(5))
    close = difflib.get_close_matches(speaker.casefold(), list(counts), n=1, cutoff=0.6)
    hint = f"did you mean {spelling[close[0]]!r}? " if close else ""
    return f"speaker {speaker!r} has no lines in the text: {hint}the most frequent speakers are {top}"
