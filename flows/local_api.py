"""The local Prefect API server of a ``sphere`` command, out of reach of the terminal's Ctrl-C.

Without ``PREFECT_API_URL`` a command's flows talk to a temporary API server that Prefect starts
on first use (``SubprocessASGIServer``) and stops when the process exits. Prefect starts it in
the command's process group, so Ctrl-C in a terminal (SIGINT to the whole foreground group)
stopped the server too, while the command was still writing its DPO checkpoint and reporting
the interrupted run: every state update then failed and was retried against a dead server for
about a minute, with one more error line, before the command could exit.

:func:`install` makes Prefect start that server in a session of its own, through this module
run as a script (``python -m flows.local_api``: uvicorn's command line plus a watch on the
parent). The command still stops it at exit (Prefect's own ``atexit``); if the command dies
without exiting (SIGKILL, a closed terminal) the server notices its parent is gone within a
second and shuts down, so no server outlives its command.

The override replaces ``SubprocessASGIServer._run_uvicorn_command`` of the pinned Prefect
(``pyproject.toml``) with the same command line, environment and arguments; if Prefect no longer
has that method, nothing is replaced and the old behaviour (a slow exit after Ctrl-C) returns,
which ``tests/flows/test_signals.py`` shows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

_SERVER_ENV = {  # what Prefect's own temporary server sets (UI off, ephemeral, final)
    "PREFECT_UI_ENABLED": "0",
    "PREFECT__SERVER_EPHEMERAL": "1",
    "PREFECT__SERVER_FINAL": "1",
}


def install() -> bool:
    """Start Prefect's temporary API server detached from the terminal's process group (only
    when no ``PREFECT_API_URL`` is set; idempotent). Returns whether the override is in place."""
    if os.environ.get("PREFECT_API_URL"):
        return False
    from prefect.server.api import server as api_server

    cls = getattr(api_server, "SubprocessASGIServer", None)
    current = getattr(cls, "_run_uvicorn_command", None)
    if current is None:
        return False
    if current is not _run_detached:
        cls._run_uvicorn_command = _run_detached
    return True


def _run_detached(self: Any) -> subprocess.Popen:
    """Prefect's uvicorn command for its temporary server, in a new session, run through this
    module so that it stops when its parent is gone."""
    import prefect
    from prefect.settings import get_current_settings

    args = [
        sys.executable,
        "-m",
        "flows.local_api",
        "--app-dir",
        str(prefect.__module_path__.parent),
        "--factory",
        "prefect.server.api.server:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(self.port),
        "--log-level",
        "error",
        "--lifespan",
        "on",
    ]
    env = {
        **os.environ,
        **_SERVER_ENV,
        **get_current_settings().to_environment_variables(exclude_unset=True),
    }
    return subprocess.Popen(args, env=env, start_new_session=True)


def _watch_parent(parent: int, interval_s: float = 0.5) -> None:
    """SIGTERM to this process (uvicorn's graceful shutdown) once ``parent`` is gone."""
    while os.getppid() == parent:
        time.sleep(interval_s)
    os.kill(os.getpid(), signal.SIGTERM)


def _serve() -> None:
    """``python -m flows.local_api UVICORN_ARGS``: uvicorn, ended when its parent goes."""
    import uvicorn

    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    uvicorn.main(args=sys.argv[1:], prog_name="uvicorn")


if __name__ == "__main__":
    _serve()
