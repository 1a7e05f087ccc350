"""Where things live on disk. One base directory, ``$SPHERE_HOME`` (default ``./.sphere``).

Owns the path layout and the one check every user-given name goes through before it
becomes a path (run ids, evaluation model labels, names derived from benchmark files,
report names): :func:`validate_name`. :func:`run_dir` and :func:`named_dir` validate and
also refuse a result that resolves outside its parent (a symlink pointing elsewhere).
:func:`writable_dir` is the check for directories the user chooses (``$SPHERE_HOME``,
``--out``). Never creates anything at import time.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from pathlib import Path

from sphere_core.errors import HomeError, InvalidNameError

NAME_MAX_LEN = 128
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
NAME_RULE = (
    f"1-{NAME_MAX_LEN} ASCII letters, digits, '.', '_' or '-', starting with a letter or digit, "
    "without '..'"
)


def validate_name(value: object, what: str = "run id") -> str:
    """``value`` if it is a safe single path component, else :class:`InvalidNameError`.

    Safe: matches ``[A-Za-z0-9][A-Za-z0-9._-]{0,127}`` in full (ASCII only, so no
    separators, NUL, whitespace or unicode lookalikes) and holds no ``..``.
    """
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value) or ".." in value:
        raise InvalidNameError(f"invalid {what} {_show(value)}: use {NAME_RULE}")
    return value


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}...{text[-12:]} ({len(str(value))} chars)"


def named_dir(parent: Path, name: str, what: str) -> Path:
    """``parent / name`` for a validated ``name`` that still resolves directly under ``parent``."""
    validate_name(name, what)
    path = Path(parent) / name
    resolved_parent = Path(parent).resolve()
    resolved = path.resolve()
    if resolved.parent != resolved_parent:
        raise InvalidNameError(
            f"{what} {name!r}: {path} resolves to {resolved}, outside {resolved_parent}"
        )
    return path


def sphere_home(override: str | os.PathLike | None = None) -> Path:
    """The base directory: explicit override > $SPHERE_HOME > ./.sphere (absolute)."""
    raw = override or os.environ.get("SPHERE_HOME") or ".sphere"
    return Path(raw).expanduser().resolve()


def models_dir(home: Path) -> Path:
    return home / "models"


def runs_dir(home: Path) -> Path:
    return home / "runs"


def run_dir(home: Path, run_id: str) -> Path:
    """``runs/<run_id>``; raises :class:`InvalidNameError` for an unsafe id or one that escapes."""
    return named_dir(runs_dir(Path(home)), run_id, "run id")


def artifacts_dir(home: Path) -> Path:
    return home / "artifacts"


def logs_dir(home: Path) -> Path:
    return home / "logs"


def default_database_url(home: Path) -> str:
    return f"sqlite:///{home / 'sphere.db'}"


def writable_dir(path: str | os.PathLike, what: str = "directory") -> Path:
    """Create ``path`` (with parents) if needed and prove it writable by writing a probe file.

    Raises :class:`HomeError` (one line naming ``what`` and the path) when ``path`` or a parent
    is a file, when it cannot be created, or when nothing can be written in it.
    """
    target = Path(path).expanduser()
    if target.exists() and not target.is_dir():
        raise HomeError(f"{what} {target} is a file, not a directory")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        reason = (
            "a parent of it is a file"
            if err.errno in (errno.ENOTDIR, errno.EEXIST)
            else (err.strerror or str(err))
        )
        raise HomeError(f"{what} {target} cannot be created: {reason}") from err
    try:
        fd, probe = tempfile.mkstemp(prefix=".sphere-write-probe-", dir=target)
    except OSError as err:
        raise HomeError(f"{what} {target} is not writable: {err.strerror or err}") from err
    os.close(fd)
    os.unlink(probe)
    return target
