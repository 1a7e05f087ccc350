"""The log file of one command-line invocation, and what reaches the console.

A :class:`LogSession` owns, for its duration, the handlers on the root logger: a file
``$SPHERE_HOME/logs/sphere-YYYYmmdd-HHMMSS-<pid>.log`` that receives the command line (URL
passwords masked), every ``sphere``, ``sphere_core``, ``flows`` and ``tasks`` logger at DEBUG,
everything that propagates to the root logger (Prefect's flow and task run logs among it),
Python warnings and the full traceback of a failure; and a console handler that writes
WARNING records (only WARNING: errors are reported by the CLI itself, once) as one line each
to stderr. Handlers it displaces (Prefect's console handler on the root logger) come back
when it ends. The newest :data:`KEEP_LOGS` log files are kept, and never the log of another
process that is still running.

Owns log files and handlers only; what the CLI prints for an error lives in ``flows/cli.py``.
Imports neither prefect nor torch.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Self

from sphere_core.paths import logs_dir, writable_dir

KEEP_LOGS = 50
LOG_GLOB = "sphere-*.log"
LOG_NAME = re.compile(r"sphere-\d{8}-\d{6}-(\d+)(?:-\d+)?\.log")
SPHERE_LOGGERS = ("sphere", "sphere_core", "flows", "tasks")
FILE_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-7s %(threadName)s %(name)s: %(message)s"
# handlers of these classes write to the terminal on Prefect's behalf; a session displaces them
DISPLACED_HANDLERS = ("PrefectConsoleHandler",)

_active: LogSession | None = None


def new_log_path(home: Path, now: datetime | None = None, pid: int | None = None) -> Path:
    """``logs/sphere-YYYYmmdd-HHMMSS-<pid>.log`` under ``home``, or ``...-<pid>-<n>.log`` when
    this process already logged in that second (not created)."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    base = f"sphere-{stamp}-{pid or os.getpid()}"
    path, n = logs_dir(home) / f"{base}.log", 1
    while path.exists():
        n += 1
        path = logs_dir(home) / f"{base}-{n}.log"
    return path


def prune_logs(directory: Path, keep: int = KEEP_LOGS) -> list[Path]:
    """Delete all but the ``keep`` newest ``sphere-*.log`` files in ``directory``, never the log
    of another process still running (a long ``sphere run`` or ``sphere serve``); returns the
    deleted files."""
    files = []
    for path in Path(directory).glob(LOG_GLOB):
        try:
            files.append((path.stat().st_mtime, path.name, path))
        except FileNotFoundError:  # pruned by a concurrent invocation
            continue
    files.sort(reverse=True)
    removed = []
    for _, _, path in files[keep:]:
        if _writer_alive(path):
            continue
        try:
            path.unlink()
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed


def _writer_alive(path: Path) -> bool:
    """Whether the process named in a log file's name still runs (this one excepted)."""
    match = LOG_NAME.fullmatch(path.name)
    if not match or int(match.group(1)) == os.getpid():
        return False
    try:
        os.kill(int(match.group(1)), 0)
    except PermissionError:  # it exists, owned by another user
        return True
    except (OSError, OverflowError):  # no such process
        return False
    return True


_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")


def redact(text: str) -> str:
    """``text`` with the password of any ``scheme://user:password@host`` URL replaced by ``***``."""
    return _URL_PASSWORD.sub(r"\1***@", text)


def one_line(text: object) -> str:
    """``text`` on one line: its non-blank lines stripped and joined with ``; ``."""
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


class ConsoleLineFormatter(logging.Formatter):
    """``warning: <message>`` on one line, without traceback (that goes to the log file)."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        return prefix + one_line(record.getMessage())


class ConsoleLineHandler(logging.Handler):
    """Writes records between ``level`` and ``max_level`` to the *current* ``sys.stderr``.

    Looking ``sys.stderr`` up per record lets a live progress display (which redirects it)
    and test capture see the lines. ``py.warnings`` records stay in the log file.
    """

    def __init__(self, level: int = logging.WARNING, max_level: int = logging.WARNING):
        super().__init__(level)
        self.max_level = max_level
        self.setFormatter(ConsoleLineFormatter())

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > self.max_level or record.name == "py.warnings":
            return False
        return super().filter(record)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


class SessionFileHandler(logging.FileHandler):
    """The invocation's log file (a named class: Prefect keeps root handlers that are not its
    own)."""

    def handleError(self, record: logging.LogRecord) -> None:
        """A full disk drops the record silently (the CLI's one line says the disk is full)."""
        import errno
        import sys

        err = sys.exc_info()[1]
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            return
        super().handleError(record)


class LogSession:
    """Route logging to one new file under ``home/logs`` and WARNING one-liners to stderr.

    ``home`` None: no file (console only), used when the home itself is unusable.
    """

    def __init__(
        self,
        home: Path | None,
        argv: list[str] | None = None,
        console_level: int = logging.WARNING,
        keep: int = KEEP_LOGS,
    ):
        self.home, self.argv, self.keep = home, list(argv or []), keep
        self.path: Path | None = None
        self.console = ConsoleLineHandler(console_level, max(console_level, logging.WARNING))
        self.file: SessionFileHandler | None = None
        self._saved_levels: dict[str, int] = {}
        self._displaced: list[tuple[logging.Logger, logging.Handler]] = []
        self._captured_warnings = False
        self._previous: LogSession | None = None
        self._started = time.monotonic()

    def __enter__(self) -> Self:
        global _active
        if self.home is not None:
            directory = writable_dir(logs_dir(self.home), "log directory")
            prune_logs(directory, max(self.keep - 1, 0))
            self.path = new_log_path(self.home)
            self.file = SessionFileHandler(self.path, encoding="utf-8")
            self.file.setLevel(logging.DEBUG)
            self.file.setFormatter(logging.Formatter(FILE_FORMAT, "%Y-%m-%d %H:%M:%S"))
        root = logging.getLogger()
        for handler in list(root.handlers):
            if type(handler).__name__ in DISPLACED_HANDLERS:
                root.removeHandler(handler)
                self._displaced.append((root, handler))
        if self.file is not None:
            root.addHandler(self.file)
        root.addHandler(self.console)
        for name in SPHERE_LOGGERS:
            logger = logging.getLogger(name)
            self._saved_levels[name] = logger.level
            logger.setLevel(logging.DEBUG)
        self._captured_warnings = not _warnings_captured()
        logging.captureWarnings(True)
        self._previous, _active = _active, self
        logging.getLogger("sphere.cli").debug(
            "sphere %s (pid %d, cwd %s, python %s)",
            " ".join(map(redact, self.argv)),
            os.getpid(),
            os.getcwd(),
            sys.version.split()[0],
        )
        return self

    def set_console_level(self, level: int) -> None:
        """Show records from ``level`` up to WARNING on the console (e.g. INFO for ``sphere
        serve``)."""
        self.console.setLevel(level)
        self.console.max_level = max(level, logging.WARNING)

    def record_exception(self, exc: BaseException, message: str) -> None:
        """Write ``message`` and the full traceback of ``exc`` to the log file only."""
        logging.getLogger("sphere.cli").error(message, exc_info=(type(exc), exc, exc.__traceback__))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        global _active
        logging.getLogger("sphere.cli").debug(
            "finished after %.1f s", time.monotonic() - self._started
        )
        root = logging.getLogger()
        root.removeHandler(self.console)
        if self.file is not None:
            root.removeHandler(self.file)
            self.file.close()
        for logger, handler in self._displaced:
            logger.addHandler(handler)
        for name, level in self._saved_levels.items():
            logging.getLogger(name).setLevel(level)
        if self._captured_warnings:
            logging.captureWarnings(False)
        _active = self._previous


def active_session() -> LogSession | None:
    """The innermost session in progress in this process, if any."""
    return _active


def _warnings_captured() -> bool:
    import warnings

    return getattr(warnings.showwarning, "__module__", "") == "logging"
