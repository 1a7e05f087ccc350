"""Progress events of long work (search shards, stages, DPO steps, evaluation batches).

Library code reports progress by calling :func:`emit`; it never prints. Events go to the
standard logger ``sphere.progress`` at INFO with the structured fields under ``record.sphere``,
so any front end can render them: the CLI shows bars on a terminal and one plain line per event
when its output is a log file; a Prefect task's logger can forward them to the UI.
Owns the event vocabulary only, not rendering.

Kinds: ``stage`` (a stage started or finished), ``shard`` (one shard of one stage finished),
``step`` (a training/evaluation step), ``info`` (anything else worth a line).
Common fields: ``stage``, ``shard``, ``done``, ``total``, ``elapsed_s``, ``counts`` (dict).
"""

from __future__ import annotations

import logging
from typing import Any

LOGGER_NAME = "sphere.progress"
KINDS = ("stage", "shard", "step", "info")

_log = logging.getLogger(LOGGER_NAME)


def emit(kind: str, message: str, **fields: Any) -> None:
    """Report one progress event (``message`` is a complete human-readable line)."""
    if kind not in KINDS:
        raise ValueError(f"unknown progress kind {kind!r}; expected one of {KINDS}")
    _log.info(message, extra={"sphere": {"kind": kind, **fields}})


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields of a progress record ({} for other records)."""
    value = getattr(record, "sphere", None)
    return dict(value) if isinstance(value, dict) else {}
