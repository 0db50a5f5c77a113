"""Run `hubstyle ARGS...` and record every file-system write this process makes under WATCH.

Used by tests/test_reliability.py under `accelerate launch`: ``python tests/rank_audit.py WATCH LOG_DIR ARGS...``
writes LOG_DIR/rank-N.json, the list of [event, path] of writes under WATCH that process N made (Python's audit
hooks see every open for writing, mkdir, rename, remove and rmtree, whichever library makes them).
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from pathlib import Path

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
PATH_EVENTS = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.truncate", "os.symlink", "os.link",
               "shutil.rmtree", "shutil.copyfile", "shutil.copytree", "shutil.move"}


def main() -> None:
    """Install the audit hook, run the hubstyle CLI with the remaining arguments, write the log at exit."""
    watch, log_dir, args = os.path.abspath(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    writes: list[list[str]] = []

    def under_watch(path) -> str | None:
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not isinstance(path, (str, os.PathLike)):
            return None  # a file descriptor
        full = os.path.abspath(path)
        return full if full == watch or full.startswith(watch + os.sep) else None

    def hook(event: str, event_args: tuple) -> None:
        if event == "open":
            path, mode, flags = event_args
            if not ((isinstance(mode, str) and set(mode) & set("wax+")) or (flags or 0) & WRITE_FLAGS):
                return
            paths = [path]
        elif event in PATH_EVENTS:
            two_paths = event in ("os.rename", "shutil.copyfile", "shutil.copytree")
            paths = list(event_args[:2]) if two_paths else [event_args[0]]
        else:
            return
        for path in paths:
            hit = under_watch(path)
            if hit:
                writes.append([event, hit])

    sys.addaudithook(hook)
    rank = os.environ.get("RANK", "0")
    atexit.register(lambda: (log_dir / f"rank-{rank}.json").write_text(json.dumps(writes), encoding="utf-8"))
    sys.argv = ["hubstyle", *args]
    from hubstyle.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
