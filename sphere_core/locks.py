"""Inter-process file locks (POSIX flock) guarding work shared by processes: converting the
embedded model, migrating a SQLite database, writing one artifact shard.

Owns the locking protocol only (exclusive ``flock`` on a lock file, re-entrant within a
thread, optional removal of the lock file on release). Does not own what the lock guards.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

_held: dict[tuple[int, int, str], int] = {}
_held_guard = threading.Lock()


def _enter_held(key: tuple[int, int, str]) -> bool:
    """Count one more level if this thread already holds the lock; True when it did."""
    with _held_guard:
        depth = _held.get(key, 0)
        if depth:
            _held[key] = depth + 1
        return bool(depth)


def _leave_held(key: tuple[int, int, str]) -> None:
    with _held_guard:
        depth = _held.get(key, 0) - 1
        if depth > 0:
            _held[key] = depth
        else:
            _held.pop(key, None)


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)


@contextlib.contextmanager
def file_lock(path: Path, *, remove: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the block.

    Exclusive between processes and between threads of one process (each acquisition opens
    its own descriptor); re-entrant within one thread (an inner ``file_lock`` on the same
    path is a no-op). With ``remove=True`` the lock file is deleted on release while still
    locked; a waiter that then acquires the deleted file notices and locks the new one, so
    removal never lets two holders in. A lock file is never removed while held.

    On platforms without ``fcntl`` this is a no-op; callers keep their own atomic steps
    (rename, transactional DDL) so that a race there stays safe, only slower.
    """
    path = Path(path)
    key = (os.getpid(), threading.get_ident(), os.path.abspath(path))
    if _enter_held(key):
        try:
            yield
        finally:
            _leave_held(key)
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _same_file(fd, path):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the holder before us removed this file: lock the current one
    with _held_guard:
        _held[key] = 1
    try:
        yield
    finally:
        _leave_held(key)
        try:
            if remove:
                path.unlink(missing_ok=True)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
