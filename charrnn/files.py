"""Writing files and folders atomically: a crash at any moment leaves the old version or the
new one, never half of one. Used by checkpoints (folders), the token cache and metrics.jsonl.

A file is written to a temporary name beside it and renamed over it (``os.replace`` is atomic
on POSIX and Windows). A folder cannot be renamed over a non-empty one, so the old folder is
moved aside first (``.old-NAME-PID``) and the new one (``.tmp-NAME-PID``) renamed into place;
``undo_interrupted_swaps`` undoes a crash between those two renames on the next load
(charrnn/model/checkpoint.py's ``recover`` calls it for a checkpoint's parent folder).
"""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

TMP, OLD = ".tmp-", ".old-"


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (no rename: callers write into a temporary file or folder)."""
    with open(path, "wb") as handle:
        handle.write(data)


def fsync(path: Path) -> None:
    """Flush ``path`` (a file or a folder) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: Path, sync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on any error
    it is removed and the error propagates (OSError for a full disk or read-only folder).
    ``sync=False`` skips the flush to disk (for caches, which can be rebuilt)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        if sync:
            fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_folder(folder: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``folder``; on success its files are fsynced and
    it replaces ``folder`` whole. On an error it is removed; the previous folder stays."""
    folder = Path(folder)
    tmp = folder.with_name(f"{TMP}{folder.name}-{os.getpid()}")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        yield tmp
        for name in os.listdir(tmp):
            fsync(tmp / name)
        _swap_into_place(tmp, folder)
    except Exception:      # (an interrupt leaves the temp folder, as a kill does: see
                           # undo_interrupted_swaps)
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_into_place(tmp: Path, folder: Path) -> None:
    # A crash between the two renames leaves `.old-<name>-<pid>`, which
    # undo_interrupted_swaps() puts back.
    old = folder.with_name(f"{OLD}{folder.name}-{os.getpid()}")
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)   # a stale leftover of an earlier process
        os.rename(folder, old)
    try:
        os.rename(tmp, folder)
    except OSError:
        if old.exists() and not folder.exists():
            os.rename(old, folder)               # keep the previous folder where it was
        raise
    fsync(folder.parent)
    shutil.rmtree(old, ignore_errors=True)


def undo_interrupted_swaps(parent: Path, allowed: Iterable[str],
                           complete: Iterable[str]) -> None:
    """Undo folder swaps interrupted by a crash inside ``parent``: put a moved-aside folder back
    when its replacement never arrived (if it holds every name in ``complete``), drop
    half-written temporary folders.

    Only leftovers of dead processes are touched, and only folders that hold nothing but
    ``allowed`` names (and safetensors' own ``.tmp*`` files): a user's own ``.tmp-...`` folder
    is left alone. Raises OSError when ``parent`` cannot be changed."""
    parent, allowed, complete = Path(parent), set(allowed), list(complete)
    if not parent.is_dir():
        return
    for entry in sorted(parent.iterdir()):
        if not entry.name.startswith((OLD, TMP)) or not _ours(entry, allowed) \
                or _writer_alive(entry.name):
            continue
        if entry.name.startswith(OLD):
            target = parent / entry.name[len(OLD):].rsplit("-", 1)[0]
            if not target.exists() and all((entry / n).is_file() for n in complete):
                os.rename(entry, target)
                continue
        shutil.rmtree(entry, ignore_errors=True)


def _ours(entry: Path, allowed: set) -> bool:
    pid = entry.name.rsplit("-", 1)[-1]
    try:
        return pid.isdigit() and entry.is_dir() and not entry.is_symlink() and all(
            name in allowed or name.startswith(".tmp") for name in os.listdir(entry))
    except OSError:       # removed meanwhile
        return False


def _writer_alive(name: str) -> bool:
    """Whether the process whose id ends a `.tmp-`/`.old-` folder name still runs."""
    pid = name.rsplit("-", 1)[-1]
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True    # another user's process
    return True
