"""`sphere serve`: serve the generate/pipeline/train/evaluate/report deployments until stopped.

A Prefect runner polls the API (``PREFECT_API_URL``, else the local ephemeral server) for
scheduled or UI-started runs and executes them in subprocesses. It stops cleanly on SIGINT
(exit 130) and SIGTERM (exit 143, what systemd and Kubernetes send): the runner shuts down,
pausing the deployments' schedules, and the command ends with one line on stderr. Prefect's
own SIGTERM handler (which exits 0) is replaced by the CLI's ``Terminated``.

Owns the command only; the deployments are ``flows.pipeline.build_deployments``'s.
"""

from __future__ import annotations

import logging
import os
from typing import Annotated, Any

import typer

from flows.commands.cli_support import PresetOpt, out

CronOpt = Annotated[str, typer.Option(help="Cron schedule of the pipeline deployment.")]
LimitOpt = Annotated[
    int | None,
    typer.Option("--limit", min=1, help="Most flow runs executing at once (default: no limit)."),
]


def make_runner(limit: int | None = None) -> Any:
    """A Prefect ``Runner`` whose SIGTERM raises :class:`sphere_core.errors.Terminated`."""
    from prefect.runner import Runner

    from sphere_core.errors import Terminated

    class SphereRunner(Runner):
        def handle_sigterm(self, signum: int | None = None, *args: Any, **kwargs: Any) -> None:
            import signal

            raise Terminated(signum or signal.SIGTERM)

    return SphereRunner(pause_on_shutdown=True, limit=limit)


def serve(preset: PresetOpt = "demo", cron: CronOpt = "0 3 * * *", limit: LimitOpt = None) -> None:
    """Serve the generate/pipeline/train/evaluate/report deployments until Ctrl-C or SIGTERM.

    Start and schedule runs from the Prefect UI or `prefect deployment run`.
    """
    import asyncio

    from flows.pipeline import build_deployments
    from sphere_core.logs import active_session

    session = active_session()
    if session is not None:  # a server's log: show Prefect's INFO lines (submitted runs, ...)
        session.set_console_level(logging.INFO)
    # flow-run processes (they inherit this environment) forward the progress lines of long work
    # (shards, DPO steps, evaluation batches) to the run's logs in the UI and this console
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "sphere")
    deployments = build_deployments(preset=preset, cron=cron)
    runner = make_runner(limit)
    for deployment in deployments:
        runner.add_deployment(deployment)
    names = ", ".join(f"{d.flow_name}/{d.name}" for d in deployments)
    out.print(
        f"serving deployments: {names} (pipeline on cron {cron!r}); stop with Ctrl-C or SIGTERM",
        markup=False,
        highlight=False,
    )
    asyncio.run(runner.start())


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
