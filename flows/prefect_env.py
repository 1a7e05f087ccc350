"""Prefect process settings for SPHERE: offline-safe defaults, applied by an explicit call.

:func:`configure_prefect_env` sets environment variables only (``setdefault``: a user's own
settings win) and must run before prefect is first imported in the process: the ``sphere``
CLI calls it at start (``sphere serve`` included, whose flow-run subprocesses inherit the
environment). Importing this module changes nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_UI_ENABLED": "true",
    # Prefect's INFO run logs go to the Prefect API and, under the CLI, to the log file;
    # the CLI's console shows WARNING one-liners only (sphere_core.logs).
    "PREFECT_LOGGING_LEVEL": "INFO",
    "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
    # The ephemeral API server can take well over the default 20 s to start on a busy 2-core box.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
}


def configure_prefect_env(home: Path | None = None) -> dict[str, str]:
    """Apply the defaults (and local result storage under ``home``); returns what it set."""
    wanted = dict(DEFAULTS)
    if home is not None:
        wanted["PREFECT_LOCAL_STORAGE_PATH"] = str(Path(home) / "prefect" / "storage")
    applied = {}
    for key, value in wanted.items():
        if key not in os.environ:
            os.environ[key] = applied[key] = value
    return applied
