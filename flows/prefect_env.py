"""Prefect process settings shared by every flow: offline-safe defaults and task options.

Import this module before importing prefect in a process that runs flows.
"""

from __future__ import annotations

import os
from pathlib import Path


def configure_prefect_env(home: Path | None = None) -> None:
    """Offline-friendly Prefect defaults; explicit user settings win (setdefault)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_UI_ENABLED", os.environ.get("PREFECT_UI_ENABLED", "true"))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_RESULTS_PERSIST_BY_DEFAULT", "false")
    # The ephemeral API server can take well over the default 20 s to start on a busy 2-core box.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    if home is not None:
        os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(home / "prefect" / "storage"))


configure_prefect_env()
