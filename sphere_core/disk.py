"""A full disk is an infrastructure error: free-space checks before phases that write a lot, and
the recognition of "no space" errors wherever SPHERE writes.

``ENOSPC`` (no space left), ``EDQUOT`` (quota exceeded) and ``EROFS`` (read-only file system)
from any write (artifacts, run outputs, checkpoints, the SQLite store, converted models, logs)
are :func:`is_disk_full` errors; the CLI reports them as one line naming the path and the free
space left, exit 3. Writers keep their atomic steps (temporary name, then rename), so nothing
half-written is trusted later.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from sphere_core.errors import DiskFullError

DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
GIB = 1024**3


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_ERRNOS


def free_bytes(path: Path | str | None) -> int | None:
    """Free bytes on the file system of ``path`` (its nearest existing parent); None if unknown."""
    if path is None:
        return None
    probe = Path(os.path.abspath(path))
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def human(n: int | None) -> str:
    if n is None:
        return "unknown"
    if n >= GIB:
        return f"{n / GIB:.1f} GiB"
    return f"{n / 1024**2:.0f} MiB"


def describe(exc: OSError) -> str:
    """One line for a disk error: what happened, where, and how much space is left there."""
    path = exc.filename or exc.filename2
    what = {
        errno.ENOSPC: "no space left on device",
        errno.EDQUOT: "disk quota exceeded",
        errno.EROFS: "read-only file system",
    }.get(exc.errno, exc.strerror or "disk error")
    where = f" writing {path}" if path else ""
    free = f" ({human(free_bytes(path))} free there)" if path and exc.errno != errno.EROFS else ""
    return f"{what}{where}{free}"


def require_free(path: Path, need: int, what: str) -> None:
    """Raise :class:`DiskFullError` before a phase that writes about ``need`` bytes under ``path``
    when its file system has less free."""
    free = free_bytes(path)
    if free is not None and need > 0 and free < need:
        raise DiskFullError(
            f"{what} need about {human(need)} under {path}, but only "
            f"{human(free)} is free there; free some space"
        )
