"""Rendering samples into token ids and labels: the tokenizer's chat template, or a plain `Name: line` format.

Labels are the ids where the loss is taken and ``IGNORE_INDEX`` elsewhere: for a conversation, only the trained
assistant turns (their closing end-of-turn token included, so the model learns to stop); for plain text, every
token. Assistant spans are found by rendering the conversation's prefixes, which works for any template whose
render of a prefix is a prefix of the whole render (ChatML, Llama-3, Mistral, Gemma, ...); one that is not is an
error, never a silent mis-mask.
"""

from __future__ import annotations

from dataclasses import dataclass

from hubstyle.config import CHAT_TEMPLATES  # auto: the template else plain | model: the template only | plain
from hubstyle.data.chat import Conversation
from hubstyle.errors import HubstyleError

IGNORE_INDEX = -100
PLAIN_USER, PLAIN_ASSISTANT = "User", "Assistant"


@dataclass
class Encoded:
    """One sample's token ids and labels (``IGNORE_INDEX`` where no loss is taken)."""

    ids: list[int]
    labels: list[int]

    @property
    def trained(self) -> int:
        """Return how many tokens carry the loss."""
        return sum(label != IGNORE_INDEX for label in self.labels)


def chat_format(tokenizer, template: str = "auto") -> str:
    """Return 'model' when conversations render with the tokenizer's chat template, 'plain' for `Name: line`."""
    if template not in CHAT_TEMPLATES:
        raise HubstyleError(f"chat.template is {template!r}; valid values: {', '.join(CHAT_TEMPLATES)}")
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if template == "model" and not has_template:
        name = getattr(tokenizer, "name_or_path", "the base")
        raise HubstyleError(
            f"the base model '{name}' has no chat template, and chat.template is 'model'; "
            "set chat.template to 'auto' or 'plain' to use the plain 'Name: line' format"
        )
    return "model" if has_template and template != "plain" else "plain"


def encode(item: str | Conversation, tokenizer, template: str = "auto") -> Encoded:
    """Return the ids and labels of one sample: plain text is trained on every token, chat on the assistant's."""
    if isinstance(item, str):
        ids = tokenizer(item, add_special_tokens=False, verbose=False)["input_ids"]
        if tokenizer.eos_token_id is not None:
            ids = ids + [tokenizer.eos_token_id]
        return Encoded(ids, list(ids))
    if chat_format(tokenizer, template) == "model":
        text, spans = _template_spans(item, tokenizer)
    else:
        text, spans = _plain_spans(item, tokenizer)
    return _labelled(text, spans, tokenizer)


def render_prompt(messages: list[dict[str, str]], tokenizer, template: str = "auto") -> str:
    """Return the text a chat model is prompted with: the messages, then the opening of the assistant's turn."""
    if chat_format(tokenizer, template) == "model":
        return tokenizer.apply_chat_template(_plain_messages(messages), tokenize=False, add_generation_prompt=True)
    return "".join(_plain_line(m) for m in messages) + f"{PLAIN_ASSISTANT}:"


def _plain_messages(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _template_spans(conv: Conversation, tokenizer) -> tuple[str, list[tuple[int, int]]]:
    """Return the rendered conversation and the character spans of its trained assistant turns."""
    messages = _plain_messages(conv.messages)

    def render(upto: int, generation_prompt: bool) -> str:
        return tokenizer.apply_chat_template(
            messages[:upto], tokenize=False, add_generation_prompt=generation_prompt
        )

    full = render(len(messages), False)
    spans = []
    for i in conv.trained_turns():
        start_text = render(i, True) if i else render_generation_prompt_only(tokenizer, messages)
        end_text = render(i + 1, False)
        if not full.startswith(end_text) or not end_text.startswith(start_text):
            raise HubstyleError(
                "the chat template does not render a conversation's beginning as a prefix of the whole, so the "
                "assistant's tokens can't be found; set chat.template: plain"
            )
        # the turn ends at its end-of-turn token; the newline a template writes between turns is layout
        spans.append((len(start_text), len(end_text.rstrip("\n"))))
    return full, spans


def render_generation_prompt_only(tokenizer, messages: list[dict[str, str]]) -> str:
    """Return what the template writes before a conversation's first message when that message is the assistant's."""
    whole = tokenizer.apply_chat_template(messages[:1], tokenize=False)
    content = messages[0]["content"]
    cut = whole.find(content)
    if cut < 0:
        raise HubstyleError("the chat template changes the assistant's text, so its tokens can't be found; "
                            "set chat.template: plain")
    return whole[:cut]


def _plain_line(m: dict[str, str]) -> str:
    """Return one message as a `Name: line` line; a message whose ``name`` is "" is already labelled lines."""
    if m.get("name") == "":
        return f"{m['content']}\n"
    default = PLAIN_ASSISTANT if m["role"] == "assistant" else ("System" if m["role"] == "system" else PLAIN_USER)
    return f"{m.get('name') or default}: {m['content']}\n"


def _plain_spans(conv: Conversation, tokenizer) -> tuple[str, list[tuple[int, int]]]:
    """Return the `Name: line` rendering (EOS closing the last turn) and its trained assistant spans."""
    text, spans = "", []
    trained = set(conv.trained_turns())
    eos = tokenizer.eos_token or ""
    for i, m in enumerate(conv.messages):
        line = _plain_line(m)
        if i in trained:
            head = 0 if m.get("name") == "" else line.index(":") + 1
            end = len(text) + len(line) + (len(eos) if i == len(conv.messages) - 1 else 0)
            spans.append((len(text) + head, end))
        text += line
    return text + eos, spans


def _labelled(text: str, spans: list[tuple[int, int]], tokenizer) -> Encoded:
    """Return ``text`` tokenised with labels kept on tokens that start inside ``spans`` (character offsets)."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    labels = [IGNORE_INDEX] * len(ids)
    for k, (start, end) in enumerate(offsets):
        if end <= start:
            continue
        if any(a <= start < b for a, b in spans):
            labels[k] = ids[k]
    if not any(label != IGNORE_INDEX for label in labels):
        raise HubstyleError("a conversation's assistant turn is empty after tokenising; drop empty replies")
    return Encoded(list(ids), labels)
