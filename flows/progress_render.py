"""Rendering of progress events (``sphere_core.progress``) for the command line.

:class:`ProgressDisplay` listens to the ``sphere.progress`` logger while a command runs. On a
terminal it shows one rich bar per stage, fed by ``shard`` events (fields ``stage``,
``done``, ``total``), with ``stage`` messages printed above the bars and the latest
``step``/``info`` message as a status line below them. When stderr is not a terminal (CI,
``nohup``, a Prefect worker log) it writes one plain line per event,
``[HH:MM:SS +elapsed] message``, flushed at once, so a log file shows progress as it happens.

Owns rendering only: which events exist and what they carry is ``sphere_core.progress``'s.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TextIO

from rich.console import Console, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from sphere_core.progress import LOGGER_NAME, fields_of


def format_elapsed(seconds: float) -> str:
    """``+42s``, ``+3m05s``, ``+1h02m03s``."""
    total = max(int(seconds), 0)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"+{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"+{minutes}m{secs:02d}s"
    return f"+{secs}s"


class _EventHandler(logging.Handler):
    def __init__(self, display: ProgressDisplay):
        super().__init__(logging.INFO)
        self.display = display

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.display.handle_event(record.getMessage(), fields_of(record))
        except Exception:  # noqa: BLE001 - a display problem must not fail the run
            self.handleError(record)


class ProgressDisplay:
    """Context manager rendering progress events until it exits.

    ``terminal``: force bars (True) or plain lines (False); None asks the console whether
    stderr is a terminal. ``console``: the rich console for bars (default: stderr).
    ``stream``: where plain lines go (default: the current ``sys.stderr``).
    """

    def __init__(
        self,
        terminal: bool | None = None,
        console: Console | None = None,
        stream: TextIO | None = None,
    ):
        if console is None:
            console = Console(stderr=True, force_terminal=terminal)
        self.console = console
        self.terminal = console.is_terminal if terminal is None else terminal
        self.stream = stream
        self._handler = _EventHandler(self)
        self._logger = logging.getLogger(LOGGER_NAME)
        self._saved_level = self._logger.level
        self._started = time.monotonic()
        self._bars: dict[str, Any] = {}
        self._progress: _BarsWithStatus | None = None

    def __enter__(self) -> Self:
        self._started = time.monotonic()
        if self.terminal:
            self._progress = _BarsWithStatus(console=self.console)
            self._progress.start()
        if self._logger.getEffectiveLevel() > logging.INFO:
            self._logger.setLevel(logging.INFO)
        self._logger.addHandler(self._handler)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._logger.removeHandler(self._handler)
        self._logger.setLevel(self._saved_level)
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    # -- events -------------------------------------------------------------------------------

    def handle_event(self, message: str, fields: dict[str, Any]) -> None:
        if self._progress is None:
            self._line(message)
            return
        kind = fields.get("kind")
        if kind == "shard" or (kind == "stage" and fields.get("total") is not None):
            self._update_bar(fields)
        if kind == "stage":
            self._progress.console.print(message, markup=False, highlight=False)
        elif kind != "shard":  # step, info: the status line
            self._progress.status = message
            self._progress.refresh()

    def _update_bar(self, fields: dict[str, Any]) -> None:
        stage = str(fields.get("stage") or "progress")
        total, done = fields.get("total"), fields.get("done")
        if stage not in self._bars:
            self._bars[stage] = self._progress.add_task(stage, total=total, completed=done or 0)
        else:
            update: dict[str, Any] = {}
            if total is not None:
                update["total"] = total
            if done is not None:
                update["completed"] = done
            self._progress.update(self._bars[stage], **update)

    def _line(self, message: str) -> None:
        stream = self.stream or sys.stderr
        stamp = f"[{datetime.now():%H:%M:%S} {format_elapsed(time.monotonic() - self._started)}]"
        stream.write(f"{stamp} {message}\n")
        stream.flush()


class _BarsWithStatus(Progress):
    """Per-stage bars plus one status line (the latest step/info message)."""

    def __init__(self, console: Console):
        self.status = ""  # before Progress.__init__, which may render already
        super().__init__(
            TextColumn("{task.description:<10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("shards"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        if self.status:
            yield Text(self.status, style="dim", no_wrap=True, overflow="ellipsis")
