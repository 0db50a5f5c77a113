"""Chat-shaped samples: `messages` JSONL (OpenAI / ShareGPT), prompt/completion pairs, and scripts as conversations.

A :class:`Conversation` is plain data (no tokenizer): its messages, and which assistant turns carry the loss.
Rendering it with a chat template, and masking everything but the assistant's tokens, is ``hubstyle.chat``'s job.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from hubstyle.data.dialogue import _no_lines_message
from hubstyle.data.scripts import Turn, read_script, speaker_key
from hubstyle.errors import HubstyleError

ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system",
                  "chatgpt": "assistant", "bing": "assistant", "bard": "assistant"}
LOSS_ON = ("all", "last")  # every assistant turn, or only the conversation's last one (script samples with context)
CHAT_FORMATS = ("messages", "prompt_completion")


@dataclass
class Conversation:
    """A chat sample: messages ``{"role", "content"[, "name"]}`` and which assistant turns are trained on."""

    messages: list[dict[str, str]]
    loss_on: str = "all"
    source: str = field(default="", compare=False)  # "file line N", for error messages

    def __post_init__(self) -> None:
        check_messages(self.messages, self.source or "conversation")
        if self.loss_on not in LOSS_ON:
            raise HubstyleError(f"loss_on must be one of {LOSS_ON}, got {self.loss_on!r}")

    def trained_turns(self) -> list[int]:
        """Return the indices of the assistant messages whose tokens carry the loss."""
        turns = [i for i, m in enumerate(self.messages) if m["role"] == "assistant"]
        return turns[-1:] if self.loss_on == "last" else turns

    def assistant_text(self) -> str:
        """Return the trained assistant turns' text, one turn per paragraph (what a style classifier reads)."""
        return "\n\n".join(self.messages[i]["content"] for i in self.trained_turns())


def check_messages(messages: object, where: str) -> None:
    """Raise a one-line HubstyleError unless ``messages`` is a list of known-role messages with an assistant turn."""
    if not isinstance(messages, list) or not messages:
        raise HubstyleError(f"{where}: 'messages' must be a non-empty list of {{'role', 'content'}} objects")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or "role" not in m:
            raise HubstyleError(f"{where}: message {i} must be an object with a 'role' and a string 'content', got {m!r:.80}")
        if m["role"] not in ROLES:
            raise HubstyleError(f"{where}: message {i} has unknown role {m['role']!r}; roles are {', '.join(ROLES)}")
    if not any(m["role"] == "assistant" for m in messages):
        raise HubstyleError(f"{where}: no assistant turn, so there is nothing to train on; add one or drop the row")


def jsonl_rows(path: Path, text: str) -> list[tuple[int, dict]]:
    """Return (line number, object) of each non-blank line of a JSONL text; a bad line is a one-line error."""
    rows = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise HubstyleError(f"{str(path)!r} line {number} is not valid JSON ({exc.msg}): fix or remove it") from None
        if not isinstance(record, dict):
            raise HubstyleError(f"{str(path)!r} line {number} is a {type(record).__name__}, not a JSON object")
        rows.append((number, record))
    return rows


def detect_chat_format(record: dict) -> str | None:
    """Return 'messages' or 'prompt_completion' when a JSONL record has that shape, else None (plain text)."""
    if "messages" in record or "conversations" in record:
        return "messages"
    if "prompt" in record and "completion" in record:
        return "prompt_completion"
    return None


def read_chat_jsonl(path: Path, text: str, fmt: str) -> list[Conversation]:
    """Return the conversations of a JSONL file in format ``fmt`` ('messages' or 'prompt_completion')."""
    out = []
    for number, record in jsonl_rows(path, text):
        where = f"{str(path)!r} line {number}"
        if fmt == "messages":
            messages = record.get("messages", record.get("conversations"))
            if isinstance(messages, list) and messages and isinstance(messages[0], dict) and "from" in messages[0]:
                messages = [_from_sharegpt(m, where, i) for i, m in enumerate(messages)]
            if messages is None:
                raise HubstyleError(f"{where} has no 'messages' field (it has {sorted(record)})")
            out.append(Conversation(messages, source=where))
        else:
            prompt, completion = record.get("prompt"), record.get("completion")
            if not isinstance(prompt, str) or not isinstance(completion, str):
                raise HubstyleError(f"{where} needs string 'prompt' and 'completion' fields (it has {sorted(record)})")
            out.append(Conversation([{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}],
                                    source=where))
    return out


def _from_sharegpt(m: dict, where: str, i: int) -> dict:
    role = SHAREGPT_ROLES.get(str(m.get("from", "")).lower())
    if role is None:
        raise HubstyleError(f"{where}: message {i} has unknown role {m.get('from')!r}; use human/gpt/system")
    return {"role": role, "content": m.get("value")}


def dialogue_conversations(
    text: str, speaker: str | None, rounds: int = 5, keep_narration: bool = False, format: str = "auto",
    aliases: dict[str, str] | None = None,
) -> list[Conversation]:
    """Return a script's turns as conversations, the loss on each sample's last (assistant) turn only.

    With ``speaker``: one sample per turn of that speaker; their lines are the assistant, the other speakers' turns
    the user (consecutive ones merged into one message as ``Name: line`` lines), with the previous ``rounds`` spoken
    turns as context. Without: every spoken turn after the first answers the one before it (roles alternate back
    from the answer), so a whole play becomes a conversation corpus. Narration lines between context turns are
    kept, as user-side lines in brackets, when ``keep_narration`` is set. ``format`` and ``aliases`` say how the
    script is read (see :mod:`hubstyle.data.scripts`).
    """
    if not isinstance(rounds, int) or rounds < 0:
        raise HubstyleError(f"rounds must be a whole number >= 0, got {rounds!r}")
    script = read_script(text, format, aliases)
    turns = script.turns
    spoken = [i for i, t in enumerate(turns) if t.speaker is not None]
    target = script.key(speaker) if speaker else None
    depth = rounds if target else max(rounds, 1)  # without a speaker, an answer needs the turn it answers
    samples = []
    for k, i in enumerate(spoken):
        if target is not None and speaker_key(turns[i].speaker) != target:
            continue
        previous = spoken[max(0, k - depth) : k] if depth else []
        if target is None and not previous:
            continue
        window = turns[previous[0] : i] if keep_narration and previous else [turns[j] for j in previous]
        samples.append(Conversation(_as_messages(window, turns[i], target), loss_on="last"))
    if not samples:
        raise HubstyleError(_no_lines_message(speaker or "(any)", script))
    return samples


def _as_messages(window: list[Turn], answer: Turn, target: str | None) -> list[dict[str, str]]:
    """Return the context turns and the answer as user/assistant messages, the answer last (as the assistant)."""
    n_spoken = sum(t.speaker is not None for t in window)
    roles, seen = [], 0
    for t in window:
        if t.speaker is None:
            roles.append("user")  # narration is what the user side sees
        elif target is not None:
            roles.append("assistant" if speaker_key(t.speaker) == target else "user")
        else:  # alternate, counted back from the answer: the turn just before it is the user's
            roles.append("assistant" if (n_spoken - seen) % 2 == 0 else "user")
        seen += t.speaker is not None
    groups: list[tuple[str, list[Turn]]] = []
    for t, role in zip(window, roles):
        if groups and groups[-1][0] == role:
            groups[-1][1].append(t)
        else:
            groups.append((role, [t]))
    messages = [_message(role, group) for role, group in groups]
    messages.append({"role": "assistant", "content": _speech(answer), "name": answer.speaker})
    return messages


def _speech(turn: Turn) -> str:
    return "\n".join(line.strip() for line in turn.text.split("\n"))


def _message(role: str, group: list[Turn]) -> dict[str, str]:
    speakers = {t.speaker for t in group if t.speaker is not None}
    if role == "user" and (len(group) > 1 or not speakers):
        lines = [f"{t.speaker}: {' '.join(_speech(t).split(chr(10)))}" if t.speaker else f"[{t.text.strip('[]()* ')}]"
                 for t in group]
        return {"role": role, "content": "\n".join(lines), "name": ""}  # "": the lines carry their own names
    return {"role": role, "content": "\n".join(_speech(t) for t in group), "name": group[0].speaker}


MIN_ANSWER_WORDS = 5  # "Resolved. resolved." answers no question
QUESTION_TEMPLATES = (
    "What do you think of {a} and {b}?",
    "Tell me about {a}.",
    "Can you say something about {a} and {b}?",
    "How do you feel about {a}?",
    "What is your view on {a} and {b}?",
    "Why does {a} matter?",
    "Describe {a} for me.",
    "What would you tell a friend about {a}?",
)
_WORD = re.compile(r"[A-Za-z]+")
_STOP = frozenset(
    "that this with have from they them their there what when where which while would could should shall will "
    "your yours mine thee thou thine thy hath doth art upon unto than then were been being some such into more "
    "most very much many here hence thus therefore these those whom whose again against other another every "
    "nothing something never ever only even also come came make made take took give gave well good know speak "
    "said says tell like love lord sir".split()
)


def long_answers(samples: list[Conversation], min_words: int) -> list[Conversation]:
    """Return the samples whose last trained answer has at least ``min_words`` words (one-line error if none has).

    Short lines ("Is he good?") carry little of a style: a model trained on them answers in short plain lines.
    """
    out = [s for s in samples if len(s.messages[s.trained_turns()[-1]]["content"].split()) >= min_words]
    if not out:
        longest = max((len(s.messages[s.trained_turns()[-1]]["content"].split()) for s in samples), default=0)
        raise HubstyleError(f"no answer has {min_words}+ words (the longest has {longest}); "
                            "lower dialogue.min_answer_words")
    return out


def question_prompts(samples: list[Conversation], seed: int = 0, min_words: int = MIN_ANSWER_WORDS) -> list[Conversation]:
    """Return the samples with each user turn replaced by a modern question about the answer's own content words.

    A chat model meets modern questions, not lines of a play; training on answers to questions that look like the
    ones it will be asked (built from templates and the answer's longest content words: no model writes them, so
    nothing leaks into the style classifier) teaches it to answer such questions in the style. Context turns are
    dropped: each sample becomes one question and its answer; answers under ``min_words`` words are skipped.
    """
    import random

    rng = random.Random(seed)
    out = []
    for sample in samples:
        answer = sample.messages[sample.trained_turns()[-1]]
        found = _WORD.findall(answer["content"])
        proper = {w.lower() for w in found if w[0].isupper()} - {w for w in found if w[0].islower()}
        words = sorted({w.lower() for w in found if len(w) >= 4} - _STOP, key=lambda w: (-len(w), w))
        words = [w.capitalize() if w in proper else w for w in words]  # names keep their capital
        if not words or len(answer["content"].split()) < min_words:
            continue
        templates = QUESTION_TEMPLATES if len(words) > 1 else [t for t in QUESTION_TEMPLATES if "{b}" not in t]
        a, b = rng.sample(words[:6], 2) if len(words) > 1 else (words[0], "")
        question = rng.choice(templates).format(a=a, b=b)
        out.append(Conversation([{"role": "user", "content": question}, answer], loss_on="last", source=sample.source))
    if not out:
        raise HubstyleError(f"no answer of {min_words}+ words has a content word to ask about; give longer speeches "
                            "or lower dialogue.min_answer_words")
    return out
