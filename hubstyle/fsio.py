"""Writes that survive a crash, made by one process: atomic folder and file replacement, main-process guards.

`atomic_folder(target)` yields an empty folder beside `target`; when the block ends without an error, everything
in it is flushed to disk and the folder takes `target`'s place in one rename (Linux swaps the two folders with
``renameat2(RENAME_EXCHANGE)``, so no instant exists where `target` is missing). A crash at any point leaves the old
folder or the new one at `target`, never neither and never a mix. Leftovers of a crashed writer are hidden
siblings (``.NAME.partial-PID-XXXX``) that nothing reads and the next write of `target` removes. `atomic_file` and
`atomic_write` do the same for one file. `file_sha256` is the one file hash.

Under `accelerate launch` (or torchrun) every rank runs the same code; only the main process may write, and
`is_main_process` says which one that is without starting torch.distributed in a plain one-process run.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import glob
import hashlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator

STAGE_TAG = ".partial-"  # .NAME.partial-PID-HEX: a folder being written
OLD_TAG = ".old-"  # .NAME.old-PID-HEX: the previous folder, only where no atomic exchange exists
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty folder beside `target` that replaces `target` atomically when the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover(target)
    stage = _sibling(target, STAGE_TAG)
    stage.mkdir()
    try:
        yield stage
        fsync_tree(stage)
        _swap_in(stage, target)
    finally:
        # after an exchange `stage` holds the old folder; after an error, the half-written new one
        shutil.rmtree(stage, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden path beside `path` to write a file at; when the block succeeds, that file is flushed and
    replaces `path` in one rename (a crash leaves the old file or the new one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover(path)
    tmp = _sibling(path, STAGE_TAG)
    try:
        yield tmp
        fsync(tmp)
        os.replace(tmp, path)
        fsync(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Return `path` after replacing its content with `data` (text as UTF-8) atomically."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def file_sha256(path: str | os.PathLike) -> str:
    """Return the hex sha256 of the file at ``path``, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def recover(target: str | os.PathLike) -> None:
    """Return None after tidying what a crashed writer of `target` (a folder or a file) left: the previous folder is
    put back if `target` is missing, and what processes that no longer run were writing is removed."""
    target = Path(target)
    parent = target.parent
    if not parent.is_dir():
        return
    olds = sorted(_leftovers(target, OLD_TAG), key=lambda p: p.stat().st_mtime)
    if olds and not os.path.lexists(target):
        os.rename(olds.pop(), target)  # crashed between the two renames of the fallback swap
    for leftover in [*olds, *_leftovers(target, STAGE_TAG)]:
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)


def fsync(path: str | os.PathLike) -> None:
    """Return None once `path` (a file or a folder) is flushed to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: str | os.PathLike) -> None:
    """Return None once every file and folder under `folder`, and `folder` itself, is flushed to disk."""
    for path in sorted(Path(folder).rglob("*"), reverse=True):
        if not path.is_symlink():
            fsync(path)
    fsync(folder)


def is_main_process() -> bool:
    """Return whether this process is the one that writes files (always, outside a multi-process launch)."""
    if _world_size() <= 1:
        return True
    return distributed_state().is_main_process


def wait_for_everyone() -> None:
    """Return None once every process of a multi-process launch got here (at once in a one-process run)."""
    if _world_size() > 1:
        distributed_state().wait_for_everyone()


def distributed_state():
    """Return accelerate's PartialState, on gloo over CPUs when there is no GPU (torchrun and `accelerate launch
    --multi_gpu` start the processes; accelerate alone would leave each one training by itself on a CPU)."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def _world_size() -> int:
    """Return the process count the launcher announced (torchrun / accelerate, or an MPI launcher)."""
    for name in ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 1


def _sibling(target: Path, tag: str) -> Path:
    return target.parent / f".{target.name}{tag}{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _leftovers(target: Path, tag: str) -> list[Path]:
    """Return `target`'s hidden siblings with `tag` whose writing process is gone (ours and live ones are kept)."""
    found = []
    for path in target.parent.glob(f"{glob.escape('.' + target.name + tag)}*"):
        pid = path.name[len(f".{target.name}{tag}"):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            found.append(path)
    return found


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _swap_in(stage: Path, target: Path) -> None:
    """Return None after `stage` took `target`'s place (the old `target`, if any, is left at `stage`)."""
    if not os.path.lexists(target):
        os.rename(stage, target)
    elif not _exchange(stage, target):
        old = _sibling(target, OLD_TAG)
        os.rename(target, old)  # a crash here leaves `old`, which recover() puts back
        os.rename(stage, target)
        os.rename(old, stage)  # removed with the stage
    fsync(target.parent)


def _exchange(a: Path, b: Path) -> bool:
    """Return True after swapping `a` and `b` in one atomic step, False where the system cannot."""
    renameat2 = getattr(_libc(), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False  # the filesystem or kernel has no exchange: fall back to two renames
    raise OSError(err, os.strerror(err), str(b))


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
