"""Dialogue samples from scripts: one speaker's turns, each with the turns before it as context.

The script is read by :mod:`hubstyle.data.scripts` (``colon``, ``gutenberg``, ``screenplay``, ``subtitles``,
``messages``, or ``auto``: detected); speakers are matched case-insensitively by full name, an abbreviation or alias
(``Ham.``) standing for the full name it maps to.
"""

from __future__ import annotations

import difflib
from collections import Counter
from dataclasses import dataclass

from hubstyle.data.scripts import Script, Turn, parse_turns, read_script, speaker_key
from hubstyle.errors import HubstyleError

__all__ = ["DialogueSample", "Turn", "extract_dialogue", "parse_turns"]


@dataclass
class DialogueSample:
    """A training sample: the turns before a speaker's turn (``context``) and that turn (``response``)."""

    context: str
    response: str

    def text(self) -> str:
        """Return context and response on consecutive lines (just the response when the context is empty)."""
        return f"{self.context}\n{self.response}" if self.context else self.response


def _one_line(turn: Turn) -> str:
    text = " ".join(turn.text.split("\n"))
    return f"{turn.speaker}: {text}" if turn.speaker is not None else text


def extract_dialogue(
    text: str, speaker: str, rounds: int = 5, keep_narration: bool = False, format: str = "auto",
    aliases: dict[str, str] | None = None,
) -> list[DialogueSample]:
    """Return one sample per turn of ``speaker`` (case-insensitive), with the previous ``rounds`` turns as context.

    The script is read in ``format`` (see :mod:`hubstyle.data.scripts`; ``auto`` detects it), ``aliases`` mapping
    names as written to full names (``{"Ham.": "Hamlet"}``); the response and context use the full names.

    A round is one spoken turn, by any speaker (the target's own earlier turns included), so the context holds the
    ``rounds`` spoken turns just before the target's turn, oldest first, formatted ``Name: line`` one per line (a
    multi-line speech joined with spaces). Fewer are given at the start of the text; ``rounds=0`` gives empty contexts.
    Narration lines never count as rounds: with ``keep_narration`` the ones that fall between the first context turn
    and the response are kept in place (those before the first spoken turn, too, when the text has fewer than
    ``rounds`` turns before it); without it they are dropped. The response is ``SPEAKER: line(s)``, newlines kept.
    """
    if not isinstance(rounds, int) or rounds < 0:
        raise HubstyleError(f"rounds must be a whole number >= 0, got {rounds!r}")
    script = read_script(text, format, aliases)
    turns, target = script.turns, script.key(speaker)
    spoken: list[int] = []  # indices of spoken turns seen so far
    samples = []
    for i, turn in enumerate(turns):
        if turn.speaker is None:
            continue
        if speaker_key(turn.speaker) == target:
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
        raise HubstyleError(_no_lines_message(speaker, script))
    return samples


def _no_lines_message(speaker: str, script: Script) -> str:
    """Return the one-line error for a speaker with no turns: the closest name and the most frequent speakers."""
    names = [t.speaker for t in script.spoken()]
    counts = Counter(speaker_key(name) for name in names)  # matching is case-insensitive, so count that way
    spelling = {key: Counter(n for n in names if speaker_key(n) == key).most_common(1)[0][0] for key in counts}
    top = ", ".join(f"{spelling[key]!r} ({n})" for key, n in counts.most_common(5))
    close = difflib.get_close_matches(script.key(speaker), list(counts), n=1, cutoff=0.6)
    hint = f"did you mean {spelling[close[0]]!r}? " if close else ""
    return (f"speaker {speaker!r} has no lines in the text: {hint}the most frequent speakers are {top} "
            f"(read as format {script.format!r}; set dialogue.format or dialogue.aliases if that is wrong)")
