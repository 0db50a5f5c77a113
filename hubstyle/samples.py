"""A run's style samples on disk: RUN/data/samples.jsonl, one JSON object a line, written once by the data step.

A row is ``{"style", "text"}`` for a plain text block or ``{"style", "messages", "loss_on"}`` for a conversation, in
the order the corpora gave them (before the split). Training reads them back (`hubstyle run`) and the dataset repo
(hubstyle.dataset_repo) publishes them, so what a model was trained on is one file.
"""

from __future__ import annotations

import json
from pathlib import Path

from hubstyle.errors import HubstyleError
from hubstyle.layout import SAMPLES


def write_samples(folder: Path, blocks: dict[str, list]) -> Path:
    """Return ``folder`` after writing each style's samples into its samples.jsonl (atomically, in order)."""
    from hubstyle.fsio import atomic_folder

    with atomic_folder(folder) as stage:
        with open(stage / SAMPLES, "w", encoding="utf-8") as f:
            for label, samples in blocks.items():
                for sample in samples:
                    row = ({"style": label, "text": sample} if isinstance(sample, str)
                           else {"style": label, "messages": sample.messages, "loss_on": sample.loss_on})
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return folder


def read_samples(folder: Path, labels: list[str]) -> dict[str, list]:
    """Return {style: samples} as `write_samples` wrote them (plain texts, or Conversations)."""
    from hubstyle.data import Conversation

    path = folder / SAMPLES
    if not path.is_file():
        raise HubstyleError(f"'{path}' is missing; run the data stage again (hubstyle run CONFIG --from data)")
    blocks: dict[str, list] = {label: [] for label in labels}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise HubstyleError(f"'{path}' line {number} is not JSON ({err}); run the data stage again "
                                    "(--from data)") from None
            style = row.get("style") if isinstance(row, dict) else None
            if style not in blocks:
                raise HubstyleError(f"'{path}' line {number} has style {style!r}, which the config does not name; "
                                    "run the data stage again (--from data)")
            where = f"{path} line {number}"
            sample = row["text"] if "text" in row else Conversation(row["messages"], row["loss_on"], where)
            blocks[style].append(sample)
    return blocks
